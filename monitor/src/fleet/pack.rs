//! Events travel packed: one JetStream message on `monitor.<node>.events`
//! carries up to [`MAX_EVENTS`] events (or [`MAX_BYTES`] of them), one JSON
//! object a line. JetStream's cost is per message (each one replicated to
//! three servers and acknowledged), so a message per event capped what an
//! agent could publish far below what it observes.
//!
//! A pack is made once, on the agent side, before the link's queue and the
//! spool: its `Nats-Msg-Id` is derived from its content, and a retry (after
//! a lost ack, from the spool, after a restart) sends the very same pack
//! with the same id, so JetStream still deduplicates it. Alerts are not
//! packed (one a message, sent at once).
use std::time::{Duration, Instant};

use super::spool::Outgoing;

/// Most events in one message.
pub const MAX_EVENTS: usize = 256;
/// A pack is closed before its payload passes this many bytes (an event
/// alone larger than this still goes, alone).
pub const MAX_BYTES: usize = 64 << 10;
/// A pack that is not full is sent once its first event is this old.
pub const MAX_AGE: Duration = Duration::from_millis(50);

/// Events of one node waiting to be packed into one message.
pub struct EventPack {
    node: String,
    payload: String,
    count: usize,
    since: Option<Instant>,
}

impl EventPack {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            payload: String::new(),
            count: 0,
            since: None,
        }
    }

    /// Add one event (a JSON object on one line, with its `node` field);
    /// returns the pack it closed, if any (full by count or size).
    pub fn push(&mut self, line: &str) -> Option<Outgoing> {
        let line = line.trim_end_matches('\n');
        let mut out = None;
        if self.count > 0 && self.payload.len() + 1 + line.len() > MAX_BYTES {
            out = self.take();
        }
        if self.count > 0 {
            self.payload.push('\n');
        } else {
            self.since = Some(Instant::now());
        }
        self.payload.push_str(line);
        self.count += 1;
        if self.count >= MAX_EVENTS || self.payload.len() >= MAX_BYTES {
            // Only one can be closed per push: a pack closed above for size
            // holds the earlier events, this one starts with `line`.
            if out.is_none() {
                out = self.take();
            }
        }
        out
    }

    /// Whether a pack waits and its first event is older than [`MAX_AGE`].
    pub fn due(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= MAX_AGE)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pack (if any event waits), as a message: subject
    /// `monitor.<node>.events`, id `<node>.events.<content hash>`.
    pub fn take(&mut self) -> Option<Outgoing> {
        if self.count == 0 {
            return None;
        }
        let payload = std::mem::take(&mut self.payload);
        self.count = 0;
        self.since = None;
        Some(Outgoing::of(&self.node, "events", payload))
    }
}

/// The events of a `monitor.<node>.events` message (one JSON object a
/// line; a message of one event is that event's JSON, as before packing).
pub fn unpack(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .split(|&b| b == b'\n')
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize, pad: usize) -> String {
        format!(
            "{{\"node\":\"a\",\"id\":{i},\"p\":\"{}\"}}",
            "x".repeat(pad)
        )
    }

    #[test]
    fn a_pack_closes_at_the_count_and_unpacks_to_the_same_events() {
        let mut p = EventPack::new("a");
        let mut packs = Vec::new();
        for i in 0..600 {
            packs.extend(p.push(&ev(i, 3)));
        }
        assert_eq!(packs.len(), 2, "two full packs of {MAX_EVENTS}");
        assert!(!p.is_empty());
        packs.extend(p.take());
        assert!(p.is_empty() && p.take().is_none());
        let mut n = 0;
        for m in &packs {
            assert_eq!(m.subject, "monitor.a.events");
            assert!(m.id.starts_with("a.events."));
            for line in unpack(m.payload.as_bytes()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                assert_eq!(v["id"], n);
                n += 1;
            }
        }
        assert_eq!(n, 600);
        // Ids are the content's: distinct packs, distinct ids.
        assert_ne!(packs[0].id, packs[1].id);
    }

    #[test]
    fn a_pack_stays_under_its_byte_bound_and_a_large_event_goes_alone() {
        let mut p = EventPack::new("a");
        let mut packs = Vec::new();
        for i in 0..40 {
            packs.extend(p.push(&ev(i, 10_000)));
        }
        packs.extend(p.push(&ev(40, MAX_BYTES * 2)));
        packs.extend(p.push(&ev(41, 3)));
        packs.extend(p.take());
        let mut n = 0;
        for m in &packs {
            let lines: Vec<_> = unpack(m.payload.as_bytes()).collect();
            assert!(
                m.payload.len() <= MAX_BYTES || lines.len() == 1,
                "{} bytes in {} events",
                m.payload.len(),
                lines.len()
            );
            n += lines.len();
        }
        assert_eq!(n, 42);
        let big = packs
            .iter()
            .find(|m| m.payload.len() > MAX_BYTES)
            .expect("the large event");
        assert_eq!(unpack(big.payload.as_bytes()).count(), 1);
    }

    #[test]
    fn the_same_events_make_the_same_message_id() {
        let (mut a, mut b) = (EventPack::new("a"), EventPack::new("a"));
        for i in 0..5 {
            a.push(&ev(i, 1));
            b.push(&ev(i, 1));
        }
        let (a, b) = (a.take().unwrap(), b.take().unwrap());
        assert_eq!(a, b);
        let mut c = EventPack::new("a");
        c.push(&ev(0, 1));
        assert_ne!(c.take().unwrap().id, a.id);
    }

    #[test]
    fn a_pack_is_due_after_its_age() {
        let mut p = EventPack::new("a");
        assert!(!p.due());
        p.push(&ev(0, 1));
        assert!(!p.due());
        std::thread::sleep(MAX_AGE + Duration::from_millis(5));
        assert!(p.due());
    }
}
