//! An alert as an OCSF 1.1 Detection Finding (class 2004), for SIEM
//! import (`monitor query --format ocsf`).
//!
//! Mapping:
//! - `time`: the alert's time in epoch milliseconds; roll-ups also carry
//!   `count` and `finding_info.first_seen_time` / `last_seen_time`.
//! - `severity_id`: low 2, medium 3, high 4, critical 5.
//! - `finding_info`: `uid` a stable hash of rule, secret, time and event
//!   ids (the same alert always gets the same uid); `title` the rule's
//!   title; `desc` the summary; `analytic` the rule; `attacks` the
//!   ATT&CK techniques (a sub-technique also as `sub_technique`, with its
//!   parent as `technique`) and their tactic; `types` the rule name.
//! - `evidences`: the actor as `process` (pid, comm, exe, uid, parent),
//!   the evidence path as `file`, an `IP:PORT` destination as
//!   `dst_endpoint`.
//! - `resources`: the actor's container and pod.
//! - `unmapped`: the secret id, OWASP NHI ids, and the evidence fields
//!   OCSF has no place for (encoding, fd kind, byte count, syscall, target
//!   pid, access, expiry/revocation times, cgroup, event ids) and the
//!   actor's Kubernetes names (`unmapped.k8s`).
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::correlate::{alert::Alert, rules::Rule};

/// The OCSF schema version emitted.
pub const OCSF_VERSION: &str = "1.1.0";

pub const CLASS_UID: u32 = 2004;
pub const CATEGORY_UID: u32 = 2;
pub const ACTIVITY_CREATE: u32 = 1;
pub const TYPE_UID: u32 = CLASS_UID * 100 + ACTIVITY_CREATE;

