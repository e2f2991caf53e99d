//! Hardening, on the real kernel: settings outside their bounds are
//! refused by name, everything the agent creates is private, failing
//! outputs (full disks, closed pipes, removed files) never stop the
//! monitoring, issuance input is not trusted beyond what it says, and a
//! killed agent's store survives. Run as root, single-threaded.
mod harness;

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use harness::*;
use serde_json::Value;

/// A secret value long enough to fingerprint.
const VALUE: &str = "hardening-7c1e9a4b2d8f3e6a";

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `monitor <args>`: it must fail before loading anything, with `want` in
/// its error.
fn refused(args: &[&str], want: &str) {
    let out = Command::new(MONITOR)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "monitor {args:?} was accepted:\n{err}"
    );
    assert!(
        err.contains(want),
        "monitor {args:?}: error does not name {want:?}:\n{err}"
    );
    assert!(
        !err.contains("monitor: ready"),
        "monitor {args:?} started before refusing:\n{err}"
    );
}

#[test]
fn out_of_range_settings_are_refused_with_their_name() {
    require_root();
    let sc = Scratch::new("bounds");
    let db = sc.path("db").display().to_string();
    let run = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into(), "--db".into(), db.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let flag_cases: &[(&[&str], &str)] = &[
        (
            &["--ring-bytes", "4294967295"],
            "setting ring_bytes (--ring-bytes) is 4294967295 bytes",
        ),
        (
            &["--ring-bytes", "3"],
            "setting ring_bytes (--ring-bytes) is 3 bytes",
        ),
        (
            &["--capture-bytes", "0"],
            "setting capture_bytes (--capture-bytes) is 0 bytes",
        ),
        (
            &["--capture-bytes", "999999"],
            "setting capture_bytes (--capture-bytes) is 999999 bytes",
        ),
        (
            &["--host-proc", "/nonexistent"],
            "setting host_proc (--host-proc) is /nonexistent",
        ),
    ];
    for (extra, want) in flag_cases {
        let args = run(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, want);
    }
    let config_cases: &[(&str, &str)] = &[
        ("argv_bytes = 0", "setting argv_bytes is 0 bytes"),
        ("env_bytes = 100000", "setting env_bytes is 100000 bytes"),
        ("retention_max_age = \"0s\"", "setting retention_max_age is 0 seconds"),
        ("retention_max_bytes = 5", "setting retention_max_bytes is 5 bytes"),
        ("aggregate_window_seconds = 0", "setting aggregate_window_seconds is 0"),
        ("ring_bytes = 3", "setting ring_bytes (--ring-bytes) is 3 bytes"),
        ("capture_rate = 2000000", "setting capture_rate is 2000000 full captures a second;"),
        ("capture_burst = 0", "setting capture_burst is 0 full captures;"),
        ("host_proc = \"/nonexistent\"", "setting host_proc (--host-proc) is /nonexistent"),
        (
            "libc = \"/nonexistent/libc.so.6\"",
            "setting libc is /nonexistent/libc.so.6",
        ),
        ("btf = \"/nonexistent/vmlinux\"", "setting btf is /nonexistent/vmlinux"),
        (
            "[[feeds]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nspool_dir = \"/tmp/x\"\nbatch_size = 0",
            "setting feeds.batch_size is 0",
        ),
    ];
    for (i, (toml, want)) in config_cases.iter().enumerate() {
        let config = sc.file(&format!("c{i}.toml"), toml.as_bytes());
        let args = run(&["--config", &config]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, want);
    }
    // `monitor check` refuses the same kernel-side settings.
    let config = sc.file("check.toml", b"argv_bytes = 0\n");
    refused(
        &["check", "--config", &config],
        "setting argv_bytes is 0 bytes",
    );
    let config = sc.file("check-burst.toml", b"capture_burst = 0\n");
    refused(
        &["check", "--config", &config],
        "setting capture_burst is 0 full captures;",
    );
    assert!(!sc.path("db").exists(), "a refused start created the store");
    // A burst larger than the ring is allowed but said, naming the
    // settings (the old default: 20,000 full captures, ~81 MiB).
    let config = sc.file("check-big-burst.toml", b"capture_burst = 20000\n");
    let out = Command::new(MONITOR)
        .args(["check", "--config", &config])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "WARN",
        "setting capture_burst is 20000 full captures of 4248 bytes each",
        "ring_bytes 16777216",
    ] {
        assert!(
            err.contains(want),
            "want {want:?} from monitor check:\n{err}"
        );
    }
    let config = sc.file("check-default-burst.toml", b"capture_rate = 10000\n");
    let out = Command::new(MONITOR)
        .args(["check", "--config", &config])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("capture_burst"), "{err}");
}

