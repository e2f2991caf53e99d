//! Kernel programs of `monitor`: syscall tracepoints, sched/task tracepoints
//! and libc uprobes only (no kprobes, fentry or LSM: see README).
//!
//! One module per concern; each program is named after its hook and is a
//! thin entry calling a `try_*` that returns `Result`.
#![no_std]
#![no_main]

mod budget;
mod env;
mod exec;
mod files;
mod io;
mod maps;
mod net;
mod tls;
mod uring;
mod util;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Tracing helpers (probe_read, ringbuf...) need a GPL-compatible license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
