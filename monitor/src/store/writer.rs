//! The store's writer: a background thread that owns the [`Store`] and
//! writes what the agent hands it in batches, off the hot path.
//!
//! The agent's ring-buffer reader must never wait for the disk: [`send`]
//! is a `try_send` on a bounded queue, and an item that does not fit is
//! dropped and counted ([`dropped`]). The thread takes up to
//! [`BATCH_MAX`] items or what arrives within [`BATCH_WINDOW`] of the
//! first, and writes them in one transaction. Retention runs on the same
//! thread, between batches, when a [`RetentionPolicy`] is given.
//!
//! [`send`]: StoreWriter::send
//! [`dropped`]: StoreSender::dropped
use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::Store;
use crate::{correlate::alert::Alert, event::Event, issuance::Issuance};

/// Most items written in one transaction.
pub const BATCH_MAX: usize = 1000;
/// How long a batch waits for more items after its first.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// One thing to store.
#[derive(Clone, Debug)]
// Items are queued one by one and moved straight into the batch; boxing
// the issuance would only add an allocation per record.
#[allow(clippy::large_enum_variant)]
pub enum StoreItem {
    Event(Event),
    Alert(Alert),
    /// The issuance and where the record came from.
    Issuance(Issuance, String),
    /// The revoked secret and from when.
    Revocation(String, DateTime<Utc>),
    /// How far an issuance source has been read.
    Offset(SourceOffset),
}

/// A position in an issuance source (see [`crate::issuance::tail`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceOffset {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Bytes read, at a line end.
    pub pos: u64,
    /// Lines read.
    pub line: u64,
}

/// When and how much to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete events and alerts older than this.
    pub max_age: Option<Duration>,
    /// Keep the database's live pages under this many bytes.
    pub max_bytes: Option<u64>,
    /// How often to run (also once at start).
    pub every: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            max_age: None,
            max_bytes: None,
            every: Duration::from_secs(300),
        }
    }
}

enum Msg {
    /// Boxed: the queue's slots are allocated up front, and an event is
    /// several hundred bytes.
    Item(Box<StoreItem>),
    /// Write everything queued before, then answer.
    Flush(SyncSender<()>),
    Close,
}

#[derive(Default)]
struct Stats {
    dropped: AtomicU64,
    queued: AtomicUsize,
    written: AtomicU64,
    failed: AtomicU64,
    retention_events: AtomicU64,
    retention_alerts: AtomicU64,
    /// The error of the last failed write while writes fail (none once a
    /// write succeeds again).
    error: std::sync::Mutex<Option<String>>,
}

/// A handle that queues items for the writer; cheap to clone (one per
/// task that stores things).
#[derive(Clone)]
pub struct StoreSender {
    tx: SyncSender<Msg>,
    stats: Arc<Stats>,
}

impl StoreSender {
    /// Queues an item without ever blocking. `false` (and one more drop
    /// counted) when the queue is full or the writer is gone.
    pub fn send(&self, item: StoreItem) -> bool {
        // Count before sending: the writer may take it (and decrement) at
        // once.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Item(Box::new(item))) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Items dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Items queued and not yet taken by the writer (approximate).
    pub fn queued(&self) -> usize {
        self.stats.queued.load(Ordering::Relaxed)
    }

    /// Items written (committed).
    pub fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Relaxed)
    }

    /// Items lost because their batch failed to commit (logged).
    pub fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Why writes fail now (none: the last write succeeded).
    pub fn failing(&self) -> Option<String> {
        self.stats
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Events and alerts deleted by retention so far.
    pub fn retention_deleted(&self) -> (u64, u64) {
        (
            self.stats.retention_events.load(Ordering::Relaxed),
            self.stats.retention_alerts.load(Ordering::Relaxed),
        )
    }

    /// Waits until everything queued before this call is written (blocks:
    /// not for the hot path).
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }
}

/// The writer thread and a sender to it.
pub struct StoreWriter {
    sender: StoreSender,
    handle: Option<JoinHandle<()>>,
}

impl std::ops::Deref for StoreWriter {
    type Target = StoreSender;
    fn deref(&self) -> &StoreSender {
        &self.sender
    }
}

