//! Sensors: the eBPF programs and maps. Loads the embedded object with the
//! kernel's struct offsets, attaches what the kernel supports (the probe
//! table), and gives the rest of the agent typed handles on the maps.
pub mod btf;
pub mod detach;
pub mod ebpf_log;
pub mod fanotify;
pub mod probes;
pub mod tls;
pub mod tp_format;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{trace_point::TracePointLinkId, uprobe::UProbeLinkId, TracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use monitor_common::{
    maps, CaptureBudget, Config, Counter, FdKey, InodeKey, KernelOffsets, TrackedFd, TrackedProc,
    UringOffsets, WatchValue, CAPTURE_RECORD_OVERHEAD, CONFIG_GLOBAL, COUNTER_SLOTS,
    DEFAULT_ARGV_BYTES, DEFAULT_CAPTURE, DEFAULT_ENV_BYTES, DEFAULT_WRITE_CAPTURE,
    LOST_BY_KIND_BASE, MAX_CAPTURE, MAX_EXEC_DATA, MAX_WRITE_CAPTURE, TAIL_WRITE_CHUNKS,
    TAIL_WRITE_PATH, WRITE_CHUNKS_PROGRAM, WRITE_PATH_PROGRAM,
};

use self::probes::{Attach, Probe, PROBES};

/// The eBPF object, built by `build.rs` for the BPF target.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// Default full captures (tokens: `capture_bytes` of data with the
/// record's header, ~4.2 KB at defaults) a second per tracked process:
/// ~42 MB/s of captures, at most 80,000 records a second (tiny writes pay
/// `CAPTURE_MIN_COST_MILLI`); far above what a holder that is not flooding
/// writes, far below what the agent drains (~1 GB/s scanned, ~480,000
/// events a CPU-second).
pub const DEFAULT_CAPTURE_RATE: u32 = 10_000;

/// Default ring buffer size (`ring_bytes`).
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;

/// The ring buffer the kernel gets for `ring_bytes`: a power of two, at
/// least 64 KiB (computed in 64 bits: an out-of-bounds value, refused
/// later by the settings check, does not overflow here).
pub fn ring_size(ring_bytes: u32) -> u64 {
    (ring_bytes as u64).next_power_of_two().max(1 << 16)
}

/// Bytes one full capture (a token of the capture budget) takes in the
/// ring: `capture_bytes` of data and the record's headers.
pub fn full_capture_bytes(capture_bytes: u32) -> u64 {
    capture_bytes.min(MAX_CAPTURE as u32) as u64 + CAPTURE_RECORD_OVERHEAD
}

/// The default `capture_burst`, in full captures: half the ring buffer, so
/// one holder's burst within budget leaves the other half to everyone else
/// however large its writes, and at most twice a limited rate (the old
/// default, which smaller rates keep). At defaults: 1,974 (8 MiB of a
/// 16 MiB ring).
pub fn default_capture_burst(rate: u32, ring_bytes: u32, capture_bytes: u32) -> u32 {
    let half = ring_size(ring_bytes) / 2 / full_capture_bytes(capture_bytes);
    let burst = if rate > 0 {
        half.min(rate as u64 * 2)
    } else {
        half
    };
    burst.clamp(1, u32::MAX as u64) as u32
}

/// What the operator can tune about the kernel side.
#[derive(Clone, Debug)]
pub struct SensorOptions {
    pub capture_bytes: u32,
    /// Bytes captured of one write by a tracked process, in chunk records
    /// after the first `capture_bytes` (at most `capture_bytes`: no chunks).
    pub capture_write_bytes: u32,
    pub argv_bytes: u32,
    pub env_bytes: u32,
    pub ring_bytes: u32,
    /// Full captures (`capture_bytes` of data with the record's header) a
    /// second per tracked process (0: no limit); a record pays for what it
    /// carries (`monitor_common::capture_cost_milli`).
    pub capture_rate: u32,
    /// Most full captures in a burst per tracked process (default:
    /// [`default_capture_burst`], half the ring).
    pub capture_burst: u32,
    pub capture_new_conns: bool,
    pub exec_all: bool,
    pub btf_path: PathBuf,
    /// libc for the getenv uprobes; found from our own mappings when unset.
    pub libc: Option<PathBuf>,
    /// Keep the capture programs attached even without a tracked process
    /// (default: attached on demand, see [`Sensors::set_capture`]).
    pub capture_always: bool,
}

impl Default for SensorOptions {
    fn default() -> Self {
        Self {
            capture_bytes: DEFAULT_CAPTURE,
            capture_write_bytes: DEFAULT_WRITE_CAPTURE,
            argv_bytes: DEFAULT_ARGV_BYTES,
            env_bytes: DEFAULT_ENV_BYTES,
            ring_bytes: DEFAULT_RING_BYTES,
            capture_rate: DEFAULT_CAPTURE_RATE,
            capture_burst: default_capture_burst(
                DEFAULT_CAPTURE_RATE,
                DEFAULT_RING_BYTES,
                DEFAULT_CAPTURE,
            ),
            capture_new_conns: true,
            exec_all: true,
            btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
            libc: None,
            capture_always: false,
        }
    }
}

/// Outcome of loading and attaching one probe.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub probe: &'static Probe,
    /// Loaded and attachable (it attached once at start).
    pub available: bool,
    /// Attached now (a capture program is detached while no tracked
    /// process is alive, see [`Sensors::set_capture`]).
    pub attached: bool,
    pub error: Option<String>,
}

