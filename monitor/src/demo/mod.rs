//! `monitor demo`: a self-contained scenario on this machine that shows
//! every rule firing, then the secret's timeline.
//!
//! It starts a real agent (`monitor run`, its own config, database, alerts
//! file and API socket in a scratch directory; watch and discovery limited
//! to that directory), writes a random secret into a delivery file there,
//! starts a holder process with the secret in its environment, issues the
//! secret to it (short TTL, one allowed loopback destination) and then
//! drives real processes, one step per rule: coreutils (`cat`, `cp`, `sh`,
//! `true`) where they can do it, otherwise the `monitor` binary itself
//! re-executed as a hidden actor ([`actor`]). Network traffic only goes to
//! two loopback listeners the demo opens. Alerts are printed as they arrive
//! in the agent's alerts file; at the end the agent is stopped (SIGTERM, so
//! the store is flushed), the rules that fired are tabled, and the timeline
//! is rendered from the store ([`crate::query::timeline_to`]).
//!
//! The secret is never printed, and the scratch directory (delivery file,
//! copy, database, alerts) is removed at the end, on error and on
//! Ctrl-C/SIGTERM; `--keep DIR` puts the database and alerts in `DIR`
//! instead, for `monitor query --db`.
pub mod actor;

use std::{
    ffi::OsString,
    fs::{DirBuilder, OpenOptions},
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::{
        fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicI32, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use clap::Args;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::{
    api::client::{issue_record, request, IssueArgs},
    correlate::{
        alert::Alert,
        rules::{Rule, ALL_RULES},
    },
    query::{timeline_to, TimelineArgs, TimelineFormat},
    store::timeline::clean,
};

/// Testing hook: the secret value to use instead of a random one (so a
/// test can search everything the demo wrote for it). Removed from the
/// environment before any child starts.
pub const SECRET_ENV: &str = "MONITOR_DEMO_SECRET";
/// The demo secret's id.
pub const SECRET_ID: &str = "demo-db-password";
/// The variable the holder is started with the secret in.
const HOLDER_ENV: &str = "DEMO_DB_PASSWORD";
/// The variable the secret leaks into for `secret.env.propagated`.
const LEAK_ENV: &str = "LEAKED_DB_PASSWORD";
/// The demo secret's lifetime: long enough for the steps before expiry.
const TTL: Duration = Duration::from_secs(8);
/// Time allowed for the agent to load its probes.
const AGENT_START: Duration = Duration::from_secs(90);
/// Time allowed for the agent to flush and exit after SIGTERM.
const AGENT_STOP: Duration = Duration::from_secs(30);
/// Time allowed for one actor (or the holder's answer to a command).
const CHILD_TIMEOUT: Duration = Duration::from_secs(15);
/// PATH of the processes the demo starts.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The steps, for the `[n/N]` counter.
const STEPS: usize = 11;

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DemoArgs {
    /// Keep the demo's database and alerts in DIR (DIR/demo.db,
    /// DIR/alerts.jsonl) for `monitor query --db` and `monitor timeline
    /// --db` afterwards; everything else is removed.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// How long each step waits for its alert.
    #[arg(long, value_name = "DUR", default_value = "15s")]
    pub timeout: String,
}

// ---------------------------------------------------------------- signals

/// The signal that asked the demo to stop (0: none).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP only set [`STOP`]: every wait of the demo
/// polls it, and the clean-up runs on the way out.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

#[derive(Debug)]
struct Interrupted(i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

fn check_stop() -> Result<()> {
    match STOP.load(Ordering::SeqCst) {
        0 => Ok(()),
        sig => Err(Interrupted(sig).into()),
    }
}

/// Sleep `d`, waking early (with an error) when asked to stop.
fn nap(d: Duration) -> Result<()> {
    check_stop()?;
    thread::sleep(d);
    check_stop()
}

// ---------------------------------------------------------------- helpers

/// The demo's secret: [`SECRET_ENV`] if set (and then removed from the
/// environment), else 24 random bytes as unpadded base64url (32 chars).
fn take_secret() -> Result<Zeroizing<String>> {
    let supplied = std::env::var_os(SECRET_ENV);
    if supplied.is_some() {
        // Before any thread or child: nothing inherits it.
        std::env::remove_var(SECRET_ENV);
    }
    secret_from(supplied)
}

fn secret_from(supplied: Option<OsString>) -> Result<Zeroizing<String>> {
    if let Some(v) = supplied {
        let v = Zeroizing::new(
            v.into_string()
                .map_err(|_| anyhow!("{SECRET_ENV} is not UTF-8"))?,
        );
        check_secret(&v)?;
        return Ok(v);
    }
    use base64::Engine;
    let mut raw = Zeroizing::new([0u8; 24]);
    getrandom::fill(raw.as_mut()).map_err(|e| anyhow!("random secret: {e}"))?;
    Ok(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref()),
    ))
}

/// A supplied secret must survive a file, an argv and an environment
/// unchanged, and be long enough to be fingerprinted.
fn check_secret(v: &str) -> Result<()> {
    if !(16..=256).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{SECRET_ENV} must be 16 to 256 printable ASCII characters without spaces");
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `name` on PATH (or in /usr/bin, /bin).
fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| CHILD_PATH.into());
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| anyhow!("`{name}` not found on PATH (the demo uses coreutils and sh)"))
}

