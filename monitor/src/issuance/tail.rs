//! Following a JSON-lines file the way `tail -F` does.
//!
//! A [`Tailer`] reads a file from its beginning (records written before the
//! agent started count) and then whatever is appended, one complete line at
//! a time. It copes with the file not existing yet, being truncated, being
//! rotated (renamed or deleted and re-created), and with lines that are too
//! long or not UTF-8.
//!
//! [`Tailer::poll`] returns the new complete lines; lines that cannot be
//! returned are counted in the numbering and reported separately by
//! [`Tailer::take_skipped`], so the caller can log "file:line: skipped" and
//! go on.
//!
//! Limitations shared with `tail -F`: a truncation is noticed only if the
//! file is shorter than what was read when it is next polled (truncated and
//! refilled past that point between two polls looks like an append), and
//! lines appended to a rotated file after the tailer switched to the new
//! file are not read.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::mem;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Default longest line, newline excluded: 1 MiB.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;
/// Default most bytes read by one [`Tailer::poll`]: 8 MiB.
pub const DEFAULT_MAX_POLL_BYTES: usize = 8 << 20;

const CHUNK: usize = 64 * 1024;

/// One complete line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the current file generation (it restarts at 1
    /// after a truncation or a rotation).
    pub number: u64,
    /// The line without its `\n` (nor a `\r` before it, nor a leading
    /// UTF-8 byte-order mark on line 1). Never blank: blank lines are
    /// counted but not returned.
    pub text: String,
}

/// Why a line was not returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Longer than the line cap; `bytes` is its length without the newline.
    TooLong {
        /// The line's length in bytes.
        bytes: u64,
        /// The cap.
        limit: u64,
    },
    /// Not valid UTF-8.
    NotUtf8,
    /// The file was rotated or truncated while this last line had no
    /// newline yet; `bytes` were read of it.
    Unterminated {
        /// Bytes read of the line.
        bytes: u64,
    },
}

/// A line that was counted but not returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its 1-based number in its file generation (for
    /// [`SkipReason::Unterminated`], the number it would have had).
    pub number: u64,
    /// The file generation it belongs to (see [`Tailer::generation`]).
    pub generation: u64,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// `1 MiB`, `64 KiB`, `100 bytes`.
fn size_text(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// A sentence: `line 3 is 10485854 bytes, longer than the 1 MiB limit; skipped`.
impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.number;
        match &self.reason {
            SkipReason::TooLong { bytes, limit } => write!(
                f,
                "line {n} is {bytes} bytes, longer than the {} limit; skipped",
                size_text(*limit)
            ),
            SkipReason::NotUtf8 => write!(f, "line {n} is not UTF-8; skipped"),
            SkipReason::Unterminated { bytes } => write!(
                f,
                "line {n} had no newline ({bytes} bytes read) when the file was rotated or \
                 truncated; skipped"
            ),
        }
    }
}

/// The file currently followed.
#[derive(Debug)]
struct Open {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read from `file` so far.
    pos: u64,
}

/// Follows one file by name, like `tail -F`. See the module docs.
#[derive(Debug)]
pub struct Tailer {
    path: PathBuf,
    open: Option<Open>,
    /// Bytes of the current, not yet terminated line.
    pending: Vec<u8>,
    /// Set while inside an over-long line: bytes of it seen so far.
    skipping: Option<u64>,
    /// Lines completed in the current generation.
    line_no: u64,
    generation: u64,
    skipped: Vec<Skipped>,
    max_line: usize,
    max_poll_bytes: usize,
    /// Where to start when the file is first opened (a restart).
    resume: Option<Position>,
}

/// Where a [`Tailer`] is: the file (device, inode), the bytes consumed up
/// to the end of the last complete line, and the lines read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub pos: u64,
    pub line: u64,
}

