//! `monitor query` and `monitor timeline`: what incident responders ask
//! the store. Both read the database directly (read-only: also while the
//! agent writes, and on a copy from another node).
use std::{
    io::{self, BufWriter, Write},
    path::PathBuf,
};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use crate::{
    correlate::rules::ALL_RULES,
    event::{Dest, Event, EventKind},
    output::ocsf::alert_to_ocsf,
    store::{
        timeline::{clean, Timeline},
        Filter, Kind, Store, StoredAlert, DEFAULT_DB,
    },
    timefmt::parse_time,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum QueryKind {
    #[default]
    Alerts,
    Events,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// Aligned columns with relative times, for people.
    #[default]
    Table,
    /// One JSON object a line (the stored alert or event).
    Json,
    /// One OCSF 1.8.0 Detection Finding a line (alerts only).
    Ocsf,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TimelineFormat {
    /// An indented tree.
    #[default]
    Text,
    /// One JSON object.
    Json,
    /// Graphviz (`| dot -Tsvg > chain.svg`).
    Dot,
}

/// `monitor query`: alerts or events by secret, rule, pid and time.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct QueryArgs {
    /// The database [default: /var/lib/monitor/events.db].
    #[arg(long, value_name = "F")]
    pub db: Option<PathBuf>,
    /// What to list.
    #[arg(long, value_enum, default_value_t = QueryKind::Alerts)]
    pub kind: QueryKind,
    /// Only this secret (alerts about it, events that touched it).
    #[arg(long, value_name = "ID")]
    pub secret: Option<String>,
    /// Only this rule (alerts of it, events behind such alerts).
    #[arg(long, value_name = "R")]
    pub rule: Option<String>,
    /// Only this process (alert actor, event process).
    #[arg(long, value_name = "N")]
    pub pid: Option<u32>,
    /// Only processes in this Kubernetes namespace (alert actor, event
    /// process), as resolved when it happened.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Only processes in this Kubernetes pod (by name).
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,
    /// From this time on: RFC 3339, or a duration ago (10m, 2h, 1d).
    #[arg(long, value_name = "DUR|TIME")]
    pub since: Option<String>,
    /// Up to this time (inclusive): RFC 3339, or a duration ago.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many, the newest (0: all).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
}

impl Default for QueryArgs {
    fn default() -> Self {
        QueryArgs {
            db: None,
            kind: QueryKind::Alerts,
            secret: None,
            rule: None,
            pid: None,
            namespace: None,
            pod: None,
            since: None,
            until: None,
            limit: 100,
            format: QueryFormat::Table,
        }
    }
}

/// `monitor timeline`: the identity-to-secret chain of one secret.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct TimelineArgs {
    /// The secret.
    #[arg(long, value_name = "ID")]
    pub secret: String,
    /// The database [default: /var/lib/monitor/events.db].
    #[arg(long, value_name = "F")]
    pub db: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TimelineFormat::Text)]
    pub format: TimelineFormat,
}

fn db_path(db: &Option<PathBuf>) -> PathBuf {
    db.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
}

