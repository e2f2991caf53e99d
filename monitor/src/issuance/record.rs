//! The issuance record: who was given which secret, when, for how long,
//! delivered how, and allowed to send it where (SPEC "Issuance record").
//!
//! One JSON object a line, in an issuance file or sent to the API:
//!
//! ```json
//! {"secret_id": "db-prod", "issued_at": "2026-11-22T10:00:00Z", "ttl_seconds": 300,
//!  "holder": {"pid": 4242},
//!  "delivery": [{"file": "/vault/secrets/db"}, {"env": "DB_PASSWORD"}],
//!  "allowed_destinations": ["127.0.0.1:5432", "10.0.0.0/8:443", "db.internal:5432"],
//!  "source": "vault", "lease_id": "database/creds/app/abc", "labels": {"team": "payments"}}
//! ```
//!
//! or a revocation, `{"revoke": "db-prod", "at": "2026-11-22T10:03:00Z"}`.
//!
//! Parsing is strict: any other shape is rejected with a [`RecordError`]
//! naming the field (the caller adds the source and line number). An
//! optional field given as JSON `null` counts as absent. Besides the fields
//! of the spec, an issuance may carry `identity`, an object of strings with
//! provenance metadata (Vault accessor, Kubernetes service account, JWT
//! subject...); the agent fills it for issuances it derives itself and
//! [`Issuance::to_json`] writes it, so that records round-trip.
//!
//! Error messages hold field names and expected shapes; the offending value
//! is quoted only for identifiers and paths (never for labels, identity
//! values or anything else that could carry sensitive data).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// Longest accepted path (`PATH_MAX`).
const MAX_PATH: usize = 4096;
/// Longest accepted `secret_id`.
const MAX_SECRET_ID: usize = 128;
/// How much of an offending identifier or path an error message quotes.
const QUOTE_MAX: usize = 80;

/// Top-level fields of an issuance.
const ISSUE_FIELDS: &[&str] = &[
    "secret_id",
    "issued_at",
    "expires_at",
    "ttl_seconds",
    "holder",
    "delivery",
    "allowed_destinations",
    "source",
    "lease_id",
    "labels",
    "identity",
    "replaces",
];
/// Fields of `holder`.
const HOLDER_FIELDS: &[&str] = &[
    "pid",
    "cgroup",
    "container_id",
    "pod_uid",
    "exe",
    "namespace",
    "pod",
    "service_account",
];

/// Who the secret was issued to. At least one field is set; a process
/// belongs to the holder if it matches any of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// That process and the children it forks after issuance.
    pub pid: Option<u32>,
    /// A cgroup v2 path (as in `/proc/PID/cgroup`, relative to the cgroup2
    /// mount, starting with `/`, no trailing `/`): every process in it or
    /// below it.
    pub cgroup: Option<String>,
    /// A container id, lowercase hex, 12 to 64 characters (a shorter id is a
    /// prefix of the full 64-character one). A `docker://`,
    /// `containerd://` or `cri-o://` prefix is stripped on parsing.
    pub container_id: Option<String>,
    /// A Kubernetes pod UID, lowercase: a dashed UUID or, for static pods,
    /// 32 hex digits. Underscores (systemd cgroup form) become dashes.
    pub pod_uid: Option<String>,
    /// An absolute executable path.
    pub exe: Option<String>,
    /// A Kubernetes namespace: with `pod` and/or `service_account` (never
    /// alone), as resolved on the node (`k8s` of a process).
    pub namespace: Option<String>,
    /// A pod name in `namespace`: every process of that pod.
    pub pod: Option<String>,
    /// A service account in `namespace`: every process of a pod running as it.
    pub service_account: Option<String>,
}

impl Holder {
    /// True when no field is set (never the case for a parsed record).
    pub fn is_empty(&self) -> bool {
        self.pid.is_none()
            && self.cgroup.is_none()
            && self.container_id.is_none()
            && self.pod_uid.is_none()
            && self.exe.is_none()
            && self.namespace.is_none()
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(pid) = self.pid {
            m.insert("pid".into(), Value::from(pid));
        }
        let strings = [
            ("cgroup", &self.cgroup),
            ("container_id", &self.container_id),
            ("pod_uid", &self.pod_uid),
            ("exe", &self.exe),
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("service_account", &self.service_account),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v.as_str()));
            }
        }
        Value::Object(m)
    }
}

/// How the secret reaches the holder.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// A file at this absolute path.
    File(String),
    /// An environment variable of this name.
    Env(String),
}

impl Delivery {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        match self {
            Delivery::File(p) => m.insert("file".into(), Value::from(p.as_str())),
            Delivery::Env(n) => m.insert("env".into(), Value::from(n.as_str())),
        };
        Value::Object(m)
    }
}

/// One entry of `allowed_destinations`. A `port` of `None` is `*` (any).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// One address. IPv4-mapped IPv6 addresses are stored as IPv4.
    Addr {
        /// The address.
        ip: IpAddr,
        /// The port, `None` for any.
        port: Option<u16>,
    },
    /// A network. Host bits are cleared on parsing; an IPv4-mapped IPv6
    /// network of prefix 96 or more is stored as the IPv4 network.
    Cidr {
        /// The network address.
        net: IpAddr,
        /// The prefix length (at most 32 for IPv4, 128 for IPv6).
        prefix: u8,
        /// The port, `None` for any.
        port: Option<u16>,
    },
    /// A host name (lowercase, no trailing dot), matched through the
    /// addresses it resolves to.
    Host {
        /// The host name.
        name: String,
        /// The port, `None` for any.
        port: Option<u16>,
    },
}

