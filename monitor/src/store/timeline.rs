//! The identity-to-secret chain of one secret, rebuilt from the store:
//! issuance(s) (source, holder, TTL/expiry, allowed destinations, identity
//! metadata), revocations and expiry, delivery (the holder's first read of
//! the delivery file), every later read, exposure in an environment or on a
//! command line, copies, sends, log writes, scrapes of the holder, and the
//! alerts, in time order, each tied to its process (pid, comm, exe).
//!
//! Three renderings: [`Timeline::render_text`] (an indented tree for a
//! terminal), [`Timeline::render_json`] (one JSON object) and
//! [`Timeline::render_dot`] (Graphviz: `dot -Tsvg`).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
};

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::Store;
use crate::{
    event::{Dest, Event, EventKind, FdKind, Process},
    timefmt::rfc3339_micros,
};

/// Most events a timeline loads (the oldest first); beyond it the
/// timeline says it is truncated.
pub const MAX_EVENTS: usize = 20_000;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The secret was issued (an issuance record).
    Issuance,
    /// The secret was revoked.
    Revocation,
    /// The secret's TTL ran out.
    Expiry,
    /// The holder's first read of the delivery file.
    Delivery,
    /// Any other read (or map) of the delivery file.
    Read,
    /// An exec'd process received the secret in its environment.
    EnvExposure,
    /// An exec'd process had the secret on its command line.
    ArgvExposure,
    /// The secret's bytes went into another file.
    Copy,
    /// The secret's bytes went to stdout/stderr, a terminal, a pipe or a
    /// log socket.
    Log,
    /// The secret's bytes went to a network destination.
    Send,
    /// A connection by a holder (behind an alert).
    Connect,
    /// Another process read the holder's environment or memory.
    Scrape,
    /// Any other event tied to the secret.
    Event,
    /// An alert.
    Alert,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Issuance => "issuance",
            Action::Revocation => "revocation",
            Action::Expiry => "expiry",
            Action::Delivery => "delivery",
            Action::Read => "read",
            Action::EnvExposure => "env_exposure",
            Action::ArgvExposure => "argv_exposure",
            Action::Copy => "copy",
            Action::Log => "log",
            Action::Send => "send",
            Action::Connect => "connect",
            Action::Scrape => "scrape",
            Action::Event => "event",
            Action::Alert => "alert",
        }
    }

    /// Entries about the secret itself, not a process.
    fn is_lifecycle(self) -> bool {
        matches!(self, Action::Issuance | Action::Revocation | Action::Expiry)
    }
}

/// An issuance as the timeline shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IssuanceInfo {
    /// Who issued it (`vault`, `k8s`...), from the record.
    pub issuer: Option<String>,
    /// Where the record came from (an issuance file, the API, a Vault
    /// audit log, discovery).
    pub record_source: String,
    pub issued_at: Option<String>,
    pub expires_at: Option<String>,
    pub ttl_seconds: Option<i64>,
    pub holder: Value,
    pub delivery: Value,
    /// `None`: not restricted.
    pub allowed_destinations: Option<Vec<String>>,
    pub lease_id: Option<String>,
    pub identity: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl IssuanceInfo {
    fn from_stored(s: &super::StoredIssuance) -> Self {
        let j = &s.json;
        let str_of = |k: &str| j.get(k).and_then(Value::as_str).map(str::to_string);
        let map_of = |k: &str| -> BTreeMap<String, String> {
            j.get(k)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let issued_at = str_of("issued_at").or_else(|| Some(s.time.clone()));
        let expires_at = str_of("expires_at");
        let ttl_seconds = match (&issued_at, &expires_at) {
            (Some(i), Some(e)) => match (parse(i), parse(e)) {
                (Some(i), Some(e)) => Some((e - i).num_seconds()),
                _ => None,
            },
            _ => None,
        };
        IssuanceInfo {
            issuer: str_of("source"),
            record_source: s.source.clone(),
            issued_at,
            expires_at,
            ttl_seconds,
            holder: j.get("holder").cloned().unwrap_or(Value::Null),
            delivery: j.get("delivery").cloned().unwrap_or(Value::Null),
            allowed_destinations: j.get("allowed_destinations").and_then(Value::as_array).map(
                |a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                },
            ),
            lease_id: str_of("lease_id"),
            identity: map_of("identity"),
            labels: map_of("labels"),
        }
    }

    /// `pid 4242, cgroup /x`.
    fn holder_text(&self) -> String {
        match self.holder.as_object() {
            Some(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k} {s}"),
                    v => format!("{k} {v}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            _ => "unknown".into(),
        }
    }

    /// Delivery files (for graph nodes).
    fn files(&self) -> Vec<String> {
        self.delivery
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.get("file").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `file /vault/secrets/db, env DB_PASSWORD`.
    fn delivery_text(&self) -> String {
        self.delivery
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_object())
                    .flat_map(|m| m.iter())
                    .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

/// An alert as the timeline shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertInfo {
    /// The alert's row id in the store.
    pub id: u64,
    pub rule: String,
    pub severity: String,
    pub summary: String,
    pub event_ids: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// One step of the chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// 1-based position in time order.
    pub seq: usize,
    pub time: String,
    #[serde(skip)]
    pub time_ns: i64,
    pub action: Action,
    /// The process behind the entry ([`Process::actor`]; an alert's
    /// actor as the alert names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// The file read, or written into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Where the bytes were sent (`IP:PORT`) or the log sink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// The holder whose environment/memory was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// How the secret's bytes were found (`raw`, `base64`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
    /// For events: the alerts they are evidence of (row ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alert_ids: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuance: Option<IssuanceInfo>,
    /// One line for people.
    pub summary: String,
}

impl Entry {
    fn new(time: String, action: Action) -> Self {
        let parsed = parse(&time);
        let time_ns = parsed.and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0);
        // One format for every entry (issuance records may say
        // "2026-11-22T10:00:00Z").
        let time = parsed.map(rfc3339_micros).unwrap_or(time);
        Entry {
            seq: 0,
            time,
            time_ns,
            action,
            process: None,
            path: None,
            dest: None,
            target_pid: None,
            access: None,
            encoding: None,
            bytes: None,
            syscall: None,
            event_id: None,
            alert_ids: Vec::new(),
            alert: None,
            issuance: None,
            summary: String::new(),
        }
    }

    fn rank(&self) -> u8 {
        match self.action {
            Action::Issuance => 0,
            Action::Revocation | Action::Expiry => 1,
            Action::Alert => 3,
            _ => 2,
        }
    }
}

/// The chain of one secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    pub secret_id: String,
    /// In time order (issuance first at equal times, an alert after its
    /// event).
    pub entries: Vec<Entry>,
    /// More than [`MAX_EVENTS`] events: only the oldest are shown.
    pub truncated: bool,
}

fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Control characters (a path may hold any byte) as visible escapes, so
/// nothing from the kernel can drive the terminal.
pub(crate) fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Is `dest` an inet address (not `unix:`)?
/// Where a write of the secret's bytes went.
fn sink_of(
    fd: Option<i32>,
    kind: Option<FdKind>,
    path: Option<&str>,
    dest: Option<&Dest>,
) -> (Action, Option<String>) {
    match (kind, dest) {
        (_, Some(d @ Dest::Inet(_))) => (Action::Send, Some(d.to_string())),
        (Some(FdKind::Socket), Some(d)) => (Action::Log, Some(d.to_string())),
        (Some(FdKind::File), _) if path.is_some() => (Action::Copy, None),
        _ => {
            let sink = match (fd, kind, path) {
                (Some(1), _, _) => "stdout".to_string(),
                (Some(2), _, _) => "stderr".to_string(),
                (_, _, Some(p)) => p.to_string(),
                (_, Some(k), _) => k.to_string(),
                _ => "?".to_string(),
            };
            (Action::Log, Some(sink))
        }
    }
}

impl Timeline {
    /// Rebuilds the chain of `secret_id` from the store.
    pub fn build(store: &Store, secret_id: &str) -> Result<Timeline> {
        Self::build_at(store, secret_id, Utc::now())
    }

