//! The kernel/user ABI of `monitor`.
//!
//! Everything here is shared by the eBPF programs (`monitor-ebpf`) and the
//! agent (`monitor`): `#[repr(C)]`, `Copy`, no implicit padding (every struct
//! is laid out so that the compiler inserts nothing; `u32` flags, never
//! `bool`). Map names live here and nowhere else.
//!
//! A ring-buffer record is one of the `*Event` structs below, always starting
//! with an [`EventHeader`] whose `kind` is an [`EventKind`]. Records of kind
//! `Read`, `Write` and `Exec` carry `data_len` bytes of captured user memory
//! right after the fixed struct.
#![no_std]

/// Map names (the eBPF side names its statics exactly like this).
pub mod maps {
    /// Ring buffer of events, kernel -> agent.
    pub const EVENTS: &str = "EVENTS";
    /// `InodeKey -> WatchValue`: files whose opens are tracked.
    pub const WATCHED_INODES: &str = "WATCHED_INODES";
    /// `tgid -> TrackedProc`: processes whose writes and sends are captured.
    pub const TRACKED_PROCS: &str = "TRACKED_PROCS";
    /// `FdKey -> FileInfo`: open descriptors of watched files.
    pub const TRACKED_FDS: &str = "TRACKED_FDS";
    /// `FdKey -> u32`: fresh outbound connections whose first bytes are captured.
    pub const NEW_CONNS: &str = "NEW_CONNS";
    /// `pid_tgid -> Stash`: syscall arguments kept from enter to exit.
    pub const STASH: &str = "STASH";
    /// Per-CPU scratch buffer for building variable-length records.
    pub const SCRATCH: &str = "SCRATCH";
    /// Per-CPU `u64` counters indexed by [`Counter`](super::Counter).
    pub const COUNTERS: &str = "COUNTERS";
    /// Tail-call targets, indexed by `TAIL_*`.
    pub const TAILS: &str = "TAILS";
    /// `tgid -> CaptureBudget`: each tracked process's payload-capture
    /// token bucket and what it lost.
    pub const CAPTURE_BUDGET: &str = "CAPTURE_BUDGET";
    /// `pid_tgid -> TlsPending`: a tracked thread's TLS write in flight
    /// (plaintext pointer), bound to the fd of its next socket write.
    pub const TLS_PENDING: &str = "TLS_PENDING";
    /// `pid_tgid -> TlsFresh`: an untracked thread that just sent a TLS
    /// ClientHello on a fresh outbound connection.
    pub const TLS_FRESH: &str = "TLS_FRESH";
    /// Per-CPU [`LogGate`](super::LogGate) per error kind (index: the
    /// [`Counter`](super::Counter)): when that kind last logged on this CPU
    /// and how many it held back since. (aya-log's own ring, `AYA_LOGS`, is
    /// aya-log's business.)
    pub const LOG_GATE: &str = "LOG_GATE";
}

/// The maps an error-path log record names when an insert failed (map
/// full), by the number the record carries.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapId {
    None = 0,
    TrackedProcs = 1,
    TrackedFds = 2,
    Stash = 3,
    NewConns = 4,
}

impl MapId {
    /// The map's name (one of [`maps`]); `-` for no map or an unknown number.
    pub const fn name_of(v: u32) -> &'static str {
        match v {
            1 => maps::TRACKED_PROCS,
            2 => maps::TRACKED_FDS,
            3 => maps::STASH,
            4 => maps::NEW_CONNS,
            _ => "-",
        }
    }
}

/// Error-path log records go out at most once per second per error kind
/// per CPU; the ones held back are counted in the next record.
pub const LOG_GATE_NS: u64 = 1_000_000_000;
/// Slots of `LOG_GATE` (one per [`Counter`] up to `KernelWalkFailed`).
pub const LOG_GATE_SLOTS: u32 = 4;

/// Per CPU and error kind: when the last log record went out
/// (`bpf_ktime_get_ns`) and how many were held back since.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogGate {
    pub last_ns: u64,
    pub suppressed: u64,
}

/// A tracked thread entered a TLS library's write (`SSL_write`,
/// `gnutls_record_send`, Go's `crypto/tls.(*Conn).Write`): the plaintext
/// is at `ptr` until the call returns. The thread's next write or send on
/// a socket (the ciphertext) carries the plaintext capture and that
/// socket's destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsPending {
    pub ptr: u64,
    pub len: u64,
    /// `bpf_ktime_get_boot_ns` at the call.
    pub ts_ns: u64,
    /// The [`Hook`] of the library function.
    pub hook: u32,
    /// A [`TlsLib`].
    pub lib: u32,
}

/// An untracked thread's fresh outbound connection whose first bytes were
/// a TLS ClientHello: its first TLS write's plaintext is captured (like
/// the first bytes of a plaintext connection).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsFresh {
    pub ts_ns: u64,
    pub fd: u32,
    pub _pad: u32,
}

