//! An alert as an OCSF 1.8.0 Detection Finding (class 2004): the one
//! mapping used by every OCSF writer (`monitor query --format ocsf`, the
//! `format = "ocsf"` file feed). README.md ("OCSF") documents it field by
//! field; the tests validate every line the agent emits against the
//! official 1.8.0 export (PyPI `ocsf-json-schema`).
//!
//! The mapping is generic: the alert's native JSON is taken apart, the
//! fields OCSF has a place for are moved there, and everything else (any
//! rule's evidence, and fields added to alerts later) stays under
//! `unmapped`, in the alert's own shape (`unmapped.evidence.bytes`,
//! `unmapped.actor.cgroup`, ...). Nothing is dropped but nulls.
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::{
    correlate::{
        alert::Alert,
        rules::{Named, Severity},
    },
    event::UtcTime,
};

/// The OCSF schema version emitted: `metadata.version` of every line.
pub const OCSF_VERSION: &str = "1.8.0";

pub const CLASS_UID: u32 = 2004;
pub const CATEGORY_UID: u32 = 2;
/// A new finding.
pub const ACTIVITY_CREATE: u32 = 1;
/// A roll-up: more occurrences of a finding already sent.
pub const ACTIVITY_UPDATE: u32 = 2;
/// `metadata.log_name`.
pub const LOG_NAME: &str = "alerts";
/// The ATT&CK version of the technique and tactic ids.
const ATTACK_VERSION: &str = "14.1";

/// OCSF `severity_id` and its caption.
pub fn severity_id_of(severity: &Named<Severity>) -> (u8, &'static str) {
    match severity.known() {
        Some(Severity::Low) => (2, "Low"),
        Some(Severity::Medium) => (3, "Medium"),
        Some(Severity::High) => (4, "High"),
        Some(Severity::Critical) => (5, "Critical"),
        None => severity_id(severity.as_str()),
    }
}

/// OCSF `severity_id` and its caption of a severity's name.
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
    a.insert("version".into(), json!(ATTACK_VERSION));
    Value::Object(a)
}

/// Epoch milliseconds.
fn epoch_ms(t: UtcTime) -> i64 {
    t.unix_micros().div_euclid(1_000)
}

/// `IP:PORT` or `[IPv6]:PORT` as (ip, port).
fn ip_port(dest: &str) -> Option<(IpAddr, u16)> {
    let (host, port) = dest.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.parse().ok()?, port.parse().ok()?))
}

/// The finding this alert belongs to: a roll-up shares the uid of the alert
/// sent for the first occurrence.
pub fn finding_uid(a: &Alert) -> String {
    a.rollup_of.clone().unwrap_or_else(|| a.finding_uid())
}

fn basename(p: &str) -> &str {
    p.rsplit('/').find(|s| !s.is_empty()).unwrap_or(p)
}

/// An OCSF `file` object for a path.
fn file(path: &str) -> Value {
    json!({"path": path, "name": basename(path), "type_id": 1, "type": "Regular File"})
}

fn observable(name: &str, type_id: u32, type_name: &str, value: String) -> Value {
    json!({"name": name, "type_id": type_id, "type": type_name, "value": value})
}

/// Removes `k` from `m`, keeping it only if it is a non-null value.
fn take(m: &mut Map<String, Value>, k: &str) -> Option<Value> {
    m.remove(k).filter(|v| !v.is_null())
}

fn take_str(m: &mut Map<String, Value>, k: &str) -> Option<String> {
    match take(m, k)? {
        Value::String(s) => Some(s),
        other => {
            // Not the type this mapping knows: keep it, unmapped.
            m.insert(k.into(), other);
            None
        }
    }
}

fn take_u64(m: &mut Map<String, Value>, k: &str) -> Option<u64> {
    let v = take(m, k)?;
    match v.as_u64() {
        Some(n) => Some(n),
        None => {
            m.insert(k.into(), v);
            None
        }
    }
}

