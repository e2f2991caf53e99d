//! The event store: an embedded SQLite database (WAL) of issuances,
//! revocations, the security-relevant events and the alerts, for
//! `monitor query`, `monitor timeline` and the agent's API.
//!
//! # What is in it
//!
//! Exactly what [`Event`] and [`Alert`] serialize (the JSON the agent
//! emits), what [`Issuance::to_json`] gives, and revocation times. None of
//! them carries a secret's value: events hold byte counts, never bytes, the
//! names of environment variables, never values, and an argv in which known
//! secrets are already redacted; alerts hold evidence (paths, destinations,
//! encodings, byte counts). **No plaintext secret is ever written to the
//! store**, and nothing here adds any: every row is one of those objects
//! plus columns copied out of it for indexing.
//!
//! # Layout
//!
//! See [`schema`]: `events` (keyed by the event's own id), `event_secrets`
//! (which secrets an event touched, and how), `alerts` (keyed by a rowid
//! that is never reused, the pagination cursor), `alert_events`,
//! `issuances`, `revocations`; indexes by time, secret, rule and pid. The
//! schema is versioned (`PRAGMA user_version`) and migrated on open.
//!
//! # Concurrency
//!
//! One writer (the agent, through [`writer::StoreWriter`], which batches
//! off the hot path) and any number of readers: the database is in WAL
//! mode, so `monitor query` reads a consistent snapshot while the agent
//! writes. [`Store::open_readonly`] also opens a file copied from another
//! node (copy the `-wal` file along, or use `sqlite3 events.db ".backup
//! copy.db"`; a lone main file holds everything up to the last
//! checkpoint), including one written by an older version (upgraded in
//! memory, the file is never touched).
//!
//! # Retention
//!
//! [`Store::retention`] deletes by age and by size; see there.
pub mod schema;
pub mod timeline;
pub mod writer;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{
    params, types::Value as SqlValue, Connection, OpenFlags, OptionalExtension, TransactionBehavior,
};

use crate::{
    correlate::alert::Alert,
    event::{Event, UtcTime},
    issuance::Issuance,
};

pub use writer::{RetentionPolicy, StoreItem, StoreSender, StoreWriter};

/// The default database (`--db`).
pub const DEFAULT_DB: &str = "/var/lib/monitor/events.db";

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL is truncated to this after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// What to query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Alerts,
    Events,
}

/// A query: every set field must match.
///
/// Results are always in ascending id order (the order the agent wrote
/// them, which is time order). Without `after_id` they are the *newest*
/// `limit` matches; with `after_id = Some(c)` the first `limit` matches
/// whose id is greater than `c` (forward pagination: pass the last id of a
/// page to get the next one; `Some(0)` starts at the oldest). An event's
/// cursor is its `id`; an alert's is [`StoredAlert::id`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub kind: Kind,
    /// Alerts about this secret / events that touched it.
    pub secret: Option<String>,
    /// Alerts of this rule / events behind an alert of this rule.
    pub rule: Option<String>,
    /// The acting process (alert actor / event process).
    pub pid: Option<u32>,
    /// The acting process's Kubernetes namespace (`k8s.namespace`).
    pub namespace: Option<String>,
    /// The acting process's Kubernetes pod name (`k8s.pod`).
    pub pod: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// At or before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many; `None` for all.
    pub limit: Option<usize>,
    /// Pagination cursor: only ids greater than this.
    pub after_id: Option<u64>,
}

/// An alert with its row id (the pagination cursor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAlert {
    pub id: u64,
    pub alert: Alert,
}

/// An issuance as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredIssuance {
    /// `issued_at`, RFC 3339.
    pub time: String,
    /// Where the record came from (`api`, an issuance file, `vault-audit`,
    /// `discovered`...).
    pub source: String,
    /// [`Issuance::to_json`].
    pub json: serde_json::Value,
}

/// A revocation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRevocation {
    pub time: String,
}

/// A connection to the database.
/// A secret to restore at start: its issuance JSON, its source and when
/// it was revoked (if it was).
pub type RestoredSecret = (String, String, Option<DateTime<Utc>>);