/// A [`TlsPending`] or [`TlsFresh`] older than this is stale (the call
/// returned without writing, or the connection was never used).
pub const TLS_MAX_AGE_NS: u64 = 2_000_000_000;

/// The TLS library whose write carried a capture (`DataEvent.flags >>
/// DATA_TLS_SHIFT`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsLib {
    Openssl = 1,
    Gnutls = 2,
    Go = 3,
}

impl TlsLib {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Openssl,
            2 => Self::Gnutls,
            3 => Self::Go,
            _ => return None,
        })
    }

    /// As in evidence and metrics: `openssl`, `gnutls`, `go`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Openssl => "openssl",
            Self::Gnutls => "gnutls",
            Self::Go => "go",
        }
    }
}

/// A tracked process's budget for captured writes and sends (a token
/// bucket refilled at `Config::capture_rate` tokens a second, holding at
/// most `Config::capture_burst`), and what it lost: records not captured
/// because the budget was spent, and records the full ring buffer refused.
/// A token is one full capture: a record of `capture_bytes` of data with
/// its header, as it sits in the ring; a record pays in proportion to what
/// it carries ([`capture_cost_milli`]). One noisy holder spends its own
/// budget, not the ring everyone shares.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureBudget {
    /// When the bucket was last refilled (`bpf_ktime_get_boot_ns`).
    pub last_ns: u64,
    /// Tokens left, in thousandths of a full capture.
    pub tokens_milli: u64,
    /// Records (a write's head or one of its chunks) not captured: the
    /// budget was spent.
    pub budget_dropped: u64,
    /// Records captured but lost: the ring buffer was full.
    pub ring_dropped: u64,
}

/// What a captured write record takes of the ring beside its data: the
/// `DataEvent` header and the ring buffer's own 8-byte record header (a
/// file's path, appended to writes into regular files, is not counted).
pub const CAPTURE_RECORD_OVERHEAD: u64 = core::mem::size_of::<DataEvent>() as u64 + 8;

/// The least a captured record pays, in thousandths of a token: what the
/// agent spends per event is not only bytes, so a holder of tiny writes
/// is held to `8 x capture_rate` records a second (80,000 at defaults).
pub const CAPTURE_MIN_COST_MILLI: u64 = 125;

/// The price of one captured record carrying `data` bytes, in thousandths
/// of a token (a token: one record of `capture_bytes` of data): its bytes
/// in the ring over a full record's, at least [`CAPTURE_MIN_COST_MILLI`].
/// A full capture costs 1000; a 1 KiB write (4 KiB captures), 276.
#[inline(always)]
pub const fn capture_cost_milli(data: u64, capture_bytes: u64) -> u64 {
    let full = capture_bytes + CAPTURE_RECORD_OVERHEAD;
    let cost = (data + CAPTURE_RECORD_OVERHEAD) * 1000 / full;
    if cost < CAPTURE_MIN_COST_MILLI {
        CAPTURE_MIN_COST_MILLI
    } else if cost > 1000 {
        1000
    } else {
        cost
    }
}

/// `TAILS` slot of the program that appends a file path to a write record.
pub const TAIL_WRITE_PATH: u32 = 0;
/// Name of that program (loaded, not attached).
pub const WRITE_PATH_PROGRAM: &str = "write_path";
/// Where `sys_enter_write` leaves (file pointer, record length) for it.
pub const TAIL_ARGS: usize = PATH_AREA - 16;
/// `TAILS` slot of the program that captures the rest of a large write in
/// chunk records after its head record.
pub const TAIL_WRITE_CHUNKS: u32 = 1;
/// Name of that program (loaded, not attached).
pub const WRITE_CHUNKS_PROGRAM: &str = "write_chunks";
/// Where the write programs leave a [`ChunkArgs`] for it (past the path area).
pub const CHUNK_ARGS: usize = PATH_AREA + MAX_PATH;

/// Name of the read-only global the agent fills before load.
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// Largest payload captured from one read/write/send.
pub const MAX_CAPTURE: usize = 4096;
/// Default payload capture (configurable up to [`MAX_CAPTURE`]).
pub const DEFAULT_CAPTURE: u32 = 4096;
/// Most chunk records after the head record of one write.
pub const MAX_CHUNKS: u32 = 63;
/// Largest capture of one write by a tracked process, head and chunks.
pub const MAX_WRITE_CAPTURE: u32 = (MAX_CHUNKS + 1) * MAX_CAPTURE as u32;
/// Default capture of one write by a tracked process.
pub const DEFAULT_WRITE_CAPTURE: u32 = 65536;
/// Largest argv + envp bytes captured from one exec.
pub const MAX_EXEC_DATA: usize = 16384;
/// Default argv bytes captured from one exec.
pub const DEFAULT_ARGV_BYTES: u32 = 4096;
/// Default envp bytes captured from one exec.
pub const DEFAULT_ENV_BYTES: u32 = 8192;
/// Most argv / envp entries walked per exec.
pub const MAX_ARGS: u32 = 64;
pub const MAX_ENVS: u32 = 128;
/// Bytes of the opened path kept in an [`OpenEvent`].
pub const PATH_LEN: usize = 256;
/// Bytes of the dentry name kept in an [`OpenEvent`].
pub const NAME_LEN: usize = 64;
/// Room for a unix socket `sun_path` (108 bytes, rounded up to keep 8-byte alignment).
pub const UNIX_PATH_LEN: usize = 112;
/// Size of the per-CPU scratch buffer (a power of two).
pub const SCRATCH_LEN: usize = 32768;
/// Where in the scratch buffer file paths are built (right to left).
pub const PATH_AREA: usize = 16384;
/// Longest path built in the kernel (a power of two).
pub const MAX_PATH: usize = 4096;
/// Most path components walked.
pub const MAX_PATH_DEPTH: u32 = 32;
/// Number of slots in the counters array.
pub const COUNTER_SLOTS: u32 = 32;

