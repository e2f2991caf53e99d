//! Prometheus metrics and the health check, served over HTTP/1.1 by hyper
//! on TCP (`--metrics ADDR`, off by default).
//!
//! [`Metrics`] is shared as `Arc<Metrics>`: the agent updates it from its
//! event loop, the server renders it. Every update is a relaxed atomic or a
//! short uncontended lock, so it costs nothing measurable per event.
//!
//! Endpoints (`GET` or `HEAD`; anything else is 404, another method on a
//! known path 405):
//! - `/metrics`: the text exposition format 0.0.4 (prometheus-client's
//!   encoder, over a snapshot taken per scrape), every name prefixed
//!   `monitor_`, families sorted by name, samples by label value.
//! - `/healthz`: `200 {"status":"ok",...}` or `503 {"status":"unhealthy",
//!   "reasons":[...],...}`. Healthy means: the probes are loaded with every
//!   required probe attached ([`Metrics::set_probes`]), and the ring buffer
//!   was drained within the last [`DEFAULT_MAX_DRAIN_AGE`] (configurable).
//!   An output or the store failing while monitoring goes on is
//!   `200 {"status":"degraded","reasons":[...]}` ([`Metrics::set_problem`]).
//!
//! **The agent must call [`Metrics::mark_drained`] on every 1 s tick, not
//! only when a batch of events arrives**: an idle node produces no events,
//! and the tick proves the event loop (which also polls the ring buffer) is
//! alive. A stuck loop stops both, and `/healthz` turns 503 after the
//! maximum drain age, so the kubelet restarts the pod.
//!
//! Binding refuses a non-loopback address unless `allow_non_loopback` is
//! passed: the metrics carry no secrets, but rule names, feed names and
//! counts are still information about the node. The DaemonSet binds
//! `0.0.0.0:9102` (the kubelet probes the pod IP) only when configured so.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, DescriptorEncoder, EncodeMetric as _, MetricEncoder},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::peers::PeerSlots;

/// Default port of the metrics/health server (`0.0.0.0:9102` in the
/// DaemonSet).
pub const DEFAULT_PORT: u16 = 9102;
/// Default: unhealthy when the ring buffer was not drained for this long.
pub const DEFAULT_MAX_DRAIN_AGE: Duration = Duration::from_secs(10);
/// Largest request head accepted (else 431).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Time allowed to receive a request and to send the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections served at once from one remote IP address; more are
/// answered 503 (if the answer fits the socket buffer at once) and closed
/// straight away, without taking a slot of [`MAX_CONNECTIONS`], so one
/// host holding slow connections cannot keep the kubelet's probes or
/// Prometheus waiting.
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;
/// After an error answer, how long and how much input is read and dropped.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is, for its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// The metrics the agent updates (those of the health check, probes and
/// ring-buffer drain, are set through [`Metrics::set_probes`] and
/// [`Metrics::mark_drained`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// `events_total{kind}`: events emitted, by kind (`open`, `read`, ...).
    Events,
    /// `kernel_lost_events_total{cpu}`: ring-buffer writes that failed, per
    /// CPU (a snapshot of the kernel's per-CPU counters).
    KernelLostEvents,
    /// `kernel_errors_total{kind}`: error paths taken in the eBPF programs
    /// (`map_full`, `read_user_failed`, `kernel_walk_failed`; a snapshot of
    /// the kernel's counters, summed over CPUs). Each is also logged,
    /// rate-limited (target `monitor::ebpf`).
    KernelErrors,
    /// `alerts_total{rule}`: alerts emitted, by rule.
    Alerts,
    /// `alerts_suppressed_total`: identical alerts rolled up into another.
    AlertsSuppressed,
    /// `alerts_rate_limited_total{rule}`: distinct alerts held back by the
    /// per-rule, per-actor rate limit (they go out as one roll-up).
    AlertsRateLimited,
    /// `alerts_allowed_total{rule}`: alerts a known reader (`[[allow]]`)
    /// kept from being raised (their events are stored).
    AlertsAllowed,
    /// `queue_depth{queue}`: items waiting in an internal queue.
    QueueDepth,
    /// `store_dropped_total`: events or alerts the database could not keep.
    StoreDropped,
    /// `feed_failures_total{feed}`: failed deliveries to an alert feed.
    FeedFailures,
    /// `feed_pending{feed}`: alerts waiting (spooled) for a feed.
    FeedPending,
    /// `tracked_processes`: processes tracked in the kernel.
    TrackedProcesses,
    /// `secrets`: secrets known (issued or discovered).
    Secrets,
    /// `watched_files`: watched inodes.
    WatchedFiles,
    /// `watch_refused_files`: files under a watch the kernel map refused.
    WatchRefused,
    /// `bad_records_total`: issuance records rejected.
    BadRecords,
    /// `output_failures_total{output}`: failed writes, flushes and reopens
    /// of the agent's own outputs (`alerts:<path>`, `events:<path>`).
    OutputFailures,
    /// `output_lost_total{output}`: lines that never reached that output.
    OutputLost,
    /// `issuances_refused_total{reason}`: issuance records refused after
    /// parsing (e.g. `holder_change`, `unwatchable_path`).
    IssuancesRefused,
    /// `capture_dropped_total{holder}`: captured writes a tracked process
    /// lost (its capture budget spent, or the ring buffer full), by pid.
    CaptureDropped,
    /// `tls_attached{library}`: files with the TLS uprobes attached (1
    /// each), labelled `<library>:<path>` (`openssl:/lib/.../libssl.so.3`).
    TlsAttached,
    /// `capture_attached`: 1 while the capture programs (syscall and
    /// io_uring tracepoints, libc uprobes) are attached, 0 while detached
    /// (no tracked process alive, see `capture_always`).
    CaptureAttached,
    /// `capture_switches_total`: times the capture programs were attached
    /// or detached.
    CaptureSwitches,
    /// `probe_attached{probe}`: 1 per probe attached now, 0 if not.
    ProbeAttached,
}

