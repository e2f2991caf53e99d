//! cgroup v2 attribution: map the cgroup id carried by kernel events to a
//! cgroup path, and cgroup paths to container ids and pod UIDs.
//!
//! In cgroup v2 the id returned by `bpf_get_current_cgroup_id()` is the
//! kernfs node id of the cgroup directory, which is also its inode number
//! (`st_ino`) on the cgroup2 mount.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Default minimum time between two full rescans of the cgroup tree.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Default cap on the number of directories visited by one rescan.
pub const DEFAULT_MAX_DIRS: usize = 100_000;

/// `FILEID_KERNFS` from `include/linux/exportfs.h`: a kernfs file handle is
/// the 64-bit node id.
const FILEID_KERNFS: i32 = 0xfe;

/// Resolves cgroup v2 ids to paths relative to the cgroup2 mount.
///
/// Lookups hit a cache first. On a miss the resolver first tries to open the
/// cgroup directly by id (`open_by_handle_at(2)` with a kernfs handle, which
/// needs `CAP_DAC_READ_SEARCH`); if that is unavailable it rescans the tree,
/// at most once per rescan interval and visiting at most `max_dirs`
/// directories. A rescan replaces the cache, so removed cgroups drop out
/// (until then a removed cgroup keeps resolving to its last path, which is
/// what late events from its exiting processes want). The cache never holds
/// more than `max_dirs` entries.
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    cache: HashMap<u64, String>,
    last_scan: Option<Instant>,
    rescan_interval: Duration,
    max_dirs: usize,
    truncated: bool,
    use_handles: bool,
    /// Lazily opened fd of the root plus its canonical path.
    root_fd: Option<(OwnedFd, PathBuf)>,
    root_fd_failed: bool,
}

impl CgroupResolver {
    /// Creates a resolver for the cgroup2 hierarchy mounted at `cgroup2_root`.
    ///
    /// Nothing is read until the first lookup.
    pub fn new(cgroup2_root: PathBuf) -> Self {
        Self {
            root: cgroup2_root,
            cache: HashMap::new(),
            last_scan: None,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            max_dirs: DEFAULT_MAX_DIRS,
            truncated: false,
            use_handles: true,
            root_fd: None,
            root_fd_failed: false,
        }
    }

    /// Sets the minimum interval between rescans (default 1 s).
    pub fn with_rescan_interval(mut self, interval: Duration) -> Self {
        self.rescan_interval = interval;
        self
    }

    /// Sets the cap on directories visited per rescan (default 100 000).
    pub fn with_max_dirs(mut self, max_dirs: usize) -> Self {
        self.max_dirs = max_dirs;
        self
    }

    /// Enables or disables the direct `open_by_handle_at` lookup (default on;
    /// it silently falls back to rescanning when not permitted).
    pub fn with_handle_lookup(mut self, enabled: bool) -> Self {
        self.use_handles = enabled;
        self
    }

    /// The cgroup2 mount this resolver reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of cached id → path entries.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Whether the last rescan stopped at the directory cap.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Resolves a cgroup id to its path relative to the mount (`"/"` for the
    /// root, `"/system.slice/foo.scope"`, ...).
    ///
    /// Returns `None` if the cgroup does not exist (any more), or it was
    /// created after the last rescan and neither the direct lookup nor a new
    /// rescan (throttled) is possible.
    pub fn path_of(&mut self, cgroup_id: u64) -> Option<String> {
        if let Some(p) = self.cache.get(&cgroup_id) {
            return Some(p.clone());
        }
        if self.use_handles {
            if let Some(p) = self.lookup_by_handle(cgroup_id) {
                // Bound memory when rescans never happen (every miss resolved
                // directly) and cgroups churn: start over past the dir cap.
                if self.cache.len() >= self.max_dirs {
                    self.cache.clear();
                }
                self.cache.insert(cgroup_id, p.clone());
                return Some(p);
            }
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.rescan_interval);
        if due {
            self.rescan();
            return self.cache.get(&cgroup_id).cloned();
        }
        None
    }

