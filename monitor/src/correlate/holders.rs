//! Who holds what, by lookup: the secrets' holder selectors (cgroup,
//! container id, pod uid, exe), delivery paths and Vault leases indexed so
//! that "is this process a holder?", "which secrets does it hold?" and
//! "whose delivery file is this?" cost a few hash lookups per event, not a
//! scan over every secret.
//!
//! The semantics are those of [`super::selector_matches`]: a cgroup holds
//! every process in it or below it (`/` holds all), a container id (full
//! or a prefix) every process whose container id starts with it, a pod uid
//! (case-insensitive) and an exe by equality.
use std::collections::HashMap;

use crate::{event::Process, issuance::Issuance};

/// Container ids are indexed by this many leading characters (the short
/// form `docker ps` shows); shorter selectors are checked one by one.
const CONTAINER_KEY: usize = 12;

/// Secret ids under one key (usually one: a `Vec`, not a set).
type Ids = Vec<String>;

fn add(map: &mut HashMap<String, Ids>, key: String, id: &str) {
    let ids = map.entry(key).or_default();
    if let Err(at) = ids.binary_search_by(|i| i.as_str().cmp(id)) {
        ids.insert(at, id.to_string());
    }
}

fn del(map: &mut HashMap<String, Ids>, key: &str, id: &str) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|i| i != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// A holder cgroup as indexed: no trailing `/` (`/` itself becomes `""`,
/// which holds every process with a cgroup).
fn cgroup_key(cg: &str) -> &str {
    cg.trim_end_matches('/')
}

#[derive(Debug, Default)]
pub struct HolderIndex {
    cgroup: HashMap<String, Ids>,
    /// By the first [`CONTAINER_KEY`] characters.
    container: HashMap<String, Ids>,
    /// Selectors shorter than [`CONTAINER_KEY`] (full id -> secrets).
    container_short: HashMap<String, Ids>,
    pod: HashMap<String, Ids>,
    exe: HashMap<String, Ids>,
    /// `namespace/pod` and `namespace/service_account` (Kubernetes names).
    k8s_pod: HashMap<String, Ids>,
    k8s_sa: HashMap<String, Ids>,
    /// Delivery file path -> secrets delivered there.
    path: HashMap<String, Ids>,
    /// Vault lease id -> secrets issued under it.
    lease: HashMap<String, Ids>,
    /// Secrets with any selector.
    selectors: usize,
}

impl HolderIndex {
    /// Index a secret's issuance (call [`HolderIndex::remove`] with the
    /// previous one first on a re-issue).
    pub fn insert(&mut self, i: &Issuance) {
        let id = i.secret_id.as_str();
        let h = &i.holder;
        if let Some(cg) = &h.cgroup {
            add(&mut self.cgroup, cgroup_key(cg).to_string(), id);
        }
        if let Some(c) = &h.container_id {
            match c.get(..CONTAINER_KEY) {
                Some(k) => add(&mut self.container, k.to_string(), id),
                None => add(&mut self.container_short, c.clone(), id),
            }
        }
        if let Some(u) = &h.pod_uid {
            add(&mut self.pod, u.to_ascii_lowercase(), id);
        }
        if let Some(e) = &h.exe {
            add(&mut self.exe, e.clone(), id);
        }
        if let Some(ns) = &h.namespace {
            if let Some(pod) = &h.pod {
                add(&mut self.k8s_pod, format!("{ns}/{pod}"), id);
            }
            if let Some(sa) = &h.service_account {
                add(&mut self.k8s_sa, format!("{ns}/{sa}"), id);
            }
        }
        if super::has_selector(i) {
            self.selectors += 1;
        }
        for p in file_paths(i) {
            add(&mut self.path, p.to_string(), id);
        }
        if let Some(l) = &i.lease_id {
            add(&mut self.lease, l.clone(), id);
        }
    }

