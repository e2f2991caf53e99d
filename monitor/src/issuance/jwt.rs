//! Reading the claims of a JWT (e.g. a projected Kubernetes service-account
//! token delivered as a file) for expiry and identity hints.
//!
//! The signature is **never verified**: the claims are used only to label
//! an issuance (who the token names, when it expires), never to grant or
//! deny anything. A forged token can at worst mislabel its own issuance.
//! Encrypted tokens (JWE, five parts) are not JWTs we can read and give
//! `None`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Longest input considered a token (bigger files are not JWTs we care
/// about, and decoding them would be wasted work).
const MAX_TOKEN: usize = 64 * 1024;

/// The claims of a JWT that matter to the monitor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwtClaims {
    /// The header's `alg` (`RS256`, `ES256`, `none`...).
    pub alg: String,
    /// `exp`: expiry.
    pub exp: Option<DateTime<Utc>>,
    /// `iat`: issued at.
    pub iat: Option<DateTime<Utc>>,
    /// `nbf`: not valid before.
    pub nbf: Option<DateTime<Utc>>,
    /// `sub`, e.g. `system:serviceaccount:payments:app`.
    pub sub: Option<String>,
    /// `jti`: the token's id.
    pub jti: Option<String>,
    /// `iss`: the issuer.
    pub iss: Option<String>,
    /// `aud`, a string or an array of strings in the token.
    pub aud: Vec<String>,
    /// `kubernetes.io.namespace`.
    pub kubernetes_namespace: Option<String>,
    /// `kubernetes.io.pod.name` (bound tokens).
    pub kubernetes_pod: Option<String>,
    /// `kubernetes.io.pod.uid` (bound tokens): comparable with a holder's
    /// `pod_uid`.
    pub kubernetes_pod_uid: Option<String>,
    /// `kubernetes.io.serviceaccount.name`.
    pub kubernetes_service_account: Option<String>,
}

impl JwtClaims {
    /// Whether the token has expired at `at` (at or after `exp`); a token
    /// without `exp` never expires.
    pub fn is_expired(&self, at: DateTime<Utc>) -> bool {
        self.exp.is_some_and(|e| at >= e)
    }

    /// Identity metadata for [`crate::issuance::Issuance::identity`]. Keys
    /// (present only when known): `jwt.sub`, `jwt.jti`, `jwt.iss`, `jwt.aud`
    /// (comma-separated), `k8s.namespace`, `k8s.pod`, `k8s.pod_uid`,
    /// `k8s.service_account`.
    pub fn to_identity(&self) -> BTreeMap<String, String> {
        let aud = self.aud.join(",");
        [
            ("jwt.sub", self.sub.as_deref()),
            ("jwt.jti", self.jti.as_deref()),
            ("jwt.iss", self.iss.as_deref()),
            ("jwt.aud", Some(aud.as_str())),
            ("k8s.namespace", self.kubernetes_namespace.as_deref()),
            ("k8s.pod", self.kubernetes_pod.as_deref()),
            ("k8s.pod_uid", self.kubernetes_pod_uid.as_deref()),
            (
                "k8s.service_account",
                self.kubernetes_service_account.as_deref(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| (k.to_string(), v.to_string()))
        })
        .collect()
    }
}

