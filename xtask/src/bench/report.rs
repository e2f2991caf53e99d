//! Statistics, the targets, `results.json` and `BENCHMARKS.md`.

use std::fmt::Write as _;

use super::{
    overhead::{Config, Tracked, Untracked, WORKLOADS},
    pipeline::{Footprint, Latency, ScanSet, Throughput, RATES},
    Machine,
};

// ------------------------------------------------------------ statistics

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// Percentile by linear interpolation between closest ranks (p in 0..=100).
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let s = sorted(v);
    let rank = p / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (rank - lo as f64)
}

pub fn median(v: &[f64]) -> f64 {
    pct(v, 50.0)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::min)
}

// ------------------------------------------------------------ JSON

/// A JSON value, written by hand (xtask stays std + anyhow + clap).
pub enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn obj(fields: Vec<(&str, J)>) -> J {
        J::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn nums(v: &[f64]) -> J {
        J::Arr(v.iter().map(|x| J::Num(*x)).collect())
    }

    pub fn s(v: impl Into<String>) -> J {
        J::Str(v.into())
    }

    pub fn n(v: impl Into<f64>) -> J {
        J::Num(v.into())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, ind: usize) {
        let pad = |n: usize| "  ".repeat(n);
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(x) if x.is_finite() => {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    let _ = write!(out, "{}", *x as i64);
                } else {
                    let _ = write!(out, "{x}");
                }
            }
            J::Num(_) => out.push_str("null"),
            J::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            J::Arr(v) if v.is_empty() => out.push_str("[]"),
            J::Arr(v)
                if v.iter()
                    .all(|x| matches!(x, J::Num(_) | J::Null | J::Bool(_))) =>
            {
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    x.write(out, ind);
                }
                out.push(']');
            }
            J::Arr(v) => {
                out.push_str("[\n");
                for (i, x) in v.iter().enumerate() {
                    out.push_str(&pad(ind + 1));
                    x.write(out, ind + 1);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(ind));
                out.push(']');
            }
            J::Obj(v) if v.is_empty() => out.push_str("{}"),
            J::Obj(v) => {
                out.push_str("{\n");
                for (i, (k, x)) in v.iter().enumerate() {
                    out.push_str(&pad(ind + 1));
                    J::Str(k.clone()).write(out, ind + 1);
                    out.push_str(": ");
                    x.write(out, ind + 1);
                    out.push_str(if i + 1 < v.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(ind));
                out.push('}');
            }
        }
    }
}

// ------------------------------------------------------------ results

/// Everything one run measured.
pub struct Results {
    pub smoke: bool,
    /// The benchmarks run ([`super::SECTIONS`]; all but with `--only`).
    pub ran: Vec<&'static str>,
    pub machine: Machine,
    pub untracked: Untracked,
    pub tracked: Tracked,
    pub throughput: Throughput,
    pub scan: Vec<ScanSet>,
    pub latency: Latency,
    pub footprint: Footprint,
    pub scale: super::scale::Scale,
    pub tls: super::tls::TlsBench,
    /// Seconds per benchmark, and in all.
    pub durations: Vec<(String, f64)>,
    pub total_secs: f64,
    pub notes: Vec<String>,
}

impl Results {
    pub fn ran(&self, section: &str) -> bool {
        self.ran.contains(&section)
    }
}

/// One target, judged.
pub struct Target {
    pub id: &'static str,
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
    /// "by how much", signed words: "met by ...", "missed by ...".
    pub margin: String,
}

impl Target {
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        }
    }
}

impl Untracked {
    pub fn samples(&self, c: Config) -> Option<&super::overhead::ConfigSamples> {
        self.configs.iter().find(|s| s.config == c)
    }

    pub fn median_ns(&self, c: Config, w: usize) -> Option<f64> {
        self.samples(c).map(|s| median(&s.ns[w]))
    }

    /// Ratio of medians to "none".
    pub fn ratio(&self, c: Config, w: usize) -> Option<f64> {
        Some(self.median_ns(c, w)? / self.median_ns(Config::None, w)?)
    }

    /// Per-round ratios to the "none" run of the same round.
    pub fn round_ratios(&self, c: Config, w: usize) -> Vec<f64> {
        match (self.samples(c), self.samples(Config::None)) {
            (Some(a), Some(n)) => a.ns[w].iter().zip(&n.ns[w]).map(|(x, y)| x / y).collect(),
            _ => Vec::new(),
        }
    }
}

