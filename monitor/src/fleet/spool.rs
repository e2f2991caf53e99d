//! The fleet's disk spool: messages NATS could not take (unreachable, no
//! ack in time) wait here, in order, and are delivered later with their
//! original message id (so a message that did reach the stream before its
//! ack was lost is deduplicated by JetStream). Bounded: past `max_bytes`
//! new messages are dropped and counted, never blocking the agent.
//!
//! Layout: segment files `<seq>.jsonl` (one message a line, rolled at
//! [`SEGMENT_BYTES`]) and `cursor` (`<seq> <offset>`: delivered up to
//! there). Messages hold what alerts and events serialize: never plaintext.
use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A segment is closed past this many bytes.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// One message for a JetStream subject.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outgoing {
    #[serde(rename = "s")]
    pub subject: String,
    /// `Nats-Msg-Id`.
    #[serde(rename = "i")]
    pub id: String,
    /// JSON text (an alert, an event, a record).
    #[serde(rename = "p")]
    pub payload: String,
}

impl Outgoing {
    /// A message of node `node` on `monitor.<node>.<kind>`, its
    /// `Nats-Msg-Id` derived from its content (`<node>.<kind>.<hash>`): a
    /// retry of the same payload is deduplicated by JetStream.
    pub fn of(node: &str, kind: &str, payload: String) -> Self {
        let h = blake3::hash(payload.as_bytes());
        Outgoing {
            subject: format!("monitor.{node}.{kind}"),
            id: format!("{node}.{kind}.{}", &h.to_hex()[..32]),
            payload,
        }
    }

    /// Alerts, events or records the message carries: one JSON object a
    /// line (an alert or a record is one; a pack of events, its events).
    pub fn items(&self) -> u64 {
        self.payload.bytes().filter(|&b| b == b'\n').count() as u64 + 1
    }
}

