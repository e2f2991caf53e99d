//! Process facts from procfs.
//!
//! The procfs root is configurable (`--host-proc`) so an agent running in a
//! container can read the host's `/proc` mounted elsewhere (e.g. `/host/proc`).
//! Everything here is best effort against processes that may exit at any
//! moment: fallible reads return [`ProcError`] (see [`ProcError::is_gone`])
//! or `None`, never panic.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

/// Errors reading or parsing a procfs file.
#[derive(Debug, Error)]
pub enum ProcError {
    /// The file could not be read (the process may have exited).
    #[error("pid {pid}: reading {path}: {source}", path = path.display())]
    Io {
        /// Process the file belongs to.
        pid: u32,
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file was read but a field could not be parsed.
    #[error("pid {pid}: {path}: field {field}: {reason}", path = path.display())]
    Parse {
        /// Process the file belongs to.
        pid: u32,
        /// The file that failed.
        path: PathBuf,
        /// Name of the field that was missing or malformed.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl ProcError {
    /// True when the error means the process no longer exists (`ENOENT`/`ESRCH`).
    pub fn is_gone(&self) -> bool {
        match self {
            ProcError::Io { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            ProcError::Parse { .. } => false,
        }
    }
}

/// Selected fields of `/proc/<pid>/stat` (see `proc_pid_stat(5)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcStat {
    /// Field 1: process id (in the namespace of the procfs mount).
    pub pid: u32,
    /// Field 2: command name (up to 15 bytes; may contain spaces and parens).
    pub comm: String,
    /// Field 3: state (`R`, `S`, `D`, `Z`, `T`, `t`, `X`, `I`, ...).
    pub state: char,
    /// Field 4: parent pid.
    pub ppid: u32,
    /// Field 5: process group id.
    pub pgrp: u32,
    /// Field 6: session id.
    pub session: u32,
    /// Field 7: controlling terminal (userspace dev encoding; 0 if none).
    pub tty_nr: i32,
    /// Field 9: kernel flags (`PF_*`).
    pub flags: u32,
    /// Field 20: number of threads.
    pub num_threads: u64,
    /// Field 22: start time after boot, in clock ticks (`sysconf(_SC_CLK_TCK)`).
    pub start_time: u64,
}

/// Selected fields of `/proc/<pid>/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcStatus {
    /// `Name:` (same as comm, with escapes as the kernel prints them).
    pub name: String,
    /// `Tgid:`.
    pub tgid: u32,
    /// `PPid:`.
    pub ppid: u32,
    /// `Uid:` real, effective, saved, filesystem.
    pub uids: [u32; 4],
    /// `Gid:` real, effective, saved, filesystem.
    pub gids: [u32; 4],
    /// `NSpid:` the pid in each pid namespace, outermost (procfs's) first.
    pub ns_pids: Vec<u32>,
}

/// A magic-link target (`exe`, `cwd`) with the kernel's ` (deleted)` marker
/// split off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkTarget {
    /// The path, without the ` (deleted)` suffix.
    pub path: PathBuf,
    /// Whether the kernel marked the target as unlinked. (A file literally
    /// named `"... (deleted)"` is indistinguishable from this.)
    pub deleted: bool,
}

const DELETED_SUFFIX: &str = " (deleted)";

