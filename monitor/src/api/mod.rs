//! The agent's local control API: HTTP/1.1 with JSON bodies over a unix
//! socket (default [`DEFAULT_SOCKET`], mode 0600).
//!
//! [`server`] owns the transport (hyper's HTTP/1.1 server): it enforces the
//! size, time and connection limits, and hands every well-formed request to
//! the agent as an [`ApiRequest`] over an mpsc channel. [`routes`] routes it
//! (the store's queries on the serving thread, the rest through the agent's
//! narrow [`routes::Control`]) and answers through the request's oneshot
//! with an [`ApiResponse`]. [`serve`] is the thread that serves it all. [`client`] is the
//! other end, used by `monitor issue` and `monitor revoke`.
//!
//! Every body the server writes is JSON; errors are `{"error": "..."}`
//! (except hyper's own answers to a head it cannot parse, which have none).
pub mod client;
pub mod routes;
pub mod serve;
pub mod server;

use serde_json::{json, Value};

/// Where `monitor run` listens and the commands connect unless `--api` says
/// otherwise.
pub const DEFAULT_SOCKET: &str = "/run/monitor/api.sock";

/// One request handed to the agent (the agent does the routing and answers).
pub struct ApiRequest {
    /// The request method as sent (a token, case-sensitive: `GET`, `POST`...).
    pub method: String,
    /// The path of the request target, without the query, exactly as sent
    /// (not percent-decoded, so `%2F` stays distinguishable from `/`).
    pub path: String,
    /// The query's `key=value` pairs in order, percent-decoded (`+` is a
    /// space, as in forms); a piece without `=` has an empty value.
    pub query: Vec<(String, String)>,
    /// The body (at most 1 MiB), unparsed: its validity is the agent's concern.
    pub body: Vec<u8>,
    /// Where the answer goes. Dropping it unanswered makes the client see 503.
    pub reply: tokio::sync::oneshot::Sender<ApiResponse>,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl ApiRequest {
    /// The first value of query parameter `key`, if present.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The agent's answer: an HTTP status and a JSON body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status code (200..=599; anything else is sent as 500).
    pub status: u16,
    /// The body, serialised as one line of JSON (not sent for 204 and 304).
    pub body: Value,
}

impl ApiResponse {
    /// `200 OK` with `v`.
    pub fn ok(v: Value) -> Self {
        Self {
            status: 200,
            body: v,
        }
    }

    /// `201 Created` with `v`.
    pub fn created(v: Value) -> Self {
        Self {
            status: 201,
            body: v,
        }
    }

    /// `status` with the body `{"error": msg}`.
    pub fn error(status: u16, msg: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": msg.into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors() {
        let r = ApiResponse::ok(json!({"a": 1}));
        assert_eq!((r.status, r.body), (200, json!({"a": 1})));
        let r = ApiResponse::created(json!([1]));
        assert_eq!((r.status, r.body), (201, json!([1])));
        let r = ApiResponse::error(404, format!("no such endpoint: {}", "/x"));
        assert_eq!(r.status, 404);
        assert_eq!(r.body, json!({"error": "no such endpoint: /x"}));
    }

    #[test]
    fn query_param_and_debug() {
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let req = ApiRequest {
            method: "GET".into(),
            path: "/secrets".into(),
            query: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            body: b"secret bytes".to_vec(),
            reply: tx,
        };
        assert_eq!(req.query_param("a"), Some("1"));
        assert_eq!(req.query_param("b"), None);
        let dbg = format!("{req:?}");
        assert!(
            dbg.contains("body_len: 12") && !dbg.contains("secret bytes"),
            "{dbg}"
        );
    }
}
