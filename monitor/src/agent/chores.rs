//! The periodic chores (reaping, roll-ups, capture losses, lost events,
//! metrics), the flush after each batch, and the shutdown.
use std::time::Instant;

use anyhow::Result;

use super::Agent;
use crate::{
    correlate::Outcome,
    event::{Detail, Event, EventKind, Process, UtcTime},
    sensors::KernelCounters,
};

impl Agent {
    /// Gauges and cumulative counters, refreshed on each tick.
    pub(super) fn update_metrics(&self) {
        let m = &self.metrics;
        m.set_lost_per_cpu(&self.last_counters.ringbuf_full_per_cpu);
        m.set_kernel_errors(&self.last_counters);
        m.set_queue_depth("store", self.store.queued() as u64);
        // Dropped (queue full) and lost in a failed write alike.
        m.set_store_dropped(self.store.dropped() + self.store.failed());
        m.set_problem(
            "store",
            self.store
                .failing()
                .map(|e| format!("store {}: writes fail: {e}", self.db.display())),
        );
        for out in std::iter::once(&self.alerts).chain(self.events.as_ref()) {
            let name = out.name();
            m.set(
                crate::metrics::Metric::OutputFailures,
                &name,
                out.failures(),
            );
            m.set(crate::metrics::Metric::OutputLost, &name, out.lost());
            m.set_problem(&name, out.failing().map(str::to_string));
        }
        for feed in &self.feeds {
            let name = feed.name();
            m.set_feed_failures(&name, feed.failures());
            m.set_feed_pending(&name, feed.pending());
        }
        m.set_bad_records(self.bad_records);
        self.fleet.update_metrics(m);
        m.set(
            crate::metrics::Metric::AlertsSuppressed,
            "",
            self.correlator.alerts_suppressed(),
        );
        for (rule, n) in self.correlator.alerts_rate_limited() {
            m.set(crate::metrics::Metric::AlertsRateLimited, rule, *n);
        }
        for (rule, n) in self.correlator.alerts_allowed() {
            m.set(crate::metrics::Metric::AlertsAllowed, rule, *n);
        }
        for a in self.sensors.tls.list() {
            let label = format!("{}:{}", a.lib.name(), a.path);
            m.set(crate::metrics::Metric::TlsAttached, &label, 1);
        }
        m.set_sizes(
            self.sensors.tracked_pids().len() as u64,
            self.correlator.secret_count() as u64,
            self.watches.watched_inodes() as u64,
            self.watches.refused_files() as u64,
        );
    }

    pub fn flush(&mut self) -> Result<()> {
        self.fleet.publish_learned(&mut self.correlator);
        for (kind, n) in EventKind::ALL.iter().zip(&mut self.kinds_pending) {
            if *n > 0 {
                self.metrics.add(
                    crate::metrics::Metric::Events,
                    kind.as_str(),
                    std::mem::take(n),
                );
            }
        }
        if let Some(out) = self.events.as_mut() {
            out.flush();
        }
        self.alerts.flush();
        Ok(())
    }

    /// Periodic chores.
    pub fn tick(&mut self, rescan: bool) -> Result<()> {
        let _span = tracing::debug_span!("chore", rescan).entered();
        if rescan {
            self.rescan();
        }
        self.enricher.reap();
        if let Some(out) = self.events.as_mut() {
            out.check_file();
        }
        self.alerts.check_file();
        if rescan {
            self.track_selected();
        }
        let mut alerts = self.capture_losses();
        alerts.extend(self.correlator.tick(false));
        self.act(Outcome {
            alerts,
            ..Default::default()
        })?;
        self.refresh_enforcement();
        self.update_capture(Instant::now());
        self.report_lost()?;
        self.update_metrics();
        Ok(())
    }

