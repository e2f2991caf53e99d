//! Parser for tracefs event `format` files.
//!
//! Tracepoint records have no stable ABI: fields move between kernel
//! versions (e.g. `task_newtask.clone_flags`, `sched_process_exit.group_dead`).
//! The eBPF programs read them at offsets the agent takes from
//! `<tracefs>/events/<group>/<event>/format`, which looks like:
//!
//! ```text
//! name: task_newtask
//! ID: 205
//! format:
//!     field:unsigned short common_type;    offset:0;    size:2;    signed:0;
//!     ...
//!     field:pid_t pid;    offset:8;    size:4;    signed:1;
//!     field:char comm[16];    offset:12;    size:16;    signed:0;
//!
//! print fmt: "pid=%d comm=%s ...", REC->pid, REC->comm, ...
//! ```
//!
//! Syscall tracepoints (`syscalls/sys_enter_*`, `syscalls/sys_exit_*`) have a
//! fixed layout that the programs assume rather than look up;
//! [`syscall_tracepoint_ok`] verifies it.

use std::path::{Path, PathBuf};

use monitor_common::TracepointOffsets;

/// Most arguments a syscall tracepoint can have.
const MAX_SYSCALL_ARGS: usize = 6;

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpField {
    /// Field name: the last identifier of the declaration, before any `[N]`.
    pub name: String,
    /// Byte offset in the raw record (common fields included).
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// `signed:1` (false when the kernel does not print `signed:`).
    pub signed: bool,
    /// Declared `__data_loc`/`__rel_loc`: the field holds a 32-bit locator
    /// (length << 16 | offset) of data stored later in the record, not the
    /// data itself.
    pub dynamic: bool,
}

/// Everything that can go wrong reading or checking a format file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The format file could not be read.
    #[error("reading {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A `field:` line that does not parse (line numbers start at 1).
    #[error("line {line}: {reason}: {text:?}")]
    Malformed {
        line: usize,
        reason: &'static str,
        text: String,
    },
    /// The text has no `field:` lines at all.
    #[error("no field: lines found")]
    NoFields,
    /// A parse error in a particular file.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<FormatError>,
    },
    /// A field the programs need is absent.
    #[error("{}: field {field} not found", path.display())]
    MissingField { path: PathBuf, field: String },
    /// A field has an offset or size other than the programs assume.
    #[error("{}: field {field} has {what} {found}, expected {expected}", path.display())]
    Mismatch {
        path: PathBuf,
        field: String,
        what: &'static str,
        found: u32,
        expected: u32,
    },
    /// A syscall tracepoint with more than six arguments.
    #[error("{}: {count} syscall arguments, at most {MAX_SYSCALL_ARGS} expected", path.display())]
    TooManyArgs { path: PathBuf, count: usize },
    /// Not a `sys_enter_<name>`/`sys_exit_<name>` event name.
    #[error(
        "invalid syscall tracepoint name {0:?} (expected sys_enter_<name> or sys_exit_<name>)"
    )]
    BadName(String),
}

/// The field name in a declaration such as `char comm[16]`,
/// `__data_loc char[] parent_comm` or `const char * filename`.
fn field_name(decl: &str) -> Option<&str> {
    let mut d = decl.trim_end();
    // Drop trailing array suffixes: `x[16]`, `x[2][3]`.
    while d.ends_with(']') {
        d = d[..d.rfind('[')?].trim_end();
    }
    let start = d
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &d[start..];
    match name.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => Some(name),
        _ => None,
    }
}