#[test]
fn everything_the_agent_creates_is_private() {
    let sc = Scratch::new("modes");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let state = sc.path("state/sub");
    let db = state.join("events.db");
    let out = sc.path("out/new");
    let alerts = out.join("alerts.json");
    let events = out.join("events.json");
    let feed = sc.path("feed/dir/ocsf.json");
    let spool = sc.path("spool/soc");
    let config = sc.file(
        "monitor.toml",
        format!(
            "[[feeds]]\ntype = \"file\"\npath = {:?}\nformat = \"ocsf\"\n\n\
             [[feeds]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/alerts\"\n\
             spool_dir = {:?}\n",
            feed.display().to_string(),
            spool.display().to_string()
        )
        .as_bytes(),
    );
    let agent = Agent::start(&[
        "--config",
        &config,
        "--db",
        &db.display().to_string(),
        "--alerts",
        &alerts.display().to_string(),
        "--events",
        &events.display().to_string(),
    ]);
    let holder = Py::spawn(&[]);
    agent.cli(&[
        "issue",
        "--secret-id",
        "modes",
        "--file",
        &file,
        "--pid",
        &holder.pid.to_string(),
    ]);
    let (cat, _) = run(Command::new("cat").arg(&file));
    let t0 = Instant::now();
    while !std::fs::read_to_string(&alerts)
        .unwrap_or_default()
        .contains(&format!("\"pid\":{cat}"))
    {
        assert!(
            t0.elapsed() < EVENT_TIMEOUT,
            "no alert in {}:\n{}",
            alerts.display(),
            agent.stderr().join("\n")
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The store has its WAL and shared memory while the agent runs.
    for f in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
        alerts.clone(),
        events.clone(),
        feed.clone(),
        agent.api.clone(),
    ] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    let mut spooled = 0;
    for e in std::fs::read_dir(&spool).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        spooled += 1;
    }
    assert!(spooled > 0, "nothing in the spool");
    for d in [
        state.clone(),
        sc.path("state"),
        out.clone(),
        sc.path("out"),
        sc.path("feed/dir"),
        sc.path("feed"),
        spool.clone(),
        sc.path("spool"),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    drop(holder);
    let (status, _) = agent.stop();
    assert!(status.success());
}

/// Issue `id` (delivered in `file`) to the process `pid` through the CLI;
/// `Err(stderr)` if the agent refused it.
fn issue(agent: &Agent, id: &str, file: &str, pid: u32, extra: &[&str]) -> Result<(), String> {
    let out = Command::new(MONITOR)
        .args(["issue", "--secret-id", id, "--file", file, "--pid"])
        .arg(pid.to_string())
        .args(extra)
        .arg("--api")
        .arg(&agent.api)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_glob_shaped_delivery_path_watches_only_that_literal_file() {
    let sc = Scratch::new("literal");
    // A file literally named `*`, and a sibling the glob would match.
    let star = sc.file("d/*", format!("{VALUE}\n").as_bytes());
    let other = sc.file("d/other", b"not the secret\n");
    let agent = Agent::start(&[]);
    let holder = Py::spawn(&[]);
    issue(&agent, "star", &star, holder.pid, &[]).unwrap();
    issue(&agent, "etc-star", "/etc/*", holder.pid, &[]).unwrap();
    let (_, watches) = api_get(&agent.api, "/watches");
    let patterns: Vec<&str> = watches
        .as_array()
        .unwrap()
        .iter()
        .map(|w| s(&w["pattern"]))
        .collect();
    assert!(patterns.contains(&"/etc/*"), "{watches}");
    // Files under /etc and the sibling: no open events (nothing watched).
    let (cat_etc, _) = run(Command::new("cat").args(["/etc/hostname", "/etc/passwd"]));
    let (cat_other, _) = run(Command::new("cat").arg(&other));
    // The literal `*` file is watched: its read is an event and a foreign
    // read alert (the marker that everything before it has arrived).
    let (cat_star, _) = run(Command::new("cat").arg(&star));
    agent.wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == cat_star);
    let open = agent.wait_for("open of the literal file", |e| {
        e["kind"] == "open" && e["process"]["pid"] == cat_star
    });
    assert_eq!(open["path"], star.as_str());
    for pid in [cat_etc, cat_other] {
        let evs: Vec<Value> = agent
            .events_of(pid)
            .into_iter()
            .filter(|e| e["kind"] != "exec" && e["kind"] != "exit" && e["kind"] != "fork")
            .collect();
        assert!(evs.is_empty(), "pid {pid} produced {evs:?}");
    }
    // A delivery path that can never be watched is an error in the report.
    let e = issue(&agent, "dir", "/etc", holder.pid, &[]).unwrap_err();
    assert!(
        e.contains("delivery[0].file") && e.contains("\"/etc\" is a directory"),
        "{e}"
    );
    drop(holder);
}

#[test]
fn a_holder_moving_reissue_is_refused_and_the_old_secret_still_alerts() {
    let sc = Scratch::new("reissue");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let issuances = sc.file("issuances.jsonl", b"");
    let agent = Agent::start(&["--metrics", &addr, "--issuances", &issuances]);
    let mut holder = Py::spawn(&[]);
    issue(&agent, "db-prod", &file, holder.pid, &[]).unwrap();
    holder.run(&format!("secret = open({file:?}).read().strip()"));
    let mut thief = Py::spawn(&[]);
    // Through the API: refused, naming both holders.
    let e = issue(&agent, "db-prod", &file, thief.pid, &[]).unwrap_err();
    assert!(
        e.contains("secret_id \"db-prod\" is already issued to holder")
            && e.contains(&format!("{{\"pid\":{}}}", holder.pid))
            && e.contains("\"replaces\": true"),
        "{e}"
    );
    agent.wait_log("api: issuance of \"db-prod\" refused: secret_id \"db-prod\" is already issued");
    // Through the tailed file: refused and logged with file and line.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&issuances)
        .unwrap();
    writeln!(
        f,
        "{}",
        serde_json::json!({"secret_id": "db-prod", "holder": {"pid": thief.pid},
                           "delivery": [{"file": file}]})
    )
    .unwrap();
    agent.wait_log(&format!("{issuances}:1: issuance of \"db-prod\" refused"));
    // The would-be holder reading the secret is still a foreign read.
    thief.run(&format!("stolen = open({file:?}).read()"));
    let a = agent.wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == thief.pid);
    assert_eq!(a["secret_id"], "db-prod");
    let (_, secrets) = api_get(&agent.api, "/secrets");
    let held = secrets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["secret_id"] == "db-prod")
        .unwrap()
        .clone();
    assert_eq!(held["holder"]["pid"], holder.pid, "{held}");
    let (_, m) = http_get(port, "/metrics");
    assert_eq!(
        sample(
            &m,
            "monitor_issuances_refused_total{reason=\"holder_change\"}"
        ),
        Some(2),
        "{m}"
    );
    // Saying it replaces the earlier issuance moves the holder.
    issue(&agent, "db-prod", &file, thief.pid, &["--replaces"]).unwrap();
    drop(holder);
}