/// The link of an attached probe (dropping the program's link detaches it).
#[derive(Debug)]
enum Link {
    Tp(TracePointLinkId),
    Up(UProbeLinkId),
}

/// Everything the kernel side needs before load, found without loading.
#[derive(Clone, Debug)]
pub struct Preflight {
    pub tracefs: PathBuf,
    pub offsets: Result<KernelOffsets, String>,
    pub tp: monitor_common::TracepointOffsets,
    /// Where the io_uring programs read requests; an error says why
    /// io_uring is not covered on this kernel.
    pub uring: Result<UringOffsets, String>,
}

/// Mount tracefs if needed, read BTF offsets and tracepoint layouts.
pub fn preflight(opts: &SensorOptions) -> Result<Preflight> {
    let tracefs = crate::host::ensure_tracefs().context("tracefs")?;
    let offsets = btf::Btf::from_file(&opts.btf_path)
        .map_err(|e| e.to_string())
        .and_then(|b| btf::kernel_offsets(&b).map_err(|e| e.to_string()));
    let tp = tp_format::tracepoint_offsets(&tracefs).context("tracepoint formats")?;
    let uring = uring_offsets(&tracefs, &opts.btf_path);
    Ok(Preflight {
        tracefs,
        offsets,
        tp,
        uring,
    })
}

/// io_uring coverage: the tracepoints' formats and the request structs'
/// layout (BTF). Any part missing: the io_uring programs stay idle.
fn uring_offsets(tracefs: &Path, btf_path: &Path) -> Result<UringOffsets, String> {
    if !tracefs.join("events/io_uring").exists() {
        return Err("no io_uring tracepoints in this kernel".into());
    }
    let btf = btf::Btf::from_file(btf_path).map_err(|e| format!("BTF: {e}"))?;
    let mut u = btf::uring_offsets(&btf).map_err(|e| format!("BTF: {e}"))?;
    tp_format::uring_tracepoint_offsets(tracefs, &mut u).map_err(|e| e.to_string())?;
    u.valid = 1;
    Ok(u)
}

/// Per-CPU counters summed, plus the per-CPU ring-buffer losses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub ringbuf_full: u64,
    pub ringbuf_full_per_cpu: Vec<u64>,
    pub lost_by_kind: Vec<(u32, u64)>,
    pub map_full: u64,
    pub read_user_failed: u64,
    pub kernel_walk_failed: u64,
    pub emitted: u64,
    pub captured_bytes: u64,
}