/// Reader for one procfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcFs {
    /// A reader for the procfs mounted at `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The procfs root this reader uses.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<pid>/<name>`.
    pub fn pid_path(&self, pid: u32, name: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(name)
    }

    fn read(&self, pid: u32, name: &str) -> Result<(PathBuf, Vec<u8>), ProcError> {
        let path = self.pid_path(pid, name);
        match fs::read(&path) {
            Ok(bytes) => Ok((path, bytes)),
            Err(source) => Err(ProcError::Io { pid, path, source }),
        }
    }

    fn link(&self, pid: u32, name: &str) -> Option<String> {
        fs::read_link(self.pid_path(pid, name))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Parses `/proc/<pid>/stat`.
    ///
    /// The command name is taken between the first `(` and the LAST `)`, so
    /// names containing spaces or `) (` parse correctly.
    pub fn stat(&self, pid: u32) -> Result<ProcStat, ProcError> {
        let (path, bytes) = self.read(pid, "stat")?;
        parse_stat(&bytes).map_err(|(field, reason)| ProcError::Parse {
            pid,
            path,
            field,
            reason,
        })
    }

    /// Parses `/proc/<pid>/status`.
    pub fn status(&self, pid: u32) -> Result<ProcStatus, ProcError> {
        let (path, bytes) = self.read(pid, "status")?;
        parse_status(&String::from_utf8_lossy(&bytes)).map_err(|(field, reason)| ProcError::Parse {
            pid,
            path,
            field,
            reason,
        })
    }

    /// Real uid and gid from `/proc/<pid>/status`.
    pub fn status_ids(&self, pid: u32) -> Result<(u32, u32), ProcError> {
        self.status(pid).map(|s| (s.uids[0], s.gids[0]))
    }

    /// `NSpid:` of `/proc/<pid>/status`: the pid as seen from each nested pid
    /// namespace, outermost first (empty if unreadable).
    pub fn ns_pids(&self, pid: u32) -> Vec<u32> {
        self.status(pid).map(|s| s.ns_pids).unwrap_or_default()
    }

    /// The executable (`/proc/<pid>/exe`) with the deleted marker split off.
    /// `None` for kernel threads, exited processes, or without permission.
    pub fn exe_link(&self, pid: u32) -> Option<LinkTarget> {
        self.link(pid, "exe").map(|s| split_deleted(&s))
    }

    /// The executable path, without a ` (deleted)` suffix (see [`Self::exe_link`]).
    pub fn exe(&self, pid: u32) -> Option<PathBuf> {
        self.exe_link(pid).map(|l| l.path)
    }

    /// The working directory (`/proc/<pid>/cwd`) with the deleted marker split off.
    pub fn cwd_link(&self, pid: u32) -> Option<LinkTarget> {
        self.link(pid, "cwd").map(|s| split_deleted(&s))
    }

    /// The working directory, without a ` (deleted)` suffix.
    pub fn cwd(&self, pid: u32) -> Option<PathBuf> {
        self.cwd_link(pid).map(|l| l.path)
    }

    /// The argument vector from `/proc/<pid>/cmdline` (NUL-separated; lossy
    /// UTF-8). Empty for kernel threads, zombies, or on error.
    pub fn cmdline(&self, pid: u32) -> Vec<String> {
        let Ok((_, bytes)) = self.read(pid, "cmdline") else {
            return Vec::new();
        };
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
        if bytes.is_empty() {
            return Vec::new();
        }
        bytes
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// The cgroup v2 path (the `0::` line of `/proc/<pid>/cgroup`), relative to
    /// the cgroup namespace root of the reader. A ` (deleted)` suffix (the
    /// cgroup was removed) is stripped.
    pub fn cgroup_v2_path(&self, pid: u32) -> Option<String> {
        let (_, bytes) = self.read(pid, "cgroup").ok()?;
        let text = String::from_utf8_lossy(&bytes);
        text.lines().find_map(|l| {
            l.strip_prefix("0::")
                .map(|p| p.strip_suffix(DELETED_SUFFIX).unwrap_or(p).to_string())
        })
    }

    /// The target of `/proc/<pid>/fd/<fd>`: `"/path"`, `"socket:[123]"`,
    /// `"pipe:[45]"`, `"anon_inode:[eventfd]"`, `"/dev/pts/3"`, ...
    /// `None` for closed fds and exited processes.
    pub fn fd_target(&self, pid: u32, fd: u32) -> Option<String> {
        self.link(pid, &format!("fd/{fd}"))
    }

    /// Kind of the open file `fd` of `pid`: from the link text for
    /// sockets/pipes/anon inodes, otherwise from `stat` of the opened inode
    /// (mode and rdev), which is exact for directories and devices.
    pub fn fd_kind(&self, pid: u32, fd: u32) -> Option<FdKind> {
        let target = self.fd_target(pid, fd)?;
        let by_link = fd_kind_from_link(&target);
        if matches!(by_link, FdKind::Socket | FdKind::Pipe | FdKind::AnonInode) {
            return Some(by_link);
        }
        match fs::metadata(self.pid_path(pid, &format!("fd/{fd}"))) {
            Ok(meta) => {
                let rdev = if meta.file_type().is_char_device() {
                    user_dev_to_kernel(meta.rdev())
                } else {
                    0
                };
                Some(fd_kind_from_mode(meta.mode(), rdev))
            }
            Err(_) => Some(by_link),
        }
    }

    /// All process ids (thread-group leaders) listed under the root, sorted.
    pub fn list_pids(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                name.parse().ok()
            })
            .collect();
        pids.sort_unstable();
        pids
    }
}

fn split_deleted(s: &str) -> LinkTarget {
    match s.strip_suffix(DELETED_SUFFIX) {
        Some(p) => LinkTarget {
            path: PathBuf::from(p),
            deleted: true,
        },
        None => LinkTarget {
            path: PathBuf::from(s),
            deleted: false,
        },
    }
}

