//! Files: opens (watched inodes, `/proc/<pid>/environ|mem`), reads of tracked
//! descriptors with payload capture, mmap, close, dup family and the
//! kernel-side copy routes (copy_file_range, sendfile, splice).
use core::{
    mem::size_of,
    ptr::{addr_of_mut, write_bytes},
};

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user_str},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    CloseEvent, DataEvent, DupEvent, EventKind, FileInfo, Hook, InodeKey, MapId, MmapEvent,
    OpenEvent, ProcAccessEvent, Stash, TrackedFd, TransferEvent, AT_FDCWD, DATA_TRACKED,
    DATA_TRACKED_FD, DATA_TRUNCATED, NAME_LEN, PATH_LEN, PROC_ENVIRON, PROC_MEM, SCRATCH_LEN,
    TRACK_OPENED_WATCHED,
};

use crate::{
    maps::{NEW_CONNS, STASH, TRACKED_FDS, WATCHED_INODES},
    util::*,
};

// ---------------------------------------------------------------- open ----

#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let _ = try_open_enter(&ctx, 0, Hook::Open);
    0
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let _ = try_open_enter(&ctx, 1, Hook::Openat);
    0
}

#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let _ = try_open_enter(&ctx, 1, Hook::Openat2);
    0
}

#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    let _ = try_open_exit(&ctx, Hook::Open);
    0
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    let _ = try_open_exit(&ctx, Hook::Openat);
    0
}

#[tracepoint]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    let _ = try_open_exit(&ctx, Hook::Openat2);
    0
}

/// Tracked processes: keep the path pointer and flags for the exit.
#[inline(always)]
fn try_open_enter(ctx: &TracePointContext, path_arg: usize, hook: Hook) -> Res {
    let pt = pid_tgid();
    let tgid = tgid_of(pt);
    if is_agent(tgid) || !is_tracked(tgid) {
        return Ok(());
    }
    let flags = match hook {
        // openat2(dfd, path, struct open_how *how, size): how->flags is a u64.
        Hook::Openat2 => unsafe { bpf_probe_read_user(arg(ctx, 2) as *const u64) }.unwrap_or(0),
        _ => arg(ctx, path_arg + 1),
    };
    // openat/openat2 take the directory fd first; open has none.
    let dirfd = if path_arg == 1 {
        arg(ctx, 0) as i32
    } else {
        AT_FDCWD
    };
    let s = Stash {
        ptr: arg(ctx, path_arg),
        count: 0,
        fd: dirfd,
        hook: hook as u32,
        arg: flags as u32,
        _pad: 0,
    };
    if STASH.insert(&pt, &s, 0).is_err() {
        map_full(hook as u32, MapId::Stash);
    }
    Ok(())
}

#[inline(always)]
fn try_open_exit(ctx: &TracePointContext, hook: Hook) -> Res {
    let pt = pid_tgid();
    let tgid = tgid_of(pt);
    if is_agent(tgid) {
        return Ok(());
    }
    let stash = unsafe { STASH.get(&pt) }.copied();
    if stash.is_some() {
        let _ = STASH.remove(&pt);
    }
    let (flags, dirfd, path) = match stash {
        Some(s) => (s.arg, s.fd, s.ptr),
        None => (0, AT_FDCWD, 0),
    };
    open_result(tgid, hook, ret(ctx), flags, dirfd, PathFrom::User(path))
}

/// Where an open's path comes from.
#[derive(Clone, Copy)]
pub enum PathFrom {
    /// The string the process passed (0: none kept).
    User(u64),
    /// The opened file's dentries, walked in the kernel (io_uring opens:
    /// the string was the kernel's own copy, freed by the completion).
    Kernel,
}

