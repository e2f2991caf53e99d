//! The client half of the control API, and the commands that use it:
//! `monitor issue` and `monitor revoke`.
//!
//! [`request`] sends one HTTP/1.1 request (hyper's client) over the agent's
//! unix socket (`Connection: close`) and returns the status and the JSON
//! answer.
use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{client::conn::http1, header, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::{net::UnixStream, time::timeout};

use super::DEFAULT_SOCKET;

/// Time allowed to connect to the agent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one whole exchange, longer than the server's own
/// deadline for the agent's answer so that its 504 gets through.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// Largest answer head accepted (hyper's read buffer).
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Largest answer body accepted.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// Send one issuance record to a running agent (`monitor issue`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IssueArgs {
    /// The secret's id (1 to 128 of `A-Z a-z 0-9 . _ : / -`).
    #[arg(long, value_name = "ID")]
    pub secret_id: String,
    /// An absolute path the secret is delivered in (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<String>,
    /// An environment variable the secret is delivered in (repeatable).
    #[arg(long = "env", value_name = "NAME")]
    pub envs: Vec<String>,
    /// Holder: this process and the children it forks after issuance.
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// Holder: every process in this cgroup v2 path or below it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Holder: every process in this container.
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Holder: every process in this Kubernetes pod.
    #[arg(long, value_name = "UID")]
    pub pod_uid: Option<String>,
    /// Holder: every process running this executable (absolute path).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<String>,
    /// Holder by Kubernetes name: the namespace of `--pod` or
    /// `--service-account`.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Holder: every process of this pod (by name; needs `--namespace`).
    #[arg(long, value_name = "NAME", requires = "namespace")]
    pub pod: Option<String>,
    /// Holder: every process of a pod running as this service account
    /// (needs `--namespace`).
    #[arg(long, value_name = "NAME", requires = "namespace")]
    pub service_account: Option<String>,
    /// Lifetime from now (e.g. `300s`, `5m`, `1h`); no expiry if absent.
    #[arg(long, value_name = "DUR")]
    pub ttl: Option<String>,
    /// A destination the secret may be sent to: `HOST:PORT`, `IP:PORT`,
    /// `CIDR:PORT`, port `*` for any (repeatable; unrestricted if absent).
    #[arg(long = "allow", value_name = "DEST")]
    pub allow: Vec<String>,
    /// The agent's API socket [default: /run/monitor/api.sock].
    #[arg(long, value_name = "SOCK")]
    pub api: Option<PathBuf>,
    /// An extra label `KEY=VALUE` for the record (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Replace an earlier, still valid issuance of this secret_id even if
    /// its holder differs (else such a re-issue is refused).
    #[arg(long)]
    pub replaces: bool,
    /// Publish to the fleet instead of one agent (`--fleet URL`).
    #[command(flatten)]
    pub fleet: crate::fleet::FleetTarget,
}

/// Mark a secret revoked from now on (`monitor revoke`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RevokeArgs {
    /// The secret's id.
    #[arg(long, value_name = "ID")]
    pub secret_id: String,
    /// The agent's API socket [default: /run/monitor/api.sock].
    #[arg(long, value_name = "SOCK")]
    pub api: Option<PathBuf>,
    /// Publish to the fleet instead of one agent (`--fleet URL`).
    #[command(flatten)]
    pub fleet: crate::fleet::FleetTarget,
}

/// The socket to use: `--api` or [`DEFAULT_SOCKET`].
fn socket(api: &Option<PathBuf>) -> PathBuf {
    api.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Checks a secret id against the spec: 1 to 128 of `A-Z a-z 0-9 . _ : / -`.
fn check_secret_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 128 {
        bail!(
            "invalid --secret-id {id:?}: must be 1 to 128 characters (it has {})",
            id.chars().count()
        );
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".:_/-".contains(*c)))
    {
        bail!("invalid --secret-id {id:?}: character {c:?} is not allowed (use A-Z a-z 0-9 . _ : / -)");
    }
    Ok(())
}

