//! Process lifecycle: execve/execveat with filename, argv and envp (bounded),
//! task_newtask for lineage and tracking inheritance, sched_process_exit.
use core::{ffi::c_void, mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user_str},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    EventKind, ExecEvent, ExecResultEvent, ExitEvent, ForkEvent, Hook, TrackedProc,
    EXEC_ARGV_TRUNCATED, EXEC_ENV_TRUNCATED, EXEC_TRACKED, MAX_ARGS, MAX_ENVS, MAX_EXEC_DATA,
    PATH_LEN, TRACK_FORKED,
};

use crate::{maps::TRACKED_PROCS, util::*};

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    // (filename, argv, envp)
    let _ = try_exec(&ctx, Hook::Execve, 0);
    0
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    // (dfd, filename, argv, envp, flags)
    let _ = try_exec(&ctx, Hook::Execveat, 1);
    0
}

#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    let _ = try_exec_exit(&ctx, Hook::Execve);
    0
}

#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    let _ = try_exec_exit(&ctx, Hook::Execveat);
    0
}

const HDR: usize = size_of::<ExecEvent>();
/// Mask keeping string offsets inside the data area.
const DATA_MASK: usize = MAX_EXEC_DATA - 1;
/// Longest single string read (the rest of a longer one is cut).
const STR_MAX: u32 = 4096;

#[inline(always)]
fn try_exec(ctx: &TracePointContext, hook: Hook, first: usize) -> Res {
    let tgid = tgid_of(pid_tgid());
    if is_agent(tgid) {
        return Ok(());
    }
    let tracked = is_tracked(tgid);
    if !tracked && cfg(&config().exec_all) == 0 {
        return Ok(());
    }
    let buf = scratch().ok_or(0i64)?;
    let e = buf as *mut ExecEvent;
    let data = unsafe { buf.add(HDR) };
    let argv_cap = cfg(&config().argv_bytes) as usize;
    let env_cap = cfg(&config().env_bytes) as usize;
    let mut flags = if tracked { EXEC_TRACKED } else { 0 };

    unsafe {
        let n = bpf_probe_read_user_str(
            addr_of_mut!((*e).filename) as *mut c_void,
            PATH_LEN as u32,
            arg(ctx, first) as *const c_void,
        );
        (*e).filename_len = if n > 0 { (n - 1) as u32 } else { 0 };
    }

    let (argc, argv_len, cut) =
        unsafe { read_strings(data, 0, arg(ctx, first + 1), MAX_ARGS, argv_cap) };
    if cut {
        flags |= EXEC_ARGV_TRUNCATED;
    }
    let (envc, env_len, cut) =
        unsafe { read_strings(data, argv_len, arg(ctx, first + 2), MAX_ENVS, env_cap) };
    if cut {
        flags |= EXEC_ENV_TRUNCATED;
    }

    unsafe {
        fill_header(e as *mut _, EventKind::Exec, hook);
        (*e).argc = argc;
        (*e).envc = envc;
        (*e).argv_len = argv_len as u32;
        (*e).envp_len = env_len as u32;
        (*e).flags = flags;
    }
    let mut total = argv_len + env_len;
    if total > MAX_EXEC_DATA {
        total = MAX_EXEC_DATA;
    }
    output_scratch(buf, HDR + total, EventKind::Exec);
    Ok(())
}

/// Copy the NUL-terminated strings of a user `char *const[]` into
/// `data[base..]`, at most `cap` bytes and `max` strings. Returns
/// (strings, bytes, truncated).
#[inline(always)]
unsafe fn read_strings(
    data: *mut u8,
    base: usize,
    vec: u64,
    max: u32,
    cap: usize,
) -> (u32, usize, bool) {
    if vec == 0 {
        return (0, 0, false);
    }
    let mut used: usize = 0;
    let mut n: u32 = 0;
    let mut cut = false;
    while n < max {
        let p: u64 = match unsafe { bpf_probe_read_user((vec + 8 * n as u64) as *const u64) } {
            Ok(p) => p,
            Err(_) => break,
        };
        if p == 0 {
            break;
        }
        if used >= cap {
            cut = true;
            break;
        }
        let off = (base + used) & DATA_MASK;
        let r = unsafe {
            bpf_probe_read_user_str(data.add(off) as *mut c_void, STR_MAX, p as *const c_void)
        };
        if r <= 0 {
            break;
        }
        used += r as usize;
        n += 1;
        if used > cap {
            used = cap;
            cut = true;
            break;
        }
    }
    if n == max {
        // More entries than we walk?
        if let Ok(p) = unsafe { bpf_probe_read_user::<u64>((vec + 8 * n as u64) as *const u64) } {
            if p != 0 {
                cut = true;
            }
        }
    }
    (n, used, cut)
}

#[inline(always)]
fn try_exec_exit(ctx: &TracePointContext, hook: Hook) -> Res {
    let tgid = tgid_of(pid_tgid());
    if is_agent(tgid) {
        return Ok(());
    }
    if !is_tracked(tgid) && cfg(&config().exec_all) == 0 {
        return Ok(());
    }
    let r = ret(ctx);
    emit::<ExecResultEvent>(EventKind::ExecResult, hook, |e| unsafe {
        (*e).ret = r;
    });
    Ok(())
}

// ---------------------------------------------------------- lineage ----

const CLONE_THREAD: u64 = 0x0001_0000;

/// Runs in the parent; threads are skipped, processes inherit tracking.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_newtask(&ctx);
    0
}

#[inline(always)]
fn try_newtask(ctx: &TracePointContext) -> Res {
    let tp = &config().tp;
    // Offsets come from the tracepoint's format file: read, not ctx access.
    let flags: u64 = unsafe { ctx.read_at(cfg(&tp.newtask_clone_flags) as usize) }?;
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let child: u32 = unsafe { ctx.read_at(cfg(&tp.newtask_pid) as usize) }?;
    let parent = tgid_of(pid_tgid());
    if is_agent(parent) {
        return Ok(());
    }
    let inherited = match unsafe { TRACKED_PROCS.get(&parent) } {
        Some(p) if p.inherit != 0 => {
            let v = TrackedProc {
                reason: TRACK_FORKED,
                inherit: 1,
            };
            if TRACKED_PROCS.insert(&child, &v, 0).is_err() {
                map_full(Hook::Fork as u32, monitor_common::MapId::TrackedProcs);
            }
            1
        }
        _ => 0,
    };
    emit::<ForkEvent>(EventKind::Fork, Hook::Fork, |e| unsafe {
        (*e).child_pid = child;
        (*e).inherited = inherited;
        (*e).clone_flags = flags;
    });
    Ok(())
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext) -> Res {
    let pt = pid_tgid();
    let tgid = tgid_of(pt);
    let off = cfg(&config().tp.exit_group_dead) as usize;
    let group_dead = if off == 0 {
        // Older kernels: only the group leader's exit counts.
        (pt as u32 == tgid) as u8
    } else {
        unsafe { ctx.read_at::<u8>(off) }?
    };
    if group_dead == 0 || is_agent(tgid) {
        return Ok(());
    }
    // Emit first: the header records whether the process was tracked.
    emit::<ExitEvent>(EventKind::Exit, Hook::Exit, |_| {});
    let _ = TRACKED_PROCS.remove(&tgid);
    Ok(())
}
