//! The store's writer: a background thread that owns the [`Store`] and
//! writes what the agent hands it in batches, off the hot path.
//!
//! The agent's ring-buffer reader must never wait for the disk: [`send`]
//! of an event never blocks on a bounded queue, and an event that does
//! not fit is dropped and counted ([`dropped`]). Alerts, issuances,
//! revocations and source offsets are never dropped: they take their own
//! path (an unbounded queue the writer empties first, in order), so a flood
//! of events cannot push them out. The thread takes up to [`BATCH_MAX`]
//! items or what arrives within [`BATCH_WINDOW`] of the first, and writes
//! them in one transaction. Retention runs on the same thread, between
//! batches, when a [`RetentionPolicy`] is given; its size limit is also
//! enforced on write (checked at most every [`SIZE_CHECK_EVERY`]), so a
//! burst cannot take the disk before the periodic run.
//!
//! [`send`]: StoreWriter::send
//! [`dropped`]: StoreSender::dropped
use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, RecvTimeoutError, Sender, SyncSender},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};

use super::Store;
use crate::{correlate::alert::Alert, event::EventLine, issuance::Issuance};

/// Most items written in one transaction.
pub const BATCH_MAX: usize = 1000;
/// How long a batch waits for more items after its first.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// How often the size limit is checked after writes.
pub const SIZE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One thing to store.
#[derive(Clone, Debug)]
// Items are queued one by one and moved straight into the batch; boxing
// the issuance would only add an allocation per record.
#[allow(clippy::large_enum_variant)]
pub enum StoreItem {
    /// An event and its line, serialized once by the agent.
    Event(EventLine),
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
    /// Boxed: an event is several hundred bytes, and the queue's blocks
    /// hold 31 messages each.
    Item(Box<StoreItem>),
    /// Write everything queued before, then answer.
    Flush(SyncSender<()>),
    /// Something is on the reliable queue.
    Wake,
    Close,
}

impl StoreItem {
    /// Alerts and records are never dropped; events may be.
    fn reliable(&self) -> bool {
        !matches!(self, StoreItem::Event(_))
    }
}

#[derive(Default)]
struct Stats {
    /// Events in the queue (at most the queue's capacity).
    events_queued: AtomicUsize,
    /// A `Wake` is in the queue, not yet taken: one is enough for any
    /// number of reliable items (the queue is unbounded).
    wake_pending: std::sync::atomic::AtomicBool,
    dropped: AtomicU64,
    queued: AtomicUsize,
    written: AtomicU64,
    failed: AtomicU64,
    retention_events: AtomicU64,
    retention_alerts: AtomicU64,
    /// The error of the last failed write while writes fail (none once a
    /// write succeeds again).
    error: std::sync::Mutex<Option<String>>,
    /// Runs of the size limit on write (not the periodic retention).
    size_enforced: AtomicU64,
    /// Shutting down: queued events are dropped (counted), not written;
    /// reliable items still are.
    shedding: std::sync::atomic::AtomicBool,
}

/// A handle that queues items for the writer; cheap to clone (one per
/// task that stores things).
///
/// The queue is an unbounded channel, its bound enforced by counting the
/// events in it: a bounded one (`sync_channel`) allocates and touches all
/// its slots up front, 1.5 MiB resident for 65,536 of them whether they are
/// ever used or not, where this one takes memory as it fills and gives it
/// back as the writer drains it.
#[derive(Clone)]
pub struct StoreSender {
    tx: Sender<Msg>,
    /// Most events queued at once.
    capacity: usize,
    /// Alerts and records: never dropped, written before queued events.
    reliable: Arc<std::sync::Mutex<std::collections::VecDeque<StoreItem>>>,
    stats: Arc<Stats>,
}

