//! Real-kernel tests of the sensors and the event pipeline: real processes
//! open, read, write, exec and connect; each test asserts the exact events
//! the agent reports. Run as root, single-threaded (`cargo xtask test`).
mod harness;

use std::{io::Read, net::TcpListener, process::Command, time::Duration};

use harness::*;
use serde_json::Value;

const SECRET: &[u8] = b"s3cr3t-db-password-0123456789\n";

fn pid_is(e: &Value, pid: u32) -> bool {
    e["process"]["pid"] == pid
}

fn kind(e: &Value, k: &str) -> bool {
    e["kind"] == k
}

/// A watched secret file and the agent watching its directory. These tests
/// watch what any process does to the file with no holder issued, so the
/// capture programs stay attached (`--capture-always`; on demand, see
/// `capture_probes_attach_only_while_a_holder_is_alive`).
fn setup(name: &str) -> (Scratch, String, String, Agent) {
    let sc = Scratch::new(name);
    let file = sc.file("secrets/db", SECRET);
    let pattern = format!("{}/secrets/*", sc.dir.display());
    let agent = Agent::start(&["--watch", &pattern, "--capture-always"]);
    (sc, file, pattern, agent)
}

#[test]
fn open_and_read_of_a_watched_file() {
    let (_sc, file, pattern, agent) = setup("read");
    let (pid, out) = run(Command::new("cat").arg(&file));
    assert_eq!(out.as_bytes(), SECRET);

    let open = agent.wait_for("open by cat", |e| kind(e, "open") && pid_is(e, pid));
    assert_eq!(open["path"], file.as_str());
    assert_eq!(open["watch"], pattern.as_str());
    assert_eq!(open["fd_kind"], "file");
    assert_eq!(open["process"]["comm"], "cat");
    assert_eq!(open["tracked"], true);
    let fd = open["fd"].as_i64().unwrap();
    assert!(fd >= 3);

    let read = agent.wait_for("read by cat", |e| kind(e, "read") && pid_is(e, pid));
    assert_eq!(read["fd"], fd);
    assert_eq!(read["path"], file.as_str());
    assert_eq!(read["bytes"], SECRET.len() as u64);
    assert_eq!(read["captured"], SECRET.len() as u64);
    assert_eq!(read["truncated"], false);
    assert_eq!(read["syscall"], "read");
    // cat's EOF read returns 0 bytes: no second read event.
    let close = agent.wait_for("close by cat", |e| kind(e, "close") && pid_is(e, pid));
    assert_eq!(close["fd"], fd);
    let reads = agent
        .events_of(pid)
        .into_iter()
        .filter(|e| kind(e, "read"))
        .count();
    assert_eq!(reads, 1);
    // The exe and the ppid come from enrichment.
    assert_eq!(
        read["process"]["exe"].as_str().map(|s| s.ends_with("/cat")),
        Some(true)
    );
    assert_eq!(read["process"]["ppid"], std::process::id());
}

#[test]
fn read_through_a_duped_fd() {
    let (_sc, file, _pattern, agent) = setup("dup");
    let script = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fd2 = os.dup(fd)
os.close(fd)
os.dup2(fd2, 40)
n = len(os.read(40, 7))
m = len(os.read(fd2, 100))
print(fd, fd2, n, m)
"#;
    let (pid, out) = python(script, &[&file]);
    let nums: Vec<i64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let (fd, fd2) = (nums[0], nums[1]);
    assert_eq!(nums[2], 7);

    let open = agent.wait_for("open", |e| {
        kind(e, "open") && pid_is(e, pid) && e["path"] == file.as_str()
    });
    assert_eq!(open["fd"], fd);
    // Python's os.dup is fcntl(F_DUPFD_CLOEXEC): the event names the real syscall.
    let dup = agent.wait_for("dup", |e| {
        kind(e, "dup") && pid_is(e, pid) && e["oldfd"] == fd
    });
    assert_eq!(dup["syscall"], "fcntl");
    assert_eq!(dup["newfd"], fd2);
    assert_eq!(dup["path"], file.as_str());
    let dup2 = agent.wait_for("dup2", |e| {
        kind(e, "dup") && pid_is(e, pid) && e["syscall"] == "dup2"
    });
    assert_eq!(dup2["oldfd"], fd2);
    assert_eq!(dup2["newfd"], 40);
    let read40 = agent.wait_for("read fd 40", |e| {
        kind(e, "read") && pid_is(e, pid) && e["fd"] == 40
    });
    assert_eq!(read40["bytes"], 7);
    assert_eq!(read40["path"], file.as_str());
    let read2 = agent.wait_for("read dup fd", |e| {
        kind(e, "read") && pid_is(e, pid) && e["fd"] == fd2
    });
    assert_eq!(read2["bytes"], (SECRET.len() - 7) as u64);
    // The original fd was closed before any read: no read on it.
    assert!(!agent
        .events_of(pid)
        .iter()
        .any(|e| kind(e, "read") && e["fd"] == fd));
}

