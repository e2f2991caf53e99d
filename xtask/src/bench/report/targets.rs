//! The targets each run is judged against, with their margins.

use super::*;

pub(super) fn pct_over(r: f64) -> String {
    format!("{:+.1}%", (r - 1.0) * 100.0)
}

pub fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let u = &r.untracked;
    // 1a. within 3% of none, every workload.
    let ratios: Vec<(usize, f64)> = (0..WORKLOADS.len())
        .filter_map(|w| Some((w, u.ratio(Config::Monitor, w)?)))
        .collect();
    if let Some(&(ww, worst)) = ratios.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        let met = ratios.iter().all(|(_, x)| *x <= 1.03);
        t.push(Target {
            id: "untracked_within_3pct",
            what: "untracked overhead within 3% of no probes, every workload".into(),
            target: "≤ +3.0% on each workload".into(),
            measured: ratios
                .iter()
                .map(|(w, x)| format!("{} {}", WORKLOADS[*w].0, pct_over(*x)))
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(met),
            margin: if met {
                format!(
                    "met; worst {} at {}, {:.1} points under",
                    WORKLOADS[ww].0,
                    pct_over(worst),
                    3.0 - (worst - 1.0) * 100.0
                )
            } else {
                let missed: Vec<String> = ratios
                    .iter()
                    .filter(|(_, x)| *x > 1.03)
                    .map(|(w, x)| {
                        format!("{} by {:.1} points", WORKLOADS[*w].0, (x - 1.03) * 100.0)
                    })
                    .collect();
                format!("missed: {}", missed.join(", "))
            },
        });
    }
    // 1a'. no holders on the node: the capture probes are detached.
    let idle: Vec<(usize, f64)> = (0..WORKLOADS.len())
        .filter_map(|w| Some((w, u.ratio(Config::MonitorIdle, w)?)))
        .collect();
    if !idle.is_empty() {
        let met = idle.iter().all(|(_, x)| *x <= 1.02);
        let worst = idle.iter().map(|(_, x)| *x).fold(f64::MIN, f64::max);
        t.push(Target {
            id: "idle_within_2pct",
            what: "no holders on the node (capture probes detached): within 2% of no probes, \
                   every workload"
                .into(),
            target: "≤ +2.0% on each workload".into(),
            measured: idle
                .iter()
                .map(|(w, x)| format!("{} {}", WORKLOADS[*w].0, pct_over(*x)))
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(met),
            margin: format!(
                "{}; worst {}",
                if met { "met" } else { "missed" },
                pct_over(worst)
            ),
        });
    }
    // 1b. below bpftrace and audit.
    let others = if r.ran("untracked") {
        &[Config::Bpftrace, Config::Audit][..]
    } else {
        &[]
    };
    for &other in others {
        let id = if other == Config::Bpftrace {
            "untracked_below_bpftrace"
        } else {
            "untracked_below_auditd"
        };
        let what = format!(
            "untracked overhead below {}'s, every workload",
            other.name()
        );
        let pairs: Vec<(usize, f64, f64)> = (0..WORKLOADS.len())
            .filter_map(|w| Some((w, u.ratio(Config::Monitor, w)?, u.ratio(other, w)?)))
            .collect();
        if pairs.is_empty() {
            t.push(Target {
                id,
                what,
                target: format!("monitor < {} on each workload", other.name()),
                measured: "not measured (skipped)".into(),
                met: None,
                margin: u
                    .skipped
                    .iter()
                    .find(|(c, _)| *c == other)
                    .map(|(_, why)| why.clone())
                    .unwrap_or_default(),
            });
            continue;
        }
        let met = pairs.iter().all(|(_, m, o)| m < o);
        t.push(Target {
            id,
            what,
            target: format!("monitor < {} on each workload", other.name()),
            measured: pairs
                .iter()
                .map(|(w, m, o)| {
                    format!("{} {} vs {}", WORKLOADS[*w].0, pct_over(*m), pct_over(*o))
                })
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(met),
            margin: {
                let parts: Vec<String> = pairs
                    .iter()
                    .map(|(w, m, o)| {
                        // Same-round comparison: in how many rounds was
                        // the agent's ratio the higher one?
                        let rm = u.round_ratios(Config::Monitor, *w);
                        let ro = u.round_ratios(other, *w);
                        let above = rm.iter().zip(&ro).filter(|(a, b)| a > b).count();
                        format!(
                            "{} {} by {:.1} points (monitor higher in {above} of {} rounds)",
                            WORKLOADS[*w].0,
                            if m < o { "below" } else { "ABOVE" },
                            ((o - m) * 100.0).abs(),
                            rm.len().min(ro.len())
                        )
                    })
                    .collect();
                format!(
                    "{}: {}",
                    if met { "met" } else { "missed" },
                    parts.join(", ")
                )
            },
        });
    }
    // 1c. a real workload: redis-benchmark keeps 97% of its requests/s.
    if let Some(x) = u.ratio(Config::Monitor, REDIS) {
        // ns per request is the inverse of requests/s.
        let kept = 1.0 / x;
        let met = kept >= 0.97;
        let others: Vec<String> = [
            Config::MonitorIdle,
            Config::Bpftrace,
            Config::Audit,
            Config::Floor,
        ]
        .iter()
        .filter_map(|&c| Some(format!("{} {:.1}%", c.name(), 100.0 / u.ratio(c, REDIS)?)))
        .collect();
        t.push(Target {
            id: "redis_97pct",
            what: "redis-benchmark (SET + GET, local redis-server) requests/s with the agent"
                .into(),
            target: "≥ 97% of no probes".into(),
            measured: format!(
                "{:.1}% of no probes ({:.0} vs {:.0} requests/s); {}",
                kept * 100.0,
                1e9 / u.median_ns(Config::Monitor, REDIS).unwrap_or(f64::NAN),
                1e9 / u.median_ns(Config::None, REDIS).unwrap_or(f64::NAN),
                others.join(", ")
            ),
            met: Some(met),
            margin: format!(
                "{} by {:.1} points",
                if met { "met" } else { "missed" },
                ((kept - 0.97) * 100.0).abs()
            ),
        });
    }
    // 3. throughput: 500,000 events/s on one core before losing events =
    // a paced 500,000/s with the agent pinned to one core, stored whole.
    let at500 = r.throughput.at(500_000);
    if !at500.is_empty() {
        let lost: Vec<u64> = at500.iter().map(|x| x.lost).collect();
        let offered: u64 = at500.iter().map(|x| x.writes).sum();
        let total: u64 = lost.iter().sum();
        let per_core = r.throughput.median_at(500_000, |x| x.per_core());
        let busy = r.throughput.median_at(500_000, |x| x.busy());
        let sat = r.throughput.median_at(0, |x| x.wall_rate());
        let met = total == 0;
        let bad = lost.iter().filter(|x| **x > 0).count();
        t.push(Target {
            id: "throughput_per_core",
            what: "pipeline throughput on one core".into(),
            target: "≥ 500,000 events/s per core: a paced 500,000/s stored with no loss, every run".into(),
            measured: format!(
                "at 500,000/s: lost per run {lost:?}, agent at {:.0}% of its core (≈ {} events per CPU-second); overloaded (max rate): {} stored/s",
                busy * 100.0,
                thousands(per_core),
                thousands(sat)
            ),
            met: Some(met),
            margin: if met {
                format!(
                    "met; the agent used {:.0}% of its core at 500,000/s",
                    busy * 100.0
                )
            } else {
                format!(
                    "missed narrowly: {bad} of {} runs lost events ({:.3}% of all offered at 500,000/s)",
                    lost.len(),
                    100.0 * total as f64 / offered.max(1) as f64
                )
            },
        });
    }
    let at100 = r.throughput.at(100_000);
    if !at100.is_empty() {
        let lost: Vec<u64> = at100.iter().map(|x| x.lost).collect();
        let offered: u64 = at100.iter().map(|x| x.writes).sum();
        let worst = *lost.iter().max().unwrap();
        t.push(Target {
            id: "zero_loss_at_100k",
            what: "no lost events at 100,000 events/s".into(),
            target: "0 lost in every run".into(),
            measured: format!(
                "lost per run: {lost:?} of {} offered per run",
                thousands(offered as f64 / at100.len() as f64)
            ),
            met: Some(worst == 0),
            margin: if worst == 0 {
                "met".into()
            } else {
                let total: u64 = lost.iter().sum();
                format!(
                    "missed: up to {worst} lost in one run ({:.2}% of all offered)",
                    100.0 * total as f64 / offered.max(1) as f64
                )
            },
        });
    }
    // 4. scanning, 1,000 secrets, every corpus.
    if let Some(s) = r.scan.iter().find(|s| s.secrets == 1000) {
        if let Some((c, worst)) = s
            .corpora
            .iter()
            .map(|(c, b, _, _)| (c.clone(), *b))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        {
            let met = worst >= 1e9;
            t.push(Target {
                id: "scan_1000_secrets",
                what: "fingerprint scanning with 1,000 secrets, 4 KiB buffers".into(),
                target: "≥ 1 GB/s per core (slowest corpus)".into(),
                measured: s
                    .corpora
                    .iter()
                    .map(|(c, b, _, _)| format!("{c} {:.2} GB/s", b / 1e9))
                    .collect::<Vec<_>>()
                    .join(", "),
                met: Some(met),
                margin: if met {
                    format!(
                        "met; slowest ({c}) {:.0}% above",
                        (worst / 1e9 - 1.0) * 100.0
                    )
                } else {
                    format!("missed on {c} by {:.0}%", (1.0 - worst / 1e9) * 100.0)
                },
            });
        }
    }
    // 5. latency.
    let e2e = r.latency.end_to_end_ms();
    if !e2e.is_empty() {
        let p99 = pct(&e2e, 99.0);
        let missing = r.latency.missing();
        let met = p99 < 20.0 && missing == 0;
        t.push(Target {
            id: "latency_p99",
            what: "detection latency, syscall to alert line".into(),
            target: "p99 < 20 ms (and every alert arrives)".into(),
            measured: format!(
                "p99 {p99:.2} ms over {} samples, {missing} missing",
                e2e.len()
            ),
            met: Some(met),
            margin: if met {
                format!("met; {:.1} ms under", 20.0 - p99)
            } else if missing > 0 {
                format!("missed: {missing} samples raised no alert")
            } else {
                format!("missed by {:.1} ms", p99 - 20.0)
            },
        });
    }
    // 6. RSS with 10,000 secrets.
    let f = &r.footprint;
    if f.secrets > 0 {
        let mib = f.loaded.mem.hwm_kib as f64 / 1024.0;
        let full = f.secrets >= 10_000;
        let met = mib < 64.0;
        t.push(Target {
            id: "rss_10k_secrets",
            what: format!(
                "peak RSS with {} secrets and {} tracked processes",
                thousands(f.secrets as f64),
                thousands(f.holders as f64)
            ),
            target: "VmHWM < 64 MiB with 10,000 secrets".into(),
            measured: format!(
                "{mib:.1} MiB ({} of {} secrets learned)",
                f.learned, f.secrets
            ),
            met: if full || !met { Some(met) } else { None },
            margin: if met {
                format!("met; {:.1} MiB under", 64.0 - mib)
            } else {
                format!(
                    "missed by {:.1} MiB ({:.0}%)",
                    mib - 64.0,
                    (mib / 64.0 - 1.0) * 100.0
                )
            },
        });
    }
    scale_targets(r, &mut t);
    tls_targets(r, &mut t);
    t
}

