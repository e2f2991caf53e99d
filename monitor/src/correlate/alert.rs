//! The alert (the contract's native JSON shape) and the aggregation of
//! repeats: the first occurrence goes out the moment it is decided; further
//! identical ones within the window are counted and go out once, as a
//! roll-up with `count`, `first_time` and `last_time`.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::rules::{Named, Rule, Severity};
use crate::event::{FdKind, Process, TlsLibrary, UtcTime};

/// What a responder needs to see; the first five keys are always present.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Evidence {
    pub path: Option<String>,
    pub dest: Option<String>,
    pub fd_kind: Option<FdKind>,
    pub encoding: Option<String>,
    pub bytes: Option<u64>,
    /// The delivery file, when the path opened (`path`) is another name
    /// for it (a hard link, a bind mount, a symlinked directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_path: Option<String>,
    /// The TLS library whose write carried the secret (`openssl`,
    /// `gnutls`, `go`); `dest` is that TLS connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsLibrary>,
    /// The holder whose environment or memory was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    /// `environ`, `mem`, `ptrace`, `process_vm_readv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// The Kubernetes names of the secret's holder, when known: the
    /// scraped holder's (`target_pid`) for a scrape, else the holder
    /// process seen by the agent (or the pod a `{namespace, pod}` holder
    /// names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_k8s: Option<crate::enrich::k8s::K8s>,
    /// The syscall behind the deciding event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// When the secret expired or was revoked (replay rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The access was refused (`enforce`): the open failed with `EPERM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
    /// `monitor.capture.degraded`: writes not captured since the last
    /// report because the holder's capture budget was spent...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_budget: Option<u64>,
    /// ...and because the ring buffer was full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_ring: Option<u64>,
    /// `monitor.capture.degraded`: every secret the process holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Vec<String>>,
    /// In a fleet: the node that saw it...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// ...and the node whose holder the secret was delivered to (its
    /// fingerprints came from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_node: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alert {
    pub time: UtcTime,
    pub rule: Named<Rule>,
    pub severity: Named<Severity>,
    pub secret_id: String,
    /// Every secret the deciding event touched for this rule and actor
    /// (`secret_id` is the first): one event is one alert.
    #[serde(default)]
    pub secret_ids: Vec<String>,
    pub summary: String,
    /// Who did it (the contract's `actor`): [`Process::actor`], with the
    /// command line when the agent saw the exec.
    pub actor: Process,
    pub evidence: Evidence,
    pub attack: Vec<String>,
    pub owasp_nhi: Vec<String>,
    pub event_ids: Vec<u64>,
    /// Roll-ups only: occurrences in the window (the first was sent alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time: Option<UtcTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<UtcTime>,
    /// Roll-ups only: the [`Alert::finding_uid`] of the alert sent alone
    /// for the first occurrence (so both name the same finding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup_of: Option<String>,
}

impl Alert {
    pub fn new(
        rule: Rule,
        time: UtcTime,
        secret_id: &str,
        summary: String,
        actor: Process,
        evidence: Evidence,
        event_ids: Vec<u64>,
    ) -> Self {
        let attack: Vec<String> = rule.attack().iter().map(|s| s.to_string()).collect();
        Alert {
            time,
            rule: rule.into(),
            severity: rule.severity().into(),
            secret_id: secret_id.into(),
            secret_ids: vec![secret_id.into()],
            summary,
            actor,
            evidence,
            attack,
            owasp_nhi: rule.owasp_nhi().iter().map(|s| s.to_string()).collect(),
            event_ids,
            count: None,
            first_time: None,
            last_time: None,
            rollup_of: None,
        }
    }

