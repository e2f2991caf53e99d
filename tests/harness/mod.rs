//! Test harness: runs the real `monitor` binary as a child, collects its
//! JSON events (stdout) and log (stderr), and lets tests wait for exact
//! events triggered by real processes. Needs root (loads eBPF programs).
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const MONITOR: &str = env!("CARGO_BIN_EXE_monitor");
const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

pub fn require_root() {
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "kernel tests load eBPF programs and must run as root (cargo xtask test)"
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A scratch directory removed (with any test secret in it) on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "monitor-it-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Write a file (creating parents); returns its path as a string.
    pub fn file(&self, rel: &str, content: &[u8]) -> String {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The running agent.
pub struct Agent {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Its API socket (one per agent).
    pub api: PathBuf,
    /// Its event store (unless the test gave `--db`).
    pub db: PathBuf,
    /// The OCSF file feed the harness gives every agent started without
    /// `--config`; None with the test's own config.
    pub ocsf: Option<PathBuf>,
    /// The store the agent uses (the test's `--db` or [`Agent::db`]).
    store: PathBuf,
    /// Whether its native alerts go to stdout (so can be counted).
    alerts_on_stdout: bool,
    ocsf_checked: bool,
    /// Killed hard: its outputs may differ by the line it was writing.
    killed: bool,
}

impl Agent {
    /// `monitor run --events - --alerts - --api <unique> <args>`, waiting
    /// until it says it is ready. Events and alerts share stdout; alerts are
    /// the lines with a `rule`.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_env(args, &[])
    }

    /// [`Agent::start`] with more environment (`RUST_LOG` is `info` unless
    /// `env` says otherwise).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        require_root();
        let api = std::env::temp_dir().join(format!(
            "monitor-it-api-{}-{}.sock",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let mut cmd = Command::new(MONITOR);
        cmd.arg("run").arg("--api").arg(&api);
        // A store of its own unless the test names one.
        let db = api.with_extension("db");
        if !args.contains(&"--db") {
            cmd.arg("--db").arg(&db);
        }
        let store = args
            .iter()
            .position(|a| *a == "--db")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| db.clone());
        // Every alert also goes to an OCSF file feed, validated when the
        // agent stops (see `check_ocsf`).
        let ocsf = if args.contains(&"--config") {
            None
        } else {
            let feed = api.with_extension("ocsf.jsonl");
            let config = api.with_extension("toml");
            std::fs::write(
                &config,
                format!(
                    "[[feeds]]\ntype = \"file\"\npath = {:?}\nformat = \"ocsf\"\n",
                    feed.display().to_string()
                ),
            )
            .unwrap();
            cmd.arg("--config").arg(&config);
            Some(feed)
        };
        let alerts_on_stdout = !args.contains(&"--alerts");
        // Events and alerts on stdout unless the test sends them elsewhere.
        for flag in ["--events", "--alerts"] {
            if !args.contains(&flag) {
                cmd.arg(flag).arg("-");
            }
        }
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monitor");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let ev = events.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => ev.lock().unwrap().push(v),
                    Err(e) => panic!("agent wrote a non-JSON event line ({e}): {line}"),
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let se = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                se.lock().unwrap().push(line);
            }
        });
        let mut agent = Agent {
            child,
            events,
            stderr,
            api,
            db,
            ocsf,
            store,
            alerts_on_stdout,
            ocsf_checked: false,
            killed: false,
        };
        let t0 = Instant::now();
        loop {
            if agent.stderr().iter().any(|l| l.contains("monitor: ready")) {
                break;
            }
            if t0.elapsed() > START_TIMEOUT {
                panic!(
                    "agent not ready after {START_TIMEOUT:?}:\n{}",
                    agent.stderr().join("\n")
                );
            }
            // A start that fails ends the process. (Not a log line with
            // "error" in it: an agent whose NATS is down logs the fleet's
            // connection errors while it starts, and starts.)
            if let Ok(Some(status)) = agent.child.try_wait() {
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "agent failed to start ({status}):\n{}",
                    agent.stderr().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Events (lines with a `kind`).
    pub fn events(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v.get("kind").is_some())
            .cloned()
            .collect()
    }

    /// Alerts (lines with a `rule`).
    pub fn alerts(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v.get("rule").is_some())
            .cloned()
            .collect()
    }

    /// Everything the agent wrote on stdout, as text.
    pub fn stdout_text(&self) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Wait for an alert of `rule` matching `pred`.
    pub fn wait_alert(&self, rule: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(a) = self
                .alerts()
                .into_iter()
                .find(|a| a["rule"] == rule && pred(a))
            {
                return a;
            }
            if t0.elapsed() > EVENT_TIMEOUT {
                panic!(
                    "no {rule} alert after {EVENT_TIMEOUT:?}; alerts:\n{}\nagent log:\n{}",
                    self.alerts()
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.stderr().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `monitor <cmd> ... --api <ours>`; returns stdout, panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(MONITOR)
            .args(args)
            .arg("--api")
            .arg(&self.api)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "monitor {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until the agent logged a line containing `needle`.
    pub fn wait_log(&self, needle: &str) {
        let t0 = Instant::now();
        while !self.stderr().iter().any(|l| l.contains(needle)) {
            assert!(
                t0.elapsed() < EVENT_TIMEOUT,
                "agent never logged {needle:?}:\n{}",
                self.stderr().join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Events of one process.
    pub fn events_of(&self, pid: u32) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["process"]["pid"] == pid)
            .collect()
    }

    /// Wait for the first event matching `pred`; panic with context if none.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if t0.elapsed() > EVENT_TIMEOUT {
                let evs = self.events();
                let tail: Vec<String> = evs
                    .iter()
                    .rev()
                    .filter(|e| e["kind"] != "exec" && e["kind"] != "fork" && e["kind"] != "exit")
                    .take(40)
                    .map(|e| e.to_string())
                    .collect();
                panic!(
                    "no event {what} after {EVENT_TIMEOUT:?} ({} events seen); last non-lifecycle events:\n{}\nagent log:\n{}",
                    evs.len(),
                    tail.join("\n"),
                    self.stderr().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// All events matching `pred` once `marker` matched (ring order means
    /// everything submitted before the marker has arrived).
    pub fn all_after_marker(
        &self,
        marker: &str,
        m: impl Fn(&Value) -> bool,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.wait_for(marker, m);
        self.events().into_iter().filter(|e| pred(e)).collect()
    }

    /// SIGTERM, wait, return stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.terminate();
        (status, self.stderr())
    }

    /// SIGTERM and wait; what it wrote stays readable.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { kill(self.child.id() as i32, 15) };
        let status = self.child.wait().unwrap();
        // Let the reader threads take the last lines.
        thread::sleep(Duration::from_millis(200));
        status
    }
}

impl Agent {
    /// Stops the agent and searches everything it wrote (stdout events and
    /// alerts, stderr, its store with the WAL, its OCSF feed, and `extra`
    /// files) for each value and its encodings (raw, base64 std/url, hex):
    /// none may be there.
    pub fn assert_never_wrote(&mut self, values: &[&str], extra: &[&Path]) {
        use base64::Engine;
        self.terminate();
        let mut written = self.stdout_text().into_bytes();
        written.extend(self.stderr().join("\n").into_bytes());
        for ext in ["db", "db-wal"] {
            written.extend(std::fs::read(self.store.with_extension(ext)).unwrap_or_default());
        }
        if let Some(feed) = &self.ocsf {
            written.extend(std::fs::read(feed).unwrap_or_default());
        }
        for p in extra {
            written.extend(std::fs::read(p).unwrap_or_default());
        }
        let text = String::from_utf8_lossy(&written);
        for v in values {
            let forms = [
                v.to_string(),
                base64::engine::general_purpose::STANDARD.encode(v),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v),
                v.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
                v.bytes().map(|b| format!("{b:02X}")).collect::<String>(),
            ];
            let names = ["raw", "base64", "base64url", "hex", "HEX"];
            for (f, name) in forms.iter().zip(names) {
                assert!(
                    !text.contains(f.as_str()),
                    "the agent wrote a secret ({} bytes) somewhere, as {name}",
                    v.len()
                );
            }
        }
    }

    /// Send `sig` to the agent (SIGSTOP/SIGCONT to hold it while the
    /// kernel fills its ring).
    pub fn signal(&self, sig: i32) {
        unsafe { kill(self.child.id() as i32, sig) };
    }

    /// SIGKILL (a crash: nothing cleaned up) and wait.
    pub fn kill_hard(&mut self) {
        unsafe { kill(self.child.id() as i32, 9) };
        let _ = self.child.wait();
        self.killed = true;
    }

    /// Stops the agent and validates every OCSF line it emitted against the
    /// official schema of the version each line claims
    /// ([`validate_ocsf`]): its OCSF file feed, and `monitor query --format
    /// ocsf` of its whole store. The feed holds one line per native alert.
    /// Runs (once) when the agent is dropped, for every test.
    pub fn check_ocsf(&mut self) {
        if self.ocsf_checked {
            return;
        }
        self.ocsf_checked = true;
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status,
            _ => self.terminate(),
        };
        // An agent killed or crashed may have written an alert to one output
        // and not yet the other: the counts are compared after clean exits.
        let clean = status.success() && !self.killed;
        let mut lines = Vec::new();
        if let Some(feed) = &self.ocsf {
            let text = std::fs::read_to_string(feed).unwrap_or_default();
            let fed: Vec<String> = text.lines().map(String::from).collect();
            if self.alerts_on_stdout && clean {
                let native = self.alerts().len();
                assert_eq!(
                    fed.len(),
                    native,
                    "the OCSF feed has {} lines for {native} alerts",
                    fed.len()
                );
            }
            lines.extend(fed);
        }
        if self.store.exists() {
            let out = Command::new(MONITOR)
                .args(["query", "--kind", "alerts", "--format", "ocsf"])
                .args(["--limit", "1000000", "--db"])
                .arg(&self.store)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "monitor query --format ocsf: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            lines.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(String::from),
            );
        }
        validate_ocsf(&lines);
    }
}