/// After an open returned `r` (a descriptor or an error): a watched inode
/// makes the process tracked and its descriptor a tracked one; the open is
/// reported when it touched a watched file, `/proc/<pid>/environ|mem`, or
/// the opener is tracked. Shared by the syscalls and io_uring.
#[inline(always)]
pub fn open_result(tgid: u32, hook: Hook, r: i64, flags: u32, dirfd: i32, path: PathFrom) -> Res {
    if r < 0 {
        return Ok(());
    }
    let fd = r as u32;
    let file = file_of_fd(fd, hook as u32).ok_or(0i64)?;
    let mut info = FileInfo::default();
    let sb = file_info(file, &mut info).ok_or(0i64)?;

    let key = InodeKey {
        ino: info.ino,
        dev: info.dev,
        _pad: 0,
    };
    let watch_id = unsafe { WATCHED_INODES.get(&key) }
        .map(|w| w.watch_id)
        .unwrap_or(0);

    // /proc/<pid>/environ and /proc/<pid>/mem, any opener.
    let mut proc_file = 0u32;
    let mut proc_pid = 0u32;
    if sb_magic(sb) == PROC_SUPER_MAGIC {
        if let Some((which, pid)) = proc_target(file) {
            if pid != tgid {
                proc_file = which;
                proc_pid = pid;
            }
        }
    }

    if watch_id != 0 {
        let t = TrackedFd {
            file: info,
            watch_id,
            _pad: 0,
        };
        if TRACKED_FDS.insert(&fd_key(tgid, fd), &t, 0).is_err() {
            map_full(hook as u32, MapId::TrackedFds);
        }
        track(tgid, TRACK_OPENED_WATCHED, hook as u32);
    }
    if watch_id == 0 && proc_file == 0 && !is_tracked(tgid) {
        return Ok(());
    }

    // A path from the kernel is built in scratch before reserving.
    // (Plain integers: an `Option` here leaves a register the verifier
    // sees as uninitialized.)
    let (mut kstart, mut klen): (usize, usize) = (0, 0);
    let mut user_path = 0u64;
    match path {
        PathFrom::User(p) => user_path = p,
        PathFrom::Kernel => {
            let buf = scratch().ok_or(0i64)?;
            if let Some((s, l)) = file_path(file, buf) {
                kstart = s;
                klen = l;
            }
        }
    }

    emit::<OpenEvent>(EventKind::Open, hook, |e| unsafe {
        (*e).file = info;
        (*e).fd = fd as i32;
        (*e).flags = flags;
        (*e).watch_id = watch_id;
        (*e).proc_pid = proc_pid;
        (*e).proc_file = proc_file;
        (*e).dirfd = dirfd;
        (*e).path_len = 0;
        (*e).name_len = match file_dentry(file) {
            Some(d) => dentry_name::<NAME_LEN>(d, addr_of_mut!((*e).name)),
            None => 0,
        };
        if user_path != 0 {
            let n = bpf_probe_read_user_str(
                addr_of_mut!((*e).path) as *mut _,
                PATH_LEN as u32,
                user_path as *const _,
            );
            if n > 0 {
                (*e).path_len = (n - 1) as u32;
            }
        } else if klen > 0 {
            // A path longer than the field keeps its tail.
            let mut n = klen;
            if n > PATH_LEN {
                n = PATH_LEN;
            }
            if let Some(buf) = scratch() {
                let src = buf.add((kstart + klen - n) & (SCRATCH_LEN - 1)) as u64;
                let dst = addr_of_mut!((*e).path) as *mut u8;
                if bpf_probe_read_kernel_buf_raw(dst, n as u32, src) == 0 {
                    (*e).path_len = n as u32;
                }
            }
        }
    });

    if proc_file != 0 {
        let target_tracked = is_tracked(proc_pid) as u32;
        emit::<ProcAccessEvent>(EventKind::ProcAccess, hook, |e| unsafe {
            (*e).target_pid = proc_pid;
            (*e).access = proc_file;
            (*e).request = 0;
            (*e).target_tracked = target_tracked;
            (*e).fd = fd as i32;
        });
    }
    Ok(())
}

/// For a procfs file named `environ` or `mem`, the numeric name of its parent
/// directory (the pid, or a tid under `task/`).
#[inline(always)]
fn proc_target(file: u64) -> Option<(u32, u32)> {
    let d = file_dentry(file)?;
    let mut name = [0u8; 8];
    let n = dentry_name::<8>(d, &mut name);
    let which = if n == 7 && &name[..7] == b"environ" {
        PROC_ENVIRON
    } else if n == 3 && &name[..3] == b"mem" {
        PROC_MEM
    } else {
        return None;
    };
    let parent = dentry_parent(d)?;
    let mut digits = [0u8; 12];
    let len = dentry_name::<12>(parent, &mut digits);
    if len == 0 || len > 10 {
        return None;
    }
    let mut pid: u32 = 0;
    let mut i = 0usize;
    while i < 10 {
        if i as u32 >= len {
            break;
        }
        let c = digits[i];
        if !c.is_ascii_digit() {
            return None;
        }
        pid = pid.wrapping_mul(10).wrapping_add((c - b'0') as u32);
        i += 1;
    }
    Some((which, pid))
}

// ---------------------------------------------------------------- read ----

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    let _ = try_read_enter(&ctx, Hook::Read);
    0
}

#[tracepoint]
pub fn sys_enter_pread64(ctx: TracePointContext) -> u32 {
    let _ = try_read_enter(&ctx, Hook::Pread64);
    0
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    let _ = try_read_enter(&ctx, Hook::Readv);
    0
}

