//! TLS libraries, attached on demand: when a process becomes tracked (and
//! when a tracked process opens a TLS library or execs), the files it maps
//! that hold a TLS write function get the `tls` uprobes (see
//! `monitor-ebpf/src/tls.rs`). A uprobe is per file (inode): one attachment
//! serves every process using that file, so each file is tried once.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use monitor_common::TlsLib;

/// A program of `monitor-ebpf/src/tls.rs` and the symbol it attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsProbe {
    pub program: &'static str,
    pub symbol: &'static str,
    pub lib: TlsLib,
}

/// Every TLS write function the agent knows.
pub const TLS_PROBES: &[TlsProbe] = &[
    TlsProbe {
        program: "ssl_write",
        symbol: "SSL_write",
        lib: TlsLib::Openssl,
    },
    TlsProbe {
        program: "ssl_write_ex",
        symbol: "SSL_write_ex",
        lib: TlsLib::Openssl,
    },
    TlsProbe {
        program: "gnutls_record_send",
        symbol: "gnutls_record_send",
        lib: TlsLib::Gnutls,
    },
    TlsProbe {
        program: "go_tls_write",
        symbol: "crypto/tls.(*Conn).Write",
        lib: TlsLib::Go,
    },
];

/// What a mapped file may hold, from its name: a shared TLS library
/// (`libssl.so.3`, `libgnutls.so.30`), or an executable that may have
/// OpenSSL/BoringSSL linked in or be a Go program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    Library(TlsLib),
    Executable,
}

/// `libssl.so*` (OpenSSL 1.1/3, BoringSSL as a shared library) and
/// `libgnutls.so*`; anything else is not a TLS library.
pub fn library_kind(path: &str) -> Option<TlsLib> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.starts_with("libssl.so") {
        Some(TlsLib::Openssl)
    } else if name.starts_with("libgnutls.so") {
        Some(TlsLib::Gnutls)
    } else {
        None
    }
}

/// The probes to try on a file.
pub fn probes_for(c: Candidate) -> impl Iterator<Item = &'static TlsProbe> {
    TLS_PROBES.iter().filter(move |p| match c {
        Candidate::Library(lib) => p.lib == lib,
        // A static build exports SSL_write; a Go program has
        // crypto/tls.(*Conn).Write in its symbol table.
        Candidate::Executable => p.lib != TlsLib::Gnutls,
    })
}

/// The TLS libraries a process maps, from `/proc/<pid>/maps` text (paths
/// as the process sees them, each once, in order).
pub fn mapped_libraries(maps: &str) -> Vec<(String, TlsLib)> {
    let mut out: Vec<(String, TlsLib)> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path (the path may hold spaces).
        let mut f = line.splitn(6, ' ');
        let Some(path) = f.nth(5).map(str::trim_start) else {
            continue;
        };
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        if let Some(lib) = library_kind(path) {
            if !out.iter().any(|(p, _)| p == path) {
                out.push((path.to_string(), lib));
            }
        }
    }
    out
}

/// One file with TLS probes attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub lib: TlsLib,
    /// The path as the first process seen with it names it.
    pub path: String,
    /// The functions hooked (`SSL_write`, ...).
    pub functions: Vec<&'static str>,
}

/// The files tried so far (by device and inode) and those attached.
#[derive(Debug, Default)]
pub struct TlsFiles {
    tried: HashSet<(u64, u64)>,
    pub attached: HashMap<(u64, u64), Attached>,
    /// Processes whose mappings were scanned (again after an exec).
    scanned: HashSet<u32>,
}

impl TlsFiles {
    /// `true` the first time `pid` is asked about (until [`Self::forget`]).
    pub fn first_look(&mut self, pid: u32) -> bool {
        self.scanned.insert(pid)
    }

    pub fn forget(&mut self, pid: u32) {
        self.scanned.remove(&pid);
    }

    /// The identity (device, inode) of the file at `host_path`, and
    /// whether it is new (it is marked tried).
    pub fn try_once(&mut self, host_path: &Path) -> Option<((u64, u64), bool)> {
        let md = std::fs::metadata(host_path).ok()?;
        let key = (md.dev(), md.ino());
        Some((key, self.tried.insert(key)))
    }

