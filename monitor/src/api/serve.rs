//! The serving thread: `/healthz`, `/metrics`, the API's accept loop and
//! the signal handlers, on a thread and runtime of their own.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use super::{
    routes::{route_api, StoreQueries},
    ApiRequest,
};
use crate::metrics::Metrics;

/// API requests waiting for the event loop; past it a client gets 503
/// (and each waits at most the API's agent timeout) instead of a hang.
pub const API_BACKLOG: usize = 64;
/// After SIGTERM/SIGINT the agent exits within this, whatever the load: the
/// event loop stops at once, and if the final flush takes longer the
/// process exits anyway (the kernel detaches the probes with its fds).
pub const SHUTDOWN_LIMIT: Duration = Duration::from_millis(4500);

/// A stop request from the signal thread.
#[derive(Default)]
pub struct Stop {
    flag: std::sync::atomic::AtomicBool,
    pub notify: tokio::sync::Notify,
}

impl Stop {
    pub fn requested(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Where the serving thread listens.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The API's unix socket (none: no API).
    pub api: Option<PathBuf>,
    /// `/metrics` and `/healthz` (none: off).
    pub metrics: Option<SocketAddr>,
    /// Serve metrics on a non-loopback address.
    pub metrics_allow_non_loopback: bool,
}

/// Liveness independent of load: `/healthz`, `/metrics`, the API's accept
/// loop and the signal handlers run on a thread (and runtime) of their
/// own, so a saturated event loop neither hides the agent from the kubelet
/// nor ignores SIGTERM. Binding errors come back before the agent is ready.
pub fn serve_thread(
    opts: &Endpoints,
    api_tx: mpsc::Sender<ApiRequest>,
    queries: StoreQueries,
    metrics: Arc<Metrics>,
    stop: Arc<Stop>,
) -> Result<()> {
    let api = opts.api.clone();
    let metrics_addr = opts.metrics;
    let allow = opts.metrics_allow_non_loopback;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name("monitor-serve".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let setup = async {
                    let sigint = signal(SignalKind::interrupt())?;
                    let sigterm = signal(SignalKind::terminate())?;
                    if let Some(path) = &api {
                        let listener = super::server::bind(path).await?;
                        let (front_tx, front_rx) = mpsc::channel::<ApiRequest>(API_BACKLOG);
                        tokio::spawn(super::server::serve(listener, front_tx));
                        tokio::spawn(route_api(front_rx, api_tx, queries));
                        tracing::info!("API on {}", path.display());
                    }
                    if let Some(addr) = metrics_addr {
                        let listener = crate::metrics::bind(addr, allow).await?;
                        let addr = listener.local_addr().unwrap_or(addr);
                        tokio::spawn(crate::metrics::serve_listener(listener, metrics));
                        tracing::info!("metrics and health on http://{addr}/metrics, /healthz");
                    }
                    Ok::<_, anyhow::Error>((sigint, sigterm))
                };
                let (mut sigint, mut sigterm) = match setup.await {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let which = tokio::select! {
                    _ = sigint.recv() => "SIGINT",
                    _ = sigterm.recv() => "SIGTERM",
                };
                tracing::info!("{which}: stopping");
                stop.flag.store(true, std::sync::atomic::Ordering::Relaxed);
                stop.notify.notify_one();
                // The event loop finishes what it can; past the limit the
                // process goes anyway.
                tokio::time::sleep(SHUTDOWN_LIMIT).await;
                crate::logging::say(
                    false,
                    format_args!(
                        "monitor: stopped: forced after {:.1}s ({which}): the last queued \
                     events and alerts may not be in the store",
                        SHUTDOWN_LIMIT.as_secs_f64()
                    ),
                );
                std::process::exit(0);
            });
        })
        .context("spawning the serve thread")?;
    ready_rx
        .recv()
        .context("the serve thread died while starting")?
}