impl Destination {
    /// Parses `IP:PORT`, `[IPV6]:PORT`, `CIDR:PORT` (`10.0.0.0/8:443`,
    /// `[fd00::/8]:443` or `fd00::/8:443`) or `HOST:PORT`; `PORT` is 1 to
    /// 65535 or `*` for any. An IPv6 address must be in brackets.
    pub fn parse(s: &str) -> Result<Self, String> {
        let input = s.trim();
        let bad = |why: &str| {
            format!(
                "{why}: expected IP:PORT, [IPv6]:PORT, CIDR:PORT or HOST:PORT \
                 (PORT 1-65535 or *), got {}",
                quote(input)
            )
        };
        let (host, port, bracketed) = if let Some(rest) = input.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or_else(|| bad("missing ]"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad("missing :PORT after ]"))?;
            (inner, port, true)
        } else {
            let (h, p) = input.rsplit_once(':').ok_or_else(|| bad("missing :PORT"))?;
            if h.contains(':') && !h.contains('/') {
                return Err(bad("an IPv6 address must be in brackets"));
            }
            (h, p, false)
        };
        let port = match port {
            "*" => None,
            p if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u16>() {
                    Ok(0) | Err(_) => return Err(bad("port out of range")),
                    Ok(n) => Some(n),
                }
            }
            _ => return Err(bad("bad port")),
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if let Some((addr, prefix)) = host.split_once('/') {
            let net: IpAddr = addr.parse().map_err(|_| bad("bad network address"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = match prefix.parse() {
                Ok(p) if p <= max && prefix.bytes().all(|b| b.is_ascii_digit()) => p,
                _ => return Err(bad("bad prefix length")),
            };
            let (net, prefix) = canon_net(net, prefix);
            return Ok(Destination::Cidr { net, prefix, port });
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Destination::Addr {
                ip: canon(ip),
                port,
            });
        }
        if bracketed {
            return Err(bad("not an IP address in brackets"));
        }
        let name = valid_hostname(host).ok_or_else(|| bad("bad host name"))?;
        Ok(Destination::Host { name, port })
    }

    /// The port, `None` for any.
    pub fn port(&self) -> Option<u16> {
        match self {
            Destination::Addr { port, .. }
            | Destination::Cidr { port, .. }
            | Destination::Host { port, .. } => *port,
        }
    }

    /// Whether a connection to `ip`:`port` is covered by this entry.
    ///
    /// A [`Destination::Host`] matches when `ip` is one of `resolved`, the
    /// host's addresses as resolved by the caller (empty: never matches).
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are compared as IPv4,
    /// on either side.
    pub fn matches_addr(&self, ip: IpAddr, port: u16, resolved: &[IpAddr]) -> bool {
        if self.port().is_some_and(|p| p != port) {
            return false;
        }
        let ip = canon(ip);
        match self {
            Destination::Addr { ip: a, .. } => canon(*a) == ip,
            Destination::Cidr { net, prefix, .. } => cidr_contains(*net, *prefix, ip),
            Destination::Host { .. } => resolved.iter().any(|r| canon(*r) == ip),
        }
    }
}

impl fmt::Display for Destination {
    /// The form [`Destination::parse`] reads: `10.0.0.1:443`, `[::1]:*`,
    /// `10.0.0.0/8:443`, `[fd00::/8]:443`, `db.internal:5432`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Addr {
                ip: IpAddr::V4(a), ..
            } => write!(f, "{a}")?,
            Destination::Addr {
                ip: IpAddr::V6(a), ..
            } => write!(f, "[{a}]")?,
            Destination::Cidr {
                net: IpAddr::V4(n),
                prefix,
                ..
            } => write!(f, "{n}/{prefix}")?,
            Destination::Cidr {
                net: IpAddr::V6(n),
                prefix,
                ..
            } => write!(f, "[{n}/{prefix}]")?,
            Destination::Host { name, .. } => f.write_str(name)?,
        }
        match self.port() {
            Some(p) => write!(f, ":{p}"),
            None => f.write_str(":*"),
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
fn canon(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Clears host bits and turns an IPv4-mapped IPv6 network (prefix >= 96)
/// into the IPv4 network.
fn canon_net(net: IpAddr, prefix: u8) -> (IpAddr, u8) {
    match net {
        IpAddr::V4(a) => (IpAddr::V4(mask_v4(a, prefix)), prefix),
        IpAddr::V6(a) => {
            let a = mask_v6(a, prefix);
            match a.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                _ => (IpAddr::V6(a), prefix),
            }
        }
    }
}

fn mask_v4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(a) & mask)
}

fn mask_v6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(a) & mask)
}

/// `ip` must already be canonical. An IPv4 address is also tried, mapped,
/// against an IPv6 network (so `::/0` covers everything).
fn cidr_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let (net, prefix) = canon_net(net, prefix);
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => prefix <= 32 && mask_v4(a, prefix) == n,
        (IpAddr::V6(n), IpAddr::V6(a)) => mask_v6(a, prefix) == n,
        (IpAddr::V6(n), IpAddr::V4(a)) => mask_v6(a.to_ipv6_mapped(), prefix) == n,
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// A DNS name: labels of 1 to 63 of `a-z 0-9 - _`, not starting or ending
/// with `-`, 253 characters at most, last label not all digits (that would
/// be a mistyped IPv4 address). Returned lowercase without a trailing dot.
fn valid_hostname(s: &str) -> Option<String> {
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return None;
        }
    }
    let last = name.rsplit('.').next().unwrap_or("");
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(name)
}

/// The label of an issuance learned from another node's fingerprints: the
/// node its holder is on (see `fleet::foreign_issuance`).
pub const FLEET_HOLDER_NODE: &str = "fleet.holder_node";

/// One issuance: a secret handed to a holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuance {
    /// The secret's name (see [`validate_secret_id`]).
    pub secret_id: String,
    /// When it was issued (default: when the record was received).
    pub issued_at: DateTime<Utc>,
    /// When it expires; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who it was issued to.
    pub holder: Holder,
    /// How it reaches the holder; never empty.
    pub delivery: Vec<Delivery>,
    /// Where the secret may be sent. `None`: not restricted; `Some(vec![])`:
    /// nowhere.
    pub allowed_destinations: Option<Vec<Destination>>,
    /// Who issued it (`vault`, `k8s`...), free text.
    pub source: Option<String>,
    /// The broker's lease id, free text.
    pub lease_id: Option<String>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Provenance and identity metadata: `vault.accessor`, `vault.entity_id`,
    /// `k8s.service_account_name`, `jwt.sub`, `jwt.jti`...
    pub identity: BTreeMap<String, String>,
    /// `"replaces": true`: this record replaces an earlier, still valid
    /// issuance of the same `secret_id` even if the holder differs (without
    /// it such a re-issue is refused).
    pub replaces: bool,
}

impl Issuance {
    /// The record as JSON, in the shape [`parse_record`] reads: times as
    /// RFC 3339 UTC (full precision), expiry as `expires_at`, absent
    /// optional fields and empty `labels`/`identity` left out. Parsing the
    /// result gives back an equal `Issuance`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("secret_id".into(), Value::from(self.secret_id.as_str()));
        m.insert("issued_at".into(), Value::from(time_json(self.issued_at)));
        if let Some(t) = self.expires_at {
            m.insert("expires_at".into(), Value::from(time_json(t)));
        }
        m.insert("holder".into(), self.holder.to_json());
        m.insert(
            "delivery".into(),
            Value::Array(self.delivery.iter().map(Delivery::to_json).collect()),
        );
        if let Some(dests) = &self.allowed_destinations {
            let list = dests.iter().map(|d| Value::from(d.to_string())).collect();
            m.insert("allowed_destinations".into(), Value::Array(list));
        }
        if let Some(s) = &self.source {
            m.insert("source".into(), Value::from(s.as_str()));
        }
        if let Some(s) = &self.lease_id {
            m.insert("lease_id".into(), Value::from(s.as_str()));
        }
        for (key, map) in [("labels", &self.labels), ("identity", &self.identity)] {
            if !map.is_empty() {
                let obj = map
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect();
                m.insert(key.into(), Value::Object(obj));
            }
        }
        if self.replaces {
            m.insert("replaces".into(), Value::Bool(true));
        }
        Value::Object(m)
    }

    /// Whether the secret has expired at `at` (at or after `expires_at`).
    /// A secret without expiry never expires.
    pub fn is_expired(&self, at: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| at >= e)
    }
}