impl Throughput {
    pub fn at(&self, rate: u64) -> Vec<&super::pipeline::TpRun> {
        self.runs.iter().filter(|r| r.rate == rate).collect()
    }
}

fn pct_over(r: f64) -> String {
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
    // 3. throughput: 500,000 events/s on one core before losing events =
    // a paced 500,000/s with the agent pinned to one core, stored whole.
    let at500 = r.throughput.at(500_000);
    if !at500.is_empty() {
        let lost: Vec<u64> = at500.iter().map(|x| x.lost).collect();
        let offered: u64 = at500.iter().map(|x| x.writes).sum();
        let total: u64 = lost.iter().sum();
        let per_core = median(&at500.iter().map(|x| x.per_core()).collect::<Vec<_>>());
        let busy = median(&at500.iter().map(|x| x.busy()).collect::<Vec<_>>());
        let sat = median(
            &r.throughput
                .at(0)
                .iter()
                .map(|x| x.wall_rate())
                .collect::<Vec<_>>(),
        );
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
fn tls_targets(r: &Results, t: &mut Vec<Target>) {
    use super::tls::TlsConfig;
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
fn scale_targets(r: &Results, t: &mut Vec<Target>) {
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

// ------------------------------------------------------------ results.json

pub fn json(r: &Results, targets: &[Target]) -> J {
    let m = &r.machine;
    let u = &r.untracked;
    let untracked = J::obj(vec![
        ("rounds", J::n(u.rounds as f64)),
        (
            "workloads",
            J::Arr(
                WORKLOADS
                    .iter()
                    .enumerate()
                    .map(|(w, (name, what))| {
                        J::obj(vec![
                            ("name", J::s(*name)),
                            ("what", J::s(*what)),
                            (
                                "iterations",
                                J::n(u.iters.get(w).copied().unwrap_or(0) as f64),
                            ),
                            (
                                "configs",
                                J::Obj(
                                    u.configs
                                        .iter()
                                        .map(|c| {
                                            (
                                                c.config.name().to_string(),
                                                J::obj(vec![
                                                    ("ns_per_op_median", J::n(median(&c.ns[w]))),
                                                    (
                                                        "ratio_to_none",
                                                        u.ratio(c.config, w)
                                                            .map(J::n)
                                                            .unwrap_or(J::Null),
                                                    ),
                                                    (
                                                        "round_ratios",
                                                        J::nums(&u.round_ratios(c.config, w)),
                                                    ),
                                                    ("ns_per_op", J::nums(&c.ns[w])),
                                                ]),
                                            )
                                        })
                                        .collect(),
                                ),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "configs",
            J::Arr(
                u.configs
                    .iter()
                    .map(|c| {
                        J::obj(vec![
                            ("name", J::s(c.config.name())),
                            ("what", J::s(c.config.label())),
                            ("setup_secs", J::nums(&c.setup_secs)),
                            ("lost_events", J::n(c.lost as f64)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "skipped",
            J::Arr(
                u.skipped
                    .iter()
                    .map(|(c, why)| {
                        J::obj(vec![("config", J::s(c.name())), ("why", J::s(why.clone()))])
                    })
                    .collect(),
            ),
        ),
    ]);
    let tr = &r.tracked;
    let tracked = J::obj(vec![
        ("rounds", J::n(tr.rounds as f64)),
        ("iterations", J::n(tr.iters as f64)),
        ("bytes_per_write_and_send", J::n(tr.size as f64)),
        ("none_ns_per_op", J::nums(&tr.none_ns)),
        ("monitor_ns_per_op", J::nums(&tr.monitor_ns)),
        ("none_median", J::n(median(&tr.none_ns))),
        ("monitor_median", J::n(median(&tr.monitor_ns))),
        (
            "ratio_to_none",
            J::n(median(&tr.monitor_ns) / median(&tr.none_ns)),
        ),
        (
            "events_stored",
            J::nums(&tr.events.iter().map(|x| *x as f64).collect::<Vec<_>>()),
        ),
        (
            "events_lost",
            J::nums(&tr.lost.iter().map(|x| *x as f64).collect::<Vec<_>>()),
        ),
    ]);
    let tp = &r.throughput;
    let throughput = J::obj(vec![
        ("seconds_per_run", J::n(tp.secs)),
        ("bytes_per_write", J::n(tp.size as f64)),
        (
            "runs",
            J::Arr(
                tp.runs
                    .iter()
                    .map(|x| {
                        J::obj(vec![
                            (
                                "asked_rate",
                                if x.rate == 0 {
                                    J::s("max")
                                } else {
                                    J::n(x.rate as f64)
                                },
                            ),
                            ("writes", J::n(x.writes as f64)),
                            ("generator_secs", J::n(x.gen_secs)),
                            ("offered_rate", J::n(x.offered_rate())),
                            ("events_stored", J::n(x.events as f64)),
                            ("lost", J::n(x.lost as f64)),
                            ("agent_cpu_secs", J::n(x.agent_cpu)),
                            ("drain_secs", J::n(x.drain_secs)),
                            ("cpu_window_secs", J::n(x.cpu_window_secs)),
                            ("store_dropped", J::n(x.store_dropped as f64)),
                            ("agent_core_share", J::n(x.busy())),
                            ("events_per_cpu_sec", J::n(x.per_core())),
                            ("events_per_wall_sec", J::n(x.wall_rate())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]);
    let scan = J::Arr(
        r.scan
            .iter()
            .map(|s| {
                J::obj(vec![
                    ("secrets", J::n(s.secrets as f64)),
                    ("add_us_per_secret", J::n(s.add_us)),
                    ("set_rss_kib", J::n(s.set_rss_kib as f64)),
                    ("fingerprints", J::n(s.fingerprints as f64)),
                    (
                        "corpora",
                        J::Arr(
                            s.corpora
                                .iter()
                                .map(|(c, b, m, p)| {
                                    J::obj(vec![
                                        ("corpus", J::s(c.clone())),
                                        ("bytes_per_sec", J::n(*b)),
                                        ("matches", J::n(*m as f64)),
                                        ("planted", J::n(*p as f64)),
                                    ])
                                })
                                .collect(),
                        ),
                    ),
                ])
            })
            .collect(),
    );
    let l = &r.latency;
    let e2e = l.end_to_end_ms();
    let pipe = l.pipeline_ms();
    let stats = |v: &[f64]| {
        J::obj(vec![
            ("p50", J::n(pct(v, 50.0))),
            ("p90", J::n(pct(v, 90.0))),
            ("p99", J::n(pct(v, 99.0))),
            ("max", J::n(max(v))),
            ("min", J::n(min(v))),
        ])
    };
    let latency = J::obj(vec![
        ("samples", J::n(l.samples.len() as f64)),
        ("missing", J::n(l.missing() as f64)),
        ("interval_ms", J::n(l.interval_ms as f64)),
        ("syscall_to_alert_ms", stats(&e2e)),
        ("event_time_to_alert_ms", stats(&pipe)),
        ("syscall_to_alert_samples_ms", J::nums(&e2e)),
    ]);
    let f = &r.footprint;
    let fp = |x: &super::pipeline::Fp| {
        J::obj(vec![
            ("window_secs", J::n(x.secs)),
            ("cpu_secs", J::n(x.cpu_secs)),
            ("vm_hwm_kib", J::n(x.mem.hwm_kib as f64)),
            ("vm_rss_kib", J::n(x.mem.rss_kib as f64)),
            ("rss_anon_kib", J::n(x.mem.anon_kib as f64)),
            ("rss_file_kib", J::n(x.mem.file_kib as f64)),
            ("rss_shmem_kib", J::n(x.mem.shmem_kib as f64)),
            ("rss_bpf_map_kib", J::n(x.mem.bpf_map_kib as f64)),
        ])
    };
    let footprint = J::obj(vec![
        ("idle", fp(&f.idle)),
        ("loaded", fp(&f.loaded)),
        ("secrets", J::n(f.secrets as f64)),
        ("secrets_learned", J::n(f.learned as f64)),
        ("tracked_holders", J::n(f.holders as f64)),
        ("load_wall_secs", J::n(f.load_wall)),
        ("load_cpu_secs", J::n(f.load_cpu)),
        ("startup_cpu_secs", J::n(f.startup_cpu)),
        ("graceful_stop_secs", J::n(f.graceful_stop_secs)),
        (
            "after_list_secrets",
            J::obj(vec![
                ("response_bytes", J::n(f.list_bytes as f64)),
                ("vm_hwm_kib", J::n(f.after_list.hwm_kib as f64)),
                ("vm_rss_kib", J::n(f.after_list.rss_kib as f64)),
            ]),
        ),
        (
            "file_delivered_loads",
            J::Arr(
                f.file_loads
                    .iter()
                    .map(|(n, w, c)| {
                        J::obj(vec![
                            ("records", J::n(*n as f64)),
                            ("wall_secs", J::n(*w)),
                            ("cpu_secs", J::n(*c)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]);
    J::obj(vec![
        ("mode", J::s(if r.smoke { "smoke" } else { "full" })),
        (
            "benchmarks_run",
            J::Arr(r.ran.iter().map(|x| J::s(*x)).collect()),
        ),
        (
            "machine",
            J::obj(vec![
                ("date", J::s(m.date.clone())),
                ("nproc", J::n(m.nproc as f64)),
                ("cpu_model", J::s(m.cpu.clone())),
                ("memory_kib", J::n(m.mem_kib as f64)),
                ("kernel", J::s(m.kernel.clone())),
                ("os", J::s(m.os.clone())),
                ("bpftrace", J::s(m.bpftrace.clone())),
                ("auditctl", J::s(m.auditctl.clone())),
                ("rustc", J::s(m.rustc.clone())),
                ("commit", J::s(m.commit.clone())),
                ("command", J::s(m.command.clone())),
            ]),
        ),
        (
            "targets",
            J::Arr(
                targets
                    .iter()
                    .map(|t| {
                        J::obj(vec![
                            ("id", J::s(t.id)),
                            ("what", J::s(t.what.clone())),
                            ("target", J::s(t.target.clone())),
                            ("measured", J::s(t.measured.clone())),
                            ("met", t.met.map(J::Bool).unwrap_or(J::Null)),
                            ("margin", J::s(t.margin.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "untracked_overhead",
            if r.ran("untracked") {
                untracked
            } else {
                J::Null
            },
        ),
        (
            "tracked_holder",
            if r.ran("tracked") { tracked } else { J::Null },
        ),
        (
            "throughput",
            if r.ran("throughput") {
                throughput
            } else {
                J::Null
            },
        ),
        ("scan", if r.ran("scan") { scan } else { J::Null }),
        ("latency", if r.ran("latency") { latency } else { J::Null }),
        (
            "footprint",
            if r.ran("footprint") {
                footprint
            } else {
                J::Null
            },
        ),
        (
            "durations_secs",
            J::Obj(
                r.durations
                    .iter()
                    .map(|(k, v)| (k.clone(), J::n(*v)))
                    .collect(),
            ),
        ),
        ("scale", scale_json(&r.scale)),
        (
            "tls",
            if r.ran("tls") {
                tls_json(&r.tls)
            } else {
                J::Null
            },
        ),
        ("total_secs", J::n(r.total_secs)),
        (
            "notes",
            J::Arr(r.notes.iter().map(|n| J::s(n.clone())).collect()),
        ),
    ])
}

fn tls_json(x: &super::tls::TlsBench) -> J {
    J::obj(vec![
        ("rounds", J::n(x.rounds as f64)),
        ("round_trips_per_loop", J::n(x.iters as f64)),
        ("bytes_per_request", J::n(x.bytes as f64)),
        ("python", J::s(x.python.clone())),
        ("attached", J::s(x.attached.clone())),
        (
            "configs",
            J::Arr(
                x.configs
                    .iter()
                    .map(|c| {
                        J::obj(vec![
                            ("name", J::s(c.config.name())),
                            ("what", J::s(c.config.label())),
                            ("ns_per_round_trip", J::nums(&c.ns)),
                            (
                                "ns_per_round_trip_median",
                                x.median_ns(c.config).map(J::n).unwrap_or(J::Null),
                            ),
                            (
                                "ratio_to_none",
                                x.ratio(c.config).map(J::n).unwrap_or(J::Null),
                            ),
                            ("round_ratios", J::nums(&x.round_ratios(c.config))),
                            (
                                "events_stored",
                                J::nums(&c.events.iter().map(|v| *v as f64).collect::<Vec<_>>()),
                            ),
                            (
                                "events_lost",
                                J::nums(&c.lost.iter().map(|v| *v as f64).collect::<Vec<_>>()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

fn tls_markdown(w: &mut String, r: &Results) {
    use super::tls::TlsConfig;
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

fn scale_json(sc: &super::scale::Scale) -> J {
    J::obj(vec![
        (
            "per_event",
            J::Arr(
                sc.per_event
                    .iter()
                    .map(|p| {
                        J::obj(vec![
                            ("secrets", J::n(p.secrets as f64)),
                            ("events", J::n(p.events as f64)),
                            ("lost", J::n(p.lost as f64)),
                            ("agent_cpu_secs", J::n(p.agent_cpu)),
                            ("ns_per_event", J::n(p.ns_per_event)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "flood",
            match &sc.flood {
                Some(f) => J::obj(vec![
                    ("secs", J::n(f.secs)),
                    ("expected", J::n(f.expected as f64)),
                    ("raised", J::n(f.raised as f64)),
                    ("healthz_worst_ms", J::n(f.healthz_worst_ms)),
                    ("dropped_during", J::n(f.dropped_during as f64)),
                    ("dropped_after", J::n(f.dropped_after as f64)),
                    ("degraded_alert_during", J::Bool(f.degraded_during)),
                ]),
                None => J::Null,
            },
        ),
        (
            "ingest",
            match &sc.ingest {
                Some(i) => J::obj(vec![
                    ("records", J::n(i.records as f64)),
                    ("secs", J::n(i.secs)),
                    ("records_per_sec", J::n(i.records as f64 / i.secs.max(1e-9))),
                    ("healthz_worst_ms", J::n(i.healthz_worst_ms)),
                    ("alerts_worst_ms", J::n(i.alerts_worst_ms)),
                ]),
                None => J::Null,
            },
        ),
        (
            "fleet",
            match &sc.fleet {
                Some(f) => J::obj(vec![
                    ("events", J::n(f.events as f64)),
                    ("events_per_sec", J::n(f.events_per_sec)),
                    ("alerts", J::n(f.alerts as f64)),
                    ("alerts_per_sec", J::n(f.alerts_per_sec)),
                    ("cross_node_sent", J::n(f.sent as f64)),
                    ("cross_node_received", J::n(f.received as f64)),
                    ("cross_node_p50_ms", J::n(f.p50_ms)),
                    ("cross_node_p99_ms", J::n(f.p99_ms)),
                    ("cross_node_max_ms", J::n(f.max_ms)),
                ]),
                None => J::Null,
            },
        ),
    ])
}

// ------------------------------------------------------------ BENCHMARKS.md

fn cell_ratio(u: &Untracked, c: Config, w: usize) -> String {
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

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn markdown(r: &Results, targets: &[Target]) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let w = &mut s;
    let partial = r.ran.len() < super::SECTIONS.len();
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
             The connect loop closes with `SO_LINGER 0` so that no TIME_WAIT sockets pile up between runs.\n",
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
            let f = |g: &dyn Fn(&super::pipeline::TpRun) -> f64| {
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
             {:.2} CPU s); {} of {} secrets learned. A graceful stop (SIGTERM to exit, the agent detaching \
             its programs) took {:.1} s; the benchmarks read the agent's final `monitor: stopped:` line and \
             then SIGKILL it, which leaves the same detaching to the kernel.\n",
            thousands(f.secrets as f64),
            f.load_wall,
            f.load_cpu,
            f.startup_cpu,
            thousands(f.learned as f64),
            thousands(f.secrets as f64),
            f.graceful_stop_secs
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
            let _ = writeln!(w, "{}\n", super::why(t.id, r));
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

/// Least-squares slope of log(wall) over log(n).
pub fn growth_exponent(v: &[(usize, f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = v
        .iter()
        .filter(|(n, w, _)| *n > 0 && *w > 0.0)
        .map(|(n, w, _)| ((*n as f64).ln(), w.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let k = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / k;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / k;
    let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    (den > 0.0).then(|| num / den)
}

fn scale_markdown(w: &mut String, r: &Results) {
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
             Publishing: messages of the agent's shapes through its fleet link (batches, \
             acknowledgements, message ids) until the last is acknowledged. Cross-node: two \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(median(&v), 2.5);
        assert_eq!(pct(&v, 0.0), 1.0);
        assert_eq!(pct(&v, 100.0), 4.0);
        assert_eq!(pct(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn json_renders_and_escapes() {
        let j = J::obj(vec![
            ("a", J::s("x\"y")),
            ("b", J::nums(&[1.0, 2.5])),
            ("c", J::Null),
        ]);
        assert_eq!(
            j.render(),
            "{\n  \"a\": \"x\\\"y\",\n  \"b\": [1, 2.5],\n  \"c\": null\n}\n"
        );
    }

    #[test]
    fn thousands_groups() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }

    #[test]
    fn exponent_of_a_square() {
        let v = [(100, 1.0, 0.0), (200, 4.0, 0.0), (400, 16.0, 0.0)];
        assert!((growth_exponent(&v).unwrap() - 2.0).abs() < 1e-9);
    }
}
