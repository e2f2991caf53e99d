//! The alert (the contract's native JSON shape) and the aggregation of
//! repeats: the first occurrence goes out the moment it is decided; further
//! identical ones within the window are counted and go out once, as a
//! roll-up with `count`, `first_time` and `last_time`.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::rules::Rule;
use crate::event::Process;

/// Who did it (the contract's `actor`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Actor {
    pub pid: u32,
    pub ppid: Option<u32>,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// Kubernetes names of the actor (see [`crate::enrich::k8s::K8s`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<crate::enrich::k8s::K8s>,
    /// The command line of the actor's current image, as its exec event
    /// showed it (secrets found in it redacted); absent when the agent did
    /// not see the exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd_line: Option<String>,
}

impl From<&Process> for Actor {
    fn from(p: &Process) -> Self {
        Actor {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            cgroup: p.cgroup.clone(),
            container_id: p.container_id.clone(),
            pod_uid: p.pod_uid.clone(),
            k8s: p.k8s.clone(),
            cmd_line: None,
        }
    }
}

/// What a responder needs to see; the first five keys are always present.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Evidence {
    pub path: Option<String>,
    pub dest: Option<String>,
    pub fd_kind: Option<String>,
    pub encoding: Option<String>,
    pub bytes: Option<u64>,
    /// The holder whose environment or memory was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    /// `environ`, `mem`, `ptrace`, `process_vm_readv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// The Kubernetes names of that holder (`target_pid`).
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
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alert {
    pub time: String,
    pub rule: String,
    pub severity: String,
    pub secret_id: String,
    pub summary: String,
    pub actor: Actor,
    pub evidence: Evidence,
    pub attack: Vec<String>,
    pub owasp_nhi: Vec<String>,
    pub event_ids: Vec<u64>,
    /// Roll-ups only: occurrences in the window (the first was sent alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
    /// Roll-ups only: the [`Alert::finding_uid`] of the alert sent alone
    /// for the first occurrence (so both name the same finding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup_of: Option<String>,
}

impl Alert {
    pub fn new(
        rule: Rule,
        time: String,
        secret_id: &str,
        summary: String,
        actor: Actor,
        evidence: Evidence,
        event_ids: Vec<u64>,
    ) -> Self {
        let attack: Vec<String> = rule.attack().iter().map(|s| s.to_string()).collect();
        Alert {
            time,
            rule: rule.name().into(),
            severity: rule.severity().as_str().into(),
            secret_id: secret_id.into(),
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
        for part in [
            self.rule.as_str(),
            self.secret_id.as_str(),
            self.time.as_str(),
        ] {
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

    /// Identity of "the same alert again".
    fn key(&self) -> AggKey {
        AggKey {
            rule: self.rule.clone(),
            secret_id: self.secret_id.clone(),
            pid: self.actor.pid,
            path: self.evidence.path.clone(),
            dest: self.evidence.dest.clone(),
            encoding: self.evidence.encoding.clone(),
            fd_kind: self.evidence.fd_kind.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AggKey {
    rule: String,
    secret_id: String,
    pid: u32,
    path: Option<String>,
    dest: Option<String>,
    encoding: Option<String>,
    fd_kind: Option<String>,
}

struct Window {
    opened: Instant,
    /// Repeats after the first, not yet reported.
    repeats: u64,
    last: Option<Alert>,
    first_repeat_time: Option<String>,
    event_ids: Vec<u64>,
    /// The finding uid of the alert that opened the window.
    finding_uid: String,
}

/// Most event ids kept on one roll-up.
const MAX_ROLLUP_IDS: usize = 100;

pub struct Aggregator {
    window: Duration,
    open: HashMap<AggKey, Window>,
    /// Alerts suppressed into roll-ups so far.
    pub suppressed: u64,
}

impl Aggregator {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: HashMap::new(),
            suppressed: 0,
        }
    }

    /// `Some(alert)` to send now, `None` when it was folded into a window.
    pub fn offer(&mut self, alert: Alert) -> Option<Alert> {
        let key = alert.key();
        match self.open.get_mut(&key) {
            Some(w) if w.opened.elapsed() < self.window => {
                w.repeats += 1;
                self.suppressed += 1;
                if w.first_repeat_time.is_none() {
                    w.first_repeat_time = Some(alert.time.clone());
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
                a.last_time = Some(a.time.clone());
                a.event_ids = std::mem::take(&mut w.event_ids);
                a.rollup_of = Some(std::mem::take(&mut w.finding_uid));
                a.summary = format!("{} ({} more times)", a.summary, w.repeats);
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

    fn alert(pid: u32, path: &str, t: &str, id: u64) -> Alert {
        Alert::new(
            Rule::CopyFile,
            t.into(),
            "db",
            "db copied".into(),
            Actor {
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
        assert_eq!(r.first_time.as_deref(), Some("t2"));
        assert_eq!(r.last_time.as_deref(), Some("t3"));
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
    fn expired_windows_close_on_flush() {
        let mut agg = Aggregator::new(Duration::from_millis(0));
        assert!(agg.offer(alert(1, "/a", "t1", 1)).is_some());
        // Zero window: the next one is a new alert, not a repeat.
        assert!(agg.offer(alert(1, "/a", "t2", 2)).is_some());
        assert!(agg.flush(false).is_empty());
    }
}
