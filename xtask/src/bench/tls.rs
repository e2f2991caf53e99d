//! Benchmark 11, TLS: what the agent's uprobes on a TLS library cost a
//! process that uses the library without being tracked (issue 13).
//!
//! A Python TLS echo server on loopback (certificate made here with the
//! openssl CLI) and a Python client that opens one TLS connection and
//! times `n` round trips of a 64-byte request (`SSL_write_ex` +
//! `SSL_read_ex` on each side), both pinned to the work CPU, the agent to
//! the agent CPU. Configurations, order rotated each round:
//!
//! * `none`: no agent;
//! * `uprobe-floor`: no agent; bpftrace with an empty uprobe on the same
//!   functions of the same libssl: what any uprobe there costs;
//! * `monitor-no-tls`: the agent with a tracked holder that maps no TLS
//!   library (a `sleep`): its capture programs attached, libssl not probed;
//! * `monitor-untracked`: the agent with a tracked Python holder that
//!   loaded `ssl`, so libssl carries the agent's uprobes (checked: the
//!   agent logged the attachment, and the loop maps that very file); the
//!   loop itself is untracked and pays the trap;
//! * `monitor-holder`: the loop process is the holder (issued a secret,
//!   read its delivery file): every `SSL_write_ex` is captured.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{
    agent::{Agent, AgentOpts},
    proc::{self, Proc},
    report::median,
    Ctx,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsConfig {
    None,
    Floor,
    MonitorNoTls,
    MonitorUntracked,
    MonitorHolder,
}

pub const TLS_CONFIGS: [TlsConfig; 5] = [
    TlsConfig::None,
    TlsConfig::Floor,
    TlsConfig::MonitorNoTls,
    TlsConfig::MonitorUntracked,
    TlsConfig::MonitorHolder,
];

