//! Vault audit log (file audit device): pairing request and response
//! entries into leases with their identity.
//!
//! Vault writes one JSON object a line, `"type": "request"` before handling
//! a request and `"type": "response"` after, both carrying the same
//! `request.id`. [`VaultPairer`] joins the two halves (in either order) and
//! yields a [`VaultLease`]: what was asked for (`request.path`,
//! `request.operation`), by whom (`auth.*`: token accessor, entity, display
//! name, policies and, for the Kubernetes auth method, the service account
//! and role in `auth.metadata`), from where (`request.remote_address`), and
//! what lease came back (`response.secret.lease_id`).
//!
//! For a login (`auth/<method>/login`) the new token is described by
//! `response.auth`, which then takes precedence over the caller's `auth`
//! (empty for a login). Each field is taken from the first half that has it:
//! `response.auth`, then the response entry's `auth`, then the request
//! entry's.
//!
//! What is copied: identifiers and metadata only. The token (`client_token`)
//! is never copied, nor any value of `request.data` or `response.data`
//! except the lease metadata `lease_id`/`lease_duration` (newer formats put
//! lease information there; HMAC'd values are ignored). Vault error strings
//! can quote request input, so [`VaultLease::error`] keeps only the leading
//! message, cut before any quote or brace.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Default cap on unpaired entries kept by [`VaultPairer`].
pub const DEFAULT_UNPAIRED_CAP: usize = 10_000;

/// Longest `error` kept.
const MAX_ERROR: usize = 160;

/// One paired request/response: a Vault operation with its identity and
/// lease. Produced for every pair; callers pick the ones they care about
/// (e.g. `lease_id.is_some()` or `path` starting with `database/creds/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultLease {
    /// `request.id`.
    pub request_id: String,
    /// The response entry's `time` (the request's when the response has
    /// none).
    pub time: DateTime<Utc>,
    /// `request.path`, e.g. `database/creds/app`.
    pub path: String,
    /// `request.mount_point` (or `response.mount_point`), e.g. `database/`.
    pub mount_point: Option<String>,
    /// `request.operation`: `read`, `update`, `create`, `list`, `delete`...
    pub operation: String,
    /// `response.secret.lease_id` (or a top-level `secret.lease_id`, or an
    /// un-HMAC'd `response.data.lease_id`).
    pub lease_id: Option<String>,
    /// `response.data.lease_duration` in seconds, where the format has it.
    pub lease_duration: Option<u64>,
    /// The token's TTL in seconds (`auth.token_ttl`).
    pub token_ttl: Option<u64>,
    /// When the token was issued (`auth.token_issue_time`).
    pub token_issue_time: Option<DateTime<Utc>>,
    /// The token accessor (`auth.accessor`; HMAC'd unless the device sets
    /// `hmac_accessor=false`).
    pub accessor: Option<String>,
    /// `auth.entity_id`.
    pub entity_id: Option<String>,
    /// `auth.display_name`, e.g. `kubernetes-payments-app`.
    pub display_name: Option<String>,
    /// `auth.policies`.
    pub policies: Vec<String>,
    /// `auth.metadata.service_account_namespace` (Kubernetes auth).
    pub service_account_namespace: Option<String>,
    /// `auth.metadata.service_account_name` (Kubernetes auth).
    pub service_account_name: Option<String>,
    /// `auth.metadata.role` (Kubernetes and JWT auth).
    pub role: Option<String>,
    /// `request.remote_address`.
    pub remote_address: Option<String>,
    /// The leading part of `error` (see the module docs), if the operation
    /// failed.
    pub error: Option<String>,
}