fn check_absolute(flag: &str, p: &str) -> anyhow::Result<()> {
    if !p.starts_with('/') {
        bail!("invalid {flag} {p:?}: must be an absolute path");
    }
    if p.contains('\0') {
        bail!("invalid {flag} {p:?}: contains a NUL byte");
    }
    Ok(())
}

fn check_nonempty(flag: &str, v: &str) -> anyhow::Result<()> {
    if v.trim().is_empty() {
        bail!("invalid {flag}: must not be empty");
    }
    Ok(())
}

/// Checks the `:PORT` end of an allowed destination (`*` or 1..=65535).
fn check_destination(d: &str) -> anyhow::Result<()> {
    let Some((host, port)) = d.rsplit_once(':') else {
        bail!("invalid --allow {d:?}: expected HOST:PORT, IP:PORT or CIDR:PORT (port `*` for any)");
    };
    let port_ok = port == "*" || port.parse::<u16>().is_ok_and(|p| p > 0);
    if host.is_empty() || !port_ok {
        bail!("invalid --allow {d:?}: expected HOST:PORT, IP:PORT or CIDR:PORT (port `*` for any)");
    }
    Ok(())
}

/// Builds the spec's issuance record from the flags:
/// `{"secret_id", "ttl_seconds"?, "holder": {...}, "delivery": [...],
/// "allowed_destinations"?, "source": "cli", "labels"?}`.
///
/// Needs at least one `--file`/`--env` and at least one holder selector
/// (`--pid`, `--cgroup`, `--container`, `--pod-uid`, `--exe`); `--ttl` must
/// be a positive whole number of seconds. `issued_at` is left to the agent
/// (the time it receives the record).
pub fn issue_record(a: &IssueArgs) -> anyhow::Result<Value> {
    check_secret_id(&a.secret_id)?;

    let mut holder = Map::new();
    if let Some(pid) = a.pid {
        if pid == 0 {
            bail!("invalid --pid 0: must be a process id");
        }
        holder.insert("pid".into(), json!(pid));
    }
    if let Some(c) = &a.cgroup {
        check_nonempty("--cgroup", c)?;
        holder.insert("cgroup".into(), json!(c));
    }
    if let Some(c) = &a.container {
        check_nonempty("--container", c)?;
        holder.insert("container_id".into(), json!(c));
    }
    if let Some(p) = &a.pod_uid {
        check_nonempty("--pod-uid", p)?;
        holder.insert("pod_uid".into(), json!(p));
    }
    if let Some(e) = &a.exe {
        check_absolute("--exe", e)?;
        holder.insert("exe".into(), json!(e));
    }
    if let Some(ns) = &a.namespace {
        if a.pod.is_none() && a.service_account.is_none() {
            bail!("--namespace needs --pod or --service-account");
        }
        check_nonempty("--namespace", ns)?;
        holder.insert("namespace".into(), json!(ns));
        if let Some(p) = &a.pod {
            check_nonempty("--pod", p)?;
            holder.insert("pod".into(), json!(p));
        }
        if let Some(sa) = &a.service_account {
            check_nonempty("--service-account", sa)?;
            holder.insert("service_account".into(), json!(sa));
        }
    }
    if holder.is_empty() {
        bail!(
            "no holder: give at least one of --pid, --cgroup, --container, --pod-uid, --exe, \
             --namespace with --pod or --service-account"
        );
    }

    let mut delivery = Vec::new();
    for f in &a.files {
        check_absolute("--file", f)?;
        delivery.push(json!({ "file": f }));
    }
    for e in &a.envs {
        if e.is_empty() || e.contains('=') || e.contains('\0') {
            bail!("invalid --env {e:?}: must be a variable name (non-empty, without `=`)");
        }
        delivery.push(json!({ "env": e }));
    }
    if delivery.is_empty() {
        bail!("no delivery: give at least one --file PATH or --env NAME");
    }

    let mut record = Map::new();
    record.insert("secret_id".into(), json!(a.secret_id));
    if let Some(ttl) = &a.ttl {
        let d = crate::timefmt::parse_duration(ttl).map_err(|e| {
            // The parser's message usually quotes the value already.
            if e.contains(&format!("{:?}", ttl.trim())) {
                anyhow!("invalid --ttl: {e}")
            } else {
                anyhow!("invalid --ttl {ttl:?}: {e}")
            }
        })?;
        if d.is_zero() {
            bail!("invalid --ttl {ttl:?}: must be positive");
        }
        if d.subsec_nanos() != 0 {
            bail!("invalid --ttl {ttl:?}: must be a whole number of seconds");
        }
        record.insert("ttl_seconds".into(), json!(d.as_secs()));
    }
    record.insert("holder".into(), Value::Object(holder));
    record.insert("delivery".into(), Value::Array(delivery));
    if !a.allow.is_empty() {
        for d in &a.allow {
            check_destination(d)?;
        }
        record.insert("allowed_destinations".into(), json!(a.allow));
    }
    record.insert("source".into(), json!("cli"));
    if !a.label.is_empty() {
        let mut labels = BTreeMap::new();
        for l in &a.label {
            let Some((k, v)) = l.split_once('=') else {
                bail!("invalid --label {l:?}: expected KEY=VALUE");
            };
            if k.is_empty() {
                bail!("invalid --label {l:?}: empty key");
            }
            if labels.insert(k.to_string(), v.to_string()).is_some() {
                bail!("duplicate --label key {k:?}");
            }
        }
        record.insert("labels".into(), json!(labels));
    }
    if a.replaces {
        record.insert("replaces".into(), json!(true));
    }
    Ok(Value::Object(record))
}