impl Metric {
    pub const ALL: [Metric; 24] = [
        Metric::Events,
        Metric::KernelLostEvents,
        Metric::KernelErrors,
        Metric::Alerts,
        Metric::AlertsSuppressed,
        Metric::AlertsRateLimited,
        Metric::AlertsAllowed,
        Metric::QueueDepth,
        Metric::StoreDropped,
        Metric::FeedFailures,
        Metric::FeedPending,
        Metric::TrackedProcesses,
        Metric::Secrets,
        Metric::WatchedFiles,
        Metric::WatchRefused,
        Metric::BadRecords,
        Metric::OutputFailures,
        Metric::OutputLost,
        Metric::IssuancesRefused,
        Metric::CaptureDropped,
        Metric::TlsAttached,
        Metric::CaptureAttached,
        Metric::CaptureSwitches,
        Metric::ProbeAttached,
    ];

    /// The name without the `monitor_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Events => "events_total",
            Metric::KernelLostEvents => "kernel_lost_events_total",
            Metric::KernelErrors => "kernel_errors_total",
            Metric::Alerts => "alerts_total",
            Metric::AlertsSuppressed => "alerts_suppressed_total",
            Metric::AlertsRateLimited => "alerts_rate_limited_total",
            Metric::AlertsAllowed => "alerts_allowed_total",
            Metric::QueueDepth => "queue_depth",
            Metric::StoreDropped => "store_dropped_total",
            Metric::FeedFailures => "feed_failures_total",
            Metric::FeedPending => "feed_pending",
            Metric::TrackedProcesses => "tracked_processes",
            Metric::Secrets => "secrets",
            Metric::WatchedFiles => "watched_files",
            Metric::WatchRefused => "watch_refused_files",
            Metric::BadRecords => "bad_records_total",
            Metric::OutputFailures => "output_failures_total",
            Metric::OutputLost => "output_lost_total",
            Metric::IssuancesRefused => "issuances_refused_total",
            Metric::CaptureDropped => "capture_dropped_total",
            Metric::TlsAttached => "tls_attached",
            Metric::CaptureAttached => "capture_attached",
            Metric::CaptureSwitches => "capture_switches_total",
            Metric::ProbeAttached => "probe_attached",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Metric::Events
            | Metric::KernelLostEvents
            | Metric::KernelErrors
            | Metric::Alerts
            | Metric::AlertsSuppressed
            | Metric::AlertsRateLimited
            | Metric::AlertsAllowed
            | Metric::StoreDropped
            | Metric::FeedFailures
            | Metric::BadRecords
            | Metric::OutputFailures
            | Metric::OutputLost
            | Metric::IssuancesRefused
            | Metric::CaptureDropped
            | Metric::CaptureSwitches => Kind::Counter,
            Metric::QueueDepth
            | Metric::FeedPending
            | Metric::TrackedProcesses
            | Metric::Secrets
            | Metric::WatchedFiles
            | Metric::WatchRefused
            | Metric::TlsAttached
            | Metric::CaptureAttached
            | Metric::ProbeAttached => Kind::Gauge,
        }
    }

    /// The one label of a labelled family.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Metric::Events => Some("kind"),
            Metric::KernelLostEvents => Some("cpu"),
            Metric::KernelErrors => Some("kind"),
            Metric::Alerts | Metric::AlertsRateLimited | Metric::AlertsAllowed => Some("rule"),
            Metric::QueueDepth => Some("queue"),
            Metric::FeedFailures | Metric::FeedPending => Some("feed"),
            Metric::OutputFailures | Metric::OutputLost => Some("output"),
            Metric::IssuancesRefused => Some("reason"),
            Metric::CaptureDropped => Some("holder"),
            Metric::TlsAttached => Some("library"),
            Metric::ProbeAttached => Some("probe"),
            _ => None,
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Metric::Events => "Events emitted, by kind.",
            Metric::KernelLostEvents => {
                "Kernel events lost because the ring buffer was full, per CPU."
            }
            Metric::KernelErrors => {
                "Error paths taken in the eBPF programs (map full, user-memory read or kernel \
                 struct walk failed), by kind."
            }
            Metric::Alerts => "Alerts emitted, by rule.",
            Metric::AlertsAllowed => {
                "Alerts not raised because a known reader ([[allow]]) matched, by rule."
            }
            Metric::AlertsRateLimited => {
                "Distinct alerts held back by the per-rule, per-actor rate limit, by rule."
            }
            Metric::AlertsSuppressed => {
                "Alerts rolled up into an earlier identical alert (aggregation window)."
            }
            Metric::QueueDepth => "Items waiting in an internal queue.",
            Metric::StoreDropped => {
                "Events or alerts the database could not store (queue full or write failed)."
            }
            Metric::FeedFailures => "Failed deliveries to an alert feed, by feed.",
            Metric::FeedPending => "Alerts waiting (spooled) for delivery to a feed, by feed.",
            Metric::TrackedProcesses => "Processes tracked in the kernel.",
            Metric::Secrets => "Secrets known to the agent (issued or discovered).",
            Metric::WatchedFiles => "Watched files (inodes).",
            Metric::WatchRefused => {
                "Files under a watch that the kernel's watch map refused (full): not watched."
            }
            Metric::BadRecords => "Issuance records rejected (bad line or field).",
            Metric::OutputFailures => {
                "Failed writes, flushes and reopens of the alerts and events outputs, by output."
            }
            Metric::OutputLost => {
                "Lines that never reached the alerts or events output, by output."
            }
            Metric::IssuancesRefused => "Issuance records refused when applied, by reason.",
            Metric::CaptureDropped => {
                "Writes of a tracked process not captured (its capture budget spent, or the \
                 ring buffer full), by pid."
            }
            Metric::TlsAttached => {
                "Files with the TLS uprobes attached (1 each), labelled library:path."
            }
            Metric::CaptureAttached => {
                "1 while the capture programs (syscall and io_uring tracepoints, libc uprobes) \
                 are attached; 0 while no tracked process is alive (on demand)."
            }
            Metric::CaptureSwitches => "Times the capture programs were attached or detached.",
            Metric::ProbeAttached => "1 per probe attached now, 0 if detached or unavailable.",
        }
    }
}

