//! Helpers shared by the unit tests.
use std::{
    ops::Deref,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A fresh, empty directory of one test (unique per process and call),
/// removed with everything in it on drop. Short enough for a unix
/// socket's path in it (under /tmp when `TMPDIR` is long).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "monitor-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut dir = std::env::temp_dir().join(&name);
        if dir.as_os_str().len() > 60 {
            dir = PathBuf::from("/tmp").join(&name);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The event store's file in it.
    pub fn db(&self) -> PathBuf {
        self.0.join("events.db")
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::TempDir;

    #[test]
    fn fresh_distinct_and_removed_on_drop() {
        let a = TempDir::new("x");
        let b = TempDir::new("x");
        assert_ne!(a.path(), b.path());
        assert!(a.is_dir() && std::fs::read_dir(&*a).unwrap().next().is_none());
        std::fs::write(a.join("f"), "1").unwrap();
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists(), "{}", p.display());
        assert!(b.db().ends_with("events.db") && b.db().starts_with(b.path()));
    }
}
