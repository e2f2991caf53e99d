//! The fleet: agents scoped to cgroups stand for nodes; a real 3-server
//! NATS JetStream cluster (Debian's `nats-server`) links them.
mod harness;

use std::process::Command;

use harness::*;

/// Two agents scoped to two cgroups each see only their own processes,
/// also for a file both watch.
#[test]
fn scoped_agents_see_only_their_own_cgroups() {
    let sc = Scratch::new("scope");
    let file = sc.file("shared/token", b"not a secret, just a watched file\n");
    let cg_a = Cgroup::new(&format!("monitor-it-scope-a-{}", std::process::id()));
    let cg_b = Cgroup::new(&format!("monitor-it-scope-b-{}", std::process::id()));
    let a = Agent::start(&["--watch", &file, "--scope-cgroup", &cg_a.rel]);
    // The other written as a path under the cgroup v2 mount.
    let b_dir = cg_b.dir.display().to_string();
    let b = Agent::start(&["--watch", &file, "--scope-cgroup", &b_dir]);
    let mut pa = Py::spawn(&[]);
    cg_a.add(pa.pid);
    let mut pb = Py::spawn(&[]);
    cg_b.add(pb.pid);
    pa.run(&format!("open({file:?}).read()"));
    pb.run(&format!("open({file:?}).read()"));
    // Outside both scopes.
    let (outsider, _) = run(Command::new("cat").arg(&file));
    let ra = a.wait_for("A's read", |e| {
        e["kind"] == "read" && e["process"]["pid"] == pa.pid
    });
    assert_eq!(ra["process"]["cgroup"], cg_a.rel.as_str());
    let rb = b.wait_for("B's read", |e| {
        e["kind"] == "read" && e["process"]["pid"] == pb.pid
    });
    assert_eq!(rb["process"]["cgroup"], cg_b.rel.as_str());
    // Each one's exit is the marker: ring order means what came before
    // has arrived.
    let (ppa, ppb) = (pa.pid, pb.pid);
    drop(pa);
    drop(pb);
    a.wait_for("A's exit", |e| {
        e["kind"] == "exit" && e["process"]["pid"] == ppa
    });
    b.wait_for("B's exit", |e| {
        e["kind"] == "exit" && e["process"]["pid"] == ppb
    });
    for (agent, own, name) in [(&a, &cg_a.rel, "A"), (&b, &cg_b.rel, "B")] {
        let evs = agent.events();
        assert!(!evs.is_empty());
        for e in &evs {
            let cg = e["process"]["cgroup"].as_str().unwrap_or("");
            let pid = e["process"]["pid"].as_u64().unwrap_or(0);
            if e["kind"] == "lost" {
                continue;
            }
            assert!(
                cg == own.as_str() || cg.starts_with(&format!("{own}/")),
                "agent {name} (scope {own}) reported an event of cgroup {cg:?}: {e}"
            );
            assert_ne!(pid, outsider as u64, "agent {name} saw the outsider: {e}");
        }
    }
}

#[path = "harness/nats.rs"]
mod nats;

use monitor::fleet::{link::NatsConfig, read::read_all_blocking};
use nats::NatsCluster;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

const VALUE: &str = "fleet-9f3b2c7d4e5a6b1c8d0e";

/// One node: an agent scoped to its own cgroup, publishing to the fleet.
struct Node {
    name: String,
    cg: Cgroup,
    agent: Agent,
    issuances: std::path::PathBuf,
}

fn node(name: &str, url: &str, sc: &Scratch, extra: &[&str]) -> Node {
    let cg = Cgroup::new(&format!("monitor-it-fleet-{name}-{}", std::process::id()));
    let issuances = sc.path(&format!("issuances-{name}.jsonl"));
    std::fs::write(&issuances, "").unwrap();
    let iss = issuances.display().to_string();
    let mut args = vec![
        "--fleet",
        url,
        "--node",
        name,
        "--scope-cgroup",
        &cg.rel,
        "--issuances",
        &iss,
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    Node {
        name: name.into(),
        cg,
        agent,
        issuances,
    }
}

impl Node {
    fn issue(&self, record: Value) {
        use std::io::Write;
        let id = record["secret_id"].as_str().unwrap().to_string();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.issuances)
            .unwrap();
        writeln!(f, "{record}").unwrap();
        self.agent.wait_log(&format!("secret {id} recorded"));
    }

    /// A process in this node's cgroup.
    fn process(&self) -> Py {
        let py = Py::spawn(&[]);
        self.cg.add(py.pid);
        py
    }
}

