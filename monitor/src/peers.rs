//! Per-peer connection slots, shared by the API server (a peer is the
//! connecting process) and the metrics server (a peer is the remote IP
//! address): one peer holding many slow connections cannot take every slot
//! of a server's global cap.
//!
//! [`PeerSlots::try_take`] hands out a [`PeerSlot`] while the peer holds
//! fewer than the cap; dropping the slot gives it back (and forgets the
//! peer when it holds none), so the map holds only peers with a live
//! connection and is bounded by the server's global cap.
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
};

/// Connections each peer holds, at most `max` each.
#[derive(Debug)]
pub struct PeerSlots<K: Eq + Hash> {
    max: usize,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One connection's slot; given back on drop.
#[derive(Debug)]
pub struct PeerSlot<K: Eq + Hash> {
    peer: Option<K>,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

fn lock<K>(m: &Mutex<HashMap<K, usize>>) -> MutexGuard<'_, HashMap<K, usize>> {
    // A panic while holding the lock leaves the counts whole (each change
    // is one statement).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Eq + Hash + Clone> PeerSlots<K> {
    /// At most `max` connections per peer.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The per-peer cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `peer`, or None if it already holds `max`.
    pub fn try_take(&self, peer: K) -> Option<PeerSlot<K>> {
        let mut held = lock(&self.held);
        let n = held.entry(peer.clone()).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                held.remove(&peer); // max 0: nothing is ever held
            }
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peer: Some(peer),
            held: self.held.clone(),
        })
    }

    /// Slots `peer` holds now.
    pub fn held(&self, peer: &K) -> usize {
        lock(&self.held).get(peer).copied().unwrap_or(0)
    }

    /// Peers holding at least one slot.
    pub fn peers(&self) -> usize {
        lock(&self.held).len()
    }
}

impl<K: Eq + Hash> Drop for PeerSlot<K> {
    fn drop(&mut self) {
        let Some(peer) = self.peer.take() else { return };
        let mut held = lock(&self.held);
        if let Some(n) = held.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                held.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_at_most_max_and_others_are_not_affected() {
        let slots = PeerSlots::new(2);
        let a1 = slots.try_take("a").expect("first");
        let a2 = slots.try_take("a").expect("second");
        assert!(slots.try_take("a").is_none(), "third over the cap");
        assert_eq!(slots.held(&"a"), 2);
        let b = slots
            .try_take("b")
            .expect("another peer is not limited by a");
        assert_eq!(slots.held(&"b"), 1);
        assert_eq!(slots.peers(), 2);
        drop(a1);
        assert_eq!(slots.held(&"a"), 1);
        let a3 = slots.try_take("a").expect("a slot came back");
        assert!(slots.try_take("a").is_none());
        drop((a2, a3, b));
        assert_eq!(slots.held(&"a"), 0);
        assert_eq!(slots.peers(), 0, "peers without a slot are forgotten");
    }

    #[test]
    fn refusals_leave_no_entry_and_zero_max_refuses_all() {
        let slots = PeerSlots::new(1);
        let _a = slots.try_take(1u32).unwrap();
        for _ in 0..100 {
            assert!(slots.try_take(1).is_none());
        }
        assert_eq!(slots.held(&1), 1, "refusals do not count");
        let none = PeerSlots::new(0);
        assert!(none.try_take(7u32).is_none());
        assert_eq!(none.peers(), 0);
    }

    #[test]
    fn the_cap_holds_across_threads_and_every_slot_comes_back() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let slots = Arc::new(PeerSlots::new(2));
        let live = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (slots, live) = (slots.clone(), live.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(slot) = slots.try_take("p") {
                            let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(n <= 2, "{n} slots held at once");
                            live.fetch_sub(1, Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(slots.peers(), 0);
    }
}
