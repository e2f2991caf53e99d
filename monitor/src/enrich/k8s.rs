//! Kubernetes names of a process, resolved on the node without the API
//! server, from what every kubelet lays out:
//!
//! - `<log_root>/pods/<namespace>_<pod>_<uid>/<container>/` (the CRI log
//!   layout): namespace and pod name by pod UID, and the pod's container
//!   names;
//! - `<log_root>/containers/<pod>_<namespace>_<container>-<id>.log`
//!   (symlinks the kubelet makes for every container): container id to
//!   container name;
//! - `<kubelet_root>/pods/<uid>/volumes/kubernetes.io~projected/*/token`
//!   (the projected service-account token): its claims name the namespace,
//!   the pod and the service account. The signature is not verified: the
//!   names only label events, they never grant anything.
//! - The workload (Deployment, StatefulSet, DaemonSet or Job, CronJob) is
//!   derived from the pod name's owner pattern and marked `derived`.
//!
//! Names are cached by pod UID and container id and are kept after the
//! directories are gone (a pod deleted after the fact still has its names).
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Default root of `pods/` and `containers/` (the kubelet's log layout).
pub const DEFAULT_LOG_ROOT: &str = "/var/log";
/// Default kubelet root directory (`--root-dir`).
pub const DEFAULT_KUBELET_ROOT: &str = "/var/lib/kubelet";

/// How long a pod or container that could not be (fully) resolved is not
/// looked up again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most pods and containers remembered (then the cache starts over).
const MAX_CACHED: usize = 65_536;

/// The Kubernetes names of a process (`k8s` on actors and holders).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct K8s {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub service_account: Option<String>,
    pub workload: Option<Workload>,
}

impl K8s {
    /// `payments/api-7d9f-x2k container app`, for one-line texts.
    pub fn text(&self) -> String {
        let mut s = match (&self.namespace, &self.pod) {
            (Some(n), Some(p)) => format!("{n}/{p}"),
            (Some(n), None) => format!("namespace {n}"),
            (None, Some(p)) => p.clone(),
            (None, None) => String::new(),
        };
        let mut add = |k: &str, v: &str| {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(k);
            s.push(' ');
            s.push_str(v);
        };
        if let Some(c) = &self.container {
            add("container", c);
        }
        if let Some(sa) = &self.service_account {
            add("sa", sa);
        }
        if let Some(w) = &self.workload {
            add(&w.kind, &w.name);
        }
        s
    }

    fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod.is_none()
            && self.container.is_none()
            && self.service_account.is_none()
    }
}

/// The controller a pod most likely belongs to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `CronJob`, `Job`, or `DaemonSet/Job`
    /// (a `<name>-<5 random>` pod name is made the same way by both).
    pub kind: String,
    pub name: String,
    /// True: inferred from the pod name, not read from owner references.
    pub derived: bool,
}