pub struct Store {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Nanoseconds since the epoch of an RFC 3339 time; the current time if it
/// does not parse (the agent always writes RFC 3339, so this is a row
/// written now).
fn time_ns(t: &UtcTime) -> i64 {
    t.unix_micros().saturating_mul(1_000)
}

// Columns hold what the JSON holds: the written time, kind, rule and
// severity.
impl rusqlite::ToSql for UtcTime {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.to_string()))
    }
}

impl rusqlite::ToSql for crate::event::EventKind {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
    }
}

impl<T: crate::correlate::rules::Name> rusqlite::ToSql for crate::correlate::rules::Named<T> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
    }
}

fn ns_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// `file:` URI of a path (for read-only and immutable opens): every byte
/// outside `A-Z a-z 0-9 / - . _ ~` percent-encoded.
fn file_uri(path: &Path, query: &str) -> String {
    let mut s = String::from("file:");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{s}?{query}")
}

/// SQLite's page cache per connection, KiB. Its default, 2 MiB, filled by
/// the writer within minutes of a loaded agent's start (and by each reader
/// that walks a table), is the largest single item of the agent's heap
/// after the secrets themselves; appends and indexed lookups touch a few
/// pages each, and the OS page cache keeps the file's pages anyway.
const CACHE_KIB: i64 = 512;

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Negative: a size in KiB rather than in pages.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(())
}

