//! The configuration file (`/etc/monitor/monitor.toml` by default) and its
//! merge with command-line flags: a flag wins over the file, the file over
//! the built-in default.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/monitor/monitor.toml";

/// Every key is optional; unknown keys are an error (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub events: Option<String>,
    pub alerts: Option<String>,
    /// The event store (SQLite).
    pub db: Option<PathBuf>,
    /// Delete stored events and alerts older than this (e.g. "30d").
    pub retention_max_age: Option<String>,
    /// Keep the store under this many bytes.
    pub retention_max_bytes: Option<u64>,
    /// SOC feeds: `[[feeds]] type = "file" | "syslog" | "webhook"`.
    #[serde(default)]
    pub feeds: Vec<crate::output::feed::FeedConfig>,
    pub api: Option<PathBuf>,
    #[serde(default)]
    pub issuances: Vec<PathBuf>,
    #[serde(default)]
    pub vault_audit: Vec<PathBuf>,
    /// 64 hex chars shared by a fleet, so fingerprints compare across nodes.
    pub fingerprint_key: Option<String>,
    pub aggregate_window_seconds: Option<u64>,
    /// Distinct alerts of one rule by one actor per `alert_rate_seconds`
    /// (0: no limit); the rest go out as one roll-up.
    pub alert_rate_limit: Option<u32>,
    pub alert_rate_seconds: Option<u64>,
    /// Known readers: `[[allow]] rule = "..." exe = "/abs" uid = N cgroup = "/..."`.
    #[serde(default)]
    pub allow: Vec<crate::correlate::AllowRule>,
    /// Globs of discovered secrets (default: Vault Agent output, service
    /// account tokens, kubelet pod volumes); `[]` turns discovery off.
    pub discover: Option<Vec<String>>,
    #[serde(default)]
    pub watch: Vec<String>,
    pub capture_bytes: Option<u32>,
    /// Bytes captured of one write by a tracked process (chunk records
    /// after the first `capture_bytes`).
    pub capture_write_bytes: Option<u32>,
    pub argv_bytes: Option<u32>,
    pub env_bytes: Option<u32>,
    pub ring_bytes: Option<u32>,
    /// Full captures (`capture_bytes` of data with the record's header) a
    /// second per tracked process (0: no limit); a smaller record pays for
    /// what it carries, at least an eighth.
    pub capture_rate: Option<u32>,
    /// Most full captures in a burst per tracked process (default: half
    /// the ring buffer's worth, at most twice the rate).
    pub capture_burst: Option<u32>,
    pub capture_new_connections: Option<bool>,
    pub exec_all: Option<bool>,
    /// Keep the syscall capture programs attached even while no tracked
    /// process is alive (default false: attached on demand).
    pub capture_always: Option<bool>,
    pub host_proc: Option<PathBuf>,
    /// Where the kubelet's `pods/` and `containers/` log directories are
    /// (default `/var/log`): Kubernetes names of processes in pods.
    pub pod_log_root: Option<PathBuf>,
    /// The kubelet's root directory (default `/var/lib/kubelet`): pods'
    /// service-account tokens.
    pub kubelet_root: Option<PathBuf>,
    pub btf: Option<PathBuf>,
    pub libc: Option<PathBuf>,
    /// Prometheus `/metrics` and `/healthz` on `IP:PORT` (off if absent).
    pub metrics: Option<String>,
    /// Allow `metrics` on a non-loopback address (default false).
    pub metrics_allow_non_loopback: Option<bool>,
    /// Rules to enforce, not only report: `["secret.read.foreign"]` denies
    /// foreign opens of delivery files (fanotify permission events). Off
    /// by default.
    #[serde(default)]
    pub enforce: Vec<String>,
    /// The agent's log on stderr: `"text"` (default) or `"json"` lines;
    /// `--log-format` wins.
    pub log_format: Option<crate::logging::LogFormat>,
    /// `[fleet]`: scope, NATS JetStream (see `fleet`).
    pub fleet: Option<crate::fleet::FleetConfig>,
}

impl FileConfig {
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text).with_context(|| format!("config {}", origin.display()))
    }

    /// The explicit file (must exist), else the default one if present.
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        match explicit {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                Self::parse(&text, p)
            }
            None => {
                let p = Path::new(DEFAULT_CONFIG);
                match std::fs::read_to_string(p) {
                    Ok(text) => Self::parse(&text, p),
                    Err(_) => Ok(Self::default()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let c = FileConfig::parse(
            r#"
events = "/var/log/monitor/events.json"
watch = ["/vault/secrets/*", "/run/secrets/**/token"]
capture_bytes = 1024
ring_bytes = 8388608
capture_new_connections = false
host_proc = "/host/proc"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.events.as_deref(), Some("/var/log/monitor/events.json"));
        assert_eq!(c.watch.len(), 2);
        assert_eq!(c.capture_bytes, Some(1024));
        assert_eq!(c.capture_new_connections, Some(false));
        assert_eq!(c.host_proc, Some(PathBuf::from("/host/proc")));
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_problem() {
        let e = format!(
            "{:#}",
            FileConfig::parse("evnets = \"-\"", Path::new("/x.toml")).unwrap_err()
        );
        assert!(e.contains("/x.toml") && e.contains("evnets"), "{e}");
        let e = format!(
            "{:#}",
            FileConfig::parse("capture_bytes = \"big\"", Path::new("/x.toml")).unwrap_err()
        );
        assert!(e.contains("capture_bytes"), "{e}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let e = format!(
            "{:#}",
            FileConfig::load(Some(Path::new("/nonexistent/m.toml"))).unwrap_err()
        );
        assert!(e.contains("/nonexistent/m.toml"), "{e}");
    }
}
