//! The agent under test: `target/release/monitor run ...` as a child,
//! ready when it prints `monitor: ready:`, stopped with SIGTERM, its final
//! `monitor: stopped: X events, Y alerts, Z lost in kernel, ...` parsed.

use std::{
    ffi::OsString,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::proc::{self, Proc};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the agent said when it stopped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stopped {
    pub events: u64,
    pub alerts: u64,
    pub lost: u64,
}

pub struct Agent {
    pub proc: Proc,
    pub api: PathBuf,
    /// Its `--events` file, if any.
    events: Option<PathBuf>,
    bin: PathBuf,
    /// Seconds from spawn to `monitor: ready`.
    pub ready_secs: f64,
}

pub struct AgentOpts<'a> {
    pub bin: &'a Path,
    pub scratch: &'a Path,
    /// Name for files (api socket, events, alerts) under `scratch`.
    pub name: &'a str,
    pub args: Vec<OsString>,
    /// Pin to this CPU (`taskset -c`).
    pub cpu: Option<usize>,
    /// `--events` file (none: no event sink).
    pub events: bool,
}

impl Agent {
    pub fn events_path(scratch: &Path, name: &str) -> PathBuf {
        scratch.join(format!("{name}.events.jsonl"))
    }

    pub fn alerts_path(scratch: &Path, name: &str) -> PathBuf {
        scratch.join(format!("{name}.alerts.jsonl"))
    }