impl StoreWriter {
    /// Starts the writer thread with a queue of `capacity` items (at
    /// least 1), without retention.
    pub fn spawn(store: Store, capacity: usize) -> StoreWriter {
        Self::spawn_with(store, capacity, None)
    }

    /// Starts the writer thread; runs `retention` at start and then every
    /// `retention.every`.
    pub fn spawn_with(
        store: Store,
        capacity: usize,
        retention: Option<RetentionPolicy>,
    ) -> StoreWriter {
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity.max(1));
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("monitor-store".into())
            .spawn(move || run(store, rx, thread_stats, retention))
            .expect("spawning the store writer thread");
        StoreWriter {
            sender: StoreSender { tx, stats },
            handle: Some(handle),
        }
    }

    /// Another sender to the same writer.
    pub fn sender(&self) -> StoreSender {
        self.sender.clone()
    }

    /// Queues an item without blocking; see [`StoreSender::send`].
    pub fn send(&self, item: StoreItem) -> bool {
        self.sender.send(item)
    }

    /// Writes everything queued, stops the thread and waits for it.
    /// Items other senders queue after this are dropped.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            // Blocking: the queue may be full, and closing may wait.
            let _ = self.sender.tx.send(Msg::Close);
            let _ = h.join();
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    mut store: Store,
    rx: mpsc::Receiver<Msg>,
    stats: Arc<Stats>,
    retention: Option<RetentionPolicy>,
) {
    let mut next_retention = retention.as_ref().map(|_| Instant::now());
    let mut batch: Vec<StoreItem> = Vec::with_capacity(BATCH_MAX);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    let mut closing = false;
    let mut last_log: Option<Instant> = None;
    while !closing {
        // Wait for the first message, or until retention is due.
        let first = match next_retention {
            Some(due) => {
                let wait = due.saturating_duration_since(Instant::now());
                rx.recv_timeout(wait)
            }
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match first {
            Ok(m) => {
                let deadline = Instant::now() + BATCH_WINDOW;
                let mut msg = Some(m);
                while let Some(m) = msg.take() {
                    match m {
                        Msg::Item(i) => {
                            stats.queued.fetch_sub(1, Ordering::Relaxed);
                            batch.push(*i);
                        }
                        Msg::Flush(ack) => {
                            acks.push(ack);
                            break;
                        }
                        Msg::Close => {
                            closing = true;
                            break;
                        }
                    }
                    if batch.len() >= BATCH_MAX {
                        break;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(m) => msg = Some(m),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            closing = true;
                            break;
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closing = true,
        }
        write(&mut store, &mut batch, &stats, &mut last_log);
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        if let (Some(due), Some(policy)) = (next_retention, retention.as_ref()) {
            if Instant::now() >= due && !closing {
                match store.retention(policy.max_age, policy.max_bytes) {
                    Ok((e, a)) => {
                        stats.retention_events.fetch_add(e, Ordering::Relaxed);
                        stats.retention_alerts.fetch_add(a, Ordering::Relaxed);
                        if e + a > 0 {
                            log::info!("store retention: deleted {e} events, {a} alerts");
                        }
                    }
                    Err(e) => log::warn!("store retention: {e:#}"),
                }
                next_retention = Some(Instant::now() + policy.every);
            }
        }
    }
}

/// While writes keep failing, one log line at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

fn write(
    store: &mut Store,
    batch: &mut Vec<StoreItem>,
    stats: &Stats,
    last_log: &mut Option<Instant>,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut error = stats.error.lock().unwrap_or_else(|e| e.into_inner());
    match store.write_items(batch) {
        Ok(()) => {
            stats.written.fetch_add(n, Ordering::Relaxed);
            if error.take().is_some() {
                log::warn!(
                    "store {}: writing again ({} items lost in all)",
                    store.path().display(),
                    stats.failed.load(Ordering::Relaxed)
                );
                *last_log = None;
            }
        }
        Err(e) => {
            let failed = stats.failed.fetch_add(n, Ordering::Relaxed) + n;
            let why = format!("{e:#}");
            let changed = error.as_deref() != Some(why.as_str());
            if changed || last_log.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY) {
                log::warn!(
                    "store {}: {n} items not written: {why} ({failed} lost in all)",
                    store.path().display()
                );
                *last_log = Some(Instant::now());
            }
            *error = Some(why);
        }
    }
    batch.clear();
}
