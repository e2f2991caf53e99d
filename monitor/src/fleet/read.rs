//! Reading the fleet's streams back: every message of a subject filter,
//! once per message id (a message id published twice outside JetStream's
//! deduplication window is still read once).
use std::collections::HashSet;

use anyhow::{Context, Result};
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use futures_util::StreamExt;

use super::link::{self, NatsConfig};

/// One stored message.
#[derive(Clone, Debug)]
pub struct FleetMessage {
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub id: String,
    pub payload: Vec<u8>,
    pub stream_seq: u64,
}

/// Every message of `stream` whose subject matches `filter` (a NATS
/// subject with wildcards), oldest first, each message id once.
pub async fn read_all(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> Result<Vec<FleetMessage>> {
    let s = js
        .get_stream(stream)
        .await
        .with_context(|| format!("fleet stream {stream}"))?;
    let consumer = s
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading {stream} ({filter})"))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut msgs = consumer.messages().await?;
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_millis(500), msgs.next()).await;
        let m = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e).context("reading the fleet stream"),
            Ok(None) | Err(_) => break,
        };
        let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_else(|| format!("seq:{seq}"));
        if seen.insert(id.clone()) {
            out.push(FleetMessage {
                subject: m.subject.to_string(),
                id,
                payload: m.payload.to_vec(),
                stream_seq: seq,
            });
        }
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// How long a read is retried while the cluster does not answer.
const READ_RETRY: std::time::Duration = std::time::Duration::from_secs(20);

/// [`read_all`] on a fresh connection (the command line, tests).
pub fn read_all_blocking(
    cfg: &NatsConfig,
    stream: &str,
    filter: &str,
) -> Result<Vec<FleetMessage>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = link::connect(cfg, "monitor-query", false).await?;
        let js = link::context(client);
        // A cluster electing a stream leader (a server just restarted)
        // answers again within seconds.
        let t0 = std::time::Instant::now();
        loop {
            match read_all(&js, stream, filter).await {
                Ok(m) => return Ok(m),
                Err(e) if t0.elapsed() < READ_RETRY => {
                    tracing::debug!("{e:#}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    })
}
