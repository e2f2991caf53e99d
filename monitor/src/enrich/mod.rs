//! Enrichment: turns a decoded kernel record into an [`Event`] with the
//! process (ppid, exe, cgroup, container, pod), the descriptor (path, kind)
//! and the destination resolved.
//!
//! Keeps a process cache (fed by fork/exec/exit records, filled from procfs
//! at first sight) and a per-process descriptor table (fed by open, dup,
//! connect and close records of tracked processes).
pub mod cgroup;
pub mod k8s;
pub mod procfs;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use monitor_common::{
    EventHeader, FileInfo, Hook, InodeKey, SockAddr, DATA_FIRST_BYTES, DATA_TRUNCATED,
    PROC_ENVIRON, PROC_MEM, PROC_PTRACE, PROC_VM_READV,
};

use crate::{
    event::{Dest, Detail, Event, EventKind, Process, UtcTime},
    observer::decode::{cstr, split_nul, RawEvent},
};

use self::{
    cgroup::CgroupResolver,
    k8s::K8sResolver,
    procfs::{fd_kind_from_link, fd_kind_from_mode, FdKind, ProcFs},
};

/// How long an exited process stays resolvable (records still in flight).
const REAP_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default)]
struct ProcEntry {
    ppid: Option<u32>,
    exe: Option<String>,
    cgroup: Option<String>,
    container_id: Option<String>,
    pod_uid: Option<String>,
    k8s: Option<k8s::K8s>,
    exited: Option<Instant>,
}

/// What the agent knows of one open descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdEntry {
    pub path: Option<String>,
    pub ino: u64,
    pub dev: u32,
    pub watch_id: u32,
    /// For sockets: where it was connected.
    pub dest: Option<Dest>,
}

/// Exec records wait for their result (the new image or a failure).
struct PendingExec {
    filename: String,
    argv: Vec<String>,
    env: Vec<String>,
}

/// Resolves watch ids and watched inodes to paths (implemented by the
/// watch set).
pub trait WatchNames {
    /// The pattern or path a watch id was registered as.
    fn watch_name(&self, id: u32) -> Option<String>;
    /// A path known to have this inode.
    fn path_of(&self, key: &InodeKey) -> Option<String>;
}

pub struct Enricher {
    procfs: ProcFs,
    cgroups: Option<CgroupResolver>,
    k8s: Option<K8sResolver>,
    boot_offset_ns: i128,
    procs: HashMap<u32, ProcEntry>,
    fds: HashMap<(u32, i32), FdEntry>,
    pending_exec: HashMap<u32, PendingExec>,
    cgroup_cache: HashMap<u64, (String, Option<String>, Option<String>)>,
    next_id: u64,
}

impl Enricher {
    pub fn new(procfs: ProcFs, cgroups: Option<CgroupResolver>, boot_offset_ns: i128) -> Self {
        Self {
            procfs,
            cgroups,
            k8s: None,
            boot_offset_ns,
            procs: HashMap::new(),
            fds: HashMap::new(),
            pending_exec: HashMap::new(),
            cgroup_cache: HashMap::new(),
            next_id: 1,
        }
    }

    /// Resolve Kubernetes names of processes in pods from the kubelet's
    /// files (see [`k8s`]).
    pub fn with_k8s(mut self, resolver: K8sResolver) -> Self {
        self.k8s = Some(resolver);
        self
    }

    /// The Kubernetes names of a process in a pod: resolved while unknown
    /// or incomplete (the resolver throttles its own rereads), then kept.
    fn k8s_of(&mut self, pid: u32) -> Option<k8s::K8s> {
        let resolver = self.k8s.as_mut()?;
        let e = self.procs.get_mut(&pid)?;
        let uid = e.pod_uid.as_deref()?;
        let complete = e.k8s.as_ref().is_some_and(|k| {
            k.pod.is_some() && (k.container.is_some() || e.container_id.is_none())
        });
        if !complete {
            if let Some(k) = resolver.lookup(uid, e.container_id.as_deref()) {
                e.k8s = Some(k);
            }
        }
        e.k8s.clone()
    }

