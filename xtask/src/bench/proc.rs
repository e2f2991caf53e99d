//! Child processes for the benchmarks: started with piped stdio, read line
//! by line in the background, stopped by signal on drop (by pid: only
//! processes this run started), and measured from `/proc/<pid>`.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Smoke runs do not wait for stopped probe holders to finish exiting
/// (closing dozens of attached perf events takes the kernel seconds); the
/// figures of a smoke run are not meaningful anyway. Full runs wait, so no
/// measurement starts with another configuration's programs still attached.
static BACKGROUND_REAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_background_reap(on: bool) {
    BACKGROUND_REAP.store(on, std::sync::atomic::Ordering::Relaxed);
}

use crate::util::display;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

/// Send `sig` to `pid` (a process this run started).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid as i32, sig) };
}

/// Lines a child wrote, collected by a background thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub fn collect(src: impl Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let l = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(src).lines() {
                let Ok(line) = line else { break };
                l.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn find(&self, needle: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// The first line from index `*from` on that contains `needle`;
    /// `*from` then moves past what was searched. A poll of a long-running
    /// child's output stays cheap however much it wrote: the lock is held
    /// for the new lines only, so the reader thread (and the child writing
    /// to its pipe) are not held up.
    pub fn find_since(&self, needle: &str, from: &mut usize) -> Option<String> {
        let v = self.0.lock().unwrap();
        let start = (*from).min(v.len());
        *from = v.len();
        v[start..].iter().find(|l| l.contains(needle)).cloned()
    }

    pub fn tail(&self, n: usize) -> String {
        let v = self.0.lock().unwrap();
        v[v.len().saturating_sub(n)..].join("\n")
    }
}

/// A started child; stopped with `stop_signal` (then SIGKILL) when dropped.
pub struct Proc {
    pub what: String,
    child: Child,
    pub pid: u32,
    pub stdin: Option<ChildStdin>,
    pub out: Lines,
    pub err: Lines,
    pub stop_signal: i32,
}

impl Proc {
    /// Start `cmd` with stdin/stdout/stderr piped (stdout/stderr collected).
    pub fn spawn(what: &str, cmd: &mut Command) -> Result<Proc> {
        Self::spawn_stdin(what, cmd, Stdio::piped())
    }

    /// Like [`Proc::spawn`] with the given stdin.
    pub fn spawn_stdin(what: &str, cmd: &mut Command, stdin: Stdio) -> Result<Proc> {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {what}: {}", display(cmd)))?;
        let out = Lines::collect(child.stdout.take().expect("piped stdout"));
        let err = Lines::collect(child.stderr.take().expect("piped stderr"));
        let pid = child.id();
        Ok(Proc {
            what: what.to_string(),
            stdin: child.stdin.take(),
            child,
            pid,
            out,
            err,
            stop_signal: SIGTERM,
        })
    }