    /// Forget what [`HolderIndex::insert`] indexed for `i`.
    pub fn remove(&mut self, i: &Issuance) {
        let id = i.secret_id.as_str();
        let h = &i.holder;
        if let Some(cg) = &h.cgroup {
            del(&mut self.cgroup, cgroup_key(cg), id);
        }
        if let Some(c) = &h.container_id {
            match c.get(..CONTAINER_KEY) {
                Some(k) => del(&mut self.container, k, id),
                None => del(&mut self.container_short, c, id),
            }
        }
        if let Some(u) = &h.pod_uid {
            del(&mut self.pod, &u.to_ascii_lowercase(), id);
        }
        if let Some(e) = &h.exe {
            del(&mut self.exe, e, id);
        }
        if let Some(ns) = &h.namespace {
            if let Some(pod) = &h.pod {
                del(&mut self.k8s_pod, &format!("{ns}/{pod}"), id);
            }
            if let Some(sa) = &h.service_account {
                del(&mut self.k8s_sa, &format!("{ns}/{sa}"), id);
            }
        }
        if super::has_selector(i) {
            self.selectors = self.selectors.saturating_sub(1);
        }
        for p in file_paths(i) {
            del(&mut self.path, p, id);
        }
        if let Some(l) = &i.lease_id {
            del(&mut self.lease, l, id);
        }
    }

    /// Does any secret have a selector holder?
    pub fn has_selectors(&self) -> bool {
        self.selectors > 0
    }

    /// Secrets whose selectors may match `p`: a superset (a container id
    /// longer than the indexed prefix is not verified here), each at most
    /// once, sorted. The caller checks each with `selector_matches`.
    /// Cost: the depth of its cgroup path plus a few lookups.
    pub fn candidates(&self, p: &Process) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if self.selectors == 0 {
            return out;
        }
        let mut take = |ids: Option<&Ids>| {
            for id in ids.into_iter().flatten() {
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
        };
        if let Some(pc) = &p.cgroup {
            if !self.cgroup.is_empty() {
                // The path itself and every ancestor ("" for the root).
                take(self.cgroup.get(pc.as_str()));
                for (i, _) in pc.match_indices('/') {
                    take(self.cgroup.get(&pc[..i]));
                }
            }
        }
        if let Some(pc) = &p.container_id {
            if let Some(k) = pc.get(..CONTAINER_KEY) {
                take(self.container.get(k));
            }
            for (c, ids) in &self.container_short {
                if pc.starts_with(c.as_str()) {
                    take(Some(ids));
                }
            }
        }
        if let Some(pu) = &p.pod_uid {
            take(self.pod.get(&pu.to_ascii_lowercase()));
        }
        if let Some(pe) = &p.exe {
            take(self.exe.get(pe.as_str()));
        }
        if let Some(ns) = p
            .k8s
            .as_ref()
            .and_then(|k| k.namespace.as_ref().map(|n| (n, k)))
        {
            let (ns, k) = ns;
            if let Some(pod) = &k.pod {
                take(self.k8s_pod.get(&format!("{ns}/{pod}")));
            }
            if let Some(sa) = &k.service_account {
                take(self.k8s_sa.get(&format!("{ns}/{sa}")));
            }
        }
        out.sort();
        out
    }