    /// Continue event numbering (after the store's last id).
    pub fn set_next_id(&mut self, id: u64) {
        self.next_id = id.max(1);
    }

    /// A fresh event id (for events the agent makes itself).
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Wall-clock nanoseconds of a kernel timestamp.
    pub fn unix_ns(&self, ts_ns: u64) -> i128 {
        self.boot_offset_ns + ts_ns as i128
    }

    /// The descriptor table entry of `pid`'s `fd`.
    pub fn fd(&self, pid: u32, fd: i32) -> Option<&FdEntry> {
        self.fds.get(&(pid, fd))
    }

    /// Watched descriptors of a process (for fork inheritance).
    pub fn watched_fds(&self, pid: u32) -> Vec<(i32, FdEntry)> {
        self.fds
            .iter()
            .filter(|((p, _), e)| *p == pid && e.watch_id != 0)
            .map(|((_, fd), e)| (*fd, e.clone()))
            .collect()
    }

    /// The enriched process of a header. The cgroup (and so container and
    /// pod) comes from the record's own cgroup id: processes move between
    /// cgroups (that is how a container starts), the cache must not pin it.
    pub fn process(&mut self, h: &EventHeader) -> Process {
        let pid = h.pid;
        if !self.procs.contains_key(&pid) {
            let entry = self.load_proc(pid, h.cgroup_id);
            self.procs.insert(pid, entry);
        }
        if let Some(cg) = self.cgroup_info(h.cgroup_id) {
            let e = self.procs.get_mut(&pid).expect("inserted above");
            if e.cgroup.as_deref() != Some(cg.0.as_str()) {
                e.cgroup = Some(cg.0);
                e.container_id = cg.1;
                e.pod_uid = cg.2;
                e.k8s = None;
            }
        }
        let k8s = self.k8s_of(pid);
        let e = &self.procs[&pid];
        Process {
            pid,
            tid: Some(h.tid),
            ppid: e.ppid,
            uid: h.uid,
            gid: Some(h.gid),
            comm: crate::observer::decode::comm(&h.comm),
            exe: e.exe.clone(),
            cgroup: e.cgroup.clone(),
            container_id: e.container_id.clone(),
            pod_uid: e.pod_uid.clone(),
            k8s,
            cmd_line: None,
        }
    }

    /// The cgroup path of a cgroup id (cached), if it resolves.
    pub fn cgroup_path(&mut self, cgroup_id: u64) -> Option<String> {
        self.cgroup_info(cgroup_id).map(|c| c.0)
    }

    /// A live process's cgroup v2 path from `/proc/<pid>/cgroup`.
    pub fn proc_cgroup_path(&self, pid: u32) -> Option<String> {
        self.procfs.cgroup_v2_path(pid)
    }

    /// (path, container id, pod uid) of a cgroup id, cached.
    fn cgroup_info(&mut self, cgroup_id: u64) -> Option<(String, Option<String>, Option<String>)> {
        if cgroup_id == 0 {
            return None;
        }
        if let Some(c) = self.cgroup_cache.get(&cgroup_id) {
            return Some(c.clone());
        }
        let path = self.cgroups.as_mut()?.path_of(cgroup_id)?;
        let info = (
            path.clone(),
            cgroup::container_id(&path),
            cgroup::pod_uid(&path),
        );
        if self.cgroup_cache.len() > 65_536 {
            self.cgroup_cache.clear();
        }
        self.cgroup_cache.insert(cgroup_id, info.clone());
        Some(info)
    }

    fn load_proc(&mut self, pid: u32, cgroup_id: u64) -> ProcEntry {
        let mut e = ProcEntry {
            ppid: self.procfs.stat(pid).ok().map(|s| s.ppid),
            exe: self.procfs.exe(pid).map(|p| p.display().to_string()),
            ..Default::default()
        };
        self.set_cgroup(&mut e, pid, cgroup_id);
        e
    }

