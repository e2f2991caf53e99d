//! Real-kernel tests of watched files through fanotify: reads that no
//! read(2) tracepoint sees (io_uring), reads through other names (hard
//! links, symlinks), mmap, marks that follow a Kubernetes secret volume's
//! atomic `..data` swap, and `enforce`: a foreign open denied with EPERM
//! (alert `blocked`), the holder unaffected, and nobody blocked once the
//! agent is killed. Run as root, single-threaded.
mod harness;

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use harness::*;
use serde_json::{json, Value};

/// Long enough to fingerprint (the file adds a newline).
const VALUE: &str = "fan-7c2e9b4d1a6f3e8c5b0d";
const NEW_VALUE: &str = "fan-rotated-4b8e1d7a2c9f6e3b";

struct World {
    sc: Scratch,
    file: String,
    agent: Agent,
}

fn world(name: &str, args: &[&str]) -> World {
    let sc = Scratch::new(name);
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    start(sc, file, args)
}

fn start(sc: Scratch, file: String, args: &[&str]) -> World {
    std::fs::write(sc.path("issuances.jsonl"), "").unwrap();
    let issuances = sc.path("issuances.jsonl").display().to_string();
    let mut all = vec!["--issuances", issuances.as_str()];
    all.extend_from_slice(args);
    let agent = Agent::start(&all);
    let ready = agent
        .stderr()
        .into_iter()
        .find(|l| l.contains("ready"))
        .unwrap();
    assert!(ready.contains("fanotify: "), "{ready}");
    assert!(!ready.contains("fanotify: off"), "{ready}");
    World { sc, file, agent }
}

impl World {
    /// A python holder (pid issuance) that has read its secret file.
    fn holder(&self) -> Py {
        use std::io::Write;
        let mut py = Py::spawn(&[]);
        let rec = json!({
            "secret_id": "db-prod",
            "holder": {"pid": py.pid},
            "delivery": [{"file": self.file}],
            "source": "test",
        });
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.sc.path("issuances.jsonl"))
            .unwrap();
        writeln!(f, "{rec}").unwrap();
        self.agent.wait_log("secret db-prod recorded");
        // Marked (and in the kernel's watched set) before the holder reads.
        self.agent
            .wait_log(&format!("watching {} (inode", self.file));
        py.run(&format!("secret = open({:?}).read().strip()", self.file));
        self.agent.wait_for("holder read", |e| {
            e["kind"] == "read" && e["process"]["pid"] == py.pid
        });
        py
    }
}

/// `uring_read`, built once per test run from tests/c/uring_read.c.
fn uring_read() -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/c/uring_read.c");
    let out = std::env::temp_dir().join(format!("monitor-it-uring-read-{}", std::process::id()));
    if !out.exists() {
        let st = Command::new("gcc")
            .arg("-O1")
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .status()
            .expect("gcc (installed by cargo xtask setup)");
        assert!(st.success(), "gcc {}", src.display());
    }
    out.display().to_string()
}

/// Run the io_uring reader on `path`; (pid, bytes read).
fn read_with_io_uring(path: &str) -> (u32, i64) {
    let (pid, out) = run(Command::new(uring_read()).arg(path));
    (pid, out.trim().parse().expect("bytes read"))
}

#[test]
fn io_uring_read_of_a_delivery_file_alerts_once() {
    let w = world("uring", &[]);
    let holder = w.holder();
    let (pid, n) = read_with_io_uring(&w.file);
    assert_eq!(n, (VALUE.len() + 1) as i64);
    let a = w
        .agent
        .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == pid);
    assert_eq!(a["secret_id"], "db-prod");
    assert_eq!(a["evidence"]["path"], w.file.as_str());
    // No read(2) happened: the io_uring tracepoints saw it (the process
    // became tracked by its open(2)), and fanotify's twin was dropped.
    assert_eq!(a["evidence"]["syscall"], "io_uring:read");
    let reads: Vec<Value> = w
        .agent
        .events_of(pid)
        .into_iter()
        .filter(|e| e["kind"] == "read")
        .collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["syscall"], "io_uring:read");
    assert_eq!(reads[0]["path"], w.file.as_str());
    // One alert for the one read.
    thread::sleep(Duration::from_millis(500));
    let n = w
        .agent
        .alerts()
        .iter()
        .filter(|a| a["actor"]["pid"] == pid)
        .count();
    assert_eq!(n, 1, "{:?}", w.agent.alerts());
    // The holder's io_uring read is its ordinary use.
    let mut holder = holder;
    holder.run(&format!(
        "_r = subprocess.run([{:?}, {:?}], capture_output=True).returncode",
        uring_read(),
        w.file
    ));
    thread::sleep(Duration::from_millis(800));
    no_alert(&w.agent, "secret.read.foreign", holder.pid);
}

