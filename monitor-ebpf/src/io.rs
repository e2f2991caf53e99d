//! Writes and sends: write/pwrite64/writev/pwritev/sendto/sendmsg with the
//! first bytes of the buffer, for tracked processes, and for the first send
//! on a fresh outbound connection of any process. A tracked process's large
//! write is captured further in chunk records (`write_chunks`).
use core::{
    mem::size_of,
    ptr::{addr_of, addr_of_mut, read_volatile, write_bytes, write_volatile},
};

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_ktime_get_boot_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    ChunkArgs, DataEvent, EventHeader, EventKind, FileInfo, Hook, TlsFresh, TlsPending, CHUNK_ARGS,
    DATA_CHUNK, DATA_EXPLICIT_DEST, DATA_FIRST_BYTES, DATA_MORE, DATA_TLS_SHIFT, DATA_TRACKED,
    DATA_TRUNCATED, MAX_CAPTURE, MAX_CHUNKS, MAX_PATH, SCRATCH_LEN, TAIL_ARGS, TAIL_WRITE_CHUNKS,
    TAIL_WRITE_PATH, TLS_MAX_AGE_NS,
};

use crate::{
    maps::{NEW_CONNS, TAILS, TLS_FRESH, TLS_PENDING},
    util::*,
};

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    let _ = try_write(&ctx, Hook::Write);
    0
}

#[tracepoint]
pub fn sys_enter_pwrite64(ctx: TracePointContext) -> u32 {
    let _ = try_write(&ctx, Hook::Pwrite64);
    0
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    let _ = try_write(&ctx, Hook::Writev);
    0
}

#[tracepoint]
pub fn sys_enter_pwritev(ctx: TracePointContext) -> u32 {
    let _ = try_write(&ctx, Hook::Pwritev);
    0
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    let _ = try_write(&ctx, Hook::Sendto);
    0
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let _ = try_write(&ctx, Hook::Sendmsg);
    0
}

/// What a write or send takes its bytes from.
#[derive(Clone, Copy)]
pub enum Src {
    /// A buffer and its length, and an explicit destination (`sockaddr *`,
    /// or 0).
    Buf(u64, u64, u64),
    /// An iovec array and its count.
    Iov(u64, u64),
    /// A user `struct msghdr *` (sendmsg).
    Msg(u64),
}

/// Capture at syscall entry: the buffer is what the process asks to write.
#[inline(always)]
fn try_write(ctx: &TracePointContext, hook: Hook) -> Res {
    let tgid = tgid_of(pid_tgid());
    if is_agent(tgid) {
        return Ok(());
    }
    let fd = arg(ctx, 0) as u32;
    let mut flags = 0u32;
    // A TLS write in flight on this thread (tracked processes only).
    let mut tls: Option<TlsPending> = None;
    if is_tracked(tgid) {
        // (Its capture budget is charged once the captured size is known.)
        flags |= DATA_TRACKED;
        if let Some(p) = unsafe { TLS_PENDING.get(&pid_tgid()) } {
            tls = Some(*p);
        }
    } else {
        if cfg(&config().capture_new_conns) == 0 {
            return Ok(());
        }
        // One lookup for everyone else: a fresh outbound connection?
        let key = fd_key(tgid, fd);
        if unsafe { NEW_CONNS.get(&key) }.is_none() {
            return Ok(());
        }
        let _ = NEW_CONNS.remove(&key);
        flags |= DATA_FIRST_BYTES;
    }
    let src = match hook {
        Hook::Writev | Hook::Pwritev => Src::Iov(arg(ctx, 1), arg(ctx, 2)),
        Hook::Sendmsg => Src::Msg(arg(ctx, 1)),
        Hook::Sendto => Src::Buf(arg(ctx, 1), arg(ctx, 2), arg(ctx, 4)),
        _ => Src::Buf(arg(ctx, 1), arg(ctx, 2), 0),
    };
    emit_write(ctx, tgid, hook, fd, flags, src, tls)
}

/// A write or send by a tracked process submitted through io_uring: the
/// same record as its syscall twin (budget, capture, path, peer).
#[inline(always)]
pub fn uring_write(ctx: &TracePointContext, tgid: u32, hook: Hook, fd: u32, src: Src) -> Res {
    emit_write(ctx, tgid, hook, fd, DATA_TRACKED, src, None)
}

