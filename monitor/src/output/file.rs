//! File feed: one JSON object a line (native alert or its OCSF object),
//! with size-based rotation.
//!
//! Before a line would take the live file past `max_bytes`, the file is
//! rotated: `path.<keep>` is deleted, `path.<i>` renamed to `path.<i+1>`,
//! `path` renamed to `path.1`, and a new `path` started. A line is never
//! split across files; a single line longer than `max_bytes` goes alone into
//! a fresh file. Each `send` ends with the batch handed to the kernel (one
//! `write` per file touched, no fsync). A failed write is rolled back
//! (the file truncated to its last complete line) so the file stays valid
//! JSON lines. Path `-` writes to stdout without rotation.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use serde::Deserialize;

use super::Feed;
use crate::correlate::alert::Alert;

/// Files are created readable by the owner only: alerts name secrets,
/// paths and processes.
const FILE_MODE: u32 = super::FILE_MODE;

pub struct RotatingFile {
    /// `None`: stdout.
    path: Option<PathBuf>,
    format: Format,
    max_bytes: u64,
    keep: u32,
    /// The open live file and its size; reopened after an error.
    file: Option<(File, u64)>,
    failures: u64,
    pub written: u64,
    pub rotations: u64,
}

impl RotatingFile {
    pub fn open(cfg: &FileFeedConfig) -> Result<Self> {
        let path = if cfg.path.as_os_str() == "-" {
            None
        } else {
            Some(cfg.path.clone())
        };
        let mut f = RotatingFile {
            path,
            format: cfg.format,
            max_bytes: cfg.max_bytes.max(1),
            keep: cfg.keep,
            file: None,
            failures: 0,
            written: 0,
            rotations: 0,
        };
        if let Some(p) = &f.path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                super::create_private_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            f.file = Some(open_live(p)?);
        }
        Ok(f)
    }

    fn line(&self, a: &Alert) -> Result<Vec<u8>> {
        let mut v = match self.format {
            Format::Native => serde_json::to_vec(a)?,
            Format::Ocsf => {
                serde_json::to_vec(&super::ocsf::alert_to_ocsf(a, env!("CARGO_PKG_VERSION")))?
            }
        };
        v.push(b'\n');
        Ok(v)
    }

    /// `path.1` .. `path.<keep>`.
    fn rotated(path: &Path, i: u32) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{i}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self, path: &Path) -> Result<()> {
        self.file = None;
        if self.keep == 0 {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        } else {
            let oldest = Self::rotated(path, self.keep);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", oldest.display())),
            }
            for i in (1..self.keep).rev() {
                let from = Self::rotated(path, i);
                let to = Self::rotated(path, i + 1);
                match std::fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("renaming {} to {}", from.display(), to.display())
                        })
                    }
                }
            }
            let to = Self::rotated(path, 1);
            match std::fs::rename(path, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("renaming {} to {}", path.display(), to.display())
                    })
                }
            }
        }
        self.rotations += 1;
        self.file = Some(open_live(path)?);
        Ok(())
    }

    /// Writes `buf` (whole lines) to the live file; on error truncates the
    /// file back to its size before the write.
    fn flush_chunk(&mut self, buf: &mut Vec<u8>, lines: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some((f, size)) = self.file.as_mut() else {
            anyhow::bail!("no open file");
        };
        match f.write_all(buf) {
            Ok(()) => {
                *size += buf.len() as u64;
                self.written += lines;
                buf.clear();
                Ok(())
            }
            Err(e) => {
                let _ = f.set_len(*size);
                self.file = None;
                buf.clear();
                Err(e).context("writing alerts")
            }
        }
    }

    fn send_to_file(&mut self, path: &Path, lines: &[Vec<u8>]) -> Result<()> {
        // Removed or replaced under us (rm, logrotate without
        // copytruncate): lines would go to a file nobody can open.
        if let Some((f, _)) = &self.file {
            use std::os::unix::fs::MetadataExt;
            let open = f.metadata().ok().map(|m| (m.dev(), m.ino()));
            let now = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
            if open != now {
                tracing::warn!(
                    "file feed {}: the file was removed or replaced; reopening it",
                    path.display()
                );
                self.file = None;
            }
        }
        if self.file.is_none() {
            self.file = Some(open_live(path)?);
        }
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_lines = 0u64;
        for line in lines {
            let size = self.file.as_ref().map(|(_, s)| *s).unwrap_or(0) + chunk.len() as u64;
            if size > 0 && size + line.len() as u64 > self.max_bytes {
                self.flush_chunk(&mut chunk, chunk_lines)?;
                chunk_lines = 0;
                self.rotate(path)?;
            }
            chunk.extend_from_slice(line);
            chunk_lines += 1;
        }
        self.flush_chunk(&mut chunk, chunk_lines)
    }
}