#[test]
fn reads_through_mmap_hard_links_and_symlinks_alert_once() {
    let w = world("names", &[]);
    let _holder = w.holder();
    // mmap: the bytes are read by page faults, not read(2).
    let script = format!(
        "import mmap\nf = open({:?}, 'rb')\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nb = bytes(m[:])\nm.close()",
        w.file
    );
    let (py, _) = python(&script, &[]);
    let a = w
        .agent
        .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == py);
    assert_eq!(a["secret_id"], "db-prod");
    // A hard link and a symlink: other names, the same inode.
    let hard = w.sc.path("elsewhere/hard").display().to_string();
    std::fs::create_dir_all(w.sc.path("elsewhere")).unwrap();
    std::fs::hard_link(&w.file, &hard).unwrap();
    let soft = w.sc.path("elsewhere/soft").display().to_string();
    std::os::unix::fs::symlink(&w.file, &soft).unwrap();
    for name in [&hard, &soft] {
        let (cat, out) = run(Command::new("cat").arg(name));
        assert_eq!(out.trim(), VALUE);
        let a = w
            .agent
            .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == cat);
        assert_eq!(a["secret_id"], "db-prod");
        // Fanotify and the tracepoints saw the same read: one event, one
        // alert.
        thread::sleep(Duration::from_millis(800));
        let reads = w
            .agent
            .events_of(cat)
            .into_iter()
            .filter(|e| e["kind"] == "read" && e["bytes"] != 0)
            .count();
        assert_eq!(reads, 1, "{:?}", w.agent.events_of(cat));
        let alerts = w
            .agent
            .alerts()
            .into_iter()
            .filter(|a| a["actor"]["pid"] == cat && a["rule"] == "secret.read.foreign")
            .count();
        assert_eq!(alerts, 1, "{:?}", w.agent.alerts());
    }
    std::fs::remove_file(&hard).unwrap();
}

/// A kubelet secret volume: `..<timestamp>/token`, `..data` -> it, and
/// `token` -> `..data/token`.
fn kubelet_volume(dir: &Path, stamp: &str, value: &str) {
    let ts = dir.join(stamp);
    std::fs::create_dir_all(&ts).unwrap();
    std::fs::write(ts.join("token"), format!("{value}\n")).unwrap();
}

#[test]
fn marks_follow_the_atomic_data_swap_of_a_secret_volume() {
    let sc = Scratch::new("swap");
    let vol = sc.path("volume");
    kubelet_volume(&vol, "..2026_01_01_00_00_00.1", VALUE);
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/token", vol.join("token")).unwrap();
    let file = vol.join("token").display().to_string();
    let w = start(sc, file.clone(), &[]);
    let _holder = w.holder();
    let (pid, _) = read_with_io_uring(&file);
    w.agent
        .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == pid);
    // The kubelet's update: a new timestamped dir, `..data` swapped with a
    // rename, the old dir removed.
    kubelet_volume(&vol, "..2026_01_02_00_00_00.2", NEW_VALUE);
    std::os::unix::fs::symlink("..2026_01_02_00_00_00.2", vol.join("..data_tmp")).unwrap();
    std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
    std::fs::remove_dir_all(vol.join("..2026_01_01_00_00_00.1")).unwrap();
    let new_ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&file).unwrap().ino()
    };
    w.agent
        .wait_log(&format!("watching {file} (inode {new_ino})"));
    // A foreign read of the new content, by io_uring: the new inode is
    // watched (the io_uring read is reported once, fanotify's twin dropped).
    let (pid, n) = read_with_io_uring(&file);
    assert_eq!(n, (NEW_VALUE.len() + 1) as i64);
    let a = w
        .agent
        .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == pid);
    assert_eq!(a["secret_id"], "db-prod");
    assert_eq!(a["evidence"]["syscall"], "io_uring:read");
    let read = w.agent.wait_for("read of the new inode", |e| {
        e["kind"] == "read" && e["process"]["pid"] == pid
    });
    assert_eq!(read["inode"], new_ino);
}

