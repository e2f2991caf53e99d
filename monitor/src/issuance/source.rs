//! An issuance source: an issuance file, or a Vault audit log, followed a
//! chunk at a time. [`Source::poll`] reads the next chunk and returns what
//! it held, parsed: the records (each with its origin, `path:line`), the
//! Vault leases, the bad lines (each message names its line), and where
//! the source was read up to. The agent applies them; it never sees the
//! tailer or the Vault pairing.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{
    parse_record,
    tail::{Position, Tailer},
    vault::{VaultLease, VaultPairer},
    Record,
};

/// Requests a Vault audit log may leave waiting for their responses.
const VAULT_PENDING: usize = 10_000;

pub struct Source {
    path: PathBuf,
    tail: Tailer,
    /// A Vault audit log (else an issuance file).
    vault: Option<VaultPairer>,
    /// Secrets this source defined (the agent caps them per source).
    pub secrets: u64,
}

/// What one [`Source::poll`] read.
#[derive(Debug, Default)]
pub struct Polled {
    /// Records and their origin (`path:line`), in file order.
    pub records: Vec<(Record, String)>,
    /// Leases paired from a Vault audit log.
    pub leases: Vec<VaultLease>,
    /// Lines that are not records (too long, not UTF-8, not a record):
    /// one message each, naming the line.
    pub bad: Vec<String>,
    /// The source could not be read this time (it is tried again).
    pub error: Option<String>,
    /// Where the source is read up to, when this poll moved it.
    pub moved_to: Option<Position>,
    /// Anything was read (lines, good or bad).
    pub read: bool,
}

impl Source {
    /// An issuance file (`vault`: a Vault audit log), read at most
    /// `chunk` bytes a poll, from `resume` (where a previous run stopped)
    /// or its beginning.
    pub fn new(path: &Path, vault: bool, chunk: usize, resume: Option<Position>) -> Source {
        let mut tail = Tailer::new(path).with_max_poll_bytes(chunk);
        if let Some(p) = resume {
            tail = tail.resume_at(p);
        }
        Source {
            path: path.to_path_buf(),
            tail,
            vault: vault.then(|| VaultPairer::new(VAULT_PENDING)),
            secrets: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next chunk, parsed (records received at `now`).
    pub fn poll(&mut self, now: DateTime<Utc>) -> Polled {
        let mut out = Polled::default();
        let lines = match self.tail.poll() {
            Ok(l) => l,
            Err(e) => {
                out.error = Some(format!("{}: {e}", self.path.display()));
                return out;
            }
        };
        if !lines.is_empty() {
            out.read = true;
            out.moved_to = self.tail.position();
        }
        for sk in self.tail.take_skipped() {
            out.read = true;
            out.bad.push(format!("{}: {sk}", self.path.display()));
        }
        for line in lines {
            if line.text.trim().is_empty() {
                continue;
            }
            let origin = format!("{}:{}", self.path.display(), line.number);
            match &mut self.vault {
                Some(pairer) => match pairer.push(&line.text) {
                    Ok(Some(lease)) => out.leases.push(lease),
                    Ok(None) => {}
                    Err(e) => out.bad.push(format!("{origin}: {e}")),
                },
                None => match parse_record(&line.text, now) {
                    Ok(r) => out.records.push((r, origin)),
                    Err(e) => out.bad.push(format!("{origin}: {e}")),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn a_poll_gives_records_with_their_origin_bad_lines_named_and_the_position() {
        let d = TempDir::new("source");
        let p = d.path().join("issuances.jsonl");
        std::fs::write(
            &p,
            "{\"secret_id\": \"a\", \"holder\": {\"pid\": 1}, \"delivery\": [{\"env\": \"A\"}]}\n\
             \n\
             not json\n\
             {\"secret_id\": \"b\", \"holder\": {\"pid\": 2}, \"delivery\": [{\"env\": \"B\"}]}\n",
        )
        .unwrap();
        let mut s = Source::new(&p, false, 1 << 20, None);
        let got = s.poll(Utc::now());
        let origins: Vec<&str> = got.records.iter().map(|(_, o)| o.as_str()).collect();
        let at = |n: u32| format!("{}:{n}", p.display());
        assert_eq!(origins, [at(1), at(4)]);
        assert_eq!(got.bad.len(), 1, "{:?}", got.bad);
        assert!(
            got.bad[0].starts_with(&format!("{}: ", at(3))),
            "{:?}",
            got.bad
        );
        assert!(got.read && got.error.is_none());
        let pos = got.moved_to.expect("moved");
        assert_eq!(pos.line, 4);
        // Nothing new: nothing read, the position unchanged.
        let again = s.poll(Utc::now());
        assert!(!again.read && again.moved_to.is_none() && again.records.is_empty());
        // A new source resumed there reads only what comes after.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(
            &mut f,
            b"{\"secret_id\": \"c\", \"holder\": {\"pid\": 3}, \"delivery\": [{\"env\": \"C\"}]}\n",
        )
        .unwrap();
        let mut resumed = Source::new(&p, false, 1 << 20, Some(pos));
        let got = resumed.poll(Utc::now());
        let origins: Vec<&str> = got.records.iter().map(|(_, o)| o.as_str()).collect();
        assert_eq!(origins, [at(5)]);
    }

    #[test]
    fn a_missing_file_reads_nothing_until_it_appears() {
        let d = TempDir::new("source-missing");
        let p = d.path().join("later.jsonl");
        let mut s = Source::new(&p, true, 1 << 20, None);
        let got = s.poll(Utc::now());
        assert!(!got.read && got.records.is_empty() && got.leases.is_empty());
        // A Vault audit line that is not JSON is a bad line, named.
        std::fs::write(&p, "{oops\n").unwrap();
        let got = s.poll(Utc::now());
        assert_eq!(got.bad.len(), 1, "{got:?}");
        assert!(
            got.bad[0].starts_with(&format!("{}:1: ", p.display())),
            "{got:?}"
        );
    }
}