type FieldError = (&'static str, String);

fn parse_stat(bytes: &[u8]) -> Result<ProcStat, FieldError> {
    let open = bytes
        .iter()
        .position(|b| *b == b'(')
        .ok_or(("comm", "missing '('".to_string()))?;
    let close = bytes
        .iter()
        .rposition(|b| *b == b')')
        .filter(|c| *c > open)
        .ok_or(("comm", "missing ')'".to_string()))?;
    let pid_text = String::from_utf8_lossy(&bytes[..open]);
    let pid = pid_text
        .trim()
        .parse::<u32>()
        .map_err(|e| ("pid", format!("{:?}: {e}", pid_text.trim())))?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let rest = String::from_utf8_lossy(&bytes[close + 1..]);
    // Field n (1-based, per proc_pid_stat(5)) is rest[n - 3].
    let rest: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize, name: &'static str| -> Result<&str, FieldError> {
        rest.get(n - 3)
            .copied()
            .ok_or((name, format!("missing (field {n})")))
    };
    fn num<T: std::str::FromStr>(s: &str, name: &'static str) -> Result<T, FieldError>
    where
        T::Err: fmt::Display,
    {
        s.parse::<T>().map_err(|e| (name, format!("{s:?}: {e}")))
    }
    let state_s = field(3, "state")?;
    let mut chars = state_s.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => return Err(("state", format!("{state_s:?} is not one character"))),
    };
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid: num(field(4, "ppid")?, "ppid")?,
        pgrp: num(field(5, "pgrp")?, "pgrp")?,
        session: num(field(6, "session")?, "session")?,
        tty_nr: num(field(7, "tty_nr")?, "tty_nr")?,
        flags: num(field(9, "flags")?, "flags")?,
        num_threads: num(field(20, "num_threads")?, "num_threads")?,
        start_time: num(field(22, "starttime")?, "starttime")?,
    })
}

fn parse_status(text: &str) -> Result<ProcStatus, FieldError> {
    fn ids(v: &str, name: &'static str) -> Result<[u32; 4], FieldError> {
        let parsed: Vec<u32> = v
            .split_whitespace()
            .map(|x| x.parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| (name, format!("{v:?}: {e}")))?;
        parsed
            .try_into()
            .map_err(|_| (name, format!("{v:?}: expected 4 ids")))
    }
    let mut st = ProcStatus::default();
    let (mut have_uid, mut have_gid) = (false, false);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => st.name = value.to_string(),
            "Tgid" => {
                st.tgid = value
                    .parse()
                    .map_err(|e| ("Tgid", format!("{value:?}: {e}")))?
            }
            "PPid" => {
                st.ppid = value
                    .parse()
                    .map_err(|e| ("PPid", format!("{value:?}: {e}")))?
            }
            "Uid" => {
                st.uids = ids(value, "Uid")?;
                have_uid = true;
            }
            "Gid" => {
                st.gids = ids(value, "Gid")?;
                have_gid = true;
            }
            "NSpid" => {
                st.ns_pids = value
                    .split_whitespace()
                    .map(|x| x.parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| ("NSpid", format!("{value:?}: {e}")))?
            }
            _ => {}
        }
    }
    if !have_uid {
        return Err(("Uid", "missing".to_string()));
    }
    if !have_gid {
        return Err(("Gid", "missing".to_string()));
    }
    Ok(st)
}

pub use crate::event::FdKind;

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

/// Classifies an inode from its `i_mode` and, for character devices, its
/// `i_rdev` in the KERNEL encoding (`major << 20 | minor`).
///
/// Terminals: majors 136..=143 (Unix98 pty slaves), major 4 with minor < 64
/// (virtual consoles `tty0`..`tty63`; `ttyS*` at minor >= 64 count as plain
/// chardevs), and major 5 minor 0 (`/dev/tty`) or 1 (`/dev/console`).
/// An inode with no type bits (how anon inodes report) is [`FdKind::AnonInode`].
pub fn fd_kind_from_mode(mode: u32, rdev: u32) -> FdKind {
    match mode & S_IFMT {
        S_IFSOCK => FdKind::Socket,
        S_IFIFO => FdKind::Pipe,
        S_IFREG => FdKind::File,
        S_IFDIR => FdKind::Directory,
        S_IFCHR => {
            let (major, minor) = kernel_dev_to_user(rdev);
            let tty = match major {
                136..=143 => true,
                4 => minor < 64,
                5 => minor <= 1,
                _ => false,
            };
            if tty {
                FdKind::Tty
            } else {
                FdKind::CharDevice
            }
        }
        0 => FdKind::AnonInode,
        S_IFBLK | S_IFLNK => FdKind::Other,
        _ => FdKind::Other,
    }
}

/// `ANON_INODE_FS_MAGIC` (`include/uapi/linux/magic.h`): eventfd, epoll,
/// timerfd, signalfd, bpf objects, ...
pub const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
/// `PIDFS_MAGIC`: pidfds (Linux 6.9+).
pub const PIDFS_MAGIC: u64 = 0x5049_4446;

