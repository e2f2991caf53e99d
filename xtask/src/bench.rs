//! `cargo xtask bench [--smoke]`: what the monitor costs, measured side by
//! side with what users would run instead, in one run (issue 6).
//!
//! 1. overhead on untracked work: none / monitor / bpftrace / auditd / the
//!    empty-program floor, as ratios to none ([`overhead`]);
//! 2. overhead on a tracked holder that writes and sends heavily;
//! 3. pipeline throughput and lost events at 10k/s, 100k/s and max
//!    ([`pipeline`]);
//! 4. fingerprint scanning bytes/s with 10, 1,000, 10,000 secrets;
//! 5. detection latency, syscall to alert line;
//! 6. the agent's CPU and peak RSS, idle and with 10,000 secrets and 1,000
//!    tracked processes;
//!
//! 7-10. the hot path at scale and the fleet ([`scale`], [`fleet`]);
//! 11. a TLS request loop by an untracked process with and without the
//!     agent's uprobes on the same libssl, and by a tracked holder ([`tls`]).
//!
//! The workloads are compiled Rust (`bench/`, binary `monitor-bench`). The
//! full run writes `BENCHMARKS.md` and `target/bench/results.json`; `--smoke`
//! runs every path with tiny counts and writes only under `target/bench/`
//! (`smoke-results.json`, `smoke-BENCHMARKS.md`); `--only footprint,scan`
//! runs just those benchmarks ([`SECTIONS`]) and writes
//! `target/bench/[smoke-]partial-*`, never `BENCHMARKS.md`.

mod agent;
mod fleet;
mod overhead;
mod pipeline;
mod proc;
mod report;
mod scale;
mod tls;

use std::{
    cell::RefCell,
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, cargo, is_root, which, workspace_root};

use self::{overhead::Config, proc::Sleepers, report::Results};

/// Iteration counts and durations of one mode.
pub struct Plan {
    pub rounds: usize,
    /// open, pipe, connect, exec, redis (requests per test).
    pub untracked_iters: [u64; 5],
    pub holder_iters: u64,
    pub tp_secs: f64,
    pub tp_reps: usize,
    pub scan_mib: usize,
    pub scan_reps: usize,
    pub lat_samples: usize,
    pub idle_secs: f64,
    pub fp_holders: usize,
    pub fp_secrets_per: usize,
    pub file_load_ns: Vec<usize>,
    /// TLS round trips per loop (benchmark 11).
    pub tls_iters: u64,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            rounds: 7,
            untracked_iters: [300_000, 600_000, 30_000, 600, 100_000],
            holder_iters: 40_000,
            tp_secs: 4.0,
            tp_reps: 3,
            scan_mib: 64,
            scan_reps: 5,
            lat_samples: 300,
            idle_secs: 10.0,
            fp_holders: 1000,
            fp_secrets_per: 10,
            file_load_ns: vec![250, 500, 1000, 2000],
            tls_iters: 20_000,
        }
    }

    fn smoke() -> Plan {
        Plan {
            rounds: 1,
            untracked_iters: [2_000, 5_000, 200, 10, 2_000],
            holder_iters: 500,
            tp_secs: 0.5,
            tp_reps: 1,
            scan_mib: 1,
            scan_reps: 1,
            lat_samples: 20,
            idle_secs: 1.0,
            fp_holders: 20,
            fp_secrets_per: 5,
            file_load_ns: vec![20],
            tls_iters: 200,
        }
    }
}

/// The machine and the run, for the report.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub date: String,
    pub nproc: usize,
    pub cpu: String,
    pub mem_kib: u64,
    pub kernel: String,
    pub os: String,
    pub bpftrace: String,
    pub auditctl: String,
    pub rustc: String,
    pub commit: String,
    pub command: String,
    pub work_cpu: usize,
    pub agent_cpu: usize,
    pub tracepoints: usize,
    /// Their names, `category:name`.
    pub tracepoint_names: Vec<String>,
    pub scan_mib: usize,
    pub scan_reps: usize,
}

/// What every benchmark needs.
pub struct Ctx {
    pub smoke: bool,
    pub plan: Plan,
    /// `target/release/monitor`.
    pub monitor: PathBuf,
    /// `target/release/monitor-bench`.
    pub mb: PathBuf,
    /// Scratch directory (removed at the end).
    pub scratch: PathBuf,
    pub tracefs: PathBuf,
    /// The agent's tracepoints, `category:name`.
    pub tracepoints: Vec<String>,
    pub tck: f64,
    pub bpftrace: Option<PathBuf>,
    pub audit: bool,
    pub watched_count: usize,
    /// Idle holders (pids of `sleep` processes) for the agent configuration.
    pub idle_holders: Vec<u32>,
    _sleepers: Sleepers,
    /// CPU the workloads are pinned to, and the agent in benchmark 3.
    pub work_cpu: usize,
    pub agent_cpu: usize,
    /// Background CPU seen before each measurement, and time spent waiting
    /// for the machine to be quiet.
    pub quiet: RefCell<Quiet>,
}

/// Other work on the machine (builds, tests) skews every figure: each
/// measurement first waits (within a budget) until the machine is quiet.
#[derive(Clone, Debug, Default)]
pub struct Quiet {
    /// Busy fraction of all CPUs over 0.5 s right before each measurement.
    pub busy: Vec<f64>,
    pub waited_secs: f64,
    pub budget_secs: f64,
    /// Measurements that started with the machine still busy.
    pub loud_starts: usize,
}

/// Busy share of all CPUs (`/proc/stat`) over `window`.
fn busy_fraction(window: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let s = fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = s
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4).unwrap_or(&0);
        Some((total, idle))
    }
    let (Some((t0, i0)), true) = (sample(), {
        thread::sleep(window);
        true
    }) else {
        return 0.0;
    };
    match sample() {
        Some((t1, i1)) if t1 > t0 => 1.0 - (i1 - i0) as f64 / (t1 - t0) as f64,
        _ => 0.0,
    }
}

/// Busy above this share of all CPUs (nothing of ours runs at the gates)
/// means someone else is using the machine.
const LOUD: f64 = 0.10;