fn open_live(path: &Path) -> Result<(File, u64)> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    Ok((f, size))
}

impl Feed for RotatingFile {
    fn name(&self) -> String {
        match &self.path {
            Some(p) => format!("file:{}", p.display()),
            None => "file:-".into(),
        }
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(alerts.len());
        for a in alerts {
            match self.line(a) {
                Ok(l) => lines.push(l),
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!("{}: alert not serializable: {e}", self.name());
                }
            }
        }
        let Some(path) = self.path.clone() else {
            let out = io::stdout();
            let mut out = out.lock();
            let r = lines
                .iter()
                .try_for_each(|l| out.write_all(l))
                .and_then(|_| out.flush());
            return match r {
                Ok(()) => {
                    self.written += lines.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    self.failures += lines.len() as u64;
                    Err(e).context("writing alerts to stdout")
                }
            };
        };
        let before = self.written;
        match self.send_to_file(&path, &lines) {
            Ok(()) => Ok(()),
            Err(e) => {
                let lost = lines.len() as u64 - (self.written - before);
                self.failures += lost;
                Err(e.context(format!(
                    "file feed {}: {lost} of {} alerts not written",
                    path.display(),
                    lines.len()
                )))
            }
        }
    }

    fn failures(&self) -> u64 {
        self.failures
    }
}

/// The JSON shape of an alert in a feed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The contract's native alert object.
    #[default]
    Native,
    /// An OCSF 1.8.0 Detection Finding (class_uid 2004).
    Ocsf,
}

