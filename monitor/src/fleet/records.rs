//! Issuances and revocations fleet-wide: `monitor issue|revoke --fleet`
//! (and an API record on an agent in a fleet) publish the record once to
//! the stream `MONITOR_RECORDS` (`monitor.records`); every agent reads the
//! stream from its start, so one that starts late catches up.
//!
//! A message is `{"node": NAME|null, "record": RECORD}`: `node` says where
//! the holder lives (a pid, cgroup or container holder means nothing on
//! another node); null means every node (Kubernetes names). Revocations
//! apply everywhere.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{link, spool::Outgoing, FleetTarget};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FleetRecord {
    pub node: Option<String>,
    pub record: Value,
    /// The agent that published it (already applied there), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// When it was published: a later identical record is another message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl FleetRecord {
    pub fn message(&self) -> Outgoing {
        let payload = serde_json::to_string(self).expect("a JSON value");
        let h = blake3::hash(payload.as_bytes());
        Outgoing {
            subject: link::RECORDS_SUBJECT.into(),
            id: format!("record.{}", &h.to_hex()[..32]),
            payload,
        }
    }

    /// Whether the node `me` applies it: revocations everywhere, issuances
    /// on their node (or everywhere without one).
    pub fn applies_on(&self, me: &str) -> bool {
        self.from.as_deref() != Some(me)
            && (self.record.get("revoke").is_some() || self.node.as_deref().is_none_or(|n| n == me))
    }
}

/// `monitor issue|revoke --fleet URL`: the record, checked as an agent
/// would parse it, published once; prints `{"published": ..., "stream_seq": N}`.
pub async fn publish(t: &FleetTarget, record: &Value) -> Result<()> {
    let cfg = t.nats().context("--fleet URL")?;
    if let Some(n) = &t.node {
        super::check_node(n)?;
    }
    if let Err(e) = crate::issuance::parse_record(&record.to_string(), chrono::Utc::now()) {
        bail!("record not published: {e}");
    }
    let rec = FleetRecord {
        node: t.node.clone(),
        record: record.clone(),
        from: None,
        at: Some(chrono::Utc::now().to_rfc3339()),
    };
    let m = rec.message();
    let client = link::connect(&cfg, "monitor-cli", false).await?;
    let js = link::context(client);
    link::ensure_streams(&js).await?;
    let ack = js
        .send_publish(
            m.subject.clone(),
            async_nats::jetstream::message::PublishMessage::build()
                .payload(m.payload.clone().into())
                .message_id(&m.id),
        )
        .await
        .context("publishing the record")?
        .await
        .context("the fleet did not acknowledge the record")?;
    let id = record
        .get("secret_id")
        .or_else(|| record.get("revoke"))
        .cloned()
        .unwrap_or(Value::Null);
    println!(
        "{}",
        serde_json::json!({"secret_id": id, "published": link::RECORDS_SUBJECT,
                           "stream_seq": ack.sequence, "duplicate": ack.duplicate})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuances_apply_on_their_node_revocations_everywhere() {
        let i = |node: Option<&str>| FleetRecord {
            node: node.map(str::to_string),
            record: serde_json::json!({"secret_id": "s", "holder": {"pid": 1}, "delivery": [{"env": "A"}]}),
            from: None,
            at: None,
        };
        assert!(i(Some("a")).applies_on("a"));
        assert!(!i(Some("a")).applies_on("b"));
        assert!(i(None).applies_on("b"));
        let r = FleetRecord {
            node: Some("a".into()),
            record: serde_json::json!({"revoke": "s"}),
            from: None,
            at: None,
        };
        assert!(r.applies_on("b"));
        // Not applied twice where it was published from.
        let mine = FleetRecord {
            from: Some("b".into()),
            ..r.clone()
        };
        assert!(!mine.applies_on("b") && mine.applies_on("c"));
        // Same record, same message id: published twice, stored once.
        assert_eq!(i(None).message().id, i(None).message().id);
        assert_ne!(i(None).message().id, i(Some("a")).message().id);
    }
}
