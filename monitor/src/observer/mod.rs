//! Observer: drains the kernel ring buffer (async, tokio), decodes every
//! record into a typed [`RawEvent`](decode::RawEvent) and joins a large
//! write's chunk records back into one write ([`chunks`]).
pub mod chunks;
pub mod decode;

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use self::{
    chunks::Reassembly,
    decode::{decode, RawEvent},
};

/// Largest batch handed to the pipeline in one go.
const BATCH: usize = 4096;

pub struct Observer {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that did not decode (reported, never silently dropped).
    pub decode_errors: u64,
    chunks: Reassembly,
}

impl Observer {
    pub fn new(ring: RingBuf<MapData>) -> Result<Self> {
        // SAFETY: the ring buffer map owns its fd and keeps it open for as
        // long as the `RingBuf` lives, which is as long as this `AsyncFd`.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer: {e}"))?;
        Ok(Self {
            ring,
            decode_errors: 0,
            chunks: Reassembly::default(),
        })
    }

    /// Wait for records, then decode what is there (up to a batch).
    pub async fn next_batch(&mut self, out: &mut Vec<RawEvent>) -> Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        // Debug: one span a drain (nothing at the default level).
        let span = tracing::debug_span!("observe", records = tracing::field::Empty);
        let _entered = span.enter();
        let before = out.len();
        let ring = guard.get_inner_mut();
        let mut drained = true;
        let now = std::time::Instant::now();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(e) => self.chunks.push(e, now, out),
                Err(e) => {
                    self.decode_errors += 1;
                    tracing::warn!("undecodable kernel record: {e}");
                }
            }
            if out.len() >= BATCH {
                drained = false;
                break;
            }
        }
        if drained {
            guard.clear_ready();
        }
        self.chunks.release_stale(now, out);
        span.record("records", out.len() - before);
        Ok(())
    }

    /// Read what the ring holds now, without waiting: up to `max`
    /// records decoded into `out` (at shutdown). Returns the records read.
    pub fn read_now(&mut self, out: &mut Vec<RawEvent>, max: usize) -> u64 {
        let ring = self.ring.get_mut();
        let now = std::time::Instant::now();
        let mut read = 0;
        while read < max as u64 {
            let Some(item) = ring.next() else { break };
            read += 1;
            match decode(&item) {
                Ok(e) => self.chunks.push(e, now, out),
                Err(e) => {
                    self.decode_errors += 1;
                    tracing::warn!("undecodable kernel record: {e}");
                }
            }
        }
        read
    }

    /// Consume and count the records left in the ring, for at most
    /// `limit` (at shutdown, after the drain's time is up).
    pub fn count_unread(&mut self, limit: std::time::Duration) -> u64 {
        let ring = self.ring.get_mut();
        let until = std::time::Instant::now() + limit;
        let mut n = 0u64;
        while let Some(item) = ring.next() {
            drop(item);
            n += 1;
            if n.is_multiple_of(1024) && std::time::Instant::now() >= until {
                break;
            }
        }
        n
    }

    /// Large writes whose chunks stopped coming (see [`chunks`]); called
    /// from the agent's timer, since an idle ring wakes nobody.
    pub fn release_stale(&mut self, out: &mut Vec<RawEvent>) {
        self.chunks.release_stale(std::time::Instant::now(), out);
    }

    /// Everything still waiting for chunks (at shutdown).
    pub fn release_all(&mut self, out: &mut Vec<RawEvent>) {
        self.chunks.release_all(out);
    }

    /// Chunk records that came without their write's head record.
    pub fn orphan_chunks(&self) -> u64 {
        self.chunks.orphan_chunks
    }
}
