//! `monitor run`: sensors -> observer -> enrichment -> correlation ->
//! store and feeds, fed by issuance sources (files, Vault audit logs, the
//! API), with the periodic chores (watch rescans, process reaping,
//! lost-event reports, alert roll-ups) and a clean shutdown on
//! SIGINT/SIGTERM that detaches every probe.
//!
//! This file is the pipeline (`Agent::handle`, `Agent::act`); the rest is
//! in files of their own: `start.rs` the wiring, `run.rs` the event loop,
//! `records.rs` the issuance sources and the watched set, `capture.rs`
//! which processes are tracked and when the capture programs are attached,
//! `chores.rs` the periodic chores and the shutdown, `control.rs` what the
//! API's routes may ask of the agent.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use monitor_common::{
    DataEvent, EventHeader, FdKey, FileInfo, InodeKey, SockAddr, TrackedFd, DATA_FIRST_BYTES,
    HDR_TRACKED, TRACK_AGENT,
};

use crate::{
    correlate::{alert::Alert, Correlator, Outcome},
    enrich::Enricher,
    enrich::WatchNames,
    event::{Detail, Event, EventKind, EventLine, FdKind, UtcTime},
    issuance::source::Source,
    metrics::Metrics,
    observer::decode::Captured,
    observer::decode::RawEvent,
    output::JsonLines,
    output::{AlertSink, Feed},
    sensors::{
        fanotify::{FanEvent, FanKind, FanQueue, Fanotify},
        KernelCounters, SensorOptions, Sensors,
    },
    store::{
        worth_storing,
        writer::{RetentionPolicy, StoreItem, StoreWriter},
    },
    watch::WatchSet,
};

mod capture;
mod chores;
mod control;
mod records;
mod run;
mod start;

pub use run::run;

/// Everything `monitor run` needs, flags and config merged.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub sensors: SensorOptions,
    /// `-` for stdout, a path, or none.
    pub events: Option<String>,
    /// `-` for stdout (the default) or a path.
    pub alerts: String,
    pub watch: Vec<String>,
    pub host_proc: PathBuf,
    /// Holds the kubelet's `pods/` and `containers/` log directories.
    pub pod_log_root: PathBuf,
    /// The kubelet's root directory.
    pub kubelet_root: PathBuf,
    /// The local API socket (none: no API).
    pub api: Option<PathBuf>,
    pub issuances: Vec<PathBuf>,
    pub vault_audit: Vec<PathBuf>,
    /// Fleet-wide fingerprint key (64 hex chars); random per boot if none.
    pub fingerprint_key: Option<String>,
    /// How often watched patterns are expanded again.
    pub rescan_every: Duration,
    /// Identical alerts within this window are rolled up.
    pub aggregate_window: Duration,
    /// Distinct alerts of one rule by one actor beyond which the rest are
    /// held back into one roll-up.
    pub rate_limit: crate::correlate::alert::RateLimit,
    /// Known readers (`[[allow]]`).
    pub allow: Vec<crate::correlate::AllowRule>,
    /// Globs whose files become implicit issuances (discovered secrets).
    pub discover: Vec<String>,
    /// SOC feeds every alert also goes to.
    pub feeds: Vec<crate::output::feed::FeedConfig>,
    /// The event store.
    pub db: PathBuf,
    pub retention: RetentionPolicy,
    /// Prometheus `/metrics` and `/healthz` (none: off).
    pub metrics: Option<SocketAddr>,
    /// Serve metrics on a non-loopback address (the DaemonSet: the kubelet
    /// probes the pod IP).
    pub metrics_allow_non_loopback: bool,
    /// Deny foreign opens of delivery files (fanotify permission events).
    pub enforce_read_foreign: bool,
    /// Scope and fleet (off by default).
    pub fleet: crate::fleet::FleetOptions,
}