/// Like [`fd_kind_from_mode`], but also uses the superblock magic
/// (`inode->i_sb->s_magic`) when the probe reports it.
///
/// Needed for in-kernel modes: since Linux 6.15 ("anon_inode: use a proper
/// mode internally") anon inodes carry `S_IFREG` in `i_mode` and only
/// `stat(2)` hides it, so a BPF probe sees eventfd/epoll/pidfd files as
/// regular files unless it also looks at the filesystem.
pub fn fd_kind_from_inode(mode: u32, rdev: u32, s_magic: u64) -> FdKind {
    match s_magic {
        ANON_INODE_FS_MAGIC | PIDFS_MAGIC => FdKind::AnonInode,
        _ => fd_kind_from_mode(mode, rdev),
    }
}

/// Classifies an fd from its `/proc/<pid>/fd/<n>` link text alone.
///
/// Exact for `socket:[..]`, `pipe:[..]` and `anon_inode:..`; terminals are
/// recognised by name (`/dev/pts/N`, `/dev/ttyN` for N < 64, `/dev/tty`,
/// `/dev/console`). Other `/dev/` paths (except `/dev/shm/`, `/dev/mqueue/`)
/// are guessed to be character devices and all other paths files: use
/// [`fd_kind_from_mode`] when the mode is known.
pub fn fd_kind_from_link(target: &str) -> FdKind {
    if target.starts_with("socket:[") {
        return FdKind::Socket;
    }
    if target.starts_with("pipe:[") {
        return FdKind::Pipe;
    }
    if target.starts_with("anon_inode:") {
        return FdKind::AnonInode;
    }
    if let Some(dev) = target.strip_prefix("/dev/") {
        if let Some(n) = dev.strip_prefix("pts/") {
            return if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                FdKind::Tty
            } else {
                FdKind::CharDevice // /dev/pts/ptmx
            };
        }
        if dev == "tty" || dev == "console" {
            return FdKind::Tty;
        }
        if let Some(n) = dev.strip_prefix("tty") {
            if !n.is_empty()
                && n.len() <= 2
                && n.bytes().all(|b| b.is_ascii_digit())
                && n.parse::<u32>().is_ok_and(|n| n < 64)
            {
                return FdKind::Tty;
            }
        }
        if dev.starts_with("shm/") || dev.starts_with("mqueue/") {
            return FdKind::File;
        }
        return FdKind::CharDevice;
    }
    if target.starts_with('/') {
        return FdKind::File;
    }
    FdKind::Other
}

/// Splits a kernel `dev_t` (`s_dev`/`i_rdev`, encoded `major << 20 | minor`)
/// into `(major, minor)`.
pub fn kernel_dev_to_user(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xfffff)
}

