//! `monitor run`: sensors -> observer -> enrichment -> correlation ->
//! exporters, fed by issuance sources (files, Vault audit logs, the API),
//! with the periodic chores (watch rescans, process reaping, lost-event
//! reports, alert roll-ups) and a clean shutdown on SIGINT/SIGTERM that
//! detaches every probe.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use chrono::Utc;
use monitor_common::{
    DataEvent, EventHeader, FdKey, FileInfo, InodeKey, SockAddr, TrackedFd, DATA_FIRST_BYTES,
    HDR_TRACKED, TRACK_AGENT, TRACK_OPENED_WATCHED,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    api::{
        routes::{Control, IssueRefused, StoreQueries},
        serve::{serve_thread, Endpoints, Stop, API_BACKLOG},
        ApiRequest,
    },
    correlate::{fingerprint::FingerprintKey, Correlator, Outcome},
    enrich::WatchNames,
    enrich::{cgroup::CgroupResolver, k8s::K8sResolver, procfs::ProcFs, Enricher},
    event::{Detail, Event, EventKind, EventLine, FdKind, Process, UtcTime},
    issuance::{
        parse_record,
        tail::{Position, Tailer},
        vault::VaultPairer,
        Record,
    },
    metrics::Metrics,
    observer::decode::Captured,
    observer::{decode::RawEvent, Observer},
    output::Feed,
    output::JsonLines,
    sensors::{
        fanotify::{FanEvent, FanKind, FanQueue, Fanotify},
        KernelCounters, SensorOptions, Sensors,
    },
    store::{
        worth_storing,
        writer::{RetentionPolicy, SourceOffset, StoreItem, StoreWriter},
        Store,
    },
    watch::WatchSet,
};

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

