//! Network: connect() destinations of tracked processes (IPv4, IPv6, unix
//! path), and the fresh-connection marks whose first send is captured for
//! every process.
use core::ptr::{addr_of_mut, write_bytes};

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use monitor_common::{ConnectEvent, EventKind, Hook, MapId, SockAddr};

use crate::{maps::NEW_CONNS, util::*};

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_connect(&ctx);
    0
}

/// At entry: a non-blocking connect returns EINPROGRESS, the destination is
/// what matters.
#[inline(always)]
fn try_connect(ctx: &TracePointContext) -> Res {
    let tgid = tgid_of(pid_tgid());
    if is_agent(tgid) {
        return Ok(());
    }
    let fd = arg(ctx, 0) as u32;
    let uaddr = arg(ctx, 1);
    let tracked = is_tracked(tgid);
    let capture_new = cfg(&config().capture_new_conns) != 0;
    if !tracked && !capture_new {
        return Ok(());
    }
    let mut addr = SockAddr::default();
    let (family, _) = unsafe { read_sockaddr(uaddr, &mut addr, None) };
    if capture_new && (family == AF_INET || family == AF_INET6) {
        if NEW_CONNS.insert(&fd_key(tgid, fd), &1u32, 0).is_err() {
            map_full(Hook::Connect as u32, MapId::NewConns);
        }
    }
    if !tracked {
        return Ok(());
    }
    emit_connect(Hook::Connect, fd, uaddr);
    Ok(())
}

/// The connect record of a tracked process: descriptor and destination
/// (`uaddr`: a user `struct sockaddr *`). Shared by the syscall and io_uring.
#[inline(always)]
pub fn emit_connect(hook: Hook, fd: u32, uaddr: u64) {
    emit::<ConnectEvent>(EventKind::Connect, hook, |e| unsafe {
        write_bytes(addr_of_mut!((*e).addr), 0, 1);
        (*e).fd = fd as i32;
        let (_, plen) = read_sockaddr(
            uaddr,
            addr_of_mut!((*e).addr),
            Some(addr_of_mut!((*e).unix_path)),
        );
        (*e).unix_path_len = plen;
    });
}