#[tracepoint]
pub fn sys_enter_preadv(ctx: TracePointContext) -> u32 {
    let _ = try_read_enter(&ctx, Hook::Preadv);
    0
}

#[tracepoint]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    let _ = try_read_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_pread64(ctx: TracePointContext) -> u32 {
    let _ = try_read_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_readv(ctx: TracePointContext) -> u32 {
    let _ = try_read_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_preadv(ctx: TracePointContext) -> u32 {
    let _ = try_read_exit(&ctx);
    0
}

/// Only reads of tracked descriptors are kept (one map lookup for others).
#[inline(always)]
fn try_read_enter(ctx: &TracePointContext, hook: Hook) -> Res {
    let pt = pid_tgid();
    let tgid = tgid_of(pt);
    let fd = arg(ctx, 0) as u32;
    if unsafe { TRACKED_FDS.get(&fd_key(tgid, fd)) }.is_none() {
        return Ok(());
    }
    let s = Stash {
        ptr: arg(ctx, 1),
        count: arg(ctx, 2),
        fd: fd as i32,
        hook: hook as u32,
        arg: 0,
        _pad: 0,
    };
    if STASH.insert(&pt, &s, 0).is_err() {
        map_full(hook as u32, MapId::Stash);
    }
    Ok(())
}

#[inline(always)]
fn try_read_exit(ctx: &TracePointContext) -> Res {
    let pt = pid_tgid();
    let Some(s) = (unsafe { STASH.get(&pt) }).copied() else {
        return Ok(());
    };
    let _ = STASH.remove(&pt);
    read_result(tgid_of(pt), s, ret(ctx))
}

/// After a read of a tracked descriptor returned `r`: the bytes read, from
/// the buffer kept in `s`. Shared by the syscalls and io_uring.
#[inline(always)]
pub fn read_result(tgid: u32, s: Stash, r: i64) -> Res {
    if r <= 0 {
        return Ok(());
    }
    let hook = Hook::from_u32(s.hook);
    let Some(t) = (unsafe { TRACKED_FDS.get(&fd_key(tgid, s.fd as u32)) }).copied() else {
        return Ok(());
    };
    track(tgid, TRACK_OPENED_WATCHED, hook as u32);
    let buf = scratch().ok_or(0i64)?;
    let e = buf as *mut DataEvent;
    let data = unsafe { buf.add(size_of::<DataEvent>()) };
    let cap = cfg(&config().capture_bytes);
    let want = if (r as u64) < cap as u64 {
        r as u64
    } else {
        cap as u64
    };
    let n = unsafe {
        match hook {
            Hook::Readv | Hook::Preadv | Hook::UringReadv => {
                capture_iov(data, s.ptr, s.count, want as u32, hook as u32)
            }
            _ => capture_user(data, s.ptr, want, hook as u32),
        }
    };
    unsafe {
        fill_header(e as *mut _, EventKind::Read, hook);
        (*e).file = t.file;
        write_bytes(addr_of_mut!((*e).peer), 0, 1);
        (*e).fd = s.fd;
        (*e).flags =
            DATA_TRACKED | DATA_TRACKED_FD | if (n as i64) < r { DATA_TRUNCATED } else { 0 };
        (*e).count = r as u64;
        (*e).data_len = n;
        (*e).watch_id = t.watch_id;
        (*e).path_len = 0;
        (*e).chunk_off = 0;
    }
    output_scratch(buf, size_of::<DataEvent>() + n as usize, EventKind::Read);
    Ok(())
}

// ---------------------------------------------------------------- mmap ----

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let _ = try_mmap(&ctx);
    0
}

#[inline(always)]
fn try_mmap(ctx: &TracePointContext) -> Res {
    let fd = arg(ctx, 4) as i64 as i32;
    if fd < 0 {
        return Ok(());
    }
    let tgid = tgid_of(pid_tgid());
    let Some(t) = (unsafe { TRACKED_FDS.get(&fd_key(tgid, fd as u32)) }).copied() else {
        return Ok(());
    };
    track(tgid, TRACK_OPENED_WATCHED, Hook::Mmap as u32);
    emit::<MmapEvent>(EventKind::Mmap, Hook::Mmap, |e| unsafe {
        (*e).file = t.file;
        (*e).fd = fd;
        (*e).prot = arg(ctx, 2) as u32;
        (*e).flags = arg(ctx, 3) as u32;
        (*e).watch_id = t.watch_id;
        (*e).len = arg(ctx, 1);
        (*e).offset = arg(ctx, 5);
    });
    Ok(())
}

// --------------------------------------------------------------- close ----

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let _ = try_close(&ctx);
    0
}

