//! Large writes joined back together. A tracked process's write longer than
//! `capture_bytes` reaches the ring as a head record (`DATA_MORE`) followed
//! by chunk records (`DATA_CHUNK`, each with its `chunk_off`) from the same
//! thread and the same program run (same header timestamp). They are joined
//! here into the one [`RawEvent::Write`] the syscall was, before anything
//! downstream sees them: one event, one scan over the whole capture.
//!
//! A write whose chunks stop early (budget spent, ring full, a fault) is
//! released as it is, marked truncated, when the thread's next record
//! arrives or [`MAX_WAIT`] after its head; a chunk without its head is
//! dropped and counted.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use monitor_common::{DataEvent, DATA_CHUNK, DATA_MORE, DATA_TRUNCATED, MAX_WRITE_CAPTURE};
use zeroize::Zeroize;

use super::decode::{Captured, RawEvent};

/// Longest a head waits for its chunks (they are written by the same
/// program run, microseconds apart; this only bounds a run cut short).
pub const MAX_WAIT: Duration = Duration::from_millis(200);

/// Writes waiting for chunks are few (one per thread in a large write);
/// more than this releases the oldest.
const MAX_PENDING: usize = 1024;

struct Pending {
    e: DataEvent,
    data: Vec<u8>,
    path: Option<String>,
    since: Instant,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

impl Pending {
    /// The joined write; truncated unless every asked byte was captured.
    fn release(mut self) -> RawEvent {
        let mut e = self.e;
        e.flags &= !(DATA_MORE | DATA_CHUNK);
        if (self.data.len() as u64) < e.count {
            e.flags |= DATA_TRUNCATED;
        } else {
            e.flags &= !DATA_TRUNCATED;
        }
        e.data_len = self.data.len() as u32;
        let data = Captured::new(&self.data);
        RawEvent::Write(e, data, self.path.take())
    }
}

#[derive(Default)]
pub struct Reassembly {
    /// By thread id.
    pending: HashMap<u32, Pending>,
    /// Chunk records that found no head (their head was lost or released).
    pub orphan_chunks: u64,
}

impl Reassembly {
    /// Take one decoded record; what is complete goes to `out`, in order.
    pub fn push(&mut self, ev: RawEvent, now: Instant, out: &mut Vec<RawEvent>) {
        let tid = ev.header().tid;
        match ev {
            RawEvent::Write(e, data, _) if e.flags & DATA_CHUNK != 0 => {
                let fits = self.pending.get(&tid).is_some_and(|p| {
                    p.e.hdr.ts_ns == e.hdr.ts_ns
                        && p.e.fd == e.fd
                        && p.data.len() as u64 == e.chunk_off as u64
                });
                if !fits {
                    self.orphan_chunks += 1;
                    if let Some(p) = self.pending.remove(&tid) {
                        out.push(p.release());
                    }
                    return;
                }
                let p = self.pending.get_mut(&tid).expect("checked");
                p.data.extend_from_slice(data.bytes());
                if e.flags & DATA_MORE == 0 {
                    let p = self.pending.remove(&tid).expect("checked");
                    out.push(p.release());
                }
            }
            RawEvent::Write(e, data, path) if e.flags & DATA_MORE != 0 => {
                if let Some(p) = self.pending.remove(&tid) {
                    out.push(p.release());
                }
                if self.pending.len() >= MAX_PENDING {
                    self.release_oldest(out);
                }
                // Room for the whole capture up front: it never grows, so
                // no reallocation leaves captured bytes behind unzeroed.
                let room = e.count.min(u64::from(MAX_WRITE_CAPTURE)) as usize;
                let mut buf = Vec::with_capacity(room.max(data.len()));
                buf.extend_from_slice(data.bytes());
                self.pending.insert(
                    tid,
                    Pending {
                        e,
                        data: buf,
                        path,
                        since: now,
                    },
                );
            }
            other => {
                if let Some(p) = self.pending.remove(&tid) {
                    out.push(p.release());
                }
                out.push(other);
            }
        }
    }

    /// Release the writes that waited [`MAX_WAIT`] for chunks.
    pub fn release_stale(&mut self, now: Instant, out: &mut Vec<RawEvent>) {
        let stale: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= MAX_WAIT)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in stale {
            if let Some(p) = self.pending.remove(&tid) {
                out.push(p.release());
            }
        }
    }

