//! The fleet: agents on many nodes share one NATS JetStream cluster.
//!
//! * [`scope`]: `--scope-cgroup`, an agent that observes only some cgroups
//!   (two scoped agents on one machine stand for two nodes).
//! * [`link`]: `--fleet nats://...`: alerts and security-relevant events
//!   published to JetStream (`monitor.<node>.alerts|events`), each with a
//!   message id (events packed, several a message: [`pack`]); [`spool`]
//!   keeps what NATS could not take.
//!
//! Everything here is off unless asked for: an agent without `--fleet` and
//! `--scope-cgroup` behaves exactly as without this module.
pub mod link;
pub mod pack;
pub mod query;
pub mod read;
pub mod records;
pub mod scope;
pub mod spool;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use monitor_common::EventHeader;
use serde::Deserialize;

use crate::enrich::Enricher;

/// `monitor run` flags of the fleet (flattened into `RunArgs`).
#[derive(Args, Debug, Default, Clone)]
pub struct FleetArgs {
    /// Observe only processes in this cgroup v2 directory or below
    /// (repeatable; `/sys/fs/cgroup/unified/x` or `/x`).
    #[arg(long = "scope-cgroup", value_name = "PATH")]
    pub scope_cgroup: Vec<String>,
    /// NATS JetStream cluster of the fleet (`nats://host:port`, several
    /// comma-separated): alerts and events are published there.
    #[arg(long = "fleet", value_name = "URL")]
    pub fleet: Option<String>,
    /// This node's name in the fleet (default: $NODE_NAME, else the host
    /// name).
    #[arg(long = "node", value_name = "NAME")]
    pub node: Option<String>,
    /// Where messages wait while NATS is unreachable (default: next to
    /// the store, `<db>.fleet-spool`).
    #[arg(long = "fleet-spool", value_name = "DIR")]
    pub fleet_spool: Option<PathBuf>,
    /// A file holding the fleet's fingerprint key (64 hex characters; the
    /// DaemonSet mounts it from a Secret).
    #[arg(long = "fingerprint-key-file", value_name = "F")]
    pub fingerprint_key_file: Option<PathBuf>,
}

/// `monitor issue|revoke|query|timeline --fleet URL`: the cluster to use
/// instead of the local agent or store.
#[derive(Args, Debug, Default, Clone)]
pub struct FleetTarget {
    /// The fleet's NATS cluster (`nats://host:port[,...]`).
    #[arg(long = "fleet", value_name = "URL")]
    pub fleet: Option<String>,
    /// With `issue --fleet`: the node whose processes hold the secret (a
    /// pid, cgroup or container holder means nothing on other nodes);
    /// without it every node applies the record (Kubernetes names).
    #[arg(long = "node", value_name = "NAME")]
    pub node: Option<String>,
    /// NATS credentials file.
    #[arg(long = "fleet-creds", value_name = "F")]
    pub creds: Option<PathBuf>,
    /// CA of the NATS servers' certificates (TLS required).
    #[arg(long = "fleet-tls-ca", value_name = "F")]
    pub tls_ca: Option<PathBuf>,
}

impl FleetTarget {
    pub fn nats(&self) -> Option<link::NatsConfig> {
        Some(link::NatsConfig {
            url: self.fleet.clone()?,
            creds: self.creds.clone(),
            tls_ca: self.tls_ca.clone(),
            ..Default::default()
        })
    }
}

/// `[fleet]` in the config file.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Cgroup v2 directories this agent observes (and below).
    #[serde(default)]
    pub scope_cgroup: Vec<String>,
    /// `nats://host:port[,...]`.
    pub url: Option<String>,
    pub node: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    pub credentials: Option<PathBuf>,
    /// CA that signs the NATS servers' certificates (TLS is then required).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool holds (default 256 MiB).
    pub spool_max_bytes: Option<u64>,
    /// A file holding the fingerprint key (64 hex chars), e.g. a mounted
    /// Kubernetes Secret; wins over `fingerprint_key`.
    pub fingerprint_key_file: Option<PathBuf>,
}