/// `cat FILE` as a child of this test: (exit status ok, stdout, stderr).
fn cat(file: &str) -> (bool, String, String) {
    let out = Command::new("cat")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn enforce_denies_foreign_opens_and_never_outlives_the_agent() {
    let mut w = world("enforce", &["--enforce", "secret.read.foreign"]);
    let ready = w
        .agent
        .stderr()
        .into_iter()
        .find(|l| l.contains("ready"))
        .unwrap();
    assert!(ready.contains("enforcing secret.read.foreign"), "{ready}");
    let mut holder = w.holder();
    // A foreign cat: EPERM, and the alert says it was blocked.
    let (ok, out, err) = cat(&w.file);
    assert!(!ok, "foreign cat succeeded");
    assert!(out.is_empty(), "the secret leaked to a denied reader");
    assert!(err.contains("Operation not permitted"), "{err}");
    let a = w.agent.wait_alert("secret.read.foreign", |a| {
        a["evidence"]["blocked"] == true && a["actor"]["comm"] == "cat"
    });
    assert_eq!(a["secret_id"], "db-prod");
    assert_eq!(a["evidence"]["path"], w.file.as_str());
    // The holder, and a child it starts, still read it.
    let v = holder.run(&format!("_r = open({:?}).read().strip()", w.file));
    assert_eq!(v, VALUE);
    let v = holder.run(&format!(
        "_r = subprocess.run(['cat', {:?}], capture_output=True).stdout.decode().strip()",
        w.file
    ));
    assert_eq!(v, VALUE);
    // Files that are not delivery files are not refused.
    let other = w.sc.file("other.txt", b"hello\n");
    assert!(cat(&other).0);
    // The agent crashes: nobody is blocked any more.
    w.agent.kill_hard();
    let t0 = Instant::now();
    let (ok, out, err) = cat(&w.file);
    assert!(ok, "cat after the agent died: {err}");
    assert_eq!(out.trim(), VALUE);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn enforce_of_another_rule_is_refused_with_its_name() {
    let out = Command::new(MONITOR)
        .args([
            "run",
            "--enforce",
            "secret.leak.log",
            "--db",
            "/nonexistent/x.db",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret.leak.log") && err.contains("enforce"),
        "{err}"
    );
}

#[test]
fn check_says_fanotify_is_used() {
    require_root();
    let out = Command::new(MONITOR).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fanotify     ok   used: watched files through inode marks"),
        "{text}"
    );
}

#[test]
fn files_renamed_or_created_next_to_watched_ones_are_marked_at_once() {
    let sc = Scratch::new("dirs");
    let first = sc.file("w/first", b"x\n");
    let pattern = format!("{}/*", sc.path("w").display());
    let agent = Agent::start(&["--watch", &pattern]);
    agent.wait_log(&format!("watching {first} (inode"));
    // The periodic rescan runs every 2 s: four files each seen well within
    // a second show the directory marks at work.
    for i in 0..4 {
        let dest = sc.path(&format!("w/f{i}")).display().to_string();
        let t0 = Instant::now();
        if i % 2 == 0 {
            // An atomic replacement: written elsewhere, renamed in.
            let tmp = sc.path(&format!("tmp-{i}"));
            std::fs::write(&tmp, b"y\n").unwrap();
            std::fs::rename(&tmp, &dest).unwrap();
        } else {
            std::fs::write(&dest, b"y\n").unwrap();
        }
        agent.wait_log(&format!("watching {dest} (inode"));
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(900),
            "{dest} seen after {took:?}"
        );
    }
}
