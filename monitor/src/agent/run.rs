//! The event loop: ring buffer batches, fanotify, API requests, the fleet,
//! sources and ticks, until SIGINT/SIGTERM.
use std::{sync::Arc, time::Duration};

use anyhow::Result;
use tokio::sync::mpsc;

use super::{Agent, RunOptions};
use crate::api::{
    routes::Control,
    serve::{serve_thread, Endpoints, Stop, API_BACKLOG},
    ApiRequest,
};

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> Result<()> {
    // A refused metrics address fails before anything is loaded.
    if let Some(addr) = opts.metrics {
        crate::metrics::check_bind_addr(addr, opts.metrics_allow_non_loopback)?;
    }
    // Everything the agent creates is private (0600 files, 0700
    // directories), whatever mode a library asks for.
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
    let (mut agent, mut observer) = Agent::start(&opts)?;
    // The eBPF programs' error-path records into this log, on a task of
    // their own (they are rare: rate-limited in the kernel).
    if let Some(log) = agent.sensors.take_ebpf_log() {
        tokio::spawn(crate::sensors::ebpf_log::drain(log));
    }
    let (api_tx, mut api_rx) = mpsc::channel::<ApiRequest>(API_BACKLOG);
    let metrics = agent.metrics();
    let stop = Arc::new(Stop::default());
    serve_thread(
        &Endpoints {
            api: opts.api.clone(),
            metrics: opts.metrics,
            metrics_allow_non_loopback: opts.metrics_allow_non_loopback,
        },
        api_tx,
        agent.queries(),
        metrics.clone(),
        stop.clone(),
    )?;
    metrics.mark_drained();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sources = tokio::time::interval(Duration::from_millis(250));
    let rescan_ticks = opts.rescan_every.as_secs().max(1);
    let mut ticks: u64 = 0;
    let attached = agent.sensors().attached();
    let total = agent.sensors().status.len();
    let mut fan_rx = agent.fanotify.as_mut().and_then(|f| f.take_events());
    // Something created or renamed next to a watched file: rescan now.
    let dir_changed = agent.fanotify.as_ref().map(|f| f.changed());
    let mut fan_tick = tokio::time::interval(crate::sensors::fanotify::DEDUP_DELAY / 3);
    let mut fleet_rx = agent.fleet.take_inbound();
    // A pack of events that is not full goes once its first is MAX_AGE old.
    let mut fleet_pack = tokio::time::interval(crate::fleet::pack::MAX_AGE / 2);
    fleet_pack.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    crate::logging::say(
        false,
        format_args!(
            "monitor: ready: {attached}/{total} probes attached, capture {}, {} watched files, \
             {} secrets ({} restored from the store, {} issuance records read), {}",
            agent.capture_reason(),
            agent.watches.watched_inodes(),
            agent.correlator.secret_count(),
            agent.secrets_restored,
            agent.records_read,
            agent
                .fanotify
                .as_ref()
                .map_or_else(|| "fanotify: off".to_string(), |f| f.describe())
        ),
    );
    let mut batch = Vec::with_capacity(4096);
    // Events of the last batch not handled when a signal came.
    let mut unhandled = Vec::new();
    loop {
        tokio::select! {
            r = observer.next_batch(&mut batch) => {
                r?;
                // Debug: one span a batch, around the per-event stages.
                let _span = tracing::debug_span!("pipeline", events = batch.len()).entered();
                let mut events = batch.drain(..);
                while let Some(raw) = events.next() {
                    agent.handle(raw)?;
                    // A signal is not kept waiting by a long batch: the
                    // rest is handled by the shutdown drain.
                    if stop.requested() {
                        unhandled.extend(events);
                        break;
                    }
                }
                agent.flush()?;
                metrics.mark_drained();
            }
            Some(f) = async {
                match fan_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                agent.fanotify_arrived(&f);
                agent.fan_queue.push(f);
            }
            _ = async {
                match &dir_changed {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => {
                agent.rescan();
                agent.flush()?;
            }
            _ = fan_tick.tick(), if !agent.fan_queue.is_empty() => {
                agent.fanotify_due()?;
                agent.flush()?;
            }
            Some(req) = api_rx.recv() => {
                crate::api::routes::answer(&mut agent, req);
                agent.flush()?;
            }
            Some(m) = async {
                match fleet_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                agent.fleet_inbound(m);
                agent.flush()?;
            }
            _ = fleet_pack.tick(), if agent.fleet.events_waiting() => {
                if agent.fleet.events_due() {
                    agent.fleet.flush_events();
                }
            }
            _ = sources.tick() => {
                observer.release_stale(&mut batch);
                for raw in batch.drain(..) {
                    agent.handle(raw)?;
                }
                agent.poll_sources()?;
                agent.flush()?;
            }
            // A backlog is read a chunk at a time, between event batches.
            _ = std::future::ready(()), if agent.sources_backlog => {
                agent.poll_sources()?;
                agent.flush()?;
            }
            _ = tick.tick() => {
                ticks += 1;
                agent.tick(ticks.is_multiple_of(rescan_ticks))?;
                agent.flush()?;
                // The loop that polls the ring buffer is alive (an idle
                // node has no batches to prove it).
                metrics.mark_drained();
            }
            _ = stop.notify.notified() => break,
        }
        if stop.requested() {
            break;
        }
    }
    // What the kernel wrote before the stop is handled, within a bounded
    // time; what is left is counted, never dropped silently.
    let drained = shutdown_drain(&mut agent, &mut observer, unhandled)?;
    agent.finish()?;
    let c = agent.counters()?;
    crate::logging::say(
        false,
        format_args!(
            "monitor: stopped: {} events, {} alerts, {} lost in kernel, {} undecodable, \
         {} write chunks without their write, {} bad records, {} issuance records read, \
         {} secrets restored, {} records drained at shutdown, {} left unread at shutdown",
            agent.events_seen,
            agent.alerts_sent,
            c.ringbuf_full,
            observer.decode_errors,
            observer.orphan_chunks(),
            agent.bad_records,
            agent.records_read,
            agent.secrets_restored,
            drained.handled,
            drained.unread
        ),
    );
    if let Some(path) = &opts.api {
        let _ = std::fs::remove_file(path);
    }
    // The kernel's slow part of detaching goes to a child; dropping the
    // agent then closes its own references at once.
    crate::sensors::detach::hand_off();
    drop(agent); // detaches every program
    Ok(())
}

/// How long the shutdown drain handles what is left in the ring buffer.
/// SIGTERM must end the agent within 5 s under any load, and detaching
/// the ~50 probes afterwards takes seconds on a loaded machine (each
/// tracepoint's detach waits for an RCU grace period in the kernel, one
/// after the other: about 3.5 s during a flood of writes here).
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(300);
/// How long it then counts (without decoding) what it could not handle.
const SHUTDOWN_COUNT: Duration = Duration::from_millis(100);

/// What the shutdown drain did.
struct Drained {
    /// Kernel records read and handled after the stop.
    handled: u64,
    /// Records left in the ring when the drain's time was up.
    unread: u64,
}

/// At a stop: the events of the interrupted batch and the records still
/// in the ring buffer are handled for up to [`SHUTDOWN_DRAIN`]; what
/// remains is counted for up to [`SHUTDOWN_COUNT`] and reported (the
/// probes are attached until the agent is dropped, so a flood may still
/// be filling the ring).
fn shutdown_drain(
    agent: &mut Agent,
    observer: &mut crate::observer::Observer,
    unhandled: Vec<crate::observer::decode::RawEvent>,
) -> Result<Drained> {
    let _span = tracing::debug_span!("shutdown").entered();
    let deadline = std::time::Instant::now() + SHUTDOWN_DRAIN;
    let mut handled = 0u64;
    for raw in unhandled {
        agent.handle(raw)?;
    }
    let mut batch = Vec::new();
    while std::time::Instant::now() < deadline {
        let read = observer.read_now(&mut batch);
        if read == 0 {
            break;
        }
        handled += read;
        for raw in batch.drain(..) {
            agent.handle(raw)?;
        }
    }
    observer.release_all(&mut batch);
    for raw in batch.drain(..) {
        agent.handle(raw)?;
    }
    let unread = observer.count_unread(SHUTDOWN_COUNT);
    if unread > 0 {
        tracing::warn!(
            "shutdown: {unread} kernel records left unread in the ring buffer after {} ms of \
             draining (not handled, counted)",
            SHUTDOWN_DRAIN.as_millis()
        );
    }
    Ok(Drained { handled, unread })
}
