//! `BENCHMARKS.md`: the tables and the prose around them.

use super::*;

pub(super) fn cell_ratio(u: &Untracked, c: Config, w: usize) -> String {
    match (u.ratio(c, w), u.median_ns(c, w)) {
        (Some(r), Some(ns)) => {
            let rr = u.round_ratios(c, w);
            if rr.len() > 1 {
                format!("{r:.3} ({}) [{:.2}–{:.2}]", fmt_ns(ns), min(&rr), max(&rr))
            } else {
                format!("{r:.3} ({})", fmt_ns(ns))
            }
        }
        _ => "skipped".into(),
    }
}

pub(super) fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

pub(super) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn markdown(r: &Results, targets: &[Target]) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let w = &mut s;
    let partial = r.ran.len() < crate::bench::SECTIONS.len();
    let raw = format!(
        "{}{}results.json",
        if r.smoke { "smoke-" } else { "" },
        if partial { "partial-" } else { "" }
    );
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "What `monitor` costs, measured side by side with what users would run instead, in one run of \
         `{}` ({}, {:.1} minutes). Every figure is a median over repeated runs; every comparison is a \
         ratio to \"no probes\" measured in the same run, configurations alternating. Raw samples: \
         `target/bench/{}`. `BENCHMARKS.md` is written by the full run of every benchmark only \
         (`--smoke` writes `target/bench/smoke-BENCHMARKS.md`, `--only` \
         `target/bench/[smoke-]partial-BENCHMARKS.md`).\n",
        m.command,
        if r.smoke {
            "smoke mode: tiny counts, not meaningful"
        } else {
            "full mode"
        },
        r.total_secs / 60.0,
        raw
    );
    if partial {
        let _ = writeln!(w, "Partial run (`--only`): {} only.\n", r.ran.join(", "));
    }
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n| --- | --- |");
    let _ = writeln!(w, "| date | {} |", m.date);
    let _ = writeln!(w, "| CPU | {} × {} (nproc {}) |", m.cpu, m.nproc, m.nproc);
    let _ = writeln!(
        w,
        "| memory | {:.1} GiB |",
        m.mem_kib as f64 / 1024.0 / 1024.0
    );
    let _ = writeln!(w, "| kernel | {} |", m.kernel);
    let _ = writeln!(w, "| OS | {} |", m.os);
    let _ = writeln!(w, "| compared with | {}; {} |", m.bpftrace, m.auditctl);
    let _ = writeln!(w, "| toolchain | {} |", m.rustc);
    let _ = writeln!(w, "| monitor | commit {} |", m.commit);
    let _ = writeln!(w, "| reproduce | `{}` (as root) |\n", m.command);

    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(
        w,
        "| target | goal | measured | verdict | margin |\n| --- | --- | --- | --- | --- |"
    );
    for t in targets {
        let _ = writeln!(
            w,
            "| {} | {} | {} | **{}** | {} |",
            t.what,
            t.target,
            t.measured,
            t.verdict(),
            t.margin
        );
    }
    let _ = writeln!(w);

    // 1.
    if r.ran("untracked") {
        let u = &r.untracked;
        let _ = writeln!(w, "## 1. Overhead on untracked work\n");
        let _ = writeln!(
            w,
            "The cost every other process on the node pays. Each workload is a compiled loop \
             (`bench/src/bin/monitor-bench.rs`) pinned to CPU {}, printing ns per iteration; the probes' \
             user-space side runs wherever the scheduler puts it. {} rounds; each round brings every \
             configuration up in turn (order rotated each round), runs the four workloads (order rotated \
             too), and tears it down. Cells: ratio of medians to no probes (median ns/op) [range of the \
             per-round ratios].\n",
            r.machine.work_cpu, u.rounds
        );
        let _ = write!(w, "| workload | iterations | no probes |");
        let cols: Vec<Config> = u
            .configs
            .iter()
            .map(|c| c.config)
            .filter(|c| *c != Config::None)
            .collect();
        for c in &cols {
            let _ = write!(w, " {} |", c.name());
        }
        let _ = write!(w, "\n| --- | --- | --- |");
        for _ in &cols {
            let _ = write!(w, " --- |");
        }
        let _ = writeln!(w);
        for (i, (name, what)) in WORKLOADS.iter().enumerate() {
            let _ = write!(
                w,
                "| {name}: {what} | {} | {} |",
                thousands(u.iters[i] as f64),
                u.median_ns(Config::None, i).map(fmt_ns).unwrap_or_default()
            );
            for c in &cols {
                let _ = write!(w, " {} |", cell_ratio(u, *c, i));
            }
            let _ = writeln!(w);
        }
        let _ = writeln!(w, "\nConfigurations:\n");
        for c in &u.configs {
            let setup = median(&c.setup_secs);
            let _ = writeln!(
                w,
                "* **{}**: {}{}",
                c.config.name(),
                c.config.label(),
                if c.config == Config::None {
                    String::new()
                } else {
                    format!(" (up in {setup:.1} s)")
                }
            );
        }
        for (c, why) in &u.skipped {
            let _ = writeln!(w, "* **{}**: skipped: {why}", c.name());
        }
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "Details. *monitor*: `monitor run --watch '<dir>/*'` over 100 files, `--events` and `--alerts` to \
             files, the default config otherwise (exec events for every process, first-bytes capture of new \
             connections); 20 `sleep` processes registered with `monitor issue --pid` (tracked, idle). \
             *bpftrace*: the same {n} tracepoints the agent attaches (syscall enter/exit, `task_newtask`, \
             `sched_process_exit`), each `@[probe] = count();`. *auditd*: the daemon running, `-b 8192` as \
             Debian's default rules set it, `-w <path> -p r` on the same 100 files and \
             `-a always,exit -F arch=b64 -S execve`; rules, enabled flag and backlog restored afterwards. \
             *floor*: the same {n} tracepoints with the empty program (`r0 = 0; exit`), loaded with raw \
             `bpf(BPF_PROG_LOAD)` and attached through `perf_event_open` + `PERF_EVENT_IOC_SET_BPF` as aya \
             and libbpf do: what any design built on these tracepoints pays before doing anything. The \
             agent's two libc uprobes (`getenv`, `secure_getenv`) are not in bpftrace's or the floor's set. \
             The connect loop closes with `SO_LINGER 0` so that no TIME_WAIT sockets pile up between runs. \
             *redis*: one `redis-server` for the whole benchmark (loopback, no persistence) and \
             `redis-benchmark -t set,get -n <iterations> --csv` (50 clients), both pinned to the workload \
             CPU; its cell is the time per request, the mean of the two tests' 1/(requests/s), so a \
             ratio of +3.1% is 97% of the requests/s.\n",
            n = r.machine.tracepoints
        );
    }
    // 2.
    if r.ran("tracked") {
        let tr = &r.tracked;
        let _ = writeln!(w, "## 2. Overhead on a tracked holder\n");
        let _ = writeln!(
            w,
            "A holder that read its delivery file (so it is tracked and the agent has learned its secret) \
             then loops: `pwrite` {} bytes to a regular file + `send` {} bytes on a loopback TCP \
             connection. Every write and send is captured (first 4 KiB), its path resolved in the kernel, \
             and scanned by the agent against the fingerprints. Same agent configuration as above plus the \
             holder's issuance. {} rounds × {} iterations, alternating.\n",
            tr.size,
            tr.size,
            tr.rounds,
            thousands(tr.iters as f64)
        );
        let lost_total: u64 = tr.lost.iter().sum();
        let ev_total: u64 = tr.events.iter().sum();
        let _ = writeln!(
            w,
            "| | no probes | monitor | ratio |\n| --- | --- | --- | --- |"
        );
        let _ = writeln!(
            w,
            "| ns per pwrite+send | {} | {} | **{:.3}** [{:.2}–{:.2}] |",
            fmt_ns(median(&tr.none_ns)),
            fmt_ns(median(&tr.monitor_ns)),
            median(&tr.monitor_ns) / median(&tr.none_ns),
            min(&tr.monitor_ns) / max(&tr.none_ns),
            max(&tr.monitor_ns) / min(&tr.none_ns)
        );
        let offered = 2 * tr.iters * tr.monitor_ns.len() as u64;
        let _ = writeln!(
            w,
            "\nEvents: {} write/send events offered over the monitor rounds; the agent stored {} events \
             (all kinds) and reported {} lost in the kernel ({:.1}%){}.\n",
            thousands(offered as f64),
            thousands(ev_total as f64),
            thousands(lost_total as f64),
            100.0 * lost_total as f64 / offered.max(1) as f64,
            if lost_total > 0 {
                ": the ring buffer was full, the holder producing captures faster than one agent core \
                 consumes them (see 3)"
            } else {
                ""
            }
        );
    }
    // 3.
    if r.ran("throughput") {
        let tp = &r.throughput;
        let _ = writeln!(w, "## 3. Pipeline throughput\n");
        let _ = writeln!(
            w,
            "A tracked holder (it read its delivery file and holds that secret) writes {} bytes to \
             /dev/null per event, paced, for {:.1} s; the agent (pinned to CPU {}; the generator to CPU \
             {}) decodes, enriches, scans the captured bytes, correlates and stores every event as a JSON \
             line in its `--events` file. One agent per repetition runs the rates in turn (order \
             rotated), each with a fresh generator, waiting between them until the agent has drained. \
             *stored*: lines the agent added to its events file; *lost*: what the agent reported lost \
             in the kernel (ring buffer full; its `lost N kernel events` lines, read after its next 1-s \
             tick); *events per agent CPU-second*: stored / the agent's CPU time from the generator's \
             start until drained, i.e. what one core sustains; *stored per wall second* counts from the \
             generator's start until drained.\n",
            tp.size,
            tp.secs,
            r.machine.agent_cpu,
            r.machine.work_cpu
        );
        let _ = writeln!(
            w,
            "| asked rate | runs | offered (median) | events stored (median) | lost per run | agent CPU s (median) | stored per wall second (median) | events per agent CPU-second (median) |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for &rate in RATES {
            let runs = tp.at(rate);
            if runs.is_empty() {
                continue;
            }
            let f = |g: &dyn Fn(&crate::bench::pipeline::TpRun) -> f64| {
                median(&runs.iter().map(|x| g(x)).collect::<Vec<_>>())
            };
            let _ = writeln!(
                w,
                "| {} | {} | {}/s | {} | {:?} | {:.2} | {}/s | {} |",
                if rate == 0 {
                    "max".to_string()
                } else {
                    format!("{}/s", thousands(rate as f64))
                },
                runs.len(),
                thousands(f(&|x| x.offered_rate())),
                thousands(f(&|x| x.events as f64)),
                runs.iter().map(|x| x.lost).collect::<Vec<_>>(),
                f(&|x| x.agent_cpu),
                thousands(f(&|x| x.wall_rate())),
                thousands(f(&|x| x.per_core()))
            );
        }
        let dropped: u64 = tp.runs.iter().map(|x| x.store_dropped).sum();
        let _ = writeln!(
            w,
            "\nThe generator's plain writes are not among what the agent keeps in its SQLite store \
             (`--db`; events that touched a secret, watched-file accesses, tracked execs and connects, \
             ...), so the store is idle here; it reported {} items dropped over all runs.\n",
            thousands(dropped as f64)
        );
    }
    // 4.
    if r.ran("scan") {
        let _ = writeln!(w, "## 4. Fingerprint scanning\n");
        let _ = writeln!(
            w,
            "`FingerprintSet::scan` called directly, one core, over 4 KiB buffers (the capture size). \
             Secrets: random printable, 20–64 bytes; `add` fingerprints each in every encoding (raw, \
             base64 and base64url padded/unpadded/in-stream, hex both cases, percent, JSON). Corpora of \
             {} MiB each: *text* (letters, digits, JSON punctuation), *random* bytes, *planted* (text with \
             one known secret in every buffer, rotating raw/base64/base64url/hex/HEX/percent/JSON: each \
             hit costs a BLAKE3 confirmation). Median of {} passes.\n",
            r.machine.scan_mib, r.machine.scan_reps
        );
        let _ = writeln!(
            w,
            "| secrets | fingerprinted forms | add (µs/secret) | set memory (RSS growth) | text | random | planted (found/planted) |\n| --- | --- | --- | --- | --- | --- | --- |"
        );
        for sset in &r.scan {
            let get = |c: &str| sset.corpora.iter().find(|x| x.0 == c);
            let gb = |c: &str| {
                get(c)
                    .map(|x| format!("{:.2} GB/s", x.1 / 1e9))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} | {} | {} | {} | {} ({}/{}) |",
                thousands(sset.secrets as f64),
                thousands(sset.fingerprints as f64),
                sset.add_us,
                mib(sset.set_rss_kib),
                gb("text"),
                gb("random"),
                gb("planted"),
                get("planted").map(|x| x.2).unwrap_or(0),
                get("planted").map(|x| x.3).unwrap_or(0)
            );
        }
        let _ = writeln!(w);
    }
    // 5.
    if r.ran("latency") {
        let l = &r.latency;
        let e2e = l.end_to_end_ms();
        let pipe = l.pipeline_ms();
        let _ = writeln!(w, "## 5. Detection latency\n");
        let _ = writeln!(
            w,
            "A secret issued to an idle holder; a foreign process (forked, one every {} ms) opens the \
             delivery file, takes `CLOCK_REALTIME` and `read`s: `secret.read.foreign`. The alert lines \
             come on the agent's stdout (`--alerts -`) into the measuring process, which stamps their \
             arrival. Event time to arrival uses the alert's `time` (the kernel's timestamp of the read).\n",
            l.interval_ms
        );
        let _ = writeln!(
            w,
            "| | samples | p50 | p90 | p99 | max |\n| --- | --- | --- | --- | --- | --- |"
        );
        let _ = writeln!(
            w,
            "| syscall → alert line | {} ({} without alert) | {:.2} ms | {:.2} ms | **{:.2} ms** | {:.2} ms |",
            e2e.len(),
            l.missing(),
            pct(&e2e, 50.0),
            pct(&e2e, 90.0),
            pct(&e2e, 99.0),
            max(&e2e)
        );
        let _ = writeln!(
            w,
            "| alert `time` → alert line | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            pipe.len(),
            pct(&pipe, 50.0),
            pct(&pipe, 90.0),
            pct(&pipe, 99.0),
            max(&pipe)
        );
    }
    // 6.
    if r.ran("footprint") {
        let f = &r.footprint;
        let _ = writeln!(w, "## 6. Agent footprint\n");
        let _ = writeln!(
            w,
            "CPU seconds (`utime + stime` from `/proc/<pid>/stat`) over an idle window after start-up, and \
             peak RSS (`VmHWM`, `/proc/<pid>/status`, with its split at the end of the window). *idle*: the \
             100 watched paths, nothing else. *loaded*: {} secrets in an `--issuances` file, {} per \
             holder, delivered by environment variable to {} `sleep` processes (tracked by pid; the agent \
             learns each value from `/proc/<pid>/environ` when the record arrives), plus the 100 watched \
             paths.\n",
            thousands(f.secrets as f64),
            f.secrets.checked_div(f.holders).unwrap_or(0),
            thousands(f.holders as f64)
        );
        let _ = writeln!(
            w,
            "| | window | CPU s | CPU % of a core | VmHWM | VmRSS | RssAnon | RssFile | of which BPF map mappings (ring buffer) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for (name, x) in [("idle", &f.idle), ("loaded", &f.loaded)] {
            let _ = writeln!(
                w,
                "| {name} | {:.0} s | {:.3} | {:.2}% | **{}** | {} | {} | {} | {} |",
                x.secs,
                x.cpu_secs,
                100.0 * x.cpu_secs / x.secs.max(1e-9),
                mib(x.mem.hwm_kib),
                mib(x.mem.rss_kib),
                mib(x.mem.anon_kib),
                mib(x.mem.file_kib),
                mib(x.mem.bpf_map_kib)
            );
        }
        let _ = writeln!(
            w,
            "\nLoading the {} records took {:.2} s and {:.2} CPU s from start to ready (an empty agent: \
             {:.2} CPU s); {} of {} secrets learned. A graceful stop took {:.1} s from SIGTERM to the agent's \
             exit and {:.1} s until its programs were detached (by its `monitor-detach` child, one tracepoint \
             after the other); the benchmarks read the agent's final `monitor: stopped:` line and then \
             SIGKILL it, which leaves the same detaching to the kernel before the process is gone.\n",
            thousands(f.secrets as f64),
            f.load_wall,
            f.load_cpu,
            f.startup_cpu,
            thousands(f.learned as f64),
            thousands(f.secrets as f64),
            f.graceful_stop_secs,
            f.graceful_detach_secs
        );
        if f.list_bytes > 0 {
            let _ = writeln!(
                w,
                "The figures above are the agent holding the secrets, before any request (the \
                 target is judged on them). Then one `GET /secrets` listing all {} of them ({:.1} \
                 MiB of JSON, which the agent builds in memory as a `serde_json` tree, serializes, \
                 then copies into the response) took the peak to {} (VmRSS {} after it).\n",
                thousands(f.secrets as f64),
                f.list_bytes as f64 / (1024.0 * 1024.0),
                mib(f.after_list.hwm_kib),
                mib(f.after_list.rss_kib)
            );
        }
        if !f.file_loads.is_empty() {
            let _ = writeln!(
                w,
                "File-delivered records instead (one delivery file each, so each record adds a watch), \
                 start to ready:\n\n| records | wall s | CPU s |\n| --- | --- | --- |"
            );
            for (n, wall, cpu) in &f.file_loads {
                let _ = writeln!(w, "| {} | {wall:.2} | {cpu:.2} |", thousands(*n as f64));
            }
            if let Some(k) = growth_exponent(&f.file_loads) {
                let (n, wall, _) = *f.file_loads.last().unwrap();
                let ext = wall * (10_000.0 / n as f64).powf(k);
                let _ = writeln!(
                    w,
                    "\nLoad time grows as n^{k:.1}: 10,000 file-delivered records would take about {:.0} s \
                     (the agent expands the watch patterns once per batch of records, not once per \
                     record). The 10,000-secret footprint above uses environment deliveries, which \
                     also exercise learning a value from `/proc/<pid>/environ`.\n",
                    ext
                );
            } else {
                let _ = writeln!(w);
            }
        }
    }
    scale_markdown(w, r);
    tls_markdown(w, r);
    // Misses.
    let missed: Vec<&Target> = targets.iter().filter(|t| t.met == Some(false)).collect();
    if !missed.is_empty() {
        let _ = writeln!(w, "## Misses: why, and what would close them\n");
        for t in missed {
            let _ = writeln!(w, "**{}** ({}).", t.what, t.margin);
            let _ = writeln!(w, "{}\n", crate::bench::why(t.id, r));
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(w, "## Notes\n");
        for n in &r.notes {
            let _ = writeln!(w, "* {n}");
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "## Time\n");
    let _ = writeln!(w, "| benchmark | seconds |\n| --- | --- |");
    for (k, v) in &r.durations {
        let _ = writeln!(w, "| {k} | {v:.0} |");
    }
    let _ = writeln!(
        w,
        "| total (with builds and set-up) | {:.0} |",
        r.total_secs
    );
    s
}

pub(super) fn tls_markdown(w: &mut String, r: &Results) {
    use crate::bench::tls::TlsConfig;
    if !r.ran("tls") {
        return;
    }
    let x = &r.tls;
    let _ = writeln!(w, "## 11. TLS request loop\n");
    let _ = writeln!(
        w,
        "What the agent's uprobes on a TLS library cost a process that uses that library without \
         being tracked. A Python TLS echo server on loopback (certificate made by the run with \
         `openssl req`) and a Python client (`{}`) that opens one TLS connection and times {} \
         round trips of a {}-byte request and its echo (`SSL_write_ex` and `SSL_read_ex` on each \
         side; the agent probes the write), both pinned to CPU {}, the agent to CPU {}. {} \
         rounds, configurations in rotated order, each with a fresh agent (`--watch` over the \
         100 paths, `--events` to a file). The uprobes: {}. Cells: median ns per round trip, \
         ratio of medians to no agent [range of the per-round ratios].\n",
        x.python,
        thousands(x.iters as f64),
        x.bytes,
        r.machine.work_cpu,
        r.machine.agent_cpu,
        x.rounds,
        if x.attached.is_empty() {
            "not attached in this run".to_string()
        } else {
            format!("`{}`", x.attached)
        }
    );
    let _ = writeln!(
        w,
        "| configuration | ns per round trip | ratio to none |\n| --- | ---: | --- |"
    );
    for c in &x.configs {
        let Some(ns) = x.median_ns(c.config) else {
            continue;
        };
        let rr = x.round_ratios(c.config);
        let ratio = match x.ratio(c.config) {
            Some(q) if c.config != TlsConfig::None && rr.len() > 1 => {
                format!("{q:.3} [{:.2}–{:.2}]", min(&rr), max(&rr))
            }
            Some(q) if c.config != TlsConfig::None => format!("{q:.3}"),
            _ => String::new(),
        };
        let _ = writeln!(
            w,
            "| **{}**: {} | {} | {ratio} |",
            c.config.name(),
            c.config.label(),
            fmt_ns(ns)
        );
    }
    if let Some(h) = x.samples(TlsConfig::MonitorHolder) {
        let ev: u64 = h.events.iter().sum();
        let lost: u64 = h.lost.iter().sum();
        let _ = writeln!(
            w,
            "\nThe holder runs: {} TLS writes over {} rounds; the agent stored {} events (all kinds) \
             and reported {} lost in the kernel.",
            thousands((x.iters * h.ns.len() as u64) as f64),
            h.ns.len(),
            thousands(ev as f64),
            thousands(lost as f64)
        );
    }
    if let (Some(u), Some(n), Some(none)) = (
        x.median_ns(TlsConfig::MonitorUntracked),
        x.median_ns(TlsConfig::MonitorNoTls),
        x.median_ns(TlsConfig::None),
    ) {
        let _ = writeln!(
            w,
            "\nOf the untracked loop's {:+.2} µs per round trip, {:+.2} µs are the agent without TLS \
             probes (its syscall tracepoints, benchmark 1) and {:+.2} µs the uprobes on libssl: \
             two traps per round trip (the client's and the server's `SSL_write_ex`), about {:.0} ns \
             each.{}",
            (u - none) / 1e3,
            (n - none) / 1e3,
            (u - n) / 1e3,
            (u - n) / 2.0,
            match x.median_ns(TlsConfig::Floor) {
                Some(f) => format!(
                    " An empty uprobe on the same functions (bpftrace, no agent) costs {:+.2} µs \
                     per round trip, about {:.0} ns per trap: the agent's programs add {:+.2} µs \
                     to that floor.",
                    (f - none) / 1e3,
                    (f - none) / 2.0,
                    ((u - n) - (f - none)) / 1e3
                ),
                None => String::new(),
            }
        );
    }
    if let Some(why) = &x.floor_skipped {
        let _ = writeln!(w, "\nThe uprobe floor was not measured: {why}.");
    }
    let _ = writeln!(w);
}

pub(super) fn scale_markdown(w: &mut String, r: &Results) {
    let sc = &r.scale;
    if r.ran("secrets") {
        let _ = writeln!(w, "## 7. Per-event cost by number of secrets\n");
        let _ = writeln!(
            w,
            "The throughput generator (benchmark 3) at a fixed rate, with 10, 1,000 and 10,000 \
             secrets (cgroup holders, ten secrets each, one delivery file each) in an `--issuances` \
             file: agent CPU per event.\n"
        );
        let _ = writeln!(w, "| secrets | events | lost | agent CPU s | ns / event |");
        let _ = writeln!(w, "| ---: | ---: | ---: | ---: | ---: |");
        for p in &sc.per_event {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} | {:.0} |",
                thousands(p.secrets as f64),
                thousands(p.events as f64),
                p.lost,
                p.agent_cpu,
                p.ns_per_event
            );
        }
        let _ = writeln!(w);
        if let Some(x) = &sc.alerts_under_exec {
            let _ = writeln!(
                w,
                "With {} secrets held, `GET /alerts?limit=100` every 50 ms ({} alerts in the store, from \
                 foreign reads of 20 delivery files) while six threads exec `/bin/true` (paced at 1,000/s in all) at {:.0}/s in \
                 all: p50 {:.1} ms, worst {:.1} ms over {} requests. The API thread answers store \
                 queries itself, whatever the event loop is doing.\n",
                thousands(x.secrets as f64),
                x.alerts,
                x.execs_per_sec,
                x.p50_ms,
                x.worst_ms,
                x.requests
            );
        }
    }
    if let Some(f) = &sc.flood {
        let _ = writeln!(w, "## 8. A flooding holder\n");
        let _ = writeln!(
            w,
            "`dd bs=1` (one byte a write) holds one secret and writes flat out for {:.0} s with the \
             default capture budget; meanwhile `cat` reads another secret {} times and `/healthz` is \
             polled every 100 ms.\n",
            f.secs, f.expected
        );
        let _ = writeln!(w, "| foreign reads alerted | `/healthz` worst | dd's writes dropped during / after | `monitor.capture.degraded` during |");
        let _ = writeln!(w, "| ---: | ---: | ---: | --- |");
        let _ = writeln!(
            w,
            "| {}/{} | {:.1} ms | {} / {} | {} |\n",
            f.raised,
            f.expected,
            f.healthz_worst_ms,
            thousands(f.dropped_during as f64),
            thousands(f.dropped_after as f64),
            if f.degraded_during { "yes" } else { "no" }
        );
    }
    if let Some(i) = &sc.ingest {
        let _ = writeln!(w, "## 9. Issuance ingestion\n");
        let _ = writeln!(
            w,
            "{} records appended at once to a tailed `--issuances` file of a running agent.\n",
            thousands(i.records as f64)
        );
        let _ = writeln!(
            w,
            "| records / s | `/healthz` worst | `GET /alerts` worst |"
        );
        let _ = writeln!(w, "| ---: | ---: | ---: |");
        let _ = writeln!(
            w,
            "| {} | {:.1} ms | {:.1} ms |\n",
            thousands(i.records as f64 / i.secs.max(1e-9)),
            i.healthz_worst_ms,
            i.alerts_worst_ms
        );
    }
    if let Some(f) = &sc.fleet {
        let _ = writeln!(w, "## 10. The fleet (NATS JetStream)\n");
        let _ = writeln!(
            w,
            "A 3-server JetStream cluster (Debian's `nats-server`, loopback, R3 streams). \
             Publishing: events and alerts of the agent's shapes through its fleet link \
             (events packed as the agent packs them, up to 256 or 64 KiB a JetStream \
             message; alerts one a message; batches, acknowledgements, message ids) until \
             the last is acknowledged. Cross-node: two \
             agents scoped to two cgroups as nodes A and B; A's holder reads its secret; \
             forked processes in B send it to a loopback listener; from the fork to B's \
             `secret.replay.foreign` alert arriving from the cluster.\n"
        );
        let _ = writeln!(
            w,
            "| events / s | alerts / s | cross-node p50 | p99 | max | alerts |"
        );
        let _ = writeln!(w, "| ---: | ---: | ---: | ---: | ---: | ---: |");
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {}/{} |\n",
            thousands(f.events_per_sec),
            thousands(f.alerts_per_sec),
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            f.received,
            f.sent
        );
    }
}