    /// What tracked processes lost since the last tick (their capture
    /// budget spent, the ring full): counted in the metrics and logged per
    /// process, and a `monitor.capture.degraded` alert for a holder, while
    /// the flood goes on.
    pub(super) fn capture_losses(&mut self) -> Vec<crate::correlate::alert::Alert> {
        let mut alerts = Vec::new();
        if self.capture_seen.len() > 65_536 {
            self.capture_seen.clear();
        }
        for (tgid, b) in self.sensors.capture_budgets() {
            let seen = self.capture_seen.entry(tgid).or_insert((0, 0));
            if b.budget_dropped < seen.0 || b.ring_dropped < seen.1 {
                // A new process under a reused pid.
                *seen = (0, 0);
            }
            let budget = b.budget_dropped - seen.0;
            let ring = b.ring_dropped - seen.1;
            *seen = (b.budget_dropped, b.ring_dropped);
            if budget + ring == 0 {
                continue;
            }
            self.metrics.add(
                crate::metrics::Metric::CaptureDropped,
                &tgid.to_string(),
                budget + ring,
            );
            tracing::warn!(
                "pid {tgid}: {} writes not captured ({budget} over its capture budget, \
                 {ring} ring buffer full)",
                budget + ring
            );
            if let Some(p) = crate::enrich::ProcLookup::process_of(&mut self.enricher, tgid) {
                let now = UtcTime::now();
                alerts.extend(self.correlator.capture_degraded(&p, now, budget, ring));
            }
        }
        alerts
    }

    /// Lost kernel events since the last report: a `lost` event and a log
    /// line, never silence.
    pub fn report_lost(&mut self) -> Result<()> {
        let now = self.sensors.counters()?;
        let delta = now
            .ringbuf_full
            .saturating_sub(self.last_counters.ringbuf_full);
        if delta > 0 {
            let per_cpu: Vec<u64> = now
                .ringbuf_full_per_cpu
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    n.saturating_sub(*self.last_counters.ringbuf_full_per_cpu.get(i).unwrap_or(&0))
                })
                .collect();
            tracing::warn!("lost {delta} kernel events (ring buffer full), per CPU {per_cpu:?}");
            let ev = Event {
                id: self.enricher.alloc_id(),
                time: UtcTime::now(),
                kind: EventKind::Lost,
                syscall: "ringbuf".into(),
                process: Process::default(),
                tracked: false,
                detail: Detail {
                    lost: Some(delta),
                    lost_per_cpu: Some(per_cpu),
                    ..Default::default()
                },
            };
            self.emit(ev);
        }
        let fan_lost = self.fanotify.as_ref().map_or(0, |f| f.lost());
        if fan_lost > self.last_fan_lost {
            let delta = fan_lost - self.last_fan_lost;
            self.last_fan_lost = fan_lost;
            tracing::warn!("lost {delta} fanotify events (queue overflow or agent too slow)");
            let ev = Event {
                id: self.enricher.alloc_id(),
                time: UtcTime::now(),
                kind: EventKind::Lost,
                syscall: "fanotify".into(),
                process: Process::default(),
                tracked: false,
                detail: Detail {
                    lost: Some(delta),
                    ..Default::default()
                },
            };
            self.emit(ev);
        }
        let dropped = self.store.dropped();
        if dropped > self.last_store_dropped {
            // Queue overflow only: failed writes are logged by the writer.
            tracing::warn!(
                "event store could not keep up: {} items dropped ({} in all)",
                dropped - self.last_store_dropped,
                dropped
            );
            self.last_store_dropped = dropped;
        }
        self.last_counters = now;
        Ok(())
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        self.sensors.counters()
    }

    /// Shutdown: every open roll-up goes out, the store is flushed.
    pub fn finish(&mut self) -> Result<()> {
        let rollups = self.correlator.tick(true);
        self.act(Outcome {
            alerts: rollups,
            ..Default::default()
        })?;
        self.report_lost()?;
        // Alerts and records are written; a backlog of events is not
        // waited for (counted as dropped).
        let before = self.store.dropped();
        self.store.shed_events();
        self.store.flush();
        let shed = self.store.dropped() - before;
        self.fleet.finish();
        if shed > 0 {
            tracing::warn!("shutdown: {shed} queued events not stored");
        }
        self.flush()
    }
}