/// What a record is. Fixed numbering: the agent decodes by it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Open = 1,
    Read = 2,
    Mmap = 3,
    Close = 4,
    Dup = 5,
    Transfer = 6,
    Write = 7,
    Exec = 8,
    ExecResult = 9,
    Fork = 10,
    Exit = 11,
    Connect = 12,
    ProcAccess = 13,
    Getenv = 14,
    /// An io_uring instance created by a tracked process.
    UringCreate = 15,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Open,
            2 => Self::Read,
            3 => Self::Mmap,
            4 => Self::Close,
            5 => Self::Dup,
            6 => Self::Transfer,
            7 => Self::Write,
            8 => Self::Exec,
            9 => Self::ExecResult,
            10 => Self::Fork,
            11 => Self::Exit,
            12 => Self::Connect,
            13 => Self::ProcAccess,
            14 => Self::Getenv,
            15 => Self::UringCreate,
            _ => return None,
        })
    }
}

/// Which syscall (or hook) produced a record: the variant within a kind.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Unknown = 0,
    Open = 1,
    Openat = 2,
    Openat2 = 3,
    Read = 4,
    Pread64 = 5,
    Readv = 6,
    Preadv = 7,
    Mmap = 8,
    Close = 9,
    Dup = 10,
    Dup2 = 11,
    Dup3 = 12,
    Fcntl = 13,
    CopyFileRange = 14,
    Sendfile = 15,
    Splice = 16,
    Write = 17,
    Pwrite64 = 18,
    Writev = 19,
    Pwritev = 20,
    Sendto = 21,
    Sendmsg = 22,
    Execve = 23,
    Execveat = 24,
    Fork = 25,
    Exit = 26,
    Connect = 27,
    Ptrace = 28,
    ProcessVmReadv = 29,
    Getenv = 30,
    SecureGetenv = 31,
    /// io_uring requests (`io_uring:io_uring_submit_req` and
    /// `io_uring_complete`), the twins of the syscalls above.
    UringOpenat = 32,
    UringOpenat2 = 33,
    UringRead = 34,
    UringReadv = 35,
    UringWrite = 36,
    UringWritev = 37,
    UringSend = 38,
    UringSendmsg = 39,
    UringConnect = 40,
    UringSplice = 41,
    UringTee = 42,
    UringClose = 43,
    /// `io_uring_setup` (the `io_uring:io_uring_create` tracepoint).
    UringSetup = 44,
    SslWrite = 45,
    SslWriteEx = 46,
    GnutlsRecordSend = 47,
    GoTlsWrite = 48,
}

