//! Webhook feed: alerts POSTed as JSON arrays, through an on-disk spool that
//! survives a down endpoint and an agent restart and is replayed in order.
//!
//! ## Spool (`spool_dir`, mode 0700)
//! - `<BASE>.jsonl`: append-only segments of native alerts, one a line;
//!   `BASE` (20 digits) is the spool offset of the segment's first byte, so
//!   every alert has a stable offset (segment base + position). A segment is
//!   closed at 4 MiB and a new one started.
//! - `cursor`: `{"offset": N, "batch_end": M}`: everything before `offset`
//!   was acknowledged; `[offset, batch_end)` is the batch in flight (its
//!   extent is fixed before its first attempt, so after a restart exactly the
//!   same batch, with the same key, is sent again). Replaced atomically
//!   (write, fsync, rename).
//! - `id`: a random spool id, so keys never repeat if the spool is wiped.
//! - `lock`: `flock`ed while a feed uses the spool (a second feed or agent
//!   on the same directory is a configuration error).
//!
//! `send()` appends to the current segment synchronously (one `write`; no
//! fsync: the alerts survive an agent crash or restart, not a power loss) and
//! wakes the sender. It never waits for the network. When the spool would
//! exceed `max_spool_bytes` new alerts are refused (an error, counted).
//!
//! ## Sender (one background thread)
//! Reads the spool from the cursor, in order, up to `batch_size` alerts
//! (and at most 4 MiB) a batch, and POSTs them as one JSON array with
//! `Content-Type: application/json`, `Authorization: Bearer <token>` when
//! configured, and `Idempotency-Key: <spool id>-<offset of the batch's first
//! alert>`. Any non-2xx answer, or no answer, is retried with the same batch
//! after a backoff of 0.5 s doubling to 30 s (no jitter: one agent, one
//! endpoint); redirects are not followed. Only after a 2xx is the cursor
//! advanced and persisted, and segments wholly before it deleted. The
//! delivery guarantee is at least once; exactly once for a receiver that
//! honours `Idempotency-Key`. A line that is not JSON (a torn write after a
//! crash) is skipped and logged.
//!
//! ## HTTP
//! `ureq` 3 with rustls (ring): https verifies against the built-in Mozilla
//! (webpki) roots, or, with `ca_file`, against the PEM certificates in it
//! instead (a private SOC CA). Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`
//! /`NO_PROXY`, never for a loopback endpoint.
use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::Feed;
use crate::correlate::alert::Alert;

const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CURSOR: &str = "cursor";
const SPOOL_ID: &str = "id";
const LOCK: &str = "lock";

