//! SOC alert feeds: where alerts go besides the agent's own alert stream.
//!
//! A feed is configured in the agent's TOML as one table of an array, told
//! apart by `type`:
//!
//! ```toml
//! [[feeds]]
//! type = "file"                  # JSON lines, size-based rotation
//! path = "/var/log/monitor/alerts.ocsf.json"   # "-" is stdout (no rotation)
//! format = "ocsf"                # "native" (default) or "ocsf"
//! max_bytes = 104857600          # default 100 MiB
//! keep = 5                       # rotated files kept: path.1 .. path.5
//!
//! [[feeds]]
//! type = "syslog"                # RFC 5424
//! transport = "tcp"              # "udp", "tcp" (octet counting) or "unix"
//! address = "siem.example:6514"  # host:port, or a socket path for unix
//! app_name = "monitor"           # optional
//! hostname = "node-1"            # optional, default: this host's name
//! facility = "auth"              # optional, a name or 0..23; default auth
//!
//! [[feeds]]
//! type = "webhook"               # batched JSON arrays, spooled on disk
//! url = "https://soc.example/ingest"
//! bearer_token_file = "/etc/monitor/webhook.token"  # or bearer_token = "..."
//! batch_size = 100               # optional
//! spool_dir = "/var/lib/monitor/spool/soc"
//! timeout_seconds = 10           # optional, per request
//! ca_file = "/etc/monitor/soc-ca.pem"  # optional, PEM roots for https
//! max_spool_bytes = 1073741824   # optional, default 1 GiB
//! ```
//!
//! Unknown keys are an error in every table.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::correlate::alert::Alert;

/// A destination for alerts. `send` is called from the agent's alert path:
/// no implementation blocks for long (network feeds use timeouts or a
/// background sender).
pub trait Feed: Send {
    /// A short human name for logs and metrics, e.g. `file:/var/log/x`.
    fn name(&self) -> String;
    /// Deliver (or durably queue) these alerts. An error means some of them
    /// were not delivered or queued; it has also been counted in
    /// [`Feed::failures`].
    fn send(&mut self, alerts: &[Alert]) -> Result<()>;
    /// Delivery failures so far (alerts not delivered, or for the webhook,
    /// failed delivery attempts: its alerts wait in the spool).
    fn failures(&self) -> u64;
    /// Alerts accepted but not yet delivered (the webhook's spool); 0 for
    /// feeds that deliver synchronously.
    fn pending(&self) -> u64 {
        0
    }
}

/// The JSON shape of an alert in a feed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The contract's native alert object.
    #[default]
    Native,
    /// An OCSF 1.8.0 Detection Finding (class_uid 2004).
    Ocsf,
}

/// One feed of the agent's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeedConfig {
    File(FileFeedConfig),
    Syslog(SyslogFeedConfig),
    Webhook(WebhookFeedConfig),
}

pub const DEFAULT_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_FILE_KEEP: u32 = 5;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFeedConfig {
    /// The live file; `-` writes to stdout (no rotation).
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    /// Rotate before a line would take the file past this size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` newest .. `path.<keep>` oldest); 0 keeps
    /// none (the file is simply started anew).
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_max_bytes() -> u64 {
    DEFAULT_FILE_MAX_BYTES
}

fn default_keep() -> u32 {
    DEFAULT_FILE_KEEP
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Unix,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogFeedConfig {
    pub transport: SyslogTransport,
    /// `host:port` (udp, tcp; `[v6]:port` for IPv6) or a unix datagram
    /// socket path (unix, e.g. `/dev/log`).
    pub address: String,
    /// APP-NAME, default `monitor`.
    pub app_name: Option<String>,
    /// HOSTNAME, default this host's name.
    pub hostname: Option<String>,
    /// A facility name (`kern`, `user`, `daemon`, `auth`, `authpriv`,
    /// `local0`..`local7`, ...) or its number 0..23; default `auth`.
    pub facility: Option<FacilityValue>,
}

/// A syslog facility as written in the config: a name or a number.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FacilityValue {
    Code(u8),
    Name(String),
}

pub const DEFAULT_WEBHOOK_BATCH: usize = 100;
pub const DEFAULT_WEBHOOK_TIMEOUT_SECONDS: u64 = 10;
pub const DEFAULT_WEBHOOK_MAX_SPOOL_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFeedConfig {
    /// `http://` or `https://` (TLS by rustls).
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// A file holding the token (trailing whitespace ignored); an
    /// alternative to `bearer_token` that keeps it out of the config.
    pub bearer_token_file: Option<PathBuf>,
    /// Most alerts in one POST (default 100).
    pub batch_size: Option<usize>,
    /// The on-disk spool (created if missing; one directory per feed).
    pub spool_dir: PathBuf,
    /// Whole-request timeout (default 10 s).
    pub timeout_seconds: Option<u64>,
    /// PEM root certificates trusted for https instead of the built-in
    /// public (Mozilla/webpki) roots, e.g. a private SOC CA.
    pub ca_file: Option<PathBuf>,
    /// Most bytes the spool may hold; alerts beyond it are refused (and
    /// counted as failures) until the endpoint drains it (default 1 GiB).
    pub max_spool_bytes: Option<u64>,
}

/// Never prints the bearer token.
impl std::fmt::Debug for WebhookFeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookFeedConfig")
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("bearer_token_file", &self.bearer_token_file)
            .field("batch_size", &self.batch_size)
            .field("spool_dir", &self.spool_dir)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("ca_file", &self.ca_file)
            .field("max_spool_bytes", &self.max_spool_bytes)
            .finish()
    }
}