impl Hook {
    pub const fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::Openat,
            3 => Self::Openat2,
            4 => Self::Read,
            5 => Self::Pread64,
            6 => Self::Readv,
            7 => Self::Preadv,
            8 => Self::Mmap,
            9 => Self::Close,
            10 => Self::Dup,
            11 => Self::Dup2,
            12 => Self::Dup3,
            13 => Self::Fcntl,
            14 => Self::CopyFileRange,
            15 => Self::Sendfile,
            16 => Self::Splice,
            17 => Self::Write,
            18 => Self::Pwrite64,
            19 => Self::Writev,
            20 => Self::Pwritev,
            21 => Self::Sendto,
            22 => Self::Sendmsg,
            23 => Self::Execve,
            24 => Self::Execveat,
            25 => Self::Fork,
            26 => Self::Exit,
            27 => Self::Connect,
            28 => Self::Ptrace,
            29 => Self::ProcessVmReadv,
            30 => Self::Getenv,
            31 => Self::SecureGetenv,
            32 => Self::UringOpenat,
            33 => Self::UringOpenat2,
            34 => Self::UringRead,
            35 => Self::UringReadv,
            36 => Self::UringWrite,
            37 => Self::UringWritev,
            38 => Self::UringSend,
            39 => Self::UringSendmsg,
            40 => Self::UringConnect,
            41 => Self::UringSplice,
            42 => Self::UringTee,
            43 => Self::UringClose,
            44 => Self::UringSetup,
            45 => Self::SslWrite,
            46 => Self::SslWriteEx,
            47 => Self::GnutlsRecordSend,
            48 => Self::GoTlsWrite,
            _ => Self::Unknown,
        }
    }

    /// The syscall or function name, as a responder would search for it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Open => "open",
            Self::Openat => "openat",
            Self::Openat2 => "openat2",
            Self::Read => "read",
            Self::Pread64 => "pread64",
            Self::Readv => "readv",
            Self::Preadv => "preadv",
            Self::Mmap => "mmap",
            Self::Close => "close",
            Self::Dup => "dup",
            Self::Dup2 => "dup2",
            Self::Dup3 => "dup3",
            Self::Fcntl => "fcntl",
            Self::CopyFileRange => "copy_file_range",
            Self::Sendfile => "sendfile",
            Self::Splice => "splice",
            Self::Write => "write",
            Self::Pwrite64 => "pwrite64",
            Self::Writev => "writev",
            Self::Pwritev => "pwritev",
            Self::Sendto => "sendto",
            Self::Sendmsg => "sendmsg",
            Self::Execve => "execve",
            Self::Execveat => "execveat",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Connect => "connect",
            Self::Ptrace => "ptrace",
            Self::ProcessVmReadv => "process_vm_readv",
            Self::Getenv => "getenv",
            Self::SecureGetenv => "secure_getenv",
            Self::UringOpenat => "io_uring:openat",
            Self::UringOpenat2 => "io_uring:openat2",
            Self::UringRead => "io_uring:read",
            Self::UringReadv => "io_uring:readv",
            Self::UringWrite => "io_uring:write",
            Self::UringWritev => "io_uring:writev",
            Self::UringSend => "io_uring:send",
            Self::UringSendmsg => "io_uring:sendmsg",
            Self::UringConnect => "io_uring:connect",
            Self::UringSplice => "io_uring:splice",
            Self::UringTee => "io_uring:tee",
            Self::UringClose => "io_uring:close",
            Self::UringSetup => "io_uring_setup",
            Self::SslWrite => "SSL_write",
            Self::SslWriteEx => "SSL_write_ex",
            Self::GnutlsRecordSend => "gnutls_record_send",
            Self::GoTlsWrite => "crypto/tls.(*Conn).Write",
        }
    }

    /// Submitted through io_uring rather than a syscall of its own.
    pub const fn is_uring(self) -> bool {
        (self as u32) >= Self::UringOpenat as u32 && (self as u32) <= Self::UringSetup as u32
    }
}

/// Per-CPU counters (index into the `COUNTERS` map).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A ring-buffer output failed (buffer full): the event is lost.
    RingbufFull = 0,
    /// A map insert failed (map full).
    MapFull = 1,
    /// A user-memory read failed (page not present, bad pointer).
    ReadUserFailed = 2,
    /// A kernel-struct walk failed.
    KernelWalkFailed = 3,
    /// Events emitted, any kind.
    Emitted = 4,
    /// Payload bytes captured.
    CapturedBytes = 5,
}

impl Counter {
    /// As in the agent's log and metrics: `ringbuf_full`, `map_full`,
    /// `read_user_failed`, `kernel_walk_failed`, ...; `unknown` otherwise.
    pub const fn name_of(v: u32) -> &'static str {
        match v {
            0 => "ringbuf_full",
            1 => "map_full",
            2 => "read_user_failed",
            3 => "kernel_walk_failed",
            4 => "emitted",
            5 => "captured_bytes",
            _ => "unknown",
        }
    }
}

/// Lost events are also counted per kind: slot `LOST_BY_KIND_BASE + kind`.
pub const LOST_BY_KIND_BASE: u32 = 16;

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, suspend included.
    pub ts_ns: u64,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (inode of its dir).
    pub cgroup_id: u64,
    /// An [`EventKind`].
    pub kind: u32,
    /// Thread-group id (the process id users see).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// A [`Hook`]: which syscall or function.
    pub hook: u32,
    /// `HDR_*` bits.
    pub flags: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// `EventHeader.flags`: the actor was tracked when the record was made.
pub const HDR_TRACKED: u32 = 1;

/// What the kernel says about an open file (from `struct file`/`inode`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileInfo {
    pub ino: u64,
    /// `super_block.s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    /// `inode.i_mode` (type and permission bits).
    pub mode: u32,
    /// `inode.i_rdev` for character/block devices (kernel encoding).
    pub rdev: u32,
    /// `file.f_flags` (O_* flags of the open file description).
    pub f_flags: u32,
}

/// A socket address, as seen by connect/sendto or read off a connected sock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    /// AF_INET (2), AF_INET6 (10), AF_UNIX (1) or 0 when none.
    pub family: u32,
    /// Port in host byte order.
    pub port: u32,
    /// IPv4 in the first 4 bytes, or IPv6, network byte order.
    pub addr: [u8; 16],
}

/// Key of `WATCHED_INODES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// Value of `WATCHED_INODES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchValue {
    /// Agent-side id of the watched path.
    pub watch_id: u32,
    /// `WATCH_*` flags.
    pub flags: u32,
}

