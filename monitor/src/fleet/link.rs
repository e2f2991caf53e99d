//! The agent's link to the NATS JetStream cluster: a thread with its own
//! runtime publishes alerts and events (each with a `Nats-Msg-Id`, so a
//! retry never duplicates), spools what NATS does not take, delivers the
//! spool when NATS is back, and hands what the fleet sends (records,
//! fingerprints) to the event loop.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use tokio::sync::mpsc;

use super::spool::{Outgoing, Spool};

/// Stream of alerts and events: `monitor.<node>.alerts|events`.
pub const STREAM: &str = "MONITOR";
/// Stream of issuance and revocation records: `monitor.records`.
pub const RECORDS_STREAM: &str = "MONITOR_RECORDS";
pub const RECORDS_SUBJECT: &str = "monitor.records";
/// Stream of secrets' keyed fingerprints: `monitor.fingerprints.<node>.keyed`
/// (four tokens: never overlaps `monitor.<node>.alerts`).
pub const FP_STREAM: &str = "MONITOR_FINGERPRINTS";
/// Messages published (then acked) at a time.
const BATCH: usize = 1024;
/// Messages waiting for the link thread before they go to the spool (a
/// message of events is a pack of up to 64 KiB: this bounds the queue's
/// memory to about 512 MiB at the very worst, a few MiB usually).
const CHANNEL: usize = 8_192;
/// A publish not acknowledged in this time is spooled (and sent again
/// later with the same message id).
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// JetStream deduplicates a message id within this window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct NatsConfig {
    /// `nats://host:port[,nats://...]`.
    pub url: String,
    /// A NATS credentials file (`.creds`: JWT and NKey seed).
    pub creds: Option<std::path::PathBuf>,
    /// CA bundle that signs the servers' certificates (TLS required then).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

/// A NATS client for the command line and the link.
pub async fn connect(cfg: &NatsConfig, name: &str, background: bool) -> Result<async_nats::Client> {
    let mut o = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3));
    if background {
        o = o.retry_on_initial_connect();
    }
    if let Some(c) = &cfg.creds {
        o = o
            .credentials_file(c)
            .await
            .with_context(|| format!("fleet credentials {}", c.display()))?;
    }
    if let Some(ca) = &cfg.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) {
        o = o.add_client_certificate(c.clone(), k.clone());
    }
    let urls: Vec<async_nats::ServerAddr> = cfg
        .url
        .split(',')
        .map(|u| {
            u.trim()
                .parse()
                .with_context(|| format!("fleet URL {u:?}: expected nats://host:port"))
        })
        .collect::<Result<_>>()?;
    o.connect(urls)
        .await
        .with_context(|| format!("connecting to the fleet at {}", cfg.url))
}

pub fn context(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .max_ack_inflight(4 * BATCH)
        .build(client)
}

