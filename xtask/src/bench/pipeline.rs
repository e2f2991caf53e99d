//! Benchmarks 3 to 6: pipeline throughput and losses, fingerprint
//! scanning, detection latency, and the agent's footprint.

use std::{
    fs,
    io::Read as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    agent::{Agent, AgentOpts},
    proc::{self, Mem, Proc, Sleepers},
    Ctx,
};

// ------------------------------------------------------------ 3. throughput

/// Bytes written per generated event.
pub const GEN_SIZE: usize = 64;

#[derive(Clone, Debug)]
pub struct TpRun {
    /// Asked rate (events/s); 0 = as fast as the generator can.
    pub rate: u64,
    pub writes: u64,
    pub gen_secs: f64,
    /// Events the agent decoded, enriched, correlated and stored.
    pub events: u64,
    pub lost: u64,
    /// Agent CPU seconds from the generator's start until it drained.
    pub agent_cpu: f64,
    /// Seconds from the generator's end until the agent went idle.
    pub drain_secs: f64,
    /// Wall seconds over which `agent_cpu` was measured.
    pub cpu_window_secs: f64,
    /// Items the agent's event store dropped (queue full).
    pub store_dropped: u64,
}

impl TpRun {
    pub fn offered_rate(&self) -> f64 {
        self.writes as f64 / self.gen_secs.max(1e-9)
    }
    /// Events stored per second of wall time, generator start to drained.
    pub fn wall_rate(&self) -> f64 {
        self.events as f64 / (self.gen_secs + self.drain_secs).max(1e-9)
    }
    /// Share of its core the agent used while measured.
    pub fn busy(&self) -> f64 {
        self.agent_cpu / self.cpu_window_secs.max(1e-9)
    }
    /// Events per second of agent CPU: what one core sustains.
    pub fn per_core(&self) -> f64 {
        self.events as f64 / self.agent_cpu.max(1e-9)
    }
}

/// One phase on a running agent: a fresh generator (the secret's holder)
/// at `rate`, then wait until the agent drained and logged its losses.
pub(super) fn tp_phase(ctx: &Ctx, agent: &Agent, rate: u64, secs: f64) -> Result<TpRun> {
    let events_file = agent.events_file().context("no events file")?.to_path_buf();
    let (_, from) = super::agent::count_lines(&events_file, 0)?;
    let lost0 = agent.logged_lost();
    let dropped0 = agent.logged_store_dropped();
    let file = ctx.watched(21);
    let mut g = Proc::spawn(
        "generator",
        Command::new(&ctx.mb)
            .args(["gen", "--rate", &rate.to_string()])
            .args(["--secs", &secs.to_string()])
            .args(["--size", &GEN_SIZE.to_string(), "--wait", "1"])
            .args(["--cpu", &ctx.work_cpu.to_string()])
            .arg("--file")
            .arg(&file),
    )?;
    let line = g.wait_line("ready", false, Duration::from_secs(30))?;
    let pid = proc::field_f64(&line, "pid")? as u32;
    // The generator holds the secret in the file it reads: its writes are
    // scanned against a non-empty fingerprint set, and raise nothing.
    agent.issue_file(&format!("throughput-{pid}"), &file, pid)?;
    let c0 = agent.cpu_secs(ctx.tck)?;
    let w0 = Instant::now();
    g.write_line("go")?;
    let out = g.finish(Duration::from_secs_f64(secs + 120.0))?;
    let t_end = Instant::now();
    let line = out
        .all()
        .into_iter()
        .find(|l| l.starts_with("writes="))
        .context("generator printed no result")?;
    // Drained when the agent's CPU time stops moving (< 1 tick per 100 ms,
    // twice in a row).
    let mut prev = agent.cpu_secs(ctx.tck)?;
    let mut still = 0;
    while still < 2 && t_end.elapsed() < Duration::from_secs(120) {
        thread::sleep(Duration::from_millis(100));
        let c = agent.cpu_secs(ctx.tck)?;
        if c - prev <= 1.0 / ctx.tck + 1e-9 {
            still += 1;
        } else {
            still = 0;
        }
        prev = c;
    }
    let drain_secs = (t_end.elapsed().as_secs_f64() - 0.2).max(0.0);
    let c1 = agent.cpu_secs(ctx.tck)?;
    let cpu_window_secs = w0.elapsed().as_secs_f64();
    // The agent logs new losses on its 1-s tick: let one pass.
    thread::sleep(Duration::from_millis(1150));
    let (events, _) = super::agent::count_lines(&events_file, from)?;
    Ok(TpRun {
        rate,
        writes: proc::field_f64(&line, "writes")? as u64,
        gen_secs: proc::field_f64(&line, "secs")?,
        events,
        lost: agent.logged_lost() - lost0,
        agent_cpu: c1 - c0,
        drain_secs,
        cpu_window_secs,
        store_dropped: agent.logged_store_dropped() - dropped0,
    })
}

