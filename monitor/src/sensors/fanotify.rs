//! Watched files through fanotify: inode marks on every delivery and
//! watched file report opens, reads (`FAN_ACCESS`: read(2), readv,
//! sendfile/splice, io_uring reads all pass the VFS hook), closes and
//! exec-opens with the accessor's pid, whatever syscall did it. Optionally
//! (`enforce = ["secret.read.foreign"]`) opens of delivery files are
//! permission events (`FAN_OPEN_PERM`) answered from in-memory state: a
//! foreign process gets `EPERM`.
//!
//! A dedicated thread does the blocking read of the fanotify group and
//! answers permission events at once (never waiting on the agent); the
//! other events go to the agent through a bounded channel (a full channel
//! is counted as lost, never silent). When the agent stops or crashes the
//! group's descriptor closes and the kernel allows every pending and future
//! open: the monitor never blocks anyone by being gone.
//!
//! While the syscall tracepoints also report the same accesses,
//! [`FanQueue`] holds fanotify's events for a moment and drops those the
//! tracepoints reported (same process, inode and kind): one access, one
//! event, one alert.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;

use crate::{
    correlate::enforce::EnforcePolicy,
    enrich::procfs::{user_dev_to_kernel, ProcFs},
    observer::decode::RawEvent,
};

/// Events fanotify reports on a watched file.
const NOTIFY_MASK: u64 = libc::FAN_OPEN
    | libc::FAN_ACCESS
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_CLOSE_NOWRITE
    | libc::FAN_OPEN_EXEC;

/// Events queued towards the agent before new ones are counted as lost.
const CHANNEL: usize = 16_384;

/// How long a fanotify event waits for the same access from a tracepoint.
pub const DEDUP_DELAY: Duration = Duration::from_millis(300);
/// A tracepoint event this close to a fanotify one is the same access.
const DEDUP_WINDOW: Duration = Duration::from_secs(2);

/// What happened to a watched file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FanKind {
    Open,
    Read,
    Close,
    /// A `FAN_OPEN_PERM` answered with a deny.
    Denied,
}

impl FanKind {
    pub fn as_str(self) -> &'static str {
        self.event_kind().as_str()
    }

    /// The event it is reported as.
    pub fn event_kind(self) -> crate::event::EventKind {
        use crate::event::EventKind;
        match self {
            FanKind::Open | FanKind::Denied => EventKind::Open,
            FanKind::Read => EventKind::Read,
            FanKind::Close => EventKind::Close,
        }
    }
}

/// One access to a marked file.
#[derive(Clone, Debug)]
pub struct FanEvent {
    pub kind: FanKind,
    /// Thread-group id of the accessor.
    pub pid: u32,
    pub ino: u64,
    /// Kernel encoding (major << 20 | minor), as the tracepoints report it.
    pub dev: u32,
    pub mode: u32,
    pub comm: [u8; 16],
    pub uid: u32,
    pub gid: u32,
    /// The accessor's cgroup id when the agent read the event (0: unknown):
    /// a process moved into a pod's cgroup after the agent first saw it is
    /// attributed to the pod, not to where it was forked.
    pub cgroup_id: u64,
    /// Wall-clock nanoseconds when the agent read the event.
    pub unix_ns: i128,
    /// When the agent read it (for the dedup delay).
    pub at: Instant,
}

/// The fanotify group: marks are added from the agent, events come out of
/// [`Fanotify::take_events`].
pub struct Fanotify {
    fd: Arc<OwnedFd>,
    mask: u64,
    marks: usize,
    enforce: bool,
    policy: Arc<RwLock<EnforcePolicy>>,
    lost: Arc<AtomicU64>,
    denied: Arc<AtomicU64>,
    rx: Option<mpsc::Receiver<FanEvent>>,
    /// Directories holding watched files (none: unavailable).
    dirs: Option<DirWatch>,
    changed: Arc<tokio::sync::Notify>,
}