/// The streams the fleet uses, created if missing (3 replicas, or 1 on a
/// single server).
pub async fn ensure_streams(js: &jetstream::Context) -> Result<()> {
    let specs: [(&str, Vec<String>, Duration); 3] = [
        (
            STREAM,
            vec!["monitor.*.alerts".into(), "monitor.*.events".into()],
            Duration::from_secs(7 * 86_400),
        ),
        (RECORDS_STREAM, vec![RECORDS_SUBJECT.into()], Duration::ZERO),
        (
            FP_STREAM,
            vec!["monitor.fingerprints.*.keyed".into()],
            Duration::ZERO,
        ),
    ];
    for (name, subjects, max_age) in specs {
        let cfg = |replicas| stream::Config {
            name: name.to_string(),
            subjects: subjects.clone(),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_age,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        if let Err(e3) = js.get_or_create_stream(cfg(3)).await {
            js.get_or_create_stream(cfg(1))
                .await
                .with_context(|| format!("stream {name} (3 replicas: {e3})"))?;
        }
    }
    Ok(())
}

/// Publish a batch, waiting for the acks; returns those not acknowledged.
pub async fn publish_batch(js: &jetstream::Context, msgs: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut acks = Vec::with_capacity(msgs.len());
    let mut failed = Vec::new();
    for m in msgs {
        let p = PublishMessage::build()
            .payload(m.payload.clone().into())
            .message_id(&m.id);
        match js.send_publish(m.subject.clone(), p).await {
            Ok(f) => acks.push((m, f)),
            Err(_) => failed.push(m),
        }
    }
    for (m, f) in acks {
        if f.await.is_err() {
            failed.push(m);
        }
    }
    failed
}

/// What the fleet sends the agent.
#[derive(Debug)]
pub enum Inbound {
    /// A `MONITOR_RECORDS` message (a [`super::records::FleetRecord`]).
    Record(Vec<u8>),
    /// A `MONITOR_FINGERPRINTS` message.
    Fingerprints(Vec<u8>),
}

/// Follow a stream from its start for ever (an ordered consumer recreates
/// itself after a gap or a reconnect), handing each payload on.
async fn follow(
    js: jetstream::Context,
    stream: &'static str,
    tx: mpsc::UnboundedSender<Inbound>,
    wrap: fn(Vec<u8>) -> Inbound,
) {
    use futures_util::StreamExt;
    let mut delivered: u64 = 0;
    loop {
        let consumer = async {
            let s = js.get_stream(stream).await?;
            s.create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: if delivered == 0 {
                    jetstream::consumer::DeliverPolicy::All
                } else {
                    jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: delivered + 1,
                    }
                },
                ..Default::default()
            })
            .await
            .map_err(anyhow::Error::from)
        };
        let mut msgs = match consumer.await {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("fleet: {stream}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::debug!("fleet: {stream}: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(m) = msgs.next().await {
            let Ok(m) = m else { break };
            if let Ok(info) = m.info() {
                delivered = info.stream_sequence;
            }
            if tx.send(wrap(m.payload.to_vec())).is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Counters the agent turns into metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub published: AtomicU64,
    pub failures: AtomicU64,
    pub connected: AtomicBool,
    pub queued: AtomicU64,
}

/// The agent's side of the link.
pub struct Link {
    tx: mpsc::Sender<Outgoing>,
    spool: Arc<Mutex<Spool>>,
    pub stats: Arc<LinkStats>,
    stop: Arc<tokio::sync::Notify>,
    done: std::sync::mpsc::Receiver<()>,
    pub url: String,
    inbound: Option<mpsc::UnboundedReceiver<Inbound>>,
}

impl Link {
    pub fn start(cfg: NatsConfig, node: &str, spool: Spool) -> Result<Self> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let spool = Arc::new(Mutex::new(spool));
        let stats = Arc::new(LinkStats::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let (done_tx, done) = std::sync::mpsc::channel();
        let url = cfg.url.clone();
        let (sp, st, so) = (spool.clone(), stats.clone(), stop.clone());
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let name = format!("monitor/{node}");
        std::thread::Builder::new()
            .name("monitor-fleet".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("fleet: no runtime: {e}");
                        return;
                    }
                };
                rt.block_on(run(cfg, name, rx, sp, st, so, in_tx));
                let _ = done_tx.send(());
            })
            .context("spawning the fleet thread")?;
        Ok(Self {
            tx,
            spool,
            stats,
            stop,
            done,
            url,
            inbound: Some(in_rx),
        })
    }

    /// What the fleet sends (records, fingerprints), for the event loop.
    pub fn take_inbound(&mut self) -> Option<mpsc::UnboundedReceiver<Inbound>> {
        self.inbound.take()
    }

    /// Queue a message; if the link is behind, straight to the spool.
    pub fn send(&self, m: Outgoing) {
        match self.tx.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => {
                let mut s = self.spool.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = s.append(&[m]) {
                    tracing::warn!("fleet spool: {e:#}");
                }
            }
        }
    }

    /// (messages spooled and waiting, spool bytes, dropped by the bound).
    pub fn spool_state(&self) -> (u64, u64, u64) {
        let s = self.spool.lock().unwrap_or_else(|e| e.into_inner());
        (s.pending(), s.bytes(), s.dropped)
    }

    pub fn queued(&self) -> u64 {
        (CHANNEL - self.tx.capacity()) as u64
    }

    /// Stop: what is still queued goes to the spool (delivered by the next
    /// start), within `limit`.
    pub fn finish(&self, limit: Duration) {
        self.stop.notify_one();
        let _ = self.done.recv_timeout(limit);
    }
}

