//! Real-kernel tests of io_uring: a C program built here against liburing
//! (tests/c/uring_io.c; `cargo xtask setup` installs liburing-dev) opens,
//! reads, connects, sends and writes only through io_uring. Run by the
//! holder (a child of a pid holder), its send to a destination that is not
//! allowed and its copy into a file raise the same alerts as the syscalls;
//! run by anyone else, its read of the delivery file is a foreign read.
//! Run as root, single-threaded.
mod harness;

use std::{
    io::Read,
    net::TcpListener,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use harness::*;
use serde_json::{json, Value};

/// Long enough to fingerprint (the file adds a newline).
const VALUE: &str = "uring-5d8c1f7a3e9b2c6d4f0a";

struct World {
    sc: Scratch,
    file: String,
    agent: Agent,
}

fn world(name: &str) -> World {
    let sc = Scratch::new(name);
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    std::fs::write(sc.path("issuances.jsonl"), "").unwrap();
    let issuances = sc.path("issuances.jsonl").display().to_string();
    let agent = Agent::start(&["--issuances", &issuances]);
    World { sc, file, agent }
}

impl World {
    /// A python holder (pid issuance; its children hold it too) that has
    /// read its secret file.
    fn holder(&self, extra: Value) -> Py {
        use std::io::Write;
        let mut py = Py::spawn(&[]);
        let mut rec = json!({
            "secret_id": "db-prod",
            "holder": {"pid": py.pid},
            "delivery": [{"file": self.file}],
            "source": "test",
        });
        for (k, v) in extra.as_object().unwrap() {
            rec[k] = v.clone();
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.sc.path("issuances.jsonl"))
            .unwrap();
        writeln!(f, "{rec}").unwrap();
        self.agent.wait_log("secret db-prod recorded");
        self.agent
            .wait_log(&format!("watching {} (inode", self.file));
        py.run(&format!("secret = open({:?}).read().strip()", self.file));
        self.agent.wait_for("holder read", |e| {
            e["kind"] == "read" && e["process"]["pid"] == py.pid
        });
        py
    }
}

/// `uring_io`, built once per test run from tests/c/uring_io.c.
fn uring_io() -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/c/uring_io.c");
    let out = std::env::temp_dir().join(format!("monitor-it-uring-io-{}", std::process::id()));
    if !out.exists() {
        let st = Command::new("gcc")
            .arg("-O1")
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .arg("-luring")
            .status()
            .expect("gcc (installed by cargo xtask setup)");
        assert!(
            st.success(),
            "gcc {} -luring (liburing-dev, installed by cargo xtask setup)",
            src.display()
        );
    }
    out.display().to_string()
}

/// (pid, bytes read) from the program's output.
fn parse_out(out: &str) -> (u32, i64) {
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k:?} in {out:?}"))
            .trim()
            .to_string()
    };
    (
        field("pid ").parse().unwrap(),
        field("bytes ").parse().unwrap(),
    )
}

/// Run `uring_io ARGS` as a child of the holder; (pid, bytes read).
fn run_as_holder(holder: &mut Py, args: &[&str]) -> (u32, i64) {
    let mut argv = vec![uring_io()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let r = holder.run(&format!(
        "_p = subprocess.run({}, capture_output=True, text=True); _r = [_p.returncode, _p.stdout, _p.stderr]",
        serde_json::to_string(&argv).unwrap()
    ));
    assert_eq!(r[0], 0, "uring_io {args:?}: {r}");
    parse_out(r[1].as_str().unwrap())
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    (l, p)
}

fn drain(l: TcpListener) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut b = Vec::new();
        let _ = c.read_to_end(&mut b);
        b
    })
}