/// The store filter of a query (`limit` one more than asked, to tell
/// whether more exist).
pub fn filter_of(a: &QueryArgs, now: DateTime<Utc>) -> Result<Filter> {
    if let Some(r) = &a.rule {
        if crate::correlate::rules::Rule::from_name(r).is_none() {
            let names: Vec<&str> = ALL_RULES
                .iter()
                .chain(crate::correlate::rules::MONITOR_RULES.iter())
                .map(|x| x.name())
                .collect();
            bail!("unknown rule {r:?}; valid rules: {}", names.join(", "));
        }
    }
    let since = a
        .since
        .as_deref()
        .map(|s| parse_time(s, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let until = a
        .until
        .as_deref()
        .map(|s| parse_time(s, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--until: {e}"))?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            bail!("--since ({s}) is after --until ({u})");
        }
    }
    if a.format == QueryFormat::Ocsf && a.kind == QueryKind::Events {
        bail!(
            "--format ocsf is for alerts (OCSF Detection Findings); \
             use --format json or table for events"
        );
    }
    Ok(Filter {
        kind: match a.kind {
            QueryKind::Alerts => Kind::Alerts,
            QueryKind::Events => Kind::Events,
        },
        secret: a.secret.clone(),
        rule: a.rule.clone(),
        pid: a.pid,
        namespace: a.namespace.clone(),
        pod: a.pod.clone(),
        since,
        until,
        limit: (a.limit > 0).then(|| a.limit.saturating_add(1)),
        after_id: None,
    })
}

/// What a query printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOutcome {
    pub shown: usize,
    /// More matches exist beyond `--limit`.
    pub more: bool,
}

/// Runs a query, writing to `out`; `now` anchors relative times.
pub fn query_to(a: &QueryArgs, now: DateTime<Utc>, out: &mut dyn Write) -> Result<QueryOutcome> {
    let f = filter_of(a, now)?;
    let store = Store::open_readonly(db_path(&a.db))?;
    let cap = if a.limit > 0 { a.limit } else { usize::MAX };
    match a.kind {
        QueryKind::Alerts => {
            let mut rows = store.query_alert_rows(&f)?;
            let more = rows.len() > cap;
            if more {
                rows.remove(0); // the oldest of limit + 1
            }
            match a.format {
                QueryFormat::Table => write_alert_table(out, &rows, now)?,
                QueryFormat::Json => {
                    for r in &rows {
                        serde_json::to_writer(&mut *out, &r.alert)?;
                        out.write_all(b"\n")?;
                    }
                }
                QueryFormat::Ocsf => {
                    for r in &rows {
                        let v = alert_to_ocsf(&r.alert, env!("CARGO_PKG_VERSION"));
                        serde_json::to_writer(&mut *out, &v)?;
                        out.write_all(b"\n")?;
                    }
                }
            }
            Ok(QueryOutcome {
                shown: rows.len(),
                more,
            })
        }
        QueryKind::Events => {
            let mut rows = store.query_events(&f)?;
            let more = rows.len() > cap;
            if more {
                rows.remove(0);
            }
            match a.format {
                QueryFormat::Table => write_event_table(out, &rows, now)?,
                QueryFormat::Json => {
                    for e in &rows {
                        serde_json::to_writer(&mut *out, e)?;
                        out.write_all(b"\n")?;
                    }
                }
                QueryFormat::Ocsf => unreachable!("refused by filter_of"),
            }
            Ok(QueryOutcome {
                shown: rows.len(),
                more,
            })
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == io::ErrorKind::BrokenPipe)
    })
}

/// `monitor query`: prints to stdout; notes (nothing found, more beyond
/// the limit) go to stderr.
pub fn run_query(a: QueryArgs) -> Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let res = query_to(&a, Utc::now(), &mut out).and_then(|o| {
        out.flush()?;
        Ok(o)
    });
    let what = match a.kind {
        QueryKind::Alerts => "alerts",
        QueryKind::Events => "events",
    };
    match res {
        Ok(o) => {
            if o.shown == 0 && a.format == QueryFormat::Table {
                eprintln!(
                    "monitor: no matching {what} in {}",
                    db_path(&a.db).display()
                );
            }
            if o.more {
                eprintln!(
                    "monitor: showing the newest {} matching {what}; more exist \
                     (--limit N, --limit 0 for all, or narrow with --since/--until)",
                    o.shown
                );
            }
            Ok(())
        }
        Err(e) if is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renders a secret's timeline into `out`.
pub fn timeline_to(a: &TimelineArgs, now: DateTime<Utc>, out: &mut dyn Write) -> Result<()> {
    let db = db_path(&a.db);
    let store = Store::open_readonly(&db)?;
    let t = Timeline::build_at(&store, &a.secret, now)
        .with_context(|| format!("timeline of {}", a.secret))?;
    if t.is_empty() {
        bail!(
            "nothing known about secret {:?} in {} (no issuance, event or alert)",
            a.secret,
            db.display()
        );
    }
    match a.format {
        TimelineFormat::Text => out.write_all(t.render_text().as_bytes())?,
        TimelineFormat::Json => {
            out.write_all(t.render_json().as_bytes())?;
            out.write_all(b"\n")?;
        }
        TimelineFormat::Dot => out.write_all(t.render_dot().as_bytes())?,
    }
    Ok(())
}

/// `monitor timeline`: prints to stdout.
pub fn run_timeline(a: TimelineArgs) -> Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match timeline_to(&a, Utc::now(), &mut out).and_then(|()| Ok(out.flush()?)) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        r => r,
    }
}

/// `3m ago` (or `in 3m` for a time ahead of this clock).
pub fn relative(t: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(t) else {
        return t.to_string();
    };
    relative_to(t.with_timezone(&Utc), now)
}