#[derive(Clone, Debug, Default)]
pub struct Throughput {
    pub secs: f64,
    pub size: usize,
    pub runs: Vec<TpRun>,
}

/// Paced rates (0 = as fast as the generator can). 500,000/s is the
/// per-core target itself: are there losses at that rate?
pub const RATES: &[u64] = &[10_000, 100_000, 500_000, 0];

pub fn throughput(ctx: &Ctx) -> Result<Throughput> {
    let secs = ctx.plan.tp_secs;
    let mut runs = Vec::new();
    for r in 0..ctx.plan.tp_reps {
        // One agent per repetition, pinned; the three rates in turn (order
        // rotated), each with a fresh generator.
        ctx.wait_quiet("throughput");
        let agent = Agent::start(AgentOpts {
            bin: &ctx.monitor,
            scratch: &ctx.scratch,
            name: "throughput",
            args: vec!["--watch".into(), ctx.watch_glob().into()],
            cpu: Some(ctx.agent_cpu),
            events: true,
        })?;
        for k in 0..RATES.len() {
            let rate = RATES[(k + r) % RATES.len()];
            if k > 0 {
                ctx.wait_quiet("throughput");
            }
            let run = tp_phase(ctx, &agent, rate, secs)?;
            eprintln!(
                "[bench] throughput rep {}/{}: asked {:>7}/s, offered {:>9.0}/s, stored {} events, lost {}, agent {:.2} CPU s = {:.0} events/CPU-s",
                r + 1,
                ctx.plan.tp_reps,
                if rate == 0 { "max".to_string() } else { rate.to_string() },
                run.offered_rate(),
                run.events,
                run.lost,
                run.agent_cpu,
                run.per_core()
            );
            runs.push(run);
        }
        agent.kill()?;
        let _ = fs::remove_file(Agent::events_path(&ctx.scratch, "throughput"));
    }
    Ok(Throughput {
        secs,
        size: GEN_SIZE,
        runs,
    })
}

// ------------------------------------------------------------ 4. scanning

#[derive(Clone, Debug)]
pub struct ScanSet {
    pub secrets: usize,
    pub add_us: f64,
    pub set_rss_kib: u64,
    /// Fingerprinted forms (each with two anchor windows).
    pub fingerprints: u64,
    /// (corpus, bytes/s, matches, planted)
    pub corpora: Vec<(String, f64, u64, u64)>,
}

pub const SCAN_SECRETS: &[usize] = &[10, 1_000, 10_000];

pub fn scan(ctx: &Ctx) -> Result<Vec<ScanSet>> {
    let mut out = Vec::new();
    for &n in SCAN_SECRETS {
        ctx.wait_quiet("scanning");
        let text = proc::quiet(
            Command::new(&ctx.mb)
                .args(["scan", "--secrets", &n.to_string()])
                .args(["--mib", &ctx.plan.scan_mib.to_string()])
                .args(["--reps", &ctx.plan.scan_reps.to_string()])
                .args(["--cpu", &ctx.work_cpu.to_string()]),
        )?;
        let mut s = ScanSet {
            secrets: n,
            add_us: 0.0,
            set_rss_kib: 0,
            fingerprints: 0,
            corpora: Vec::new(),
        };
        for l in text.lines() {
            if l.starts_with("secrets=") {
                s.add_us = proc::field_f64(l, "add_us_per_secret")?;
                s.set_rss_kib = proc::field_f64(l, "set_rss_kib")? as u64;
                s.fingerprints = proc::field_f64(l, "fingerprints")? as u64;
            } else if let Some(c) = proc::field(l, "corpus") {
                s.corpora.push((
                    c.to_string(),
                    proc::field_f64(l, "bytes_per_sec")?,
                    proc::field_f64(l, "matches")? as u64,
                    proc::field_f64(l, "planted")? as u64,
                ));
            }
        }
        eprintln!(
            "[bench] scan, {n} secrets: {}",
            s.corpora
                .iter()
                .map(|(c, b, m, p)| format!("{c} {:.2} GB/s ({m}/{p} found)", b / 1e9))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.push(s);
    }
    Ok(out)
}

// ------------------------------------------------------------ 5. latency

#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub interval_ms: u64,
    /// Per sample: syscall time, then (alert's event time, alert arrival)
    /// if the alert came; Unix ns.
    pub samples: Vec<(i128, Option<(i128, i128)>)>,
}