/// Validates OCSF JSON lines with `tests/ocsf/validate.py` (the official
/// OCSF export bundled by PyPI `ocsf-json-schema`, with `jsonschema`), in
/// the venv `cargo xtask test` makes (`MONITOR_TEST_PYTHON`). Panics with
/// the validator's findings if any line is invalid.
pub fn validate_ocsf(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let python = std::env::var("MONITOR_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "MONITOR_TEST_PYTHON is not set: run the tests with `cargo xtask test`, \
             which makes the venv with ocsf-json-schema and jsonschema"
        )
    });
    let file = std::env::temp_dir().join(format!(
        "monitor-it-ocsf-{}-{}.jsonl",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/ocsf/validate.py"
        ))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let _ = std::fs::remove_file(&file);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "OCSF lines not valid:\n{text}");
    eprintln!("{}", text.trim_end());
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.check_ocsf();
        }
        if let Ok(None) = self.child.try_wait() {
            unsafe { kill(self.child.id() as i32, 15) };
            let _ = self.child.wait();
        }
        for ext in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(self.db.with_extension(ext));
        }
        for ext in ["toml", "ocsf.jsonl"] {
            let _ = std::fs::remove_file(self.api.with_extension(ext));
        }
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Run a command to completion; returns (pid, stdout).
pub fn run(cmd: &mut Command) -> (u32, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A python3 script, run to completion; returns (pid, stdout).
pub fn python(script: &str, args: &[&str]) -> (u32, String) {
    run(Command::new("python3").arg("-c").arg(script).args(args))
}

/// A long-running python3 script: returns the child once it printed `ready`.
pub fn python_bg(script: &str, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "background script did not start");
    (child, out)
}