/// The alphabet of Kubernetes' `rand.String` and `SafeEncodeString` (no
/// vowels, no 0, 1, 3): generated name suffixes and pod-template hashes.
fn is_safe_alnum(s: &str) -> bool {
    s.bytes()
        .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// The 5-character random suffix `generateName` appends.
fn is_suffix(s: &str) -> bool {
    s.len() == 5 && is_safe_alnum(s)
}

/// A ReplicaSet's `pod-template-hash` (a 32-bit hash, safe-encoded).
fn is_template_hash(s: &str) -> bool {
    (6..=10).contains(&s.len()) && is_safe_alnum(s)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The workload a pod name's owner pattern points at:
///
/// - `<deploy>-<template hash>-<suffix>`: Deployment `<deploy>`;
/// - `<cronjob>-<minutes since epoch, 8+ digits>-<suffix>`: CronJob;
/// - `<job>-<index>-<suffix>`: (indexed) Job;
/// - `<name>-<suffix>`: DaemonSet or Job (bare ReplicaSets look the same);
/// - `<sts>-<ordinal>`: StatefulSet.
///
/// `None` when the name matches no pattern (a bare pod). Static pods (UID a
/// 32-hex config hash) should not be passed here.
pub fn derive_workload(pod: &str) -> Option<Workload> {
    let parts: Vec<&str> = pod.split('-').collect();
    let n = parts.len();
    let w = |kind: &str, upto: usize| {
        let name = parts[..upto].join("-");
        (!name.is_empty()).then(|| Workload {
            kind: kind.into(),
            name,
            derived: true,
        })
    };
    if n >= 3 && is_suffix(parts[n - 1]) {
        let mid = parts[n - 2];
        if is_digits(mid) {
            return w(if mid.len() >= 8 { "CronJob" } else { "Job" }, n - 2);
        }
        if is_template_hash(mid) {
            return w("Deployment", n - 2);
        }
    }
    if n >= 2 && is_suffix(parts[n - 1]) {
        return w("DaemonSet/Job", n - 1);
    }
    let last = parts[n - 1];
    if n >= 2 && is_digits(last) && (last == "0" || !last.starts_with('0')) {
        return w("StatefulSet", n - 1);
    }
    None
}

/// `<namespace>_<pod>_<uid>` (a `/var/log/pods` directory name). Neither
/// namespaces nor pod names may contain `_`.
pub fn parse_pod_log_dir(name: &str) -> Option<(String, String, String)> {
    let mut it = name.split('_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || ns.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((ns.into(), pod.into(), uid.to_ascii_lowercase()))
}

/// A `/var/log/containers` file name: `<pod>_<namespace>_<container>-<id>.log`
/// → (pod, namespace, container, 64-hex id).
pub fn parse_container_log(name: &str) -> Option<(String, String, String, String)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut it = rest.split('_');
    let (pod, ns, container) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || pod.is_empty() || ns.is_empty() || container.is_empty() {
        return None;
    }
    Some((
        pod.into(),
        ns.into(),
        container.into(),
        id.to_ascii_lowercase(),
    ))
}

/// `system:serviceaccount:<namespace>:<name>`.
fn sa_from_sub(sub: &str) -> Option<(String, String)> {
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty()).then(|| (ns.into(), sa.into()))
}

#[derive(Clone, Debug, Default)]
struct PodNames {
    namespace: Option<String>,
    pod: Option<String>,
    service_account: Option<String>,
    /// Container names from the pod's log directory.
    containers: Vec<String>,
}

impl PodNames {
    /// Nothing more to read: the kubelet lays out the log directory and the
    /// token volume before the pod's containers start, so a pod without a
    /// token by then (`automountServiceAccountToken: false`) has none.
    fn complete(&self) -> bool {
        self.namespace.is_some() && self.pod.is_some()
    }
}

#[derive(Clone, Debug)]
struct ContainerName {
    name: String,
    pod_uid: Option<String>,
}

/// Resolves pod UIDs and container ids to names from the kubelet's files.
#[derive(Debug)]
pub struct K8sResolver {
    log_root: PathBuf,
    kubelet_root: PathBuf,
    pods: HashMap<String, PodNames>,
    containers: HashMap<String, ContainerName>,
    /// Pods not (fully) resolved, and when they were last tried.
    pod_tried: HashMap<String, Instant>,
    last_container_scan: Option<Instant>,
}

impl K8sResolver {
    /// `log_root` holds `pods/` and `containers/` (default `/var/log`);
    /// `kubelet_root` holds `pods/<uid>/` (default `/var/lib/kubelet`).
    /// Nothing is read until the first lookup.
    pub fn new(log_root: PathBuf, kubelet_root: PathBuf) -> Self {
        Self {
            log_root,
            kubelet_root,
            pods: HashMap::new(),
            containers: HashMap::new(),
            pod_tried: HashMap::new(),
            last_container_scan: None,
        }
    }

    /// The names of the process in pod `pod_uid` (and container
    /// `container_id`, if known). `None` when nothing is known of the pod.
    pub fn lookup(&mut self, pod_uid: &str, container_id: Option<&str>) -> Option<K8s> {
        let uid = pod_uid.to_ascii_lowercase();
        self.refresh_pod(&uid);
        let container = container_id.and_then(|cid| self.container_name(cid, &uid));
        let pod = self.pods.get(&uid);
        let container = container.or_else(|| {
            // A pod with a single container directory: that is the one.
            pod.filter(|p| p.containers.len() == 1)
                .map(|p| p.containers[0].clone())
        });
        let mut k = K8s {
            namespace: pod.and_then(|p| p.namespace.clone()),
            pod: pod.and_then(|p| p.pod.clone()),
            container,
            service_account: pod.and_then(|p| p.service_account.clone()),
            workload: None,
        };
        // Static pods (UID = 32-hex config hash) are owned by the node.
        if uid.len() != 32 {
            k.workload = k.pod.as_deref().and_then(derive_workload);
        }
        (!k.is_empty()).then_some(k)
    }

    /// (Re)reads a pod's names unless it is complete or was tried lately.
    fn refresh_pod(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(PodNames::complete) {
            return;
        }
        if self
            .pod_tried
            .get(uid)
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return;
        }
        if self.pod_tried.len() >= MAX_CACHED {
            self.pod_tried.clear();
        }
        self.pod_tried.insert(uid.to_string(), Instant::now());
        let mut found = self.read_pod(uid);
        let old = self.pods.get(uid).cloned().unwrap_or_default();
        // What was known stays known when the files are gone.
        found.namespace = found.namespace.or(old.namespace);
        found.pod = found.pod.or(old.pod);
        found.service_account = found.service_account.or(old.service_account);
        if found.containers.is_empty() {
            found.containers = old.containers;
        }
        if found.namespace.is_none() && found.pod.is_none() && found.service_account.is_none() {
            return;
        }
        if found.complete() {
            self.pod_tried.remove(uid);
        }
        if self.pods.len() >= MAX_CACHED && !self.pods.contains_key(uid) {
            self.pods.clear();
        }
        self.pods.insert(uid.to_string(), found);
    }

    fn read_pod(&self, uid: &str) -> PodNames {
        let mut p = PodNames::default();
        let dir = self.log_root.join("pods");
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some((ns, pod, u)) = parse_pod_log_dir(&name.to_string_lossy()) else {
                    continue;
                };
                if u != uid {
                    continue;
                }
                p.namespace = Some(ns);
                p.pod = Some(pod);
                p.containers = subdirs(&e.path());
                break;
            }
        }
        if let Some((ns, pod, sa)) = self.token_claims(uid) {
            p.namespace = p.namespace.or(ns);
            p.pod = p.pod.or(pod);
            p.service_account = sa;
        }
        p
    }

    /// (namespace, pod, service account) from the pod's projected
    /// service-account token (or a legacy secret-volume token).
    fn token_claims(&self, uid: &str) -> Option<(Option<String>, Option<String>, Option<String>)> {
        let volumes = self.kubelet_root.join("pods").join(uid).join("volumes");
        for plugin in ["kubernetes.io~projected", "kubernetes.io~secret"] {
            let Ok(vols) = fs::read_dir(volumes.join(plugin)) else {
                continue;
            };
            for v in vols.flatten() {
                let token = v.path().join("token");
                let Ok(meta) = fs::metadata(&token) else {
                    continue;
                };
                if !meta.is_file() || meta.len() > 64 * 1024 {
                    continue;
                }
                let Ok(bytes) = fs::read(&token) else {
                    continue;
                };
                let Some(c) = crate::issuance::jwt::parse_jwt(&bytes) else {
                    continue;
                };
                // A bound token names its pod: it must be this one.
                if c.kubernetes_pod_uid
                    .as_deref()
                    .is_some_and(|u| !u.eq_ignore_ascii_case(uid))
                {
                    continue;
                }
                let from_sub = c.sub.as_deref().and_then(sa_from_sub);
                let ns = c
                    .kubernetes_namespace
                    .clone()
                    .or_else(|| from_sub.as_ref().map(|s| s.0.clone()));
                let sa = c
                    .kubernetes_service_account
                    .clone()
                    .or_else(|| from_sub.map(|s| s.1));
                if ns.is_none() && sa.is_none() {
                    continue;
                }
                return Some((ns, c.kubernetes_pod.clone(), sa));
            }
        }
        None
    }

    /// The container name of a container id, rescanning the container log
    /// links (at most once a [`RETRY_AFTER`]) on a miss.
    fn container_name(&mut self, container_id: &str, uid: &str) -> Option<String> {
        let cid = container_id.to_ascii_lowercase();
        if let Some(c) = self.containers.get(&cid) {
            return Some(c.name.clone());
        }
        if self
            .last_container_scan
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return None;
        }
        self.scan_containers();
        let c = self.containers.get(&cid)?;
        // A link of another pod (stale id reuse is impossible: ids are
        // random) would be a layout we do not understand; trust only ours.
        if c.pod_uid.as_deref().is_some_and(|u| u != uid) {
            return None;
        }
        Some(c.name.clone())
    }

    fn scan_containers(&mut self) {
        self.last_container_scan = Some(Instant::now());
        let Ok(entries) = fs::read_dir(self.log_root.join("containers")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((_pod, _ns, container, id)) = parse_container_log(&name.to_string_lossy())
            else {
                continue;
            };
            if self.containers.contains_key(&id) {
                continue;
            }
            // The link points into /var/log/pods/<ns>_<pod>_<uid>/<container>/.
            let pod_uid = fs::read_link(e.path()).ok().and_then(|t| {
                t.parent()?
                    .parent()?
                    .file_name()
                    .and_then(|d| parse_pod_log_dir(&d.to_string_lossy()))
                    .map(|(_, _, uid)| uid)
            });
            if self.containers.len() >= MAX_CACHED {
                self.containers.clear();
            }
            self.containers.insert(
                id,
                ContainerName {
                    name: container,
                    pod_uid,
                },
            );
        }
    }
}