impl Latency {
    /// Syscall -> alert line arrival, ms.
    pub fn end_to_end_ms(&self) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|(t0, r)| r.map(|(_, a)| (a - t0) as f64 / 1e6))
            .collect()
    }
    /// Alert's event time -> alert line arrival, ms (the agent's share).
    pub fn pipeline_ms(&self) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|(_, r)| r.map(|(e, a)| (a - e) as f64 / 1e6))
            .collect()
    }
    pub fn missing(&self) -> usize {
        self.samples.iter().filter(|(_, r)| r.is_none()).count()
    }
}

pub fn latency(ctx: &Ctx) -> Result<Latency> {
    ctx.wait_quiet("latency");
    let mut holders = Sleepers::default();
    let holder = holders.spawn(&[])?;
    let (agent, alerts) = Agent::start_alerts_piped(AgentOpts {
        bin: &ctx.monitor,
        scratch: &ctx.scratch,
        name: "latency",
        args: vec!["--watch".into(), ctx.watch_glob().into()],
        cpu: None,
        events: true,
    })?;
    let file = ctx.watched(22);
    agent.issue_file("latency", &file, holder)?;
    let interval_ms = 20;
    let reader = Proc::spawn_stdin(
        "foreign-read",
        Command::new(&ctx.mb)
            .args([
                "foreign-read",
                "--samples",
                &ctx.plan.lat_samples.to_string(),
            ])
            .args(["--interval-ms", &interval_ms.to_string()])
            .args(["--cpu", &ctx.work_cpu.to_string()])
            .arg("--file")
            .arg(&file),
        Stdio::from(alerts),
    )?;
    let out = reader.finish(Duration::from_secs(600))?;
    agent.kill()?;
    let mut samples = Vec::new();
    for l in out.all() {
        if !l.starts_with("sample ") {
            continue;
        }
        let t0: i128 = proc::field(&l, "t0").context("t0")?.parse()?;
        let ev = proc::field(&l, "event").context("event")?;
        let arr = proc::field(&l, "arrival").context("arrival")?;
        let r = match (ev.parse::<i128>(), arr.parse::<i128>()) {
            (Ok(e), Ok(a)) => Some((e, a)),
            _ => None,
        };
        samples.push((t0, r));
    }
    if samples.is_empty() {
        bail!("foreign-read produced no samples");
    }
    let l = Latency {
        interval_ms,
        samples,
    };
    eprintln!(
        "[bench] latency: {} samples, {} without an alert",
        l.samples.len(),
        l.missing()
    );
    Ok(l)
}

// ------------------------------------------------------------ 6. footprint

#[derive(Clone, Copy, Debug, Default)]
pub struct Fp {
    /// Measured idle window.
    pub secs: f64,
    pub cpu_secs: f64,
    pub mem: Mem,
}

#[derive(Clone, Debug, Default)]
pub struct Footprint {
    pub idle: Fp,
    pub loaded: Fp,
    pub secrets: usize,
    pub learned: usize,
    pub holders: usize,
    /// Start to ready with every record applied: wall and CPU seconds.
    pub load_wall: f64,
    pub load_cpu: f64,
    /// CPU seconds of an agent with no records from start to ready.
    pub startup_cpu: f64,
    /// Seconds from SIGTERM to the idle agent's exit (detaching programs).
    pub graceful_stop_secs: f64,
    /// From SIGTERM until the programs were detached (the agent's
    /// `monitor-detach` child gone).
    pub graceful_detach_secs: f64,
    /// File-delivered records: (records, seconds to load, CPU seconds).
    pub file_loads: Vec<(usize, f64, f64)>,
    /// The loaded agent's memory after answering `GET /secrets` (every
    /// secret listed in one response), measured after `loaded`.
    pub after_list: Mem,
    /// Size of that response, bytes.
    pub list_bytes: usize,
}

fn measure_idle(ctx: &Ctx, agent: &Agent, secs: f64) -> Result<Fp> {
    ctx.wait_quiet("footprint");
    thread::sleep(Duration::from_millis(500));
    let c0 = agent.cpu_secs(ctx.tck)?;
    let t = Instant::now();
    thread::sleep(Duration::from_secs_f64(secs));
    let c1 = agent.cpu_secs(ctx.tck)?;
    Ok(Fp {
        secs: t.elapsed().as_secs_f64(),
        cpu_secs: c1 - c0,
        mem: agent.mem()?,
    })
}