#[inline(always)]
fn try_close(ctx: &TracePointContext) -> Res {
    let tgid = tgid_of(pid_tgid());
    let fd = arg(ctx, 0) as u32;
    let key = fd_key(tgid, fd);
    let _ = NEW_CONNS.remove(&key);
    let Some(t) = (unsafe { TRACKED_FDS.get(&key) }).copied() else {
        return Ok(());
    };
    let _ = TRACKED_FDS.remove(&key);
    emit::<CloseEvent>(EventKind::Close, Hook::Close, |e| unsafe {
        (*e).fd = fd as i32;
        (*e).watch_id = t.watch_id;
    });
    Ok(())
}

// ----------------------------------------------------------------- dup ----

#[tracepoint]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    let _ = try_dup_enter(&ctx, Hook::Dup);
    0
}

#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    let _ = try_dup_enter(&ctx, Hook::Dup2);
    0
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    let _ = try_dup_enter(&ctx, Hook::Dup3);
    0
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    let _ = try_dup_enter(&ctx, Hook::Fcntl);
    0
}

#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    let _ = try_dup_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_dup2(ctx: TracePointContext) -> u32 {
    let _ = try_dup_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_dup3(ctx: TracePointContext) -> u32 {
    let _ = try_dup_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    let _ = try_dup_exit(&ctx);
    0
}

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// Stash when the old fd is tracked, or (dup2/dup3) when the target fd is
/// tracked and about to be replaced.
#[inline(always)]
fn try_dup_enter(ctx: &TracePointContext, hook: Hook) -> Res {
    if hook == Hook::Fcntl {
        let cmd = arg(ctx, 1);
        if cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC {
            return Ok(());
        }
    }
    let pt = pid_tgid();
    let tgid = tgid_of(pt);
    let oldfd = arg(ctx, 0) as u32;
    // Separate early returns: the verifier refuses a merged `ptr | ptr`.
    let old_tracked = unsafe { TRACKED_FDS.get(&fd_key(tgid, oldfd)) }.is_some();
    if !old_tracked {
        if hook != Hook::Dup2 && hook != Hook::Dup3 {
            return Ok(());
        }
        if unsafe { TRACKED_FDS.get(&fd_key(tgid, arg(ctx, 1) as u32)) }.is_none() {
            return Ok(());
        }
    }
    let s = Stash {
        ptr: 0,
        count: 0,
        fd: oldfd as i32,
        hook: hook as u32,
        arg: old_tracked as u32,
        _pad: 0,
    };
    if STASH.insert(&pt, &s, 0).is_err() {
        map_full(hook as u32, MapId::Stash);
    }
    Ok(())
}

#[inline(always)]
fn try_dup_exit(ctx: &TracePointContext) -> Res {
    let pt = pid_tgid();
    let Some(s) = (unsafe { STASH.get(&pt) }).copied() else {
        return Ok(());
    };
    let _ = STASH.remove(&pt);
    let r = ret(ctx);
    if r < 0 || r == s.fd as i64 {
        return Ok(());
    }
    let tgid = tgid_of(pt);
    let newkey = fd_key(tgid, r as u32);
    if s.arg == 0 {
        // An untracked fd replaced a tracked one (dup2/dup3).
        let _ = TRACKED_FDS.remove(&newkey);
        return Ok(());
    }
    let Some(t) = (unsafe { TRACKED_FDS.get(&fd_key(tgid, s.fd as u32)) }).copied() else {
        return Ok(());
    };
    if TRACKED_FDS.insert(&newkey, &t, 0).is_err() {
        map_full(s.hook, MapId::TrackedFds);
    }
    emit::<DupEvent>(EventKind::Dup, Hook::from_u32(s.hook), |e| unsafe {
        (*e).oldfd = s.fd;
        (*e).newfd = r as i32;
        (*e).watch_id = t.watch_id;
        (*e)._pad = 0;
    });
    Ok(())
}

// ------------------------------------------------------------ transfer ----

#[tracepoint]
pub fn sys_enter_copy_file_range(ctx: TracePointContext) -> u32 {
    // (fd_in, off_in, fd_out, off_out, len, flags)
    let _ = try_transfer_enter(&ctx, Hook::CopyFileRange, 0, 2);
    0
}

#[tracepoint]
pub fn sys_enter_sendfile64(ctx: TracePointContext) -> u32 {
    // (out_fd, in_fd, offset, count)
    let _ = try_transfer_enter(&ctx, Hook::Sendfile, 1, 0);
    0
}