    /// Returns the id (directory inode) of the cgroup at `path`, relative to
    /// the mount. `..` components are refused.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        id_of(&self.root, path)
    }

    /// Rescans the whole tree now, ignoring the throttle. Returns the number
    /// of cgroups found.
    pub fn rescan(&mut self) -> usize {
        self.last_scan = Some(Instant::now());
        let mut map = HashMap::new();
        self.truncated = false;
        let Ok(meta) = fs::metadata(&self.root) else {
            self.cache = map;
            return 0;
        };
        map.insert(meta.ino(), "/".to_string());
        let mut visited = 1usize;
        let mut queue: VecDeque<(PathBuf, String)> = VecDeque::new();
        queue.push_back((self.root.clone(), String::new()));
        'walk: while let Some((dir, rel)) = queue.pop_front() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue; // removed while walking, or unreadable
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if !is_dir {
                    continue;
                }
                if visited >= self.max_dirs {
                    self.truncated = true;
                    break 'walk;
                }
                visited += 1;
                let name = entry.file_name();
                let child_rel = format!("{rel}/{}", name.to_string_lossy());
                // On kernfs, d_ino from readdir is the node id (== st_ino).
                map.insert(entry.ino(), child_rel.clone());
                queue.push_back((entry.path(), child_rel));
            }
        }
        self.cache = map;
        self.cache.len()
    }

    fn root_handle(&mut self) -> Option<&(OwnedFd, PathBuf)> {
        if self.root_fd.is_none() && !self.root_fd_failed {
            let canonical = fs::canonicalize(&self.root).ok();
            let c = CString::new(self.root.as_os_str().as_encoded_bytes()).ok();
            let opened = match (canonical, c) {
                (Some(canon), Some(c)) => {
                    // SAFETY: `c` is a valid NUL-terminated path.
                    let fd = unsafe {
                        libc::open(
                            c.as_ptr(),
                            // Not O_PATH: open_by_handle_at rejects O_PATH mount fds (EBADF).
                            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                        )
                    };
                    // SAFETY: `fd` was just returned by open and is owned here.
                    (fd >= 0).then(|| (unsafe { OwnedFd::from_raw_fd(fd) }, canon))
                }
                _ => None,
            };
            match opened {
                Some(h) => self.root_fd = Some(h),
                None => self.root_fd_failed = true,
            }
        }
        self.root_fd.as_ref()
    }

    /// Opens the cgroup directory by its kernfs id and reads back its path.
    fn lookup_by_handle(&mut self, cgroup_id: u64) -> Option<String> {
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            f_handle: [u8; 8],
        }
        let (mount_fd, canon_root) = {
            let (fd, canon) = self.root_handle()?;
            (fd.as_raw_fd(), canon.clone())
        };
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            f_handle: cgroup_id.to_ne_bytes(),
        };
        // SAFETY: `handle` is a correctly laid out `struct file_handle` with 8
        // bytes of payload; `mount_fd` is a live descriptor owned by `self`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_fd,
                &mut handle as *mut KernfsHandle,
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            if matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
            ) {
                self.use_handles = false; // not permitted here: rescan instead
            }
            return None;
        }
        let fd = i32::try_from(fd).ok()?;
        // SAFETY: the syscall returned a new descriptor we now own.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let link = fs::read_link(format!("/proc/self/fd/{}", owned.as_raw_fd())).ok()?;
        let link = link.to_string_lossy();
        if link.ends_with(" (deleted)") {
            return None;
        }
        let rel = Path::new(link.as_ref()).strip_prefix(&canon_root).ok()?;
        let rel = rel.to_string_lossy();
        Some(if rel.is_empty() {
            "/".to_string()
        } else {
            format!("/{rel}")
        })
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A 64-hex container id, lowercased.
fn hex64(s: &str) -> Option<String> {
    (s.len() == 64 && is_hex(s)).then(|| s.to_ascii_lowercase())
}