/// A tmpfs of `size` mounted at `dir` for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the file system with `filler` until it is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Waits until `pred` holds of the metrics page; panics with it if not.
fn wait_metrics(port: u16, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let (_, m) = http_get(port, "/metrics");
        if pred(&m) {
            return m;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}:\n{m}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_full_disk_under_alerts_and_db_is_counted_and_monitoring_goes_on() {
    let sc = Scratch::new("full");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let alerts_fs = Tmpfs::mount(&sc.path("alerts-fs"), "256k");
    // Room enough, once freed, for what the node's other processes store
    // meanwhile (a busy machine's exec events filled a 2 MiB one again
    // before the recovery was seen).
    let db_fs = Tmpfs::mount(&sc.path("db-fs"), "64m");
    let alerts = alerts_fs.0.join("alerts.json");
    let db = db_fs.0.join("events.db");
    let feed = sc.path("feed.json");
    let config = sc.file(
        "monitor.toml",
        format!(
            "[[feeds]]\ntype = \"file\"\npath = {:?}\n",
            feed.display().to_string()
        )
        .as_bytes(),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let alerts_s = alerts.display().to_string();
    let db_s = db.display().to_string();
    let agent = Agent::start(&[
        "--config",
        &config,
        "--alerts",
        &alerts_s,
        "--db",
        &db_s,
        "--metrics",
        &addr,
    ]);
    let holder = Py::spawn(&[]);
    issue(&agent, "full", &file, holder.pid, &[]).unwrap();
    alerts_fs.fill();
    db_fs.fill();
    // Foreign reads: alerts, and stored events, on full disks.
    let mut pids = Vec::new();
    for _ in 0..20 {
        pids.push(run(Command::new("cat").arg(&file)).0);
    }
    // Every alert still reaches the file feed.
    let t0 = Instant::now();
    loop {
        let fed = std::fs::read_to_string(&feed).unwrap_or_default();
        if pids.iter().all(|p| fed.contains(&format!("\"pid\":{p},"))) {
            break;
        }
        assert!(
            t0.elapsed() < EVENT_TIMEOUT,
            "the feed lacks alerts:\n{fed}\n{}",
            agent.stderr().join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
    let out = format!("alerts:{alerts_s}");
    let m = wait_metrics(port, "no store or output failure counted", |m| {
        sample(
            m,
            &format!("monitor_output_failures_total{{output=\"{out}\"}}"),
        )
        .unwrap_or(0)
            > 0
            && sample(m, "monitor_store_dropped_total").unwrap_or(0) > 0
    });
    assert!(
        sample(
            &m,
            &format!("monitor_output_lost_total{{output=\"{out}\"}}")
        )
        .unwrap_or(0)
            > 0,
        "{m}"
    );
    let (status, body) = http_get(port, "/healthz");
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    let reasons = h["reasons"].to_string();
    assert!(
        reasons.contains(&alerts_s) && reasons.contains("No space left on device"),
        "{h}"
    );
    assert!(
        reasons.contains(&format!("store {db_s}: writes fail")),
        "{h}"
    );
    // The log names the file.
    agent.wait_log(&format!("alerts to {alerts_s}: No space left on device"));
    // Space again: both outputs recover, health turns ok.
    alerts_fs.free();
    db_fs.free();
    let t0 = Instant::now();
    let last = loop {
        let (pid, _) = run(Command::new("cat").arg(&file));
        thread::sleep(Duration::from_millis(500));
        let written = std::fs::read_to_string(&alerts).unwrap_or_default();
        let (_, body) = http_get(port, "/healthz");
        if written.contains(&format!("\"pid\":{pid},")) && body.contains("\"status\":\"ok\"") {
            break pid;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no recovery: {body}\n{}",
            agent.stderr().join("\n")
        );
    };
    let (_, page) = api_get(&agent.api, &format!("/alerts?pid={last}"));
    assert_eq!(page["items"][0]["actor"]["pid"], last, "{page}");
    drop(holder);
    let (status, log) = agent.stop();
    assert!(status.success(), "{}", log.join("\n"));
}

#[test]
fn alerts_to_a_closed_pipe_warn_once_and_monitoring_goes_on() {
    require_root();
    let sc = Scratch::new("pipe");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let feed = sc.path("feed.json");
    let config = sc.file(
        "monitor.toml",
        format!(
            "[[feeds]]\ntype = \"file\"\npath = {:?}\n",
            feed.display().to_string()
        )
        .as_bytes(),
    );
    let api = sc.path("api.sock");
    let db = sc.path("events.db");
    // monitor run --alerts - | head -c 100
    let mut agent = Command::new(MONITOR)
        .args(["run", "--alerts", "-", "--config", &config])
        .arg("--api")
        .arg(&api)
        .arg("--db")
        .arg(&db)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = Command::new("head")
        .args(["-c", "100"])
        .stdin(agent.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l2 = log.clone();
    let err = agent.stderr.take().unwrap();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(line);
        }
    });
    let wait_log = |needle: &str| {
        let t0 = Instant::now();
        while !log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "never logged {needle:?}:\n{}",
                log.lock().unwrap().join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    wait_log("monitor: ready");
    let holder = Py::spawn(&[]);
    let out = Command::new(MONITOR)
        .args(["issue", "--secret-id", "pipe", "--file", &file, "--pid"])
        .arg(holder.pid.to_string())
        .arg("--api")
        .arg(&api)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Alerts until `head` has its 100 bytes and exits.
    let mut first = Vec::new();
    let t0 = Instant::now();
    while head.try_wait().unwrap().is_none() {
        first.push(run(Command::new("cat").arg(&file)).0);
        assert!(t0.elapsed() < EVENT_TIMEOUT, "head never exited");
        thread::sleep(Duration::from_millis(200));
    }
    let mut got = String::new();
    std::io::Read::read_to_string(head.stdout.as_mut().unwrap(), &mut got).unwrap();
    assert_eq!(got.len(), 100);
    // More alerts into the closed pipe.
    let mut later = Vec::new();
    for _ in 0..5 {
        later.push(run(Command::new("cat").arg(&file)).0);
        thread::sleep(Duration::from_millis(200));
    }
    wait_log("alerts to stdout: the reader closed the pipe");
    // They still reach the feed and the store; the agent still runs.
    let t0 = Instant::now();
    loop {
        let fed = std::fs::read_to_string(&feed).unwrap_or_default();
        if later.iter().all(|p| fed.contains(&format!("\"pid\":{p},"))) {
            break;
        }
        assert!(
            t0.elapsed() < EVENT_TIMEOUT,
            "the feed lacks alerts:\n{fed}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    for p in &later {
        let (_, page) = api_get(&api, &format!("/alerts?pid={p}"));
        assert_eq!(page["items"][0]["actor"]["pid"], *p, "{page}");
    }
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
    let warned = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("closed the pipe"))
        .count();
    assert_eq!(warned, 1, "{}", log.lock().unwrap().join("\n"));
    unsafe { libc_kill(agent.id() as i32, 15) };
    let st = agent.wait().unwrap();
    assert!(st.success(), "{}", log.lock().unwrap().join("\n"));
    drop(holder);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn kill_9_during_a_burst_keeps_the_store_intact() {
    let sc = Scratch::new("kill9");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let db = sc.path("store/events.db");
    let db_s = db.display().to_string();
    let agent = Agent::start(&["--db", &db_s]);
    let holder = Py::spawn(&[]);
    issue(&agent, "kill9", &file, holder.pid, &[]).unwrap();
    let mut pids = Vec::new();
    for _ in 0..10 {
        pids.push(run(Command::new("cat").arg(&file)).0);
    }
    for p in &pids {
        agent.wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == *p);
    }
    // What the store holds now (the API flushes it first).
    let (_, before) = api_get(&agent.api, "/alerts?limit=1000");
    let before: Vec<Value> = before["items"].as_array().unwrap().clone();
    assert!(before.len() >= pids.len(), "{before:?}");
    // A burst of watched-file reads, and SIGKILL in the middle of it.
    let burst = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in $(seq 1 400); do cat {file:?} >/dev/null; done"
        ))
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(700));
    let mut burst = burst;
    assert!(
        burst.try_wait().unwrap().is_none(),
        "the burst ended before the kill"
    );
    unsafe { libc_kill(agent.pid() as i32, 9) };
    let _ = burst.wait();
    drop(agent);
    // The database is intact...
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    // ...and a restarted agent on it still has every earlier alert.
    let agent = Agent::start(&["--db", &db_s]);
    let (_, after) = api_get(&agent.api, "/alerts?limit=100000");
    let after = after["items"].as_array().unwrap();
    for a in &before {
        assert!(
            after.iter().any(|b| b == a),
            "alert lost after kill -9: {a}"
        );
    }
    // And it goes on storing (issuances are not kept across restarts).
    issue(&agent, "kill9", &file, holder.pid, &[]).unwrap();
    let (p2, _) = run(Command::new("cat").arg(&file));
    agent.wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == p2);
    let (_, page) = api_get(&agent.api, &format!("/alerts?pid={p2}"));
    assert_eq!(page["items"][0]["actor"]["pid"], p2, "{page}");
    drop(holder);
}

