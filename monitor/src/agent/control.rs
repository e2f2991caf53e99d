//! What the API's routes may ask of the agent ([`Control`]).

use anyhow::Result;

use super::{Agent, MAX_SECRETS_PER_SOURCE};
use crate::{
    api::routes::{Control, IssueRefused, StoreQueries},
    issuance::Record,
};

/// The narrow interface the API's routes use.
impl Control for Agent {
    fn secrets(&self) -> serde_json::Value {
        self.correlator.secrets_json()
    }

    fn watches(&self) -> Vec<(u32, String)> {
        self.watches
            .patterns()
            .map(|(id, p)| (id, p.to_string()))
            .collect()
    }

    fn add_watch(&mut self, pattern: &str) -> Result<u32> {
        let id = self.watches.add(pattern)?;
        self.rescan();
        Ok(id)
    }

    fn issue(
        &mut self,
        records: Vec<Record>,
        text: &str,
    ) -> Result<Vec<serde_json::Value>, IssueRefused> {
        let new = records
            .iter()
            .filter(|r| matches!(r, Record::Issue(i) if !self.correlator.knows(&i.secret_id)))
            .count() as u64;
        if self.api_secrets + new > MAX_SECRETS_PER_SOURCE {
            self.bad_records += new;
            return Err(IssueRefused::OverCap {
                defined: self.api_secrets,
                new,
                cap: MAX_SECRETS_PER_SOURCE,
            });
        }
        self.api_secrets += new;
        let applied = self.batched(|agent| {
            let mut done = Vec::new();
            for r in records {
                done.push(agent.apply_record(r, "api")?);
            }
            Ok::<_, String>(done)
        });
        let done = applied.map_err(|e| {
            self.bad_records += 1;
            tracing::warn!("api: {e}");
            IssueRefused::Invalid(e)
        })?;
        self.fleet.publish_records(text);
        Ok(done)
    }

    fn count_bad_records(&mut self, n: u64) {
        self.bad_records += n;
    }

    fn queries(&self) -> StoreQueries {
        StoreQueries::new(self.db.clone(), self.store.sender())
    }
}
