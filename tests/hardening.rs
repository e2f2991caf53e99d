//! Hardening, on the real kernel: settings outside their bounds are
//! refused by name, everything the agent creates is private, failing
//! outputs (full disks, closed pipes, removed files) never stop the
//! monitoring, issuance input is not trusted beyond what it says, and a
//! killed agent's store survives. Run as root, single-threaded.
mod harness;

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use harness::*;

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
    assert!(!sc.path("db").exists(), "a refused start created the store");
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