/// Parses one `field:` line (already trimmed).
fn parse_field(line: &str) -> Result<TpField, &'static str> {
    let mut parts = line.split(';');
    let decl = parts
        .next()
        .and_then(|p| p.trim().strip_prefix("field:"))
        .ok_or("missing field: declaration")?
        .trim();
    let name = field_name(decl).ok_or("no field name in declaration")?;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once(':').ok_or("expected key:value")?;
        let value = value.trim();
        match key.trim() {
            "offset" => offset = Some(value.parse::<u32>().map_err(|_| "bad offset")?),
            "size" => size = Some(value.parse::<u32>().map_err(|_| "bad size")?),
            "signed" => {
                signed = match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err("bad signed"),
                }
            }
            _ => {} // Unknown keys are tolerated.
        }
    }
    Ok(TpField {
        name: name.to_string(),
        offset: offset.ok_or("missing offset")?,
        size: size.ok_or("missing size")?,
        signed,
        dynamic: decl.starts_with("__data_loc ") || decl.starts_with("__rel_loc "),
    })
}

/// Parses the text of a tracefs `format` file into its fields, in file
/// order (common fields included). Lines other than `field:` lines (name,
/// ID, `print fmt`, blank lines) are ignored.
pub fn parse_format(text: &str) -> Result<Vec<TpField>, FormatError> {
    let mut fields = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if !line.starts_with("field:") {
            continue;
        }
        let field = parse_field(line).map_err(|reason| FormatError::Malformed {
            line: i + 1,
            reason,
            text: line.to_string(),
        })?;
        fields.push(field);
    }
    if fields.is_empty() {
        return Err(FormatError::NoFields);
    }
    Ok(fields)
}

/// A parsed format file, remembering its path for error messages.
struct FormatFile {
    path: PathBuf,
    fields: Vec<TpField>,
}

impl FormatFile {
    /// Reads `<tracefs>/events/<event>/format` (`event` = `group/name`).
    fn read(tracefs: &Path, event: &str) -> Result<Self, FormatError> {
        let path = tracefs.join("events").join(event).join("format");
        let text = std::fs::read_to_string(&path).map_err(|error| FormatError::Io {
            path: path.clone(),
            error,
        })?;
        match parse_format(&text) {
            Ok(fields) => Ok(FormatFile { path, fields }),
            Err(error) => Err(FormatError::InFile {
                path,
                error: Box::new(error),
            }),
        }
    }

    fn get(&self, name: &str) -> Option<&TpField> {
        self.fields.iter().find(|f| f.name == name)
    }

    fn require(&self, name: &str) -> Result<&TpField, FormatError> {
        self.get(name).ok_or_else(|| FormatError::MissingField {
            path: self.path.clone(),
            field: name.to_string(),
        })
    }

    fn expect(
        &self,
        f: &TpField,
        what: &'static str,
        found: u32,
        expected: u32,
    ) -> Result<(), FormatError> {
        if found == expected {
            return Ok(());
        }
        Err(FormatError::Mismatch {
            path: self.path.clone(),
            field: f.name.clone(),
            what,
            found,
            expected,
        })
    }

    fn expect_size(&self, f: &TpField, expected: u32) -> Result<(), FormatError> {
        self.expect(f, "size", f.size, expected)
    }

    fn expect_at(&self, f: &TpField, offset: u32, size: u32) -> Result<(), FormatError> {
        self.expect(f, "offset", f.offset, offset)?;
        self.expect_size(f, size)
    }
}

/// Reads the offsets of the non-ABI-stable tracepoint fields the programs
/// use, from `tracefs` (the mount point, e.g. `/sys/kernel/tracing`):
///
/// - `task/task_newtask`: `pid` (must be 4 bytes), `clone_flags` (8 bytes);
/// - `sched/sched_process_exit`: `group_dead` (1 byte) if present, else 0.
pub fn tracepoint_offsets(tracefs: &Path) -> Result<TracepointOffsets, FormatError> {
    let newtask = FormatFile::read(tracefs, "task/task_newtask")?;
    let pid = newtask.require("pid")?;
    newtask.expect_size(pid, 4)?;
    let clone_flags = newtask.require("clone_flags")?;
    newtask.expect_size(clone_flags, 8)?;

    let exit = FormatFile::read(tracefs, "sched/sched_process_exit")?;
    let exit_group_dead = match exit.get("group_dead") {
        Some(f) => {
            exit.expect_size(f, 1)?;
            f.offset
        }
        None => 0,
    };

    Ok(TracepointOffsets {
        newtask_pid: pid.offset,
        newtask_clone_flags: clone_flags.offset,
        exit_group_dead,
        _pad: 0,
    })
}

