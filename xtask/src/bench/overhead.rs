//! Benchmarks 1 and 2: what the probes cost the processes on the node.
//!
//! 1. Untracked work under six configurations (none, monitor, monitor
//!    without holders, bpftrace, auditd, the empty-program floor), rounds
//!    alternating the order.
//! 2. A tracked holder that writes and sends heavily: none vs monitor.

use std::{
    fs,
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    agent::{Agent, AgentOpts},
    proc::{self, Proc, SIGINT},
    Ctx,
};

/// The untracked workloads.
pub const WORKLOADS: &[(&str, &str)] = &[
    ("open", "open + read 64 B + close of a small file"),
    ("pipe", "1-byte write + 1-byte read on a pipe"),
    ("connect", "TCP connect + close to a loopback listener"),
    ("exec", "fork + exec /bin/true + wait"),
    (
        "redis",
        "redis-benchmark SET + GET against a local redis-server, 50 clients, \
         both on the workload CPU (ns per request)",
    ),
];

/// Index of the redis-benchmark workload in [`WORKLOADS`].
pub const REDIS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    None,
    Monitor,
    /// The agent with no holders: its capture programs detached.
    MonitorIdle,
    Bpftrace,
    Audit,
    Floor,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::Monitor => "monitor",
            Config::MonitorIdle => "monitor-idle",
            Config::Bpftrace => "bpftrace",
            Config::Audit => "auditd",
            Config::Floor => "floor",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Config::None => "no probes",
            Config::Monitor => "monitor run (100 watched paths, 20 idle tracked holders)",
            Config::MonitorIdle => {
                "monitor run (100 watched paths, no holders: only the sched lifecycle \
                 tracepoints and fanotify marks, capture probes detached)"
            }
            Config::Bpftrace => "bpftrace: count per probe on the agent's tracepoints",
            Config::Audit => "auditd: -w on the 100 paths + execve rule",
            Config::Floor => "empty eBPF programs on the agent's tracepoints (floor)",
        }
    }
}

