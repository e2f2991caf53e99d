//! Store tests: round-trip, migrations, read-only opens, retention, the
//! writer (concurrency, drops).
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rusqlite::Connection;

use super::{testutil::*, writer::BATCH_WINDOW, *};
use crate::event::{Detail, Event, EventKind, EventLine};

fn all() -> Filter {
    Filter {
        after_id: Some(0),
        ..Default::default()
    }
}

#[test]
fn round_trip() {
    let dir = TempDir::new("roundtrip");
    let (mut s, sc) = scenario_store(&dir.db());
    assert_eq!(s.schema_version().unwrap(), schema::CURRENT_VERSION);
    assert_eq!(s.query_events(&all()).unwrap(), sc.events);
    assert_eq!(s.query_alerts(&all()).unwrap(), sc.alerts);
    let rows = s.query_alert_rows(&all()).unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(s.max_event_id().unwrap(), 60);
    // Same ids again: first wins, nothing added.
    assert_eq!(s.insert_events(&sc.events).unwrap(), 0);
    assert_eq!(s.counts().unwrap(), (8, 4));
    // Issuance: stored once, identical records not again.
    assert!(!s
        .insert_issuance(&db_issuance(), "file:/var/lib/monitor/issuances.jsonl")
        .unwrap());
    let iss = s.issuances("db-prod").unwrap();
    assert_eq!(iss.len(), 1);
    assert_eq!(iss[0].json, db_issuance().to_json());
    assert_eq!(iss[0].time, "2026-11-22T10:00:00.000000Z");
    assert_eq!(iss[0].source, "file:/var/lib/monitor/issuances.jsonl");
    let rev = s.revocations("db-prod").unwrap();
    assert_eq!(
        rev,
        vec![StoredRevocation {
            time: "2026-11-22T10:04:10.000000Z".into()
        }]
    );
    assert!(!s
        .insert_revocation("db-prod", t0() + chrono::Duration::seconds(250))
        .unwrap());
    assert!(s.knows_secret("db-prod").unwrap() && s.knows_secret("other").unwrap());
    assert!(!s.knows_secret("nope").unwrap());
    drop(s);
    // Reopening keeps everything; a read-only open sees the same.
    let r = Store::open_readonly(dir.db()).unwrap();
    assert!(r.is_read_only());
    assert_eq!(r.query_events(&all()).unwrap(), sc.events);
    assert_eq!(r.max_event_id().unwrap(), 60);
}

#[test]
fn the_max_event_id_counts_events_only_alerts_refer_to() {
    let dir = TempDir::new("maxid");
    let mut s = Store::open(dir.db()).unwrap();
    assert_eq!(s.max_event_id().unwrap(), 0);
    let sc = scenario();
    let mut a = sc.alerts[0].clone();
    a.event_ids = vec![500];
    s.insert_alerts(&[a]).unwrap();
    assert_eq!(s.max_event_id().unwrap(), 500);
}