    /// Start `cmd` whose stdout is taken by the caller (e.g. to feed it to
    /// another process); stderr is collected.
    pub fn spawn_raw_stdout(
        what: &str,
        cmd: &mut Command,
    ) -> Result<(Proc, std::process::ChildStdout)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {what}: {}", display(cmd)))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let err = Lines::collect(child.stderr.take().expect("piped stderr"));
        let pid = child.id();
        Ok((
            Proc {
                what: what.to_string(),
                stdin: None,
                child,
                pid,
                out: Lines::default(),
                err,
                stop_signal: SIGTERM,
            },
            stdout,
        ))
    }

    /// Wait until stdout (or stderr) has a line containing `needle`.
    pub fn wait_line(&mut self, needle: &str, stderr: bool, timeout: Duration) -> Result<String> {
        let t0 = Instant::now();
        loop {
            let lines = if stderr { &self.err } else { &self.out };
            if let Some(l) = lines.find(needle) {
                return Ok(l);
            }
            if let Some(st) = self.child.try_wait()? {
                // Let the readers take the last lines.
                thread::sleep(Duration::from_millis(100));
                let lines = if stderr { &self.err } else { &self.out };
                if let Some(l) = lines.find(needle) {
                    return Ok(l);
                }
                bail!(
                    "{} exited ({st}) before printing {needle:?}; stderr:\n{}",
                    self.what,
                    self.err.tail(20)
                );
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}; stderr:\n{}",
                    self.what,
                    self.err.tail(20)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin not piped")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Wait for exit (after closing stdin); errors on a non-zero exit.
    pub fn finish(mut self, timeout: Duration) -> Result<Lines> {
        self.stdin = None;
        let st = self.wait_timeout(timeout)?;
        thread::sleep(Duration::from_millis(20));
        if !st.success() {
            bail!(
                "{} failed ({st}); stderr:\n{}",
                self.what,
                self.err.tail(20)
            );
        }
        Ok(self.out.clone())
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if t0.elapsed() > timeout {
                signal(self.pid, SIGKILL);
                let _ = self.child.wait();
                bail!("{} did not finish within {timeout:?}", self.what);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Send `sig`, then wait for the exit (SIGKILL after `timeout`), or in
    /// a smoke run let a thread do the waiting.
    pub fn end(mut self, sig: i32, timeout: Duration) -> Result<()> {
        self.stdin = None;
        signal(self.pid, sig);
        if BACKGROUND_REAP.load(std::sync::atomic::Ordering::Relaxed) {
            thread::spawn(move || {
                let _ = self.wait_timeout(timeout);
            });
            return Ok(());
        }
        self.wait_timeout(timeout).map(|_| ())
    }

    /// Signal, wait (SIGKILL after `timeout`), return the exit status.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            return Ok(st);
        }
        signal(self.pid, self.stop_signal);
        let st = self.wait_timeout(timeout)?;
        // Let the readers take the last lines.
        thread::sleep(Duration::from_millis(50));
        Ok(st)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stdin = None;
            signal(self.pid, self.stop_signal);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            signal(self.pid, SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_secs(pid: u32, tck: f64) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = &stat[stat.rfind(')').context("no ) in stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / tck)
}

/// Memory figures of `pid` from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub hwm_kib: u64,
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub shmem_kib: u64,
    /// Of RSS: mappings of BPF maps (the ring buffer, whose data pages the
    /// kernel maps twice for wrap-around), from `/proc/<pid>/smaps`.
    pub bpf_map_kib: u64,
}

pub fn mem(pid: u32) -> Result<Mem> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let get = |k: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut bpf_map_kib = 0;
    let mut in_bpf = false;
    for l in fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_default()
        .lines()
    {
        let mut it = l.split_whitespace();
        match it.next() {
            Some(range) if range.contains('-') && !range.ends_with(':') => {
                in_bpf = l.contains("anon_inode:bpf-map");
            }
            Some("Rss:") if in_bpf => {
                bpf_map_kib += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(Mem {
        bpf_map_kib,
        hwm_kib: get("VmHWM:"),
        rss_kib: get("VmRSS:"),
        anon_kib: get("RssAnon:"),
        file_kib: get("RssFile:"),
        shmem_kib: get("RssShmem:"),
    })
}

/// `key=value` from a workload's output line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

pub fn field_f64(line: &str, key: &str) -> Result<f64> {
    field(line, key)
        .with_context(|| format!("no {key}= in {line:?}"))?
        .parse()
        .with_context(|| format!("{key}= in {line:?} is not a number"))
}

/// Run a command quietly; errors with its stderr on failure.
pub fn quiet(cmd: &mut Command) -> Result<String> {
    crate::util::stdout(cmd)
}

/// Idle processes (`sleep`), killed by pid when dropped.
#[derive(Default)]
pub struct Sleepers(pub Vec<Child>);

impl Sleepers {
    /// `sleep 1000000` with exactly `env` (plus PATH).
    pub fn spawn(&mut self, env: &[(String, String)]) -> Result<u32> {
        let child = Command::new("sleep")
            .arg("1000000")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sleep")?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// A loopback port free now, below the kernel's ephemeral range: a port
/// from bind(0) may be taken as the source port of a route connection
/// (NATS servers) before the server that was given it binds it.
pub fn free_port() -> Result<u16> {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 10_000;
    let low: u32 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = low.saturating_sub(BASE);
    if span < 1_000 {
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (seed + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port from {BASE} to {low}")
}

/// Whether a process whose name (`comm`) is `name` is running (zombies
/// included: not yet reaped).
pub fn named(name: &str) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
}