/// Items the store queue holds before it drops (and counts) new ones.
const STORE_QUEUE: usize = 65_536;
/// Most bytes of one issuance source read (then parsed and applied) at a
/// time (about a thousand records): a backlog never sits parsed at once,
/// and the event loop drains the ring between two chunks.
const SOURCE_CHUNK: usize = 256 << 10;
/// How long the start may spend on the sources' backlog before the agent
/// is ready (the rest is read in chunks interleaved with the events).
const START_BACKLOG: Duration = Duration::from_secs(2);
/// How long the capture programs stay attached after the last tracked
/// process is gone (short-lived holders do not make them flap).
const CAPTURE_GRACE: Duration = Duration::from_secs(2);
/// Most secrets one source (an issuance file, the API) may define; records
/// of new secrets past it are rejected with an error naming the source.
pub const MAX_SECRETS_PER_SOURCE: u64 = 200_000;

pub struct Agent {
    sensors: Sensors,
    /// Watched files through fanotify marks (none: unavailable).
    fanotify: Option<Fanotify>,
    fan_queue: FanQueue,
    last_fan_lost: u64,
    watches: WatchSet,
    enricher: Enricher,
    correlator: Correlator,
    events: Option<JsonLines>,
    alerts: JsonLines,
    sources: Vec<Source>,
    store: StoreWriter,
    db: PathBuf,
    feeds: Vec<Box<dyn Feed>>,
    /// Watch ids of the discovery globs.
    discover: Vec<u32>,
    last_counters: KernelCounters,
    last_store_dropped: u64,
    metrics: Arc<Metrics>,
    /// Events by kind since the last [`Agent::flush`], then added to
    /// `metrics` (one lock per batch, not per event).
    kinds_pending: [u64; EventKind::ALL.len()],
    /// While applying a batch of records: watched patterns are expanded
    /// once at its end, not once a record.
    batching: bool,
    rescan_due: bool,
    /// Delivery files named by records since the last rescan (their
    /// secrets are mapped to the files' inodes by the next one).
    watch_paths: Vec<String>,
    /// A source had more to read at the last poll: poll again at once.
    pub sources_backlog: bool,
    /// Secrets defined through the API (capped like a source).
    api_secrets: u64,
    /// Records read from issuance sources by this run (not those restored
    /// from the store at start).
    pub records_read: u64,
    /// Secrets restored from the store at start.
    pub secrets_restored: u64,
    /// Per tracked process, its capture losses (budget, ring) already
    /// reported.
    capture_seen: HashMap<u32, (u64, u64)>,
    /// The host's /proc (TLS libraries are found through its maps).
    host_proc: PathBuf,
    pub events_seen: u64,
    pub alerts_sent: u64,
    pub bad_records: u64,
    /// Scope and the fleet link.
    fleet: crate::fleet::Fleet,
    /// Since when no tracked process is alive while the capture programs
    /// are attached (they are detached after [`CAPTURE_GRACE`]).
    capture_idle_since: Option<Instant>,
    /// Tracked processes alive at the last capture decision.
    live_tracked: usize,
}

impl Agent {
    /// The pipeline, for one record the observer decoded from the sensors'
    /// ring: the kernel's state kept in step, then enrich -> correlate ->
    /// store/feeds.
    pub fn handle(&mut self, raw: RawEvent) -> Result<()> {
        if !self.fleet.admits(raw.header(), &mut self.enricher) {
            return Ok(()); // outside this node's scope
        }
        // Trace: a span an event and stage. At the default level each costs
        // the check of the global max level (one relaxed load); its fields
        // are not even computed.
        let span = tracing::trace_span!("enrich", kind = raw.name(), pid = raw.header().pid);
        let entered = span.enter();
        self.follow_in_kernel(&raw);
        let tracked = raw.header().flags & HDR_TRACKED != 0;
        let Some(mut ev) = self.enricher.enrich(&raw, &self.watches, tracked) else {
            return Ok(());
        };
        drop(entered);
        let out = tracing::trace_span!(
            "correlate",
            kind = raw.name(),
            pid = raw.header().pid,
            event = ev.id
        )
        .in_scope(|| self.correlator.on_event(&mut ev, &raw, &mut self.enricher));
        if is_an_event(&raw, &ev) {
            self.events_seen += 1;
            self.emit(ev);
        }
        self.act(out)
    }