impl Fanotify {
    /// A group (permission class when `enforce`), and its reader thread.
    pub fn start(
        host_proc: &std::path::Path,
        cgroup2_root: Option<&std::path::Path>,
        enforce: bool,
    ) -> Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLOEXEC | libc::FAN_CLASS_CONTENT,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            bail!(
                "fanotify_init: {} (needs root and CONFIG_FANOTIFY{})",
                std::io::Error::last_os_error(),
                if enforce {
                    ", CONFIG_FANOTIFY_ACCESS_PERMISSIONS"
                } else {
                    ""
                }
            );
        }
        // SAFETY: a fresh descriptor we own.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let policy = Arc::new(RwLock::new(EnforcePolicy::default()));
        let lost = Arc::new(AtomicU64::new(0));
        let denied = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(CHANNEL);
        let reader = Reader {
            fd: fd.clone(),
            procfs: ProcFs::new(host_proc),
            cgroup2_root: cgroup2_root.map(std::path::Path::to_path_buf),
            policy: policy.clone(),
            lost: lost.clone(),
            denied: denied.clone(),
            tx,
            own_pid: std::process::id(),
        };
        std::thread::Builder::new()
            .name("fanotify".into())
            .spawn(move || reader.run())
            .context("fanotify reader thread")?;
        let mut mask = NOTIFY_MASK;
        if enforce {
            mask |= libc::FAN_OPEN_PERM;
        }
        let changed = Arc::new(tokio::sync::Notify::new());
        let dirs = match DirWatch::start(changed.clone()) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("{e:#}: new and replaced files are seen at the next rescan");
                None
            }
        };
        Ok(Self {
            dirs,
            changed,
            fd,
            mask,
            marks: 0,
            enforce,
            policy,
            lost,
            denied,
            rx: Some(rx),
        })
    }

    /// The receiving end of the events (taken once, by the agent's loop).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<FanEvent>> {
        self.rx.take()
    }

    /// Mark the file at `path` (symlinks followed: the inode behind it).
    /// Marking an inode twice is harmless.
    pub fn mark(&mut self, path: &str) -> Result<()> {
        let c = CString::new(path).with_context(|| format!("path {path:?}"))?;
        // SAFETY: valid descriptor and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD,
                self.mask,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 {
            bail!("fanotify mark {path}: {}", std::io::Error::last_os_error());
        }
        self.marks += 1;
        Ok(())
    }

    /// Also watch the directories of `path` (its own, and the one of the
    /// file it resolves to) for files created or renamed into them: a
    /// replacement or a Kubernetes `..data` swap wakes [`Fanotify::changed`]
    /// at once instead of waiting for the next rescan.
    pub fn watch_dirs_of(&mut self, path: &str) {
        let Some(d) = self.dirs.as_mut() else {
            return;
        };
        let p = std::path::Path::new(path);
        let mut dirs = vec![p.parent().map(|d| d.to_path_buf())];
        dirs.push(
            std::fs::canonicalize(p)
                .ok()
                .and_then(|c| c.parent().map(|d| d.to_path_buf())),
        );
        for dir in dirs.into_iter().flatten() {
            if let Err(e) = d.mark(&dir) {
                tracing::warn!("{e:#}");
            }
        }
    }

    /// Woken when something was created or renamed in a watched file's
    /// directory (time to rescan).
    pub fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// Files marked so far.
    pub fn marks(&self) -> usize {
        self.marks
    }

    pub fn enforcing(&self) -> bool {
        self.enforce
    }

    /// Replace what permission decisions are made from.
    pub fn set_policy(&self, p: EnforcePolicy) {
        if let Ok(mut g) = self.policy.write() {
            *g = p;
        }
    }

    /// Events the agent could not take in time (channel full, or the
    /// kernel queue overflowed).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Opens denied so far.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// For `monitor check` and the ready line.
    pub fn describe(&self) -> String {
        format!(
            "fanotify: {} marks{}",
            self.marks,
            if self.enforce {
                ", enforcing secret.read.foreign"
            } else {
                ""
            }
        )
    }
}

/// Least time between two wake-ups of [`Fanotify::changed`] (a busy
/// directory costs at most 10 rescans a second).
const DIR_COALESCE: Duration = Duration::from_millis(100);

/// A notification group with directory marks for creations and renames.
struct DirWatch {
    fd: Arc<OwnedFd>,
    marked: HashSet<std::path::PathBuf>,
}

impl DirWatch {
    fn start(changed: Arc<tokio::sync::Notify>) -> Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLOEXEC | libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_DFID_NAME,
                libc::O_RDONLY as u32,
            )
        };
        if fd < 0 {
            bail!(
                "fanotify_init (directories): {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a fresh descriptor we own.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let rfd = fd.clone();
        std::thread::Builder::new()
            .name("fanotify-dirs".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    // SAFETY: buf is valid for its length.
                    let n = unsafe {
                        libc::read(
                            rfd.as_raw_fd(),
                            buf.as_mut_ptr() as *mut libc::c_void,
                            buf.len(),
                        )
                    };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        tracing::error!("fanotify read (directories): {e}");
                        return;
                    }
                    if n == 0 {
                        return;
                    }
                    // The names do not matter: the rescan finds what changed.
                    changed.notify_one();
                    std::thread::sleep(DIR_COALESCE);
                }
            })
            .context("fanotify directory thread")?;
        Ok(Self {
            fd,
            marked: HashSet::new(),
        })
    }

    fn mark(&mut self, dir: &std::path::Path) -> Result<()> {
        if self.marked.contains(dir) {
            return Ok(());
        }
        let c = CString::new(dir.as_os_str().as_encoded_bytes())
            .with_context(|| format!("path {}", dir.display()))?;
        // SAFETY: valid descriptor and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_ONLYDIR,
                libc::FAN_CREATE | libc::FAN_MOVED_TO | libc::FAN_ONDIR,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if r < 0 {
            bail!(
                "fanotify mark directory {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
        self.marked.insert(dir.to_path_buf());
        Ok(())
    }
}

/// Can this machine give us a fanotify group (and permission events)?
pub fn probe() -> Result<()> {
    // SAFETY: plain syscall; the result is checked and closed.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLOEXEC | libc::FAN_CLASS_CONTENT,
            libc::O_RDONLY as u32,
        )
    };
    if fd < 0 {
        bail!("fanotify_init: {}", std::io::Error::last_os_error());
    }
    // SAFETY: ours.
    unsafe { libc::close(fd) };
    Ok(())
}

