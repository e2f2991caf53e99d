//! `monitor demo` end to end, on the real kernel: every rule fires, the
//! timeline is printed, the scratch directory is gone afterwards, and
//! nothing the demo wrote (its output, the kept database and alerts)
//! holds the secret or an encoding of it. Run as root.
mod harness;

use std::process::Command;

use harness::*;
use serde_json::Value;

const RULES: [&str; 10] = [
    "secret.read.foreign",
    "secret.copy.file",
    "secret.leak.log",
    "secret.leak.argv",
    "secret.env.propagated",
    "secret.environ.scrape",
    "secret.send.unexpected_destination",
    "secret.replay.expired",
    "secret.replay.foreign",
    "holder.egress.unexpected",
];

#[test]
fn the_demo_fires_every_rule_and_leaves_no_secret_behind() {
    require_root();
    // TMPDIR: where the demo makes (and must remove) its scratch dir.
    let tmp = Scratch::new("demo-tmp");
    let keep = Scratch::new("demo-keep");
    // Its length (35) tells it from the demo's own random values (32).
    let value = format!(
        "demo-it-{:08}-7f3a9c2e51b8d046a9",
        std::process::id() % 100_000_000
    );
    assert_eq!(value.len(), 35);
    let out = Command::new(MONITOR)
        .args(["demo", "--timeout", "20s", "--keep"])
        .arg(&keep.dir)
        .env("TMPDIR", &tmp.dir)
        .env("MONITOR_DEMO_SECRET", &value)
        .output()
        .expect("run monitor demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "monitor demo failed ({}):\n{all}",
        out.status
    );

    // Every rule reported as fired in the summary table.
    for r in RULES {
        let row = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{r} ")))
            .unwrap_or_else(|| panic!("no summary row for {r}:\n{all}"));
        assert!(
            row.contains(" fired ") && !row.contains("NOT FIRED"),
            "{r} did not fire: {row}\n{all}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with("ALERT ") && l.contains(r)),
            "{r} alert line not printed:\n{all}"
        );
    }
    assert!(stdout.contains("All 10 rules fired."), "{all}");

    // The timeline, rendered from the store.
    let tl = stdout
        .find("\nsecret demo-db-password\n")
        .unwrap_or_else(|| panic!("no timeline:\n{all}"));
    let timeline = &stdout[tl..];
    assert!(timeline.contains("issued"), "{timeline}");
    assert!(
        timeline.contains("!!"),
        "no alert in the timeline:\n{timeline}"
    );
    for who in ["demo-holder", "cat", "cp"] {
        assert!(
            timeline.contains(who),
            "{who} not in the timeline:\n{timeline}"
        );
    }

    // The scratch dir (secret file, copy, socket) is gone.
    let left: Vec<_> = std::fs::read_dir(&tmp.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}\n{all}");
    assert!(stdout.contains("Removed "), "{all}");

    // The kept store answers `monitor query` and holds every rule.
    let db = keep.path("demo.db");
    let alerts = keep.path("alerts.jsonl");
    assert!(
        stdout.contains(&format!("monitor query --db {}", db.display())),
        "{all}"
    );
    let q = Command::new(MONITOR)
        .args([
            "query",
            "--format",
            "json",
            "--limit",
            "0",
            "--secret",
            "demo-db-password",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let queried = String::from_utf8_lossy(&q.stdout).into_owned();
    let rules: Vec<String> = queried
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["rule"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let kept_alerts = std::fs::read_to_string(&alerts).unwrap();
    for r in RULES {
        assert!(
            rules.iter().any(|x| x == r),
            "{r} not in the kept store: {rules:?}"
        );
        assert!(
            kept_alerts.contains(&format!("\"rule\":\"{r}\"")),
            "{r} not in {}",
            alerts.display()
        );
    }

    // The demo used the value given: the foreign read took it and its newline.
    let read = kept_alerts
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|a| a["rule"] == "secret.read.foreign")
        .unwrap();
    assert_eq!(read["evidence"]["bytes"], value.len() as u64 + 1, "{read}");

    // No plaintext anywhere the demo wrote.
    let mut written = out.stdout.clone();
    written.extend_from_slice(&out.stderr);
    written.extend_from_slice(queried.as_bytes());
    for e in std::fs::read_dir(&keep.dir).unwrap() {
        let p = e.unwrap().path();
        written.extend(std::fs::read(&p).unwrap());
    }
    let text = String::from_utf8_lossy(&written);
    for f in forms(&value) {
        assert!(
            !text.contains(f.as_str()),
            "the demo wrote the secret ({f}) somewhere"
        );
    }
}

#[test]
fn bad_flags_are_one_clear_line() {
    let out = Command::new(MONITOR)
        .args(["demo", "--timeout", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("monitor: error: --timeout"), "{err}");
}
