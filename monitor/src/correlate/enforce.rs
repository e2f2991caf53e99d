//! Blocking foreign opens (`enforce = ["secret.read.foreign"]`): a snapshot
//! of who holds which delivery file, made by the correlator and consulted by
//! the fanotify thread for each `FAN_OPEN_PERM`. The decision reads only
//! this snapshot and the opener's own `/proc` entries (its ancestors, its
//! cgroup and exe): never anything that can wait. Unknown means allow.
use std::collections::{BTreeSet, HashMap};

use super::{selector_matches, Correlator};
use crate::{enrich::procfs::ProcFs, event::Process, issuance::Issuance};

/// Most ancestors walked to find a holder parent.
const MAX_ANCESTORS: usize = 64;

#[derive(Debug, Default, Clone)]
pub struct EnforcePolicy {
    /// Delivery inode (ino, dev) -> indexes into `holders`.
    inodes: HashMap<(u64, u32), Vec<usize>>,
    holders: Vec<Holder>,
}

#[derive(Debug, Clone)]
struct Holder {
    /// For the cgroup/container/pod/exe selectors.
    issuance: Issuance,
    /// Holder processes (the issuance's pid and the children the agent saw
    /// it fork).
    pids: BTreeSet<u32>,
}

impl EnforcePolicy {
    pub fn is_delivery(&self, ino: u64, dev: u32) -> bool {
        self.inodes.contains_key(&(ino, dev))
    }

    /// May `pid` open the file (ino, dev)? Only a delivery file of a secret
    /// the process (or one of its ancestors) does not hold is refused.
    pub fn allows(&self, ino: u64, dev: u32, pid: u32, procfs: &ProcFs) -> bool {
        let Some(idx) = self.inodes.get(&(ino, dev)) else {
            return true;
        };
        let holders: Vec<&Holder> = idx.iter().filter_map(|i| self.holders.get(*i)).collect();
        // The opener and its ancestors: a holder's children are holders.
        let mut chain = vec![pid];
        let mut p = pid;
        for _ in 0..MAX_ANCESTORS {
            match procfs.stat(p) {
                Ok(st) if st.ppid > 1 && !chain.contains(&st.ppid) => {
                    chain.push(st.ppid);
                    p = st.ppid;
                }
                Ok(_) => break,
                // The opener vanished or /proc is unreadable: unknown, allow.
                Err(_) if p == pid => return true,
                Err(_) => break,
            }
        }
        if holders
            .iter()
            .any(|h| chain.iter().any(|c| h.pids.contains(c)))
        {
            return true;
        }
        // Holders by Kubernetes name need the kubelet's files to resolve:
        // not something to wait for here, so allowed (the alert still
        // comes from the events).
        if holders
            .iter()
            .any(|h| h.issuance.holder.namespace.is_some())
        {
            return true;
        }
        if !holders.iter().any(|h| super::has_selector(&h.issuance)) {
            return false;
        }
        let cgroup = procfs.cgroup_v2_path(pid);
        let proc = Process {
            pid,
            tid: Some(pid),
            exe: procfs.exe(pid).map(|p| p.display().to_string()),
            container_id: cgroup
                .as_deref()
                .and_then(crate::enrich::cgroup::container_id),
            pod_uid: cgroup.as_deref().and_then(crate::enrich::cgroup::pod_uid),
            cgroup,
            ..Default::default()
        };
        holders.iter().any(|h| selector_matches(&h.issuance, &proc))
    }
}

impl Correlator {
    /// Who may open which delivery file, now.
    pub fn enforce_policy(&self) -> EnforcePolicy {
        let mut p = EnforcePolicy::default();
        for (id, s) in &self.secrets {
            if s.inodes.is_empty() {
                continue;
            }
            let mut pids: BTreeSet<u32> = self
                .pid_holders
                .iter()
                .filter(|(_, ids)| ids.contains(id))
                .map(|(pid, _)| *pid)
                .collect();
            pids.extend(s.issuance.holder.pid);
            let i = p.holders.len();
            p.holders.push(Holder {
                issuance: s.issuance.clone(),
                pids,
            });
            for k in &s.inodes {
                p.inodes.entry(*k).or_default().push(i);
            }
        }
        p
    }
}