fn segment_name(base: u64) -> String {
    format!("{base:020}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_end: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    base: u64,
    len: u64,
}

struct State {
    /// Sorted by base; the last is the one being appended to.
    segments: Vec<Segment>,
    /// Spool offset after the last committed byte.
    end: u64,
    /// Everything before it was acknowledged.
    acked: u64,
    shutdown: bool,
}

struct Shared {
    dir: PathBuf,
    id: String,
    state: Mutex<State>,
    wake: Condvar,
    /// Alerts in the spool not yet acknowledged.
    pending: AtomicU64,
    /// Failed POST attempts plus alerts refused by `send`.
    failures: AtomicU64,
    delivered: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The segment being appended to.
struct Writer {
    file: File,
    base: u64,
    len: u64,
}

pub struct Webhook {
    url: String,
    shared: Arc<Shared>,
    writer: Option<Writer>,
    max_spool_bytes: u64,
    segment_bytes: u64,
    sender: Option<JoinHandle<()>>,
    /// Holds an exclusive `flock` on `spool_dir/lock`: one feed a spool.
    _lock: File,
}

/// The HTTP side of the sender.
struct Http {
    agent: ureq::Agent,
    url: String,
    auth: Option<String>,
}

struct Batch {
    start: u64,
    end: u64,
    /// Alerts in the body.
    count: u64,
    /// Lines skipped (not JSON).
    skipped: u64,
    body: Vec<u8>,
}

fn io_ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.with_context(what)
}

impl Webhook {
    pub fn new(cfg: &WebhookFeedConfig) -> Result<Self> {
        Self::with_segment_bytes(cfg, SEGMENT_BYTES)
    }

    fn with_segment_bytes(cfg: &WebhookFeedConfig, segment_bytes: u64) -> Result<Self> {
        let http = Http::new(cfg)?;
        let dir = cfg.spool_dir.clone();
        io_ctx(
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir),
            || format!("creating spool {}", dir.display()),
        )?;
        let lock = lock_spool(&dir)?;
        let id = spool_id(&dir)?;
        let (segments, pending, cursor) = open_spool(&dir)?;
        let end = segments.last().map(|s| s.base + s.len).unwrap_or(0);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            id,
            state: Mutex::new(State {
                segments,
                end,
                acked: cursor.offset,
                shutdown: false,
            }),
            wake: Condvar::new(),
            pending: AtomicU64::new(pending),
            failures: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        let mut w = Webhook {
            url: cfg.url.clone(),
            shared: shared.clone(),
            writer: None,
            max_spool_bytes: cfg
                .max_spool_bytes
                .unwrap_or(DEFAULT_WEBHOOK_MAX_SPOOL_BYTES),
            segment_bytes: segment_bytes.max(1),
            sender: None,
            _lock: lock,
        };
        w.writer = Some(w.open_writer(cursor.offset)?);
        let batch_size = cfg.batch_size.unwrap_or(DEFAULT_WEBHOOK_BATCH).max(1);
        let handle = std::thread::Builder::new()
            .name("monitor-webhook".into())
            .spawn(move || run_sender(shared, http, batch_size, cursor))
            .context("starting the webhook sender")?;
        w.sender = Some(handle);
        Ok(w)
    }

    /// Opens the last segment for appending, or starts one at the end of the
    /// spool (never below `floor`, so offsets are never reused).
    fn open_writer(&self, floor: u64) -> Result<Writer> {
        let mut st = self.shared.lock();
        let (base, len, new) = match st.segments.last() {
            Some(s) if s.len < self.segment_bytes => (s.base, s.len, false),
            _ => (st.end.max(floor), 0, true),
        };
        let path = self.shared.dir.join(segment_name(base));
        let file = io_ctx(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path),
            || format!("opening spool segment {}", path.display()),
        )?;
        if new {
            st.segments.push(Segment { base, len: 0 });
            st.end = base;
        }
        Ok(Writer { file, base, len })
    }

    /// Alerts in the spool not yet acknowledged by the endpoint.
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Failed POST attempts plus alerts refused by a full or unwritable spool.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Alerts acknowledged by the endpoint since this feed was created.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Waits until the spool is drained or `timeout` passes; whether it was.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.pending() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Stops the sender (after the request in flight, if any, which its
    /// timeout bounds). Undelivered alerts stay in the spool for the next
    /// start.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.shutdown = true;
        }
        self.shared.wake.notify_all();
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
    }

    fn refuse(&self, n: usize, e: anyhow::Error) -> anyhow::Error {
        self.shared.failures.fetch_add(n as u64, Ordering::Relaxed);
        e.context(format!("{}: {n} alerts not spooled", self.name()))
    }

    fn append(&mut self, buf: &[u8], n: u64) -> Result<()> {
        {
            let st = self.shared.lock();
            let used = st.end.saturating_sub(st.acked);
            if used + buf.len() as u64 > self.max_spool_bytes {
                bail!(
                    "spool {} full ({used} of {} bytes): endpoint not draining it",
                    self.shared.dir.display(),
                    self.max_spool_bytes
                );
            }
        }
        if self
            .writer
            .as_ref()
            .is_some_and(|w| w.len >= self.segment_bytes)
        {
            self.writer = None;
        }
        if self.writer.is_none() {
            self.writer = Some(self.open_writer(0)?);
        }
        let Some(w) = self.writer.as_mut() else {
            bail!("no spool segment");
        };
        if let Err(e) = w.file.write_all(buf) {
            // Roll back a partial write so the segment stays whole lines.
            let _ = w.file.set_len(w.len);
            self.writer = None;
            return Err(e).context("writing the spool");
        }
        w.len += buf.len() as u64;
        let (base, len) = (w.base, w.len);
        {
            let mut st = self.shared.lock();
            // Counted before the sender can see (and acknowledge) them.
            self.shared.pending.fetch_add(n, Ordering::Relaxed);
            if let Some(s) = st.segments.iter_mut().rev().find(|s| s.base == base) {
                s.len = len;
            }
            st.end = base + len;
        }
        self.shared.wake.notify_all();
        Ok(())
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Feed for Webhook {
    fn name(&self) -> String {
        format!("webhook:{}", redact_url(&self.url))
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(alerts.len() * 512);
        for a in alerts {
            if let Err(e) = serde_json::to_writer(&mut buf, a) {
                return Err(self.refuse(alerts.len(), e.into()));
            }
            buf.push(b'\n');
        }
        self.append(&buf, alerts.len() as u64)
            .map_err(|e| self.refuse(alerts.len(), e))
    }

    fn failures(&self) -> u64 {
        Webhook::failures(self)
    }

    fn pending(&self) -> u64 {
        Webhook::pending(self)
    }
}

/// The URL without userinfo or query (which may carry credentials).
fn redact_url(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(u) => {
            format!(
                "{}://{}{}",
                u.scheme_str().unwrap_or("?"),
                u.host().unwrap_or("?"),
                u.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
            ) + u.path()
        }
        Err(_) => "(invalid url)".into(),
    }
}

/// Takes the spool's lock, or fails if another feed (or agent) has it.
fn lock_spool(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let p = dir.join(LOCK);
    let f = io_ctx(
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p),
        || format!("opening {}", p.display()),
    )?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            bail!(
                "spool {} is in use by another webhook feed or agent",
                dir.display()
            );
        }
        return Err(e).with_context(|| format!("locking {}", p.display()));
    }
    Ok(f)
}