struct Source {
    path: PathBuf,
    tail: Tailer,
    /// Vault audit log (else an issuance file).
    vault: Option<VaultPairer>,
    /// Secrets this source defined (see [`MAX_SECRETS_PER_SOURCE`]).
    secrets: u64,
}

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
    pub fn start(opts: &RunOptions) -> Result<(Self, Observer)> {
        let file_key = opts.fleet.read_key()?;
        let key = match file_key.as_ref().or(opts.fingerprint_key.as_ref()) {
            Some(hex) => FingerprintKey::from_hex(hex).context("fingerprint_key")?,
            None => FingerprintKey::random().context("fingerprint key")?,
        };
        let mut sensors = Sensors::load(&opts.sensors)?;
        let fanotify = match Fanotify::start(&opts.host_proc, opts.enforce_read_foreign) {
            Ok(f) => Some(f),
            Err(e) if opts.enforce_read_foreign => {
                return Err(e.context("enforce = [\"secret.read.foreign\"] needs fanotify"))
            }
            Err(e) => {
                tracing::warn!("{e:#}: watched files through the tracepoints only");
                None
            }
        };
        let mut watches = WatchSet::new();
        for w in &opts.watch {
            watches.add(w)?;
        }
        let mut discover = Vec::new();
        for g in &opts.discover {
            discover.push(
                watches
                    .add(g)
                    .with_context(|| format!("discover glob {g:?}"))?,
            );
        }
        let ring = sensors.take_ring().context("event ring buffer")?;
        let observer = Observer::new(ring)?;
        let mounts = crate::host::parse_mountinfo(
            &std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?,
        )?;
        let cgroup2_root = crate::host::cgroup2_mount(&mounts);
        let fleet = crate::fleet::Fleet::start(&opts.fleet, cgroup2_root.as_deref(), &opts.db)?;
        let cgroups = cgroup2_root.map(CgroupResolver::new);
        if cgroups.is_none() {
            tracing::warn!("no cgroup v2 mount: cgroup paths come from /proc/<pid>/cgroup");
        }
        let enricher = Enricher::new(
            ProcFs::new(opts.host_proc.clone()),
            cgroups,
            crate::host::boot_to_realtime_offset_ns(),
        )
        .with_k8s(K8sResolver::new(
            opts.pod_log_root.clone(),
            opts.kubelet_root.clone(),
        ));
        let events = match &opts.events {
            Some(t) => Some(JsonLines::open("events", t)?),
            None => None,
        };
        let alerts = JsonLines::open("alerts", &opts.alerts)?;
        let store =
            Store::open(&opts.db).with_context(|| format!("event store {}", opts.db.display()))?;
        // Where each source was read up to: a restart resumes there (the
        // secrets read before are restored from the store below).
        let offsets: HashMap<String, SourceOffset> = store
            .source_offsets()?
            .into_iter()
            .map(|o| (o.path.clone(), o))
            .collect();
        let source = |p: &PathBuf, vault: Option<VaultPairer>| {
            let mut tail = Tailer::new(p).with_max_poll_bytes(SOURCE_CHUNK);
            if let Some(o) = offsets.get(&p.display().to_string()) {
                tail = tail.resume_at(Position {
                    dev: o.dev,
                    ino: o.ino,
                    pos: o.pos,
                    line: o.line,
                });
            }
            Source {
                path: p.clone(),
                tail,
                vault,
                secrets: 0,
            }
        };
        let mut sources = Vec::new();
        for p in &opts.issuances {
            sources.push(source(p, None));
        }
        for p in &opts.vault_audit {
            sources.push(source(p, Some(VaultPairer::new(10_000))));
        }
        let restore = store.current_secrets()?;
        let first_id = store.max_event_id()? + 1;
        let store = StoreWriter::spawn_with(store, STORE_QUEUE, Some(opts.retention.clone()));
        let mut enricher = enricher;
        enricher.set_next_id(first_id);
        let mut feeds = Vec::new();
        for f in &opts.feeds {
            let feed = crate::output::feed::build(f).context("feed")?;
            tracing::info!("alerts also go to {}", feed.name());
            feeds.push(feed);
        }
        let mut correlator = Correlator::new(key, opts.aggregate_window);
        let mut fleet = fleet;
        fleet.share_fingerprints(
            correlator.fingerprints_mut(),
            file_key.is_some() || opts.fingerprint_key.is_some(),
        );
        correlator.set_rate_limit(opts.rate_limit);
        correlator.set_allow(opts.allow.clone());
        let mut agent = Self {
            feeds,
            store,
            db: opts.db.clone(),
            sensors,
            fanotify,
            fan_queue: FanQueue::default(),
            last_fan_lost: 0,
            watches,
            enricher,
            correlator,
            events,
            alerts,
            sources,
            discover,
            last_counters: KernelCounters::default(),
            last_store_dropped: 0,
            metrics: Arc::new(Metrics::new()),
            kinds_pending: [0; EventKind::ALL.len()],
            batching: false,
            rescan_due: false,
            watch_paths: Vec::new(),
            sources_backlog: false,
            api_secrets: 0,
            records_read: 0,
            secrets_restored: 0,
            capture_seen: HashMap::new(),
            host_proc: opts.host_proc.clone(),
            events_seen: 0,
            alerts_sent: 0,
            bad_records: 0,
            fleet,
            capture_idle_since: None,
            live_tracked: 0,
        };
        // `Sensors::load` fails unless every required probe attached.
        agent.metrics.set_probes(
            agent.sensors.attached() as u64,
            agent.sensors.status.len() as u64,
            true,
        );
        agent.restore(restore);
        let t0 = std::time::Instant::now();
        while agent.poll_sources_chunk() && t0.elapsed() < START_BACKLOG {}
        agent.sources_backlog = t0.elapsed() >= START_BACKLOG;
        agent.rescan();
        agent.update_capture(Instant::now());
        agent.publish_capture();
        agent.update_metrics();
        Ok((agent, observer))
    }

    pub fn sensors(&self) -> &Sensors {
        &self.sensors
    }

    /// What `/metrics` and `/healthz` serve.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
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

    /// Gauges and cumulative counters, refreshed on each tick.
    fn update_metrics(&self) {
        let m = &self.metrics;
        m.set_lost_per_cpu(&self.last_counters.ringbuf_full_per_cpu);
        m.set_queue_depth("store", self.store.queued() as u64);
        // Dropped (queue full) and lost in a failed write alike.
        m.set_store_dropped(self.store.dropped() + self.store.failed());
        m.set_problem(
            "store",
            self.store
                .failing()
                .map(|e| format!("store {}: writes fail: {e}", self.db.display())),
        );
        for out in std::iter::once(&self.alerts).chain(self.events.as_ref()) {
            let name = out.name();
            m.set(
                crate::metrics::Metric::OutputFailures,
                &name,
                out.failures(),
            );
            m.set(crate::metrics::Metric::OutputLost, &name, out.lost());
            m.set_problem(&name, out.failing().map(str::to_string));
        }
        for feed in &self.feeds {
            let name = feed.name();
            m.set_feed_failures(&name, feed.failures());
            m.set_feed_pending(&name, feed.pending());
        }
        m.set_bad_records(self.bad_records);
        self.fleet.update_metrics(m);
        m.set(
            crate::metrics::Metric::AlertsSuppressed,
            "",
            self.correlator.alerts_suppressed(),
        );
        for (rule, n) in self.correlator.alerts_rate_limited() {
            m.set(crate::metrics::Metric::AlertsRateLimited, rule, *n);
        }
        for (rule, n) in self.correlator.alerts_allowed() {
            m.set(crate::metrics::Metric::AlertsAllowed, rule, *n);
        }
        for a in self.sensors.tls.list() {
            let label = format!("{}:{}", a.lib.name(), a.path);
            m.set(crate::metrics::Metric::TlsAttached, &label, 1);
        }
        m.set_sizes(
            self.sensors.tracked_pids().len() as u64,
            self.correlator.secret_count() as u64,
            self.watches.watched_inodes() as u64,
            self.watches.refused_files() as u64,
        );
    }

    /// One decoded record through enrichment, correlation and out.
    pub fn handle(&mut self, raw: RawEvent) -> Result<()> {
        if !self.fleet.admits(raw.header(), &mut self.enricher) {
            return Ok(());
        }
        let pid = raw.header().pid;
        let tracked = raw.header().flags & HDR_TRACKED != 0;
        if self.fanotify.is_some() {
            let enricher = &self.enricher;
            let seen = crate::sensors::fanotify::kernel_access(&raw, |p, fd| {
                enricher.fd(p, fd).map(|e| (e.ino, e.dev))
            });
            if let Some(key) = seen {
                self.fan_queue.saw_kernel(key, Instant::now());
            }
        }
        // Keep kernel state in step with what the process tree does.
        match &raw {
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
        if tracked {
            self.tls_of_tracked(&raw, pid);
        }
        let Some(mut ev) = self.enricher.enrich(&raw, &self.watches, tracked) else {
            return Ok(());
        };
        let out = self.correlator.on_event(&mut ev, &raw, &mut self.enricher);
        // First bytes of an untracked process's connection are captured to
        // be scanned; without a secret in them they are not an event.
        let first_bytes =
            matches!(&raw, RawEvent::Write(d, _, _) if d.flags & DATA_FIRST_BYTES != 0);
        if first_bytes && ev.detail.secrets.is_none() {
            return self.act(out);
        }
        self.events_seen += 1;
        self.emit(ev);
        self.act(out)
    }

    /// TLS libraries of a tracked process, attached on demand: its
    /// mappings when first seen (again after an exec: the new image), and
    /// a TLS library it opens (dlopen, or the loader of a new image).
    fn tls_of_tracked(&mut self, raw: &RawEvent, pid: u32) {
        use crate::sensors::tls;
        match raw {
            RawEvent::ExecResult(e) if e.ret == 0 => self.sensors.tls.forget(pid),
            RawEvent::Exit(_) => {
                self.sensors.tls.forget(pid);
                return;
            }
            RawEvent::Open(e) if e.fd >= 0 => {
                let name = crate::observer::decode::cstr(&e.name, e.name_len);
                if let Some(lib) = tls::library_kind(&name) {
                    let path = crate::observer::decode::cstr(&e.path, e.path_len);
                    if path.starts_with('/') {
                        let hp = tls::reachable_path(&self.host_proc, pid, &path);
                        self.sensors
                            .attach_tls(&hp, &path, tls::Candidate::Library(lib));
                    }
                }
            }
            // The new image (a Go program, a static OpenSSL build), even if
            // it is gone by now.
            RawEvent::Exec(e, _, _) => {
                let path = crate::observer::decode::cstr(&e.filename, e.filename_len);
                if path.starts_with('/') {
                    let hp = tls::reachable_path(&self.host_proc, pid, &path);
                    self.sensors
                        .attach_tls(&hp, &path, tls::Candidate::Executable);
                }
                return;
            }
            _ => {}
        }
        self.sensors.scan_tls(&self.host_proc, pid);
    }

    /// Fanotify events whose dedup delay passed, as open/read/close events
    /// (`syscall: "fanotify"`) through correlation and out.
    pub fn fanotify_due(&mut self) -> Result<()> {
        for f in self.fan_queue.due(Instant::now()) {
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
            cgroup_id: 0,
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

    /// Alerts out, processes tracked, delivery files watched.
    fn act(&mut self, out: Outcome) -> Result<()> {
        if !out.alerts.is_empty() {
            for feed in &mut self.feeds {
                // A feed's failures are counted by the feed (and the webhook
                // keeps them in its spool): the agent goes on.
                if let Err(e) = feed.send(&out.alerts) {
                    tracing::warn!("feed {}: {e:#}", feed.name());
                }
            }
        }
        for mut a in out.alerts {
            self.fleet.annotate(&mut a);
            self.alerts.write(&a);
            self.alerts_sent += 1;
            self.metrics.inc_alert(a.rule.as_str());
            self.fleet.alert(&a);
            self.store.send(StoreItem::Alert(a));
        }
        for pid in out.track {
            self.track(pid, TRACK_AGENT);
        }
        if !out.watch.is_empty() {
            // Literal paths: a delivery file is never a glob.
            for p in out.watch {
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
        Ok(())
    }

    /// `f` with the watched-set expansion deferred to its end.
    fn batched<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.batching = true;
        let r = f(self);
        self.batching = false;
        if std::mem::take(&mut self.rescan_due) {
            self.rescan_added();
        }
        if self.correlator.take_selectors_added() {
            self.track_selected();
        }
        r
    }

    /// Track the live processes a cgroup/container/pod/exe holder takes in.
    fn track_selected(&mut self) {
        for pid in self.correlator.resolve_holders(&mut self.enricher) {
            if !self.sensors.is_tracked(pid) {
                self.track(pid, TRACK_AGENT);
            }
        }
    }

    /// The one way the agent tracks a process: in the kernel's tracked set
    /// (`flag` says why), its TLS libraries attached, and the capture
    /// programs attached now if they are not (its next write must be
    /// captured, not the next tick's).
    fn track(&mut self, pid: u32, flag: u32) {
        if let Err(e) = self.sensors.track_pid(pid, flag) {
            tracing::warn!("{e:#}");
        }
        self.sensors.scan_tls(&self.host_proc, pid);
        self.capture_needed();
    }

    /// Something needs the capture programs: attach them now if they are
    /// not, and restart the grace before a detach.
    fn capture_needed(&mut self) {
        self.capture_idle_since = None;
        if !self.sensors.capture_attached() {
            self.update_capture(Instant::now());
        }
    }

    /// A fanotify event as it arrives (before its dedup delay). While the
    /// capture programs are detached, no tracepoint tracked the process
    /// that opened or read a watched file: track it now (as the kernel
    /// would have), which attaches the capture programs for what it does
    /// with the bytes next.
    pub fn fanotify_arrived(&mut self, f: &FanEvent) {
        if self.sensors.capture_attached()
            || !matches!(f.kind, FanKind::Open | FanKind::Read)
            || self.sensors.is_tracked(f.pid)
            || f.pid == std::process::id()
        {
            return;
        }
        self.enricher.refresh(f.pid);
        self.track(f.pid, TRACK_OPENED_WATCHED);
    }

    /// Tracked processes still alive; the entries of the gone ones (a pid
    /// holder that exited before it was tracked) are removed.
    fn count_live_tracked(&mut self) -> usize {
        let mut n = 0;
        for pid in self.sensors.tracked_pids() {
            if self.host_proc.join(pid.to_string()).exists() {
                n += 1;
            } else {
                self.sensors.untrack_pid(pid);
            }
        }
        n
    }

    /// The capture programs attached while a tracked process is alive, a
    /// secret value is known ([`Agent::replay_watch`]) or a selector holder
    /// is issued (its processes are recognised by their exec), or always
    /// with `capture_always`; detached [`CAPTURE_GRACE`] after none holds.
    fn update_capture(&mut self, now: Instant) {
        self.live_tracked = self.count_live_tracked();
        let want = self.sensors.capture_always
            || self.live_tracked > 0
            || self.replay_watch()
            || self.correlator.has_selector_holders();
        let on = self.sensors.capture_attached();
        let switch = if want {
            self.capture_idle_since = None;
            !on
        } else if on {
            let since = *self.capture_idle_since.get_or_insert(now);
            now.duration_since(since) >= CAPTURE_GRACE
        } else {
            false
        };
        if switch && self.sensors.set_capture(want) {
            self.capture_idle_since = None;
            tracing::info!("capture {}", self.capture_reason());
            self.publish_capture();
        }
    }

    /// A secret's value is known here (learned, or imported from the fleet)
    /// and first bytes of new connections are captured: a process that
    /// never held it may replay it, so the capture programs stay attached
    /// (`capture_new_connections = false` gives that up for the overhead).
    fn replay_watch(&self) -> bool {
        self.sensors.capture_new_conns && self.correlator.fingerprint_count() > 0
    }

    /// What is attached and why (the `ready` line, the log, `/metrics`).
    pub fn capture_reason(&self) -> String {
        let lifecycle = self
            .sensors
            .status
            .iter()
            .filter(|s| s.attached && s.probe.lifecycle())
            .count();
        let capture = self.sensors.attached() - lifecycle;
        if self.sensors.capture_always {
            format!(
                "always (capture_always): {capture} capture and {lifecycle} lifecycle probes \
                 attached"
            )
        } else if self.sensors.capture_attached() {
            format!(
                "on demand: {capture} capture and {lifecycle} lifecycle probes attached \
                 ({} tracked processes alive{}{})",
                self.live_tracked,
                if self.correlator.has_selector_holders() {
                    ", selector holders issued: their processes are tracked from their exec"
                } else {
                    ""
                },
                if self.replay_watch() {
                    format!(
                        ", {} secret values known: new connections scanned for replays",
                        self.correlator.fingerprint_count()
                    )
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "on demand: capture probes detached (no tracked process alive, no secret \
                 value known, no selector holder), {lifecycle} lifecycle probes attached"
            )
        }
    }

    /// The probes' state in the metrics and health.
    fn publish_capture(&self) {
        use crate::metrics::Metric;
        let m = &self.metrics;
        m.set_probes(
            self.sensors.attached() as u64,
            self.sensors.status.len() as u64,
            true,
        );
        m.set(
            Metric::CaptureAttached,
            "",
            self.sensors.capture_attached() as u64,
        );
        m.set(Metric::CaptureSwitches, "", self.sensors.capture_switches);
        for st in &self.sensors.status {
            m.set(Metric::ProbeAttached, st.probe.program, st.attached as u64);
        }
    }

    /// Expand every watch (files created or replaced since), and map every
    /// watched file to the secrets delivered there.
    fn rescan(&mut self) {
        let found = self.watches.rescan(&mut self.sensors);
        self.watch_found(&found);
        for (path, key) in self.watches.watched() {
            self.correlator.on_file(path, key);
        }
        self.watch_paths.clear();
        self.refresh_enforcement();
    }

    /// After records: expand only the watches they added and map only the
    /// files they name (a batch costs what it adds, not what is recorded).
    fn rescan_added(&mut self) {
        let found = self.watches.rescan_added(&mut self.sensors);
        self.watch_found(&found);
        for m in &found {
            self.correlator.on_file(&m.path, m.key);
        }
        let mut elsewhere = std::collections::HashSet::new();
        for path in std::mem::take(&mut self.watch_paths) {
            match self.watches.watched_key(&path) {
                Some(key) => self.correlator.on_file(&path, key),
                // Replaced since it was watched (or not there yet): the
                // inodes watched under that name, if any.
                None => {
                    elsewhere.insert(path);
                }
            }
        }
        if !elsewhere.is_empty() {
            for (path, key) in self.watches.watched() {
                if elsewhere.contains(path) {
                    self.correlator.on_file(path, key);
                }
            }
        }
        self.refresh_enforcement();
    }

    /// Files newly watched: fanotify marks, and issuances for the
    /// discovered ones.
    fn watch_found(&mut self, found: &[crate::watch::NewMatch]) {
        let mut discovered = Vec::new();
        for m in found {
            if let Some(f) = self.fanotify.as_mut() {
                if let Err(e) = f.mark(&m.path) {
                    tracing::warn!("{e:#}");
                }
                f.watch_dirs_of(&m.path);
            }
            tracing::info!("watching {} (inode {})", m.path, m.key.ino);
            if self.discover.contains(&m.watch_id) && !self.correlator.delivers(&m.path) {
                discovered.push(m.path.clone());
            }
        }
        for path in discovered {
            let iss = crate::issuance::discover::issuance_for(&path, Utc::now());
            if let Err(e) = self.apply_record(Record::Issue(iss), "discovered") {
                tracing::warn!("discovered {path}: {e}");
            }
        }
    }

    /// What the fanotify thread decides permission events from.
    fn refresh_enforcement(&self) {
        if let Some(f) = self.fanotify.as_ref().filter(|f| f.enforcing()) {
            f.set_policy(self.correlator.enforce_policy());
        }
    }

    /// An issuance or revocation from any source.
    fn apply_record(&mut self, rec: Record, origin: &str) -> Result<serde_json::Value, String> {
        if let Record::Issue(iss) = &rec {
            // Refusals are checked before anything is applied, and counted.
            let refused = |agent: &Self, reason: &str, why: String| {
                agent
                    .metrics
                    .inc(crate::metrics::Metric::IssuancesRefused, reason);
                Err(format!("issuance of {:?} refused: {why}", iss.secret_id))
            };
            if let Some(why) = self.correlator.reissue_refusal(iss, Utc::now()) {
                return refused(self, "holder_change", why);
            }
            for (i, d) in iss.delivery.iter().enumerate() {
                if let crate::issuance::Delivery::File(p) = d {
                    if let Err(e) = crate::watch::check_literal(p) {
                        return refused(
                            self,
                            "unwatchable_path",
                            format!("delivery[{i}].file: {e}"),
                        );
                    }
                }
            }
        }
        let stored = match &rec {
            Record::Issue(i) => StoreItem::Issuance(i.clone(), origin.to_string()),
            Record::Revoke { secret_id, at } => {
                StoreItem::Revocation(secret_id.clone(), at.unwrap_or_else(Utc::now))
            }
        };
        let (id, out) = self.correlator.apply(rec, &mut self.enricher)?;
        self.store.send(stored);
        // Logged once acted on: its holder is tracked and the capture
        // probes attached by then.
        let r = self.act(out).map_err(|e| format!("{e:#}"));
        tracing::info!("{origin}: secret {id} recorded");
        r?;
        Ok(json!({"secret_id": id}))
    }

    /// The secrets the store knows (a restart): applied, not stored again.
    fn restore(&mut self, rows: Vec<(String, String, Option<chrono::DateTime<Utc>>)>) {
        let now = Utc::now();
        self.batched(|agent| {
            for (json, origin, revoked) in rows {
                let rec = match parse_record(&json, now) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("stored issuance not restored: {e}");
                        continue;
                    }
                };
                if let Some(src) = agent.source_of(&origin) {
                    agent.sources[src].secrets += 1;
                } else if origin == "api" {
                    agent.api_secrets += 1;
                }
                let id = match agent.correlator.apply(rec, &mut agent.enricher) {
                    Ok((id, out)) => {
                        if let Err(e) = agent.act(out) {
                            tracing::warn!("restoring {id}: {e:#}");
                        }
                        id
                    }
                    Err(e) => {
                        tracing::warn!("stored issuance not restored: {e}");
                        continue;
                    }
                };
                if let Some(at) = revoked {
                    let _ = agent.correlator.apply(
                        Record::Revoke {
                            secret_id: id,
                            at: Some(at),
                        },
                        &mut agent.enricher,
                    );
                }
                agent.secrets_restored += 1;
            }
        });
        if self.secrets_restored > 0 {
            tracing::info!("restored {} secrets from the store", self.secrets_restored);
        }
    }

    /// The source an origin (`path:line`) names.
    fn source_of(&self, origin: &str) -> Option<usize> {
        let (path, _) = origin.rsplit_once(':')?;
        self.sources
            .iter()
            .position(|s| s.path.as_os_str() == std::ffi::OsStr::new(path))
    }

    /// New lines of issuance files and Vault audit logs, one chunk of each
    /// (the rest at the next call: [`Agent::sources_backlog`] says there is
    /// more). A bad record is reported (file, line, field) and skipped.
    pub fn poll_sources(&mut self) -> Result<()> {
        self.sources_backlog = self.poll_sources_chunk();
        Ok(())
    }

    /// At most [`SOURCE_CHUNK`] bytes of each source, parsed and applied;
    /// whether anything was read.
    fn poll_sources_chunk(&mut self) -> bool {
        let mut records = Vec::new();
        let mut leases = Vec::new();
        let mut read = false;
        let mut moved = Vec::new();
        for (n, src) in self.sources.iter_mut().enumerate() {
            let lines = match src.tail.poll() {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("{}: {e}", src.path.display());
                    continue;
                }
            };
            read |= !lines.is_empty();
            if !lines.is_empty() {
                moved.push(n);
            }
            for sk in src.tail.take_skipped() {
                read = true;
                self.bad_records += 1;
                tracing::warn!("{}: {sk}", src.path.display());
            }
            for line in lines {
                if line.text.trim().is_empty() {
                    continue;
                }
                let origin = format!("{}:{}", src.path.display(), line.number);
                match &mut src.vault {
                    Some(pairer) => match pairer.push(&line.text) {
                        Ok(Some(lease)) => leases.push(lease),
                        Ok(None) => {}
                        Err(e) => {
                            self.bad_records += 1;
                            tracing::warn!("{origin}: {e}");
                        }
                    },
                    None => match parse_record(&line.text, Utc::now()) {
                        Ok(r) => records.push((r, origin, n)),
                        Err(e) => {
                            self.bad_records += 1;
                            tracing::warn!("{origin}: {e}");
                        }
                    },
                }
            }
        }
        for lease in leases {
            self.correlator.vault_lease(lease);
        }
        self.batched(|agent| {
            for (r, origin, n) in records {
                agent.records_read += 1;
                if let Record::Issue(i) = &r {
                    if !agent.correlator.knows(&i.secret_id) {
                        let src = &mut agent.sources[n];
                        if src.secrets >= MAX_SECRETS_PER_SOURCE {
                            agent.bad_records += 1;
                            tracing::warn!(
                                "{origin}: secret {} not recorded: {} already defines \
                                 {MAX_SECRETS_PER_SOURCE} secrets (the per-source cap)",
                                i.secret_id,
                                src.path.display()
                            );
                            continue;
                        }
                        src.secrets += 1;
                    }
                }
                if let Err(e) = agent.apply_record(r, &origin) {
                    agent.bad_records += 1;
                    tracing::warn!("{origin}: {e}");
                }
            }
        });
        // After the records read up to there (the store keeps the order).
        for n in moved {
            if let Some(p) = self.sources[n].tail.position() {
                self.store.send(StoreItem::Offset(SourceOffset {
                    path: self.sources[n].path.display().to_string(),
                    dev: p.dev,
                    ino: p.ino,
                    pos: p.pos,
                    line: p.line,
                }));
            }
        }
        read
    }

    /// A message from the fleet: a record (issuance, revocation) this node
    /// applies, or a node's fingerprints.
    pub fn fleet_inbound(&mut self, m: crate::fleet::link::Inbound) {
        match m {
            crate::fleet::link::Inbound::Record(p) => {
                let Some(text) = self.fleet.record_to_apply(&p) else {
                    return;
                };
                match parse_record(&text, Utc::now()) {
                    Ok(r) => self.batched(|agent| {
                        if let Err(e) = agent.apply_record(r, "fleet") {
                            tracing::info!("fleet: {e}");
                        }
                    }),
                    Err(e) => tracing::warn!("fleet: bad record: {e}"),
                }
            }
            crate::fleet::link::Inbound::Fingerprints(p) => {
                let Some(m) = self.fleet.fingerprints_to_import(&p) else {
                    return;
                };
                let Some((r, _)) = self.correlator.fingerprints_mut().import(&m.fingerprints)
                else {
                    tracing::warn!("fleet: malformed fingerprints from node {}", m.node);
                    return;
                };
                for id in &m.secret_ids {
                    if !self.correlator.knows(id) {
                        // Never delivered here: a secret held on that node
                        // (a holder no process here matches).
                        let iss = crate::fleet::foreign_issuance(id, &m.node);
                        if let Err(e) = self
                            .correlator
                            .apply(Record::Issue(iss), &mut self.enricher)
                        {
                            tracing::warn!("fleet: secret {id} of node {}: {e}", m.node);
                            continue;
                        }
                    }
                    if self
                        .correlator
                        .adopt_fingerprint(id, r, format!("fleet node {}", m.node))
                    {
                        self.fleet.mark_foreign(id, &m.node);
                        self.capture_needed();
                        tracing::info!("fleet: fingerprints of {id} from node {} imported", m.node);
                    }
                }
            }
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        self.fleet.publish_learned(&mut self.correlator);
        for (kind, n) in EventKind::ALL.iter().zip(&mut self.kinds_pending) {
            if *n > 0 {
                self.metrics.add(
                    crate::metrics::Metric::Events,
                    kind.as_str(),
                    std::mem::take(n),
                );
            }
        }
        if let Some(out) = self.events.as_mut() {
            out.flush();
        }
        self.alerts.flush();
        Ok(())
    }

    /// Periodic chores.
    pub fn tick(&mut self, rescan: bool) -> Result<()> {
        if rescan {
            self.rescan();
        }
        self.enricher.reap();
        if let Some(out) = self.events.as_mut() {
            out.check_file();
        }
        self.alerts.check_file();
        if rescan {
            self.track_selected();
        }
        let mut alerts = self.capture_losses();
        alerts.extend(self.correlator.tick(false));
        self.act(Outcome {
            alerts,
            ..Default::default()
        })?;
        self.refresh_enforcement();
        self.update_capture(Instant::now());
        self.report_lost()?;
        self.update_metrics();
        Ok(())
    }

    /// What tracked processes lost since the last tick (their capture
    /// budget spent, the ring full): counted in the metrics and logged per
    /// process, and a `monitor.capture.degraded` alert for a holder, while
    /// the flood goes on.
    fn capture_losses(&mut self) -> Vec<crate::correlate::alert::Alert> {
        let mut alerts = Vec::new();
        if self.capture_seen.len() > 65_536 {
            self.capture_seen.clear();
        }
        for (tgid, b) in self.sensors.capture_budgets() {
            let seen = self.capture_seen.entry(tgid).or_insert((0, 0));
            if b.budget_dropped < seen.0 || b.ring_dropped < seen.1 {
                // A new process under a reused pid.
                *seen = (0, 0);
            }
            let budget = b.budget_dropped - seen.0;
            let ring = b.ring_dropped - seen.1;
            *seen = (b.budget_dropped, b.ring_dropped);
            if budget + ring == 0 {
                continue;
            }
            self.metrics.add(
                crate::metrics::Metric::CaptureDropped,
                &tgid.to_string(),
                budget + ring,
            );
            tracing::warn!(
                "pid {tgid}: {} writes not captured ({budget} over its capture budget, \
                 {ring} ring buffer full)",
                budget + ring
            );
            if let Some(p) = crate::enrich::ProcLookup::process_of(&mut self.enricher, tgid) {
                let now = UtcTime::now();
                alerts.extend(self.correlator.capture_degraded(&p, now, budget, ring));
            }
        }
        alerts
    }

    /// Lost kernel events since the last report: a `lost` event and a log
    /// line, never silence.
    pub fn report_lost(&mut self) -> Result<()> {
        let now = self.sensors.counters()?;
        let delta = now
            .ringbuf_full
            .saturating_sub(self.last_counters.ringbuf_full);
        if delta > 0 {
            let per_cpu: Vec<u64> = now
                .ringbuf_full_per_cpu
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    n.saturating_sub(*self.last_counters.ringbuf_full_per_cpu.get(i).unwrap_or(&0))
                })
                .collect();
            tracing::warn!("lost {delta} kernel events (ring buffer full), per CPU {per_cpu:?}");
            let ev = Event {
                id: self.enricher.alloc_id(),
                time: UtcTime::now(),
                kind: EventKind::Lost,
                syscall: "ringbuf".into(),
                process: Process::default(),
                tracked: false,
                detail: Detail {
                    lost: Some(delta),
                    lost_per_cpu: Some(per_cpu),
                    ..Default::default()
                },
            };
            self.emit(ev);
        }
        let fan_lost = self.fanotify.as_ref().map_or(0, |f| f.lost());
        if fan_lost > self.last_fan_lost {
            let delta = fan_lost - self.last_fan_lost;
            self.last_fan_lost = fan_lost;
            tracing::warn!("lost {delta} fanotify events (queue overflow or agent too slow)");
            let ev = Event {
                id: self.enricher.alloc_id(),
                time: UtcTime::now(),
                kind: EventKind::Lost,
                syscall: "fanotify".into(),
                process: Process::default(),
                tracked: false,
                detail: Detail {
                    lost: Some(delta),
                    ..Default::default()
                },
            };
            self.emit(ev);
        }
        let dropped = self.store.dropped();
        if dropped > self.last_store_dropped {
            // Queue overflow only: failed writes are logged by the writer.
            tracing::warn!(
                "event store could not keep up: {} items dropped ({} in all)",
                dropped - self.last_store_dropped,
                dropped
            );
            self.last_store_dropped = dropped;
        }
        self.last_counters = now;
        Ok(())
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        self.sensors.counters()
    }

    /// Shutdown: every open roll-up goes out, the store is flushed.
    pub fn finish(&mut self) -> Result<()> {
        let rollups = self.correlator.tick(true);
        self.act(Outcome {
            alerts: rollups,
            ..Default::default()
        })?;
        self.report_lost()?;
        // Alerts and records are written; a backlog of events is not
        // waited for (counted as dropped).
        let before = self.store.dropped();
        self.store.shed_events();
        self.store.flush();
        let shed = self.store.dropped() - before;
        self.fleet.finish();
        if shed > 0 {
            tracing::warn!("shutdown: {shed} queued events not stored");
        }
        self.flush()
    }
}

