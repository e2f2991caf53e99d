//! io_uring: requests submitted through a ring never enter the syscall
//! tracepoints, so the `io_uring` tracepoints stand in for them. At
//! `io_uring_submit_req` the request is prepared (its op struct filled from
//! the SQE) and its buffers are the process's: writes, sends and connects
//! are reported there, exactly like their syscall twins (`io::uring_write`,
//! `net::emit_connect`). Reads, opens and splices need their result: the
//! request is kept in `STASH` under its `io_kiocb *` and finished at
//! `io_uring_complete` (`files::read_result`, `open_result`,
//! `transfer_result`). Only tracked processes are looked at, but for opens
//! (any process opening a watched file becomes tracked, as with openat).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{
    uring_op as op, CloseEvent, EventKind, Hook, MapId, Stash, UringCreateEvent, AT_FDCWD,
};

use crate::{
    files::{open_result, read_result, transfer_result, PathFrom},
    io::{uring_write, Src},
    maps::{STASH, TRACKED_FDS},
    net::emit_connect,
    util::*,
};

#[tracepoint]
pub fn io_uring_submit_req(ctx: TracePointContext) -> u32 {
    let _ = try_submit(&ctx);
    0
}

#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    let _ = try_complete(&ctx);
    0
}

#[tracepoint]
pub fn io_uring_create(ctx: TracePointContext) -> u32 {
    let _ = try_create(&ctx);
    0
}

/// A tracepoint field at an offset known only at load time.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, off: u32) -> Result<T, i64> {
    unsafe { ctx.read_at::<T>(off as usize) }.map_err(|e| e as i64)
}

/// A kernel value at `base + off`.
#[inline(always)]
fn kfield<T>(base: u64, off: u32) -> Result<T, i64> {
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + off as u64) as *const T) }
        .map_err(|e| e as i64)
}

#[inline(always)]
fn keep(req: u64, s: &Stash) {
    if STASH.insert(&req, s, 0).is_err() {
        map_full(s.hook, MapId::Stash);
    }
}