fn time_json(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One parsed line.
// Records are handled one at a time, never stored in bulk: boxing the
// issuance would only complicate matching on it.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A secret was issued.
    Issue(Issuance),
    /// A secret was revoked. `at: None` means "from when the record was
    /// received" (the caller knows that time).
    Revoke {
        /// The revoked secret.
        secret_id: String,
        /// When the revocation takes effect.
        at: Option<DateTime<Utc>>,
    },
}

impl Record {
    /// The secret the record is about.
    pub fn secret_id(&self) -> &str {
        match self {
            Record::Issue(i) => &i.secret_id,
            Record::Revoke { secret_id, .. } => secret_id,
        }
    }
}

/// Why a record was rejected: the field (`holder.pid`, `delivery[1].env`,
/// `allowed_destinations[2]`; `(json)` for a line that is not JSON,
/// `(record)` for one that is not an object) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct RecordError {
    /// The offending field.
    pub field: String,
    /// What is wrong, e.g. `must be a positive integer`.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> RecordError {
    RecordError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a secret id: 1 to 128 of `A-Z a-z 0-9 . _ : / -`.
pub fn validate_secret_id(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SECRET_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_SECRET_ID} of A-Z a-z 0-9 . _ : / - ({} characters, got {})",
            s.chars().count(),
            quote(s)
        ))
    }
}

/// Parses one line of an issuance source. `received_at` is the default
/// `issued_at`. Blank lines are the caller's to skip (they are `(json)`
/// errors here).
pub fn parse_record(line: &str, received_at: DateTime<Utc>) -> Result<Record, RecordError> {
    let value: Value = serde_json::from_str(line).map_err(|e| err("(json)", e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(err(
            "(record)",
            format!(
                "must be a JSON object (an issuance or a revocation), got {}",
                kind(&value)
            ),
        ));
    };
    if map.contains_key("revoke") {
        parse_revoke(&map)
    } else {
        parse_issue(&map, received_at).map(Record::Issue)
    }
}

fn parse_revoke(map: &Map<String, Value>) -> Result<Record, RecordError> {
    if let Some(k) = map.keys().find(|k| !matches!(k.as_str(), "revoke" | "at")) {
        return Err(err(
            field_name(k),
            "unknown field in a revocation; expected only `revoke` and `at`",
        ));
    }
    let secret_id = match map.get("revoke") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(err(
                "revoke",
                format!("must be a secret id string, got {}", kind(v)),
            ))
        }
        None => return Err(err("revoke", "is required")),
    };
    validate_secret_id(&secret_id).map_err(|m| err("revoke", m))?;
    let at = opt(map, "at").map(|v| time("at", v)).transpose()?;
    Ok(Record::Revoke { secret_id, at })
}