    /// Secrets delivered through the file at `path`.
    pub fn delivered_at(&self, path: &str) -> &[String] {
        self.path.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Secrets issued under Vault lease `lease`.
    pub fn under_lease(&self, lease: &str) -> &[String] {
        self.lease.get(lease).map(Vec::as_slice).unwrap_or(&[])
    }
}

fn file_paths(i: &Issuance) -> impl Iterator<Item = &str> {
    i.delivery.iter().filter_map(|d| match d {
        crate::issuance::Delivery::File(p) => Some(p.as_str()),
        crate::issuance::Delivery::Env(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuance::{parse_record, Record};
    use chrono::Utc;

    fn issuance(id: &str, holder: &str) -> Issuance {
        let line = format!(
            r#"{{"secret_id":"{id}","holder":{holder},"delivery":[{{"file":"/run/s/{id}"}}],"lease_id":"l-{id}"}}"#
        );
        match parse_record(&line, Utc::now()).unwrap() {
            Record::Issue(i) => i,
            _ => unreachable!(),
        }
    }

    fn proc(cg: Option<&str>, ctr: Option<&str>, pod: Option<&str>, exe: Option<&str>) -> Process {
        Process {
            cgroup: cg.map(str::to_string),
            container_id: ctr.map(str::to_string),
            pod_uid: pod.map(str::to_string),
            exe: exe.map(str::to_string),
            ..Default::default()
        }
    }

    /// The index agrees with `selector_matches` (the reference) on every
    /// pair of these issuances and processes.
    #[test]
    fn candidates_agree_with_selector_matches() {
        let iss = vec![
            issuance("cg", r#"{"cgroup":"/kubepods/pod1"}"#),
            issuance("cg-slash", r#"{"cgroup":"/kubepods/pod1/"}"#),
            issuance("root", r#"{"cgroup":"/"}"#),
            issuance("ctr", r#"{"container_id":"abcdef0123456789"}"#),
            issuance("ctr12", r#"{"container_id":"abcdef012345"}"#),
            issuance(
                "pod",
                r#"{"pod_uid":"0b7c1e2a-1111-2222-3333-444455556666"}"#,
            ),
            issuance("exe", r#"{"exe":"/usr/bin/app"}"#),
            issuance("pid", r#"{"pid":42}"#),
            issuance("k8s-pod", r#"{"namespace":"payments","pod":"api-0"}"#),
            issuance(
                "k8s-sa",
                r#"{"namespace":"payments","service_account":"api"}"#,
            ),
        ];
        let in_pod = |ns: &str, pod: &str, sa: Option<&str>| Process {
            k8s: Some(crate::enrich::k8s::K8s {
                namespace: Some(ns.into()),
                pod: Some(pod.into()),
                service_account: sa.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut idx = HolderIndex::default();
        for i in &iss {
            idx.insert(i);
        }
        let procs = [
            proc(Some("/kubepods/pod1"), None, None, None),
            proc(Some("/kubepods/pod1/ctr"), None, None, None),
            proc(Some("/kubepods/pod10"), None, None, None),
            proc(Some("/other"), Some("abcdef0123456789ff"), None, None),
            proc(None, Some("abcdef012345aaaa"), None, None),
            proc(None, Some("ffff"), None, None),
            proc(
                None,
                None,
                Some("0B7C1E2A-1111-2222-3333-444455556666"),
                None,
            ),
            proc(None, None, None, Some("/usr/bin/app")),
            proc(None, None, None, Some("/usr/bin/app2")),
            proc(None, None, None, None),
            in_pod("payments", "api-0", None),
            in_pod("payments", "web-0", Some("api")),
            in_pod("billing", "api-0", Some("api")),
        ];
        let holds = |p: &Process, id: &str| {
            iss.iter()
                .any(|i| i.secret_id == id && crate::correlate::selector_matches(i, p))
        };
        assert!(holds(&procs[10], "k8s-pod") && !holds(&procs[10], "k8s-sa"));
        assert!(!holds(&procs[11], "k8s-pod") && holds(&procs[11], "k8s-sa"));
        assert!(!holds(&procs[12], "k8s-pod") && !holds(&procs[12], "k8s-sa"));
        for p in &procs {
            let cands = idx.candidates(p);
            let got: Vec<&str> = iss
                .iter()
                .filter(|i| {
                    cands.contains(&i.secret_id) && crate::correlate::selector_matches(i, p)
                })
                .map(|i| i.secret_id.as_str())
                .collect();
            let want: Vec<&str> = iss
                .iter()
                .filter(|i| crate::correlate::selector_matches(i, p))
                .map(|i| i.secret_id.as_str())
                .collect();
            assert_eq!(got, want, "{p:?}");
        }
        assert_eq!(idx.delivered_at("/run/s/exe"), ["exe".to_string()]);
        assert_eq!(idx.under_lease("l-pod"), ["pod".to_string()]);
        // A re-issue elsewhere forgets the old selector.
        idx.remove(&iss[6]);
        idx.insert(&issuance("exe", r#"{"exe":"/usr/bin/other"}"#));
        assert!(idx.candidates(&procs[7]).is_empty());
        assert!(idx.has_selectors());
    }
}
