//! Shared plumbing: the config global, headers, counters, record output,
//! user-memory capture and the `task -> file -> inode/socket` walk.
use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns,
            bpf_ktime_get_ns, bpf_probe_read_kernel_str, bpf_probe_read_user as raw_read_user,
        },
    },
    programs::TracePointContext,
    EbpfContext,
};
use aya_log_ebpf::warn;
use monitor_common::{
    Config, Counter, EventHeader, EventKind, FdKey, FileInfo, Hook, MapId, SockAddr, TrackedProc,
    HDR_TRACKED, LOG_GATE_NS, LOST_BY_KIND_BASE, MAX_CAPTURE, MAX_PATH, MAX_PATH_DEPTH, PATH_AREA,
    SCRATCH_LEN,
};

use crate::maps::{COUNTERS, EVENTS, LOG_GATE, SCRATCH, TRACKED_PROCS};

/// Filled by the agent before load (read-only data section).
#[unsafe(no_mangle)]
static CONFIG: Config = Config::zeroed();

/// Read one config field (volatile: the loader rewrites `.rodata`).
#[inline(always)]
pub fn cfg<T: Copy>(field: &T) -> T {
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
pub fn config() -> &'static Config {
    &CONFIG
}

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// Every `try_*` returns this; the error is only used to stop early.
pub type Res = Result<(), i64>;

/// Syscall tracepoint argument `i` (sys_enter_*: 8-byte slots from offset 16).
#[inline(always)]
pub fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // Direct context access: the tracepoint record is readable memory.
    unsafe { *((ctx.as_ptr() as *const u8).add(16 + 8 * i) as *const u64) }
}

/// Return value in sys_exit_* records.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { *((ctx.as_ptr() as *const u8).add(16) as *const i64) }
}

#[inline(always)]
pub fn pid_tgid() -> u64 {
    bpf_get_current_pid_tgid()
}

#[inline(always)]
pub fn tgid_of(pid_tgid: u64) -> u32 {
    (pid_tgid >> 32) as u32
}

/// True for the agent's own process: never traced.
#[inline(always)]
pub fn is_agent(tgid: u32) -> bool {
    tgid == cfg(&config().agent_tgid)
}

#[inline(always)]
pub fn is_tracked(tgid: u32) -> bool {
    unsafe { TRACKED_PROCS.get(&tgid).is_some() }
}

/// Mark `tgid` tracked (or add a reason); children inherit. `hook` is the
/// caller's (a `Hook`), for the log record when the map is full.
#[inline(always)]
pub fn track(tgid: u32, reason: u32, hook: u32) {
    let v = TrackedProc { reason, inherit: 1 };
    if let Some(p) = TRACKED_PROCS.get_ptr_mut(&tgid) {
        unsafe { (*p).reason |= reason };
    } else if TRACKED_PROCS.insert(&tgid, &v, 0).is_err() {
        map_full(hook, MapId::TrackedProcs);
    }
}

/// A map insert failed (map full): counted, and logged (rate-limited).
#[inline(always)]
pub fn map_full(hook: u32, map: MapId) {
    failed(Counter::MapFull, hook, map);
}

/// An error path was taken (`c` is `MapFull`, `ReadUserFailed` or
/// `KernelWalkFailed`): counted exactly as before (the metrics), then
/// offered to the log. Nothing here runs unless the error already happened.
#[inline(always)]
pub fn failed(c: Counter, hook: u32, map: MapId) {
    count(c, 1);
    log_failure(c as u32, hook, map as u32);
}