    /// The sensors' state in step with what a record says: the watched
    /// descriptors a fork inherits or an exit closes, an exec's environment,
    /// the TLS libraries of a tracked process, the kernel's access to a
    /// watched file (so fanotify does not report it twice).
    fn follow_in_kernel(&mut self, raw: &RawEvent) {
        let pid = raw.header().pid;
        if self.fanotify.is_some() {
            let enricher = &self.enricher;
            let seen = crate::sensors::fanotify::kernel_access(raw, |p, fd| {
                enricher.fd(p, fd).map(|e| (e.ino, e.dev))
            });
            if let Some(key) = seen {
                self.fan_queue.saw_kernel(key, Instant::now());
            }
        }
        match raw {
            RawEvent::Fork(f) if f.inherited != 0 => {
                for (fd, e) in self.enricher.watched_fds(pid) {
                    let key = FdKey {
                        tgid: f.child_pid,
                        fd: fd as u32,
                    };
                    let v = TrackedFd {
                        file: FileInfo {
                            ino: e.ino,
                            dev: e.dev,
                            ..Default::default()
                        },
                        watch_id: e.watch_id,
                        _pad: 0,
                    };
                    if let Err(e) = self.sensors.track_fd(key, v) {
                        tracing::warn!("{e:#}");
                    }
                }
            }
            RawEvent::Exit(_) => {
                for (fd, _) in self.enricher.watched_fds(pid) {
                    self.sensors.untrack_fd(&FdKey {
                        tgid: pid,
                        fd: fd as u32,
                    });
                }
            }
            RawEvent::Exec(_, argv, envp) => self.correlator.exec_started(pid, argv, envp),
            _ => {}
        }
        if raw.header().flags & HDR_TRACKED != 0 {
            self.tls_of_tracked(raw, pid);
        }
    }

    /// Correlation's outcome out: alerts to every sink, holders tracked,
    /// delivery files watched.
    fn act(&mut self, out: Outcome) -> Result<()> {
        self.send_alerts(out.alerts);
        for pid in out.track {
            self.track(pid, TRACK_AGENT);
        }
        self.watch_deliveries(out.watch);
        Ok(())
    }

    /// An event out: serialized once (only if something writes it), to the
    /// events file, and to the store and the fleet if worth storing.
    fn emit(&mut self, ev: Event) {
        self.count_event(ev.kind);
        let store = worth_storing(&ev);
        if self.events.is_none() && !store {
            return;
        }
        let line = EventLine::new(ev);
        if let Some(sink) = self.events.as_mut() {
            sink.write_raw(&line.json);
        }
        if store {
            self.fleet.event(&line);
            self.store.send(StoreItem::Event(line));
        }
    }

    fn count_event(&mut self, kind: EventKind) {
        self.kinds_pending[kind as usize] += 1;
    }

    /// Alerts to every sink: the feeds, the alert stream, the metrics, the
    /// fleet and the store, the same alerts to each.
    fn send_alerts(&mut self, mut alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        // Before any sink sees them (the feeds did not get the nodes of a
        // foreign replay when they came first).
        for a in &mut alerts {
            self.fleet.annotate(a);
        }
        self.alerts_sent += alerts.len() as u64;
        // Debug: a span a batch of alerts (alerts are rare), a line each.
        let _span = tracing::debug_span!("sink", alerts = alerts.len()).entered();
        for a in &alerts {
            tracing::debug!(
                rule = a.rule.as_str(),
                pid = a.actor.pid,
                secret_id = a.secret_id.as_str(),
                "alert out"
            );
        }
        let sinks: [&mut dyn AlertSink; 4] = [
            &mut self.alerts,
            &mut self.metrics,
            &mut self.fleet,
            &mut self.store,
        ];
        let feeds = self.feeds.iter_mut().map(|f| f as &mut dyn AlertSink);
        for sink in feeds.chain(sinks) {
            // A sink counts what it could not deliver (the webhook keeps it
            // in its spool): the agent goes on.
            if let Err(e) = sink.send_alerts(&alerts) {
                tracing::warn!("{}: {e:#}", sink.sink_name());
            }
        }
    }

