//! Watched paths: glob patterns (`--watch`, config, API, `discover`)
//! expanded to files, and literal paths (issuance delivery files: `*`, `?`
//! and `[` in them are characters of the name, never wildcards),
//! whose (device, inode) go into the kernel's `WATCHED_INODES` map. Matching
//! by inode catches every route to the file: relative paths, symlinks (the
//! Kubernetes `..data` swap), hard links and bind mounts into containers.
use std::{collections::HashMap, os::unix::fs::MetadataExt, path::Path};

use anyhow::{bail, Context, Result};
use monitor_common::{InodeKey, WatchValue, WATCH_FILE};

use crate::{enrich::procfs::user_dev_to_kernel, enrich::WatchNames};

/// Most files one pattern may expand to (a typo like `/**` must not eat the
/// kernel map).
pub const MAX_MATCHES_PER_PATTERN: usize = 4096;

#[derive(Debug)]
struct Watch {
    id: u32,
    pattern: String,
    glob: glob::Pattern,
    /// A literal path (a delivery file), not a glob.
    literal: bool,
}

/// Something that can hold watched inodes (the kernel map, or a test double
/// in unit tests of the expansion logic).
pub trait InodeSink {
    fn add(&mut self, key: InodeKey, value: WatchValue) -> Result<()>;
}

impl InodeSink for crate::sensors::Sensors {
    fn add(&mut self, key: InodeKey, value: WatchValue) -> Result<()> {
        self.watch_inode(key, value)
    }
}

#[derive(Debug, Default)]
pub struct WatchSet {
    /// Index `id - 1`.
    watches: Vec<Watch>,
    /// (literal?, pattern) -> id.
    by_pattern: HashMap<(bool, String), u32>,
    /// Watches that name one path (delivery files, patterns without glob
    /// characters): path -> the first id, matched by lookup.
    single: HashMap<String, u32>,
    /// Ids of the other (glob) patterns, ascending.
    globs: Vec<u32>,
    /// Every inode put in the kernel map, with the path it was found at.
    inodes: HashMap<InodeKey, (u32, String)>,
    /// Inodes the kernel map refused (full), with the path: not retried
    /// (nothing leaves the map while the agent runs), counted in
    /// `/metrics`, logged once a rescan in one line.
    refused: HashMap<InodeKey, (u32, String)>,
    /// Watches `0..expanded` were expanded at least once (what
    /// [`WatchSet::rescan_added`] skips).
    expanded: usize,
}

/// A file newly found under a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMatch {
    pub watch_id: u32,
    pub path: String,
    pub key: InodeKey,
}