/// Reads the claims of a compact JWS (`header.payload.signature`).
///
/// Surrounding whitespace (a trailing newline in a token file) is ignored.
/// Each part is base64url, unpadded or padded; the header must be a JSON
/// object with a string `alg`, the payload a JSON object. Claims of the
/// wrong type are left out rather than failing the token. Returns `None`
/// for anything else. The signature is not verified (see the module docs).
pub fn parse_jwt(token: &[u8]) -> Option<JwtClaims> {
    let token = token.trim_ascii();
    if token.is_empty() || token.len() > MAX_TOKEN {
        return None;
    }
    let mut parts = token.split(|&b| b == b'.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || header.is_empty() || payload.is_empty() {
        return None;
    }
    // Not decoded, but it must look like base64url ("" for `alg: none`).
    b64url_decode(signature)?;

    let header: Value = serde_json::from_slice(&b64url_decode(header)?).ok()?;
    let alg = header.get("alg")?.as_str()?.to_string();
    let Value::Object(claims) = serde_json::from_slice(&b64url_decode(payload)?).ok()? else {
        return None;
    };

    let k8s = claims.get("kubernetes.io");
    let k8s_str = |path: &str| k8s.and_then(|v| v.pointer(path)).and_then(str_of);
    let aud = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(str_of).collect(),
        _ => Vec::new(),
    };
    Some(JwtClaims {
        alg,
        exp: numeric_date(&claims, "exp"),
        iat: numeric_date(&claims, "iat"),
        nbf: numeric_date(&claims, "nbf"),
        sub: claims.get("sub").and_then(str_of),
        jti: claims.get("jti").and_then(str_of),
        iss: claims.get("iss").and_then(str_of),
        aud,
        kubernetes_namespace: k8s_str("/namespace"),
        kubernetes_pod: k8s_str("/pod/name"),
        kubernetes_pod_uid: k8s_str("/pod/uid"),
        kubernetes_service_account: k8s_str("/serviceaccount/name"),
    })
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// A NumericDate claim: seconds since the epoch, integer or fractional.
fn numeric_date(claims: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    let n = claims.get(key)?.as_number()?;
    if let Some(secs) = n.as_i64() {
        return DateTime::from_timestamp(secs, 0);
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f.abs() > 1e15 {
        return None;
    }
    let secs = f.floor();
    let nanos = ((f - secs) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
    DateTime::from_timestamp(secs as i64, nanos)
}

/// Decodes base64url (RFC 4648 §5), with or without `=` padding.
fn b64url_decode(input: &[u8]) -> Option<Vec<u8>> {
    let unpadded = match input {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        _ => input,
    };
    if input.len() != unpadded.len() && !input.len().is_multiple_of(4) {
        return None; // padding present but wrong
    }
    if unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in unpadded {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// base64url without padding, for building test tokens.
    fn b64url(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(header: &Value, payload: &Value) -> String {
        let sig: Vec<u8> = (0u8..=255).collect();
        format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload.to_string().as_bytes()),
            b64url(&sig)
        )
    }

    fn sa_header() -> Value {
        serde_json::json!({"alg": "RS256", "kid": "Xw3bN0cU7vQe9yL2pR5tK8mJ1hG4fD6sA0zW3xC5vB7"})
    }

    /// A bound, projected service-account token as the kubelet mounts it.
    fn sa_payload() -> Value {
        serde_json::json!({
            "aud": ["https://kubernetes.default.svc.cluster.local", "vault"],
            "exp": 1_795_428_000,
            "iat": 1_795_424_400,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "jti": "5d0f7e3a-9c1b-4a2e-8f6d-3b4c5a6e7f80",
            "kubernetes.io": {
                "namespace": "payments",
                "node": {"name": "node-a", "uid": "0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5"},
                "pod": {"name": "app-7d9f8b6c5-x2k4q", "uid": "8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c"},
                "serviceaccount": {"name": "app", "uid": "2f0e6c1d-8b9a-4c3d-9e8f-7a6b5c4d3e2f"},
                "warnafter": 1_795_428_007
            },
            "nbf": 1_795_424_400,
            "sub": "system:serviceaccount:payments:app"
        })
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    #[test]
    fn service_account_token() {
        let tok = token(&sa_header(), &sa_payload());
        let c = parse_jwt(format!("{tok}\n").as_bytes()).expect("parses");
        assert_eq!(c.alg, "RS256");
        assert_eq!(c.exp, Some(at(1_795_428_000)));
        assert_eq!(c.iat, Some(at(1_795_424_400)));
        assert_eq!(c.nbf, Some(at(1_795_424_400)));
        assert_eq!(c.sub.as_deref(), Some("system:serviceaccount:payments:app"));
        assert_eq!(
            c.jti.as_deref(),
            Some("5d0f7e3a-9c1b-4a2e-8f6d-3b4c5a6e7f80")
        );
        assert_eq!(
            c.iss.as_deref(),
            Some("https://kubernetes.default.svc.cluster.local")
        );
        assert_eq!(
            c.aud,
            vec!["https://kubernetes.default.svc.cluster.local", "vault"]
        );
        assert_eq!(c.kubernetes_namespace.as_deref(), Some("payments"));
        assert_eq!(c.kubernetes_pod.as_deref(), Some("app-7d9f8b6c5-x2k4q"));
        assert_eq!(
            c.kubernetes_pod_uid.as_deref(),
            Some("8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c")
        );
        assert_eq!(c.kubernetes_service_account.as_deref(), Some("app"));
        assert!(!c.is_expired(at(1_795_427_999)));
        assert!(c.is_expired(at(1_795_428_000)));
        let id = c.to_identity();
        assert_eq!(id["jwt.sub"], "system:serviceaccount:payments:app");
        assert_eq!(id["k8s.pod_uid"], "8e2b6a0c-6f7d-4c1e-9b3a-5d4f2e1a0b9c");
        assert_eq!(
            id["jwt.aud"],
            "https://kubernetes.default.svc.cluster.local,vault"
        );
        assert_eq!(id.len(), 8);
    }

    #[test]
    fn expired_legacy_token() {
        // Legacy secret-based token: no exp... and one that has expired.
        let payload = serde_json::json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "payments",
            "sub": "system:serviceaccount:payments:app",
            "aud": "vault",
            "exp": 1_600_000_000
        });
        let c = parse_jwt(token(&sa_header(), &payload).as_bytes()).unwrap();
        assert!(c.is_expired(Utc::now()));
        assert_eq!(c.aud, vec!["vault"]);
        assert_eq!(c.kubernetes_namespace, None);
        let id = c.to_identity();
        assert!(!id.contains_key("k8s.pod"));
    }

    #[test]
    fn padding_whitespace_and_odd_claims() {
        let pad = |s: &str| {
            let mut s = s.to_string();
            while !s.len().is_multiple_of(4) {
                s.push('=');
            }
            s
        };
        let h = b64url(br#"{"alg":"ES256","typ":"JWT"}"#);
        let p = b64url(br#"{"exp":1795428000.75,"iat":"soon","sub":5,"aud":["a",1]}"#);
        let padded = format!("  {}.{}.{}\r\n", pad(&h), pad(&p), pad("c2ln"));
        let c = parse_jwt(padded.as_bytes()).expect("padding is tolerated");
        assert_eq!(c.alg, "ES256");
        assert_eq!(
            c.exp,
            Some(at(1_795_428_000) + chrono::Duration::milliseconds(750))
        );
        assert_eq!(c.iat, None);
        assert_eq!(c.sub, None);
        assert_eq!(c.aud, vec!["a"]);
        // Unsecured token: empty signature.
        assert!(parse_jwt(format!("{h}.{p}.").as_bytes()).is_some());
    }

    #[test]
    fn garbage_is_none() {
        let h = b64url(br#"{"alg":"RS256"}"#);
        let p = b64url(br#"{"sub":"x"}"#);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"   \n".to_vec(),
            b"not a token".to_vec(),
            b"s3cr3t-password-value".to_vec(),
            format!("{h}.{p}").into_bytes(),         // 2 parts
            format!("{h}.{p}.sig.x.y").into_bytes(), // JWE-like
            format!(".{p}.sig").into_bytes(),        // empty header
            format!("{h}..sig").into_bytes(),        // empty payload
            format!("{h}.{p}.s*g").into_bytes(),     // bad signature chars
            format!("{h}.{p}!.sig").into_bytes(),    // bad payload chars
            format!("{}.{p}.sig", b64url(b"{\"typ\":\"JWT\"}")).into_bytes(), // no alg
            format!("{}.{p}.sig", b64url(b"{\"alg\":5}")).into_bytes(),
            format!("{h}.{}.sig", b64url(b"[1,2]")).into_bytes(), // payload not object
            format!("{h}.{}.sig", b64url(b"not json")).into_bytes(),
            format!("{h}.{p}a.sig").into_bytes(), // length % 4 == 1
            format!("{h}.{p}==.sig").into_bytes(), // wrong padding
            vec![0xff, 0xfe, b'.', b'a', b'.', b'b'],
        ];
        for c in cases {
            assert_eq!(parse_jwt(&c), None, "{:?}", String::from_utf8_lossy(&c));
        }
        let huge = format!("{h}.{}.sig", "A".repeat(MAX_TOKEN));
        assert_eq!(parse_jwt(huge.as_bytes()), None);
    }

    #[test]
    fn base64url_round_trip() {
        for len in 0..50u8 {
            let data: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(200))
                .collect();
            assert_eq!(b64url_decode(b64url(&data).as_bytes()), Some(data));
        }
        assert_eq!(b64url_decode(b"-_-_"), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(b64url_decode(b"+/+/"), None);
    }
}