/// Normalises a pod UID: a dashed UUID (8-4-4-4-12 hex) or, for static pods,
/// the kubelet's 32-hex config hash. Returns it lowercased.
fn normalize_uid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let ok = match b.len() {
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        }),
        32 => is_hex(s),
        _ => false,
    };
    ok.then(|| s.to_ascii_lowercase())
}

/// Scope/directory prefixes that name a container's own cgroup.
const RUNTIME_PREFIXES: &[&str] = &["cri-containerd-", "crio-", "docker-", "libpod-"];
/// Prefixes that name a runtime's monitor process, not the container.
const CONMON_PREFIXES: &[&str] = &["crio-conmon-", "libpod-conmon-"];

/// What a single cgroup path component says about containers.
enum ComponentKind {
    Container(String),
    Conmon,
    Nothing,
}

fn classify_component(comp: &str) -> ComponentKind {
    let name = comp.strip_suffix(".scope").unwrap_or(comp);
    if CONMON_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return ComponentKind::Conmon;
    }
    for prefix in RUNTIME_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            if let Some(id) = hex64(rest) {
                return ComponentKind::Container(id);
            }
        }
    }
    // cgroupfs driver: bare id directory (`/kubepods/.../pod<uid>/<id>`,
    // `/docker/<id>`). A `.scope` suffix alone does not make an id.
    if name.len() == comp.len() {
        if let Some(id) = hex64(name) {
            return ComponentKind::Container(id);
        }
    }
    ComponentKind::Nothing
}

/// Extracts the 64-hex container id from a cgroup path.
///
/// Understands containerd (`cri-containerd-<id>.scope`), CRI-O
/// (`crio-<id>.scope` or `crio-<id>` with the cgroupfs driver), Docker
/// (`docker-<id>.scope`), Podman (`libpod-<id>.scope`) and bare cgroupfs
/// directories (`/kubepods/burstable/pod<uid>/<id>`, `/docker/<id>`). The
/// deepest matching component wins (nested containers, `init.scope` children
/// of a container are attributed to it). If the deepest runtime component is
/// a `crio-conmon-`/`libpod-conmon-` scope the process is the runtime's
/// monitor, not the container, and `None` is returned.
pub fn container_id(cgroup_path: &str) -> Option<String> {
    for comp in cgroup_path.rsplit('/').filter(|c| !c.is_empty()) {
        match classify_component(comp) {
            ComponentKind::Container(id) => return Some(id),
            ComponentKind::Conmon => return None,
            ComponentKind::Nothing => {}
        }
    }
    None
}