impl VaultLease {
    /// Identity metadata for [`crate::issuance::Issuance::identity`]. Keys
    /// (present only when known): `vault.request_id`, `vault.path`,
    /// `vault.mount`, `vault.accessor`, `vault.entity_id`, `vault.lease_id`,
    /// `vault.display_name`, `vault.policies` (comma-separated),
    /// `vault.remote_address`, `k8s.service_account_namespace`,
    /// `k8s.service_account_name`, `k8s.role`.
    pub fn to_issuance_identity(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                m.insert(k.to_string(), v.to_string());
            }
        };
        put("vault.request_id", Some(&self.request_id));
        put("vault.path", Some(&self.path));
        put("vault.mount", self.mount_point.as_deref());
        put("vault.accessor", self.accessor.as_deref());
        put("vault.entity_id", self.entity_id.as_deref());
        put("vault.lease_id", self.lease_id.as_deref());
        put("vault.display_name", self.display_name.as_deref());
        let policies = self.policies.join(",");
        put("vault.policies", Some(&policies));
        put("vault.remote_address", self.remote_address.as_deref());
        put(
            "k8s.service_account_namespace",
            self.service_account_namespace.as_deref(),
        );
        put(
            "k8s.service_account_name",
            self.service_account_name.as_deref(),
        );
        put("k8s.role", self.role.as_deref());
        m
    }

    /// When the lease ends: `time + lease_duration` if the log has a
    /// (non-zero) lease duration, else `token_issue_time + token_ttl` (a
    /// lease never outlives the token that created it). `None` when neither
    /// is known or the token never expires (TTL 0).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let add = |t: DateTime<Utc>, secs: u64| {
            let secs = i64::try_from(secs).ok()?;
            t.checked_add_signed(chrono::Duration::try_seconds(secs)?)
        };
        match (self.lease_duration, self.token_issue_time, self.token_ttl) {
            (Some(d), _, _) if d > 0 => add(self.time, d),
            (_, Some(issued), Some(ttl)) if ttl > 0 => add(issued, ttl),
            _ => None,
        }
    }
}

/// Which half of a pair an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

/// Identity fields of one `auth` object.
#[derive(Clone, Debug, Default)]
struct AuthInfo {
    accessor: Option<String>,
    entity_id: Option<String>,
    display_name: Option<String>,
    policies: Option<Vec<String>>,
    token_ttl: Option<u64>,
    token_issue_time: Option<DateTime<Utc>>,
    sa_namespace: Option<String>,
    sa_name: Option<String>,
    role: Option<String>,
}

impl AuthInfo {
    fn from(v: Option<&Value>) -> Self {
        let Some(v) = v else {
            return AuthInfo::default();
        };
        AuthInfo {
            accessor: string(v.get("accessor")),
            entity_id: string(v.get("entity_id")),
            display_name: string(v.get("display_name")),
            policies: v.get("policies").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            }),
            token_ttl: number(v.get("token_ttl")),
            token_issue_time: string(v.get("token_issue_time"))
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc)),
            sa_namespace: string(v.pointer("/metadata/service_account_namespace")),
            sa_name: string(v.pointer("/metadata/service_account_name")),
            role: string(v.pointer("/metadata/role")),
        }
    }
}

/// What is kept of one entry while it waits for its other half.
#[derive(Clone, Debug)]
struct Half {
    kind: Kind,
    time: DateTime<Utc>,
    path: Option<String>,
    mount_point: Option<String>,
    operation: Option<String>,
    remote_address: Option<String>,
    auth: AuthInfo,
    /// `response.auth` (logins).
    resp_auth: AuthInfo,
    lease_id: Option<String>,
    lease_duration: Option<u64>,
    error: Option<String>,
}

/// Joins Vault audit request and response entries by `request.id`.
///
/// Unpaired entries are kept up to a cap; past it the oldest is dropped and
/// counted ([`VaultPairer::dropped`]).
#[derive(Debug)]
pub struct VaultPairer {
    cap: usize,
    /// request id -> (arrival sequence, half).
    pending: HashMap<String, (u64, Half)>,
    /// arrival sequence -> request id, oldest first.
    order: BTreeMap<u64, String>,
    seq: u64,
    dropped: u64,
}

