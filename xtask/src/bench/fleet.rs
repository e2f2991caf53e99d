//! Benchmark 10, the fleet: what one agent's link publishes to a real 3-server NATS
//! JetStream cluster (Debian's `nats-server` on loopback, R3 streams), as
//! events a second and alerts a second until the last is acknowledged; and
//! the end-to-end latency of cross-node detection: two agents scoped to
//! two cgroups stand for nodes A and B, A's holder reads its secret (A
//! publishes the fingerprints, B imports them), then forked processes in
//! B's cgroup send the secret to a loopback listener; each sample is the
//! time from the fork to B's `secret.replay.foreign` alert arriving from
//! the cluster.
use std::{
    ffi::OsString,
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    agent::{Agent, AgentOpts},
    Ctx,
};

#[derive(Clone, Debug, Default)]
pub struct Fleet {
    pub events: u64,
    pub events_per_sec: f64,
    pub alerts: u64,
    pub alerts_per_sec: f64,
    pub sent: u64,
    pub received: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

struct Cluster {
    dir: PathBuf,
    servers: Vec<Child>,
    url: String,
}

impl Cluster {
    fn start(scratch: &Path) -> Result<Cluster> {
        let bin = crate::util::which("nats-server")
            .context("nats-server not found (cargo xtask setup installs Debian's nats-server)")?;
        let dir = scratch.join("nats");
        fs::create_dir_all(&dir)?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((
                super::proc::free_port()?,
                super::proc::free_port()?,
                super::proc::free_port()?,
            ));
        }
        let mut servers = Vec::new();
        for (i, (client, route, http)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r, _))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let conf = dir.join(format!("n{i}.conf"));
            fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     jetstream {{ store_dir: {:?} }}\n\
                     cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    dir.join(format!("n{i}")),
                    routes.join(", ")
                ),
            )?;
            let log = fs::File::create(dir.join(format!("n{i}.log")))?;
            servers.push(
                Command::new(&bin)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("starting nats-server")?,
            );
        }
        let url = ports
            .iter()
            .map(|(c, _, _)| format!("nats://127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let c = Cluster { dir, servers, url };
        let t0 = Instant::now();
        'wait: loop {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!(
                    "NATS cluster not ready in 60 s (logs in {})",
                    c.dir.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
            for (_, _, http) in &ports {
                let ok = (|| -> Option<bool> {
                    let mut s = TcpStream::connect(("127.0.0.1", *http)).ok()?;
                    write!(s, "GET /jsz HTTP/1.0\r\n\r\n").ok()?;
                    let mut b = String::new();
                    s.read_to_string(&mut b).ok()?;
                    // `"leader": "n1"` under meta_cluster (no JSON crate here).
                    let body = b.split_once("\r\n\r\n")?.1;
                    let rest = body.split_once("\"meta_cluster\"")?.1;
                    let after = rest.split_once("\"leader\":")?.1.trim_start();
                    Some(after.starts_with('"') && !after.starts_with("\"\""))
                })();
                if ok != Some(true) {
                    continue 'wait;
                }
            }
            return Ok(c);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A cgroup v2 directory under the mount, removed on drop.
struct Cgroup(PathBuf, String);

impl Cgroup {
    fn new(name: &str) -> Result<Cgroup> {
        let mi = fs::read_to_string("/proc/self/mountinfo")?;
        let mount = mi
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split_whitespace().next()? == "cgroup2")
                    .then(|| pre.split_whitespace().nth(4).map(str::to_string))
                    .flatten()
            })
            .context("no cgroup v2 mount")?;
        let rel = format!("/{name}-{}", std::process::id());
        let dir = PathBuf::from(mount).join(&rel[1..]);
        fs::create_dir_all(&dir)?;
        Ok(Cgroup(dir, rel))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn kv(out: &str, k: &str) -> Result<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {k}= in {out:?}"))
}

