//! Whole-write coverage: only the first `capture_bytes` of a write are
//! captured, so a file a tracked process wrote with writes larger than that
//! (`tar cf` of a secrets directory, a JSON dump of its config) is read and
//! scanned by the agent itself once the writes have stopped for
//! [`QUIET`]: every secret in it then raises `secret.copy.file`.
//!
//! Bounded: at most [`MAX_PENDING`] files wait, at most [`MAX_FILE_BYTES`]
//! of one file and [`BYTES_PER_TICK`] in all are read per tick; the buffers
//! are zeroed after use.
use std::{
    collections::HashMap,
    io::Read,
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

use zeroize::Zeroizing;

use super::fingerprint::{FingerprintSet, Match};
use crate::event::Event;

/// Writes stopped this long: the file is scanned.
pub const QUIET: Duration = Duration::from_millis(500);
/// Files waiting at most (the oldest is dropped, and counted).
pub const MAX_PENDING: usize = 1024;
/// Bytes of one file scanned at most (its first bytes).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Bytes read in all per tick (about a second): files beyond it wait.
pub const BYTES_PER_TICK: u64 = 128 << 20;
const CHUNK: usize = 1 << 20;

struct Pending {
    ino: u64,
    last: Instant,
    /// The last truncated write (who, when, which event).
    ev: Event,
}

#[derive(Default)]
pub struct FileScans {
    pending: HashMap<String, Pending>,
    /// Files dropped unscanned (queue full), skipped (replaced) so far.
    pub dropped: u64,
    /// Files scanned so far.
    pub scanned: u64,
}

impl FileScans {
    /// A tracked process wrote `path` (inode `ino`) beyond what was
    /// captured.
    pub fn note(&mut self, path: &str, ino: u64, ev: &Event) {
        if !self.pending.contains_key(path) && self.pending.len() >= MAX_PENDING {
            if let Some(k) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.last)
                .map(|(k, _)| k.clone())
            {
                self.pending.remove(&k);
                self.dropped += 1;
                tracing::warn!(
                    "file scan queue full ({MAX_PENDING}): {k} is not scanned ({} dropped so far)",
                    self.dropped
                );
            }
        }
        self.pending.insert(
            path.to_string(),
            Pending {
                ino,
                last: Instant::now(),
                ev: ev.clone(),
            },
        );
    }

    /// Scan the files whose writes stopped (all of them with `force`):
    /// each with the event of its last write and the matches found.
    pub fn run(&mut self, fp: &FingerprintSet, force: bool) -> Vec<(Event, Vec<Match>)> {
        let mut due: Vec<(String, Instant)> = self
            .pending
            .iter()
            .filter(|(_, p)| force || p.last.elapsed() >= QUIET)
            .map(|(k, p)| (k.clone(), p.last))
            .collect();
        due.sort_by_key(|(_, t)| *t);
        let mut budget = BYTES_PER_TICK;
        let mut out = Vec::new();
        for (path, _) in due {
            if budget == 0 {
                break;
            }
            let Some(p) = self.pending.remove(&path) else {
                continue;
            };
            let (matches, read) = scan_file(fp, &path, p.ino, budget.min(MAX_FILE_BYTES));
            budget = budget.saturating_sub(read);
            self.scanned += 1;
            if !matches.is_empty() {
                out.push((p.ev, matches));
            }
        }
        out
    }
}

/// Scan the regular file at `path` if it still is inode `ino`: its first
/// `limit` bytes, in chunks, each with the tail of the previous one.
/// Returns the matches and the bytes read.
fn scan_file(fp: &FingerprintSet, path: &str, ino: u64, limit: u64) -> (Vec<Match>, u64) {
    let mut found = Vec::new();
    let Ok(f) = std::fs::File::open(path) else {
        return (found, 0);
    };
    match f.metadata() {
        // Regular files only: a FIFO would block the agent.
        Ok(m) if m.is_file() && m.ino() == ino => {}
        _ => return (found, 0),
    }
    let keep = fp.longest_form().saturating_sub(1);
    let mut reader = f.take(limit);
    let mut buf = Zeroizing::new(vec![0u8; keep + CHUNK]);
    let mut have = 0usize;
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf[have..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        let head = have;
        let end = have + n;
        for m in fp.scan(&buf[..end]) {
            if m.offset + m.len > head && !found.iter().any(|x: &Match| x.secret == m.secret) {
                found.push(m);
            }
        }
        // Keep the last `keep` bytes in front for the next chunk.
        let from = end.saturating_sub(keep);
        buf.copy_within(from..end, 0);
        have = end - from;
        buf[have..].iter_mut().for_each(|b| *b = 0);
    }
    (found, total)
}