/// Liveness of the sensors: probes attached, ring buffer drained.
#[derive(Debug)]
pub struct Health {
    probes_attached: AtomicU64,
    probes_total: AtomicU64,
    /// Set once the probes are loaded with every required one attached.
    probes_required_ok: AtomicBool,
    /// Monotonic origin of `last_drain`.
    base: Instant,
    /// Nanoseconds after `base` of the last drain, plus one (0: never).
    last_drain: AtomicU64,
    /// Unix time of the last drain, in milliseconds (0: never).
    last_drain_unix_ms: AtomicU64,
    max_drain_age: Duration,
    /// What is failing now but leaves the agent monitoring (an output, the
    /// store), by what: `/healthz` says `degraded` and lists them.
    problems: Mutex<BTreeMap<String, String>>,
}

impl Health {
    fn new(max_drain_age: Duration) -> Self {
        Self {
            probes_attached: AtomicU64::new(0),
            probes_total: AtomicU64::new(0),
            probes_required_ok: AtomicBool::new(false),
            base: Instant::now(),
            last_drain: AtomicU64::new(0),
            last_drain_unix_ms: AtomicU64::new(0),
            max_drain_age,
            problems: Mutex::new(BTreeMap::new()),
        }
    }

    fn mark_drained_at(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos();
        let ns = u64::try_from(ns).unwrap_or(u64::MAX - 1);
        self.last_drain.store(ns + 1, Ordering::Relaxed);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_drain_unix_ms.store(unix_ms, Ordering::Relaxed);
    }

    /// Time since the last drain as of `now` (none: never drained).
    fn drain_age(&self, now: Instant) -> Option<Duration> {
        match self.last_drain.load(Ordering::Relaxed) {
            0 => None,
            n => {
                let at = self.base + Duration::from_nanos(n - 1);
                Some(now.saturating_duration_since(at))
            }
        }
    }

    fn check(&self, now: Instant) -> (bool, serde_json::Value) {
        let attached = self.probes_attached.load(Ordering::Relaxed);
        let total = self.probes_total.load(Ordering::Relaxed);
        let required_ok = self.probes_required_ok.load(Ordering::Relaxed);
        let age = self.drain_age(now);
        let mut reasons = Vec::new();
        if !required_ok {
            reasons.push("required probes are not attached".to_string());
        }
        match age {
            None => reasons.push("ring buffer never drained".to_string()),
            Some(a) if a > self.max_drain_age => reasons.push(format!(
                "ring buffer last drained {:.1}s ago (limit {}s)",
                a.as_secs_f64(),
                self.max_drain_age.as_secs_f64()
            )),
            Some(_) => {}
        }
        let healthy = reasons.is_empty();
        let problems: Vec<String> = self
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let status = if !healthy {
            "unhealthy"
        } else if !problems.is_empty() {
            "degraded"
        } else {
            "ok"
        };
        reasons.extend(problems);
        let mut v = json!({
            "status": status,
            "probes_attached": attached,
            "probes_total": total,
            "required_probes_attached": required_ok,
            "last_drain_age_seconds": age.map(|a| (a.as_secs_f64() * 1000.0).round() / 1000.0),
            "max_drain_age_seconds": self.max_drain_age.as_secs_f64(),
        });
        if !reasons.is_empty() {
            v["reasons"] = json!(reasons);
        }
        (healthy, v)
    }
}

