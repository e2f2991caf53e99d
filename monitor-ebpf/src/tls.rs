//! The plaintext side of TLS: uprobes on the libraries' write functions
//! (OpenSSL `SSL_write`/`SSL_write_ex`, GnuTLS `gnutls_record_send`, Go's
//! `crypto/tls.(*Conn).Write`), attached by the agent per library file.
//!
//! * A tracked thread's call is remembered (`TLS_PENDING`: the plaintext
//!   pointer and length); its next write or send on a socket (`io`), the
//!   ciphertext, captures the plaintext instead and so carries the
//!   connection's destination, through the same budget as any write.
//! * An untracked thread is looked at only right after it sent a TLS
//!   ClientHello on a fresh outbound connection (`TLS_FRESH`, set by `io`):
//!   its first plaintext is captured here, bound to that fd, like the
//!   first bytes of a plaintext connection.
//!
//! Everyone else pays the trap and one lookup. Entry probes only (Go moves
//! goroutine stacks, so return probes are unsafe there).
use core::{
    mem::size_of,
    ptr::{addr_of_mut, write_bytes},
};

use aya_ebpf::{helpers::generated::bpf_ktime_get_boot_ns, macros::uprobe, programs::ProbeContext};
use monitor_common::{
    DataEvent, EventKind, FileInfo, Hook, TlsLib, TlsPending, DATA_FIRST_BYTES, DATA_TLS_SHIFT,
    DATA_TRUNCATED, TLS_MAX_AGE_NS,
};

use crate::{
    maps::{TLS_FRESH, TLS_PENDING},
    util::*,
};

/// `int SSL_write(SSL *ssl, const void *buf, int num)`.
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    let (buf, len) = (ctx.arg::<u64>(1), ctx.arg::<i32>(2));
    let len = len.map(|n| if n > 0 { n as u64 } else { 0 });
    let _ = try_tls_write(Hook::SslWrite, TlsLib::Openssl, buf, len);
    0
}

/// `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`.
#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    let _ = try_tls_write(
        Hook::SslWriteEx,
        TlsLib::Openssl,
        ctx.arg::<u64>(1),
        ctx.arg::<u64>(2),
    );
    0
}

/// `ssize_t gnutls_record_send(gnutls_session_t, const void *data, size_t)`.
#[uprobe]
pub fn gnutls_record_send(ctx: ProbeContext) -> u32 {
    let _ = try_tls_write(
        Hook::GnutlsRecordSend,
        TlsLib::Gnutls,
        ctx.arg::<u64>(1),
        ctx.arg::<u64>(2),
    );
    0
}

/// `func (c *Conn) Write(b []byte) (int, error)`, Go's register ABI
/// (amd64): receiver in RAX, `b`'s pointer in RBX, its length in RCX.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let (ptr, len) = unsafe { ((*ctx.regs).rbx, (*ctx.regs).rcx) };
    let _ = try_tls_write(Hook::GoTlsWrite, TlsLib::Go, Some(ptr), Some(len));
    0
}

#[inline(always)]
fn try_tls_write(hook: Hook, lib: TlsLib, ptr: Option<u64>, len: Option<u64>) -> Res {
    let pt = pid_tgid();
    let tgid = tgid_of(pt);
    let (Some(ptr), Some(len)) = (ptr, len) else {
        return Ok(());
    };
    if is_tracked(tgid) {
        let p = TlsPending {
            ptr,
            len,
            ts_ns: unsafe { bpf_ktime_get_boot_ns() },
            hook: hook as u32,
            lib: lib as u32,
        };
        let _ = TLS_PENDING.insert(&pt, &p, 0);
        return Ok(());
    }
    // Untracked: only the first write after a fresh TLS handshake.
    let Some(fresh) = (unsafe { TLS_FRESH.get(&pt) }).copied() else {
        return Ok(());
    };
    let _ = TLS_FRESH.remove(&pt);
    if is_agent(tgid) {
        return Ok(());
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if now.wrapping_sub(fresh.ts_ns) >= TLS_MAX_AGE_NS {
        return Ok(());
    }
    first_plaintext(hook, lib, fresh.fd, ptr, len)
}

/// The record of an untracked process's first TLS plaintext on `fd`.
#[inline(always)]
fn first_plaintext(hook: Hook, lib: TlsLib, fd: u32, ptr: u64, len: u64) -> Res {
    let buf = scratch().ok_or(0i64)?;
    let e = buf as *mut DataEvent;
    let data = unsafe { buf.add(size_of::<DataEvent>()) };
    let cap = cfg(&config().capture_bytes) as u64;
    unsafe {
        write_bytes(addr_of_mut!((*e).peer), 0, 1);
    }
    let want = if len < cap { len } else { cap };
    let n = unsafe { capture_user(data, ptr, want, hook as u32) };
    let mut flags = DATA_FIRST_BYTES | ((lib as u32) << DATA_TLS_SHIFT);
    if (n as u64) < len {
        flags |= DATA_TRUNCATED;
    }
    let mut info = FileInfo::default();
    if let Some(f) = file_of_fd(fd, hook as u32) {
        file_info(f, &mut info);
        if is_socket(&info) {
            sock_peer(f, unsafe { addr_of_mut!((*e).peer) });
        }
    }
    unsafe {
        fill_header(e as *mut _, EventKind::Write, hook);
        (*e).file = info;
        (*e).fd = fd as i32;
        (*e).flags = flags;
        (*e).count = len;
        (*e).data_len = n;
        (*e).watch_id = 0;
        (*e).path_len = 0;
        (*e).chunk_off = 0;
    }
    output_scratch(buf, size_of::<DataEvent>() + n as usize, EventKind::Write);
    Ok(())
}