/// Key of `TRACKED_FDS` and `NEW_CONNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Value of `TRACKED_FDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedFd {
    pub file: FileInfo,
    pub watch_id: u32,
    pub _pad: u32,
}

/// Value of `TRACKED_PROCS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedProc {
    /// `TRACK_*` reasons, or-ed.
    pub reason: u32,
    /// 1: children forked from now on are tracked too.
    pub inherit: u32,
}

/// Tracking reasons.
pub const TRACK_AGENT: u32 = 1; // set by the agent (holder, API, config)
pub const TRACK_OPENED_WATCHED: u32 = 2; // opened a watched file
pub const TRACK_FORKED: u32 = 4; // forked from a tracked process

/// `dirfd` meaning "the working directory".
pub const AT_FDCWD: i32 = -100;

/// Value of `STASH`: arguments of a syscall in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Stash {
    /// User pointer (buffer, iovec array or path).
    pub ptr: u64,
    pub count: u64,
    pub fd: i32,
    /// A [`Hook`].
    pub hook: u32,
    /// Extra argument (open flags, iov count...).
    pub arg: u32,
    pub _pad: u32,
}

/// `OpenEvent.watched` / `WatchValue.flags` bits.
pub const WATCH_FILE: u32 = 1;

/// `ProcAccessEvent.access` values.
pub const PROC_ENVIRON: u32 = 1;
pub const PROC_MEM: u32 = 2;
pub const PROC_PTRACE: u32 = 3;
pub const PROC_VM_READV: u32 = 4;

/// `DataEvent.flags` bits.
/// The capture was cut at the configured limit.
pub const DATA_TRUNCATED: u32 = 1;
/// First bytes on a new outbound connection of an untracked process.
pub const DATA_FIRST_BYTES: u32 = 2;
/// `peer` is an explicit destination (sendto/sendmsg `msg_name`).
pub const DATA_EXPLICIT_DEST: u32 = 4;
/// The process is tracked.
pub const DATA_TRACKED: u32 = 8;
/// The fd is a tracked (watched-file) descriptor.
pub const DATA_TRACKED_FD: u32 = 16;
/// Bits 5..8: the [`TlsLib`] whose plaintext this is (0: not TLS).
pub const DATA_TLS_SHIFT: u32 = 5;
pub const DATA_TLS_MASK: u32 = 7 << DATA_TLS_SHIFT;
/// Chunk records of the same write follow this record (same thread).
pub const DATA_MORE: u32 = 256;
/// A chunk record: bytes `chunk_off..chunk_off + data_len` of the write
/// whose head record came before it on the same thread.
pub const DATA_CHUNK: u32 = 512;

/// What the write programs leave at [`CHUNK_ARGS`] in scratch for the
/// chunk program, which keeps its loop state there too (the verifier then
/// sees the same registers on every round and prunes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChunkArgs {
    /// A buffer, or an iovec array when `iovcnt` is not 0.
    pub ptr: u64,
    pub iovcnt: u64,
    /// Bytes of the write captured so far (the head's capture, then each
    /// chunk's).
    pub done: u64,
    /// Capture up to this many bytes of the write in all.
    pub limit: u64,
    /// The span being read: its start, length, the position in it and
    /// (iovecs) its index.
    pub base: u64,
    pub len: u64,
    pub at: u64,
    pub iov: u64,
}

/// `ExecEvent.flags` bits.
pub const EXEC_ARGV_TRUNCATED: u32 = 1;
pub const EXEC_ENV_TRUNCATED: u32 = 2;
pub const EXEC_TRACKED: u32 = 4;

/// An open of a watched file (any process), of `/proc/<pid>/{environ,mem}`
/// (any process), or any successful open by a tracked process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenEvent {
    pub hdr: EventHeader,
    pub file: FileInfo,
    /// The returned descriptor.
    pub fd: i32,
    /// The `flags` argument of the syscall.
    pub flags: u32,
    /// Non-zero: id of the watched path this inode belongs to.
    pub watch_id: u32,
    /// For `/proc/<pid>/environ|mem`: that pid; else 0.
    pub proc_pid: u32,
    /// `PROC_ENVIRON`, `PROC_MEM` or 0.
    pub proc_file: u32,
    /// The directory fd a relative `path` is resolved against (openat,
    /// openat2), [`AT_FDCWD`] for the working directory (and open).
    pub dirfd: i32,
    pub name_len: u32,
    pub path_len: u32,
    /// Final path component from the dentry.
    pub name: [u8; NAME_LEN],
    /// The path string the process passed (tracked processes only).
    pub path: [u8; PATH_LEN],
}