#[test]
fn nothing_but_the_serialized_objects_is_stored() {
    // Every text cell is either an indexed copy of a field or the JSON of
    // the object: no other data path exists. Check the JSON column is
    // exactly what the event serializes to.
    let dir = TempDir::new("noplain");
    let (s, sc) = scenario_store(&dir.db());
    let json: String = s
        .conn
        .query_row("SELECT json FROM events WHERE id = 21", [], |r| r.get(0))
        .unwrap();
    assert_eq!(json, serde_json::to_string(&sc.events[3]).unwrap());
    let cols: Vec<String> = s
        .conn
        .prepare("SELECT name FROM pragma_table_info('events')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(cols, ["id", "time", "time_ns", "kind", "pid", "json"]);
}

#[test]
fn wal_and_incremental_vacuum_on_a_new_file() {
    let dir = TempDir::new("pragmas");
    let s = Store::open(dir.path().join("a/b/events.db")).unwrap();
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let av: i64 = s
        .conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(av, 2);
    let bt: i64 = s
        .conn
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .unwrap();
    assert_eq!(bt, 5000);
}

/// A version-1 database as a released agent made it: no `alerts.pid`
/// column, no pid indexes.
fn make_v1(path: &std::path::Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    c.execute_batch(schema::MIGRATIONS[0]).unwrap();
    c.pragma_update(None, "user_version", 1).unwrap();
    let sc = scenario();
    for e in &sc.events {
        c.execute(
            "INSERT INTO events (id, time, time_ns, kind, pid, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                e.id as i64,
                e.time,
                super::time_ns(&e.time),
                e.kind,
                e.process.pid,
                serde_json::to_string(e).unwrap()
            ],
        )
        .unwrap();
        for m in e.detail.secrets.iter().flatten() {
            c.execute(
                "INSERT INTO event_secrets VALUES (?1, ?2, ?3)",
                rusqlite::params![e.id as i64, m.secret_id, m.encoding],
            )
            .unwrap();
        }
    }
    for a in &sc.alerts {
        c.execute(
            "INSERT INTO alerts (time, time_ns, rule, severity, secret_id, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                a.time,
                super::time_ns(&a.time),
                a.rule,
                a.severity,
                a.secret_id,
                serde_json::to_string(a).unwrap()
            ],
        )
        .unwrap();
        let id = c.last_insert_rowid();
        for e in &a.event_ids {
            c.execute(
                "INSERT INTO alert_events VALUES (?1, ?2)",
                rusqlite::params![id, *e as i64],
            )
            .unwrap();
        }
    }
}

fn has_index(c: &Connection, name: &str) -> bool {
    c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

#[test]
fn migrates_a_v1_database_on_open() {
    let dir = TempDir::new("migrate");
    make_v1(&dir.db());
    {
        let c = Connection::open(dir.db()).unwrap();
        assert!(!has_index(&c, "alerts_pid"));
        assert_eq!(schema::version(&c).unwrap(), 1);
    }
    let s = Store::open(dir.db()).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::CURRENT_VERSION);
    assert!(has_index(&s.conn, "alerts_k8s") && has_index(&s.conn, "events_k8s"));
    assert!(has_index(&s.conn, "alerts_pid") && has_index(&s.conn, "events_pid"));
    // The new column was backfilled from the stored JSON.
    let pids: Vec<i64> = s
        .conn
        .prepare("SELECT pid FROM alerts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(pids, [5151, 5151, 6000, 7000]);
    let by_pid = s
        .query_alerts(&Filter {
            pid: Some(6000),
            ..all()
        })
        .unwrap();
    assert_eq!(by_pid.len(), 1);
    assert_eq!(by_pid[0].rule, "secret.replay.foreign");
    assert_eq!(s.query_events(&all()).unwrap(), scenario().events);
    drop(s);
    // Idempotent: opening again changes nothing.
    let s = Store::open(dir.db()).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::CURRENT_VERSION);
    assert_eq!(s.counts().unwrap(), (8, 4));
}

#[test]
fn reads_a_v1_copy_without_touching_it() {
    let dir = TempDir::new("migrate-ro");
    make_v1(&dir.db());
    let before = std::fs::read(dir.db()).unwrap();
    let r = Store::open_readonly(dir.db()).unwrap();
    assert_eq!(r.schema_version().unwrap(), schema::CURRENT_VERSION);
    let by_pid = r
        .query_alerts(&Filter {
            pid: Some(5151),
            ..all()
        })
        .unwrap();
    assert_eq!(by_pid.len(), 2);
    drop(r);
    let c = Connection::open(dir.db()).unwrap();
    assert_eq!(schema::version(&c).unwrap(), 1, "the file was migrated");
    drop(c);
    assert_eq!(std::fs::read(dir.db()).unwrap(), before);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("newer");
    drop(Store::open(dir.db()).unwrap());
    let c = Connection::open(dir.db()).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = Store::open(dir.db()).unwrap_err();
    assert!(
        format!("{e:#}").contains("newer than this monitor"),
        "{e:#}"
    );
    let e = Store::open_readonly(dir.db()).unwrap_err();
    assert!(
        format!("{e:#}").contains("newer than this monitor"),
        "{e:#}"
    );
}