fn subdirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(pod: &str) -> Option<(String, String)> {
        derive_workload(pod).map(|w| {
            assert!(w.derived);
            (w.kind, w.name)
        })
    }

    fn some(kind: &str, name: &str) -> Option<(String, String)> {
        Some((kind.into(), name.into()))
    }

    #[test]
    fn workload_from_owner_patterns() {
        assert_eq!(wl("api-7d9f8b6c5d-x2k4p"), some("Deployment", "api"));
        assert_eq!(
            wl("payments-api-5b8c9d7f46-qwzrt"),
            some("Deployment", "payments-api")
        );
        assert_eq!(wl("web-0"), some("StatefulSet", "web"));
        assert_eq!(wl("kafka-broker-12"), some("StatefulSet", "kafka-broker"));
        assert_eq!(
            wl("node-exporter-x7k2p"),
            some("DaemonSet/Job", "node-exporter")
        );
        assert_eq!(wl("backup-29412345-tq7vz"), some("CronJob", "backup"));
        assert_eq!(wl("render-3-tq7vz"), some("Job", "render"));
        // No pattern: a bare pod, a leading-zero number, vowels in a suffix.
        assert_eq!(wl("debug"), None);
        assert_eq!(wl("web-01"), None);
        assert_eq!(wl("my-pod-hello"), None);
        assert_eq!(wl("-0"), None);
    }

    #[test]
    fn pod_log_dir_names() {
        assert_eq!(
            parse_pod_log_dir("payments_api-7d9f8b6c5d-x2k4p_8E2B6A0C-6F7D-4C1E-9B3A-5D4F2E1A0B9C"),
            Some((
                "payments".into(),
                "api-7d9f8b6c5d-x2k4p".into(),
                "8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c".into()
            ))
        );
        assert_eq!(parse_pod_log_dir("payments_api"), None);
        assert_eq!(parse_pod_log_dir("a_b_c_d"), None);
        assert_eq!(parse_pod_log_dir("_b_c"), None);
    }

    #[test]
    fn container_log_names() {
        let id = "ab".repeat(32);
        assert_eq!(
            parse_container_log(&format!("api-7d9f8b6c5d-x2k4p_payments_app-{id}.log")),
            Some((
                "api-7d9f8b6c5d-x2k4p".into(),
                "payments".into(),
                "app".into(),
                id.clone()
            ))
        );
        // Container names may contain dashes; the id is the last part.
        assert_eq!(
            parse_container_log(&format!("p_ns_istio-proxy-{id}.log")).map(|t| t.2),
            Some("istio-proxy".into())
        );
        assert_eq!(parse_container_log(&format!("p_ns_app-{id}")), None);
        assert_eq!(parse_container_log("p_ns_app-abc.log"), None);
        assert_eq!(parse_container_log(&format!("p_app-{id}.log")), None);
    }

    #[test]
    fn service_account_subject() {
        assert_eq!(
            sa_from_sub("system:serviceaccount:payments:app"),
            Some(("payments".into(), "app".into()))
        );
        assert_eq!(sa_from_sub("system:node:n1"), None);
        assert_eq!(sa_from_sub("system:serviceaccount::app"), None);
    }

    fn token(claims: serde_json::Value) -> String {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            e.encode(br#"{"alg":"RS256"}"#),
            e.encode(claims.to_string())
        )
    }

    #[test]
    fn resolves_from_a_kubelet_tree_and_keeps_names_after_removal() {
        let tmp = crate::testutil::TempDir::new("k8s-unit");
        let root = tmp.to_path_buf();
        let uid = "8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c";
        let id = "cd".repeat(32);
        let pod = "api-7d9f8b6c5d-x2k4p";
        let pod_dir = root.join(format!("log/pods/payments_{pod}_{uid}"));
        fs::create_dir_all(pod_dir.join("app")).unwrap();
        fs::create_dir_all(pod_dir.join("sidecar")).unwrap();
        fs::write(pod_dir.join("app/0.log"), "").unwrap();
        fs::create_dir_all(root.join("log/containers")).unwrap();
        std::os::unix::fs::symlink(
            pod_dir.join("app/0.log"),
            root.join(format!("log/containers/{pod}_payments_app-{id}.log")),
        )
        .unwrap();
        let tok = root.join(format!(
            "kubelet/pods/{uid}/volumes/kubernetes.io~projected/kube-api-access-x1/token"
        ));
        fs::create_dir_all(tok.parent().unwrap()).unwrap();
        fs::write(
            &tok,
            token(serde_json::json!({
                "sub": "system:serviceaccount:payments:api-sa",
                "kubernetes.io": {"namespace": "payments",
                                  "pod": {"name": pod, "uid": uid},
                                  "serviceaccount": {"name": "api-sa", "uid": "x"}}
            })),
        )
        .unwrap();
        let mut r = K8sResolver::new(root.join("log"), root.join("kubelet"));
        let k = r.lookup(&uid.to_uppercase(), Some(&id)).unwrap();
        assert_eq!(k.namespace.as_deref(), Some("payments"));
        assert_eq!(k.pod.as_deref(), Some(pod));
        assert_eq!(k.container.as_deref(), Some("app"));
        assert_eq!(k.service_account.as_deref(), Some("api-sa"));
        assert_eq!(
            k.workload,
            Some(Workload {
                kind: "Deployment".into(),
                name: "api".into(),
                derived: true
            })
        );
        assert_eq!(
            k.text(),
            "payments/api-7d9f8b6c5d-x2k4p container app sa api-sa Deployment api"
        );
        // Two containers and an unknown id: no container name is guessed.
        let other = r.lookup(uid, Some(&"ef".repeat(32))).unwrap();
        assert_eq!(other.container, None);
        assert_eq!(other.pod.as_deref(), Some(pod));
        // The pod is deleted: the names stay.
        std::thread::sleep(RETRY_AFTER);
        assert_eq!(r.lookup(uid, Some(&id)), Some(k));
        // An unknown pod: nothing.
        assert_eq!(r.lookup("0123456789abcdef0123456789abcdef", None), None);
    }

    #[test]
    fn token_only_pod_and_static_pods() {
        let tmp = crate::testutil::TempDir::new("k8s-unit2");
        let root = tmp.to_path_buf();
        let uid = "0123456789abcdef0123456789abcdef";
        let tok = root.join(format!(
            "kubelet/pods/{uid}/volumes/kubernetes.io~secret/default-token-abcde/token"
        ));
        fs::create_dir_all(tok.parent().unwrap()).unwrap();
        fs::write(
            &tok,
            token(serde_json::json!({"sub": "system:serviceaccount:kube-system:default"})),
        )
        .unwrap();
        let pod_dir = root.join(format!("log/pods/kube-system_etcd-node1_{uid}/etcd"));
        fs::create_dir_all(&pod_dir).unwrap();
        let mut r = K8sResolver::new(root.join("log"), root.join("kubelet"));
        let k = r.lookup(uid, None).unwrap();
        assert_eq!(k.namespace.as_deref(), Some("kube-system"));
        assert_eq!(k.pod.as_deref(), Some("etcd-node1"));
        assert_eq!(k.service_account.as_deref(), Some("default"));
        // The only container directory names the container.
        assert_eq!(k.container.as_deref(), Some("etcd"));
        // A static pod has no derived workload.
        assert_eq!(k.workload, None);
    }
}