/// [`relative`] of a time already known.
pub fn relative_to(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now.signed_duration_since(t);
    let (secs, future) = match d.num_seconds() {
        s if s < 0 => (-s, true),
        s => (s, false),
    };
    let amount = match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// Columns padded to their widest cell (the last one not padded), two
/// spaces apart. Cells are cleaned of control characters.
fn write_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn write_alert_table(out: &mut dyn Write, rows: &[StoredAlert], now: DateTime<Utc>) -> Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let a = &r.alert;
            let ev = &a.evidence;
            let evidence = ev
                .path
                .clone()
                .or_else(|| ev.dest.clone())
                .or_else(|| ev.target_pid.map(|p| format!("pid {p}")))
                .unwrap_or_default();
            let rule = match a.count {
                Some(n) => format!("{} (x{})", a.rule, n + 1),
                None => a.rule.to_string(),
            };
            vec![
                relative_to(a.time.to_datetime(), now),
                rule,
                a.severity.to_string(),
                a.secret_id.clone(),
                a.actor.pid.to_string(),
                a.actor.comm.clone(),
                evidence,
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "TIME", "RULE", "SEVERITY", "SECRET", "PID", "COMM", "EVIDENCE",
        ],
        &cells,
    )?;
    Ok(())
}

/// What an event acted on: its path, destination, copy target or program.
fn event_target(e: &Event) -> String {
    let d = &e.detail;
    if e.kind == EventKind::Copy {
        let to = d
            .dest
            .as_ref()
            .map(Dest::to_string)
            .or_else(|| d.out_path.clone())
            .unwrap_or_default();
        return format!("{} -> {to}", d.path.as_deref().unwrap_or("?"));
    }
    if e.kind == EventKind::ProcAccess {
        return format!(
            "pid {} {}",
            d.target_pid.map(|p| p.to_string()).unwrap_or_default(),
            d.access.as_deref().unwrap_or_default()
        );
    }
    d.dest
        .as_ref()
        .map(Dest::to_string)
        .or_else(|| d.path.clone())
        .or_else(|| d.filename.clone())
        .unwrap_or_default()
}