    /// Attached files, sorted by path.
    pub fn list(&self) -> Vec<&Attached> {
        let mut v: Vec<&Attached> = self.attached.values().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }
}

/// A path inside `pid`'s mount namespace, as the agent reaches it.
pub fn host_path(host_proc: &Path, pid: u32, path: &str) -> PathBuf {
    host_proc
        .join(pid.to_string())
        .join("root")
        .join(path.trim_start_matches('/'))
}

/// [`host_path`] while the process lives, else the path in the agent's
/// own mount namespace (a short-lived process gone before its event was
/// handled; the same file on a host without containers).
pub fn reachable_path(host_proc: &Path, pid: u32, path: &str) -> PathBuf {
    let hp = host_path(host_proc, pid, path);
    if hp.exists() {
        hp
    } else {
        PathBuf::from(path)
    }
}

/// The host's own TLS libraries (for `monitor check`): those the dynamic
/// linker's cache names.
pub fn system_libraries() -> Vec<(String, TlsLib)> {
    let mut out = Vec::new();
    let run = |bin: &str| std::process::Command::new(bin).arg("-p").output().ok();
    let Some(o) = run("ldconfig").or_else(|| run("/sbin/ldconfig")) else {
        return out;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Some((name, path)) = line.split_once(" => ") else {
            continue;
        };
        let name = name.trim().split(' ').next().unwrap_or("");
        if !line.contains("x86-64") && cfg!(target_arch = "x86_64") {
            continue;
        }
        if let Some(lib) = library_kind(name) {
            let path = path.trim().to_string();
            if !out.iter().any(|(p, _)| *p == path) {
                out.push((path, lib));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert_eq!(
            library_kind("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            Some(TlsLib::Openssl)
        );
        assert_eq!(library_kind("libssl.so.1.1"), Some(TlsLib::Openssl));
        assert_eq!(
            library_kind("/lib/libgnutls.so.30.34.3"),
            Some(TlsLib::Gnutls)
        );
        assert_eq!(library_kind("/usr/lib/libcrypto.so.3"), None);
        assert_eq!(library_kind("/usr/lib/libgnutls-openssl.so.27"), None);
        assert_eq!(library_kind("/usr/lib/libssl3.so"), None);
    }

    #[test]
    fn probes_per_candidate() {
        let names = |c| probes_for(c).map(|p| p.symbol).collect::<Vec<_>>();
        assert_eq!(
            names(Candidate::Library(TlsLib::Openssl)),
            ["SSL_write", "SSL_write_ex"]
        );
        assert_eq!(
            names(Candidate::Library(TlsLib::Gnutls)),
            ["gnutls_record_send"]
        );
        assert_eq!(
            names(Candidate::Executable),
            ["SSL_write", "SSL_write_ex", "crypto/tls.(*Conn).Write"]
        );
    }

    #[test]
    fn maps_give_each_tls_library_once() {
        let maps = "\
55d0a000-55d0b000 r--p 00000000 08:01 1234 /usr/bin/curl
7f00-7f01 r--p 00000000 08:01 77 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f01-7f02 r-xp 00001000 08:01 77 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r-xp 00001000 08:01 78 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f03-7f04 r-xp 00001000 08:01 79 /opt/my app/libgnutls.so.30
7f04-7f05 r-xp 00001000 08:01 80 /tmp/libssl.so.3 (deleted)
7f05-7f06 rw-p 00000000 00:00 0 [heap]
7f06-7f07 rw-p 00000000 00:00 0
";
        assert_eq!(
            mapped_libraries(maps),
            vec![
                (
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3".to_string(),
                    TlsLib::Openssl
                ),
                ("/opt/my app/libgnutls.so.30".to_string(), TlsLib::Gnutls),
            ]
        );
    }

    #[test]
    fn paths_inside_the_process_root() {
        assert_eq!(
            host_path(Path::new("/proc"), 42, "/usr/lib/libssl.so.3"),
            PathBuf::from("/proc/42/root/usr/lib/libssl.so.3")
        );
    }
}
