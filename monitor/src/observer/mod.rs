//! Observer: drains the kernel ring buffer (async, tokio) and decodes every
//! record into a typed [`RawEvent`](decode::RawEvent).
pub mod decode;

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use self::decode::{decode, RawEvent};

/// Largest batch handed to the pipeline in one go.
const BATCH: usize = 4096;

pub struct Observer {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that did not decode (reported, never silently dropped).
    pub decode_errors: u64,
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
        })
    }

    /// Wait for records, then decode what is there (up to a batch).
    pub async fn next_batch(&mut self, out: &mut Vec<RawEvent>) -> Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut drained = true;
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(e) => out.push(e),
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
        Ok(())
    }
}
