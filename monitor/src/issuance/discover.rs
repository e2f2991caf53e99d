//! Discovered file secrets: files under configurable globs (Vault Agent
//! output, mounted Kubernetes secrets and service-account tokens) become
//! implicit issuances. A file under a kubelet pod volume is held by that pod;
//! any other is held by the cgroup of the first process that reads it.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Delivery, Holder, Issuance};
use crate::enrich::cgroup::pod_uid_from_kubelet_path;

/// Where brokered secrets land on a node by default.
pub const DEFAULT_DISCOVER: [&str; 3] = [
    "/vault/secrets/*",
    "/var/run/secrets/**/token",
    "/var/lib/kubelet/pods/*/volumes/*/*/*",
];

/// `source` of a discovered issuance.
pub const SOURCE: &str = "discovered";

/// A stable, valid secret id for a discovered file: `k8s:<pod>:<volume>/<key>`
/// for kubelet pod volumes, else `file:<path>` (characters outside the id
/// alphabet become `_`; long paths keep their tail).
pub fn secret_id_for(path: &str) -> String {
    let id = match (
        pod_uid_from_kubelet_path(path),
        path.split_once("/volumes/"),
    ) {
        (Some(uid), Some((_, rest))) => {
            // rest = <plugin>/<volume>/<key...>
            let mut parts = rest.splitn(2, '/');
            let _plugin = parts.next();
            format!("k8s:{uid}:{}", parts.next().unwrap_or(rest))
        }
        _ => format!("file:{path}"),
    };
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= 128 {
        clean
    } else {
        let prefix = if clean.starts_with("k8s:") {
            "k8s:"
        } else {
            "file:"
        };
        let tail = &clean[clean.len() - (128 - prefix.len() - 3)..];
        format!("{prefix}...{tail}")
    }
}

/// The implicit issuance of a discovered file.
pub fn issuance_for(path: &str, now: DateTime<Utc>) -> Issuance {
    Issuance {
        secret_id: secret_id_for(path),
        issued_at: now,
        expires_at: None,
        holder: Holder {
            pod_uid: pod_uid_from_kubelet_path(path),
            ..Default::default()
        },
        delivery: vec![Delivery::File(path.to_string())],
        allowed_destinations: None,
        source: Some(SOURCE.into()),
        lease_id: None,
        labels: BTreeMap::new(),
        identity: BTreeMap::new(),
        replaces: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b";

    #[test]
    fn kubelet_volumes_are_held_by_their_pod() {
        let p =
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~secret/db-creds/password");
        let i = issuance_for(&p, Utc::now());
        assert_eq!(i.secret_id, format!("k8s:{UID}:db-creds/password"));
        assert_eq!(i.holder.pod_uid.as_deref(), Some(UID));
        assert_eq!(i.source.as_deref(), Some("discovered"));
        crate::issuance::validate_secret_id(&i.secret_id).unwrap();
    }

    #[test]
    fn other_files_get_a_valid_file_id() {
        let i = issuance_for("/vault/secrets/db creds~1", Utc::now());
        assert_eq!(i.secret_id, "file:/vault/secrets/db_creds_1");
        assert_eq!(i.holder, Holder::default());
        let long = format!("/vault/{}", "x/".repeat(100));
        let id = secret_id_for(&long);
        assert!(id.len() <= 128 && id.starts_with("file:..."), "{id}");
        crate::issuance::validate_secret_id(&id).unwrap();
    }
}