/// The log record of an error path, through aya-log (its own ring,
/// `AYA_LOGS`, drained by the agent into its log at level warn, target
/// `monitor::ebpf`). It names the error kind (a `Counter`), the hook (a
/// `Hook`), the map for a full map (a `MapId`) and the task, never any
/// bytes read or captured. At most one record per error kind per CPU per
/// second (`LOG_GATE`, `LOG_GATE_NS`): the ones held back are counted and
/// the next record says how many, so a flood of failures cannot flood the
/// log path. The format is parsed by the agent (`sensors::ebpf_log`): keep
/// them in step.
///
/// Not inlined: the log macro expands to a lot, and one copy per program
/// beats one per error site (program size, verifier work).
#[inline(never)]
fn log_failure(kind: u32, hook: u32, map: u32) {
    let Some(g) = LOG_GATE.get_ptr_mut(kind) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let suppressed = unsafe {
        let last = (*g).last_ns;
        if last != 0 && now.wrapping_sub(last) < LOG_GATE_NS {
            (*g).suppressed += 1;
            return;
        }
        let held = (*g).suppressed;
        (*g).last_ns = now;
        (*g).suppressed = 0;
        held
    };
    let pt = bpf_get_current_pid_tgid();
    warn!(
        &(),
        target: "monitor::ebpf",
        "error path kind={} hook={} map={} pid={} tid={} suppressed={}",
        kind,
        hook,
        map,
        (pt >> 32) as u32,
        pt as u32,
        suppressed
    );
}

#[inline(always)]
pub fn count(c: Counter, n: u64) {
    count_slot(c as u32, n);
}

#[inline(always)]
fn count_slot(slot: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        unsafe { *p += n };
    }
}

/// A record could not be written to the ring buffer: count it, per kind.
#[inline(always)]
pub fn lost(kind: EventKind) {
    count(Counter::RingbufFull, 1);
    count_slot(LOST_BY_KIND_BASE + kind as u32, 1);
}

/// Fill a header for the current task.
#[inline(always)]
pub unsafe fn fill_header(h: *mut EventHeader, kind: EventKind, hook: Hook) {
    let pt = bpf_get_current_pid_tgid();
    let ug = bpf_get_current_uid_gid();
    unsafe {
        (*h).ts_ns = bpf_ktime_get_boot_ns();
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        (*h).kind = kind as u32;
        (*h).pid = (pt >> 32) as u32;
        (*h).tid = pt as u32;
        (*h).uid = ug as u32;
        (*h).gid = (ug >> 32) as u32;
        (*h).hook = hook as u32;
        (*h).flags = if is_tracked((pt >> 32) as u32) {
            HDR_TRACKED
        } else {
            0
        };
        (*h)._pad = 0;
        (*h).comm = bpf_get_current_comm().unwrap_or([0u8; 16]);
    }
}

/// Reserve a fixed-size record, let `fill` write it, submit it.
#[inline(always)]
pub fn emit<T: 'static>(kind: EventKind, hook: Hook, fill: impl FnOnce(*mut T)) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            let p = entry.as_mut_ptr();
            unsafe { fill_header(p as *mut EventHeader, kind, hook) };
            fill(p);
            entry.submit(0);
            count(Counter::Emitted, 1);
        }
        None => lost(kind),
    }
}

/// The per-CPU scratch buffer.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    SCRATCH.get_ptr_mut(0).map(|p| p as *mut u8)
}

/// Output `len` bytes of scratch as one record.
#[inline(always)]
pub fn output_scratch(buf: *mut u8, len: usize, kind: EventKind) -> bool {
    if len == 0 || len > SCRATCH_LEN {
        return false;
    }
    let rec = unsafe { core::slice::from_raw_parts(buf as *const u8, len) };
    match EVENTS.output::<[u8]>(rec, 0) {
        Ok(()) => {
            count(Counter::Emitted, 1);
            true
        }
        Err(_) => {
            lost(kind);
            false
        }
    }
}

/// Copy up to `len` bytes of user memory at `src` to `dst` (which has room
/// for `MAX_CAPTURE` bytes). Returns the bytes copied. `hook` (a `Hook`)
/// is for the log record of a failed read.
#[inline(always)]
pub unsafe fn capture_user(dst: *mut u8, src: u64, len: u64, hook: u32) -> u32 {
    let mut n = len as u32;
    if n > MAX_CAPTURE as u32 {
        n = MAX_CAPTURE as u32;
    }
    if n == 0 || src == 0 {
        return 0;
    }
    let r = unsafe { raw_read_user(dst as *mut c_void, n, src as *const c_void) };
    if r < 0 {
        failed(Counter::ReadUserFailed, hook, MapId::None);
        return 0;
    }
    count(Counter::CapturedBytes, n as u64);
    n
}

