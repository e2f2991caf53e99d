//! Wiring: the sensors loaded, the enricher, correlator, store, feeds and
//! sources built, the store's secrets restored, the backlog read.
use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Instant};

use anyhow::{Context, Result};

use super::{Agent, RunOptions, SOURCE_CHUNK, START_BACKLOG, STORE_QUEUE};
use crate::{
    correlate::{fingerprint::FingerprintKey, Correlator},
    enrich::{cgroup::CgroupResolver, k8s::K8sResolver, procfs::ProcFs, Enricher},
    event::EventKind,
    issuance::{source::Source, tail::Position},
    metrics::Metrics,
    observer::Observer,
    output::JsonLines,
    sensors::{
        fanotify::{FanQueue, Fanotify},
        KernelCounters, Sensors,
    },
    store::{
        writer::{SourceOffset, StoreWriter},
        Store,
    },
    watch::WatchSet,
};

impl Agent {
    pub fn start(opts: &RunOptions) -> Result<(Self, Observer)> {
        let file_key = opts.fleet.read_key()?;
        let key = match file_key.as_ref().or(opts.fingerprint_key.as_ref()) {
            Some(hex) => FingerprintKey::from_hex(hex).context("fingerprint_key")?,
            None => FingerprintKey::random().context("fingerprint key")?,
        };
        let mut sensors = Sensors::load(&opts.sensors)?;
        let mounts = crate::host::parse_mountinfo(
            &std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?,
        )?;
        let cgroup2_root = crate::host::cgroup2_mount(&mounts);
        let fanotify = match Fanotify::start(
            &opts.host_proc,
            cgroup2_root.as_deref(),
            opts.enforce_read_foreign,
        ) {
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
        let source = |p: &PathBuf, vault: bool| {
            let resume = offsets.get(&p.display().to_string()).map(|o| Position {
                dev: o.dev,
                ino: o.ino,
                pos: o.pos,
                line: o.line,
            });
            Source::new(p, vault, SOURCE_CHUNK, resume)
        };
        let mut sources = Vec::new();
        for p in &opts.issuances {
            sources.push(source(p, false));
        }
        for p in &opts.vault_audit {
            sources.push(source(p, true));
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
}
