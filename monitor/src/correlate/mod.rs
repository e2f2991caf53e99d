//! Correlation: issuance records + enriched kernel events -> alerts.
//!
//! Keeps the known secrets (issuance, revocation, learned fingerprints,
//! delivery inodes), decides who is a holder, scans captured buffers for the
//! secrets' bytes (raw or encoded), and evaluates the ten rules.
pub mod alert;
pub mod carry;
pub mod enforce;
pub mod filescan;
pub mod fingerprint;
pub mod holders;
pub mod rules;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use chrono::{DateTime, Utc};
use monitor_common::{FileInfo, InodeKey};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroize;

use self::{
    alert::{Aggregator, Alert, Evidence},
    fingerprint::{Encoding, FingerprintKey, FingerprintSet, Match, SecretRef},
    rules::{Rule, ATTACK_CONTAINER_API},
};
use crate::{
    enrich::k8s::K8s,
    event::{Dest, Event, EventKind, FdKind, Process, UtcTime},
    issuance::{jwt, Delivery, Issuance, Record},
    observer::decode::{split_nul, Captured, RawEvent},
    timefmt::rfc3339_micros,
};

/// Largest delivery file the agent reads to learn a secret.
const MAX_SECRET_FILE: u64 = 64 * 1024;

pub use crate::{enrich::ProcLookup, event::SecretMatch};

/// What the agent must do after a record or an event.
#[derive(Debug, Default)]
pub struct Outcome {
    pub alerts: Vec<Alert>,
    /// Pids whose writes and sends the kernel must capture.
    pub track: Vec<u32>,
    /// Files to watch (delivery files).
    pub watch: Vec<String>,
}

#[derive(Debug, Clone)]
struct SecretState {
    issuance: Issuance,
    revoked_at: Option<DateTime<Utc>>,
    fingerprint: Option<SecretRef>,
    learned_at: Option<DateTime<Utc>>,
    learned_from: Option<String>,
    /// Resolved addresses of host-name destinations.
    resolved: HashMap<String, Vec<IpAddr>>,
    /// Delivery files seen as inodes.
    inodes: BTreeSet<(u64, u32)>,
    /// The Kubernetes names of a holder process, once seen (a pid holder
    /// looked up, a holder reading its delivery file, a scraped holder):
    /// every alert on the secret carries them (`evidence.holder_k8s`).
    holder_k8s: Option<Box<K8s>>,
}

impl SecretState {
    fn expiry(&self) -> Option<DateTime<Utc>> {
        self.issuance.expires_at
    }

    /// Expired or revoked at `t`? Returns which, with when.
    fn dead_at(&self, t: DateTime<Utc>) -> Option<(bool, DateTime<Utc>)> {
        if let Some(r) = self.revoked_at.filter(|r| *r <= t) {
            return Some((true, r));
        }
        self.expiry().filter(|e| *e <= t).map(|e| (false, e))
    }

    fn state(&self, now: DateTime<Utc>) -> &'static str {
        match self.dead_at(now) {
            Some((true, _)) => "revoked",
            Some((false, _)) => "expired",
            None => "active",
        }
    }

    fn file_deliveries(&self) -> impl Iterator<Item = &str> {
        self.issuance.delivery.iter().filter_map(|d| match d {
            Delivery::File(p) => Some(p.as_str()),
            Delivery::Env(_) => None,
        })
    }

    fn env_deliveries(&self) -> impl Iterator<Item = &str> {
        self.issuance.delivery.iter().filter_map(|d| match d {
            Delivery::Env(n) => Some(n.as_str()),
            Delivery::File(_) => None,
        })
    }

    /// Is `ip:port` allowed? `None` when the secret is not restricted.
    fn allows(&self, ip: IpAddr, port: u16) -> Option<bool> {
        let allowed = self.issuance.allowed_destinations.as_ref()?;
        Some(allowed.iter().any(|d| {
            let resolved = match d {
                crate::issuance::Destination::Host { name, .. } => {
                    self.resolved.get(name).map(|v| v.as_slice()).unwrap_or(&[])
                }
                _ => &[],
            };
            d.matches_addr(ip, port, resolved)
        }))
    }
}

/// Where a secret's bytes went, from the write's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// An inet socket: a send.
    Network,
    /// stdout/stderr, terminal, pipe, syslog/journal socket, log file.
    Log,
    /// Another regular file.
    File,
    /// /dev/null and friends, other unix sockets: nothing to say.
    Ignore,
}

/// Unix sockets that are logs (syslog, the journal).
const LOG_SOCKETS: [&str; 4] = [
    "/dev/log",
    "/run/systemd/journal/socket",
    "/run/systemd/journal/stdout",
    "/run/systemd/journal/syslog",
];

fn classify(fd_kind: Option<FdKind>, path: Option<&str>, dest: Option<&Dest>) -> Sink {
    match fd_kind {
        Some(FdKind::Socket) => match dest {
            Some(Dest::Unix(p)) if LOG_SOCKETS.contains(&p.as_str()) => Sink::Log,
            Some(Dest::Unix(_)) => Sink::Ignore,
            Some(Dest::Inet(_)) => Sink::Network,
            None => Sink::Ignore,
        },
        Some(FdKind::Tty) | Some(FdKind::Pipe) => Sink::Log,
        Some(FdKind::File) => match path {
            Some(p) if p.starts_with("/var/log/") || p.ends_with(".log") => Sink::Log,
            Some(p) if p.starts_with("anon_inode:") => Sink::Ignore,
            _ => Sink::File,
        },
        _ => Sink::Ignore,
    }
}

/// [`classify`], but fd 1 and 2 are logs whatever they point at (a file
/// from a shell redirection, `nohup.out`, a service's log file, a pipe).
fn classify_fd(
    fd: Option<i32>,
    fd_kind: Option<FdKind>,
    path: Option<&str>,
    dest: Option<&Dest>,
) -> Sink {
    match fd {
        Some(1 | 2) => Sink::Log,
        _ => classify(fd_kind, path, dest),
    }
}

/// A known reader (`[[allow]]` in the config): the alerts of `rule` this
/// executable raises (as this uid, in this cgroup or below, when given)
/// are not raised; the events stay.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub rule: String,
    pub exe: String,
    pub uid: Option<u32>,
    pub cgroup: Option<String>,
}

impl AllowRule {
    /// A clear error naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if Rule::from_name(&self.rule).is_none() {
            return Err(format!("[[allow]] rule {:?} is not a rule name", self.rule));
        }
        if !self.exe.starts_with('/') {
            return Err(format!(
                "[[allow]] exe {:?} must be an absolute path",
                self.exe
            ));
        }
        if let Some(c) = &self.cgroup {
            if !c.starts_with('/') {
                return Err(format!("[[allow]] cgroup {c:?} must start with /"));
            }
        }
        Ok(())
    }

    pub fn matches(&self, rule: &str, p: &Process) -> bool {
        if rule != self.rule || p.exe.as_deref() != Some(self.exe.as_str()) {
            return false;
        }
        if self.uid.is_some_and(|u| u != p.uid) {
            return false;
        }
        match (&self.cgroup, &p.cgroup) {
            (None, _) => true,
            (Some(c), Some(pc)) => {
                let c = c.trim_end_matches('/');
                c.is_empty() || pc == c || pc.starts_with(&format!("{c}/"))
            }
            (Some(_), None) => false,
        }
    }
}

/// fd 1 or 2 pointing at a regular file that is not itself a log file.
fn stdio_into_file(fd: Option<i32>, fd_kind: Option<FdKind>, path: Option<&str>) -> bool {
    matches!(fd, Some(1 | 2)) && classify(fd_kind, path, None) == Sink::File
}