impl VaultPairer {
    /// A pairer keeping at most `cap` unpaired entries (at least 1; see
    /// [`DEFAULT_UNPAIRED_CAP`]).
    pub fn new(cap: usize) -> Self {
        VaultPairer {
            cap: cap.max(1),
            pending: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            dropped: 0,
        }
    }

    /// Feeds one audit log line. Returns the lease when the line completes
    /// a pair, `None` while it waits for its other half, and an error for a
    /// line that is not a Vault audit entry (not JSON, no `type` of
    /// `request`/`response`, no `request.id`, bad `time`). Errors name the
    /// field, never a value.
    ///
    /// A second entry of the same kind and id replaces the first.
    pub fn push(&mut self, line: &str) -> Result<Option<VaultLease>, String> {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("vault audit: not JSON: {e}"))?;
        if !v.is_object() {
            return Err("vault audit: not a JSON object".to_string());
        }
        let kind = match v.get("type").and_then(Value::as_str) {
            Some("request") => Kind::Request,
            Some("response") => Kind::Response,
            Some(_) => {
                return Err("vault audit: field `type`: not `request` or `response`".to_string())
            }
            None => return Err("vault audit: field `type`: missing".to_string()),
        };
        let id = match string(v.pointer("/request/id")) {
            Some(id) => id,
            None => return Err("vault audit: field `request.id`: missing".to_string()),
        };
        let time = match v.get("time").and_then(Value::as_str) {
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| "vault audit: field `time`: not RFC 3339".to_string())?,
            None => return Err("vault audit: field `time`: missing".to_string()),
        };
        let half = half(&v, kind, time);

        if let Some((seq, other)) = self.pending.remove(&id) {
            self.order.remove(&seq);
            if other.kind != kind {
                let (req, resp) = match kind {
                    Kind::Request => (half, other),
                    Kind::Response => (other, half),
                };
                return Ok(Some(join(id, req, resp)));
            }
            // Same kind again: the newer replaces the older.
        }
        self.seq += 1;
        self.order.insert(self.seq, id.clone());
        self.pending.insert(id, (self.seq, half));
        while self.pending.len() > self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.pending.remove(&oldest);
            self.dropped += 1;
        }
        Ok(None)
    }

    /// How many unpaired entries were dropped because of the cap.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// How many entries wait for their other half.
    pub fn unpaired(&self) -> usize {
        self.pending.len()
    }
}

impl Default for VaultPairer {
    fn default() -> Self {
        VaultPairer::new(DEFAULT_UNPAIRED_CAP)
    }
}

/// Extracts what a lease needs from one entry.
fn half(v: &Value, kind: Kind, time: DateTime<Utc>) -> Half {
    let resp = v.get("response");
    let data = resp.and_then(|r| r.get("data"));
    let lease_id = string(v.pointer("/response/secret/lease_id"))
        .or_else(|| string(v.pointer("/secret/lease_id")))
        .or_else(|| string(data.and_then(|d| d.get("lease_id"))).filter(|s| !is_hmac(s)));
    Half {
        kind,
        time,
        path: string(v.pointer("/request/path")),
        mount_point: string(v.pointer("/request/mount_point"))
            .or_else(|| string(v.pointer("/response/mount_point"))),
        operation: string(v.pointer("/request/operation")),
        remote_address: string(v.pointer("/request/remote_address")),
        auth: AuthInfo::from(v.get("auth")),
        resp_auth: AuthInfo::from(resp.and_then(|r| r.get("auth"))),
        lease_id,
        lease_duration: number(data.and_then(|d| d.get("lease_duration"))),
        error: string(v.get("error")).and_then(|e| error_head(&e)),
    }
}