pub fn fleet(ctx: &Ctx) -> Result<Fleet> {
    let cluster = Cluster::start(&ctx.scratch)?;
    let (n_events, n_alerts, samples) = if ctx.smoke {
        (2_000u64, 500u64, 5u64)
    } else {
        (500_000, 100_000, 200)
    };
    let mut r = Fleet::default();
    for (kind, n) in [("events", n_events), ("alerts", n_alerts)] {
        ctx.wait_quiet(&format!("fleet {kind}"));
        let out = crate::util::stdout(Command::new(&ctx.mb).args([
            "fleet-publish",
            "--url",
            &cluster.url,
            "--count",
            &n.to_string(),
            "--kind",
            kind,
        ]))?;
        let rate = kv(&out, "rate")?;
        if kind == "events" {
            (r.events, r.events_per_sec) = (n, rate);
        } else {
            (r.alerts, r.alerts_per_sec) = (n, rate);
        }
    }

    // Two nodes on this machine.
    let a_cg = Cgroup::new("monitor-bench-node-a")?;
    let b_cg = Cgroup::new("monitor-bench-node-b")?;
    let key = ctx.scratch.join("fleet.key");
    fs::write(
        &key,
        "3f1e2d4c5b6a79880796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n",
    )?;
    let secret = ctx.scratch.join("fleet-secret");
    let value = format!(
        "fleet-bench-{:016x}",
        (std::process::id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    );
    fs::write(&secret, format!("{value}\n"))?;
    let issuances = ctx.scratch.join("fleet-issuances.jsonl");
    fs::write(
        &issuances,
        format!(
            "{{\"secret_id\": \"fleet-bench\", \"holder\": {{\"cgroup\": {:?}}}, \
             \"delivery\": [{{\"file\": {:?}}}]}}\n",
            a_cg.1,
            secret.display().to_string()
        ),
    )?;
    let node = |name: &str, cg: &Cgroup, extra: &[&Path]| -> Result<Agent> {
        let mut args: Vec<OsString> = vec![
            "--fleet".into(),
            cluster.url.clone().into(),
            "--node".into(),
            name.into(),
            "--scope-cgroup".into(),
            cg.1.clone().into(),
            "--fingerprint-key-file".into(),
            key.clone().into(),
        ];
        for e in extra {
            args.push("--issuances".into());
            args.push(e.into());
        }
        Agent::start(AgentOpts {
            bin: &ctx.monitor,
            scratch: &ctx.scratch,
            name: &format!("fleet-{name}"),
            args,
            cpu: None,
            events: false,
        })
    };
    let a = node("a", &a_cg, &[&issuances])?;
    let b = node("b", &b_cg, &[])?;
    // A's holder reads its secret: A learns it and publishes its
    // fingerprints; wait until B has them.
    let t0 = Instant::now();
    loop {
        if a.api_get("/secrets")?.contains("\"fleet-bench\"") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("node a never recorded the bench secret");
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec cat {} > /dev/null",
            a_cg.0.display(),
            secret.display()
        ))
        .status()?;
    if !st.success() {
        bail!("the holder's read failed");
    }
    let t0 = Instant::now();
    loop {
        let s = b.api_get("/secrets")?;
        // Node b knows this one secret (compact JSON): learned from a's
        // fingerprints.
        if s.contains("\"secret_id\":\"fleet-bench\"") && s.contains("\"learned\":true") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("node b never received the bench secret's fingerprints");
        }
        thread::sleep(Duration::from_millis(100));
    }
    ctx.wait_quiet("fleet latency");
    let out = crate::util::stdout(
        Command::new(&ctx.mb)
            .args([
                "fleet-replay",
                "--url",
                &cluster.url,
                "--node",
                "b",
                "--samples",
                &samples.to_string(),
                "--cgroup",
            ])
            .arg(&b_cg.0)
            .env("MB_VALUE", &value),
    )?;
    r.sent = kv(&out, "sent")? as u64;
    r.received = kv(&out, "received")? as u64;
    r.p50_ms = kv(&out, "p50_ms")?;
    r.p99_ms = kv(&out, "p99_ms")?;
    r.max_ms = kv(&out, "max_ms")?;
    let _ = fs::remove_file(&secret);
    a.stop()?;
    b.stop()?;
    drop(cluster);
    Ok(r)
}
