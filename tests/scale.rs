//! The hot path at scale (issue 10), against the real kernel: many
//! secrets and holders, restarts, floods. Run as root, single-threaded.
mod harness;

use std::{
    io::Write,
    time::{Duration, Instant},
};

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

/// The agent's own count from its `monitor: stopped:` line, e.g.
/// `issuance records read`.
fn stopped_count(log: &[String], what: &str) -> u64 {
    let line = log
        .iter()
        .find(|l| l.contains("monitor: stopped:"))
        .unwrap_or_else(|| panic!("no stop line:\n{}", log.join("\n")));
    let at = line
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {line}"));
    line[..at]
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A restart after ingesting records resumes the issuance file where it
/// stopped (the secrets come back from the store): nothing is read
/// twice, an appended record is read, and a restored secret still alerts.
#[test]
fn restart_resumes_issuances_instead_of_reingesting() {
    const N: usize = 2_000;
    let sc = Scratch::new("resume");
    let db = sc.path("events.db");
    let issuances = sc.path("issuances.jsonl");
    let mut lines = String::new();
    for i in 0..N {
        let file = sc.file(&format!("s/{i}"), format!("{}\n", value(i)).as_bytes());
        lines.push_str(
            &json!({
                "secret_id": format!("r-{i}"),
                "holder": {"cgroup": "/monitor-it-resume-nobody"},
                "delivery": [{"file": file}],
            })
            .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&issuances, lines).unwrap();
    let args = [
        "--issuances",
        issuances.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];

    let agent = Agent::start(&args);
    agent.wait_log(&format!("secret r-{} recorded", N - 1));
    let (st, log) = agent.stop();
    assert!(st.success());
    assert_eq!(stopped_count(&log, "issuance records read"), N as u64);
    assert_eq!(stopped_count(&log, "secrets restored"), 0);

    let agent = Agent::start(&args);
    let (_, secrets) = api_get(&agent.api, "/secrets");
    assert_eq!(secrets.as_array().unwrap().len(), N);
    // One more record, appended while it runs: read, alone.
    let extra = sc.file("s/extra", format!("{}\n", value(N)).as_bytes());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&issuances)
        .unwrap();
    writeln!(
        f,
        "{}",
        json!({"secret_id": "r-extra", "holder": {"cgroup": "/monitor-it-resume-nobody"},
               "delivery": [{"file": extra}]})
    )
    .unwrap();
    agent.wait_log("secret r-extra recorded");
    // A restored secret is watched and alerts.
    let path = sc.path("s/1234").display().to_string();
    let mut thief = Py::spawn(&[]);
    thief.run(&format!("v = open({path:?}).read()"));
    agent.wait_alert("secret.read.foreign", |a| a["secret_id"] == "r-1234");
    drop(thief);
    let (st, log) = agent.stop();
    assert!(st.success());
    assert_eq!(stopped_count(&log, "issuance records read"), 1);
    assert_eq!(stopped_count(&log, "secrets restored"), N as u64);
}