fn join(request_id: String, req: Half, resp: Half) -> VaultLease {
    // Identity: the login's new token first, then the caller's.
    let auths = [&resp.resp_auth, &resp.auth, &req.resp_auth, &req.auth];
    macro_rules! first {
        ($field:ident) => {
            auths.iter().find_map(|a| a.$field.clone())
        };
    }
    VaultLease {
        request_id,
        time: resp.time,
        path: req.path.or(resp.path).unwrap_or_default(),
        mount_point: req.mount_point.or(resp.mount_point),
        operation: req.operation.or(resp.operation).unwrap_or_default(),
        lease_id: resp.lease_id.or(req.lease_id),
        lease_duration: resp.lease_duration.or(req.lease_duration),
        token_ttl: first!(token_ttl),
        token_issue_time: first!(token_issue_time),
        accessor: first!(accessor),
        entity_id: first!(entity_id),
        display_name: first!(display_name),
        policies: first!(policies).unwrap_or_default(),
        service_account_namespace: first!(sa_namespace),
        service_account_name: first!(sa_name),
        role: first!(role),
        remote_address: req.remote_address.or(resp.remote_address),
        error: resp.error.or(req.error),
    }
}

/// A non-empty string value.
fn string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A non-negative integer, as a JSON number or a decimal string.
fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn is_hmac(s: &str) -> bool {
    s.starts_with("hmac-sha256:")
}