/// Default bound of the spool.
pub const DEFAULT_SPOOL_BYTES: u64 = 256 << 20;

/// Flags over config.
#[derive(Debug, Default, Clone)]
pub struct FleetOptions {
    pub scope_cgroup: Vec<String>,
    /// The cluster (none: no fleet).
    pub nats: Option<link::NatsConfig>,
    pub node: String,
    /// None: next to the store.
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    /// A file holding the fingerprint key (wins over `fingerprint_key`).
    pub fingerprint_key_file: Option<PathBuf>,
}

impl FleetOptions {
    pub fn merge(a: &FleetArgs, f: Option<&FleetConfig>) -> Result<Self> {
        let d = FleetConfig::default();
        let f = f.unwrap_or(&d);
        let mut scope_cgroup = f.scope_cgroup.clone();
        scope_cgroup.extend(a.scope_cgroup.iter().cloned());
        let url = a.fleet.clone().or_else(|| f.url.clone());
        let node = a
            .node
            .clone()
            .or_else(|| f.node.clone())
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(crate::fleet::hostname);
        check_node(&node)?;
        let spool_max_bytes = f.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_BYTES);
        if !(1 << 20..=1 << 40).contains(&spool_max_bytes) {
            anyhow::bail!(
                "setting fleet.spool_max_bytes is {spool_max_bytes} bytes; it must be from \
                 1048576 (1 MiB) to 1099511627776 (1 TiB) bytes"
            );
        }
        Ok(Self {
            scope_cgroup,
            nats: url.map(|url| link::NatsConfig {
                url,
                creds: f.credentials.clone(),
                tls_ca: f.tls_ca.clone(),
                tls_cert: f.tls_cert.clone(),
                tls_key: f.tls_key.clone(),
            }),
            node,
            spool_dir: a.fleet_spool.clone().or_else(|| f.spool_dir.clone()),
            spool_max_bytes,
            fingerprint_key_file: a
                .fingerprint_key_file
                .clone()
                .or_else(|| f.fingerprint_key_file.clone()),
        })
    }
}

impl FleetOptions {
    /// The key in `fingerprint_key_file`, if set (read at start).
    pub fn read_key(&self) -> Result<Option<String>> {
        match &self.fingerprint_key_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(|k| Some(k.trim().to_string()))
                .map_err(|e| anyhow::anyhow!("fingerprint key file {}: {e}", p.display())),
        }
    }
}

/// The host name (the default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A node name is one NATS subject token: letters, digits, `-`, `_`.
pub fn check_node(node: &str) -> Result<()> {
    if node.is_empty()
        || node.len() > 253
        || !node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        anyhow::bail!(
            "node name {node:?}: must be 1 to 253 letters, digits, '-' or '_' (it is a NATS \
             subject token)"
        );
    }
    Ok(())
}

/// A node's learned secret, as published on
/// `monitor.fingerprints.<node>.keyed`: keyed fingerprints, never values.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FleetFingerprints {
    /// The node whose holder has the secret.
    pub node: String,
    /// Which fingerprint key made them (nodes with another key ignore them).
    pub key_id: String,
    pub secret_ids: Vec<String>,
    pub fingerprints: crate::correlate::fingerprint::SharedSecret,
}

/// The agent's fleet state: its scope and its NATS link, when configured.
#[derive(Default)]
pub struct Fleet {
    scope: Option<scope::Scope>,
    link: Option<link::Link>,
    node: String,
    /// Fingerprints are shared (a fleet and a configured key).
    share: bool,
    key_id: String,
    /// Secrets matched here with another node's fingerprints -> that node.
    foreign: std::collections::HashMap<String, String>,
    warned_key: bool,
    /// Events waiting to be packed into one message (with a link).
    pack: Option<pack::EventPack>,
}