/// Offsets of the `io_uring` tracepoints' fields the programs read (the
/// `tp_*` members of [`UringOffsets`]; the rest come from BTF).
pub fn uring_tracepoint_offsets(
    tracefs: &Path,
    into: &mut monitor_common::UringOffsets,
) -> Result<(), FormatError> {
    let submit = FormatFile::read(tracefs, "io_uring/io_uring_submit_req")?;
    let f = submit.require("req")?;
    submit.expect_size(f, 8)?;
    into.tp_submit_req = f.offset;
    let f = submit.require("opcode")?;
    submit.expect_size(f, 1)?;
    into.tp_submit_opcode = f.offset;
    let f = submit.require("flags")?;
    submit.expect_size(f, 8)?;
    into.tp_submit_flags = f.offset;

    let complete = FormatFile::read(tracefs, "io_uring/io_uring_complete")?;
    let f = complete.require("req")?;
    complete.expect_size(f, 8)?;
    into.tp_complete_req = f.offset;
    let f = complete.require("res")?;
    complete.expect_size(f, 4)?;
    into.tp_complete_res = f.offset;

    let create = FormatFile::read(tracefs, "io_uring/io_uring_create")?;
    for (name, slot) in [
        ("fd", &mut into.tp_create_fd),
        ("sq_entries", &mut into.tp_create_sq_entries),
        ("cq_entries", &mut into.tp_create_cq_entries),
        ("flags", &mut into.tp_create_flags),
    ] {
        let f = create.require(name)?;
        create.expect_size(f, 4)?;
        *slot = f.offset;
    }
    Ok(())
}