pub const DEFAULT_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_FILE_KEEP: u32 = 5;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFeedConfig {
    /// The live file; `-` writes to stdout (no rotation).
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    /// Rotate before a line would take the file past this size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` newest .. `path.<keep>` oldest); 0 keeps
    /// none (the file is simply started anew).
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_max_bytes() -> u64 {
    DEFAULT_FILE_MAX_BYTES
}

fn default_keep() -> u32 {
    DEFAULT_FILE_KEEP
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::correlate::alert::Evidence;
    use crate::event::Process;
    use crate::testutil::TempDir;

    pub(crate) fn alert(i: usize) -> Alert {
        Alert {
            time: crate::event::UtcTime::parse("2026-11-22T10:01:02.123456Z").unwrap(),
            rule: "secret.copy.file".into(),
            severity: "high".into(),
            secret_id: format!("db-{i:04}"),
            secret_ids: vec![format!("db-{i:04}")],
            summary: format!("db-{i:04} copied into /tmp/x by cp (pid 5151)"),
            actor: Process {
                pid: 5151,
                ppid: Some(5150),
                uid: 0,
                comm: "cp".into(),
                exe: Some("/usr/bin/cp".into()),
                ..Default::default()
            },
            evidence: Evidence {
                path: Some("/tmp/x".into()),
                fd_kind: Some(crate::event::FdKind::File),
                encoding: Some("raw".into()),
                bytes: Some(37),
                ..Default::default()
            },
            attack: vec!["T1552.001".into()],
            owasp_nhi: vec!["NHI2".into()],
            event_ids: vec![812, 815],
            count: None,
            first_time: None,
            last_time: None,
            rollup_of: None,
        }
    }

    fn cfg(path: &Path, max_bytes: u64, keep: u32) -> FileFeedConfig {
        FileFeedConfig {
            path: path.into(),
            format: Format::Native,
            max_bytes,
            keep,
        }
    }

    fn line_len(i: usize) -> u64 {
        serde_json::to_vec(&alert(i)).unwrap().len() as u64 + 1
    }

    fn lines_of(p: &Path) -> Vec<Alert> {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            p.display()
        );
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line is one whole alert"))
            .collect()
    }

    #[test]
    fn rotates_at_the_right_size_and_never_splits_a_line() {
        let d = TempDir::new("file-rot");
        let p = d.join("alerts.json");
        let l = line_len(0);
        // Room for exactly three lines per file.
        let mut f = RotatingFile::open(&cfg(&p, 3 * l, 10)).unwrap();
        let alerts: Vec<Alert> = (0..10).map(alert).collect();
        f.send(&alerts[..2]).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 2 * l);
        assert!(!RotatingFile::rotated(&p, 1).exists());
        f.send(&alerts[2..3]).unwrap();
        // Exactly at max_bytes: no rotation yet.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 * l);
        assert!(!RotatingFile::rotated(&p, 1).exists());
        // The next line would exceed it: rotate first.
        f.send(&alerts[3..10]).unwrap();
        assert_eq!(f.rotations, 3);
        // Oldest first: .3 holds 0..3, .2 3..6, .1 6..9, live 9.
        let mut seen = Vec::new();
        for i in (1..=3).rev() {
            let got = lines_of(&RotatingFile::rotated(&p, i));
            assert_eq!(got.len(), 3);
            assert!(
                std::fs::metadata(RotatingFile::rotated(&p, i))
                    .unwrap()
                    .len()
                    <= 3 * l
            );
            seen.extend(got);
        }
        seen.extend(lines_of(&p));
        assert_eq!(seen, alerts);
        // The live file and every rotated one: owner only.
        use std::os::unix::fs::PermissionsExt;
        for q in [
            p.clone(),
            RotatingFile::rotated(&p, 1),
            RotatingFile::rotated(&p, 3),
        ] {
            let mode = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", q.display());
        }
        assert_eq!(f.failures(), 0);
        assert_eq!(f.written, 10);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn keep_is_honoured() {
        let d = TempDir::new("file-keep");
        let p = d.join("a.json");
        let l = line_len(0);
        let mut f = RotatingFile::open(&cfg(&p, l, 2)).unwrap();
        let alerts: Vec<Alert> = (0..6).map(alert).collect();
        for a in &alerts {
            f.send(std::slice::from_ref(a)).unwrap();
        }
        // One line per file: live = 5, .1 = 4, .2 = 3; 0..2 deleted.
        assert_eq!(lines_of(&p), vec![alert(5)]);
        assert_eq!(lines_of(&RotatingFile::rotated(&p, 1)), vec![alert(4)]);
        assert_eq!(lines_of(&RotatingFile::rotated(&p, 2)), vec![alert(3)]);
        assert!(!RotatingFile::rotated(&p, 3).exists());
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.json", "a.json.1", "a.json.2"]);

        // keep = 0: the live file is just started anew.
        let p0 = d.join("b.json");
        let mut f = RotatingFile::open(&cfg(&p0, l, 0)).unwrap();
        f.send(&alerts[..3]).unwrap();
        assert_eq!(lines_of(&p0), vec![alert(2)]);
        assert!(!RotatingFile::rotated(&p0, 1).exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_line_longer_than_max_goes_alone_into_a_fresh_file() {
        let d = TempDir::new("file-long");
        let p = d.join("a.json");
        let mut f = RotatingFile::open(&cfg(&p, 10, 3)).unwrap();
        f.send(&[alert(0), alert(1)]).unwrap();
        assert_eq!(lines_of(&p), vec![alert(1)]);
        assert_eq!(lines_of(&RotatingFile::rotated(&p, 1)), vec![alert(0)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn resumes_an_existing_file_counting_its_size() {
        let d = TempDir::new("file-resume");
        let p = d.join("a.json");
        let l = line_len(0);
        {
            let mut f = RotatingFile::open(&cfg(&p, 2 * l, 3)).unwrap();
            f.send(&[alert(0)]).unwrap();
        }
        let mut f = RotatingFile::open(&cfg(&p, 2 * l, 3)).unwrap();
        f.send(&[alert(1), alert(2)]).unwrap();
        assert_eq!(
            lines_of(&RotatingFile::rotated(&p, 1)),
            vec![alert(0), alert(1)]
        );
        assert_eq!(lines_of(&p), vec![alert(2)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_removed_file_is_reopened_at_its_path() {
        let d = TempDir::new("file-removed");
        let p = d.join("alerts.json");
        let mut f = RotatingFile::open(&cfg(&p, 1 << 20, 1)).unwrap();
        f.send(&[alert(1)]).unwrap();
        std::fs::remove_file(&p).unwrap();
        f.send(&[alert(2)]).unwrap();
        assert_eq!(lines_of(&p), vec![alert(2)]);
        assert_eq!(f.failures(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn ocsf_format_writes_the_one_ocsf_mapping() {
        let d = TempDir::new("file-ocsf");
        let p = d.join("o.json");
        let mut c = cfg(&p, 1 << 20, 1);
        c.format = Format::Ocsf;
        let mut f = RotatingFile::open(&c).unwrap();
        f.send(&[alert(7)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(
            v,
            crate::output::ocsf::alert_to_ocsf(&alert(7), env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(f.name(), format!("file:{}", p.display()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "owner only: {mode:o}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unwritable_path_is_an_error_not_a_panic() {
        let d = TempDir::new("file-bad");
        // A directory where the file should be.
        let p = d.join("dir");
        std::fs::create_dir_all(&p).unwrap();
        assert!(RotatingFile::open(&cfg(&p, 100, 1)).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
