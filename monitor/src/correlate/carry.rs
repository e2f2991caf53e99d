//! Carry-over per descriptor: a secret split across consecutive writes or
//! sends on one `(pid, fd)` (an HTTP client writing a header in pieces, a
//! process writing byte by byte) is found by scanning the last bytes of the
//! previous capture together with the next one.
//!
//! Only the last `longest fingerprinted form - 1` bytes are kept (no whole
//! secret ever sits in a tail), in a bounded LRU; every tail is zeroed when
//! it is replaced, evicted, expires or its descriptor closes.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use zeroize::Zeroizing;

/// Descriptors with a tail kept at most (least recently written evicted).
pub const MAX_TAILS: usize = 4096;
/// A tail older than this is dropped: two writes further apart on one
/// descriptor are scanned alone.
pub const TAIL_TTL: Duration = Duration::from_secs(60);

struct Tail {
    bytes: Zeroizing<Vec<u8>>,
    last: Instant,
    /// The descriptor's inode: a reused fd number does not join.
    ino: u64,
}

#[derive(Default)]
pub struct CarryOver {
    tails: HashMap<(u32, i32), Tail>,
}

impl CarryOver {
    /// The buffer to scan for the write `data` on `(pid, fd)` (the previous
    /// tail followed by `data`) and the length of the tail in front, which
    /// is 0 when there is none. Keeps the new tail: the last `keep` bytes.
    /// `whole` is false when `data` is only the first part of the write (a
    /// truncated capture): the next write does not follow it, so no tail is
    /// kept.
    pub fn join(
        &mut self,
        (pid, fd, ino): (u32, i32, u64),
        data: &[u8],
        keep: usize,
        whole: bool,
    ) -> (Zeroizing<Vec<u8>>, usize) {
        let now = Instant::now();
        let prev = self.tails.remove(&(pid, fd));
        let mut buf = Zeroizing::new(Vec::new());
        let mut head = 0;
        if let Some(t) = prev {
            if t.ino == ino && now.duration_since(t.last) < TAIL_TTL {
                head = t.bytes.len();
                buf.reserve(head + data.len());
                buf.extend_from_slice(&t.bytes);
            }
            // `t` dropped here: zeroed.
        }
        buf.extend_from_slice(data);
        if keep > 0 && whole {
            let from = buf.len().saturating_sub(keep);
            let tail = Zeroizing::new(buf[from..].to_vec());
            if self.tails.len() >= MAX_TAILS {
                self.evict_oldest();
            }
            self.tails.insert(
                (pid, fd),
                Tail {
                    bytes: tail,
                    last: now,
                    ino,
                },
            );
        }
        (buf, head)
    }

    /// The descriptor closed (or was reused): forget its tail.
    pub fn forget(&mut self, pid: u32, fd: i32) {
        self.tails.remove(&(pid, fd));
    }

    /// The process exited: forget every tail of it.
    pub fn forget_pid(&mut self, pid: u32) {
        self.tails.retain(|(p, _), _| *p != pid);
    }

    /// Drop expired tails (periodic).
    pub fn expire(&mut self) {
        let now = Instant::now();
        self.tails
            .retain(|_, t| now.duration_since(t.last) < TAIL_TTL);
    }

    pub fn len(&self) -> usize {
        self.tails.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tails.is_empty()
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self
            .tails
            .iter()
            .min_by_key(|(_, t)| t.last)
            .map(|(k, _)| *k)
        {
            self.tails.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_join_the_next_write_and_stay_bounded() {
        let mut c = CarryOver::default();
        let (b, head) = c.join((1, 3, 9), b"hello wo", 4, true);
        assert_eq!((&b[..], head), (&b"hello wo"[..], 0));
        let (b, head) = c.join((1, 3, 9), b"rld", 4, true);
        assert_eq!((&b[..], head), (&b"o world"[..], 4));
        // Another descriptor has its own tail.
        let (b, head) = c.join((1, 4, 9), b"x", 4, true);
        assert_eq!((&b[..], head), (&b"x"[..], 0));
        // The fd number reused for another file: not joined.
        let (b, head) = c.join((1, 3, 10), b"!", 4, true);
        assert_eq!((&b[..], head), (&b"!"[..], 0));
        // A truncated capture keeps no tail.
        c.join((1, 3, 10), b"abcdef", 4, false);
        let (b, head) = c.join((1, 3, 10), b"g", 4, true);
        assert_eq!((&b[..], head), (&b"g"[..], 0));
        c.forget(1, 3);
        c.forget_pid(1);
        assert!(c.is_empty());
        for fd in 0..(MAX_TAILS as i32 + 10) {
            c.join((2, fd, 1), b"abc", 2, true);
        }
        assert_eq!(c.len(), MAX_TAILS);
    }

    #[test]
    fn byte_at_a_time_keeps_the_last_keep_bytes() {
        let mut c = CarryOver::default();
        let mut last = Vec::new();
        for &b in b"0123456789" {
            let (buf, _) = c.join((7, 1, 1), &[b], 5, true);
            last = buf.to_vec();
        }
        assert_eq!(last, b"456789");
    }
}