impl Ctx {
    /// Wait until the machine is quiet (or the waiting budget is spent).
    pub fn wait_quiet(&self, what: &str) {
        let mut q = self.quiet.borrow_mut();
        let t0 = Instant::now();
        let mut said = false;
        loop {
            let b = busy_fraction(Duration::from_millis(if self.smoke { 200 } else { 500 }));
            if b <= LOUD {
                q.busy.push(b);
                break;
            }
            if q.waited_secs + t0.elapsed().as_secs_f64() >= q.budget_secs {
                q.busy.push(b);
                q.loud_starts += 1;
                step(format!(
                    "WARNING: {what}: machine {:.0}% busy with other work; waiting budget spent, measuring anyway",
                    b * 100.0
                ));
                break;
            }
            if !said {
                step(format!(
                    "{what}: machine {:.0}% busy with other work; waiting for quiet",
                    b * 100.0
                ));
                said = true;
            }
            thread::sleep(Duration::from_millis(1500));
        }
        q.waited_secs += t0.elapsed().as_secs_f64();
    }

    pub fn watched(&self, i: usize) -> PathBuf {
        self.scratch.join("watched").join(format!("s{i}"))
    }

    pub fn watch_glob(&self) -> String {
        format!("{}/*", self.scratch.join("watched").display())
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

fn step(msg: impl std::fmt::Display) {
    eprintln!("[bench] {msg}");
}

/// The benchmarks, by the names `--only` takes, in the order they run.
pub const SECTIONS: [&str; 11] = [
    "untracked",
    "tracked",
    "throughput",
    "scan",
    "latency",
    "footprint",
    "secrets",
    "flood",
    "ingest",
    "fleet",
    "tls",
];

/// `only`: names from [`SECTIONS`] to run (empty: all). A partial run
/// writes `target/bench/[smoke-]partial-*` and never `BENCHMARKS.md`.
pub fn bench(smoke: bool, only: &[String]) -> Result<()> {
    let t_start = Instant::now();
    if let Some(bad) = only.iter().find(|o| !SECTIONS.contains(&o.as_str())) {
        bail!(
            "unknown benchmark {bad:?} for --only; one of: {}",
            SECTIONS.join(", ")
        );
    }
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let ran: Vec<&'static str> = SECTIONS.iter().copied().filter(|s| run(s)).collect();
    let partial = ran.len() < SECTIONS.len();
    if !is_root() {
        bail!("the benchmarks load eBPF programs, start auditd and change audit rules: run them as root");
    }
    crate::setup::setup()?;
    proc::set_background_reap(smoke);
    let mut notes = Vec::new();
    // Only the untracked-overhead comparisons use bpftrace and auditd.
    let (bpftrace, audit) = if run("untracked") {
        comparison_tools(&mut notes)?
    } else {
        (None, false)
    };
    build()?;
    let tracefs = ensure_tracefs()?;
    let target = util::target_dir();
    let monitor = target.join("release").join("monitor");
    let mb = target.join("release").join("monitor-bench");
    let tracepoints: Vec<String> = util::stdout(Command::new(&mb).arg("tracepoints"))?
        .lines()
        .map(str::to_string)
        .collect();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let scratch = std::env::temp_dir().join(format!("monitor-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(scratch.join("watched"))?;
    let mut ctx = Ctx {
        smoke,
        plan: if smoke { Plan::smoke() } else { Plan::full() },
        monitor,
        mb,
        scratch,
        tracefs,
        tracepoints,
        tck: proc::clk_tck(),
        bpftrace,
        audit,
        watched_count: 100,
        idle_holders: Vec::new(),
        _sleepers: Sleepers::default(),
        work_cpu: if nproc >= 2 { 1 } else { 0 },
        agent_cpu: 0,
        quiet: RefCell::new(Quiet {
            budget_secs: if smoke { 5.0 } else { 300.0 },
            ..Default::default()
        }),
    };
    for i in 0..ctx.watched_count {
        // Distinct values of at least 8 bytes: each can be a secret.
        fs::write(
            ctx.watched(i),
            format!(
                "bench-secret-{i:03}-{:016x}\n",
                0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)
            ),
        )?;
    }
    for _ in 0..20 {
        let pid = ctx._sleepers.spawn(&[])?;
        ctx.idle_holders.push(pid);
    }
    let mut machine = machine(&ctx)?;
    step(format!(
        "{} mode on {} × {}, kernel {}; workloads on CPU {}",
        if smoke { "smoke" } else { "full" },
        machine.cpu,
        machine.nproc,
        machine.kernel,
        ctx.work_cpu
    ));

    let mut durations = Vec::new();
    let mut timed =
        |name: &str, t: Instant| durations.push((name.to_string(), t.elapsed().as_secs_f64()));
    let mut untracked = Default::default();
    if run("untracked") {
        let t = Instant::now();
        step("1. overhead on untracked work");
        untracked = overhead::untracked(&mut ctx)?;
        timed("1. untracked overhead", t);
    }
    let mut tracked = Default::default();
    if run("tracked") {
        let t = Instant::now();
        step("2. overhead on a tracked holder");
        tracked = overhead::tracked(&mut ctx)?;
        timed("2. tracked holder", t);
    }
    let mut throughput = Default::default();
    if run("throughput") {
        let t = Instant::now();
        step("3. pipeline throughput");
        throughput = pipeline::throughput(&ctx)?;
        timed("3. throughput", t);
    }
    let mut scan = Vec::new();
    if run("scan") {
        let t = Instant::now();
        step("4. fingerprint scanning");
        scan = pipeline::scan(&ctx)?;
        timed("4. scanning", t);
    }
    let mut latency = Default::default();
    if run("latency") {
        let t = Instant::now();
        step("5. detection latency");
        latency = pipeline::latency(&ctx)?;
        timed("5. latency", t);
    }
    let mut footprint = Default::default();
    if run("footprint") {
        let t = Instant::now();
        step("6. agent footprint");
        footprint = pipeline::footprint(&ctx)?;
        timed("6. footprint", t);
    }
    let mut scale = scale::Scale::default();
    if run("secrets") {
        let t = Instant::now();
        step("7. per-event cost by number of secrets");
        (scale.per_event, scale.alerts_under_exec) = scale::secrets(&ctx)?;
        timed("7. secrets", t);
    }
    if run("flood") {
        let t = Instant::now();
        step("8. a flooding holder");
        scale.flood = Some(scale::flood(&ctx)?);
        timed("8. flood", t);
    }
    if run("ingest") {
        let t = Instant::now();
        step("9. issuance ingestion");
        scale.ingest = Some(scale::ingest(&ctx)?);
        timed("9. ingest", t);
    }
    if run("fleet") {
        let t = Instant::now();
        step("10. the fleet (NATS JetStream)");
        scale.fleet = Some(fleet::fleet(&ctx)?);
        timed("10. fleet", t);
    }
    let mut tls_loop = Default::default();
    if run("tls") {
        let t = Instant::now();
        step("11. TLS request loop, untracked and tracked");
        tls_loop = tls::tls(&ctx)?;
        timed("11. TLS", t);
    }

    {
        let q = ctx.quiet.borrow();
        let mut b = q.busy.clone();
        b.sort_by(|x, y| x.total_cmp(y));
        notes.push(format!(
            "Background load: before each of the {} measurements the machine's busy share (all CPUs, over a short window) was \
             median {:.1}%, max {:.1}% of all CPUs; {:.0} s were spent waiting for other work to finish; \
             {} measurements started with the machine still busy (> {:.0}%).",
            b.len(),
            100.0 * b.get(b.len() / 2).copied().unwrap_or(0.0),
            100.0 * b.last().copied().unwrap_or(0.0),
            q.waited_secs,
            q.loud_starts,
            LOUD * 100.0
        ));
    }
    for (c, why) in &untracked.skipped {
        notes.push(format!("{} comparison skipped: {why}", c.name()));
    }
    machine.scan_mib = ctx.plan.scan_mib;
    machine.scan_reps = ctx.plan.scan_reps;
    let mut results = Results {
        smoke,
        ran,
        machine,
        untracked,
        tracked,
        throughput,
        scan,
        latency,
        footprint,
        scale,
        tls: tls_loop,
        durations,
        total_secs: 0.0,
        notes,
    };
    results.total_secs = t_start.elapsed().as_secs_f64();
    let targets = report::targets(&results);
    let out_dir = target.join("bench");
    fs::create_dir_all(&out_dir)?;
    let prefix = format!(
        "{}{}",
        if smoke { "smoke-" } else { "" },
        if partial { "partial-" } else { "" }
    );
    let json_path = out_dir.join(format!("{prefix}results.json"));
    let md_path = if prefix.is_empty() {
        workspace_root().join("BENCHMARKS.md")
    } else {
        out_dir.join(format!("{prefix}BENCHMARKS.md"))
    };
    fs::write(&json_path, report::json(&results, &targets).render())
        .with_context(|| format!("writing {}", json_path.display()))?;
    fs::write(&md_path, report::markdown(&results, &targets))
        .with_context(|| format!("writing {}", md_path.display()))?;
    drop(ctx);

    eprintln!();
    eprintln!("== targets");
    for t in &targets {
        eprintln!(
            "  [{:^12}] {}: {} (target {}; {})",
            t.verdict(),
            t.what,
            t.measured,
            t.target,
            t.margin
        );
    }
    eprintln!(
        "== wrote {} and {} in {:.0} s{}",
        json_path.display(),
        md_path.display(),
        results.total_secs,
        match (smoke, partial) {
            (true, _) => " (smoke: figures are not meaningful; BENCHMARKS.md untouched)",
            (false, true) => " (partial run: BENCHMARKS.md untouched)",
            (false, false) => "",
        }
    );
    Ok(())
}

/// bpftrace and auditd ([`crate::setup::BENCH_PACKAGES`]): installed if
/// missing, by the smoke run too, so that CI exercises those comparisons.
/// Where they still cannot be found (not Debian), their comparisons are
/// skipped with a note.
fn comparison_tools(notes: &mut Vec<String>) -> Result<(Option<PathBuf>, bool)> {
    crate::setup::bench_packages()?;
    let bt = which("bpftrace");
    let au = which("auditd").is_some() && which("auditctl").is_some();
    let missing: Vec<&str> = [("bpftrace", bt.is_none()), ("auditd", !au)]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(p, _)| *p)
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "{} not found after installing the bench packages, so those comparisons are skipped",
            missing.join(" and ")
        );
        step(format!("WARNING: {msg}"));
        notes.push(msg);
    }
    Ok((bt, au))
}

