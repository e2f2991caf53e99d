//! The alerts the demo reads back, and the rules table it prints.

use super::*;

/// New complete lines of the agent's alerts file.
pub(super) struct AlertTail {
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) partial: Vec<u8>,
}

impl AlertTail {
    pub(super) fn new(path: PathBuf) -> Self {
        AlertTail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    pub(super) fn poll(&mut self) -> Vec<Alert> {
        use std::io::{Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut out = Vec::new();
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Alert>(&text) {
                Ok(a) => out.push(a),
                Err(e) => eprintln!("monitor: unreadable alert line ({e})"),
            }
        }
        out
    }
}

/// One readable line: severity, rule, secret, summary (a roll-up's summary
/// already says how many more times it happened).
pub(super) fn alert_line(a: &Alert) -> String {
    clean(&format!(
        "ALERT  {:<8}  {:<34}  {}  {}",
        a.severity, a.rule, a.secret_id, a.summary
    ))
}

/// What an alert points at: path, destination or target pid.
pub(super) fn evidence_of(a: &Alert) -> String {
    let e = &a.evidence;
    e.path
        .clone()
        .or_else(|| e.dest.clone())
        .or_else(|| e.target_pid.map(|p| format!("pid {p}")))
        .unwrap_or_default()
}

/// The summary table: one row per rule of the contract, in its order.
/// Returns the rules that did not fire.
pub(super) fn rules_table(alerts: &[Alert], out: &mut dyn Write) -> io::Result<Vec<Rule>> {
    let mut missing = Vec::new();
    writeln!(
        out,
        "  {:<34}  {:<8}  {:<9}  FIRST ALERT",
        "RULE", "SEVERITY", "RESULT"
    )?;
    for r in ALL_RULES {
        let first = alerts
            .iter()
            .find(|a| a.rule == r.name() && a.secret_id == SECRET_ID);
        let (result, by) = match first {
            Some(a) => {
                let n = alerts
                    .iter()
                    .filter(|x| x.rule == r.name() && x.secret_id == SECRET_ID)
                    .map(|x| x.count.unwrap_or(1))
                    .sum::<u64>();
                let times = if n > 1 {
                    format!(" [{n} occurrences]")
                } else {
                    String::new()
                };
                (
                    "fired",
                    format!(
                        "{} (pid {}): {}{times}",
                        a.actor.comm,
                        a.actor.pid,
                        evidence_of(a)
                    ),
                )
            }
            None => {
                missing.push(r);
                ("NOT FIRED", String::new())
            }
        };
        writeln!(
            out,
            "  {:<34}  {:<8}  {:<9}  {}",
            r.name(),
            r.severity().as_str(),
            result,
            clean(&by)
        )?;
    }
    Ok(missing)
}