#[test]
fn mmap_of_a_watched_file() {
    let (_sc, file, _pattern, agent) = setup("mmap");
    let script = r#"
import os, sys, mmap
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
print(fd, len(m[:]))
"#;
    let (pid, out) = python(script, &[&file]);
    let nums: Vec<i64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let ev = agent.wait_for("mmap", |e| kind(e, "mmap") && pid_is(e, pid));
    assert_eq!(ev["fd"], nums[0]);
    assert_eq!(ev["path"], file.as_str());
    assert_eq!(ev["bytes"], SECRET.len() as u64);
    assert_eq!(ev["prot"], 1); // PROT_READ
}

#[test]
fn cp_of_a_watched_file_is_an_in_kernel_copy() {
    let (sc, file, _pattern, agent) = setup("cp");
    let dest = sc.path("copy-of-db").display().to_string();
    let (pid, _) = run(Command::new("cp").arg(&file).arg(&dest));
    let ev = agent.wait_for("copy by cp", |e| kind(e, "copy") && pid_is(e, pid));
    assert!(
        ["copy_file_range", "sendfile", "splice"].contains(&s(&ev["syscall"])),
        "{ev}"
    );
    assert_eq!(ev["path"], file.as_str());
    assert_eq!(ev["out_path"], dest.as_str());
    assert_eq!(ev["out_kind"], "file");
    assert!(ev["bytes"].as_u64().unwrap() >= SECRET.len() as u64);
    // cp opened the destination after the source: tracked, so its path is known.
    let open_dest = agent.wait_for("open of dest", |e| {
        kind(e, "open") && pid_is(e, pid) && e["path"] == dest.as_str()
    });
    assert_eq!(open_dest["tracked"], true);
}

#[test]
fn exec_reports_filename_argv_and_env_names_only() {
    let (_sc, _file, _pattern, agent) = setup("exec");
    let nonce = format!("monitor-argv-{}", std::process::id());
    let (pid, out) = run(Command::new("/bin/echo")
        .arg(&nonce)
        .arg("second arg")
        .env("MONITOR_TEST_VAR", "value-not-reported"));
    assert!(out.contains(&nonce));
    let ev = agent.wait_for("exec of echo", |e| kind(e, "exec") && pid_is(e, pid));
    assert_eq!(ev["filename"], "/bin/echo");
    assert_eq!(
        ev["argv"],
        serde_json::json!(["/bin/echo", nonce, "second arg"])
    );
    let env: Vec<&str> = ev["env"].as_array().unwrap().iter().map(s).collect();
    assert!(env.contains(&"MONITOR_TEST_VAR"), "{env:?}");
    assert_eq!(ev["process"]["comm"], "echo");
    assert_eq!(ev["process"]["ppid"], std::process::id());
    assert!(!ev.to_string().contains("value-not-reported"));
}

#[test]
fn connect_and_send_by_a_tracked_process_v4_and_v6() {
    let (_sc, file, _pattern, agent) = setup("connect");
    let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let (p4, p6) = (
        l4.local_addr().unwrap().port(),
        l6.local_addr().unwrap().port(),
    );
    let accept = |l: TcpListener| {
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).unwrap();
            buf
        })
    };
    let (a4, a6) = (accept(l4), accept(l6));
    let script = r#"
import socket, sys
open(sys.argv[1]).read()
s4 = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
s4.send(b"hello-v4")
s6 = socket.socket(socket.AF_INET6)
s6.connect(("::1", int(sys.argv[3])))
s6.sendall(b"hello-v6!")
print(s4.fileno(), s6.fileno())
s4.close(); s6.close()
"#;
    let (pid, out) = python(script, &[&file, &p4.to_string(), &p6.to_string()]);
    let fds: Vec<i64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(a4.join().unwrap(), b"hello-v4");
    assert_eq!(a6.join().unwrap(), b"hello-v6!");

    let d4 = format!("127.0.0.1:{p4}");
    let d6 = format!("[::1]:{p6}");
    let c4 = agent.wait_for("connect v4", |e| {
        kind(e, "connect") && pid_is(e, pid) && e["dest"] == d4.as_str()
    });
    assert_eq!(c4["fd"], fds[0]);
    let c6 = agent.wait_for("connect v6", |e| {
        kind(e, "connect") && pid_is(e, pid) && e["dest"] == d6.as_str()
    });
    assert_eq!(c6["fd"], fds[1]);
    let w4 = agent.wait_for("send v4", |e| {
        kind(e, "write") && pid_is(e, pid) && e["fd"] == fds[0]
    });
    assert_eq!(w4["dest"], d4.as_str());
    assert_eq!(w4["fd_kind"], "socket");
    assert_eq!(w4["bytes"], 8);
    assert_eq!(w4["captured"], 8);
    let w6 = agent.wait_for("send v6", |e| {
        kind(e, "write") && pid_is(e, pid) && e["fd"] == fds[1]
    });
    assert_eq!(w6["dest"], d6.as_str());
    assert_eq!(w6["bytes"], 9);
}