fn build() -> Result<()> {
    util::run(Command::new(cargo()).current_dir(workspace_root()).args([
        "build",
        "--release",
        "--package",
        "monitor",
        "--package",
        "monitor-bench",
    ]))
}

/// bpftrace and the floor loader need tracefs (the agent mounts it itself).
fn ensure_tracefs() -> Result<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events/syscalls").is_dir() {
            return Ok(PathBuf::from(p));
        }
    }
    step("mounting tracefs on /sys/kernel/tracing");
    util::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
    let p = PathBuf::from("/sys/kernel/tracing");
    if !p.join("events/syscalls").is_dir() {
        bail!(
            "tracefs mounted but {} has no syscall tracepoints",
            p.display()
        );
    }
    Ok(p)
}

fn first_line(cmd: &mut Command) -> String {
    util::output(cmd)
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn machine(ctx: &Ctx) -> Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    let debian = fs::read_to_string("/etc/debian_version").unwrap_or_default();
    let commit = first_line(Command::new("git").current_dir(workspace_root()).args([
        "rev-parse",
        "--short=12",
        "HEAD",
    ]));
    let dirty = !first_line(Command::new("git").current_dir(workspace_root()).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_empty();
    Ok(Machine {
        date: first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])),
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_default(),
        mem_kib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        os: format!("{os} ({})", debian.trim()),
        bpftrace: match &ctx.bpftrace {
            Some(b) => first_line(Command::new(b).arg("--version")),
            None => "bpftrace not installed".into(),
        },
        auditctl: if ctx.audit {
            first_line(Command::new("auditctl").arg("-v"))
        } else {
            "auditd not installed".into()
        },
        rustc: first_line(Command::new("rustc").arg("--version")),
        commit: if dirty {
            format!("{commit} (with uncommitted changes)")
        } else {
            commit
        },
        command: if ctx.smoke {
            "cargo xtask bench --smoke".into()
        } else {
            "cargo xtask bench".into()
        },
        work_cpu: ctx.work_cpu,
        agent_cpu: ctx.agent_cpu,
        tracepoints: ctx.tracepoints.len(),
        tracepoint_names: ctx.tracepoints.clone(),
        scan_mib: ctx.plan.scan_mib,
        scan_reps: ctx.plan.scan_reps,
    })
}