#[inline(always)]
fn emit_write(
    ctx: &TracePointContext,
    tgid: u32,
    hook: Hook,
    fd: u32,
    mut flags: u32,
    src: Src,
    tls: Option<TlsPending>,
) -> Res {
    let buf = scratch().ok_or(0i64)?;
    let e = buf as *mut DataEvent;
    let data = unsafe { buf.add(size_of::<DataEvent>()) };
    let cap = cfg(&config().capture_bytes);
    unsafe {
        write_bytes(addr_of_mut!((*e).peer), 0, 1);
        write_bytes(addr_of_mut!((*e).file), 0, 1);
    }

    let mut info = FileInfo::default();
    let file = file_of_fd(fd, hook as u32);
    if let Some(f) = file {
        file_info(f, &mut info);
    }
    // The ciphertext write of a TLS write in flight: capture the plaintext
    // instead (still readable: the library call has not returned).
    let mut tls = tls;
    if let Some(p) = tls {
        let now = unsafe { bpf_ktime_get_boot_ns() };
        if is_socket(&info) && now.wrapping_sub(p.ts_ns) < TLS_MAX_AGE_NS {
            let _ = TLS_PENDING.remove(&pid_tgid());
            flags |= (p.lib & 7) << DATA_TLS_SHIFT;
        } else {
            tls = None;
        }
    }

    // (bytes captured, bytes asked, where the rest is: buffer or iovec
    // array, iovec count or 0)
    let (n, asked, rest, rest_iovs) = unsafe {
        match src {
            _ if tls.is_some() => {
                let p = tls.unwrap_or_default();
                let want = if p.len < cap as u64 {
                    p.len
                } else {
                    cap as u64
                };
                (
                    capture_user(data, p.ptr, want, hook as u32),
                    p.len,
                    p.ptr,
                    0,
                )
            }
            Src::Iov(iov, cnt) => {
                let total = iov_total(iov, cnt);
                (
                    capture_iov(data, iov, cnt, cap, hook as u32),
                    total,
                    iov,
                    cnt,
                )
            }
            Src::Msg(msg) => {
                // struct msghdr { name, namelen, iov, iovlen, ... }
                let name: u64 = bpf_probe_read_user(msg as *const u64).unwrap_or(0);
                let iov: u64 = bpf_probe_read_user((msg + 16) as *const u64).unwrap_or(0);
                let cnt: u64 = bpf_probe_read_user((msg + 24) as *const u64).unwrap_or(0);
                if name != 0 {
                    let (fam, _) = read_sockaddr(name, addr_of_mut!((*e).peer), None);
                    if fam != 0 {
                        flags |= DATA_EXPLICIT_DEST;
                    }
                }
                (
                    capture_iov(data, iov, cnt, cap, hook as u32),
                    iov_total(iov, cnt),
                    iov,
                    cnt,
                )
            }
            Src::Buf(ptr, len, dest) => {
                if dest != 0 {
                    let (fam, _) = read_sockaddr(dest, addr_of_mut!((*e).peer), None);
                    if fam != 0 {
                        flags |= DATA_EXPLICIT_DEST;
                    }
                }
                let want = if len < cap as u64 { len } else { cap as u64 };
                (capture_user(data, ptr, want, hook as u32), len, ptr, 0)
            }
        }
    };
    // A tracked process pays for the record by what it captured (an iovec
    // or msghdr source is only sized by reading it): past its budget, the
    // write is counted, not sent, and its chunks are not captured.
    if flags & DATA_TRACKED != 0 && !crate::budget::take(tgid, n as u64) {
        return Ok(());
    }
    // A tracked process's large write: the rest follows in chunk records
    // (`write_chunks`), up to `capture_write_bytes` of the write.
    let wcap = cfg(&config().capture_write_bytes) as u64;
    if flags & DATA_TRACKED != 0 && n > 0 && (n as u64) < asked && (n as u64) < wcap {
        let limit = if asked < wcap { asked } else { wcap };
        flags |= DATA_MORE;
        unsafe {
            *(buf.add(CHUNK_ARGS) as *mut ChunkArgs) = ChunkArgs {
                ptr: rest,
                iovcnt: rest_iovs,
                done: n as u64,
                limit,
                ..ChunkArgs::default()
            };
        }
    }
    if (n as u64) < asked {
        flags |= DATA_TRUNCATED;
    }
    // An untracked process's fresh connection that starts with a TLS
    // handshake record: its first TLS write's plaintext is captured by the
    // library probe (`tls`), bound to this fd.
    if flags & DATA_FIRST_BYTES != 0 && n >= 3 {
        let (b0, b1) = unsafe { (*data, *data.add(1)) };
        if b0 == 0x16 && b1 == 0x03 {
            let fresh = TlsFresh {
                ts_ns: unsafe { bpf_ktime_get_boot_ns() },
                fd,
                _pad: 0,
            };
            let _ = TLS_FRESH.insert(&pid_tgid(), &fresh, 0);
        }
    }

    if let Some(f) = file {
        if is_socket(&info) && flags & DATA_EXPLICIT_DEST == 0 {
            sock_peer(f, unsafe { addr_of_mut!((*e).peer) });
        }
    }
    unsafe {
        fill_header(e as *mut _, EventKind::Write, hook);
        if let Some(p) = tls {
            // The library function is what carried these bytes.
            (*e).hdr.hook = p.hook;
        }
        (*e).file = info;
        (*e).fd = fd as i32;
        (*e).flags = flags;
        (*e).count = asked;
        (*e).data_len = n;
        (*e).watch_id = 0;
        (*e).path_len = 0;
        (*e).chunk_off = 0;
    }
    // Where a tracked process writes a file: `write_path` appends its path
    // and outputs the record (a tail call keeps this program verifiable).
    if flags & DATA_TRACKED != 0 && is_regular(&info) {
        if let Some(f) = file {
            unsafe {
                let args = buf.add(TAIL_ARGS) as *mut u64;
                *args = f;
                *args.add(1) = (size_of::<DataEvent>() + n as usize) as u64;
                TAILS.tail_call(ctx, TAIL_WRITE_PATH);
            }
            // Tail call failed: send it without the path.
        }
    }
    if !output_scratch(buf, size_of::<DataEvent>() + n as usize, EventKind::Write) {
        if flags & DATA_TRACKED != 0 {
            crate::budget::ring_full(tgid);
        }
        return Ok(());
    }
    if flags & DATA_MORE != 0 {
        unsafe { TAILS.tail_call(ctx, TAIL_WRITE_CHUNKS) };
    }
    Ok(())
}