    fn set_cgroup(&mut self, e: &mut ProcEntry, pid: u32, cgroup_id: u64) {
        let path = (cgroup_id != 0)
            .then(|| self.cgroups.as_mut().and_then(|c| c.path_of(cgroup_id)))
            .flatten()
            .or_else(|| self.procfs.cgroup_v2_path(pid));
        if let Some(p) = &path {
            e.container_id = cgroup::container_id(p);
            e.pod_uid = cgroup::pod_uid(p);
        }
        e.cgroup = path;
    }

    /// Forget what is cached of `pid` (its next event loads it from procfs
    /// again): a process first seen through fanotify while the capture
    /// probes were detached has, at best, the entry copied from its parent
    /// at fork (its exec and cgroup move were not seen).
    pub fn refresh(&mut self, pid: u32) {
        if self.procfs.stat(pid).is_ok() {
            self.procs.remove(&pid);
        }
    }

    /// The process behind a pid (cache, else procfs) for rules that look at
    /// another process than the actor.
    pub fn process_of(&mut self, pid: u32) -> Option<Process> {
        if !self.procs.contains_key(&pid) {
            let st = self.procfs.stat(pid).ok()?;
            let mut e = ProcEntry {
                ppid: Some(st.ppid),
                exe: self.procfs.exe(pid).map(|p| p.display().to_string()),
                ..Default::default()
            };
            self.set_cgroup(&mut e, pid, 0);
            self.procs.insert(pid, e);
        }
        let k8s = self.k8s_of(pid);
        let e = &self.procs[&pid];
        let (uid, gid) = self.procfs.status_ids(pid).unwrap_or((0, 0));
        let comm = self.procfs.stat(pid).map(|s| s.comm).unwrap_or_default();
        Some(Process {
            pid,
            tid: Some(pid),
            ppid: e.ppid,
            uid,
            gid: Some(gid),
            comm,
            exe: e.exe.clone(),
            cgroup: e.cgroup.clone(),
            container_id: e.container_id.clone(),
            pod_uid: e.pod_uid.clone(),
            k8s,
            cmd_line: None,
        })
    }

    pub fn live_pids(&self) -> Vec<u32> {
        self.procfs.list_pids()
    }