impl Fleet {
    pub fn start(opts: &FleetOptions, cgroup2_root: Option<&Path>, db: &Path) -> Result<Self> {
        let scope = scope::Scope::new(&opts.scope_cgroup, cgroup2_root)?;
        if let Some(s) = &scope {
            tracing::info!("observing only cgroups {}", s.prefixes().join(", "));
        }
        let link = match &opts.nats {
            None => None,
            Some(cfg) => {
                let dir = opts.spool_dir.clone().unwrap_or_else(|| {
                    let mut p = db.as_os_str().to_owned();
                    p.push(".fleet-spool");
                    PathBuf::from(p)
                });
                let spool = spool::Spool::open(&dir, opts.spool_max_bytes)?;
                if !spool.is_empty() {
                    tracing::info!(
                        "fleet: {} messages in the spool {} wait for NATS",
                        spool.pending(),
                        dir.display()
                    );
                }
                tracing::info!("fleet: node {} publishing to {}", opts.node, cfg.url);
                Some(link::Link::start(cfg.clone(), &opts.node, spool)?)
            }
        };
        Ok(Self {
            pack: link.as_ref().map(|_| pack::EventPack::new(&opts.node)),
            scope,
            link,
            node: opts.node.clone(),
            ..Default::default()
        })
    }

    /// With a fleet and a shared key: learned secrets' fingerprints are
    /// published and other nodes' imported. A random per-boot key cannot be
    /// shared: said once.
    pub fn share_fingerprints(
        &mut self,
        fp: &mut crate::correlate::fingerprint::FingerprintSet,
        key_configured: bool,
    ) {
        if self.link.is_none() {
            return;
        }
        if !key_configured {
            tracing::warn!(
                "fleet: no fingerprint_key (or fingerprint_key_file) configured: the key is \
                 random per boot, so fingerprints are not shared with the fleet"
            );
            return;
        }
        fp.share_learned();
        self.share = true;
        self.key_id = fp.key_id();
    }