/// Every metric of the agent; `Send + Sync`, shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    /// `(metric, label value)` -> value; label value `""` for unlabelled
    /// families.
    values: Mutex<BTreeMap<(Metric, String), u64>>,
    health: Health,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Unhealthy after [`DEFAULT_MAX_DRAIN_AGE`] without a drain.
    pub fn new() -> Self {
        Self::with_max_drain_age(DEFAULT_MAX_DRAIN_AGE)
    }

    pub fn with_max_drain_age(max_drain_age: Duration) -> Self {
        Self {
            values: Mutex::new(BTreeMap::new()),
            health: Health::new(max_drain_age),
        }
    }

    fn values(&self) -> MutexGuard<'_, BTreeMap<(Metric, String), u64>> {
        // A panic elsewhere must not take the metrics down with it.
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `n` to a counter. `label` is the value of the family's label
    /// (`""` for an unlabelled family).
    pub fn add(&self, m: Metric, label: &str, n: u64) {
        debug_assert!(
            m.label().is_some() || label.is_empty(),
            "{} has no label",
            m.name()
        );
        let mut v = self.values();
        match v.get_mut(&(m, label.to_string())) {
            Some(x) => *x = x.saturating_add(n),
            None => {
                v.insert((m, label.to_string()), n);
            }
        }
    }

    /// `add(m, label, 1)`.
    pub fn inc(&self, m: Metric, label: &str) {
        self.add(m, label, 1);
    }

    /// Sets a gauge (or a counter from a snapshot of a monotonic source).
    pub fn set(&self, m: Metric, label: &str, value: u64) {
        debug_assert!(
            m.label().is_some() || label.is_empty(),
            "{} has no label",
            m.name()
        );
        self.values().insert((m, label.to_string()), value);
    }

    /// Current value (0 if never set).
    pub fn get(&self, m: Metric, label: &str) -> u64 {
        self.values()
            .get(&(m, label.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn inc_event(&self, kind: &str) {
        self.inc(Metric::Events, kind);
    }

    pub fn inc_alert(&self, rule: &str) {
        self.inc(Metric::Alerts, rule);
    }
}

/// `alerts_total{rule}`.
impl crate::output::AlertSink for Arc<Metrics> {
    fn sink_name(&self) -> String {
        "metrics".into()
    }
    fn send_alerts(&mut self, alerts: &[crate::correlate::alert::Alert]) -> anyhow::Result<()> {
        for a in alerts {
            self.inc_alert(a.rule.as_str());
        }
        Ok(())
    }
}

impl Metrics {
    pub fn add_alerts_suppressed(&self, n: u64) {
        self.add(Metric::AlertsSuppressed, "", n);
    }

    /// The kernel's cumulative per-CPU lost-event counters
    /// (`KernelCounters::ringbuf_full_per_cpu`), index = CPU.
    pub fn set_lost_per_cpu(&self, per_cpu: &[u64]) {
        let mut v = self.values();
        v.retain(|(m, _), _| *m != Metric::KernelLostEvents);
        for (cpu, n) in per_cpu.iter().enumerate() {
            v.insert((Metric::KernelLostEvents, cpu.to_string()), *n);
        }
    }

    /// The kernel's cumulative error-path counters, by kind
    /// (`monitor_common::Counter::name_of`).
    pub fn set_kernel_errors(&self, c: &crate::sensors::KernelCounters) {
        use monitor_common::Counter;
        for (k, n) in [
            (Counter::MapFull, c.map_full),
            (Counter::ReadUserFailed, c.read_user_failed),
            (Counter::KernelWalkFailed, c.kernel_walk_failed),
        ] {
            self.set(Metric::KernelErrors, Counter::name_of(k as u32), n);
        }
    }

    pub fn set_queue_depth(&self, queue: &str, depth: u64) {
        self.set(Metric::QueueDepth, queue, depth);
    }

    /// The store writer's cumulative count (`StoreWriter::dropped()`).
    pub fn set_store_dropped(&self, total: u64) {
        self.set(Metric::StoreDropped, "", total);
    }

    /// A feed's cumulative count (`Feed::failures()`), by `Feed::name()`.
    pub fn set_feed_failures(&self, feed: &str, total: u64) {
        self.set(Metric::FeedFailures, feed, total);
    }

    pub fn set_feed_pending(&self, feed: &str, pending: u64) {
        self.set(Metric::FeedPending, feed, pending);
    }

    /// The agent's cumulative count (`Agent::bad_records`).
    pub fn set_bad_records(&self, total: u64) {
        self.set(Metric::BadRecords, "", total);
    }

    /// Gauges refreshed on each tick.
    pub fn set_sizes(
        &self,
        tracked_processes: u64,
        secrets: u64,
        watched_files: u64,
        watch_refused: u64,
    ) {
        let mut v = self.values();
        v.insert((Metric::WatchRefused, String::new()), watch_refused);
        v.insert((Metric::TrackedProcesses, String::new()), tracked_processes);
        v.insert((Metric::Secrets, String::new()), secrets);
        v.insert((Metric::WatchedFiles, String::new()), watched_files);
    }

    /// After loading the probes: how many attached of how many, and whether
    /// every required one did (`Sensors::load` fails otherwise, so the agent
    /// passes `true`).
    pub fn set_probes(&self, attached: u64, total: u64, required_ok: bool) {
        let h = &self.health;
        h.probes_attached.store(attached, Ordering::Relaxed);
        h.probes_total.store(total, Ordering::Relaxed);
        h.probes_required_ok.store(required_ok, Ordering::Relaxed);
    }

    /// Something that fails now but leaves the agent monitoring (`what`:
    /// `store`, `alerts`, ...); `None` once it works again. `/healthz`
    /// then answers 200 with `"status":"degraded"` and the reason: a
    /// restart would not free a disk, and would stop the monitoring.
    pub fn set_problem(&self, what: &str, reason: Option<String>) {
        let mut p = self
            .health
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(r) => {
                p.insert(what.to_string(), r);
            }
            None => {
                p.remove(what);
            }
        }
    }

    /// The ring buffer was drained (or the idle event loop ticked): call it
    /// after each batch **and on each 1 s tick**.
    pub fn mark_drained(&self) {
        self.health.mark_drained_at(Instant::now());
    }

    /// `(healthy, details)` for `/healthz`.
    pub fn health(&self) -> (bool, serde_json::Value) {
        self.health_at(Instant::now())
    }

    /// [`Metrics::health`] as of `now`.
    pub fn health_at(&self, now: Instant) -> (bool, serde_json::Value) {
        self.health.check(now)
    }

    /// The text exposition format 0.0.4 (prometheus-client's encoder):
    /// `# HELP`, `# TYPE` and samples of each family, families sorted by
    /// name, samples by label value (CPUs numerically). Unlabelled families
    /// always have a sample (0 until set).
    pub fn render(&self) -> String {
        let mut families: Vec<Family> = Vec::new();
        {
            let values = self.values();
            for m in Metric::ALL {
                let mut samples = Vec::new();
                match m.label() {
                    None => {
                        let v = values.get(&(m, String::new())).copied().unwrap_or(0);
                        samples.push((String::new(), Value::Int(v)));
                    }
                    Some(_) => {
                        let family = values
                            .range((m, String::new())..)
                            .take_while(|((mm, _), _)| *mm == m);
                        for ((_, lv), v) in family {
                            samples.push((lv.clone(), Value::Int(*v)));
                        }
                        if m == Metric::KernelLostEvents {
                            // CPUs numerically: "2" before "10".
                            samples.sort_by_key(|(lv, _)| (lv.len(), lv.clone()));
                        }
                    }
                }
                families.push(Family {
                    name: m.name(),
                    help: m.help(),
                    kind: m.kind(),
                    label: m.label(),
                    samples,
                });
            }
        }
        let h = &self.health;
        let gauge = |name, help, value| Family {
            name,
            help,
            kind: Kind::Gauge,
            label: None,
            samples: vec![(String::new(), value)],
        };
        families.push(gauge(
            "probes_attached",
            "Probes attached.",
            Value::Int(h.probes_attached.load(Ordering::Relaxed)),
        ));
        families.push(gauge(
            "probes_defined",
            "Probes in the probe table (attached or not).",
            Value::Int(h.probes_total.load(Ordering::Relaxed)),
        ));
        let ms = h.last_drain_unix_ms.load(Ordering::Relaxed);
        families.push(gauge(
            "ringbuf_last_drain_timestamp_seconds",
            "Unix time of the last ring-buffer drain or idle tick (0: never).",
            Value::Float(ms as f64 / 1000.0),
        ));
        families.sort_by_key(|f| f.name);

        let mut registry = Registry::with_prefix("monitor");
        registry.register_collector(Box::new(Scrape(families)));
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One family as of a scrape, samples in their order.
#[derive(Debug)]
struct Family {
    /// Without the `monitor_` prefix (a counter's with its `_total`).
    name: &'static str,
    help: &'static str,
    kind: Kind,
    label: Option<&'static str>,
    /// `(label value, value)`; the label value is empty when unlabelled.
    samples: Vec<(String, Value)>,
}

fn encode_value(kind: Kind, v: Value, sample: MetricEncoder) -> std::fmt::Result {
    match (kind, v) {
        (Kind::Counter, Value::Int(n)) => ConstCounter::new(n).encode(sample),
        (Kind::Counter, Value::Float(x)) => ConstCounter::new(x).encode(sample),
        (Kind::Gauge, Value::Int(n)) => ConstGauge::new(n).encode(sample),
        (Kind::Gauge, Value::Float(x)) => ConstGauge::new(x).encode(sample),
    }
}

/// The families of one scrape, as a prometheus-client collector.
#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for f in &self.0 {
            let (name, metric_type) = match f.kind {
                // The encoder adds `_total` to a counter's name.
                Kind::Counter => (
                    f.name.strip_suffix("_total").unwrap_or(f.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (f.name, MetricType::Gauge),
            };
            let mut family = encoder.encode_descriptor(name, f.help, None, metric_type)?;
            match f.label {
                None => {
                    if let Some((_, v)) = f.samples.first() {
                        encode_value(f.kind, *v, family)?;
                    }
                }
                Some(label) => {
                    for (lv, v) in &f.samples {
                        encode_value(f.kind, *v, family.encode_family(&[(label, lv.as_str())])?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `addr` may be bound: loopback always, anything else only when
/// explicitly allowed.
pub fn check_bind_addr(addr: SocketAddr, allow_non_loopback: bool) -> Result<()> {
    if addr.ip().to_canonical().is_loopback() || allow_non_loopback {
        return Ok(());
    }
    bail!(
        "refusing to serve metrics on non-loopback address {addr}: \
         use a loopback address or allow non-loopback explicitly"
    )
}

/// Binds the metrics/health listener (see [`check_bind_addr`]).
pub async fn bind(addr: SocketAddr, allow_non_loopback: bool) -> Result<TcpListener> {
    check_bind_addr(addr, allow_non_loopback)?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics server to {addr}"))
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the task is
/// dropped. Errors only if the address is refused or cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    allow_non_loopback: bool,
) -> Result<()> {
    let listener = bind(addr, allow_non_loopback).await?;
    serve_listener(listener, metrics).await
}

/// Serves on an already bound listener (the agent binds first, so a bad
/// address fails at start, then spawns this).
pub async fn serve_listener(listener: TcpListener, metrics: Arc<Metrics>) -> Result<()> {
    serve_limited(listener, metrics, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER).await
}

async fn serve_limited(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    max_connections: usize,
    max_per_peer: usize,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let peers = PeerSlots::new(max_per_peer);
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .context("metrics connection limit")?;
        match listener.accept().await {
            Ok((stream, from)) => {
                let ip = from.ip().to_canonical();
                let Some(peer) = peers.try_take(ip) else {
                    drop(permit);
                    refuse_busy_peer(stream, ip, max_per_peer);
                    continue;
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let _held = (permit, peer);
                    let _ = tokio::time::timeout(IO_TIMEOUT, handle(stream, metrics)).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: don't spin.
                tracing::warn!("metrics server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection over [`MAX_CONNECTIONS_PER_PEER`]: a 503 written without
/// waiting (a fresh socket's buffer takes it), then closed, on the accept
/// loop itself (no task, no slot).
fn refuse_busy_peer(stream: TcpStream, ip: std::net::IpAddr, max: usize) {
    let body = format!("too many connections from {ip} (at most {max})\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    drop(stream);
}

/// One request, one answer (hyper, HTTP/1.x without keep-alive), then the
/// connection is closed. A head over [`MAX_HEAD_BYTES`] is 431, a request
/// hyper cannot parse 400.
async fn handle(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let answer = route(req.method(), req.uri().path(), &metrics);
        async move { Ok::<_, Infallible>(answer) }
    });
    let served = http1::Builder::new()
        .keep_alive(false)
        .title_case_headers(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT)
        .serve_connection(TokioIo::new(&mut stream), service)
        .await;
    if served.is_err() {
        // After an error answer, read what the client still sends, so that
        // closing does not reset the connection before it has read it.
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(LINGER_TIME, async {
            let mut chunk = [0u8; 4096];
            let mut seen = 0;
            while seen < LINGER_BYTES {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        })
        .await;
    }
}

/// The answer to `method path` (hyper drops the body of a `HEAD` answer).
fn route(method: &Method, path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    if !matches!(path, "/metrics" | "/healthz") {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/metrics" {
        return respond(StatusCode::OK, METRICS_CONTENT_TYPE, metrics.render());
    }
    let (ok, body) = metrics.health();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", format!("{body}\n"))
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn metrics_is_send_and_sync() {
        assert_send_sync::<Metrics>();
        assert_send_sync::<Arc<Metrics>>();
    }

    /// One parsed sample line: `name{label="value"} number`.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn is_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }

    /// A strict parser of the 0.0.4 sample grammar (no timestamps), with
    /// label values unescaped.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(format!("bad name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or("label without =")?;
                let lname = &rest[..eq];
                if !is_name(lname) || lname.starts_with("__") {
                    return Err(format!("bad label name {lname:?}"));
                }
                rest = rest[eq + 1..].strip_prefix('"').ok_or("unquoted label")?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err("unterminated label value".into()),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        Some((_, '\n')) => return Err("raw newline in label".into()),
                        Some((_, c)) => value.push(c),
                    }
                };
                labels.push((lname.to_string(), value));
                rest = &rest[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("no space before value: {line:?}"))?;
        if value.contains(' ') {
            return Err(format!("trailing fields: {line:?}"));
        }
        let value: f64 = value
            .parse()
            .map_err(|_| format!("bad value {value:?} in {line:?}"))?;
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    /// Checks the whole exposition; returns the samples.
    fn parse_exposition(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "must end with a newline");
        let mut help: HashMap<String, usize> = HashMap::new();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut order = Vec::new();
        let mut samples = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has text");
                assert!(is_name(name), "{line}");
                *help.entry(name.to_string()).or_default() += 1;
                current = Some(name.to_string());
                order.push(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
                assert_eq!(Some(name), current.as_deref(), "TYPE after its HELP");
                assert!(
                    matches!(kind, "counter" | "gauge"),
                    "unexpected type {kind}"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "TYPE twice for {name}"
                );
            } else {
                assert!(!line.starts_with('#'), "stray comment {line}");
                let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    Some(s.name.as_str()),
                    current.as_deref(),
                    "sample {line:?} outside its family"
                );
                assert!(types.contains_key(&s.name), "sample before TYPE: {line}");
                samples.push(s);
            }
        }
        for (name, n) in &help {
            assert_eq!(*n, 1, "HELP of {name} appears {n} times");
            assert!(name.starts_with("monitor_"), "{name} lacks the prefix");
            assert!(types.contains_key(name), "{name} has no TYPE");
            if types[name] == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            } else {
                assert!(!name.ends_with("_total"), "gauge {name} ends in _total");
            }
        }
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "families sorted by name");
        samples
    }

    fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && match label {
                        None => s.labels.is_empty(),
                        Some((k, v)) => s.labels == vec![(k.to_string(), v.to_string())],
                    }
            })
            .map(|s| s.value)
    }

    fn populated() -> Metrics {
        let m = Metrics::new();
        m.inc_event("read");
        m.inc_event("read");
        m.inc_event("open");
        m.inc_alert("secret.copy.file");
        m.add_alerts_suppressed(4);
        m.set_lost_per_cpu(&[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        m.set_queue_depth("store", 12);
        m.set_store_dropped(2);
        m.set_feed_failures("webhook", 1);
        m.set_feed_pending("webhook", 5);
        m.set_sizes(9, 3, 4, 2);
        m.set_bad_records(1);
        m.set_probes(40, 42, true);
        m.mark_drained();
        m
    }

    #[test]
    fn metrics_render_is_valid_exposition() {
        let m = populated();
        let text = m.render();
        let s = parse_exposition(&text);
        assert_eq!(
            value(&s, "monitor_events_total", Some(("kind", "read"))),
            Some(2.0)
        );
        assert_eq!(
            value(&s, "monitor_events_total", Some(("kind", "open"))),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "monitor_alerts_total",
                Some(("rule", "secret.copy.file"))
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "monitor_alerts_suppressed_total", None),
            Some(4.0)
        );
        assert_eq!(
            value(&s, "monitor_kernel_lost_events_total", Some(("cpu", "10"))),
            Some(7.0)
        );
        assert_eq!(
            value(&s, "monitor_kernel_lost_events_total", Some(("cpu", "0"))),
            Some(0.0)
        );
        assert_eq!(
            value(&s, "monitor_queue_depth", Some(("queue", "store"))),
            Some(12.0)
        );
        assert_eq!(value(&s, "monitor_store_dropped_total", None), Some(2.0));
        assert_eq!(
            value(&s, "monitor_feed_failures_total", Some(("feed", "webhook"))),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "monitor_feed_pending", Some(("feed", "webhook"))),
            Some(5.0)
        );
        assert_eq!(value(&s, "monitor_tracked_processes", None), Some(9.0));
        assert_eq!(value(&s, "monitor_secrets", None), Some(3.0));
        assert_eq!(value(&s, "monitor_watched_files", None), Some(4.0));
        assert_eq!(value(&s, "monitor_watch_refused_files", None), Some(2.0));
        assert_eq!(value(&s, "monitor_bad_records_total", None), Some(1.0));
        assert_eq!(value(&s, "monitor_probes_attached", None), Some(40.0));
        assert_eq!(value(&s, "monitor_probes_defined", None), Some(42.0));
        let drained = value(&s, "monitor_ringbuf_last_drain_timestamp_seconds", None).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - drained).abs() < 60.0, "{drained} vs {now}");
        // CPUs in numeric order, label values otherwise sorted.
        let cpus: Vec<&str> = s
            .iter()
            .filter(|x| x.name == "monitor_kernel_lost_events_total")
            .map(|x| x.labels[0].1.as_str())
            .collect();
        assert_eq!(
            cpus,
            ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
        );
        let kinds: Vec<&str> = s
            .iter()
            .filter(|x| x.name == "monitor_events_total")
            .map(|x| x.labels[0].1.as_str())
            .collect();
        assert_eq!(kinds, ["open", "read"]);
        // Deterministic: same state, same bytes.
        assert_eq!(text, m.render());
        // Exactly the documented families.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            families,
            [
                "monitor_alerts_allowed_total counter",
                "monitor_alerts_rate_limited_total counter",
                "monitor_alerts_suppressed_total counter",
                "monitor_alerts_total counter",
                "monitor_bad_records_total counter",
                "monitor_capture_attached gauge",
                "monitor_capture_dropped_total counter",
                "monitor_capture_switches_total counter",
                "monitor_events_total counter",
                "monitor_feed_failures_total counter",
                "monitor_feed_pending gauge",
                "monitor_issuances_refused_total counter",
                "monitor_kernel_errors_total counter",
                "monitor_kernel_lost_events_total counter",
                "monitor_output_failures_total counter",
                "monitor_output_lost_total counter",
                "monitor_probe_attached gauge",
                "monitor_probes_attached gauge",
                "monitor_probes_defined gauge",
                "monitor_queue_depth gauge",
                "monitor_ringbuf_last_drain_timestamp_seconds gauge",
                "monitor_secrets gauge",
                "monitor_store_dropped_total counter",
                "monitor_tls_attached gauge",
                "monitor_tracked_processes gauge",
                "monitor_watch_refused_files gauge",
                "monitor_watched_files gauge",
            ]
        );
    }

    #[test]
    fn metrics_empty_render_is_valid_and_zero() {
        let text = Metrics::new().render();
        let s = parse_exposition(&text);
        assert_eq!(value(&s, "monitor_secrets", None), Some(0.0));
        assert_eq!(
            value(&s, "monitor_ringbuf_last_drain_timestamp_seconds", None),
            Some(0.0)
        );
        // Labelled families have HELP/TYPE but no sample yet.
        assert!(text.contains("# TYPE monitor_events_total counter\n# HELP"));
        assert!(!s.iter().any(|x| x.name == "monitor_events_total"));
    }

    #[test]
    fn metrics_label_values_are_escaped() {
        let m = Metrics::new();
        let nasty = "a\\b\"c\nd} 1\ne=\"x\"";
        m.inc_event(nasty);
        m.set_queue_depth("", 1);
        let text = m.render();
        assert!(
            text.contains(r#"monitor_events_total{kind="a\\b\"c\nd} 1\ne=\"x\""} 1"#),
            "{text}"
        );
        let s = parse_exposition(&text);
        assert_eq!(
            value(&s, "monitor_events_total", Some(("kind", nasty))),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "monitor_queue_depth", Some(("queue", ""))),
            Some(1.0)
        );
    }

    #[test]
    fn metrics_lost_per_cpu_replaces_the_snapshot_and_counters_saturate() {
        let m = Metrics::new();
        m.set_lost_per_cpu(&[1, 2, 3]);
        m.set_lost_per_cpu(&[5, 6]);
        assert_eq!(m.get(Metric::KernelLostEvents, "1"), 6);
        assert_eq!(m.get(Metric::KernelLostEvents, "2"), 0);
        assert!(!m.render().contains("cpu=\"2\""));
        m.add(Metric::StoreDropped, "", u64::MAX);
        m.add(Metric::StoreDropped, "", 5);
        assert_eq!(m.get(Metric::StoreDropped, ""), u64::MAX);
    }

    #[test]
    fn metrics_health_needs_probes_and_a_recent_drain() {
        let m = Metrics::with_max_drain_age(Duration::from_secs(10));
        let (ok, v) = m.health();
        assert!(!ok);
        assert_eq!(v["status"], "unhealthy");
        let reasons = v["reasons"].to_string();
        assert!(reasons.contains("required probes"), "{reasons}");
        assert!(reasons.contains("never drained"), "{reasons}");

        m.set_probes(40, 42, true);
        m.mark_drained();
        let now = Instant::now();
        let (ok, v) = m.health_at(now);
        assert!(ok, "{v}");
        assert_eq!(v["status"], "ok");
        assert_eq!(v["probes_attached"], 40);
        assert_eq!(v["probes_total"], 42);
        assert!(v.get("reasons").is_none());

        // Within the limit: still healthy; past it: stale.
        assert!(m.health_at(now + Duration::from_secs(9)).0);
        let (ok, v) = m.health_at(now + Duration::from_secs(11));
        assert!(!ok);
        let reasons = v["reasons"].to_string();
        assert!(
            reasons.contains("last drained") && reasons.contains("limit 10s"),
            "{reasons}"
        );
        assert!(v["last_drain_age_seconds"].as_f64().unwrap() >= 11.0);

        // A new drain (e.g. the idle tick) makes it healthy again.
        m.mark_drained();
        assert!(m.health().0);

        // Required probes lost: unhealthy whatever the drain.
        m.set_probes(40, 42, false);
        assert!(!m.health().0);
    }

    #[test]
    fn metrics_refuses_non_loopback_unless_allowed() {
        let any: SocketAddr = "0.0.0.0:9102".parse().unwrap();
        let e = check_bind_addr(any, false).unwrap_err().to_string();
        assert!(
            e.contains("0.0.0.0:9102") && e.contains("non-loopback"),
            "{e}"
        );
        assert!(check_bind_addr(any, true).is_ok());
        for ok in [
            "127.0.0.1:9102",
            "127.1.2.3:0",
            "[::1]:9102",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(check_bind_addr(ok.parse().unwrap(), false).is_ok(), "{ok}");
        }
        for bad in ["10.0.0.1:9102", "[::]:9102", "192.168.1.1:80"] {
            assert!(
                check_bind_addr(bad.parse().unwrap(), false).is_err(),
                "{bad}"
            );
        }
    }

    /// The `monitor.toml` block of the DaemonSet's ConfigMap.
    fn configmap_toml(yaml: &str) -> String {
        let mut lines = yaml.lines().skip_while(|l| l.trim() != "monitor.toml: |");
        assert!(lines.next().is_some(), "no monitor.toml block");
        lines
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.get(4..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The address of the `metrics = "..."` line, commented out or not.
    fn metrics_addr(toml: &str) -> Option<SocketAddr> {
        toml.lines().find_map(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            let v = l.strip_prefix("metrics")?.trim_start().strip_prefix('=')?;
            v.trim().trim_matches('"').parse().ok()
        })
    }

    /// The deployment's config files are accepted by the agent as it is
    /// (unknown keys are an error), and the metrics port is the one the
    /// DaemonSet probes.
    #[test]
    fn metrics_deploy_configs_are_valid_agent_configs() {
        use crate::{
            cli::{run_options, RunArgs},
            config::FileConfig,
        };
        let cm = configmap_toml(include_str!("../../deploy/kubernetes/configmap.yaml"));
        let f = FileConfig::parse(&cm, std::path::Path::new("configmap.yaml"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let o = run_options(&RunArgs::default(), &f).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(o.host_proc, std::path::PathBuf::from("/host/proc"));
        assert!(f.fingerprint_key.is_none(), "no key in a ConfigMap");
        let addr = metrics_addr(&cm).expect("a metrics line");
        assert_eq!(addr.port(), DEFAULT_PORT);
        // The kubelet probes the pod IP: the agent must accept the address.
        assert_eq!(o.metrics, Some(addr));
        assert!(check_bind_addr(addr, o.metrics_allow_non_loopback).is_ok());
        let ds = include_str!("../../deploy/kubernetes/daemonset.yaml");
        let ports: Vec<&str> = ds
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix("port: ")
                    .or_else(|| l.strip_prefix("containerPort: "))
            })
            .collect();
        // The commented-out feed example is valid too.
        let feed: Vec<&str> = cm
            .lines()
            .skip_while(|l| l.trim() != "# [[feeds]]")
            .map(|l| l.trim_start_matches("# "))
            .collect();
        assert!(!feed.is_empty(), "a [[feeds]] example");
        let with_feed = format!("{cm}\n{}\n", feed.join("\n"));
        let f = FileConfig::parse(&with_feed, std::path::Path::new("configmap.yaml"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(f.feeds.len(), 1);
        assert_eq!(ports.len(), 4, "3 probes and the container port");
        assert!(
            ports.iter().all(|p| *p == DEFAULT_PORT.to_string()),
            "{ports:?}"
        );

        let host = include_str!("../../deploy/systemd/monitor.toml");
        let f = FileConfig::parse(host, std::path::Path::new("monitor.toml"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let o = run_options(&RunArgs::default(), &f).unwrap_or_else(|e| panic!("{e:#}"));
        let addr = metrics_addr(host).expect("a metrics line");
        assert_eq!(o.metrics, Some(addr));
        assert!(!o.metrics_allow_non_loopback);
        assert!(check_bind_addr(addr, false).is_ok(), "loopback on hosts");
    }

    #[tokio::test]
    async fn metrics_refuses_to_bind_non_loopback() {
        let e = bind("0.0.0.0:0".parse().unwrap(), false).await.unwrap_err();
        assert!(e.to_string().contains("non-loopback"), "{e}");
    }

    async fn get(addr: SocketAddr, request: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("server answers and closes")
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .unwrap();
        if !request.starts_with("HEAD") {
            assert_eq!(len, body.len(), "Content-Length matches the body");
        }
        (status, head.to_string(), body.to_string())
    }

    #[tokio::test]
    async fn metrics_serves_metrics_and_healthz_over_tcp() {
        let metrics = Arc::new(Metrics::new());
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_listener(listener, metrics.clone()));

        // Not ready yet: probes not loaded, ring never drained.
        let (status, head, body) = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 503, "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "unhealthy");
        assert!(v["reasons"].as_array().is_some_and(|r| r.len() == 2), "{v}");

        metrics.set_probes(40, 42, true);
        metrics.mark_drained();
        metrics.inc_event("exec");
        metrics.inc_alert("secret.leak.log");

        let (status, head, body) = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200, "{head}\n{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["probes_attached"], 40);

        // Bare-LF request lines, a query string, HTTP/1.0.
        let (status, head, body) = get(addr, "GET /metrics?x=1 HTTP/1.0\n\n").await;
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        let s = parse_exposition(&body);
        assert_eq!(
            value(&s, "monitor_events_total", Some(("kind", "exec"))),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "monitor_alerts_total",
                Some(("rule", "secret.leak.log"))
            ),
            Some(1.0)
        );

        let (status, _, body) = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(body.is_empty());

        let (status, _, _) = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 404);
        let (status, head, _) = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 405);
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
        let (status, _, _) = get(addr, "garbage\r\n\r\n").await;
        assert_eq!(status, 400);
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let (status, _, _) = get(addr, &big).await;
        assert_eq!(status, 431);

        // Still serving after all that.
        let (status, _, _) = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        server.abort();
    }

    /// A connection from `ip` (a loopback address: all of 127/8 is).
    async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        sock.connect(addr).await.unwrap()
    }

    #[tokio::test]
    async fn a_peer_over_its_cap_is_refused_at_once_and_others_are_served() {
        let metrics = Arc::new(Metrics::new());
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_limited(listener, metrics, 4, 2));
        // 127.0.0.2 holds two connections and sends nothing.
        let mut slow = Vec::new();
        for _ in 0..2 {
            slow.push(connect_from("127.0.0.2", addr).await);
        }
        // Its third (and fourth) is answered 503 and closed, not kept waiting.
        for _ in 0..2 {
            let mut s = connect_from("127.0.0.2", addr).await;
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut out))
                .await
                .expect("refused at once")
                .unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
                "{text}"
            );
            assert!(
                text.ends_with("\r\n\r\ntoo many connections from 127.0.0.2 (at most 2)\n"),
                "{text}"
            );
        }
        // The refusals took no global slot: 127.0.0.1 gets the two left,
        // then the global cap (4) makes the next one wait.
        let mut other = Vec::new();
        for _ in 0..2 {
            other.push(connect_from("127.0.0.1", addr).await);
        }
        let waited = tokio::time::timeout(
            Duration::from_millis(500),
            get(addr, "GET /metrics HTTP/1.1\r\n\r\n"),
        )
        .await;
        assert!(
            waited.is_err(),
            "a fifth connection waits for the global cap"
        );
        // A held connection of 127.0.0.1 is served; closing them frees slots.
        other[0]
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        other[0].read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200 "));
        drop(other);
        let (status, _, _) = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        drop(slow);
        server.abort();
    }
}
