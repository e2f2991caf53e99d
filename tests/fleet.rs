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