    /// Secrets learned since the last call, to the fleet.
    pub fn publish_learned(&mut self, c: &mut crate::correlate::Correlator) {
        if !self.share {
            return;
        }
        let Some(l) = &self.link else { return };
        for (r, shared) in c.fingerprints_mut().take_shared() {
            let secret_ids = c.secret_ids_of(r);
            if secret_ids.is_empty() {
                continue;
            }
            let msg = FleetFingerprints {
                node: self.node.clone(),
                key_id: self.key_id.clone(),
                secret_ids,
                fingerprints: shared,
            };
            let payload = match serde_json::to_string(&msg) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("fleet: fingerprints not serialized: {e}");
                    continue;
                }
            };
            let h = blake3::hash(payload.as_bytes());
            tracing::info!(
                "fleet: fingerprints of {} published",
                msg.secret_ids.join(", ")
            );
            l.send(spool::Outgoing {
                subject: format!("monitor.fingerprints.{}.keyed", self.node),
                id: format!("{}.fp.{}", self.node, &h.to_hex()[..32]),
                payload,
            });
        }
    }

    /// Another node's fingerprints, if this node uses them (same key, not
    /// its own).
    pub fn fingerprints_to_import(&mut self, payload: &[u8]) -> Option<FleetFingerprints> {
        if !self.share {
            return None;
        }
        let m: FleetFingerprints = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("fleet: a fingerprints message that is not one: {e}");
                return None;
            }
        };
        if m.node == self.node {
            return None;
        }
        if m.key_id != self.key_id {
            if !self.warned_key {
                tracing::warn!(
                    "fleet: node {} uses another fingerprint key: its fingerprints are ignored",
                    m.node
                );
                self.warned_key = true;
            }
            return None;
        }
        Some(m)
    }

    /// Secret `id` is matched here with `holder_node`'s fingerprints.
    pub fn mark_foreign(&mut self, id: &str, holder_node: &str) {
        self.foreign.insert(id.to_string(), holder_node.to_string());
    }

    /// A foreign replay names both nodes: `evidence.node` (here) and
    /// `evidence.holder_node` (where the secret was delivered).
    pub fn annotate(&self, a: &mut crate::correlate::alert::Alert) {
        if self.foreign.is_empty() {
            return;
        }
        let holder = std::iter::once(&a.secret_id)
            .chain(a.secret_ids.iter())
            .find_map(|id| self.foreign.get(id));
        if let Some(h) = holder {
            a.evidence.node = Some(self.node.clone());
            a.evidence.holder_node = Some(h.clone());
        }
    }

    /// An alert to the fleet (`monitor.<node>.alerts`); see also its
    /// [`crate::output::AlertSink`].
    pub fn alert(&self, a: &crate::correlate::alert::Alert) {
        if let Some(l) = &self.link {
            match serde_json::to_value(a) {
                Ok(v) => l.send(self.message("alerts", v)),
                Err(e) => tracing::warn!("fleet: alert not serialized: {e}"),
            }
        }
    }

    /// A security-relevant event to the fleet (`monitor.<node>.events`).
    /// The line the agent serialized once, with a `node` field put first,
    /// into the pack of events that goes as one message (see [`pack`]).
    pub fn event(&mut self, e: &crate::event::EventLine) {
        let (Some(l), Some(p)) = (&self.link, self.pack.as_mut()) else {
            return;
        };
        if let Some(m) = p.push(&with_node(&self.node, e.json_str())) {
            l.send(m);
        }
    }

    /// Whether events wait to be packed.
    pub fn events_waiting(&self) -> bool {
        self.pack.as_ref().is_some_and(|p| !p.is_empty())
    }

    /// Whether a pack of events waits past its age (see [`pack::MAX_AGE`]).
    pub fn events_due(&self) -> bool {
        self.pack.as_ref().is_some_and(|p| p.due())
    }

    /// The waiting pack of events, to the link now.
    pub fn flush_events(&mut self) {
        if let (Some(l), Some(m)) = (&self.link, self.pack.as_mut().and_then(|p| p.take())) {
            l.send(m);
        }
    }

    /// The item with a `node` field, its id derived from its content (a
    /// retry of the same item has the same id).
    fn message(&self, kind: &str, mut v: serde_json::Value) -> spool::Outgoing {
        if let Some(o) = v.as_object_mut() {
            o.insert("node".into(), self.node.clone().into());
        }
        self.outgoing(kind, v.to_string())
    }

    fn outgoing(&self, kind: &str, payload: String) -> spool::Outgoing {
        spool::Outgoing::of(&self.node, kind, payload)
    }

    /// Fleet figures into the agent's metrics: the fleet is a feed
    /// (`feed_pending{feed="fleet"}`: spooled, `feed_failures_total`),
    /// an output (`output_lost_total{output="fleet"}`: dropped past the
    /// spool bound) and a queue (`queue_depth{queue="fleet"}`).
    pub fn update_metrics(&self, m: &crate::metrics::Metrics) {
        let Some(l) = &self.link else { return };
        let (pending, bytes, dropped) = l.spool_state();
        m.set_feed_pending("fleet", pending);
        m.set_feed_failures(
            "fleet",
            l.stats.failures.load(std::sync::atomic::Ordering::Relaxed),
        );
        m.set(crate::metrics::Metric::OutputLost, "fleet", dropped);
        m.set_queue_depth("fleet", l.queued());
        let connected = l.stats.connected.load(std::sync::atomic::Ordering::Relaxed);
        m.set_problem(
            "fleet",
            (!connected).then(|| {
                format!(
                    "fleet {}: not connected; {pending} messages ({bytes} bytes) spooled",
                    l.url
                )
            }),
        );
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// What the fleet sends, for the event loop (once).
    pub fn take_inbound(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<link::Inbound>> {
        self.link.as_mut()?.take_inbound()
    }

    /// Records the API accepted, to the fleet (issuances held on this node).
    pub fn publish_records(&self, text: &str) {
        let Some(l) = &self.link else { return };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let rec = records::FleetRecord {
                node: record.get("revoke").is_none().then(|| self.node.clone()),
                record,
                from: Some(self.node.clone()),
                at: Some(chrono::Utc::now().to_rfc3339()),
            };
            l.send(rec.message());
        }
    }

    /// A record from the fleet, if this node applies it (as record JSON).
    pub fn record_to_apply(&self, payload: &[u8]) -> Option<String> {
        match serde_json::from_slice::<records::FleetRecord>(payload) {
            Ok(r) if r.applies_on(&self.node) => Some(r.record.to_string()),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("fleet: a record message that is not one: {e}");
                None
            }
        }
    }

    /// Shutdown: the waiting pack and queued messages go to the spool.
    pub fn finish(&mut self) {
        self.flush_events();
        if let Some(l) = &self.link {
            l.finish(std::time::Duration::from_secs(2));
        }
    }

    /// Whether the process behind a kernel record is observed (always
    /// without a scope).
    pub fn admits(&mut self, h: &EventHeader, enricher: &mut Enricher) -> bool {
        let Some(scope) = self.scope.as_mut() else {
            return true;
        };
        let pid = h.pid;
        scope.covers_id(h.cgroup_id, || {
            (h.cgroup_id != 0)
                .then(|| enricher.cgroup_path(h.cgroup_id))
                .flatten()
                .or_else(|| enricher.proc_cgroup_path(pid))
        })
    }

    /// Whether a process known by pid only (fanotify) is observed.
    pub fn admits_pid(&mut self, pid: u32, enricher: &mut Enricher) -> bool {
        match self.scope.as_ref() {
            None => true,
            Some(scope) => enricher
                .proc_cgroup_path(pid)
                .is_some_and(|p| scope.covers(&p)),
        }
    }
}