/// The first line of an error, cut before anything that may quote input.
fn error_head(e: &str) -> Option<String> {
    let first = e.lines().map(str::trim).find(|l| !l.is_empty())?;
    let cut = first
        .find(['"', '\'', '{', '[', '`'])
        .unwrap_or(first.len());
    let mut head: String = first[..cut].chars().take(MAX_ERROR).collect();
    let trimmed = head.trim_end_matches([' ', ':', ',']).len();
    head.truncate(trimmed);
    if head.is_empty() {
        Some("error".to_string())
    } else {
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const LOGIN_ID: &str = "7b1c4c57-2b8f-4a0b-9b7e-0c2d4f3a1e10";
    const READ_ID: &str = "c2d94e1a-5f3b-4d7e-8a9c-1b2e3f4a5d6c";
    const PASSWORD_HMAC: &str =
        "hmac-sha256:5e2c1a0f9d8b7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";
    const TOKEN_HMAC: &str =
        "hmac-sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const ACCESSOR_HMAC: &str =
        "hmac-sha256:9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";

    /// Kubernetes auth login: request entry (no caller identity yet).
    fn login_request() -> String {
        serde_json::json!({
            "time": "2026-11-22T10:00:00.101234Z",
            "type": "request",
            "auth": {"policy_results": {"allowed": true}, "token_type": "default"},
            "request": {
                "id": LOGIN_ID,
                "client_id": "",
                "operation": "update",
                "mount_point": "auth/kubernetes/",
                "mount_type": "kubernetes",
                "mount_accessor": "auth_kubernetes_4f1b2c3d",
                "mount_running_version": "v0.20.0+builtin",
                "mount_class": "auth",
                "namespace": {"id": "root"},
                "path": "auth/kubernetes/login",
                "data": {
                    "jwt": "hmac-sha256:11aa22bb33cc44dd55ee66ff77008899aabbccddeeff00112233445566778899",
                    "role": "hmac-sha256:aa11bb22cc33dd44ee55ff6600778899aabbccddeeff00112233445566778899"
                },
                "remote_address": "10.244.1.17",
                "remote_port": 51234
            }
        })
        .to_string()
    }

    /// Kubernetes auth login: response entry, new token in response.auth.
    fn login_response() -> String {
        serde_json::json!({
            "time": "2026-11-22T10:00:00.143210Z",
            "type": "response",
            "auth": {"policy_results": {"allowed": true}, "token_type": "default"},
            "request": {
                "id": LOGIN_ID,
                "operation": "update",
                "mount_point": "auth/kubernetes/",
                "mount_type": "kubernetes",
                "namespace": {"id": "root"},
                "path": "auth/kubernetes/login",
                "data": {"jwt": "hmac-sha256:11aa", "role": "hmac-sha256:aa11"},
                "remote_address": "10.244.1.17",
                "remote_port": 51234
            },
            "response": {
                "auth": {
                    "client_token": TOKEN_HMAC,
                    "accessor": ACCESSOR_HMAC,
                    "display_name": "kubernetes-payments-app",
                    "policies": ["app-db", "default"],
                    "token_policies": ["app-db", "default"],
                    "metadata": {
                        "role": "app",
                        "service_account_name": "app",
                        "service_account_namespace": "payments",
                        "service_account_secret_name": "",
                        "service_account_uid": "2f0e6c1d-8b9a-4c3d-9e8f-7a6b5c4d3e2f"
                    },
                    "entity_id": "e4b3c2d1-a0f9-4e8d-b7c6-a5b4c3d2e1f0",
                    "token_type": "service",
                    "token_ttl": 3600,
                    "token_issue_time": "2026-11-22T10:00:00Z"
                },
                "mount_type": "kubernetes",
                "mount_accessor": "auth_kubernetes_4f1b2c3d"
            }
        })
        .to_string()
    }

    /// The caller's token as logged in `auth` of later requests.
    fn caller_auth() -> Value {
        serde_json::json!({
            "client_token": TOKEN_HMAC,
            "accessor": ACCESSOR_HMAC,
            "display_name": "kubernetes-payments-app",
            "policies": ["app-db", "default"],
            "token_policies": ["app-db", "default"],
            "policy_results": {"allowed": true, "granting_policies": [
                {"name": "app-db", "namespace_id": "root", "type": "acl"}]},
            "metadata": {
                "role": "app",
                "service_account_name": "app",
                "service_account_namespace": "payments",
                "service_account_secret_name": "",
                "service_account_uid": "2f0e6c1d-8b9a-4c3d-9e8f-7a6b5c4d3e2f"
            },
            "entity_id": "e4b3c2d1-a0f9-4e8d-b7c6-a5b4c3d2e1f0",
            "token_type": "service",
            "token_ttl": 3600,
            "token_issue_time": "2026-11-22T10:00:00Z"
        })
    }

    fn read_request() -> String {
        serde_json::json!({
            "time": "2026-11-22T10:00:01.200000Z",
            "type": "request",
            "auth": caller_auth(),
            "request": {
                "id": READ_ID,
                "client_id": "e4b3c2d1-a0f9-4e8d-b7c6-a5b4c3d2e1f0",
                "operation": "read",
                "mount_point": "database/",
                "mount_type": "database",
                "mount_accessor": "database_0a1b2c3d",
                "mount_class": "secret",
                "client_token": TOKEN_HMAC,
                "client_token_accessor": ACCESSOR_HMAC,
                "namespace": {"id": "root"},
                "path": "database/creds/app",
                "remote_address": "10.244.1.17",
                "remote_port": 51240
            }
        })
        .to_string()
    }

    /// The read's response, lease in response.secret (classic format).
    fn read_response() -> String {
        let mut auth = caller_auth();
        // The response entry's auth carries no issue time.
        auth.as_object_mut().unwrap().remove("token_issue_time");
        serde_json::json!({
            "time": "2026-11-22T10:00:01.350000Z",
            "type": "response",
            "auth": auth,
            "request": {
                "id": READ_ID,
                "operation": "read",
                "mount_point": "database/",
                "mount_type": "database",
                "client_token": TOKEN_HMAC,
                "client_token_accessor": ACCESSOR_HMAC,
                "namespace": {"id": "root"},
                "path": "database/creds/app",
                "remote_address": "10.244.1.17",
                "remote_port": 51240
            },
            "response": {
                "mount_point": "database/",
                "mount_type": "database",
                "mount_accessor": "database_0a1b2c3d",
                "secret": {"lease_id": "database/creds/app/Hq2GqF0sYHc7dE1mQ2aZ4bXy"},
                "data": {
                    "username": "hmac-sha256:77aa88bb99cc00dd11ee22ff33004455667788990011223344556677889900aa",
                    "password": PASSWORD_HMAC
                }
            }
        })
        .to_string()
    }

    fn t(h: u32, m: u32, s: u32, micros: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, s).unwrap()
            + chrono::Duration::microseconds(micros)
    }

    #[test]
    fn login_pairs_with_response_identity() {
        let mut p = VaultPairer::new(DEFAULT_UNPAIRED_CAP);
        assert_eq!(p.push(&login_request()), Ok(None));
        assert_eq!(p.unpaired(), 1);
        let lease = p.push(&login_response()).unwrap().expect("paired");
        assert_eq!(p.unpaired(), 0);
        assert_eq!(lease.request_id, LOGIN_ID);
        assert_eq!(lease.time, t(10, 0, 0, 143_210));
        assert_eq!(lease.path, "auth/kubernetes/login");
        assert_eq!(lease.mount_point.as_deref(), Some("auth/kubernetes/"));
        assert_eq!(lease.operation, "update");
        assert_eq!(lease.lease_id, None);
        assert_eq!(lease.accessor.as_deref(), Some(ACCESSOR_HMAC));
        assert_eq!(
            lease.display_name.as_deref(),
            Some("kubernetes-payments-app")
        );
        assert_eq!(lease.policies, vec!["app-db", "default"]);
        assert_eq!(lease.service_account_namespace.as_deref(), Some("payments"));
        assert_eq!(lease.service_account_name.as_deref(), Some("app"));
        assert_eq!(lease.role.as_deref(), Some("app"));
        assert_eq!(lease.token_ttl, Some(3600));
        assert_eq!(lease.token_issue_time, Some(t(10, 0, 0, 0)));
        assert_eq!(lease.remote_address.as_deref(), Some("10.244.1.17"));
        assert_eq!(lease.error, None);
        // The login's token lives an hour.
        assert_eq!(lease.expires_at(), Some(t(11, 0, 0, 0)));
    }

    #[test]
    fn database_read_in_both_orders() {
        for reversed in [false, true] {
            let mut p = VaultPairer::new(16);
            let (a, b) = if reversed {
                (read_response(), read_request())
            } else {
                (read_request(), read_response())
            };
            assert_eq!(p.push(&a), Ok(None));
            let lease = p.push(&b).unwrap().expect("paired");
            assert_eq!(lease.request_id, READ_ID);
            assert_eq!(lease.time, t(10, 0, 1, 350_000));
            assert_eq!(lease.path, "database/creds/app");
            assert_eq!(lease.operation, "read");
            assert_eq!(lease.mount_point.as_deref(), Some("database/"));
            assert_eq!(
                lease.lease_id.as_deref(),
                Some("database/creds/app/Hq2GqF0sYHc7dE1mQ2aZ4bXy")
            );
            assert_eq!(lease.lease_duration, None);
            assert_eq!(
                lease.entity_id.as_deref(),
                Some("e4b3c2d1-a0f9-4e8d-b7c6-a5b4c3d2e1f0")
            );
            assert_eq!(lease.service_account_name.as_deref(), Some("app"));
            // Issue time only in the request entry's auth: merged in.
            assert_eq!(lease.token_issue_time, Some(t(10, 0, 0, 0)));
            // No lease duration logged: bounded by the token's life.
            assert_eq!(lease.expires_at(), Some(t(11, 0, 0, 0)));
            assert_eq!(p.unpaired(), 0);
        }
    }

    #[test]
    fn never_copies_tokens_or_response_data() {
        let mut p = VaultPairer::default();
        p.push(&read_request()).unwrap();
        let lease = p.push(&read_response()).unwrap().unwrap();
        let dump = format!("{lease:?} {:?}", lease.to_issuance_identity());
        assert!(!dump.contains(PASSWORD_HMAC));
        assert!(!dump.contains("77aa88bb"));
        assert!(!dump.contains(TOKEN_HMAC));
    }

    #[test]
    fn identity_map() {
        let mut p = VaultPairer::default();
        p.push(&read_request()).unwrap();
        let lease = p.push(&read_response()).unwrap().unwrap();
        let id = lease.to_issuance_identity();
        let expect: BTreeMap<String, String> = [
            ("vault.request_id", READ_ID),
            ("vault.path", "database/creds/app"),
            ("vault.mount", "database/"),
            ("vault.accessor", ACCESSOR_HMAC),
            ("vault.entity_id", "e4b3c2d1-a0f9-4e8d-b7c6-a5b4c3d2e1f0"),
            (
                "vault.lease_id",
                "database/creds/app/Hq2GqF0sYHc7dE1mQ2aZ4bXy",
            ),
            ("vault.display_name", "kubernetes-payments-app"),
            ("vault.policies", "app-db,default"),
            ("vault.remote_address", "10.244.1.17"),
            ("k8s.service_account_namespace", "payments"),
            ("k8s.service_account_name", "app"),
            ("k8s.role", "app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(id, expect);
    }

    #[test]
    fn lease_info_in_response_data() {
        let mut resp: Value = serde_json::from_str(&read_response()).unwrap();
        let r = resp["response"].as_object_mut().unwrap();
        r.remove("secret");
        let data = r["data"].as_object_mut().unwrap();
        data.insert("lease_id".into(), "database/creds/app/Zz9".into());
        data.insert("lease_duration".into(), 600.into());
        data.insert("renewable".into(), true.into());
        let mut p = VaultPairer::default();
        p.push(&read_request()).unwrap();
        let lease = p.push(&resp.to_string()).unwrap().unwrap();
        assert_eq!(lease.lease_id.as_deref(), Some("database/creds/app/Zz9"));
        assert_eq!(lease.lease_duration, Some(600));
        assert_eq!(lease.expires_at(), Some(t(10, 10, 1, 350_000)));

        // An HMAC'd lease id in data is not an identifier; a string
        // duration is accepted.
        let data = resp["response"]["data"].as_object_mut().unwrap();
        data.insert("lease_id".into(), "hmac-sha256:abcd".into());
        data.insert("lease_duration".into(), "60".into());
        p.push(&read_request()).unwrap();
        let lease = p.push(&resp.to_string()).unwrap().unwrap();
        assert_eq!(lease.lease_id, None);
        assert_eq!(lease.lease_duration, Some(60));
    }

    #[test]
    fn top_level_secret_is_accepted() {
        let mut resp: Value = serde_json::from_str(&read_response()).unwrap();
        let secret = resp["response"]
            .as_object_mut()
            .unwrap()
            .remove("secret")
            .unwrap();
        resp.as_object_mut()
            .unwrap()
            .insert("secret".into(), secret);
        let mut p = VaultPairer::default();
        p.push(&read_request()).unwrap();
        let lease = p.push(&resp.to_string()).unwrap().unwrap();
        assert_eq!(
            lease.lease_id.as_deref(),
            Some("database/creds/app/Hq2GqF0sYHc7dE1mQ2aZ4bXy")
        );
    }

    #[test]
    fn expiry_rules() {
        let mut p = VaultPairer::default();
        p.push(&read_request()).unwrap();
        let mut lease = p.push(&read_response()).unwrap().unwrap();
        lease.lease_duration = Some(30);
        assert_eq!(
            lease.expires_at(),
            Some(lease.time + chrono::Duration::seconds(30))
        );
        lease.lease_duration = Some(0);
        assert_eq!(lease.expires_at(), Some(t(11, 0, 0, 0)));
        lease.token_ttl = Some(0);
        assert_eq!(lease.expires_at(), None);
        lease.token_ttl = Some(60);
        lease.token_issue_time = None;
        assert_eq!(lease.expires_at(), None);
        lease.lease_duration = Some(u64::MAX);
        assert_eq!(lease.expires_at(), None);
    }

    #[test]
    fn failed_request_keeps_error_head_only() {
        let mut resp: Value = serde_json::from_str(&read_response()).unwrap();
        resp.as_object_mut().unwrap().insert(
            "error".into(),
            "error converting input {\"password\":\"hunter2\"} for field \"data\"".into(),
        );
        let mut p = VaultPairer::default();
        p.push(&read_request()).unwrap();
        let lease = p.push(&resp.to_string()).unwrap().unwrap();
        assert_eq!(lease.error.as_deref(), Some("error converting input"));
        assert_eq!(
            error_head("1 error occurred:\n\t* permission denied\n\n").as_deref(),
            Some("1 error occurred")
        );
        assert_eq!(
            error_head("permission denied").as_deref(),
            Some("permission denied")
        );
        assert_eq!(error_head("\"quoted\"").as_deref(), Some("error"));
        assert_eq!(error_head("  \n "), None);
    }

    #[test]
    fn malformed_lines() {
        let mut p = VaultPairer::default();
        let cases = [
            ("not json", "not JSON"),
            ("", "not JSON"),
            ("[1,2]", "not a JSON object"),
            (
                r#"{"time":"2026-11-22T10:00:00Z","request":{"id":"x"}}"#,
                "`type`",
            ),
            (
                r#"{"time":"2026-11-22T10:00:00Z","type":"audit","request":{"id":"x"}}"#,
                "`type`",
            ),
            (
                r#"{"time":"2026-11-22T10:00:00Z","type":"request","request":{}}"#,
                "`request.id`",
            ),
            (
                r#"{"time":"2026-11-22T10:00:00Z","type":"request"}"#,
                "`request.id`",
            ),
            (
                r#"{"time":"2026-11-22T10:00:00Z","type":"request","request":{"id":5}}"#,
                "`request.id`",
            ),
            (r#"{"type":"request","request":{"id":"x"}}"#, "`time`"),
            (
                r#"{"time":"yesterday","type":"request","request":{"id":"x"}}"#,
                "`time`",
            ),
        ];
        for (line, want) in cases {
            let e = p.push(line).unwrap_err();
            assert!(e.contains(want), "{line} -> {e}");
        }
        assert_eq!(p.unpaired(), 0);
        assert_eq!(p.dropped(), 0);
    }

    fn entry(kind: &str, id: &str) -> String {
        serde_json::json!({
            "time": "2026-11-22T10:00:00Z",
            "type": kind,
            "request": {"id": id, "path": "sys/health", "operation": "read"}
        })
        .to_string()
    }

    #[test]
    fn unpaired_cap_drops_oldest() {
        let mut p = VaultPairer::new(3);
        for i in 0..5 {
            assert_eq!(p.push(&entry("request", &format!("r{i}"))), Ok(None));
        }
        assert_eq!(p.unpaired(), 3);
        assert_eq!(p.dropped(), 2);
        // r0 and r1 were dropped: their responses now wait alone.
        assert_eq!(p.push(&entry("response", "r0")), Ok(None));
        assert_eq!(p.dropped(), 3); // r2 went to make room
        assert!(p.push(&entry("response", "r3")).unwrap().is_some());
        assert!(p.push(&entry("response", "r4")).unwrap().is_some());
        assert_eq!(p.unpaired(), 1);
        assert_eq!(p.dropped(), 3);
        // Pairing frees room: no more drops while under the cap.
        for i in 10..1000 {
            p.push(&entry("request", &format!("r{i}"))).unwrap();
            assert!(p
                .push(&entry("response", &format!("r{i}")))
                .unwrap()
                .is_some());
        }
        assert_eq!(p.dropped(), 3);
        assert_eq!(p.unpaired(), 1);
    }

    #[test]
    fn same_kind_twice_replaces() {
        let mut p = VaultPairer::new(2);
        assert_eq!(p.push(&entry("request", "x")), Ok(None));
        assert_eq!(p.push(&entry("request", "x")), Ok(None));
        assert_eq!(p.unpaired(), 1);
        assert_eq!(p.dropped(), 0);
        let lease = p.push(&entry("response", "x")).unwrap().unwrap();
        assert_eq!(lease.path, "sys/health");
        assert!(lease.policies.is_empty());
        assert_eq!(lease.to_issuance_identity().len(), 2);
        assert_eq!(lease.expires_at(), None);
    }
}
