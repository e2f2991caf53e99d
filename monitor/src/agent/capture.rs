//! Which processes are tracked and when the capture programs are
//! attached (on demand), with the TLS libraries of tracked processes.
use std::time::Instant;

use monitor_common::{TRACK_AGENT, TRACK_OPENED_WATCHED};

use super::{Agent, CAPTURE_GRACE};
use crate::{
    observer::decode::RawEvent,
    sensors::fanotify::{FanEvent, FanKind},
};

impl Agent {
    /// TLS libraries of a tracked process, attached on demand: its
    /// mappings when first seen (again after an exec: the new image), and
    /// a TLS library it opens (dlopen, or the loader of a new image).
    pub(super) fn tls_of_tracked(&mut self, raw: &RawEvent, pid: u32) {
        use crate::sensors::tls;
        match raw {
            RawEvent::ExecResult(e) if e.ret == 0 => self.sensors.tls.forget(pid),
            RawEvent::Exit(_) => {
                self.sensors.tls.forget(pid);
                return;
            }
            RawEvent::Open(e) if e.fd >= 0 => {
                let name = crate::observer::decode::cstr(&e.name, e.name_len);
                if let Some(lib) = tls::library_kind(&name) {
                    let path = crate::observer::decode::cstr(&e.path, e.path_len);
                    if path.starts_with('/') {
                        let hp = tls::reachable_path(&self.host_proc, pid, &path);
                        self.sensors
                            .attach_tls(&hp, &path, tls::Candidate::Library(lib));
                    }
                }
            }
            // The new image (a Go program, a static OpenSSL build), even if
            // it is gone by now.
            RawEvent::Exec(e, _, _) => {
                let path = crate::observer::decode::cstr(&e.filename, e.filename_len);
                if path.starts_with('/') {
                    let hp = tls::reachable_path(&self.host_proc, pid, &path);
                    self.sensors
                        .attach_tls(&hp, &path, tls::Candidate::Executable);
                }
                return;
            }
            _ => {}
        }
        self.sensors.scan_tls(&self.host_proc, pid);
    }

    /// Track the live processes a cgroup/container/pod/exe holder takes in.
    pub(super) fn track_selected(&mut self) {
        for pid in self.correlator.resolve_holders(&mut self.enricher) {
            if !self.sensors.is_tracked(pid) {
                self.track(pid, TRACK_AGENT);
            }
        }
    }

    /// The one way the agent tracks a process: in the kernel's tracked set
    /// (`flag` says why), its TLS libraries attached, and the capture
    /// programs attached now if they are not (its next write must be
    /// captured, not the next tick's).
    pub(super) fn track(&mut self, pid: u32, flag: u32) {
        if let Err(e) = self.sensors.track_pid(pid, flag) {
            tracing::warn!("{e:#}");
        }
        self.sensors.scan_tls(&self.host_proc, pid);
        self.capture_needed();
    }

    /// Something needs the capture programs: attach them now if they are
    /// not, and restart the grace before a detach.
    pub(super) fn capture_needed(&mut self) {
        self.capture_idle_since = None;
        if !self.sensors.capture_attached() {
            self.update_capture(Instant::now());
        }
    }

    /// A fanotify event as it arrives (before its dedup delay). While the
    /// capture programs are detached, no tracepoint tracked the process
    /// that opened or read a watched file: track it now (as the kernel
    /// would have), which attaches the capture programs for what it does
    /// with the bytes next.
    pub fn fanotify_arrived(&mut self, f: &FanEvent) {
        if self.sensors.capture_attached()
            || !matches!(f.kind, FanKind::Open | FanKind::Read)
            || self.sensors.is_tracked(f.pid)
            || f.pid == std::process::id()
        {
            return;
        }
        self.enricher.refresh(f.pid);
        self.track(f.pid, TRACK_OPENED_WATCHED);
    }

    /// Tracked processes still alive; the entries of the gone ones (a pid
    /// holder that exited before it was tracked) are removed.
    pub(super) fn count_live_tracked(&mut self) -> usize {
        let mut n = 0;
        for pid in self.sensors.tracked_pids() {
            if self.host_proc.join(pid.to_string()).exists() {
                n += 1;
            } else {
                self.sensors.untrack_pid(pid);
            }
        }
        n
    }

    /// The capture programs attached while a tracked process is alive, a
    /// secret value is known ([`Agent::replay_watch`]) or a selector holder
    /// is issued (its processes are recognised by their exec), or always
    /// with `capture_always`; detached [`CAPTURE_GRACE`] after none holds.
    pub(super) fn update_capture(&mut self, now: Instant) {
        self.live_tracked = self.count_live_tracked();
        let want = self.sensors.capture_always
            || self.live_tracked > 0
            || self.replay_watch()
            || self.correlator.has_selector_holders();
        let on = self.sensors.capture_attached();
        let switch = if want {
            self.capture_idle_since = None;
            !on
        } else if on {
            let since = *self.capture_idle_since.get_or_insert(now);
            now.duration_since(since) >= CAPTURE_GRACE
        } else {
            false
        };
        if switch && self.sensors.set_capture(want) {
            self.capture_idle_since = None;
            tracing::info!("capture {}", self.capture_reason());
            self.publish_capture();
        }
    }

    /// A secret's value is known here (learned, or imported from the fleet)
    /// and first bytes of new connections are captured: a process that
    /// never held it may replay it, so the capture programs stay attached
    /// (`capture_new_connections = false` gives that up for the overhead).
    pub(super) fn replay_watch(&self) -> bool {
        self.sensors.capture_new_conns && self.correlator.fingerprint_count() > 0
    }

    /// What is attached and why (the `ready` line, the log, `/metrics`).
    pub fn capture_reason(&self) -> String {
        let lifecycle = self
            .sensors
            .status
            .iter()
            .filter(|s| s.attached && s.probe.lifecycle())
            .count();
        let capture = self.sensors.attached() - lifecycle;
        if self.sensors.capture_always {
            format!(
                "always (capture_always): {capture} capture and {lifecycle} lifecycle probes \
                 attached"
            )
        } else if self.sensors.capture_attached() {
            format!(
                "on demand: {capture} capture and {lifecycle} lifecycle probes attached \
                 ({} tracked processes alive{}{})",
                self.live_tracked,
                if self.correlator.has_selector_holders() {
                    ", selector holders issued: their processes are tracked from their exec"
                } else {
                    ""
                },
                if self.replay_watch() {
                    format!(
                        ", {} secret values known: new connections scanned for replays",
                        self.correlator.fingerprint_count()
                    )
                } else {
                    String::new()
                }
            )
        } else {
            format!(
                "on demand: capture probes detached (no tracked process alive, no secret \
                 value known, no selector holder), {lifecycle} lifecycle probes attached"
            )
        }
    }

    /// The probes' state in the metrics and health.
    pub(super) fn publish_capture(&self) {
        use crate::metrics::Metric;
        let m = &self.metrics;
        m.set_probes(
            self.sensors.attached() as u64,
            self.sensors.status.len() as u64,
            true,
        );
        m.set(
            Metric::CaptureAttached,
            "",
            self.sensors.capture_attached() as u64,
        );
        m.set(Metric::CaptureSwitches, "", self.sensors.capture_switches);
        for st in &self.sensors.status {
            m.set(Metric::ProbeAttached, st.probe.program, st.attached as u64);
        }
    }
}
