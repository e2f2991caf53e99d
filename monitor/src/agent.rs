//! `monitor run`: sensors -> observer -> enrichment -> correlation ->
//! exporters, fed by issuance sources (files, Vault audit logs, the API),
//! with the periodic chores (watch rescans, process reaping, lost-event
//! reports, alert roll-ups) and a clean shutdown on SIGINT/SIGTERM that
//! detaches every probe.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use chrono::Utc;
use monitor_common::{FdKey, FileInfo, TrackedFd, DATA_FIRST_BYTES, HDR_TRACKED, TRACK_AGENT};
use serde_json::json;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    api::{ApiRequest, ApiResponse},
    correlate::{fingerprint::FingerprintKey, Correlator, Outcome},
    enrich::{cgroup::CgroupResolver, procfs::ProcFs, Enricher},
    event::{format_time, Detail, Event, Process},
    issuance::{parse_record, tail::Tailer, vault::VaultPairer, Record},
    observer::{decode::RawEvent, Observer},
    output::JsonLines,
    sensors::{KernelCounters, SensorOptions, Sensors},
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
    /// Globs whose files become implicit issuances (discovered secrets).
    pub discover: Vec<String>,
}

struct Source {
    path: PathBuf,
    tail: Tailer,
    /// Vault audit log (else an issuance file).
    vault: Option<VaultPairer>,
}

pub struct Agent {
    sensors: Sensors,
    watches: WatchSet,
    enricher: Enricher,
    correlator: Correlator,
    events: Option<JsonLines>,
    alerts: JsonLines,
    sources: Vec<Source>,
    /// Watch ids of the discovery globs.
    discover: Vec<u32>,
    last_counters: KernelCounters,
    pub events_seen: u64,
    pub alerts_sent: u64,
    pub bad_records: u64,
}

impl Agent {
    pub fn start(opts: &RunOptions) -> Result<(Self, Observer)> {
        let key = match &opts.fingerprint_key {
            Some(hex) => FingerprintKey::from_hex(hex).context("fingerprint_key")?,
            None => FingerprintKey::random().context("fingerprint key")?,
        };
        let mut sensors = Sensors::load(&opts.sensors)?;
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
        let cgroups = crate::host::cgroup2_mount(&mounts).map(CgroupResolver::new);
        if cgroups.is_none() {
            log::warn!("no cgroup v2 mount: cgroup paths come from /proc/<pid>/cgroup");
        }
        let enricher = Enricher::new(
            ProcFs::new(opts.host_proc.clone()),
            cgroups,
            crate::host::boot_to_realtime_offset_ns(),
        );
        let events = match &opts.events {
            Some(t) => Some(JsonLines::open(t)?),
            None => None,
        };
        let alerts = JsonLines::open(&opts.alerts)?;
        let mut sources = Vec::new();
        for p in &opts.issuances {
            sources.push(Source {
                path: p.clone(),
                tail: Tailer::new(p),
                vault: None,
            });
        }
        for p in &opts.vault_audit {
            sources.push(Source {
                path: p.clone(),
                tail: Tailer::new(p),
                vault: Some(VaultPairer::new(10_000)),
            });
        }
        let mut agent = Self {
            sensors,
            watches,
            enricher,
            correlator: Correlator::new(key, opts.aggregate_window),
            events,
            alerts,
            sources,
            discover,
            last_counters: KernelCounters::default(),
            events_seen: 0,
            alerts_sent: 0,
            bad_records: 0,
        };
        agent.poll_sources()?;
        agent.rescan();
        Ok((agent, observer))
    }

    pub fn sensors(&self) -> &Sensors {
        &self.sensors
    }

    /// One decoded record through enrichment, correlation and out.
    pub fn handle(&mut self, raw: RawEvent) -> Result<()> {
        let pid = raw.header().pid;
        let tracked = raw.header().flags & HDR_TRACKED != 0;
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
                        log::warn!("{e:#}");
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
        if let Some(sink) = self.events.as_mut() {
            sink.write(&ev)?;
        }
        self.act(out)
    }