impl Tailer {
    /// Follows `path`. Nothing is opened until the first [`Tailer::poll`];
    /// the file need not exist yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Tailer {
            path: path.into(),
            open: None,
            pending: Vec::new(),
            skipping: None,
            line_no: 0,
            generation: 0,
            skipped: Vec::new(),
            max_line: DEFAULT_MAX_LINE,
            max_poll_bytes: DEFAULT_MAX_POLL_BYTES,
            resume: None,
        }
    }

    /// Start at `at` instead of the beginning, if the file is still the
    /// same one (device and inode) and not shorter; else from the start.
    pub fn resume_at(mut self, at: Position) -> Self {
        self.resume = Some(at);
        self
    }

    /// Where the last complete line ended (what [`Tailer::resume_at`]
    /// takes after a restart); `None` before the file was opened.
    pub fn position(&self) -> Option<Position> {
        let o = self.open.as_ref()?;
        let partial = match self.skipping {
            Some(n) => n,
            None => self.pending.len() as u64,
        };
        Some(Position {
            dev: o.dev,
            ino: o.ino,
            pos: o.pos.saturating_sub(partial),
            line: self.line_no,
        })
    }

    /// Sets the longest line kept, newline excluded (at least 1).
    pub fn with_max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes.max(1);
        self
    }

    /// Sets how many bytes one poll reads at most (at least 1). A poll that
    /// hits the limit returns what it has; the next poll goes on.
    pub fn with_max_poll_bytes(mut self, bytes: usize) -> Self {
        self.max_poll_bytes = bytes.max(1);
        self
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file generation: 0 before the file was first opened, then 1,
    /// incremented at each truncation or rotation (line numbers restart).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Returns and clears the lines skipped since the last call.
    pub fn take_skipped(&mut self) -> Vec<Skipped> {
        mem::take(&mut self.skipped)
    }

    /// Returns the complete lines added since the last poll.
    ///
    /// A missing file is not an error (it is looked for again next time);
    /// other I/O errors are returned, unless some lines were already read
    /// in this call, in which case those are returned and the error comes
    /// back on the next poll. Skipped lines go to [`Tailer::take_skipped`].
    pub fn poll(&mut self) -> io::Result<Vec<Line>> {
        let mut out = Vec::new();
        match self.poll_into(&mut out) {
            Err(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    fn poll_into(&mut self, out: &mut Vec<Line>) -> io::Result<()> {
        let mut budget = self.max_poll_bytes;
        if self.open.is_none() && !self.open_path()? {
            return Ok(());
        }
        // A rotation can be followed by another before we look again, so
        // loop: each pass drains the current file then checks the name.
        loop {
            self.check_truncation()?;
            let at_eof = self.read_available(&mut budget, out)?;
            if !at_eof {
                return Ok(());
            }
            let current = match std::fs::metadata(&self.path) {
                Ok(m) => (m.dev(), m.ino()),
                // Deleted, not re-created (yet): keep the old file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            let same = self
                .open
                .as_ref()
                .is_some_and(|o| (o.dev, o.ino) == current);
            if same {
                return Ok(());
            }
            // Rotated: the old file is drained, move to the new one.
            self.end_generation();
            self.open = None;
            if !self.open_path()? {
                return Ok(());
            }
        }
    }

    /// Opens the path, starting a new generation. `Ok(false)`: not there.
    fn open_path(&mut self) -> io::Result<bool> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let mut file = file;
        let mut start = (0, 0);
        if let Some(at) = self.resume.take() {
            if (at.dev, at.ino) == (meta.dev(), meta.ino()) && at.pos <= meta.len() {
                file.seek(SeekFrom::Start(at.pos))?;
                start = (at.pos, at.line);
            }
        }
        self.open = Some(Open {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            pos: start.0,
        });
        self.start_generation();
        self.line_no = start.1;
        Ok(true)
    }

    /// Restarts from 0 if the file is now shorter than what was read.
    fn check_truncation(&mut self) -> io::Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let len = open.file.metadata()?.len();
        if len < open.pos {
            open.file.seek(SeekFrom::Start(0))?;
            open.pos = 0;
            self.end_generation();
            self.start_generation();
        }
        Ok(())
    }

    fn start_generation(&mut self) {
        self.generation += 1;
        self.line_no = 0;
        self.pending.clear();
        self.skipping = None;
    }

    /// Reports an unterminated last line of the ending generation.
    fn end_generation(&mut self) {
        let partial = match self.skipping.take() {
            Some(n) => n,
            None => self.pending.len() as u64,
        };
        if partial > 0 {
            self.skipped.push(Skipped {
                number: self.line_no + 1,
                generation: self.generation,
                reason: SkipReason::Unterminated { bytes: partial },
            });
        }
        self.pending.clear();
    }

    /// Reads until end of file or until the budget is spent; returns
    /// whether end of file was reached.
    fn read_available(&mut self, budget: &mut usize, out: &mut Vec<Line>) -> io::Result<bool> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            if *budget == 0 {
                return Ok(false);
            }
            let Some(open) = self.open.as_mut() else {
                return Ok(true);
            };
            let want = CHUNK.min(*budget);
            let n = match open.file.read(&mut buf[..want]) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            open.pos += n as u64;
            *budget -= n;
            self.feed(&buf[..n], out);
        }
    }

    /// Splits `data` into lines as if it had just been read from the file
    /// (the line splitting alone, without the file: for the fuzz targets).
    /// What it skips is in [`Tailer::take_skipped`].
    pub fn feed_bytes(&mut self, data: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        self.feed(data, &mut out);
        out
    }

    /// Splits freshly read bytes into lines.
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Line>) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            if let Some(seen) = self.skipping {
                match newline {
                    Some(i) => {
                        self.line_no += 1;
                        self.skip(SkipReason::TooLong {
                            bytes: seen + i as u64,
                            limit: self.max_line as u64,
                        });
                        self.skipping = None;
                        data = &data[i + 1..];
                    }
                    None => {
                        self.skipping = Some(seen + data.len() as u64);
                        return;
                    }
                }
                continue;
            }
            match newline {
                Some(i) => {
                    self.line_no += 1;
                    let total = self.pending.len() + i;
                    if total > self.max_line {
                        self.pending.clear();
                        self.skip(SkipReason::TooLong {
                            bytes: total as u64,
                            limit: self.max_line as u64,
                        });
                    } else {
                        self.pending.extend_from_slice(&data[..i]);
                        let bytes = mem::take(&mut self.pending);
                        self.emit(bytes, out);
                    }
                    data = &data[i + 1..];
                }
                None => {
                    let total = self.pending.len() + data.len();
                    if total > self.max_line {
                        self.pending.clear();
                        self.skipping = Some(total as u64);
                    } else {
                        self.pending.extend_from_slice(data);
                    }
                    return;
                }
            }
        }
    }

    fn skip(&mut self, reason: SkipReason) {
        self.skipped.push(Skipped {
            number: self.line_no,
            generation: self.generation,
            reason,
        });
    }

    /// Turns one complete line (number `self.line_no`) into a [`Line`].
    fn emit(&mut self, mut bytes: Vec<u8>, out: &mut Vec<Line>) {
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if self.line_no == 1 && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        match String::from_utf8(bytes) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => out.push(Line {
                number: self.line_no,
                text,
            }),
            Err(_) => self.skip(SkipReason::NotUtf8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    use crate::testutil::TempDir;

    fn append(path: &Path, data: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data).unwrap();
    }

    fn lines(t: &mut Tailer) -> Vec<(u64, String)> {
        t.poll()
            .unwrap()
            .into_iter()
            .map(|l| (l.number, l.text))
            .collect()
    }

    fn l(n: u64, s: &str) -> (u64, String) {
        (n, s.to_string())
    }

    #[test]
    fn resumes_at_a_saved_position_of_the_same_file_only() {
        let d = TempDir::new("resume");
        let f = d.join("a.jsonl");
        append(&f, b"one\ntwo\nthr");
        let mut t = Tailer::new(&f);
        assert_eq!(lines(&mut t), vec![(1, "one".into()), (2, "two".into())]);
        let at = t.position().unwrap();
        assert_eq!((at.pos, at.line), (8, 2));
        append(&f, b"ee\n");
        let mut again = Tailer::new(&f).resume_at(at);
        assert_eq!(lines(&mut again), vec![(3, "three".into())]);
        // Another file under the name: from its start.
        fs::remove_file(&f).unwrap();
        append(&f, b"new\n");
        let mut other = Tailer::new(&f).resume_at(at);
        assert_eq!(lines(&mut other), vec![(1, "new".into())]);
    }

    #[test]
    fn missing_file_appears_later() {
        let dir = TempDir::new("missing");
        let path = dir.join("issuances.jsonl");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![]);
        assert_eq!(t.generation(), 0);
        append(&path, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(lines(&mut t), vec![l(1, "{\"a\":1}"), l(2, "{\"b\":2}")]);
        assert_eq!(t.generation(), 1);
        assert_eq!(t.path(), path.as_path());
    }

    #[test]
    fn reads_existing_content_then_appends() {
        let dir = TempDir::new("append");
        let path = dir.join("f");
        append(&path, b"one\ntwo\n");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "one"), l(2, "two")]);
        assert_eq!(lines(&mut t), vec![]);
        append(&path, b"three\n");
        assert_eq!(lines(&mut t), vec![l(3, "three")]);
    }

    #[test]
    fn partial_line_waits_for_newline() {
        let dir = TempDir::new("partial");
        let path = dir.join("f");
        append(&path, b"one\ntw");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "one")]);
        append(&path, b"o");
        assert_eq!(lines(&mut t), vec![]);
        append(&path, b"\nthr");
        assert_eq!(lines(&mut t), vec![l(2, "two")]);
        append(&path, b"ee\n");
        assert_eq!(lines(&mut t), vec![l(3, "three")]);
        assert!(t.take_skipped().is_empty());
    }

    #[test]
    fn blank_lines_crlf_and_bom() {
        let dir = TempDir::new("blank");
        let path = dir.join("f");
        append(&path, b"\xEF\xBB\xBFfirst\r\n\n   \nsecond\r\n");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "first"), l(4, "second")]);
    }

    #[test]
    fn truncation_restarts_numbering() {
        let dir = TempDir::new("trunc");
        let path = dir.join("f");
        append(&path, b"one\ntwo\nthree\n");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t).len(), 3);
        fs::write(&path, b"new\n").unwrap();
        assert_eq!(lines(&mut t), vec![l(1, "new")]);
        assert_eq!(t.generation(), 2);
        // Truncated to empty, then written again.
        fs::write(&path, b"").unwrap();
        assert_eq!(lines(&mut t), vec![]);
        append(&path, b"again\n");
        assert_eq!(lines(&mut t), vec![l(1, "again")]);
    }

    #[test]
    fn truncation_reports_unterminated_line() {
        let dir = TempDir::new("trunc-partial");
        let path = dir.join("f");
        append(&path, b"one\npartial-without-newline");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "one")]);
        fs::write(&path, b"x\n").unwrap();
        assert_eq!(lines(&mut t), vec![l(1, "x")]);
        assert_eq!(
            t.take_skipped(),
            vec![Skipped {
                number: 2,
                generation: 1,
                reason: SkipReason::Unterminated { bytes: 23 }
            }]
        );
    }

    #[test]
    fn rotation_finishes_old_file_first() {
        let dir = TempDir::new("rotate");
        let path = dir.join("f");
        append(&path, b"a1\na2\n");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "a1"), l(2, "a2")]);
        // More is written to the old file, then it is rotated away and a
        // new file takes its name, all between two polls.
        append(&path, b"a3\na4\na5-partial");
        fs::rename(&path, dir.join("f.1")).unwrap();
        append(&path, b"b1\nb2\n");
        assert_eq!(
            lines(&mut t),
            vec![l(3, "a3"), l(4, "a4"), l(1, "b1"), l(2, "b2")]
        );
        assert_eq!(t.generation(), 2);
        let skipped = t.take_skipped();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].number, 5);
        assert_eq!(skipped[0].generation, 1);
        assert!(skipped[0].to_string().contains("line 5"));
        append(&path, b"b3\n");
        assert_eq!(lines(&mut t), vec![l(3, "b3")]);
    }

    #[test]
    fn deleted_file_is_kept_until_recreated() {
        let dir = TempDir::new("delete");
        let path = dir.join("f");
        append(&path, b"a1\n");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "a1")]);
        fs::remove_file(&path).unwrap();
        assert_eq!(lines(&mut t), vec![]);
        assert_eq!(lines(&mut t), vec![]);
        assert_eq!(t.generation(), 1);
        append(&path, b"b1\n");
        assert_eq!(lines(&mut t), vec![l(1, "b1")]);
        assert_eq!(t.generation(), 2);
    }

    #[test]
    fn double_rotation_between_polls() {
        let dir = TempDir::new("rotate2");
        let path = dir.join("f");
        append(&path, b"a1\n");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "a1")]);
        fs::rename(&path, dir.join("f.1")).unwrap();
        append(&path, b"b1\n");
        fs::rename(&path, dir.join("f.2")).unwrap();
        append(&path, b"c1\n");
        // b was never opened: it is lost, like with tail -F.
        assert_eq!(lines(&mut t), vec![l(1, "c1")]);
    }

    #[test]
    fn over_long_lines_are_skipped_and_counted() {
        let dir = TempDir::new("long");
        let path = dir.join("f");
        let mut data = b"short\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', DEFAULT_MAX_LINE + 1));
        data.extend(b"\nafter\n");
        data.extend(std::iter::repeat_n(b'y', DEFAULT_MAX_LINE));
        data.extend(b"\nlast\n");
        append(&path, &data);
        let mut t = Tailer::new(&path);
        let got = t.poll().unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].number, got[0].text.as_str()), (1, "short"));
        assert_eq!((got[1].number, got[1].text.as_str()), (3, "after"));
        // Exactly at the cap is kept.
        assert_eq!(got[2].number, 4);
        assert_eq!(got[2].text.len(), DEFAULT_MAX_LINE);
        assert_eq!((got[3].number, got[3].text.as_str()), (5, "last"));
        assert_eq!(
            t.take_skipped(),
            vec![Skipped {
                number: 2,
                generation: 1,
                reason: SkipReason::TooLong {
                    bytes: DEFAULT_MAX_LINE as u64 + 1,
                    limit: DEFAULT_MAX_LINE as u64,
                }
            }]
        );
        assert!(t.take_skipped().is_empty());
        let sk = Skipped {
            number: 2,
            generation: 1,
            reason: SkipReason::TooLong {
                bytes: 10_485_854,
                limit: DEFAULT_MAX_LINE as u64,
            },
        };
        assert_eq!(
            sk.to_string(),
            "line 2 is 10485854 bytes, longer than the 1 MiB limit; skipped"
        );
    }

    #[test]
    fn over_long_line_across_polls() {
        let dir = TempDir::new("long-polls");
        let path = dir.join("f");
        let mut t = Tailer::new(&path).with_max_line(10);
        append(&path, b"ok\n0123456789");
        assert_eq!(lines(&mut t), vec![l(1, "ok")]);
        append(&path, b"abc");
        assert_eq!(lines(&mut t), vec![]);
        append(&path, b"def");
        assert_eq!(lines(&mut t), vec![]);
        append(&path, b"\nfine\n");
        assert_eq!(lines(&mut t), vec![l(3, "fine")]);
        assert_eq!(
            t.take_skipped(),
            vec![Skipped {
                number: 2,
                generation: 1,
                reason: SkipReason::TooLong {
                    bytes: 16,
                    limit: 10
                }
            }]
        );
    }

    #[test]
    fn invalid_utf8_is_skipped() {
        let dir = TempDir::new("utf8");
        let path = dir.join("f");
        append(&path, b"ok\n\xff\xfe bad\nfine\n");
        let mut t = Tailer::new(&path);
        assert_eq!(lines(&mut t), vec![l(1, "ok"), l(3, "fine")]);
        let s = t.take_skipped();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].reason, SkipReason::NotUtf8);
        assert_eq!(s[0].number, 2);
    }

    #[test]
    fn poll_budget_resumes() {
        let dir = TempDir::new("budget");
        let path = dir.join("f");
        let mut data = Vec::new();
        for i in 1..=100 {
            data.extend(format!("line-{i:03}\n").as_bytes());
        }
        append(&path, &data);
        let mut t = Tailer::new(&path).with_max_poll_bytes(50);
        let mut all = Vec::new();
        for _ in 0..1000 {
            let got = lines(&mut t);
            if got.is_empty() {
                break;
            }
            assert!(got.len() <= 6);
            all.extend(got);
        }
        assert_eq!(all.len(), 100);
        for (i, (n, text)) in all.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1);
            assert_eq!(text, &format!("line-{:03}", i + 1));
        }
    }

    #[test]
    fn unreadable_path_is_an_error() {
        let dir = TempDir::new("dir");
        // A directory opens but cannot be read.
        let mut t = Tailer::new(dir.path());
        assert!(t.poll().is_err());
    }
}
