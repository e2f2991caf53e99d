//! Host facts the agent needs before it can attach probes or interpret
//! their events: the mount table (where cgroup v2, tracefs and procfs live),
//! the kernel release, and the offset between the boot clock used by
//! `bpf_ktime_get_boot_ns` and wall-clock time.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where tracefs is mounted when the agent has to mount it itself.
pub const TRACEFS_DEFAULT: &str = "/sys/kernel/tracing";
/// Legacy location of tracefs (automounted below debugfs).
pub const TRACEFS_LEGACY: &str = "/sys/kernel/debug/tracing";

/// Errors raised while gathering host facts.
#[derive(Debug, Error)]
pub enum HostError {
    /// A line of a mountinfo file could not be parsed.
    #[error("mountinfo line {line}: {reason}")]
    MountInfoParse {
        /// 1-based line number within the parsed text.
        line: usize,
        /// What was wrong with the line.
        reason: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}", path = path.display())]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `mount(2)` of tracefs failed.
    #[error("mounting tracefs at {target}: errno {errno} ({source})", target = target.display())]
    Mount {
        /// The mount point the agent tried to use.
        target: PathBuf,
        /// The raw errno value returned by the kernel.
        errno: i32,
        /// The same error as an `io::Error` (carries the errno's description).
        #[source]
        source: io::Error,
    },
}

/// One line of `/proc/<pid>/mountinfo` (see `proc_pid_mountinfo(5)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount point relative to the reading process's root (octal escapes decoded).
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `cgroup2`, `tracefs`, `ext4`, `fuse.sshfs`.
    pub fs_type: String,
    /// Mount source (device or `none`), octal escapes decoded.
    pub source: String,
    /// Root of the mount within its filesystem (e.g. `/` or a bind-mounted subdir).
    pub root: String,
    /// Major number of the filesystem's device (`st_dev` of files on it).
    pub major: u32,
    /// Minor number of the filesystem's device.
    pub minor: u32,
}

/// Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash) the kernel uses in mountinfo path fields.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file.
///
/// Format (per line): `id parent major:minor root mount_point options
/// [optional fields...] - fstype source super_options`. Any number of
/// optional fields (`shared:N`, `master:N`, ...) may precede the ` - `
/// separator. Blank lines are ignored; errors name the 1-based line number.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, HostError> {
    let mut mounts = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let line_no = idx + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: &str| HostError::MountInfoParse {
            line: line_no,
            reason: reason.to_string(),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 10 {
            return Err(err(&format!(
                "expected at least 10 fields, found {}",
                fields.len()
            )));
        }
        // The separator can only appear after the six fixed fields.
        let sep = fields
            .iter()
            .skip(6)
            .position(|f| *f == "-")
            .map(|p| p + 6)
            .ok_or_else(|| err("missing ' - ' separator"))?;
        if fields.len() < sep + 3 {
            return Err(err("missing fstype or source after ' - ' separator"));
        }
        let (major, minor) = fields[2]
            .split_once(':')
            .and_then(|(ma, mi)| Some((ma.parse::<u32>().ok()?, mi.parse::<u32>().ok()?)))
            .ok_or_else(|| err(&format!("bad major:minor field {:?}", fields[2])))?;
        mounts.push(MountInfo {
            mount_point: PathBuf::from(unescape_octal(fields[4])),
            fs_type: unescape_octal(fields[sep + 1]),
            source: unescape_octal(fields[sep + 2]),
            root: unescape_octal(fields[3]),
            major,
            minor,
        });
    }
    Ok(mounts)
}

