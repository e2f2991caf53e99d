//! The agent's event: one decoded, enriched kernel record as written to
//! `--events` (one JSON object a line) and kept in the store.
//!
//! Events never carry captured bytes: only their length, and (rules) which
//! secret they matched. Environment variables are reported by name only.
use serde::{Deserialize, Serialize};

/// Who did it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub ppid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// Kubernetes names (namespace, pod, container, service account,
    /// derived workload), resolved on the node; absent off Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<crate::enrich::k8s::K8s>,
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
    pub fd_kind: Option<String>,
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
    pub dest: Option<String>,
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
    pub out_kind: Option<String>,
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
    /// Secrets this event touched (delivery file access, or their bytes
    /// found in the payload, argv or envp), with how they were found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<crate::correlate::SecretMatch>>,
    /// Rules whose alert a known reader (`[[allow]]`) kept from being raised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// Lost-event report: how many, and per CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_per_cpu: Option<Vec<u64>>,
}

/// One event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Monotonic per agent run.
    pub id: u64,
    /// RFC 3339, microseconds, UTC.
    pub time: String,
    /// `open`, `read`, `mmap`, `close`, `dup`, `copy`, `write`, `exec`,
    /// `exec_failed`, `fork`, `exit`, `connect`, `proc_access`, `getenv`, `lost`.
    pub kind: String,
    /// The syscall or function behind it.
    pub syscall: String,
    pub process: Process,
    /// The process is tracked (a holder, its descendant, or a reader of a
    /// watched file).
    pub tracked: bool,
    #[serde(flatten)]
    pub detail: Detail,
}

/// Wall-clock time of a kernel boot-time timestamp, RFC 3339 with µs.
pub fn format_time(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
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
    fn absent_details_are_omitted_and_nulls_kept_for_process() {
        let e = Event {
            id: 1,
            time: format_time(0),
            kind: "open".into(),
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
}