#[test]
fn writes_of_a_tracked_process_to_stdout_a_pipe_and_a_file() {
    let (sc, file, _pattern, agent) = setup("writes");
    let out_file = sc.path("out.txt").display().to_string();
    let script = r#"
import os, sys
open(sys.argv[1]).read()
os.write(1, b"to-stdout\n")
r, w = os.pipe()
os.write(w, b"into-pipe")
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, b"into-a-file!")
os.close(fd)
null = os.open("/dev/null", os.O_WRONLY)
os.write(null, b"x")
print(w, fd, null)
"#;
    let (pid, out) = python(script, &[&file, &out_file]);
    let last = out.lines().last().unwrap();
    let fds: Vec<i64> = last
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();

    let stdout = agent.wait_for("write to stdout", |e| {
        kind(e, "write") && pid_is(e, pid) && e["fd"] == 1
    });
    assert_eq!(stdout["fd_kind"], "pipe"); // the test reads the child's stdout through a pipe
    assert_eq!(stdout["bytes"], 10);
    let pipe = agent.wait_for("write to pipe", |e| {
        kind(e, "write") && pid_is(e, pid) && e["fd"] == fds[0]
    });
    assert_eq!(pipe["fd_kind"], "pipe");
    assert_eq!(pipe["bytes"], 9);
    let f = agent.wait_for("write to file", |e| {
        kind(e, "write") && pid_is(e, pid) && e["fd"] == fds[1] && e["fd_kind"] == "file"
    });
    assert_eq!(f["path"], out_file.as_str());
    assert_eq!(f["bytes"], 12);
    let null = agent.wait_for("write to /dev/null", |e| {
        kind(e, "write") && pid_is(e, pid) && e["fd"] == fds[2] && e["bytes"] == 1
    });
    assert_eq!(null["fd_kind"], "chardev");
    assert_eq!(null["path"], "/dev/null");
}

#[test]
fn reading_another_process_environ_is_reported() {
    let (_sc, file, _pattern, agent) = setup("environ");
    let holder = r#"
import sys
open(sys.argv[1]).read()
print("ready", flush=True)
sys.stdin.readline()
"#;
    let (child, _out) = python_bg(holder, &[&file]);
    let target = child.id();
    agent.wait_for("holder read", |e| kind(e, "read") && pid_is(e, target));
    let environ = format!("/proc/{target}/environ");
    let (pid, _) = run(Command::new("cat").arg(&environ));
    let ev = agent.wait_for("proc_access", |e| kind(e, "proc_access") && pid_is(e, pid));
    assert_eq!(ev["target_pid"], target);
    assert_eq!(ev["access"], "environ");
    assert_eq!(ev["target_tracked"], true);
    assert_eq!(ev["process"]["comm"], "cat");
    finish(child);
}

#[test]
fn tracking_is_inherited_across_fork() {
    let (_sc, file, _pattern, agent) = setup("fork");
    let script = r#"
import os, sys
open(sys.argv[1]).read()
pid = os.fork()
if pid == 0:
    os.write(1, b"child-bytes")
    os._exit(0)
os.waitpid(pid, 0)
print()
print(pid)
"#;
    let (parent, out) = python(script, &[&file]);
    let child: u32 = out.lines().last().unwrap().trim().parse().unwrap();
    let fork = agent.wait_for("fork", |e| {
        kind(e, "fork") && pid_is(e, parent) && e["child_pid"] == child
    });
    assert_eq!(fork["tracked"], true);
    let w = agent.wait_for("child write", |e| kind(e, "write") && pid_is(e, child));
    assert_eq!(w["bytes"], 11);
    assert_eq!(w["tracked"], true);
    assert_eq!(w["process"]["ppid"], parent);
    agent.wait_for("child exit", |e| kind(e, "exit") && pid_is(e, child));
}

#[test]
fn untracked_processes_produce_no_payload_events() {
    let (sc, file, _pattern, agent) = setup("untracked");
    let other = sc.file("not-watched.txt", b"plain data\n");
    let sink = sc.path("sink.txt").display().to_string();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut b = Vec::new();
        c.read_to_end(&mut b).unwrap();
    });
    // Same actions as the tracked tests, by processes that never touch a
    // watched file.
    let script = r#"