fn parse_issue(
    map: &Map<String, Value>,
    received_at: DateTime<Utc>,
) -> Result<Issuance, RecordError> {
    if let Some(k) = map.keys().find(|k| !ISSUE_FIELDS.contains(&k.as_str())) {
        return Err(err(
            field_name(k),
            format!("unknown field; expected {}", ISSUE_FIELDS.join(", ")),
        ));
    }

    let secret_id = match opt(map, "secret_id") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(err(
                "secret_id",
                format!("must be a string, got {}", kind(v)),
            ))
        }
        None => return Err(err("secret_id", "is required")),
    };
    validate_secret_id(&secret_id).map_err(|m| err("secret_id", m))?;

    let explicit_issued_at = opt(map, "issued_at")
        .map(|v| time("issued_at", v))
        .transpose()?;
    let issued_at = explicit_issued_at.unwrap_or(received_at);

    let expires_at = match (opt(map, "expires_at"), opt(map, "ttl_seconds")) {
        (Some(_), Some(_)) => {
            return Err(err(
                "ttl_seconds",
                "give either `expires_at` or `ttl_seconds`, not both",
            ))
        }
        (Some(v), None) => {
            let t = time("expires_at", v)?;
            // Only against an explicit issued_at: a record without one may
            // be read long after it was written and be expired already.
            if explicit_issued_at.is_some_and(|i| t < i) {
                return Err(err("expires_at", "must not be before `issued_at`"));
            }
            Some(t)
        }
        (None, Some(v)) => {
            let secs = v
                .as_u64()
                .ok_or_else(|| err("ttl_seconds", "must be a non-negative integer (seconds)"))?;
            let t = i64::try_from(secs)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .and_then(|d| issued_at.checked_add_signed(d))
                .ok_or_else(|| err("ttl_seconds", "is too large"))?;
            Some(t)
        }
        (None, None) => None,
    };

    let holder = match opt(map, "holder") {
        Some(Value::Object(h)) => parse_holder(h)?,
        Some(v) => return Err(err("holder", format!("must be an object, got {}", kind(v)))),
        None => return Err(err("holder", "is required")),
    };

    let delivery = match opt(map, "delivery") {
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(err(
                    "delivery",
                    "must list at least one {\"file\": PATH} or {\"env\": NAME}",
                ));
            }
            let mut delivery = items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_delivery(i, item))
                .collect::<Result<Vec<_>, _>>()?;
            // Kept as long as the secret is known: no spare capacity.
            delivery.shrink_to_fit();
            delivery
        }
        Some(v) => {
            return Err(err(
                "delivery",
                format!("must be an array, got {}", kind(v)),
            ))
        }
        None => return Err(err("delivery", "is required")),
    };

    let allowed_destinations = match opt(map, "allowed_destinations") {
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let field = format!("allowed_destinations[{i}]");
                    match item {
                        Value::String(s) => Destination::parse(s).map_err(|m| err(field, m)),
                        v => Err(err(
                            field,
                            format!("must be a string like \"10.0.0.0/8:443\", got {}", kind(v)),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(v) => {
            return Err(err(
                "allowed_destinations",
                format!("must be an array of strings, got {}", kind(v)),
            ))
        }
        None => None,
    };

    let source = opt_string(map, "source")?;
    let lease_id = opt_string(map, "lease_id")?;
    let labels = string_map(map, "labels")?;
    let identity = string_map(map, "identity")?;
    let replaces = match opt(map, "replaces") {
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(err(
                "replaces",
                format!("must be true or false, got {}", kind(v)),
            ))
        }
        None => false,
    };

    Ok(Issuance {
        secret_id,
        issued_at,
        expires_at,
        holder,
        delivery,
        allowed_destinations,
        source,
        lease_id,
        labels,
        identity,
        replaces,
    })
}

fn parse_holder(h: &Map<String, Value>) -> Result<Holder, RecordError> {
    if let Some(k) = h.keys().find(|k| !HOLDER_FIELDS.contains(&k.as_str())) {
        return Err(err(
            format!("holder.{}", field_name(k)),
            format!("unknown field; expected {}", HOLDER_FIELDS.join(", ")),
        ));
    }
    let pid = match opt(h, "pid") {
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n > 0 => Some(n),
            _ => return Err(err("holder.pid", "must be a positive integer")),
        },
        None => None,
    };
    let cgroup = match opt(h, "cgroup") {
        Some(v) => {
            let p = abs_path("holder.cgroup", v)?;
            let trimmed = p.trim_end_matches('/');
            Some(if trimmed.is_empty() {
                "/".to_string()
            } else {
                trimmed.to_string()
            })
        }
        None => None,
    };
    let container_id = match opt(h, "container_id") {
        Some(Value::String(s)) => Some(container_id(s).ok_or_else(|| {
            err(
                "holder.container_id",
                format!("must be 12 to 64 hex digits, got {}", quote(s)),
            )
        })?),
        Some(v) => {
            return Err(err(
                "holder.container_id",
                format!("must be a string, got {}", kind(v)),
            ))
        }
        None => None,
    };
    let pod_uid = match opt(h, "pod_uid") {
        Some(Value::String(s)) => Some(pod_uid(s).ok_or_else(|| {
            err(
                "holder.pod_uid",
                format!(
                    "must be a UUID (8-4-4-4-12 hex) or 32 hex digits, got {}",
                    quote(s)
                ),
            )
        })?),
        Some(v) => {
            return Err(err(
                "holder.pod_uid",
                format!("must be a string, got {}", kind(v)),
            ))
        }
        None => None,
    };
    let exe = opt(h, "exe")
        .map(|v| abs_path("holder.exe", v))
        .transpose()?;
    let k8s_name = |field: &str, max: usize, dots: bool| -> Result<Option<String>, RecordError> {
        match opt(h, field) {
            Some(Value::String(s)) if k8s_name_ok(s, max, dots) => Ok(Some(s.clone())),
            Some(Value::String(s)) => Err(err(
                format!("holder.{field}"),
                format!(
                    "must be a Kubernetes name (lowercase a-z, 0-9, '-'{}, at most {max}), got {}",
                    if dots { ", '.'" } else { "" },
                    quote(s)
                ),
            )),
            Some(v) => Err(err(
                format!("holder.{field}"),
                format!("must be a string, got {}", kind(v)),
            )),
            None => Ok(None),
        }
    };
    let namespace = k8s_name("namespace", 63, false)?;
    let pod = k8s_name("pod", 253, true)?;
    let service_account = k8s_name("service_account", 253, true)?;
    match (&namespace, &pod, &service_account) {
        (Some(_), None, None) => {
            return Err(err(
                "holder.namespace",
                "needs `pod` or `service_account` (a whole namespace is not a holder)",
            ))
        }
        (None, Some(_), _) => return Err(err("holder.pod", "needs `namespace`")),
        (None, _, Some(_)) => return Err(err("holder.service_account", "needs `namespace`")),
        _ => {}
    }
    let holder = Holder {
        pid,
        cgroup,
        container_id,
        pod_uid,
        exe,
        namespace,
        pod,
        service_account,
    };
    if holder.is_empty() {
        return Err(err(
            "holder",
            format!("must name at least one of {}", HOLDER_FIELDS.join(", ")),
        ));
    }
    Ok(holder)
}

/// 12 to 64 hex digits, lowercased, after an optional `runtime://` prefix.
fn container_id(s: &str) -> Option<String> {
    let id = match s.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            rest
        }
        Some(_) => return None,
        None => s,
    };
    ((12..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.to_ascii_lowercase())
}

/// A dashed UUID (underscores accepted for dashes) or 32 hex digits,
/// lowercased.
fn pod_uid(s: &str) -> Option<String> {
    let u = s.replace('_', "-").to_ascii_lowercase();
    let b = u.as_bytes();
    let ok = match b.len() {
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        }),
        32 => b.iter().all(u8::is_ascii_hexdigit),
        _ => false,
    };
    ok.then_some(u)
}

fn parse_delivery(i: usize, item: &Value) -> Result<Delivery, RecordError> {
    let field = format!("delivery[{i}]");
    let Value::Object(m) = item else {
        return Err(err(
            field,
            format!(
                "must be {{\"file\": PATH}} or {{\"env\": NAME}}, got {}",
                kind(item)
            ),
        ));
    };
    if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "file" | "env")) {
        return Err(err(
            format!("{field}.{}", field_name(k)),
            "unknown field; expected `file` or `env`",
        ));
    }
    match (m.get("file"), m.get("env")) {
        (Some(v), None) => abs_path(&format!("{field}.file"), v).map(Delivery::File),
        (None, Some(v)) => {
            let f = format!("{field}.env");
            match v {
                Value::String(name) if valid_env_name(name) => Ok(Delivery::Env(name.clone())),
                Value::String(name) => Err(err(
                    f,
                    format!(
                        "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {}",
                        quote(name)
                    ),
                )),
                v => Err(err(f, format!("must be a string, got {}", kind(v)))),
            }
        }
        _ => Err(err(field, "must have exactly one of `file` or `env`")),
    }
}

fn valid_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A string starting with `/`, without NUL, at most `PATH_MAX` bytes.
fn abs_path(field: &str, v: &Value) -> Result<String, RecordError> {
    match v {
        Value::String(p) if p.starts_with('/') && !p.contains('\0') && p.len() <= MAX_PATH => {
            Ok(p.clone())
        }
        Value::String(p) => Err(err(
            field,
            format!("must be an absolute path, got {}", quote(p)),
        )),
        v => Err(err(
            field,
            format!("must be an absolute path string, got {}", kind(v)),
        )),
    }
}

fn time(field: &str, v: &Value) -> Result<DateTime<Utc>, RecordError> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                err(
                    field,
                    "must be an RFC 3339 time like \"2026-11-22T10:00:00Z\"",
                )
            }),
        v => Err(err(
            field,
            format!("must be an RFC 3339 time string, got {}", kind(v)),
        )),
    }
}

fn opt_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, RecordError> {
    match opt(map, key) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(err(key, format!("must be a string, got {}", kind(v)))),
        None => Ok(None),
    }
}

