//! `monitor demo`: a self-contained scenario on this machine that shows
//! every rule firing, then the secret's timeline.
//!
//! It starts a real agent (`monitor run`, its own config, database, alerts
//! file and API socket in a scratch directory; watch and discovery limited
//! to that directory), writes a random secret into a delivery file there,
//! starts a holder process with the secret in its environment, issues the
//! secret to it (short TTL, one allowed loopback destination) and then
//! drives real processes, one step per rule: coreutils (`cat`, `cp`, `sh`,
//! `true`) where they can do it, otherwise the `monitor` binary itself
//! re-executed as a hidden actor ([`actor`]). Network traffic only goes to
//! two loopback listeners the demo opens. Alerts are printed as they arrive
//! in the agent's alerts file; at the end the agent is stopped (SIGTERM, so
//! the store is flushed), the rules that fired are tabled, and the timeline
//! is rendered from the store ([`crate::query::timeline_to`]).
//!
//! The secret is never printed, and the scratch directory (delivery file,
//! copy, database, alerts) is removed at the end, on error and on
//! Ctrl-C/SIGTERM; `--keep DIR` puts the database and alerts in `DIR`
//! instead, for `monitor query --db`.
pub mod actor;

use std::{
    ffi::OsString,
    fs::{DirBuilder, OpenOptions},
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::{
        fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicI32, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use clap::Args;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::{
    api::client::{issue_record, request, IssueArgs},
    correlate::{
        alert::Alert,
        rules::{Rule, ALL_RULES},
    },
    query::{timeline_to, TimelineArgs, TimelineFormat},
    store::timeline::clean,
};

/// Testing hook: the secret value to use instead of a random one (so a
/// test can search everything the demo wrote for it). Removed from the
/// environment before any child starts.
pub const SECRET_ENV: &str = "MONITOR_DEMO_SECRET";
/// The demo secret's id.
pub const SECRET_ID: &str = "demo-db-password";
/// The variable the holder is started with the secret in.
const HOLDER_ENV: &str = "DEMO_DB_PASSWORD";
/// The variable the secret leaks into for `secret.env.propagated`.
const LEAK_ENV: &str = "LEAKED_DB_PASSWORD";
/// The demo secret's lifetime: long enough for the steps before expiry.
const TTL: Duration = Duration::from_secs(8);
/// Time allowed for the agent to load its probes.
const AGENT_START: Duration = Duration::from_secs(90);
/// Time allowed for the agent to flush and exit after SIGTERM.
const AGENT_STOP: Duration = Duration::from_secs(30);
/// Time allowed for one actor (or the holder's answer to a command).
const CHILD_TIMEOUT: Duration = Duration::from_secs(15);
/// PATH of the processes the demo starts.
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The steps, for the `[n/N]` counter.
const STEPS: usize = 11;

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DemoArgs {
    /// Keep the demo's database and alerts in DIR (DIR/demo.db,
    /// DIR/alerts.jsonl) for `monitor query --db` and `monitor timeline
    /// --db` afterwards; everything else is removed.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// How long each step waits for its alert.
    #[arg(long, value_name = "DUR", default_value = "15s")]
    pub timeout: String,
}

mod alerts;
mod processes;
mod steps;

use alerts::*;
use processes::*;

// ---------------------------------------------------------------- the demo

struct Demo {
    exe: PathBuf,
    tools: Tools,
    timeout: Duration,
    secret: Zeroizing<String>,
    rt: tokio::runtime::Runtime,
    db: PathBuf,
    alerts_path: PathBuf,
    api: PathBuf,
    keep: Option<PathBuf>,
    file: PathBuf,
    copy: PathBuf,
    tail: AlertTail,
    alerts: Vec<Alert>,
    step: usize,
    /// Steps whose action failed: (step, rule, why).
    failed: Vec<(usize, Option<Rule>, String)>,
    holder: Option<Holder>,
    agent: Option<AgentProc>,
    /// Dropped last: the directory goes once the processes are gone.
    scratch: Scratch,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // The holder and the agent before the directory they use.
        if let Some(mut h) = self.holder.take() {
            h.stop();
        }
        if let Some(mut a) = self.agent.take() {
            a.stop();
        }
    }
}

/// `monitor demo`.
pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let timeout =
        crate::timefmt::parse_duration(&a.timeout).map_err(|e| anyhow!("--timeout: {e}"))?;
    if timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("monitor demo must run as root: it starts the agent, which loads eBPF programs");
    }
    let secret = take_secret()?;
    install_signal_handlers();
    let exe = std::env::current_exe().context("finding the monitor binary")?;
    let tools = Tools::find()?;
    let keep = match &a.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("--keep {}", dir.display()))?;
            let dir = std::fs::canonicalize(dir)?;
            for name in ["demo.db", "demo.db-wal", "demo.db-shm", "alerts.jsonl"] {
                let p = dir.join(name);
                if p.exists() {
                    bail!(
                        "--keep {}: {} already exists (give a new or empty directory)",
                        dir.display(),
                        p.display()
                    );
                }
            }
            Some(dir)
        }
        None => None,
    };
    let scratch = Scratch::create()?;
    let data = keep.clone().unwrap_or_else(|| scratch.dir.clone());
    let mut demo = Demo {
        exe,
        tools,
        timeout,
        secret,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        db: data.join("demo.db"),
        alerts_path: data.join("alerts.jsonl"),
        api: scratch.dir.join("api.sock"),
        keep,
        file: scratch.dir.join("secrets/db-password"),
        copy: scratch.dir.join("stolen/db-password.copy"),
        tail: AlertTail::new(data.join("alerts.jsonl")),
        alerts: Vec::new(),
        step: 0,
        failed: Vec::new(),
        holder: None,
        agent: None,
        scratch,
    };
    let dir = demo.scratch.dir.clone();
    let kept = demo.keep.is_some();
    let res = demo.play();
    drop(demo);
    let gone = !dir.exists();
    match res {
        Ok(code) => {
            if gone {
                println!(
                    "\nRemoved {}: {}.",
                    dir.display(),
                    if kept {
                        "the secret file and its copy"
                    } else {
                        "the secret file, its copy, the database and the alerts"
                    }
                );
            }
            Ok(code)
        }
        Err(_) if STOP.load(Ordering::SeqCst) != 0 => {
            eprintln!(
                "monitor: demo interrupted: stopped the agent and the holder{}",
                if gone {
                    format!(", removed {}", dir.display())
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e),
    }
}

/// `15s`, `1.5s`, `250ms`.
fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::alert::Evidence;
    use crate::event::Process;

    fn alert(rule: Rule, pid: u32, count: Option<u64>) -> Alert {
        let mut a = Alert::new(
            rule,
            crate::event::UtcTime::parse("2026-11-22T10:00:00.000000Z").unwrap(),
            SECRET_ID,
            format!("{SECRET_ID} did something\u{1b}[31m"),
            Process {
                pid,
                comm: "cat".into(),
                ..Default::default()
            },
            Evidence {
                path: Some("/tmp/x".into()),
                ..Default::default()
            },
            vec![1],
        );
        a.count = count;
        a
    }

    #[test]
    fn supplied_secrets_are_checked_and_random_ones_differ() {
        assert!(check_secret("0123456789abcdef").is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret("has a space in the middle").is_err());
        assert!(check_secret("line\nbreak-0123456789").is_err());
        let e = check_secret("x").unwrap_err().to_string();
        assert!(e.starts_with(SECRET_ENV) && !e.contains("\"x\""), "{e}");
        let (a, b) = (secret_from(None).unwrap(), secret_from(None).unwrap());
        assert_eq!(
            secret_from(Some("0123456789abcdef".into()))
                .unwrap()
                .as_str(),
            "0123456789abcdef"
        );
        assert!(secret_from(Some("tiny".into())).is_err());
        assert_eq!(a.len(), 32);
        assert_ne!(a.as_str(), b.as_str());
        assert!(check_secret(&a).is_ok());
    }

    #[test]
    fn alert_lines_are_clean_and_name_rule_severity_and_secret() {
        let l = alert_line(&alert(Rule::ReadForeign, 7, None));
        assert!(l.starts_with("ALERT  high"), "{l}");
        assert!(l.contains("secret.read.foreign") && l.contains(SECRET_ID));
        assert!(!l.contains('\u{1b}'), "{l}");
        assert!(l.ends_with("did something\\u{1b}[31m"), "{l}");
    }

    #[test]
    fn table_lists_every_rule_and_what_did_not_fire() {
        let alerts = vec![
            alert(Rule::ReadForeign, 7, None),
            alert(Rule::ReadForeign, 7, Some(2)),
            alert(Rule::CopyFile, 8, None),
        ];
        let mut out = Vec::new();
        let missing = rules_table(&alerts, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 11, "{text}");
        assert_eq!(missing.len(), 8);
        assert!(!missing.contains(&Rule::CopyFile));
        let read = text
            .lines()
            .find(|l| l.trim_start().starts_with("secret.read.foreign"))
            .unwrap();
        assert!(read.contains("fired") && read.contains("cat (pid 7): /tmp/x [3 occurrences]"));
        let argv = text
            .lines()
            .find(|l| l.trim_start().starts_with("secret.leak.argv"))
            .unwrap();
        assert!(argv.contains("NOT FIRED"), "{argv}");
    }

    #[test]
    fn the_tail_takes_complete_lines_only() {
        let dir = crate::testutil::TempDir::new("demo-tail");
        let p = dir.join("alerts.jsonl");
        let mut t = AlertTail::new(p.clone());
        assert!(t.poll().is_empty(), "no file yet");
        let line = serde_json::to_string(&alert(Rule::CopyFile, 1, None)).unwrap();
        let (a, b) = line.split_at(20);
        std::fs::write(&p, a).unwrap();
        assert!(t.poll().is_empty());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        write!(f, "{b}\n\n{line}\n").unwrap();
        let got = t.poll();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].rule, "secret.copy.file");
        assert!(t.poll().is_empty());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(humantime(Duration::from_secs(15)), "15s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humantime(Duration::from_millis(250)), "250ms");
    }
}