#[test]
fn readonly_errors_are_clear() {
    let dir = TempDir::new("ro-errors");
    let e = Store::open_readonly(dir.path().join("events.db")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no database at {} (is the agent writing there? see --db)",
            dir.path().join("events.db").display()
        )
    );
    std::fs::write(dir.path().join("junk.db"), b"").unwrap();
    let e = Store::open_readonly(dir.path().join("junk.db")).unwrap_err();
    assert!(e.to_string().contains("is not a monitor database"), "{e:#}");
    let (_, _) = scenario_store(&dir.db());
    let mut r = Store::open_readonly(dir.db()).unwrap();
    assert!(r.insert_events(&scenario().events).is_err());
}

#[test]
fn reads_a_copy_taken_while_the_agent_writes() {
    let dir = TempDir::new("copy");
    let (s, sc) = scenario_store(&dir.db());
    // The writer is still open: the data may sit in the WAL. Copy both.
    let copy = dir.path().join("copy with spaces & ?#%.db");
    std::fs::copy(dir.db(), &copy).unwrap();
    let wal = dir.path().join("events.db-wal");
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", copy.display())).unwrap();
    }
    let r = Store::open_readonly(&copy).unwrap();
    assert_eq!(r.query_events(&all()).unwrap(), sc.events);
    drop(r);
    drop(s);
    // After the agent stopped (checkpointed), the main file alone is enough.
    let lone = dir.path().join("lone.db");
    std::fs::copy(dir.db(), &lone).unwrap();
    let r = Store::open_readonly(&lone).unwrap();
    assert_eq!(r.query_alerts(&all()).unwrap(), sc.alerts);
}

/// Events spaced `step_ms` apart ending at `end`, each with a large argv
/// (to make the file grow).
fn bulk(first_id: u64, n: u64, end: chrono::DateTime<chrono::Utc>, step_ms: i64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let t = end - chrono::Duration::milliseconds(step_ms * (n - 1 - i) as i64);
            Event {
                id: first_id + i,
                time: t.into(),
                kind: EventKind::Exec,
                syscall: "execve".into(),
                process: proc_(1000 + (i % 50) as u32, "sh", "/bin/sh"),
                tracked: true,
                detail: Detail {
                    argv: Some(vec!["x".repeat(400)]),
                    secrets: matched("bulk", "raw"),
                    ..Default::default()
                },
            }
        })
        .collect()
}

#[test]
fn retention_by_age() {
    let dir = TempDir::new("ret-age");
    let (mut s, sc) = scenario_store(&dir.db());
    // "now" is 150 s after t0: keep the last 100 s (from t0+50s on).
    let now = t0() + chrono::Duration::seconds(150);
    let (e, a) = s
        .retention_at(now, Some(Duration::from_secs(100)), None)
        .unwrap();
    // Deleted: events 10, 11 (t0+1s, t0+2s). Alerts are all later.
    assert_eq!((e, a), (2, 0));
    let ids: Vec<u64> = s
        .query_events(&all())
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [20, 21, 30, 40, 50, 60]);
    let orphans: i64 = s
        .conn
        .query_row(
            "SELECT count(*) FROM event_secrets WHERE event_id IN (10, 11)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    // The issuance stays: its secret still has events.
    assert_eq!(s.issuances("db-prod").unwrap().len(), 1);
    // Later: everything of db-prod is gone, and so is its old issuance.
    let now = t0() + chrono::Duration::days(2);
    let (e, a) = s
        .retention_at(now, Some(Duration::from_secs(3600)), None)
        .unwrap();
    assert_eq!((e, a), (6, sc.alerts.len() as u64));
    assert_eq!(s.counts().unwrap(), (0, 0));
    assert!(s.issuances("db-prod").unwrap().is_empty());
    assert!(s.revocations("db-prod").unwrap().is_empty());
    let orphans: i64 = s
        .conn
        .query_row("SELECT count(*) FROM alert_events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn retention_by_size_deletes_the_oldest_and_shrinks_the_file() {
    let dir = TempDir::new("ret-size");
    let mut s = Store::open(dir.db()).unwrap();
    let now = chrono::Utc::now();
    s.insert_events(&bulk(1, 20_000, now, 10)).unwrap();
    s.reclaim().unwrap();
    let used = s.used_bytes().unwrap();
    let file_before = std::fs::metadata(dir.db()).unwrap().len();
    assert!(used > 8 << 20, "used {used}");
    let max = used / 2;
    let (e, a) = s.retention(None, Some(max)).unwrap();
    assert_eq!(a, 0);
    assert!(e > 0 && e < 20_000, "deleted {e}");
    let after = s.used_bytes().unwrap();
    assert!(after <= max, "used {after} > max {max}");
    // Not far below the target: about half the rows remain.
    let (left, _) = s.counts().unwrap();
    assert!(left > 6_000, "kept only {left}");
    // The oldest went first.
    let ids: Vec<u64> = s
        .query_events(&all())
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len() as u64, left);
    assert_eq!(*ids.first().unwrap(), 20_000 - left + 1);
    assert_eq!(*ids.last().unwrap(), 20_000);
    // The space went back to the file system.
    let file_after = std::fs::metadata(dir.db()).unwrap().len();
    assert!(
        file_after < file_before * 3 / 4,
        "{file_before} -> {file_after}"
    );
    // Under the limit: nothing more to do.
    assert_eq!(s.retention(None, Some(max)).unwrap(), (0, 0));
}

