//! Maps shared by every program. Names match `monitor_common::maps`.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use monitor_common::{
    CaptureBudget, FdKey, InodeKey, LogGate, Stash, TlsFresh, TlsPending, TrackedFd, TrackedProc,
    WatchValue, COUNTER_SLOTS, LOG_GATE_SLOTS, SCRATCH_LEN,
};

/// Events to the agent. The agent may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Watched files, by inode (only the agent adds them). Not preallocated:
/// room for 131,072 delivery files costs kernel memory only as they come
/// (programs only look up; a preallocated map of this size would pin
/// ~10 MB on every node).
#[map]
pub static WATCHED_INODES: HashMap<InodeKey, WatchValue> =
    HashMap::with_max_entries(131072, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

#[map]
pub static TRACKED_PROCS: HashMap<u32, TrackedProc> = HashMap::with_max_entries(32768, 0);

/// LRU: descriptors of processes that died without closing age out.
#[map]
pub static TRACKED_FDS: LruHashMap<FdKey, TrackedFd> = LruHashMap::with_max_entries(65536, 0);

#[map]
pub static NEW_CONNS: LruHashMap<FdKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// LRU: a syscall interrupted by the task's death never reaches its exit.
#[map]
pub static STASH: LruHashMap<u64, Stash> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// LRU: per tracked process, its capture budget and losses (see
/// `monitor_common::CaptureBudget`).
#[map]
pub static CAPTURE_BUDGET: LruHashMap<u32, CaptureBudget> = LruHashMap::with_max_entries(32768, 0);

/// Tail-call targets (`monitor_common::TAIL_*`).
#[map]
pub static TAILS: ProgramArray = ProgramArray::with_max_entries(4, 0);

/// LRU: a tracked thread's TLS write in flight (see `monitor_common::TlsPending`).
#[map]
pub static TLS_PENDING: LruHashMap<u64, TlsPending> = LruHashMap::with_max_entries(16384, 0);

/// LRU: untracked threads that just sent a TLS ClientHello on a fresh
/// outbound connection (see `monitor_common::TlsFresh`).
#[map]
pub static TLS_FRESH: LruHashMap<u64, TlsFresh> = LruHashMap::with_max_entries(16384, 0);

/// Per CPU, per error kind: the log gate of the error-path log records
/// (see `util::log_failure`).
#[map]
pub static LOG_GATE: PerCpuArray<LogGate> = PerCpuArray::with_max_entries(LOG_GATE_SLOTS, 0);