/// An object's remaining members, without nulls (recursively); `None` if
/// nothing is left.
fn prune(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: Map<String, Value> = m
                .into_iter()
                .filter_map(|(k, v)| prune(v).map(|v| (k, v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        other => Some(other),
    }
}

/// The alert as an OCSF Detection Finding (see the module doc).
pub fn alert_to_ocsf(a: &Alert, product_version: &str) -> Value {
    let native = serde_json::to_value(a).expect("an alert serializes");
    to_ocsf(a, native, product_version)
}

/// The mapping of `native`, the JSON of `a` (whatever fields it has).
fn to_ocsf(a: &Alert, native: Value, product_version: &str) -> Value {
    let Value::Object(mut native) = native else {
        unreachable!("an alert serializes to a JSON object");
    };
    // Taken from the alert itself; removed here so that only what this
    // mapping does not know is left unmapped.
    for k in ["rule", "severity", "time", "first_time", "last_time"] {
        native.remove(k);
    }
    let rule = a.rule.as_str().to_string();
    let (sev_id, sev) = severity_id_of(&a.severity);
    let time_text = a.time.to_string();
    let time = epoch_ms(a.time);
    let summary = take_str(&mut native, "summary").unwrap_or_default();
    let attacks: Vec<Value> = a.attack.iter().map(|t| attack(t)).collect();
    native.remove("attack");
    let count = take_u64(&mut native, "count");
    let (first_time, last_time) = (a.first_time, a.last_time);
    native.remove("rollup_of");
    native.remove("event_ids");
    let title = a
        .rule
        .known()
        .map(|r| r.title().to_string())
        .unwrap_or_else(|| rule.clone());
    let rollup = a.rollup_of.is_some();
    let activity = if rollup {
        (ACTIVITY_UPDATE, "Update")
    } else {
        (ACTIVITY_CREATE, "Create")
    };

    // The actor: a process (OCSF `process`), its container and pod.
    let mut actor = match native.remove("actor") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            native.insert("actor".into(), other);
            Map::new()
        }
        None => Map::new(),
    };
    let mut process = Map::new();
    let mut observables = Vec::new();
    let mut profiles = vec!["host", "security_control"];
    if let Some(pid) = take_u64(&mut actor, "pid") {
        process.insert("pid".into(), json!(pid));
    }
    if let Some(comm) = take_str(&mut actor, "comm") {
        observables.push(observable(
            "actor.process.name",
            9,
            "Process Name",
            comm.clone(),
        ));
        process.insert("name".into(), json!(comm));
    }
    if let Some(cmd) = take_str(&mut actor, "cmd_line") {
        observables.push(observable(
            "actor.process.cmd_line",
            13,
            "Command Line",
            cmd.clone(),
        ));
        process.insert("cmd_line".into(), json!(cmd));
    }
    if let Some(exe) = take_str(&mut actor, "exe") {
        process.insert("file".into(), file(&exe));
    }
    if let Some(uid) = take_u64(&mut actor, "uid") {
        process.insert("user".into(), json!({"uid": uid.to_string()}));
    }
    if let Some(pp) = take_u64(&mut actor, "ppid") {
        process.insert("parent_process".into(), json!({"pid": pp}));
    }
    // Kubernetes names: the container's and pod's names and the namespace
    // go where OCSF has them; the whole object stays as `unmapped.k8s`.
    let k8s = actor.remove("k8s").and_then(prune);
    let name = |k: &str| {
        k8s.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let mut resources = Vec::new();
    let container_id = take_str(&mut actor, "container_id");
    if container_id.is_some() || name("container").is_some() {
        profiles.push("container");
        let mut c = Map::new();
        if let Some(id) = &container_id {
            c.insert("uid".into(), json!(id));
        }
        if let Some(n) = name("container") {
            c.insert("name".into(), json!(n));
        }
        if k8s.is_some() {
            c.insert("orchestrator".into(), json!("Kubernetes"));
        }
        process.insert("container".into(), Value::Object(c.clone()));
        c.remove("orchestrator");
        c.insert("type".into(), json!("container"));
        c.insert("role_id".into(), json!(2));
        c.insert("role".into(), json!("Actor"));
        resources.push(Value::Object(c));
    }
    let pod_uid = take_str(&mut actor, "pod_uid");
    if pod_uid.is_some() || name("pod").is_some() {
        let mut p = Map::new();
        p.insert("type".into(), json!("pod"));
        if let Some(uid) = pod_uid {
            p.insert("uid".into(), json!(uid));
        }
        if let Some(n) = name("pod") {
            p.insert("name".into(), json!(n));
        }
        if let Some(ns) = name("namespace") {
            p.insert("namespace".into(), json!(ns));
        }
        p.insert("role_id".into(), json!(2));
        p.insert("role".into(), json!("Actor"));
        resources.push(Value::Object(p));
    }
    if let Some(k) = k8s {
        native.insert("k8s".into(), k);
    }
    if !actor.is_empty() {
        native.insert("actor".into(), Value::Object(actor));
    }

    // The evidence: the file and the destination; the rest stays unmapped.
    let mut evidence = Map::new();
    if !process.is_empty() {
        evidence.insert("process".into(), Value::Object(process.clone()));
    }
    let mut ev = match native.remove("evidence") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            native.insert("evidence".into(), other);
            Map::new()
        }
        None => Map::new(),
    };
    if let Some(p) = take_str(&mut ev, "path") {
        observables.push(observable(
            "evidences.file.path",
            45,
            "File Path",
            p.clone(),
        ));
        evidence.insert("file".into(), file(&p));
    }
    if let Some(dest) = take_str(&mut ev, "dest") {
        match ip_port(&dest) {
            Some((ip, port)) => {
                observables.push(observable(
                    "evidences.dst_endpoint.ip",
                    2,
                    "IP Address",
                    ip.to_string(),
                ));
                observables.push(observable(
                    "evidences.dst_endpoint.port",
                    11,
                    "Port",
                    port.to_string(),
                ));
                evidence.insert(
                    "dst_endpoint".into(),
                    json!({"ip": ip.to_string(), "port": port}),
                );
            }
            // `unix:PATH` and host names: kept as they are, unmapped.
            None => {
                ev.insert("dest".into(), json!(dest));
            }
        }
    }
    let blocked = ev.get("blocked").and_then(Value::as_bool) == Some(true);
    if !ev.is_empty() {
        native.insert("evidence".into(), Value::Object(ev));
    }

    let mut finding = Map::new();
    finding.insert("uid".into(), json!(finding_uid(a)));
    finding.insert("title".into(), json!(title));
    finding.insert("desc".into(), json!(summary));
    finding.insert(
        "analytic".into(),
        json!({"name": rule, "type_id": 1, "type": "Rule", "uid": rule}),
    );
    finding.insert("attacks".into(), Value::Array(attacks));
    finding.insert("types".into(), json!([rule]));
    finding.insert("created_time".into(), json!(time));
    finding.insert(
        "related_events".into(),
        Value::Array(
            a.event_ids
                .iter()
                .map(|id| json!({"uid": id.to_string()}))
                .collect(),
        ),
    );
    finding.insert("related_events_count".into(), json!(a.event_ids.len()));
    if let Some(t) = first_time.map(epoch_ms) {
        finding.insert("first_seen_time".into(), json!(t));
    }
    if let Some(t) = last_time.map(epoch_ms) {
        finding.insert("last_seen_time".into(), json!(t));
    }

    let mut o = Map::new();
    o.insert("class_uid".into(), json!(CLASS_UID));
    o.insert("class_name".into(), json!("Detection Finding"));
    o.insert("category_uid".into(), json!(CATEGORY_UID));
    o.insert("category_name".into(), json!("Findings"));
    o.insert("activity_id".into(), json!(activity.0));
    o.insert("activity_name".into(), json!(activity.1));
    o.insert("type_uid".into(), json!(CLASS_UID * 100 + activity.0));
    o.insert(
        "type_name".into(),
        json!(format!("Detection Finding: {}", activity.1)),
    );
    o.insert("time".into(), json!(time));
    o.insert("timezone_offset".into(), json!(0));
    o.insert("severity_id".into(), json!(sev_id));
    o.insert("severity".into(), json!(sev));
    o.insert("status_id".into(), json!(1));
    o.insert("status".into(), json!("New"));
    o.insert("is_alert".into(), json!(true));
    let (action, disposition) = if blocked {
        ((2, "Denied"), (2, "Blocked"))
    } else {
        ((3, "Observed"), (15, "Detected"))
    };
    o.insert("action_id".into(), json!(action.0));
    o.insert("action".into(), json!(action.1));
    o.insert("disposition_id".into(), json!(disposition.0));
    o.insert("disposition".into(), json!(disposition.1));
    o.insert("message".into(), json!(summary));
    if let Some(n) = count {
        // The roll-up's repeats (the first occurrence was sent alone).
        o.insert("count".into(), json!(n));
    }
    o.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "uid": a.finding_uid(),
            "product": {"name": "monitor", "vendor_name": "monitor", "version": product_version},
            "log_name": LOG_NAME,
            "log_provider": "monitor",
            "event_code": rule,
            "original_time": time_text,
            "profiles": profiles,
        }),
    );
    o.insert("finding_info".into(), Value::Object(finding));
    if !process.is_empty() {
        o.insert("actor".into(), json!({"process": Value::Object(process)}));
    }
    if !evidence.is_empty() {
        o.insert("evidences".into(), json!([Value::Object(evidence)]));
    }
    o.insert("observables".into(), Value::Array(observables));
    if !resources.is_empty() {
        o.insert("resources".into(), Value::Array(resources));
    }
    if let Some(u) = prune(Value::Object(native)) {
        o.insert("unmapped".into(), u);
    }
    Value::Object(o)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::correlate::{
        alert::{Aggregator, Evidence},
        rules::Rule,
        rules::{ALL_RULES, MONITOR_RULES},
    };
    use crate::event::Process;

    /// Validates OCSF lines with `tests/ocsf/validate.py` (the official
    /// export in PyPI `ocsf-json-schema`, with `jsonschema`) in the venv
    /// `cargo xtask test` makes (`MONITOR_TEST_PYTHON`); panics with the
    /// validator's findings if any line is invalid.
    pub(crate) fn validate(lines: &[String]) {
        let python = std::env::var("MONITOR_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "MONITOR_TEST_PYTHON is not set: run the tests with `cargo xtask test`, \
                 which makes the venv with ocsf-json-schema and jsonschema"
            )
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/ocsf/validate.py");
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let file = std::env::temp_dir().join(format!(
            "monitor-ocsf-{}-{}.jsonl",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let out = std::process::Command::new(&python)
            .arg(script)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{python}: {e}"));
        let _ = std::fs::remove_file(&file);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "OCSF validation failed:\n{text}");
    }

    fn alert(rule: Rule) -> Alert {
        Alert::new(
            rule,
            UtcTime::parse("2026-11-22T10:01:02.123456Z").unwrap(),
            "db-prod",
            "db-prod did something".into(),
            Process {
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
                cmd_line: Some("cp --token=[REDACTED:db-prod] /tmp/x".into()),
                ..Default::default()
            },
            Evidence {
                path: Some("/tmp/x".into()),
                dest: Some("[2001:db8::1]:443".into()),
                fd_kind: Some(crate::event::FdKind::File),
                encoding: Some("raw".into()),
                bytes: Some(37),
                holder_k8s: Some(crate::enrich::k8s::K8s {
                    namespace: Some("payments".into()),
                    pod: Some("db-0".into()),
                    container: Some("postgres".into()),
                    service_account: Some("db".into()),
                    workload: crate::enrich::k8s::derive_workload("db-0"),
                }),
                ..Default::default()
            },
            vec![812, 815],
        )
    }

    /// The least an alert may carry.
    fn bare(rule: &str) -> Alert {
        let mut a = alert(Rule::ReadForeign);
        a.rule = rule.into();
        a.actor = Process {
            pid: 1,
            ..Default::default()
        };
        a.evidence = Evidence::default();
        a.attack.clear();
        a.owasp_nhi.clear();
        a.event_ids.clear();
        a
    }

    /// An alert of a rule this module does not know, with fields alerts
    /// may gain (other issues add them), mapped.
    fn odd() -> Value {
        let a = bare("monitor.future.rule");
        let mut v = serde_json::to_value(&a).unwrap();
        v["secret_ids"] = json!(["db-prod", "db-test"]);
        v["node"] = json!("node-1");
        v["actor"]["k8s"] = json!({"namespace": "prod", "pod": "api-0"});
        v["evidence"]["tls"] = json!("libssl.so.3");
        v["evidence"]["holder_k8s"] = json!({"namespace": "prod", "pod": "db-0"});
        v["evidence"]["blocked"] = json!(true);
        v["evidence"]["dest"] = json!("unix:/run/x.sock");
        to_ocsf(&a, v, "0.1.0")
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

    /// `monitor.capture.degraded` as the correlator raises it: its own
    /// evidence (the writes not captured, every secret the actor holds).
    fn degraded() -> Alert {
        let mut a = alert(Rule::CaptureDegraded);
        a.evidence = Evidence {
            syscall: Some("write".into()),
            dropped_budget: Some(120_000),
            dropped_ring: Some(7),
            held: Some(vec!["db-prod".into(), "db-test".into()]),
            ..Default::default()
        };
        a.event_ids.clear();
        a
    }

    /// Every rule (the contract's and the monitor's own), full and bare,
    /// first alert and roll-up, plus shapes other alerts may take (unknown
    /// rule, unknown fields, a blocked open, a unix destination): all
    /// valid OCSF 1.8.0.
    #[test]
    fn every_shape_validates_against_the_official_schema() {
        let mut lines = Vec::new();
        let mut rules = ALL_RULES.to_vec();
        rules.extend(MONITOR_RULES);
        assert!(rules.contains(&Rule::CaptureDegraded));
        for rule in rules {
            let a = if rule == Rule::CaptureDegraded {
                degraded()
            } else {
                alert(rule)
            };
            lines.push(alert_to_ocsf(&a, "0.1.0").to_string());
            lines.push(alert_to_ocsf(&bare(rule.name()), "0.1.0").to_string());
            let mut agg = Aggregator::new(std::time::Duration::from_secs(3600));
            agg.offer(a.clone());
            let mut again = a.clone();
            again.time = UtcTime::parse("2026-11-22T10:01:03Z").unwrap();
            again.event_ids = vec![900];
            assert!(agg.offer(again).is_none());
            let rolled = agg.flush(true);
            lines.push(alert_to_ocsf(&rolled[0], "0.1.0").to_string());
        }
        // A rule this module has never heard of, with fields added later.
        lines.push(odd().to_string());
        validate(&lines);
    }

    /// `monitor.capture.degraded`: its counts and held secrets under
    /// `unmapped.evidence`, the actor where responders look.
    #[test]
    fn capture_degraded_keeps_its_counts_unmapped() {
        let v = alert_to_ocsf(&degraded(), "0.1.0");
        assert_eq!(
            string(&v, "/finding_info/analytic/name"),
            "monitor.capture.degraded"
        );
        assert_eq!(int(&v, "/severity_id"), 3);
        assert_eq!(int(&v, "/actor/process/pid"), 5151);
        assert_eq!(int(&v, "/unmapped/evidence/dropped_budget"), 120_000);
        assert_eq!(int(&v, "/unmapped/evidence/dropped_ring"), 7);
        assert_eq!(
            v["unmapped"]["evidence"]["held"],
            json!(["db-prod", "db-test"])
        );
        assert_eq!(string(&v, "/unmapped/evidence/syscall"), "write");
        assert!(v.get("evidences").unwrap()[0].get("file").is_none(), "{v}");
    }

    /// The validator itself rejects what it must: a wrong version claim,
    /// an unknown attribute, a wrong type, a bad enum, a bad type_uid.
    #[test]
    fn the_validator_rejects_invalid_lines() {
        let good = alert_to_ocsf(&alert(Rule::CopyFile), "0.1.0");
        validate(&[good.to_string()]);
        type Breaker = (&'static str, fn(&mut Value));
        let breakers: [Breaker; 6] = [
            ("1.1.0 claim", |v| v["metadata"]["version"] = json!("1.1.0")),
            ("unknown attribute", |v| {
                v["finding_info"]["bogus"] = json!(1)
            }),
            ("wrong type", |v| {
                v["evidences"][0]["dst_endpoint"]["port"] = json!("443")
            }),
            ("bad enum", |v| v["severity_id"] = json!(7)),
            ("bad type_uid", |v| v["type_uid"] = json!(200402)),
            ("missing required", |v| {
                v["finding_info"].as_object_mut().unwrap().remove("uid");
            }),
        ];
        for (what, f) in breakers {
            let mut v = good.clone();
            f(&mut v);
            let r = std::panic::catch_unwind(|| validate(&[v.to_string()]));
            assert!(r.is_err(), "the validator accepted a line with a {what}");
        }
    }

    #[test]
    fn fields_land_where_responders_look() {
        for rule in ALL_RULES {
            let a = alert(rule);
            let v = alert_to_ocsf(&a, "0.1.0");
            assert_eq!(int(&v, "/class_uid"), 2004);
            assert_eq!(int(&v, "/activity_id"), 1);
            assert_eq!(int(&v, "/type_uid"), 200401);
            assert_eq!(int(&v, "/time"), 1_795_341_662_123);
            let want = match rule.severity() {
                crate::correlate::rules::Severity::Low => 2,
                crate::correlate::rules::Severity::Medium => 3,
                crate::correlate::rules::Severity::High => 4,
                crate::correlate::rules::Severity::Critical => 5,
            };
            assert_eq!(int(&v, "/severity_id"), want, "{}", rule.name());
            assert_eq!(string(&v, "/metadata/version"), OCSF_VERSION);
            assert_eq!(OCSF_VERSION, "1.8.0");
            assert_eq!(string(&v, "/metadata/product/version"), "0.1.0");
            assert_eq!(string(&v, "/metadata/log_name"), "alerts");
            assert_eq!(string(&v, "/metadata/uid"), a.finding_uid());
            assert_eq!(string(&v, "/finding_info/uid"), a.finding_uid());
            assert_eq!(string(&v, "/finding_info/title"), rule.title());
            assert_eq!(string(&v, "/finding_info/analytic/name"), rule.name());
            assert_eq!(string(&v, "/finding_info/related_events/1/uid"), "815");
            let attacks = v["finding_info"]["attacks"].as_array().unwrap();
            assert_eq!(attacks.len(), rule.attack().len());
            for (at, id) in attacks.iter().zip(rule.attack()) {
                assert!(id.starts_with(&string(at, "/technique/uid")));
                assert!(string(at, "/tactic/uid").starts_with("TA"));
            }
            for p in ["/actor/process", "/evidences/0/process"] {
                assert_eq!(int(&v, &format!("{p}/pid")), 5151);
                assert_eq!(string(&v, &format!("{p}/name")), "cp");
                assert_eq!(
                    string(&v, &format!("{p}/cmd_line")),
                    "cp --token=[REDACTED:db-prod] /tmp/x"
                );
                assert_eq!(string(&v, &format!("{p}/file/path")), "/usr/bin/cp");
                assert_eq!(string(&v, &format!("{p}/user/uid")), "0");
                assert_eq!(int(&v, &format!("{p}/parent_process/pid")), 5150);
                assert_eq!(
                    string(&v, &format!("{p}/container/uid")),
                    "abcdef0123456789"
                );
            }
            assert_eq!(string(&v, "/evidences/0/file/path"), "/tmp/x");
            assert_eq!(string(&v, "/evidences/0/dst_endpoint/ip"), "2001:db8::1");
            assert_eq!(int(&v, "/evidences/0/dst_endpoint/port"), 443);
            let obs: Vec<(i64, String)> = v["observables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| (int(o, "/type_id"), string(o, "/value")))
                .collect();
            for want in [
                (45, "/tmp/x"),
                (2, "2001:db8::1"),
                (11, "443"),
                (9, "cp"),
                (13, "cp --token=[REDACTED:db-prod] /tmp/x"),
            ] {
                assert!(
                    obs.contains(&(want.0, want.1.to_string())),
                    "{want:?} not in {obs:?}"
                );
            }
            assert_eq!(string(&v, "/resources/0/type"), "container");
            assert_eq!(string(&v, "/resources/0/name"), "app");
            assert_eq!(string(&v, "/resources/1/type"), "pod");
            assert_eq!(string(&v, "/resources/1/name"), "api-7d9f8b6c5d-x2k4p");
            assert_eq!(string(&v, "/resources/1/namespace"), "payments");
            assert_eq!(string(&v, "/actor/process/container/name"), "app");
            // Kubernetes names, whole, where issue 18 documents them.
            assert_eq!(string(&v, "/unmapped/k8s/namespace"), "payments");
            assert_eq!(string(&v, "/unmapped/k8s/pod"), "api-7d9f8b6c5d-x2k4p");
            assert_eq!(string(&v, "/unmapped/k8s/container"), "app");
            assert!(v.pointer("/unmapped/actor/k8s").is_none());
            // The holder's names, whole, under the evidence.
            assert_eq!(
                v["unmapped"]["evidence"]["holder_k8s"],
                json!({"namespace": "payments", "pod": "db-0", "container": "postgres",
                       "service_account": "db",
                       "workload": {"kind": "StatefulSet", "name": "db", "derived": true}})
            );
            // What OCSF has no place for, in the alert's own shape.
            assert_eq!(string(&v, "/unmapped/secret_id"), "db-prod");
            assert_eq!(v["unmapped"]["owasp_nhi"], json!(rule.owasp_nhi()));
            assert_eq!(string(&v, "/unmapped/actor/cgroup"), "/kubepods/x");
            assert_eq!(string(&v, "/unmapped/evidence/encoding"), "raw");
            assert_eq!(string(&v, "/unmapped/evidence/fd_kind"), "file");
            assert_eq!(int(&v, "/unmapped/evidence/bytes"), 37);
            assert!(v.pointer("/unmapped/evidence/path").is_none());
            assert!(v.pointer("/unmapped/actor/pid").is_none());
        }
    }

    #[test]
    fn a_rollup_updates_the_finding_of_its_first_alert() {
        let a = alert(Rule::CopyFile);
        let mut agg = Aggregator::new(std::time::Duration::from_secs(3600));
        assert!(agg.offer(a.clone()).is_some());
        let mut b = a.clone();
        b.time = UtcTime::parse("2026-11-22T10:01:05Z").unwrap();
        b.event_ids = vec![901];
        assert!(agg.offer(b).is_none());
        let r = agg.flush(true).remove(0);
        let first = alert_to_ocsf(&a, "0.1.0");
        let rolled = alert_to_ocsf(&r, "0.1.0");
        assert_eq!(
            first["finding_info"]["uid"], rolled["finding_info"]["uid"],
            "a roll-up names the same finding"
        );
        assert_ne!(first["metadata"]["uid"], rolled["metadata"]["uid"]);
        assert_eq!(int(&rolled, "/activity_id"), 2);
        assert_eq!(int(&rolled, "/type_uid"), 200402);
        assert_eq!(int(&rolled, "/count"), 1);
        assert_eq!(
            int(&rolled, "/finding_info/first_seen_time"),
            1_795_341_665_000
        );
        assert!(rolled.pointer("/unmapped/rollup_of").is_none());
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
        a.actor.cmd_line = None;
        a.actor.k8s = None;
        a.evidence.path = None;
        a.evidence.dest = Some("unix:/run/x.sock".into());
        let v = alert_to_ocsf(&a, "1.2.3");
        assert!(v.get("resources").is_none());
        assert!(v.pointer("/evidences/0/file").is_none());
        assert!(v.pointer("/evidences/0/process/file").is_none());
        assert!(v.pointer("/evidences/0/process/cmd_line").is_none());
        assert!(v.pointer("/evidences/0/dst_endpoint").is_none());
        assert_eq!(
            v["metadata"]["profiles"],
            json!(["host", "security_control"])
        );
        assert_eq!(string(&v, "/unmapped/evidence/dest"), "unix:/run/x.sock");
        // Fields this module does not know, at any level, stay unmapped.
        let v = odd();
        assert_eq!(v["unmapped"]["secret_ids"], json!(["db-prod", "db-test"]));
        assert_eq!(v["unmapped"]["node"], "node-1");
        assert_eq!(v["unmapped"]["k8s"]["pod"], "api-0");
        assert_eq!(v["unmapped"]["evidence"]["holder_k8s"]["pod"], "db-0");
        assert_eq!(v["unmapped"]["evidence"]["tls"], "libssl.so.3");
        assert_eq!(string(&v, "/finding_info/title"), "monitor.future.rule");
        assert_eq!(string(&v, "/disposition"), "Blocked");
        assert_eq!(string(&v, "/action"), "Denied");
        assert_eq!(ip_port("10.0.0.1:5432"), Some(([10, 0, 0, 1].into(), 5432)));
        assert_eq!(ip_port("db.internal:5432"), None);
    }
}
