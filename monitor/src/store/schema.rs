//! The store's schema and its migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`. [`MIGRATIONS`] is
//! ordered: entry `i` takes a database from version `i` to `i + 1`, so a
//! fresh file (version 0) runs them all and an older one runs the rest.
//! Each migration runs in one transaction together with the version bump:
//! a crash leaves the database at the old version, never half-migrated.
//! Migrations only ever append: a released entry is never edited.
use anyhow::{bail, Context, Result};
use rusqlite::{Connection, TransactionBehavior};

/// Version 1: the tables. Events, the secrets each touched, alerts and the
/// events behind them, issuances and revocations; time indexes and the
/// by-secret / by-rule indexes.
const V1: &str = "
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,      -- the event's own id (agent-assigned)
    time    TEXT    NOT NULL,         -- RFC 3339, as in the event
    time_ns INTEGER NOT NULL,         -- the same, ns since the epoch (ranges)
    kind    TEXT    NOT NULL,
    pid     INTEGER NOT NULL,
    json    TEXT    NOT NULL          -- the event as the agent emits it
);
CREATE INDEX events_time ON events(time_ns);

CREATE TABLE event_secrets (
    event_id  INTEGER NOT NULL,
    secret_id TEXT    NOT NULL,
    encoding  TEXT    NOT NULL,       -- raw, base64..., or delivery
    PRIMARY KEY (secret_id, event_id, encoding)
) WITHOUT ROWID;
CREATE INDEX event_secrets_event ON event_secrets(event_id);

CREATE TABLE alerts (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a cursor
    time      TEXT    NOT NULL,
    time_ns   INTEGER NOT NULL,
    rule      TEXT    NOT NULL,
    severity  TEXT    NOT NULL,
    secret_id TEXT    NOT NULL,
    json      TEXT    NOT NULL
);
CREATE INDEX alerts_time ON alerts(time_ns);
CREATE INDEX alerts_secret ON alerts(secret_id, time_ns);
CREATE INDEX alerts_rule ON alerts(rule, time_ns);

CREATE TABLE alert_events (
    alert_id INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (alert_id, event_id)
) WITHOUT ROWID;
CREATE INDEX alert_events_event ON alert_events(event_id);

CREATE TABLE issuances (
    id        INTEGER PRIMARY KEY,
    secret_id TEXT    NOT NULL,
    time      TEXT    NOT NULL,       -- issued_at
    time_ns   INTEGER NOT NULL,
    source    TEXT    NOT NULL,       -- where the record came from
    json      TEXT    NOT NULL        -- Issuance::to_json()
);
CREATE INDEX issuances_secret ON issuances(secret_id, time_ns);

CREATE TABLE revocations (
    id        INTEGER PRIMARY KEY,
    secret_id TEXT    NOT NULL,
    time      TEXT    NOT NULL,
    time_ns   INTEGER NOT NULL
);
CREATE INDEX revocations_secret ON revocations(secret_id, time_ns);
";

/// Version 2: alerts get the actor's pid as a column (backfilled from the
/// stored JSON), and both events and alerts an index by pid, for
/// `monitor query --pid`.
const V2: &str = "
ALTER TABLE alerts ADD COLUMN pid INTEGER;
UPDATE alerts SET pid = json_extract(json, '$.actor.pid');
CREATE INDEX alerts_pid ON alerts(pid, time_ns);
CREATE INDEX events_pid ON events(pid, time_ns);
";

/// Version 3: indexes by the acting process's Kubernetes namespace and pod
/// (read from the stored JSON: `monitor query --namespace/--pod`).
const V3: &str = "
CREATE INDEX alerts_k8s ON alerts(json_extract(json, '$.actor.k8s.namespace'),
                                  json_extract(json, '$.actor.k8s.pod'));
CREATE INDEX events_k8s ON events(json_extract(json, '$.process.k8s.namespace'),
                                  json_extract(json, '$.process.k8s.pod'));
";

/// Version 4: how far the agent has read each issuance source (so a
/// restart resumes instead of re-reading it). Written in the same
/// transaction as, or after, the issuances read up to there.
const V4: &str = "
CREATE TABLE source_offsets (
    path TEXT    PRIMARY KEY,
    dev  INTEGER NOT NULL,
    ino  INTEGER NOT NULL,
    pos  INTEGER NOT NULL,       -- bytes read (up to a line end)
    line INTEGER NOT NULL        -- lines read
) WITHOUT ROWID;
";

/// Ordered migrations: `MIGRATIONS[i]` goes from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The version this code reads and writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

pub fn version(conn: &Connection) -> Result<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(v.max(0) as u32)
}

/// Brings `conn` from its version up to `target`. Returns the version it
/// started at. A database newer than this code is an error (an older
/// binary must not write into a schema it does not know).
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32> {
    let from = version(conn)?;
    if from > CURRENT_VERSION {
        bail!(
            "database schema version {from} is newer than this monitor's ({CURRENT_VERSION}); \
             upgrade monitor"
        );
    }
    for v in from..target {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(MIGRATIONS[v as usize])
            .with_context(|| format!("migrating the store from schema {v} to {}", v + 1))?;
        tx.pragma_update(None, "user_version", v + 1)?;
        tx.commit()?;
    }
    Ok(from)
}