    /// Release everything (at shutdown).
    pub fn release_all(&mut self, out: &mut Vec<RawEvent>) {
        out.extend(self.pending.drain().map(|(_, p)| p.release()));
    }

    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    fn release_oldest(&mut self, out: &mut Vec<RawEvent>) {
        if let Some(tid) = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.since)
            .map(|(tid, _)| *tid)
        {
            if let Some(p) = self.pending.remove(&tid) {
                out.push(p.release());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::{EventHeader, EventKind, FileInfo, SockAddr, DATA_TRACKED};

    use super::*;

    fn rec(tid: u32, ts: u64, flags: u32, count: u64, off: u32, bytes: &[u8]) -> RawEvent {
        let hdr = EventHeader {
            ts_ns: ts,
            cgroup_id: 0,
            kind: EventKind::Write as u32,
            pid: 7,
            tid,
            uid: 0,
            gid: 0,
            hook: 0,
            flags: 0,
            _pad: 0,
            comm: [0; 16],
        };
        let e = DataEvent {
            hdr,
            file: FileInfo::default(),
            peer: SockAddr::default(),
            fd: 3,
            flags: DATA_TRACKED | flags,
            count,
            data_len: bytes.len() as u32,
            watch_id: 0,
            path_len: 0,
            chunk_off: off,
        };
        RawEvent::Write(e, Captured::new(bytes), None)
    }

    fn write_of(ev: &RawEvent) -> (&DataEvent, &[u8]) {
        match ev {
            RawEvent::Write(e, d, _) => (e, d.bytes()),
            other => panic!("not a write: {other:?}"),
        }
    }

    #[test]
    fn head_and_chunks_become_one_whole_write() {
        let mut r = Reassembly::default();
        let now = Instant::now();
        let mut out = Vec::new();
        r.push(
            rec(1, 10, DATA_MORE | DATA_TRUNCATED, 10, 0, b"abcd"),
            now,
            &mut out,
        );
        // Another thread's record in between passes through.
        r.push(rec(2, 11, 0, 2, 0, b"zz"), now, &mut out);
        r.push(
            rec(1, 10, DATA_CHUNK | DATA_MORE, 10, 4, b"efgh"),
            now,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        r.push(rec(1, 10, DATA_CHUNK, 10, 8, b"ij"), now, &mut out);
        assert_eq!(out.len(), 2);
        let (e, d) = write_of(&out[1]);
        assert_eq!(d, b"abcdefghij");
        assert_eq!(e.data_len, 10);
        assert_eq!(e.flags & (DATA_MORE | DATA_CHUNK | DATA_TRUNCATED), 0);
        assert_eq!(r.waiting(), 0);
        assert_eq!(r.orphan_chunks, 0);
    }

    #[test]
    fn a_write_cut_short_is_released_truncated() {
        let mut r = Reassembly::default();
        let now = Instant::now();
        let mut out = Vec::new();
        r.push(rec(1, 10, DATA_MORE, 100, 0, b"abcd"), now, &mut out);
        r.push(
            rec(1, 10, DATA_CHUNK | DATA_MORE, 100, 4, b"efgh"),
            now,
            &mut out,
        );
        // The thread's next syscall: the write is released first.
        r.push(rec(1, 20, 0, 1, 0, b"x"), now, &mut out);
        assert_eq!(out.len(), 2);
        let (e, d) = write_of(&out[0]);
        assert_eq!(d, b"abcdefgh");
        assert_ne!(e.flags & DATA_TRUNCATED, 0);
        // Or after MAX_WAIT with nothing else from the thread.
        r.push(rec(3, 30, DATA_MORE, 100, 0, b"abcd"), now, &mut out);
        r.release_stale(now + MAX_WAIT / 2, &mut out);
        assert_eq!(out.len(), 2);
        r.release_stale(now + MAX_WAIT, &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn chunks_without_their_head_or_out_of_place_are_dropped_and_counted() {
        let mut r = Reassembly::default();
        let now = Instant::now();
        let mut out = Vec::new();
        r.push(rec(1, 10, DATA_CHUNK, 10, 4, b"efgh"), now, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.orphan_chunks, 1);
        // A gap (chunk at 8 after 4 bytes): the head goes out as it is.
        r.push(rec(1, 11, DATA_MORE, 12, 0, b"abcd"), now, &mut out);
        r.push(rec(1, 11, DATA_CHUNK, 12, 8, b"ijkl"), now, &mut out);
        assert_eq!(r.orphan_chunks, 2);
        let (e, d) = write_of(&out[0]);
        assert_eq!(d, b"abcd");
        assert_ne!(e.flags & DATA_TRUNCATED, 0);
        // Another write's chunk (other timestamp) does not join.
        r.push(rec(1, 12, DATA_MORE, 12, 0, b"abcd"), now, &mut out);
        r.push(rec(1, 13, DATA_CHUNK, 12, 4, b"efgh"), now, &mut out);
        assert_eq!(r.orphan_chunks, 3);
        assert_eq!(r.waiting(), 0);
    }
}