    /// Alerts out, processes tracked, delivery files watched.
    fn act(&mut self, out: Outcome) -> Result<()> {
        for a in &out.alerts {
            self.alerts.write(a)?;
            self.alerts_sent += 1;
        }
        for pid in out.track {
            if let Err(e) = self.sensors.track_pid(pid, TRACK_AGENT) {
                log::warn!("{e:#}");
            }
        }
        if !out.watch.is_empty() {
            for p in &out.watch {
                if let Err(e) = self.watches.add(p) {
                    log::warn!("delivery file: {e:#}");
                }
            }
            self.rescan();
        }
        Ok(())
    }

    fn rescan(&mut self) {
        let mut discovered = Vec::new();
        for m in self.watches.rescan(&mut self.sensors) {
            log::info!("watching {} (inode {})", m.path, m.key.ino);
            if self.discover.contains(&m.watch_id) && !self.correlator.delivers(&m.path) {
                discovered.push(m.path);
            }
        }
        for path in discovered {
            let iss = crate::issuance::discover::issuance_for(&path, Utc::now());
            if let Err(e) = self.apply_record(Record::Issue(iss), "discovered") {
                log::warn!("discovered {path}: {e}");
            }
        }
        for (path, key) in self.watches.known() {
            self.correlator.on_file(&path, key);
        }
    }

    /// An issuance or revocation from any source.
    fn apply_record(&mut self, rec: Record, origin: &str) -> Result<serde_json::Value, String> {
        let (id, out) = self.correlator.apply(rec, &mut self.enricher)?;
        log::info!("{origin}: secret {id} recorded");
        self.act(out).map_err(|e| format!("{e:#}"))?;
        Ok(json!({"secret_id": id}))
    }

