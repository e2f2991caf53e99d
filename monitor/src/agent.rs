//! `monitor run`: sensors -> observer -> enrichment -> exporters, with the
//! periodic chores (watch rescans, process reaping, lost-event reports) and
//! a clean shutdown on SIGINT/SIGTERM that detaches every probe.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use monitor_common::{FdKey, FileInfo, TrackedFd, HDR_TRACKED};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    enrich::{cgroup::CgroupResolver, procfs::ProcFs, Enricher},
    event::{format_time, Detail, Event, Process},
    observer::{decode::RawEvent, Observer},
    output::JsonLines,
    sensors::{KernelCounters, SensorOptions, Sensors},
    watch::WatchSet,
};

/// Everything `monitor run` needs, flags and config merged.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub sensors: SensorOptions,
    /// `-` for stdout, a path, or none.
    pub events: Option<String>,
    pub watch: Vec<String>,
    pub host_proc: PathBuf,
    /// How often watched patterns are expanded again.
    pub rescan_every: Duration,
}

pub struct Agent {
    sensors: Sensors,
    watches: WatchSet,
    enricher: Enricher,
    events: Option<JsonLines>,
    last_counters: KernelCounters,
    pub events_seen: u64,
}

impl Agent {
    pub fn start(opts: &RunOptions) -> Result<(Self, Observer)> {
        let mut sensors = Sensors::load(&opts.sensors)?;
        let mut watches = WatchSet::new();
        for w in &opts.watch {
            watches.add(w)?;
        }
        for m in watches.rescan(&mut sensors) {
            log::info!("watching {} (inode {})", m.path, m.key.ino);
        }
        let ring = sensors.take_ring().context("event ring buffer")?;
        let observer = Observer::new(ring)?;
        let mounts = crate::host::parse_mountinfo(
            &std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?,
        )?;
        let cgroups = crate::host::cgroup2_mount(&mounts).map(CgroupResolver::new);
        if cgroups.is_none() {
            log::warn!("no cgroup v2 mount: cgroup paths come from /proc/<pid>/cgroup");
        }
        let enricher = Enricher::new(
            ProcFs::new(opts.host_proc.clone()),
            cgroups,
            crate::host::boot_to_realtime_offset_ns(),
        );
        let events = match &opts.events {
            Some(t) => Some(JsonLines::open(t)?),
            None => None,
        };
        Ok((
            Self {
                sensors,
                watches,
                enricher,
                events,
                last_counters: KernelCounters::default(),
                events_seen: 0,
            },
            observer,
        ))
    }

    pub fn sensors(&self) -> &Sensors {
        &self.sensors
    }

    /// One decoded record through enrichment and out.
    pub fn handle(&mut self, raw: RawEvent) -> Result<()> {
        let pid = raw.header().pid;
        let tracked = raw.header().flags & HDR_TRACKED != 0;
        // Keep kernel state in step with what the process tree does.
        match &raw {
            RawEvent::Fork(f) if f.inherited != 0 => {
                for (fd, e) in self.enricher.watched_fds(pid) {
                    let key = FdKey {
                        tgid: f.child_pid,
                        fd: fd as u32,
                    };
                    let v = TrackedFd {
                        file: FileInfo {
                            ino: e.ino,
                            dev: e.dev,
                            ..Default::default()
                        },
                        watch_id: e.watch_id,
                        _pad: 0,
                    };
                    if let Err(e) = self.sensors.track_fd(key, v) {
                        log::warn!("{e:#}");
                    }
                }
            }
            RawEvent::Exit(_) => {
                for (fd, _) in self.enricher.watched_fds(pid) {
                    self.sensors.untrack_fd(&FdKey {
                        tgid: pid,
                        fd: fd as u32,
                    });
                }
            }
            _ => {}
        }
        if let Some(ev) = self.enricher.enrich(&raw, &self.watches, tracked) {
            self.events_seen += 1;
            self.emit(&ev)?;
        }
        Ok(())
    }

    fn emit(&mut self, ev: &Event) -> Result<()> {
        if let Some(out) = self.events.as_mut() {
            out.write(ev)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(out) = self.events.as_mut() {
            out.flush()?;
        }
        Ok(())
    }

    /// Periodic chores.
    pub fn tick(&mut self, rescan: bool) -> Result<()> {
        if rescan {
            for m in self.watches.rescan(&mut self.sensors) {
                log::info!("watching {} (inode {})", m.path, m.key.ino);
            }
        }
        self.enricher.reap();
        self.report_lost()
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
            log::warn!("lost {delta} kernel events (ring buffer full), per CPU {per_cpu:?}");
            let ev = Event {
                id: 0,
                time: format_time(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as i128),
                kind: "lost".into(),
                syscall: "ringbuf".into(),
                process: Process::default(),
                tracked: false,
                detail: Detail {
                    lost: Some(delta),
                    lost_per_cpu: Some(per_cpu),
                    ..Default::default()
                },
            };
            self.emit(&ev)?;
        }
        self.last_counters = now;
        Ok(())
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        self.sensors.counters()
    }
}

/// Run until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> Result<()> {
    let (mut agent, mut observer) = Agent::start(&opts)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let rescan_ticks = opts.rescan_every.as_secs().max(1);
    let mut ticks: u64 = 0;
    let attached = agent.sensors().attached();
    let total = agent.sensors().status.len();
    eprintln!(
        "monitor: ready: {attached}/{total} probes attached, {} watched files",
        agent.watches.watched_inodes()
    );
    let mut batch = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            r = observer.next_batch(&mut batch) => {
                r?;
                for raw in batch.drain(..) {
                    agent.handle(raw)?;
                }
                agent.flush()?;
            }
            _ = tick.tick() => {
                ticks += 1;
                agent.tick(ticks.is_multiple_of(rescan_ticks))?;
                agent.flush()?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    // Drain what is already in the ring, then report and detach.
    batch.clear();
    agent.report_lost()?;
    agent.flush()?;
    let c = agent.counters()?;
    eprintln!(
        "monitor: stopped: {} events, {} lost in kernel, {} undecodable",
        agent.events_seen, c.ringbuf_full, observer.decode_errors
    );
    drop(agent); // detaches every program
    Ok(())
}