/// The coreutils the demo drives.
struct Tools {
    cat: PathBuf,
    cp: PathBuf,
    sh: PathBuf,
    true_: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools> {
        Ok(Tools {
            cat: which("cat")?,
            cp: which("cp")?,
            sh: which("sh")?,
            true_: which("true")?,
        })
    }
}

/// A child of the demo: a clean environment, its own process group (a
/// Ctrl-C reaches only the demo, which then stops it), and a signal when
/// the demo dies without cleaning up.
fn command(program: &Path, death_signal: libc::c_int) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", CHILD_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if t0.elapsed() > limit {
            return Ok(None);
        }
        if STOP.load(Ordering::SeqCst) != 0 {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a short-lived actor to the end (killing it after
/// [`CHILD_TIMEOUT`]); `stdin` is written to it first. Returns its pid.
fn run_actor(mut cmd: Command, what: &str, stdin: Option<&[u8]>) -> Result<u32> {
    cmd.stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    if let Some(bytes) = stdin {
        let mut w = child.stdin.take().expect("piped stdin");
        let _ = w.write_all(bytes);
    }
    let status = match wait_timeout(&mut child, CHILD_TIMEOUT)? {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            check_stop()?;
            bail!("{what} did not finish within {}s", CHILD_TIMEOUT.as_secs());
        }
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let line = err.lines().last().unwrap_or("").trim().to_string();
        bail!("{what} exited with {status}: {}", clean(&line));
    }
    Ok(pid)
}

/// A loopback listener that takes every connection and throws its bytes
/// away.
fn listener() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("opening a loopback listener")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            buf.zeroize();
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------- scratch

/// The demo's private directory (mode 0700), removed with everything in it
/// on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn create() -> Result<Scratch> {
        let mut r = [0u8; 4];
        getrandom::fill(&mut r).map_err(|e| anyhow!("random name: {e}"))?;
        let dir =
            std::env::temp_dir().join(format!("monitor-demo-{}-{}", std::process::id(), hex(&r)));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("monitor: could not remove {}: {e}", self.dir.display());
            }
        }
    }
}

// ---------------------------------------------------------------- agent