impl WatchSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a pattern; returns its id (the same id for a repeat).
    pub fn add(&mut self, pattern: &str) -> Result<u32> {
        if !pattern.starts_with('/') {
            bail!("watch pattern {pattern:?} is not an absolute path");
        }
        if let Some(id) = self.by_pattern.get(&(false, pattern.to_string())) {
            return Ok(*id);
        }
        let glob = glob::Pattern::new(pattern)
            .with_context(|| format!("watch pattern {pattern:?} is not a valid glob"))?;
        Ok(self.push(pattern, glob, false))
    }

    fn push(&mut self, pattern: &str, glob: glob::Pattern, literal: bool) -> u32 {
        let id = self.watches.len() as u32 + 1;
        self.by_pattern.insert((literal, pattern.to_string()), id);
        if literal || !pattern.contains(['*', '?', '[', ']']) {
            self.single.entry(pattern.to_string()).or_insert(id);
        } else {
            self.globs.push(id);
        }
        self.watches.push(Watch {
            id,
            pattern: pattern.to_string(),
            glob,
            literal,
        });
        id
    }

    /// Register one literal file path (a delivery file): it watches that
    /// file and nothing else, whatever characters its name has. An error
    /// (naming the path) if it can never be watched: not absolute, or an
    /// existing directory or other non-file. A file that does not exist
    /// yet is watched once it appears.
    pub fn add_literal(&mut self, path: &str) -> Result<u32> {
        check_literal(path)?;
        if let Some(id) = self.by_pattern.get(&(true, path.to_string())) {
            return Ok(*id);
        }
        let glob = glob::Pattern::new(&glob::Pattern::escape(path))
            .with_context(|| format!("delivery file {path:?}"))?;
        Ok(self.push(path, glob, true))
    }

    pub fn patterns(&self) -> impl Iterator<Item = (u32, &str)> {
        self.watches.iter().map(|w| (w.id, w.pattern.as_str()))
    }

    /// Does a path fall under any watch?
    /// (A lookup for the single-path watches, then the glob patterns in
    /// order: 10,000 delivery files cost one lookup.)
    pub fn matches(&self, path: &str) -> Option<u32> {
        // The first (lowest id) watch that matches.
        let single = self.single.get(path).copied();
        let glob = self
            .globs
            .iter()
            .take_while(|id| single.is_none_or(|l| **id < l))
            .find(|id| self.watches[**id as usize - 1].glob.matches(path))
            .copied();
        glob.or(single)
    }

    /// Expand every pattern and put new inodes in `sink`. Files that were
    /// replaced (new inode at the same path) are added too; old inodes stay
    /// watched (they may still be open).
    pub fn rescan(&mut self, sink: &mut dyn InodeSink) -> Vec<NewMatch> {
        self.expand(0, sink)
    }

    /// [`WatchSet::rescan`] of the watches added since the last rescan
    /// only: applying a batch of records costs what the batch adds, not
    /// what was recorded before (100,000 delivery files were re-read on
    /// every batch of a thousand).
    pub fn rescan_added(&mut self, sink: &mut dyn InodeSink) -> Vec<NewMatch> {
        self.expand(self.expanded, sink)
    }

    fn expand(&mut self, from: usize, sink: &mut dyn InodeSink) -> Vec<NewMatch> {
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for w in &self.watches[from.min(self.watches.len())..] {
            let paths: Box<dyn Iterator<Item = std::path::PathBuf>> = if w.literal {
                Box::new(std::iter::once(std::path::PathBuf::from(&w.pattern)))
            } else {
                match glob::glob(&w.pattern) {
                    Ok(p) => Box::new(p.filter_map(|p| p.ok())),
                    Err(e) => {
                        tracing::warn!("watch {:?}: {e}", w.pattern);
                        continue;
                    }
                }
            };
            for p in paths.take(MAX_MATCHES_PER_PATTERN) {
                if let Some(key) = inode_key(&p) {
                    if !self.inodes.contains_key(&key)
                        && !self.refused.contains_key(&key)
                        && seen.insert(key)
                    {
                        found.push(NewMatch {
                            watch_id: w.id,
                            path: p.display().to_string(),
                            key,
                        });
                    }
                }
            }
        }
        self.expanded = self.watches.len();
        let mut refused: Vec<(String, String)> = Vec::new();
        found.retain(|m| {
            let v = WatchValue {
                watch_id: m.watch_id,
                flags: WATCH_FILE,
            };
            match sink.add(m.key, v) {
                Ok(()) => {
                    self.inodes.insert(m.key, (m.watch_id, m.path.clone()));
                    true
                }
                Err(e) => {
                    self.refused.insert(m.key, (m.watch_id, m.path.clone()));
                    refused.push((m.path.clone(), format!("{e:#}")));
                    false
                }
            }
        });
        if let Some((path, why)) = refused.first() {
            tracing::warn!(
                "cannot watch {} more file(s) ({} in all, {} watched): {path}: {why}{}",
                refused.len(),
                self.refused.len(),
                self.inodes.len(),
                if refused.len() > 1 {
                    ", and others"
                } else {
                    ""
                }
            );
        }
        found
    }

    /// The inode a watched path was found at (`None`: not watched).
    pub fn watched_key(&self, path: &str) -> Option<InodeKey> {
        inode_key(Path::new(path)).filter(|k| self.inodes.contains_key(k))
    }

    /// Files the kernel map refused (see [`WatchSet::rescan`]).
    pub fn refused_files(&self) -> usize {
        self.refused.len()
    }

    /// Every watched file: (path, inode), borrowed.
    pub fn watched(&self) -> impl Iterator<Item = (&str, InodeKey)> {
        self.inodes.iter().map(|(k, (_, p))| (p.as_str(), *k))
    }

    pub fn watched_inodes(&self) -> usize {
        self.inodes.len()
    }
}