/// The narrow interface the API's routes use.
impl Control for Agent {
    fn secrets(&self) -> serde_json::Value {
        self.correlator.secrets_json()
    }

    fn watches(&self) -> Vec<(u32, String)> {
        self.watches
            .patterns()
            .map(|(id, p)| (id, p.to_string()))
            .collect()
    }

    fn add_watch(&mut self, pattern: &str) -> Result<u32> {
        let id = self.watches.add(pattern)?;
        self.rescan();
        Ok(id)
    }

    fn issue(
        &mut self,
        records: Vec<Record>,
        text: &str,
    ) -> Result<Vec<serde_json::Value>, IssueRefused> {
        let new = records
            .iter()
            .filter(|r| matches!(r, Record::Issue(i) if !self.correlator.knows(&i.secret_id)))
            .count() as u64;
        if self.api_secrets + new > MAX_SECRETS_PER_SOURCE {
            self.bad_records += new;
            return Err(IssueRefused::OverCap {
                defined: self.api_secrets,
                new,
                cap: MAX_SECRETS_PER_SOURCE,
            });
        }
        self.api_secrets += new;
        let applied = self.batched(|agent| {
            let mut done = Vec::new();
            for r in records {
                done.push(agent.apply_record(r, "api")?);
            }
            Ok::<_, String>(done)
        });
        let done = applied.map_err(|e| {
            self.bad_records += 1;
            tracing::warn!("api: {e}");
            IssueRefused::Invalid(e)
        })?;
        self.fleet.publish_records(text);
        Ok(done)
    }