/// The agent, `monitor run`, as a child.
struct AgentProc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl AgentProc {
    fn start(exe: &Path, args: &[OsString]) -> Result<AgentProc> {
        let mut cmd = command(exe, libc::SIGTERM);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting the agent (monitor run)")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("piped stderr");
        let l = log.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        Ok(AgentProc {
            child,
            log,
            reader: Some(reader),
            status: None,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The agent's own last word: its error line, else its last line.
    fn last_word(&self) -> String {
        let log = self.log();
        log.iter()
            .rev()
            .find(|l| l.contains("error"))
            .or(log.last())
            .map(|l| clean(l.trim_start_matches("monitor: error: ")))
            .unwrap_or_else(|| "no output".into())
    }

    /// Waits for `monitor: ready`; returns that line.
    fn wait_ready(&mut self) -> Result<String> {
        let t0 = Instant::now();
        loop {
            check_stop()?;
            if let Some(l) = self.log().iter().find(|l| l.starts_with("monitor: ready")) {
                return Ok(l.clone());
            }
            self.check_alive()?;
            if t0.elapsed() > AGENT_START {
                bail!(
                    "the agent was not ready after {}s: {}",
                    AGENT_START.as_secs(),
                    self.last_word()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            self.status = Some(st);
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
            bail!("the agent exited ({st}): {}", self.last_word());
        }
        Ok(())
    }

    /// SIGTERM (the agent flushes its store and detaches its probes), wait.
    fn stop(&mut self) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        let st = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if t0.elapsed() < AGENT_STOP => thread::sleep(Duration::from_millis(25)),
                _ => {
                    eprintln!(
                        "monitor: the agent did not stop within {}s of SIGTERM; killing it",
                        AGENT_STOP.as_secs()
                    );
                    let _ = self.child.kill();
                    break self
                        .child
                        .wait()
                        .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9));
                }
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.status = Some(st);
        st
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- holder

/// The holder: `monitor demo-actor holder`, driven line by line.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    pid: u32,
}

impl Holder {
    fn spawn(exe: &Path, file: &Path, exec: &Path, secret: &str) -> Result<Holder> {
        let mut cmd = command(exe, libc::SIGKILL);
        cmd.arg("demo-actor")
            .arg("holder")
            .arg("--file")
            .arg(file)
            .arg("--env")
            .arg(HOLDER_ENV)
            .arg("--exec")
            .arg(exec)
            .env(HOLDER_ENV, secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its stderr is where it leaks the secret (a pipe, read and
            // thrown away here).
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting the holder")?;
        let pid = child.id();
        let out = child.stdout.take().expect("piped stdout");
        let (tx, replies) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(err.read(&mut buf), Ok(n) if n > 0) {}
            buf.zeroize();
        });
        let stdin = child.stdin.take();
        let mut h = Holder {
            child,
            stdin,
            replies,
            pid,
        };
        match h.reply()? {
            r if r == "ready" => Ok(h),
            r => bail!("the holder did not start: {}", clean(&r)),
        }
    }

    fn reply(&mut self) -> Result<String> {
        let t0 = Instant::now();
        loop {
            check_stop()?;
            match self.replies.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => return Ok(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.child.wait()?;
                    bail!("the holder exited ({st})");
                }
                Err(mpsc::RecvTimeoutError::Timeout) if t0.elapsed() > CHILD_TIMEOUT => {
                    bail!(
                        "the holder did not answer within {}s",
                        CHILD_TIMEOUT.as_secs()
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// One command (`read`, `connect ADDR`, `send ADDR`, `log`, `argv`).
    fn cmd(&mut self, c: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("the holder was stopped"))?;
        writeln!(stdin, "{c}").context("the holder is gone")?;
        stdin.flush()?;
        let r = self.reply()?;
        match r.strip_prefix("err ") {
            None if r == "ok" => Ok(()),
            Some(e) => bail!("the holder failed: {}", clean(e)),
            None => bail!("the holder answered {:?}", clean(&r)),
        }
    }

    fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "exit");
        }
        if !matches!(
            wait_timeout(&mut self.child, Duration::from_secs(2)),
            Ok(Some(_))
        ) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- alerts

/// New complete lines of the agent's alerts file.
struct AlertTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl AlertTail {
    fn new(path: PathBuf) -> Self {
        AlertTail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    fn poll(&mut self) -> Vec<Alert> {
        use std::io::{Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Alert>(&text) {
                Ok(a) => out.push(a),
                Err(e) => eprintln!("monitor: unreadable alert line ({e})"),
            }
        }
        out
    }
}

/// One readable line: severity, rule, secret, summary (a roll-up's summary
/// already says how many more times it happened).
fn alert_line(a: &Alert) -> String {
    clean(&format!(
        "ALERT  {:<8}  {:<34}  {}  {}",
        a.severity, a.rule, a.secret_id, a.summary
    ))
}

/// What an alert points at: path, destination or target pid.
fn evidence_of(a: &Alert) -> String {
    let e = &a.evidence;
    e.path
        .clone()
        .or_else(|| e.dest.clone())
        .or_else(|| e.target_pid.map(|p| format!("pid {p}")))
        .unwrap_or_default()
}

/// The summary table: one row per rule of the contract, in its order.
/// Returns the rules that did not fire.
fn rules_table(alerts: &[Alert], out: &mut dyn Write) -> io::Result<Vec<Rule>> {
    let mut missing = Vec::new();
    writeln!(
        out,
        "  {:<34}  {:<8}  {:<9}  FIRST ALERT",
        "RULE", "SEVERITY", "RESULT"
    )?;
    for r in ALL_RULES {
        let first = alerts
            .iter()
            .find(|a| a.rule == r.name() && a.secret_id == SECRET_ID);
        let (result, by) = match first {
            Some(a) => {
                let n = alerts
                    .iter()
                    .filter(|x| x.rule == r.name() && x.secret_id == SECRET_ID)
                    .map(|x| x.count.unwrap_or(1))
                    .sum::<u64>();
                let times = if n > 1 {
                    format!(" [{n} occurrences]")
                } else {
                    String::new()
                };
                (
                    "fired",
                    format!(
                        "{} (pid {}): {}{times}",
                        a.actor.comm,
                        a.actor.pid,
                        evidence_of(a)
                    ),
                )
            }
            None => {
                missing.push(r);
                ("NOT FIRED", String::new())
            }
        };
        writeln!(
            out,
            "  {:<34}  {:<8}  {:<9}  {}",
            r.name(),
            r.severity().as_str(),
            result,
            clean(&by)
        )?;
    }
    Ok(missing)
}

// ---------------------------------------------------------------- the demo

struct Demo {
    exe: PathBuf,
    tools: Tools,
    timeout: Duration,
    secret: Zeroizing<String>,
    rt: tokio::runtime::Runtime,
    db: PathBuf,
    alerts_path: PathBuf,
    api: PathBuf,
    keep: Option<PathBuf>,
    file: PathBuf,
    copy: PathBuf,
    tail: AlertTail,
    alerts: Vec<Alert>,
    step: usize,
    /// Steps whose action failed: (step, rule, why).
    failed: Vec<(usize, Option<Rule>, String)>,
    holder: Option<Holder>,
    agent: Option<AgentProc>,
    /// Dropped last: the directory goes once the processes are gone.
    scratch: Scratch,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // The holder and the agent before the directory they use.
        if let Some(mut h) = self.holder.take() {
            h.stop();
        }
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
    }
}

/// `monitor demo`.
pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let timeout =
        crate::timefmt::parse_duration(&a.timeout).map_err(|e| anyhow!("--timeout: {e}"))?;
    if timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("monitor demo must run as root: it starts the agent, which loads eBPF programs");
    }
    let secret = take_secret()?;
    install_signal_handlers();
    let exe = std::env::current_exe().context("finding the monitor binary")?;
    let tools = Tools::find()?;
    let keep = match &a.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("--keep {}", dir.display()))?;
            let dir = std::fs::canonicalize(dir)?;
            for name in ["demo.db", "demo.db-wal", "demo.db-shm", "alerts.jsonl"] {
                let p = dir.join(name);
                if p.exists() {
                    bail!(
                        "--keep {}: {} already exists (give a new or empty directory)",
                        dir.display(),
                        p.display()
                    );
                }
            }
            Some(dir)
        }
        None => None,
    };
    let scratch = Scratch::create()?;
    let data = keep.clone().unwrap_or_else(|| scratch.dir.clone());
    let mut demo = Demo {
        exe,
        tools,
        timeout,
        secret,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        db: data.join("demo.db"),
        alerts_path: data.join("alerts.jsonl"),
        api: scratch.dir.join("api.sock"),
        keep,
        file: scratch.dir.join("secrets/db-password"),
        copy: scratch.dir.join("stolen/db-password.copy"),
        tail: AlertTail::new(data.join("alerts.jsonl")),
        alerts: Vec::new(),
        step: 0,
        failed: Vec::new(),
        holder: None,
        agent: None,
        scratch,
    };
    let dir = demo.scratch.dir.clone();
    let kept = demo.keep.is_some();
    let res = demo.play();
    drop(demo);
    let gone = !dir.exists();
    match res {
        Ok(code) => {
            if gone {
                println!(
                    "\nRemoved {}: {}.",
                    dir.display(),
                    if kept {
                        "the secret file and its copy"
                    } else {
                        "the secret file, its copy, the database and the alerts"
                    }
                );
            }
            Ok(code)
        }
        Err(_) if STOP.load(Ordering::SeqCst) != 0 => {
            eprintln!(
                "monitor: demo interrupted: stopped the agent and the holder{}",
                if gone {
                    format!(", removed {}", dir.display())
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e),
    }
}

impl Demo {
    fn agent(&mut self) -> Result<&mut AgentProc> {
        self.agent
            .as_mut()
            .ok_or_else(|| anyhow!("the agent is not running"))
    }

    fn holder(&mut self) -> Result<&mut Holder> {
        self.holder
            .as_mut()
            .ok_or_else(|| anyhow!("the holder is not running"))
    }

    fn holder_cmd(&mut self, c: &str) -> Result<()> {
        self.holder()?.cmd(c)
    }

    /// Takes new alerts, printing each.
    fn poll_alerts(&mut self) -> usize {
        let new = self.tail.poll();
        for a in &new {
            println!("      {}", alert_line(a));
        }
        let n = new.len();
        self.alerts.extend(new);
        n
    }

    fn fired(&self, r: Rule) -> bool {
        self.alerts
            .iter()
            .any(|a| a.rule == r.name() && a.secret_id == SECRET_ID)
    }

    /// Poll alerts for `d` (the agent must stay up).
    fn settle(&mut self, d: Duration) -> Result<usize> {
        let t0 = Instant::now();
        let mut n = 0;
        loop {
            n += self.poll_alerts();
            self.agent()?.check_alive()?;
            if t0.elapsed() >= d {
                return Ok(n);
            }
            nap(Duration::from_millis(25))?;
        }
    }

    /// Wait up to the timeout for an alert of `r` about the demo secret.
    fn wait_rule(&mut self, r: Rule) -> Result<bool> {
        let t0 = Instant::now();
        loop {
            self.poll_alerts();
            if self.fired(r) {
                return Ok(true);
            }
            self.agent()?.check_alive()?;
            if t0.elapsed() > self.timeout {
                return Ok(false);
            }
            nap(Duration::from_millis(25))?;
        }
    }

    /// One step: say what happens, do it, wait for the rule it shows.
    fn step(
        &mut self,
        title: &str,
        how: &str,
        rule: Option<Rule>,
        action: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.step += 1;
        println!("\n[{}/{STEPS}] {title}", self.step);
        if !how.is_empty() {
            println!("      $ {}", clean(how));
        }
        if let Err(e) = action(self) {
            check_stop()?;
            println!("      step failed: {e:#}");
            self.failed.push((self.step, rule, format!("{e:#}")));
        }
        match rule {
            None => {
                if self.settle(Duration::from_millis(500))? == 0 {
                    println!("      (no alert: this is what the secret was issued for)");
                }
            }
            Some(r) => {
                if !self.wait_rule(r)? {
                    println!(
                        "      no {} alert within {}",
                        r.name(),
                        humantime(self.timeout)
                    );
                }
            }
        }
        Ok(())
    }

    fn api_request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        self.rt.block_on(request(&self.api, method, path, body))
    }

    fn play(&mut self) -> Result<ExitCode> {
        let dir = self.scratch.dir.clone();
        println!(
            "monitor demo: a secret's life on this machine, every rule firing, then its timeline."
        );
        println!("  scratch dir   {} (removed at the end)", dir.display());

        // The delivery file: the secret and a newline, for root only.
        let secrets = dir.join("secrets");
        DirBuilder::new().mode(0o700).create(&secrets)?;
        DirBuilder::new().mode(0o700).create(dir.join("stolen"))?;
        DirBuilder::new().mode(0o700).create(dir.join("discover"))?;
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&self.file)
                .with_context(|| format!("creating {}", self.file.display()))?;
            let mut content = Zeroizing::new(self.secret.as_bytes().to_vec());
            content.push(b'\n');
            f.write_all(&content)?;
        }
        // Its own (empty) config: nothing from /etc/monitor/monitor.toml
        // (feeds, issuance sources, watches) takes part.
        let config = dir.join("monitor.toml");
        std::fs::write(&config, "# monitor demo: defaults only\n")?;