fn nats(url: &str) -> NatsConfig {
    NatsConfig {
        url: url.into(),
        ..Default::default()
    }
}

/// The fleet's alerts of one node: (message id, alert), and how many
/// messages the stream holds for that subject (duplicates included).
fn fleet_alerts(url: &str, node: &str) -> Vec<Value> {
    read_all_blocking(&nats(url), "MONITOR", &format!("monitor.{node}.alerts"))
        .unwrap()
        .into_iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}

/// Messages in the stream under a subject, duplicates included (read with
/// a raw consumer, not deduplicated by id).
fn stream_count(url: &str, subject: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = monitor::fleet::link::connect(&nats(url), "test", false)
            .await
            .unwrap();
        let js = monitor::fleet::link::context(c);
        let s = js.get_stream("MONITOR").await.unwrap();
        use futures_util::StreamExt;
        let mut subjects = s.info_with_subjects(subject).await.unwrap();
        let mut n = 0;
        while let Some(r) = subjects.next().await {
            let (subj, count) = r.unwrap();
            if subj == subject {
                n += count;
            }
        }
        n
    })
}

/// The key of an alert: its rule and actor.
fn key(a: &Value) -> (String, u64) {
    (
        a["rule"].as_str().unwrap().to_string(),
        a["actor"]["pid"].as_u64().unwrap(),
    )
}