    /// A stable id of this alert: BLAKE3 of rule, secret, time and event
    /// ids (first 16 bytes, hex). The same alert always gets the same id.
    pub fn finding_uid(&self) -> String {
        let mut h = blake3::Hasher::new();
        let time = self.time.to_string();
        for part in [self.rule.as_str(), self.secret_id.as_str(), time.as_str()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for id in &self.event_ids {
            h.update(&id.to_le_bytes());
        }
        let bytes = h.finalize();
        bytes.as_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Add ATT&CK techniques the context calls for (e.g. Container API for a
    /// service-account token).
    pub fn with_attack(mut self, extra: &[&str]) -> Self {
        for a in extra {
            if !self.attack.iter().any(|x| x == a) {
                self.attack.push(a.to_string());
            }
        }
        self
    }

    /// Fold another alert of the same event, rule and actor into this one:
    /// its secret joins `secret_ids`; the evidence stays the first's, with
    /// what only the other has added (one secret expired, another revoked).
    pub fn absorb(&mut self, other: &Alert) {
        let (e, o) = (&mut self.evidence, &other.evidence);
        for (mine, theirs) in [
            (&mut e.path, &o.path),
            (&mut e.dest, &o.dest),
            (&mut e.encoding, &o.encoding),
            (&mut e.expired_at, &o.expired_at),
            (&mut e.revoked_at, &o.revoked_at),
        ] {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        if e.holder_k8s.is_none() {
            e.holder_k8s.clone_from(&o.holder_k8s);
        }
        for id in &other.secret_ids {
            if !self.secret_ids.contains(id) {
                self.secret_ids.push(id.clone());
            }
        }
        for a in &other.attack {
            if !self.attack.contains(a) {
                self.attack.push(a.clone());
            }
        }
    }

    /// After [`Alert::absorb`]: the summary names every secret (the first
    /// few by id, then how many more).
    pub fn name_all_secrets(&mut self) {
        if self.secret_ids.len() < 2 {
            return;
        }
        const SHOWN: usize = 3;
        let n = self.secret_ids.len();
        let mut list = self.secret_ids[..n.min(SHOWN)].join(", ");
        if n > SHOWN {
            list.push_str(&format!(" and {} more", n - SHOWN));
        }
        let list = format!("{n} secrets ({list})");
        self.summary = self.summary.replacen(self.secret_id.as_str(), &list, 1);
    }

    /// Identity of "the same alert again".
    fn key(&self) -> AggKey {
        AggKey {
            rule: self.rule.clone(),
            secret_ids: self.secret_ids.clone(),
            pid: self.actor.pid,
            path: self.evidence.path.clone(),
            dest: self.evidence.dest.clone(),
            encoding: self.evidence.encoding.clone(),
            fd_kind: self.evidence.fd_kind,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AggKey {
    rule: Named<Rule>,
    secret_ids: Vec<String>,
    pid: u32,
    path: Option<String>,
    dest: Option<String>,
    encoding: Option<String>,
    fd_kind: Option<FdKind>,
}

struct Window {
    opened: Instant,
    /// Repeats after the first, not yet reported.
    repeats: u64,
    last: Option<Alert>,
    first_repeat_time: Option<UtcTime>,
    event_ids: Vec<u64>,
    /// The finding uid of the alert that opened the window.
    finding_uid: String,
}

/// Most event ids kept on one roll-up.
const MAX_ROLLUP_IDS: usize = 100;

/// At most `max` distinct alerts of one rule by one actor (pid) every
/// `per`; the rest are counted and go out as one roll-up when the period
/// ends. `max == 0` turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub per: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            max: 20,
            per: Duration::from_secs(300),
        }
    }
}

/// One (rule, actor)'s rate-limit period.
struct Bucket {
    opened: Instant,
    sent: u32,
    suppressed: u64,
    last: Option<Alert>,
    first_time: Option<UtcTime>,
    event_ids: Vec<u64>,
}

pub struct Aggregator {
    window: Duration,
    open: HashMap<AggKey, Window>,
    rate: RateLimit,
    buckets: HashMap<(Named<Rule>, u32), Bucket>,
    /// Alerts suppressed into roll-ups so far.
    pub suppressed: u64,
    /// Distinct alerts held back by the rate limit so far, by rule.
    pub rate_limited: HashMap<String, u64>,
}

impl Aggregator {
    pub fn new(window: Duration) -> Self {
        Self::with_rate_limit(window, RateLimit::default())
    }

    pub fn with_rate_limit(window: Duration, rate: RateLimit) -> Self {
        Self {
            window,
            open: HashMap::new(),
            rate,
            buckets: HashMap::new(),
            suppressed: 0,
            rate_limited: HashMap::new(),
        }
    }

    pub fn set_rate_limit(&mut self, rate: RateLimit) {
        self.rate = rate;
    }

    /// Does the rate limit let a new distinct alert through? Counts it
    /// either way.
    fn admit(&mut self, alert: &Alert) -> bool {
        if self.rate.max == 0 {
            return true;
        }
        let per = self.rate.per;
        let b = self
            .buckets
            .entry((alert.rule.clone(), alert.actor.pid))
            .or_insert_with(|| Bucket {
                opened: Instant::now(),
                sent: 0,
                suppressed: 0,
                last: None,
                first_time: None,
                event_ids: Vec::new(),
            });
        if b.opened.elapsed() >= per && b.suppressed == 0 {
            b.opened = Instant::now();
            b.sent = 0;
        }
        if b.sent < self.rate.max {
            b.sent += 1;
            return true;
        }
        b.suppressed += 1;
        if b.first_time.is_none() {
            b.first_time = Some(alert.time);
        }
        for id in &alert.event_ids {
            if b.event_ids.len() < MAX_ROLLUP_IDS {
                b.event_ids.push(*id);
            }
        }
        b.last = Some(alert.clone());
        *self.rate_limited.entry(alert.rule.to_string()).or_default() += 1;
        false
    }

    /// `Some(alert)` to send now, `None` when it was folded into a window.
    pub fn offer(&mut self, alert: Alert) -> Option<Alert> {
        let key = alert.key();
        match self.open.get_mut(&key) {
            Some(w) if w.opened.elapsed() < self.window => {
                w.repeats += 1;
                self.suppressed += 1;
                if w.first_repeat_time.is_none() {
                    w.first_repeat_time = Some(alert.time);
                }
                for id in &alert.event_ids {
                    if w.event_ids.len() < MAX_ROLLUP_IDS {
                        w.event_ids.push(*id);
                    }
                }
                w.last = Some(alert);
                None
            }
            _ => {
                if !self.admit(&alert) {
                    return None;
                }
                self.open.insert(
                    key,
                    Window {
                        opened: Instant::now(),
                        repeats: 0,
                        last: None,
                        first_repeat_time: None,
                        event_ids: Vec::new(),
                        finding_uid: alert.finding_uid(),
                    },
                );
                Some(alert)
            }
        }
    }

    /// Close windows older than the window length; roll-ups of those with
    /// repeats. `force` closes every window (shutdown).
    pub fn flush(&mut self, force: bool) -> Vec<Alert> {
        let mut out = Vec::new();
        let window = self.window;
        self.open.retain(|_, w| {
            if !force && w.opened.elapsed() < window {
                return true;
            }
            if let Some(mut a) = w.last.take() {
                a.count = Some(w.repeats);
                a.first_time = w.first_repeat_time.take();
                a.last_time = Some(a.time);
                a.event_ids = std::mem::take(&mut w.event_ids);
                a.rollup_of = Some(std::mem::take(&mut w.finding_uid));
                a.summary = format!("{} ({} more times)", a.summary, w.repeats);
                out.push(a);
            }
            false
        });
        let per = self.rate.per;
        self.buckets.retain(|_, b| {
            if !force && b.opened.elapsed() < per {
                return true;
            }
            if let Some(mut a) = b.last.take() {
                a.count = Some(b.suppressed);
                a.first_time = b.first_time.take();
                a.last_time = Some(a.time);
                a.event_ids = std::mem::take(&mut b.event_ids);
                a.summary = format!(
                    "{} ({} more {} alerts by pid {} held back by the rate limit of {} per {}s)",
                    a.summary,
                    b.suppressed,
                    a.rule,
                    a.actor.pid,
                    self.rate.max,
                    per.as_secs()
                );
                out.push(a);
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "t3": the third microsecond of 1970 ("t": the first); times are
    /// only compared here.
    fn t(name: &str) -> UtcTime {
        UtcTime::from_unix_micros(name[1..].parse().unwrap_or(0))
    }

    fn alert(pid: u32, path: &str, time: &str, id: u64) -> Alert {
        Alert::new(
            Rule::CopyFile,
            t(time),
            "db",
            "db copied".into(),
            Process {
                pid,
                ..Default::default()
            },
            Evidence {
                path: Some(path.into()),
                ..Default::default()
            },
            vec![id],
        )
    }

    #[test]
    fn shape_has_the_contracts_keys() {
        let v = serde_json::to_value(alert(1, "/tmp/x", "t", 5)).unwrap();
        for k in [
            "time",
            "rule",
            "severity",
            "secret_id",
            "summary",
            "actor",
            "evidence",
            "attack",
            "owasp_nhi",
            "event_ids",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["path", "dest", "fd_kind", "encoding", "bytes"] {
            assert!(v["evidence"].get(k).is_some(), "missing evidence.{k}");
        }
        for k in [
            "pid",
            "ppid",
            "uid",
            "comm",
            "exe",
            "cgroup",
            "container_id",
            "pod_uid",
        ] {
            assert!(v["actor"].get(k).is_some(), "missing actor.{k}");
        }
        assert!(v.get("count").is_none());
        assert_eq!(v["rule"], "secret.copy.file");
        assert_eq!(v["severity"], "high");
        assert_eq!(v["attack"], serde_json::json!(["T1552.001"]));
    }

    #[test]
    fn repeats_fold_into_one_rollup() {
        let mut agg = Aggregator::new(Duration::from_secs(3600));
        assert!(agg.offer(alert(1, "/tmp/x", "t1", 1)).is_some());
        assert!(agg.offer(alert(1, "/tmp/x", "t2", 2)).is_none());
        assert!(agg.offer(alert(1, "/tmp/x", "t3", 3)).is_none());
        // A different path or actor is a different alert.
        assert!(agg.offer(alert(1, "/tmp/y", "t4", 4)).is_some());
        assert!(agg.offer(alert(2, "/tmp/x", "t5", 5)).is_some());
        assert!(agg.flush(false).is_empty(), "window still open");
        let rolled = agg.flush(true);
        assert_eq!(rolled.len(), 1);
        let r = &rolled[0];
        assert_eq!(r.count, Some(2));
        assert_eq!(r.first_time, Some(t("t2")));
        assert_eq!(r.last_time, Some(t("t3")));
        assert_eq!(r.event_ids, vec![2, 3]);
        assert_eq!(
            r.rollup_of.as_deref(),
            Some(alert(1, "/tmp/x", "t1", 1).finding_uid().as_str()),
            "the roll-up names the alert it rolls up"
        );
        assert_eq!(agg.suppressed, 2);
        // After the window, the same alert goes out again at once.
        assert!(agg.offer(alert(1, "/tmp/x", "t6", 6)).is_some());
    }

    #[test]
    fn absorbed_secrets_are_listed_and_named() {
        let mut a = alert(1, "/proc/7/environ", "t", 9);
        a.summary = "/proc/7/environ (holder of db) read by cat (pid 1)".into();
        for i in 0..9 {
            let mut b = alert(1, "/proc/7/environ", "t", 9);
            b.secret_id = format!("s{i}");
            b.secret_ids = vec![b.secret_id.clone()];
            a.absorb(&b);
        }
        a.absorb(&alert(1, "/x", "t", 9)); // the same secret again: once
        a.name_all_secrets();
        assert_eq!(a.secret_id, "db");
        assert_eq!(a.secret_ids.len(), 10);
        assert_eq!(a.secret_ids[0], "db");
        assert_eq!(
            a.summary,
            "/proc/7/environ (holder of 10 secrets (db, s0, s1 and 7 more)) read by cat (pid 1)"
        );
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["secret_ids"].as_array().unwrap().len(), 10);
    }

    #[test]
    fn rate_limit_holds_back_distinct_alerts_of_one_rule_and_actor() {
        let mut agg = Aggregator::with_rate_limit(
            Duration::from_secs(3600),
            RateLimit {
                max: 3,
                per: Duration::from_secs(3600),
            },
        );
        // Distinct paths: not rolled up, but rate-limited after 3.
        let sent = (0..10)
            .filter(|i| {
                agg.offer(alert(1, &format!("/tmp/{i}"), &format!("t{i}"), *i))
                    .is_some()
            })
            .count();
        assert_eq!(sent, 3);
        assert_eq!(agg.rate_limited.get("secret.copy.file"), Some(&7));
        // Another actor has its own budget.
        assert!(agg.offer(alert(2, "/tmp/0", "t", 50)).is_some());
        let out = agg.flush(true);
        let held: Vec<&Alert> = out.iter().filter(|a| a.count == Some(7)).collect();
        assert_eq!(held.len(), 1, "{out:?}");
        assert_eq!(held[0].event_ids, vec![3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(held[0].first_time, Some(t("t3")));
        assert!(
            held[0].summary.contains("rate limit"),
            "{}",
            held[0].summary
        );
        // Zero turns it off.
        let mut off = Aggregator::with_rate_limit(
            Duration::from_secs(3600),
            RateLimit {
                max: 0,
                per: Duration::from_secs(1),
            },
        );
        assert!((0..50).all(|i| off.offer(alert(1, &format!("/{i}"), "t", i)).is_some()));
    }

    #[test]
    fn expired_windows_close_on_flush() {
        let mut agg = Aggregator::new(Duration::from_millis(0));
        assert!(agg.offer(alert(1, "/a", "t1", 1)).is_some());
        // Zero window: the next one is a new alert, not a repeat.
        assert!(agg.offer(alert(1, "/a", "t2", 2)).is_some());
        assert!(agg.flush(false).is_empty());
    }
}
