//! `monitor query --fleet URL ...` and `monitor timeline --fleet URL
//! --secret ID`: the same queries across every node. Each node's alerts,
//! events and records are read from the fleet's streams into a scratch
//! store of its own (removed after), the local query or timeline runs on
//! it unchanged, and the answers are merged with the node named: a `node`
//! field (json, ocsf: `unmapped.node`), a `NODE` column (table), one
//! section per node (timeline).
use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;

use super::{link::NatsConfig, read::read_all_blocking, records::FleetRecord, FleetTarget};
use crate::{
    query::{QueryArgs, QueryFormat, QueryKind, TimelineArgs, TimelineFormat},
    store::Store,
};

/// `monitor query`, locally or (with `--fleet`) across the fleet.
#[derive(Args, Debug, Default)]
pub struct QueryCmd {
    #[command(flatten)]
    pub args: QueryArgs,
    /// `--fleet URL`: every node's alerts or events (`--node` for one).
    #[command(flatten)]
    pub fleet: FleetTarget,
}

/// `monitor timeline`, locally or across the fleet.
#[derive(Args, Debug)]
pub struct TimelineCmd {
    #[command(flatten)]
    pub args: TimelineArgs,
    #[command(flatten)]
    pub fleet: FleetTarget,
}

/// A node's scratch store, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every node's scratch store (node -> db path), from the streams.
fn node_stores(
    cfg: &NatsConfig,
    only: Option<&str>,
    scratch: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut by_node: BTreeMap<
        String,
        (
            Vec<crate::event::Event>,
            Vec<crate::correlate::alert::Alert>,
        ),
    > = BTreeMap::new();
    for m in read_all_blocking(cfg, super::link::STREAM, "monitor.*.*")? {
        let mut parts = m.subject.split('.');
        let (Some(_), Some(node), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if only.is_some_and(|o| o != node) {
            continue;
        }
        let e = by_node.entry(node.to_string()).or_default();
        match kind {
            // A pack of events, one a line (see `super::pack`).
            "events" => {
                for line in super::pack::unpack(&m.payload) {
                    match serde_json::from_slice(line) {
                        Ok(ev) => e.0.push(ev),
                        Err(err) => {
                            tracing::warn!("fleet: an event of node {node} not read: {err}")
                        }
                    }
                }
            }
            "alerts" => match serde_json::from_slice(&m.payload) {
                Ok(a) => e.1.push(a),
                Err(err) => tracing::warn!("fleet: an alert of node {node} not read: {err}"),
            },
            _ => {}
        }
    }
    let records: Vec<FleetRecord> = read_all_blocking(
        cfg,
        super::link::RECORDS_STREAM,
        super::link::RECORDS_SUBJECT,
    )
    .unwrap_or_default()
    .into_iter()
    .filter_map(|m| serde_json::from_slice(&m.payload).ok())
    .collect();
    std::fs::create_dir_all(scratch)?;
    let mut out = BTreeMap::new();
    for (node, (events, alerts)) in by_node {
        let db = scratch.join(format!("{node}.db"));
        let mut store = Store::open(&db)?;
        store.insert_events(&events)?;
        store.insert_alerts(&alerts)?;
        for r in &records {
            let mine = r.applies_on(&node) || r.from.as_deref() == Some(node.as_str());
            if !mine {
                continue;
            }
            match crate::issuance::parse_record(&r.record.to_string(), Utc::now()) {
                Ok(crate::issuance::Record::Issue(i)) => {
                    store.insert_issuance(&i, "fleet")?;
                }
                Ok(crate::issuance::Record::Revoke { secret_id, at }) => {
                    let at = at
                        .or_else(|| {
                            r.at.as_deref()
                                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                                .map(|t| t.with_timezone(&Utc))
                        })
                        .unwrap_or_else(Utc::now);
                    store.insert_revocation(&secret_id, at)?;
                }
                Err(_) => {}
            }
        }
        out.insert(node, db);
    }
    Ok(out)
}

fn scratch_dir() -> Scratch {
    Scratch {
        dir: std::env::temp_dir().join(format!("monitor-fleet-query-{}", std::process::id())),
    }
}

/// `monitor query --fleet URL ...`.
pub fn run_query(c: QueryCmd) -> Result<()> {
    let cfg = c.fleet.nats().context("--fleet URL")?;
    let mut a = c.args;
    // Checked as the local query checks them, before anything is read.
    crate::query::filter_of(&a, Utc::now())?;
    let scratch = scratch_dir();
    let stores = node_stores(&cfg, c.fleet.node.as_deref(), &scratch.dir)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let format = a.format;
    let limit = a.limit;
    // Every node answers as a local query would (json lines, the newest
    // `limit`), merged by time.
    let mut lines: Vec<(String, String, serde_json::Value)> = Vec::new();
    let mut tables: Vec<(String, String)> = Vec::new();
    for (node, db) in &stores {
        a.db = Some(db.clone());
        let mut buf = Vec::new();
        if format == QueryFormat::Table {
            crate::query::query_to(&a, Utc::now(), &mut buf)?;
            tables.push((node.clone(), String::from_utf8_lossy(&buf).into_owned()));
            continue;
        }
        crate::query::query_to(&a, Utc::now(), &mut buf)?;
        for l in String::from_utf8_lossy(&buf).lines() {
            let mut v: serde_json::Value = serde_json::from_str(l)?;
            let time = v
                .get("time")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .or_else(|| v["metadata"]["original_time"].as_str().map(str::to_string))
                .unwrap_or_default();
            if format == QueryFormat::Ocsf {
                v["unmapped"]["node"] = node.clone().into();
            } else if let Some(o) = v.as_object_mut() {
                o.insert("node".into(), node.clone().into());
            }
            lines.push((time, node.clone(), v));
        }
    }
    if format == QueryFormat::Table {
        write_node_tables(&mut out, &tables)?;
    } else {
        lines.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        if limit > 0 && lines.len() > limit {
            lines.drain(..lines.len() - limit);
        }
        for (_, _, v) in &lines {
            serde_json::to_writer(&mut out, v)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    if stores.is_empty() {
        let what = match a.kind {
            QueryKind::Alerts => "alerts",
            QueryKind::Events => "events",
        };
        eprintln!("monitor: no {what} in the fleet at {}", cfg.url);
    }
    Ok(())
}

/// The nodes' tables as one, with a `NODE` column first.
fn write_node_tables(out: &mut dyn Write, tables: &[(String, String)]) -> Result<()> {
    let w = tables
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut header_done = false;
    for (node, text) in tables {
        let mut lines = text.lines();
        let Some(header) = lines.next() else { continue };
        if !header_done {
            writeln!(out, "{:<w$}  {header}", "NODE")?;
            header_done = true;
        }
        for l in lines {
            writeln!(out, "{node:<w$}  {l}")?;
        }
    }
    Ok(())
}

/// `monitor timeline --fleet URL --secret ID`: the chain on each node that
/// knows the secret.
pub fn run_timeline(c: TimelineCmd) -> Result<()> {
    let cfg = c.fleet.nats().context("--fleet URL")?;
    let scratch = scratch_dir();
    let stores = node_stores(&cfg, c.fleet.node.as_deref(), &scratch.dir)?;
    let mut parts = Vec::new();
    for (node, db) in &stores {
        let store = Store::open_readonly(db)?;
        let t = crate::store::timeline::Timeline::build(&store, &c.args.secret)?;
        if !t.is_empty() {
            parts.push((node.clone(), t));
        }
    }
    if parts.is_empty() {
        bail!(
            "nothing known about secret {:?} on any node of the fleet at {}",
            c.args.secret,
            cfg.url
        );
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match c.args.format {
        TimelineFormat::Text => {
            for (node, t) in &parts {
                writeln!(out, "node {node}:")?;
                out.write_all(t.render_text().as_bytes())?;
            }
        }
        TimelineFormat::Json => {
            let nodes: Vec<serde_json::Value> = parts
                .iter()
                .map(|(node, t)| {
                    let mut v: serde_json::Value =
                        serde_json::from_str(&t.render_json()).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("node".into(), node.clone().into());
                    }
                    v
                })
                .collect();
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"secret_id": c.args.secret, "nodes": nodes}),
            )?;
            out.write_all(b"\n")?;
        }
        TimelineFormat::Dot => {
            for (node, t) in &parts {
                writeln!(out, "// node {node}")?;
                out.write_all(t.render_dot().as_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