impl StoreSender {
    /// Queues an item without ever blocking. An event is dropped (`false`,
    /// and one more drop counted) when the queue is full or the writer is
    /// gone; an alert, issuance, revocation or offset always queues.
    pub fn send(&self, item: StoreItem) -> bool {
        if item.reliable() {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            self.reliable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(item);
            if !self.stats.wake_pending.swap(true, Ordering::SeqCst)
                && self.tx.send(Msg::Wake).is_err()
            {
                // The writer is gone: nobody will write it.
                let mut q = self.reliable.lock().unwrap_or_else(|e| e.into_inner());
                let n = q.len();
                q.clear();
                self.stats.queued.fetch_sub(n, Ordering::Relaxed);
                self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
                return false;
            }
            return true;
        }
        // Count before sending: the writer may take it (and decrement) at
        // once.
        let full = self.stats.events_queued.fetch_add(1, Ordering::Relaxed) >= self.capacity;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if full || self.tx.send(Msg::Item(Box::new(item))).is_err() {
            self.stats.events_queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
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

    /// From now on, queued and new events are dropped (and counted)
    /// instead of written: a shutdown under load does not wait for a
    /// backlog of events. Alerts and records are still written.
    pub fn shed_events(&self) {
        self.stats.shedding.store(true, Ordering::Relaxed);
    }

    /// How often the size limit was enforced on write.
    pub fn size_enforced(&self) -> u64 {
        self.stats.size_enforced.load(Ordering::Relaxed)
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
        let (tx, rx) = mpsc::channel::<Msg>();
        let stats = Arc::new(Stats::default());
        let reliable = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let thread_stats = stats.clone();
        let thread_reliable = reliable.clone();
        let handle = std::thread::Builder::new()
            .name("monitor-store".into())
            .spawn(move || run(store, rx, thread_reliable, thread_stats, retention))
            .expect("spawning the store writer thread");
        StoreWriter {
            sender: StoreSender {
                tx,
                capacity: capacity.max(1),
                reliable,
                stats,
            },
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

type Reliable = Arc<std::sync::Mutex<std::collections::VecDeque<StoreItem>>>;

/// Moves what is on the reliable queue into the batch (all of it: it is
/// never dropped, and a batch over [`BATCH_MAX`] is only a longer
/// transaction).
fn take_reliable(reliable: &Reliable, batch: &mut Vec<StoreItem>, stats: &Stats) {
    let mut q = reliable.lock().unwrap_or_else(|e| e.into_inner());
    let n = q.len();
    if n > 0 {
        stats.queued.fetch_sub(n, Ordering::Relaxed);
        batch.extend(q.drain(..));
    }
}

fn run(
    mut store: Store,
    rx: mpsc::Receiver<Msg>,
    reliable: Reliable,
    stats: Arc<Stats>,
    retention: Option<RetentionPolicy>,
) {
    let mut next_retention = retention.as_ref().map(|_| Instant::now());
    let max_bytes = retention.as_ref().and_then(|r| r.max_bytes);
    let mut next_size_check = Instant::now();
    let mut batch: Vec<StoreItem> = Vec::with_capacity(BATCH_MAX);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    let mut closing = false;
    let mut last_log: Option<Instant> = None;
    while !closing {
        take_reliable(&reliable, &mut batch, &stats);
        // Wait for the first message, or until retention is due (not at
        // all when reliable items are waiting).
        let first = if !batch.is_empty() {
            match rx.try_recv() {
                Ok(m) => Ok(m),
                Err(mpsc::TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
                Err(mpsc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            }
        } else {
            match next_retention {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    rx.recv_timeout(wait)
                }
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            }
        };
        match first {
            Ok(m) => {
                let deadline = Instant::now() + BATCH_WINDOW;
                let mut msg = Some(m);
                while let Some(m) = msg.take() {
                    match m {
                        Msg::Item(i) => {
                            stats.queued.fetch_sub(1, Ordering::Relaxed);
                            if !i.reliable() {
                                stats.events_queued.fetch_sub(1, Ordering::Relaxed);
                            }
                            if stats.shedding.load(Ordering::Relaxed) && !i.reliable() {
                                stats.dropped.fetch_add(1, Ordering::Relaxed);
                            } else {
                                batch.push(*i);
                            }
                        }
                        Msg::Flush(ack) => {
                            acks.push(ack);
                            break;
                        }
                        Msg::Wake => {
                            stats.wake_pending.store(false, Ordering::SeqCst);
                            take_reliable(&reliable, &mut batch, &stats);
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
        // Whatever was queued reliably before a flush or the close.
        take_reliable(&reliable, &mut batch, &stats);
        let wrote = !batch.is_empty();
        write(&mut store, &mut batch, &stats, &mut last_log);
        if let (Some(max), true) = (max_bytes, wrote) {
            if Instant::now() >= next_size_check {
                next_size_check = Instant::now() + SIZE_CHECK_EVERY;
                match store.used_bytes() {
                    Ok(used) if used > max => match store.retention(None, Some(max)) {
                        Ok((e, a)) => {
                            stats.size_enforced.fetch_add(1, Ordering::Relaxed);
                            stats.retention_events.fetch_add(e, Ordering::Relaxed);
                            stats.retention_alerts.fetch_add(a, Ordering::Relaxed);
                            tracing::warn!(
                                "store over its size limit ({used} > {max} bytes): \
                                 deleted the oldest {e} events, {a} alerts"
                            );
                        }
                        Err(e) => tracing::warn!("store size limit: {e:#}"),
                    },
                    Ok(_) => {}
                    Err(e) => tracing::warn!("store size: {e:#}"),
                }
            }
        }
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
                            tracing::info!("store retention: deleted {e} events, {a} alerts");
                        }
                    }
                    Err(e) => tracing::warn!("store retention: {e:#}"),
                }
                next_retention = Some(Instant::now() + policy.every);
            }
        }
    }
    // Gone: a sender's next reliable item finds the queue closed (and
    // counts it dropped) instead of waiting for a `Wake` nobody takes.
    stats.wake_pending.store(false, Ordering::SeqCst);
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
    // Debug: a span a batch written (on the writer's thread).
    let _span = tracing::debug_span!("store", items = n).entered();
    let mut error = stats.error.lock().unwrap_or_else(|e| e.into_inner());
    match store.write_items(batch) {
        Ok(()) => {
            stats.written.fetch_add(n, Ordering::Relaxed);
            if error.take().is_some() {
                tracing::warn!(
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
                tracing::warn!(
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

/// Alerts to the store (never dropped: see [`StoreSender::send`]).
impl crate::output::AlertSink for StoreWriter {
    fn sink_name(&self) -> String {
        "store".into()
    }
    fn send_alerts(&mut self, alerts: &[Alert]) -> anyhow::Result<()> {
        for a in alerts {
            self.send(StoreItem::Alert(a.clone()));
        }
        Ok(())
    }
}