import os, sys, socket
open(sys.argv[1]).read()
os.write(1, b"stdout\n")
r, w = os.pipe(); os.write(w, b"pipe")
with open(sys.argv[2], "w") as f: f.write("file")
s = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
s.close()
"#;
    let (pid, _) = python(script, &[&other, &sink, &port.to_string()]);
    let (cat_pid, _) = run(Command::new("cat").arg(&other));
    t.join().unwrap();
    // Marker: a tracked read after everything above.
    let (marker, _) = run(Command::new("cat").arg(&file));
    let evs = agent.all_after_marker(
        "marker read",
        |e| kind(e, "read") && pid_is(e, marker),
        |e| pid_is(e, pid) || pid_is(e, cat_pid),
    );
    let payload: Vec<&Value> = evs
        .iter()
        .filter(|e| ["open", "read", "write", "copy", "connect", "mmap"].contains(&s(&e["kind"])))
        .collect();
    assert!(
        payload.is_empty(),
        "untracked processes produced {payload:?}"
    );
    // Their lifecycle is still seen.
    assert!(evs.iter().any(|e| kind(e, "exec") && pid_is(e, pid)));
    assert!(evs.iter().all(|e| e["tracked"] == false));
}

#[test]
fn getenv_of_a_tracked_process() {
    let (_sc, file, _pattern, agent) = setup("getenv");
    let script = r#"
import ctypes, sys
open(sys.argv[1]).read()
libc = ctypes.CDLL("libc.so.6")
libc.getenv.restype = ctypes.c_char_p
libc.getenv(b"MONITOR_PROBE_VAR")
"#;
    let (pid, _) = python(script, &[&file]);
    let ev = agent.wait_for("getenv", |e| {
        kind(e, "getenv") && pid_is(e, pid) && e["name"] == "MONITOR_PROBE_VAR"
    });
    assert_eq!(ev["syscall"], "getenv");
    assert_eq!(ev["tracked"], true);
}

#[test]
fn files_appearing_after_start_are_watched() {
    let sc = Scratch::new("late");
    std::fs::create_dir_all(sc.path("secrets")).unwrap();
    let pattern = format!("{}/secrets/*", sc.dir.display());
    let agent = Agent::start(&["--watch", &pattern, "--capture-always"]);
    let file = sc.file("secrets/late", SECRET);
    // The agent rescans watched patterns every 2 s.
    let t0 = std::time::Instant::now();
    let pid = loop {
        let (pid, _) = run(Command::new("cat").arg(&file));
        std::thread::sleep(std::time::Duration::from_millis(300));
        if agent.events_of(pid).iter().any(|e| kind(e, "read")) {
            break pid;
        }
        assert!(
            t0.elapsed().as_secs() < 10,
            "late file never watched:\n{}",
            agent.stderr().join("\n")
        );
    };
    let read = agent.wait_for("late read", |e| kind(e, "read") && pid_is(e, pid));
    assert_eq!(read["path"], file.as_str());
}

/// Our programs as the kernel lists them (names are cut to 15 bytes).
fn our_programs_loaded() -> usize {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| {
            let n = p.name_as_str().unwrap_or("");
            ["sys_exit_openat", "sys_enter_write", "task_newtask"].contains(&n)
        })
        .count()
}

/// Ids of the BPF programs a process holds (its program and link fds).
fn programs_of(pid: u32) -> std::collections::BTreeSet<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[test]
fn agent_stops_cleanly_and_detaches() {
    let (_sc, _file, _pattern, agent) = setup("stop");
    assert!(
        our_programs_loaded() >= 3,
        "programs not visible while running"
    );
    // The programs of *this* agent (other agents may run meanwhile).
    let ours = programs_of(agent.pid());
    assert!(ours.len() >= 3, "{ours:?}");
    let (status, log) = agent.stop();
    assert!(status.success(), "exit {status}: {}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("monitor: stopped:")),
        "{}",
        log.join("\n")
    );
    // SIGTERM detached and unloaded everything: the agent's child
    // (monitor-detach) finishes the kernel's part after the agent exits.
    let t0 = std::time::Instant::now();
    let left = loop {
        let left: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .map(|p| p.id())
            .filter(|id| ours.contains(id))
            .collect();
        if left.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        left.is_empty(),
        "still loaded 10 s after the stop: {left:?}"
    );
}

#[test]
fn check_reports_probes_and_exits_zero() {
    require_root();
    let out = Command::new(MONITOR).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("result: the agent can run"), "{text}");
    for line in [
        "privileges   ok",
        "kernel       ok",
        "tracefs      ok",
        "btf          ok",
        "ebpf-log     ok",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.contains("sys_exit_openat") && text.contains("attached"),
        "{text}"
    );
    assert!(!text.contains("NOT ATTACHED"), "{text}");
}

