//! Environment and memory of other processes: ptrace attach/seize,
//! process_vm_readv, and libc getenv/secure_getenv of tracked processes.
//! (Opens of `/proc/<pid>/environ|mem` are detected in `files`.)
use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user_str,
    macros::{tracepoint, uprobe},
    programs::{ProbeContext, TracePointContext},
};
use monitor_common::{
    EventKind, GetenvEvent, Hook, ProcAccessEvent, NAME_LEN, PROC_PTRACE, PROC_VM_READV,
};

use crate::util::*;

const PTRACE_ATTACH: u64 = 16;
const PTRACE_SEIZE: u64 = 0x4206;

#[tracepoint]
pub fn sys_enter_ptrace(ctx: TracePointContext) -> u32 {
    let _ = try_ptrace(&ctx);
    0
}

#[inline(always)]
fn try_ptrace(ctx: &TracePointContext) -> Res {
    let request = arg(ctx, 0);
    if request != PTRACE_ATTACH && request != PTRACE_SEIZE {
        return Ok(());
    }
    proc_access(PROC_PTRACE, arg(ctx, 1) as u32, request, Hook::Ptrace);
    Ok(())
}

#[tracepoint]
pub fn sys_enter_process_vm_readv(ctx: TracePointContext) -> u32 {
    proc_access(PROC_VM_READV, arg(&ctx, 0) as u32, 0, Hook::ProcessVmReadv);
    0
}

#[inline(always)]
fn proc_access(access: u32, target: u32, request: u64, hook: Hook) {
    let tgid = tgid_of(pid_tgid());
    if is_agent(tgid) || target == tgid {
        return;
    }
    let target_tracked = is_tracked(target) as u32;
    emit::<ProcAccessEvent>(EventKind::ProcAccess, hook, |e| unsafe {
        (*e).target_pid = target;
        (*e).access = access;
        (*e).request = request;
        (*e).target_tracked = target_tracked;
        (*e).fd = -1;
    });
}

#[uprobe]
pub fn getenv(ctx: ProbeContext) -> u32 {
    try_getenv(&ctx, Hook::Getenv);
    0
}

#[uprobe]
pub fn secure_getenv(ctx: ProbeContext) -> u32 {
    try_getenv(&ctx, Hook::SecureGetenv);
    0
}

#[inline(always)]
fn try_getenv(ctx: &ProbeContext, hook: Hook) {
    let tgid = tgid_of(pid_tgid());
    if !is_tracked(tgid) || is_agent(tgid) {
        return;
    }
    let Some(name) = ctx.arg::<u64>(0) else {
        return;
    };
    emit::<GetenvEvent>(EventKind::Getenv, hook, |e| unsafe {
        let n = bpf_probe_read_user_str(
            addr_of_mut!((*e).name) as *mut c_void,
            NAME_LEN as u32,
            name as *const c_void,
        );
        (*e).name_len = if n > 0 { (n - 1) as u32 } else { 0 };
        (*e)._pad = 0;
    });
}
