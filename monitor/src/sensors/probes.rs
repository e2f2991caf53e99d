//! The probe table: every kernel program, the hook it attaches to, the
//! concern it serves and whether the agent can run without it.

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `tracefs/events/<category>/<name>`.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A libc function, entry.
    Uprobe { symbol: &'static str },
}

/// What a probe is for (the module it lives in under `monitor-ebpf/src/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concern {
    Files,
    Io,
    Exec,
    Net,
    Env,
    Uring,
}

impl Concern {
    pub fn as_str(self) -> &'static str {
        match self {
            Concern::Files => "files",
            Concern::Io => "io",
            Concern::Exec => "exec",
            Concern::Net => "net",
            Concern::Env => "env",
            Concern::Uring => "uring",
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub attach: Attach,
    pub concern: Concern,
    /// The agent refuses to run when a required probe cannot attach.
    pub required: bool,
    /// Needs the kernel struct offsets from BTF to do its job.
    pub needs_btf: bool,
    /// What is lost without it (shown by `monitor check`).
    pub purpose: &'static str,
}

const fn sys(
    program: &'static str,
    concern: Concern,
    required: bool,
    needs_btf: bool,
    purpose: &'static str,
) -> Probe {
    Probe {
        program,
        attach: Attach::Tracepoint {
            category: "syscalls",
            name: program,
        },
        concern,
        required,
        needs_btf,
        purpose,
    }
}

const fn tp(
    program: &'static str,
    category: &'static str,
    concern: Concern,
    purpose: &'static str,
) -> Probe {
    Probe {
        program,
        attach: Attach::Tracepoint {
            category,
            name: program,
        },
        concern,
        required: true,
        needs_btf: false,
        purpose,
    }
}

const fn uring(program: &'static str, purpose: &'static str) -> Probe {
    Probe {
        program,
        attach: Attach::Tracepoint {
            category: "io_uring",
            name: program,
        },
        concern: Concern::Uring,
        required: false,
        needs_btf: true,
        purpose,
    }
}

const fn uprobe(program: &'static str, purpose: &'static str) -> Probe {
    Probe {
        program,
        attach: Attach::Uprobe { symbol: program },
        concern: Concern::Env,
        required: false,
        needs_btf: false,
        purpose,
    }
}

use Concern::*;

/// Every probe the agent knows. Syscalls that some architectures lack
/// (`open`) are optional.
pub const PROBES: &[Probe] = &[
    sys(
        "sys_enter_open",
        Files,
        false,
        false,
        "path of open(2) by tracked processes",
    ),
    sys(
        "sys_exit_open",
        Files,
        false,
        true,
        "watched-file opens via open(2)",
    ),
    sys(
        "sys_enter_openat",
        Files,
        true,
        false,
        "path of openat(2) by tracked processes",
    ),
    sys(
        "sys_exit_openat",
        Files,
        true,
        true,
        "watched-file and /proc/<pid>/environ opens",
    ),
    sys(
        "sys_enter_openat2",
        Files,
        false,
        false,
        "path of openat2(2) by tracked processes",
    ),
    sys(
        "sys_exit_openat2",
        Files,
        false,
        true,
        "watched-file opens via openat2(2)",
    ),
    sys(
        "sys_enter_read",
        Files,
        true,
        false,
        "reads of watched files",
    ),
    sys(
        "sys_exit_read",
        Files,
        true,
        false,
        "captured bytes of watched-file reads",
    ),
    sys(
        "sys_enter_pread64",
        Files,
        false,
        false,
        "pread64 of watched files",
    ),
    sys(
        "sys_exit_pread64",
        Files,
        false,
        false,
        "captured bytes of pread64",
    ),
    sys(
        "sys_enter_readv",
        Files,
        false,
        false,
        "readv of watched files",
    ),
    sys(
        "sys_exit_readv",
        Files,
        false,
        false,
        "captured bytes of readv",
    ),
    sys(
        "sys_enter_preadv",
        Files,
        false,
        false,
        "preadv of watched files",
    ),
    sys(
        "sys_exit_preadv",
        Files,
        false,
        false,
        "captured bytes of preadv",
    ),
    sys(
        "sys_enter_mmap",
        Files,
        false,
        false,
        "mmap of watched files",
    ),
    sys(
        "sys_enter_close",
        Files,
        true,
        false,
        "end of tracked descriptors",
    ),
    sys(
        "sys_enter_dup",
        Files,
        false,
        false,
        "dup of tracked descriptors",
    ),
    sys(
        "sys_exit_dup",
        Files,
        false,
        false,
        "dup of tracked descriptors",
    ),
    sys(
        "sys_enter_dup2",
        Files,
        false,
        false,
        "dup2 of tracked descriptors",
    ),
    sys(
        "sys_exit_dup2",
        Files,
        false,
        false,
        "dup2 of tracked descriptors",
    ),
    sys(
        "sys_enter_dup3",
        Files,
        false,
        false,
        "dup3 of tracked descriptors",
    ),
    sys(
        "sys_exit_dup3",
        Files,
        false,
        false,
        "dup3 of tracked descriptors",
    ),
    sys(
        "sys_enter_fcntl",
        Files,
        false,
        false,
        "fcntl(F_DUPFD) of tracked descriptors",
    ),
    sys(
        "sys_exit_fcntl",
        Files,
        false,
        false,
        "fcntl(F_DUPFD) of tracked descriptors",
    ),
    sys(
        "sys_enter_copy_file_range",
        Files,
        false,
        true,
        "in-kernel copies (cp)",
    ),
    sys(
        "sys_enter_sendfile64",
        Files,
        false,
        true,
        "in-kernel copies (sendfile)",
    ),
    sys(
        "sys_enter_splice",
        Files,
        false,
        true,
        "in-kernel copies (splice)",
    ),
    sys(
        "sys_exit_copy_file_range",
        Files,
        false,
        true,
        "bytes copied by copy_file_range",
    ),
    sys(
        "sys_exit_sendfile64",
        Files,
        false,
        true,
        "bytes copied by sendfile",
    ),
    sys(
        "sys_exit_splice",
        Files,
        false,
        true,
        "bytes copied by splice",
    ),
    sys(
        "sys_enter_write",
        Io,
        true,
        true,
        "bytes written by tracked processes",
    ),
    sys(
        "sys_enter_pwrite64",
        Io,
        false,
        true,
        "bytes written with pwrite64",
    ),
    sys(
        "sys_enter_writev",
        Io,
        false,
        true,
        "bytes written with writev",
    ),
    sys(
        "sys_enter_pwritev",
        Io,
        false,
        true,
        "bytes written with pwritev",
    ),
    sys("sys_enter_sendto", Io, true, true, "bytes sent with sendto"),
    sys(
        "sys_enter_sendmsg",
        Io,
        false,
        true,
        "bytes sent with sendmsg",
    ),
    sys(
        "sys_enter_execve",
        Exec,
        true,
        false,
        "exec filename, argv and envp",
    ),
    sys("sys_exit_execve", Exec, true, false, "exec result"),
    sys(
        "sys_enter_execveat",
        Exec,
        false,
        false,
        "execveat filename, argv and envp",
    ),
    sys("sys_exit_execveat", Exec, false, false, "execveat result"),
    tp(
        "task_newtask",
        "task",
        Exec,
        "process lineage, tracking inherited by children",
    ),
    tp("sched_process_exit", "sched", Exec, "process exits"),
    sys(
        "sys_enter_connect",
        Net,
        true,
        false,
        "connect destinations of tracked processes",
    ),
    sys(
        "sys_enter_ptrace",
        Env,
        false,
        false,
        "ptrace attach/seize of other processes",
    ),
    sys(
        "sys_enter_process_vm_readv",
        Env,
        false,
        false,
        "process_vm_readv of other processes",
    ),
    uring(
        "io_uring_submit_req",
        "io_uring writes, sends, connects, reads, opens of tracked processes",
    ),
    uring(
        "io_uring_complete",
        "io_uring read, open and splice results (watched-file opens by anyone)",
    ),
    uring(
        "io_uring_create",
        "io_uring instances created by tracked processes",
    ),
    uprobe("getenv", "getenv() calls of tracked processes (libc)"),
    uprobe(
        "secure_getenv",
        "secure_getenv() calls of tracked processes (libc)",
    ),
];

impl Probe {
    /// A process-lifecycle program (the sched/task tracepoints: fork,
    /// exit): always attached, it keeps the tracked flag inherited across
    /// fork and cleared at exit. Every other program (syscall and io_uring
    /// tracepoints, libc uprobes) is a capture program, attached on demand
    /// unless `capture_always` (when: the agent's `update_capture`; how:
    /// [`crate::sensors::Sensors::set_capture`]).
    pub fn lifecycle(&self) -> bool {
        matches!(
            self.attach,
            Attach::Tracepoint {
                category: "task" | "sched",
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn program_names_are_unique_and_named_after_their_hook() {
        let mut seen = HashSet::new();
        for p in PROBES {
            assert!(seen.insert(p.program), "duplicate probe {}", p.program);
            match p.attach {
                Attach::Tracepoint { name, .. } => assert_eq!(name, p.program),
                Attach::Uprobe { symbol } => assert_eq!(symbol, p.program),
            }
        }
    }

    #[test]
    fn only_the_sched_lifecycle_tracepoints_stay_attached_without_holders() {
        let lifecycle: Vec<&str> = PROBES
            .iter()
            .filter(|p| p.lifecycle())
            .map(|p| p.program)
            .collect();
        assert_eq!(lifecycle, ["task_newtask", "sched_process_exit"]);
        // No syscall tracepoint among them: a node without holders takes
        // no slow syscall path.
        for p in PROBES {
            if let Attach::Tracepoint { category, .. } = p.attach {
                if category == "syscalls" || category == "io_uring" {
                    assert!(!p.lifecycle(), "{}", p.program);
                }
            }
        }
    }

    #[test]
    fn every_syscall_enter_with_an_exit_pairs_up() {
        // A sys_exit_* program without its sys_enter_* would never see a stash.
        for p in PROBES {
            if let Some(rest) = p.program.strip_prefix("sys_exit_") {
                let enter = format!("sys_enter_{rest}");
                assert!(
                    PROBES.iter().any(|q| q.program == enter),
                    "{} has no {}",
                    p.program,
                    enter
                );
            }
        }
    }
}
