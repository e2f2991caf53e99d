//! The processes the demo runs: signals, helpers, its scratch directory,
//! the agent and the holder.

use super::*;

/// The signal that asked the demo to stop (0: none).
pub(super) static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP only set [`STOP`]: every wait of the demo
/// polls it, and the clean-up runs on the way out.
pub(super) fn install_signal_handlers() {
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
pub(super) struct Interrupted(i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

pub(super) fn check_stop() -> Result<()> {
    match STOP.load(Ordering::SeqCst) {
        0 => Ok(()),
        sig => Err(Interrupted(sig).into()),
    }
}

/// Sleep `d`, waking early (with an error) when asked to stop.
pub(super) fn nap(d: Duration) -> Result<()> {
    check_stop()?;
    thread::sleep(d);
    check_stop()
}

// ---------------------------------------------------------------- helpers

/// The demo's secret: [`SECRET_ENV`] if set (and then removed from the
/// environment), else 24 random bytes as unpadded base64url (32 chars).
pub(super) fn take_secret() -> Result<Zeroizing<String>> {
    let supplied = std::env::var_os(SECRET_ENV);
    if supplied.is_some() {
        // Before any thread or child: nothing inherits it.
        std::env::remove_var(SECRET_ENV);
    }
    secret_from(supplied)
}

pub(super) fn secret_from(supplied: Option<OsString>) -> Result<Zeroizing<String>> {
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
pub(super) fn check_secret(v: &str) -> Result<()> {
    if !(16..=256).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{SECRET_ENV} must be 16 to 256 printable ASCII characters without spaces");
    }
    Ok(())
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `name` on PATH (or in /usr/bin, /bin).
pub(super) fn which(name: &str) -> Result<PathBuf> {
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
pub(super) struct Tools {
    pub(super) cat: PathBuf,
    pub(super) cp: PathBuf,
    pub(super) sh: PathBuf,
    pub(super) true_: PathBuf,
}

impl Tools {
    pub(super) fn find() -> Result<Tools> {
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
pub(super) fn command(program: &Path, death_signal: libc::c_int) -> Command {
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

pub(super) fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
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
pub(super) fn run_actor(mut cmd: Command, what: &str, stdin: Option<&[u8]>) -> Result<u32> {
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
pub(super) fn listener() -> Result<SocketAddr> {
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
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
}

impl Scratch {
    pub(super) fn create() -> Result<Scratch> {
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
pub(super) struct AgentProc {
    pub(super) child: Child,
    pub(super) log: Arc<Mutex<Vec<String>>>,
    pub(super) reader: Option<thread::JoinHandle<()>>,
    pub(super) status: Option<ExitStatus>,
}

impl AgentProc {
    pub(super) fn start(exe: &Path, args: &[OsString]) -> Result<AgentProc> {
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The agent's own last word: its error line, else its last line.
    pub(super) fn last_word(&self) -> String {
        let log = self.log();
        log.iter()
            .rev()
            .find(|l| l.contains("error"))
            .or(log.last())
            .map(|l| clean(l.trim_start_matches("monitor: error: ")))
            .unwrap_or_else(|| "no output".into())
    }

    /// Waits for `monitor: ready`; returns that line.
    pub(super) fn wait_ready(&mut self) -> Result<String> {
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

    pub(super) fn check_alive(&mut self) -> Result<()> {
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
    pub(super) fn stop(&mut self) -> ExitStatus {
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
pub(super) struct Holder {
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) replies: mpsc::Receiver<String>,
    pub(super) pid: u32,
}

impl Holder {
    pub(super) fn spawn(exe: &Path, file: &Path, exec: &Path, secret: &str) -> Result<Holder> {
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

    pub(super) fn reply(&mut self) -> Result<String> {
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
    pub(super) fn cmd(&mut self, c: &str) -> Result<()> {
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

    pub(super) fn stop(&mut self) {
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