        let service = listener()?;
        let exfil = listener()?;
        println!(
            "  listeners     {service} (the service the secret is for), {exfil} (somewhere else)"
        );

        // The agent.
        let args: Vec<OsString> = vec![
            "run".into(),
            "--config".into(),
            config.into(),
            "--db".into(),
            self.db.clone().into(),
            "--alerts".into(),
            self.alerts_path.clone().into(),
            "--api".into(),
            self.api.clone().into(),
            "--watch".into(),
            secrets.join("*").into(),
            // Replaces the default discovery globs: the machine's own
            // secrets stay out of the demo.
            "--discover".into(),
            dir.join("discover/*").into(),
        ];
        self.agent = Some(AgentProc::start(&self.exe, &args)?);
        let ready = self.agent()?.wait_ready()?;
        let pid = self.agent()?.pid();
        println!(
            "  agent         pid {pid}, {}",
            ready.trim_start_matches("monitor: ready: ")
        );
        println!(
            "  store         {} (alerts also in {})",
            self.db.display(),
            self.alerts_path.display()
        );

        // The holder, with the secret in its environment.
        self.holder = Some(Holder::spawn(
            &self.exe,
            &self.file,
            &self.tools.true_,
            &self.secret,
        )?);
        let hpid = self.holder()?.pid;
        println!(
            "  holder        demo-holder (pid {hpid}), started with the secret in ${HOLDER_ENV}; its file is {}",
            self.file.display()
        );