/// One `struct iovec` from user memory.
#[inline(always)]
pub unsafe fn read_iovec(iov: u64, i: u64) -> Option<(u64, u64)> {
    let base: u64 = unsafe { bpf_probe_read_user((iov + 16 * i) as *const u64) }.ok()?;
    let len: u64 = unsafe { bpf_probe_read_user((iov + 16 * i + 8) as *const u64) }.ok()?;
    Some((base, len))
}

/// Capture from an iovec array into `dst` (room for `MAX_CAPTURE * 2`
/// bytes), at most `limit` bytes in all, walking up to 4 vectors.
#[inline(always)]
pub unsafe fn capture_iov(dst: *mut u8, iov: u64, iovcnt: u64, limit: u32, hook: u32) -> u32 {
    let mut done: u32 = 0;
    let mut i: u64 = 0;
    while i < 4 {
        if i >= iovcnt || done >= limit {
            break;
        }
        let Some((base, len)) = (unsafe { read_iovec(iov, i) }) else {
            break;
        };
        let room = (limit - done) as u64;
        let want = if len < room { len } else { room };
        let off = (done as usize) & (MAX_CAPTURE - 1);
        let n = unsafe { capture_user(dst.add(off), base, want, hook) };
        if n == 0 && want != 0 {
            break;
        }
        done += n;
        i += 1;
    }
    if done > limit {
        done = limit;
    }
    done
}

#[inline(always)]
unsafe fn kread<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// `struct file *` of descriptor `fd` of the current task. `hook` (a
/// `Hook`) is for the log record of a failed walk.
#[inline(always)]
pub fn file_of_fd(fd: u32, hook: u32) -> Option<u64> {
    let o = &config().offsets;
    if cfg(&o.valid) == 0 {
        return None;
    }
    let r = (|| unsafe {
        let task = bpf_get_current_task();
        let files: u64 = kread(task + cfg(&o.task_files) as u64)?;
        let fdt: u64 = kread(files + cfg(&o.files_fdt) as u64)?;
        let max: u32 = kread(fdt + cfg(&o.fdt_max_fds) as u64)?;
        if fd >= max {
            return None;
        }
        let arr: u64 = kread(fdt + cfg(&o.fdt_fd) as u64)?;
        let file: u64 = kread(arr + 8 * fd as u64)?;
        if file == 0 {
            None
        } else {
            Some(file)
        }
    })();
    if r.is_none() {
        failed(Counter::KernelWalkFailed, hook, MapId::None);
    }
    r
}

/// inode/superblock facts of an open file. Also returns the `super_block *`.
#[inline(always)]
pub fn file_info(file: u64, out: *mut FileInfo) -> Option<u64> {
    let o = &config().offsets;
    unsafe {
        let inode: u64 = kread(file + cfg(&o.file_f_inode) as u64)?;
        let sb: u64 = kread(inode + cfg(&o.inode_i_sb) as u64)?;
        (*out).ino = kread(inode + cfg(&o.inode_i_ino) as u64)?;
        (*out).dev = kread(sb + cfg(&o.sb_s_dev) as u64)?;
        let mode: u16 = kread(inode + cfg(&o.inode_i_mode) as u64)?;
        (*out).mode = mode as u32;
        (*out).rdev = kread(inode + cfg(&o.inode_i_rdev) as u64).unwrap_or(0);
        (*out).f_flags = kread(file + cfg(&o.file_f_flags) as u64).unwrap_or(0);
        Some(sb)
    }
}

#[inline(always)]
pub fn is_socket(info: &FileInfo) -> bool {
    info.mode & S_IFMT == S_IFSOCK
}

const S_IFREG: u32 = 0o100000;

#[inline(always)]
pub fn is_regular(info: &FileInfo) -> bool {
    info.mode & S_IFMT == S_IFREG
}

/// `super_block.s_magic`.
#[inline(always)]
pub fn sb_magic(sb: u64) -> u64 {
    unsafe { kread(sb + cfg(&config().offsets.sb_s_magic) as u64) }.unwrap_or(0)
}

/// `file->f_path.dentry`.
#[inline(always)]
pub fn file_dentry(file: u64) -> Option<u64> {
    let o = &config().offsets;
    unsafe { kread(file + cfg(&o.file_f_path) as u64 + cfg(&o.path_dentry) as u64) }
}