/// Tail-call target of the write programs: append the path of the file
/// being written (left by `try_write`) and output the record.
#[tracepoint]
pub fn write_path(ctx: TracePointContext) -> u32 {
    let _ = try_write_path(&ctx);
    0
}

#[inline(always)]
fn try_write_path(ctx: &TracePointContext) -> Res {
    let buf = scratch().ok_or(0i64)?;
    let (file, len) = unsafe {
        let args = buf.add(TAIL_ARGS) as *const u64;
        (*args, *args.add(1) as usize)
    };
    let len = len & (MAX_CAPTURE * 2 - 1);
    if len < size_of::<DataEvent>() {
        return Ok(());
    }
    let mut plen: usize = 0;
    if let Some((start, n)) = file_path(file, buf) {
        let n = n & (MAX_PATH - 1);
        let dst = unsafe { buf.add(len) };
        let src = unsafe { buf.add(start & (SCRATCH_LEN - 1)) } as u64;
        if unsafe { bpf_probe_read_kernel_buf_raw(dst, n as u32, src) } == 0 {
            plen = n;
            unsafe { (*(buf as *mut DataEvent)).path_len = n as u32 };
        }
    }
    if !output_scratch(buf, len + plen, EventKind::Write) {
        // Only tracked writes come here.
        crate::budget::ring_full(tgid_of(pid_tgid()));
        return Ok(());
    }
    if unsafe { (*(buf as *const DataEvent)).flags } & DATA_MORE != 0 {
        unsafe { TAILS.tail_call(ctx, TAIL_WRITE_CHUNKS) };
    }
    Ok(())
}

/// Tail-call target of the write programs (and of `write_path`): after the
/// head record of a tracked process's large write, its next bytes as chunk
/// records (`DATA_CHUNK`, `chunk_off`), `capture_bytes` each, up to
/// `capture_write_bytes` of the write. Each chunk pays the capture budget
/// for its bytes like a write; the last one is the one without `DATA_MORE`.
#[tracepoint]
pub fn write_chunks(_ctx: TracePointContext) -> u32 {
    let _ = try_write_chunks();
    0
}

#[inline(always)]
fn try_write_chunks() -> Res {
    let buf = scratch().ok_or(0i64)?;
    let st = unsafe { buf.add(CHUNK_ARGS) } as *mut ChunkArgs;
    if !unsafe { chunk_start(st) } {
        return Ok(());
    }
    let e = buf as *mut DataEvent;
    unsafe {
        (*e).flags = ((*e).flags & !(DATA_MORE | DATA_TRUNCATED)) | DATA_CHUNK;
        (*e).path_len = 0;
    }
    let tgid = tgid_of(pid_tgid());
    // Every chunk, plus a round per iovec boundary.
    let mut k = 0u32;
    while k < MAX_CHUNKS + 8 {
        k += 1;
        if !unsafe { chunk_step(buf, st, tgid) } {
            break;
        }
    }
    Ok(())
}