        // The issuance, through the agent's API (what `monitor issue` does).
        let ia = IssueArgs {
            secret_id: SECRET_ID.into(),
            files: vec![self.file.display().to_string()],
            envs: vec![HOLDER_ENV.into()],
            pid: Some(hpid),
            ttl: Some(format!("{}s", TTL.as_secs())),
            allow: vec![service.to_string()],
            label: vec!["demo=true".into()],
            ..Default::default()
        };
        let record = issue_record(&ia)?;
        let (st, answer) = self.api_request("POST", "/issuances", Some(&record))?;
        if !(200..300).contains(&st) {
            bail!("the agent refused the issuance (HTTP {st}): {answer}");
        }
        let issued = Instant::now();
        println!(
            "  issued        {SECRET_ID} to pid {hpid}: ttl {}s, allowed destination {service} only",
            TTL.as_secs()
        );
        println!(
            "                (as: monitor issue --secret-id {SECRET_ID} --file {} --env {HOLDER_ENV} --pid {hpid} --ttl {}s --allow {service} --api {})",
            self.file.display(),
            TTL.as_secs(),
            self.api.display()
        );
        println!("  The value is random, never printed, and goes with the scratch dir.");

        // 1. Ordinary use.
        self.step(
            "The holder reads its delivery file and sends the secret to its service",
            &format!(
                "demo-holder: read {}; send(\"PASS <secret>\") to {service}",
                self.file.display()
            ),
            None,
            |d| {
                d.holder_cmd("read")?;
                d.wait_learned()?;
                d.holder_cmd(&format!("send {service}"))
            },
        )?;
        // 2..10. Misuse, one rule a step.
        self.step(
            "The holder connects somewhere it was not issued the secret for",
            &format!("demo-holder: connect({exfil})"),
            Some(Rule::HolderEgressUnexpected),
            |d| d.holder_cmd(&format!("connect {exfil}")),
        )?;
        let file = self.file.display().to_string();
        self.step(
            "A process outside the holder reads the delivery file",
            &format!("cat {file} > /dev/null"),
            Some(Rule::ReadForeign),
            |d| {
                let mut c = command(&d.tools.cat, libc::SIGKILL);
                c.arg(&d.file);
                run_actor(c, "cat", None).map(drop)
            },
        )?;
        let copy = self.copy.display().to_string();
        self.step(
            "The delivery file is copied",
            &format!("cp {file} {copy}"),
            Some(Rule::CopyFile),
            |d| {
                let mut c = command(&d.tools.cp, libc::SIGKILL);
                c.arg(&d.file).arg(&d.copy);
                run_actor(c, "cp", None).map(drop)
            },
        )?;
        self.step(
            "The holder logs its connection string to stderr (a pipe)",
            "demo-holder: write(2, \"app: connecting ... password=<secret>\")",
            Some(Rule::LeakLog),
            |d| d.holder_cmd("log"),
        )?;
        let true_ = self.tools.true_.display().to_string();
        self.step(
            "The holder passes the secret on a command line",
            &format!("{true_} --password=<secret>"),
            Some(Rule::LeakArgv),
            |d| d.holder_cmd("argv"),
        )?;
        let sh = self.tools.sh.display().to_string();
        self.step(
            "A program outside the holder is started with the secret in its environment",
            &format!("{LEAK_ENV}=<secret> {sh} -c 'exit 0'"),
            Some(Rule::EnvPropagated),
            |d| {
                let mut c = command(&d.tools.sh, libc::SIGKILL);
                c.arg("-c").arg("exit 0").env(LEAK_ENV, d.secret.as_str());
                run_actor(c, "sh", None).map(drop)
            },
        )?;
        self.step(
            "Another process reads the holder's environment",
            &format!("demo-scraper: read /proc/{hpid}/environ"),
            Some(Rule::EnvironScrape),
            |d| {
                let mut c = command(&d.exe, libc::SIGKILL);
                c.args(["demo-actor", "scrape", "--pid", &hpid.to_string()]);
                run_actor(c, "demo-scraper", None).map(drop)
            },
        )?;
        self.step(
            "The holder sends the secret somewhere it is not allowed to go",
            &format!("demo-holder: send(\"PASS <secret>\") to {exfil}"),
            Some(Rule::SendUnexpectedDestination),
            |d| d.holder_cmd(&format!("send {exfil}")),
        )?;
        self.step(
            "A process never given the secret replays it to the service",
            &format!("demo-replayer: send(\"Authorization: Bearer <secret>\") to {service}"),
            Some(Rule::ReplayForeign),
            |d| {
                let mut c = command(&d.exe, libc::SIGKILL);
                c.args(["demo-actor", "replay", "--to", &service.to_string()]);
                let mut input = Zeroizing::new(d.secret.as_bytes().to_vec());
                input.push(b'\n');
                run_actor(c, "demo-replayer", Some(&input)).map(drop)
            },
        )?;
        // 11. After expiry.
        let expiry = issued + TTL + Duration::from_secs(1);
        let now = Instant::now();
        if now < expiry {
            println!(
                "\n      (waiting {} for the secret's {}s TTL to run out)",
                humantime(expiry - now),
                TTL.as_secs()
            );
            self.settle(expiry - now)?;
        }
        self.step(
            "After its TTL, the holder uses the secret again",
            &format!("demo-holder: send(\"PASS <secret>\") to {service}"),
            Some(Rule::ReplayExpired),
            |d| d.holder_cmd(&format!("send {service}")),
        )?;