#[test]
fn events_carry_container_and_pod_from_real_cgroups() {
    let (_sc, file, _pattern, agent) = setup("attribution");
    let uid = "7c1e4d2a-9b3f-4e5d-8a6b-1c2d3e4f5a6b";
    let id = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    // (cgroup path as the runtime/driver names it, container id, pod uid)
    let cases = [
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
                uid.replace('-', "_"),
                id('a')
            ),
            Some(id('a')),
            Some(uid),
        ),
        (
            format!("kubepods.slice/kubepods-pod{}.slice/crio-{}.scope", uid.replace('-', "_"), id('b')),
            Some(id('b')),
            Some(uid),
        ),
        (format!("kubepods/burstable/pod{uid}/{}", id('c')), Some(id('c')), Some(uid)),
        (format!("system.slice/docker-{}.scope", id('d')), Some(id('d')), None),
        ("monitor-test.slice/plain.scope".to_string(), None, None),
    ];
    for (path, container, pod) in cases {
        let cg = Cgroup::new(&path);
        let mut py = Py::spawn(&[]);
        cg.add(py.pid);
        py.run(&format!("open({file:?}).read()"));
        let read = agent.wait_for("read in cgroup", |e| {
            e["kind"] == "read" && e["process"]["pid"] == py.pid
        });
        assert_eq!(read["process"]["cgroup"], cg.rel.as_str(), "{path}");
        assert_eq!(
            read["process"]["container_id"].as_str(),
            container.as_deref(),
            "{path}"
        );
        assert_eq!(read["process"]["pod_uid"].as_str(), pod, "{path}");
        drop(py);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn metrics_and_health_count_what_the_agent_did() {
    let sc = Scratch::new("metrics");
    let file = sc.file("secrets/db", SECRET);
    let pattern = format!("{}/secrets/*", sc.dir.display());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--watch", &pattern, "--metrics", &addr]);
    agent.wait_log("metrics and health on");

    let (status, body) = http_get(port, "/healthz");
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["required_probes_attached"], true);
    assert!(h["probes_attached"].as_u64().unwrap() > 0);

    // A holder (a sleeping process) and two foreign reads of its file.
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    agent.cli(&[
        "issue",
        "--secret-id",
        "metrics-db",
        "--file",
        &file,
        "--pid",
        &holder.id().to_string(),
    ]);
    for _ in 0..2 {
        let (pid, _) = run(Command::new("cat").arg(&file));
        agent.wait_for("close by cat", |e| kind(e, "close") && pid_is(e, pid));
        agent.wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == pid);
    }
    let opens = agent.events().iter().filter(|e| kind(e, "open")).count() as u64;
    let reads = agent.events().iter().filter(|e| kind(e, "read")).count() as u64;
    assert_eq!(opens, 2, "one open per cat");
    assert!(reads >= 2);

    // Counters are flushed per batch, gauges on each 1 s tick.
    let t0 = std::time::Instant::now();
    let text = loop {
        let (status, text) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        if sample(&text, "monitor_secrets") == Some(1)
            && sample(&text, "monitor_events_total{kind=\"open\"}") == Some(opens)
        {
            break text;
        }
        assert!(
            t0.elapsed() < EVENT_TIMEOUT,
            "metrics never caught up:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        text.contains("# TYPE monitor_events_total counter"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "monitor_events_total{kind=\"read\"}"),
        Some(reads)
    );
    // Alerts by rule, as emitted: each cat read the file (not its holder)
    // and wrote the secret to its stdout, a pipe (a log leak); each cat is
    // its own pid, so nothing was rolled up.
    let alerts = agent.alerts();
    let of = |rule: &str| alerts.iter().filter(|a| a["rule"] == rule).count() as u64;
    assert_eq!(of("secret.read.foreign"), 2, "{alerts:#?}");
    assert_eq!(of("secret.leak.log"), 2, "{alerts:#?}");
    assert_eq!(alerts.len(), 4, "{alerts:#?}");
    for rule in ["secret.read.foreign", "secret.leak.log"] {
        assert_eq!(
            sample(&text, &format!("monitor_alerts_total{{rule=\"{rule}\"}}")),
            Some(of(rule)),
            "{text}"
        );
    }
    assert_eq!(sample(&text, "monitor_alerts_suppressed_total"), Some(0));
    assert_eq!(sample(&text, "monitor_watched_files"), Some(1));
    assert!(sample(&text, "monitor_tracked_processes").unwrap() >= 1);
    assert_eq!(sample(&text, "monitor_bad_records_total"), Some(0));
    // One lost-event counter per possible CPU, all zero here.
    let cpus = std::thread::available_parallelism().unwrap().get();
    for cpu in 0..cpus {
        assert_eq!(
            sample(
                &text,
                &format!("monitor_kernel_lost_events_total{{cpu=\"{cpu}\"}}")
            ),
            Some(0),
            "{text}"
        );
    }
    assert_eq!(http_get(port, "/nope").0, 404);
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn metrics_refuse_a_non_loopback_address_unless_allowed() {
    require_root();
    let sc = Scratch::new("metrics-refuse");
    let out = Command::new(MONITOR)
        .args(["run", "--metrics", "0.0.0.0:9102", "--api"])
        .arg(sc.path("api.sock"))
        .arg("--db")
        .arg(sc.path("events.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve metrics on non-loopback address 0.0.0.0:9102"),
        "{err}"
    );
    // Nothing was loaded or created: the address is checked first.
    assert!(!sc.path("events.db").exists());
}

/// BPF links held by one process (`anon_inode:bpf_link` descriptors): the
/// programs *this* agent has attached, whatever other agents run.
fn bpf_links_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_str() == Some("anon_inode:bpf_link"))
        .count()
}

