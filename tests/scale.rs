//! The hot path at scale (issue 10), against the real kernel: many
//! secrets and holders, restarts, floods. Run as root, single-threaded.
mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

/// A distinct value per secret, long enough to fingerprint.
fn value(i: usize) -> String {
    format!(
        "scale-{i:05}-{:016x}",
        (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

/// 10,000 secrets over 1,000 holders (cgroups, ten secrets each), each
/// delivered in its own file; one holder cgroup is real and has a
/// process in it. A read by its holder is quiet; a foreign read of one
/// secret among the 10,000 alerts within 2 s.
#[test]
fn ten_thousand_secrets_foreign_read_alerts_within_2s() {
    const SECRETS: usize = 10_000;
    const HOLDERS: usize = 1_000;
    let sc = Scratch::new("scale10k");
    let base = format!("monitor-it-scale-{}", std::process::id());
    let real = Cgroup::new(&format!("{base}/h0007"));
    let mut lines = String::new();
    for i in 0..SECRETS {
        let file = sc.file(&format!("s/{i}"), format!("{}\n", value(i)).as_bytes());
        let rec = json!({
            "secret_id": format!("scale-{i}"),
            "holder": {"cgroup": format!("/{base}/h{:04}", i % HOLDERS)},
            "delivery": [{"file": file}],
            "source": "test",
        });
        lines.push_str(&rec.to_string());
        lines.push('\n');
    }
    let issuances = sc.path("issuances.jsonl");
    std::fs::write(&issuances, lines).unwrap();
    let t0 = Instant::now();
    let agent = Agent::start(&["--issuances", issuances.to_str().unwrap()]);
    agent.wait_log(&format!("secret scale-{} recorded", SECRETS - 1));
    eprintln!("10,000 records applied {:?} after start", t0.elapsed());
    let (status, secrets) = api_get(&agent.api, "/secrets");
    assert_eq!(status, 200);
    assert_eq!(secrets.as_array().unwrap().len(), SECRETS);

    // The holder (secret 5007 is held by h0007) reads its secret: quiet.
    let mut holder = Py::spawn(&[]);
    real.add(holder.pid);
    let own = sc.path("s/5007").display().to_string();
    holder.run(&format!("v = open({own:?}).read()"));
    agent.wait_for("holder read", |e| {
        e["kind"] == "read" && e["process"]["pid"] == holder.pid
    });

    // A foreign process reads another holder's secret.
    let target = 7_777;
    let path = sc.path(&format!("s/{target}")).display().to_string();
    let mut thief = Py::spawn(&[]);
    thief.run(&format!("v = open({path:?}).read()"));
    let read_at = Instant::now();
    let id = format!("scale-{target}");
    let a = agent.wait_alert("secret.read.foreign", |a| a["secret_id"] == id.as_str());
    let latency = read_at.elapsed();
    assert_eq!(a["actor"]["pid"], thief.pid);
    assert!(
        latency < Duration::from_secs(2),
        "foreign read alerted after {latency:?} (10,000 secrets)"
    );
    // Nothing about the holder's own read.
    assert!(
        !agent
            .alerts()
            .iter()
            .any(|a| a["actor"]["pid"] == holder.pid),
        "the holder's own read alerted"
    );
    drop(holder);
    drop(thief);
    let (st, _) = agent.stop();
    assert!(st.success());
}