        // Late alerts, then stop everything: SIGTERM flushes the store and
        // rolls up repeats.
        self.settle(Duration::from_millis(500))?;
        if let Some(mut h) = self.holder.take() {
            h.stop();
        }
        let mut agent = self.agent.take().expect("agent running");
        let st = agent.stop();
        let agent_log = agent.log();
        self.poll_alerts();
        let stopped = agent_log
            .iter()
            .rev()
            .find(|l| l.starts_with("monitor: stopped"))
            .cloned();
        println!(
            "\nAgent stopped ({}): {}",
            if st.success() {
                "SIGTERM".to_string()
            } else {
                st.to_string()
            },
            stopped
                .as_deref()
                .map(|l| l.trim_start_matches("monitor: stopped: "))
                .unwrap_or("no summary line")
        );

        // Ordinary use raised nothing?
        let benign: Vec<&Alert> = self
            .alerts
            .iter()
            .filter(|a| {
                a.actor.pid == hpid
                    && (a.rule == Rule::ReadForeign.name()
                        || (a.evidence.dest.as_deref() == Some(&service.to_string())
                            && a.rule != Rule::ReplayExpired.name()))
            })
            .collect();

        println!("\nRules ({} alerts about {SECRET_ID}):", self.alerts.len());
        let stdout = io::stdout();
        let missing = rules_table(&self.alerts, &mut stdout.lock())?;
        if benign.is_empty() {
            println!("  The holder's ordinary use (reading its file, sending to {service} before expiry) raised nothing.");
        } else {
            println!(
                "  Unexpected: the holder's ordinary use raised {} alert(s).",
                benign.len()
            );
        }