fn random_hex(n_bytes: usize) -> Result<String> {
    let mut b = vec![0u8; n_bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn footprint(ctx: &Ctx) -> Result<Footprint> {
    let mut fp = Footprint::default();
    let base_args = || vec!["--watch".into(), ctx.watch_glob().into()];

    // Idle: the 100 watched paths, nothing else.
    let agent = Agent::start(AgentOpts {
        bin: &ctx.monitor,
        scratch: &ctx.scratch,
        name: "footprint-idle",
        args: base_args(),
        cpu: None,
        events: true,
    })?;
    fp.startup_cpu = agent.cpu_secs(ctx.tck)?;
    fp.idle = measure_idle(ctx, &agent, ctx.plan.idle_secs)?;
    (_, fp.graceful_stop_secs, fp.graceful_detach_secs) = agent.stop_graceful()?;
    eprintln!(
        "[bench] footprint idle: {:.3} CPU s in {:.0} s, VmHWM {} KiB; graceful stop {:.1} s",
        fp.idle.cpu_secs, fp.idle.secs, fp.idle.mem.hwm_kib, fp.graceful_stop_secs
    );

    // Loaded: H holders (sleep processes) with K env secrets each, issued by
    // pid in an issuance file: H*K secrets, H tracked processes.
    let (h, k) = (ctx.plan.fp_holders, ctx.plan.fp_secrets_per);
    let mut holders = Sleepers::default();
    let mut records = String::new();
    let hex = random_hex(16 * h * k)?;
    for i in 0..h {
        let env: Vec<(String, String)> = (0..k)
            .map(|j| {
                let off = 32 * (i * k + j);
                (
                    format!("BENCH_SECRET_{j}"),
                    format!("bench-{}", &hex[off..off + 32]),
                )
            })
            .collect();
        let pid = holders.spawn(&env)?;
        for j in 0..k {
            records.push_str(&format!(
                "{{\"secret_id\":\"fp-{i}-{j}\",\"holder\":{{\"pid\":{pid}}},\"delivery\":[{{\"env\":\"BENCH_SECRET_{j}\"}}],\"source\":\"monitor-bench\"}}\n"
            ));
        }
    }
    let file = ctx.scratch.join("footprint-issuances.jsonl");
    fs::write(&file, records)?;
    let mut args = base_args();
    args.push("--issuances".into());
    args.push(file.clone().into());
    let agent = Agent::start(AgentOpts {
        bin: &ctx.monitor,
        scratch: &ctx.scratch,
        name: "footprint-loaded",
        args,
        cpu: None,
        events: true,
    })?;
    // The agent applies the whole file before it says ready.
    fp.load_wall = agent.ready_secs;
    fp.load_cpu = agent.cpu_secs(ctx.tck)?;
    fp.secrets = h * k;
    fp.holders = h;
    fp.loaded = measure_idle(ctx, &agent, ctx.plan.idle_secs)?;
    // Listing every secret is an API request like any other, measured on
    // its own: it builds the whole response in memory.
    let body = agent.api_get("/secrets")?;
    fp.learned = body.matches("\"learned\":true").count();
    fp.list_bytes = body.len();
    drop(body);
    fp.after_list = agent.mem()?;
    agent.kill()?;
    drop(holders);
    eprintln!(
        "[bench] footprint loaded: {} secrets ({} learned), {h} tracked holders, loaded in {:.2} s ({:.2} CPU s); idle {:.3} CPU s in {:.0} s, VmHWM {} KiB; after GET /secrets VmHWM {} KiB",
        fp.secrets, fp.learned, fp.load_wall, fp.load_cpu, fp.loaded.cpu_secs, fp.loaded.secs, fp.loaded.mem.hwm_kib, fp.after_list.hwm_kib
    );

    // File-delivered records: how loading scales with their number.
    let holder = ctx.idle_holders.first().copied().unwrap_or(1);
    for &n in &ctx.plan.file_load_ns {
        let dir = ctx.scratch.join(format!("fileload-{n}"));
        fs::create_dir_all(&dir)?;
        let mut records = String::new();
        let hex = random_hex(16 * n)?;
        for i in 0..n {
            let p = dir.join(format!("s{i}"));
            fs::write(&p, format!("bench-{}\n", &hex[32 * i..32 * i + 32]))?;
            records.push_str(&format!(
                "{{\"secret_id\":\"file-{i}\",\"holder\":{{\"pid\":{holder}}},\"delivery\":[{{\"file\":\"{}\"}}],\"source\":\"monitor-bench\"}}\n",
                p.display()
            ));
        }
        let file = ctx.scratch.join(format!("fileload-{n}.jsonl"));
        fs::write(&file, records)?;
        let agent = Agent::start(AgentOpts {
            bin: &ctx.monitor,
            scratch: &ctx.scratch,
            name: "fileload",
            args: vec!["--issuances".into(), file.into()],
            cpu: None,
            events: false,
        })?;
        let cpu = agent.cpu_secs(ctx.tck)?;
        fp.file_loads.push((n, agent.ready_secs, cpu));
        agent.kill()?;
        let _ = fs::remove_dir_all(&dir);
        eprintln!(
            "[bench] footprint: {n} file-delivered records loaded in {:.2} s",
            fp.file_loads.last().unwrap().1
        );
    }
    Ok(fp)
}