/// Section 11 (issue 13).
pub(super) fn tls_targets(r: &Results, t: &mut Vec<Target>) {
    use crate::bench::tls::TlsConfig;
    let x = &r.tls;
    let Some(ratio) = x.ratio(TlsConfig::MonitorUntracked) else {
        return;
    };
    let met = ratio <= 1.03;
    let rr = x.round_ratios(TlsConfig::MonitorUntracked);
    let above = rr.iter().filter(|q| **q > 1.03).count();
    t.push(Target {
        id: "tls_untracked_within_3pct",
        what: "TLS request loop by an untracked process, the agent's uprobes on its libssl".into(),
        target: "≤ +3.0% of no agent".into(),
        measured: format!(
            "{} ({} vs {} per round trip; per-round ratios above +3% in {above} of {} rounds)",
            pct_over(ratio),
            fmt_ns(x.median_ns(TlsConfig::MonitorUntracked).unwrap_or(f64::NAN)),
            fmt_ns(x.median_ns(TlsConfig::None).unwrap_or(f64::NAN)),
            rr.len()
        ),
        met: Some(met),
        margin: if met {
            format!("met; {:.1} points under", 3.0 - (ratio - 1.0) * 100.0)
        } else {
            format!("missed by {:.1} points", (ratio - 1.03) * 100.0)
        },
    });
}