/// The issuance a node gives a secret it never had delivered, learned from
/// `holder_node`'s fingerprints: held by no process here (the holder is a
/// Kubernetes name no pod can have), so any process here that sends or
/// writes it is not its holder.
pub fn foreign_issuance(secret_id: &str, holder_node: &str) -> crate::issuance::Issuance {
    use crate::issuance::{Delivery, Holder, Issuance};
    Issuance {
        secret_id: secret_id.to_string(),
        issued_at: chrono::Utc::now(),
        expires_at: None,
        holder: Holder {
            namespace: Some("@fleet".into()),
            pod: Some(format!("@{holder_node}")),
            ..Default::default()
        },
        delivery: vec![Delivery::Env("@fleet".into())],
        allowed_destinations: None,
        source: Some("fleet".into()),
        lease_id: None,
        labels: [(
            crate::issuance::FLEET_HOLDER_NODE.to_string(),
            holder_node.to_string(),
        )]
        .into(),
        identity: Default::default(),
        replaces: false,
    }
}

/// A serialized JSON object with a `node` field put first (the object is
/// not parsed again).
fn with_node(node: &str, object: &str) -> String {
    let node = serde_json::Value::from(node).to_string();
    let body = object.strip_prefix('{').unwrap_or("}");
    let sep = if body.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!("{{\"node\":{node}{sep}{body}")
}

/// Alerts to `monitor.<node>.alerts` (nothing without `--fleet`).
impl crate::output::AlertSink for Fleet {
    fn sink_name(&self) -> String {
        "fleet".into()
    }
    fn send_alerts(&mut self, alerts: &[crate::correlate::alert::Alert]) -> Result<()> {
        for a in alerts {
            self.alert(a);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::with_node;

    #[test]
    fn an_event_line_gets_its_node_without_being_parsed_again() {
        let v: serde_json::Value =
            serde_json::from_str(&with_node("n\"1", r#"{"id":3,"kind":"read"}"#)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"node": "n\"1", "id": 3, "kind": "read"})
        );
        let v: serde_json::Value = serde_json::from_str(&with_node("a", "{}")).unwrap();
        assert_eq!(v, serde_json::json!({"node": "a"}));
    }
}