pub struct Correlator {
    fp: FingerprintSet,
    /// Boxed: a B-tree node holds 11 entries whatever its fill, so inline
    /// states would waste a third of the nodes' space.
    secrets: BTreeMap<String, Box<SecretState>>,
    /// Fingerprint ref -> the secrets with that value, sorted (usually one:
    /// a `Vec`, where a one-element `BTreeSet` would take a 280-byte node).
    by_ref: HashMap<SecretRef, Vec<String>>,
    /// Delivery file inode -> secrets delivered through it.
    delivery_inodes: HashMap<(u64, u32), BTreeSet<String>>,
    /// pid -> secrets it holds as a pid holder (or a child forked after).
    pid_holders: HashMap<u32, BTreeSet<String>>,
    /// Selector holders, delivery paths and leases, by lookup.
    index: holders::HolderIndex,
    /// A secret with a selector holder was recorded since the last
    /// [`Correlator::take_selectors_added`]: live processes must be matched
    /// against it (once a batch, not once a record).
    selectors_added: bool,
    /// argv/envp of execs waiting for their result.
    pending_exec: HashMap<u32, (Captured, Captured)>,
    /// pid -> the command line of its image as its exec event showed it
    /// (secrets redacted), for the alerts' `actor.cmd_line`; a fork
    /// inherits it, an exit drops it.
    cmd_lines: HashMap<u32, Box<str>>,
    /// A value was learned (or imported) since `cmd_lines` were last
    /// scanned: a command line cached before it may carry it. Scanned again
    /// before the next alert uses one ([`Correlator::redact_cmd_lines`]).
    cmd_lines_stale: bool,
    aggregator: Aggregator,
    /// Tails of the last captures per descriptor (split writes).
    carry: carry::CarryOver,
    /// Files written beyond their captures, to scan once written.
    file_scans: filescan::FileScans,
    /// Known readers: alerts they would raise are not raised.
    allow: Vec<AllowRule>,
    /// Alerts not raised because of `allow`, by rule.
    allowed: HashMap<String, u64>,
    /// Vault leases by id, for issuances that name them.
    leases: HashMap<String, crate::issuance::vault::VaultLease>,
    pub alerts_raised: u64,
}

/// Most Vault leases remembered.
const MAX_LEASES: usize = 10_000;

fn apply_lease(s: &mut SecretState, lease: &crate::issuance::vault::VaultLease) {
    for (k, v) in lease.to_issuance_identity() {
        s.issuance.identity.insert(k, v);
    }
    if s.issuance.expires_at.is_none() {
        s.issuance.expires_at = lease.expires_at();
    }
}

impl Correlator {
    pub fn new(key: FingerprintKey, aggregate_window: Duration) -> Self {
        Self {
            fp: FingerprintSet::new(key),
            secrets: BTreeMap::new(),
            by_ref: HashMap::new(),
            delivery_inodes: HashMap::new(),
            pid_holders: HashMap::new(),
            index: holders::HolderIndex::default(),
            selectors_added: false,
            pending_exec: HashMap::new(),
            cmd_lines: HashMap::new(),
            cmd_lines_stale: false,
            aggregator: Aggregator::new(aggregate_window),
            allow: Vec::new(),
            allowed: HashMap::new(),
            carry: carry::CarryOver::default(),
            file_scans: filescan::FileScans::default(),
            leases: HashMap::new(),
            alerts_raised: 0,
        }
    }

    /// The fingerprints (the fleet shares and imports them).
    pub fn fingerprints_mut(&mut self) -> &mut FingerprintSet {
        self.cmd_lines_stale = true;
        &mut self.fp
    }

    /// The secrets a fingerprint ref stands for.
    pub fn secret_ids_of(&self, r: SecretRef) -> Vec<String> {
        self.secrets_for(r)
    }

    /// Another node learned secret `id`: its fingerprints (already in the
    /// set as `r`) become this secret's, unless it was learned here.
    /// Returns whether they were adopted.
    pub fn adopt_fingerprint(&mut self, id: &str, r: SecretRef, from: String) -> bool {
        let Some(s) = self.secrets.get_mut(id) else {
            return false;
        };
        if s.fingerprint.is_some() {
            return false;
        }
        s.fingerprint = Some(r);
        s.learned_at = Some(Utc::now());
        s.learned_from = Some(from);
        let ids = self.by_ref.entry(r).or_default();
        if let Err(at) = ids.binary_search(&id.to_string()) {
            ids.insert(at, id.to_string());
        }
        true
    }

    /// Is a secret with this id recorded?
    pub fn knows(&self, id: &str) -> bool {
        self.secrets.contains_key(id)
    }

    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// Known readers (`[[allow]]` in the config).
    pub fn set_allow(&mut self, allow: Vec<AllowRule>) {
        self.allow = allow;
    }

    /// Alerts an `[[allow]]` entry kept from being raised, by rule.
    pub fn alerts_allowed(&self) -> &HashMap<String, u64> {
        &self.allowed
    }

    /// Per-rule, per-actor cap on distinct alerts (beyond the roll-up).
    pub fn set_rate_limit(&mut self, rate: alert::RateLimit) {
        self.aggregator.set_rate_limit(rate);
    }

    /// Distinct alerts held back by the rate limit so far, by rule.
    pub fn alerts_rate_limited(&self) -> &HashMap<String, u64> {
        &self.aggregator.rate_limited
    }

    /// Alerts rolled up into an earlier identical one so far.
    pub fn alerts_suppressed(&self) -> u64 {
        self.aggregator.suppressed
    }

    pub fn fingerprint_count(&self) -> usize {
        self.fp.len()
    }

    // ------------------------------------------------------------ records

    /// Apply an issuance or revocation. Returns what the agent must do.
    pub fn apply(
        &mut self,
        rec: Record,
        procs: &mut dyn ProcLookup,
    ) -> Result<(String, Outcome), String> {
        let mut out = Outcome::default();
        match rec {
            Record::Revoke { secret_id, at } => {
                let s = self
                    .secrets
                    .get_mut(&secret_id)
                    .ok_or_else(|| format!("unknown secret_id {secret_id:?}"))?;
                s.revoked_at = Some(at.unwrap_or_else(Utc::now));
                Ok((secret_id, out))
            }
            Record::Issue(iss) => {
                if let Some(why) = self.reissue_refusal(&iss, Utc::now()) {
                    return Err(why);
                }
                let id = iss.secret_id.clone();
                let prev = self.secrets.remove(&id);
                if let Some(p) = &prev {
                    self.index.remove(&p.issuance);
                }
                let mut s = SecretState {
                    issuance: iss,
                    revoked_at: None,
                    // A re-issue keeps what was learned about the same secret.
                    fingerprint: prev.as_ref().and_then(|p| p.fingerprint),
                    learned_at: prev.as_ref().and_then(|p| p.learned_at),
                    learned_from: prev.as_ref().and_then(|p| p.learned_from.clone()),
                    resolved: HashMap::new(),
                    inodes: prev.map(|p| p.inodes).unwrap_or_default(),
                    // The holder may have changed: seen again.
                    holder_k8s: None,
                };
                resolve_hosts(&mut s);
                if let Some(lease) = s
                    .issuance
                    .lease_id
                    .as_ref()
                    .and_then(|l| self.leases.get(l))
                {
                    apply_lease(&mut s, lease);
                }
                out.watch = s.file_deliveries().map(str::to_string).collect();
                if let Some(pid) = s.issuance.holder.pid {
                    self.pid_holders.entry(pid).or_default().insert(id.clone());
                    out.track.push(pid);
                    // An env secret of a running process: the agent reads it
                    // from /proc/<pid>/environ itself.
                    if s.fingerprint.is_none() && s.env_deliveries().next().is_some() {
                        self.learn_env_from_proc(&mut s, pid);
                    }
                }
                // Live processes matching a cgroup/container/pod/exe holder
                // are found by `resolve_holders` once the batch is applied.
                let _ = procs;
                if has_selector(&s.issuance) {
                    self.selectors_added = true;
                }
                self.index.insert(&s.issuance);
                for k in s.inodes.clone() {
                    self.delivery_inodes
                        .entry(k)
                        .or_default()
                        .insert(id.clone());
                }
                self.secrets.insert(id.clone(), Box::new(s));
                Ok((id, out))
            }
        }
    }

    /// Why `iss` may not be applied: it re-issues a secret that is still
    /// valid (not revoked, not expired) to a different holder, and does not
    /// say `"replaces": true`. A silent move would let the new "holder"
    /// read the old holder's secret without an alert. Renewals to the same
    /// holder, and a discovered secret made explicit, are fine.
    pub fn reissue_refusal(&self, iss: &Issuance, now: DateTime<Utc>) -> Option<String> {
        let prev = &self.secrets.get(&iss.secret_id)?;
        let p = &prev.issuance;
        let revoked = prev.revoked_at.is_some_and(|r| r <= now);
        if iss.replaces
            || p.holder == iss.holder
            || revoked
            || p.is_expired(now)
            || p.source.as_deref() == Some(crate::issuance::discover::SOURCE)
        {
            return None;
        }
        Some(format!(
            "secret_id {:?} is already issued to holder {} (not revoked, not expired): \
             the re-issue to holder {} is refused; revoke it first or say \"replaces\": true",
            iss.secret_id,
            p.holder.to_json(),
            iss.holder.to_json()
        ))
    }