/// Sections 7-9 (issue 10).
pub(super) fn scale_targets(r: &Results, t: &mut Vec<Target>) {
    let sc = &r.scale;
    if let Some(x) = sc.flatness() {
        let (a, b) = (&sc.per_event[0], sc.per_event.last().unwrap());
        let met = x <= 1.2;
        t.push(Target {
            id: "secrets_flat",
            what: "agent CPU per event, most secrets vs fewest".into(),
            target: "≤ 1.2× from 10 to 10,000 secrets".into(),
            measured: sc
                .per_event
                .iter()
                .map(|p| {
                    format!(
                        "{} secrets {:.0} ns",
                        thousands(p.secrets as f64),
                        p.ns_per_event
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            met: (b.secrets >= 10_000 || !met).then_some(met),
            margin: if met {
                format!("met; {x:.2}× ({} -> {} secrets)", a.secrets, b.secrets)
            } else {
                format!("missed by {:.2}× ({x:.2}×)", x - 1.2)
            },
        });
    }
    if let Some(x) = &sc.alerts_under_exec {
        let at_rate = x.execs_per_sec >= 0.9 * super::super::scale::EXEC_RATE;
        let met = x.worst_ms < 100.0 && at_rate;
        t.push(Target {
            id: "alerts_under_exec",
            what: format!(
                "`GET /alerts` worst response with {} secrets while processes exec at {:.0}/s",
                thousands(x.secrets as f64),
                super::super::scale::EXEC_RATE
            ),
            target: "< 100 ms".into(),
            measured: format!(
                "worst {:.1} ms, p50 {:.1} ms over {} requests ({} alerts listed), {:.0} execs/s",
                x.worst_ms, x.p50_ms, x.requests, x.alerts, x.execs_per_sec
            ),
            met: (x.secrets >= 10_000 || !met).then_some(met),
            margin: if met {
                format!("met; {:.0} ms under", 100.0 - x.worst_ms)
            } else if !at_rate {
                format!("missed: the load reached {:.0} execs/s", x.execs_per_sec)
            } else {
                format!("missed by {:.0} ms", x.worst_ms - 100.0)
            },
        });
    }
    if let Some(f) = &sc.flood {
        let met = f.expected > 0 && f.raised >= f.expected;
        t.push(Target {
            id: "flood_alerts",
            what: "foreign reads of another secret alerted during a flood".into(),
            target: "100%".into(),
            measured: format!("{}/{}", f.raised, f.expected),
            met: Some(met),
            margin: if met {
                "met".into()
            } else {
                format!("missed by {}", f.expected.saturating_sub(f.raised))
            },
        });
        let met = f.healthz_worst_ms < 1000.0;
        t.push(Target {
            id: "flood_healthz",
            what: "`/healthz` worst response during a flood".into(),
            target: "< 1 s".into(),
            measured: format!("{:.1} ms", f.healthz_worst_ms),
            met: Some(met),
            margin: if met {
                format!("met; {:.0} ms under", 1000.0 - f.healthz_worst_ms)
            } else {
                format!("missed by {:.0} ms", f.healthz_worst_ms - 1000.0)
            },
        });
    }
    if let Some(i) = &sc.ingest {
        let met = i.alerts_worst_ms < 100.0;
        t.push(Target {
            id: "ingest_alerts_100ms",
            what: format!(
                "`GET /alerts` worst response while {} records arrive",
                thousands(i.records as f64)
            ),
            target: "< 100 ms".into(),
            measured: format!("{:.1} ms", i.alerts_worst_ms),
            met: (i.records >= 100_000 || !met).then_some(met),
            margin: if met {
                format!("met; {:.0} ms under", 100.0 - i.alerts_worst_ms)
            } else {
                format!("missed by {:.0} ms", i.alerts_worst_ms - 100.0)
            },
        });
    }
    if let Some(f) = &sc.fleet {
        let met = f.events_per_sec >= 50_000.0;
        t.push(Target {
            id: "fleet_events_per_sec",
            what: "events a second one agent publishes to the NATS JetStream cluster (R3)".into(),
            target: "≥ 50,000 / s".into(),
            measured: format!("{} / s", thousands(f.events_per_sec)),
            met: (!r.smoke).then_some(met),
            margin: if met {
                format!("met; {:.1}x", f.events_per_sec / 50_000.0)
            } else {
                format!("missed by {} / s", thousands(50_000.0 - f.events_per_sec))
            },
        });
        let met = f.received == f.sent && f.p99_ms < 1000.0;
        t.push(Target {
            id: "fleet_cross_node_p99",
            what: "cross-node detection, syscall on node B to the fleet alert, p99".into(),
            target: "< 1 s, every sample".into(),
            measured: format!(
                "p99 {:.1} ms (p50 {:.1}, max {:.1}), {}/{} alerts",
                f.p99_ms, f.p50_ms, f.max_ms, f.received, f.sent
            ),
            met: Some(met),
            margin: if met {
                format!("met; {:.0} ms under", 1000.0 - f.p99_ms)
            } else if f.received < f.sent {
                format!("missed: {} alerts never arrived", f.sent - f.received)
            } else {
                format!("missed by {:.0} ms", f.p99_ms - 1000.0)
            },
        });
    }
}

pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}