#[test]
fn retention_by_size_converts_an_old_database_to_incremental_vacuum() {
    let dir = TempDir::new("ret-size-v1");
    make_v1(&dir.db());
    let mut s = Store::open(dir.db()).unwrap();
    let av = |s: &Store| -> i64 {
        s.conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(av(&s), 0);
    s.insert_events(&bulk(1000, 3_000, chrono::Utc::now(), 10))
        .unwrap();
    let used = s.used_bytes().unwrap();
    s.retention(None, Some(used / 2)).unwrap();
    assert!(s.used_bytes().unwrap() <= used / 2);
    assert_eq!(av(&s), 2);
}

#[test]
fn writer_batches_every_kind_of_item() {
    let dir = TempDir::new("writer");
    let w = StoreWriter::spawn(Store::open(dir.db()).unwrap(), 100);
    let sc = scenario();
    assert!(w.send(StoreItem::Issuance(db_issuance(), "api".into())));
    for e in &sc.events {
        assert!(w.send(StoreItem::Event(EventLine::new(e.clone()))));
    }
    for a in &sc.alerts {
        assert!(w.send(StoreItem::Alert(a.clone())));
    }
    assert!(w.send(StoreItem::Revocation("db-prod".into(), t0())));
    w.flush();
    assert_eq!(w.written(), 1 + 8 + 4 + 1);
    assert_eq!(w.queued(), 0);
    assert_eq!((w.dropped(), w.failed()), (0, 0));
    let r = Store::open_readonly(dir.db()).unwrap();
    assert_eq!(r.query_events(&all()).unwrap(), sc.events);
    assert_eq!(r.query_alerts(&all()).unwrap(), sc.alerts);
    assert_eq!(r.issuances("db-prod").unwrap()[0].source, "api");
    assert_eq!(r.revocations("db-prod").unwrap().len(), 1);
    // Items queued right before close are written too.
    let extra = bulk(1000, 50, t0(), 1);
    for e in extra {
        assert!(w.send(StoreItem::Event(EventLine::new(e))));
    }
    let sender = w.sender();
    w.close();
    assert_eq!(sender.written(), 14 + 50);
    assert!(!sender.send(StoreItem::Revocation("x".into(), t0())));
    assert_eq!(sender.dropped(), 1);
    assert_eq!(r.counts().unwrap(), (58, 4));
}

#[test]
fn concurrent_reader_sees_a_growing_store() {
    let dir = TempDir::new("concurrent");
    let w = StoreWriter::spawn(Store::open(dir.db()).unwrap(), 20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let path = dir.db();
        std::thread::spawn(move || -> (u64, u64) {
            let r = Store::open_readonly(&path).unwrap();
            let (mut last, mut reads) = (0u64, 0u64);
            loop {
                let done = stop.load(Ordering::SeqCst);
                let (n, _) = r.counts().expect("count while writing");
                assert!(n >= last, "count went back from {last} to {n}");
                // A real query too, with a filter and a limit.
                let page = r
                    .query_events(&Filter {
                        secret: Some("bulk".into()),
                        limit: Some(50),
                        ..Default::default()
                    })
                    .expect("query while writing");
                assert!(page.len() as u64 <= n.max(50));
                assert!(page.windows(2).all(|p| p[0].id < p[1].id));
                last = n;
                reads += 1;
                if done {
                    return (last, reads);
                }
            }
        })
    };
    let events = bulk(1, 10_000, chrono::Utc::now(), 1);
    let start = Instant::now();
    for chunk in events.chunks(500) {
        for e in chunk {
            assert!(w.send(StoreItem::Event(EventLine::new(e.clone()))));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    w.flush();
    let sent_in = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (seen, reads) = reader.join().expect("reader thread");
    assert_eq!(seen, 10_000);
    assert!(reads > 1, "only {reads} reads");
    assert_eq!(w.written(), 10_000);
    assert_eq!(w.dropped(), 0);
    println!("10k events written in {sent_in:?}, {reads} concurrent reads");
    w.close();
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = TempDir::new("drops");
    let store = Store::open(dir.db()).unwrap();
    // Another connection holds the write lock: the writer's first batch
    // waits in SQLite's busy handler, so nothing leaves the queue.
    let mut blocker = Connection::open(dir.db()).unwrap();
    let tx = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let w = StoreWriter::spawn(store, 10);
    let evs = bulk(1, 101, t0(), 1);
    assert!(w.send(StoreItem::Event(EventLine::new(evs[0].clone()))));
    // The writer takes event 1; past the batch window it is stuck writing
    // it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(BATCH_WINDOW * 3);
    let start = Instant::now();
    let accepted = evs[1..]
        .iter()
        .filter(|e| w.send(StoreItem::Event(EventLine::new((*e).clone()))))
        .count();
    assert!(start.elapsed() < Duration::from_millis(500), "send blocked");
    // Exactly the queue's capacity gets in (unless a very slow machine let
    // the writer still take a few before it blocked).
    assert!((10..=15).contains(&accepted), "accepted {accepted}");
    assert_eq!(w.dropped(), 100 - accepted as u64);
    assert!(w.queued() <= accepted);
    // Alerts are never dropped: they take their own path, full queue or
    // not, and are written first.
    let sc = scenario();
    for a in &sc.alerts {
        assert!(w.send(StoreItem::Alert(a.clone())));
    }
    assert_eq!(w.dropped(), 100 - accepted as u64);
    tx.commit().unwrap();
    w.flush();
    let alerts = sc.alerts.len() as u64;
    assert_eq!(w.written(), 1 + accepted as u64 + alerts);
    assert_eq!(w.queued(), 0);
    w.close();
    let r = Store::open_readonly(dir.db()).unwrap();
    assert_eq!(r.counts().unwrap(), (1 + accepted as u64, alerts));
}

#[test]
fn shedding_drops_queued_events_but_writes_alerts() {
    let dir = TempDir::new("shed");
    let store = Store::open(dir.db()).unwrap();
    let mut blocker = Connection::open(dir.db()).unwrap();
    let tx = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let w = StoreWriter::spawn(store, 1000);
    let evs = bulk(1, 500, t0(), 1);
    // The writer takes event 1; past the batch window it is stuck writing
    // it (SQLite's busy handler), so the other 499 stay queued.
    assert!(w.send(StoreItem::Event(EventLine::new(evs[0].clone()))));
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(BATCH_WINDOW * 3);
    for e in &evs[1..] {
        assert!(w.send(StoreItem::Event(EventLine::new(e.clone()))));
    }
    let sc = scenario();
    for a in &sc.alerts {
        assert!(w.send(StoreItem::Alert(a.clone())));
    }
    w.shed_events();
    tx.commit().unwrap();
    w.flush();
    let dropped = w.dropped();
    w.close();
    let r = Store::open_readonly(dir.db()).unwrap();
    let (events, alerts) = r.counts().unwrap();
    assert_eq!(alerts, sc.alerts.len() as u64);
    // What the writer had taken before shedding is written; what was
    // queued is dropped and counted.
    assert_eq!((events, dropped), (1, 499));
}

#[test]
fn the_size_limit_is_enforced_on_write() {
    let dir = TempDir::new("size-on-write");
    let s = Store::open(dir.db()).unwrap();
    let max = 256 * 1024;
    let w = StoreWriter::spawn_with(
        s,
        10_000,
        Some(RetentionPolicy {
            max_age: None,
            max_bytes: Some(max),
            // The periodic run would come far too late.
            every: Duration::from_secs(3600),
        }),
    );
    let now = chrono::Utc::now();
    for chunk in 0..10u64 {
        for e in bulk(1 + chunk * 500, 500, now, 1) {
            assert!(w.send(StoreItem::Event(EventLine::new(e))));
        }
        w.flush();
        std::thread::sleep(writer::SIZE_CHECK_EVERY / 4);
    }
    std::thread::sleep(writer::SIZE_CHECK_EVERY);
    // One more write triggers the last check.
    assert!(w.send(StoreItem::Event(EventLine::new(
        bulk(100_000, 1, now, 1).remove(0)
    ))));
    w.flush();
    assert!(w.size_enforced() > 0);
    w.close();
    let r = Store::open(dir.db()).unwrap();
    let used = r.used_bytes().unwrap();
    assert!(used <= max + max / 4, "{used} bytes, limit {max}");
}

#[test]
fn writer_runs_retention() {
    let dir = TempDir::new("writer-ret");
    let mut s = Store::open(dir.db()).unwrap();
    let old = bulk(1, 100, chrono::Utc::now() - chrono::Duration::days(10), 1);
    s.insert_events(&old).unwrap();
    let w = StoreWriter::spawn_with(
        s,
        100,
        Some(RetentionPolicy {
            max_age: Some(Duration::from_secs(86_400)),
            max_bytes: None,
            every: Duration::from_millis(50),
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.retention_deleted().0 < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.retention_deleted(), (100, 0));
    // New events keep coming in and stay.
    for e in bulk(1000, 10, chrono::Utc::now(), 1) {
        assert!(w.send(StoreItem::Event(EventLine::new(e))));
    }
    w.close();
    assert_eq!(
        Store::open_readonly(dir.db()).unwrap().counts().unwrap(),
        (10, 0)
    );
}

#[test]
fn worth_storing_keeps_what_responders_ask_about() {
    let sc = scenario();
    assert!(sc.events.iter().all(worth_storing));
    let mut plain = sc.events[0].clone();
    plain.detail.secrets = None;
    plain.detail.watch = None;
    assert!(!worth_storing(&plain));
    plain.kind = EventKind::Connect;
    assert!(worth_storing(&plain));
    plain.tracked = false;
    assert!(!worth_storing(&plain));
    plain.kind = EventKind::Lost;
    assert!(worth_storing(&plain));
}

#[test]
fn query_by_kubernetes_namespace_and_pod() {
    use crate::{correlate::alert::Evidence, correlate::rules::Rule, enrich::k8s::K8s};
    let dir = TempDir::new("k8s");
    let mut s = Store::open(dir.db()).unwrap();
    let in_pod = |pid: u32, ns: &str, pod: &str| {
        let mut p = proc_(pid, "cat", "/usr/bin/cat");
        p.k8s = Some(K8s {
            namespace: Some(ns.into()),
            pod: Some(pod.into()),
            container: Some("app".into()),
            ..Default::default()
        });
        p
    };
    let evs = vec![
        event(
            1,
            0,
            "read",
            "read",
            in_pod(10, "payments", "api-0"),
            Detail::default(),
        ),
        event(
            2,
            1,
            "read",
            "read",
            in_pod(11, "payments", "web-0"),
            Detail::default(),
        ),
        event(
            3,
            2,
            "read",
            "read",
            in_pod(12, "billing", "api-0"),
            Detail::default(),
        ),
        event(
            4,
            3,
            "read",
            "read",
            proc_(13, "cat", "/usr/bin/cat"),
            Detail::default(),
        ),
    ];
    s.insert_events(&evs).unwrap();
    let alerts: Vec<_> = evs
        .iter()
        .map(|e| alert_for(Rule::ReadForeign, e, "db", "x", Evidence::default()))
        .collect();
    s.insert_alerts(&alerts).unwrap();
    let pids = |f: Filter| -> (Vec<u32>, Vec<u32>) {
        (
            s.query_events(&f)
                .unwrap()
                .iter()
                .map(|e| e.process.pid)
                .collect(),
            s.query_alerts(&f)
                .unwrap()
                .iter()
                .map(|a| a.actor.pid)
                .collect(),
        )
    };
    let ns = |n: &str| Filter {
        namespace: Some(n.into()),
        ..all()
    };
    assert_eq!(pids(ns("payments")), (vec![10, 11], vec![10, 11]));
    assert_eq!(
        pids(Filter {
            pod: Some("api-0".into()),
            ..ns("payments")
        }),
        (vec![10], vec![10])
    );
    assert_eq!(
        pids(Filter {
            pod: Some("api-0".into()),
            ..all()
        }),
        (vec![10, 12], vec![10, 12])
    );
    assert_eq!(pids(ns("nope")), (vec![], vec![]));
    // The names come back as stored.
    let a = &s.query_alerts(&ns("billing")).unwrap()[0];
    assert_eq!(
        a.actor.k8s.as_ref().unwrap().container.as_deref(),
        Some("app")
    );
    // The query uses the index.
    let plan: String = s
        .conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM alerts a WHERE json_extract(a.json, '$.actor.k8s.namespace') = 'x'",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("alerts_k8s"), "{plan}");
}

#[test]
fn offsets_and_current_secrets_restore_a_restart() {
    let dir = TempDir::new("restore");
    let mut s = Store::open(dir.db()).unwrap();
    let iss = db_issuance();
    let later = chrono::Duration::seconds(60);
    let off = writer::SourceOffset {
        path: "/etc/monitor/issuances.jsonl".into(),
        dev: 2049,
        ino: 77,
        pos: 4096,
        line: 12,
    };
    s.write_items(&[
        StoreItem::Issuance(iss.clone(), "f:1".into()),
        // Revoked, then issued again: active.
        StoreItem::Revocation("db-prod".into(), iss.issued_at + later),
        StoreItem::Offset(off.clone()),
    ])
    .unwrap();
    let mut again = iss.clone();
    again.issued_at = iss.issued_at + later * 2;
    let mut other = iss.clone();
    other.secret_id = "other".into();
    s.write_items(&[
        StoreItem::Issuance(again.clone(), "f:2".into()),
        StoreItem::Issuance(other.clone(), "api".into()),
        StoreItem::Revocation("other".into(), iss.issued_at + later),
        StoreItem::Offset(writer::SourceOffset {
            pos: 8192,
            line: 30,
            ..off.clone()
        }),
    ])
    .unwrap();
    let cur = s.current_secrets().unwrap();
    assert_eq!(cur.len(), 2);
    assert_eq!(cur[0].0, serde_json::to_string(&again.to_json()).unwrap());
    assert_eq!((cur[0].1.as_str(), cur[0].2), ("f:2", None));
    assert_eq!(cur[1].1, "api");
    assert_eq!(cur[1].2, Some(iss.issued_at + later));
    let offs = s.source_offsets().unwrap();
    assert_eq!(offs.len(), 1);
    assert_eq!((offs[0].pos, offs[0].line, offs[0].ino), (8192, 30, 77));
}