    /// The watch set found a file at `path` with inode `key`.
    pub fn on_file(&mut self, path: &str, key: InodeKey) {
        for id in self.index.delivered_at(path) {
            if let Some(s) = self.secrets.get_mut(id) {
                s.inodes.insert((key.ino, key.dev));
                self.delivery_inodes
                    .entry((key.ino, key.dev))
                    .or_default()
                    .insert(id.clone());
            }
        }
    }

    /// Whether a secret with a selector holder was recorded since the last
    /// call (then [`Correlator::resolve_holders`] finds its processes).
    pub fn take_selectors_added(&mut self) -> bool {
        std::mem::take(&mut self.selectors_added)
    }

    /// Secrets as the API shows them (no fingerprints, no values).
    pub fn secrets_json(&self) -> Value {
        let now = Utc::now();
        Value::Array(
            self.secrets
                .iter()
                .map(|(id, s)| {
                    let mut rec = s.issuance.to_json();
                    rec["state"] = json!(s.state(now));
                    rec["learned"] = json!(s.fingerprint.is_some());
                    rec["learned_at"] = json!(s.learned_at.map(rfc3339_micros));
                    rec["learned_from"] = json!(s.learned_from);
                    rec["revoked_at"] = json!(s.revoked_at.map(rfc3339_micros));
                    rec["secret_id"] = json!(id);
                    rec
                })
                .collect(),
        )
    }

    // ------------------------------------------------------------ learning

    fn learn(&mut self, s: &mut SecretState, value: &mut Vec<u8>, from: String) {
        if let Some(claims) = jwt::parse_jwt(value) {
            if s.issuance.expires_at.is_none() {
                s.issuance.expires_at = claims.exp;
            }
            s.issuance.identity.extend(claims.to_identity());
        }
        if let Some(r) = self.fp.add(value) {
            s.fingerprint = Some(r);
            self.cmd_lines_stale = true;
            s.learned_at = Some(Utc::now());
            s.learned_from = Some(from);
            let ids = self
                .by_ref
                .entry(r)
                .or_insert_with(|| Vec::with_capacity(1));
            if let Err(at) = ids.binary_search(&s.issuance.secret_id) {
                ids.insert(at, s.issuance.secret_id.clone());
            }
        } else {
            tracing::warn!(
                "secret {} is shorter than {} bytes: not fingerprinted",
                s.issuance.secret_id,
                fingerprint::MIN_SECRET_LEN
            );
        }
        value.zeroize();
    }