/// Tell a background script to finish (it reads a line from stdin).
pub fn finish(mut child: Child) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"go\n");
    }
    let _ = child.wait();
}

/// `GET path` on the agent's API socket: (status, JSON body).
pub fn api_get(sock: &Path, path: &str) -> (u16, Value) {
    use std::os::unix::net::UnixStream;
    let mut c = UnixStream::connect(sock).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: monitor\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut c, &mut resp).unwrap();
    let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A python3 process that runs code sent to it, one statement block at a
/// time: the tests' stand-in for a workload (a secret holder or not).
pub struct Py {
    child: Child,
    stdin: std::process::ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    pub pid: u32,
}

const DRIVER: &str = r#"
import sys, json, os, socket, base64, subprocess, time
g = {"os": os, "socket": socket, "base64": base64, "subprocess": subprocess, "sys": sys, "time": time}
print("ready", flush=True)
for line in sys.stdin:
    try:
        g["_r"] = None
        exec(json.loads(line), g)
        sys.stdout.write("\nok " + json.dumps(g.get("_r")) + "\n")
    except Exception as e:
        sys.stdout.write("\nerr " + repr(e) + "\n")
    sys.stdout.flush()
"#;

impl Py {
    /// Start with exactly this environment (plus PATH).
    pub fn spawn(env: &[(&str, &str)]) -> Py {
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg("-c")
            .arg(DRIVER)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = child.id();
        Py {
            child,
            stdin,
            out,
            pid,
        }
    }

