//! `--scope-cgroup PATH` (repeatable): the agent observes only processes
//! in those cgroup v2 subtrees. Two scoped agents on one machine stand for
//! two nodes (the fleet tests), and a shared host can run one agent per
//! tenant. Decided per record from the cgroup id the kernel stamps on it
//! (`bpf_get_current_cgroup_id`), cached by id: one hash lookup an event.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// Most cgroup ids whose decision is cached (then the cache starts over).
const MAX_CACHED: usize = 65_536;

#[derive(Debug, Clone)]
pub struct Scope {
    /// Cgroup paths relative to the v2 root (`/a/b`), no trailing slash.
    prefixes: Vec<String>,
    /// cgroup id -> in scope.
    cache: HashMap<u64, bool>,
}

impl Scope {
    /// `paths` are cgroup directories: absolute under the cgroup v2 mount
    /// (`/sys/fs/cgroup/unified/a`) or cgroup paths as `/proc/<pid>/cgroup`
    /// shows them (`/a`). Each must exist.
    pub fn new(paths: &[String], cgroup2_root: Option<&Path>) -> Result<Option<Self>> {
        if paths.is_empty() {
            return Ok(None);
        }
        let Some(root) = cgroup2_root else {
            bail!(
                "--scope-cgroup needs cgroup v2, and no cgroup2 mount is in /proc/self/mountinfo"
            );
        };
        let mut prefixes = Vec::new();
        for p in paths {
            let rel = relative(p, root);
            let dir: PathBuf = root.join(rel.trim_start_matches('/'));
            let md = std::fs::metadata(&dir)
                .with_context(|| format!("--scope-cgroup {p:?}: {} ", dir.display()))?;
            if !md.is_dir() || !dir.join("cgroup.procs").exists() {
                bail!(
                    "--scope-cgroup {p:?}: {} is not a cgroup v2 directory",
                    dir.display()
                );
            }
            prefixes.push(rel);
        }
        Ok(Some(Self {
            prefixes,
            cache: HashMap::new(),
        }))
    }

    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Whether a cgroup path (as the agent reports it) is in scope.
    pub fn covers(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| {
            p == "/"
                || path == p
                || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
        })
    }

    /// Whether the cgroup `id` is in scope; `path` resolves it on a miss
    /// (none: out of scope, not cached).
    pub fn covers_id(&mut self, id: u64, path: impl FnOnce() -> Option<String>) -> bool {
        if let Some(v) = self.cache.get(&id) {
            return *v;
        }
        let Some(p) = path() else { return false };
        let v = self.covers(&p);
        if id != 0 {
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            self.cache.insert(id, v);
        }
        v
    }
}

/// `p` as a cgroup path relative to the v2 root: `/sys/fs/cgroup/unified/a/`
/// and `/a` are both `/a`.
fn relative(p: &str, root: &Path) -> String {
    let rel = Path::new(p)
        .strip_prefix(root)
        .map(|r| format!("/{}", r.display()))
        .unwrap_or_else(|_| p.to_string());
    let t = rel.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else if t.starts_with('/') {
        t.to_string()
    } else {
        format!("/{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(prefixes: &[&str]) -> Scope {
        Scope {
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            cache: HashMap::new(),
        }
    }

    #[test]
    fn a_subtree_covers_itself_and_below_but_not_siblings_with_its_prefix() {
        let s = scope(&["/node-a"]);
        assert!(s.covers("/node-a"));
        assert!(s.covers("/node-a/pod/ctr"));
        assert!(!s.covers("/node-ab"));
        assert!(!s.covers("/"));
        assert!(!s.covers("/node-b/x"));
        assert!(scope(&["/"]).covers("/anything"));
        let s = scope(&["/a", "/b/c"]);
        assert!(s.covers("/b/c/d") && s.covers("/a") && !s.covers("/b"));
    }

    #[test]
    fn paths_under_the_mount_and_cgroup_paths_are_the_same() {
        let root = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(relative("/sys/fs/cgroup/unified/a/b/", root), "/a/b");
        assert_eq!(relative("/a/b", root), "/a/b");
        assert_eq!(relative("a", root), "/a");
        assert_eq!(relative("/sys/fs/cgroup/unified", root), "/");
    }

    #[test]
    fn decisions_are_cached_by_id_and_unresolved_ids_are_out() {
        let mut s = scope(&["/a"]);
        assert!(s.covers_id(7, || Some("/a/x".into())));
        // Cached: the resolver is not asked again.
        assert!(s.covers_id(7, || panic!("resolved twice")));
        assert!(!s.covers_id(8, || None));
        assert!(s.covers_id(8, || Some("/a".into())));
    }

    #[test]
    fn a_missing_cgroup_is_an_error_naming_it() {
        let e = Scope::new(
            &["/no-such-cgroup-i16".into()],
            Some(Path::new("/nonexistent")),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("no-such-cgroup-i16"), "{e:#}");
        assert!(Scope::new(&[], None).unwrap().is_none());
        assert!(Scope::new(&["/a".into()], None).is_err());
    }
}