fn spool_id(dir: &Path) -> Result<String> {
    let p = dir.join(SPOOL_ID);
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim();
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(s.to_string());
        }
    }
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow!("random spool id: {e}"))?;
    let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
    write_atomic(&p, id.as_bytes()).with_context(|| format!("writing spool id {}", p.display()))?;
    Ok(id)
}

fn write_atomic(p: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = p.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, p)
}

fn read_cursor(dir: &Path) -> Option<Cursor> {
    let text = std::fs::read(dir.join(CURSOR)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                "spool {}: unreadable cursor ({e}); replaying from the oldest segment",
                dir.display()
            );
            None
        }
    }
}

fn persist_cursor(dir: &Path, c: &Cursor) {
    let data = match serde_json::to_vec(c) {
        Ok(d) => d,
        Err(_) => return,
    };
    if let Err(e) = write_atomic(&dir.join(CURSOR), &data) {
        tracing::warn!("spool {}: saving cursor: {e}", dir.display());
    }
}

/// Lines (a trailing fragment counts as one) in `path` from byte `from`.
fn count_lines(path: &Path, from: u64) -> io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut n, mut last) = (0u64, b'\n');
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|b| **b == b'\n').count() as u64;
        last = buf[k - 1];
    }
    Ok(n + u64::from(last != b'\n'))
}

/// Scans the spool: its segments (the last one's torn tail cut off), the
/// number of unacknowledged lines and the cursor, clamped to the segments.
fn open_spool(dir: &Path) -> Result<(Vec<Segment>, u64, Cursor)> {
    let mut segments = Vec::new();
    let rd = io_ctx(std::fs::read_dir(dir), || {
        format!("reading spool {}", dir.display())
    })?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(base) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        segments.push(Segment { base, len });
    }
    segments.sort_by_key(|s| s.base);
    // A crash mid-write may have left a partial last line: cut it off.
    if let Some(last) = segments.last_mut() {
        let path = dir.join(segment_name(last.base));
        let keep = complete_prefix(&path)?;
        if keep != last.len {
            tracing::warn!(
                "spool {}: dropping a torn line ({} bytes) at its end",
                path.display(),
                last.len - keep
            );
            let f = io_ctx(OpenOptions::new().write(true).open(&path), || {
                format!("opening {}", path.display())
            })?;
            io_ctx(f.set_len(keep), || format!("truncating {}", path.display()))?;
            last.len = keep;
        }
    }
    let first = segments.first().map(|s| s.base).unwrap_or(0);
    let end = segments.last().map(|s| s.base + s.len).unwrap_or(0);
    let mut cursor = read_cursor(dir).unwrap_or(Cursor {
        offset: first,
        batch_end: None,
    });
    if segments.is_empty() {
        // Nothing to send; keep offsets moving forward.
        cursor.batch_end = None;
    } else {
        cursor.offset = cursor.offset.clamp(first, end);
    }
    if cursor
        .batch_end
        .is_some_and(|e| e <= cursor.offset || e > end)
    {
        cursor.batch_end = None;
    }
    let mut pending = 0;
    for s in &segments {
        if s.base + s.len <= cursor.offset || s.len == 0 {
            continue;
        }
        let from = cursor.offset.saturating_sub(s.base);
        let path = dir.join(segment_name(s.base));
        pending += io_ctx(count_lines(&path, from), || {
            format!("reading {}", path.display())
        })?;
    }
    Ok((segments, pending, cursor))
}