pub struct Sensors {
    ebpf: Ebpf,
    _tails: ProgramArray<MapData>,
    pub status: Vec<ProbeStatus>,
    pub preflight: Preflight,
    watched: BpfHashMap<MapData, InodeKey, WatchValue>,
    procs: BpfHashMap<MapData, u32, TrackedProc>,
    fds: BpfHashMap<MapData, FdKey, TrackedFd>,
    counters: PerCpuArray<MapData, u64>,
    budgets: BpfHashMap<MapData, u32, CaptureBudget>,
    ring: Option<RingBuf<MapData>>,
    /// The programs' error-path log (see [`ebpf_log`]), until the agent
    /// takes it to drain it.
    ebpf_log: Option<ebpf_log::Logger>,
    /// Why the error-path log is off, when it is (`monitor check`).
    pub ebpf_log_error: Option<String>,
    /// TLS programs that did not load (`program`, error): `monitor check`.
    pub tls_load_errors: Vec<(&'static str, String)>,
    /// TLS library files tried and attached (see [`tls`]).
    pub tls: tls::TlsFiles,
    /// Per row of `status`, its link while attached.
    links: Vec<Option<Link>>,
    libc: Option<PathBuf>,
    /// The capture programs are attached (see [`Sensors::set_capture`]).
    capture_on: bool,
    pub capture_always: bool,
    /// First bytes of every new outbound connection are captured
    /// (`capture_new_connections`): a replay by a process that never held
    /// the secret needs the capture programs while a secret is known.
    pub capture_new_conns: bool,
    /// Times the capture programs were attached or detached since start.
    pub capture_switches: u64,
}

impl Sensors {
    /// Load and attach. Fails when a required probe cannot attach.
    pub fn load(opts: &SensorOptions) -> Result<Self> {
        let pre = preflight(opts)?;
        bump_memlock_rlimit();
        let offsets = match &pre.offsets {
            Ok(o) => *o,
            Err(e) => {
                tracing::warn!(
                    "kernel struct offsets unavailable ({e}): file and socket details off"
                );
                KernelOffsets::default()
            }
        };
        let cfg = Config {
            agent_tgid: std::process::id(),
            capture_bytes: opts.capture_bytes.min(MAX_CAPTURE as u32),
            argv_bytes: opts.argv_bytes.min(MAX_EXEC_DATA as u32 / 2),
            env_bytes: opts.env_bytes.min(MAX_EXEC_DATA as u32 / 2),
            capture_new_conns: opts.capture_new_conns as u32,
            exec_all: opts.exec_all as u32,
            capture_rate: opts.capture_rate,
            capture_burst: opts.capture_burst,
            capture_write_bytes: opts.capture_write_bytes.min(MAX_WRITE_CAPTURE),
            offsets,
            tp: pre.tp,
            // Without the file walk (offsets) the requests' files are unknown.
            uring: match (&pre.uring, pre.offsets.is_ok()) {
                (Ok(u), true) => *u,
                (Err(e), _) => {
                    tracing::warn!("io_uring not covered: {e}");
                    UringOffsets::default()
                }
                (Ok(_), false) => UringOffsets::default(),
            },
        };
        if let Some(w) = crate::settings::capture_burst_warning(opts) {
            tracing::warn!("{w}");
        }
        // At most 1 GiB (the settings check).
        let ring = ring_size(opts.ring_bytes).min(1 << 30) as u32;
        let mut ebpf = EbpfLoader::new()
            .override_global(CONFIG_GLOBAL, &cfg, true)
            .map_max_entries(maps::EVENTS, ring)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        // The programs' error-path log: without it the agent runs on, the
        // failures still counted.
        let (ebpf_log, ebpf_log_error) = match ebpf_log::init(&mut ebpf) {
            Ok(l) => (Some(l), None),
            Err(e) => {
                tracing::warn!("eBPF error-path log off: {e}");
                (None, Some(e.to_string()))
            }
        };

        // Tail-call targets first, so no write record goes out without its
        // path once the write programs run.
        let tails = load_tails(&mut ebpf).context("tail-call programs")?;
        let libc = opts.libc.clone().or_else(find_libc);
        let mut status = Vec::new();
        let mut links = Vec::new();
        // Every probe is attached once, so a capture program that cannot
        // attach is known at start (and a required one refuses the start);
        // without `capture_always` the capture programs are detached again
        // below until a tracked process appears.
        for probe in PROBES {
            let r = attach(&mut ebpf, probe, &pre, libc.as_deref());
            status.push(ProbeStatus {
                probe,
                available: r.is_ok(),
                attached: r.is_ok(),
                error: r.as_ref().err().map(|e| short_error(&format!("{e:#}"))),
            });
            links.push(r.ok());
        }
        let missing: Vec<String> = status
            .iter()
            .filter(|s| s.probe.required && !s.attached)
            .map(|s| format!("{}: {}", s.probe.program, s.error.as_deref().unwrap_or("?")))
            .collect();
        if !missing.is_empty() {
            bail!("required probes did not attach: {}", missing.join("; "));
        }

        // TLS programs: loaded now (verified once), attached per library
        // file when a tracked process maps one.
        let mut tls_load_errors = Vec::new();
        for p in tls::TLS_PROBES {
            let r = ebpf
                .program_mut(p.program)
                .with_context(|| format!("program {} missing", p.program))
                .and_then(|prog| {
                    let up: &mut UProbe = prog.try_into()?;
                    up.load()
                        .map_err(|e| anyhow::anyhow!(short_error(&format!("{e:#}"))))
                });
            if let Err(e) = r {
                tracing::warn!("tls program {} not loaded: {e:#}", p.program);
                tls_load_errors.push((p.program, format!("{e:#}")));
            }
        }

        let watched = take_hash(&mut ebpf, maps::WATCHED_INODES)?;
        let procs = take_hash(&mut ebpf, maps::TRACKED_PROCS)?;
        let fds = take_hash(&mut ebpf, maps::TRACKED_FDS)?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, maps::COUNTERS)?)?;
        let budgets = take_hash(&mut ebpf, maps::CAPTURE_BUDGET)?;
        // Start-up's heap peak (BTF, ELF relocation) back to the kernel
        // before the ring buffer's pages are mapped.
        crate::host::release_free_heap();
        let ring = Some(RingBuf::try_from(take(&mut ebpf, maps::EVENTS)?)?);
        let mut s = Self {
            ebpf,
            _tails: tails,
            status,
            preflight: pre,
            watched,
            procs,
            fds,
            counters,
            budgets,
            ring,
            ebpf_log,
            ebpf_log_error,
            tls_load_errors,
            tls: tls::TlsFiles::default(),
            links,
            libc,
            capture_on: true,
            capture_always: opts.capture_always,
            capture_new_conns: opts.capture_new_conns,
            capture_switches: 0,
        };
        if !opts.capture_always {
            s.set_capture(false);
            s.capture_switches = 0;
        }
        Ok(s)
    }

    /// Attach (`on`) or detach the capture programs (every probe but the
    /// lifecycle ones, see [`Probe::lifecycle`]). Returns whether anything
    /// changed. A probe that fails to attach again is logged and left out
    /// (its status says why).
    pub fn set_capture(&mut self, on: bool) -> bool {
        if on == self.capture_on {
            return false;
        }
        let libc = self.libc.clone();
        for (i, st) in self.status.iter_mut().enumerate() {
            if st.probe.lifecycle() || !st.available {
                continue;
            }
            if on && self.links[i].is_none() {
                match attach(&mut self.ebpf, st.probe, &self.preflight, libc.as_deref()) {
                    Ok(l) => {
                        self.links[i] = Some(l);
                        st.attached = true;
                        st.error = None;
                    }
                    Err(e) => {
                        let e = short_error(&format!("{e:#}"));
                        tracing::warn!("capture probe {} not attached: {e}", st.probe.program);
                        st.error = Some(e);
                    }
                }
            } else if !on {
                if let Some(l) = self.links[i].take() {
                    if let Err(e) = detach(&mut self.ebpf, st.probe, l) {
                        tracing::warn!("capture probe {} not detached: {e:#}", st.probe.program);
                    }
                }
                st.attached = false;
            }
        }
        self.capture_on = on;
        self.capture_switches += 1;
        true
    }

    /// Whether the capture programs are attached.
    pub fn capture_attached(&self) -> bool {
        self.capture_on
    }

    /// Attach the TLS probes that `file` (reached at `host_path`, named
    /// `path` by the process) has, once per file (another name for a file
    /// already attached gets its record). `None`: no TLS write function.
    pub fn attach_tls(
        &mut self,
        host_path: &Path,
        path: &str,
        candidate: tls::Candidate,
    ) -> Option<tls::Attached> {
        // Held open while attaching: the process (and its /proc/<pid>/root
        // path) may be gone by the next probe; the file is not.
        let file = std::fs::File::open(host_path).ok()?;
        let held = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ));
        let (key, new) = self.tls.try_once(&held)?;
        if !new {
            return self.tls.attached.get(&key).cloned();
        }
        let mut functions = Vec::new();
        let mut lib = None;
        for p in tls::probes_for(candidate) {
            if self.tls_load_errors.iter().any(|(n, _)| *n == p.program) {
                continue;
            }
            let Some(prog) = self.ebpf.program_mut(p.program) else {
                continue;
            };
            let Ok(up) = <&mut UProbe>::try_from(prog) else {
                continue;
            };
            match up.attach(
                p.symbol,
                &held,
                aya::programs::uprobe::UProbeScope::AllProcesses,
            ) {
                Ok(_) => {
                    functions.push(p.symbol);
                    lib = Some(p.lib);
                }
                Err(e) => {
                    if candidate != tls::Candidate::Executable {
                        tracing::warn!(
                            "tls: {path}: {} not attached: {:#}",
                            p.symbol,
                            anyhow::Error::from(e)
                        );
                    } else {
                        tracing::debug!("tls: {path}: no {}: {e}", p.symbol);
                    }
                }
            }
        }
        let a = tls::Attached {
            lib: lib?,
            path: path.to_string(),
            functions,
        };
        tracing::info!(
            "tls: attached {} probes to {path} ({})",
            a.lib.name(),
            a.functions.join(", ")
        );
        self.tls.attached.insert(key, a.clone());
        Some(a)
    }

    /// A tracked process's TLS libraries and executable, the first time it
    /// is seen (again after an exec: [`tls::TlsFiles::forget`]).
    pub fn scan_tls(&mut self, host_proc: &Path, pid: u32) {
        if !self.tls.first_look(pid) {
            return;
        }
        let dir = host_proc.join(pid.to_string());
        let Ok(maps) = std::fs::read_to_string(dir.join("maps")) else {
            return;
        };
        for (path, lib) in tls::mapped_libraries(&maps) {
            let hp = tls::host_path(host_proc, pid, &path);
            self.attach_tls(&hp, &path, tls::Candidate::Library(lib));
        }
        // Go programs and static OpenSSL/BoringSSL builds: the executable.
        if let Ok(exe) = std::fs::read_link(dir.join("exe")) {
            let exe = exe.display().to_string();
            self.attach_tls(&dir.join("exe"), &exe, tls::Candidate::Executable);
        }
    }

    /// The event ring buffer (taken once, by the observer).
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The programs' error-path log (taken once, by the agent's loop).
    pub fn take_ebpf_log(&mut self) -> Option<ebpf_log::Logger> {
        self.ebpf_log.take()
    }

    pub fn attached(&self) -> usize {
        self.status.iter().filter(|s| s.attached).count()
    }

    /// Probes that loaded and attach (attached now or on demand).
    pub fn available(&self) -> usize {
        self.status.iter().filter(|s| s.available).count()
    }

    pub fn watch_inode(&mut self, key: InodeKey, value: WatchValue) -> Result<()> {
        self.watched
            .insert(key, value, 0)
            .with_context(|| format!("watching inode {}:{}", key.dev, key.ino))
    }

    pub fn unwatch_inode(&mut self, key: &InodeKey) {
        let _ = self.watched.remove(key);
    }

    pub fn track_pid(&mut self, pid: u32, reason: u32) -> Result<()> {
        let v = match self.procs.get(&pid, 0) {
            Ok(mut old) => {
                old.reason |= reason;
                old
            }
            Err(_) => TrackedProc { reason, inherit: 1 },
        };
        self.procs
            .insert(pid, v, 0)
            .with_context(|| format!("tracking pid {pid}"))
    }

    pub fn untrack_pid(&mut self, pid: u32) {
        let _ = self.procs.remove(&pid);
    }

    pub fn is_tracked(&self, pid: u32) -> bool {
        self.procs.get(&pid, 0).is_ok()
    }

    pub fn tracked_pids(&self) -> Vec<u32> {
        self.procs.keys().filter_map(|k| k.ok()).collect()
    }

    /// Mirror a tracked descriptor (fork inheritance is done by the agent).
    pub fn track_fd(&mut self, key: FdKey, value: TrackedFd) -> Result<()> {
        self.fds
            .insert(key, value, 0)
            .with_context(|| format!("tracking fd {} of pid {}", key.fd, key.tgid))
    }

    pub fn untrack_fd(&mut self, key: &FdKey) {
        let _ = self.fds.remove(key);
    }

    /// Every tracked process's capture budget and losses (see
    /// [`CaptureBudget`]).
    pub fn capture_budgets(&self) -> Vec<(u32, CaptureBudget)> {
        self.budgets.iter().filter_map(|r| r.ok()).collect()
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let slot = |i: u32| -> Result<Vec<u64>> {
            Ok(self.counters.get(&i, 0)?.iter().copied().collect())
        };
        let sum = |i: u32| -> Result<u64> { Ok(slot(i)?.iter().sum()) };
        let mut c = KernelCounters {
            ringbuf_full_per_cpu: slot(Counter::RingbufFull as u32)?,
            map_full: sum(Counter::MapFull as u32)?,
            read_user_failed: sum(Counter::ReadUserFailed as u32)?,
            kernel_walk_failed: sum(Counter::KernelWalkFailed as u32)?,
            emitted: sum(Counter::Emitted as u32)?,
            captured_bytes: sum(Counter::CapturedBytes as u32)?,
            ..Default::default()
        };
        c.ringbuf_full = c.ringbuf_full_per_cpu.iter().sum();
        for kind in 1..(COUNTER_SLOTS - LOST_BY_KIND_BASE) {
            let n = sum(LOST_BY_KIND_BASE + kind)?;
            if n > 0 {
                c.lost_by_kind.push((kind, n));
            }
        }
        Ok(c)
    }

    /// Names of the maps in the loaded object (for self-checks).
    pub fn program_names(&self) -> Vec<String> {
        self.ebpf.programs().map(|(n, _)| n.to_string()).collect()
    }
}