/// Extracts the pod UID from a kubelet cgroup path.
///
/// cgroupfs driver: `pod<uid>` components (dashed UID). systemd driver:
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` or
/// `kubepods-pod<uid_with_underscores>.slice`, converted back to dashes.
/// Returns the lowercased UID (32 hex without dashes for static pods).
pub fn pod_uid(cgroup_path: &str) -> Option<String> {
    for comp in cgroup_path.rsplit('/').filter(|c| !c.is_empty()) {
        if let Some(slice) = comp.strip_suffix(".slice") {
            if !slice.starts_with("kubepods-") {
                continue;
            }
            let last = slice.rsplit('-').next().unwrap_or("");
            if let Some(raw) = last.strip_prefix("pod") {
                if let Some(uid) = normalize_uid(&raw.replace('_', "-")) {
                    return Some(uid);
                }
            }
        } else if let Some(raw) = comp.strip_prefix("pod") {
            if let Some(uid) = normalize_uid(raw) {
                return Some(uid);
            }
        }
    }
    None
}

/// Extracts the pod UID from a kubelet volume path, e.g.
/// `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~secret/tls/tls.key`.
///
/// Any prefix is allowed (custom `--root-dir`, host root mounted elsewhere);
/// the first `pods/<uid>/volumes` (or `volume-subpaths`) segment is used.
pub fn pod_uid_from_kubelet_path(path: &str) -> Option<String> {
    let comps: Vec<&str> = path.split('/').collect();
    comps.windows(3).find_map(|w| {
        if w[0] == "pods" && (w[2] == "volumes" || w[2] == "volume-subpaths") {
            normalize_uid(w[1])
        } else {
            None
        }
    })
}

/// The id (directory inode, what `bpf_get_current_cgroup_id` returns) of
/// the cgroup at `path` relative to the cgroup v2 mount `root`. `..`
/// components are refused.
pub fn id_of(root: &Path, path: &str) -> Option<u64> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let meta = fs::symlink_metadata(root.join(rel)).ok()?;
    meta.is_dir().then(|| meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "3f6a5b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    const UID: &str = "8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c";
    const UID_US: &str = "8e2b6a0c_6f7d_4c1e_9b3a_5d4f2e1a0b9c";

    #[test]
    fn containerd_systemd_driver() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
    }

    #[test]
    fn guaranteed_and_besteffort_systemd() {
        let p = format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope");
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
        let p = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{CID}.scope"
        );
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
    }

    #[test]
    fn crio_and_conmon() {
        let base = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"
        );
        assert_eq!(
            container_id(&format!("{base}/crio-{CID}.scope")).as_deref(),
            Some(CID)
        );
        assert_eq!(
            container_id(&format!("{base}/crio-conmon-{CID}.scope")),
            None
        );
        // The conmon process still belongs to the pod.
        assert_eq!(
            pod_uid(&format!("{base}/crio-conmon-{CID}.scope")).as_deref(),
            Some(UID)
        );
        // CRI-O with the cgroupfs driver.
        let p = format!("/kubepods/burstable/pod{UID}/crio-{CID}");
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
    }

    #[test]
    fn cgroupfs_driver() {
        let p = format!("/kubepods/burstable/pod{UID}/{CID}");
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
        let p = format!("/kubepods/pod{UID}/{CID}");
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
        // Pod-level cgroup: pod but no container.
        let p = format!("/kubepods/besteffort/pod{UID}");
        assert_eq!(container_id(&p), None);
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
    }

    #[test]
    fn docker_shapes() {
        assert_eq!(
            container_id(&format!("/system.slice/docker-{CID}.scope")).as_deref(),
            Some(CID)
        );
        assert_eq!(
            container_id(&format!("/docker/{CID}")).as_deref(),
            Some(CID)
        );
        assert_eq!(pod_uid(&format!("/docker/{CID}")), None);
    }

    #[test]
    fn nested_and_children() {
        // systemd inside a container: processes sit in child cgroups.
        let p = format!("/system.slice/docker-{CID}.scope/init.scope");
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        // kind / docker-in-docker: the innermost container wins.
        let outer = "a".repeat(64);
        let p = format!(
            "/docker/{outer}/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(container_id(&p).as_deref(), Some(CID));
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
        // The kind node itself.
        assert_eq!(
            container_id(&format!("/docker/{outer}/system.slice/containerd.service")).as_deref(),
            Some(outer.as_str())
        );
    }

    #[test]
    fn uppercase_is_normalised() {
        let up = CID.to_ascii_uppercase();
        assert_eq!(container_id(&format!("/docker/{up}")).as_deref(), Some(CID));
        let p = format!("/kubepods/pod{}", UID.to_ascii_uppercase());
        assert_eq!(pod_uid(&p).as_deref(), Some(UID));
    }

    #[test]
    fn static_pod_hash_uid() {
        let h = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            pod_uid(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{h}.slice"
            ))
            .as_deref(),
            Some(h)
        );
        assert_eq!(
            pod_uid(&format!("/kubepods/burstable/pod{h}")).as_deref(),
            Some(h)
        );
    }

    #[test]
    fn negatives() {
        let short = &CID[..63];
        let long = format!("{CID}0");
        let nonhex = format!("{}g", &CID[..63]);
        for bad in [short, long.as_str(), nonhex.as_str()] {
            assert_eq!(container_id(&format!("/docker/{bad}")), None, "{bad}");
            assert_eq!(
                container_id(&format!("/system.slice/docker-{bad}.scope")),
                None
            );
            assert_eq!(
                container_id(&format!("/x/cri-containerd-{bad}.scope")),
                None
            );
        }
        assert_eq!(container_id(""), None);
        assert_eq!(container_id("/"), None);
        assert_eq!(container_id("/system.slice/sshd.service"), None);
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        // A bare id with .scope (no runtime prefix) is not a container.
        assert_eq!(container_id(&format!("/x/{CID}.scope")), None);
        assert_eq!(container_id(&format!("/x/containerd-{CID}.scope")), None);

        assert_eq!(pod_uid("/kubepods/burstable"), None);
        assert_eq!(pod_uid("/kubepods.slice/kubepods-burstable.slice"), None);
        assert_eq!(pod_uid(&format!("/kubepods/pod{}", &UID[..35])), None);
        assert_eq!(
            pod_uid("/kubepods/podzzzzzzzz-6f7d-4c1e-9b3a-5d4f2e1a0b9c"),
            None
        );
        // dashes in the wrong place
        assert_eq!(
            pod_uid("/kubepods/pod8e2b6a0c6-f7d-4c1e-9b3a-5d4f2e1a0b9c"),
            None
        );
        // systemd form needs the kubepods- prefix
        assert_eq!(
            pod_uid(&format!("/system.slice/foo-pod{UID_US}.slice")),
            None
        );
        assert_eq!(pod_uid("/system.slice/podman.service"), None);
    }

    #[test]
    fn kubelet_paths() {
        let p =
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~secret/db-creds/password");
        assert_eq!(pod_uid_from_kubelet_path(&p).as_deref(), Some(UID));
        let p = format!("/tmp/x123/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/kube-api-access-abcde/token");
        assert_eq!(pod_uid_from_kubelet_path(&p).as_deref(), Some(UID));
        let p = format!("/data/kubelet/pods/{UID}/volume-subpaths/cfg/app/0");
        assert_eq!(pod_uid_from_kubelet_path(&p).as_deref(), Some(UID));
        assert_eq!(
            pod_uid_from_kubelet_path(&format!("/var/lib/kubelet/pods/{UID}/etc-hosts")),
            None
        );
        assert_eq!(
            pod_uid_from_kubelet_path("/var/lib/kubelet/pods/not-a-uid/volumes/x"),
            None
        );
        assert_eq!(pod_uid_from_kubelet_path("/etc/passwd"), None);
        assert_eq!(pod_uid_from_kubelet_path(""), None);
    }

    /// Builds a fake tree in a temp dir; exercises scan, throttle, cap.
    #[test]
    fn resolver_on_plain_dirs() {
        let tmp = crate::testutil::TempDir::new("cgtree");
        let base = tmp.to_path_buf();
        fs::create_dir_all(base.join("a/b")).unwrap();
        let mut r = CgroupResolver::new(base.clone())
            .with_handle_lookup(false)
            .with_rescan_interval(Duration::from_secs(3600));
        let id_b = r.id_of("/a/b").unwrap();
        assert_eq!(r.path_of(id_b).as_deref(), Some("/a/b"));
        assert_eq!(r.path_of(r.id_of("/").unwrap()).as_deref(), Some("/"));
        assert_eq!(r.id_of("/a/../a"), None);
        assert_eq!(r.id_of("/missing"), None);
        // Created after the scan: the throttle blocks a second rescan...
        fs::create_dir(base.join("c")).unwrap();
        let id_c = r.id_of("c").unwrap();
        assert_eq!(r.path_of(id_c), None);
        // ...until the interval has passed.
        let mut r = r.with_rescan_interval(Duration::ZERO);
        assert_eq!(r.path_of(id_c).as_deref(), Some("/c"));
        // The cap bounds the walk.
        let mut capped = CgroupResolver::new(base.clone())
            .with_handle_lookup(false)
            .with_max_dirs(2);
        assert_eq!(capped.rescan(), 2);
        assert!(capped.truncated());
    }

    fn live_cgroup2_root() -> Option<PathBuf> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skip: not root");
            return None;
        }
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mounts = crate::host::parse_mountinfo(&text).ok()?;
        let root = crate::host::cgroup2_mount(&mounts);
        if root.is_none() {
            println!("skip: no cgroup2 mount");
        }
        root
    }

    /// Removes the test cgroups even if an assertion fails.
    struct CgroupGuard(Vec<PathBuf>);
    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            for p in self.0.iter().rev() {
                let _ = fs::remove_dir(p);
            }
        }
    }

    fn live_resolves_new_cgroup(handles: bool) {
        let Some(root) = live_cgroup2_root() else {
            return;
        };
        let top = root.join(format!(
            "monitor-test-{}-{}",
            std::process::id(),
            if handles { "h" } else { "s" }
        ));
        let leaf = top.join(format!("cri-containerd-{CID}.scope"));
        let mut r = CgroupResolver::new(root.clone())
            .with_handle_lookup(handles)
            // With handles, forbid rescans so only the direct lookup can succeed.
            .with_rescan_interval(if handles {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(200)
            });
        // Prime the cache before the cgroup exists.
        assert!(r.rescan() >= 1);
        let root_id = r.id_of("/").unwrap();
        assert_eq!(r.path_of(root_id).as_deref(), Some("/"));
        let mut guard = CgroupGuard(Vec::new());
        if let Err(e) = fs::create_dir(&top) {
            println!("skip: cannot create cgroup {}: {e}", top.display());
            return;
        }
        guard.0.push(top.clone());
        fs::create_dir(&leaf).unwrap();
        guard.0.push(leaf.clone());
        let id = fs::metadata(&leaf).unwrap().ino();
        let rel = format!("/{}", leaf.strip_prefix(&root).unwrap().display());
        assert_eq!(r.id_of(&rel), Some(id));
        if !handles {
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(r.path_of(id).as_deref(), Some(rel.as_str()));
        assert_eq!(container_id(&rel).as_deref(), Some(CID));
        // The kernel agrees: a process moved there reports this path.
        if let Ok(mut child) = std::process::Command::new("sleep").arg("30").spawn() {
            let moved = fs::write(leaf.join("cgroup.procs"), child.id().to_string());
            let seen = fs::read_to_string(format!("/proc/{}/cgroup", child.id()));
            let _ = child.kill();
            let _ = child.wait();
            if moved.is_ok() {
                let seen = seen.unwrap();
                let line = seen.lines().find_map(|l| l.strip_prefix("0::"));
                assert_eq!(line, Some(rel.as_str()));
            } else {
                println!("note: could not move a child into the test cgroup: {moved:?}");
            }
        }
        drop(guard);
        assert_eq!(r.id_of(&rel), None);
        // A removed cgroup no longer resolves (fresh resolver, no cache).
        let mut fresh = CgroupResolver::new(root).with_handle_lookup(handles);
        assert_eq!(fresh.path_of(id), None);
    }

    #[test]
    fn live_new_cgroup_resolves_by_handle() {
        live_resolves_new_cgroup(true);
    }

    #[test]
    fn live_new_cgroup_resolves_by_rescan() {
        live_resolves_new_cgroup(false);
    }

    /// Our own cgroup id (from /proc/self/cgroup's path) round-trips.
    #[test]
    fn live_own_cgroup() {
        let Some(root) = live_cgroup2_root() else {
            return;
        };
        let text = fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
            println!("skip: no v2 line in /proc/self/cgroup");
            return;
        };
        let mut r = CgroupResolver::new(root);
        let Some(id) = r.id_of(path) else {
            println!("skip: own cgroup {path} not visible under the mount");
            return;
        };
        assert_eq!(r.path_of(id).as_deref(), Some(path));
    }
}