    /// New lines of issuance files and Vault audit logs. A bad record is
    /// reported (file, line, field) and skipped.
    pub fn poll_sources(&mut self) -> Result<()> {
        let mut records = Vec::new();
        let mut leases = Vec::new();
        for src in &mut self.sources {
            let lines = match src.tail.poll() {
                Ok(l) => l,
                Err(e) => {
                    log::warn!("{}: {e}", src.path.display());
                    continue;
                }
            };
            for sk in src.tail.take_skipped() {
                self.bad_records += 1;
                log::warn!(
                    "{}:{}: skipped: {:?}",
                    src.path.display(),
                    sk.number,
                    sk.reason
                );
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
                            log::warn!("{origin}: {e}");
                        }
                    },
                    None => match parse_record(&line.text, Utc::now()) {
                        Ok(r) => records.push((r, origin)),
                        Err(e) => {
                            self.bad_records += 1;
                            log::warn!("{origin}: {e}");
                        }
                    },
                }
            }
        }
        for lease in leases {
            self.correlator.vault_lease(lease);
        }
        for (r, origin) in records {
            if let Err(e) = self.apply_record(r, &origin) {
                self.bad_records += 1;
                log::warn!("{origin}: {e}");
            }
        }
        Ok(())
    }

    /// One API request (routing lives here; transport in `api::server`).
    pub fn api(&mut self, req: ApiRequest) {
        let resp = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/issuances") => self.api_records(&req.body),
            ("GET", "/secrets") => ApiResponse::ok(self.correlator.secrets_json()),
            ("GET", "/watches") => ApiResponse::ok(json!(self
                .watches
                .patterns()
                .map(|(id, p)| json!({"id": id, "pattern": p}))
                .collect::<Vec<_>>())),
            ("POST", "/watches") => {
                let pattern = serde_json::from_slice::<serde_json::Value>(&req.body)
                    .ok()
                    .and_then(|v| v["pattern"].as_str().map(str::to_string));
                match pattern {
                    None => ApiResponse::error(400, "body must be {\"pattern\": \"/abs/glob\"}"),
                    Some(p) => match self.watches.add(&p) {
                        Ok(id) => {
                            self.rescan();
                            ApiResponse::created(json!({"id": id, "pattern": p}))
                        }
                        Err(e) => ApiResponse::error(400, format!("{e:#}")),
                    },
                }
            }
            (_, "/issuances" | "/secrets" | "/watches") => {
                ApiResponse::error(405, "method not allowed")
            }
            _ => ApiResponse::error(404, format!("no such endpoint: {}", req.path)),
        };
        let _ = req.reply.send(resp);
    }

    /// One record, or several (one JSON object a line). All or nothing:
    /// a bad line rejects the request and names the line and field.
    fn api_records(&mut self, body: &[u8]) -> ApiResponse {
        let Ok(text) = std::str::from_utf8(body) else {
            return ApiResponse::error(400, "body is not UTF-8");
        };
        let now = Utc::now();
        let mut records = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match parse_record(line, now) {
                Ok(r) => records.push(r),
                Err(e) => {
                    self.bad_records += 1;
                    return ApiResponse::error(400, format!("line {}: {e}", i + 1));
                }
            }
        }
        if records.is_empty() {
            return ApiResponse::error(
                400,
                "empty body: expected an issuance or revocation record",
            );
        }
        let mut done = Vec::new();
        for r in records {
            match self.apply_record(r, "api") {
                Ok(v) => done.push(v),
                Err(e) => return ApiResponse::error(400, e),
            }
        }
        ApiResponse::created(if done.len() == 1 {
            done.remove(0)
        } else {
            json!(done)
        })
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(out) = self.events.as_mut() {
            out.flush()?;
        }
        self.alerts.flush()
    }

    /// Periodic chores.
    pub fn tick(&mut self, rescan: bool) -> Result<()> {
        if rescan {
            self.rescan();
        }
        self.enricher.reap();
        if rescan {
            for pid in self.correlator.resolve_holders(&mut self.enricher) {
                if !self.sensors.is_tracked(pid) {
                    if let Err(e) = self.sensors.track_pid(pid, TRACK_AGENT) {
                        log::warn!("{e:#}");
                    }
                }
            }
        }
        let rollups = self.correlator.tick(false);
        self.act(Outcome {
            alerts: rollups,
            ..Default::default()
        })?;
        self.report_lost()
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
            log::warn!("lost {delta} kernel events (ring buffer full), per CPU {per_cpu:?}");
            let ev = Event {
                id: 0,
                time: format_time(Utc::now().timestamp_nanos_opt().unwrap_or(0) as i128),
                kind: "lost".into(),
                syscall: "ringbuf".into(),
                process: Process::default(),
                tracked: false,
                detail: Detail {
                    lost: Some(delta),
                    lost_per_cpu: Some(per_cpu),
                    ..Default::default()
                },
            };
            if let Some(sink) = self.events.as_mut() {
                sink.write(&ev)?;
            }
        }
        self.last_counters = now;
        Ok(())
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        self.sensors.counters()
    }

    /// Shutdown: every open roll-up goes out.
    pub fn finish(&mut self) -> Result<()> {
        let rollups = self.correlator.tick(true);
        self.act(Outcome {
            alerts: rollups,
            ..Default::default()
        })?;
        self.report_lost()?;
        self.flush()
    }
}

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> Result<()> {
    let (mut agent, mut observer) = Agent::start(&opts)?;
    let (api_tx, mut api_rx) = mpsc::channel::<ApiRequest>(64);
    if let Some(path) = &opts.api {
        let listener = crate::api::server::bind(path).await?;
        tokio::spawn(crate::api::server::serve(listener, api_tx.clone()));
        log::info!("API on {}", path.display());
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sources = tokio::time::interval(Duration::from_millis(250));
    let rescan_ticks = opts.rescan_every.as_secs().max(1);
    let mut ticks: u64 = 0;
    let attached = agent.sensors().attached();
    let total = agent.sensors().status.len();
    eprintln!(
        "monitor: ready: {attached}/{total} probes attached, {} watched files, {} secrets",
        agent.watches.watched_inodes(),
        agent.correlator.secret_count()
    );
    let mut batch = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            r = observer.next_batch(&mut batch) => {
                r?;
                for raw in batch.drain(..) {
                    agent.handle(raw)?;
                }
                agent.flush()?;
            }
            Some(req) = api_rx.recv() => {
                agent.api(req);
                agent.flush()?;
            }
            _ = sources.tick() => {
                agent.poll_sources()?;
                agent.flush()?;
            }
            _ = tick.tick() => {
                ticks += 1;
                agent.tick(ticks.is_multiple_of(rescan_ticks))?;
                agent.flush()?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    agent.finish()?;
    let c = agent.counters()?;
    eprintln!(
        "monitor: stopped: {} events, {} alerts, {} lost in kernel, {} undecodable, {} bad records",
        agent.events_seen,
        agent.alerts_sent,
        c.ringbuf_full,
        observer.decode_errors,
        agent.bad_records
    );
    if let Some(path) = &opts.api {
        let _ = std::fs::remove_file(path);
    }
    drop(agent); // detaches every program
    Ok(())
}