impl WebhookFeedConfig {
    /// The token from `bearer_token` or `bearer_token_file` (not both).
    pub fn token(&self) -> Result<Option<String>> {
        match (&self.bearer_token, &self.bearer_token_file) {
            (Some(_), Some(_)) => {
                bail!("webhook feed: set bearer_token or bearer_token_file, not both")
            }
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(p)) => {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("reading bearer_token_file {}", p.display()))?;
                let t = t.trim_end().to_string();
                if t.is_empty() {
                    bail!("bearer_token_file {} is empty", p.display());
                }
                Ok(Some(t))
            }
            (None, None) => Ok(None),
        }
    }
}

/// Builds the feed a config table describes. `render_ocsf` turns an alert
/// into its OCSF object (used by file feeds with `format = "ocsf"`).
pub fn build(
    cfg: &FeedConfig,
    render_ocsf: fn(&Alert) -> serde_json::Value,
) -> Result<Box<dyn Feed>> {
    Ok(match cfg {
        FeedConfig::File(c) => Box::new(super::file::RotatingFile::open(c, render_ocsf)?),
        FeedConfig::Syslog(c) => Box::new(super::syslog::Syslog::new(c)?),
        FeedConfig::Webhook(c) => Box::new(super::webhook::Webhook::new(c)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Agent {
        #[serde(default)]
        feeds: Vec<FeedConfig>,
    }

    #[test]
    fn parses_every_kind_from_toml() {
        let a: Agent = toml::from_str(
            r#"
[[feeds]]
type = "file"
path = "/var/log/monitor/alerts.ocsf.json"
format = "ocsf"
max_bytes = 1000
keep = 3

[[feeds]]
type = "file"
path = "-"

[[feeds]]
type = "syslog"
transport = "tcp"
address = "127.0.0.1:6514"
app_name = "mon"
hostname = "node-1"
facility = "local3"

[[feeds]]
type = "syslog"
transport = "unix"
address = "/dev/log"
facility = 13

[[feeds]]
type = "webhook"
url = "https://soc.example/ingest"
bearer_token = "tok"
batch_size = 50
spool_dir = "/var/lib/monitor/spool"
timeout_seconds = 5
ca_file = "/etc/ca.pem"
"#,
        )
        .unwrap();
        assert_eq!(a.feeds.len(), 5);
        assert_eq!(
            a.feeds[0],
            FeedConfig::File(FileFeedConfig {
                path: "/var/log/monitor/alerts.ocsf.json".into(),
                format: Format::Ocsf,
                max_bytes: 1000,
                keep: 3,
            })
        );
        match &a.feeds[1] {
            FeedConfig::File(f) => {
                assert_eq!(f.format, Format::Native);
                assert_eq!(f.max_bytes, DEFAULT_FILE_MAX_BYTES);
                assert_eq!(f.keep, DEFAULT_FILE_KEEP);
            }
            other => panic!("{other:?}"),
        }
        match &a.feeds[2] {
            FeedConfig::Syslog(s) => {
                assert_eq!(s.transport, SyslogTransport::Tcp);
                assert_eq!(s.facility, Some(FacilityValue::Name("local3".into())));
            }
            other => panic!("{other:?}"),
        }
        match &a.feeds[3] {
            FeedConfig::Syslog(s) => assert_eq!(s.facility, Some(FacilityValue::Code(13))),
            other => panic!("{other:?}"),
        }
        match &a.feeds[4] {
            FeedConfig::Webhook(w) => {
                assert_eq!(w.token().unwrap().as_deref(), Some("tok"));
                assert_eq!(w.batch_size, Some(50));
                let dbg = format!("{w:?}");
                assert!(!dbg.contains("tok\""), "token leaked in Debug: {dbg}");
                assert!(dbg.contains("REDACTED"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_keys_and_types_are_errors() {
        for bad in [
            "[[feeds]]\ntype = \"file\"\npath = \"/x\"\nmaxbytes = 3\n",
            "[[feeds]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"h:1\"\nport = 3\n",
            "[[feeds]]\ntype = \"syslog\"\ntransport = \"sctp\"\naddress = \"h:1\"\n",
            "[[feeds]]\ntype = \"webhook\"\nurl = \"http://x\"\nspool_dir = \"/s\"\ntoken = \"t\"\n",
            "[[feeds]]\ntype = \"kafka\"\n",
            "[[feeds]]\ntype = \"file\"\npath = \"/x\"\nformat = \"cef\"\n",
            "[[feeds]]\npath = \"/x\"\n",
        ] {
            assert!(toml::from_str::<Agent>(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("monitor-feedcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tok");
        std::fs::write(&p, "s3cr3t\n").unwrap();
        let mut c = WebhookFeedConfig {
            url: "http://127.0.0.1:1/".into(),
            bearer_token: None,
            bearer_token_file: Some(p.clone()),
            batch_size: None,
            spool_dir: dir.join("spool"),
            timeout_seconds: None,
            ca_file: None,
            max_spool_bytes: None,
        };
        assert_eq!(c.token().unwrap().as_deref(), Some("s3cr3t"));
        c.bearer_token = Some("x".into());
        assert!(c.token().is_err(), "both set must be an error");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
