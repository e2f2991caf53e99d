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

/// Decode the ring's records into `out` (joining write chunks) until it
/// holds [`BATCH`] events or the ring is empty. Returns the records read
/// and whether the ring was emptied.
fn read_batch(
    ring: &mut RingBuf<MapData>,
    chunks: &mut Reassembly,
    decode_errors: &mut u64,
    now: std::time::Instant,
    out: &mut Vec<RawEvent>,
) -> (u64, bool) {
    let mut read = 0;
    while let Some(item) = ring.next() {
        read += 1;
        match decode(&item) {
            Ok(e) => chunks.push(e, now, out),
            Err(e) => {
                *decode_errors += 1;
                tracing::warn!("undecodable kernel record: {e}");
            }
        }
        if out.len() >= BATCH {
            return (read, false);
        }
    }
    (read, true)
}

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
        let now = std::time::Instant::now();
        let (_, emptied) = read_batch(
            guard.get_inner_mut(),
            &mut self.chunks,
            &mut self.decode_errors,
            now,
            out,
        );
        if emptied {
            guard.clear_ready();
        }
        self.chunks.release_stale(now, out);
        span.record("records", out.len() - before);
        Ok(())
    }

    /// Read what the ring holds now, without waiting (at shutdown): up to
    /// a batch decoded into `out`. Returns the records read.
    pub fn read_now(&mut self, out: &mut Vec<RawEvent>) -> u64 {
        let now = std::time::Instant::now();
        read_batch(
            self.ring.get_mut(),
            &mut self.chunks,
            &mut self.decode_errors,
            now,
            out,
        )
        .0
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