/// Poll until `f` holds (EVENT_TIMEOUT), else panic with `what`.
fn wait_until(what: &str, agent: &Agent, f: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < EVENT_TIMEOUT,
            "{what} never happened; agent log:\n{}",
            agent.stderr().join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn capture_probes_attach_only_while_a_holder_is_alive() {
    let sc = Scratch::new("on-demand");
    let file = sc.file("secrets/db", SECRET);
    let pattern = format!("{}/secrets/*", sc.dir.display());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--watch", &pattern, "--metrics", &addr]);
    agent.wait_log("metrics and health on");
    let ready = agent
        .stderr()
        .into_iter()
        .find(|l| l.contains("monitor: ready"))
        .unwrap();
    assert!(
        ready.contains("capture on demand: capture probes detached (no tracked process alive, no secret value known, no selector holder)"),
        "{ready}"
    );
    let metrics = || http_get(port, "/metrics").1;
    let lifecycle = "monitor_probe_attached{probe=\"task_newtask\"}";
    let write = "monitor_probe_attached{probe=\"sys_enter_write\"}";

    // No holder: only the two lifecycle tracepoints are attached, no
    // syscall tracepoint at all.
    let idle = bpf_links_of(agent.pid());
    assert_eq!(idle, 2, "links of an agent without holders");
    let m = metrics();
    assert_eq!(sample(&m, "monitor_capture_attached"), Some(0), "{m}");
    assert_eq!(sample(&m, "monitor_capture_switches_total"), Some(0), "{m}");
    assert_eq!(sample(&m, lifecycle), Some(1), "{m}");
    assert_eq!(sample(&m, write), Some(0), "{m}");
    assert_eq!(
        sample(&m, "monitor_probe_attached{probe=\"sys_exit_openat\"}"),
        Some(0),
        "{m}"
    );
    assert_eq!(sample(&m, "monitor_probes_attached"), Some(2), "{m}");
    // Exec capture is detached too: an untracked exec gives its exit (a
    // lifecycle tracepoint, after the exec in the ring) but no exec event.
    let (quiet, _) = run(&mut Command::new("/bin/true"));
    agent.wait_for("exit of an untracked process", |e| {
        kind(e, "exit") && pid_is(e, quiet)
    });
    assert!(
        agent.events_of(quiet).iter().all(|e| !kind(e, "exec")),
        "{:?}",
        agent.events_of(quiet)
    );

    // The first holder appears: the capture programs attach, and its
    // writes are captured.
    let mut holder = Py::spawn(&[]);
    agent.cli(&[
        "issue",
        "--secret-id",
        "on-demand-db",
        "--file",
        &file,
        "--pid",
        &holder.pid.to_string(),
    ]);
    wait_until("capture attached", &agent, || {
        sample(&metrics(), "monitor_capture_attached") == Some(1)
    });
    let on = bpf_links_of(agent.pid());
    let m = metrics();
    let capture_probes = sample(&m, "monitor_probes_attached").unwrap() as usize - 2;
    assert!(capture_probes >= 20, "{m}");
    // Every attached probe is one link of this agent (TLS libraries the
    // holder maps add theirs: python3 maps no libssl until it imports ssl).
    assert!(
        on >= 2 + capture_probes,
        "links {on}, probes {capture_probes}"
    );
    assert_eq!(sample(&m, write), Some(1), "{m}");
    assert_eq!(sample(&m, "monitor_capture_switches_total"), Some(1), "{m}");
    assert!(agent
        .stderr()
        .iter()
        .any(|l| l.contains("capture on demand:") && l.contains("tracked processes alive")));
    holder.run("os.write(2, b'holder-bytes-on-demand')");
    let w = agent.wait_for("holder write", |e| {
        kind(e, "write") && pid_is(e, holder.pid) && e["fd"] == 2
    });
    assert_eq!(w["tracked"], true);
    assert_eq!(w["bytes"], 22);
    // Attached: an untracked exec is reported again (exec_all).
    let (seen, _) = run(&mut Command::new("/bin/true"));
    agent.wait_for("exec while attached", |e| {
        kind(e, "exec") && pid_is(e, seen)
    });

    // The last holder exits: the capture programs detach (after the 2 s
    // grace), back to the lifecycle tracepoints alone.
    let gone = holder.pid;
    drop(holder);
    agent.wait_for("holder exit", |e| kind(e, "exit") && pid_is(e, gone));
    wait_until("capture detached", &agent, || {
        sample(&metrics(), "monitor_capture_attached") == Some(0)
    });
    assert_eq!(bpf_links_of(agent.pid()), idle);
    let m = metrics();
    assert_eq!(sample(&m, write), Some(0), "{m}");
    assert_eq!(sample(&m, lifecycle), Some(1), "{m}");
    assert_eq!(sample(&m, "monitor_capture_switches_total"), Some(2), "{m}");
    agent.wait_log("capture on demand: capture probes detached");
    // Detached again: no exec event, the exit still seen.
    let (after, _) = run(&mut Command::new("/bin/true"));
    agent.wait_for("exit after detach", |e| kind(e, "exit") && pid_is(e, after));
    assert!(agent.events_of(after).iter().all(|e| !kind(e, "exec")));
}

/// The agent's log lines of the programs' error-path records for `pid`:
/// (the line, its `suppressed` count).
fn error_records(agent: &Agent, kind: &str, pid: u32) -> Vec<(String, u64)> {
    agent
        .stderr()
        .into_iter()
        .filter(|l| {
            l.contains("eBPF error path: ")
                && l.contains(&format!(" kind={kind} "))
                && l.contains(&format!(" pid={pid} "))
        })
        .map(|l| {
            let n = l
                .split_once("suppressed=")
                .and_then(|(_, v)| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no suppressed count in {l:?}"));
            (l, n)
        })
        .collect()
}

/// A tracked process writes from a bad pointer: the capture's user-memory
/// read fails in the kernel, which counts it (metrics) and logs it through
/// aya-log into the agent's log, rate-limited: a burst of failures on one
/// CPU gives no more than one record a second, and the next record says
/// how many were held back.
#[test]
fn failed_user_reads_are_logged_rate_limited_and_all_counted() {
    let sc = Scratch::new("ebpf-log");
    let file = sc.file("secrets/db", SECRET);
    let pattern = format!("{}/secrets/*", sc.dir.display());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--watch", &pattern, "--capture-always", "--metrics", &addr]);
    let mut py = Py::spawn(&[]);
    let pid = py.pid;
    // One CPU: the log gate is per CPU.
    py.run("os.sched_setaffinity(0, {0})");
    py.run(&format!("open({file:?}).read()"));
    agent.wait_for("read by the holder", |e| kind(e, "read") && pid_is(e, pid));
    // write(2) from an unmapped address into a plain file: EFAULT for the
    // writer, a failed user-memory read for the capture program.
    let out = sc.path("out");
    py.run(&format!(
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         out = os.open({out:?}, os.O_WRONLY | os.O_CREAT, 0o600)\n\
         def bad_write():\n    \
             r = libc.write(out, ctypes.c_void_p(0x10), 64)\n    \
             assert r == -1 and ctypes.get_errno() == 14, (r, ctypes.get_errno())"
    ));

    // One failure: one record naming the kind, the hook and the process.
    py.run("bad_write()");
    wait_until("the first error-path record", &agent, || {
        !error_records(&agent, "read_user_failed", pid).is_empty()
    });
    let first = error_records(&agent, "read_user_failed", pid);
    assert_eq!(first.len(), 1, "{first:?}");
    let (line, held) = &first[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("user-memory read failed"), "{line}");
    assert!(line.contains(" hook=write "), "{line}");
    assert!(line.contains(&format!(" tid={pid} ")), "{line}");
    assert_eq!(*held, 0, "{line}");

    // A burst on the same CPU: held back (at most one record a second).
    const BURST: u64 = 500;
    let t0 = std::time::Instant::now();
    py.run(&format!("for _ in range({BURST}): bad_write()"));
    let burst_secs = t0.elapsed().as_secs();
    // Past the gate's second: the next failure is logged, with the count
    // of what was held back.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    py.run("bad_write()");
    let last_record = || {
        let r = error_records(&agent, "read_user_failed", pid);
        r.len() >= 2 && r.iter().map(|(_, n)| n + 1).sum::<u64>() >= BURST + 2
    };
    wait_until("the record after the burst", &agent, last_record);
    // Let anything still in the ring arrive before counting.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let records = error_records(&agent, "read_user_failed", pid);
    // The first, the last, and at most one per second of the burst.
    assert!(
        records.len() as u64 <= 2 + burst_secs + 1,
        "{} records for {BURST} failures in {burst_secs} s: {records:#?}",
        records.len()
    );
    // Every failure is either a record or counted as held back in one.
    let accounted: u64 = records.iter().map(|(_, n)| n + 1).sum();
    assert!(accounted >= BURST + 2, "{accounted}: {records:#?}");
    assert!(records.last().unwrap().1 > 0, "{records:#?}");

    // The metrics count every failure, logged or not.
    wait_until("the metrics counting every failure", &agent, || {
        let (_, text) = http_get(port, "/metrics");
        sample(
            &text,
            "monitor_kernel_errors_total{kind=\"read_user_failed\"}",
        )
        .is_some_and(|n| n >= BURST + 2)
    });
    let (_, text) = http_get(port, "/metrics");
    assert!(
        sample(&text, "monitor_kernel_errors_total{kind=\"map_full\"}").is_some(),
        "{text}"
    );
    // Nothing of the secret in the log.
    let secret = String::from_utf8_lossy(SECRET).trim().to_string();
    assert!(
        !agent.stderr().iter().any(|l| l.contains(&secret)),
        "the secret reached the log"
    );
}

/// The agent's map `name` (its fds' `map_id`s, by the kernel's name).
fn map_of(pid: u32, name: &str) -> aya::maps::MapData {
    let id = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("map_id:")?.trim().parse::<u32>().ok())
        })
        .find(|id| aya::maps::MapInfo::from_id(*id).is_ok_and(|m| m.name_as_str() == Some(name)))
        .unwrap_or_else(|| panic!("agent {pid} holds no map {name}"));
    aya::maps::MapData::from_id(id).unwrap()
}