impl TlsConfig {
    pub fn name(self) -> &'static str {
        match self {
            TlsConfig::None => "none",
            TlsConfig::Floor => "uprobe-floor",
            TlsConfig::MonitorNoTls => "monitor-no-tls",
            TlsConfig::MonitorUntracked => "monitor-untracked",
            TlsConfig::MonitorHolder => "monitor-holder",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TlsConfig::None => "no agent",
            TlsConfig::Floor => {
                "no agent; bpftrace with an empty uprobe on `SSL_write` and `SSL_write_ex` of \
                 the same libssl (what any uprobe there costs, the floor)"
            }
            TlsConfig::MonitorNoTls => {
                "the agent with one tracked holder that maps no TLS library (a `sleep`): \
                 capture programs attached, libssl not probed; the loop untracked"
            }
            TlsConfig::MonitorUntracked => {
                "the agent with a tracked Python holder that loaded `ssl`: the agent's uprobes \
                 on the same libssl the loop uses; the loop untracked"
            }
            TlsConfig::MonitorHolder => {
                "the loop is the tracked holder (issued a secret, read its delivery file): its \
                 TLS plaintext captured and scanned"
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct TlsSamples {
    pub config: TlsConfig,
    /// ns per round trip, one per round.
    pub ns: Vec<f64>,
    /// Agent runs that were stopped with their counters (the holder runs):
    /// events stored, lost in the kernel.
    pub events: Vec<u64>,
    pub lost: Vec<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct TlsBench {
    pub rounds: usize,
    pub iters: u64,
    pub bytes: usize,
    /// What the agent said it attached (`openssl probes to PATH (SSL_write, ...)`).
    pub attached: String,
    pub python: String,
    pub configs: Vec<TlsSamples>,
    /// Why the floor was not measured, if it was not.
    pub floor_skipped: Option<String>,
}

impl TlsBench {
    pub fn samples(&self, c: TlsConfig) -> Option<&TlsSamples> {
        self.configs
            .iter()
            .find(|s| s.config == c && !s.ns.is_empty())
    }

    pub fn median_ns(&self, c: TlsConfig) -> Option<f64> {
        self.samples(c).map(|s| median(&s.ns))
    }

    /// Ratio of medians to `none`.
    pub fn ratio(&self, c: TlsConfig) -> Option<f64> {
        Some(self.median_ns(c)? / self.median_ns(TlsConfig::None)?)
    }

    /// Per-round ratios to the `none` run of the same round.
    pub fn round_ratios(&self, c: TlsConfig) -> Vec<f64> {
        match (self.samples(c), self.samples(TlsConfig::None)) {
            (Some(a), Some(n)) => a.ns.iter().zip(&n.ns).map(|(x, y)| x / y).collect(),
            _ => Vec::new(),
        }
    }
}

/// Bytes of each request (and of its echo).
const BYTES: usize = 64;

const SERVER: &str = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print("port=%d" % s.getsockname()[1], flush=True)
def serve(c):
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = ctx.wrap_socket(c, server_side=True)
        while True:
            b = t.recv(4096)
            if not b:
                break
            t.sendall(b)
    except Exception as e:
        print("error", type(e).__name__, e, file=sys.stderr, flush=True)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `port cert n bytes [delivery-file]`: one connection, a warm-up, then
/// (after a line on stdin; a holder first reads its delivery file and
/// waits for a second line) `n` timed round trips.
const LOOP: &str = r#"
import os, socket, ssl, sys, time
port, cert, n, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
held = sys.argv[5] if len(sys.argv) > 5 else ""
ctx = ssl.create_default_context(cafile=cert)
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
msg = (b"GET /ping HTTP/1.1\r\nHost: bench\r\n" + b"x" * size)[:size]
def rounds(k):
    for _ in range(k):
        t.sendall(msg)
        got = 0
        while got < size:
            b = t.recv(4096)
            if not b:
                sys.exit("the server closed the connection")
            got += len(b)
rounds(max(n // 10, 20))
print("ready pid=%d" % os.getpid(), flush=True)
sys.stdin.readline()
if held:
    with open(held) as f:
        f.read()
    print("read", flush=True)
    sys.stdin.readline()
t0 = time.perf_counter_ns()
rounds(n)
dt = time.perf_counter_ns() - t0
print("ns_per_op=%.1f" % (dt / n), flush=True)
t.close()
"#;

/// A process that loaded Python's `ssl` (so libssl is mapped), then reads
/// its delivery file when told and idles until its stdin closes.
const HOLDER: &str = r#"
import os, ssl, sys
ssl.create_default_context()
print("ready pid=%d" % os.getpid(), flush=True)
sys.stdin.readline()
with open(sys.argv[1]) as f:
    f.read()
print("read", flush=True)
sys.stdin.read()
"#;

const ATTACHED: &str = "tls: attached openssl probes to ";
const WAIT: Duration = Duration::from_secs(60);

fn python() -> PathBuf {
    // Debian's interpreter, not a version manager's shim, when present.
    let deb = PathBuf::from("/usr/bin/python3");
    if deb.exists() {
        deb
    } else {
        crate::util::which("python3").unwrap_or_else(|| PathBuf::from("python3"))
    }
}

struct Setup {
    python: PathBuf,
    cert: PathBuf,
    port: u16,
    /// The libssl the server (and so the loop) maps.
    libssl: String,
    bpftrace: Option<PathBuf>,
    _server: Proc,
}

fn setup(ctx: &Ctx) -> Result<Setup> {
    let dir = ctx.scratch.join("tls");
    fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    proc::quiet(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )
    .context("making the TLS server's certificate with `openssl req`")?;
    for (name, text) in [
        ("server.py", SERVER),
        ("loop.py", LOOP),
        ("holder.py", HOLDER),
    ] {
        fs::write(dir.join(name), text)?;
    }
    let python = python();
    let mut server = Proc::spawn(
        "TLS echo server",
        Command::new("taskset")
            .args(["-c", &ctx.work_cpu.to_string()])
            .arg(&python)
            .arg("-u")
            .arg(dir.join("server.py"))
            .arg(&cert)
            .arg(&key),
    )?;
    let line = server.wait_line("port=", false, WAIT)?;
    let port = proc::field_f64(&line, "port")? as u16;
    let maps = fs::read_to_string(format!("/proc/{}/maps", server.pid))?;
    let libssl = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libssl.so"))
        .with_context(|| format!("the TLS server ({}) maps no libssl", python.display()))?
        .to_string();
    Ok(Setup {
        python,
        cert,
        port,
        libssl,
        bpftrace: crate::util::which("bpftrace"),
        _server: server,
    })
}

/// The loop, started: connected and warmed up, waiting on stdin.
fn spawn_loop(ctx: &Ctx, s: &Setup, iters: u64, held: Option<&Path>) -> Result<(Proc, u32)> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &ctx.work_cpu.to_string()])
        .arg(&s.python)
        .arg(ctx.scratch.join("tls").join("loop.py"))
        .arg(s.port.to_string())
        .arg(&s.cert)
        .arg(iters.to_string())
        .arg(BYTES.to_string());
    if let Some(h) = held {
        cmd.arg(h);
    }
    let mut p = Proc::spawn("TLS request loop", &mut cmd)?;
    let line = p.wait_line("ready", false, WAIT)?;
    let pid = proc::field_f64(&line, "pid")? as u32;
    Ok((p, pid))
}

fn finish_loop(p: Proc) -> Result<f64> {
    let out = p.finish(Duration::from_secs(600))?;
    let line = out
        .all()
        .into_iter()
        .find(|l| l.contains("ns_per_op"))
        .context("the TLS loop printed no result")?;
    proc::field_f64(&line, "ns_per_op")
}

fn start_agent(ctx: &Ctx, name: &str) -> Result<Agent> {
    Agent::start(AgentOpts {
        bin: &ctx.monitor,
        scratch: &ctx.scratch,
        name,
        args: vec!["--watch".into(), ctx.watch_glob().into()],
        cpu: Some(ctx.agent_cpu),
        events: true,
    })
}

/// The agent's `tls: attached openssl probes to ...` line, waited for.
fn wait_attached(agent: &mut Agent) -> Result<String> {
    let line = agent
        .proc
        .wait_line(ATTACHED, true, WAIT)
        .context("the agent did not attach its TLS uprobes to libssl")?;
    let what = &line[line.find(ATTACHED).unwrap() + "tls: attached ".len()..];
    if !what.contains("/libssl.so") {
        bail!("the agent attached its TLS probes to something else than libssl: {line}");
    }
    Ok(what.trim().to_string())
}

/// The path in `openssl probes to PATH (SSL_write, ...)`.
fn attached_path(what: &str) -> &str {
    let rest = what.strip_prefix("openssl probes to ").unwrap_or(what);
    rest.rsplit_once(" (").map(|(p, _)| p).unwrap_or(rest)
}

/// One configuration, up, measured, down: ns per round trip, and (holder
/// runs) the agent's counters.
fn run_one(
    ctx: &Ctx,
    s: &Setup,
    c: TlsConfig,
    iters: u64,
    attached: &mut String,
) -> Result<(f64, Option<(u64, u64)>)> {
    let holder_file = ctx.watched(30);
    match c {
        TlsConfig::None => {
            let (mut p, _) = spawn_loop(ctx, s, iters, None)?;
            p.write_line("go")?;
            Ok((finish_loop(p)?, None))
        }
        TlsConfig::Floor => {
            let bin = s.bpftrace.as_ref().context("bpftrace is not installed")?;
            let probes: Vec<String> = ["SSL_write", "SSL_write_ex"]
                .iter()
                .map(|f| format!("uprobe:{}:{f}", s.libssl))
                .collect();
            let mut bt = Proc::spawn(
                "bpftrace (empty uprobes)",
                Command::new(bin).args(["-B", "line", "-e"]).arg(format!(
                    "BEGIN {{ printf(\"bench-ready\\n\"); }}\n{} {{ }}\n",
                    probes.join(", ")
                )),
            )?;
            bt.stop_signal = proc::SIGINT;
            bt.wait_line("bench-ready", false, WAIT)?;
            let (mut p, _) = spawn_loop(ctx, s, iters, None)?;
            p.write_line("go")?;
            let ns = finish_loop(p);
            let sig = bt.stop_signal;
            bt.end(sig, Duration::from_secs(60))?;
            Ok((ns?, None))
        }
        TlsConfig::MonitorNoTls => {
            let agent = start_agent(ctx, "tls-no-tls")?;
            let sleeper = *ctx.idle_holders.first().context("no idle holder")?;
            agent.issue_file("tls-idle", &holder_file, sleeper)?;
            let (mut p, _) = spawn_loop(ctx, s, iters, None)?;
            p.write_line("go")?;
            let ns = finish_loop(p);
            if let Some(l) = agent.proc.err.find(ATTACHED) {
                bail!("monitor-no-tls: the agent attached TLS probes after all: {l}");
            }
            agent.kill()?;
            Ok((ns?, None))
        }
        TlsConfig::MonitorUntracked => {
            let mut agent = start_agent(ctx, "tls-untracked")?;
            let mut holder = Proc::spawn(
                "TLS holder",
                Command::new(&s.python)
                    .arg(ctx.scratch.join("tls").join("holder.py"))
                    .arg(&holder_file),
            )?;
            let line = holder.wait_line("ready", false, WAIT)?;
            let hpid = proc::field_f64(&line, "pid")? as u32;
            agent.issue_file("tls-holder", &holder_file, hpid)?;
            holder.write_line("go")?;
            holder.wait_line("read", false, WAIT)?;
            let what = wait_attached(&mut agent)?;
            let (mut p, pid) = spawn_loop(ctx, s, iters, None)?;
            // The loop uses the very file the uprobes are on.
            let path = attached_path(&what);
            let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
            if !maps.lines().any(|l| l.ends_with(path)) {
                bail!("the TLS loop (pid {pid}) does not map {path}, where the agent attached");
            }
            *attached = what;
            p.write_line("go")?;
            let ns = finish_loop(p);
            drop(holder);
            agent.kill()?;
            Ok((ns?, None))
        }
        TlsConfig::MonitorHolder => {
            let mut agent = start_agent(ctx, "tls-holder")?;
            let file = ctx.watched(31);
            let (mut p, pid) = spawn_loop(ctx, s, iters, Some(&file))?;
            agent.issue_file(&format!("tls-loop-{pid}"), &file, pid)?;
            p.write_line("go")?;
            p.wait_line("read", false, WAIT)?;
            wait_attached(&mut agent)?;
            p.write_line("go")?;
            let ns = finish_loop(p);
            let st = agent.stop()?;
            Ok((ns?, Some((st.events, st.lost))))
        }
    }
}

pub fn tls(ctx: &Ctx) -> Result<TlsBench> {
    let s = setup(ctx)?;
    let iters = ctx.plan.tls_iters;
    let rounds = ctx.plan.rounds;
    let mut b = TlsBench {
        rounds,
        iters,
        bytes: BYTES,
        python: s.python.display().to_string(),
        configs: TLS_CONFIGS
            .iter()
            .map(|&config| TlsSamples {
                config,
                ns: Vec::new(),
                events: Vec::new(),
                lost: Vec::new(),
            })
            .collect(),
        ..Default::default()
    };
    if s.bpftrace.is_none() {
        b.floor_skipped = Some("bpftrace is not installed".into());
    }
    // Warm-up: page cache, the interpreter, the server's accept path.
    run_one(
        ctx,
        &s,
        TlsConfig::None,
        (iters / 10).max(1),
        &mut b.attached,
    )?;
    let n = TLS_CONFIGS.len();
    for r in 0..rounds {
        for k in 0..n {
            let ci = (k + r) % n;
            let c = TLS_CONFIGS[ci];
            if c == TlsConfig::Floor && b.floor_skipped.is_some() {
                continue;
            }
            ctx.wait_quiet("TLS loop");
            let (ns, counters) = run_one(ctx, &s, c, iters, &mut b.attached)
                .with_context(|| format!("TLS loop, {}", c.name()))?;
            let x = &mut b.configs[ci];
            x.ns.push(ns);
            let extra = match counters {
                Some((ev, lost)) => {
                    x.events.push(ev);
                    x.lost.push(lost);
                    format!(" ({ev} events stored, {lost} lost in kernel)")
                }
                None => String::new(),
            };
            eprintln!(
                "[bench] TLS round {}/{rounds}: {:<17} {ns:.0} ns per round trip{extra}",
                r + 1,
                c.name()
            );
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attached_path_from_the_agent_line() {
        assert_eq!(
            attached_path(
                "openssl probes to /usr/lib/x86_64-linux-gnu/libssl.so.3 (SSL_write, SSL_write_ex)"
            ),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3"
        );
    }
}