/// A verifier log is hundreds of lines: keep the verdict (the lines before
/// the closing statistics).
fn short_error(e: &str) -> String {
    match e.split_once("Verifier output:") {
        Some((head, log)) => {
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let stats = lines
                .iter()
                .position(|l| l.starts_with("verification time") || l.starts_with("processed "))
                .unwrap_or(lines.len());
            let verdict = lines[stats.saturating_sub(2)..stats].join(" | ");
            format!("{head}verifier: {verdict}")
        }
        None => e.to_string(),
    }
}

/// Load the programs reached by tail call and put them in `TAILS`.
fn load_tails(ebpf: &mut Ebpf) -> Result<ProgramArray<MapData>> {
    let mut fds = Vec::new();
    for (slot, name) in [
        (TAIL_WRITE_PATH, WRITE_PATH_PROGRAM),
        (TAIL_WRITE_CHUNKS, WRITE_CHUNKS_PROGRAM),
    ] {
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing"))?
            .try_into()?;
        prog.load()
            .map_err(|e| anyhow::anyhow!(short_error(&format!("{e:#}"))))
            .with_context(|| format!("loading {name}"))?;
        fds.push((slot, prog.fd()?.try_clone()?));
    }
    let mut tails = ProgramArray::try_from(take(ebpf, maps::TAILS)?)?;
    for (slot, fd) in &fds {
        tails.set(*slot, fd, 0)?;
    }
    Ok(tails)
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<BpfHashMap<MapData, K, V>> {
    Ok(BpfHashMap::try_from(take(ebpf, name)?)?)
}

fn attach(ebpf: &mut Ebpf, probe: &Probe, pre: &Preflight, libc: Option<&Path>) -> Result<Link> {
    if probe.needs_btf && pre.offsets.is_err() {
        // Still attach: the program runs with the walk disabled.
        tracing::debug!("{} runs without kernel struct offsets", probe.program);
    }
    let prog = ebpf
        .program_mut(probe.program)
        .with_context(|| format!("program {} missing from the eBPF object", probe.program))?;
    match probe.attach {
        Attach::Tracepoint { category, name } => {
            if category == "syscalls" {
                tp_format::syscall_tracepoint_ok(&pre.tracefs, name)?;
            } else if !pre
                .tracefs
                .join("events")
                .join(category)
                .join(name)
                .exists()
            {
                bail!("tracepoint {category}/{name} not in this kernel");
            }
            let tp: &mut TracePoint = prog.try_into()?;
            if tp.fd().is_err() {
                tp.load()?;
            }
            Ok(Link::Tp(tp.attach(category, name)?))
        }
        Attach::Uprobe { symbol } => {
            let libc = libc.context("libc not found (no getenv uprobe)")?;
            let up: &mut UProbe = prog.try_into()?;
            if up.fd().is_err() {
                up.load()?;
            }
            Ok(Link::Up(up.attach(
                symbol,
                libc,
                aya::programs::uprobe::UProbeScope::AllProcesses,
            )?))
        }
    }
}

/// Detach one probe (its program stays loaded).
fn detach(ebpf: &mut Ebpf, probe: &Probe, link: Link) -> Result<()> {
    let prog = ebpf
        .program_mut(probe.program)
        .with_context(|| format!("program {} missing", probe.program))?;
    match link {
        Link::Tp(id) => <&mut TracePoint>::try_from(prog)?.detach(id)?,
        Link::Up(id) => <&mut UProbe>::try_from(prog)?.detach(id)?,
    }
    Ok(())
}

/// The libc this agent runs with: the same file the host's processes map.
fn find_libc() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            let name = p.rsplit('/').next().unwrap_or("");
            name.starts_with("libc.so") || name.starts_with("libc-")
        })
        .map(PathBuf::from)
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn bump_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}
