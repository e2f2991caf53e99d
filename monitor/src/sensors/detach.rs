//! The kernel's slow part of detaching the probes, handed to a short-lived
//! child process so that the agent exits promptly after SIGTERM.
//!
//! Closing a tracepoint's perf event waits for an RCU grace period, under
//! the kernel's global `event_mutex`, one probe after the other: with the
//! ~50 probes attached, on a machine busy with a flood of syscalls, that
//! took about 3.5 s here, on top of the drain and the final flush, so a
//! SIGTERM during a flood could take more than the 5 s the agent promises
//! (a kubelet restart, a rolling update). Detaching in parallel does not
//! help (the mutex).
//!
//! [`hand_off`] forks a child that keeps only the probes' kernel objects
//! (perf events and BPF links, programs and maps), closes every other
//! descriptor (sockets, the fanotify group, files, pipes) and then closes
//! those too, one after the other, and exits. The agent's own closes then
//! only drop references: it exits at once while the child finishes the
//! detach in the background (about the same seconds; the probes stay
//! attached until then, writing into a ring buffer nobody reads). The
//! child makes raw system calls only (no allocation, no locks: the agent
//! is multithreaded) and ends with `_exit`.

/// Fork the detaching child (see the module docs). On failure the agent
/// detaches itself, as before.
pub fn hand_off() {
    // SAFETY: the child runs `child_main`, which only makes
    // async-signal-safe system calls and never returns.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => unsafe { child_main() },
        p if p < 0 => tracing::warn!(
            "detaching the probes in a child failed ({}): the agent detaches them itself",
            std::io::Error::last_os_error()
        ),
        p => tracing::debug!("probes detached by child {p}"),
    }
}

/// Whether the link text of a descriptor (`readlink /proc/self/fd/N`) is
/// one of the probes' kernel objects, kept by the child.
fn is_probe_object(link: &[u8]) -> bool {
    link.starts_with(b"anon_inode:[perf_event]") || link.starts_with(b"anon_inode:bpf")
}

/// The child: close everything but the probes' objects, then those, exit.
unsafe fn child_main() -> ! {
    // Not the agent: default signal handling, its own name.
    libc::signal(libc::SIGTERM, libc::SIG_DFL);
    libc::signal(libc::SIGINT, libc::SIG_DFL);
    libc::prctl(libc::PR_SET_NAME, c"monitor-detach".as_ptr());
    let mut keep = [-1i32; 1024];
    let mut kept = 0usize;
    let dir = libc::open(
        c"/proc/self/fd".as_ptr(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    );
    if dir < 0 {
        // The kernel closes everything at exit.
        libc::_exit(0);
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            off += reclen;
            let Some(fd) = parse_fd(name) else { continue };
            if fd == dir {
                continue;
            }
            let mut link = [0u8; 64];
            let len = libc::readlinkat(
                dir,
                name.as_ptr().cast(),
                link.as_mut_ptr().cast(),
                link.len(),
            );
            let probe = len > 0 && is_probe_object(&link[..len as usize]);
            if probe && kept < keep.len() {
                keep[kept] = fd;
                kept += 1;
            } else {
                // Closing a descriptor the listing has passed is safe:
                // procfs lists the table by position.
                libc::close(fd);
            }
        }
    }
    libc::close(dir);
    for &fd in &keep[..kept] {
        libc::close(fd);
    }
    libc::_exit(0)
}

/// A descriptor number from a NUL-terminated directory entry name.
fn parse_fd(name: &[u8]) -> Option<i32> {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let digits = &name[..end];
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0i32, |n, &d| n * 10 + i32::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names_and_probe_objects() {
        assert_eq!(parse_fd(b"17\0\0\0"), Some(17));
        assert_eq!(parse_fd(b"0\0"), Some(0));
        assert_eq!(parse_fd(b".\0"), None);
        assert_eq!(parse_fd(b"..\0"), None);
        assert_eq!(parse_fd(b"\0"), None);
        assert!(is_probe_object(b"anon_inode:[perf_event]"));
        assert!(is_probe_object(b"anon_inode:bpf_link"));
        assert!(is_probe_object(b"anon_inode:bpf-prog"));
        assert!(is_probe_object(b"anon_inode:bpf-map"));
        assert!(!is_probe_object(b"anon_inode:[fanotify]"));
        assert!(!is_probe_object(b"socket:[12345]"));
        assert!(!is_probe_object(b"pipe:[1]"));
        assert!(!is_probe_object(b"/var/lib/monitor/store.db"));
    }
}