/// OCSF `severity_id` and its caption.
pub fn severity_id(severity: &str) -> (u8, &'static str) {
    match severity {
        "informational" => (1, "Informational"),
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

/// Name and primary tactic of the ATT&CK (Enterprise) techniques the rules
/// use.
fn technique(id: &str) -> Option<(&'static str, (&'static str, &'static str))> {
    const CREDENTIAL_ACCESS: (&str, &str) = ("TA0006", "Credential Access");
    const EXFILTRATION: (&str, &str) = ("TA0010", "Exfiltration");
    const LATERAL_MOVEMENT: (&str, &str) = ("TA0008", "Lateral Movement");
    Some(match id {
        "T1552" => ("Unsecured Credentials", CREDENTIAL_ACCESS),
        "T1552.001" => ("Credentials In Files", CREDENTIAL_ACCESS),
        "T1552.007" => ("Container API", CREDENTIAL_ACCESS),
        "T1003" => ("OS Credential Dumping", CREDENTIAL_ACCESS),
        "T1003.007" => ("Proc Filesystem", CREDENTIAL_ACCESS),
        "T1041" => ("Exfiltration Over C2 Channel", EXFILTRATION),
        "T1550" => ("Use Alternate Authentication Material", LATERAL_MOVEMENT),
        "T1550.001" => ("Application Access Token", LATERAL_MOVEMENT),
        _ => return None,
    })
}

fn attack(id: &str) -> Value {
    let (parent, sub) = match id.split_once('.') {
        Some((p, _)) => (p, Some(id)),
        None => (id, None),
    };
    let mut tech = Map::new();
    tech.insert("uid".into(), json!(parent));
    if let Some((name, _)) = technique(parent) {
        tech.insert("name".into(), json!(name));
    }
    let mut a = Map::new();
    a.insert("technique".into(), Value::Object(tech));
    if let Some(sub) = sub {
        let mut st = Map::new();
        st.insert("uid".into(), json!(sub));
        if let Some((name, _)) = technique(sub) {
            st.insert("name".into(), json!(name));
        }
        a.insert("sub_technique".into(), Value::Object(st));
    }
    if let Some((_, (uid, name))) = technique(id).or_else(|| technique(parent)) {
        a.insert("tactic".into(), json!({"uid": uid, "name": name}));
    }
    a.insert("version".into(), json!("14.1"));
    Value::Object(a)
}

/// Epoch milliseconds of an RFC 3339 time.
fn epoch_ms(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `IP:PORT` or `[IPv6]:PORT` as an OCSF network endpoint.
fn endpoint(dest: &str) -> Option<Value> {
    let (host, port) = dest.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some(json!({"ip": ip.to_string(), "port": port}))
}

/// The stable finding id: BLAKE3 of rule, secret, time and event ids
/// (first 16 bytes, hex).
pub fn finding_uid(a: &Alert) -> String {
    let mut h = blake3::Hasher::new();
    for part in [a.rule.as_str(), a.secret_id.as_str(), a.time.as_str()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for id in &a.event_ids {
        h.update(&id.to_le_bytes());
    }
    let bytes = h.finalize();
    bytes.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn basename(p: &str) -> &str {
    p.rsplit('/').find(|s| !s.is_empty()).unwrap_or(p)
}

/// Puts `v` under `k` unless it is null.
fn put(m: &mut Map<String, Value>, k: &str, v: Value) {
    if !v.is_null() {
        m.insert(k.into(), v);
    }
}

/// The alert as an OCSF Detection Finding.
pub fn alert_to_ocsf(a: &Alert, product_version: &str) -> Value {
    let (sev_id, sev) = severity_id(&a.severity);
    let uid = finding_uid(a);
    let time = epoch_ms(&a.time).unwrap_or(0);
    let title = Rule::from_name(&a.rule)
        .map(|r| r.title().to_string())
        .unwrap_or_else(|| a.rule.clone());

    let mut finding = Map::new();
    finding.insert("uid".into(), json!(uid));
    finding.insert("title".into(), json!(title));
    finding.insert("desc".into(), json!(a.summary));
    finding.insert(
        "analytic".into(),
        json!({"name": a.rule, "type_id": 1, "type": "Rule", "uid": a.rule}),
    );
    finding.insert(
        "attacks".into(),
        Value::Array(a.attack.iter().map(|t| attack(t)).collect()),
    );
    finding.insert("types".into(), json!([a.rule]));
    finding.insert("related_events_count".into(), json!(a.event_ids.len()));
    if let Some(t) = a.first_time.as_deref().and_then(epoch_ms) {
        finding.insert("first_seen_time".into(), json!(t));
    }
    if let Some(t) = a.last_time.as_deref().and_then(epoch_ms) {
        finding.insert("last_seen_time".into(), json!(t));
    }

    // The actor.
    let actor = &a.actor;
    let mut process = Map::new();
    process.insert("pid".into(), json!(actor.pid));
    process.insert("name".into(), json!(actor.comm));
    if let Some(exe) = &actor.exe {
        process.insert(
            "file".into(),
            json!({"path": exe, "name": basename(exe), "type_id": 1, "type": "Regular File"}),
        );
    }
    process.insert("user".into(), json!({"uid": actor.uid.to_string()}));
    if let Some(pp) = actor.ppid {
        process.insert("parent_process".into(), json!({"pid": pp}));
    }
    if let Some(c) = &actor.container_id {
        process.insert("container".into(), json!({"uid": c}));
    }
    let mut evidence = Map::new();
    evidence.insert("process".into(), Value::Object(process));
    if let Some(p) = &a.evidence.path {
        evidence.insert(
            "file".into(),
            json!({"path": p, "name": basename(p), "type_id": 1, "type": "Regular File"}),
        );
    }
    let dst = a.evidence.dest.as_deref().and_then(endpoint);
    if let Some(d) = &dst {
        evidence.insert("dst_endpoint".into(), d.clone());
    }

    let mut resources = Vec::new();
    if let Some(c) = &actor.container_id {
        resources.push(json!({"type": "container", "uid": c}));
    }
    if let Some(p) = &actor.pod_uid {
        resources.push(json!({"type": "pod", "uid": p}));
    }

    let ev = &a.evidence;
    let mut unmapped_ev = Map::new();
    if dst.is_none() {
        put(&mut unmapped_ev, "dest", json!(ev.dest));
    }
    put(&mut unmapped_ev, "fd_kind", json!(ev.fd_kind));
    put(&mut unmapped_ev, "encoding", json!(ev.encoding));
    put(&mut unmapped_ev, "bytes", json!(ev.bytes));
    put(&mut unmapped_ev, "syscall", json!(ev.syscall));
    put(&mut unmapped_ev, "target_pid", json!(ev.target_pid));
    put(&mut unmapped_ev, "access", json!(ev.access));
    put(&mut unmapped_ev, "holder_k8s", json!(ev.holder_k8s));
    put(&mut unmapped_ev, "expired_at", json!(ev.expired_at));
    put(&mut unmapped_ev, "revoked_at", json!(ev.revoked_at));
    let mut unmapped = Map::new();
    unmapped.insert("secret_id".into(), json!(a.secret_id));
    unmapped.insert("owasp_nhi".into(), json!(a.owasp_nhi));
    unmapped.insert("event_ids".into(), json!(a.event_ids));
    put(&mut unmapped, "cgroup", json!(actor.cgroup));
    // Kubernetes names (namespace, pod, container, service account, derived
    // workload): OCSF 1.1 has no place for them on a process.
    put(&mut unmapped, "k8s", json!(actor.k8s));
    if !unmapped_ev.is_empty() {
        unmapped.insert("evidence".into(), Value::Object(unmapped_ev));
    }

    let mut o = Map::new();
    o.insert("class_uid".into(), json!(CLASS_UID));
    o.insert("class_name".into(), json!("Detection Finding"));
    o.insert("category_uid".into(), json!(CATEGORY_UID));
    o.insert("category_name".into(), json!("Findings"));
    o.insert("activity_id".into(), json!(ACTIVITY_CREATE));
    o.insert("activity_name".into(), json!("Create"));
    o.insert("type_uid".into(), json!(TYPE_UID));
    o.insert("type_name".into(), json!("Detection Finding: Create"));
    o.insert("time".into(), json!(time));
    o.insert("severity_id".into(), json!(sev_id));
    o.insert("severity".into(), json!(sev));
    o.insert("status_id".into(), json!(1));
    o.insert("status".into(), json!("New"));
    o.insert("message".into(), json!(a.summary));
    if let Some(n) = a.count {
        // The roll-up's repeats plus the first occurrence sent alone.
        o.insert("count".into(), json!(n));
    }
    o.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": uid,
            "product": {"name": "monitor", "vendor_name": "monitor", "version": product_version},
        }),
    );
    o.insert("finding_info".into(), Value::Object(finding));
    o.insert("evidences".into(), json!([Value::Object(evidence)]));
    if !resources.is_empty() {
        o.insert("resources".into(), Value::Array(resources));
    }
    o.insert("unmapped".into(), Value::Object(unmapped));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{
        alert::{Actor, Evidence},
        rules::ALL_RULES,
    };

    fn alert(rule: Rule) -> Alert {
        Alert::new(
            rule,
            "2026-11-22T10:01:02.123456Z".into(),
            "db-prod",
            "db-prod did something".into(),
            Actor {
                pid: 5151,
                ppid: Some(5150),
                uid: 0,
                comm: "cp".into(),
                exe: Some("/usr/bin/cp".into()),
                cgroup: Some("/kubepods/x".into()),
                container_id: Some("abcdef0123456789".into()),
                pod_uid: Some("0f0e0d0c-0b0a-0908-0706-050403020100".into()),
                k8s: Some(crate::enrich::k8s::K8s {
                    namespace: Some("payments".into()),
                    pod: Some("api-7d9f8b6c5d-x2k4p".into()),
                    container: Some("app".into()),
                    ..Default::default()
                }),
            },
            Evidence {
                path: Some("/tmp/x".into()),
                dest: Some("[2001:db8::1]:443".into()),
                fd_kind: Some("file".into()),
                encoding: Some("raw".into()),
                bytes: Some(37),
                ..Default::default()
            },
            vec![812, 815],
        )
    }

    fn int(v: &Value, path: &str) -> i64 {
        v.pointer(path)
            .unwrap_or_else(|| panic!("{path} missing in {v}"))
            .as_i64()
            .unwrap_or_else(|| panic!("{path} not an integer in {v}"))
    }

    fn string(v: &Value, path: &str) -> String {
        v.pointer(path)
            .unwrap_or_else(|| panic!("{path} missing in {v}"))
            .as_str()
            .unwrap_or_else(|| panic!("{path} not a string in {v}"))
            .to_string()
    }

    /// Every attribute OCSF 1.1 requires of a Detection Finding, with its
    /// type, for every rule.
    #[test]
    fn required_fields_for_every_rule() {
        for rule in ALL_RULES {
            let a = alert(rule);
            let v = alert_to_ocsf(&a, "0.1.0");
            assert_eq!(int(&v, "/class_uid"), 2004);
            assert_eq!(int(&v, "/category_uid"), 2);
            assert_eq!(int(&v, "/activity_id"), 1);
            assert_eq!(int(&v, "/type_uid"), 200401);
            assert_eq!(int(&v, "/time"), 1_795_341_662_123);
            let sev = int(&v, "/severity_id");
            let want = match rule.severity() {
                crate::correlate::rules::Severity::Low => 2,
                crate::correlate::rules::Severity::Medium => 3,
                crate::correlate::rules::Severity::High => 4,
                crate::correlate::rules::Severity::Critical => 5,
            };
            assert_eq!(sev, want, "{}", rule.name());
            assert!(!string(&v, "/severity").is_empty());
            assert_eq!(string(&v, "/metadata/version"), "1.1.0");
            assert_eq!(string(&v, "/metadata/product/name"), "monitor");
            assert_eq!(string(&v, "/metadata/product/vendor_name"), "monitor");
            assert_eq!(string(&v, "/metadata/product/version"), "0.1.0");
            let uid = string(&v, "/finding_info/uid");
            assert_eq!(uid.len(), 32);
            assert_eq!(string(&v, "/finding_info/title"), rule.title());
            assert_eq!(string(&v, "/finding_info/desc"), a.summary);
            assert_eq!(string(&v, "/finding_info/analytic/name"), rule.name());
            assert_eq!(int(&v, "/finding_info/analytic/type_id"), 1);
            let attacks = v
                .pointer("/finding_info/attacks")
                .unwrap()
                .as_array()
                .unwrap();
            assert_eq!(attacks.len(), rule.attack().len());
            for (at, id) in attacks.iter().zip(rule.attack()) {
                let tech = string(at, "/technique/uid");
                assert!(id.starts_with(&tech), "{id} vs {tech}");
                assert!(!string(at, "/technique/name").is_empty());
                assert!(string(at, "/tactic/uid").starts_with("TA"));
                if id.contains('.') {
                    assert_eq!(string(at, "/sub_technique/uid"), *id);
                    assert!(!string(at, "/sub_technique/name").is_empty());
                }
            }
            assert_eq!(int(&v, "/status_id"), 1);
            assert_eq!(string(&v, "/message"), a.summary);
            assert_eq!(int(&v, "/evidences/0/process/pid"), 5151);
            assert_eq!(string(&v, "/evidences/0/process/name"), "cp");
            assert_eq!(string(&v, "/evidences/0/process/file/path"), "/usr/bin/cp");
            assert_eq!(string(&v, "/evidences/0/process/user/uid"), "0");
            assert_eq!(string(&v, "/evidences/0/file/path"), "/tmp/x");
            assert_eq!(string(&v, "/evidences/0/dst_endpoint/ip"), "2001:db8::1");
            assert_eq!(int(&v, "/evidences/0/dst_endpoint/port"), 443);
            assert_eq!(string(&v, "/resources/0/type"), "container");
            assert_eq!(string(&v, "/resources/1/type"), "pod");
            assert_eq!(string(&v, "/unmapped/secret_id"), "db-prod");
            assert_eq!(string(&v, "/unmapped/k8s/namespace"), "payments");
            assert_eq!(string(&v, "/unmapped/k8s/pod"), "api-7d9f8b6c5d-x2k4p");
            assert_eq!(string(&v, "/unmapped/k8s/container"), "app");
            assert_eq!(
                v.pointer("/unmapped/owasp_nhi").unwrap(),
                &json!(rule.owasp_nhi())
            );
            assert_eq!(string(&v, "/unmapped/evidence/encoding"), "raw");
            assert_eq!(int(&v, "/unmapped/evidence/bytes"), 37);
            // No plaintext anywhere: only what the alert carried.
            assert!(!v.to_string().contains("password"));
        }
    }

    #[test]
    fn uid_is_stable_and_distinguishes_alerts() {
        let a = alert(Rule::CopyFile);
        assert_eq!(finding_uid(&a), finding_uid(&a.clone()));
        let mut b = a.clone();
        b.event_ids = vec![812];
        assert_ne!(finding_uid(&a), finding_uid(&b));
        let mut c = a.clone();
        c.secret_id = "other".into();
        assert_ne!(finding_uid(&a), finding_uid(&c));
    }

    #[test]
    fn optional_parts_are_left_out_or_unmapped() {
        let mut a = alert(Rule::HolderEgressUnexpected);
        a.actor.container_id = None;
        a.actor.pod_uid = None;
        a.actor.exe = None;
        a.evidence.path = None;
        a.evidence.dest = Some("unix:/run/x.sock".into());
        a.count = Some(4);
        a.first_time = Some("2026-11-22T10:00:00Z".into());
        a.last_time = Some("2026-11-22T10:01:00Z".into());
        let v = alert_to_ocsf(&a, "1.2.3");
        assert!(v.get("resources").is_none());
        assert!(v.pointer("/evidences/0/file").is_none());
        assert!(v.pointer("/evidences/0/process/file").is_none());
        assert!(v.pointer("/evidences/0/dst_endpoint").is_none());
        assert_eq!(string(&v, "/unmapped/evidence/dest"), "unix:/run/x.sock");
        assert_eq!(int(&v, "/count"), 4);
        assert_eq!(int(&v, "/finding_info/first_seen_time"), 1_795_341_600_000);
        assert_eq!(int(&v, "/finding_info/last_seen_time"), 1_795_341_660_000);
        assert_eq!(
            endpoint("10.0.0.1:5432"),
            Some(json!({"ip": "10.0.0.1", "port": 5432}))
        );
        assert_eq!(endpoint("db.internal:5432"), None);
    }
}