    /// Run `code`; returns the JSON value of `_r` (set it to return data).
    pub fn run(&mut self, code: &str) -> Value {
        let msg = serde_json::to_string(code).unwrap();
        writeln!(self.stdin, "{msg}").unwrap();
        self.stdin.flush().unwrap();
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap() == 0 {
                panic!("python driver exited while running {code:?}");
            }
            if let Some(v) = line.strip_prefix("ok ") {
                return serde_json::from_str(v.trim()).unwrap();
            }
            if let Some(e) = line.strip_prefix("err ") {
                panic!("python error running {code:?}: {e}");
            }
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real cgroup v2 directory (created under the v2 mount, removed on drop
/// after its processes are gone).
pub struct Cgroup {
    pub dir: PathBuf,
    /// Path relative to the v2 mount, as the agent reports it.
    pub rel: String,
    created: Vec<PathBuf>,
}

impl Cgroup {
    pub fn new(rel: &str) -> Cgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                (post.split_whitespace().next()? == "cgroup2")
                    .then(|| pre.split_whitespace().nth(4).unwrap().to_string())
            })
            .expect("no cgroup v2 mount");
        let mut created = Vec::new();
        let mut dir = PathBuf::from(&mount);
        for part in rel.trim_matches('/').split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        Cgroup {
            dir,
            rel: format!("/{}", rel.trim_matches('/')),
            created,
        }
    }

    /// Move a process into this cgroup.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in self.created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A loopback port free now (for an agent's `--metrics` or a test server).
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range: a port the kernel hands out (bind
    // to port 0) is free now, but any outgoing connection (a NATS route, a
    // client) may take it as its source port before the server binds it
    // (a CI failure: "can't listen to the monitor port: address already in
    // use"). Walked from a point derived from the pid, never the same port
    // twice in one test binary.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 10_000;
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let span = low.saturating_sub(BASE);
    if span < 1_000 {
        return std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (seed + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port from {BASE} to {low}");
}

/// The value of one sample line (`name{labels} value`, labels exactly) of
/// a Prometheus text exposition, if present.
pub fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `GET path` on a TCP port (the metrics server): status, body and how
/// long the answer took (10 s at most).
pub fn http_get_timed(port: u16, path: &str) -> (u16, String, Duration) {
    use std::io::Read;
    let t0 = Instant::now();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: monitor\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string(), t0.elapsed())
}

/// `GET path` on a TCP port (the metrics server): status and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let (status, body, _) = http_get_timed(port, path);
    (status, body)
}

/// No `rule` alert for `pid` so far.
pub fn no_alert(agent: &Agent, rule: &str, pid: u32) {
    assert!(
        !agent
            .alerts()
            .iter()
            .any(|a| a["rule"] == rule && a["actor"]["pid"] == pid),
        "unexpected {rule} for pid {pid}: {:?}",
        agent.alerts()
    );
}

/// A value and the encodings the agent matches, as they would appear
/// (to search what was written for any of them).
pub fn forms(value: &str) -> Vec<String> {
    use base64::Engine;
    let b = value.as_bytes();
    vec![
        value.to_string(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        b.iter().map(|x| format!("{x:02x}")).collect(),
        b.iter().map(|x| format!("{x:02X}")).collect(),
    ]
}