    /// Forget processes that exited a while ago.
    pub fn reap(&mut self) {
        let now = Instant::now();
        let dead: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, e)| e.exited.is_some_and(|t| now.duration_since(t) > REAP_AFTER))
            .map(|(p, _)| *p)
            .collect();
        for pid in &dead {
            self.procs.remove(pid);
            self.pending_exec.remove(pid);
        }
        if !dead.is_empty() {
            self.fds.retain(|(p, _), _| !dead.contains(p));
        }
    }

    /// Turn a record into an event. `None` for records that only feed state
    /// (an exec waiting for its result, a failed exec).
    pub fn enrich(
        &mut self,
        raw: &RawEvent,
        watches: &dyn WatchNames,
        tracked: bool,
    ) -> Option<Event> {
        let h = *raw.header();
        let pid = h.pid;
        let mut d = Detail::default();
        let kind = match raw {
            RawEvent::Open(e) => {
                let watched = InodeKey {
                    ino: e.file.ino,
                    dev: e.file.dev,
                    _pad: 0,
                };
                let user_path = (e.path_len > 0).then(|| cstr(&e.path, e.path_len));
                // The real path of what was opened (symlinks, dirfd and a
                // hard link's own name resolved) while the process lives;
                // else the path it passed, resolved against its dirfd.
                let path = self
                    .opened_path(pid, e.fd, e.file.ino)
                    .or_else(|| user_path.map(|p| self.resolve_at(pid, e.dirfd, p)))
                    .or_else(|| {
                        (e.watch_id != 0)
                            .then(|| watches.path_of(&watched))
                            .flatten()
                    })
                    .or_else(|| self.procfs.fd_target(pid, e.fd as u32))
                    .or_else(|| Some(cstr(&e.name, e.name_len)));
                d.fd = Some(e.fd);
                d.path = path.clone();
                d.fd_kind = Some(kind_of(&e.file));
                d.inode = Some(e.file.ino);
                d.flags = Some(e.flags);
                if e.watch_id != 0 {
                    d.watch = watches.watch_name(e.watch_id);
                }
                if e.proc_file != 0 {
                    d.target_pid = Some(e.proc_pid);
                    d.access = Some(access_name(e.proc_file).into());
                }
                self.fds.insert(
                    (pid, e.fd),
                    FdEntry {
                        path,
                        ino: e.file.ino,
                        dev: e.file.dev,
                        watch_id: e.watch_id,
                        dest: None,
                    },
                );
                EventKind::Open
            }
            RawEvent::Read(e, _) => {
                d.fd = Some(e.fd);
                d.path = self.fd_path(pid, e.fd, &e.file, watches);
                d.fd_kind = Some(kind_of(&e.file));
                d.inode = Some(e.file.ino);
                d.bytes = Some(e.count);
                d.captured = Some(e.data_len);
                d.truncated = Some(e.flags & DATA_TRUNCATED != 0);
                d.watch = watches.watch_name(e.watch_id);
                EventKind::Read
            }
            RawEvent::Mmap(e) => {
                d.fd = Some(e.fd);
                d.path = self.fd_path(pid, e.fd, &e.file, watches);
                d.bytes = Some(e.len);
                d.prot = Some(e.prot);
                d.flags = Some(e.flags);
                d.watch = watches.watch_name(e.watch_id);
                EventKind::Mmap
            }
            RawEvent::Close(e) => {
                d.fd = Some(e.fd);
                d.path = self.fds.remove(&(pid, e.fd)).and_then(|f| f.path);
                d.watch = watches.watch_name(e.watch_id);
                EventKind::Close
            }
            RawEvent::Dup(e) => {
                d.oldfd = Some(e.oldfd);
                d.newfd = Some(e.newfd);
                if let Some(f) = self.fds.get(&(pid, e.oldfd)).cloned() {
                    d.path = f.path.clone();
                    self.fds.insert((pid, e.newfd), f);
                }
                d.watch = watches.watch_name(e.watch_id);
                EventKind::Dup
            }
            RawEvent::Transfer(e) => {
                d.fd = Some(e.fd_in);
                d.path = self.fd_path(pid, e.fd_in, &e.in_file, watches);
                d.fd_out = Some(e.fd_out);
                d.out_path = if e.out_path_len > 0 {
                    Some(cstr(&e.out_path, e.out_path_len))
                } else {
                    self.fd_path(pid, e.fd_out, &e.out_file, watches)
                };
                d.out_kind = Some(kind_of(&e.out_file));
                d.dest = sock_dest(&e.out_peer);
                d.bytes = Some(e.count);
                d.watch = watches.watch_name(e.watch_id);
                EventKind::Copy
            }
            RawEvent::Write(e, _, kpath) => {
                let mut k = kind_of(&e.file);
                d.fd = Some(e.fd);
                d.path = match k {
                    FdKind::Socket => None,
                    _ => kpath
                        .clone()
                        .or_else(|| self.fd_path(pid, e.fd, &e.file, watches)),
                };
                // Since 6.15 anonymous inodes carry S_IFREG in i_mode: the
                // /proc link ("anon_inode:[eventfd]") tells them apart.
                if k == FdKind::File
                    && d.path
                        .as_deref()
                        .is_some_and(|p| p.starts_with("anon_inode:"))
                {
                    k = FdKind::AnonInode;
                }
                // A pipe is named by its inode, from the kernel: the fd may
                // point elsewhere by the time /proc is read.
                if k == FdKind::Pipe {
                    d.path = Some(format!("pipe:[{}]", e.file.ino));
                }
                d.fd_kind = Some(k);
                d.dest = sock_dest(&e.peer)
                    .or_else(|| self.fds.get(&(pid, e.fd)).and_then(|f| f.dest.clone()));
                d.bytes = Some(e.count);
                d.captured = Some(e.data_len);
                d.truncated = Some(e.flags & DATA_TRUNCATED != 0);
                if e.flags & DATA_FIRST_BYTES != 0 {
                    d.first_bytes = Some(true);
                }
                d.tls = monitor_common::TlsLib::from_u32(
                    (e.flags & monitor_common::DATA_TLS_MASK) >> monitor_common::DATA_TLS_SHIFT,
                )
                .map(crate::event::TlsLibrary::from);
                EventKind::Write
            }
            RawEvent::Exec(e, argv, envp) => {
                let argv = split_nul(argv.bytes())
                    .into_iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let env = split_nul(envp.bytes())
                    .into_iter()
                    .map(|kv| {
                        let name = kv.split(|&b| b == b'=').next().unwrap_or_default();
                        String::from_utf8_lossy(name).into_owned()
                    })
                    .collect();
                self.pending_exec.insert(
                    pid,
                    PendingExec {
                        filename: cstr(&e.filename, e.filename_len),
                        argv,
                        env,
                    },
                );
                return None;
            }
            RawEvent::ExecResult(e) => {
                let pending = self.pending_exec.remove(&pid);
                if e.ret != 0 {
                    return None;
                }
                let filename = pending
                    .as_ref()
                    .map(|p| self.absolutize(pid, p.filename.clone()));
                // The new image: refresh what exec changes. A process that
                // already exited (short-lived ones often have, by now) has
                // no /proc/<pid>/exe: the path it exec'd stands in for it.
                let mut entry = self.procs.remove(&pid).unwrap_or_default();
                entry.exe = self
                    .procfs
                    .exe(pid)
                    .map(|p| p.display().to_string())
                    .or_else(|| filename.clone());
                if entry.ppid.is_none() {
                    entry.ppid = self.procfs.stat(pid).ok().map(|s| s.ppid);
                }
                self.set_cgroup(&mut entry, pid, h.cgroup_id);
                self.procs.insert(pid, entry);
                if let Some(p) = pending {
                    d.filename = filename;
                    d.argv = Some(p.argv);
                    d.env = Some(p.env);
                }
                d.ret = Some(e.ret);
                EventKind::Exec
            }
            RawEvent::Fork(e) => {
                let parent = self
                    .procs
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| self.load_proc(pid, h.cgroup_id));
                self.procs.insert(pid, parent.clone());
                self.procs.insert(
                    e.child_pid,
                    ProcEntry {
                        ppid: Some(pid),
                        exited: None,
                        ..parent
                    },
                );
                let inherited: Vec<((u32, i32), FdEntry)> = self
                    .fds
                    .iter()
                    .filter(|((p, _), _)| *p == pid)
                    .map(|((_, fd), f)| ((e.child_pid, *fd), f.clone()))
                    .collect();
                self.fds.extend(inherited);
                d.child_pid = Some(e.child_pid);
                EventKind::Fork
            }
            RawEvent::Exit(_) => {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.exited = Some(Instant::now());
                } else {
                    self.procs.insert(
                        pid,
                        ProcEntry {
                            exited: Some(Instant::now()),
                            ..Default::default()
                        },
                    );
                }
                EventKind::Exit
            }
            RawEvent::Connect(e) => {
                let dest = if e.unix_path_len > 0 {
                    Some(unix_dest(&e.unix_path))
                } else {
                    sock_dest(&e.addr)
                };
                d.fd = Some(e.fd);
                d.dest = dest.clone();
                self.fds.insert(
                    (pid, e.fd),
                    FdEntry {
                        dest,
                        ..Default::default()
                    },
                );
                EventKind::Connect
            }
            RawEvent::ProcAccess(e) => {
                d.target_pid = Some(e.target_pid);
                d.access = Some(access_name(e.access).into());
                d.target_tracked = Some(e.target_tracked != 0);
                if e.fd >= 0 {
                    d.fd = Some(e.fd);
                }
                EventKind::ProcAccess
            }
            RawEvent::Getenv(e) => {
                d.name = Some(cstr(&e.name, e.name_len));
                EventKind::Getenv
            }
            RawEvent::UringCreate(e) => {
                d.fd = Some(e.fd);
                d.flags = Some(e.flags);
                d.entries = Some(e.sq_entries);
                EventKind::IoUring
            }
        };
        let process = self.process(&h);
        let id = self.next_id;
        self.next_id += 1;
        Some(Event {
            id,
            time: UtcTime::from_unix_nanos(self.unix_ns(h.ts_ns)),
            kind,
            syscall: Hook::from_u32(h.hook).name().into(),
            process,
            tracked,
            detail: d,
        })
    }

    /// Path of a descriptor: our table (checked against the inode), then
    /// procfs, then a watched path with that inode.
    fn fd_path(
        &self,
        pid: u32,
        fd: i32,
        file: &FileInfo,
        watches: &dyn WatchNames,
    ) -> Option<String> {
        if let Some(f) = self.fds.get(&(pid, fd)) {
            if f.path.is_some() && (file.ino == 0 || f.ino == file.ino) {
                return f.path.clone();
            }
        }
        let key = InodeKey {
            ino: file.ino,
            dev: file.dev,
            _pad: 0,
        };
        if let Some(p) = watches.path_of(&key) {
            return Some(p);
        }
        self.procfs.fd_target(pid, fd as u32)
    }

    /// `/proc/<pid>/fd/<fd>` when it is still the file the kernel opened
    /// (same inode) and a path (not a pipe, socket or deleted file).
    fn opened_path(&self, pid: u32, fd: i32, ino: u64) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        if fd < 0 || ino == 0 {
            return None;
        }
        let target = self.procfs.fd_target(pid, fd as u32)?;
        if !target.starts_with('/') || target.ends_with(" (deleted)") {
            return None;
        }
        let meta = std::fs::metadata(self.procfs.pid_path(pid, &format!("fd/{fd}"))).ok()?;
        (meta.ino() == ino).then_some(target)
    }

    /// A path an `openat(dirfd, path)` passed, made absolute: against the
    /// directory `dirfd` was opened on (known from its open, else from
    /// /proc), or the working directory for `AT_FDCWD`.
    fn resolve_at(&self, pid: u32, dirfd: i32, path: String) -> String {
        if path.starts_with('/') || dirfd == monitor_common::AT_FDCWD {
            return self.absolutize(pid, path);
        }
        let dir = self
            .fds
            .get(&(pid, dirfd))
            .and_then(|f| f.path.clone())
            .or_else(|| self.procfs.fd_target(pid, dirfd as u32))
            .filter(|d| d.starts_with('/'));
        match dir {
            Some(d) => join_clean(Path::new(&d), &path),
            None => path,
        }
    }

    /// Relative paths are resolved against the process's cwd when known.
    fn absolutize(&self, pid: u32, path: String) -> String {
        if path.starts_with('/') {
            return path;
        }
        match self.procfs.cwd(pid) {
            Some(cwd) => join_clean(&cwd, &path),
            None => path,
        }
    }
}