/// Whether a literal delivery path can be watched (see
/// [`WatchSet::add_literal`]).
pub fn check_literal(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        bail!("delivery file {path:?} is not an absolute path, so it cannot be watched");
    }
    if path.contains('\0') {
        bail!("delivery file {path:?} contains a NUL byte, so it cannot be watched");
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            bail!("delivery file {path:?} is a directory, not a file, so it cannot be watched")
        }
        Ok(m) if !m.is_file() => {
            bail!("delivery file {path:?} is not a regular file, so it cannot be watched")
        }
        _ => Ok(()),
    }
}

/// (dev, ino) of a regular file, following symlinks, in the kernel's
/// encoding.
pub fn inode_key(p: &Path) -> Option<InodeKey> {
    let md = std::fs::metadata(p).ok()?;
    if !md.is_file() {
        return None;
    }
    Some(InodeKey {
        ino: md.ino(),
        dev: user_dev_to_kernel(md.dev()),
        _pad: 0,
    })
}

impl WatchNames for WatchSet {
    fn watch_name(&self, id: u32) -> Option<String> {
        let w = self.watches.get((id as usize).checked_sub(1)?)?;
        Some(w.pattern.clone())
    }

    fn path_of(&self, key: &InodeKey) -> Option<String> {
        self.inodes.get(key).map(|(_, p)| p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[derive(Default)]
    struct Sink(Vec<(InodeKey, WatchValue)>);
    impl InodeSink for Sink {
        fn add(&mut self, key: InodeKey, value: WatchValue) -> Result<()> {
            self.0.push((key, value));
            Ok(())
        }
    }

    #[test]
    fn rejects_relative_and_bad_patterns_with_the_pattern_named() {
        let mut w = WatchSet::new();
        let e = w.add("secrets/*").unwrap_err().to_string();
        assert!(e.contains("secrets/*") && e.contains("absolute"), "{e}");
        let e = w.add("/a/[b").unwrap_err().to_string();
        assert!(e.contains("/a/[b"), "{e}");
    }

    #[test]
    fn literal_paths_watch_exactly_one_file() {
        let d = TempDir::new("watch-literal");
        for name in ["*", "a", "b", "x[1", "q?"] {
            std::fs::write(d.join(name), "x").unwrap();
        }
        let mut w = WatchSet::new();
        let mut sink = Sink::default();
        // `*` is the name of a file here, not a wildcard.
        let star = w.add_literal(&format!("{}/*", d.display())).unwrap();
        let found = w.rescan(&mut sink);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].path.ends_with("/*"));
        assert_eq!(w.matches(&format!("{}/a", d.display())), None);
        assert_eq!(w.matches(&format!("{}/*", d.display())), Some(star));
        // Brackets and question marks too (`[` alone is not a valid glob).
        w.add_literal(&format!("{}/x[1", d.display())).unwrap();
        w.add_literal(&format!("{}/q?", d.display())).unwrap();
        assert_eq!(w.rescan(&mut sink).len(), 2);
        assert_eq!(w.watched_inodes(), 3);
        // A glob of the same text is another watch.
        let g = w.add(&format!("{}/*", d.display())).unwrap();
        assert_ne!(g, star);
        // Not yet there: fine; a directory or a relative path: an error.
        w.add_literal(&format!("{}/later", d.display())).unwrap();
        let e = w
            .add_literal(&d.display().to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = w.add_literal("rel/x").unwrap_err().to_string();
        assert!(e.contains("\"rel/x\" is not an absolute path"), "{e}");
    }

    /// Takes `room` inodes, then refuses like a full kernel map.
    struct Full {
        room: usize,
        tries: usize,
        taken: Vec<InodeKey>,
    }
    impl InodeSink for Full {
        fn add(&mut self, key: InodeKey, _: WatchValue) -> Result<()> {
            self.tries += 1;
            if self.taken.len() == self.room {
                bail!("`bpf_map_update_elem` failed: Argument list too long (os error 7)");
            }
            self.taken.push(key);
            Ok(())
        }
    }

    #[test]
    fn records_cost_what_they_add_and_a_full_map_is_not_retried() {
        let d = TempDir::new("watch-added");
        let mut w = WatchSet::new();
        let mut sink = Full {
            room: 3,
            tries: 0,
            taken: Vec::new(),
        };
        let file = |i: usize| {
            let p = d.join(i.to_string());
            std::fs::write(&p, "x").unwrap();
            p.display().to_string()
        };
        for i in 0..2 {
            w.add_literal(&file(i)).unwrap();
        }
        assert_eq!(w.rescan_added(&mut sink).len(), 2);
        // Two more: only those are looked at; the second does not fit.
        for i in 2..4 {
            w.add_literal(&file(i)).unwrap();
        }
        let found = w.rescan_added(&mut sink);
        assert_eq!(
            found.iter().map(|m| m.path.clone()).collect::<Vec<_>>(),
            [file(2)]
        );
        assert_eq!(
            (sink.tries, w.watched_inodes(), w.refused_files()),
            (4, 3, 1)
        );
        // Nothing added: nothing tried; a full rescan does not retry the
        // refused file either, and finds nothing new.
        assert!(w.rescan_added(&mut sink).is_empty());
        assert!(w.rescan(&mut sink).is_empty());
        assert_eq!(sink.tries, 4);
        // A watched path maps to its inode; a refused one does not.
        assert!(w.watched_key(&file(0)).is_some());
        assert_eq!(w.watched_key(&file(3)), None);
        assert_eq!(w.watched().count(), 3);
    }

    #[test]
    fn expands_globs_follows_symlinks_and_sees_replaced_files() {
        let d = TempDir::new("watch-glob");
        std::fs::write(d.join("a"), "x").unwrap();
        std::fs::write(d.join("b"), "y").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        let mut w = WatchSet::new();
        let id = w.add(&format!("{}/*", d.display())).unwrap();
        assert_eq!(w.add(&format!("{}/*", d.display())).unwrap(), id);
        let mut sink = Sink::default();
        let found = w.rescan(&mut sink);
        // Two files; the directory is not a secret file.
        assert_eq!(found.len(), 2);
        assert_eq!(sink.0.len(), 2);
        assert!(sink.0.iter().all(|(_, v)| v.watch_id == id));
        // Nothing new on a second pass.
        assert!(w.rescan(&mut sink).is_empty());
        // Replace `a` atomically (new inode): found again.
        std::fs::write(d.join("a.new"), "z").unwrap();
        std::fs::rename(d.join("a.new"), d.join("a")).unwrap();
        let again = w.rescan(&mut sink);
        assert_eq!(again.len(), 1);
        assert!(again[0].path.ends_with("/a"));
        // A symlink to a watched file resolves to the same inode.
        let key = inode_key(&d.join("b")).unwrap();
        std::os::unix::fs::symlink(d.join("b"), d.join("link")).unwrap();
        assert_eq!(inode_key(&d.join("link")), Some(key));
        assert_eq!(w.path_of(&key).unwrap(), d.join("b").display().to_string());
    }
}