fn string_map(
    map: &Map<String, Value>,
    key: &str,
) -> Result<BTreeMap<String, String>, RecordError> {
    match opt(map, key) {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                v => Err(err(
                    format!("{key}.{}", field_name(k)),
                    format!("must be a string, got {}", kind(v)),
                )),
            })
            .collect(),
        Some(v) => Err(err(
            key,
            format!("must be an object of strings, got {}", kind(v)),
        )),
        None => Ok(BTreeMap::new()),
    }
}

/// The value of `key`, `None` when absent or `null`.
/// A DNS-1123 label (`dots` false) or subdomain: lowercase alphanumerics
/// and `-` (and `.`), starting and ending alphanumeric.
fn k8s_name_ok(s: &str, max: usize, dots: bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || (dots && *c == b'.')
        })
}

fn opt<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// A JSON value's kind, for messages (never the value itself).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field name fit for a one-line message: plain names as they are,
/// anything else quoted and escaped, at most [`QUOTE_MAX`] characters.
fn field_name(k: &str) -> String {
    let plain = !k.is_empty()
        && k.len() <= QUOTE_MAX
        && k.bytes().all(|b| b.is_ascii_graphic() && b != b'`');
    if plain {
        k.to_string()
    } else {
        quote(k)
    }
}

/// An identifier or path quoted and escaped for a one-line message,
/// truncated to [`QUOTE_MAX`] characters.
fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(QUOTE_MAX).collect();
        format!("{head:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SPEC_EXAMPLE: &str = r#"{"secret_id": "db-prod",
 "issued_at": "2026-11-22T10:00:00Z",
 "ttl_seconds": 300,
 "holder": {"pid": 4242},
 "delivery": [{"file": "/vault/secrets/db"}, {"env": "DB_PASSWORD"}],
 "allowed_destinations": ["127.0.0.1:5432", "10.0.0.0/8:443", "db.internal:5432"],
 "source": "vault", "lease_id": "database/creds/app/abc", "labels": {"team": "payments"}}"#;

    const CID: &str = "3f6a5b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 59, 0).unwrap()
    }

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, s).unwrap()
    }

    fn issue(line: &str) -> Issuance {
        match parse_record(line, now()) {
            Ok(Record::Issue(i)) => i,
            other => panic!("expected an issuance from {line}, got {other:?}"),
        }
    }

    /// A minimal valid record with `patch` merged over it at the top level.
    fn with(patch: Value) -> String {
        let mut base = serde_json::json!({
            "secret_id": "db-prod",
            "holder": {"pid": 4242},
            "delivery": [{"file": "/vault/secrets/db"}],
        });
        if let (Value::Object(b), Value::Object(p)) = (&mut base, patch) {
            for (k, v) in p {
                b.insert(k, v);
            }
        }
        base.to_string()
    }

    fn without(key: &str) -> String {
        let mut v: Value = serde_json::from_str(&with(serde_json::json!({}))).unwrap();
        v.as_object_mut().unwrap().remove(key);
        v.to_string()
    }

    /// Parses `line`, expects an error, checks its field, returns it.
    fn fails(line: &str, field: &str) -> RecordError {
        match parse_record(line, now()) {
            Err(e) => {
                assert_eq!(e.field, field, "wrong field for {line}: {e}");
                assert!(e.to_string().starts_with(&format!("field `{field}`: ")));
                assert!(!e.to_string().contains('\n'), "one line: {e}");
                e
            }
            Ok(r) => panic!("expected an error on `{field}` for {line}, got {r:?}"),
        }
    }

    #[test]
    fn spec_example_parses_exactly() {
        let i = issue(SPEC_EXAMPLE);
        let expected = Issuance {
            secret_id: "db-prod".into(),
            issued_at: t(10, 0, 0),
            expires_at: Some(t(10, 5, 0)),
            holder: Holder {
                pid: Some(4242),
                ..Holder::default()
            },
            delivery: vec![
                Delivery::File("/vault/secrets/db".into()),
                Delivery::Env("DB_PASSWORD".into()),
            ],
            allowed_destinations: Some(vec![
                Destination::Addr {
                    ip: "127.0.0.1".parse().unwrap(),
                    port: Some(5432),
                },
                Destination::Cidr {
                    net: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                    port: Some(443),
                },
                Destination::Host {
                    name: "db.internal".into(),
                    port: Some(5432),
                },
            ]),
            source: Some("vault".into()),
            lease_id: Some("database/creds/app/abc".into()),
            labels: [("team".to_string(), "payments".to_string())].into(),
            identity: BTreeMap::new(),
            replaces: false,
        };
        assert_eq!(i, expected);
        assert!(!i.is_expired(t(10, 4, 59)));
        assert!(i.is_expired(t(10, 5, 0)));
        assert!(i.is_expired(t(11, 0, 0)));
    }

    #[test]
    fn minimal_record_defaults() {
        let i = issue(&with(serde_json::json!({})));
        assert_eq!(i.issued_at, now());
        assert_eq!(i.expires_at, None);
        assert_eq!(i.allowed_destinations, None);
        assert!(i.labels.is_empty() && i.identity.is_empty());
        assert!(i.source.is_none() && i.lease_id.is_none());
        assert!(!i.is_expired(t(23, 59, 59)));
    }

    #[test]
    fn nulls_are_absent() {
        let i = issue(&with(serde_json::json!({
            "issued_at": null, "expires_at": null, "ttl_seconds": null,
            "allowed_destinations": null, "source": null, "labels": null,
            "holder": {"pid": 7, "exe": null},
        })));
        assert_eq!(i.issued_at, now());
        assert_eq!(i.expires_at, None);
        assert_eq!(i.holder.exe, None);
        fails(&with(serde_json::json!({"secret_id": null})), "secret_id");
    }

    #[test]
    fn expires_at_and_offsets() {
        let i = issue(&with(serde_json::json!({
            "issued_at": "2026-11-22T12:00:00+02:00",
            "expires_at": "2026-11-22T10:30:00.250Z",
        })));
        assert_eq!(i.issued_at, t(10, 0, 0));
        assert_eq!(
            i.expires_at,
            Some(t(10, 30, 0) + chrono::Duration::milliseconds(250))
        );
        // ttl 0: expired from the moment of issuance.
        let i = issue(&with(
            serde_json::json!({"issued_at": "2026-11-22T10:00:00Z", "ttl_seconds": 0}),
        ));
        assert!(i.is_expired(t(10, 0, 0)));
        // ttl without issued_at counts from reception.
        let i = issue(&with(serde_json::json!({"ttl_seconds": 60})));
        assert_eq!(i.expires_at, Some(now() + chrono::Duration::seconds(60)));
    }

    #[test]
    fn holder_forms() {
        let i = issue(&with(serde_json::json!({"holder": {
            "pid": 1,
            "cgroup": "/kubepods.slice/kubepods-besteffort.slice/",
            "container_id": format!("containerd://{}", CID.to_uppercase()),
            "pod_uid": "8E2B6A0C_6F7D_4C1E_9B3A_5D4F2E1A0B9C",
            "exe": "/usr/bin/psql",
        }})));
        assert_eq!(
            i.holder,
            Holder {
                pid: Some(1),
                cgroup: Some("/kubepods.slice/kubepods-besteffort.slice".into()),
                container_id: Some(CID.into()),
                pod_uid: Some("8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c".into()),
                exe: Some("/usr/bin/psql".into()),
                ..Default::default()
            }
        );
        let i = issue(&with(
            serde_json::json!({"holder": {"namespace": "payments", "pod": "api-7d9f8b6c5d-x2k4p"}}),
        ));
        assert_eq!(i.holder.namespace.as_deref(), Some("payments"));
        assert_eq!(i.holder.pod.as_deref(), Some("api-7d9f8b6c5d-x2k4p"));
        let i = issue(&with(
            serde_json::json!({"holder": {"namespace": "payments", "service_account": "api"}}),
        ));
        assert_eq!(i.holder.service_account.as_deref(), Some("api"));
        assert_eq!(
            i.holder.to_json(),
            serde_json::json!({"namespace": "payments", "service_account": "api"})
        );
        let i = issue(&with(serde_json::json!({"holder": {"cgroup": "/"}})));
        assert_eq!(i.holder.cgroup.as_deref(), Some("/"));
        let i = issue(&with(
            serde_json::json!({"holder": {"container_id": "3F6A5B1C9D8E"}}),
        ));
        assert_eq!(i.holder.container_id.as_deref(), Some("3f6a5b1c9d8e"));
        let i = issue(&with(
            serde_json::json!({"holder": {"pod_uid": "0123456789abcdef0123456789abcdef"}}),
        ));
        assert_eq!(
            i.holder.pod_uid.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn round_trip() {
        let mut full = issue(SPEC_EXAMPLE);
        full.holder = Holder {
            pid: Some(4242),
            cgroup: Some("/system.slice/app.service".into()),
            container_id: Some(CID.into()),
            pod_uid: Some("8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c".into()),
            exe: Some("/usr/bin/app".into()),
            namespace: Some("payments".into()),
            pod: Some("api-0".into()),
            service_account: Some("api".into()),
        };
        full.issued_at += chrono::Duration::nanoseconds(123_456_789);
        full.identity = [
            ("vault.accessor".to_string(), "hmac-sha256:abc".to_string()),
            (
                "jwt.sub".to_string(),
                "system:serviceaccount:ns:app".to_string(),
            ),
        ]
        .into();
        full.allowed_destinations.as_mut().unwrap().extend([
            Destination::parse("[::1]:*").unwrap(),
            Destination::parse("[fd00::/8]:443").unwrap(),
            Destination::parse("fd00::/16:443").unwrap(),
        ]);
        for original in [
            full.clone(),
            issue(SPEC_EXAMPLE),
            issue(&with(serde_json::json!({}))),
            issue(&with(serde_json::json!({"allowed_destinations": []}))),
        ] {
            let line = original.to_json().to_string();
            assert!(!line.contains("ttl_seconds"));
            let back = issue(&line);
            assert_eq!(back, original, "{line}");
        }
        let v = issue(SPEC_EXAMPLE).to_json();
        assert_eq!(v["issued_at"], "2026-11-22T10:00:00Z");
        assert_eq!(v["expires_at"], "2026-11-22T10:05:00Z");
        assert_eq!(v["holder"], serde_json::json!({"pid": 4242}));
        assert_eq!(
            v["delivery"],
            serde_json::json!([{"file": "/vault/secrets/db"}, {"env": "DB_PASSWORD"}])
        );
        assert_eq!(
            v["allowed_destinations"],
            serde_json::json!(["127.0.0.1:5432", "10.0.0.0/8:443", "db.internal:5432"])
        );
        assert!(v.get("identity").is_none());
    }

    #[test]
    fn revocations() {
        assert_eq!(
            parse_record(r#"{"revoke": "db-prod"}"#, now()),
            Ok(Record::Revoke {
                secret_id: "db-prod".into(),
                at: None
            })
        );
        let r = parse_record(
            r#"{"revoke": "db-prod", "at": "2026-11-22T10:03:00Z"}"#,
            now(),
        );
        assert_eq!(
            r,
            Ok(Record::Revoke {
                secret_id: "db-prod".into(),
                at: Some(t(10, 3, 0))
            })
        );
        assert_eq!(r.unwrap().secret_id(), "db-prod");
        fails(
            r#"{"revoke": "db-prod", "secret_id": "db-prod"}"#,
            "secret_id",
        );
        fails(r#"{"revoke": "db-prod", "reason": "rotated"}"#, "reason");
        fails(r#"{"revoke": "db prod"}"#, "revoke");
        fails(r#"{"revoke": 5}"#, "revoke");
        fails(r#"{"revoke": null}"#, "revoke");
        fails(r#"{"revoke": "db-prod", "at": "now"}"#, "at");
        fails(r#"{"revoke": "db-prod", "at": 1700000000}"#, "at");
    }

    #[test]
    fn secret_id_rules() {
        assert!(validate_secret_id("db-prod").is_ok());
        assert!(validate_secret_id("vault:kv/data/app.token_1-x").is_ok());
        assert!(validate_secret_id(&"a".repeat(128)).is_ok());
        assert!(validate_secret_id("").is_err());
        assert!(validate_secret_id(&"a".repeat(129)).is_err());
        for bad in ["db prod", "db@prod", "db\nprod", "dé", "a*"] {
            assert!(validate_secret_id(bad).is_err(), "{bad:?}");
        }
        fails(&without("secret_id"), "secret_id");
        fails(
            &with(serde_json::json!({"secret_id": "db prod!"})),
            "secret_id",
        );
        fails(&with(serde_json::json!({"secret_id": ""})), "secret_id");
        fails(&with(serde_json::json!({"secret_id": 42})), "secret_id");
        let e = fails(
            &with(serde_json::json!({"secret_id": "a".repeat(129)})),
            "secret_id",
        );
        assert!(e.message.contains("129 characters"), "{e}");
        assert!(e.message.len() < 300, "quote is truncated: {e}");
    }

    #[test]
    fn time_errors() {
        fails(
            &with(serde_json::json!({"issued_at": "yesterday"})),
            "issued_at",
        );
        fails(
            &with(serde_json::json!({"issued_at": "2026-11-22 10:00"})),
            "issued_at",
        );
        fails(
            &with(serde_json::json!({"issued_at": 1700000000})),
            "issued_at",
        );
        fails(
            &with(serde_json::json!({"expires_at": "2026-13-01T00:00:00Z"})),
            "expires_at",
        );
        fails(
            &with(serde_json::json!({
                "issued_at": "2026-11-22T10:00:00Z", "expires_at": "2026-11-22T09:00:00Z"
            })),
            "expires_at",
        );
        // Without issued_at, an expiry before reception is an expired
        // secret, not an error (records read back at agent start).
        let i = issue(&with(
            serde_json::json!({"expires_at": "2026-11-22T09:00:00Z"}),
        ));
        assert_eq!(i.issued_at, now());
        assert!(i.is_expired(now()));
    }

    #[test]
    fn ttl_errors() {
        let e = fails(
            &with(serde_json::json!({"ttl_seconds": 300, "expires_at": "2026-11-22T10:05:00Z"})),
            "ttl_seconds",
        );
        assert!(e.message.contains("expires_at"));
        fails(&with(serde_json::json!({"ttl_seconds": -5})), "ttl_seconds");
        fails(
            &with(serde_json::json!({"ttl_seconds": 1.5})),
            "ttl_seconds",
        );
        fails(
            &with(serde_json::json!({"ttl_seconds": "300"})),
            "ttl_seconds",
        );
        fails(
            &with(serde_json::json!({"ttl_seconds": u64::MAX})),
            "ttl_seconds",
        );
        fails(
            &with(serde_json::json!({"ttl_seconds": i64::MAX})),
            "ttl_seconds",
        );
    }

    #[test]
    fn holder_errors() {
        fails(
            &with(serde_json::json!({"holder": {"namespace": "payments"}})),
            "holder.namespace",
        );
        fails(
            &with(serde_json::json!({"holder": {"pod": "api-0"}})),
            "holder.pod",
        );
        fails(
            &with(serde_json::json!({"holder": {"service_account": "api"}})),
            "holder.service_account",
        );
        let e = fails(
            &with(serde_json::json!({"holder": {"namespace": "Payments", "pod": "a"}})),
            "holder.namespace",
        );
        assert!(e.to_string().contains("\"Payments\""), "{e}");
        fails(
            &with(serde_json::json!({"holder": {"namespace": "p", "pod": "a_b"}})),
            "holder.pod",
        );
        fails(
            &with(serde_json::json!({"holder": {"namespace": "p", "pod": 3}})),
            "holder.pod",
        );
        fails(&without("holder"), "holder");
        fails(&with(serde_json::json!({"holder": {}})), "holder");
        fails(
            &with(serde_json::json!({"holder": {"pid": null}})),
            "holder",
        );
        fails(&with(serde_json::json!({"holder": 4242})), "holder");
        fails(&with(serde_json::json!({"holder": [4242]})), "holder");
        let e = fails(
            &with(serde_json::json!({"holder": {"pid": 0}})),
            "holder.pid",
        );
        assert_eq!(
            e.to_string(),
            "field `holder.pid`: must be a positive integer"
        );
        fails(
            &with(serde_json::json!({"holder": {"pid": "4242"}})),
            "holder.pid",
        );
        fails(
            &with(serde_json::json!({"holder": {"pid": -1}})),
            "holder.pid",
        );
        fails(
            &with(serde_json::json!({"holder": {"pid": 1.5}})),
            "holder.pid",
        );
        fails(
            &with(serde_json::json!({"holder": {"pid": 4294967296u64}})),
            "holder.pid",
        );
        fails(
            &with(serde_json::json!({"holder": {"cgroup": "kubepods/x"}})),
            "holder.cgroup",
        );
        fails(
            &with(serde_json::json!({"holder": {"cgroup": ""}})),
            "holder.cgroup",
        );
        fails(
            &with(serde_json::json!({"holder": {"exe": "bin/app"}})),
            "holder.exe",
        );
        fails(
            &with(serde_json::json!({"holder": {"exe": "/bin/a\u{0}b"}})),
            "holder.exe",
        );
        fails(
            &with(serde_json::json!({"holder": {"exe": 5}})),
            "holder.exe",
        );
        for bad in [
            "abc",
            "3f6a5b1c9d8",
            "xyz6a5b1c9d8e7f",
            &"a".repeat(65),
            "bad://x",
        ] {
            fails(
                &with(serde_json::json!({"holder": {"container_id": bad}})),
                "holder.container_id",
            );
        }
        for bad in [
            "not-a-uuid",
            "8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9",
            "8e2b6a0c6f7d-4c1e-9b3a-5d4f2e1a0b9c0",
        ] {
            fails(
                &with(serde_json::json!({"holder": {"pod_uid": bad}})),
                "holder.pod_uid",
            );
        }
        fails(
            &with(serde_json::json!({"holder": {"pid": 1, "user": "x"}})),
            "holder.user",
        );
    }

    #[test]
    fn delivery_errors() {
        fails(&without("delivery"), "delivery");
        fails(&with(serde_json::json!({"delivery": []})), "delivery");
        fails(
            &with(serde_json::json!({"delivery": {"file": "/x"}})),
            "delivery",
        );
        fails(
            &with(serde_json::json!({"delivery": ["/x"]})),
            "delivery[0]",
        );
        fails(
            &with(serde_json::json!({"delivery": [{"file": "/x"}, {"file": "/y", "env": "Y"}]})),
            "delivery[1]",
        );
        fails(&with(serde_json::json!({"delivery": [{}]})), "delivery[0]");
        fails(
            &with(serde_json::json!({"delivery": [{"path": "/x"}]})),
            "delivery[0].path",
        );
        fails(
            &with(serde_json::json!({"delivery": [{"file": "x/y"}]})),
            "delivery[0].file",
        );
        fails(
            &with(serde_json::json!({"delivery": [{"file": 1}]})),
            "delivery[0].file",
        );
        for bad in ["1DB", "DB-PASSWORD", "", "DB PASSWORD", "DB=x"] {
            fails(
                &with(serde_json::json!({"delivery": [{"env": "OK"}, {"env": bad}]})),
                "delivery[1].env",
            );
        }
        fails(
            &with(serde_json::json!({"delivery": [{"env": null}]})),
            "delivery[0].env",
        );
        let i = issue(&with(serde_json::json!({"delivery": [{"env": "_x1"}]})));
        assert_eq!(i.delivery, vec![Delivery::Env("_x1".into())]);
    }

    #[test]
    fn destination_errors_name_the_index() {
        let e = fails(
            &with(
                serde_json::json!({"allowed_destinations": ["127.0.0.1:5432", "10.0.0.0/8:443", "db.internal"]}),
            ),
            "allowed_destinations[2]",
        );
        assert!(e.message.contains("db.internal"), "{e}");
        fails(
            &with(serde_json::json!({"allowed_destinations": ["127.0.0.1:5432", 443]})),
            "allowed_destinations[1]",
        );
        fails(
            &with(serde_json::json!({"allowed_destinations": "127.0.0.1:5432"})),
            "allowed_destinations",
        );
    }

    #[test]
    fn other_field_errors() {
        fails(&with(serde_json::json!({"ttl": 300})), "ttl");
        let e = fails(&with(serde_json::json!({"bad\nkey": 1})), "\"bad\\nkey\"");
        assert!(!e.to_string().contains('\n'));
        fails(&with(serde_json::json!({"source": 1})), "source");
        fails(&with(serde_json::json!({"lease_id": ["a"]})), "lease_id");
        fails(&with(serde_json::json!({"labels": ["a"]})), "labels");
        let e = fails(
            &with(serde_json::json!({"labels": {"team": "x", "n": 5}})),
            "labels.n",
        );
        assert!(!e.message.contains('5'), "{e}");
        fails(
            &with(serde_json::json!({"identity": {"jwt.sub": true}})),
            "identity.jwt.sub",
        );
    }

    #[test]
    fn not_json_or_not_an_object() {
        let e = fails("{\"secret_id\": ", "(json)");
        assert!(e.message.contains("EOF"), "{e}");
        fails("not json", "(json)");
        fails("", "(json)");
        fails("[]", "(record)");
        fails("\"db-prod\"", "(record)");
        fails("42", "(record)");
        fails("null", "(record)");
        fails("{}", "secret_id");
    }

    #[test]
    fn messages_do_not_echo_label_values() {
        let e = fails(
            &with(serde_json::json!({"labels": {"k": {"password": "hunter2"}}})),
            "labels.k",
        );
        assert!(!e.to_string().contains("hunter2"));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn destination_parse_forms() {
        let p = |s: &str| Destination::parse(s).unwrap();
        assert_eq!(
            p("127.0.0.1:5432"),
            Destination::Addr {
                ip: ip("127.0.0.1"),
                port: Some(5432)
            }
        );
        assert_eq!(
            p("[::1]:443"),
            Destination::Addr {
                ip: ip("::1"),
                port: Some(443)
            }
        );
        assert_eq!(
            p("1.2.3.4:*"),
            Destination::Addr {
                ip: ip("1.2.3.4"),
                port: None
            }
        );
        assert_eq!(
            p("10.1.2.3/8:443"),
            Destination::Cidr {
                net: ip("10.0.0.0"),
                prefix: 8,
                port: Some(443)
            }
        );
        assert_eq!(
            p("0.0.0.0/0:*"),
            Destination::Cidr {
                net: ip("0.0.0.0"),
                prefix: 0,
                port: None
            }
        );
        assert_eq!(p("[fd00::/8]:443"), p("fd00::1/8:443"));
        assert_eq!(
            p("[fd00::/8]:443"),
            Destination::Cidr {
                net: ip("fd00::"),
                prefix: 8,
                port: Some(443)
            }
        );
        assert_eq!(
            p("DB.Internal.:5432"),
            Destination::Host {
                name: "db.internal".into(),
                port: Some(5432)
            }
        );
        assert_eq!(
            p("localhost:*"),
            Destination::Host {
                name: "localhost".into(),
                port: None
            }
        );
        // IPv4-mapped forms become IPv4.
        assert_eq!(p("[::ffff:10.0.0.1]:443"), p("10.0.0.1:443"));
        assert_eq!(p("[::ffff:10.0.0.0/104]:443"), p("10.0.0.0/8:443"));
        assert_eq!(p(" 127.0.0.1:5432 "), p("127.0.0.1:5432"));
        for d in [
            "127.0.0.1:5432",
            "[::1]:*",
            "10.0.0.0/8:443",
            "[fd00::/8]:443",
            "db.internal:5432",
        ] {
            assert_eq!(p(d).to_string(), d);
        }
    }

    #[test]
    fn destination_parse_errors() {
        for bad in [
            "",
            "*",
            "127.0.0.1",
            "db.internal",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:+443",
            "127.0.0.1:http",
            "::1:443",
            "[::1]443",
            "[::1",
            "[db.internal]:443",
            "10.0.0.0/33:443",
            "10.0.0.0/:443",
            "10.0.0.0/+8:443",
            "[fd00::/129]:443",
            "10.0.0.256:443",
            "db_$internal:443",
            "-db.internal:443",
            "db..internal:443",
            ":443",
            "*:443",
            "db.internal/8:443",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn destination_matching() {
        let p = |s: &str| Destination::parse(s).unwrap();
        let none: &[IpAddr] = &[];
        assert!(p("127.0.0.1:5432").matches_addr(ip("127.0.0.1"), 5432, none));
        assert!(!p("127.0.0.1:5432").matches_addr(ip("127.0.0.1"), 5433, none));
        assert!(!p("127.0.0.1:5432").matches_addr(ip("127.0.0.2"), 5432, none));
        assert!(p("127.0.0.1:*").matches_addr(ip("127.0.0.1"), 1, none));
        // Mapped addresses compare as IPv4, on either side.
        assert!(p("127.0.0.1:5432").matches_addr(ip("::ffff:127.0.0.1"), 5432, none));
        let mapped = Destination::Addr {
            ip: ip("::ffff:127.0.0.1"),
            port: Some(5432),
        };
        assert!(mapped.matches_addr(ip("127.0.0.1"), 5432, none));
        // CIDR.
        let net = p("10.0.0.0/8:443");
        assert!(net.matches_addr(ip("10.255.1.2"), 443, none));
        assert!(net.matches_addr(ip("::ffff:10.1.1.1"), 443, none));
        assert!(!net.matches_addr(ip("11.0.0.1"), 443, none));
        assert!(!net.matches_addr(ip("10.0.0.1"), 80, none));
        assert!(!net.matches_addr(ip("fd00::1"), 443, none));
        assert!(p("0.0.0.0/0:*").matches_addr(ip("8.8.8.8"), 53, none));
        let v6 = p("[fd00::/8]:443");
        assert!(v6.matches_addr(ip("fd12::1"), 443, none));
        assert!(!v6.matches_addr(ip("fe80::1"), 443, none));
        assert!(!v6.matches_addr(ip("10.0.0.1"), 443, none));
        assert!(p("[::/0]:*").matches_addr(ip("10.0.0.1"), 1, none));
        assert!(p("[::1/128]:*").matches_addr(ip("::1"), 1, none));
        // Hosts match through the caller's resolution.
        let host = p("db.internal:5432");
        let resolved = [ip("10.0.0.5"), ip("fd00::5")];
        assert!(host.matches_addr(ip("10.0.0.5"), 5432, &resolved));
        assert!(host.matches_addr(ip("::ffff:10.0.0.5"), 5432, &resolved));
        assert!(host.matches_addr(ip("fd00::5"), 5432, &resolved));
        assert!(!host.matches_addr(ip("10.0.0.6"), 5432, &resolved));
        assert!(!host.matches_addr(ip("10.0.0.5"), 5433, &resolved));
        assert!(!host.matches_addr(ip("10.0.0.5"), 5432, none));
    }
}
