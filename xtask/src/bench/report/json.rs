//! `results.json`: a JSON value written by hand (xtask stays std +
//! anyhow + clap) and the results in it.

use super::*;

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
    let fp = |x: &crate::bench::pipeline::Fp| {
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
        ("graceful_detach_secs", J::n(f.graceful_detach_secs)),
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

pub(super) fn tls_json(x: &crate::bench::tls::TlsBench) -> J {
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

pub(super) fn scale_json(sc: &crate::bench::scale::Scale) -> J {
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
            "alerts_under_exec",
            match &sc.alerts_under_exec {
                Some(x) => J::obj(vec![
                    ("secrets", J::n(x.secrets as f64)),
                    ("alerts", J::n(x.alerts as f64)),
                    ("execs_per_sec", J::n(x.execs_per_sec)),
                    ("requests", J::n(x.requests as f64)),
                    ("p50_ms", J::n(x.p50_ms)),
                    ("worst_ms", J::n(x.worst_ms)),
                ]),
                None => J::Null,
            },
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