/// Reads and parses a mountinfo file.
pub fn read_mountinfo(path: &Path) -> Result<Vec<MountInfo>, HostError> {
    let text = std::fs::read_to_string(path).map_err(|source| HostError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_mountinfo(&text)
}

/// Reads the mount table of the calling thread's mount namespace
/// (`/proc/thread-self/mountinfo`, falling back to `/proc/self/mountinfo`).
pub fn current_mounts() -> Result<Vec<MountInfo>, HostError> {
    read_mountinfo(Path::new("/proc/thread-self/mountinfo"))
        .or_else(|_| read_mountinfo(Path::new("/proc/self/mountinfo")))
}

/// The cgroup v2 (unified) mount point, if any.
///
/// Works for pure v2 hosts (`/sys/fs/cgroup`) and hybrid ones
/// (`/sys/fs/cgroup/unified`). When several cgroup2 mounts exist, one whose
/// root is `/` (the whole hierarchy) is preferred.
pub fn cgroup2_mount(mounts: &[MountInfo]) -> Option<PathBuf> {
    let all: Vec<&MountInfo> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
    all.iter()
        .find(|m| m.root == "/")
        .or_else(|| all.first())
        .map(|m| m.mount_point.clone())
}

/// The tracefs mount point, if tracefs is mounted.
///
/// Prefers `/sys/kernel/tracing`, then `/sys/kernel/debug/tracing`, then any
/// other tracefs mount.
pub fn tracefs_mount(mounts: &[MountInfo]) -> Option<PathBuf> {
    let tracefs: Vec<&MountInfo> = mounts.iter().filter(|m| m.fs_type == "tracefs").collect();
    [TRACEFS_DEFAULT, TRACEFS_LEGACY]
        .iter()
        .find_map(|want| {
            tracefs
                .iter()
                .find(|m| m.mount_point == Path::new(want))
                .map(|m| m.mount_point.clone())
        })
        .or_else(|| tracefs.first().map(|m| m.mount_point.clone()))
}

/// `(major, minor)` of the procfs superblock, preferring the mount at `/proc`.
///
/// This is the device of the files under `/proc` as `stat(2)` reports it.
pub fn proc_dev(mounts: &[MountInfo]) -> Option<(u32, u32)> {
    let procs: Vec<&MountInfo> = mounts.iter().filter(|m| m.fs_type == "proc").collect();
    procs
        .iter()
        .find(|m| m.mount_point == Path::new("/proc"))
        .or_else(|| procs.first())
        .map(|m| (m.major, m.minor))
}

/// Returns the tracefs mount point, mounting tracefs at `/sys/kernel/tracing`
/// first if it is not mounted anywhere.
///
/// The check reads the calling thread's mountinfo. If the mount races with
/// another mounter (`EBUSY`), the mount table is consulted again.
pub fn ensure_tracefs() -> Result<PathBuf, HostError> {
    ensure_tracefs_at(Path::new(TRACEFS_DEFAULT))
}

fn ensure_tracefs_at(target: &Path) -> Result<PathBuf, HostError> {
    if let Some(path) = tracefs_mount(&current_mounts()?) {
        return Ok(path);
    }
    let mount_err = |source: io::Error| HostError::Mount {
        target: target.to_path_buf(),
        errno: source.raw_os_error().unwrap_or(0),
        source,
    };
    let c_target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| mount_err(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let c_fs = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the
    // call; `data` may be NULL for tracefs.
    let rc = unsafe {
        libc::mount(
            c_fs.as_ptr(),
            c_target.as_ptr(),
            c_fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(target.to_path_buf());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        if let Some(path) = tracefs_mount(&current_mounts()?) {
            return Ok(path);
        }
    }
    Err(mount_err(err))
}

/// Pins glibc's mmap threshold at its default, 128 KiB. Left alone, glibc
/// raises it to the size of the largest mmapped block freed so far: once
/// start-up has freed aya's BTF buffers (several MiB), every later large
/// block (a hash table's, a vector's) comes from the heap instead, and the
/// one it outgrows stays resident as a hole when it is resized. Pinned,
/// such blocks are mapped and their pages go back to the kernel when freed:
/// the loaded agent's footprint (10,000 secrets) peaks ~2 MiB lower.
/// Call first thing in `main`, before any large allocation.
pub fn pin_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's own parameters; setting
    // M_MMAP_THRESHOLD also fixes M_TRIM_THRESHOLD at its default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Hands the allocator's free heap back to the kernel. glibc keeps freed
/// pages mapped for reuse, so a one-off peak stays resident: called once
/// the probes are loaded (aya parsing the kernel's BTF, ~15 MiB) and
/// before the ring buffer is mapped, so that peak and the ring never add
/// up (idle agent: VmHWM 61 -> 48 MiB here).
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The running kernel's release string (`uname -r`), or `"unknown"`.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it in.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } == 0 {
        let bytes: Vec<u8> = uts
            .release
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        if !bytes.is_empty() {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// `CLOCK_REALTIME - CLOCK_BOOTTIME` in nanoseconds.
///
/// Add it to a `bpf_ktime_get_boot_ns()` timestamp to get nanoseconds since
/// the Unix epoch. The boot clock is sampled on both sides of the realtime
/// read, and the tightest of a few samples is used, to limit skew.
pub fn boot_to_realtime_offset_ns() -> i128 {
    let mut best: Option<(i128, i128)> = None; // (window, offset)
    for _ in 0..5 {
        let b1 = clock_ns(libc::CLOCK_BOOTTIME);
        let r = clock_ns(libc::CLOCK_REALTIME);
        let b2 = clock_ns(libc::CLOCK_BOOTTIME);
        let window = b2 - b1;
        let offset = r - (b1 + (window / 2));
        if best.is_none_or(|(w, _)| window < w) {
            best = Some((window, offset));
        }
    }
    best.map(|(_, o)| o).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw
27 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
42 23 0:13 / /sys/kernel/tracing rw,relatime shared:20 - tracefs tracefs rw
50 27 0:45 /data\\040dir /mnt/my\\040disk\\011x rw master:3 propagate_from:2 unbindable - fuse.sshfs user@host:/a\\134b rw
";

    #[test]
    fn parses_fields_optional_and_escapes() {
        let m = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].mount_point, PathBuf::from("/proc"));
        assert_eq!(m[0].fs_type, "proc");
        assert_eq!((m[0].major, m[0].minor), (0, 21));
        assert_eq!(m[1].source, "/dev/vda1");
        assert_eq!((m[1].major, m[1].minor), (253, 1));
        let s = &m[4];
        assert_eq!(s.mount_point, PathBuf::from("/mnt/my disk\tx"));
        assert_eq!(s.root, "/data dir");
        assert_eq!(s.fs_type, "fuse.sshfs");
        assert_eq!(s.source, "user@host:/a\\b");
    }

    #[test]
    fn no_optional_fields_and_blank_lines() {
        let m = parse_mountinfo("\n1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\n").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].fs_type, "ext4");
    }

    #[test]
    fn errors_name_the_line() {
        let bad = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:x / /a rw - ext4 /dev/sda2 rw\n";
        let e = parse_mountinfo(bad).unwrap_err();
        assert!(
            matches!(e, HostError::MountInfoParse { line: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("line 2"));
        let e = parse_mountinfo("1 0 8:1 / / rw shared:1 x y z w\n").unwrap_err();
        assert!(e.to_string().contains("separator"), "{e}");
        let e = parse_mountinfo("garbage\n").unwrap_err();
        assert!(matches!(e, HostError::MountInfoParse { line: 1, .. }));
        // Trailing backslash / short escape must not panic.
        let m = parse_mountinfo("1 0 8:1 / /a\\04 rw - ext4 x\\ rw\n").unwrap();
        assert_eq!(m[0].mount_point, PathBuf::from("/a\\04"));
        assert_eq!(m[0].source, "x\\");
    }

    #[test]
    fn finds_special_mounts() {
        let m = parse_mountinfo(SAMPLE).unwrap();
        assert_eq!(
            cgroup2_mount(&m),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            tracefs_mount(&m),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        assert_eq!(proc_dev(&m), Some((0, 21)));
        assert_eq!(cgroup2_mount(&[]), None);
        assert_eq!(tracefs_mount(&m[..3]), None);
    }

    #[test]
    fn tracefs_legacy_and_cgroup2_root_preference() {
        let text = "\
30 20 0:7 / /sys/kernel/debug rw - debugfs debugfs rw
31 30 0:13 / /sys/kernel/debug/tracing rw - tracefs tracefs rw
40 20 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw
41 20 0:30 / /host/cgroup rw - cgroup2 cgroup2 rw
";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(
            tracefs_mount(&m),
            Some(PathBuf::from("/sys/kernel/debug/tracing"))
        );
        assert_eq!(cgroup2_mount(&m), Some(PathBuf::from("/host/cgroup")));
    }

    #[test]
    fn live_mountinfo_parses() {
        let m = current_mounts().unwrap();
        assert!(!m.is_empty());
        let cg = cgroup2_mount(&m);
        println!("cgroup2 mount: {cg:?}, tracefs: {:?}", tracefs_mount(&m));
        if let Some(cg) = cg {
            assert!(cg.join("cgroup.procs").exists());
        }
    }

    #[test]
    fn proc_dev_matches_stat() {
        let m = current_mounts().unwrap();
        let (ma, mi) = proc_dev(&m).expect("procfs mounted");
        let dev = std::fs::metadata("/proc").unwrap().dev();
        assert_eq!((libc::major(dev), libc::minor(dev)), (ma, mi));
    }

    #[test]
    fn ensure_tracefs_returns_mounted_path() {
        if unsafe { libc::geteuid() } != 0 {
            println!("skip: not root");
            return;
        }
        let p = ensure_tracefs().unwrap();
        assert!(p.join("available_events").exists() || p.join("events").exists());
    }

    /// Mounts tracefs in a private mount namespace of a scratch thread after
    /// unmounting it there, so the host's mounts are untouched.
    #[test]
    fn ensure_tracefs_mounts_when_missing() {
        if unsafe { libc::geteuid() } != 0 {
            println!("skip: not root");
            return;
        }
        let res = std::thread::spawn(|| -> Result<Option<PathBuf>, String> {
            // SAFETY: plain syscalls on this thread only; the new mount
            // namespace is made private before anything is unmounted.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Ok(None);
                }
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(format!("make private: {}", io::Error::last_os_error()));
                }
                // Unmount every tracefs instance visible in this namespace.
                for _ in 0..8 {
                    let mounts = current_mounts().map_err(|e| e.to_string())?;
                    let Some(p) = tracefs_mount(&mounts) else {
                        break;
                    };
                    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                    if libc::umount2(c.as_ptr(), libc::MNT_DETACH) != 0 {
                        return Ok(None);
                    }
                }
            }
            let mounts = current_mounts().map_err(|e| e.to_string())?;
            if tracefs_mount(&mounts).is_some() {
                return Ok(None);
            }
            let p = ensure_tracefs().map_err(|e| e.to_string())?;
            let after = current_mounts().map_err(|e| e.to_string())?;
            if tracefs_mount(&after) != Some(p.clone()) {
                return Err("tracefs not visible after mount".into());
            }
            Ok(Some(p))
        })
        .join()
        .unwrap();
        match res {
            Ok(Some(p)) => assert_eq!(p, PathBuf::from(TRACEFS_DEFAULT)),
            Ok(None) => println!("skip: could not set up a private mount namespace"),
            Err(e) => panic!("{e}"),
        }
        // The host namespace still has tracefs mounted (if it had before).
        let host = read_mountinfo(Path::new("/proc/self/mountinfo")).unwrap();
        println!("host tracefs after test: {:?}", tracefs_mount(&host));
    }

    #[test]
    fn release_and_clock_offset() {
        let rel = kernel_release();
        let osrel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(rel, osrel.trim());
        let off = boot_to_realtime_offset_ns();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        // boot + offset ~= now (within 50 ms)
        assert!(
            (boot + off - now).abs() < 50_000_000,
            "{}",
            boot + off - now
        );
        // Offset is the boot instant in wall time: positive and in the past.
        assert!(off > 0 && off < now);
    }
}