/// Where the reader stands: segment and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub seq: u64,
    pub off: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// seq -> bytes of each segment on disk.
    segments: BTreeMap<u64, u64>,
    writer: Option<(u64, File)>,
    cursor: Pos,
    /// Messages waiting (after the cursor).
    pending: u64,
    /// What the messages dropped because the spool was full carried
    /// ([`Outgoing::items`]: a pack of events counts its events).
    pub dropped: u64,
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("fleet spool {}", dir.display()))?;
        let mut segments = BTreeMap::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(seq) = name
                .strip_suffix(".jsonl")
                .and_then(|s| s.parse::<u64>().ok())
            {
                segments.insert(seq, e.metadata()?.len());
            }
        }
        let cursor = std::fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (a, b) = t.trim().split_once(' ')?;
                Some(Pos {
                    seq: a.parse().ok()?,
                    off: b.parse().ok()?,
                })
            })
            .unwrap_or_default();
        let mut s = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segments,
            writer: None,
            cursor,
            pending: 0,
            dropped: 0,
        };
        // Segments wholly before the cursor were delivered.
        let old: Vec<u64> = s.segments.range(..cursor.seq).map(|(k, _)| *k).collect();
        for seq in old {
            s.remove_segment(seq);
        }
        s.pending = s.count_pending()?;
        Ok(s)
    }

    fn seg_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.jsonl"))
    }

    fn remove_segment(&mut self, seq: u64) {
        let _ = std::fs::remove_file(self.seg_path(seq));
        self.segments.remove(&seq);
        if self.writer.as_ref().is_some_and(|(s, _)| *s == seq) {
            self.writer = None;
        }
    }

    fn count_pending(&self) -> Result<u64> {
        let mut n = 0;
        for (&seq, _) in self.segments.range(self.cursor.seq..) {
            let mut r = BufReader::new(File::open(self.seg_path(seq))?);
            if seq == self.cursor.seq {
                r.seek(SeekFrom::Start(self.cursor.off))?;
            }
            n += r.split(b'\n').count() as u64;
        }
        Ok(n)
    }

    pub fn bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Append messages; those past the bound are dropped (counted).
    pub fn append(&mut self, msgs: &[Outgoing]) -> Result<()> {
        let mut bytes = self.bytes();
        for m in msgs {
            let mut line = serde_json::to_vec(m)?;
            line.push(b'\n');
            if bytes + line.len() as u64 > self.max_bytes {
                self.dropped += m.items();
                continue;
            }
            let roll = match &self.writer {
                None => true,
                Some((seq, _)) => self.segments.get(seq).copied().unwrap_or(0) >= SEGMENT_BYTES,
            };
            if roll {
                let seq = self
                    .segments
                    .keys()
                    .next_back()
                    .map_or(self.cursor.seq.max(1), |s| s + 1);
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.seg_path(seq))
                    .with_context(|| format!("fleet spool segment {seq}"))?;
                self.segments.insert(seq, 0);
                self.writer = Some((seq, f));
            }
            let (seq, f) = self.writer.as_mut().expect("opened above");
            f.write_all(&line)
                .with_context(|| format!("writing fleet spool {}", self.dir.display()))?;
            *self.segments.get_mut(seq).expect("segment") += line.len() as u64;
            bytes += line.len() as u64;
            self.pending += 1;
        }
        if let Some((_, f)) = self.writer.as_mut() {
            f.flush()?;
        }
        Ok(())
    }

    /// Up to `n` messages after the cursor, and the position after them.
    pub fn peek(&self, n: usize) -> Result<(Vec<Outgoing>, Pos)> {
        let mut out = Vec::new();
        let mut pos = self.cursor;
        for (&seq, _) in self.segments.range(self.cursor.seq..) {
            let mut r = BufReader::new(File::open(self.seg_path(seq))?);
            let mut off = if seq == self.cursor.seq {
                self.cursor.off
            } else {
                0
            };
            r.seek(SeekFrom::Start(off))?;
            let mut line = Vec::new();
            loop {
                if out.len() >= n {
                    return Ok((out, pos));
                }
                line.clear();
                let k = r.read_until(b'\n', &mut line)?;
                if k == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                off += k as u64;
                pos = Pos { seq, off };
                match serde_json::from_slice::<Outgoing>(&line) {
                    Ok(m) => out.push(m),
                    Err(e) => tracing::warn!("fleet spool: a corrupt line skipped: {e}"),
                }
            }
        }
        Ok((out, pos))
    }

    /// Messages up to `pos` were delivered (`n` of them).
    pub fn commit(&mut self, pos: Pos, n: u64) -> Result<()> {
        self.cursor = pos;
        self.pending = self.pending.saturating_sub(n);
        let tmp = self.dir.join("cursor.tmp");
        std::fs::write(&tmp, format!("{} {}\n", pos.seq, pos.off))?;
        std::fs::rename(&tmp, self.dir.join("cursor"))?;
        // Segments wholly delivered go; the last one when it is drained.
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(s, len)| **s < pos.seq || (**s == pos.seq && pos.off >= **len))
            .map(|(s, _)| *s)
            .collect();
        for seq in done {
            self.remove_segment(seq);
        }
        if self.segments.is_empty() {
            // Start over at the next sequence number.
            self.cursor = Pos {
                seq: pos.seq + 1,
                off: 0,
            };
            std::fs::write(&tmp, format!("{} 0\n", pos.seq + 1))?;
            std::fs::rename(&tmp, self.dir.join("cursor"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn msg(i: u32) -> Outgoing {
        Outgoing {
            subject: "monitor.a.alerts".into(),
            id: format!("a.{i}"),
            payload: format!("{{\"n\":{i}}}"),
        }
    }

    #[test]
    fn messages_come_back_in_order_across_reopen_and_commits() {
        let tmp = TempDir::new("spool-order");
        let d = tmp.join("spool");
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        s.append(&(0..10).map(msg).collect::<Vec<_>>()).unwrap();
        assert_eq!(s.pending(), 10);
        let (got, pos) = s.peek(4).unwrap();
        assert_eq!(got, (0..4).map(msg).collect::<Vec<_>>());
        s.commit(pos, 4).unwrap();
        drop(s);
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(s.pending(), 6);
        let (got, pos) = s.peek(100).unwrap();
        assert_eq!(got, (4..10).map(msg).collect::<Vec<_>>());
        s.commit(pos, 6).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0, "delivered segments are removed");
        s.append(&[msg(10)]).unwrap();
        let (got, _) = s.peek(100).unwrap();
        assert_eq!(got, vec![msg(10)]);
        drop(s);
        let s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(s.peek(100).unwrap().0, vec![msg(10)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn past_the_bound_messages_are_dropped_and_counted() {
        let tmp = TempDir::new("spool-bound");
        let d = tmp.join("spool");
        let one = serde_json::to_vec(&msg(0)).unwrap().len() as u64 + 1;
        let mut s = Spool::open(&d, one * 3).unwrap();
        s.append(&(0..5).map(msg).collect::<Vec<_>>()).unwrap();
        assert_eq!(s.pending(), 3);
        assert_eq!(s.dropped, 2);
        assert!(s.bytes() <= one * 3);
        // A dropped pack counts the events it carried.
        let pack = Outgoing {
            payload: "{\"n\":1}\n{\"n\":2}\n{\"n\":3}".into(),
            ..msg(9)
        };
        s.append(&[pack]).unwrap();
        assert_eq!(s.dropped, 5);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn segments_roll_and_drained_ones_are_removed() {
        let tmp = TempDir::new("spool-roll");
        let d = tmp.join("spool");
        let mut s = Spool::open(&d, 64 << 20).unwrap();
        let big = "x".repeat(100_000);
        let msgs: Vec<Outgoing> = (0..100)
            .map(|i| Outgoing {
                payload: format!("{{\"b\":\"{big}\",\"n\":{i}}}"),
                ..msg(i)
            })
            .collect();
        s.append(&msgs).unwrap();
        assert!(s.segments.len() >= 3, "{} segments", s.segments.len());
        let (got, pos) = s.peek(60).unwrap();
        assert_eq!(got.len(), 60);
        s.commit(pos, 60).unwrap();
        assert!(s.segments.len() < 3);
        let (got, pos) = s.peek(1000).unwrap();
        assert_eq!(got, msgs[60..].to_vec());
        s.commit(pos, 40).unwrap();
        assert_eq!(
            std::fs::read_dir(&d)
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".jsonl"))
                .count(),
            0
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