#[inline(always)]
pub fn dentry_parent(dentry: u64) -> Option<u64> {
    unsafe { kread(dentry + cfg(&config().offsets.dentry_d_parent) as u64) }
}

/// Copy a dentry's name into `dst` (NUL-terminated, at most `N` bytes).
/// Returns the length without the NUL.
#[inline(always)]
pub fn dentry_name<const N: usize>(dentry: u64, dst: *mut [u8; N]) -> u32 {
    let o = &config().offsets;
    let Some(name) =
        (unsafe { kread::<u64>(dentry + cfg(&o.dentry_d_name) as u64 + cfg(&o.qstr_name) as u64) })
    else {
        return 0;
    };
    let r =
        unsafe { bpf_probe_read_kernel_str(dst as *mut c_void, N as u32, name as *const c_void) };
    if r <= 0 {
        0
    } else {
        (r - 1) as u32
    }
}

/// The absolute path of an open file, built right to left in
/// `buf[PATH_AREA..PATH_AREA + MAX_PATH]` by walking dentries up to the
/// mount root and crossing mounts (what d_path does; it is not callable
/// from tracepoints). Paths are those of the process's mount namespace.
/// Returns (offset in `buf`, length); a path too deep or too long keeps its
/// last components.
///
/// The walk's state (dentry, mount, position) lives in scratch memory, not
/// in registers: both ways an iteration can continue (next dentry, or up a
/// mount) then reach the loop head in the same verifier state and are
/// pruned, instead of doubling the paths to verify at every level.
#[inline(always)]
pub fn file_path(file: u64, buf: *mut u8) -> Option<(usize, usize)> {
    let o = &config().offsets;
    let f_path = cfg(&o.file_f_path) as u64;
    unsafe {
        let dentry: u64 = kread(file + f_path + cfg(&o.path_dentry) as u64)?;
        let vfsmnt: u64 = kread(file + f_path + cfg(&o.path_mnt) as u64)?;
        let st = buf.add(PATH_STATE) as *mut u64;
        core::ptr::write_volatile(st, dentry);
        core::ptr::write_volatile(st.add(1), vfsmnt - cfg(&o.mount_mnt) as u64);
        core::ptr::write_volatile(st.add(2), MAX_PATH as u64);
        let mut i: u32 = 0;
        while i < MAX_PATH_DEPTH {
            i += 1;
            if !path_step(buf, st) {
                break;
            }
        }
        let mut pos = core::ptr::read_volatile(st.add(2)) as usize;
        if pos > MAX_PATH {
            return None;
        }
        if pos == MAX_PATH {
            pos -= 1;
            *buf.add(PATH_AREA + (pos & (MAX_PATH - 1))) = b'/';
        }
        Some((PATH_AREA + (pos & (MAX_PATH - 1)), MAX_PATH - pos))
    }
}

/// Offset in scratch of the path walk's state: dentry, mount, position.
const PATH_STATE: usize = PATH_AREA - 48;

/// One level of `file_path`. False when the walk is over.
#[inline(always)]
unsafe fn path_step(buf: *mut u8, st: *mut u64) -> bool {
    let o = &config().offsets;
    let d_name = cfg(&o.dentry_d_name) as u64;
    let mount_mnt = cfg(&o.mount_mnt) as u64;
    unsafe {
        let dentry = core::ptr::read_volatile(st);
        let mnt = core::ptr::read_volatile(st.add(1));
        let Some(root) = kread::<u64>(mnt + mount_mnt + cfg(&o.vfsmount_mnt_root) as u64) else {
            return false;
        };
        if dentry == root {
            // Top of this mount: continue from its mountpoint in the parent.
            let Some(parent) = kread::<u64>(mnt + cfg(&o.mount_mnt_parent) as u64) else {
                return false;
            };
            if parent == mnt {
                return false;
            }
            let Some(mp) = kread::<u64>(mnt + cfg(&o.mount_mnt_mountpoint) as u64) else {
                return false;
            };
            core::ptr::write_volatile(st, mp);
            core::ptr::write_volatile(st.add(1), parent);
            return true;
        }
        let Some(parent) = kread::<u64>(dentry + cfg(&o.dentry_d_parent) as u64) else {
            return false;
        };
        if parent == dentry {
            return false;
        }
        let len =
            kread::<u32>(dentry + d_name + cfg(&o.qstr_len) as u64).unwrap_or(0) as usize & 255;
        let Some(name) = kread::<u64>(dentry + d_name + cfg(&o.qstr_name) as u64) else {
            return false;
        };
        let pos = core::ptr::read_volatile(st.add(2)) as usize;
        if pos > MAX_PATH || len + 1 > pos {
            return false;
        }
        let pos = pos - (len + 1);
        let dst = buf.add(PATH_AREA + (pos & (MAX_PATH - 1)));
        *dst = b'/';
        if bpf_probe_read_kernel_buf_raw(dst.add(1), len as u32, name) < 0 {
            return false;
        }
        core::ptr::write_volatile(st, parent);
        core::ptr::write_volatile(st.add(2), pos as u64);
        true
    }
}