    /// Read a delivery file to learn its secret (the agent is not traced).
    fn learn_file(&mut self, id: &str, path: &str, captured: Option<&Captured>) {
        let Some(mut s) = self.secrets.remove(id) else {
            return;
        };
        if s.fingerprint.is_none() {
            // Regular files only: a FIFO swapped in would block the agent.
            let mut value = match std::fs::metadata(path) {
                Ok(m) if m.is_file() && m.len() <= MAX_SECRET_FILE => {
                    std::fs::read(path).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            if value.is_empty() {
                if let Some(c) = captured {
                    value = c.bytes().to_vec();
                }
            }
            if !value.is_empty() {
                self.learn(&mut s, &mut value, format!("file {path}"));
            }
        }
        self.secrets.insert(id.to_string(), s);
    }

    fn learn_env_from_proc(&mut self, s: &mut SecretState, pid: u32) {
        let Ok(mut environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return;
        };
        self.learn_env(s, &environ, format!("environ of pid {pid}"));
        environ.zeroize();
    }

    /// Learn from `NAME=value` strings (NUL-separated).
    fn learn_env(&mut self, s: &mut SecretState, envp: &[u8], from: String) {
        let names: Vec<String> = s.env_deliveries().map(str::to_string).collect();
        for kv in split_nul(envp) {
            for name in &names {
                if kv.len() > name.len()
                    && kv.starts_with(name.as_bytes())
                    && kv[name.len()] == b'='
                {
                    let mut value = kv[name.len() + 1..].to_vec();
                    self.learn(s, &mut value, format!("{from} ({name})"));
                    return;
                }
            }
        }
    }

    // ------------------------------------------------------------ holders

    fn is_holder(&self, id: &str, p: &Process) -> bool {
        let Some(s) = self.secrets.get(id) else {
            return false;
        };
        if self
            .pid_holders
            .get(&p.pid)
            .is_some_and(|set| set.contains(id))
        {
            return true;
        }
        selector_matches(&s.issuance, p)
    }

    fn secrets_for(&self, r: SecretRef) -> Vec<String> {
        self.by_ref.get(&r).map(|s| s.to_vec()).unwrap_or_default()
    }

    fn matches_to_secrets(&self, matches: &[Match]) -> Vec<(String, Encoding, usize, usize)> {
        let mut out = Vec::new();
        for m in matches {
            for id in self.secrets_for(m.secret) {
                if !out
                    .iter()
                    .any(|(i, e, _, _): &(String, Encoding, usize, usize)| {
                        *i == id && *e == m.encoding
                    })
                {
                    out.push((id, m.encoding, m.offset, m.len));
                }
            }
        }
        out
    }

    // ------------------------------------------------------------ events

    /// Evaluate the rules for one enriched event. `ev` may be annotated
    /// (matched secrets, redacted argv).
    pub fn on_event(
        &mut self,
        ev: &mut Event,
        raw: &RawEvent,
        procs: &mut dyn ProcLookup,
    ) -> Outcome {
        let mut out = Outcome::default();
        let time = ev.time.to_datetime();
        match raw {
            RawEvent::Read(d, data) => {
                self.delivery_access(ev, &d.file, Some(data), time, &mut out);
            }
            RawEvent::Mmap(m) => {
                self.delivery_access(ev, &m.file, None, time, &mut out);
            }
            RawEvent::Transfer(t) => {
                let ids = self.delivery_access(ev, &t.in_file, None, time, &mut out);
                let sink = classify_fd(
                    ev.detail.fd_out,
                    ev.detail.out_kind,
                    ev.detail.out_path.as_deref(),
                    ev.detail.dest.as_ref(),
                );
                for id in ids {
                    let path = ev.detail.out_path.clone();
                    if sink == Sink::File && self.is_delivery_path(&id, path.as_deref()) {
                        continue;
                    }
                    self.bytes_moved(ev, &id, "raw", sink, path.clone(), time, &mut out);
                    if stdio_into_file(ev.detail.fd_out, ev.detail.out_kind, path.as_deref())
                        && !self.is_delivery_path(&id, path.as_deref())
                    {
                        self.bytes_moved(ev, &id, "raw", Sink::File, path, time, &mut out);
                    }
                }
            }
            RawEvent::Write(d, data, _) => {
                // The previous capture's tail on this descriptor goes in
                // front: a secret split across writes is found; matches
                // wholly inside that tail were reported with it.
                let keep = self.fp.longest_form().saturating_sub(1);
                let whole = u64::from(d.data_len) >= d.count;
                let (buf, head) = self.carry.join(
                    (ev.process.pid, d.fd, d.file.ino),
                    data.bytes(),
                    keep,
                    whole,
                );
                let mut matches = self.fp.scan(&buf);
                drop(buf);
                matches.retain(|m| m.offset + m.len > head);
                let found = self.matches_to_secrets(&matches);
                if !found.is_empty() {
                    let sink = classify_fd(
                        ev.detail.fd,
                        ev.detail.fd_kind,
                        ev.detail.path.as_deref(),
                        ev.detail.dest.as_ref(),
                    );
                    for (id, enc, _, _) in &found {
                        annotate(ev, id, enc.as_str());
                        if sink == Sink::File
                            && self.is_delivery_path(id, ev.detail.path.as_deref())
                        {
                            continue;
                        }
                        let path = ev.detail.path.clone();
                        self.bytes_moved(ev, id, enc.as_str(), sink, path, time, &mut out);
                        // stdout/stderr redirected into a regular file: a
                        // log, and a copy on disk too.
                        if stdio_into_file(
                            ev.detail.fd,
                            ev.detail.fd_kind,
                            ev.detail.path.as_deref(),
                        ) && !self.is_delivery_path(id, ev.detail.path.as_deref())
                        {
                            let path = ev.detail.path.clone();
                            self.bytes_moved(
                                ev,
                                id,
                                enc.as_str(),
                                Sink::File,
                                path,
                                time,
                                &mut out,
                            );
                        }
                    }
                    out.track.push(ev.process.pid);
                }
                // Written beyond the capture into a regular file: the agent
                // reads the file itself once the writes stop.
                if !whole && ev.detail.fd_kind == Some(FdKind::File) {
                    if let Some(p) = ev.detail.path.as_deref().filter(|p| p.starts_with('/')) {
                        let p = p.to_string();
                        self.file_scans.note(&p, d.file.ino, ev);
                    }
                }
            }
            RawEvent::ExecResult(r) => {
                if let Some((argv, envp)) = self.pending_exec.remove(&ev.process.pid) {
                    if r.ret == 0 {
                        self.exec(ev, &argv, &envp, time, &mut out);
                    }
                }
            }
            RawEvent::Connect(_) => {
                if let Some(sa) = ev.detail.dest.as_ref().and_then(Dest::inet) {
                    let (ip, port) = (sa.ip(), sa.port());
                    let held: Vec<String> = self.held_by(&ev.process);
                    for id in held {
                        let s = &self.secrets[&id];
                        if s.dead_at(time).is_some() {
                            continue;
                        }
                        if s.allows(ip, port) == Some(false) {
                            let summary = format!(
                                "holder of {id} connected to {sa} by {} (pid {})",
                                ev.process.comm, ev.process.pid
                            );
                            let evidence = Evidence {
                                dest: ev.detail.dest.as_ref().map(Dest::to_string),
                                fd_kind: Some(FdKind::Socket),
                                syscall: Some(ev.syscall.to_string()),
                                ..Default::default()
                            };
                            self.raise(
                                Rule::HolderEgressUnexpected,
                                ev,
                                &id,
                                summary,
                                evidence,
                                &[],
                                &mut out,
                            );
                        }
                    }
                }
            }
            RawEvent::ProcAccess(p) => {
                if let Some(target) = procs.process_of(p.target_pid) {
                    let held = self.held_by(&target);
                    for id in held {
                        self.saw_holder(&id, &target);
                        if self.is_holder(&id, &ev.process) {
                            continue;
                        }
                        let access = ev.detail.access.clone().unwrap_or_default();
                        let what = match access.as_str() {
                            "environ" => format!("/proc/{}/environ", p.target_pid),
                            "mem" => format!("/proc/{}/mem", p.target_pid),
                            other => format!("{other} of pid {}", p.target_pid),
                        };
                        let summary = format!(
                            "{what} (holder of {id}) read by {} (pid {})",
                            ev.process.comm, ev.process.pid
                        );
                        let evidence = Evidence {
                            path: matches!(access.as_str(), "environ" | "mem")
                                .then(|| what.clone()),
                            target_pid: Some(p.target_pid),
                            holder_k8s: target.k8s.clone(),
                            access: Some(access),
                            syscall: Some(ev.syscall.to_string()),
                            ..Default::default()
                        };
                        annotate(ev, &id, "holder");
                        self.raise(
                            Rule::EnvironScrape,
                            ev,
                            &id,
                            summary,
                            evidence,
                            &[],
                            &mut out,
                        );
                    }
                }
            }
            RawEvent::Fork(f) => {
                if let Some(set) = self.pid_holders.get(&ev.process.pid).cloned() {
                    self.pid_holders.insert(f.child_pid, set);
                }
                if let Some(c) = self.cmd_lines.get(&ev.process.pid).cloned() {
                    self.cmd_lines.insert(f.child_pid, c);
                }
            }
            RawEvent::Exit(_) => {
                self.carry.forget_pid(ev.process.pid);
                self.pid_holders.remove(&ev.process.pid);
                self.pending_exec.remove(&ev.process.pid);
                self.cmd_lines.remove(&ev.process.pid);
            }
            RawEvent::Exec(..)
            | RawEvent::Open(_)
            | RawEvent::Close(_)
            | RawEvent::Dup(_)
            | RawEvent::Getenv(_) => {}
            RawEvent::UringCreate(_) => {
                // A holder set up an io_uring instance: recorded in each
                // held secret's timeline (what it submits is captured
                // like its syscalls).
                let held = self.held_by(&ev.process);
                if !held.is_empty() {
                    ev.detail.secrets = Some(
                        held.into_iter()
                            .map(|secret_id| SecretMatch {
                                secret_id,
                                encoding: "holder".into(),
                            })
                            .collect(),
                    );
                }
            }
        }
        self.name_holders(&mut out.alerts, |pid| procs.k8s_names(pid));
        self.one_alert_per_rule(ev, &mut out);
        out
    }

    /// A holder process of `id` was seen: its Kubernetes names, if known,
    /// become the secret's holder names (kept once set: one holder, one pod).
    fn saw_holder(&mut self, id: &str, p: &Process) {
        if let (Some(s), Some(k)) = (self.secrets.get_mut(id), &p.k8s) {
            if s.holder_k8s.is_none() {
                s.holder_k8s = Some(Box::new(k.clone()));
            }
        }
    }

    /// The Kubernetes names of `id`'s holder: as seen ([`Self::saw_holder`]),
    /// else a pid holder's looked up (`lookup`: a pid's names), else the pod a
    /// `{namespace, pod}` holder names; `None` when unknown (no holder in
    /// a pod, or not on this node).
    fn holder_names(
        &mut self,
        id: &str,
        lookup: &mut impl FnMut(u32) -> Option<K8s>,
    ) -> Option<K8s> {
        let s = self.secrets.get_mut(id)?;
        if let Some(k) = &s.holder_k8s {
            return Some((**k).clone());
        }
        // Learned from another node: its holder is there (`evidence.
        // holder_node`), not the placeholder names that keep every process
        // here from holding it.
        if s.issuance
            .labels
            .contains_key(crate::issuance::FLEET_HOLDER_NODE)
        {
            return None;
        }
        let h = &s.issuance.holder;
        if let Some(pid) = h.pid {
            if let Some(k) = lookup(pid) {
                s.holder_k8s = Some(Box::new(k.clone()));
                return Some(k);
            }
        }
        match (&h.namespace, &h.pod) {
            (Some(ns), Some(pod)) => Some(K8s {
                namespace: Some(ns.clone()),
                pod: Some(pod.clone()),
                ..Default::default()
            }),
            _ => None,
        }
    }

    /// Every alert whose secret's holder has Kubernetes names carries them
    /// as `evidence.holder_k8s` (a scrape already names the scraped one).
    fn name_holders(&mut self, alerts: &mut [Alert], mut lookup: impl FnMut(u32) -> Option<K8s>) {
        for a in alerts {
            if a.evidence.holder_k8s.is_none() {
                a.evidence.holder_k8s = self.holder_names(&a.secret_id, &mut lookup);
            }
        }
    }

    /// The rules raised their alerts into `out` one secret at a time: one
    /// event makes one alert per rule (and actor: always the event's
    /// process), listing every secret; each then passes the roll-up and the
    /// rate limit.
    fn one_alert_per_rule(&mut self, ev: &mut Event, out: &mut Outcome) {
        let raised = std::mem::take(&mut out.alerts);
        let mut merged: Vec<Alert> = Vec::with_capacity(raised.len());
        for a in raised {
            match merged
                .iter_mut()
                .find(|m| m.rule == a.rule && m.actor.pid == a.actor.pid)
            {
                Some(m) => m.absorb(&a),
                None => merged.push(a),
            }
        }
        for mut a in merged {
            a.name_all_secrets();
            // A known reader ([[allow]]): the event stays (stored, marked),
            // counted, no alert.
            if self
                .allow
                .iter()
                .any(|r| r.matches(a.rule.as_str(), &ev.process))
            {
                *self.allowed.entry(a.rule.to_string()).or_default() += 1;
                let list = ev.detail.allowed.get_or_insert_with(Vec::new);
                if !list.iter().any(|r| a.rule == r.as_str()) {
                    list.push(a.rule.to_string());
                }
                continue;
            }
            self.alerts_raised += 1;
            if let Some(a) = self.aggregator.offer(a) {
                out.alerts.push(a);
            }
        }
    }

    /// An exec entered the kernel: keep argv/envp for its result (the
    /// enricher emits no event before the result).
    pub fn exec_started(&mut self, pid: u32, argv: &Captured, envp: &Captured) {
        self.pending_exec.insert(pid, (argv.clone(), envp.clone()));
    }

    /// A paired Vault audit entry: identity and expiry for the secrets
    /// issued under its lease (now or later).
    pub fn vault_lease(&mut self, lease: crate::issuance::vault::VaultLease) {
        let Some(lease_id) = lease.lease_id.clone() else {
            return;
        };
        for id in self.index.under_lease(&lease_id) {
            if let Some(s) = self.secrets.get_mut(id) {
                apply_lease(s, &lease);
            }
        }
        if self.leases.len() >= MAX_LEASES {
            self.leases.clear();
        }
        self.leases.insert(lease_id, lease);
    }

    /// Secrets `p` holds.
    /// By lookup: its pid's secrets and the selector candidates, checked.
    fn held_by(&self, p: &Process) -> Vec<String> {
        let mut ids = self.index.candidates(p);
        if let Some(set) = self.pid_holders.get(&p.pid) {
            ids.extend(set.iter().cloned());
            ids.sort();
            ids.dedup();
        }
        ids.retain(|id| self.is_holder(id, p));
        ids
    }

    fn is_delivery_path(&self, id: &str, path: Option<&str>) -> bool {
        match (self.secrets.get(id), path) {
            (Some(s), Some(p)) => s.file_deliveries().any(|d| d == p),
            _ => false,
        }
    }

    /// A read/mmap/copy-in of a delivery file. Returns the secrets behind it.
    fn delivery_access(
        &mut self,
        ev: &mut Event,
        file: &FileInfo,
        captured: Option<&Captured>,
        time: DateTime<Utc>,
        out: &mut Outcome,
    ) -> Vec<String> {
        let ids: Vec<String> = self
            .delivery_inodes
            .get(&(file.ino, file.dev))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for id in &ids {
            annotate(ev, id, "delivery");
            // A discovered file outside any pod: its first reader's cgroup
            // holds it.
            if let Some(s) = self.secrets.get_mut(id) {
                let h = &s.issuance.holder;
                let unheld = h.pid.is_none()
                    && h.cgroup.is_none()
                    && h.container_id.is_none()
                    && h.pod_uid.is_none()
                    && h.exe.is_none()
                    && h.namespace.is_none();
                if unheld && s.issuance.source.as_deref() == Some(crate::issuance::discover::SOURCE)
                {
                    self.index.remove(&s.issuance);
                    s.issuance.holder.cgroup = ev.process.cgroup.clone();
                    self.index.insert(&s.issuance);
                }
            }
            let path = self
                .secrets
                .get(id)
                .and_then(|s| s.file_deliveries().next().map(str::to_string))
                .unwrap_or_default();
            self.learn_file(id, &path, captured);
            let s = &self.secrets[id];
            let opened = ev.detail.path.clone().unwrap_or_else(|| path.clone());
            let evidence = Evidence {
                delivery_path: (opened != path && !path.is_empty()).then(|| path.clone()),
                path: Some(opened),
                fd_kind: Some(FdKind::File),
                bytes: ev.detail.bytes,
                syscall: Some(ev.syscall.to_string()),
                ..Default::default()
            };
            let extra: &[&str] = if is_service_account_token(&path) {
                &[ATTACK_CONTAINER_API]
            } else {
                &[]
            };
            if let Some((revoked, when)) = s.dead_at(time) {
                let mut e = evidence.clone();
                set_dead(&mut e, revoked, when);
                let summary = format!(
                    "{id} read after {} by {} (pid {})",
                    if revoked { "revocation" } else { "expiry" },
                    ev.process.comm,
                    ev.process.pid
                );
                self.raise(Rule::ReplayExpired, ev, id, summary, e, extra, out);
            }
            if self.is_holder(id, &ev.process) {
                self.saw_holder(id, &ev.process);
            } else {
                let summary = format!(
                    "{id} ({}) read by {} (pid {}), not its holder",
                    path, ev.process.comm, ev.process.pid
                );
                self.raise(Rule::ReadForeign, ev, id, summary, evidence, extra, out);
            }
        }
        ids
    }

    /// The secret's bytes went to `sink` (a write or an in-kernel copy).
    #[allow(clippy::too_many_arguments)]
    fn bytes_moved(
        &mut self,
        ev: &Event,
        id: &str,
        encoding: &str,
        sink: Sink,
        path: Option<String>,
        time: DateTime<Utc>,
        out: &mut Outcome,
    ) {
        let who = format!("{} (pid {})", ev.process.comm, ev.process.pid);
        let evidence = Evidence {
            path: path.clone(),
            dest: ev.detail.dest.as_ref().map(Dest::to_string),
            fd_kind: ev.detail.out_kind.or(ev.detail.fd_kind),
            encoding: Some(encoding.to_string()),
            bytes: ev.detail.bytes,
            syscall: Some(ev.syscall.to_string()),
            tls: ev.detail.tls,
            ..Default::default()
        };
        match sink {
            Sink::Ignore => {}
            Sink::File => {
                let summary = format!(
                    "{id} copied into {} by {who}",
                    path.as_deref().unwrap_or("?")
                );
                self.raise(Rule::CopyFile, ev, id, summary, evidence, &[], out);
            }
            Sink::Log => {
                // fd 1/2 of a write, fd_out of a copy.
                let fd = if ev.kind == EventKind::Copy {
                    ev.detail.fd_out
                } else {
                    ev.detail.fd
                };
                // Where stdout/stderr really goes: the file, pipe, tty or
                // socket behind it.
                let real = match evidence.fd_kind {
                    Some(FdKind::Socket) => evidence.dest.clone(),
                    _ => path.clone(),
                };
                let std_target = |name: &str| match &real {
                    Some(r) => format!("{name} ({r})"),
                    None => name.to_string(),
                };
                let target = match (fd, evidence.fd_kind) {
                    (Some(1), _) => std_target("stdout"),
                    (Some(2), _) => std_target("stderr"),
                    (_, Some(FdKind::Socket)) => evidence.dest.clone().unwrap_or_default(),
                    (_, Some(k)) => path.clone().unwrap_or_else(|| k.to_string()),
                    _ => "a log".into(),
                };
                let summary = format!("{id} written to {target} by {who}");
                self.raise(Rule::LeakLog, ev, id, summary, evidence, &[], out);
            }
            Sink::Network => {
                let dest = evidence.dest.clone().unwrap_or_default();
                let Some(s) = self.secrets.get(id) else {
                    return;
                };
                let dead = s.dead_at(time);
                let allowed = ev
                    .detail
                    .dest
                    .as_ref()
                    .and_then(Dest::inet)
                    .and_then(|sa| s.allows(sa.ip(), sa.port()));
                let holder = self.is_holder(id, &ev.process);
                // "127.0.0.1:443 over TLS (openssl)"
                let dest = match ev.detail.tls {
                    Some(lib) => format!("{dest} over TLS ({lib})"),
                    None => dest,
                };
                if let Some((revoked, when)) = dead {
                    let mut e = evidence.clone();
                    set_dead(&mut e, revoked, when);
                    let summary = format!(
                        "{id} sent to {dest} after {} by {who}",
                        if revoked { "revocation" } else { "expiry" }
                    );
                    self.raise(Rule::ReplayExpired, ev, id, summary, e, &[], out);
                }
                if allowed == Some(false) {
                    let summary =
                        format!("{id} sent to {dest} (not an allowed destination) by {who}");
                    self.raise(
                        Rule::SendUnexpectedDestination,
                        ev,
                        id,
                        summary,
                        evidence.clone(),
                        &[],
                        out,
                    );
                }
                if !holder {
                    let summary = format!("{id} sent to {dest} by {who}, not its holder");
                    self.raise(Rule::ReplayForeign, ev, id, summary, evidence, &[], out);
                }
            }
        }
    }

    fn exec(
        &mut self,
        ev: &mut Event,
        argv: &Captured,
        envp: &Captured,
        time: DateTime<Utc>,
        out: &mut Outcome,
    ) {
        let _ = time;
        // 1. The new image may be a holder: learn its env secrets, track it.
        for id in &self.held_by(&ev.process) {
            out.track.push(ev.process.pid);
            let mut s = self.secrets.remove(id).expect("secret present");
            if s.fingerprint.is_none() && s.env_deliveries().next().is_some() {
                self.learn_env(
                    &mut s,
                    envp.bytes(),
                    format!("exec of pid {}", ev.process.pid),
                );
            }
            self.secrets.insert(id.clone(), s);
        }
        // 2. argv: a secret on a command line (holder or not) is a leak.
        let mut redacted: Vec<String> = Vec::new();
        let mut hits: Vec<(String, Encoding)> = Vec::new();
        for arg in split_nul(argv.bytes()) {
            let found = self.matches_to_secrets(&self.fp.scan(arg));
            if found.is_empty() {
                redacted.push(String::from_utf8_lossy(arg).into_owned());
                continue;
            }
            redacted.push(redact(arg, &found));
            for (id, enc, _, _) in found {
                if !hits.iter().any(|(i, _)| *i == id) {
                    hits.push((id, enc));
                }
            }
        }
        self.cmd_lines
            .insert(ev.process.pid, cmd_line(&redacted).into_boxed_str());
        if !hits.is_empty() {
            ev.detail.argv = Some(redacted);
            out.track.push(ev.process.pid);
        }
        for (id, enc) in hits {
            annotate(ev, &id, enc.as_str());
            let summary = format!(
                "{id} on the command line of {} (pid {})",
                ev.process.comm, ev.process.pid
            );
            let evidence = exec_evidence(ev, enc);
            self.raise(Rule::LeakArgv, ev, &id, summary, evidence, &[], out);
        }
        // 3. envp: the secret reached a process outside its holder.
        let mut env_hits: Vec<(String, Encoding, String)> = Vec::new();
        for kv in split_nul(envp.bytes()) {
            let eq = kv.iter().position(|&b| b == b'=').unwrap_or(kv.len());
            let value = &kv[(eq + 1).min(kv.len())..];
            let name = String::from_utf8_lossy(&kv[..eq]).into_owned();
            for (id, enc, _, _) in self.matches_to_secrets(&self.fp.scan(value)) {
                if !env_hits.iter().any(|(i, _, _)| *i == id) {
                    env_hits.push((id, enc, name.clone()));
                }
            }
        }
        for (id, enc, name) in env_hits {
            annotate(ev, &id, enc.as_str());
            out.track.push(ev.process.pid);
            if self.is_holder(&id, &ev.process) {
                continue;
            }
            let summary = format!(
                "{id} in the environment ({name}) of {} (pid {}), not its holder",
                ev.process.comm, ev.process.pid
            );
            let evidence = exec_evidence(ev, enc);
            self.raise(Rule::EnvPropagated, ev, &id, summary, evidence, &[], out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        rule: Rule,
        ev: &Event,
        id: &str,
        summary: String,
        evidence: Evidence,
        extra_attack: &[&str],
        out: &mut Outcome,
    ) {
        self.redact_cmd_lines();
        let actor = Process {
            cmd_line: self.cmd_lines.get(&ev.process.pid).map(|c| c.to_string()),
            ..ev.process.actor()
        };
        let alert = Alert::new(rule, ev.time, id, summary, actor, evidence, vec![ev.id])
            .with_attack(extra_attack);
        // Merged per rule and offered to the aggregator at the end of the
        // event (`one_alert_per_rule`).
        out.alerts.push(alert);
    }

    /// Scan the cached command lines again once a value was learned since
    /// they were cached: a process started with a secret on its command line
    /// before the agent knew it must not carry it into an alert. Once per
    /// learning, at the next alert (a few thousand short lines).
    fn redact_cmd_lines(&mut self) {
        if !std::mem::take(&mut self.cmd_lines_stale) {
            return;
        }
        let fp = &self.fp;
        let mut changed = Vec::new();
        for (pid, line) in &self.cmd_lines {
            let found = self.matches_to_secrets(&fp.scan(line.as_bytes()));
            if !found.is_empty() {
                changed.push((*pid, redact(line.as_bytes(), &found)));
            }
        }
        for (pid, line) in changed {
            self.cmd_lines.insert(pid, line.into_boxed_str());
        }
    }

    /// A tracked process lost captured writes (`budget` to its capture
    /// budget, `ring` to a full ring buffer) since the last report: one
    /// `monitor.capture.degraded` alert naming it and every secret it
    /// holds (none if it holds none: the loss is still counted in the
    /// metrics). Rolled up like any alert while the flood goes on.
    pub fn capture_degraded(
        &mut self,
        p: &Process,
        time: UtcTime,
        budget: u64,
        ring: u64,
    ) -> Vec<Alert> {
        let held = self.held_by(p);
        let Some(first) = held.first().cloned() else {
            return Vec::new();
        };
        let mut names = held.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        if held.len() > 10 {
            names.push_str(&format!(" and {} more", held.len() - 10));
        }
        let summary = format!(
            "{} (pid {}), holder of {names}, writes faster than its capture budget: \
             {} writes not scanned ({budget} over budget, {ring} ring buffer full)",
            p.comm,
            p.pid,
            budget + ring
        );
        let evidence = Evidence {
            syscall: Some("write".into()),
            dropped_budget: Some(budget),
            dropped_ring: Some(ring),
            held: Some(held),
            ..Default::default()
        };
        let alert = Alert::new(
            Rule::CaptureDegraded,
            time,
            &first,
            summary,
            p.actor(),
            evidence,
            Vec::new(),
        );
        self.alerts_raised += 1;
        self.aggregator.offer(alert).into_iter().collect()
    }

    /// Periodic: roll-ups of aggregated alerts; re-resolve host names.
    pub fn tick(&mut self, force: bool) -> Vec<Alert> {
        self.carry.expire();
        let mut alerts = self.scan_written_files(force);
        alerts.extend(self.aggregator.flush(force));
        alerts
    }

    /// Files written beyond their captures, read and scanned once their
    /// writes stopped: every secret in them is a copy.
    fn scan_written_files(&mut self, force: bool) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for (mut ev, matches) in self.file_scans.run(&self.fp, force) {
            let mut out = Outcome::default();
            let path = ev.detail.path.clone();
            let sink = classify(Some(FdKind::File), path.as_deref(), None);
            let time = ev.time.to_datetime();
            let found = self.matches_to_secrets(&matches);
            for (id, enc, _, _) in &found {
                if self.is_delivery_path(id, path.as_deref()) {
                    continue;
                }
                self.bytes_moved(&ev, id, enc.as_str(), sink, path.clone(), time, &mut out);
            }
            for a in &mut out.alerts {
                a.summary
                    .push_str(" (found scanning the file after its writes)");
            }
            self.name_holders(&mut out.alerts, |_| None);
            self.one_alert_per_rule(&mut ev, &mut out);
            alerts.extend(out.alerts);
        }
        alerts
    }

    /// Files scanned after their writes, and dropped unscanned, so far.
    pub fn file_scan_counts(&self) -> (u64, u64) {
        (self.file_scans.scanned, self.file_scans.dropped)
    }

    /// Live processes matching a cgroup/container/pod/exe holder (processes
    /// can join a holder's cgroup without an exec the agent would see).
    /// (Cost: live processes times their cgroup depth, whatever the
    /// number of secrets.)
    /// A secret is issued to a selector holder (exe, cgroup, container,
    /// pod): a process it takes in may start at any time.
    pub fn has_selector_holders(&self) -> bool {
        self.index.has_selectors()
    }

    pub fn resolve_holders(&self, procs: &mut dyn ProcLookup) -> Vec<u32> {
        if !self.index.has_selectors() {
            return Vec::new();
        }
        procs
            .live_pids()
            .into_iter()
            .filter(|pid| procs.process_of(*pid).is_some_and(|p| self.selects(&p)))
            .collect()
    }

    /// Does a selector holder take in `p`?
    fn selects(&self, p: &Process) -> bool {
        self.index.candidates(p).iter().any(|id| {
            self.secrets
                .get(id)
                .is_some_and(|s| selector_matches(&s.issuance, p))
        })
    }

    /// Is `path` the delivery file of a known secret?
    pub fn delivers(&self, path: &str) -> bool {
        !self.index.delivered_at(path).is_empty()
    }

    /// Does a new process match a selector holder? (exec/fork of unknown pids.)
    pub fn should_track(&self, p: &Process) -> bool {
        self.pid_holders.contains_key(&p.pid) || self.selects(p)
    }
}

fn has_selector(i: &Issuance) -> bool {
    let h = &i.holder;
    h.cgroup.is_some()
        || h.container_id.is_some()
        || h.pod_uid.is_some()
        || h.exe.is_some()
        || h.namespace.is_some()
}

/// cgroup (the path or below), container id (full or a prefix of 12+),
/// pod uid, exe.
fn selector_matches(i: &Issuance, p: &Process) -> bool {
    let h = &i.holder;
    if let (Some(cg), Some(pc)) = (&h.cgroup, &p.cgroup) {
        let cg = cg.trim_end_matches('/');
        if pc == cg || pc.starts_with(&format!("{cg}/")) || cg.is_empty() {
            return true;
        }
    }
    if let (Some(c), Some(pc)) = (&h.container_id, &p.container_id) {
        if pc.starts_with(c.as_str()) {
            return true;
        }
    }
    if let (Some(u), Some(pu)) = (&h.pod_uid, &p.pod_uid) {
        if u.eq_ignore_ascii_case(pu) {
            return true;
        }
    }
    if let (Some(e), Some(pe)) = (&h.exe, &p.exe) {
        if e == pe {
            return true;
        }
    }
    // By Kubernetes name: {namespace, pod} or {namespace, service_account}.
    if let (Some(ns), Some(k)) = (&h.namespace, &p.k8s) {
        if k.namespace.as_ref() == Some(ns) {
            if h.pod.is_some() && h.pod == k.pod {
                return true;
            }
            if h.service_account.is_some() && h.service_account == k.service_account {
                return true;
            }
        }
    }
    false
}

fn resolve_hosts(s: &mut SecretState) {
    use std::net::ToSocketAddrs;
    let Some(list) = &s.issuance.allowed_destinations else {
        return;
    };
    for d in list {
        if let crate::issuance::Destination::Host { name, .. } = d {
            let addrs: Vec<IpAddr> = (name.as_str(), 0)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect())
                .unwrap_or_default();
            s.resolved.insert(name.clone(), addrs);
        }
    }
}

fn is_service_account_token(path: &str) -> bool {
    path.contains("kubernetes.io/serviceaccount")
        || path.contains("kube-api-access")
        || path.contains("kubernetes.io~projected")
}

fn set_dead(e: &mut Evidence, revoked: bool, when: DateTime<Utc>) {
    if revoked {
        e.revoked_at = Some(rfc3339_micros(when));
    } else {
        e.expired_at = Some(rfc3339_micros(when));
    }
}

fn annotate(ev: &mut Event, id: &str, encoding: &str) {
    let list = ev.detail.secrets.get_or_insert_with(Vec::new);
    if !list.iter().any(|m| m.secret_id == id) {
        list.push(SecretMatch {
            secret_id: id.to_string(),
            encoding: encoding.to_string(),
        });
    }
}

/// Evidence of a secret found in an exec's argv or envp.
fn exec_evidence(ev: &Event, enc: Encoding) -> Evidence {
    Evidence {
        path: ev.detail.filename.clone(),
        encoding: Some(enc.as_str().into()),
        syscall: Some(ev.syscall.to_string()),
        ..Default::default()
    }
}

/// Most bytes of a command line kept for alerts.
const MAX_CMD_LINE: usize = 4096;

/// argv joined with spaces (as `ps` shows it), cut at [`MAX_CMD_LINE`] on a
/// character boundary.
fn cmd_line(argv: &[String]) -> String {
    let mut s = argv.join(" ");
    if s.len() > MAX_CMD_LINE {
        let mut end = MAX_CMD_LINE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Replace every matched span of an argument by `[REDACTED:<secret_id>]`.
fn redact(arg: &[u8], found: &[(String, Encoding, usize, usize)]) -> String {
    let mut spans: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|(id, _, off, len)| (*off, (*off + *len).min(arg.len()), id.as_str()))
        .collect();
    spans.sort();
    let mut out = Vec::new();
    let mut at = 0;
    for (start, end, id) in spans {
        if start < at {
            continue;
        }
        out.extend_from_slice(&arg[at..start]);
        out.extend_from_slice(format!("[REDACTED:{id}]").as_bytes());
        at = end;
    }
    out.extend_from_slice(&arg[at..]);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classifiers, given what the events file shows.
    fn typed(k: Option<&str>, d: Option<&str>) -> (Option<FdKind>, Option<Dest>) {
        let k = k.map(|k| serde_json::from_value(json!(k)).unwrap());
        (k, d.map(|d| Dest::parse(d).unwrap()))
    }

    fn classify(k: Option<&str>, p: Option<&str>, d: Option<&str>) -> Sink {
        let (k, d) = typed(k, d);
        super::classify(k, p, d.as_ref())
    }

    fn classify_fd(fd: Option<i32>, k: Option<&str>, p: Option<&str>, d: Option<&str>) -> Sink {
        let (k, d) = typed(k, d);
        super::classify_fd(fd, k, p, d.as_ref())
    }

    #[test]
    fn write_targets_are_classified() {
        assert_eq!(
            classify(Some("socket"), None, Some("10.0.0.1:443")),
            Sink::Network
        );
        assert_eq!(
            classify(Some("socket"), None, Some("unix:/dev/log")),
            Sink::Log
        );
        assert_eq!(
            classify(Some("socket"), None, Some("unix:/run/other.sock")),
            Sink::Ignore
        );
        assert_eq!(classify(Some("pipe"), None, None), Sink::Log);
        assert_eq!(classify(Some("tty"), Some("/dev/pts/1"), None), Sink::Log);
        assert_eq!(
            classify(Some("file"), Some("/var/log/app/x"), None),
            Sink::Log
        );
        assert_eq!(
            classify(Some("file"), Some("/srv/app.log"), None),
            Sink::Log
        );
        assert_eq!(classify(Some("file"), Some("/tmp/copy"), None), Sink::File);
        assert_eq!(
            classify(Some("chardev"), Some("/dev/null"), None),
            Sink::Ignore
        );
        // stdout and stderr are logs whatever they point at.
        for fd in [1, 2] {
            assert_eq!(
                classify_fd(Some(fd), Some("file"), Some("/srv/out.txt"), None),
                Sink::Log
            );
            assert_eq!(classify_fd(Some(fd), Some("pipe"), None, None), Sink::Log);
        }
        assert_eq!(
            classify_fd(Some(3), Some("file"), Some("/srv/out.txt"), None),
            Sink::File
        );
    }

    #[test]
    fn allow_rules_match_rule_exe_uid_and_cgroup_subtree() {
        let r = AllowRule {
            rule: "secret.environ.scrape".into(),
            exe: "/usr/bin/ps".into(),
            uid: Some(0),
            cgroup: Some("/system.slice".into()),
        };
        assert!(r.validate().is_ok());
        let p = |exe: &str, uid: u32, cg: &str| Process {
            exe: Some(exe.into()),
            uid,
            cgroup: Some(cg.into()),
            ..Default::default()
        };
        assert!(r.matches(
            "secret.environ.scrape",
            &p("/usr/bin/ps", 0, "/system.slice/a")
        ));
        assert!(!r.matches("secret.read.foreign", &p("/usr/bin/ps", 0, "/system.slice")));
        assert!(!r.matches(
            "secret.environ.scrape",
            &p("/usr/bin/cat", 0, "/system.slice")
        ));
        assert!(!r.matches(
            "secret.environ.scrape",
            &p("/usr/bin/ps", 1000, "/system.slice")
        ));
        assert!(!r.matches(
            "secret.environ.scrape",
            &p("/usr/bin/ps", 0, "/system.slice2")
        ));
        let bad = AllowRule {
            rule: "secret.nope".into(),
            ..r.clone()
        };
        assert!(bad.validate().unwrap_err().contains("secret.nope"));
        let rel = AllowRule {
            exe: "ps".into(),
            ..r
        };
        assert!(rel.validate().unwrap_err().contains("absolute"));
    }

    #[test]
    fn redaction_replaces_only_the_matched_span() {
        let arg = b"--password=hunter2hunter2";
        let found = vec![("db".to_string(), Encoding::Raw, 11, 14)];
        assert_eq!(redact(arg, &found), "--password=[REDACTED:db]");
    }

    #[test]
    fn selectors_match_cgroup_subtrees_containers_pods_and_exes() {
        let rec = crate::issuance::parse_record(
            r#"{"secret_id":"s","holder":{"cgroup":"/kubepods/pod1","container_id":"abcdef012345","exe":"/usr/bin/app"},"delivery":[{"env":"X"}]}"#,
            Utc::now(),
        )
        .unwrap();
        let Record::Issue(i) = rec else { panic!() };
        let p = |cg: &str, c: Option<&str>, exe: &str| Process {
            cgroup: Some(cg.into()),
            container_id: c.map(str::to_string),
            exe: Some(exe.into()),
            ..Default::default()
        };
        assert!(selector_matches(
            &i,
            &p("/kubepods/pod1/ctr", None, "/bin/sh")
        ));
        assert!(!selector_matches(
            &i,
            &p("/kubepods/pod10", None, "/bin/sh")
        ));
        assert!(selector_matches(
            &i,
            &p("/x", Some("abcdef0123456789"), "/bin/sh")
        ));
        assert!(selector_matches(&i, &p("/x", None, "/usr/bin/app")));
        assert!(!selector_matches(&i, &p("/x", Some("ffff"), "/bin/sh")));
    }

    struct NoProcs;
    impl ProcLookup for NoProcs {
        fn process_of(&mut self, _: u32) -> Option<Process> {
            None
        }
        fn live_pids(&self) -> Vec<u32> {
            Vec::new()
        }
    }

    #[test]
    fn a_holder_moving_reissue_is_refused_unless_revoked_expired_or_replacing() {
        let mut c = Correlator::new(FingerprintKey::random().unwrap(), Duration::from_secs(60));
        let rec = |line: &str| crate::issuance::parse_record(line, Utc::now()).unwrap();
        let issue = |holder: &str, extra: &str| {
            rec(&format!(
                r#"{{"secret_id":"s","holder":{holder},"delivery":[{{"env":"X"}}]{extra}}}"#
            ))
        };
        c.apply(issue(r#"{"exe":"/a"}"#, ""), &mut NoProcs).unwrap();
        // The same holder again: a renewal.
        c.apply(
            issue(r#"{"exe":"/a"}"#, r#","ttl_seconds":60"#),
            &mut NoProcs,
        )
        .unwrap();
        // Another holder: refused, naming both.
        let e = c
            .apply(issue(r#"{"exe":"/b"}"#, ""), &mut NoProcs)
            .unwrap_err();
        assert!(
            e.contains("secret_id \"s\" is already issued to holder {\"exe\":\"/a\"}"),
            "{e}"
        );
        assert!(e.contains("\"replaces\": true"), "{e}");
        assert_eq!(c.secrets["s"].issuance.holder.exe.as_deref(), Some("/a"));
        // Saying it replaces the earlier one: accepted.
        c.apply(
            issue(r#"{"exe":"/b"}"#, r#","replaces":true"#),
            &mut NoProcs,
        )
        .unwrap();
        assert_eq!(c.secrets["s"].issuance.holder.exe.as_deref(), Some("/b"));
        // After a revocation: accepted.
        c.apply(rec(r#"{"revoke":"s"}"#), &mut NoProcs).unwrap();
        c.apply(issue(r#"{"exe":"/c"}"#, ""), &mut NoProcs).unwrap();
        // After expiry: accepted.
        c.apply(
            issue(
                r#"{"exe":"/c"}"#,
                r#","issued_at":"2020-01-01T00:00:00Z","ttl_seconds":1"#,
            ),
            &mut NoProcs,
        )
        .unwrap();
        c.apply(issue(r#"{"exe":"/d"}"#, ""), &mut NoProcs).unwrap();
        assert_eq!(c.secrets["s"].issuance.holder.exe.as_deref(), Some("/d"));
    }

    #[test]
    fn alerts_name_the_holders_kubernetes_names() {
        let mut c = Correlator::new(FingerprintKey::random().unwrap(), Duration::from_secs(60));
        let rec = |line: &str| crate::issuance::parse_record(line, Utc::now()).unwrap();
        for r in [
            r#"{"secret_id":"by-pid","holder":{"pid":4242},"delivery":[{"env":"X"}]}"#,
            r#"{"secret_id":"by-pod","holder":{"namespace":"payments","pod":"db-0"},"delivery":[{"env":"X"}]}"#,
            r#"{"secret_id":"by-exe","holder":{"exe":"/usr/bin/db"},"delivery":[{"env":"X"}]}"#,
        ] {
            c.apply(rec(r), &mut NoProcs).unwrap();
        }
        let names = |pod: &str| K8s {
            namespace: Some("payments".into()),
            pod: Some(pod.into()),
            container: Some("postgres".into()),
            ..Default::default()
        };
        let alert = |id: &str| {
            Alert::new(
                Rule::ReadForeign,
                UtcTime::parse("2026-11-22T10:01:02Z").unwrap(),
                id,
                "read".into(),
                Process {
                    pid: 7,
                    ..Default::default()
                },
                Evidence::default(),
                vec![1],
            )
        };
        let mut alerts: Vec<Alert> = ["by-pid", "by-pod", "by-exe"]
            .into_iter()
            .map(alert)
            .collect();
        // A pid holder's names are looked up (then kept); a pod holder's
        // are the pod it names; an exe holder's are not known yet.
        let mut looked = Vec::new();
        c.name_holders(&mut alerts, |pid| {
            looked.push(pid);
            (pid == 4242).then(|| names("db-1"))
        });
        assert_eq!(looked, [4242]);
        assert_eq!(alerts[0].evidence.holder_k8s, Some(names("db-1")));
        let pod_only = K8s {
            namespace: Some("payments".into()),
            pod: Some("db-0".into()),
            ..Default::default()
        };
        assert_eq!(alerts[1].evidence.holder_k8s, Some(pod_only));
        assert_eq!(alerts[2].evidence.holder_k8s, None);
        // A holder process of the exe holder is seen with its names: every
        // later alert on that secret carries them, with no lookup.
        let holder = Process {
            pid: 99,
            exe: Some("/usr/bin/db".into()),
            k8s: Some(names("db-2")),
            ..Default::default()
        };
        c.saw_holder("by-exe", &holder);
        let mut alerts: Vec<Alert> = ["by-pid", "by-exe"].into_iter().map(alert).collect();
        c.name_holders(&mut alerts, |_| panic!("looked up again"));
        assert_eq!(alerts[0].evidence.holder_k8s, Some(names("db-1")));
        assert_eq!(alerts[1].evidence.holder_k8s, Some(names("db-2")));
        // The scraped holder's names, already set, are kept.
        let mut scrape = vec![alert("by-pid")];
        scrape[0].evidence.holder_k8s = Some(names("db-9"));
        c.name_holders(&mut scrape, |_| None);
        assert_eq!(scrape[0].evidence.holder_k8s, Some(names("db-9")));
    }

    #[test]
    fn a_command_line_cached_before_its_value_was_learned_is_redacted_once_learned() {
        let mut c = Correlator::new(FingerprintKey::random().unwrap(), Duration::from_secs(60));
        let rec = r#"{"secret_id":"s","holder":{"exe":"/a"},"delivery":[{"env":"X"}]}"#;
        c.apply(
            crate::issuance::parse_record(rec, Utc::now()).unwrap(),
            &mut NoProcs,
        )
        .unwrap();
        let value = "pg-9f3b2c7d4e5a6b1c8d0e";
        c.cmd_lines
            .insert(7, format!("app --token={value} -v").into_boxed_str());
        c.cmd_lines.insert(8, "other --flag".into());
        // Nothing learned yet: nothing to redact, nothing scanned.
        c.redact_cmd_lines();
        assert!(c.cmd_lines[&7].contains(value));
        let mut s = c.secrets.remove("s").unwrap();
        c.learn_env(&mut s, format!("X={value}\0").as_bytes(), "test".into());
        c.secrets.insert("s".into(), s);
        c.redact_cmd_lines();
        assert_eq!(&*c.cmd_lines[&7], "app --token=[REDACTED:s] -v");
        assert_eq!(&*c.cmd_lines[&8], "other --flag");
        assert!(!c.cmd_lines_stale);
    }
}