/// Length of the longest prefix of the file that ends with a newline.
fn complete_prefix(path: &Path) -> Result<u64> {
    let mut f = io_ctx(File::open(path), || format!("opening {}", path.display()))?;
    let len = io_ctx(f.metadata(), || format!("stat {}", path.display()))?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let k = (end - start) as usize;
        io_ctx(f.seek(SeekFrom::Start(start)), || {
            format!("reading {}", path.display())
        })?;
        io_ctx(f.read_exact(&mut buf[..k]), || {
            format!("reading {}", path.display())
        })?;
        if let Some(i) = buf[..k].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Reads the next batch from `start`: up to `max` alerts (and
/// `MAX_BODY_BYTES`), or exactly up to `exact_end` (a batch fixed before a
/// restart).
fn read_batch(sh: &Shared, start: u64, max: usize, exact_end: Option<u64>) -> Result<Batch> {
    let (segments, end) = {
        let st = sh.lock();
        (st.segments.clone(), st.end)
    };
    let stop = exact_end.unwrap_or(end).min(end);
    let mut b = Batch {
        start,
        end: start,
        count: 0,
        skipped: 0,
        body: vec![b'['],
    };
    let full = |b: &Batch| {
        exact_end.is_none() && (b.count as usize >= max || b.body.len() >= MAX_BODY_BYTES)
    };
    let mut off = start;
    let mut line = Vec::new();
    'segments: while off < stop && !full(&b) {
        let Some(seg) = segments.iter().find(|s| s.base + s.len > off).copied() else {
            off = stop;
            break;
        };
        if seg.base > off {
            tracing::warn!(
                "spool {}: gap at offset {off}, resuming at {}",
                sh.dir.display(),
                seg.base
            );
            off = seg.base;
            continue;
        }
        let path = sh.dir.join(segment_name(seg.base));
        let mut f = io_ctx(File::open(&path), || format!("opening {}", path.display()))?;
        io_ctx(f.seek(SeekFrom::Start(off - seg.base)), || {
            format!("reading {}", path.display())
        })?;
        let limit = (seg.base + seg.len).min(stop) - off;
        let mut r = BufReader::new(f.take(limit));
        loop {
            if full(&b) || off >= stop {
                break 'segments;
            }
            line.clear();
            let n = io_ctx(r.read_until(b'\n', &mut line), || {
                format!("reading {}", path.display())
            })?;
            if n == 0 {
                break;
            }
            off += n as u64;
            let text = line.strip_suffix(b"\n");
            match text.filter(|t| serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok()) {
                Some(t) => {
                    if b.count > 0 {
                        b.body.push(b',');
                    }
                    b.body.extend_from_slice(t);
                    b.count += 1;
                }
                None => {
                    tracing::warn!(
                        "spool {}: skipping a line that is not an alert at offset {}",
                        path.display(),
                        off - n as u64
                    );
                    b.skipped += 1;
                }
            }
        }
    }
    b.body.push(b']');
    b.end = off;
    Ok(b)
}

impl Http {
    fn new(cfg: &WebhookFeedConfig) -> Result<Self> {
        let uri: ureq::http::Uri = cfg
            .url
            .parse()
            .with_context(|| format!("webhook url {:?}", cfg.url))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("webhook url {:?}: expected http:// or https://", cfg.url),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("webhook url {:?}: no host", cfg.url))?;
        let auth = match cfg.token()? {
            Some(t) => {
                if !t.bytes().all(|b| b.is_ascii_graphic()) {
                    bail!("webhook bearer token: only visible ASCII characters are allowed");
                }
                Some(format!("Bearer {t}"))
            }
            None => None,
        };
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(ca) = &cfg.ca_file {
            if !https {
                tracing::warn!(
                    "webhook {}: ca_file is unused with http://",
                    redact_url(&cfg.url)
                );
            }
            let pem =
                std::fs::read(ca).with_context(|| format!("reading ca_file {}", ca.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item.with_context(|| format!("parsing ca_file {}", ca.display()))? {
                    ureq::tls::PemItem::Certificate(c) => certs.push(c),
                    _ => continue,
                }
            }
            if certs.is_empty() {
                bail!("ca_file {}: no PEM certificate in it", ca.display());
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let timeout = Duration::from_secs(
            cfg.timeout_seconds
                .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_SECONDS)
                .max(1),
        );
        let mut b = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("monitor/{}", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build());
        if loopback {
            b = b.proxy(None);
        }
        Ok(Http {
            agent: b.build().into(),
            url: cfg.url.clone(),
            auth,
        })
    }

    fn post(&self, key: &str, body: &[u8]) -> Result<(), String> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        match req.send(body) {
            Ok(mut resp) => {
                let status = resp.status();
                // Read (a bounded amount of) the answer so the connection
                // can be reused.
                let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Waits `d` unless shutdown; whether shutdown was asked.
fn sleep_or_shutdown(sh: &Shared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut st = sh.lock();
    while !st.shutdown {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        st = match sh.wake.wait_timeout(st, deadline - now) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
    true
}

fn run_sender(sh: Arc<Shared>, http: Http, batch_size: usize, mut cursor: Cursor) {
    let mut backoff = BACKOFF_MIN;
    let mut batch: Option<Batch> = None;
    loop {
        if batch.is_none() {
            {
                let mut st = sh.lock();
                while !st.shutdown && st.end <= cursor.offset {
                    st = match sh.wake.wait(st) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
                if st.shutdown {
                    return;
                }
            }
            match read_batch(&sh, cursor.offset, batch_size, cursor.batch_end) {
                Ok(b) if b.end == b.start => {
                    // Nothing readable (a segment vanished): wait for more.
                    if sleep_or_shutdown(&sh, backoff) {
                        return;
                    }
                    continue;
                }
                Ok(b) if b.count == 0 => {
                    // Only unreadable lines: step over them.
                    acknowledge(&sh, &mut cursor, &b);
                    continue;
                }
                Ok(b) => {
                    if cursor.batch_end != Some(b.end) {
                        cursor.batch_end = Some(b.end);
                        persist_cursor(&sh.dir, &cursor);
                    }
                    batch = Some(b);
                }
                Err(e) => {
                    sh.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("webhook spool: {e:#}");
                    if sleep_or_shutdown(&sh, backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let Some(b) = batch.as_ref() else {
            continue;
        };
        if sh.lock().shutdown {
            return;
        }
        let key = format!("{}-{}", sh.id, b.start);
        match http.post(&key, &b.body) {
            Ok(()) => {
                acknowledge(&sh, &mut cursor, b);
                sh.delivered.fetch_add(b.count, Ordering::Relaxed);
                batch = None;
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                sh.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "webhook {}: {} alerts not delivered ({e}); retrying in {:?}",
                    redact_url(&http.url),
                    b.count,
                    backoff
                );
                if sleep_or_shutdown(&sh, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The batch is done: advance and persist the cursor, delete the segments
/// wholly before it (never the one being appended to).
fn acknowledge(sh: &Shared, cursor: &mut Cursor, b: &Batch) {
    cursor.offset = b.end;
    cursor.batch_end = None;
    persist_cursor(&sh.dir, cursor);
    let _ = sh
        .pending
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
            Some(p.saturating_sub(b.count + b.skipped))
        });
    let done: Vec<Segment> = {
        let mut st = sh.lock();
        st.acked = b.end;
        let last = st.segments.len().saturating_sub(1);
        let (mut gone, mut keep) = (Vec::new(), Vec::new());
        for (i, s) in st.segments.iter().enumerate() {
            if i < last && s.base + s.len <= b.end {
                gone.push(*s);
            } else {
                keep.push(*s);
            }
        }
        st.segments = keep;
        gone
    };
    for s in done {
        let p = sh.dir.join(segment_name(s.base));
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("spool: removing {}: {e}", p.display());
            }
        }
    }
}

pub const DEFAULT_WEBHOOK_BATCH: usize = 100;
pub const DEFAULT_WEBHOOK_TIMEOUT_SECONDS: u64 = 10;
pub const DEFAULT_WEBHOOK_MAX_SPOOL_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFeedConfig {
    /// `http://` or `https://` (TLS by rustls).
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// A file holding the token (trailing whitespace ignored); an
    /// alternative to `bearer_token` that keeps it out of the config.
    pub bearer_token_file: Option<PathBuf>,
    /// Most alerts in one POST (default 100).
    pub batch_size: Option<usize>,
    /// The on-disk spool (created if missing; one directory per feed).
    pub spool_dir: PathBuf,
    /// Whole-request timeout (default 10 s).
    pub timeout_seconds: Option<u64>,
    /// PEM root certificates trusted for https instead of the built-in
    /// public (Mozilla/webpki) roots, e.g. a private SOC CA.
    pub ca_file: Option<PathBuf>,
    /// Most bytes the spool may hold; alerts beyond it are refused (and
    /// counted as failures) until the endpoint drains it (default 1 GiB).
    pub max_spool_bytes: Option<u64>,
}

/// Never prints the bearer token.
impl std::fmt::Debug for WebhookFeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookFeedConfig")
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("bearer_token_file", &self.bearer_token_file)
            .field("batch_size", &self.batch_size)
            .field("spool_dir", &self.spool_dir)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("ca_file", &self.ca_file)
            .field("max_spool_bytes", &self.max_spool_bytes)
            .finish()
    }
}

impl WebhookFeedConfig {
    /// The token from `bearer_token` or `bearer_token_file` (not both).
    pub fn token(&self) -> Result<Option<String>> {
        match (&self.bearer_token, &self.bearer_token_file) {
            (Some(_), Some(_)) => {
                bail!("webhook feed: set bearer_token or bearer_token_file, not both")
            }
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(p)) => {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("reading bearer_token_file {}", p.display()))?;
                let t = t.trim_end().to_string();
                if t.is_empty() {
                    bail!("bearer_token_file {} is empty", p.display());
                }
                Ok(Some(t))
            }
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::file::tests::alert;
    use crate::testutil::TempDir;
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicBool;

    /// One request as the receiver saw it.
    #[derive(Clone, Debug)]
    struct Seen {
        status: u16,
        auth: Option<String>,
        key: Option<String>,
        content_type: Option<String>,
        alerts: Vec<Alert>,
    }

    /// A minimal HTTP/1.1 server: answers `503` to the first `fail` requests,
    /// then `200`; records every request.
    struct Receiver {
        seen: Arc<Mutex<Vec<Seen>>>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Receiver {
        fn start(listener: TcpListener, fail: usize) -> Self {
            Self::start_with(listener, fail, None)
        }

        fn start_with(
            listener: TcpListener,
            fail: usize,
            tls: Option<Arc<rustls::ServerConfig>>,
        ) -> Self {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            listener.set_nonblocking(true).unwrap();
            let (s2, st2) = (seen.clone(), stop.clone());
            let handle = std::thread::spawn(move || {
                let answered = Arc::new(AtomicU64::new(0));
                let mut conns = Vec::new();
                while !st2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((c, _)) => {
                            let (seen, stop, answered, tls) =
                                (s2.clone(), st2.clone(), answered.clone(), tls.clone());
                            conns.push(std::thread::spawn(move || {
                                c.set_nonblocking(false).unwrap();
                                c.set_read_timeout(Some(Duration::from_millis(200)))
                                    .unwrap();
                                match tls {
                                    None => serve(c, fail, &seen, &stop, &answered),
                                    Some(cfg) => {
                                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                                        let s = rustls::StreamOwned::new(conn, c);
                                        serve(s, fail, &seen, &stop, &answered)
                                    }
                                }
                            }));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            });
            Receiver {
                seen,
                stop,
                handle: Some(handle),
            }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        /// The alerts of the acknowledged requests, in order.
        fn delivered(&self) -> Vec<Alert> {
            self.seen()
                .into_iter()
                .filter(|s| s.status == 200)
                .flat_map(|s| s.alerts)
                .collect()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    /// Reads one line, retrying read timeouts until stop. `None` at EOF or stop.
    fn read_line<R: BufRead>(r: &mut R, stop: &AtomicBool, buf: &mut Vec<u8>) -> Option<()> {
        buf.clear();
        loop {
            match r.read_until(b'\n', buf) {
                Ok(0) => return None,
                Ok(_) if buf.ends_with(b"\n") => return Some(()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn read_exact_retry<R: Read>(r: &mut R, stop: &AtomicBool, out: &mut [u8]) -> Option<()> {
        let mut got = 0;
        while got < out.len() {
            match r.read(&mut out[got..]) {
                Ok(0) => return None,
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
        Some(())
    }

    fn serve<S: Read + Write>(
        s: S,
        fail: usize,
        seen: &Mutex<Vec<Seen>>,
        stop: &AtomicBool,
        answered: &AtomicU64,
    ) {
        let mut r = BufReader::new(s);
        let mut line = Vec::new();
        // One request after another on a kept-alive connection.
        while read_line(&mut r, stop, &mut line).is_some() {
            let mut headers = HashMap::new();
            loop {
                if read_line(&mut r, stop, &mut line).is_none() {
                    return;
                }
                let l = String::from_utf8_lossy(&line).trim_end().to_string();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let mut body = Vec::new();
            if let Some(n) = headers.get("content-length") {
                body = vec![0u8; n.parse().unwrap()];
                if read_exact_retry(&mut r, stop, &mut body).is_none() {
                    return;
                }
            } else if headers
                .get("transfer-encoding")
                .is_some_and(|t| t.contains("chunked"))
            {
                loop {
                    if read_line(&mut r, stop, &mut line).is_none() {
                        return;
                    }
                    let size = usize::from_str_radix(
                        String::from_utf8_lossy(&line)
                            .trim()
                            .split(';')
                            .next()
                            .unwrap(),
                        16,
                    )
                    .unwrap();
                    let mut chunk = vec![0u8; size + 2];
                    if read_exact_retry(&mut r, stop, &mut chunk).is_none() {
                        return;
                    }
                    body.extend_from_slice(&chunk[..size]);
                    if size == 0 {
                        break;
                    }
                }
            }
            let n = answered.fetch_add(1, Ordering::SeqCst) as usize;
            let status = if n < fail { 503 } else { 200 };
            let alerts: Vec<Alert> =
                serde_json::from_slice(&body).expect("body is a JSON array of alerts");
            seen.lock().unwrap().push(Seen {
                status,
                auth: headers.get("authorization").cloned(),
                key: headers.get("idempotency-key").cloned(),
                content_type: headers.get("content-type").cloned(),
                alerts,
            });
            let reason = if status == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let resp = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
            );
            let w = r.get_mut();
            if w.write_all(resp.as_bytes())
                .and_then(|_| w.flush())
                .is_err()
            {
                return;
            }
        }
    }

    /// A loopback port nobody listens on (yet).
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn cfg(url: String, spool: &Path, token: Option<&str>, batch: usize) -> WebhookFeedConfig {
        WebhookFeedConfig {
            url,
            bearer_token: token.map(String::from),
            bearer_token_file: None,
            batch_size: Some(batch),
            spool_dir: spool.into(),
            timeout_seconds: Some(5),
            ca_file: None,
            max_spool_bytes: None,
        }
    }

    fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ids(alerts: &[Alert]) -> Vec<(String, String)> {
        alerts
            .iter()
            .map(|a| (a.secret_id.clone(), a.summary.clone()))
            .collect()
    }

    fn segments_in(dir: &Path) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| parse_segment_name(e.ok()?.file_name().to_str()?))
            .collect();
        v.sort();
        v
    }

    /// Each retry of a batch is the same batch under the same key.
    fn assert_stable_keys(seen: &[Seen]) {
        let mut by_key: HashMap<&str, &Vec<Alert>> = HashMap::new();
        for s in seen {
            let k = s.key.as_deref().expect("Idempotency-Key sent");
            if let Some(prev) = by_key.insert(k, &s.alerts) {
                assert_eq!(prev, &s.alerts, "key {k} reused for another batch");
            }
        }
    }

    #[test]
    fn every_alert_arrives_once_in_order_across_an_outage() {
        let spool = TempDir::new("webhook-outage");
        let port = closed_port();
        let line = serde_json::to_vec(&alert(0)).unwrap().len() as u64 + 1;
        let mut w = Webhook::with_segment_bytes(
            &cfg(
                format!("http://127.0.0.1:{port}/ingest"),
                &spool,
                Some("t0ken-123"),
                10,
            ),
            // Small segments: fully-sent ones must be deleted.
            4 * line,
        )
        .unwrap();
        let alerts: Vec<Alert> = (0..25).map(alert).collect();
        for chunk in alerts.chunks(5) {
            w.send(chunk).unwrap();
        }
        assert_eq!(w.pending(), 25);
        // The endpoint refuses connections for a while.
        wait_for("a refused attempt", Duration::from_secs(10), || {
            w.failures() >= 1
        });
        assert_eq!(w.pending(), 25);
        // A segment is closed once past its size, between two sends.
        assert_eq!(segments_in(&spool).len(), 5, "{:?}", segments_in(&spool));
        // Then it listens, but answers 503 twice before accepting.
        let rx = Receiver::start(TcpListener::bind(("127.0.0.1", port)).unwrap(), 2);
        assert!(w.drain(Duration::from_secs(60)), "pending {}", w.pending());
        let got = rx.delivered();
        assert_eq!(ids(&got), ids(&alerts), "every alert once, in order");
        assert_eq!(got, alerts);
        let seen = rx.seen();
        assert_eq!(seen.iter().filter(|s| s.status == 503).count(), 2);
        for s in &seen {
            assert_eq!(s.auth.as_deref(), Some("Bearer t0ken-123"));
            assert_eq!(s.content_type.as_deref(), Some("application/json"));
            assert!(s.alerts.len() <= 10);
        }
        assert_stable_keys(&seen);
        assert!(w.failures() >= 3, "refused + 2x503: {}", w.failures());
        assert_eq!(w.delivered(), 25);
        // Fully-sent segments are gone; only the one being appended to stays.
        assert_eq!(segments_in(&spool).len(), 1, "{:?}", segments_in(&spool));
        let c: Cursor =
            serde_json::from_slice(&std::fs::read(spool.join(CURSOR)).unwrap()).unwrap();
        assert_eq!(c.offset, 25 * line);
        assert_eq!(c.batch_end, None);
        assert!(w.name().starts_with("webhook:http://127.0.0.1:"));
        w.shutdown();
        drop(rx);
        let _ = std::fs::remove_dir_all(&spool);
    }

    #[test]
    fn the_spool_survives_a_restart_and_is_replayed_in_order() {
        let spool = TempDir::new("webhook-restart");
        let port = closed_port();
        let url = format!("http://127.0.0.1:{port}/");
        let alerts: Vec<Alert> = (0..15).map(alert).collect();
        let t = Instant::now();
        {
            let mut w = Webhook::new(&cfg(url.clone(), &spool, Some("tok"), 4)).unwrap();
            for chunk in alerts[..12].chunks(3) {
                w.send(chunk).unwrap();
            }
            wait_for("a refused attempt", Duration::from_secs(10), || {
                w.failures() >= 1
            });
            assert_eq!(w.pending(), 12);
            w.shutdown();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "shutdown is prompt");
        // The agent starts again; the endpoint is still down at first.
        let mut w = Webhook::new(&cfg(url.clone(), &spool, Some("tok"), 4)).unwrap();
        assert_eq!(w.pending(), 12);
        w.send(&alerts[12..]).unwrap();
        assert_eq!(w.pending(), 15);
        std::thread::sleep(Duration::from_millis(300));
        let rx = Receiver::start(TcpListener::bind(("127.0.0.1", port)).unwrap(), 0);
        assert!(w.drain(Duration::from_secs(60)), "pending {}", w.pending());
        assert_eq!(ids(&rx.delivered()), ids(&alerts));
        let seen = rx.seen();
        assert!(seen.iter().all(|s| s.auth.as_deref() == Some("Bearer tok")));
        assert_stable_keys(&seen);
        // The first batch is the one fixed before the restart: its key is
        // the spool offset of alert 0.
        let id = std::fs::read_to_string(spool.join(SPOOL_ID)).unwrap();
        assert_eq!(
            seen[0].key.as_deref(),
            Some(format!("{}-0", id.trim()).as_str())
        );
        w.shutdown();
        // A third start has nothing to resend.
        let w = Webhook::new(&cfg(url, &spool, Some("tok"), 4)).unwrap();
        assert_eq!(w.pending(), 0);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(rx.seen().len(), seen.len(), "nothing sent twice");
        w.shutdown();
        drop(rx);
        let _ = std::fs::remove_dir_all(&spool);
    }

    #[test]
    fn torn_and_garbage_lines_are_skipped_not_sent() {
        let spool = TempDir::new("webhook-torn");
        let mut data = Vec::new();
        for i in 0..2 {
            data.extend(serde_json::to_vec(&alert(i)).unwrap());
            data.push(b'\n');
        }
        data.extend_from_slice(b"{not json\n");
        data.extend(serde_json::to_vec(&alert(2)).unwrap());
        data.push(b'\n');
        // A crash in the middle of a write.
        data.extend_from_slice(br#"{"time":"2026"#);
        std::fs::write(spool.join(segment_name(0)), &data).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut w =
            Webhook::new(&cfg(format!("http://127.0.0.1:{port}/"), &spool, None, 100)).unwrap();
        assert_eq!(w.pending(), 4, "three alerts and one garbage line");
        w.send(&[alert(3)]).unwrap();
        let rx = Receiver::start(l, 0);
        assert!(w.drain(Duration::from_secs(30)));
        assert_eq!(
            ids(&rx.delivered()),
            ids(&(0..4).map(alert).collect::<Vec<_>>())
        );
        assert!(rx.seen().iter().all(|s| s.auth.is_none()));
        w.shutdown();
        drop(rx);
        let _ = std::fs::remove_dir_all(&spool);
    }

    #[test]
    fn a_full_spool_refuses_and_counts() {
        let spool = TempDir::new("webhook-full");
        let mut c = cfg(
            format!("http://127.0.0.1:{}/", closed_port()),
            &spool,
            None,
            10,
        );
        let line = serde_json::to_vec(&alert(0)).unwrap().len() as u64 + 1;
        c.max_spool_bytes = Some(3 * line);
        let mut w = Webhook::new(&c).unwrap();
        // One feed a spool.
        let e = Webhook::new(&c)
            .err()
            .expect("second feed on the same spool");
        assert!(format!("{e:#}").contains("in use"), "{e:#}");
        w.send(&[alert(0), alert(1), alert(2)]).unwrap();
        let e = w.send(&[alert(3), alert(4)]).unwrap_err();
        assert!(format!("{e:#}").contains("full"), "{e:#}");
        assert!(w.failures() >= 2);
        assert_eq!(w.pending(), 3);
        w.shutdown();
        let _ = std::fs::remove_dir_all(&spool);
    }

    #[test]
    fn bad_configs_are_errors() {
        let spool = TempDir::new("webhook-badcfg");
        for url in ["ftp://x/", "not a url", "http:///nohost"] {
            assert!(
                Webhook::new(&cfg(url.into(), &spool, None, 1)).is_err(),
                "{url}"
            );
        }
        assert!(Webhook::new(&cfg("http://127.0.0.1:1/".into(), &spool, Some("a\nb"), 1)).is_err());
        let mut c = cfg("https://127.0.0.1:1/".into(), &spool, None, 1);
        let ca = spool.join("ca.pem");
        std::fs::write(&ca, "no certificate here").unwrap();
        c.ca_file = Some(ca);
        assert!(Webhook::new(&c).is_err());
        assert_eq!(
            redact_url("https://user:pw@h.example:8443/p?token=x"),
            "https://h.example:8443/p"
        );
        let _ = std::fs::remove_dir_all(&spool);
    }

    fn openssl(args: &[&str], dir: &Path) -> bool {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn https_with_a_private_ca() {
        let dir = TempDir::new("webhook-tls");
        // A CA and a server certificate for 127.0.0.1, made by openssl.
        let ok = openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=monitor test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
            &dir,
        ) && openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &dir,
        ) && {
            std::fs::write(
                dir.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    "srv.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "srv.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                ],
                &dir,
            )
        };
        // `cargo xtask setup` installs openssl.
        assert!(ok, "openssl could not make a test certificate");
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("srv.pem"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let rx = Receiver::start_with(l, 0, Some(Arc::new(server)));
        let url = format!("https://127.0.0.1:{port}/in");

        // Without the CA the server is not trusted: nothing is delivered.
        let spool = dir.join("spool-untrusted");
        let mut w = Webhook::new(&cfg(url.clone(), &spool, Some("tls-tok"), 10)).unwrap();
        w.send(&[alert(0)]).unwrap();
        wait_for("a failed handshake", Duration::from_secs(10), || {
            w.failures() >= 1
        });
        assert_eq!(w.pending(), 1);
        w.shutdown();
        assert!(rx.seen().is_empty());

        // With it, delivery works.
        let mut c = cfg(url, &dir.join("spool"), Some("tls-tok"), 10);
        c.ca_file = Some(dir.join("ca.pem"));
        let mut w = Webhook::new(&c).unwrap();
        let alerts: Vec<Alert> = (0..3).map(alert).collect();
        w.send(&alerts).unwrap();
        assert!(
            w.drain(Duration::from_secs(30)),
            "failures {}",
            w.failures()
        );
        assert_eq!(rx.delivered(), alerts);
        assert_eq!(rx.seen()[0].auth.as_deref(), Some("Bearer tls-tok"));
        w.shutdown();
        drop(rx);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