#[inline(always)]
pub unsafe fn bpf_probe_read_kernel_buf_raw(dst: *mut u8, len: u32, src: u64) -> i64 {
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst as *mut c_void,
            len,
            src as *const c_void,
        )
    }
}

/// Peer address of a connected socket file.
#[inline(always)]
pub fn sock_peer(file: u64, out: *mut SockAddr) {
    let o = &config().offsets;
    unsafe {
        let Some(sock) = kread::<u64>(file + cfg(&o.file_private_data) as u64) else {
            return;
        };
        let Some(sk) = kread::<u64>(sock + cfg(&o.socket_sk) as u64) else {
            return;
        };
        let family: u16 = kread(sk + cfg(&o.sk_family) as u64).unwrap_or(0);
        (*out).family = family as u32;
        let port: u16 = kread(sk + cfg(&o.sk_dport) as u64).unwrap_or(0);
        (*out).port = u16::from_be(port) as u32;
        if family == AF_INET {
            let a: [u8; 4] = kread(sk + cfg(&o.sk_daddr) as u64).unwrap_or([0; 4]);
            let dst = addr_of_mut!((*out).addr) as *mut u8;
            core::ptr::copy_nonoverlapping(a.as_ptr(), dst, 4);
        } else if family == AF_INET6 {
            (*out).addr = kread(sk + cfg(&o.sk_v6_daddr) as u64).unwrap_or([0; 16]);
        }
    }
}

/// Parse a user `struct sockaddr` (inet, inet6, unix) into `out`; the unix
/// path, if any, goes to `unix_path` (when given). Returns the family.
#[inline(always)]
pub unsafe fn read_sockaddr(
    uaddr: u64,
    out: *mut SockAddr,
    unix_path: Option<*mut [u8; monitor_common::UNIX_PATH_LEN]>,
) -> (u16, u32) {
    if uaddr == 0 {
        return (0, 0);
    }
    let family: u16 = unsafe { bpf_probe_read_user(uaddr as *const u16) }.unwrap_or(0);
    unsafe {
        (*out).family = family as u32;
        if family == AF_INET || family == AF_INET6 {
            let port: u16 = bpf_probe_read_user((uaddr + 2) as *const u16).unwrap_or(0);
            (*out).port = u16::from_be(port) as u32;
        }
        if family == AF_INET {
            let a: [u8; 4] = bpf_probe_read_user((uaddr + 4) as *const [u8; 4]).unwrap_or([0; 4]);
            let dst = addr_of_mut!((*out).addr) as *mut u8;
            core::ptr::copy_nonoverlapping(a.as_ptr(), dst, 4);
        } else if family == AF_INET6 {
            (*out).addr = bpf_probe_read_user((uaddr + 8) as *const [u8; 16]).unwrap_or([0; 16]);
        } else if family == AF_UNIX {
            if let Some(dst) = unix_path {
                // sun_path may start with NUL (abstract socket): copy raw bytes.
                let r = raw_read_user(dst as *mut c_void, 108, (uaddr + 2) as *const c_void);
                if r == 0 {
                    return (family, 108);
                }
            }
        }
    }
    (family, 0)
}

#[inline(always)]
pub fn fd_key(tgid: u32, fd: u32) -> FdKey {
    FdKey { tgid, fd }
}