    fn command(o: &AgentOpts<'_>, alerts_stdout: bool) -> (Command, PathBuf, Option<PathBuf>) {
        let api = o.scratch.join(format!("{}.api.sock", o.name));
        let _ = std::fs::remove_file(&api);
        let mut cmd = match o.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(o.bin);
                c
            }
            None => Command::new(o.bin),
        };
        cmd.arg("run").arg("--api").arg(&api);
        if alerts_stdout {
            cmd.args(["--alerts", "-"]);
        } else {
            cmd.arg("--alerts")
                .arg(Self::alerts_path(o.scratch, o.name));
        }
        let events = o.events.then(|| Self::events_path(o.scratch, o.name));
        if let Some(ev) = &events {
            let _ = std::fs::remove_file(ev);
            cmd.arg("--events").arg(ev);
        }
        // Its own event store (the default is /var/lib/monitor/events.db).
        let db = o.scratch.join(format!("{}.db", o.name));
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
        cmd.arg("--db").arg(db);
        // The capacity sections measure the pipeline, not the per-holder
        // capture budget (section 8 brings its own config, budget on).
        if !o.args.iter().any(|a| a == "--config") {
            let cfg = o.scratch.join("unbudgeted.toml");
            let _ = std::fs::write(&cfg, "capture_rate = 0\n");
            cmd.arg("--config").arg(cfg);
        }
        cmd.args(&o.args).env("RUST_LOG", "info");
        (cmd, api, events)
    }

    pub fn start(o: AgentOpts<'_>) -> Result<Agent> {
        let (mut cmd, api, events) = Self::command(&o, false);
        let t0 = Instant::now();
        let proc = Proc::spawn("monitor run", &mut cmd)?;
        Self::ready(proc, api, events, o.bin, t0)
    }

    /// Alerts on the agent's stdout, handed to the caller.
    pub fn start_alerts_piped(o: AgentOpts<'_>) -> Result<(Agent, std::process::ChildStdout)> {
        let (mut cmd, api, events) = Self::command(&o, true);
        let t0 = Instant::now();
        let (proc, stdout) = Proc::spawn_raw_stdout("monitor run", &mut cmd)?;
        Ok((Self::ready(proc, api, events, o.bin, t0)?, stdout))
    }

    fn ready(
        mut proc: Proc,
        api: PathBuf,
        events: Option<PathBuf>,
        bin: &Path,
        t0: Instant,
    ) -> Result<Agent> {
        proc.wait_line("monitor: ready", true, READY_TIMEOUT)?;
        Ok(Agent {
            proc,
            api,
            events,
            bin: bin.to_path_buf(),
            ready_secs: t0.elapsed().as_secs_f64(),
        })
    }

    /// Its `--events` file, if any.
    pub fn events_file(&self) -> Option<&Path> {
        self.events.as_deref()
    }

    /// The agent's own pid (under `taskset`, taskset execs it: same pid).
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// `monitor issue --secret-id ID --file F --pid P --api ours`.
    pub fn issue_file(&self, id: &str, file: &Path, pid: u32) -> Result<()> {
        proc::quiet(
            Command::new(&self.bin)
                .args(["issue", "--secret-id", id, "--file"])
                .arg(file)
                .args(["--pid", &pid.to_string(), "--api"])
                .arg(&self.api),
        )
        .with_context(|| format!("monitor issue {id}"))?;
        Ok(())
    }

    /// `GET path` on the API socket: the body.
    pub fn api_get(&self, path: &str) -> Result<String> {
        let mut c = UnixStream::connect(&self.api)
            .with_context(|| format!("connecting to {}", self.api.display()))?;
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: monitor\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        c.read_to_string(&mut resp)?;
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .context("no HTTP head in the API answer")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    }

    pub fn cpu_secs(&self, tck: f64) -> Result<f64> {
        proc::cpu_secs(self.pid(), tck)
    }

    pub fn mem(&self) -> Result<proc::Mem> {
        proc::mem(self.pid())
    }

    /// The agent's counters without its graceful stop, then SIGKILL.
    ///
    /// A graceful stop (SIGTERM) detaches the programs one `close` at a
    /// time, ~70 ms each here (in the agent's `monitor-detach` child, see
    /// [`Agent::stop_graceful`]): seconds per agent, too slow to do dozens
    /// of times. So: wait for the
    /// agent's next 1-s tick, which logs `lost N kernel events` for any new
    /// loss, sum those lines, count the lines of its events file (every
    /// event it stored; it flushes after each batch), and SIGKILL it.
    pub fn stop(self) -> Result<Stopped> {
        thread::sleep(Duration::from_millis(1150));
        let lost = self.logged_lost();
        let events = match &self.events {
            Some(p) => count_lines(p, 0)?.0,
            None => 0,
        };
        self.proc.end(proc::SIGKILL, Duration::from_secs(60))?;
        Ok(Stopped {
            events,
            alerts: 0,
            lost,
        })
    }

    /// Losses the agent has logged so far (`lost N kernel events`, on its
    /// 1-s tick).
    pub fn logged_lost(&self) -> u64 {
        self.proc
            .err
            .all()
            .iter()
            .filter_map(|l| {
                let rest = &l[l.find("] lost ")? + 7..];
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Items the agent's event store dropped so far (`event store could not
    /// keep up: N items dropped`, on its 1-s tick).
    pub fn logged_store_dropped(&self) -> u64 {
        self.proc
            .err
            .all()
            .iter()
            .filter_map(|l| {
                let rest = &l[l.find("could not keep up: ")? + 19..];
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// SIGKILL without waiting for a tick; returns the losses logged so far.
    pub fn kill(self) -> Result<u64> {
        let lost = self.logged_lost();
        self.proc.end(proc::SIGKILL, Duration::from_secs(60))?;
        Ok(lost)
    }

    /// SIGTERM and wait for the agent's own exit, then for its
    /// `monitor-detach` child (which finishes detaching the programs); with
    /// the seconds to each.
    pub fn stop_graceful(mut self) -> Result<(Stopped, f64, f64)> {
        let t = Instant::now();
        let st = self.proc.stop(Duration::from_secs(120))?;
        let secs = t.elapsed().as_secs_f64();
        while proc::named("monitor-detach") && t.elapsed() < Duration::from_secs(120) {
            thread::sleep(Duration::from_millis(20));
        }
        let detached = t.elapsed().as_secs_f64();
        let line = self.proc.err.find("monitor: stopped:").with_context(|| {
            format!(
                "the agent exited ({st}) without its stopped line; stderr:\n{}",
                self.proc.err.tail(20)
            )
        })?;
        Ok((parse_stopped(&line)?, secs, detached))
    }
}

/// Newlines in a file from byte `from` on, and where it ended.
pub fn count_lines(p: &Path, from: u64) -> Result<(u64, u64)> {
    use std::io::Seek as _;
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    f.seek(std::io::SeekFrom::Start(from))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut at) = (0u64, from);
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok((n, at));
        }
        at += k as u64;
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// `monitor: stopped: 32 events, 0 alerts, 0 lost in kernel, ...`
pub fn parse_stopped(line: &str) -> Result<Stopped> {
    let rest = line
        .split_once("monitor: stopped:")
        .map(|(_, r)| r)
        .context("not a stopped line")?;
    let mut s = Stopped::default();
    for part in rest.split(',') {
        let mut it = part.split_whitespace();
        let (Some(n), Some(what)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "events" => s.events = n,
            "alerts" => s.alerts = n,
            "lost" => s.lost = n,
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stopped_line() {
        let s = parse_stopped(
            "monitor: stopped: 3065 events, 2 alerts, 17 lost in kernel, 0 undecodable, 0 bad records",
        )
        .unwrap();
        assert_eq!((s.events, s.alerts, s.lost), (3065, 2, 17));
    }
}