async fn run(
    cfg: NatsConfig,
    name: String,
    mut rx: mpsc::Receiver<Outgoing>,
    spool: Arc<Mutex<Spool>>,
    stats: Arc<LinkStats>,
    stop: Arc<tokio::sync::Notify>,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    let client = match connect(&cfg, &name, true).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("fleet: {e:#}; alerts and events are spooled only");
            // Still take messages into the spool.
            let mut buf = Vec::new();
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut buf, BATCH) => {
                        if n == 0 { return; }
                        let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
                        if let Err(e) = s.append(&buf) { tracing::warn!("fleet spool: {e:#}"); }
                        buf.clear();
                    }
                    _ = stop.notified() => return,
                }
            }
        }
    };
    let js = context(client.clone());
    let mut ready = false;
    let mut warned = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut buf = Vec::with_capacity(BATCH);
    let spool_msgs = |msgs: &[Outgoing]| {
        let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = s.append(msgs) {
            tracing::warn!("fleet spool: {e:#}");
        }
    };
    loop {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        stats.connected.store(connected && ready, Ordering::Relaxed);
        tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => {
                if n == 0 {
                    return;
                }
                stats.queued.store(rx.len() as u64, Ordering::Relaxed);
                let behind = !spool.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
                if !ready || !connected || behind {
                    spool_msgs(&buf);
                    buf.clear();
                    continue;
                }
                let msgs = std::mem::take(&mut buf);
                let n = msgs.len() as u64;
                let failed = publish_batch(&js, msgs).await;
                stats.published.fetch_add(n - failed.len() as u64, Ordering::Relaxed);
                if !failed.is_empty() {
                    stats.failures.fetch_add(failed.len() as u64, Ordering::Relaxed);
                    tracing::warn!("fleet: {} messages not acknowledged: spooled", failed.len());
                    spool_msgs(&failed);
                }
            }
            _ = tick.tick() => {
                if !connected {
                    continue;
                }
                if !ready {
                    match ensure_streams(&js).await {
                        Ok(()) => {
                            ready = true;
                            warned = false;
                            tracing::info!("fleet: connected to {}", cfg.url);
                            tokio::spawn(follow(js.clone(), RECORDS_STREAM, inbound.clone(), Inbound::Record));
                            tokio::spawn(follow(js.clone(), FP_STREAM, inbound.clone(), Inbound::Fingerprints));
                        }
                        Err(e) => {
                            if !warned {
                                tracing::warn!("fleet: {e:#}; retrying");
                                warned = true;
                            }
                            continue;
                        }
                    }
                }
                // Deliver the spool, a batch at a time, oldest first.
                loop {
                    let (msgs, pos) = {
                        let s = spool.lock().unwrap_or_else(|e| e.into_inner());
                        if s.is_empty() { break; }
                        match s.peek(BATCH) {
                            Ok(p) => p,
                            Err(e) => { tracing::warn!("fleet spool: {e:#}"); break; }
                        }
                    };
                    let n = msgs.len() as u64;
                    let failed = publish_batch(&js, msgs).await;
                    if !failed.is_empty() {
                        stats.failures.fetch_add(failed.len() as u64, Ordering::Relaxed);
                        break;
                    }
                    stats.published.fetch_add(n, Ordering::Relaxed);
                    let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = s.commit(pos, n) {
                        tracing::warn!("fleet spool: {e:#}");
                        break;
                    }
                    if s.is_empty() {
                        tracing::info!("fleet: spool delivered");
                    }
                }
            }
            _ = stop.notified() => {
                rx.close();
                while rx.recv_many(&mut buf, BATCH).await > 0 {
                    spool_msgs(&buf);
                    buf.clear();
                }
                let _ = client.flush().await;
                return;
            }
        }
    }
}
