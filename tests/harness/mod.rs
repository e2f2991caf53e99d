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
}

impl Agent {
    /// `monitor run --events - <args>`, waiting until it says it is ready.
    pub fn start(args: &[&str]) -> Agent {
        require_root();
        let mut child = Command::new(MONITOR)
            .arg("run")
            .arg("--events")
            .arg("-")
            .args(args)
            .env("RUST_LOG", "info")
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
        let agent = Agent {
            child,
            events,
            stderr,
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
            if let Some(line) = agent.stderr().iter().find(|l| l.contains("error")) {
                panic!(
                    "agent failed to start: {line}\n{}",
                    agent.stderr().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
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
        unsafe { kill(self.child.id() as i32, 15) };
        let status = self.child.wait().unwrap();
        thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { kill(self.child.id() as i32, 15) };
            let _ = self.child.wait();
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

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