/// Converts a userspace `stat().st_dev`/`st_rdev` (glibc `makedev` encoding)
/// to the kernel's internal `MKDEV` encoding (`major << 20 | minor`), as seen
/// by BPF programs in `inode->i_sb->s_dev`. Majors above 4095 or minors above
/// 2^20-1 cannot be represented and are truncated (the kernel never uses them).
pub fn user_dev_to_kernel(st_dev: u64) -> u32 {
    let major = libc::major(st_dev as libc::dev_t);
    let minor = libc::minor(st_dev as libc::dev_t);
    ((major & 0xfff) << 20) | (minor & 0xfffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::os::unix::io::AsRawFd;

    use crate::testutil::TempDir;

    fn me() -> u32 {
        std::process::id()
    }

    #[test]
    fn live_stat_matches_libc() {
        let p = ProcFs::default();
        let st = p.stat(me()).unwrap();
        assert_eq!(st.pid, me());
        // SAFETY: getppid/getpgrp/getsid have no preconditions.
        assert_eq!(st.ppid as i32, unsafe { libc::getppid() });
        assert_eq!(st.pgrp as i32, unsafe { libc::getpgrp() });
        assert_eq!(st.session as i32, unsafe { libc::getsid(0) });
        assert!(st.num_threads >= 1);
        assert!(matches!(st.state, 'R' | 'S'), "{}", st.state);
        // comm is the executable's name truncated to 15 bytes.
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let want: String = name.bytes().take(15).map(char::from).collect();
        assert_eq!(st.comm, want);
        // start_time is in ticks since boot, not after now.
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let uptime: f64 = fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(st.start_time > 0 && st.start_time <= (uptime * hz as f64) as u64 + hz);
    }

    #[test]
    fn live_status_exe_cwd_cmdline_cgroup() {
        let p = ProcFs::default();
        // SAFETY: getuid/getgid have no preconditions.
        assert_eq!(
            p.status_ids(me()).unwrap(),
            (unsafe { libc::getuid() }, unsafe { libc::getgid() })
        );
        let ns = p.ns_pids(me());
        assert_eq!(ns.first(), Some(&me()));
        let exe = p.exe_link(me()).unwrap();
        assert!(!exe.deleted);
        assert_eq!(
            exe.path,
            fs::canonicalize(std::env::current_exe().unwrap()).unwrap()
        );
        assert_eq!(p.cwd(me()).unwrap(), std::env::current_dir().unwrap());
        assert_eq!(p.cmdline(me()), std::env::args().collect::<Vec<_>>());
        let raw = fs::read_to_string("/proc/self/cgroup").unwrap();
        let want = raw.lines().find_map(|l| l.strip_prefix("0::"));
        assert_eq!(p.cgroup_v2_path(me()).as_deref(), want);
        if let Some(cg) = p.cgroup_v2_path(me()) {
            assert!(cg.starts_with('/'));
        }
        // pid 1 exists, kernel thread 2 (kthreadd) has no exe / cmdline.
        let pids = p.list_pids();
        assert!(pids.contains(&me()) && pids.contains(&1));
        assert!(pids.windows(2).all(|w| w[0] < w[1]));
        if p.stat(2).map(|s| s.comm == "kthreadd").unwrap_or(false) {
            assert_eq!(p.exe(2), None);
            assert!(p.cmdline(2).is_empty());
        }
        let gone = p.stat(u32::MAX - 1).unwrap_err();
        assert!(gone.is_gone(), "{gone}");
        assert!(gone.to_string().contains("4294967294"));
        assert_eq!(p.exe(u32::MAX - 1), None);
        assert!(p.cmdline(u32::MAX - 1).is_empty());
    }

    #[test]
    fn live_fds() {
        let p = ProcFs::default();
        let tmp = TempDir::new("fds");
        let f = fs::File::create(tmp.join("secret.txt")).unwrap();
        let dir = fs::File::open(&*tmp).unwrap();
        let null = fs::File::open("/dev/null").unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid 2-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: eventfd has no memory preconditions.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);

        let fd = |f: i32| f as u32;
        let file_target = p.fd_target(me(), fd(f.as_raw_fd())).unwrap();
        assert_eq!(
            Path::new(&file_target),
            fs::canonicalize(tmp.join("secret.txt")).unwrap()
        );
        assert_eq!(p.fd_kind(me(), fd(f.as_raw_fd())), Some(FdKind::File));
        assert_eq!(
            p.fd_kind(me(), fd(dir.as_raw_fd())),
            Some(FdKind::Directory)
        );
        assert_eq!(
            p.fd_target(me(), fd(null.as_raw_fd())).as_deref(),
            Some("/dev/null")
        );
        assert_eq!(
            p.fd_kind(me(), fd(null.as_raw_fd())),
            Some(FdKind::CharDevice)
        );
        let s = p.fd_target(me(), fd(sock.as_raw_fd())).unwrap();
        assert!(s.starts_with("socket:["), "{s}");
        assert_eq!(p.fd_kind(me(), fd(sock.as_raw_fd())), Some(FdKind::Socket));
        let s = p.fd_target(me(), fd(fds[0])).unwrap();
        assert!(s.starts_with("pipe:["), "{s}");
        assert_eq!(p.fd_kind(me(), fd(fds[1])), Some(FdKind::Pipe));
        assert_eq!(
            p.fd_target(me(), fd(efd)).as_deref(),
            Some("anon_inode:[eventfd]")
        );
        assert_eq!(p.fd_kind(me(), fd(efd)), Some(FdKind::AnonInode));

        // Mode-based classification agrees with the kernel's view via stat.
        for (raw, want) in [
            (fds[0], FdKind::Pipe),
            (sock.as_raw_fd(), FdKind::Socket),
            (f.as_raw_fd(), FdKind::File),
            (dir.as_raw_fd(), FdKind::Directory),
            (null.as_raw_fd(), FdKind::CharDevice),
            (efd, FdKind::AnonInode),
        ] {
            let m = fs::metadata(format!("/proc/self/fd/{raw}")).unwrap();
            assert_eq!(
                fd_kind_from_mode(m.mode(), user_dev_to_kernel(m.rdev())),
                want,
                "fd {raw} mode {:o}",
                m.mode()
            );
        }

        // A real pty slave is a tty (major 136+).
        // SAFETY: standard pty setup; all returned pointers are checked.
        unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if master >= 0 && libc::grantpt(master) == 0 && libc::unlockpt(master) == 0 {
                let mut buf = [0 as libc::c_char; 128];
                if libc::ptsname_r(master, buf.as_mut_ptr(), buf.len()) == 0 {
                    let slave_path = std::ffi::CStr::from_ptr(buf.as_ptr())
                        .to_string_lossy()
                        .into_owned();
                    let slave = fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&slave_path)
                        .unwrap();
                    assert_eq!(
                        p.fd_target(me(), fd(slave.as_raw_fd())).as_deref(),
                        Some(slave_path.as_str())
                    );
                    assert_eq!(p.fd_kind(me(), fd(slave.as_raw_fd())), Some(FdKind::Tty));
                    assert_eq!(fd_kind_from_link(&slave_path), FdKind::Tty);
                    let rdev = fs::metadata(&slave_path).unwrap().rdev();
                    let (maj, _) = kernel_dev_to_user(user_dev_to_kernel(rdev));
                    assert!((136..=143).contains(&maj));
                }
                libc::close(master);
            } else {
                println!("skip pty part: no /dev/ptmx");
            }
        }
        // SAFETY: closing descriptors this test opened.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
            libc::close(efd);
        }
        assert_eq!(p.fd_target(me(), 1_000_000), None);
        assert_eq!(p.fd_target(me(), -100i32 as u32), None);
    }

    fn stat_line(pid: u32, comm: &str, state: &str, ppid: u32, start: u64) -> String {
        format!(
            "{pid} ({comm}) {state} {ppid} {pid} 3957 34816 -1 4194304 100 0 1 0 0 0 0 0 20 0 3 0 {start} \
             3133440 382 18446744073709551615 93833457909760 93833457929641 140728321478320 0 0 0 0 0 0 \
             0 0 0 17 1 0 0 0 0 0 93833457945648 93833457947264 93833694232576 140728321485538 \
             140728321485558 140728321485558 140728321486827 0\n"
        )
    }

    fn fake_proc() -> (TempDir, ProcFs) {
        let t = TempDir::new("fake");
        let d = t.join("4242");
        fs::create_dir_all(d.join("fd")).unwrap();
        fs::write(d.join("stat"), stat_line(4242, "a) (b c)", "S", 17, 987654)).unwrap();
        fs::write(
            d.join("status"),
            "Name:\ta) (b c)\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
             Pid:\t4242\nPPid:\t17\nTracerPid:\t0\nUid:\t1000\t0\t1000\t1000\n\
             Gid:\t2000\t2001\t2000\t2000\nFDSize:\t64\nGroups:\t\nNStgid:\t4242\t7\n\
             NSpid:\t4242\t7\nNSpgid:\t4242\t7\n",
        )
        .unwrap();
        fs::write(
            d.join("cmdline"),
            b"/usr/bin/app\0--password-file\0/run/s e c\0",
        )
        .unwrap();
        fs::write(
            d.join("cgroup"),
            "12:memory:/kubepods/x\n1:name=systemd:/kubepods/x\n0::/kubepods.slice/cri-containerd-abc.scope (deleted)\n",
        )
        .unwrap();
        symlink("/usr/bin/app (deleted)", d.join("exe")).unwrap();
        symlink("/srv/work dir", d.join("cwd")).unwrap();
        symlink("socket:[123]", d.join("fd/3")).unwrap();
        symlink("pipe:[45]", d.join("fd/4")).unwrap();
        symlink("anon_inode:[eventfd]", d.join("fd/5")).unwrap();
        symlink("/dev/pts/3", d.join("fd/6")).unwrap();
        // Process 7: a kernel-thread-like entry with empty cmdline, no exe.
        let k = t.join("7");
        fs::create_dir_all(&k).unwrap();
        fs::write(
            k.join("stat"),
            stat_line(7, "kworker/0:1-events", "I", 2, 5),
        )
        .unwrap();
        fs::write(k.join("cmdline"), b"").unwrap();
        // Noise entries that are not pids.
        for n in ["self", "net", "123abc", "sys"] {
            fs::create_dir_all(t.join(n)).unwrap();
        }
        let p = ProcFs::new(t.to_path_buf());
        (t, p)
    }

    #[test]
    fn fake_root_edge_cases() {
        let (_t, p) = fake_proc();
        let st = p.stat(4242).unwrap();
        assert_eq!(st.comm, "a) (b c)");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 17);
        assert_eq!(st.pgrp, 4242);
        assert_eq!(st.session, 3957);
        assert_eq!(st.tty_nr, 34816);
        assert_eq!(st.num_threads, 3);
        assert_eq!(st.start_time, 987654);
        assert_eq!(p.status_ids(4242).unwrap(), (1000, 2000));
        let s = p.status(4242).unwrap();
        assert_eq!(s.uids, [1000, 0, 1000, 1000]);
        assert_eq!(s.gids, [2000, 2001, 2000, 2000]);
        assert_eq!(s.tgid, 4242);
        assert_eq!(s.ppid, 17);
        assert_eq!(p.ns_pids(4242), vec![4242, 7]);
        assert_eq!(
            p.exe_link(4242),
            Some(LinkTarget {
                path: "/usr/bin/app".into(),
                deleted: true
            })
        );
        assert_eq!(p.exe(4242), Some(PathBuf::from("/usr/bin/app")));
        assert_eq!(p.cwd(4242), Some(PathBuf::from("/srv/work dir")));
        assert!(!p.cwd_link(4242).unwrap().deleted);
        assert_eq!(
            p.cmdline(4242),
            vec!["/usr/bin/app", "--password-file", "/run/s e c"]
        );
        assert_eq!(
            p.cgroup_v2_path(4242).as_deref(),
            Some("/kubepods.slice/cri-containerd-abc.scope")
        );
        assert_eq!(p.fd_target(4242, 3).as_deref(), Some("socket:[123]"));
        assert_eq!(p.fd_kind(4242, 3), Some(FdKind::Socket));
        assert_eq!(p.fd_kind(4242, 4), Some(FdKind::Pipe));
        assert_eq!(p.fd_kind(4242, 5), Some(FdKind::AnonInode));
        assert_eq!(p.fd_target(4242, 6).as_deref(), Some("/dev/pts/3"));
        assert_eq!(p.fd_target(4242, 9), None);
        assert_eq!(p.list_pids(), vec![7, 4242]);

        let k = p.stat(7).unwrap();
        assert_eq!(k.comm, "kworker/0:1-events");
        assert_eq!(k.state, 'I');
        assert!(p.cmdline(7).is_empty());
        assert_eq!(p.exe(7), None);
        assert_eq!(p.cgroup_v2_path(7), None);
        assert!(p.status(7).unwrap_err().is_gone());
        assert!(p.ns_pids(7).is_empty());
    }

    #[test]
    fn malformed_stat_and_status() {
        let t = TempDir::new("bad");
        let d = t.join("9");
        fs::create_dir_all(&d).unwrap();
        let p = ProcFs::new(t.to_path_buf());
        let cases: &[(&[u8], &str)] = &[
            (b"9 (no close paren S 1", "comm"),
            (b"9 x) S 1", "comm"),
            (b"9 (ok) S", "ppid"),
            (b"nine (ok) S 1 2 3 4 5 6", "pid"),
            (b"9 (ok) SS 1 2 3 4", "state"),
            (b"9 (ok) S x 2 3 4", "ppid"),
            (b"", "comm"),
            (b"9 (\xff\xfe) S 1 2 3", "tty_nr"),
        ];
        for (text, field) in cases {
            fs::write(d.join("stat"), text).unwrap();
            match p.stat(9) {
                Err(ProcError::Parse { field: f, pid, .. }) => {
                    assert_eq!((f, pid), (*field, 9), "{:?}", String::from_utf8_lossy(text))
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
            }
        }
        let long = stat_line(9, "x", "R", 1, 99);
        let truncated = &long[..long.find(" 99 ").unwrap()];
        fs::write(d.join("stat"), truncated).unwrap();
        let e = p.stat(9).unwrap_err();
        assert!(e.to_string().contains("starttime"), "{e}");
        assert!(e.to_string().contains("/9/stat"), "{e}");

        fs::write(
            d.join("status"),
            "Name:\tx\nUid:\t1\t2\t3\nGid:\t0\t0\t0\t0\n",
        )
        .unwrap();
        let e = p.status_ids(9).unwrap_err();
        assert!(matches!(e, ProcError::Parse { field: "Uid", .. }), "{e}");
        fs::write(d.join("status"), "Name:\tx\nUid:\t1\t2\t3\t4\n").unwrap();
        assert!(matches!(
            p.status_ids(9).unwrap_err(),
            ProcError::Parse { field: "Gid", .. }
        ));
        fs::write(
            d.join("status"),
            "Uid:\t1 1 1 1\nGid:\t0 0 0 0\nNSpid:\t9\tz\n",
        )
        .unwrap();
        assert!(p.ns_pids(9).is_empty());
        assert!(ProcFs::new(t.join("nope")).list_pids().is_empty());
    }

    #[test]
    fn fd_kind_names() {
        let all = [
            (FdKind::File, "file"),
            (FdKind::Socket, "socket"),
            (FdKind::Pipe, "pipe"),
            (FdKind::Tty, "tty"),
            (FdKind::CharDevice, "chardev"),
            (FdKind::Directory, "dir"),
            (FdKind::AnonInode, "anon"),
            (FdKind::Other, "other"),
        ];
        for (k, s) in all {
            assert_eq!(k.as_str(), s);
            assert_eq!(k.to_string(), s);
        }
    }

    #[test]
    fn fd_kind_from_mode_cases() {
        let mk = |ma: u32, mi: u32| (ma << 20) | mi;
        assert_eq!(fd_kind_from_mode(0o140777, 0), FdKind::Socket);
        assert_eq!(fd_kind_from_mode(0o010600, 0), FdKind::Pipe);
        assert_eq!(fd_kind_from_mode(0o100644, 0), FdKind::File);
        assert_eq!(fd_kind_from_mode(0o040755, 0), FdKind::Directory);
        assert_eq!(fd_kind_from_mode(0o000600, 0), FdKind::AnonInode);
        assert_eq!(fd_kind_from_mode(0o060660, mk(8, 0)), FdKind::Other);
        assert_eq!(fd_kind_from_mode(0o120777, 0), FdKind::Other);
        let chr = 0o020620;
        assert_eq!(fd_kind_from_mode(chr, mk(136, 0)), FdKind::Tty);
        assert_eq!(fd_kind_from_mode(chr, mk(143, 1_000_000)), FdKind::Tty);
        assert_eq!(fd_kind_from_mode(chr, mk(144, 0)), FdKind::CharDevice);
        assert_eq!(fd_kind_from_mode(chr, mk(135, 0)), FdKind::CharDevice);
        assert_eq!(fd_kind_from_mode(chr, mk(4, 1)), FdKind::Tty);
        assert_eq!(fd_kind_from_mode(chr, mk(4, 63)), FdKind::Tty);
        assert_eq!(fd_kind_from_mode(chr, mk(4, 64)), FdKind::CharDevice); // ttyS0
        assert_eq!(fd_kind_from_mode(chr, mk(5, 0)), FdKind::Tty);
        assert_eq!(fd_kind_from_mode(chr, mk(5, 1)), FdKind::Tty);
        // /dev/ptmx and /dev/null are plain character devices.
        assert_eq!(fd_kind_from_mode(chr, mk(5, 2)), FdKind::CharDevice);
        assert_eq!(fd_kind_from_mode(chr, mk(1, 3)), FdKind::CharDevice);

        // Kernel >= 6.15 anon inodes: S_IFREG internally, told apart by magic.
        assert_eq!(
            fd_kind_from_inode(0o100600, 0, ANON_INODE_FS_MAGIC),
            FdKind::AnonInode
        );
        assert_eq!(
            fd_kind_from_inode(0o100600, 0, PIDFS_MAGIC),
            FdKind::AnonInode
        );
        assert_eq!(fd_kind_from_inode(0o100600, 0, 0xEF53), FdKind::File);
        assert_eq!(fd_kind_from_inode(chr, mk(136, 2), 0x1cd1), FdKind::Tty);
        // Userspace encoding of pts/3 (136:3) must be converted first.
        let user = libc::makedev(136, 3);
        assert_eq!(
            fd_kind_from_mode(chr, user_dev_to_kernel(user)),
            FdKind::Tty
        );
    }

    #[test]
    fn fd_kind_from_link_cases() {
        for (t, k) in [
            ("socket:[123]", FdKind::Socket),
            ("pipe:[45]", FdKind::Pipe),
            ("anon_inode:[eventfd]", FdKind::AnonInode),
            ("anon_inode:bpf-map", FdKind::AnonInode),
            ("/dev/pts/3", FdKind::Tty),
            ("/dev/pts/ptmx", FdKind::CharDevice),
            ("/dev/tty", FdKind::Tty),
            ("/dev/tty1", FdKind::Tty),
            ("/dev/tty64", FdKind::CharDevice),
            ("/dev/ttyS0", FdKind::CharDevice),
            ("/dev/tty+1", FdKind::CharDevice),
            ("/dev/console", FdKind::Tty),
            ("/dev/null", FdKind::CharDevice),
            ("/dev/shm/sem.x", FdKind::File),
            ("/etc/shadow", FdKind::File),
            ("/memfd:secret (deleted)", FdKind::File),
            ("net:[4026531840]", FdKind::Other),
            ("", FdKind::Other),
        ] {
            assert_eq!(fd_kind_from_link(t), k, "{t}");
        }
    }

    #[test]
    fn dev_encoding_round_trips() {
        let dev = fs::metadata("/etc/hostname")
            .or_else(|_| fs::metadata("/etc/passwd"))
            .unwrap()
            .dev();
        let k = user_dev_to_kernel(dev);
        let (ma, mi) = kernel_dev_to_user(k);
        assert_eq!((ma, mi), (libc::major(dev), libc::minor(dev)));
        assert_eq!(libc::makedev(ma, mi), dev);
        // Known encodings, including a minor above 255 (glibc splits it).
        assert_eq!(user_dev_to_kernel(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(
            user_dev_to_kernel(libc::makedev(259, 0x12345)),
            (259 << 20) | 0x12345
        );
        assert_eq!(kernel_dev_to_user((259 << 20) | 0x12345), (259, 0x12345));
        assert_eq!(kernel_dev_to_user(0), (0, 0));
        // Anonymous-device filesystems (procfs: major 0).
        let pdev = fs::metadata("/proc/self").unwrap().dev();
        assert_eq!(kernel_dev_to_user(user_dev_to_kernel(pdev)).0, 0);
        assert_eq!(
            kernel_dev_to_user(user_dev_to_kernel(pdev)).1,
            libc::minor(pdev)
        );
    }
}
