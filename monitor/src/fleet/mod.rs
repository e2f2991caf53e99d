//! The fleet: agents on many nodes share one NATS JetStream cluster.
//!
//! * [`scope`]: `--scope-cgroup`, an agent that observes only some cgroups
//!   (two scoped agents on one machine stand for two nodes).
//!
//! Everything here is off unless asked for: an agent without `--fleet` and
//! `--scope-cgroup` behaves exactly as without this module.
pub mod scope;

use std::path::Path;

use anyhow::Result;
use clap::Args;
use monitor_common::EventHeader;
use serde::Deserialize;

use crate::enrich::Enricher;

/// `monitor run` flags of the fleet (flattened into `RunArgs`).
#[derive(Args, Debug, Default, Clone)]
pub struct FleetArgs {
    /// Observe only processes in this cgroup v2 directory or below
    /// (repeatable; `/sys/fs/cgroup/unified/x` or `/x`).
    #[arg(long = "scope-cgroup", value_name = "PATH")]
    pub scope_cgroup: Vec<String>,
}

/// `[fleet]` in the config file.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Cgroup v2 directories this agent observes (and below).
    #[serde(default)]
    pub scope_cgroup: Vec<String>,
}

/// Flags over config.
#[derive(Debug, Default, Clone)]
pub struct FleetOptions {
    pub scope_cgroup: Vec<String>,
}

impl FleetOptions {
    pub fn merge(a: &FleetArgs, f: Option<&FleetConfig>) -> Result<Self> {
        let mut scope_cgroup = f.map(|f| f.scope_cgroup.clone()).unwrap_or_default();
        scope_cgroup.extend(a.scope_cgroup.iter().cloned());
        Ok(Self { scope_cgroup })
    }
}

/// The agent's fleet state: scope now, the NATS link when configured.
#[derive(Debug, Default)]
pub struct Fleet {
    scope: Option<scope::Scope>,
}

impl Fleet {
    pub fn start(opts: &FleetOptions, cgroup2_root: Option<&Path>) -> Result<Self> {
        let scope = scope::Scope::new(&opts.scope_cgroup, cgroup2_root)?;
        if let Some(s) = &scope {
            log::info!("observing only cgroups {}", s.prefixes().join(", "));
        }
        Ok(Self { scope })
    }

    /// Whether the process behind a kernel record is observed (always
    /// without a scope).
    pub fn admits(&mut self, h: &EventHeader, enricher: &mut Enricher) -> bool {
        let Some(scope) = self.scope.as_mut() else {
            return true;
        };
        let pid = h.pid;
        scope.covers_id(h.cgroup_id, || {
            (h.cgroup_id != 0)
                .then(|| enricher.cgroup_path(h.cgroup_id))
                .flatten()
                .or_else(|| enricher.proc_cgroup_path(pid))
        })
    }

    /// Whether a process known by pid only (fanotify) is observed.
    pub fn admits_pid(&mut self, pid: u32, enricher: &mut Enricher) -> bool {
        match self.scope.as_ref() {
            None => true,
            Some(scope) => enricher
                .proc_cgroup_path(pid)
                .is_some_and(|p| scope.covers(&p)),
        }
    }
}