/// `monitor issue`: POST the record to `/issuances`, print the agent's answer
/// (one line of JSON) on stdout.
pub async fn issue(a: IssueArgs) -> anyhow::Result<()> {
    let record = issue_record(&a)?;
    if a.fleet.fleet.is_some() {
        return crate::fleet::records::publish(&a.fleet, &record).await;
    }
    post_issuances(&socket(&a.api), &record, "issuance").await
}

/// `monitor revoke`: POST `{"revoke": ID}` to `/issuances`, print the agent's
/// answer (one line of JSON) on stdout.
pub async fn revoke(a: RevokeArgs) -> anyhow::Result<()> {
    check_secret_id(&a.secret_id)?;
    let record = json!({ "revoke": a.secret_id });
    if a.fleet.fleet.is_some() {
        return crate::fleet::records::publish(&a.fleet, &record).await;
    }
    post_issuances(&socket(&a.api), &record, "revocation").await
}

async fn post_issuances(sock: &Path, record: &Value, what: &str) -> anyhow::Result<()> {
    let (status, answer) = request(sock, "POST", "/issuances", Some(record)).await?;
    if !(200..300).contains(&status) {
        bail!(
            "the agent refused the {what} (HTTP {status}): {}",
            error_message(&answer)
        );
    }
    println!("{answer}");
    Ok(())
}

/// The agent's error message: `{"error": "..."}`, or the answer itself.
fn error_message(answer: &Value) -> String {
    match answer.get("error") {
        Some(Value::String(s)) => s.clone(),
        _ => answer.to_string(),
    }
}

/// Percent-encodes `s` for a query value or a path segment (everything but
/// `A-Z a-z 0-9 - . _ ~` is escaped).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An I/O error without the " (os error N)" tail.
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match e.raw_os_error() {
        Some(code) => s
            .strip_suffix(&format!(" (os error {code})"))
            .map(str::to_string)
            .unwrap_or(s),
        None => s,
    }
}

fn unreachable_error(sock: &Path, e: &io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied => "the socket is only for its owner; run as root?",
        _ => "is `monitor run` running?",
    };
    anyhow!(
        "cannot reach the agent at {}: {} ({hint})",
        sock.display(),
        plain(e)
    )
}

