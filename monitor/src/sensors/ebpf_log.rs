//! The eBPF programs' own log: error-path records (a user-memory read that
//! failed, a kernel struct walk that failed, a map insert refused because
//! the map is full) written by aya-log into its ring (`AYA_LOGS`) and
//! forwarded here into the agent's log, at level warn, target
//! `monitor::ebpf`.
//!
//! The kernel side (`monitor-ebpf/src/util.rs`, `log_failure`) writes at
//! most one record per error kind per CPU per second and counts the ones it
//! held back; a record carries numbers only (error kind, hook, map, task),
//! never any bytes read or captured. The counters (`COUNTERS`) count every
//! failure whether logged or not.
use aya::Ebpf;
use aya_log::EbpfLogger;
use monitor_common::{Counter, Hook, MapId};
use tokio::io::{unix::AsyncFd, Interest};

/// The `tracing` target of the forwarded records.
pub const TARGET: &str = "monitor::ebpf";

/// aya-log's reader of the records, forwarding them to `tracing`.
pub type Logger = EbpfLogger<ToTracing>;

/// Take aya-log's ring from the loaded object. Fails when the object has
/// no log statement (no `AYA_LOGS` map).
pub fn init(ebpf: &mut Ebpf) -> Result<Logger, aya_log::Error> {
    EbpfLogger::init_with_logger(ebpf, ToTracing)
}

/// Forward records as they come, for as long as the agent runs.
pub async fn drain(logger: Logger) {
    // SAFETY: the logger's ring buffer map owns its fd and keeps it open
    // for as long as the logger lives, which is as long as this `AsyncFd`.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("eBPF error-path log not read: {e}");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("eBPF error-path log not read any more: {e}");
                return;
            }
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// A `log::Log` that hands aya-log's records to `tracing`.
pub struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        forward(record.level(), &record.args().to_string());
    }

    fn flush(&self) {}
}

fn forward(level: log::Level, msg: &str) {
    let Some(f) = Failure::parse(msg) else {
        // Not one of ours (or a format out of step): as it came.
        match level {
            log::Level::Error => tracing::error!(target: TARGET, "eBPF: {msg}"),
            log::Level::Warn => tracing::warn!(target: TARGET, "eBPF: {msg}"),
            log::Level::Info => tracing::info!(target: TARGET, "eBPF: {msg}"),
            log::Level::Debug => tracing::debug!(target: TARGET, "eBPF: {msg}"),
            log::Level::Trace => tracing::trace!(target: TARGET, "eBPF: {msg}"),
        }
        return;
    };
    tracing::warn!(
        target: TARGET,
        kind = %Counter::name_of(f.kind),
        hook = %Hook::from_u32(f.hook).name(),
        map = %MapId::name_of(f.map),
        pid = f.pid,
        tid = f.tid,
        suppressed = f.suppressed,
        "eBPF error path: {}",
        f.what()
    );
}

/// One error-path record, as `log_failure` formats it:
/// `error path kind=K hook=H map=M pid=P tid=T suppressed=S`.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// A [`Counter`].
    pub kind: u32,
    /// A [`Hook`].
    pub hook: u32,
    /// A [`MapId`].
    pub map: u32,
    pub pid: u32,
    pub tid: u32,
    /// Records of this kind held back on this CPU since the last one.
    pub suppressed: u64,
}

impl Failure {
    pub fn parse(msg: &str) -> Option<Self> {
        let mut it = msg.strip_prefix("error path ")?.split(' ');
        let mut field = |name: &str| -> Option<u64> {
            let (k, v) = it.next()?.split_once('=')?;
            if k != name {
                return None;
            }
            v.parse().ok()
        };
        let f = Self {
            kind: field("kind")?.try_into().ok()?,
            hook: field("hook")?.try_into().ok()?,
            map: field("map")?.try_into().ok()?,
            pid: field("pid")?.try_into().ok()?,
            tid: field("tid")?.try_into().ok()?,
            suppressed: field("suppressed")?,
        };
        it.next().is_none().then_some(f)
    }

    /// What failed, in words.
    pub fn what(&self) -> String {
        match self.kind {
            k if k == Counter::ReadUserFailed as u32 => "user-memory read failed".into(),
            k if k == Counter::KernelWalkFailed as u32 => "kernel struct walk failed".into(),
            k if k == Counter::MapFull as u32 => {
                format!("map {} full", MapId::name_of(self.map))
            }
            k => format!("{} ({k})", Counter::name_of(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_format_parses_and_names_what_failed() {
        let f =
            Failure::parse("error path kind=2 hook=17 map=0 pid=42 tid=43 suppressed=7").unwrap();
        assert_eq!(
            f,
            Failure {
                kind: 2,
                hook: 17,
                map: 0,
                pid: 42,
                tid: 43,
                suppressed: 7
            }
        );
        assert_eq!(f.what(), "user-memory read failed");
        assert_eq!(Hook::from_u32(f.hook).name(), "write");
        let m = Failure::parse("error path kind=1 hook=25 map=1 pid=1 tid=1 suppressed=0").unwrap();
        assert_eq!(m.what(), "map TRACKED_PROCS full");
        assert_eq!(
            Failure::parse("error path kind=3 hook=2 map=0 pid=1 tid=1 suppressed=0")
                .unwrap()
                .what(),
            "kernel struct walk failed"
        );
    }

    #[test]
    fn anything_else_is_not_a_failure_record() {
        for m in [
            "",
            "error path",
            "error path kind=2 hook=17 map=0 pid=42 tid=43",
            "error path kind=2 hook=17 map=0 pid=42 tid=43 suppressed=7 extra=1",
            "error path hook=17 kind=2 map=0 pid=42 tid=43 suppressed=7",
            "error path kind=x hook=17 map=0 pid=42 tid=43 suppressed=7",
            "error path kind=2 hook=17 map=0 pid=99999999999 tid=43 suppressed=7",
        ] {
            assert_eq!(Failure::parse(m), None, "{m:?}");
        }
    }
}