struct Reader {
    fd: Arc<OwnedFd>,
    procfs: ProcFs,
    cgroup2_root: Option<std::path::PathBuf>,
    policy: Arc<RwLock<EnforcePolicy>>,
    lost: Arc<AtomicU64>,
    denied: Arc<AtomicU64>,
    tx: mpsc::Sender<FanEvent>,
    own_pid: u32,
}

impl Reader {
    fn run(self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("fanotify read: {e}; fanotify events stop");
                return;
            }
            if n == 0 {
                return;
            }
            let mut off = 0usize;
            let len = n as usize;
            let hdr = std::mem::size_of::<libc::fanotify_event_metadata>();
            while off + hdr <= len {
                // SAFETY: bounds checked; unaligned read of a plain struct.
                let m: libc::fanotify_event_metadata =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr() as *const _) };
                if m.event_len < hdr as u32 {
                    break;
                }
                off += m.event_len as usize;
                self.one(&m);
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    fn one(&self, m: &libc::fanotify_event_metadata) {
        if m.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("fanotify queue overflowed: events lost");
        }
        if m.fd < 0 {
            return;
        }
        // SAFETY: the kernel gave us this descriptor; closed on drop.
        let file = unsafe { std::fs::File::from_raw_fd(m.fd) };
        let pid = m.pid as u32;
        let md = file.metadata().ok();
        let (ino, dev, mode) = md
            .as_ref()
            .map(|md| (md.ino(), user_dev_to_kernel(md.dev()), md.mode()))
            .unwrap_or((0, 0, 0));
        // Who it is, read while a permission event still holds the opener
        // (a denied process exits at once).
        let (uid, gid, comm, cgroup_id) = if pid == self.own_pid {
            (0, 0, [0u8; 16], 0)
        } else {
            let (uid, gid) = self.procfs.status_ids(pid).unwrap_or((0, 0));
            let mut comm = [0u8; 16];
            if let Ok(c) = std::fs::read(self.procfs.pid_path(pid, "comm")) {
                let c = c.strip_suffix(b"\n").unwrap_or(&c);
                let n = c.len().min(15);
                comm[..n].copy_from_slice(&c[..n]);
            }
            let cgroup_id = self
                .cgroup2_root
                .as_deref()
                .zip(self.procfs.cgroup_v2_path(pid))
                .and_then(|(root, path)| crate::enrich::cgroup::id_of(root, &path))
                .unwrap_or(0);
            (uid, gid, comm, cgroup_id)
        };
        let mut denied = false;
        if m.mask & libc::FAN_OPEN_PERM != 0 {
            let allow = pid == self.own_pid
                || md.is_none()
                || self
                    .policy
                    .read()
                    .map(|p| p.allows(ino, dev, pid, &self.procfs))
                    .unwrap_or(true);
            let resp = libc::fanotify_response {
                fd: m.fd,
                response: if allow {
                    libc::FAN_ALLOW
                } else {
                    libc::FAN_DENY
                },
            };
            // SAFETY: writes one response struct.
            let w = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    &resp as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::fanotify_response>(),
                )
            };
            if w < 0 {
                tracing::warn!("fanotify response: {}", std::io::Error::last_os_error());
            }
            denied = !allow;
            if denied {
                self.denied.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(file);
        if pid == self.own_pid || ino == 0 {
            return;
        }
        let mut kinds = Vec::with_capacity(3);
        if denied {
            kinds.push(FanKind::Denied);
        }
        if m.mask & (libc::FAN_OPEN | libc::FAN_OPEN_EXEC) != 0 {
            kinds.push(FanKind::Open);
        }
        if m.mask & libc::FAN_ACCESS != 0 {
            kinds.push(FanKind::Read);
        }
        if m.mask & (libc::FAN_CLOSE_WRITE | libc::FAN_CLOSE_NOWRITE) != 0 {
            kinds.push(FanKind::Close);
        }
        if kinds.is_empty() {
            return;
        }
        let unix_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as i128;
        let at = Instant::now();
        for kind in kinds {
            let ev = FanEvent {
                kind,
                pid,
                ino,
                dev,
                mode,
                comm,
                uid,
                gid,
                cgroup_id,
                unix_ns,
                at,
            };
            if self.tx.try_send(ev).is_err() {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Key of one access: (pid, inode, device, kind).
pub type AccessKey = (u32, u64, u32, FanKind);

/// The access a tracepoint record reports on a watched file, if any
/// (`fd_file`: the (inode, device) behind a process's descriptor, for
/// closes).
pub fn kernel_access(
    raw: &RawEvent,
    fd_file: impl Fn(u32, i32) -> Option<(u64, u32)>,
) -> Option<AccessKey> {
    let pid = raw.header().pid;
    match raw {
        RawEvent::Open(e) if e.watch_id != 0 => Some((pid, e.file.ino, e.file.dev, FanKind::Open)),
        RawEvent::Read(d, _) if d.watch_id != 0 => {
            Some((pid, d.file.ino, d.file.dev, FanKind::Read))
        }
        RawEvent::Mmap(m) if m.watch_id != 0 => Some((pid, m.file.ino, m.file.dev, FanKind::Read)),
        RawEvent::Transfer(t) if t.watch_id != 0 => {
            Some((pid, t.in_file.ino, t.in_file.dev, FanKind::Read))
        }
        RawEvent::Close(c) if c.watch_id != 0 => {
            fd_file(pid, c.fd).map(|(ino, dev)| (pid, ino, dev, FanKind::Close))
        }
        _ => None,
    }
}

/// Fanotify events held for [`DEDUP_DELAY`], minus those a tracepoint
/// reported too.
#[derive(Default)]
pub struct FanQueue {
    pending: VecDeque<FanEvent>,
    /// Last time a tracepoint reported each access.
    kernel: HashMap<AccessKey, Instant>,
}

impl FanQueue {
    pub fn push(&mut self, ev: FanEvent) {
        self.pending.push_back(ev);
    }

    /// A tracepoint reported this access.
    pub fn saw_kernel(&mut self, key: AccessKey, at: Instant) {
        if self.kernel.len() > 65_536 {
            self.kernel
                .retain(|_, t| at.duration_since(*t) < DEDUP_WINDOW);
        }
        self.kernel.insert(key, at);
    }

    /// Events whose delay has passed and that no tracepoint reported.
    pub fn due(&mut self, now: Instant) -> Vec<FanEvent> {
        let mut out = Vec::new();
        while let Some(ev) = self.pending.front() {
            if now.duration_since(ev.at) < DEDUP_DELAY {
                break;
            }
            let ev = self.pending.pop_front().expect("front exists");
            // A denied open never reached the syscall's exit: always kept.
            let key = (ev.pid, ev.ino, ev.dev, ev.kind);
            let dup = ev.kind != FanKind::Denied
                && self.kernel.get(&key).is_some_and(|t| {
                    let d = if *t > ev.at {
                        t.duration_since(ev.at)
                    } else {
                        ev.at.duration_since(*t)
                    };
                    d < DEDUP_WINDOW
                });
            if !dup {
                out.push(ev);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: FanKind, pid: u32, at: Instant) -> FanEvent {
        FanEvent {
            kind,
            pid,
            ino: 7,
            dev: 1,
            mode: 0o100600,
            comm: [0; 16],
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            unix_ns: 0,
            at,
        }
    }

    #[test]
    fn tracepoint_duplicates_are_dropped_and_the_rest_kept_after_the_delay() {
        let t0 = Instant::now();
        let mut q = FanQueue::default();
        q.push(ev(FanKind::Read, 10, t0));
        q.push(ev(FanKind::Read, 11, t0));
        q.push(ev(FanKind::Open, 10, t0));
        q.push(ev(FanKind::Denied, 12, t0));
        // Held until the delay passes.
        assert!(q.due(t0).is_empty());
        // The tracepoints saw pid 10's read (after fanotify did) and pid
        // 12's open; nothing of pid 11 (an io_uring read).
        q.saw_kernel((10, 7, 1, FanKind::Read), t0 + Duration::from_millis(50));
        q.saw_kernel((12, 7, 1, FanKind::Denied), t0);
        let out = q.due(t0 + DEDUP_DELAY);
        let got: Vec<(u32, FanKind)> = out.iter().map(|e| (e.pid, e.kind)).collect();
        assert_eq!(
            got,
            [
                (11, FanKind::Read),
                (10, FanKind::Open),
                (12, FanKind::Denied)
            ]
        );
        assert!(q.is_empty());
        // A tracepoint read long ago does not hide a new fanotify read.
        let later = t0 + DEDUP_WINDOW * 3;
        q.push(ev(FanKind::Read, 10, later));
        assert_eq!(q.due(later + DEDUP_DELAY).len(), 1);
    }
}