#[inline(always)]
fn try_submit(ctx: &TracePointContext) -> Res {
    let u = &config().uring;
    let tgid = tgid_of(pid_tgid());
    let opcode: u8 = field(ctx, cfg(&u.tp_submit_opcode))?;
    // Everyone else leaves here: an untracked process only matters when
    // it opens (a watched file makes it tracked).
    if !is_tracked(tgid) && opcode != op::OPENAT && opcode != op::OPENAT2 {
        return Ok(());
    }
    if cfg(&u.valid) == 0 || is_agent(tgid) {
        return Ok(());
    }
    let req: u64 = field(ctx, cfg(&u.tp_submit_req))?;
    if req == 0 {
        return Ok(());
    }
    let rflags: u64 = field(ctx, cfg(&u.tp_submit_flags))?;
    // The op's own struct starts the request (`io_kiocb.cmd`).
    match opcode {
        op::OPENAT | op::OPENAT2 => {
            let dfd: i32 = kfield(req, cfg(&u.open_dfd))?;
            let flags: u64 = kfield(req, cfg(&u.open_flags)).unwrap_or(0);
            let hook = if opcode == op::OPENAT {
                Hook::UringOpenat
            } else {
                Hook::UringOpenat2
            };
            keep(
                req,
                &Stash {
                    ptr: 0,
                    count: 0,
                    fd: dfd,
                    hook: hook as u32,
                    arg: flags as u32,
                    _pad: 0,
                },
            );
            return Ok(());
        }
        op::CLOSE => {
            let fd: i32 = kfield(req, cfg(&u.close_fd))?;
            let key = fd_key(tgid, fd as u32);
            let Some(t) = (unsafe { TRACKED_FDS.get(&key) }).copied() else {
                return Ok(());
            };
            let _ = TRACKED_FDS.remove(&key);
            emit::<CloseEvent>(EventKind::Close, Hook::UringClose, |e| unsafe {
                (*e).fd = fd;
                (*e).watch_id = t.watch_id;
            });
            return Ok(());
        }
        _ => {}
    }
    // The rest name their file by descriptor; a registered file's index
    // is not one.
    if rflags & op::REQ_F_FIXED_FILE != 0 {
        return Ok(());
    }
    let fd: i32 = kfield(req, cfg(&u.req_cqe_fd))?;
    if fd < 0 {
        return Ok(());
    }
    let fd = fd as u32;
    match opcode {
        op::WRITE | op::WRITE_FIXED | op::WRITEV => {
            let addr: u64 = kfield(req, cfg(&u.rw_addr))?;
            let len: u32 = kfield(req, cfg(&u.rw_len))?;
            let (hook, src) = if opcode == op::WRITEV {
                (Hook::UringWritev, Src::Iov(addr, len as u64))
            } else {
                (Hook::UringWrite, Src::Buf(addr, len as u64, 0))
            };
            uring_write(ctx, tgid, hook, fd, src)
        }
        op::SEND | op::SEND_ZC => {
            let buf: u64 = kfield(req, cfg(&u.sr_buf))?;
            let len: i32 = kfield(req, cfg(&u.sr_len))?;
            let sflags: u16 = kfield(req, cfg(&u.sr_flags)).unwrap_or(0);
            let src = if sflags & op::IORING_SEND_VECTORIZED != 0 {
                Src::Iov(buf, len as u64)
            } else {
                Src::Buf(buf, len as u64, 0)
            };
            uring_write(ctx, tgid, Hook::UringSend, fd, src)
        }
        op::SENDMSG | op::SENDMSG_ZC => {
            let msg: u64 = kfield(req, cfg(&u.sr_buf))?;
            uring_write(ctx, tgid, Hook::UringSendmsg, fd, Src::Msg(msg))
        }
        op::CONNECT => {
            let addr: u64 = kfield(req, cfg(&u.connect_addr))?;
            emit_connect(Hook::UringConnect, fd, addr);
            Ok(())
        }
        op::READ | op::READ_FIXED | op::READV => {
            // Only reads of tracked descriptors, as with read(2).
            if unsafe { TRACKED_FDS.get(&fd_key(tgid, fd)) }.is_none() {
                return Ok(());
            }
            let addr: u64 = kfield(req, cfg(&u.rw_addr))?;
            let len: u32 = kfield(req, cfg(&u.rw_len))?;
            let hook = if opcode == op::READV {
                Hook::UringReadv
            } else {
                Hook::UringRead
            };
            keep(
                req,
                &Stash {
                    ptr: addr,
                    count: len as u64,
                    fd: fd as i32,
                    hook: hook as u32,
                    arg: 0,
                    _pad: 0,
                },
            );
            Ok(())
        }
        op::SPLICE | op::TEE => {
            let sflags: u32 = kfield(req, cfg(&u.splice_flags)).unwrap_or(0);
            if sflags & op::SPLICE_F_FD_IN_FIXED != 0 {
                return Ok(());
            }
            let fd_in: i32 = kfield(req, cfg(&u.splice_fd_in))?;
            let hook = if opcode == op::SPLICE {
                Hook::UringSplice
            } else {
                Hook::UringTee
            };
            keep(
                req,
                &Stash {
                    ptr: 0,
                    count: 0,
                    fd: fd_in,
                    hook: hook as u32,
                    arg: fd,
                    _pad: 0,
                },
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Finish what `try_submit` kept: one lookup by request for everyone.
#[inline(always)]
fn try_complete(ctx: &TracePointContext) -> Res {
    let u = &config().uring;
    let req: u64 = field(ctx, cfg(&u.tp_complete_req))?;
    if req == 0 {
        return Ok(());
    }
    let Some(s) = (unsafe { STASH.get(&req) }).copied() else {
        return Ok(());
    };
    let _ = STASH.remove(&req);
    let res: i32 = field(ctx, cfg(&u.tp_complete_res))?;
    let tgid = tgid_of(pid_tgid());
    let hook = Hook::from_u32(s.hook);
    match hook {
        Hook::UringOpenat | Hook::UringOpenat2 => {
            // The path is the opened file's, from the kernel: absolute and
            // real whatever dirfd the request named.
            open_result(tgid, hook, res as i64, s.arg, AT_FDCWD, PathFrom::Kernel)
        }
        Hook::UringRead | Hook::UringReadv => read_result(tgid, s, res as i64),
        Hook::UringSplice | Hook::UringTee => transfer_result(tgid, s, res as i64),
        _ => Ok(()),
    }
}

/// A tracked process set up a ring: recorded in its timeline.
#[inline(always)]
fn try_create(ctx: &TracePointContext) -> Res {
    let tgid = tgid_of(pid_tgid());
    if !is_tracked(tgid) || is_agent(tgid) {
        return Ok(());
    }
    let u = &config().uring;
    if cfg(&u.valid) == 0 {
        return Ok(());
    }
    let fd: i32 = field(ctx, cfg(&u.tp_create_fd))?;
    let sq: u32 = field(ctx, cfg(&u.tp_create_sq_entries))?;
    let cq: u32 = field(ctx, cfg(&u.tp_create_cq_entries))?;
    let flags: u32 = field(ctx, cfg(&u.tp_create_flags))?;
    emit::<UringCreateEvent>(EventKind::UringCreate, Hook::UringSetup, |e| unsafe {
        (*e).fd = fd;
        (*e).flags = flags;
        (*e).sq_entries = sq;
        (*e).cq_entries = cq;
    });
    Ok(())
}