        println!("\nTimeline of {SECRET_ID} (from the store, as `monitor timeline --secret {SECRET_ID} --db {}`):", self.db.display());
        let targs = TimelineArgs {
            secret: SECRET_ID.into(),
            db: Some(self.db.clone()),
            format: TimelineFormat::Text,
        };
        let mut text = Vec::new();
        let timeline = timeline_to(&targs, Utc::now(), &mut text);
        io::stdout().write_all(&text)?;
        drop(agent);

        if let Some(keep) = &self.keep {
            println!(
                "\nKept the database and alerts in {}:\n  monitor query --db {} --secret {SECRET_ID}\n  monitor query --db {} --kind events --secret {SECRET_ID}\n  monitor timeline --db {} --secret {SECRET_ID} --format dot | dot -Tsvg > demo.svg",
                keep.display(),
                self.db.display(),
                self.db.display(),
                self.db.display()
            );
        }

        let mut problems: Vec<String> = Vec::new();
        if missing.is_empty() {
            println!("\nAll {} rules fired.", ALL_RULES.len());
        } else {
            let names: Vec<&str> = missing.iter().map(|r| r.name()).collect();
            println!(
                "\nNOT FIRED within {} each: {}",
                humantime(self.timeout),
                names.join(", ")
            );
            problems.push(format!(
                "{} of {} rules did not fire ({})",
                missing.len(),
                ALL_RULES.len(),
                names.join(", ")
            ));
        }
        for (n, rule, why) in &self.failed {
            println!(
                "  step {n}{} failed: {why}",
                rule.map(|r| format!(" ({})", r.name())).unwrap_or_default()
            );
        }
        if !self.failed.is_empty() {
            problems.push(format!("{} step(s) failed", self.failed.len()));
        }
        if !problems.is_empty() {
            let warnings: Vec<&String> = agent_log
                .iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("lost"))
                .collect();
            if !warnings.is_empty() {
                println!("  the agent warned:");
                for l in warnings.iter().rev().take(20).rev() {
                    println!("    {}", clean(l));
                }
            }
        }
        if let Err(e) = timeline {
            println!("\nNo timeline: {e:#}");
            problems.push("no timeline".into());
        }
        if !st.success() {
            problems.push(format!("the agent did not exit cleanly ({st})"));
        }
        if problems.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("monitor: demo failed: {}", problems.join("; "));
        Ok(ExitCode::FAILURE)
    }

    /// The agent knows the secret's value (from the holder's environment
    /// at issuance, or the holder's read of its file).
    fn wait_learned(&mut self) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let (st, v) = self.api_request("GET", "/secrets", None)?;
            let learned = st == 200
                && v.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|s| s["secret_id"] == SECRET_ID && s["learned"] == true)
                });
            if learned {
                return Ok(());
            }
            if t0.elapsed() > self.timeout {
                bail!("the agent did not learn the secret's value");
            }
            self.settle(Duration::from_millis(100))?;
        }
    }
}