#[test]
fn a_removed_alerts_file_is_reopened() {
    let sc = Scratch::new("removed");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let alerts = sc.path("out/alerts.json");
    let alerts_s = alerts.display().to_string();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--alerts", &alerts_s, "--metrics", &addr]);
    let holder = Py::spawn(&[]);
    issue(&agent, "removed", &file, holder.pid, &[]).unwrap();
    let wait_in_file = |pid: u32| {
        let t0 = Instant::now();
        while !std::fs::read_to_string(&alerts)
            .unwrap_or_default()
            .contains(&format!("\"pid\":{pid},"))
        {
            assert!(
                t0.elapsed() < EVENT_TIMEOUT,
                "alert of {pid} not in {alerts_s}:\n{}",
                agent.stderr().join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    let (first, _) = run(Command::new("cat").arg(&file));
    wait_in_file(first);
    std::fs::remove_file(&alerts).unwrap();
    agent.wait_log(&format!("alerts file {alerts_s} was removed: reopening it"));
    let (second, _) = run(Command::new("cat").arg(&file));
    wait_in_file(second);
    assert_eq!(mode(&alerts), 0o600);
    let out = format!("alerts:{alerts_s}");
    wait_metrics(port, "the removal is not counted", |m| {
        sample(
            m,
            &format!("monitor_output_failures_total{{output=\"{out}\"}}"),
        ) == Some(1)
            && sample(m, &format!("monitor_output_lost_total{{output=\"{out}\"}}")) == Some(0)
    });
    drop(holder);
}

/// Holds 100 connections (unix socket `argv[1]`, or TCP `argv[1]:argv[2]`
/// from 127.0.0.2), sending nothing; prints `ready`. On a line on stdin,
/// says what became of each, as a JSON list: with `send`, the status each
/// answered a request with (`"none"` if none); else whether the agent
/// answered without a request (a refusal) or still holds it (`"held"`).
const SLOW_PEER: &str = r#"
import json, socket, sys, time
conns = []
for _ in range(100):
    if len(sys.argv) == 2:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
    else:
        s = socket.socket(socket.AF_INET)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", int(sys.argv[2])))
    conns.append(s)
print("ready", flush=True)
mode = sys.stdin.readline().strip()
out = []
if mode == "send":
    for s in conns:
        s.sendall(b"GET /watches HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    for s in conns:
        s.settimeout(5)
        data = b""
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
        except OSError:
            pass
        head, _, body = data.decode("latin-1").partition("\r\n\r\n")
        out.append([head.split(" ")[1] if head.startswith("HTTP/") else "none", body])
else:
    time.sleep(0.5)
    for s in conns:
        s.setblocking(False)
        try:
            data = s.recv(65536)
        except BlockingIOError:
            out.append(["held", ""])
            continue
        head, _, body = data.decode("latin-1").partition("\r\n\r\n")
        out.append([head.split(" ")[1] if head.startswith("HTTP/") else "closed", body])
print(json.dumps(out), flush=True)
"#;

/// Tells a [`SLOW_PEER`] to go on with `mode`; its verdicts.
fn slow_peer_verdicts(
    mut child: std::process::Child,
    mut out: std::io::BufReader<std::process::ChildStdout>,
    mode: &str,
) -> Vec<(String, String)> {
    use std::io::{BufRead, Write};
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{mode}").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let _ = child.wait();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn count(verdicts: &[(String, String)], what: &str) -> usize {
    verdicts.iter().filter(|(v, _)| v == what).count()
}

/// One process holding 100 connections to the API socket gets 8 slots
/// (`MAX_CONNECTIONS_PER_PEER`): another process is still answered at once
/// (with one global cap of 64, it would get 503), and the slow process's
/// other 92 connections are answered 503.
#[test]
fn a_process_holding_100_api_connections_leaves_room_for_others() {
    let agent = Agent::start(&[]);
    let api = agent.api.display().to_string();
    let (child, out) = python_bg(SLOW_PEER, &[&api]);
    let t0 = Instant::now();
    let (status, body) = api_get(&agent.api, "/watches");
    let took = t0.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    let v = slow_peer_verdicts(child, out, "send");
    assert_eq!(v.len(), 100);
    assert_eq!(count(&v, "200"), 8, "{v:?}");
    assert_eq!(count(&v, "503"), 92, "{v:?}");
    // Accepted in order: the first 8 hold the slots.
    assert!(v[..8].iter().all(|(s, _)| s == "200"), "{v:?}");
    let refusal: Value = serde_json::from_str(&v[8].1).unwrap();
    assert_eq!(
        refusal["error"],
        "too many connections from this process (at most 8)"
    );
    // Its slots come back: the same test process still gets answers.
    let (status, _) = api_get(&agent.api, "/watches");
    assert_eq!(status, 200);
    agent.stop();
}

/// 100 connections from 127.0.0.2 to the metrics server, sending nothing:
/// 8 are held (`MAX_CONNECTIONS_PER_PEER`), 92 are answered 503 and closed
/// at once, and 127.0.0.1 is answered at once (with only the global cap of
/// 32, it would wait for the slow ones' 5 s timeout).
#[test]
fn a_host_holding_100_metrics_connections_leaves_room_for_others() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--metrics", &addr]);
    let (child, out) = python_bg(SLOW_PEER, &["127.0.0.1", &port.to_string()]);
    let (status, body, took) = http_get_timed(port, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("monitor_probes_attached"), "{body}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    let v = slow_peer_verdicts(child, out, "look");
    assert_eq!(count(&v, "held"), 8, "{v:?}");
    assert_eq!(count(&v, "503"), 92, "{v:?}");
    assert!(v[..8].iter().all(|(s, _)| s == "held"), "{v:?}");
    assert_eq!(v[8].1, "too many connections from 127.0.0.2 (at most 8)\n");
    agent.stop();
}

/// The agent's JSON log lines whose message contains `needle`.
fn json_log_lines(agent: &Agent, needle: &str) -> Vec<Value> {
    agent
        .stderr()
        .iter()
        .filter(|l| l.contains(needle))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Issues `id` (file `file`, held by `pid`) through the tailed `issuances`.
fn append_issuance(issuances: &str, id: &str, file: &str, pid: u32) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(issuances)
        .unwrap();
    let rec = serde_json::json!({"secret_id": id, "holder": {"pid": pid},
                                 "delivery": [{"file": file}]});
    writeln!(f, "{rec}").unwrap();
}

/// With `RUST_LOG=monitor=debug` and `--log-format json`, a line logged
/// inside a pipeline stage names the stage's span and its fields: the
/// ingestion of a tailed record (`ingest`, origin file:line) and an alert
/// going out (`sink`, a debug line with the rule and the actor's pid).
#[test]
fn json_log_lines_carry_the_pipeline_stage_spans_at_debug() {
    let sc = Scratch::new("spans");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let issuances = sc.file("issuances.jsonl", b"");
    let mut agent = Agent::start_env(
        &["--log-format", "json", "--issuances", &issuances],
        &[("RUST_LOG", "monitor=debug")],
    );
    let mut holder = Py::spawn(&[]);
    append_issuance(&issuances, "db-spans", &file, holder.pid);
    agent.wait_log("secret db-spans recorded");
    let lines = json_log_lines(&agent, "secret db-spans recorded");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["level"], "INFO", "{l}");
    assert_eq!(l["span"]["name"], "ingest", "{l}");
    assert_eq!(l["span"]["origin"], format!("{issuances}:1"), "{l}");
    assert_eq!(l["span"]["record"], "issue", "{l}");
    let spans: Vec<&str> = l["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no span list: {l}"))
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(spans.last(), Some(&"ingest"), "{l}");
    holder.run(&format!("secret = open({file:?}).read().strip()"));
    // A foreign read: the alert goes out inside the `sink` span.
    let mut thief = Py::spawn(&[]);
    thief.run(&format!("stolen = open({file:?}).read()"));
    agent.wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == thief.pid);
    let out = json_log_lines(&agent, "alert out");
    let l = out
        .iter()
        .find(|l| l["fields"]["rule"] == "secret.read.foreign" && l["fields"]["pid"] == thief.pid)
        .unwrap_or_else(|| panic!("no `alert out` line for the thief: {out:?}"));
    assert_eq!(l["level"], "DEBUG", "{l}");
    assert_eq!(l["fields"]["secret_id"], "db-spans", "{l}");
    assert_eq!(l["span"]["name"], "sink", "{l}");
    assert!(l["span"]["alerts"].as_u64() >= Some(1), "{l}");
    // Per-event spans are trace level: not at debug.
    let stderr = agent.stderr().join("\n");
    for trace_only in ["\"name\":\"enrich\"", "\"name\":\"correlate\""] {
        assert!(!stderr.contains(trace_only), "{trace_only} at debug");
    }
    // And never the secret.
    agent.assert_never_wrote(&[VALUE], &[]);
    drop((holder, thief));
}

/// At the default level (`info`) the same ingestion line has no span: the
/// stage spans are off.
#[test]
fn no_span_in_the_log_at_the_default_level() {
    let sc = Scratch::new("nospans");
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let issuances = sc.file("issuances.jsonl", b"");
    let agent = Agent::start(&["--log-format", "json", "--issuances", &issuances]);
    let holder = Py::spawn(&[]);
    append_issuance(&issuances, "db-nospans", &file, holder.pid);
    agent.wait_log("secret db-nospans recorded");
    let lines = json_log_lines(&agent, "secret db-nospans recorded");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].get("span").is_none(), "{}", lines[0]);
    assert!(lines[0].get("spans").is_none(), "{}", lines[0]);
    for l in agent.stderr() {
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("span").is_none() && v.get("spans").is_none(), "{l}");
        assert_ne!(v["level"], "DEBUG", "{l}");
    }
    drop(holder);
    agent.stop();
}