/// A full map: `TRACKED_PROCS` filled to the brim (with tgids no process
/// can have), a tracked process forks, the child's insert fails in
/// `sched_process_fork` and the kernel logs which map was full, in which
/// hook, for which process. (The agent removes entries of processes gone
/// on its 1 s tick, so the fill and the fork are retried until one fork
/// lands in between.)
#[test]
fn a_full_map_is_logged_by_name() {
    let sc = Scratch::new("ebpf-log-full");
    let file = sc.file("secrets/db", SECRET);
    let pattern = format!("{}/secrets/*", sc.dir.display());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--watch", &pattern, "--capture-always", "--metrics", &addr]);
    let mut py = Py::spawn(&[]);
    let pid = py.pid;
    py.run(&format!("open({file:?}).read()"));
    agent.wait_for("read by the holder", |e| kind(e, "read") && pid_is(e, pid));

    let mut procs: aya::maps::HashMap<_, u32, monitor_common::TrackedProc> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map_of(
            agent.pid(),
            "TRACKED_PROCS",
        )))
        .unwrap();
    let fake = monitor_common::TrackedProc {
        reason: 0,
        inherit: 0,
    };
    let logged = || {
        agent.stderr().iter().any(|l| {
            l.contains("eBPF error path: map TRACKED_PROCS full")
                && l.contains(" kind=map_full ")
                && l.contains(" hook=fork ")
                && l.contains(" map=TRACKED_PROCS ")
                && l.contains(&format!(" pid={pid} "))
        })
    };
    let mut tries = 0;
    while !logged() {
        tries += 1;
        assert!(
            tries <= 10,
            "no map-full record:\n{}",
            agent.stderr().join("\n")
        );
        // Above any pid (pid_max is at most 2^22): never a process.
        let mut full = false;
        for k in 0..40_000u32 {
            if procs.insert(0x4000_0000 + k, fake, 0).is_err() {
                full = true;
                break;
            }
        }
        assert!(full, "TRACKED_PROCS took 40,000 entries");
        py.run("c = os.fork()\nif c == 0: os._exit(0)\nos.waitpid(c, 0)");
        let t0 = std::time::Instant::now();
        while !logged() && t0.elapsed() < std::time::Duration::from_millis(1500) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    // Counted too.
    wait_until("map_full counted", &agent, || {
        let (_, text) = http_get(port, "/metrics");
        sample(&text, "monitor_kernel_errors_total{kind=\"map_full\"}").is_some_and(|n| n >= 1)
    });
    // The fake entries out again (the agent would remove them too).
    for k in 0..40_000u32 {
        let _ = procs.remove(&(0x4000_0000 + k));
    }
}
