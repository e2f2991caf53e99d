//! Test helpers: temporary directories and a realistic synthetic scenario.
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};

use super::Store;
use crate::{
    correlate::{
        alert::{Alert, Evidence},
        rules::Rule,
        SecretMatch,
    },
    event::{Dest, Detail, Event, EventKind, FdKind, Process, UtcTime},
    issuance::{parse_record, Issuance, Record},
};

pub use crate::testutil::TempDir;

/// The scenario's start: 2026-11-22T10:00:00Z.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

/// `t0 + ms`, formatted as the agent does.
pub fn at_t(ms: i64) -> UtcTime {
    (t0() + chrono::Duration::milliseconds(ms)).into()
}

pub fn proc_(pid: u32, comm: &str, exe: &str) -> Process {
    Process {
        pid,
        tid: Some(pid),
        ppid: Some(1),
        uid: 1000,
        gid: Some(1000),
        comm: comm.into(),
        exe: Some(exe.into()),
        cgroup: Some("/kubepods/pod-a/cri-abc".into()),
        container_id: Some("abcdef0123456789".into()),
        pod_uid: Some("0f0e0d0c-0b0a-0908-0706-050403020100".into()),
        k8s: None,
        cmd_line: None,
    }
}

pub fn event(id: u64, ms: i64, kind: &str, syscall: &str, p: Process, detail: Detail) -> Event {
    Event {
        id,
        time: at_t(ms),
        kind: EventKind::from_name(kind).unwrap(),
        syscall: syscall.to_string().into(),
        process: p,
        tracked: true,
        detail,
    }
}

pub fn matched(secret: &str, enc: &str) -> Option<Vec<SecretMatch>> {
    Some(vec![SecretMatch {
        secret_id: secret.into(),
        encoding: enc.into(),
    }])
}

pub fn alert_for(rule: Rule, ev: &Event, secret: &str, summary: &str, evidence: Evidence) -> Alert {
    Alert::new(
        rule,
        ev.time,
        secret,
        summary.into(),
        ev.process.actor(),
        evidence,
        vec![ev.id],
    )
}

pub fn issuance(line: &str) -> Issuance {
    match parse_record(line, t0()).unwrap() {
        Record::Issue(i) => i,
        r => panic!("not an issuance: {r:?}"),
    }
}

pub const DELIVERY: &str = "/vault/secrets/db";

pub fn db_issuance() -> Issuance {
    issuance(
        r#"{"secret_id":"db-prod","issued_at":"2026-11-22T10:00:00Z","ttl_seconds":300,
            "holder":{"pid":4242},"delivery":[{"file":"/vault/secrets/db"},{"env":"DB_PASSWORD"}],
            "allowed_destinations":["127.0.0.1:5432"],"source":"vault",
            "lease_id":"database/creds/app/abc","labels":{"team":"payments"}}"#
            .replace('\n', " ")
            .as_str(),
    )
}

/// What the scenario wrote.
pub struct Scenario {
    pub events: Vec<Event>,
    pub alerts: Vec<Alert>,
}