impl Store {
    /// Opens (creating it and its parent directories if needed) the
    /// database for writing: WAL mode, incremental auto-vacuum for a new
    /// file, and the schema migrated to the current version.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::output::create_private_dir_all(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        // Created 0600 before SQLite opens it: its WAL and shared-memory
        // files take the database file's mode.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(crate::output::FILE_MODE)
                .open(&path)
                .with_context(|| format!("creating the store {}", path.display()))?;
        } else {
            crate::output::warn_if_readable_by_others("store", &path);
        }
        let mut conn = Connection::open(&path)
            .with_context(|| format!("opening the store {}", path.display()))?;
        configure(&conn)?;
        let fresh = schema::version(&conn)? == 0 && {
            let n: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            n == 0
        };
        if fresh {
            // Only possible before the first table exists.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("{}: cannot switch to WAL mode (got {mode})", path.display());
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        schema::migrate_to(&mut conn, schema::CURRENT_VERSION)
            .with_context(|| format!("store {}", path.display()))?;
        Ok(Store {
            conn,
            path,
            read_only: false,
        })
    }

    /// Opens an existing database for reading only; never writes to it.
    ///
    /// Works while the agent writes (WAL: a reader sees the last committed
    /// transaction) and on a file copied from elsewhere. If the directory
    /// does not allow SQLite's shared-memory file, the file is opened as
    /// immutable (what is in the main file). A database of an older schema
    /// is copied into memory and upgraded there.
    pub fn open_readonly(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            bail!(
                "no database at {} (is the agent writing there? see --db)",
                path.display()
            );
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let try_open = |uri: &str| -> Result<(Connection, u32)> {
            let conn = Connection::open_with_flags(uri, flags)?;
            configure(&conn)?;
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
            let v = schema::version(&conn)?;
            Ok((conn, v))
        };
        let (conn, version, uri) = match try_open(&file_uri(&path, "mode=ro")) {
            Ok((c, v)) => (c, v, file_uri(&path, "mode=ro")),
            Err(first) => {
                let uri = file_uri(&path, "immutable=1");
                match try_open(&uri) {
                    Ok((c, v)) => (c, v, uri),
                    Err(_) => {
                        return Err(first)
                            .with_context(|| format!("opening the store {}", path.display()))
                    }
                }
            }
        };
        let conn = match version {
            0 => bail!("{} is not a monitor database", path.display()),
            v if v == schema::CURRENT_VERSION => conn,
            v if v > schema::CURRENT_VERSION => bail!(
                "{}: database schema version {v} is newer than this monitor's ({}); \
                 upgrade monitor",
                path.display(),
                schema::CURRENT_VERSION
            ),
            v => {
                drop(conn);
                upgrade_in_memory(&uri, v)
                    .with_context(|| format!("reading the older store {}", path.display()))?
            }
        };
        Ok(Store {
            conn,
            path,
            read_only: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn schema_version(&self) -> Result<u32> {
        schema::version(&self.conn)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            bail!("{}: opened read-only", self.path.display());
        }
        Ok(())
    }

    /// Stores events; an id already present is kept as it was (first
    /// wins). Returns how many were new. One transaction.
    pub fn insert_events(&mut self, events: &[Event]) -> Result<usize> {
        self.writable()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        for e in events {
            n += insert_event(&tx, e, &serde_json::to_string(e)?)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Stores alerts; returns their row ids. One transaction.
    pub fn insert_alerts(&mut self, alerts: &[Alert]) -> Result<Vec<u64>> {
        self.writable()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids = Vec::with_capacity(alerts.len());
        for a in alerts {
            ids.push(insert_alert(&tx, a)?);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Stores an issuance; `source` says where the record came from. An
    /// identical record already stored is not added again (an agent
    /// restarting re-reads its issuance files). Returns whether it was new.
    pub fn insert_issuance(&mut self, i: &Issuance, source: &str) -> Result<bool> {
        self.writable()?;
        insert_issuance(&self.conn, i, source)
    }

    /// Stores a revocation (not again if the same one is there).
    pub fn insert_revocation(&mut self, secret_id: &str, at: DateTime<Utc>) -> Result<bool> {
        self.writable()?;
        insert_revocation(&self.conn, secret_id, at)
    }

    /// The highest event id the store knows (events, and events alerts
    /// refer to); 0 if none. The agent numbers its events after it.
    pub fn max_event_id(&self) -> Result<u64> {
        let v: i64 = self.conn.query_row(
            "SELECT max(coalesce((SELECT max(id) FROM events), 0),
                        coalesce((SELECT max(event_id) FROM alert_events), 0))",
            [],
            |r| r.get(0),
        )?;
        Ok(v.max(0) as u64)
    }

    /// Bytes the database's live pages take: `page_count * page_size`
    /// minus the free list. The WAL file (at most
    /// 64 MiB after a checkpoint) is not counted.
    pub fn used_bytes(&self) -> Result<u64> {
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * page_size) as u64)
    }

    /// Number of stored events and alerts.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let e: i64 = self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        let a: i64 = self
            .conn
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))?;
        Ok((e as u64, a as u64))
    }

    /// Deletes old rows; returns `(deleted_events, deleted_alerts)`.
    ///
    /// - `max_age`: events and alerts older than that are deleted.
    /// - `max_bytes`: while the live pages ([`Store::used_bytes`]) exceed
    ///   it, the oldest events and alerts are deleted together, by time (a
    ///   slice sized from the excess, at least one row, per round).
    ///
    /// With them go their `event_secrets` / `alert_events` rows, and the
    /// issuances and revocations older than the cut-off whose secret no
    /// longer has any event or alert (an issuance stays as long as
    /// something refers to its secret). When anything was deleted the
    /// space is given back to the file system: `PRAGMA incremental_vacuum`
    /// on a database created by this code (auto-vacuum incremental), else
    /// one full `VACUUM` that also turns incremental auto-vacuum on; then
    /// the WAL is checkpointed and truncated.
    pub fn retention(
        &mut self,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<(u64, u64)> {
        self.retention_at(Utc::now(), max_age, max_bytes)
    }

    fn retention_at(
        &mut self,
        now: DateTime<Utc>,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<(u64, u64)> {
        self.writable()?;
        let (mut de, mut da) = (0u64, 0u64);
        if let Some(age) = max_age {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            let cutoff = now.checked_sub_signed(age).map(ns_of).unwrap_or(i64::MIN);
            let (e, a) = self.delete_before(cutoff)?;
            de += e;
            da += a;
        }
        if let Some(max) = max_bytes {
            for _ in 0..200 {
                let used = self.used_bytes()?;
                if used <= max {
                    break;
                }
                let (ne, na) = self.counts()?;
                let total = ne + na;
                if total == 0 {
                    break;
                }
                // The share of rows to drop, from the share of bytes over,
                // plus a margin (pages are not freed row by row).
                let share = (used - max) as f64 / used as f64 + 0.05;
                let k = ((total as f64 * share).ceil() as u64).clamp(1, total);
                let cutoff: i64 = self.conn.query_row(
                    "SELECT time_ns FROM (SELECT time_ns FROM events
                                          UNION ALL SELECT time_ns FROM alerts)
                     ORDER BY time_ns LIMIT 1 OFFSET ?1",
                    [(k - 1) as i64],
                    |r| r.get(0),
                )?;
                let (e, a) = self.delete_before(cutoff.saturating_add(1))?;
                de += e;
                da += a;
                if e + a == 0 {
                    break;
                }
            }
        }
        if de + da > 0 {
            self.reclaim()?;
        }
        Ok((de, da))
    }

    /// Deletes events and alerts strictly before `cutoff` (ns), their join
    /// rows, and orphaned issuances/revocations before it.
    fn delete_before(&mut self, cutoff: i64) -> Result<(u64, u64)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM event_secrets WHERE event_id IN
               (SELECT id FROM events WHERE time_ns < ?1)",
            [cutoff],
        )?;
        let e = tx.execute("DELETE FROM events WHERE time_ns < ?1", [cutoff])?;
        tx.execute(
            "DELETE FROM alert_events WHERE alert_id IN
               (SELECT id FROM alerts WHERE time_ns < ?1)",
            [cutoff],
        )?;
        let a = tx.execute("DELETE FROM alerts WHERE time_ns < ?1", [cutoff])?;
        for table in ["issuances", "revocations"] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE time_ns < ?1
                       AND NOT EXISTS (SELECT 1 FROM event_secrets s
                                       WHERE s.secret_id = {table}.secret_id)
                       AND NOT EXISTS (SELECT 1 FROM alerts a
                                       WHERE a.secret_id = {table}.secret_id)"
                ),
                [cutoff],
            )?;
        }
        tx.commit()?;
        Ok((e as u64, a as u64))
    }

    /// Gives free pages back to the file system and truncates the WAL.
    fn reclaim(&mut self) -> Result<()> {
        let auto: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if auto == 2 {
            // Must be stepped to the end: each step frees pages.
            let mut st = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = st.query([])?;
            while rows.next()?.is_some() {}
        } else {
            self.conn
                .pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            self.conn.execute_batch("VACUUM")?;
        }
        // Readers may keep part of the WAL alive: a partial checkpoint is
        // fine, the next one finishes it.
        let _: (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
        Ok(())
    }

    /// Events matching `f` (see [`Filter`] for order and pagination).
    pub fn query_events(&self, f: &Filter) -> Result<Vec<Event>> {
        let mut sql = String::from("SELECT e.id, e.json FROM events e WHERE 1=1");
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(s) = &f.secret {
            sql.push_str(" AND e.id IN (SELECT event_id FROM event_secrets WHERE secret_id = ?)");
            args.push(SqlValue::Text(s.clone()));
        }
        if let Some(r) = &f.rule {
            sql.push_str(
                " AND e.id IN (SELECT ae.event_id FROM alert_events ae
                               JOIN alerts a ON a.id = ae.alert_id WHERE a.rule = ?)",
            );
            args.push(SqlValue::Text(r.clone()));
        }
        push_common(&mut sql, &mut args, f, "e");
        let rows = self.rows(&sql, args)?;
        rows.into_iter()
            .map(|(id, json)| {
                serde_json::from_str(&json).with_context(|| format!("stored event {id}"))
            })
            .collect()
    }

    /// Alerts matching `f`.
    pub fn query_alerts(&self, f: &Filter) -> Result<Vec<Alert>> {
        Ok(self
            .query_alert_rows(f)?
            .into_iter()
            .map(|r| r.alert)
            .collect())
    }

    /// Alerts matching `f`, with their row ids (cursors).
    pub fn query_alert_rows(&self, f: &Filter) -> Result<Vec<StoredAlert>> {
        let mut sql = String::from("SELECT a.id, a.json FROM alerts a WHERE 1=1");
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(s) = &f.secret {
            // Any of the secrets one alert lists (`secret_ids`).
            sql.push_str(
                " AND (a.secret_id = ? OR EXISTS (SELECT 1 FROM json_each(a.json, '$.secret_ids')
                                                   WHERE value = ?))",
            );
            args.push(SqlValue::Text(s.clone()));
            args.push(SqlValue::Text(s.clone()));
        }
        if let Some(r) = &f.rule {
            sql.push_str(" AND a.rule = ?");
            args.push(SqlValue::Text(r.clone()));
        }
        push_common(&mut sql, &mut args, f, "a");
        let rows = self.rows(&sql, args)?;
        rows.into_iter()
            .map(|(id, json)| {
                let alert =
                    serde_json::from_str(&json).with_context(|| format!("stored alert {id}"))?;
                Ok(StoredAlert {
                    id: id as u64,
                    alert,
                })
            })
            .collect()
    }

    fn rows(&self, sql: &str, args: Vec<SqlValue>) -> Result<Vec<(i64, String)>> {
        let mut st = self.conn.prepare(sql)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The issuances of a secret, oldest first.
    pub fn issuances(&self, secret_id: &str) -> Result<Vec<StoredIssuance>> {
        let mut st = self.conn.prepare(
            "SELECT time, source, json FROM issuances WHERE secret_id = ?1
             ORDER BY time_ns, id",
        )?;
        let rows = st
            .query_map([secret_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(time, source, json)| {
                Ok(StoredIssuance {
                    time,
                    source,
                    json: serde_json::from_str(&json).context("stored issuance")?,
                })
            })
            .collect()
    }

    /// Where each issuance source was read up to.
    pub fn source_offsets(&self) -> Result<Vec<writer::SourceOffset>> {
        let mut st = self
            .conn
            .prepare("SELECT path, dev, ino, pos, line FROM source_offsets")?;
        let rows = st
            .query_map([], |r| {
                Ok(writer::SourceOffset {
                    path: r.get(0)?,
                    dev: r.get::<_, i64>(1)? as u64,
                    ino: r.get::<_, i64>(2)? as u64,
                    pos: r.get::<_, i64>(3)? as u64,
                    line: r.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The state to restore at start: each secret's latest issuance (as
    /// [`Issuance::to_json`], with its source) and latest revocation, in
    /// the order they were recorded. (A revocation counts if it is not
    /// older than the issuance: a re-issue revives a secret.)
    pub fn current_secrets(&self) -> Result<Vec<RestoredSecret>> {
        let mut st = self.conn.prepare(
            "SELECT i.json, i.source,
                    (SELECT max(r.time_ns) FROM revocations r
                     WHERE r.secret_id = i.secret_id AND r.time_ns >= i.time_ns)
             FROM issuances i
             WHERE i.id = (SELECT max(id) FROM issuances j WHERE j.secret_id = i.secret_id)
             ORDER BY i.id",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .map(|(j, s, r)| (j, s, r.map(DateTime::from_timestamp_nanos)))
            .collect())
    }

    /// The revocations of a secret, oldest first.
    pub fn revocations(&self, secret_id: &str) -> Result<Vec<StoredRevocation>> {
        let mut st = self
            .conn
            .prepare("SELECT time FROM revocations WHERE secret_id = ?1 ORDER BY time_ns, id")?;
        let rows = st
            .query_map([secret_id], |r| {
                Ok(StoredRevocation {
                    time: r.get::<_, String>(0)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Events of a secret for its timeline: those that touched it and
    /// those behind its alerts, oldest first, at most `limit`; with, for
    /// each, how it touched the secret (encodings, empty for an event only
    /// an alert refers to).
    pub fn secret_events(
        &self,
        secret_id: &str,
        limit: usize,
    ) -> Result<Vec<(Event, Vec<String>)>> {
        let mut st = self.conn.prepare(
            "SELECT e.id, e.json,
                    (SELECT group_concat(encoding, ',') FROM event_secrets s
                     WHERE s.event_id = e.id AND s.secret_id = ?1)
             FROM events e
             WHERE e.id IN (SELECT event_id FROM event_secrets WHERE secret_id = ?1)
                OR e.id IN (SELECT ae.event_id FROM alert_events ae
                            JOIN alerts a ON a.id = ae.alert_id
                            WHERE a.secret_id = ?1
                               OR EXISTS (SELECT 1 FROM json_each(a.json, '$.secret_ids')
                                          WHERE value = ?1))
             ORDER BY e.time_ns, e.id LIMIT ?2",
        )?;
        let rows = st
            .query_map(
                params![secret_id, limit.min(i64::MAX as usize) as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, json, encs)| {
                let ev: Event =
                    serde_json::from_str(&json).with_context(|| format!("stored event {id}"))?;
                let encs = encs
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                Ok((ev, encs))
            })
            .collect()
    }

    /// Alerts of a secret with their row ids, oldest first.
    pub fn secret_alerts(&self, secret_id: &str) -> Result<Vec<StoredAlert>> {
        self.query_alert_rows(&Filter {
            secret: Some(secret_id.to_string()),
            after_id: Some(0),
            ..Default::default()
        })
    }

    /// Is anything known about this secret?
    pub fn knows_secret(&self, secret_id: &str) -> Result<bool> {
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM issuances WHERE secret_id = ?1)
                    OR EXISTS (SELECT 1 FROM event_secrets WHERE secret_id = ?1)
                    OR EXISTS (SELECT 1 FROM alerts WHERE secret_id = ?1)
                    OR EXISTS (SELECT 1 FROM revocations WHERE secret_id = ?1)",
                [secret_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Writes a batch of items in one transaction (the writer thread).
    pub fn write_items(&mut self, items: &[StoreItem]) -> Result<()> {
        self.writable()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for item in items {
            match item {
                StoreItem::Event(e) => {
                    insert_event(&tx, &e.event, e.json_str())?;
                }
                StoreItem::Alert(a) => {
                    insert_alert(&tx, a)?;
                }
                StoreItem::Issuance(i, source) => {
                    insert_issuance(&tx, i, source)?;
                }
                StoreItem::Revocation(id, at) => {
                    insert_revocation(&tx, id, *at)?;
                }
                StoreItem::Offset(o) => {
                    tx.prepare_cached(
                        "INSERT INTO source_offsets (path, dev, ino, pos, line)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT(path) DO UPDATE SET dev = ?2, ino = ?3, pos = ?4, line = ?5",
                    )?
                    .execute(params![
                        o.path,
                        o.dev as i64,
                        o.ino as i64,
                        o.pos as i64,
                        o.line as i64
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Filters shared by events and alerts (pid, time range, cursor), order
/// and limit.
fn push_common(sql: &mut String, args: &mut Vec<SqlValue>, f: &Filter, t: &str) {
    if let Some(pid) = f.pid {
        sql.push_str(&format!(" AND {t}.pid = ?"));
        args.push(SqlValue::Integer(pid.into()));
    }
    // The same expressions as the schema's k8s indexes (so they are used).
    let who = if t == "a" { "actor" } else { "process" };
    if let Some(ns) = &f.namespace {
        sql.push_str(&format!(
            " AND json_extract({t}.json, '$.{who}.k8s.namespace') = ?"
        ));
        args.push(SqlValue::Text(ns.clone()));
    }
    if let Some(pod) = &f.pod {
        sql.push_str(&format!(
            " AND json_extract({t}.json, '$.{who}.k8s.pod') = ?"
        ));
        args.push(SqlValue::Text(pod.clone()));
    }
    if let Some(s) = f.since {
        sql.push_str(&format!(" AND {t}.time_ns >= ?"));
        args.push(SqlValue::Integer(ns_of(s)));
    }
    if let Some(u) = f.until {
        sql.push_str(&format!(" AND {t}.time_ns <= ?"));
        args.push(SqlValue::Integer(ns_of(u)));
    }
    let limit = f
        .limit
        .map(|l| l.min(i64::MAX as usize) as i64)
        .unwrap_or(-1);
    match f.after_id {
        Some(c) => {
            sql.push_str(&format!(" AND {t}.id > ? ORDER BY {t}.id ASC LIMIT ?"));
            args.push(SqlValue::Integer(c.min(i64::MAX as u64) as i64));
            args.push(SqlValue::Integer(limit));
        }
        None => {
            // The newest `limit`, given back in ascending order.
            *sql = format!("SELECT * FROM ({sql} ORDER BY {t}.id DESC LIMIT ?) ORDER BY 1 ASC");
            args.push(SqlValue::Integer(limit));
        }
    }
}

/// `json`: the event's line, serialized once by whoever has it.
fn insert_event(conn: &Connection, e: &Event, json: &str) -> Result<usize> {
    let n = conn
        .prepare_cached(
            "INSERT INTO events (id, time, time_ns, kind, pid, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING",
        )?
        .execute(params![
            e.id.min(i64::MAX as u64) as i64,
            e.time,
            time_ns(&e.time),
            e.kind,
            e.process.pid,
            json
        ])?;
    if n == 1 {
        if let Some(secrets) = &e.detail.secrets {
            let mut st = conn.prepare_cached(
                "INSERT OR IGNORE INTO event_secrets (event_id, secret_id, encoding)
                 VALUES (?1, ?2, ?3)",
            )?;
            for m in secrets {
                st.execute(params![e.id as i64, m.secret_id, m.encoding])?;
            }
        }
    }
    Ok(n)
}

fn insert_alert(conn: &Connection, a: &Alert) -> Result<u64> {
    let json = serde_json::to_string(a)?;
    conn.prepare_cached(
        "INSERT INTO alerts (time, time_ns, rule, severity, secret_id, pid, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        a.time,
        time_ns(&a.time),
        a.rule,
        a.severity,
        a.secret_id,
        a.actor.pid,
        json
    ])?;
    let id = conn.last_insert_rowid();
    let mut st = conn.prepare_cached(
        "INSERT OR IGNORE INTO alert_events (alert_id, event_id) VALUES (?1, ?2)",
    )?;
    for e in &a.event_ids {
        st.execute(params![id, (*e).min(i64::MAX as u64) as i64])?;
    }
    Ok(id as u64)
}

fn insert_issuance(conn: &Connection, i: &Issuance, source: &str) -> Result<bool> {
    let json = serde_json::to_string(&i.to_json())?;
    let time = crate::timefmt::rfc3339_micros(i.issued_at);
    let n = conn
        .prepare_cached(
            "INSERT INTO issuances (secret_id, time, time_ns, source, json)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE NOT EXISTS (SELECT 1 FROM issuances
                               WHERE secret_id = ?1 AND json = ?5 AND source = ?4)",
        )?
        .execute(params![i.secret_id, time, ns_of(i.issued_at), source, json])?;
    Ok(n == 1)
}

fn insert_revocation(conn: &Connection, secret_id: &str, at: DateTime<Utc>) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO revocations (secret_id, time, time_ns)
             SELECT ?1, ?2, ?3
             WHERE NOT EXISTS (SELECT 1 FROM revocations
                               WHERE secret_id = ?1 AND time_ns = ?3)",
        )?
        .execute(params![
            secret_id,
            crate::timefmt::rfc3339_micros(at),
            ns_of(at)
        ])?;
    Ok(n == 1)
}

/// Copies a database of schema `version` (older than current) into memory
/// and migrates the copy. The file is opened read-only.
fn upgrade_in_memory(uri: &str, version: u32) -> Result<Connection> {
    let mut mem = Connection::open_with_flags(
        ":memory:",
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&mem)?;
    schema::migrate_to(&mut mem, version)?;
    mem.execute("ATTACH DATABASE ?1 AS src", [uri])?;
    let tables: Vec<String> = {
        let mut st = mem.prepare(
            "SELECT name FROM src.sqlite_master
             WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?;
        let v = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        v
    };
    for t in &tables {
        let q = t.replace('"', "\"\"");
        mem.execute_batch(&format!(
            "INSERT INTO main.\"{q}\" SELECT * FROM src.\"{q}\""
        ))?;
    }
    mem.execute_batch("DETACH DATABASE src")?;
    schema::migrate_to(&mut mem, schema::CURRENT_VERSION)?;
    Ok(mem)
}

/// Whether the agent should keep this event in the store: what a responder
/// asks about. Events that touched a secret; reads, copies and maps of a
/// watched file; accesses to another process's environment or memory;
/// lost-event reports; and, for tracked processes (holders, their
/// children, readers of watched files), execs and connects.
pub fn worth_storing(e: &Event) -> bool {
    if e.detail.secrets.as_ref().is_some_and(|s| !s.is_empty()) {
        return true;
    }
    use crate::event::EventKind as K;
    match e.kind {
        K::ProcAccess | K::Lost => true,
        K::Open | K::Read | K::Mmap | K::Copy => {
            e.detail.watch.is_some() || (e.kind == K::Open && e.detail.target_pid.is_some())
        }
        K::Exec | K::Connect => e.tracked,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
