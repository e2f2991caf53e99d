//! SOC alert feeds: where alerts go besides the agent's own alert stream.
//! Each feed kind (file, syslog, webhook) owns its config table and its
//! [`Feed`](super::Feed) implementation; this module tells them apart and
//! builds them.
//!
//! A feed is configured in the agent's TOML as one table of an array, told
//! apart by `type`:
//!
//! ```toml
//! [[feeds]]
//! type = "file"                  # JSON lines, size-based rotation
//! path = "/var/log/monitor/alerts.ocsf.json"   # "-" is stdout (no rotation)
//! format = "ocsf"                # "native" (default) or "ocsf"
//! max_bytes = 104857600          # default 100 MiB
//! keep = 5                       # rotated files kept: path.1 .. path.5
//!
//! [[feeds]]
//! type = "syslog"                # RFC 5424
//! transport = "tcp"              # "udp", "tcp" (octet counting) or "unix"
//! address = "siem.example:6514"  # host:port, or a socket path for unix
//! app_name = "monitor"           # optional
//! hostname = "node-1"            # optional, default: this host's name
//! facility = "auth"              # optional, a name or 0..23; default auth
//!
//! [[feeds]]
//! type = "webhook"               # batched JSON arrays, spooled on disk
//! url = "https://soc.example/ingest"
//! bearer_token_file = "/etc/monitor/webhook.token"  # or bearer_token = "..."
//! batch_size = 100               # optional
//! spool_dir = "/var/lib/monitor/spool/soc"
//! timeout_seconds = 10           # optional, per request
//! ca_file = "/etc/monitor/soc-ca.pem"  # optional, PEM roots for https
//! max_spool_bytes = 1073741824   # optional, default 1 GiB
//! ```
//!
//! Unknown keys are an error in every table.
use anyhow::Result;
use serde::Deserialize;

use super::Feed;
pub use super::{
    file::{FileFeedConfig, Format, DEFAULT_FILE_KEEP, DEFAULT_FILE_MAX_BYTES},
    syslog::{FacilityValue, SyslogFeedConfig, SyslogTransport},
    webhook::{
        WebhookFeedConfig, DEFAULT_WEBHOOK_BATCH, DEFAULT_WEBHOOK_MAX_SPOOL_BYTES,
        DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
    },
};

/// One feed of the agent's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeedConfig {
    File(FileFeedConfig),
    Syslog(SyslogFeedConfig),
    Webhook(WebhookFeedConfig),
}

/// Builds the feed a config table describes.
pub fn build(cfg: &FeedConfig) -> Result<Box<dyn Feed>> {
    Ok(match cfg {
        FeedConfig::File(c) => Box::new(super::file::RotatingFile::open(c)?),
        FeedConfig::Syslog(c) => Box::new(super::syslog::Syslog::new(c)?),
        FeedConfig::Webhook(c) => Box::new(super::webhook::Webhook::new(c)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Agent {
        #[serde(default)]
        feeds: Vec<FeedConfig>,
    }

    #[test]
    fn parses_every_kind_from_toml() {
        let a: Agent = toml::from_str(
            r#"
[[feeds]]
type = "file"
path = "/var/log/monitor/alerts.ocsf.json"
format = "ocsf"
max_bytes = 1000
keep = 3

[[feeds]]
type = "file"
path = "-"

[[feeds]]
type = "syslog"
transport = "tcp"
address = "127.0.0.1:6514"
app_name = "mon"
hostname = "node-1"
facility = "local3"

[[feeds]]
type = "syslog"
transport = "unix"
address = "/dev/log"
facility = 13

[[feeds]]
type = "webhook"
url = "https://soc.example/ingest"
bearer_token = "tok"
batch_size = 50
spool_dir = "/var/lib/monitor/spool"
timeout_seconds = 5
ca_file = "/etc/ca.pem"
"#,
        )
        .unwrap();
        assert_eq!(a.feeds.len(), 5);
        assert_eq!(
            a.feeds[0],
            FeedConfig::File(FileFeedConfig {
                path: "/var/log/monitor/alerts.ocsf.json".into(),
                format: Format::Ocsf,
                max_bytes: 1000,
                keep: 3,
            })
        );
        match &a.feeds[1] {
            FeedConfig::File(f) => {
                assert_eq!(f.format, Format::Native);
                assert_eq!(f.max_bytes, DEFAULT_FILE_MAX_BYTES);
                assert_eq!(f.keep, DEFAULT_FILE_KEEP);
            }
            other => panic!("{other:?}"),
        }
        match &a.feeds[2] {
            FeedConfig::Syslog(s) => {
                assert_eq!(s.transport, SyslogTransport::Tcp);
                assert_eq!(s.facility, Some(FacilityValue::Name("local3".into())));
            }
            other => panic!("{other:?}"),
        }
        match &a.feeds[3] {
            FeedConfig::Syslog(s) => assert_eq!(s.facility, Some(FacilityValue::Code(13))),
            other => panic!("{other:?}"),
        }
        match &a.feeds[4] {
            FeedConfig::Webhook(w) => {
                assert_eq!(w.token().unwrap().as_deref(), Some("tok"));
                assert_eq!(w.batch_size, Some(50));
                let dbg = format!("{w:?}");
                assert!(!dbg.contains("tok\""), "token leaked in Debug: {dbg}");
                assert!(dbg.contains("REDACTED"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_keys_and_types_are_errors() {
        for bad in [
            "[[feeds]]\ntype = \"file\"\npath = \"/x\"\nmaxbytes = 3\n",
            "[[feeds]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"h:1\"\nport = 3\n",
            "[[feeds]]\ntype = \"syslog\"\ntransport = \"sctp\"\naddress = \"h:1\"\n",
            "[[feeds]]\ntype = \"webhook\"\nurl = \"http://x\"\nspool_dir = \"/s\"\ntoken = \"t\"\n",
            "[[feeds]]\ntype = \"kafka\"\n",
            "[[feeds]]\ntype = \"file\"\npath = \"/x\"\nformat = \"cef\"\n",
            "[[feeds]]\npath = \"/x\"\n",
        ] {
            assert!(toml::from_str::<Agent>(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = crate::testutil::TempDir::new("feedcfg");
        let p = dir.join("tok");
        std::fs::write(&p, "s3cr3t\n").unwrap();
        let mut c = WebhookFeedConfig {
            url: "http://127.0.0.1:1/".into(),
            bearer_token: None,
            bearer_token_file: Some(p.clone()),
            batch_size: None,
            spool_dir: dir.join("spool"),
            timeout_seconds: None,
            ca_file: None,
            max_spool_bytes: None,
        };
        assert_eq!(c.token().unwrap().as_deref(), Some("s3cr3t"));
        c.bearer_token = Some("x".into());
        assert!(c.token().is_err(), "both set must be an error");
    }
}