fn join_clean(base: &Path, rel: &str) -> String {
    let mut p = PathBuf::from(base);
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                p.pop();
            }
            s => p.push(s),
        }
    }
    p.display().to_string()
}

fn kind_of(f: &FileInfo) -> FdKind {
    fd_kind_from_mode(f.mode, f.rdev)
}

fn access_name(a: u32) -> &'static str {
    match a {
        PROC_ENVIRON => "environ",
        PROC_MEM => "mem",
        PROC_PTRACE => "ptrace",
        PROC_VM_READV => "process_vm_readv",
        _ => "unknown",
    }
}

/// The inet address (IPv4-mapped IPv6 as IPv4), or `None` for none.
pub fn sock_dest(a: &SockAddr) -> Option<Dest> {
    let ip = match a.family {
        2 => Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3]).into(),
        10 => {
            let ip = Ipv6Addr::from(a.addr);
            match ip.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => ip.into(),
            }
        }
        _ => return None,
    };
    Some(Dest::Inet(SocketAddr::new(ip, a.port as u16)))
}

/// `IP:PORT` / `[IPv6]:PORT`, or `None` for no inet address.
pub fn format_addr(a: &SockAddr) -> Option<String> {
    sock_dest(a).map(|d| d.to_string())
}

/// A unix socket's path, `@NAME` for abstract sockets.
pub fn unix_dest(sun_path: &[u8]) -> Dest {
    let raw = &sun_path[..sun_path.len().min(108)];
    if raw.first() == Some(&0) {
        let end = raw[1..]
            .iter()
            .position(|&b| b == 0)
            .map(|i| i + 1)
            .unwrap_or(raw.len());
        Dest::Unix(format!("@{}", String::from_utf8_lossy(&raw[1..end])))
    } else {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Dest::Unix(String::from_utf8_lossy(&raw[..end]).into_owned())
    }
}