/// Checks that `syscalls/<name>/format` under `tracefs` has the standard
/// syscall tracepoint layout the programs assume:
///
/// - `sys_enter_*`: `__syscall_nr` at offset 8 (4 bytes), then argument `i`
///   at offset `16 + 8 * i`, 8 bytes each (at most six);
/// - `sys_exit_*`: `__syscall_nr` at offset 8 (4 bytes), `ret` at 16 (8 bytes).
///
/// `__data_loc`/`__rel_loc` fields (copies of user strings that newer kernels
/// may append after the arguments) are not counted as arguments.
pub fn syscall_tracepoint_ok(tracefs: &Path, name: &str) -> Result<(), FormatError> {
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let is_enter = match (
        name.strip_prefix("sys_enter_"),
        name.strip_prefix("sys_exit_"),
    ) {
        (Some(rest), None) if !rest.is_empty() && valid_chars => true,
        (None, Some(rest)) if !rest.is_empty() && valid_chars => false,
        _ => return Err(FormatError::BadName(name.to_string())),
    };
    let file = FormatFile::read(tracefs, &format!("syscalls/{name}"))?;
    let nr = file.require("__syscall_nr")?;
    file.expect_at(nr, 8, 4)?;

    if !is_enter {
        let ret = file.require("ret")?;
        return file.expect_at(ret, 16, 8);
    }
    let args: Vec<&TpField> = file
        .fields
        .iter()
        .filter(|f| !f.name.starts_with("common_") && f.name != "__syscall_nr" && !f.dynamic)
        .collect();
    if args.len() > MAX_SYSCALL_ARGS {
        return Err(FormatError::TooManyArgs {
            path: file.path.clone(),
            count: args.len(),
        });
    }
    for (i, arg) in (0u32..).zip(args) {
        file.expect_at(arg, 16 + 8 * i, 8)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim from /sys/kernel/tracing/events/... on Linux 6.18.
    const TASK_NEWTASK: &str = "name: task_newtask
ID: 205
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;
\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:40;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s clone_flags=%llx oom_score_adj=%hd\", REC->pid, REC->comm, REC->clone_flags, REC->oom_score_adj
";

    const SCHED_PROCESS_EXIT: &str = "name: sched_process_exit
ID: 369
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;

print fmt: \"comm=%s pid=%d prio=%d group_dead=%s\", REC->comm, REC->pid, REC->prio, REC->group_dead ? \"true\" : \"false\"
";

    const SCHED_PROCESS_FORK: &str = "name: sched_process_fork
ID: 366
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm), REC->parent_pid, __get_str(child_comm), REC->child_pid
";

    const SYS_ENTER_OPENAT: &str = "name: sys_enter_openat
ID: 782
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"dfd: 0x%08lx, filename: 0x%08lx, flags: 0x%08lx, mode: 0x%08lx\", ((unsigned long)(REC->dfd)), ((unsigned long)(REC->filename)), ((unsigned long)(REC->flags)), ((unsigned long)(REC->mode))
";

    const SYS_EXIT_OPENAT: &str = "name: sys_exit_openat
ID: 781
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"0x%lx\", REC->ret
";

    const SYS_ENTER_EXECVE: &str = "name: sys_enter_execve
ID: 862
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char *const * argv;\toffset:24;\tsize:8;\tsigned:0;
\tfield:const char *const * envp;\toffset:32;\tsize:8;\tsigned:0;

print fmt: \"filename: 0x%08lx, argv: 0x%08lx, envp: 0x%08lx\", ((unsigned long)(REC->filename)), ((unsigned long)(REC->argv)), ((unsigned long)(REC->envp))
";

    fn f(name: &str, offset: u32, size: u32, signed: bool) -> TpField {
        TpField {
            name: name.to_string(),
            offset,
            size,
            signed,
            dynamic: false,
        }
    }

    fn names(fields: &[TpField]) -> Vec<&str> {
        fields.iter().map(|f| f.name.as_str()).collect()
    }

    /// A throwaway tracefs-like directory tree, removed on drop.
    struct FakeTracefs(PathBuf);

    impl FakeTracefs {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("tp_format_{}_{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            FakeTracefs(dir)
        }

        fn put(&self, event: &str, text: &str) -> &Self {
            let d = self.0.join("events").join(event);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("format"), text).unwrap();
            self
        }
    }

    impl Drop for FakeTracefs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_task_newtask() {
        let fields = parse_format(TASK_NEWTASK).unwrap();
        assert_eq!(
            names(&fields),
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "pid",
                "comm",
                "clone_flags",
                "oom_score_adj"
            ]
        );
        assert_eq!(fields[0], f("common_type", 0, 2, false));
        assert_eq!(fields[3], f("common_pid", 4, 4, true));
        assert_eq!(fields[4], f("pid", 8, 4, true));
        assert_eq!(fields[5], f("comm", 12, 16, false));
        assert_eq!(fields[6], f("clone_flags", 32, 8, false));
        assert_eq!(fields[7], f("oom_score_adj", 40, 2, true));
    }

    #[test]
    fn parses_data_loc_and_pointer_fields() {
        let fork = parse_format(SCHED_PROCESS_FORK).unwrap();
        assert_eq!(
            names(&fork[4..]),
            ["parent_comm", "parent_pid", "child_comm", "child_pid"]
        );
        assert!(fork[4].dynamic && fork[6].dynamic);
        assert!(!fork[5].dynamic && !fork[7].dynamic);
        assert_eq!((fork[4].offset, fork[4].size), (8, 4));
        assert_eq!((fork[7].offset, fork[7].size), (20, 4));

        let open = parse_format(SYS_ENTER_OPENAT).unwrap();
        assert_eq!(
            names(&open[4..]),
            ["__syscall_nr", "dfd", "filename", "flags", "mode"]
        );
        let exec = parse_format(SYS_ENTER_EXECVE).unwrap();
        assert_eq!(names(&exec[5..]), ["filename", "argv", "envp"]);
        assert_eq!(exec[6], f("argv", 24, 8, false));
    }

    #[test]
    fn field_names() {
        for (decl, name) in [
            ("char comm[16]", "comm"),
            ("__data_loc char[] parent_comm", "parent_comm"),
            ("const char * filename", "filename"),
            ("const char *const * argv", "argv"),
            ("unsigned long args[6]", "args"),
            ("u32 grid[2][3]", "grid"),
            ("char name[TASK_COMM_LEN] ", "name"),
            ("int x", "x"),
        ] {
            assert_eq!(field_name(decl), Some(name), "{decl}");
        }
        assert_eq!(field_name("char *"), None);
        assert_eq!(field_name("int 9lives"), None);
        assert_eq!(field_name("char x]"), None);
    }

    #[test]
    fn malformed_lines_are_reported() {
        let text = "format:\n\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int b;\toffset:x;\tsize:4;\n";
        let msg = parse_format(text).unwrap_err().to_string();
        assert!(msg.starts_with("line 3: bad offset: "), "{msg}");

        let msg = parse_format("\tfield:int a;\tsize:4;\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("line 1: missing offset"), "{msg}");
        let msg = parse_format("\tfield:[3];\toffset:0;\tsize:4;\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no field name"), "{msg}");
        let msg = parse_format("name: x\nID: 1\nformat:\n")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "no field: lines found");

        // `signed:` absent (very old kernels): defaults to unsigned.
        let fields = parse_format("\tfield:int a;\toffset:8;\tsize:4;\n").unwrap();
        assert_eq!(fields, [f("a", 8, 4, false)]);
    }

    #[test]
    fn tracepoint_offsets_from_fake_tracefs() {
        let t = FakeTracefs::new("tp_ok");
        t.put("task/task_newtask", TASK_NEWTASK)
            .put("sched/sched_process_exit", SCHED_PROCESS_EXIT);
        let o = tracepoint_offsets(&t.0).unwrap();
        assert_eq!(
            o,
            TracepointOffsets {
                newtask_pid: 8,
                newtask_clone_flags: 32,
                exit_group_dead: 32,
                _pad: 0
            }
        );

        // No group_dead (older kernels): 0.
        let without = SCHED_PROCESS_EXIT.replace(
            "\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n",
            "",
        );
        t.put("sched/sched_process_exit", &without);
        assert_eq!(tracepoint_offsets(&t.0).unwrap().exit_group_dead, 0);
    }

    #[test]
    fn tracepoint_offsets_errors_name_file_and_field() {
        let t = FakeTracefs::new("tp_err");
        let newtask = t.0.join("events/task/task_newtask/format");
        let msg = tracepoint_offsets(&t.0).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("reading {}: ", newtask.display())),
            "{msg}"
        );

        // clone_flags as a 4-byte field.
        t.put(
            "task/task_newtask",
            &TASK_NEWTASK.replace(
                "u64 clone_flags;\toffset:32;\tsize:8",
                "u32 clone_flags;\toffset:32;\tsize:4",
            ),
        )
        .put("sched/sched_process_exit", SCHED_PROCESS_EXIT);
        let msg = tracepoint_offsets(&t.0).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: field clone_flags has size 4, expected 8",
                newtask.display()
            )
        );

        // pid missing.
        t.put(
            "task/task_newtask",
            &TASK_NEWTASK.replace("pid_t pid;", "pid_t tid;"),
        );
        let msg = tracepoint_offsets(&t.0).unwrap_err().to_string();
        assert_eq!(msg, format!("{}: field pid not found", newtask.display()));

        // A malformed line is reported with the file.
        t.put(
            "task/task_newtask",
            "\tfield:int pid;\toffset:8;\tsize:four;\n",
        );
        let msg = tracepoint_offsets(&t.0).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{}: line 1: bad size", newtask.display())),
            "{msg}"
        );
    }

    #[test]
    fn syscall_layouts() {
        let t = FakeTracefs::new("sys");
        t.put("syscalls/sys_enter_openat", SYS_ENTER_OPENAT)
            .put("syscalls/sys_exit_openat", SYS_EXIT_OPENAT)
            .put("syscalls/sys_enter_execve", SYS_ENTER_EXECVE);
        syscall_tracepoint_ok(&t.0, "sys_enter_openat").unwrap();
        syscall_tracepoint_ok(&t.0, "sys_exit_openat").unwrap();
        syscall_tracepoint_ok(&t.0, "sys_enter_execve").unwrap();

        // A trailing __data_loc copy of a user string is not an argument.
        let with_str = SYS_ENTER_OPENAT.replace(
            "\n\nprint fmt",
            "\n\tfield:__data_loc char[] __filename_val;\toffset:48;\tsize:4;\tsigned:0;\n\nprint fmt",
        );
        t.put("syscalls/sys_enter_openat", &with_str);
        syscall_tracepoint_ok(&t.0, "sys_enter_openat").unwrap();

        let path = |n: &str| t.0.join(format!("events/syscalls/{n}/format"));
        // An argument at the wrong offset.
        t.put(
            "syscalls/sys_enter_openat",
            &SYS_ENTER_OPENAT.replace("flags;\toffset:32", "flags;\toffset:36"),
        );
        let msg = syscall_tracepoint_ok(&t.0, "sys_enter_openat")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "{}: field flags has offset 36, expected 32",
                path("sys_enter_openat").display()
            )
        );
        // A 4-byte argument.
        t.put(
            "syscalls/sys_enter_openat",
            &SYS_ENTER_OPENAT.replace("dfd;\toffset:16;\tsize:8", "dfd;\toffset:16;\tsize:4"),
        );
        let msg = syscall_tracepoint_ok(&t.0, "sys_enter_openat")
            .unwrap_err()
            .to_string();
        assert!(msg.ends_with("field dfd has size 4, expected 8"), "{msg}");
        // __syscall_nr moved.
        t.put(
            "syscalls/sys_exit_openat",
            &SYS_EXIT_OPENAT.replace("__syscall_nr;\toffset:8", "__syscall_nr;\toffset:12"),
        );
        let msg = syscall_tracepoint_ok(&t.0, "sys_exit_openat")
            .unwrap_err()
            .to_string();
        assert!(
            msg.ends_with("field __syscall_nr has offset 12, expected 8"),
            "{msg}"
        );
        // ret missing.
        t.put(
            "syscalls/sys_exit_openat",
            &SYS_EXIT_OPENAT.replace("long ret;", "long res;"),
        );
        let msg = syscall_tracepoint_ok(&t.0, "sys_exit_openat")
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!("{}: field ret not found", path("sys_exit_openat").display())
        );
        // Missing event.
        let msg = syscall_tracepoint_ok(&t.0, "sys_enter_nope")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(&format!("reading {}", path("sys_enter_nope").display())),
            "{msg}"
        );
        // Bad names never touch the filesystem.
        for bad in ["openat", "sys_enter_", "sys_enter_../../x", "sys_exit_a/b"] {
            let err = syscall_tracepoint_ok(&t.0, bad).unwrap_err();
            assert!(matches!(err, FormatError::BadName(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn live_tracefs() {
        let tracefs = PathBuf::from("/sys/kernel/tracing");
        if !tracefs.join("events").is_dir() {
            println!("skipping: {}/events absent", tracefs.display());
            return;
        }
        let o = match tracepoint_offsets(&tracefs) {
            Ok(o) => o,
            // Readable only by root.
            Err(FormatError::Io { path, error })
                if error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                println!("skipping: {} not readable", path.display());
                return;
            }
            Err(e) => panic!("{e}"),
        };
        println!("live tracepoint offsets: {o:?}");
        assert!(o.newtask_pid >= 8 && o.newtask_clone_flags >= 8);
        assert_ne!(o.newtask_pid, o.newtask_clone_flags);

        // Every syscall tracepoint on this kernel has the assumed layout.
        let dir = tracefs.join("events/syscalls");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            println!("skipping syscalls: {} absent", dir.display());
            return;
        };
        let mut checked = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("sys_enter_") || name.starts_with("sys_exit_") {
                syscall_tracepoint_ok(&tracefs, &name).unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
        println!("checked {checked} syscall tracepoints");
    }
}