/// Sends one request to the agent at `sock` and returns the status and the
/// JSON answer (`null` if it had no body). `path_and_query` must already be
/// percent-encoded (see [`percent_encode`]); `body` is sent as JSON.
///
/// Errors name the socket, e.g. "cannot reach the agent at
/// /run/monitor/api.sock: No such file or directory (is `monitor run`
/// running?)"; a non-JSON or malformed answer is an error too. Statuses are
/// not judged: a 4xx or 5xx is returned like a 2xx.
pub async fn request(
    sock: &Path,
    method: &str,
    path_and_query: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    if !method.bytes().all(|b| b.is_ascii_uppercase()) || method.is_empty() {
        bail!("invalid HTTP method {method:?}");
    }
    if !path_and_query.starts_with('/')
        || path_and_query
            .bytes()
            .any(|b| !(0x21..0x7f).contains(&b) || b == b'#')
    {
        bail!("invalid request target {path_and_query:?}: must be /path?query, percent-encoded");
    }
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, "localhost")
        .header(
            header::USER_AGENT,
            concat!("monitor/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "close");
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(v).context("cannot serialise the request body")?
        }
        None => Vec::new(),
    };
    let req = req
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .with_context(|| format!("invalid request {method} {path_and_query}"))?;

    let stream = match timeout(CONNECT_TIMEOUT, UnixStream::connect(sock)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable_error(sock, &e)),
        Err(_) => bail!(
            "cannot reach the agent at {}: timed out connecting after {} s (is it overloaded?)",
            sock.display(),
            CONNECT_TIMEOUT.as_secs()
        ),
    };
    let exchange = async {
        let (mut sender, conn) = http1::Builder::new()
            .max_buf_size(MAX_RESPONSE_HEAD)
            .handshake(TokioIo::new(stream))
            .await?;
        let fetch = async {
            let response = sender.send_request(req).await?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer failed: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        // The connection is driven beside the exchange; it ends after the
        // answer (`Connection: close`).
        let (fetched, _conn) = tokio::join!(fetch, conn);
        let (status, body) = fetched?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| anyhow!("the agent's answer (HTTP {status}) is not JSON: {e}"))?;
        Ok::<_, anyhow::Error>((status, value))
    };
    match timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => bail!("talking to the agent at {}: {e:#}", sock.display()),
        Err(_) => bail!(
            "the agent at {} did not answer within {} s",
            sock.display(),
            REQUEST_TIMEOUT.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::api::server::{
        self,
        test_support::{fake_agent, temp_dir},
    };

    /// `monitor issue`'s flags, parsed as the real command line would.
    #[derive(Parser, Debug)]
    struct IssueCli {
        #[command(flatten)]
        args: IssueArgs,
    }

    /// `monitor revoke`'s flags.
    #[derive(Parser, Debug)]
    struct RevokeCli {
        #[command(flatten)]
        args: RevokeArgs,
    }

    fn issue_args(argv: &[&str]) -> IssueArgs {
        let argv = ["monitor-issue"].iter().chain(argv);
        IssueCli::try_parse_from(argv).unwrap().args
    }

    fn err(argv: &[&str]) -> String {
        issue_record(&issue_args(argv)).unwrap_err().to_string()
    }

    #[test]
    fn full_record_from_every_flag() {
        let a = issue_args(&[
            "--secret-id",
            "db-prod",
            "--file",
            "/vault/secrets/db",
            "--env",
            "DB_PASSWORD",
            "--file",
            "/vault/secrets/db2",
            "--pid",
            "4242",
            "--cgroup",
            "/kubepods/pod1",
            "--container",
            "abc123",
            "--pod-uid",
            "0f0e-11",
            "--exe",
            "/usr/bin/app",
            "--namespace",
            "payments",
            "--pod",
            "api-0",
            "--service-account",
            "api",
            "--ttl",
            "5m",
            "--allow",
            "127.0.0.1:5432",
            "--allow",
            "10.0.0.0/8:443",
            "--allow",
            "db.internal:*",
            "--api",
            "/tmp/x.sock",
            "--label",
            "team=payments",
            "--label",
            "env=prod=1",
        ]);
        assert_eq!(a.api, Some(PathBuf::from("/tmp/x.sock")));
        assert_eq!(
            issue_record(&a).unwrap(),
            json!({
                "secret_id": "db-prod",
                "ttl_seconds": 300,
                "holder": {"pid": 4242, "cgroup": "/kubepods/pod1", "container_id": "abc123",
                           "pod_uid": "0f0e-11", "exe": "/usr/bin/app",
                           "namespace": "payments", "pod": "api-0", "service_account": "api"},
                "delivery": [{"file": "/vault/secrets/db"}, {"file": "/vault/secrets/db2"},
                             {"env": "DB_PASSWORD"}],
                "allowed_destinations": ["127.0.0.1:5432", "10.0.0.0/8:443", "db.internal:*"],
                "source": "cli",
                "labels": {"team": "payments", "env": "prod=1"},
            })
        );
        // The minimum: optional keys are absent, not null.
        let a = issue_args(&["--secret-id", "s", "--env", "TOKEN", "--pid", "7"]);
        assert_eq!(
            issue_record(&a).unwrap(),
            json!({"secret_id": "s", "holder": {"pid": 7}, "delivery": [{"env": "TOKEN"}],
                   "source": "cli"})
        );
    }

    #[test]
    fn record_errors_are_clear() {
        let e = err(&["--secret-id", "s", "--file", "/f"]);
        assert!(e.contains("no holder") && e.contains("--pid"), "{e}");
        let e = err(&[
            "--secret-id",
            "s",
            "--file",
            "/f",
            "--namespace",
            "payments",
        ]);
        assert!(e.contains("--namespace needs --pod"), "{e}");
        let argv = [
            "monitor-issue",
            "--secret-id",
            "s",
            "--file",
            "/f",
            "--pod",
            "a",
        ];
        assert!(
            IssueCli::try_parse_from(argv).is_err(),
            "--pod needs --namespace"
        );
        let e = err(&["--secret-id", "s", "--pid", "1"]);
        assert!(e.contains("no delivery") && e.contains("--file"), "{e}");
        let e = err(&[
            "--secret-id",
            "s",
            "--env",
            "A",
            "--pid",
            "1",
            "--ttl",
            "soon",
        ]);
        assert!(
            e.starts_with("invalid --ttl") && e.contains("\"soon\""),
            "{e}"
        );
        let e = err(&[
            "--secret-id",
            "s",
            "--env",
            "A",
            "--pid",
            "1",
            "--ttl",
            "0s",
        ]);
        assert!(e.contains("--ttl \"0s\"") && e.contains("positive"), "{e}");
        let e = err(&["--secret-id", "bad id", "--env", "A", "--pid", "1"]);
        assert!(
            e.contains("--secret-id \"bad id\"") && e.contains("' '"),
            "{e}"
        );
        let long = "x".repeat(129);
        let e = err(&["--secret-id", &long, "--env", "A", "--pid", "1"]);
        assert!(e.contains("1 to 128"), "{e}");
        let e = err(&["--secret-id", "s", "--file", "rel/path", "--pid", "1"]);
        assert!(
            e.contains("--file \"rel/path\"") && e.contains("absolute"),
            "{e}"
        );
        let e = err(&["--secret-id", "s", "--env", "A", "--exe", "app"]);
        assert!(e.contains("--exe \"app\""), "{e}");
        let e = err(&["--secret-id", "s", "--env", "A=B", "--pid", "1"]);
        assert!(e.contains("--env \"A=B\""), "{e}");
        let e = err(&["--secret-id", "s", "--env", "A", "--pid", "0"]);
        assert!(e.contains("--pid 0"), "{e}");
        for bad in ["db:99999", "db", ":443", "db:http"] {
            let e = err(&[
                "--secret-id",
                "s",
                "--env",
                "A",
                "--pid",
                "1",
                "--allow",
                bad,
            ]);
            assert!(e.contains(&format!("--allow {bad:?}")), "{e}");
        }
        let e = err(&[
            "--secret-id",
            "s",
            "--env",
            "A",
            "--pid",
            "1",
            "--label",
            "nokv",
        ]);
        assert!(e.contains("--label \"nokv\""), "{e}");
        let e = err(&[
            "--secret-id",
            "s",
            "--env",
            "A",
            "--pid",
            "1",
            "--label",
            "a=1",
            "--label",
            "a=2",
        ]);
        assert!(e.contains("duplicate --label key \"a\""), "{e}");
        // clap itself insists on --secret-id.
        assert!(IssueCli::try_parse_from(["monitor-issue", "--env", "A"]).is_err());
        let r = RevokeCli::try_parse_from(["monitor-revoke", "--secret-id", "db-prod"])
            .unwrap()
            .args;
        assert_eq!((r.secret_id.as_str(), r.api), ("db-prod", None));
    }

    #[tokio::test]
    async fn missing_socket_error_names_the_path() {
        let dir = temp_dir("nosock");
        let sock = dir.join("api.sock");
        let e = request(&sock, "GET", "/secrets", None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot reach the agent at {}: No such file or directory (is `monitor run` running?)",
                sock.display()
            )
        );
        // The default socket is used without --api.
        let a = RevokeArgs {
            secret_id: "x".into(),
            api: None,
            fleet: Default::default(),
        };
        assert_eq!(socket(&a.api), PathBuf::from(DEFAULT_SOCKET));
        // A bad target never reaches the wire.
        let e = request(&sock, "GET", "/a b", None).await.unwrap_err();
        assert!(e.to_string().contains("invalid request target"), "{e}");
    }

    #[tokio::test]
    async fn issue_and_revoke_talk_to_the_agent() {
        let dir = temp_dir("issue");
        let sock = dir.join("api.sock");
        let l = server::bind(&sock).await.unwrap();
        tokio::spawn(server::serve(l, fake_agent()));
        let mut a = issue_args(&["--secret-id", "s", "--env", "A", "--pid", "1"]);
        a.api = Some(sock.clone());
        issue(a).await.unwrap();
        revoke(RevokeArgs {
            secret_id: "s".into(),
            api: Some(sock.clone()),
            fleet: Default::default(),
        })
        .await
        .unwrap();
        let (status, v) = request(&sock, "POST", "/issuances", Some(&json!({"revoke": "s"})))
            .await
            .unwrap();
        assert_eq!((status, v), (201, json!({"accepted": {"revoke": "s"}})));
        // The agent's refusal becomes the error, with its message.
        let e = post_issuances(&sock, &json!({"bad": 1}), "issuance")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the agent refused the issuance (HTTP 400): line 1: field `bad` is not allowed"
        );
        // A body over the server's limit: its 413 is read despite the
        // connection being closed under our feet.
        let big = json!({"pad": "x".repeat(server::MAX_BODY_BYTES + 10)});
        let (status, v) = request(&sock, "POST", "/issuances", Some(&big))
            .await
            .unwrap();
        assert_eq!(status, 413, "{v}");
    }

    #[test]
    fn encoding_and_error_messages() {
        assert_eq!(percent_encode("a b+c/é~"), "a%20b%2Bc%2F%C3%A9~");
        assert_eq!(error_message(&json!({"error": "nope"})), "nope");
        assert_eq!(error_message(&json!({"x": 1})), "{\"x\":1}");
    }

    /// A one-shot server on `sock` that reads a request head, answers
    /// `answer` and closes.
    async fn canned(sock: &Path, answer: &'static [u8]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::UnixListener::bind(sock).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = s.write_all(answer).await;
        });
    }

    #[tokio::test]
    async fn odd_answers_are_read_or_refused_by_name() {
        let dir = temp_dir("odd");
        type Want = Result<(u16, Value), &'static str>;
        let cases: [(&[u8], Want); 5] = [
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n1\r\n]\r\n0\r\n\r\n",
                Ok((200, json!([1]))),
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Ok((204, Value::Null))),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope",
                Err("the agent's answer (HTTP 200) is not JSON"),
            ),
            (b"garbage\r\n\r\n", Err("talking to the agent at")),
            (b"", Err("talking to the agent at")),
        ];
        for (i, (answer, want)) in cases.into_iter().enumerate() {
            let sock = dir.join(format!("s{i}"));
            canned(&sock, answer).await;
            let got = request(&sock, "GET", "/x", None).await;
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "case {i}"),
                (Err(e), Err(want)) => {
                    let e = format!("{e:#}");
                    assert!(e.contains(want), "case {i}: {e:?} lacks {want:?}");
                    assert!(e.contains(&sock.display().to_string()), "case {i}: {e}");
                }
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }
}