/// A read from a tracked fd or a write/send (capture follows the struct).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub hdr: EventHeader,
    pub file: FileInfo,
    /// Connected peer of a socket fd, or the explicit destination.
    pub peer: SockAddr,
    pub fd: i32,
    /// `DATA_*` bits.
    pub flags: u32,
    /// Bytes the syscall asked for (write/send) or returned (read).
    pub count: u64,
    /// Captured bytes following this struct.
    pub data_len: u32,
    /// Watch id of the tracked fd (reads), else 0.
    pub watch_id: u32,
    /// Bytes of the file's path, after the captured bytes (writes to
    /// regular files by tracked processes), else 0.
    pub path_len: u32,
    /// [`DATA_CHUNK`] records: offset of the captured bytes in the write.
    pub chunk_off: u32,
}

/// mmap of a tracked fd.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmapEvent {
    pub hdr: EventHeader,
    pub file: FileInfo,
    pub fd: i32,
    pub prot: u32,
    pub flags: u32,
    pub watch_id: u32,
    pub len: u64,
    pub offset: u64,
}

/// close of a tracked fd.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CloseEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    pub watch_id: u32,
}

/// dup/dup2/dup3/fcntl(F_DUPFD*) of a tracked fd.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DupEvent {
    pub hdr: EventHeader,
    pub oldfd: i32,
    pub newfd: i32,
    pub watch_id: u32,
    pub _pad: u32,
}

/// copy_file_range/sendfile/splice out of a tracked fd or by a tracked
/// process (at syscall exit: `count` is what was really copied).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TransferEvent {
    pub hdr: EventHeader,
    pub in_file: FileInfo,
    pub out_file: FileInfo,
    pub out_peer: SockAddr,
    pub fd_in: i32,
    pub fd_out: i32,
    pub count: u64,
    pub watch_id: u32,
    /// Bytes of `out_path` used (regular files), else 0.
    pub out_path_len: u32,
    /// Path of the destination file, from the kernel's dentries.
    pub out_path: [u8; PATH_LEN],
}

/// execve/execveat (at syscall entry): argv bytes then envp bytes follow,
/// each string NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    pub argc: u32,
    pub envc: u32,
    pub argv_len: u32,
    pub envp_len: u32,
    /// `EXEC_*` bits.
    pub flags: u32,
    pub filename_len: u32,
    pub filename: [u8; PATH_LEN],
}

/// Result of an exec (syscall exit). `ret == 0`: the new image runs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecResultEvent {
    pub hdr: EventHeader,
    pub ret: i64,
}

/// A new process (not a thread).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    pub hdr: EventHeader,
    pub child_pid: u32,
    /// 1 when the child inherited tracking.
    pub inherited: u32,
    pub clone_flags: u64,
}

/// A process (thread group) ended.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub hdr: EventHeader,
}

/// connect() by a tracked process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    pub hdr: EventHeader,
    pub addr: SockAddr,
    pub fd: i32,
    pub unix_path_len: u32,
    pub unix_path: [u8; UNIX_PATH_LEN],
}

/// Access to another process's environment or memory.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcAccessEvent {
    pub hdr: EventHeader,
    /// Target pid as the actor named it (its pid namespace).
    pub target_pid: u32,
    /// `PROC_*`.
    pub access: u32,
    /// ptrace request, or 0.
    pub request: u64,
    /// 1 when the target is tracked.
    pub target_tracked: u32,
    /// fd returned by the open, or -1.
    pub fd: i32,
}

/// getenv/secure_getenv called by a tracked process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GetenvEvent {
    pub hdr: EventHeader,
    pub name_len: u32,
    pub _pad: u32,
    pub name: [u8; NAME_LEN],
}

/// An io_uring instance created by a tracked process (`io_uring_setup`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UringCreateEvent {
    pub hdr: EventHeader,
    /// The ring's descriptor.
    pub fd: i32,
    /// `IORING_SETUP_*` flags (SQPOLL, ...).
    pub flags: u32,
    pub sq_entries: u32,
    pub cq_entries: u32,
}

/// io_uring opcodes (`enum io_uring_op`, UAPI: stable numbers) the programs
/// capture.
pub mod uring_op {
    pub const READV: u8 = 1;
    pub const WRITEV: u8 = 2;
    pub const READ_FIXED: u8 = 4;
    pub const WRITE_FIXED: u8 = 5;
    pub const SENDMSG: u8 = 9;
    pub const CONNECT: u8 = 16;
    pub const OPENAT: u8 = 18;
    pub const CLOSE: u8 = 19;
    pub const READ: u8 = 22;
    pub const WRITE: u8 = 23;
    pub const SEND: u8 = 26;
    pub const OPENAT2: u8 = 28;
    pub const SPLICE: u8 = 30;
    pub const TEE: u8 = 33;
    pub const SEND_ZC: u8 = 47;
    pub const SENDMSG_ZC: u8 = 48;
    /// `io_kiocb.flags` bit: the request's fd is a registered-file index
    /// (`IOSQE_FIXED_FILE`), not a descriptor.
    pub const REQ_F_FIXED_FILE: u64 = 1;
    /// `io_sr_msg.flags` bit: the send's buffer is an iovec array.
    pub const IORING_SEND_VECTORIZED: u16 = 1 << 5;
    /// `io_splice.flags` bit: `splice_fd_in` is a registered-file index.
    pub const SPLICE_F_FD_IN_FIXED: u32 = 1 << 31;
}