    /// Delivery files watched (literal paths: a delivery file is never a
    /// glob), expanded at once or at the end of the batch.
    fn watch_deliveries(&mut self, paths: Vec<String>) {
        if paths.is_empty() {
            return;
        }
        for p in paths {
            match self.watches.add_literal(&p) {
                Ok(_) => self.watch_paths.push(p),
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
        if self.batching {
            self.rescan_due = true;
        } else {
            self.rescan_added();
        }
    }

    /// Fanotify events whose dedup delay passed, as open/read/close events
    /// (`syscall: "fanotify"`) through correlation and out.
    pub fn fanotify_due(&mut self) -> Result<()> {
        let due = self.fan_queue.due(Instant::now());
        let _span =
            tracing::debug_span!("observe", source = "fanotify", records = due.len()).entered();
        for f in due {
            self.handle_fanotify(f)?;
        }
        Ok(())
    }

    fn handle_fanotify(&mut self, f: FanEvent) -> Result<()> {
        if !self.fleet.admits_pid(f.pid, &mut self.enricher) {
            return Ok(());
        }
        let hdr = EventHeader {
            ts_ns: 0,
            cgroup_id: f.cgroup_id,
            kind: 0,
            pid: f.pid,
            tid: f.pid,
            uid: f.uid,
            gid: f.gid,
            hook: 0,
            flags: 0,
            _pad: 0,
            comm: f.comm,
        };
        let key = InodeKey {
            ino: f.ino,
            dev: f.dev,
            _pad: 0,
        };
        let mut ev = Event {
            id: self.enricher.alloc_id(),
            time: UtcTime::from_unix_nanos(f.unix_ns),
            kind: f.kind.event_kind(),
            syscall: "fanotify".into(),
            process: self.enricher.process(&hdr),
            tracked: self.sensors.is_tracked(f.pid),
            detail: Detail {
                path: self.watches.path_of(&key),
                fd_kind: Some(FdKind::File),
                inode: Some(f.ino),
                ret: (f.kind == FanKind::Denied).then_some(-(libc::EPERM as i64)),
                ..Default::default()
            },
        };
        let mut out = Outcome::default();
        if matches!(f.kind, FanKind::Read | FanKind::Denied) {
            // A denied open is judged as the read it was meant for.
            let raw = RawEvent::Read(
                DataEvent {
                    hdr,
                    file: FileInfo {
                        ino: f.ino,
                        dev: f.dev,
                        mode: f.mode,
                        ..Default::default()
                    },
                    peer: SockAddr::default(),
                    fd: -1,
                    flags: 0,
                    count: 0,
                    data_len: 0,
                    watch_id: 0,
                    path_len: 0,
                    chunk_off: 0,
                },
                Captured::default(),
            );
            out = self.correlator.on_event(&mut ev, &raw, &mut self.enricher);
            if f.kind == FanKind::Denied {
                for a in &mut out.alerts {
                    if a.rule == crate::correlate::rules::Rule::ReadForeign {
                        a.evidence.blocked = Some(true);
                    }
                }
            }
        }
        self.events_seen += 1;
        self.emit(ev);
        self.act(out)
    }

    pub fn sensors(&self) -> &Sensors {
        &self.sensors
    }

    /// What `/metrics` and `/healthz` serve.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

/// First bytes of an untracked process's connection are captured to be
/// scanned; without a secret in them they are not an event.
fn is_an_event(raw: &RawEvent, ev: &Event) -> bool {
    let first_bytes = matches!(raw, RawEvent::Write(d, _, _) if d.flags & DATA_FIRST_BYTES != 0);
    !first_bytes || ev.detail.secrets.is_some()
}