#[tracepoint]
pub fn sys_enter_splice(ctx: TracePointContext) -> u32 {
    // (fd_in, off_in, fd_out, off_out, len, flags)
    let _ = try_transfer_enter(&ctx, Hook::Splice, 0, 2);
    0
}

#[tracepoint]
pub fn sys_exit_copy_file_range(ctx: TracePointContext) -> u32 {
    let _ = try_transfer_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_sendfile64(ctx: TracePointContext) -> u32 {
    let _ = try_transfer_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_splice(ctx: TracePointContext) -> u32 {
    let _ = try_transfer_exit(&ctx);
    0
}

/// In-kernel copies out of a tracked descriptor, or by a tracked process:
/// keep the descriptors for the exit, where the copied count is known.
#[inline(always)]
fn try_transfer_enter(ctx: &TracePointContext, hook: Hook, a_in: usize, a_out: usize) -> Res {
    let pt = pid_tgid();
    let tgid = tgid_of(pt);
    if is_agent(tgid) {
        return Ok(());
    }
    let fd_in = arg(ctx, a_in) as u32;
    if unsafe { TRACKED_FDS.get(&fd_key(tgid, fd_in)) }.is_none() && !is_tracked(tgid) {
        return Ok(());
    }
    let s = Stash {
        ptr: 0,
        count: 0,
        fd: fd_in as i32,
        hook: hook as u32,
        arg: arg(ctx, a_out) as u32,
        _pad: 0,
    };
    if STASH.insert(&pt, &s, 0).is_err() {
        map_full(hook as u32, MapId::Stash);
    }
    Ok(())
}

#[inline(always)]
fn try_transfer_exit(ctx: &TracePointContext) -> Res {
    let pt = pid_tgid();
    let Some(s) = (unsafe { STASH.get(&pt) }).copied() else {
        return Ok(());
    };
    let _ = STASH.remove(&pt);
    transfer_result(tgid_of(pt), s, ret(ctx))
}

/// After an in-kernel copy (descriptors kept in `s`) moved `r` bytes.
/// Shared by the syscalls and io_uring.
#[inline(always)]
pub fn transfer_result(tgid: u32, s: Stash, r: i64) -> Res {
    if r <= 0 {
        return Ok(());
    }
    let (fd_in, fd_out) = (s.fd as u32, s.arg);
    let tracked_in = unsafe { TRACKED_FDS.get(&fd_key(tgid, fd_in)) }.copied();
    if tracked_in.is_some() {
        track(tgid, TRACK_OPENED_WATCHED, s.hook);
    }
    let out_file = file_of_fd(fd_out, s.hook);
    // The destination file's path, built in scratch before reserving.
    // (Plain integers: an `Option` here leaves a register the verifier
    // sees as uninitialized.)
    let (mut path_start, mut path_len): (usize, usize) = (0, 0);
    let buf = scratch().ok_or(0i64)?;
    if let Some(f) = out_file {
        let mut info = FileInfo::default();
        file_info(f, &mut info);
        if is_regular(&info) {
            if let Some((s, l)) = file_path(f, buf) {
                path_start = s;
                path_len = l;
            }
        }
    }
    emit::<TransferEvent>(EventKind::Transfer, Hook::from_u32(s.hook), |e| unsafe {
        write_bytes(addr_of_mut!((*e).in_file), 0, 1);
        write_bytes(addr_of_mut!((*e).out_file), 0, 1);
        write_bytes(addr_of_mut!((*e).out_peer), 0, 1);
        match tracked_in {
            Some(t) => {
                (*e).in_file = t.file;
                (*e).watch_id = t.watch_id;
            }
            None => {
                (*e).watch_id = 0;
                if let Some(f) = file_of_fd(fd_in, s.hook) {
                    file_info(f, addr_of_mut!((*e).in_file));
                }
            }
        }
        if let Some(f) = out_file {
            file_info(f, addr_of_mut!((*e).out_file));
            if is_socket(&(*e).out_file) {
                sock_peer(f, addr_of_mut!((*e).out_peer));
            }
        }
        (*e).fd_in = fd_in as i32;
        (*e).fd_out = fd_out as i32;
        (*e).count = r as u64;
        (*e).out_path_len = 0;
        if path_len > 0 {
            // Keep the tail of a path longer than the field.
            let mut n = path_len;
            if n > PATH_LEN {
                n = PATH_LEN;
            }
            let src = buf.add((path_start + path_len - n) & (SCRATCH_LEN - 1)) as u64;
            let dst = addr_of_mut!((*e).out_path) as *mut u8;
            if bpf_probe_read_kernel_buf_raw(dst, n as u32, src) == 0 {
                (*e).out_path_len = n as u32;
            }
        }
    });
    Ok(())
}