/// Where the io_uring programs find what they read: fields of the
/// `io_uring` tracepoints (from their tracefs formats) and of the kernel's
/// request structs (from BTF). `valid == 0`: io_uring is not covered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringOffsets {
    pub valid: u32,
    /// `io_uring_submit_req`: `req`, `opcode` (u8), `flags` (u64).
    pub tp_submit_req: u32,
    pub tp_submit_opcode: u32,
    pub tp_submit_flags: u32,
    /// `io_uring_complete`: `req`, `res` (s32).
    pub tp_complete_req: u32,
    pub tp_complete_res: u32,
    /// `io_uring_create`: `fd`, `sq_entries`, `cq_entries`, `flags`.
    pub tp_create_fd: u32,
    pub tp_create_sq_entries: u32,
    pub tp_create_cq_entries: u32,
    pub tp_create_flags: u32,
    /// `io_kiocb.cqe.fd`: the request's descriptor (ops that need a file).
    pub req_cqe_fd: u32,
    /// `io_rw.addr`, `io_rw.len` (read/write: buffer or iovec array, length
    /// or count).
    pub rw_addr: u32,
    pub rw_len: u32,
    /// `io_sr_msg.buf` (or `umsg`), `.len`, `.flags` (u16).
    pub sr_buf: u32,
    pub sr_len: u32,
    pub sr_flags: u32,
    /// `io_connect.addr` (user `sockaddr *`).
    pub connect_addr: u32,
    /// `io_open.dfd`, `io_open.how.flags` (u64).
    pub open_dfd: u32,
    pub open_flags: u32,
    /// `io_splice.splice_fd_in`, `io_splice.flags`.
    pub splice_fd_in: u32,
    pub splice_flags: u32,
    /// `io_close.fd`.
    pub close_fd: u32,
    pub _pad: [u32; 2],
}

/// Struct-member byte offsets read from the running kernel's BTF.
///
/// The eBPF programs walk `task_struct -> files -> fdtable -> file -> inode`
/// and `file -> socket -> sock` with these, since CO-RE is not available to
/// them. A zero `valid` means the walk is disabled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub file_f_flags: u32,
    pub file_private_data: u32,
    pub path_dentry: u32,
    pub inode_i_mode: u32,
    pub inode_i_rdev: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub sb_s_magic: u32,
    pub dentry_d_name: u32,
    pub dentry_d_parent: u32,
    pub qstr_name: u32,
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_dport: u32,
    pub sk_v6_daddr: u32,
    /// For the in-kernel path walk (d_path is not callable here).
    pub qstr_len: u32,
    pub path_mnt: u32,
    pub vfsmount_mnt_root: u32,
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
}

/// Offsets of fields in tracepoints whose format is not ABI-stable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `task/task_newtask`: `pid`.
    pub newtask_pid: u32,
    /// `task/task_newtask`: `clone_flags` (u64).
    pub newtask_clone_flags: u32,
    /// `sched/sched_process_exit`: `group_dead` (u8), or 0 if absent.
    pub exit_group_dead: u32,
    pub _pad: u32,
}

/// The read-only global [`CONFIG_GLOBAL`] the agent sets before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Agent's own tgid: never traced.
    pub agent_tgid: u32,
    /// Payload bytes captured per read/write (<= MAX_CAPTURE).
    pub capture_bytes: u32,
    /// argv bytes captured per exec.
    pub argv_bytes: u32,
    /// envp bytes captured per exec.
    pub env_bytes: u32,
    /// 1: capture the first bytes written on every new outbound connection.
    pub capture_new_conns: u32,
    /// 1: emit exec events for every process (not only tracked ones).
    pub exec_all: u32,
    /// Full captures a second per tracked process (tokens of
    /// [`CaptureBudget`]; 0: no limit).
    pub capture_rate: u32,
    /// Most full captures in a burst per tracked process.
    pub capture_burst: u32,
    /// Bytes captured per write by a tracked process (head plus chunk
    /// records, <= MAX_WRITE_CAPTURE; at most `capture_bytes`: no chunks).
    pub capture_write_bytes: u32,
    pub offsets: KernelOffsets,
    pub tp: TracepointOffsets,
    pub uring: UringOffsets,
}

