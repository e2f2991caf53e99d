//! Issuance sources: files and Vault audit logs polled a chunk at a time,
//! the fleet's records, the store's at a restart; each record applied, and
//! the watched set expanded again.

use anyhow::Result;
use chrono::Utc;
use serde_json::json;

use super::{Agent, MAX_SECRETS_PER_SOURCE};
use crate::{
    issuance::{parse_record, Record},
    store::writer::{SourceOffset, StoreItem},
};

impl Agent {
    /// `f` with the watched-set expansion deferred to its end.
    pub(super) fn batched<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.batching = true;
        let r = f(self);
        self.batching = false;
        if std::mem::take(&mut self.rescan_due) {
            self.rescan_added();
        }
        if self.correlator.take_selectors_added() {
            self.track_selected();
        }
        r
    }

    /// Expand every watch (files created or replaced since), and map every
    /// watched file to the secrets delivered there.
    pub(super) fn rescan(&mut self) {
        let found = self.watches.rescan(&mut self.sensors);
        self.watch_found(&found);
        for (path, key) in self.watches.watched() {
            self.correlator.on_file(path, key);
        }
        self.watch_paths.clear();
        self.refresh_enforcement();
    }

    /// After records: expand only the watches they added and map only the
    /// files they name (a batch costs what it adds, not what is recorded).
    pub(super) fn rescan_added(&mut self) {
        let found = self.watches.rescan_added(&mut self.sensors);
        self.watch_found(&found);
        for m in &found {
            self.correlator.on_file(&m.path, m.key);
        }
        let mut elsewhere = std::collections::HashSet::new();
        for path in std::mem::take(&mut self.watch_paths) {
            match self.watches.watched_key(&path) {
                Some(key) => self.correlator.on_file(&path, key),
                // Replaced since it was watched (or not there yet): the
                // inodes watched under that name, if any.
                None => {
                    elsewhere.insert(path);
                }
            }
        }
        if !elsewhere.is_empty() {
            for (path, key) in self.watches.watched() {
                if elsewhere.contains(path) {
                    self.correlator.on_file(path, key);
                }
            }
        }
        self.refresh_enforcement();
    }

    /// Files newly watched: fanotify marks, and issuances for the
    /// discovered ones.
    fn watch_found(&mut self, found: &[crate::watch::NewMatch]) {
        let mut discovered = Vec::new();
        for m in found {
            if let Some(f) = self.fanotify.as_mut() {
                if let Err(e) = f.mark(&m.path) {
                    tracing::warn!("{e:#}");
                }
                f.watch_dirs_of(&m.path);
            }
            tracing::info!("watching {} (inode {})", m.path, m.key.ino);
            if self.discover.contains(&m.watch_id) && !self.correlator.delivers(&m.path) {
                discovered.push(m.path.clone());
            }
        }
        for path in discovered {
            let iss = crate::issuance::discover::issuance_for(&path, Utc::now());
            if let Err(e) = self.apply_record(Record::Issue(iss), "discovered") {
                tracing::warn!("discovered {path}: {e}");
            }
        }
    }

    /// What the fanotify thread decides permission events from.
    pub(super) fn refresh_enforcement(&self) {
        if let Some(f) = self.fanotify.as_ref().filter(|f| f.enforcing()) {
            f.set_policy(self.correlator.enforce_policy());
        }
    }

    /// An issuance or revocation from any source.
    pub(super) fn apply_record(
        &mut self,
        rec: Record,
        origin: &str,
    ) -> Result<serde_json::Value, String> {
        let record = match &rec {
            Record::Issue(_) => "issue",
            Record::Revoke { .. } => "revoke",
        };
        let _span = tracing::debug_span!("ingest", origin, record).entered();
        if let Record::Issue(iss) = &rec {
            // Refusals are checked before anything is applied, and counted.
            let refused = |agent: &Self, reason: &str, why: String| {
                agent
                    .metrics
                    .inc(crate::metrics::Metric::IssuancesRefused, reason);
                Err(format!("issuance of {:?} refused: {why}", iss.secret_id))
            };
            if let Some(why) = self.correlator.reissue_refusal(iss, Utc::now()) {
                return refused(self, "holder_change", why);
            }
            for (i, d) in iss.delivery.iter().enumerate() {
                if let crate::issuance::Delivery::File(p) = d {
                    if let Err(e) = crate::watch::check_literal(p) {
                        return refused(
                            self,
                            "unwatchable_path",
                            format!("delivery[{i}].file: {e}"),
                        );
                    }
                }
            }
        }
        let stored = match &rec {
            Record::Issue(i) => StoreItem::Issuance(i.clone(), origin.to_string()),
            Record::Revoke { secret_id, at } => {
                StoreItem::Revocation(secret_id.clone(), at.unwrap_or_else(Utc::now))
            }
        };
        let (id, out) = self.correlator.apply(rec, &mut self.enricher)?;
        self.store.send(stored);
        // Logged once acted on: its holder is tracked and the capture
        // probes attached by then.
        let r = self.act(out).map_err(|e| format!("{e:#}"));
        tracing::info!("{origin}: secret {id} recorded");
        r?;
        Ok(json!({"secret_id": id}))
    }

    /// The secrets the store knows (a restart): applied, not stored again.
    pub(super) fn restore(&mut self, rows: Vec<(String, String, Option<chrono::DateTime<Utc>>)>) {
        let now = Utc::now();
        self.batched(|agent| {
            for (json, origin, revoked) in rows {
                let rec = match parse_record(&json, now) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("stored issuance not restored: {e}");
                        continue;
                    }
                };
                if let Some(src) = agent.source_of(&origin) {
                    agent.sources[src].secrets += 1;
                } else if origin == "api" {
                    agent.api_secrets += 1;
                }
                let id = match agent.correlator.apply(rec, &mut agent.enricher) {
                    Ok((id, out)) => {
                        if let Err(e) = agent.act(out) {
                            tracing::warn!("restoring {id}: {e:#}");
                        }
                        id
                    }
                    Err(e) => {
                        tracing::warn!("stored issuance not restored: {e}");
                        continue;
                    }
                };
                if let Some(at) = revoked {
                    let _ = agent.correlator.apply(
                        Record::Revoke {
                            secret_id: id,
                            at: Some(at),
                        },
                        &mut agent.enricher,
                    );
                }
                agent.secrets_restored += 1;
            }
        });
        if self.secrets_restored > 0 {
            tracing::info!("restored {} secrets from the store", self.secrets_restored);
        }
    }

    /// The source an origin (`path:line`) names.
    pub(super) fn source_of(&self, origin: &str) -> Option<usize> {
        let (path, _) = origin.rsplit_once(':')?;
        self.sources
            .iter()
            .position(|s| s.path().as_os_str() == std::ffi::OsStr::new(path))
    }

    /// New lines of issuance files and Vault audit logs, one chunk of each
    /// (the rest at the next call: [`Agent::sources_backlog`] says there is
    /// more). A bad record is reported (file, line, field) and skipped.
    pub fn poll_sources(&mut self) -> Result<()> {
        self.sources_backlog = self.poll_sources_chunk();
        Ok(())
    }

    /// At most [`SOURCE_CHUNK`] bytes of each source, parsed and applied;
    /// whether anything was read.
    pub(super) fn poll_sources_chunk(&mut self) -> bool {
        let mut records = Vec::new();
        let mut leases = Vec::new();
        let mut read = false;
        let mut moved = Vec::new();
        for (n, src) in self.sources.iter_mut().enumerate() {
            let _span = tracing::debug_span!("ingest", source = %src.path().display()).entered();
            let polled = src.poll(Utc::now());
            if let Some(e) = polled.error {
                tracing::warn!("{e}");
            }
            read |= polled.read;
            for bad in polled.bad {
                self.bad_records += 1;
                tracing::warn!("{bad}");
            }
            leases.extend(polled.leases);
            records.extend(polled.records.into_iter().map(|(r, o)| (r, o, n)));
            if let Some(p) = polled.moved_to {
                moved.push((n, p));
            }
        }
        for lease in leases {
            self.correlator.vault_lease(lease);
        }
        self.batched(|agent| {
            for (r, origin, n) in records {
                agent.records_read += 1;
                if let Record::Issue(i) = &r {
                    if !agent.correlator.knows(&i.secret_id) {
                        let src = &mut agent.sources[n];
                        if src.secrets >= MAX_SECRETS_PER_SOURCE {
                            agent.bad_records += 1;
                            tracing::warn!(
                                "{origin}: secret {} not recorded: {} already defines \
                                 {MAX_SECRETS_PER_SOURCE} secrets (the per-source cap)",
                                i.secret_id,
                                src.path().display()
                            );
                            continue;
                        }
                        src.secrets += 1;
                    }
                }
                if let Err(e) = agent.apply_record(r, &origin) {
                    agent.bad_records += 1;
                    tracing::warn!("{origin}: {e}");
                }
            }
        });
        // After the records read up to there (the store keeps the order).
        for (n, p) in moved {
            self.store.send(StoreItem::Offset(SourceOffset {
                path: self.sources[n].path().display().to_string(),
                dev: p.dev,
                ino: p.ino,
                pos: p.pos,
                line: p.line,
            }));
        }
        read
    }

    /// A message from the fleet: a record (issuance, revocation) this node
    /// applies, or a node's fingerprints.
    pub fn fleet_inbound(&mut self, m: crate::fleet::link::Inbound) {
        match m {
            crate::fleet::link::Inbound::Record(p) => {
                let Some(text) = self.fleet.record_to_apply(&p) else {
                    return;
                };
                match parse_record(&text, Utc::now()) {
                    Ok(r) => self.batched(|agent| {
                        if let Err(e) = agent.apply_record(r, "fleet") {
                            tracing::info!("fleet: {e}");
                        }
                    }),
                    Err(e) => tracing::warn!("fleet: bad record: {e}"),
                }
            }
            crate::fleet::link::Inbound::Fingerprints(p) => {
                let Some(m) = self.fleet.fingerprints_to_import(&p) else {
                    return;
                };
                let Some((r, _)) = self.correlator.fingerprints_mut().import(&m.fingerprints)
                else {
                    tracing::warn!("fleet: malformed fingerprints from node {}", m.node);
                    return;
                };
                for id in &m.secret_ids {
                    if !self.correlator.knows(id) {
                        // Never delivered here: a secret held on that node
                        // (a holder no process here matches).
                        let iss = crate::fleet::foreign_issuance(id, &m.node);
                        if let Err(e) = self
                            .correlator
                            .apply(Record::Issue(iss), &mut self.enricher)
                        {
                            tracing::warn!("fleet: secret {id} of node {}: {e}", m.node);
                            continue;
                        }
                    }
                    if self
                        .correlator
                        .adopt_fingerprint(id, r, format!("fleet node {}", m.node))
                    {
                        self.fleet.mark_foreign(id, &m.node);
                        self.capture_needed();
                        tracing::info!("fleet: fingerprints of {id} from node {} imported", m.node);
                    }
                }
            }
        }
    }
}