fn write_event_table(out: &mut dyn Write, rows: &[Event], now: DateTime<Utc>) -> Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|e| {
            let secrets = e
                .detail
                .secrets
                .as_ref()
                .map(|s| {
                    s.iter()
                        .map(|m| format!("{}({})", m.secret_id, m.encoding))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                relative_to(e.time.to_datetime(), now),
                e.kind.to_string(),
                e.syscall.to_string(),
                e.process.pid.to_string(),
                e.process.comm.clone(),
                event_target(e),
                e.detail.bytes.map(|b| b.to_string()).unwrap_or_default(),
                secrets,
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "TIME",
            "KIND",
            "SYSCALL",
            "PID",
            "COMM",
            "PATH/DEST",
            "BYTES",
            "SECRETS",
        ],
        &cells,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{correlate::alert::Alert, store::testutil::*};
    use clap::Parser;

    /// A store holding the scenario, and a query on it.
    struct Fixture {
        dir: TempDir,
        store: Store,
    }

    fn fixture() -> Fixture {
        let dir = TempDir::new("query");
        let (store, _) = scenario_store(&dir.db());
        Fixture { dir, store }
    }

    impl Fixture {
        fn args(&self) -> QueryArgs {
            QueryArgs {
                db: Some(self.dir.db()),
                ..Default::default()
            }
        }

        fn events(&self, f: Filter) -> Vec<u64> {
            self.store
                .query_events(&f)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        }

        fn alert_rules(&self, f: Filter) -> Vec<String> {
            self.store
                .query_alerts(&f)
                .unwrap()
                .into_iter()
                .map(|a| a.rule.to_string())
                .collect()
        }

        /// Runs the query through the command's own path; output lines.
        fn run(&self, a: &QueryArgs, now: DateTime<Utc>) -> Result<(Vec<String>, QueryOutcome)> {
            let mut out = Vec::new();
            let o = query_to(a, now, &mut out)?;
            let text = String::from_utf8(out).unwrap();
            Ok((text.lines().map(str::to_string).collect(), o))
        }
    }

    fn later() -> DateTime<Utc> {
        t0() + chrono::Duration::hours(1)
    }

    #[test]
    fn filter_by_secret() {
        let fx = fixture();
        let f = |s: &str| Filter {
            secret: Some(s.into()),
            ..Default::default()
        };
        assert_eq!(fx.events(f("other")), [60]);
        assert_eq!(fx.events(f("db-prod")), [10, 11, 20, 21, 30, 40, 50]);
        assert_eq!(fx.alert_rules(f("db-prod")).len(), 4);
        assert!(fx.alert_rules(f("other")).is_empty());
        let (lines, o) = fx
            .run(
                &QueryArgs {
                    secret: Some("other".into()),
                    kind: QueryKind::Events,
                    format: QueryFormat::Json,
                    ..fx.args()
                },
                later(),
            )
            .unwrap();
        assert_eq!(
            o,
            QueryOutcome {
                shown: 1,
                more: false
            }
        );
        let e: Event = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(e.id, 60);
    }

    #[test]
    fn filter_by_rule() {
        let fx = fixture();
        let f = Filter {
            rule: Some("secret.copy.file".into()),
            ..Default::default()
        };
        assert_eq!(fx.alert_rules(f.clone()), ["secret.copy.file"]);
        // Events: those behind alerts of the rule.
        assert_eq!(fx.events(f), [21]);
        let e = fx
            .run(
                &QueryArgs {
                    rule: Some("secret.copy".into()),
                    ..fx.args()
                },
                later(),
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("unknown rule \"secret.copy\"; valid rules: secret.read.foreign, "),
            "{e}"
        );
        for r in ALL_RULES {
            assert!(e.contains(r.name()));
        }
    }

    #[test]
    fn filter_by_pid() {
        let fx = fixture();
        let f = Filter {
            pid: Some(5151),
            ..Default::default()
        };
        assert_eq!(
            fx.alert_rules(f.clone()),
            ["secret.read.foreign", "secret.copy.file"]
        );
        assert_eq!(fx.events(f), [20, 21]);
        assert_eq!(
            fx.events(Filter {
                pid: Some(4242),
                ..Default::default()
            }),
            [10, 50, 60]
        );
    }

    #[test]
    fn filter_by_since_and_until() {
        let fx = fixture();
        let secs = |s| Some(t0() + chrono::Duration::seconds(s));
        assert_eq!(
            fx.events(Filter {
                since: secs(100),
                ..Default::default()
            }),
            [30, 40, 50, 60]
        );
        // Until is inclusive: 10:01:00.000 is in, 10:01:00.100 is not.
        assert_eq!(
            fx.events(Filter {
                until: secs(60),
                ..Default::default()
            }),
            [10, 11, 20]
        );
        assert_eq!(
            fx.alert_rules(Filter {
                since: secs(60),
                until: secs(150),
                ..Default::default()
            }),
            [
                "secret.read.foreign",
                "secret.copy.file",
                "secret.replay.foreign"
            ]
        );
        // The command: a duration ago, and RFC 3339.
        let now = t0() + chrono::Duration::seconds(130);
        let (lines, _) = fx
            .run(
                &QueryArgs {
                    kind: QueryKind::Events,
                    since: Some("30s".into()),
                    until: Some("2026-11-22T10:03:00Z".into()),
                    format: QueryFormat::Json,
                    ..fx.args()
                },
                now,
            )
            .unwrap();
        let ids: Vec<u64> = lines
            .iter()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().id)
            .collect();
        assert_eq!(ids, [30, 40]);
        let bad = |since: &str, until: &str| {
            fx.run(
                &QueryArgs {
                    since: Some(since.into()),
                    until: Some(until.into()),
                    ..fx.args()
                },
                now,
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("yesterday", "1m").starts_with("--since: invalid time \"yesterday\""));
        assert!(bad("1m", "soon").starts_with("--until: invalid time \"soon\""));
        assert!(bad("1m", "1h").contains("is after --until"));
    }

    #[test]
    fn limit_keeps_the_newest() {
        let fx = fixture();
        assert_eq!(
            fx.events(Filter {
                limit: Some(2),
                ..Default::default()
            }),
            [50, 60]
        );
        let q = |limit| QueryArgs {
            kind: QueryKind::Events,
            limit,
            format: QueryFormat::Json,
            ..fx.args()
        };
        let (lines, o) = fx.run(&q(3), later()).unwrap();
        assert_eq!(
            o,
            QueryOutcome {
                shown: 3,
                more: true
            }
        );
        let ids: Vec<u64> = lines
            .iter()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().id)
            .collect();
        assert_eq!(ids, [40, 50, 60]);
        let (lines, o) = fx.run(&q(0), later()).unwrap();
        assert_eq!((lines.len(), o.more), (8, false));
        let (_, o) = fx.run(&q(8), later()).unwrap();
        assert_eq!(
            o,
            QueryOutcome {
                shown: 8,
                more: false
            }
        );
    }

    #[test]
    fn pagination_cursor_walks_forward() {
        let fx = fixture();
        let page = |after| {
            fx.events(Filter {
                after_id: Some(after),
                limit: Some(3),
                ..Default::default()
            })
        };
        assert_eq!(page(0), [10, 11, 20]);
        assert_eq!(page(20), [21, 30, 40]);
        assert_eq!(page(40), [50, 60]);
        assert!(page(60).is_empty());
        // Alerts: the cursor is the row id; combined with a filter.
        let rows = fx
            .store
            .query_alert_rows(&Filter {
                after_id: Some(1),
                limit: Some(2),
                secret: Some("db-prod".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(rows[0].alert.rule, "secret.copy.file");
    }

    #[test]
    fn alert_table_is_aligned_with_relative_times() {
        let fx = fixture();
        let (lines, _) = fx.run(&fx.args(), later()).unwrap();
        println!("{}", lines.join("\n"));
        assert_eq!(lines.len(), 5);
        let header = &lines[0];
        for col in [
            "TIME", "RULE", "SEVERITY", "SECRET", "PID", "COMM", "EVIDENCE",
        ] {
            assert!(header.contains(col), "{header}");
        }
        // Every column starts at the same offset on every line.
        for col in ["RULE", "SEVERITY", "SECRET", "PID", "COMM", "EVIDENCE"] {
            let at = header.find(col).unwrap();
            for l in &lines[1..] {
                assert_eq!(&l[at - 2..at], "  ", "{col} misaligned in {l:?}");
                assert_ne!(&l[at..at + 1], " ", "{col} misaligned in {l:?}");
            }
        }
        assert!(lines[1].starts_with("59m ago"), "{}", lines[1]);
        assert!(
            lines[1].contains("secret.read.foreign") && lines[1].ends_with("/vault/secrets/db")
        );
        assert!(lines[3].contains("critical") && lines[3].ends_with("203.0.113.9:443"));
        assert!(lines[4].contains("gdb") && lines[4].ends_with("/proc/4242/environ"));
    }

    #[test]
    fn event_table_has_its_columns() {
        let fx = fixture();
        let (lines, _) = fx
            .run(
                &QueryArgs {
                    kind: QueryKind::Events,
                    secret: Some("db-prod".into()),
                    ..fx.args()
                },
                t0() + chrono::Duration::seconds(200),
            )
            .unwrap();
        println!("{}", lines.join("\n"));
        assert!(lines[0].starts_with("TIME"));
        for col in [
            "KIND",
            "SYSCALL",
            "PID",
            "COMM",
            "PATH/DEST",
            "BYTES",
            "SECRETS",
        ] {
            assert!(lines[0].contains(col));
        }
        assert_eq!(lines.len(), 8);
        assert!(lines[1].starts_with("3m ago") && lines[1].ends_with("db-prod(delivery)"));
        let send = lines.iter().find(|l| l.contains("sendto")).unwrap();
        assert!(
            send.contains("203.0.113.9:443")
                && send.contains("120")
                && send.ends_with("db-prod(base64)")
        );
        let scrape = lines.iter().find(|l| l.contains("proc_access")).unwrap();
        assert!(scrape.contains("pid 4242 environ"), "{scrape}");
        assert!(lines.last().unwrap().starts_with("0s ago"));
    }

    #[test]
    fn json_and_ocsf_lines() {
        let fx = fixture();
        let (lines, _) = fx
            .run(
                &QueryArgs {
                    format: QueryFormat::Json,
                    ..fx.args()
                },
                later(),
            )
            .unwrap();
        let alerts: Vec<Alert> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(alerts, scenario().alerts);
        let (lines, _) = fx
            .run(
                &QueryArgs {
                    format: QueryFormat::Ocsf,
                    rule: Some("secret.replay.foreign".into()),
                    ..fx.args()
                },
                later(),
            )
            .unwrap();
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["severity_id"], 5);
        assert_eq!(v["evidences"][0]["dst_endpoint"]["ip"], "203.0.113.9");
        let e = fx
            .run(
                &QueryArgs {
                    format: QueryFormat::Ocsf,
                    kind: QueryKind::Events,
                    ..fx.args()
                },
                later(),
            )
            .unwrap_err();
        assert!(
            e.to_string().starts_with("--format ocsf is for alerts"),
            "{e}"
        );
    }

    #[test]
    fn missing_database_is_one_clear_line() {
        let dir = TempDir::new("query-missing");
        let db = dir.path().join("x/events.db");
        let a = QueryArgs {
            db: Some(db.clone()),
            ..Default::default()
        };
        let e = query_to(&a, Utc::now(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "no database at {} (is the agent writing there? see --db)",
                db.display()
            )
        );
        let t = TimelineArgs {
            secret: "db-prod".into(),
            db: Some(db.clone()),
            format: TimelineFormat::Text,
        };
        let e = timeline_to(&t, Utc::now(), &mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").starts_with("no database at"));
    }

    #[test]
    fn timeline_command_formats() {
        let fx = fixture();
        let t = |format| TimelineArgs {
            secret: "db-prod".into(),
            db: Some(fx.dir.db()),
            format,
        };
        let render = |format| {
            let mut out = Vec::new();
            timeline_to(&t(format), later(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(render(TimelineFormat::Text).starts_with("secret db-prod\n"));
        let j = render(TimelineFormat::Json);
        assert_eq!(j.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["secret_id"], "db-prod");
        assert!(render(TimelineFormat::Dot).starts_with("digraph "));
        let e = timeline_to(
            &TimelineArgs {
                secret: "nope".into(),
                ..t(TimelineFormat::Text)
            },
            later(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("nothing known about secret \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn relative_times() {
        let now = t0();
        let ago = |s: i64| rfc(now - chrono::Duration::seconds(s));
        fn rfc(t: DateTime<Utc>) -> String {
            crate::timefmt::rfc3339_micros(t)
        }
        assert_eq!(relative(&ago(0), now), "0s ago");
        assert_eq!(relative(&ago(59), now), "59s ago");
        assert_eq!(relative(&ago(180), now), "3m ago");
        assert_eq!(relative(&ago(7_200), now), "2h ago");
        assert_eq!(relative(&ago(3 * 86_400), now), "3d ago");
        assert_eq!(relative(&ago(-120), now), "in 2m");
        assert_eq!(relative("garbage", now), "garbage");
    }

    /// The flags and defaults of the contract.
    #[test]
    fn flags_per_the_spec() {
        #[derive(Parser)]
        struct Q {
            #[command(flatten)]
            a: QueryArgs,
        }
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: TimelineArgs,
        }
        let q = Q::try_parse_from(["query"]).unwrap().a;
        assert_eq!(q, QueryArgs::default());
        assert_eq!(
            (q.kind, q.limit, q.format),
            (QueryKind::Alerts, 100, QueryFormat::Table)
        );
        assert_eq!(db_path(&q.db), PathBuf::from("/var/lib/monitor/events.db"));
        let q = Q::try_parse_from([
            "query",
            "--db",
            "/x.db",
            "--kind",
            "events",
            "--secret",
            "s",
            "--rule",
            "secret.copy.file",
            "--pid",
            "7",
            "--since",
            "10m",
            "--until",
            "2026-11-22T10:00:00Z",
            "--limit",
            "5",
            "--format",
            "ocsf",
        ])
        .unwrap()
        .a;
        assert_eq!(q.db, Some(PathBuf::from("/x.db")));
        assert_eq!(
            (q.kind, q.pid, q.limit, q.format),
            (QueryKind::Events, Some(7), 5, QueryFormat::Ocsf)
        );
        for f in ["table", "json"] {
            assert!(Q::try_parse_from(["query", "--format", f]).is_ok());
        }
        assert!(Q::try_parse_from(["query", "--format", "xml"]).is_err());
        assert!(Q::try_parse_from(["query", "--kind", "both"]).is_err());
        assert!(
            T::try_parse_from(["timeline"]).is_err(),
            "--secret is required"
        );
        let t = T::try_parse_from(["timeline", "--secret", "db-prod"])
            .unwrap()
            .a;
        assert_eq!((t.format, t.db), (TimelineFormat::Text, None));
        for f in ["text", "json", "dot"] {
            assert!(T::try_parse_from(["timeline", "--secret", "s", "--format", f]).is_ok());
        }
    }
}