/// Wait until the fleet holds `want` alerts of `node`.
fn wait_fleet_alerts(url: &str, node: &str, want: usize) -> Vec<Value> {
    let t0 = std::time::Instant::now();
    loop {
        let got = fleet_alerts(url, node);
        if got.len() >= want || t0.elapsed() > std::time::Duration::from_secs(60) {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// `n` foreign reads of the delivery file by `cat`s in the node (children
/// of `driver`, not the holder): `n` read.foreign alerts, one per actor.
fn foreign_reads(n: &Node, driver: &mut Py, file: &str, count: usize) -> Vec<u32> {
    let pids: Vec<u32> = serde_json::from_value(driver.run(&format!(
        "_r = []\nfor _ in range({count}):\n    p = subprocess.Popen(['cat', {file:?}], stdout=subprocess.DEVNULL)\n    p.wait()\n    _r.append(p.pid)"
    )))
    .unwrap();
    for pid in &pids {
        n.agent
            .wait_alert("secret.read.foreign", |a| a["actor"]["pid"] == *pid);
    }
    pids
}

/// One NATS server killed mid-test and back: every alert reaches the
/// stream, none twice.
#[test]
fn fleet_alerts_survive_a_server_killed_without_loss_or_duplicates() {
    let sc = Scratch::new("fleet-kill");
    let mut cluster = NatsCluster::start("kill");
    let url = cluster.url();
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let a = node("a", &url, &sc, &[]);
    let holder = a.process();
    a.issue(
        json!({"secret_id": "db-a", "holder": {"pid": holder.pid}, "delivery": [{"file": file}]}),
    );
    a.agent.wait_log(&format!("watching {file} (inode"));
    a.agent.wait_log("fleet: connected");
    let mut driver = a.process();
    let mut pids = foreign_reads(&a, &mut driver, &file, 10);
    cluster.kill_server(0);
    pids.extend(foreign_reads(&a, &mut driver, &file, 10));
    cluster.start_server(0);
    cluster.wait_ready();
    pids.extend(foreign_reads(&a, &mut driver, &file, 10));
    let local: Vec<Value> = a
        .agent
        .alerts()
        .into_iter()
        .filter(|x| x["rule"] == "secret.read.foreign")
        .collect();
    assert_eq!(local.len(), 30, "{local:?}");
    let got = wait_fleet_alerts(&url, "a", 30);
    let got: Vec<Value> = got
        .into_iter()
        .filter(|x| x["rule"] == "secret.read.foreign")
        .collect();
    let want: HashSet<_> = local.iter().map(key).collect();
    let have: HashSet<_> = got.iter().map(key).collect();
    assert_eq!(have, want, "alerts lost on the way to the fleet");
    for g in &got {
        assert_eq!(g["node"], "a");
    }
    // No duplicates in the stream itself (not only after the reader's
    // deduplication by message id).
    let all = stream_count(&url, "monitor.a.alerts");
    let in_stream = fleet_alerts(&url, "a").len();
    assert_eq!(all, in_stream, "the stream holds duplicates");
    drop(holder);
    drop(driver);
}

/// An agent started while NATS is down keeps its alerts in the spool and
/// delivers them when NATS comes up.
#[test]
fn an_agent_started_while_nats_is_down_delivers_its_spool_later() {
    let sc = Scratch::new("fleet-spool");
    let mut cluster = NatsCluster::start("spool");
    let url = cluster.url();
    cluster.kill_all();
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let a = node("a", &url, &sc, &[]);
    let holder = a.process();
    a.issue(
        json!({"secret_id": "db-a", "holder": {"pid": holder.pid}, "delivery": [{"file": file}]}),
    );
    a.agent.wait_log(&format!("watching {file} (inode"));
    let mut driver = a.process();
    let pids = foreign_reads(&a, &mut driver, &file, 5);
    // Spooled on disk meanwhile, next to the store.
    let mut spool = a.agent.db.as_os_str().to_owned();
    spool.push(".fleet-spool");
    let spooled: usize = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum();
    assert!(spooled >= 5, "{spooled} messages spooled");
    let text: String = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(!text.contains(VALUE), "the spool holds the plaintext");
    cluster.start_all();
    a.agent.wait_log("fleet: spool delivered");
    let got = wait_fleet_alerts(&url, "a", 5);
    let have: HashMap<u64, &Value> = got
        .iter()
        .filter(|x| x["rule"] == "secret.read.foreign")
        .map(|x| (x["actor"]["pid"].as_u64().unwrap(), x))
        .collect();
    for p in &pids {
        assert!(
            have.contains_key(&(*p as u64)),
            "alert of pid {p} not delivered: {got:?}"
        );
    }
    assert_eq!(
        stream_count(&url, "monitor.a.alerts"),
        fleet_alerts(&url, "a").len()
    );
    drop(holder);
    drop(driver);
}

/// `monitor <args>` (no --api): stdout; panics on failure.
fn monitor(args: &[&str]) -> String {
    let out = Command::new(MONITOR).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "monitor {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent's view of one secret (`GET /secrets`), waiting until `pred`.
fn wait_secret(agent: &Agent, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = std::time::Instant::now();
    loop {
        let (_, v) = api_get(&agent.api, "/secrets");
        if let Some(s) = v
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["secret_id"] == id && pred(s))
        {
            return s.clone();
        }
        assert!(
            t0.elapsed() < EVENT_TIMEOUT,
            "secret {id} never as expected on this agent: {v}\n{}",
            agent.stderr().join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// An issuance and a revocation published once reach both agents; an
/// agent started later catches up from the stream.
#[test]
fn a_revocation_published_once_reaches_every_agent_and_late_ones_catch_up() {
    let sc = Scratch::new("fleet-records");
    let cluster = NatsCluster::start("records");
    let url = cluster.url();
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let a = node("a", &url, &sc, &[]);
    let b = node("b", &url, &sc, &[]);
    a.agent.wait_log("fleet: connected");
    b.agent.wait_log("fleet: connected");
    // Held by a pod (by name): meaningful on every node.
    let out = monitor(&[
        "issue",
        "--fleet",
        &url,
        "--secret-id",
        "fleet-db",
        "--file",
        &file,
        "--namespace",
        "payments",
        "--pod",
        "db-0",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["secret_id"], "fleet-db");
    // Held on node a only (a pid there).
    monitor(&[
        "issue",
        "--fleet",
        &url,
        "--node",
        "a",
        "--secret-id",
        "a-only",
        "--env",
        "X",
        "--pid",
        "1",
    ]);
    for n in [&a, &b] {
        wait_secret(&n.agent, "fleet-db", |s| s["revoked_at"].is_null());
        n.agent.wait_log("fleet: secret fleet-db recorded");
    }
    wait_secret(&a.agent, "a-only", |_| true);
    monitor(&["revoke", "--fleet", &url, "--secret-id", "fleet-db"]);
    for n in [&a, &b] {
        let s = wait_secret(&n.agent, "fleet-db", |s| !s["revoked_at"].is_null());
        assert!(s["revoked_at"].is_string(), "{s}");
    }
    // Published once: one message each in the stream.
    let recs = read_all_blocking(&nats(&url), "MONITOR_RECORDS", "monitor.records").unwrap();
    assert_eq!(recs.len(), 3, "{recs:?}");
    // A late agent catches up: issued, then revoked.
    let c = node("c", &url, &sc, &[]);
    let s = wait_secret(&c.agent, "fleet-db", |s| !s["revoked_at"].is_null());
    assert!(s["revoked_at"].is_string());
    // Node-local issuances stay on their node.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for n in [&b, &c] {
        let (_, v) = api_get(&n.agent.api, "/secrets");
        assert!(
            !v.as_array()
                .unwrap()
                .iter()
                .any(|s| s["secret_id"] == "a-only"),
            "node {}: {v}",
            n.name
        );
    }
}

/// Everything published on the cluster (core NATS `>`), collected in the
/// background: subjects, headers and payloads as text.
struct Tap {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Tap {
    fn start(url: &str) -> Tap {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let cfg = nats(url);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use futures_util::StreamExt;
                let c = monitor::fleet::link::connect(&cfg, "tap", false)
                    .await
                    .unwrap();
                let mut sub = c.subscribe(">").await.unwrap();
                c.flush().await.unwrap();
                ready_tx.send(()).unwrap();
                while let Some(m) = sub.next().await {
                    let mut line = format!("{} {:?} ", m.subject, m.headers);
                    line.push_str(&String::from_utf8_lossy(&m.payload));
                    s.lock().unwrap().push(line);
                }
            });
        });
        ready_rx.recv().unwrap();
        Tap { seen }
    }
}

/// A secret delivered on node A and replayed from node B: B matches it with
/// A's fingerprints (never its value) and the alert names both nodes; no
/// fleet message ever carries the plaintext.
#[test]
fn a_secret_replayed_on_another_node_names_both_nodes_and_nats_never_sees_it() {
    let sc = Scratch::new("fleet-replay");
    let cluster = NatsCluster::start("replay");
    let url = cluster.url();
    let tap = Tap::start(&url);
    let key = sc.file(
        "fleet.key",
        b"6b1f0c7e9d2a4b3c5e8f7a6d1c0b9e8f7a6d5c4b3a29181706f5e4d3c2b1a098\n",
    );
    let extra = ["--fingerprint-key-file", key.as_str()];
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let a = node("a", &url, &sc, &extra);
    // Node B also writes its alerts to a file feed: a SOC reading a feed
    // sees the same alert, both nodes named.
    let feed = sc.path("b-feed.json").display().to_string();
    let cfg = sc.file(
        "b.toml",
        format!("[[feeds]]\ntype = \"file\"\npath = {feed:?}\nformat = \"native\"\n").as_bytes(),
    );
    let b = node(
        "b",
        &url,
        &sc,
        &[&extra[..], &["--config", cfg.as_str()]].concat(),
    );
    a.agent.wait_log("fleet: connected");
    b.agent.wait_log("fleet: connected");
    let mut holder = a.process();
    a.issue(
        json!({"secret_id": "db-a", "holder": {"pid": holder.pid}, "delivery": [{"file": file}]}),
    );
    a.agent.wait_log(&format!("watching {file} (inode"));
    holder.run(&format!("secret = open({file:?}).read().strip()"));
    a.agent.wait_log("fleet: fingerprints of db-a published");
    b.agent
        .wait_log("fleet: fingerprints of db-a from node a imported");
    // A process on node B sends it (base64, in an HTTP-like request) to a
    // loopback listener.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let acc = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut v);
    });
    let mut replayer = b.process();
    replayer.run(&format!(
        "s = socket.create_connection(('127.0.0.1', {port}))\n\
         s.sendall(b'Authorization: Bearer ' + base64.b64encode({VALUE:?}.encode()) + b'\\r\\n')\n\
         s.close()"
    ));
    acc.join().unwrap();
    let alert = b.agent.wait_alert("secret.replay.foreign", |x| {
        x["actor"]["pid"] == replayer.pid
    });
    assert_eq!(alert["secret_id"], "db-a");
    assert_eq!(alert["evidence"]["node"], "b");
    assert_eq!(alert["evidence"]["holder_node"], "a");
    // No Kubernetes names made up for a holder on another node.
    assert!(alert["evidence"]["holder_k8s"].is_null(), "{alert}");
    assert_eq!(alert["evidence"]["encoding"], "base64");
    assert_eq!(alert["evidence"]["dest"], format!("127.0.0.1:{port}"));
    // The same alert in the fleet, from node b.
    let t0 = std::time::Instant::now();
    let fleet = loop {
        let got = fleet_alerts(&url, "b");
        if let Some(x) = got
            .iter()
            .find(|x| x["rule"] == "secret.replay.foreign" && x["actor"]["pid"] == replayer.pid)
        {
            break x.clone();
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "{got:?}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(fleet["node"], "b");
    assert_eq!(fleet["evidence"]["holder_node"], "a");
    let t0 = std::time::Instant::now();
    let fed = loop {
        let fed: Vec<Value> = std::fs::read_to_string(&feed)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if let Some(x) = fed
            .iter()
            .find(|x| x["rule"] == "secret.replay.foreign" && x["actor"]["pid"] == replayer.pid)
        {
            break x.clone();
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "not in the feed: {fed:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(fed["evidence"]["node"], "b", "{fed}");
    assert_eq!(fed["evidence"]["holder_node"], "a", "{fed}");
    // The holder's own read on A raised nothing.
    assert!(
        !a.agent
            .alerts()
            .iter()
            .any(|x| x["actor"]["pid"] == holder.pid),
        "{:?}",
        a.agent.alerts()
    );
    // A foreign read on node A too; then one fleet query answers for both.
    let (cat, _) = {
        let mut r = a.process();
        let pid: u32 = serde_json::from_value(r.run(&format!(
            "p = subprocess.Popen(['cat', {file:?}], stdout=subprocess.DEVNULL)\np.wait()\n_r = p.pid"
        )))
        .unwrap();
        (pid, r)
    };
    a.agent
        .wait_alert("secret.read.foreign", |x| x["actor"]["pid"] == cat);
    let t0 = std::time::Instant::now();
    let rows: Vec<Value> = loop {
        let out = monitor(&["query", "--fleet", &url, "--format", "json", "--limit", "0"]);
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let has = |node: &str, rule: &str, pid: u32| {
            rows.iter()
                .any(|x| x["node"] == node && x["rule"] == rule && x["actor"]["pid"] == pid)
        };
        if has("a", "secret.read.foreign", cat) && has("b", "secret.replay.foreign", replayer.pid) {
            break rows;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "{out}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        rows.iter().all(|x| x["node"] == "a" || x["node"] == "b"),
        "{rows:?}"
    );
    // The same filters as a local query; the table has a NODE column.
    let out = monitor(&["query", "--fleet", &url, "--rule", "secret.replay.foreign"]);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("NODE"), "{out}");
    let body: Vec<&str> = lines.collect();
    assert!(
        !body.is_empty() && body.iter().all(|l| l.starts_with("b ")),
        "{out}"
    );
    let out = monitor(&["query", "--fleet", &url, "--node", "a", "--format", "json"]);
    assert!(
        out.lines().all(|l| l.contains("\"node\":\"a\"")) && !out.is_empty(),
        "{out}"
    );
    // The same query in OCSF: each line names its node under `unmapped`
    // and is valid against the official schema it claims.
    let out = monitor(&["query", "--fleet", &url, "--format", "ocsf", "--limit", "0"]);
    let ocsf: Vec<String> = out.lines().map(String::from).collect();
    let found: Vec<(String, String)> = ocsf
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let node = v["unmapped"]["node"]
                .as_str()
                .unwrap_or_else(|| panic!("{l}"));
            (
                node.to_string(),
                v["finding_info"]["analytic"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    for want in [("a", "secret.read.foreign"), ("b", "secret.replay.foreign")] {
        assert!(
            found.iter().any(|(n, r)| (n.as_str(), r.as_str()) == want),
            "{want:?} not in the fleet's OCSF: {out}"
        );
    }
    // Every alert of the json query above (more may have come since).
    assert!(
        ocsf.len() >= rows.len(),
        "{} < {}: {out}",
        ocsf.len(),
        rows.len()
    );
    validate_ocsf(&ocsf);
    // The secret's timeline on every node that knows it.
    let tl: Value = serde_json::from_str(
        monitor(&[
            "timeline", "--fleet", &url, "--secret", "db-a", "--format", "json",
        ])
        .trim(),
    )
    .unwrap();
    let nodes: Vec<&str> = tl["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, vec!["a", "b"], "{tl}");
    let text = monitor(&["timeline", "--fleet", &url, "--secret", "db-a"]);
    assert!(
        text.contains("node a:") && text.contains("node b:"),
        "{text}"
    );
    // Nothing on the wire, nor in any stream, carries the plaintext.
    let mut everything = tap.seen.lock().unwrap().clone();
    for (stream, filter) in [
        ("MONITOR", ">"),
        ("MONITOR_RECORDS", ">"),
        ("MONITOR_FINGERPRINTS", ">"),
    ] {
        for m in read_all_blocking(&nats(&url), stream, filter).unwrap() {
            everything.push(format!(
                "{} {}",
                m.subject,
                String::from_utf8_lossy(&m.payload)
            ));
        }
    }
    assert!(
        everything
            .iter()
            .any(|l| l.contains("monitor.fingerprints.a.keyed")),
        "the tap saw no fingerprints: {} messages",
        everything.len()
    );
    for f in forms(VALUE) {
        for l in &everything {
            assert!(
                !l.contains(&f),
                "plaintext form {f:?} in a fleet message: {l}"
            );
        }
    }
    drop(holder);
    drop(replayer);
}

/// A node's events travel packed, several to a JetStream message, and a
/// fleet query unpacks them: every process's read is there, each event
/// once, with its node.
#[test]
fn events_travel_packed_and_a_fleet_query_reads_each_once() {
    let sc = Scratch::new("fleet-pack");
    let cluster = NatsCluster::start("pack");
    let url = cluster.url();
    let file = sc.file("secrets/db", format!("{VALUE}\n").as_bytes());
    let a = node("a", &url, &sc, &[]);
    let holder = a.process();
    a.issue(
        json!({"secret_id": "db-a", "holder": {"pid": holder.pid}, "delivery": [{"file": file}]}),
    );
    a.agent.wait_log(&format!("watching {file} (inode"));
    a.agent.wait_log("fleet: connected");
    let mut driver = a.process();
    const READERS: usize = 100;
    let pids: Vec<u32> = serde_json::from_value(driver.run(&format!(
        "_r = []\nfor _ in range({READERS}):\n    p = subprocess.Popen(['cat', {file:?}], stdout=subprocess.DEVNULL)\n    p.wait()\n    _r.append(p.pid)"
    )))
    .unwrap();
    let t0 = std::time::Instant::now();
    let (evs, missing) = loop {
        let out = monitor(&[
            "query", "--fleet", &url, "--node", "a", "--kind", "events", "--format", "json",
            "--limit", "0",
        ]);
        let evs: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let missing: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| {
                !evs.iter()
                    .any(|e| e["kind"] == "read" && e["process"]["pid"] == *p)
            })
            .collect();
        if missing.is_empty() || t0.elapsed() > EVENT_TIMEOUT {
            break (evs, missing);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "{} of {READERS} readers' reads not in the fleet query ({} events)",
        missing.len(),
        evs.len()
    );
    let ids: HashSet<String> = evs.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), evs.len(), "an event read twice");
    assert!(evs.iter().all(|e| e["node"] == "a"));
    let messages = stream_count(&url, "monitor.a.events");
    assert!(
        messages > 0 && messages < evs.len(),
        "{messages} messages on monitor.a.events for {} events: not packed",
        evs.len()
    );
    drop(holder);
    drop(driver);
}
