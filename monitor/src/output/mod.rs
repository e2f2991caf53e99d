//! Exporters: the agent's JSON-lines streams (`--events`, `--alerts`) and
//! the SOC feeds.
use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;

pub mod feed;
pub mod file;
pub mod ocsf;
pub mod syslog;
pub mod webhook;

use crate::correlate::alert::Alert;

/// Where every alert goes (Tetragon's one listener interface): the SOC
/// feeds, the `--alerts` stream, the store, the metrics and the fleet each
/// implement it, and the agent hands each batch to all of them in one loop.
/// A sink never blocks for long and never stops the agent: what it cannot
/// deliver it counts (and the error is logged with [`AlertSink::sink_name`]).
pub trait AlertSink {
    /// For logs, e.g. `feed file:/var/log/x`.
    fn sink_name(&self) -> String;
    fn send_alerts(&mut self, alerts: &[Alert]) -> Result<()>;
}

impl AlertSink for Box<dyn Feed> {
    fn sink_name(&self) -> String {
        format!("feed {}", self.name())
    }
    fn send_alerts(&mut self, alerts: &[Alert]) -> Result<()> {
        self.send(alerts)
    }
}

/// The `--alerts` stream.
impl AlertSink for JsonLines {
    fn sink_name(&self) -> String {
        self.what.to_string()
    }
    fn send_alerts(&mut self, alerts: &[Alert]) -> Result<()> {
        for a in alerts {
            self.write(a);
        }
        Ok(())
    }
}

/// A destination for alerts. `send` is called from the agent's alert path:
/// no implementation blocks for long (network feeds use timeouts or a
/// background sender).
pub trait Feed: Send {
    /// A short human name for logs and metrics, e.g. `file:/var/log/x`.
    fn name(&self) -> String;
    /// Deliver (or durably queue) these alerts. An error means some of them
    /// were not delivered or queued; it has also been counted in
    /// [`Feed::failures`].
    fn send(&mut self, alerts: &[Alert]) -> Result<()>;
    /// Delivery failures so far (alerts not delivered, or for the webhook,
    /// failed delivery attempts: its alerts wait in the spool).
    fn failures(&self) -> u64;
    /// Alerts accepted but not yet delivered (the webhook's spool); 0 for
    /// feeds that deliver synchronously.
    fn pending(&self) -> u64 {
        0
    }
}

/// Mode of every file the agent creates: events hold the argv of every
/// exec on the node, alerts name secrets, paths and processes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the agent creates.
pub const DIR_MODE: u32 = 0o700;

/// `dir` and its missing parents, created 0700.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Opens `path` for appending, creating it 0600 (and its directory 0700).
pub fn open_private_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// First wait before a failed output is reopened; doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One JSON object a line, to stdout (`-`) or appended to a file.
///
/// A failing output never stops the agent: a write or flush error (disk
/// full, I/O error, closed pipe) is counted, logged with the file's name,
/// the lines it lost are counted, and the file is reopened with backoff
/// (1 s doubling to 60 s). A closed stdout pipe is reported once and not
/// retried. A file removed or replaced under the agent (logrotate without
/// copytruncate, `rm`) is noticed by [`JsonLines::check_file`] and
/// reopened at its path.
pub struct JsonLines {
    /// What the stream is, for logs and metrics: `alerts` or `events`.
    what: &'static str,
    /// `None`: stdout.
    path: Option<PathBuf>,
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    /// `(dev, ino)` of the open file.
    ident: Option<(u64, u64)>,
    /// Lines written to the buffer since the last successful flush.
    pending: u64,
    /// Lines flushed.
    pub written: u64,
    /// Failed writes, flushes and reopens (and files found removed).
    failures: u64,
    /// Lines that never reached the output.
    lost: u64,
    /// The error while the output is failing (none: it works).
    failing: Option<String>,
    /// The reader of stdout closed the pipe: nothing more is written.
    pipe_closed: bool,
    retry_at: Instant,
    backoff: Duration,
}

impl JsonLines {
    /// Opens (creating 0600) the file, or stdout for `-`. `what` names the
    /// stream in logs and metrics (`alerts`, `events`).
    pub fn open(what: &'static str, target: &str) -> Result<Self> {
        let path = (target != "-").then(|| PathBuf::from(target));
        let mut s = Self {
            what,
            path,
            out: None,
            ident: None,
            pending: 0,
            written: 0,
            failures: 0,
            lost: 0,
            failing: None,
            pipe_closed: false,
            retry_at: Instant::now(),
            backoff: FIRST_BACKOFF,
        };
        s.reopen()
            .with_context(|| format!("opening the {what} file {target}"))?;
        if let Some(p) = &s.path {
            warn_if_readable_by_others(what, p);
        }
        Ok(s)
    }

    /// `alerts:/var/log/monitor/alerts.json` or `alerts:-`: the label of
    /// this output in metrics.
    pub fn name(&self) -> String {
        format!("{}:{}", self.what, self.target())
    }

    fn target(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "-".into(),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        let w: Box<dyn Write + Send> = match &self.path {
            None => Box::new(io::stdout()),
            Some(p) => {
                let f = open_private_append(p)?;
                let m = f.metadata()?;
                self.ident = Some((m.dev(), m.ino()));
                Box::new(f)
            }
        };
        self.out = Some(BufWriter::with_capacity(64 * 1024, w));
        Ok(())
    }

    /// Failed writes, flushes and reopens so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Lines lost so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Why the output is not working now (none: it is).
    pub fn failing(&self) -> Option<&str> {
        self.failing.as_deref()
    }