/// `15s`, `1.5s`, `250ms`.
fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::alert::{Actor, Evidence};

    fn alert(rule: Rule, pid: u32, count: Option<u64>) -> Alert {
        let mut a = Alert::new(
            rule,
            crate::event::UtcTime::parse("2026-11-22T10:00:00.000000Z").unwrap(),
            SECRET_ID,
            format!("{SECRET_ID} did something\u{1b}[31m"),
            Actor {
                pid,
                comm: "cat".into(),
                ..Default::default()
            },
            Evidence {
                path: Some("/tmp/x".into()),
                ..Default::default()
            },
            vec![1],
        );
        a.count = count;
        a
    }

    #[test]
    fn supplied_secrets_are_checked_and_random_ones_differ() {
        assert!(check_secret("0123456789abcdef").is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret("has a space in the middle").is_err());
        assert!(check_secret("line\nbreak-0123456789").is_err());
        let e = check_secret("x").unwrap_err().to_string();
        assert!(e.starts_with(SECRET_ENV) && !e.contains("\"x\""), "{e}");
        let (a, b) = (secret_from(None).unwrap(), secret_from(None).unwrap());
        assert_eq!(
            secret_from(Some("0123456789abcdef".into()))
                .unwrap()
                .as_str(),
            "0123456789abcdef"
        );
        assert!(secret_from(Some("tiny".into())).is_err());
        assert_eq!(a.len(), 32);
        assert_ne!(a.as_str(), b.as_str());
        assert!(check_secret(&a).is_ok());
    }

    #[test]
    fn alert_lines_are_clean_and_name_rule_severity_and_secret() {
        let l = alert_line(&alert(Rule::ReadForeign, 7, None));
        assert!(l.starts_with("ALERT  high"), "{l}");
        assert!(l.contains("secret.read.foreign") && l.contains(SECRET_ID));
        assert!(!l.contains('\u{1b}'), "{l}");
        assert!(l.ends_with("did something\\u{1b}[31m"), "{l}");
    }

    #[test]
    fn table_lists_every_rule_and_what_did_not_fire() {
        let alerts = vec![
            alert(Rule::ReadForeign, 7, None),
            alert(Rule::ReadForeign, 7, Some(2)),
            alert(Rule::CopyFile, 8, None),
        ];
        let mut out = Vec::new();
        let missing = rules_table(&alerts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 11, "{text}");
        assert_eq!(missing.len(), 8);
        assert!(!missing.contains(&Rule::CopyFile));
        let read = text
            .lines()
            .find(|l| l.trim_start().starts_with("secret.read.foreign"))
            .unwrap();
        assert!(read.contains("fired") && read.contains("cat (pid 7): /tmp/x [3 occurrences]"));
        let argv = text
            .lines()
            .find(|l| l.trim_start().starts_with("secret.leak.argv"))
            .unwrap();
        assert!(argv.contains("NOT FIRED"), "{argv}");
    }

    #[test]
    fn the_tail_takes_complete_lines_only() {
        let dir = crate::testutil::TempDir::new("demo-tail");
        let p = dir.join("alerts.jsonl");
        let mut t = AlertTail::new(p.clone());
        assert!(t.poll().is_empty(), "no file yet");
        let line = serde_json::to_string(&alert(Rule::CopyFile, 1, None)).unwrap();
        let (a, b) = line.split_at(20);
        std::fs::write(&p, a).unwrap();
        assert!(t.poll().is_empty());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        write!(f, "{b}\n\n{line}\n").unwrap();
        let got = t.poll();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].rule, "secret.copy.file");
        assert!(t.poll().is_empty());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(humantime(Duration::from_secs(15)), "15s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humantime(Duration::from_millis(250)), "250ms");
    }
}