impl Config {
    pub const fn zeroed() -> Self {
        Self {
            agent_tgid: 0,
            capture_bytes: 0,
            argv_bytes: 0,
            env_bytes: 0,
            capture_new_conns: 0,
            exec_all: 0,
            capture_rate: 0,
            capture_burst: 0,
            capture_write_bytes: 0,
            offsets: KernelOffsets {
                valid: 0,
                task_files: 0,
                files_fdt: 0,
                fdt_max_fds: 0,
                fdt_fd: 0,
                file_f_path: 0,
                file_f_inode: 0,
                file_f_flags: 0,
                file_private_data: 0,
                path_dentry: 0,
                inode_i_mode: 0,
                inode_i_rdev: 0,
                inode_i_ino: 0,
                inode_i_sb: 0,
                sb_s_dev: 0,
                sb_s_magic: 0,
                dentry_d_name: 0,
                dentry_d_parent: 0,
                qstr_name: 0,
                socket_sk: 0,
                sk_family: 0,
                sk_daddr: 0,
                sk_dport: 0,
                sk_v6_daddr: 0,
                qstr_len: 0,
                path_mnt: 0,
                vfsmount_mnt_root: 0,
                mount_mnt: 0,
                mount_mnt_parent: 0,
                mount_mnt_mountpoint: 0,
            },
            tp: TracepointOffsets {
                newtask_pid: 0,
                newtask_clone_flags: 0,
                exit_group_dead: 0,
                _pad: 0,
            },
            uring: UringOffsets {
                valid: 0,
                tp_submit_req: 0,
                tp_submit_opcode: 0,
                tp_submit_flags: 0,
                tp_complete_req: 0,
                tp_complete_res: 0,
                tp_create_fd: 0,
                tp_create_sq_entries: 0,
                tp_create_cq_entries: 0,
                tp_create_flags: 0,
                req_cqe_fd: 0,
                rw_addr: 0,
                rw_len: 0,
                sr_buf: 0,
                sr_len: 0,
                sr_flags: 0,
                connect_addr: 0,
                open_dfd: 0,
                open_flags: 0,
                splice_fd_in: 0,
                splice_flags: 0,
                close_fd: 0,
                _pad: [0; 2],
            },
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for FileInfo {}
    unsafe impl aya::Pod for SockAddr {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for WatchValue {}
    unsafe impl aya::Pod for FdKey {}
    unsafe impl aya::Pod for TrackedFd {}
    unsafe impl aya::Pod for TrackedProc {}
    unsafe impl aya::Pod for Stash {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for TracepointOffsets {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for CaptureBudget {}
    unsafe impl aya::Pod for UringOffsets {}
    unsafe impl aya::Pod for TlsPending {}
    unsafe impl aya::Pod for TlsFresh {}
    unsafe impl aya::Pod for LogGate {}
}

/// Compile-time layout checks: no implicit padding anywhere.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<EventHeader>() == 64);
    assert!(size_of::<FileInfo>() == 24);
    assert!(size_of::<SockAddr>() == 24);
    assert!(size_of::<InodeKey>() == 16);
    assert!(size_of::<FdKey>() == 8);
    assert!(size_of::<TrackedFd>() == 32);
    assert!(size_of::<Stash>() == 32);
    assert!(size_of::<OpenEvent>() == 64 + 24 + 32 + NAME_LEN + PATH_LEN);
    assert!(size_of::<DataEvent>() == 64 + 24 + 24 + 8 + 8 + 8 + 8);
    assert!(size_of::<MmapEvent>() == 64 + 24 + 16 + 16);
    assert!(size_of::<CloseEvent>() == 72);
    assert!(size_of::<DupEvent>() == 80);
    assert!(size_of::<TransferEvent>() == 64 + 24 * 3 + 8 + 8 + 8 + PATH_LEN);
    assert!(size_of::<ExecEvent>() == 64 + 24 + PATH_LEN);
    assert!(size_of::<ExecResultEvent>() == 72);
    assert!(size_of::<ForkEvent>() == 80);
    assert!(size_of::<ExitEvent>() == 64);
    assert!(size_of::<ConnectEvent>() == 64 + 24 + 8 + UNIX_PATH_LEN);
    assert!(size_of::<ProcAccessEvent>() == 64 + 8 + 8 + 8);
    assert!(size_of::<GetenvEvent>() == 64 + 8 + NAME_LEN);
    assert!(size_of::<KernelOffsets>() == 30 * 4);
    assert!(size_of::<UringOffsets>() == 24 * 4);
    assert!(size_of::<UringCreateEvent>() == 64 + 16);
    assert!(size_of::<Config>() == 36 + 120 + 16 + 96);
    assert!(size_of::<ChunkArgs>() == 64);
    assert!(CHUNK_ARGS + size_of::<ChunkArgs>() <= SCRATCH_LEN);
    assert!(size_of::<CaptureBudget>() == 32);
    // The capture budget's prices at the default capture_bytes.
    assert!(size_of::<DataEvent>() == 144);
    assert!(capture_cost_milli(4096, 4096) == 1000);
    assert!(capture_cost_milli(1024, 4096) == 276);
    assert!(capture_cost_milli(1, 4096) == CAPTURE_MIN_COST_MILLI);
    assert!(capture_cost_milli(100, 100) == 1000);
    assert!(size_of::<TlsPending>() == 32);
    assert!(size_of::<TlsFresh>() == 16);
    assert!(SCRATCH_LEN.is_power_of_two());
    assert!(MAX_CAPTURE.is_power_of_two());
};