/// A holder (`app`, pid 4242) is issued `db-prod` and reads its delivery
/// file; it execs a worker with the secret in its environment; `cp` (pid
/// 5151, not the holder) reads the file and copies it to /tmp/x; `curl`
/// (pid 6000) sends it base64-encoded to 203.0.113.9:443; `gdb` (pid 7000)
/// reads the holder's environ; the holder reads the file again; the
/// secret is revoked. An unrelated secret `other` is read by pid 4242.
pub fn scenario() -> Scenario {
    let app = proc_(4242, "app", "/usr/bin/app");
    let worker = Process {
        ppid: Some(4242),
        ..proc_(4300, "worker", "/usr/bin/worker")
    };
    let cp = proc_(5151, "cp", "/usr/bin/cp");
    let curl = proc_(6000, "curl", "/usr/bin/curl");
    let gdb = Process {
        container_id: None,
        pod_uid: None,
        ..proc_(7000, "gdb", "/usr/bin/gdb")
    };
    let file_read = |bytes| Detail {
        fd: Some(3),
        path: Some(DELIVERY.into()),
        fd_kind: Some(FdKind::File),
        bytes: Some(bytes),
        watch: Some("/vault/secrets/*".into()),
        secrets: matched("db-prod", "delivery"),
        ..Default::default()
    };
    let e_deliver = event(10, 1_000, "read", "read", app.clone(), file_read(37));
    let e_env = event(
        11,
        2_000,
        "exec",
        "execve",
        worker,
        Detail {
            filename: Some("/usr/bin/worker".into()),
            argv: Some(vec!["worker".into(), "--serve".into()]),
            env: Some(vec!["PATH".into(), "DB_PASSWORD".into()]),
            ret: Some(0),
            secrets: matched("db-prod", "raw"),
            ..Default::default()
        },
    );
    let e_cp_read = event(20, 60_000, "read", "read", cp.clone(), file_read(37));
    let e_cp_write = event(
        21,
        60_100,
        "write",
        "write",
        cp,
        Detail {
            fd: Some(4),
            path: Some("/tmp/x".into()),
            fd_kind: Some(FdKind::File),
            bytes: Some(37),
            captured: Some(37),
            secrets: matched("db-prod", "raw"),
            ..Default::default()
        },
    );
    let e_send = event(
        30,
        120_000,
        "write",
        "sendto",
        curl,
        Detail {
            fd: Some(5),
            fd_kind: Some(FdKind::Socket),
            dest: Some(Dest::parse("203.0.113.9:443").unwrap()),
            bytes: Some(120),
            captured: Some(120),
            secrets: matched("db-prod", "base64"),
            ..Default::default()
        },
    );
    let e_scrape = event(
        40,
        180_000,
        "proc_access",
        "openat",
        gdb,
        Detail {
            target_pid: Some(4242),
            access: Some("environ".into()),
            secrets: matched("db-prod", "holder"),
            ..Default::default()
        },
    );
    let e_reread = event(50, 200_000, "read", "read", app.clone(), file_read(37));
    let e_other = event(
        60,
        210_000,
        "read",
        "read",
        app,
        Detail {
            path: Some("/vault/secrets/other".into()),
            fd_kind: Some(FdKind::File),
            bytes: Some(12),
            secrets: matched("other", "delivery"),
            ..Default::default()
        },
    );
    let alerts = vec![
        alert_for(
            Rule::ReadForeign,
            &e_cp_read,
            "db-prod",
            "db-prod (/vault/secrets/db) read by cp (pid 5151), not its holder",
            Evidence {
                path: Some(DELIVERY.into()),
                fd_kind: Some(FdKind::File),
                bytes: Some(37),
                syscall: Some("read".into()),
                ..Default::default()
            },
        ),
        alert_for(
            Rule::CopyFile,
            &e_cp_write,
            "db-prod",
            "db-prod copied into /tmp/x by cp (pid 5151)",
            Evidence {
                path: Some("/tmp/x".into()),
                fd_kind: Some(FdKind::File),
                encoding: Some("raw".into()),
                bytes: Some(37),
                syscall: Some("write".into()),
                ..Default::default()
            },
        ),
        alert_for(
            Rule::ReplayForeign,
            &e_send,
            "db-prod",
            "db-prod sent to 203.0.113.9:443 by curl (pid 6000), not its holder",
            Evidence {
                dest: Some("203.0.113.9:443".into()),
                fd_kind: Some(FdKind::Socket),
                encoding: Some("base64".into()),
                bytes: Some(120),
                syscall: Some("sendto".into()),
                ..Default::default()
            },
        ),
        alert_for(
            Rule::EnvironScrape,
            &e_scrape,
            "db-prod",
            "/proc/4242/environ (holder of db-prod) read by gdb (pid 7000)",
            Evidence {
                path: Some("/proc/4242/environ".into()),
                target_pid: Some(4242),
                access: Some("environ".into()),
                syscall: Some("openat".into()),
                ..Default::default()
            },
        ),
    ];
    Scenario {
        events: vec![
            e_deliver, e_env, e_cp_read, e_cp_write, e_send, e_scrape, e_reread, e_other,
        ],
        alerts,
    }
}

/// A store at `path` holding the scenario (and its issuance/revocation).
pub fn scenario_store(path: &Path) -> (Store, Scenario) {
    let mut s = Store::open(path).unwrap();
    let sc = scenario();
    s.insert_issuance(&db_issuance(), "file:/var/lib/monitor/issuances.jsonl")
        .unwrap();
    s.insert_events(&sc.events).unwrap();
    s.insert_alerts(&sc.alerts).unwrap();
    s.insert_revocation("db-prod", t0() + chrono::Duration::seconds(250))
        .unwrap();
    (s, sc)
}