    /// As [`Timeline::build`], with expiries up to `now` shown.
    pub fn build_at(store: &Store, secret_id: &str, now: DateTime<Utc>) -> Result<Timeline> {
        let mut entries: Vec<Entry> = Vec::new();
        for s in store.issuances(secret_id)? {
            let info = IssuanceInfo::from_stored(&s);
            let mut e = Entry::new(
                info.issued_at.clone().unwrap_or_else(|| s.time.clone()),
                Action::Issuance,
            );
            e.summary = format!(
                "issued{} to {}",
                info.issuer
                    .as_deref()
                    .map(|i| format!(" by {i}"))
                    .unwrap_or_default(),
                info.holder_text()
            );
            if let Some(x) = info
                .expires_at
                .as_deref()
                .filter(|x| parse(x).is_some_and(|t| t <= now))
            {
                let mut ex = Entry::new(x.to_string(), Action::Expiry);
                ex.summary = "expired".into();
                entries.push(ex);
            }
            e.issuance = Some(info);
            entries.push(e);
        }
        for r in store.revocations(secret_id)? {
            let mut e = Entry::new(r.time, Action::Revocation);
            e.summary = "revoked".into();
            entries.push(e);
        }
        let alerts = store.secret_alerts(secret_id)?;
        // Events behind alerts, and reads that were foreign (not delivery).
        let mut alerts_of: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut foreign_reads: HashSet<u64> = HashSet::new();
        for a in &alerts {
            for id in &a.alert.event_ids {
                alerts_of.entry(*id).or_default().push(a.id);
                if a.alert.rule == crate::correlate::rules::Rule::ReadForeign.name() {
                    foreign_reads.insert(*id);
                }
            }
        }
        let events = store.secret_events(secret_id, MAX_EVENTS + 1)?;
        let truncated = events.len() > MAX_EVENTS;
        let mut delivered = false;
        for (ev, encs) in events.into_iter().take(MAX_EVENTS) {
            let mut e = event_entry(&ev, &encs, secret_id, &mut delivered, &foreign_reads);
            e.alert_ids = alerts_of.get(&ev.id).cloned().unwrap_or_default();
            entries.push(e);
        }
        for a in alerts {
            let al = &a.alert;
            let mut e = Entry::new(al.time.to_string(), Action::Alert);
            e.process = Some(al.actor.clone());
            e.path = al.evidence.path.clone();
            e.dest = al.evidence.dest.clone();
            e.target_pid = al.evidence.target_pid;
            e.encoding = al.evidence.encoding.clone();
            e.bytes = al.evidence.bytes;
            e.syscall = al.evidence.syscall.clone();
            e.summary = format!("{} [{}]: {}", al.rule, al.severity, al.summary);
            e.alert = Some(AlertInfo {
                id: a.id,
                rule: al.rule.to_string(),
                severity: al.severity.to_string(),
                summary: al.summary.clone(),
                event_ids: al.event_ids.clone(),
                count: al.count,
            });
            entries.push(e);
        }
        entries.sort_by(|a, b| {
            (
                a.time_ns,
                a.rank(),
                a.event_id,
                a.alert.as_ref().map(|x| x.id),
            )
                .cmp(&(
                    b.time_ns,
                    b.rank(),
                    b.event_id,
                    b.alert.as_ref().map(|x| x.id),
                ))
        });
        for (i, e) in entries.iter_mut().enumerate() {
            e.seq = i + 1;
        }
        Ok(Timeline {
            secret_id: secret_id.to_string(),
            entries,
            truncated,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Processes in order of their first entry.
    pub fn processes(&self) -> Vec<&Process> {
        let mut seen = HashSet::new();
        self.entries
            .iter()
            .filter_map(|e| e.process.as_ref())
            .filter(|p| seen.insert(p.pid))
            .collect()
    }

    /// One JSON object.
    pub fn render_json(&self) -> String {
        serde_json::to_string(self).expect("a timeline serializes")
    }

    /// An indented tree: the secret's issuance(s), revocation and expiry at
    /// the top, then each process (in order of its first action) with its
    /// actions; alerts are marked `!!`. `#N` is the position in time order
    /// across processes.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "secret {}", clean(&self.secret_id));
        for e in self.entries.iter().filter(|e| e.action.is_lifecycle()) {
            let _ = writeln!(
                out,
                "   #{:<4} {}  {}",
                e.seq,
                clean(&e.time),
                clean(&e.summary)
            );
            if let Some(i) = &e.issuance {
                let mut facts: Vec<String> = vec![format!("record from {}", i.record_source)];
                facts.push(format!("delivery: {}", i.delivery_text()));
                match (i.ttl_seconds, &i.expires_at) {
                    (Some(t), Some(x)) => facts.push(format!("ttl {t}s (expires {x})")),
                    (None, Some(x)) => facts.push(format!("expires {x}")),
                    _ => facts.push("no expiry".into()),
                }
                facts.push(match &i.allowed_destinations {
                    Some(d) if d.is_empty() => "allowed destinations: none".into(),
                    Some(d) => format!("allowed destinations: {}", d.join(", ")),
                    None => "allowed destinations: not restricted".into(),
                });
                if let Some(l) = &i.lease_id {
                    facts.push(format!("lease {l}"));
                }
                for (k, v) in &i.identity {
                    facts.push(format!("{k}: {v}"));
                }
                if !i.labels.is_empty() {
                    let l: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    facts.push(format!("labels: {}", l.join(", ")));
                }
                for f in facts {
                    let _ = writeln!(out, "           {}", clean(&f));
                }
            }
        }
        for p in self.processes() {
            let _ = writeln!(out, "   {}", clean(&process_line(p)));
            for e in self
                .entries
                .iter()
                .filter(|e| e.process.as_ref().is_some_and(|q| q.pid == p.pid))
            {
                let mark = if e.action == Action::Alert {
                    "!!"
                } else {
                    "  "
                };
                let _ = writeln!(
                    out,
                    "   {mark}  #{:<4} {}  {:<13} {}",
                    e.seq,
                    clean(&e.time),
                    e.action.as_str(),
                    clean(&e.summary)
                );
            }
        }
        if self.truncated {
            let _ = writeln!(
                out,
                "   (truncated: only the oldest {MAX_EVENTS} events are shown)"
            );
        }
        out
    }

    /// Graphviz: the holder identity and the secret, delivery files,
    /// processes, files written and destinations as nodes; delivery, reads,
    /// exposures, copies, sends, log writes and scrapes as edges labelled
    /// with their order and time (repeats of one edge are counted); alerts
    /// as red nodes tied to their process, and the edges behind alerts in
    /// red.
    pub fn render_dot(&self) -> String {
        let mut g = Dot::default();
        let secret = "secret".to_string();
        let mut secret_label = vec![format!("secret {}", self.secret_id)];
        let mut holder_n = 0;
        for e in self.entries.iter().filter(|e| e.action.is_lifecycle()) {
            match (&e.action, &e.issuance) {
                (Action::Issuance, Some(i)) => {
                    holder_n += 1;
                    let id = format!("holder:{holder_n}");
                    let mut label = vec![format!("holder: {}", i.holder_text())];
                    if let Some(iss) = &i.issuer {
                        label.push(format!("issuer: {iss}"));
                    }
                    for (k, v) in &i.identity {
                        label.push(format!("{k}: {v}"));
                    }
                    if let Some(t) = i.ttl_seconds {
                        label.push(format!("ttl {t}s"));
                    }
                    if let Some(d) = &i.allowed_destinations {
                        label.push(format!(
                            "allowed: {}",
                            if d.is_empty() {
                                "none".into()
                            } else {
                                d.join(", ")
                            }
                        ));
                    }
                    g.node(
                        &id,
                        &label.join("\n"),
                        "shape=house, style=filled, fillcolor=\"#dae8fc\"",
                    );
                    g.edge(
                        &id,
                        &secret,
                        &format!("#{} issued {}", e.seq, short(&e.time)),
                        false,
                        "",
                    );
                    for f in i.files() {
                        let fid = format!("file:{f}");
                        g.node(&fid, &f, "shape=note");
                        g.edge(&secret, &fid, "delivered as", false, "style=dashed");
                    }
                }
                (Action::Revocation, _) => secret_label.push(format!("revoked {}", short(&e.time))),
                (Action::Expiry, _) => secret_label.push(format!("expired {}", short(&e.time))),
                _ => {}
            }
        }
        g.node(
            &secret,
            &secret_label.join("\n"),
            "shape=doubleoctagon, style=filled, fillcolor=\"#fff2cc\"",
        );
        for p in self.processes() {
            g.node(
                &format!("proc:{}", p.pid),
                &process_label(p),
                "shape=box, style=rounded",
            );
        }
        for e in &self.entries {
            let Some(p) = &e.process else { continue };
            let proc_id = format!("proc:{}", p.pid);
            let red = !e.alert_ids.is_empty();
            let label = |verb: &str| format!("#{} {verb} {}", e.seq, short(&e.time));
            match e.action {
                Action::Delivery | Action::Read => {
                    let from = match &e.path {
                        Some(path) => {
                            let fid = format!("file:{path}");
                            g.node(&fid, path, "shape=note");
                            fid
                        }
                        None => secret.clone(),
                    };
                    g.edge(&from, &proc_id, &label(e.action.as_str()), red, "");
                }
                Action::EnvExposure | Action::ArgvExposure => {
                    let verb = if e.action == Action::EnvExposure {
                        "env"
                    } else {
                        "argv"
                    };
                    g.edge(&secret, &proc_id, &label(verb), red, "style=dashed");
                }
                Action::Copy => {
                    let path = e.path.clone().unwrap_or_else(|| "?".into());
                    let fid = format!("file:{path}");
                    g.node(&fid, &path, "shape=note");
                    g.edge(&proc_id, &fid, &label("copy"), red, "");
                }
                Action::Send | Action::Connect | Action::Log => {
                    let dest = e
                        .dest
                        .clone()
                        .or(e.path.clone())
                        .unwrap_or_else(|| "?".into());
                    let did = format!("dest:{dest}");
                    let shape = if e.action == Action::Log {
                        "shape=cds"
                    } else {
                        "shape=component"
                    };
                    g.node(&did, &dest, shape);
                    g.edge(&proc_id, &did, &label(e.action.as_str()), red, "");
                }
                Action::Scrape => {
                    let target = match e.target_pid {
                        Some(t) => {
                            let tid = format!("proc:{t}");
                            g.node(&tid, &format!("pid {t}"), "shape=box, style=rounded");
                            tid
                        }
                        None => secret.clone(),
                    };
                    let verb = format!("scrape {}", e.access.as_deref().unwrap_or(""));
                    g.edge(&proc_id, &target, &label(verb.trim()), red, "");
                }
                Action::Alert => {
                    if let Some(a) = &e.alert {
                        let aid = format!("alert:{}", a.id);
                        g.node(
                            &aid,
                            &format!(
                                "!! {}\n{} #{} {}",
                                a.rule,
                                a.severity,
                                e.seq,
                                short(&e.time)
                            ),
                            "shape=octagon, color=red, fontcolor=red, penwidth=2",
                        );
                        g.edge(&proc_id, &aid, "", true, "style=bold");
                    }
                }
                Action::Event => {
                    g.edge(&secret, &proc_id, &label("event"), red, "style=dotted");
                }
                Action::Issuance | Action::Revocation | Action::Expiry => {}
            }
        }
        g.finish(&format!("timeline of {}", self.secret_id))
    }
}

/// `cp (pid 5151) /usr/bin/cp`.
fn process_line(p: &Process) -> String {
    let mut s = format!("process {} (pid {}", p.comm, p.pid);
    if let Some(pp) = p.ppid {
        let _ = write!(s, ", ppid {pp}");
    }
    let _ = write!(s, ", uid {}", p.uid);
    s.push(')');
    if let Some(x) = &p.exe {
        let _ = write!(s, " {x}");
    }
    if let Some(c) = &p.container_id {
        let _ = write!(s, " container {}", c.chars().take(12).collect::<String>());
    }
    match &p.k8s {
        Some(k) => {
            let _ = write!(s, " k8s {}", k.text());
        }
        None => {
            if let Some(u) = &p.pod_uid {
                let _ = write!(s, " pod {u}");
            }
        }
    }
    s
}

/// A process as a graph node: `cp (pid 5151)`, then exe, uid, container
/// and pod on their own lines.
fn process_label(p: &Process) -> String {
    let mut lines = vec![format!("{} (pid {})", p.comm, p.pid)];
    if let Some(x) = &p.exe {
        lines.push(x.clone());
    }
    lines.push(format!("uid {}", p.uid));
    if let Some(c) = &p.container_id {
        lines.push(format!(
            "container {}",
            c.chars().take(12).collect::<String>()
        ));
    }
    match &p.k8s {
        Some(k) => lines.push(k.text()),
        None => {
            if let Some(u) = &p.pod_uid {
                lines.push(format!("pod {u}"));
            }
        }
    }
    lines.join("\n")
}

/// `10:01:02.123` of an RFC 3339 time (the date is in the text output).
fn short(t: &str) -> String {
    parse(t)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The entry of one event that touched the secret.
fn event_entry(
    ev: &Event,
    encs: &[String],
    secret_id: &str,
    delivered: &mut bool,
    foreign_reads: &HashSet<u64>,
) -> Entry {
    let d = &ev.detail;
    let mut e = Entry::new(ev.time.to_string(), Action::Event);
    e.process = Some(ev.process.actor());
    e.event_id = Some(ev.id);
    e.bytes = d.bytes;
    e.syscall = Some(ev.syscall.to_string());
    e.encoding = encs
        .iter()
        .find(|x| !matches!(x.as_str(), "delivery" | "holder"))
        .cloned();
    let delivery = encs.iter().any(|x| x == "delivery");
    // " (37 bytes, base64)", " (37 bytes)", " (base64)" or "".
    let bytes = {
        let parts: Vec<String> = d
            .bytes
            .map(|b| format!("{b} bytes"))
            .into_iter()
            .chain(e.encoding.clone())
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let read_bytes = d.bytes.map(|b| format!(" ({b} bytes)")).unwrap_or_default();
    match ev.kind {
        EventKind::Copy => {
            // copy_file_range / sendfile / splice: in from `path`, out to
            // `out_path` or `dest`.
            let (action, sink) =
                sink_of(d.fd_out, d.out_kind, d.out_path.as_deref(), d.dest.as_ref());
            e.action = action;
            e.path = if action == Action::Copy {
                d.out_path.clone()
            } else {
                d.path.clone()
            };
            e.dest = sink.clone();
            e.summary = format!(
                "{} {} -> {}{bytes}",
                ev.syscall,
                d.path.as_deref().unwrap_or("?"),
                sink.or(d.out_path.clone()).unwrap_or_else(|| "?".into())
            );
        }
        EventKind::Read | EventKind::Mmap | EventKind::Open if delivery => {
            e.action = if !*delivered && !foreign_reads.contains(&ev.id) {
                *delivered = true;
                Action::Delivery
            } else {
                Action::Read
            };
            e.path = d.path.clone();
            let verb = if ev.kind == EventKind::Mmap {
                "mapped"
            } else {
                "read"
            };
            e.summary = format!("{verb} {}{read_bytes}", d.path.as_deref().unwrap_or("?"));
        }
        EventKind::ProcAccess => {
            e.action = Action::Scrape;
            e.target_pid = d.target_pid;
            e.access = d.access.clone();
            e.summary = format!(
                "read {} of pid {}",
                d.access.as_deref().unwrap_or("?"),
                d.target_pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        EventKind::Exec => {
            let marker = format!("[REDACTED:{secret_id}]");
            let on_argv = d
                .argv
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| x.contains(&marker)));
            e.path = d.filename.clone();
            if on_argv {
                e.action = Action::ArgvExposure;
                e.summary = format!(
                    "exec {} with the secret on its command line{bytes}",
                    d.filename.as_deref().unwrap_or("?")
                );
            } else {
                e.action = Action::EnvExposure;
                e.summary = format!(
                    "exec {} with the secret in its environment{bytes}",
                    d.filename.as_deref().unwrap_or("?")
                );
            }
        }
        EventKind::Write => {
            let (action, sink) = sink_of(d.fd, d.fd_kind, d.path.as_deref(), d.dest.as_ref());
            e.action = action;
            match action {
                Action::Copy => {
                    e.path = d.path.clone();
                    e.summary = format!("wrote into {}{bytes}", d.path.as_deref().unwrap_or("?"));
                }
                Action::Send => {
                    e.dest = sink.clone();
                    e.summary = format!("sent to {}{bytes}", sink.unwrap_or_default());
                }
                _ => {
                    e.dest = sink.clone();
                    e.summary = format!("wrote to {}{bytes}", sink.unwrap_or_default());
                }
            }
        }
        EventKind::IoUring => {
            e.summary = format!(
                "set up an io_uring instance (fd {}, {} entries)",
                d.fd.map(|f| f.to_string()).unwrap_or_else(|| "?".into()),
                d.entries
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        EventKind::Connect => {
            e.action = Action::Connect;
            e.dest = d.dest.as_ref().map(Dest::to_string);
            e.summary = format!("connected to {}", e.dest.as_deref().unwrap_or("?"));
        }
        EventKind::Read | EventKind::Mmap => {
            e.action = Action::Read;
            e.path = d.path.clone();
            e.summary = format!("read {}{read_bytes}", d.path.as_deref().unwrap_or("?"));
        }
        other => {
            e.path = d.path.clone();
            e.dest = d.dest.as_ref().map(Dest::to_string);
            e.summary = format!(
                "{other} ({}) {}",
                ev.syscall,
                d.path.as_deref().or(e.dest.as_deref()).unwrap_or("")
            )
            .trim_end()
            .to_string();
        }
    }
    e
}

/// A Graphviz graph under construction: nodes declared once, repeated
/// edges (same ends, verb and colour) counted on one edge.
#[derive(Default)]
struct Dot {
    nodes: Vec<String>,
    node_ids: HashSet<String>,
    edges: Vec<DotEdge>,
    edge_index: HashMap<(String, String, String, bool), usize>,
}

struct DotEdge {
    from: String,
    to: String,
    label: String,
    red: bool,
    attrs: String,
    count: u64,
    last: String,
}

/// A DOT quoted string: `"` and `\` escaped, newlines as `\n` (centred
/// lines), other control characters as spaces.
pub fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Dot {
    fn node(&mut self, id: &str, label: &str, attrs: &str) {
        if self.node_ids.insert(id.to_string()) {
            self.nodes.push(format!(
                "  {} [label={}{}{}];",
                dot_quote(id),
                dot_quote(label),
                if attrs.is_empty() { "" } else { ", " },
                attrs
            ));
        }
    }

    fn edge(&mut self, from: &str, to: &str, label: &str, red: bool, attrs: &str) {
        // The verb is the label without "#N" and the time: repeats of the
        // same action between the same ends fold into one edge.
        let verb: String = label
            .split_whitespace()
            .filter(|w| !w.starts_with('#') && !w.contains(':'))
            .collect::<Vec<_>>()
            .join(" ");
        let key = (from.to_string(), to.to_string(), verb, red);
        if let Some(&i) = self.edge_index.get(&key) {
            let e = &mut self.edges[i];
            e.count += 1;
            e.last = label.to_string();
            return;
        }
        self.edge_index.insert(key, self.edges.len());
        self.edges.push(DotEdge {
            from: from.to_string(),
            to: to.to_string(),
            label: label.to_string(),
            red,
            attrs: attrs.to_string(),
            count: 1,
            last: String::new(),
        });
    }

    fn finish(self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", dot_quote(title));
        let _ = writeln!(
            out,
            "  graph [rankdir=LR, fontname=\"Helvetica\", labelloc=t, label={}];",
            dot_quote(title)
        );
        out.push_str("  node [fontname=\"Helvetica\", fontsize=10];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
        for n in &self.nodes {
            out.push_str(n);
            out.push('\n');
        }
        for e in &self.edges {
            let label = if e.count > 1 {
                format!("{}\n... x{} (last {})", e.label, e.count, e.last)
            } else {
                e.label.clone()
            };
            let mut attrs: Vec<String> = Vec::new();
            if !label.is_empty() {
                attrs.push(format!("label={}", dot_quote(&label)));
            }
            if e.red {
                attrs.push("color=red, fontcolor=red, penwidth=2".into());
            }
            if !e.attrs.is_empty() {
                attrs.push(e.attrs.clone());
            }
            let _ = writeln!(
                out,
                "  {} -> {} [{}];",
                dot_quote(&e.from),
                dot_quote(&e.to),
                attrs.join(", ")
            );
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;

    fn built() -> (TempDir, Timeline) {
        let dir = TempDir::new("timeline");
        let (store, _) = scenario_store(&dir.db());
        let now = t0() + chrono::Duration::hours(1);
        let t = Timeline::build_at(&store, "db-prod", now).unwrap();
        (dir, t)
    }

    #[test]
    fn chain_is_in_order_and_complete() {
        let (_d, t) = built();
        let seq: Vec<(Action, Option<u32>)> = t
            .entries
            .iter()
            .map(|e| (e.action, e.process.as_ref().map(|p| p.pid)))
            .collect();
        assert_eq!(
            seq,
            vec![
                (Action::Issuance, None),
                (Action::Delivery, Some(4242)),
                (Action::EnvExposure, Some(4300)),
                (Action::Read, Some(5151)),
                (Action::Alert, Some(5151)),
                (Action::Copy, Some(5151)),
                (Action::Alert, Some(5151)),
                (Action::Send, Some(6000)),
                (Action::Alert, Some(6000)),
                (Action::Scrape, Some(7000)),
                (Action::Alert, Some(7000)),
                (Action::Read, Some(4242)),
                (Action::Revocation, None),
                (Action::Expiry, None),
            ]
        );
        for (i, e) in t.entries.iter().enumerate() {
            assert_eq!(e.seq, i + 1);
        }
        assert!(t.entries.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        let iss = t.entries[0].issuance.as_ref().unwrap();
        assert_eq!(iss.issuer.as_deref(), Some("vault"));
        assert_eq!(iss.ttl_seconds, Some(300));
        assert_eq!(iss.holder, serde_json::json!({"pid": 4242}));
        assert_eq!(
            iss.allowed_destinations.as_deref(),
            Some(&["127.0.0.1:5432".to_string()][..])
        );
        assert_eq!(iss.lease_id.as_deref(), Some("database/creds/app/abc"));
        assert_eq!(iss.record_source, "file:/var/lib/monitor/issuances.jsonl");
        let copy = &t.entries[5];
        assert_eq!(copy.path.as_deref(), Some("/tmp/x"));
        assert_eq!(copy.encoding.as_deref(), Some("raw"));
        assert_eq!(copy.alert_ids.len(), 1);
        let send = &t.entries[7];
        assert_eq!(send.dest.as_deref(), Some("203.0.113.9:443"));
        assert_eq!(send.encoding.as_deref(), Some("base64"));
        let p = send.process.as_ref().unwrap();
        assert_eq!(
            (p.comm.as_str(), p.exe.as_deref()),
            ("curl", Some("/usr/bin/curl"))
        );
        let scrape = &t.entries[9];
        assert_eq!(
            (scrape.target_pid, scrape.access.as_deref()),
            (Some(4242), Some("environ"))
        );
        let a = t.entries[4].alert.as_ref().unwrap();
        assert_eq!(a.rule, "secret.read.foreign");
        assert_eq!(a.event_ids, vec![20]);
        // The other secret's event is not in this chain.
        assert!(t.entries.iter().all(|e| e.event_id != Some(60)));
    }

    #[test]
    fn no_expiry_entry_before_it_happens() {
        let dir = TempDir::new("timeline-future");
        let (store, _) = scenario_store(&dir.db());
        let t = Timeline::build_at(&store, "db-prod", t0()).unwrap();
        assert!(t.entries.iter().all(|e| e.action != Action::Expiry));
        assert!(Timeline::build(&store, "nothing-here").unwrap().is_empty());
    }

    #[test]
    fn text_is_a_tree_with_alerts_marked() {
        let (_d, t) = built();
        let text = t.render_text();
        println!("{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "secret db-prod");
        assert!(
            lines[1].contains("issued by vault to pid 4242"),
            "{}",
            lines[1]
        );
        assert!(text.contains("ttl 300s (expires 2026-11-22T10:05:00Z)"));
        assert!(text.contains("allowed destinations: 127.0.0.1:5432"));
        assert!(text.contains("lease database/creds/app/abc"));
        let pos = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
        };
        // Issuance at the top, then processes in order of first action.
        assert!(pos("issued by vault") < pos("process app (pid 4242"));
        assert!(pos("process app (pid 4242") < pos("process worker (pid 4300"));
        assert!(pos("process worker") < pos("process cp (pid 5151"));
        assert!(pos("process cp") < pos("process curl (pid 6000"));
        assert!(pos("process curl") < pos("process gdb (pid 7000"));
        let alert_lines: Vec<&&str> = lines
            .iter()
            .filter(|l| l.trim_start().starts_with("!!"))
            .collect();
        assert_eq!(alert_lines.len(), 4);
        assert!(alert_lines[0].contains("secret.read.foreign [high]"));
        assert!(text.contains("delivery      read /vault/secrets/db (37 bytes)"));
        assert!(text.contains("copy          wrote into /tmp/x (37 bytes, raw)"));
        assert!(text.contains("send          sent to 203.0.113.9:443 (120 bytes, base64)"));
        // Both of app's actions are under it, in order.
        let app = pos("process app (pid 4242");
        let worker = pos("process worker");
        let app_block = &text[app..worker];
        assert!(
            app_block.contains("#2 ") && app_block.contains("#12 "),
            "{app_block}"
        );
    }

    #[test]
    fn json_is_one_object() {
        let (_d, t) = built();
        let j = t.render_json();
        assert!(!j.contains('\n'));
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["secret_id"], "db-prod");
        assert_eq!(v["entries"][0]["action"], "issuance");
        assert_eq!(v["entries"][0]["issuance"]["ttl_seconds"], 300);
        assert_eq!(v["entries"][1]["action"], "delivery");
        assert_eq!(v["entries"][1]["process"]["comm"], "app");
        assert_eq!(v["entries"][4]["alert"]["rule"], "secret.read.foreign");
        assert_eq!(v["truncated"], false);
    }

    #[test]
    fn dot_has_nodes_edges_and_red_alerts() {
        let (_d, t) = built();
        let dot = t.render_dot();
        println!("{dot}");
        assert!(dot.starts_with("digraph \"timeline of db-prod\" {"));
        assert!(dot.trim_end().ends_with('}'));
        for needle in [
            "\"secret\" [label=\"secret db-prod\\nrevoked 10:04:10.000\\nexpired 10:05:00.000\"",
            "\"holder:1\" -> \"secret\"",
            "\"file:/vault/secrets/db\" -> \"proc:4242\" [label=\"#2 delivery 10:00:01.000\"",
            "\"proc:5151\" -> \"file:/tmp/x\" [label=\"#6 copy 10:01:00.100\", color=red",
            "\"proc:6000\" -> \"dest:203.0.113.9:443\"",
            "\"proc:7000\" -> \"proc:4242\"",
            "\"secret\" -> \"proc:4300\"",
            "\"alert:1\" [label=\"!! secret.read.foreign",
            "shape=octagon, color=red",
        ] {
            assert!(dot.contains(needle), "{needle:?} not in\n{dot}");
        }
        // Braces balance, every statement line ends with ';'.
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
        for l in dot.lines().skip(1) {
            if l != "}" {
                assert!(l.ends_with(';'), "{l}");
            }
        }
    }

    #[test]
    fn dot_quoting_escapes_everything_dangerous() {
        assert_eq!(dot_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(dot_quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(dot_quote("x\ny"), "\"x\\ny\"");
        assert_eq!(dot_quote("x\u{1b}[31my"), "\"x [31my\"");
        assert_eq!(dot_quote("end\\"), "\"end\\\\\"");
    }

    /// A path with quotes, backslashes, braces and a newline must still
    /// give a graph `dot` accepts.
    fn hostile_timeline() -> (TempDir, Timeline) {
        let dir = TempDir::new("timeline-hostile");
        let (mut store, sc) = scenario_store(&dir.db());
        let mut ev = sc.events[3].clone();
        ev.id = 99;
        ev.time = at_t(61_000);
        ev.detail.path = Some("/tmp/a \"b\" {c}; d\\\ne -> f".into());
        store.insert_events(&[ev]).unwrap();
        let t = Timeline::build_at(&store, "db-prod", t0()).unwrap();
        (dir, t)
    }

    #[test]
    fn dot_renders_with_graphviz() {
        let Ok(which) = std::process::Command::new("which").arg("dot").output() else {
            println!("SKIP dot_renders_with_graphviz: `which` unavailable");
            return;
        };
        if !which.status.success() {
            println!("SKIP dot_renders_with_graphviz: graphviz `dot` not on PATH");
            return;
        }
        for (_d, t) in [built(), hostile_timeline()] {
            let dot = t.render_dot();
            let mut child = std::process::Command::new("dot")
                .arg("-Tsvg")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(dot.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "dot failed: {}\n{dot}",
                String::from_utf8_lossy(&out.stderr)
            );
            let svg = String::from_utf8_lossy(&out.stdout);
            assert!(svg.contains("<svg"), "{svg}");
            assert!(svg.contains("secret.read.foreign"));
        }
    }

    #[test]
    fn text_escapes_control_characters() {
        let (_d, t) = hostile_timeline();
        let text = t.render_text();
        assert!(!text.contains("\\\ne"), "raw newline from a path leaked");
        assert!(text.contains("d\\\\ne -> f"), "{text}");
    }
}