/// Find the span holding byte `done` of the write (the iovec, or the
/// buffer itself). False: nothing left to capture.
#[inline(always)]
unsafe fn chunk_start(st: *mut ChunkArgs) -> bool {
    let (ptr, iovcnt, done, limit) = unsafe {
        (
            read_volatile(addr_of!((*st).ptr)),
            read_volatile(addr_of!((*st).iovcnt)),
            read_volatile(addr_of!((*st).done)),
            read_volatile(addr_of!((*st).limit)),
        )
    };
    if iovcnt == 0 {
        unsafe {
            write_volatile(addr_of_mut!((*st).base), ptr);
            write_volatile(addr_of_mut!((*st).len), limit);
            write_volatile(addr_of_mut!((*st).at), done);
            write_volatile(addr_of_mut!((*st).iov), 0);
        }
        return true;
    }
    let mut skip = done;
    let mut i = 0u64;
    while i < 8 {
        if i >= iovcnt {
            return false;
        }
        let Some((b, l)) = (unsafe { read_iovec(ptr, i) }) else {
            return false;
        };
        if skip < l {
            unsafe {
                write_volatile(addr_of_mut!((*st).base), b);
                write_volatile(addr_of_mut!((*st).len), l);
                write_volatile(addr_of_mut!((*st).at), skip);
                write_volatile(addr_of_mut!((*st).iov), i);
            }
            return true;
        }
        skip -= l;
        i += 1;
    }
    false
}

/// One round of `write_chunks`: the next chunk record, or a move to the
/// next iovec. The state lives in scratch (volatile), not in registers.
#[inline(always)]
unsafe fn chunk_step(buf: *mut u8, st: *mut ChunkArgs, tgid: u32) -> bool {
    let (done, limit, base, len, at) = unsafe {
        (
            read_volatile(addr_of!((*st).done)),
            read_volatile(addr_of!((*st).limit)),
            read_volatile(addr_of!((*st).base)),
            read_volatile(addr_of!((*st).len)),
            read_volatile(addr_of!((*st).at)),
        )
    };
    if done >= limit {
        return false;
    }
    if at >= len {
        // The next iovec.
        let (ptr, iovcnt, i) = unsafe {
            (
                read_volatile(addr_of!((*st).ptr)),
                read_volatile(addr_of!((*st).iovcnt)),
                read_volatile(addr_of!((*st).iov)) + 1,
            )
        };
        if iovcnt == 0 || i >= 8 || i >= iovcnt {
            return false;
        }
        let Some((b, l)) = (unsafe { read_iovec(ptr, i) }) else {
            return false;
        };
        unsafe {
            write_volatile(addr_of_mut!((*st).base), b);
            write_volatile(addr_of_mut!((*st).len), l);
            write_volatile(addr_of_mut!((*st).at), 0);
            write_volatile(addr_of_mut!((*st).iov), i);
        }
        return true;
    }
    let mut want = cfg(&config().capture_bytes) as u64;
    if len - at < want {
        want = len - at;
    }
    if limit - done < want {
        want = limit - done;
    }
    // The chunk pays for what it will carry (`want`), before it is read.
    if !crate::budget::take(tgid, want) {
        return false;
    }
    let data = unsafe { buf.add(size_of::<DataEvent>()) };
    // The write's hook is in the head record's header, still in scratch.
    let hook = unsafe { read_volatile(addr_of!((*(buf as *const EventHeader)).hook)) };
    let n = unsafe { capture_user(data, base + at, want, hook) };
    if n == 0 {
        return false;
    }
    let e = buf as *mut DataEvent;
    let next = done + n as u64;
    unsafe {
        (*e).data_len = n;
        (*e).chunk_off = done as u32;
        if next < limit {
            (*e).flags |= DATA_MORE;
        } else {
            (*e).flags &= !DATA_MORE;
        }
        write_volatile(addr_of_mut!((*st).done), next);
        write_volatile(addr_of_mut!((*st).at), at + n as u64);
    }
    if !output_scratch(buf, size_of::<DataEvent>() + n as usize, EventKind::Write) {
        crate::budget::ring_full(tgid);
        return false;
    }
    true
}

/// Sum of the lengths of up to 8 iovecs (what the process asked to write).
#[inline(always)]
unsafe fn iov_total(iov: u64, cnt: u64) -> u64 {
    let mut total = 0u64;
    let mut i = 0u64;
    while i < 8 {
        if i >= cnt {
            break;
        }
        match unsafe { read_iovec(iov, i) } {
            Some((_, len)) => total += len,
            None => break,
        }
        i += 1;
    }
    total
}