    /// Writes one line (buffered). Never fails: a failure is counted,
    /// logged and retried later, and the line is counted lost.
    pub fn write<T: Serialize>(&mut self, v: &T) {
        if self.out.is_none() && !self.try_reopen() {
            self.lost += 1;
            return;
        }
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let r = serde_json::to_writer(&mut *out, v)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        self.pending += 1;
        if let Err(e) = r {
            self.fail(e);
        }
    }

    /// Writes one line already serialized (no newline), as
    /// [`JsonLines::write`] does.
    pub fn write_raw(&mut self, line: &[u8]) {
        if self.out.is_none() && !self.try_reopen() {
            self.lost += 1;
            return;
        }
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let r = out.write_all(line).and_then(|()| out.write_all(b"\n"));
        self.pending += 1;
        if let Err(e) = r {
            self.fail(e);
        }
    }

    /// Flushes the buffer; a failure is handled as in [`JsonLines::write`].
    pub fn flush(&mut self) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        match out.flush() {
            Ok(()) => {
                self.written += self.pending;
                self.pending = 0;
                if self.failing.take().is_some() {
                    tracing::warn!(
                        "{} to {}: writing again ({} lines lost in all)",
                        self.what,
                        self.target(),
                        self.lost
                    );
                    self.backoff = FIRST_BACKOFF;
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Reopens the file if it was removed or replaced at its path (the
    /// agent calls this once a second).
    pub fn check_file(&mut self) {
        let (Some(p), Some(ident)) = (self.path.clone(), self.ident) else {
            return;
        };
        if self.out.is_none() {
            return;
        }
        let now = match std::fs::metadata(&p) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(_) => return,
        };
        if now == Some(ident) {
            return;
        }
        // What was buffered goes to the old file; new lines to a new one.
        self.flush();
        self.failures += 1;
        tracing::warn!(
            "{} file {} was {}: reopening it",
            self.what,
            p.display(),
            if now.is_none() { "removed" } else { "replaced" }
        );
        self.out = None;
        self.try_reopen();
    }

    /// Reopens when the backoff has passed; whether the output is open.
    fn try_reopen(&mut self) -> bool {
        if self.pipe_closed || Instant::now() < self.retry_at {
            return false;
        }
        match self.reopen() {
            Ok(()) => true,
            Err(e) => {
                self.failures += 1;
                let why = format!("cannot reopen: {e}");
                tracing::warn!(
                    "{} file {}: {why}; {} lines lost so far, retrying in {}s",
                    self.what,
                    self.target(),
                    self.lost,
                    self.backoff.as_secs()
                );
                self.failing = Some(format!("{} to {}: {why}", self.what, self.target()));
                self.schedule_retry();
                false
            }
        }
    }

    fn schedule_retry(&mut self) {
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// A write or flush failed: what was buffered is lost (counted), the
    /// output is closed and retried after the backoff.
    fn fail(&mut self, e: io::Error) {
        self.failures += 1;
        self.lost += self.pending;
        self.pending = 0;
        if let Some(out) = self.out.take() {
            // Drop the buffer without writing it again.
            let _ = out.into_parts();
        }
        self.ident = None;
        if self.path.is_none() && e.kind() == io::ErrorKind::BrokenPipe {
            self.pipe_closed = true;
            tracing::warn!(
                "{} to stdout: the reader closed the pipe ({e}); no more {} are written there, \
                 monitoring goes on (alerts still go to the store and feeds)",
                self.what,
                self.what
            );
            self.failing = Some(format!(
                "{} to stdout: the reader closed the pipe",
                self.what
            ));
            return;
        }
        tracing::warn!(
            "{} to {}: {e}; {} lines lost so far, reopening in {}s",
            self.what,
            self.target(),
            self.lost,
            self.backoff.as_secs()
        );
        self.failing = Some(format!("{} to {}: {e}", self.what, self.target()));
        self.schedule_retry();
    }
}

/// A warning when a file the agent writes to (created earlier, perhaps by
/// an older version) can be read by other users.
pub fn warn_if_readable_by_others(what: &str, p: &Path) {
    if let Ok(m) = std::fs::metadata(p) {
        if m.mode() & 0o077 != 0 {
            tracing::warn!(
                "the {what} file {} has mode {:o}: other users can read it (the agent creates 0600)",
                p.display(),
                m.mode() & 0o7777
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn creates_private_files_and_directories() {
        let tmp = TempDir::new("jl-modes");
        let d = tmp.join("out");
        let p = d.join("sub/alerts.json");
        let mut j = JsonLines::open("alerts", p.to_str().unwrap()).unwrap();
        j.write(&serde_json::json!({"a": 1}));
        j.flush();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(d.join("sub")).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        assert_eq!(j.written, 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_removed_file_is_reopened() {
        let tmp = TempDir::new("jl-removed");
        let d = tmp.join("out");
        let p = d.join("events.json");
        let mut j = JsonLines::open("events", p.to_str().unwrap()).unwrap();
        j.write(&1);
        j.flush();
        std::fs::remove_file(&p).unwrap();
        j.check_file();
        j.write(&2);
        j.flush();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "2\n");
        assert_eq!(j.failures(), 1);
        assert_eq!(j.lost(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failing_file_counts_lost_lines_and_keeps_going() {
        // /dev/full: every write is ENOSPC.
        let mut j = JsonLines::open("alerts", "/dev/full").unwrap();
        for i in 0..3 {
            j.write(&i);
        }
        j.flush();
        assert_eq!(j.lost(), 3);
        assert_eq!(j.failures(), 1);
        let f = j.failing().unwrap().to_string();
        assert!(
            f.contains("/dev/full") && f.contains("No space left"),
            "{f}"
        );
        // Within the backoff nothing is tried; the line is counted lost.
        j.write(&4);
        j.flush();
        assert_eq!(j.lost(), 4);
        assert_eq!(j.failures(), 1);
    }
}