#[test]
fn holder_sends_its_secret_through_io_uring() {
    let w = world("uring-send");
    let (allowed, ap) = listener();
    let _keep = allowed;
    let (other, op) = listener();
    let t = drain(other);
    let mut holder = w.holder(json!({"allowed_destinations": [format!("127.0.0.1:{ap}")]}));
    let port = op.to_string();
    let (pid, n) = run_as_holder(&mut holder, &["send", &w.file, "127.0.0.1", &port]);
    assert_eq!(n, (VALUE.len() + 1) as i64);
    assert_eq!(t.join().unwrap(), format!("{VALUE}\n").as_bytes());
    let dest = format!("127.0.0.1:{op}");

    let a = w
        .agent
        .wait_alert("secret.send.unexpected_destination", |a| {
            a["actor"]["pid"] == pid
        });
    assert_eq!(a["secret_id"], "db-prod");
    assert_eq!(a["secret_ids"], json!(["db-prod"]));
    assert_eq!(a["evidence"]["dest"], dest.as_str());
    assert_eq!(a["evidence"]["fd_kind"], "socket");
    assert_eq!(a["evidence"]["encoding"], "raw");
    assert_eq!(a["evidence"]["bytes"], (VALUE.len() + 1) as u64);
    assert_eq!(a["evidence"]["syscall"], "io_uring:send");

    let e = w
        .agent
        .wait_alert("holder.egress.unexpected", |a| a["actor"]["pid"] == pid);
    assert_eq!(e["secret_id"], "db-prod");
    assert_eq!(e["evidence"]["dest"], dest.as_str());
    assert_eq!(e["evidence"]["syscall"], "io_uring:connect");

    // The io_uring open and read of its own delivery file: ordinary use.
    let evs = w.agent.events_of(pid);
    let open = evs
        .iter()
        .find(|e| e["kind"] == "open" && e["syscall"] == "io_uring:openat")
        .unwrap_or_else(|| panic!("no io_uring open: {evs:?}"));
    assert_eq!(open["path"], w.file.as_str());
    let read = evs
        .iter()
        .find(|e| e["kind"] == "read" && e["syscall"] == "io_uring:read")
        .unwrap_or_else(|| panic!("no io_uring read: {evs:?}"));
    assert_eq!(read["bytes"], (VALUE.len() + 1) as u64);
    assert!(
        !w.agent
            .alerts()
            .iter()
            .any(|a| a["rule"] == "secret.read.foreign"),
        "{:?}",
        w.agent.alerts()
    );

    // The ring itself is in the holder's timeline.
    let ring = evs
        .iter()
        .find(|e| e["kind"] == "io_uring")
        .unwrap_or_else(|| panic!("no io_uring event: {evs:?}"));
    assert_eq!(ring["syscall"], "io_uring_setup");
    assert_eq!(ring["entries"], 8);
    let t0 = Instant::now();
    loop {
        let (st, tl) = api_get(&w.agent.api, "/timeline/db-prod?format=json");
        assert_eq!(st, 200, "{tl}");
        let found = tl["entries"].as_array().unwrap().iter().any(|e| {
            e["process"]["pid"] == pid
                && e["summary"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("set up an io_uring instance"))
        });
        if found {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{tl}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn holder_copies_its_secret_into_a_file_through_io_uring() {
    let w = world("uring-copy");
    let mut holder = w.holder(json!({}));
    let out = w.sc.path("stolen.txt").display().to_string();
    let (pid, _) = run_as_holder(&mut holder, &["copy", &w.file, &out]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("{VALUE}\n"));
    let a = w
        .agent
        .wait_alert("secret.copy.file", |a| a["actor"]["pid"] == pid);
    assert_eq!(a["secret_id"], "db-prod");
    assert_eq!(a["evidence"]["path"], out.as_str());
    assert_eq!(a["evidence"]["encoding"], "raw");
    assert_eq!(a["evidence"]["syscall"], "io_uring:write");
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn foreign_process_reads_a_delivery_file_through_io_uring() {
    let w = world("uring-foreign");
    let _holder = w.holder(json!({}));
    let (_, out) = run(Command::new(uring_io()).args(["read", &w.file]));
    let (pid, n) = parse_out(&out);
    assert_eq!(n, (VALUE.len() + 1) as i64);
    let a = w
        .agent
        .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == pid);
    assert_eq!(a["secret_id"], "db-prod");
    assert_eq!(a["evidence"]["path"], w.file.as_str());
    assert_eq!(a["evidence"]["bytes"], (VALUE.len() + 1) as u64);
    assert_eq!(a["evidence"]["syscall"], "io_uring:read");
    // Its open, through io_uring too, with the path from the kernel.
    let evs = w.agent.events_of(pid);
    let open = evs
        .iter()
        .find(|e| e["kind"] == "open" && e["syscall"] == "io_uring:openat")
        .unwrap_or_else(|| panic!("no io_uring open: {evs:?}"));
    assert_eq!(open["path"], w.file.as_str());
    // One read, one alert (fanotify's twin of the read is dropped).
    thread::sleep(Duration::from_millis(800));
    let reads = w
        .agent
        .events_of(pid)
        .into_iter()
        .filter(|e| e["kind"] == "read")
        .count();
    assert_eq!(reads, 1, "{:?}", w.agent.events_of(pid));
    let n = w
        .agent
        .alerts()
        .iter()
        .filter(|a| a["actor"]["pid"] == pid)
        .count();
    assert_eq!(n, 1, "{:?}", w.agent.alerts());
}

#[test]
fn io_uring_open_relative_to_a_dirfd_names_the_real_path() {
    let w = world("uring-dirfd");
    let _holder = w.holder(json!({}));
    let dir = w.sc.path("secrets").display().to_string();
    let (_, out) = run(Command::new(uring_io()).args(["readat", &dir, "db"]));
    let (pid, _) = parse_out(&out);
    let a = w
        .agent
        .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == pid);
    // The process is gone; the path is the kernel's, absolute and real.
    assert_eq!(a["evidence"]["path"], w.file.as_str());
    let open = w
        .agent
        .events_of(pid)
        .into_iter()
        .find(|e| e["kind"] == "open" && e["syscall"] == "io_uring:openat")
        .unwrap();
    assert_eq!(open["path"], w.file.as_str());
}