/// How many of the agent's tracepoints one iteration of a workload making
/// `syscalls` hits (each syscall's `sys_enter_*` and `sys_exit_*`, if hooked).
fn hooks_hit(m: &Machine, syscalls: &[&str]) -> usize {
    syscalls
        .iter()
        .flat_map(|sc| {
            [
                format!("syscalls:sys_enter_{sc}"),
                format!("syscalls:sys_exit_{sc}"),
            ]
        })
        .filter(|tp| m.tracepoint_names.contains(tp))
        .count()
}

/// Why a target was missed and what would close it, with this run's numbers.
pub fn why(id: &str, r: &Results) -> String {
    let u = &r.untracked;
    let pct = |x: Option<f64>| {
        x.map(|x| format!("{:+.1}%", (x - 1.0) * 100.0))
            .unwrap_or_else(|| "n/a".into())
    };
    let ratio = |c: Config, w: usize| pct(u.ratio(c, w));
    // Points of overhead (percent of no probes).
    let points = |c: Config, w: usize| u.ratio(c, w).map(|x| (x - 1.0) * 100.0);
    // ns added per iteration, and per tracepoint hit.
    let added = |c: Config, w: usize| -> Option<f64> {
        Some(u.median_ns(c, w)? - u.median_ns(Config::None, w)?)
    };
    let open_hits = hooks_hit(&r.machine, &["openat", "read", "close"]);
    let pipe_hits = hooks_hit(&r.machine, &["write", "read"]);
    let per_hit = |c: Config, w: usize, hits: usize| -> String {
        match added(c, w) {
            Some(ns) if hits > 0 => format!("{:.0} ns", ns / hits as f64),
            _ => "n/a".into(),
        }
    };
    let f1 = |x: Option<f64>| x.map(|x| format!("{x:.1}")).unwrap_or_else(|| "n/a".into());
    match id {
        "untracked_within_3pct" => {
            let rows: Vec<String> = overhead::WORKLOADS
                .iter()
                .enumerate()
                .map(|(w, (name, _))| {
                    let above = match (points(Config::Monitor, w), points(Config::Floor, w)) {
                        (Some(m), Some(f)) => format!("{:+.1}", m - f),
                        _ => "n/a".into(),
                    };
                    format!(
                        "{name} monitor {} = floor {} + agent {above} points",
                        ratio(Config::Monitor, w),
                        ratio(Config::Floor, w),
                    )
                })
                .collect();
            let x_budget = |w: usize| {
                points(Config::Floor, w)
                    .map(|p| format!("{:.0}×", p / 3.0))
                    .unwrap_or_else(|| "n/a".into())
            };
            format!(
                "Per workload, the agent's overhead is the floor (empty programs, `r0 = 0; exit`, on the \
                 same {n} tracepoints) plus its own work: {}. On the open and pipe loops the floor alone, \
                 {} and {}, is {} and {} the 3% budget: no program on these tracepoints, however \
                 little it does, can meet the target there. The floor is the kernel's cost of syscall \
                 tracepoints: once any is enabled, every task's syscalls take the slow entry/exit path \
                 (`syscall_trace_enter`/`exit`), and each hit of a hooked syscall builds a perf trace \
                 record of the syscall's arguments and dispatches the attached program through its \
                 perf event. One open-loop iteration ({:.2} µs without probes: openat + read + close) \
                 hits {open_hits} of the agent's tracepoints, {} each at the floor; one pipe-loop \
                 iteration ({:.2} µs: write + read) hits {pipe_hits}, {} each. Above the floor the \
                 agent adds {} per hit on the open loop (the inode comparison at every `openat` exit: \
                 a walk of `task->files->fdt` to the new file and a `WATCHED_INODES` lookup; a \
                 `TRACKED_FDS` lookup at read entry, a `STASH` lookup at read exit, a `NEW_CONNS` \
                 delete and a `TRACKED_FDS` lookup at close) and {} on the pipe loop (`TRACKED_PROCS` \
                 and `NEW_CONNS` lookups at write entry, `TRACKED_FDS` at read entry, `STASH` at read \
                 exit); on exec, exec/fork/exit events for every process with argv and envp captured \
                 (`exec_all`), which the agent then enriches. What would close \
                 it, in the order of what it saves: (1) fewer tracepoint hits per syscall: attach \
                 `sys_exit_*` only where the return value is needed (today {exits} of the {n} are exit \
                 hooks), and no hook at all on syscalls that do not concern a watched file or a \
                 tracked process; (2) raw tracepoints (`raw_syscalls:sys_enter`/`sys_exit`, \
                 `BPF_RAW_TRACEPOINT_OPEN`, no BTF needed): the program gets the registers directly, \
                 without the perf trace record and perf-event dispatch, but runs on every syscall and \
                 filters by number itself; whether that beats the per-syscall tracepoints on these \
                 loops has to be measured (a raw-tracepoint floor here); (3) hooks that fire only \
                 where needed (BPF LSM `file_open`, fentry on `vfs_read`/`vfs_write`/\
                 `security_socket_connect`), which cost nothing on the syscalls they do not concern \
                 but which the agent deliberately does not depend on (README: not available on every \
                 kernel, nor on the CI machines); (4) `exec_all = false` (lifecycle events only for \
                 tracked processes) for exec. A real service spends most of its time outside syscall \
                 entry, so the same fixed per-syscall cost is a much smaller share of it than of these \
                 loops.",
                rows.join("; "),
                ratio(Config::Floor, 0),
                ratio(Config::Floor, 1),
                x_budget(0),
                x_budget(1),
                u.median_ns(Config::None, 0).unwrap_or(f64::NAN) / 1e3,
                per_hit(Config::Floor, 0, open_hits),
                u.median_ns(Config::None, 1).unwrap_or(f64::NAN) / 1e3,
                per_hit(Config::Floor, 1, pipe_hits),
                match (added(Config::Monitor, 0), added(Config::Floor, 0)) {
                    (Some(m), Some(f)) if open_hits > 0 =>
                        format!("{:.0} ns", (m - f) / open_hits as f64),
                    _ => "n/a".into(),
                },
                match (added(Config::Monitor, 1), added(Config::Floor, 1)) {
                    (Some(m), Some(f)) if pipe_hits > 0 =>
                        format!("{:.0} ns", (m - f) / pipe_hits as f64),
                    _ => "n/a".into(),
                },
                n = r.machine.tracepoints,
                exits = r
                    .machine
                    .tracepoint_names
                    .iter()
                    .filter(|t| t.starts_with("syscalls:sys_exit_"))
                    .count(),
            )
        }
        "redis_97pct" => {
            let w = overhead::REDIS;
            let above = match (points(Config::Monitor, w), points(Config::Floor, w)) {
                (Some(m), Some(f)) => format!("{:+.1}", m - f),
                _ => "n/a".into(),
            };
            format!(
                "Time per request: no probes {}, monitor {} (= floor {} + agent {above} points), \
                 bpftrace {}, auditd {}. redis-server and redis-benchmark spend their time in \
                 `epoll_wait`, `read` and `write` on loopback sockets: every one takes the slow \
                 syscall path once any syscall tracepoint is attached, and `read`/`write` hit the \
                 agent's capture tracepoints (their programs exit on the tracked flag). The floor \
                 (empty programs on the same tracepoints) is what any design on these hooks pays; \
                 what would close it is the same as for the loops above: fewer syscall hooks, and \
                 none attached while no holder is alive{}.",
                u.median_ns(Config::None, w).map(|x| format!("{x:.0} ns")).unwrap_or_else(|| "n/a".into()),
                ratio(Config::Monitor, w),
                ratio(Config::Floor, w),
                ratio(Config::Bpftrace, w),
                ratio(Config::Audit, w),
                u.ratio(Config::MonitorIdle, w)
                    .map(|x| format!(" (no holders: {})", pct(Some(x))))
                    .unwrap_or_default(),
            )
        }
        "untracked_below_bpftrace" | "untracked_below_auditd" => {
            let other = if id == "untracked_below_bpftrace" {
                Config::Bpftrace
            } else {
                Config::Audit
            };
            let rows: Vec<String> = overhead::WORKLOADS
                .iter()
                .enumerate()
                .map(|(w, (name, _))| {
                    format!(
                        "{name} monitor {} / {} {} / floor {}",
                        ratio(Config::Monitor, w),
                        other.name(),
                        ratio(other, w),
                        ratio(Config::Floor, w)
                    )
                })
                .collect();
            // Workloads where even the empty programs cost as much as the
            // other tool: out of reach for any tracepoint design (by more
            // than round-to-round noise), or level with it.
            let floor_vs = |min: f64, max: f64| -> Vec<String> {
                overhead::WORKLOADS
                    .iter()
                    .enumerate()
                    .filter_map(|(w, (name, _))| {
                        let (f, o) = (points(Config::Floor, w)?, points(other, w)?);
                        (f - o >= min && f - o < max)
                            .then(|| format!("{name} (floor {f:+.1}% vs {o:+.1}%)"))
                    })
                    .collect()
            };
            let (beyond, level) = (floor_vs(3.0, f64::INFINITY), floor_vs(0.0, 3.0));
            let mut reach = Vec::new();
            if !beyond.is_empty() {
                reach.push(format!(
                    "Out of reach for any design on these tracepoints: {}, where the empty \
                     programs alone already cost more than {}.",
                    beyond.join(", "),
                    other.name()
                ));
            }
            if !level.is_empty() {
                reach.push(format!(
                    "The empty programs alone are level with {} (within 3 points) on {}: only a \
                     program doing next to nothing could stay below it there.",
                    other.name(),
                    level.join(", ")
                ));
            }
            if reach.is_empty() {
                reach.push(format!(
                    "On every workload the floor is below {}'s, so the target is within reach of a \
                     tracepoint design; the agent's own work above the floor is what puts it over.",
                    other.name()
                ));
            }
            let reach = reach.join(" ");
            let specific = if other == Config::Bpftrace {
                "bpftrace sits on the same tracepoints, so it pays the same floor; its programs only \
                 bump a per-CPU counter (a map update on every hit, which is why it is above the agent \
                 on the pipe loop), while the agent's do the work described above"
            } else {
                "audit is not a tracepoint consumer: with only file watches and one execve rule it \
                 hooks syscall entry/exit through its own audit context, matches the rule list, and \
                 compares paths only against the watched inodes, without building a perf trace \
                 record per syscall; on exec it formats and queues records to auditd as the agent \
                 does events"
            };
            format!(
                "{}. {reach} The agent's share above the floor: open {} points, pipe {}, connect {}, \
                 exec {}: the work it does for every process, not only for holders (the inode check \
                 at each `openat` exit, exec/fork/exit events with argv and envp for every exec \
                 (`exec_all`), a fresh-connection mark on every connect for first-bytes capture). \
                 {specific}. A gap where the agent is higher in only some rounds is within \
                 round-to-round noise. What would close it: first the floor (fewer tracepoint hits, \
                 raw tracepoints, see the 3% target above), then `exec_all = false` with lifecycle \
                 events only for tracked processes, and cheaper open filtering (compare the inode at \
                 `openat` exit only when the opened file's superblock holds a watched file), or \
                 LSM/fentry hooks where the kernel has them.",
                rows.join("; "),
                f1(points(Config::Monitor, 0).zip(points(Config::Floor, 0)).map(|(m, f)| m - f)),
                f1(points(Config::Monitor, 1).zip(points(Config::Floor, 1)).map(|(m, f)| m - f)),
                f1(points(Config::Monitor, 2).zip(points(Config::Floor, 2)).map(|(m, f)| m - f)),
                f1(points(Config::Monitor, 3).zip(points(Config::Floor, 3)).map(|(m, f)| m - f)),
            )
        }
        "throughput_per_core" | "zero_loss_at_100k" => {
            let busy = r.throughput.median_at(500_000, |x| x.busy());
            let per = r.throughput.median_at(500_000, |x| x.per_core());
            let sat = r.throughput.median_at(0, |x| x.wall_rate());
            format!(
                "At 500,000 events/s the agent, on its one core, ran at {:.0}% of it (≈ {:.1} µs of CPU \
                 per event, {} events per CPU-second): no headroom for a scheduling hiccup or a burst, and \
                 the 16 MiB ring holds only ~0.1 s of these events. Overloaded, it stores {}/s. A \
                 profile of the agent at 400,000/s (perf, outside the benchmark) puts most of the \
                 per-event time in output formatting rather than in the pipeline's logic: `serde_json` \
                 serialisation of each `Event` (about a fifth), `chrono` strftime formatting of its \
                 timestamp (`event::format_time`, about 15%), copies and allocation (about 15%) and \
                 context switches (about 10%); decoding, enrichment and the fingerprint scan are a few \
                 percent each. What would close it: format timestamps with integer arithmetic instead \
                 of strftime, serialise event lines with a hand-written writer into a reused buffer, \
                 stop re-parsing each event's time string in the correlator (`parse_event_time`), \
                 and move output to its own thread; a larger `ring_bytes` absorbs bursts, not a \
                 sustained rate above capacity.",
                busy * 100.0,
                1e6 / per.max(1.0),
                report::thousands(per),
                report::thousands(sat)
            )
        }
        "scan_1000_secrets" => {
            let slowest = |n: usize| {
                r.scan
                    .iter()
                    .find(|s| s.secrets == n)
                    .and_then(|s| {
                        s.corpora
                            .iter()
                            .map(|c| (c.0.as_str(), c.1))
                            .min_by(|a, b| a.1.total_cmp(&b.1))
                    })
                    .map(|(c, b)| format!("{:.2} GB/s ({c})", b / 1e9))
                    .unwrap_or_else(|| "not measured".into())
            };
            // The bitset: ~128 bits per anchor window, a power of two.
            let bitset_kib = r
                .scan
                .iter()
                .find(|s| s.secrets == 1000)
                .map(|s| {
                    // As `FingerprintSet` sizes it: 4 KiB to 2 MiB.
                    let bits = (2 * s.fingerprints * 128)
                        .next_power_of_two()
                        .clamp(1 << 15, 1 << 24);
                    bits / 8 / 1024
                })
                .unwrap_or(0);
            format!(
                "The scan does one keyed multiply-hash and one bitset probe per two bytes of the \
                 buffer; buffers full of anchor candidates add BLAKE3 confirmations. With 10 secrets \
                 (a 4 KiB bitset, always in L1) the slowest corpus runs at {}; with 1,000 secrets at \
                 {}, their bitset being {bitset_kib} KiB. Where the 10-secret figure is itself near \
                 1 GB/s, the per-byte arithmetic is the limit on this CPU; where it is well above, \
                 the 1,000-secret bitset's cache misses are. What would close it: a prefilter \
                 vectorised over four windows at once (the arithmetic), and a bitset that stays in \
                 the core's L2 (fewer bits per anchor, paid for with more second-stage tag \
                 lookups).",
                slowest(10),
                slowest(1000)
            )
        }
        "latency_p99" => "Alerts go out after each ring-buffer batch; a tail above 20 ms comes from the \
            agent being busy with other events (or descheduled) when the read arrives. Running the rules \
            on their own thread would close it."
            .to_string(),
        "rss_10k_secrets" => {
            let f = &r.footprint;
            let m = |kib: u64| kib as f64 / 1024.0;
            let (l, i) = (&f.loaded.mem, &f.idle.mem);
            let set = r
                .scan
                .iter()
                .find(|s| s.secrets == 10_000)
                .map(|s| {
                    format!(
                        " (benchmark 4's 10,000 secrets of 20 to 64 bytes take {:.1} MiB: {:.1} \
                         fingerprinted forms per secret, each a 48-byte record with its two \
                         anchors chained under their tags, a tag map, and the prefilter bitset of \
                         at most 2 MiB; the 38-byte values here have fewer forms)",
                        m(s.set_rss_kib),
                        s.fingerprints as f64 / s.secrets.max(1) as f64
                    )
                })
                .unwrap_or_default();
            let ring = m(l.bpf_map_kib);
            let over = m(l.hwm_kib) - 64.0;
            format!(
                "Of the {:.1} MiB peak: {ring:.1} MiB are the ring buffer's mapping, its \
                 {:.1} MiB of data pages (`ring_bytes`, 16 MiB by default) which the kernel maps \
                 twice so that records can wrap and which RSS therefore counts twice; {:.1} MiB are \
                 pages of the binary and its libraries; {:.1} MiB are anonymous memory (the heap, \
                 and the store thread's arena with SQLite's 512 KiB page cache). The idle agent \
                 already peaks at {:.1} MiB: the ring, the binary, and the start-up heap (loading \
                 the programs makes aya parse the kernel's BTF, about 15 MiB at its peak, freed \
                 and trimmed before the ring is mapped). The {} secrets and {} \
                 tracked processes add {:.1} MiB to that: the fingerprints{set}, the secrets' \
                 issuance state (about 0.5 KiB each), and the records of one 256 KiB chunk of the \
                 issuance file, parsed before they are applied (chunk by chunk). What would close it: the target \
                 is missed by {:.1} MiB, and the ring's double mapping alone is {ring:.1} MiB: \
                 `ring_bytes = 8388608` would save 16 MiB of RSS, but it halves the burst the ring absorbs before events are lost (benchmarks \
                 2 and 3), so it is an operator's trade and not a default changed here. Without \
                 touching the ring: sharing each secret id between the maps that key on it \
                 instead of a `String` copy in each; a smaller issuance state for a pid holder \
                 (its `Holder` carries seven empty optional strings, 176 bytes).",
                m(l.hwm_kib),
                ring / 2.0,
                m(l.file_kib.saturating_sub(l.bpf_map_kib)),
                m(l.anon_kib),
                m(i.hwm_kib),
                report::thousands(f.secrets as f64),
                report::thousands(f.holders as f64),
                m(l.hwm_kib) - m(i.hwm_kib),
                over,
            )
        }
        "secrets_flat" => "Per-event work that still grows with the number of secrets: the \
            fingerprint scan of each captured buffer (its prefilter bitset grows with the secrets' \
            anchors, so more of it misses the CPU cache) and the B-tree lookups by secret id. \
            Holder decisions are hash lookups (section 7 of issue 10). A smaller, L1-resident \
            prefilter would close the rest."
            .to_string(),
        "flood_alerts" | "flood_healthz" => "During the flood the ring is shared by the flooding \
            holder's budgeted writes and everything else; an alert is missed when the ring filled \
            before the foreign read's event went in (see `dropped_ring`), or `/healthz` was slow \
            when the machine itself was saturated (the metrics thread competes for the same 2 CPUs)."
            .to_string(),
        "fleet_events_per_sec" => "Events are packed, up to 256 (or 64 KiB) a JetStream \
            message, and the link publishes a batch of 1,024 messages and waits for every \
            acknowledgement before the next: what remains is the agent's side (formatting, \
            hashing the pack for its message id) and the R3 cluster sharing the 2 CPUs. More \
            batches in flight (the acks are futures) would overlap the round trips."
            .to_string(),
        "fleet_cross_node_p99" => "A sample's time is the sender's fork and connect, the first \
            send's capture and scan on node B, the agent's 1,024-message publish batch, the R3 \
            JetStream write and the delivery to the subscriber; the slowest part under load is \
            the batch waiting for its acknowledgements."
            .to_string(),
        "ingest_alerts_100ms" | "alerts_under_exec" => "`GET /alerts` is answered by the \
            API's own thread from the store (a read-only SQLite connection of its own), not by \
            the event loop: a slow answer is the query waiting on the store's writer (a WAL \
            checkpoint) or on a CPU the load and the agent's event loop keep busy (two cores \
            here). What would close it: a smaller page (`limit`), or the query's connection at \
            a higher scheduling priority than the writer."
            .to_string(),
        "tls_untracked_within_3pct" => {
            use tls::TlsConfig;
            let x = &r.tls;
            let ns = |c| x.median_ns(c).unwrap_or(f64::NAN);
            let none = ns(TlsConfig::None);
            let (notls, untracked) = (ns(TlsConfig::MonitorNoTls), ns(TlsConfig::MonitorUntracked));
            let floor = match x.median_ns(TlsConfig::Floor) {
                Some(f) => format!(
                    " An empty uprobe on the same two functions (bpftrace, no agent) already \
                     costs {:+.2} µs per round trip ({:.0} ns per trap): that much is the kernel's \
                     uprobe mechanism on this machine, and the agent's programs add {:+.2} µs \
                     above it.",
                    (f - none) / 1e3,
                    (f - none) / 2.0,
                    ((untracked - notls) - (f - none)) / 1e3
                ),
                None => String::new(),
            };
            format!(
                "Per round trip ({:.1} µs without the agent) the untracked loop paid {:+.2} µs: \
                 {:+.2} µs with the agent up but no TLS probes (its syscall tracepoints on the \
                 loop's and the server's `write`/`read`, the cost benchmark 1 measures) and {:+.2} µs \
                 more with the uprobes on libssl, i.e. about {:.0} ns for each of the two \
                 `SSL_write_ex` traps of a round trip (the client's and the echo server's, both \
                 untracked; the program itself is a tracked-flag lookup and exits). A uprobe \
                 costs a breakpoint trap into the kernel and the single-stepping of the replaced \
                 instruction on every call, whatever the program does.{floor} What would close it: \
                 detach a library's uprobes when no tracked process maps it any more (today they \
                 stay attached once a holder has used the file, for the agent's lifetime), so \
                 untracked users pay only while a holder uses TLS; attach them to a holder's \
                 private copy where it has one (a container's own libssl is a different inode); \
                 the trap itself (a breakpoint, and the out-of-line single-step of the \
                 instruction it replaced) is the kernel's, and only a cheaper uprobe mechanism \
                 there would cut it.",
                none / 1e3,
                (untracked - none) / 1e3,
                (notls - none) / 1e3,
                (untracked - notls) / 1e3,
                (untracked - notls) / 2.0,
            )
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        overhead::{ConfigSamples, Untracked},
        pipeline::{Footprint, ScanSet},
        proc::Mem,
        report::{self, Results},
        *,
    };

    /// A run with the figures of a real full run (untracked medians in ns,
    /// footprint in KiB), every target judged.
    fn results() -> Results {
        let cfg = |config, ns: [f64; 5]| ConfigSamples {
            config,
            ns: ns.iter().map(|x| vec![*x]).collect(),
            setup_secs: vec![0.1],
            lost: 0,
        };
        let mem = |hwm_kib, anon_kib, file_kib| Mem {
            hwm_kib,
            rss_kib: hwm_kib,
            anon_kib,
            file_kib,
            shmem_kib: 0,
            bpf_map_kib: 32 * 1024,
        };
        let mut footprint = Footprint {
            secrets: 10_000,
            learned: 10_000,
            holders: 1_000,
            ..Default::default()
        };
        footprint.idle.mem = mem(55_804, 14_000, 41_000);
        footprint.loaded.mem = mem(70_096, 28_000, 41_500);
        footprint.after_list = mem(97_224, 40_000, 41_500);
        footprint.list_bytes = 3_500_000;
        let tracepoints: Vec<String> = [
            "syscalls:sys_enter_openat",
            "syscalls:sys_exit_openat",
            "syscalls:sys_enter_read",
            "syscalls:sys_exit_read",
            "syscalls:sys_enter_close",
            "syscalls:sys_enter_write",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Results {
            smoke: false,
            ran: SECTIONS.to_vec(),
            machine: Machine {
                tracepoints: tracepoints.len(),
                tracepoint_names: tracepoints,
                ..Default::default()
            },
            untracked: Untracked {
                rounds: 1,
                iters: vec![1; 5],
                configs: vec![
                    cfg(Config::None, [916.0, 363.0, 12_600.0, 828_600.0, 14_000.0]),
                    cfg(
                        Config::Monitor,
                        [1348.0, 525.0, 13_400.0, 1_010_000.0, 16_000.0],
                    ),
                    cfg(
                        Config::Bpftrace,
                        [1333.0, 592.0, 13_200.0, 873_800.0, 15_600.0],
                    ),
                    cfg(
                        Config::Audit,
                        [1187.0, 410.0, 12_600.0, 963_400.0, 14_600.0],
                    ),
                    cfg(
                        Config::Floor,
                        [1144.0, 483.0, 12_800.0, 856_500.0, 15_000.0],
                    ),
                ],
                skipped: Vec::new(),
            },
            tracked: Default::default(),
            throughput: Default::default(),
            scan: vec![ScanSet {
                secrets: 10_000,
                add_us: 15.0,
                set_rss_kib: 10_368,
                fingerprints: 105_670,
                corpora: Vec::new(),
            }],
            latency: Default::default(),
            footprint,
            scale: Default::default(),
            tls: {
                use tls::{TlsConfig, TlsSamples, TLS_CONFIGS};
                let ns = |c| match c {
                    TlsConfig::None => 40_000.0,
                    TlsConfig::Floor => 41_000.0,
                    TlsConfig::MonitorNoTls => 40_400.0,
                    TlsConfig::MonitorUntracked => 42_000.0,
                    TlsConfig::MonitorHolder => 60_000.0,
                };
                tls::TlsBench {
                    rounds: 1,
                    iters: 20_000,
                    bytes: 64,
                    attached: "openssl probes to /usr/lib/libssl.so.3 (SSL_write)".into(),
                    python: "/usr/bin/python3".into(),
                    floor_skipped: None,
                    configs: TLS_CONFIGS
                        .iter()
                        .map(|&config| TlsSamples {
                            config,
                            ns: vec![ns(config)],
                            events: Vec::new(),
                            lost: Vec::new(),
                        })
                        .collect(),
                }
            },
            durations: Vec::new(),
            total_secs: 1.0,
            notes: Vec::new(),
        }
    }

    #[test]
    fn every_missed_target_says_by_how_much_and_why() {
        let r = results();
        let targets = report::targets(&r);
        let missed: Vec<_> = targets.iter().filter(|t| t.met == Some(false)).collect();
        let ids: Vec<&str> = missed.iter().map(|t| t.id).collect();
        for id in [
            "untracked_within_3pct",
            "untracked_below_bpftrace",
            "untracked_below_auditd",
            "rss_10k_secrets",
            "tls_untracked_within_3pct",
            "redis_97pct",
        ] {
            assert!(ids.contains(&id), "{id} not judged missed: {ids:?}");
        }
        for t in &missed {
            assert!(t.margin.starts_with("missed"), "{}: {}", t.id, t.margin);
            let why = why(t.id, &r);
            assert!(!why.is_empty(), "{} has no why", t.id);
            assert!(
                !why.contains("NaN") && !why.contains("n/a"),
                "{}: {why}",
                t.id
            );
        }
        // The floor's own cost, per workload and per tracepoint hit.
        let w = why("untracked_within_3pct", &r);
        assert!(w.contains("floor +24.9%"), "{w}");
        assert!(w.contains("floor +33.1%"), "{w}");
        assert!(
            w.contains("hits 5 of the agent's tracepoints, 46 ns each"),
            "{w}"
        );
        assert!(w.contains("hits 3, 40 ns each"), "{w}");
        assert!(w.contains("raw tracepoints"), "{w}");
        // auditd is below the floor on pipe: out of reach for tracepoints.
        let a = why("untracked_below_auditd", &r);
        assert!(
            a.contains("Out of reach") && a.contains("pipe (floor +33.1% vs +12.9%)"),
            "{a}"
        );
        // redis: 14.0 µs -> 16.0 µs per request is 87.5% of the requests/s.
        let redis = targets.iter().find(|t| t.id == "redis_97pct").unwrap();
        assert!(
            redis.measured.starts_with("87.5% of no probes"),
            "{}",
            redis.measured
        );
        assert_eq!(redis.margin, "missed by 9.5 points");
        let w = why("redis_97pct", &r);
        assert!(
            w.contains("floor +7.1%") && w.contains("agent +7.1 points"),
            "{w}"
        );
        let rss = why("rss_10k_secrets", &r);
        assert!(rss.contains("missed by 4.5 MiB"), "{rss}");
        assert!(
            rss.contains("32.0 MiB are the ring buffer's mapping"),
            "{rss}"
        );
        if std::env::var_os("PRINT_WHY").is_some() {
            for t in &missed {
                eprintln!("== {} ({})\n{}\n", t.what, t.margin, why(t.id, &r));
            }
        }
        // And the markdown carries them.
        let md = report::markdown(&r, &targets);
        assert!(md.contains("## Misses: why, and what would close them"));
        assert!(md.contains("took the peak to 94.9 MiB"), "{md}");
        // TLS: +5.0%, split into the agent without TLS probes and the
        // uprobes' two traps per round trip.
        let tls = why("tls_untracked_within_3pct", &r);
        assert!(
            tls.contains("paid +2.00 µs: +0.40 µs") && tls.contains("about 800 ns for each"),
            "{tls}"
        );
        assert!(
            tls.contains("costs +1.00 µs per round trip (500 ns per trap)")
                && tls.contains("add +0.60 µs above it"),
            "{tls}"
        );
        assert!(md.contains("| 1.050 |"), "{md}");
    }
}