/// `unix:PATH`, `unix:@NAME` for abstract sockets.
pub fn format_unix(sun_path: &[u8]) -> String {
    unix_dest(sun_path).to_string()
}

/// Kind of what a `/proc/<pid>/fd/<n>` link points to.
pub fn link_kind(target: &str) -> FdKind {
    fd_kind_from_link(target)
}

/// Process facts for a pid (the enricher's cache), as the correlator asks
/// for them.
pub trait ProcLookup {
    fn process_of(&mut self, pid: u32) -> Option<Process>;
    /// Every live pid (for resolving cgroup/container/pod/exe holders).
    fn live_pids(&self) -> Vec<u32>;
    /// A live process's Kubernetes names (cheaper than a whole
    /// [`ProcLookup::process_of`] where the lookup caches them).
    fn k8s_names(&mut self, pid: u32) -> Option<k8s::K8s> {
        self.process_of(pid).and_then(|p| p.k8s)
    }
}

impl ProcLookup for Enricher {
    fn process_of(&mut self, pid: u32) -> Option<Process> {
        Enricher::process_of(self, pid)
    }
    fn live_pids(&self) -> Vec<u32> {
        Enricher::live_pids(self)
    }
    /// From the cache of a known process (no /proc read).
    fn k8s_names(&mut self, pid: u32) -> Option<k8s::K8s> {
        if self.procs.contains_key(&pid) {
            self.k8s_of(pid)
        } else {
            Enricher::process_of(self, pid).and_then(|p| p.k8s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_inet_and_unix_destinations() {
        let mut a = SockAddr {
            family: 2,
            port: 5432,
            addr: [0; 16],
        };
        a.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(format_addr(&a).unwrap(), "127.0.0.1:5432");
        let b = SockAddr {
            family: 10,
            port: 443,
            addr: Ipv6Addr::LOCALHOST.octets(),
        };
        assert_eq!(format_addr(&b).unwrap(), "[::1]:443");
        let mapped = SockAddr {
            family: 10,
            port: 80,
            addr: Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets(),
        };
        assert_eq!(format_addr(&mapped).unwrap(), "10.1.2.3:80");
        assert_eq!(format_addr(&SockAddr::default()), None);
        let mut p = [0u8; 112];
        p[..8].copy_from_slice(b"/dev/log");
        assert_eq!(format_unix(&p), "unix:/dev/log");
        let mut q = [0u8; 112];
        q[1..5].copy_from_slice(b"abst");
        assert_eq!(format_unix(&q), "unix:@abst");
    }

    #[test]
    fn relative_paths_join_cleanly() {
        assert_eq!(
            join_clean(Path::new("/vault/secrets"), "db"),
            "/vault/secrets/db"
        );
        assert_eq!(join_clean(Path::new("/a/b"), "../c/./d"), "/a/c/d");
    }
}
