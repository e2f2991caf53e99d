//! The agent's event: one decoded, enriched kernel record as written to
//! `--events` (one JSON object a line) and kept in the store.
//!
//! Events never carry captured bytes: only their length, and (rules) which
//! secret they matched. Environment variables are reported by name only.
use std::{borrow::Cow, net::SocketAddr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A point in time, UTC, to the microsecond (the precision events are
/// reported with). Kept as a number; formatted (RFC 3339, six fractional
/// digits, `Z`) only when written out, parsed only when read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(i64);

impl UtcTime {
    /// Microseconds since the Unix epoch.
    pub const fn from_unix_micros(us: i64) -> Self {
        UtcTime(us)
    }

    /// Nanoseconds since the Unix epoch, truncated to the microsecond.
    pub fn from_unix_nanos(ns: i128) -> Self {
        let us = ns.div_euclid(1_000);
        UtcTime(us.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }

    pub fn from_datetime(t: DateTime<Utc>) -> Self {
        UtcTime(t.timestamp_micros())
    }

    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// RFC 3339 (any offset, any precision), converted to UTC.
    pub fn parse(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Self::from_datetime(t.with_timezone(&Utc)))
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` into `buf`; the written part.
    pub fn format_into(self, buf: &mut [u8; 27]) -> &str {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            // Outside four-digit years: chrono's own spelling.
            let s = self
                .to_datetime()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            let n = s.len().min(27);
            buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            return std::str::from_utf8(&buf[..n]).unwrap_or_default();
        }
        fn put(buf: &mut [u8], mut v: u32) {
            for b in buf.iter_mut().rev() {
                *b = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        put(&mut buf[0..4], y as u32);
        buf[4] = b'-';
        put(&mut buf[5..7], m);
        buf[7] = b'-';
        put(&mut buf[8..10], d);
        buf[10] = b'T';
        put(&mut buf[11..13], sod / 3600);
        buf[13] = b':';
        put(&mut buf[14..16], sod / 60 % 60);
        buf[16] = b':';
        put(&mut buf[17..19], sod % 60);
        buf[19] = b'.';
        put(&mut buf[20..26], micros);
        buf[26] = b'Z';
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..]).unwrap_or_default()
    }
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl std::fmt::Display for UtcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 27];
        f.write_str(self.format_into(&mut buf))
    }
}

impl From<DateTime<Utc>> for UtcTime {
    fn from(t: DateTime<Utc>) -> Self {
        Self::from_datetime(t)
    }
}

impl Serialize for UtcTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 27];
        s.serialize_str(self.format_into(&mut buf))
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        UtcTime::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time {s:?}")))
    }
}

/// What happened (the event's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Open,
    Read,
    Mmap,
    Close,
    Dup,
    Copy,
    Write,
    Exec,
    ExecFailed,
    Fork,
    Exit,
    Connect,
    ProcAccess,
    Getenv,
    /// A tracked process set up an io_uring instance.
    IoUring,
    Lost,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::Open,
        EventKind::Read,
        EventKind::Mmap,
        EventKind::Close,
        EventKind::Dup,
        EventKind::Copy,
        EventKind::Write,
        EventKind::Exec,
        EventKind::ExecFailed,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::Connect,
        EventKind::ProcAccess,
        EventKind::Getenv,
        EventKind::IoUring,
        EventKind::Lost,
    ];

    /// The name written out (`open`, `exec_failed`, `proc_access`...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Open => "open",
            EventKind::Read => "read",
            EventKind::Mmap => "mmap",
            EventKind::Close => "close",
            EventKind::Dup => "dup",
            EventKind::Copy => "copy",
            EventKind::Write => "write",
            EventKind::Exec => "exec",
            EventKind::ExecFailed => "exec_failed",
            EventKind::Fork => "fork",
            EventKind::Exit => "exit",
            EventKind::Connect => "connect",
            EventKind::ProcAccess => "proc_access",
            EventKind::Getenv => "getenv",
            EventKind::IoUring => "io_uring",
            EventKind::Lost => "lost",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The TLS library whose write carried a capture (its plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsLibrary {
    #[serde(rename = "openssl")]
    Openssl,
    #[serde(rename = "gnutls")]
    Gnutls,
    #[serde(rename = "go")]
    Go,
}

impl TlsLibrary {
    /// "openssl", "gnutls", "go".
    pub fn as_str(self) -> &'static str {
        match self {
            TlsLibrary::Openssl => "openssl",
            TlsLibrary::Gnutls => "gnutls",
            TlsLibrary::Go => "go",
        }
    }
}

impl From<monitor_common::TlsLib> for TlsLibrary {
    fn from(l: monitor_common::TlsLib) -> Self {
        match l {
            monitor_common::TlsLib::Openssl => TlsLibrary::Openssl,
            monitor_common::TlsLib::Gnutls => TlsLibrary::Gnutls,
            monitor_common::TlsLib::Go => TlsLibrary::Go,
        }
    }
}

impl std::fmt::Display for TlsLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an open file descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FdKind {
    /// Regular file.
    #[serde(rename = "file")]
    File,
    /// Socket.
    #[serde(rename = "socket")]
    Socket,
    /// Pipe or FIFO.
    #[serde(rename = "pipe")]
    Pipe,
    /// Terminal (pts, virtual console, `/dev/tty`, `/dev/console`).
    #[serde(rename = "tty")]
    Tty,
    /// Other character device (`/dev/null`, `/dev/urandom`, ...).
    #[serde(rename = "chardev")]
    CharDevice,
    /// Directory.
    #[serde(rename = "dir")]
    Directory,
    /// Anonymous inode (eventfd, epoll, timerfd, signalfd, bpf maps, ...).
    #[serde(rename = "anon")]
    AnonInode,
    /// Anything else (block devices, symlinks via `O_PATH`, unknown).
    #[serde(rename = "other")]
    Other,
}

impl FdKind {
    /// Stable lowercase name: "file", "socket", "pipe", "tty", "chardev",
    /// "dir", "anon", "other".
    pub fn as_str(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::Tty => "tty",
            FdKind::CharDevice => "chardev",
            FdKind::Directory => "dir",
            FdKind::AnonInode => "anon",
            FdKind::Other => "other",
        }
    }
}

impl std::fmt::Display for FdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a socket is connected: `IP:PORT`, `[IPv6]:PORT` or `unix:PATH`
/// (`unix:@NAME` for an abstract socket), as written out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    Inet(SocketAddr),
    /// The socket path (`@NAME` for an abstract one), without `unix:`.
    Unix(String),
}

impl Dest {
    pub fn is_unix(&self) -> bool {
        matches!(self, Dest::Unix(_))
    }

    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Dest::Inet(a) => Some(*a),
            Dest::Unix(_) => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.strip_prefix("unix:") {
            Some(p) => Some(Dest::Unix(p.to_string())),
            None => s.parse().ok().map(Dest::Inet),
        }
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Inet(a) => write!(f, "{a}"),
            Dest::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

impl Serialize for Dest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Dest::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid destination {s:?} (IP:PORT, [IPv6]:PORT or unix:PATH)"
            ))
        })
    }
}

/// Who did it: an event's process (with its thread), an alert's `actor`
/// and a timeline entry's process (the process, see [`Process::actor`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// The thread (events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub ppid: Option<u32>,
    pub uid: u32,
    /// Events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    pub comm: String,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// Kubernetes names (namespace, pod, container, service account,
    /// derived workload), resolved on the node; absent off Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<crate::enrich::k8s::K8s>,
    /// The command line of the process's current image, as its exec event
    /// showed it (secrets found in it redacted): set only on an alert's
    /// actor, and there absent when the agent did not see the exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd_line: Option<String>,
}

impl Process {
    /// The process as an alert's actor and a timeline name it: the process
    /// rather than the thread, without `tid` and `gid`.
    pub fn actor(&self) -> Process {
        Process {
            tid: None,
            gid: None,
            ..self.clone()
        }
    }
}

/// Every field a kind may carry; absent ones are omitted from JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `file`, `socket`, `pipe`, `tty`, `chardev`, `dir`, `anon`, `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_kind: Option<FdKind>,
    /// The watched path (pattern match) behind a tracked descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// open(2) flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    /// Bytes the syscall asked for (write/send) or returned (read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Bytes captured for scanning (never written out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// `IP:PORT`, `[IPv6]:PORT` or `unix:PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<Dest>,
    /// The TLS library whose write carried these bytes (`openssl`,
    /// `gnutls`, `go`): the capture is the plaintext, `dest` the
    /// connection it went out on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsLibrary>,
    /// First bytes of a fresh outbound connection of an untracked process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bytes: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldfd: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newfd: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_out: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_kind: Option<FdKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prot: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Names of the environment variables (never values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    /// `environ`, `mem`, `ptrace`, `process_vm_readv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_tracked: Option<bool>,
    /// getenv name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// io_uring instance: submission queue entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u32>,
    /// Secrets this event touched (delivery file access, or their bytes
    /// found in the payload, argv or envp), with how they were found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<SecretMatch>>,
    /// Rules whose alert a known reader (`[[allow]]`) kept from being raised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// Lost-event report: how many, and per CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_per_cpu: Option<Vec<u64>>,
}

/// An event with its JSON line (no newline), serialized once for every
/// output that writes it: the events file, the store and the fleet.
#[derive(Clone, Debug)]
pub struct EventLine {
    pub event: Event,
    pub json: bytes::Bytes,
}

impl EventLine {
    pub fn new(event: Event) -> Self {
        // An Event has string keys and finite numbers only.
        let json = serde_json::to_vec(&event).expect("an event serializes");
        EventLine {
            event,
            json: json.into(),
        }
    }

    /// The line as text (serde_json writes UTF-8).
    pub fn json_str(&self) -> &str {
        std::str::from_utf8(&self.json).expect("serde_json writes UTF-8")
    }
}

/// One event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Monotonic per agent run.
    pub id: u64,
    /// Written RFC 3339, microseconds, UTC.
    pub time: UtcTime,
    pub kind: EventKind,
    /// The syscall or function behind it.
    pub syscall: Cow<'static, str>,
    pub process: Process,
    /// The process is tracked (a holder, its descendant, or a reader of a
    /// watched file).
    pub tracked: bool,
    #[serde(flatten)]
    pub detail: Detail,
}

/// Wall-clock time of a kernel boot-time timestamp, RFC 3339 with µs.
pub fn format_time(unix_ns: i128) -> String {
    UtcTime::from_unix_nanos(unix_ns).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_rfc3339_micros_utc() {
        assert_eq!(
            format_time(1_795_341_662_123_456_789),
            "2026-11-22T10:01:02.123456Z"
        );
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn utc_time_formats_like_chrono_and_parses_back() {
        let chrono_fmt = |ns: i128| {
            let secs = ns.div_euclid(1_000_000_000) as i64;
            let nanos = ns.rem_euclid(1_000_000_000) as u32;
            DateTime::from_timestamp(secs, nanos)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        };
        // Leap days, year and century ends, before the epoch, far ahead.
        let mut ns: Vec<i128> = vec![
            0,
            -1,
            -86_400_000_000_000,
            951_782_400_000_000_000,     // 2000-02-29
            4_107_542_399_999_999_999,   // 2100-02-28T23:59:59.999999
            253_402_300_799_999_999_000, // 9999-12-31T23:59:59.999999
            1_795_341_662_123_456_789,
        ];
        let mut x: i128 = 12_345;
        for _ in 0..20_000 {
            x = (x * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % (1i128 << 63);
            ns.push(x % 253_402_300_799_000_000_000);
        }
        for n in ns {
            let t = UtcTime::from_unix_nanos(n);
            let s = t.to_string();
            assert_eq!(s, chrono_fmt(n), "{n}");
            assert_eq!(UtcTime::parse(&s), Some(t), "{s}");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<UtcTime>(&json).unwrap(), t);
        }
        assert_eq!(
            UtcTime::parse("2026-11-22T11:01:02+01:00")
                .unwrap()
                .to_string(),
            "2026-11-22T10:01:02.000000Z"
        );
        assert!(serde_json::from_str::<UtcTime>("\"yesterday\"").is_err());
    }

    #[test]
    fn kinds_and_destinations_are_written_as_before() {
        for k in EventKind::ALL {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            assert_eq!(EventKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::ExecFailed.as_str(), "exec_failed");
        assert_eq!(
            serde_json::to_string(&FdKind::CharDevice).unwrap(),
            "\"chardev\""
        );
        for d in [
            "10.0.0.1:443",
            "[::1]:8200",
            "unix:/dev/log",
            "unix:@abstract",
        ] {
            let parsed = Dest::parse(d).unwrap();
            assert_eq!(parsed.to_string(), d);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(serde_json::from_str::<Dest>(&json).unwrap(), parsed);
        }
        assert!(serde_json::from_str::<Dest>("\"nowhere\"").is_err());
    }

    #[test]
    fn absent_details_are_omitted_and_nulls_kept_for_process() {
        let e = Event {
            id: 1,
            time: UtcTime::from_unix_nanos(0),
            kind: EventKind::Open,
            syscall: "openat".into(),
            process: Process {
                pid: 5,
                comm: "cat".into(),
                ..Default::default()
            },
            tracked: false,
            detail: Detail {
                fd: Some(3),
                path: Some("/etc/x".into()),
                ..Default::default()
            },
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["fd"], 3);
        assert_eq!(v["path"], "/etc/x");
        assert!(v.get("bytes").is_none());
        assert!(v["process"]["container_id"].is_null());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn one_process_type_keeps_each_roles_shape() {
        let p = Process {
            pid: 5,
            tid: Some(6),
            ppid: Some(1),
            gid: Some(7),
            comm: "cat".into(),
            cgroup: Some("/a".into()),
            ..Default::default()
        };
        // An event's process: with its thread and group.
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"pid":5,"tid":6,"ppid":1,"uid":0,"gid":7,"comm":"cat","exe":null,"cgroup":"/a","container_id":null,"pod_uid":null}"#
        );
        // An alert's actor: the contract's keys, the command line when known.
        let actor = Process {
            cmd_line: Some("cat /a".into()),
            ..p.actor()
        };
        let json = serde_json::to_string(&actor).unwrap();
        assert_eq!(
            json,
            r#"{"pid":5,"ppid":1,"uid":0,"comm":"cat","exe":null,"cgroup":"/a","container_id":null,"pod_uid":null,"cmd_line":"cat /a"}"#
        );
        assert_eq!(serde_json::from_str::<Process>(&json).unwrap(), actor);
        // An actor stored before the process had one type (no tid, gid,
        // k8s or cmd_line) still reads back.
        let old: Process = serde_json::from_str(
            r#"{"pid":5,"ppid":1,"uid":0,"comm":"cat","exe":null,"cgroup":"/a","container_id":null,"pod_uid":null}"#,
        )
        .unwrap();
        assert_eq!(old, p.actor());
    }
}

/// A secret's match in an event (kept on the event for the timeline).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretMatch {
    pub secret_id: String,
    /// How the bytes were found (`raw`, `base64`...), or `delivery` for an
    /// access to the delivery file itself.
    pub encoding: String,
}