    fn count_bad_records(&mut self, n: u64) {
        self.bad_records += n;
    }

    fn queries(&self) -> StoreQueries {
        StoreQueries::new(self.db.clone(), self.store.sender())
    }
}

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> Result<()> {
    // A refused metrics address fails before anything is loaded.
    if let Some(addr) = opts.metrics {
        crate::metrics::check_bind_addr(addr, opts.metrics_allow_non_loopback)?;
    }
    // Everything the agent creates is private (0600 files, 0700
    // directories), whatever mode a library asks for.
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
    let (mut agent, mut observer) = Agent::start(&opts)?;
    let (api_tx, mut api_rx) = mpsc::channel::<ApiRequest>(API_BACKLOG);
    let metrics = agent.metrics();
    let stop = Arc::new(Stop::default());
    serve_thread(
        &Endpoints {
            api: opts.api.clone(),
            metrics: opts.metrics,
            metrics_allow_non_loopback: opts.metrics_allow_non_loopback,
        },
        api_tx,
        agent.queries(),
        metrics.clone(),
        stop.clone(),
    )?;
    metrics.mark_drained();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sources = tokio::time::interval(Duration::from_millis(250));
    let rescan_ticks = opts.rescan_every.as_secs().max(1);
    let mut ticks: u64 = 0;
    let attached = agent.sensors().attached();
    let total = agent.sensors().status.len();
    let mut fan_rx = agent.fanotify.as_mut().and_then(|f| f.take_events());
    // Something created or renamed next to a watched file: rescan now.
    let dir_changed = agent.fanotify.as_ref().map(|f| f.changed());
    let mut fan_tick = tokio::time::interval(crate::sensors::fanotify::DEDUP_DELAY / 3);
    let mut fleet_rx = agent.fleet.take_inbound();
    crate::logging::say(
        false,
        format_args!(
            "monitor: ready: {attached}/{total} probes attached, capture {}, {} watched files, \
             {} secrets ({} restored from the store, {} issuance records read), {}",
            agent.capture_reason(),
            agent.watches.watched_inodes(),
            agent.correlator.secret_count(),
            agent.secrets_restored,
            agent.records_read,
            agent
                .fanotify
                .as_ref()
                .map_or_else(|| "fanotify: off".to_string(), |f| f.describe())
        ),
    );
    let mut batch = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            r = observer.next_batch(&mut batch) => {
                r?;
                for raw in batch.drain(..) {
                    // A signal is not kept waiting by a long batch.
                    if stop.requested() {
                        break;
                    }
                    agent.handle(raw)?;
                }
                agent.flush()?;
                metrics.mark_drained();
            }
            Some(f) = async {
                match fan_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                agent.fanotify_arrived(&f);
                agent.fan_queue.push(f);
            }
            _ = async {
                match &dir_changed {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => {
                agent.rescan();
                agent.flush()?;
            }
            _ = fan_tick.tick(), if !agent.fan_queue.is_empty() => {
                agent.fanotify_due()?;
                agent.flush()?;
            }
            Some(req) = api_rx.recv() => {
                crate::api::routes::answer(&mut agent, req);
                agent.flush()?;
            }
            Some(m) = async {
                match fleet_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                agent.fleet_inbound(m);
                agent.flush()?;
            }
            _ = sources.tick() => {
                observer.release_stale(&mut batch);
                for raw in batch.drain(..) {
                    agent.handle(raw)?;
                }
                agent.poll_sources()?;
                agent.flush()?;
            }
            // A backlog is read a chunk at a time, between event batches.
            _ = std::future::ready(()), if agent.sources_backlog => {
                agent.poll_sources()?;
                agent.flush()?;
            }
            _ = tick.tick() => {
                ticks += 1;
                agent.tick(ticks.is_multiple_of(rescan_ticks))?;
                agent.flush()?;
                // The loop that polls the ring buffer is alive (an idle
                // node has no batches to prove it).
                metrics.mark_drained();
            }
            _ = stop.notify.notified() => break,
        }
        if stop.requested() {
            break;
        }
    }
    observer.release_all(&mut batch);
    for raw in batch.drain(..) {
        agent.handle(raw)?;
    }
    agent.finish()?;
    let c = agent.counters()?;
    crate::logging::say(
        false,
        format_args!(
            "monitor: stopped: {} events, {} alerts, {} lost in kernel, {} undecodable, \
         {} write chunks without their write, {} bad records, {} issuance records read, \
         {} secrets restored",
            agent.events_seen,
            agent.alerts_sent,
            c.ringbuf_full,
            observer.decode_errors,
            observer.orphan_chunks(),
            agent.bad_records,
            agent.records_read,
            agent.secrets_restored
        ),
    );
    if let Some(path) = &opts.api {
        let _ = std::fs::remove_file(path);
    }
    drop(agent); // detaches every program
    Ok(())
}