/// One configuration's samples: `ns[w][round]` ns/op of workload `w`.
#[derive(Clone, Debug)]
pub struct ConfigSamples {
    pub config: Config,
    pub ns: Vec<Vec<f64>>,
    /// Seconds to bring the configuration up, per round.
    pub setup_secs: Vec<f64>,
    /// Agent runs only: kernel events lost, as logged (sum over rounds).
    pub lost: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Untracked {
    pub rounds: usize,
    pub iters: Vec<u64>,
    pub configs: Vec<ConfigSamples>,
    /// Configurations left out, and why.
    pub skipped: Vec<(Config, String)>,
}

/// A configuration that is up; torn down on drop (or by `down`).
enum Active {
    None,
    Monitor(Agent),
    Probe(Proc),
    Audit(AuditGuard),
}

impl Active {
    fn down(self) -> Result<u64> {
        match self {
            Active::Monitor(a) => a.kill(),
            Active::Probe(p) => {
                let sig = p.stop_signal;
                p.end(sig, Duration::from_secs(60))?;
                Ok(0)
            }
            Active::Audit(g) => {
                g.restore()?;
                Ok(0)
            }
            Active::None => Ok(0),
        }
    }
}

/// The agent as bench 1 runs it: the 100 watched paths and 20 idle holders.
pub fn start_monitor(ctx: &Ctx, name: &str) -> Result<Agent> {
    let agent = Agent::start(AgentOpts {
        bin: &ctx.monitor,
        scratch: &ctx.scratch,
        name,
        args: vec!["--watch".into(), ctx.watch_glob().into()],
        cpu: None,
        events: true,
    })?;
    for (i, pid) in ctx.idle_holders.iter().enumerate() {
        agent.issue_file(&format!("idle-{i}"), &ctx.watched(i), *pid)?;
    }
    Ok(agent)
}

fn up(ctx: &Ctx, c: Config) -> Result<Active> {
    Ok(match c {
        Config::None => Active::None,
        Config::Monitor => Active::Monitor(start_monitor(ctx, "overhead")?),
        Config::MonitorIdle => Active::Monitor(Agent::start(AgentOpts {
            bin: &ctx.monitor,
            scratch: &ctx.scratch,
            name: "overhead-idle",
            args: vec!["--watch".into(), ctx.watch_glob().into()],
            cpu: None,
            events: true,
        })?),
        Config::Bpftrace => {
            let bin = ctx.bpftrace.as_ref().context("bpftrace not installed")?;
            let script = ctx.scratch.join("equivalent.bt");
            fs::write(&script, bpftrace_script(&ctx.tracepoints, true))?;
            let mut p = Proc::spawn(
                "bpftrace",
                Command::new(bin).args(["-B", "line"]).arg(&script),
            )?;
            p.stop_signal = SIGINT;
            p.wait_line("bench-ready", false, Duration::from_secs(120))?;
            Active::Probe(p)
        }
        Config::Floor => {
            let mut p = Proc::spawn(
                "empty eBPF programs",
                Command::new(&ctx.mb)
                    .args(["floor", "--tracepoints", &ctx.tracepoints.join(",")])
                    .arg("--tracefs")
                    .arg(&ctx.tracefs),
            )?;
            let line = p.wait_line("ready", false, Duration::from_secs(60))?;
            let n = proc::field_f64(&line, "attached")? as usize;
            if n != ctx.tracepoints.len() {
                bail!(
                    "floor attached {n} of {} tracepoints",
                    ctx.tracepoints.len()
                );
            }
            Active::Probe(p)
        }
        Config::Audit => Active::Audit(AuditGuard::up(ctx)?),
    })
}

/// The bpftrace counterpart: the agent's tracepoints, each counting into a
/// per-probe map (`count()` is a per-CPU map update), plus a BEGIN probe
/// (run once all probes are attached) to say it is ready.
pub fn bpftrace_script(tracepoints: &[String], count: bool) -> String {
    let probes: Vec<String> = tracepoints
        .iter()
        .map(|t| format!("tracepoint:{t}"))
        .collect();
    let action = if count { "@[probe] = count();" } else { "" };
    format!(
        "BEGIN {{ printf(\"bench-ready\\n\"); }}\n{}\n{{ {action} }}\n",
        probes.join(",\n")
    )
}

/// Run one workload; its ns/op.
fn workload(ctx: &Ctx, w: &str, iters: u64, redis: Option<&Redis>) -> Result<f64> {
    if w == WORKLOADS[REDIS].0 {
        return redis
            .context("redis-server is not running")?
            .bench(ctx, iters);
    }
    let mut cmd = Command::new(&ctx.mb);
    cmd.arg(w)
        .args(["--iters", &iters.to_string()])
        .args(["--cpu", &ctx.work_cpu.to_string()]);
    if w == "open" {
        cmd.arg("--dir").arg(ctx.scratch.join("untracked"));
    }
    let out = proc::quiet(&mut cmd).with_context(|| format!("workload {w}"))?;
    let line = out.lines().last().unwrap_or("");
    proc::field_f64(line, "ns_per_op")
}

pub fn untracked(ctx: &mut Ctx) -> Result<Untracked> {
    let mut configs = vec![Config::None, Config::Monitor, Config::MonitorIdle];
    let mut skipped = Vec::new();
    match &ctx.bpftrace {
        Some(_) => configs.push(Config::Bpftrace),
        None => skipped.push((Config::Bpftrace, "bpftrace is not installed".to_string())),
    }
    if ctx.audit {
        configs.push(Config::Audit);
    } else {
        skipped.push((
            Config::Audit,
            "auditd/auditctl are not installed".to_string(),
        ));
    }
    configs.push(Config::Floor);
    let iters = ctx.plan.untracked_iters.to_vec();
    let rounds = ctx.plan.rounds;
    let mut samples: Vec<ConfigSamples> = configs
        .iter()
        .map(|&c| ConfigSamples {
            config: c,
            ns: vec![Vec::new(); WORKLOADS.len()],
            setup_secs: Vec::new(),
            lost: 0,
        })
        .collect();
    // The real workload: a redis-server for the whole benchmark (none
    // where Debian's redis-server/redis-tools are missing: reported).
    let redis = match Redis::start(ctx) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("[bench] NOTE: the redis-benchmark workload is skipped: {e:#}");
            None
        }
    };
    let runs = |w: usize| w != REDIS || redis.is_some();
    // Warm-up: page cache, binaries, the listener path.
    for (i, (w, _)) in WORKLOADS.iter().enumerate() {
        if runs(i) {
            workload(ctx, w, (iters[i] / 10).max(1), redis.as_ref())?;
        }
    }
    for r in 0..rounds {
        // Rotate the order each round so no configuration always runs
        // first or right after the same other one.
        let n = configs.len();
        for k in 0..n {
            let ci = (k + r) % n;
            let c = configs[ci];
            if skipped.iter().any(|(s, _)| *s == c) {
                continue;
            }
            ctx.wait_quiet("untracked overhead");
            let t = Instant::now();
            let active = match up(ctx, c) {
                Ok(a) => a,
                // A comparison that cannot come up here is reported, not
                // fatal (the first time; it is then left out).
                Err(e) if matches!(c, Config::Bpftrace | Config::Audit) && r == 0 => {
                    eprintln!("[bench] NOTE: {} skipped: {e:#}", c.name());
                    skipped.push((c, format!("{e:#}")));
                    continue;
                }
                Err(e) => return Err(e.context(format!("bringing up {}", c.name()))),
            };
            samples[ci].setup_secs.push(t.elapsed().as_secs_f64());
            thread::sleep(Duration::from_millis(300));
            let mut res = Ok(());
            for j in 0..WORKLOADS.len() {
                // Rotate the workloads too.
                let wi = (j + r) % WORKLOADS.len();
                if !runs(wi) {
                    continue;
                }
                match workload(ctx, WORKLOADS[wi].0, iters[wi], redis.as_ref()) {
                    Ok(ns) => samples[ci].ns[wi].push(ns),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            let lost = active.down()?;
            res?;
            samples[ci].lost += lost;
            eprintln!(
                "[bench] untracked round {}/{rounds}: {:<8} {}",
                r + 1,
                c.name(),
                WORKLOADS
                    .iter()
                    .enumerate()
                    .map(|(i, (w, _))| format!(
                        "{w} {:.0} ns",
                        samples[ci].ns[i].last().unwrap_or(&0.0)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    samples.retain(|s| !skipped.iter().any(|(c, _)| *c == s.config));
    if let Some(r) = redis {
        r.stop()?;
    }
    Ok(Untracked {
        rounds,
        iters,
        configs: samples,
        skipped,
    })
}

// ------------------------------------------------------------ redis

/// A `redis-server` on a loopback port, no persistence, pinned to the
/// workload CPU, for the length of benchmark 1.
struct Redis {
    server: Proc,
    port: u16,
    bench: PathBuf,
}

impl Redis {
    fn start(ctx: &Ctx) -> Result<Redis> {
        let server_bin = crate::util::which("redis-server")
            .context("redis-server not found (Debian package redis-server)")?;
        let bench = crate::util::which("redis-benchmark")
            .context("redis-benchmark not found (Debian package redis-tools)")?;
        let port = proc::free_port()?;
        let dir = ctx.scratch.join("redis");
        fs::create_dir_all(&dir)?;
        let mut server = Proc::spawn(
            "redis-server",
            Command::new("taskset")
                .args(["-c", &ctx.work_cpu.to_string()])
                .arg(server_bin)
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--daemonize", "no", "--dir"])
                .arg(&dir),
        )?;
        server.wait_line(
            "Ready to accept connections",
            false,
            Duration::from_secs(30),
        )?;
        Ok(Redis {
            server,
            port,
            bench,
        })
    }

    /// `iters` SET and `iters` GET requests; ns per request (the mean of
    /// the two tests' 1/rps).
    fn bench(&self, ctx: &Ctx, iters: u64) -> Result<f64> {
        let out = proc::quiet(
            Command::new("taskset")
                .args(["-c", &ctx.work_cpu.to_string()])
                .arg(&self.bench)
                .args(["-p", &self.port.to_string()])
                .args(["-n", &iters.to_string()])
                .args(["-t", "set,get", "-q", "--csv"]),
        )
        .context("redis-benchmark")?;
        let rps = redis_rps(&out)?;
        Ok(rps.iter().map(|r| 1e9 / r).sum::<f64>() / rps.len() as f64)
    }

    fn stop(self) -> Result<()> {
        self.server.end(proc::SIGTERM, Duration::from_secs(30))
    }
}

/// The requests/s of each test in `redis-benchmark --csv` output
/// (`"SET","41152.26",...` after a header line).
fn redis_rps(csv: &str) -> Result<Vec<f64>> {
    let rps: Vec<f64> = csv
        .lines()
        .filter(|l| !l.starts_with("\"test\""))
        .filter_map(|l| l.split(',').nth(1))
        .map(|f| f.trim_matches('"').parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("redis-benchmark output: {csv:?}"))?;
    if rps.len() != 2 || rps.iter().any(|r| *r <= 0.0) {
        bail!("redis-benchmark: expected SET and GET rates, got {csv:?}");
    }
    Ok(rps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_rps_reads_both_tests() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"41152.26\",\"0.788\"\n\
                   \"GET\",\"41928.72\",\"0.767\"\n";
        assert_eq!(redis_rps(csv).unwrap(), vec![41152.26, 41928.72]);
        assert!(redis_rps("\"test\",\"rps\"\n").is_err());
        assert!(redis_rps("\"SET\",\"n/a\"\n\"GET\",\"1\"\n").is_err());
    }
}

// ------------------------------------------------------------ auditd

/// Audit state to put back: rules, enabled flag, backlog limit, and the
/// daemon if this run started it.
struct AuditGuard {
    started: Option<u32>,
    enabled: String,
    backlog: String,
    rules: Vec<String>,
    restored: bool,
}

fn auditctl(args: &[&str]) -> Result<String> {
    proc::quiet(Command::new("auditctl").args(args))
}

fn audit_status() -> Result<(String, String, u32)> {
    let s = auditctl(&["-s"])?;
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    Ok((
        get("enabled"),
        get("backlog_limit"),
        get("pid").parse().unwrap_or(0),
    ))
}

impl AuditGuard {
    fn up(ctx: &Ctx) -> Result<AuditGuard> {
        let (enabled, backlog, pid) = audit_status()?;
        let rules: Vec<String> = auditctl(&["-l"])?
            .lines()
            .filter(|l| !l.trim().is_empty() && l.trim() != "No rules")
            .map(str::to_string)
            .collect();
        let mut g = AuditGuard {
            started: None,
            enabled,
            backlog,
            rules,
            restored: false,
        };
        if pid == 0 {
            proc::quiet(&mut Command::new("auditd")).context("starting auditd")?;
            let t0 = Instant::now();
            loop {
                let (_, _, pid) = audit_status()?;
                if pid != 0 {
                    g.started = Some(pid);
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    bail!("auditd did not register with the kernel within 10 s");
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        // Debian's default rules file sets an 8192 backlog; the kernel's 64
        // would make busy tasks wait (backlog_wait_time) instead.
        let mut rules = String::from("-b 8192\n");
        for i in 0..ctx.watched_count {
            rules.push_str(&format!(
                "-w {} -p r -k monitor-bench\n",
                ctx.watched(i).display()
            ));
        }
        rules.push_str("-a always,exit -F arch=b64 -S execve -k monitor-bench\n");
        let file = ctx.scratch.join("audit.rules");
        fs::write(&file, rules)?;
        auditctl(&["-R", &file.display().to_string()]).context("loading audit rules")?;
        auditctl(&["-e", "1"])?;
        Ok(g)
    }

    fn restore(mut self) -> Result<()> {
        self.restored = true;
        self.do_restore()
    }

    fn do_restore(&mut self) -> Result<()> {
        auditctl(&["-D"])?;
        for r in &self.rules {
            let args: Vec<&str> = r.split_whitespace().collect();
            if let Err(e) = auditctl(&args) {
                eprintln!("[bench] WARNING: could not restore audit rule {r:?}: {e:#}");
            }
        }
        if let Some(pid) = self.started.take() {
            proc::signal(pid, proc::SIGTERM);
            let t0 = Instant::now();
            while PathBuf::from(format!("/proc/{pid}")).exists()
                && t0.elapsed() < Duration::from_secs(10)
            {
                thread::sleep(Duration::from_millis(20));
            }
        }
        if !self.backlog.is_empty() {
            auditctl(&["-b", &self.backlog])?;
        }
        if !self.enabled.is_empty() && self.enabled != "2" {
            auditctl(&["-e", &self.enabled])?;
        }
        Ok(())
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        if !self.restored {
            if let Err(e) = self.do_restore() {
                eprintln!("[bench] WARNING: restoring audit state failed: {e:#}");
            }
        }
    }
}

// ------------------------------------------------------------ tracked holder

#[derive(Clone, Debug, Default)]
pub struct Tracked {
    pub rounds: usize,
    pub iters: u64,
    pub size: usize,
    pub none_ns: Vec<f64>,
    pub monitor_ns: Vec<f64>,
    /// Per monitor round: events the agent stored, events lost in the kernel.
    pub events: Vec<u64>,
    pub lost: Vec<u64>,
}

fn holder_run(ctx: &Ctx, agent: Option<&Agent>, iters: u64, size: usize) -> Result<f64> {
    let file = ctx.watched(20);
    let mut p = Proc::spawn(
        "holder-io",
        Command::new(&ctx.mb)
            .args(["holder-io", "--iters", &iters.to_string()])
            .args(["--size", &size.to_string(), "--wait", "1"])
            .args(["--cpu", &ctx.work_cpu.to_string()])
            .arg("--file")
            .arg(&file)
            .arg("--out")
            .arg(ctx.scratch.join("holder-out")),
    )?;
    let line = p.wait_line("ready", false, Duration::from_secs(30))?;
    let pid = proc::field_f64(&line, "pid")? as u32;
    if let Some(a) = agent {
        a.issue_file(&format!("heavy-holder-{pid}"), &file, pid)?;
    }
    p.write_line("go")?;
    let out = p.finish(Duration::from_secs(300))?;
    let line = out
        .all()
        .into_iter()
        .find(|l| l.contains("ns_per_op"))
        .context("holder-io printed no result")?;
    proc::field_f64(&line, "ns_per_op")
}

pub fn tracked(ctx: &mut Ctx) -> Result<Tracked> {
    let iters = ctx.plan.holder_iters;
    let size = 4096;
    let rounds = ctx.plan.rounds;
    let mut t = Tracked {
        rounds,
        iters,
        size,
        none_ns: Vec::new(),
        monitor_ns: Vec::new(),
        events: Vec::new(),
        lost: Vec::new(),
    };
    holder_run(ctx, None, (iters / 10).max(1), size)?;
    for r in 0..rounds {
        for k in 0..2 {
            ctx.wait_quiet("tracked holder");
            if (k + r) % 2 == 0 {
                let ns = holder_run(ctx, None, iters, size)?;
                t.none_ns.push(ns);
                eprintln!(
                    "[bench] tracked holder round {}/{rounds}: none    {ns:.0} ns",
                    r + 1
                );
            } else {
                let agent = start_monitor(ctx, "holder")?;
                thread::sleep(Duration::from_millis(300));
                let ns = holder_run(ctx, Some(&agent), iters, size);
                let st = agent.stop()?;
                let ns = ns?;
                t.monitor_ns.push(ns);
                t.events.push(st.events);
                t.lost.push(st.lost);
                eprintln!(
                    "[bench] tracked holder round {}/{rounds}: monitor {ns:.0} ns ({} events stored, {} lost in kernel)",
                    r + 1,
                    st.events,
                    st.lost
                );
            }
        }
    }
    Ok(t)
}
