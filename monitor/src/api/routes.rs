//! The API's route table: which request is which endpoint, its parameters
//! and body checked here (a bad one answered here, naming what is wrong),
//! then handed to the agent through the narrow [`Control`] interface, or
//! to [`StoreQueries`] for the store's read-only endpoints.
use std::path::PathBuf;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{ApiRequest, ApiResponse};
use crate::{
    issuance::{parse_record, Record},
    query::{filter_of, QueryArgs, QueryFormat, QueryKind},
    store::{timeline::Timeline, writer::StoreSender, Store},
};

/// What the routes need from the agent (the agent implements it; the API
/// knows nothing else of it).
pub trait Control {
    /// `GET /secrets`: the secrets known.
    fn secrets(&self) -> Value;
    /// `GET /watches`: the watched patterns, by id.
    fn watches(&self) -> Vec<(u32, String)>;
    /// `POST /watches`: one more watched pattern (expanded at once); its id.
    fn add_watch(&mut self, pattern: &str) -> anyhow::Result<u32>;
    /// `POST /issuances`: well-formed records applied, all or nothing;
    /// `text` is the body they came from. One answer per record.
    fn issue(&mut self, records: Vec<Record>, text: &str) -> Result<Vec<Value>, IssueRefused>;
    /// Records the API refused before handing them over.
    fn count_bad_records(&mut self, n: u64);
    /// The store's read-only endpoints.
    fn queries(&self) -> StoreQueries;
}

/// Why [`Control::issue`] applied nothing.
#[derive(Debug)]
pub enum IssueRefused {
    /// `new` more secrets would pass the API's per-source cap (`cap`),
    /// `defined` being already defined through it.
    OverCap { defined: u64, new: u64, cap: u64 },
    /// A record the agent would not apply (the message names it).
    Invalid(String),
}

/// One endpoint with its checked input.
#[derive(Debug)]
pub enum Route<'a> {
    /// `POST /issuances`: the records of `text`, one JSON object a line.
    Issue { records: Vec<Record>, text: &'a str },
    /// `GET /secrets`.
    Secrets,
    /// `GET /watches`.
    Watches,
    /// `POST /watches` with `{"pattern": ...}`.
    AddWatch(String),
    /// `GET /alerts`, `/events`, `/timeline/<id>` ([`StoreQueries`]).
    Store,
}

/// A request answered without the agent: the answer, and how many bad
/// records it counts.
#[derive(Debug)]
pub struct Rejected {
    pub response: ApiResponse,
    pub bad_records: u64,
}

impl Rejected {
    fn new(status: u16, msg: impl Into<String>) -> Self {
        Self {
            response: ApiResponse::error(status, msg),
            bad_records: 0,
        }
    }
}

impl<'a> Route<'a> {
    /// The endpoint `req` asks for, or the error answer (unknown path 404,
    /// wrong method 405, a bad body 400 naming the line and field).
    pub fn of(req: &'a ApiRequest) -> Result<Self, Rejected> {
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/issuances") => records(&req.body),
            ("GET", "/secrets") => Ok(Route::Secrets),
            ("GET", "/watches") => Ok(Route::Watches),
            ("POST", "/watches") => serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v["pattern"].as_str().map(str::to_string))
                .map(Route::AddWatch)
                .ok_or_else(|| Rejected::new(400, "body must be {\"pattern\": \"/abs/glob\"}")),
            _ if StoreQueries::wants(req) => Ok(Route::Store),
            (_, "/issuances" | "/secrets" | "/watches" | "/alerts" | "/events") => {
                Err(Rejected::new(405, "method not allowed"))
            }
            _ => Err(Rejected::new(
                404,
                format!("no such endpoint: {}", req.path),
            )),
        }
    }
}

/// One record, or several (one JSON object a line). All or nothing: a bad
/// line rejects the request and names the line and field.
fn records(body: &[u8]) -> Result<Route<'_>, Rejected> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(Rejected::new(400, "body is not UTF-8"));
    };
    let now = Utc::now();
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match parse_record(line, now) {
            Ok(r) => records.push(r),
            Err(e) => {
                return Err(Rejected {
                    response: ApiResponse::error(400, format!("line {}: {e}", i + 1)),
                    bad_records: 1,
                })
            }
        }
    }
    if records.is_empty() {
        return Err(Rejected::new(
            400,
            "empty body: expected an issuance or revocation record",
        ));
    }
    Ok(Route::Issue { records, text })
}

/// One API request on the event loop: routed, answered through its reply.
pub fn answer(agent: &mut impl Control, req: ApiRequest) {
    let resp = match Route::of(&req) {
        Err(r) => {
            if r.bad_records > 0 {
                agent.count_bad_records(r.bad_records);
            }
            r.response
        }
        Ok(Route::Issue { records, text }) => match agent.issue(records, text) {
            Ok(mut done) => ApiResponse::created(if done.len() == 1 {
                done.remove(0)
            } else {
                json!(done)
            }),
            Err(IssueRefused::OverCap { defined, new, cap }) => ApiResponse::error(
                429,
                format!(
                    "the API already defines {defined} secrets: {new} more would pass the \
                     per-source cap of {cap}"
                ),
            ),
            Err(IssueRefused::Invalid(e)) => ApiResponse::error(400, e),
        },
        Ok(Route::Secrets) => ApiResponse::ok(agent.secrets()),
        Ok(Route::Watches) => ApiResponse::ok(json!(agent
            .watches()
            .into_iter()
            .map(|(id, p)| json!({"id": id, "pattern": p}))
            .collect::<Vec<_>>())),
        Ok(Route::AddWatch(p)) => match agent.add_watch(&p) {
            Ok(id) => ApiResponse::created(json!({"id": id, "pattern": p})),
            Err(e) => ApiResponse::error(400, format!("{e:#}")),
        },
        Ok(Route::Store) => agent.queries().answer(&req),
    };
    let _ = req.reply.send(resp);
}

/// The store's read-only endpoints (`GET /alerts`, `GET /events`,
/// `GET /timeline/<id>`), answered from the database itself on the serving
/// thread, never on the event loop: a saturated loop does not hold up a
/// responder's query (and a long query does not hold up the events).
#[derive(Clone)]
pub struct StoreQueries {
    db: PathBuf,
    /// To wait for what was queued before the request (read your writes).
    store: StoreSender,
}

impl StoreQueries {
    /// Queries of the database at `db`, written through `store`.
    pub fn new(db: PathBuf, store: StoreSender) -> Self {
        Self { db, store }
    }

    /// Is this request one of the store's?
    pub fn wants(req: &ApiRequest) -> bool {
        req.method == "GET"
            && (matches!(req.path.as_str(), "/alerts" | "/events")
                || req.path.starts_with("/timeline/"))
    }

    /// The answer to a request [`StoreQueries::wants`] (blocks: SQLite).
    pub fn answer(&self, req: &ApiRequest) -> ApiResponse {
        match req.path.as_str() {
            "/alerts" => self.query(QueryKind::Alerts, req),
            "/events" => self.query(QueryKind::Events, req),
            p => match p.strip_prefix("/timeline/") {
                Some(id) => self.timeline(id, req),
                None => ApiResponse::error(404, format!("no such endpoint: {}", req.path)),
            },
        }
    }

    /// `GET /alerts` and `GET /events`: the query flags as parameters
    /// (`secret`, `rule`, `pid`, `namespace`, `pod`, `since`, `until`,
    /// `limit`), paginated with
    /// `after` (the `next` of the previous page).
    pub fn query(&self, kind: QueryKind, req: &ApiRequest) -> ApiResponse {
        self.store.flush();
        let q = |k: &str| req.query_param(k).map(str::to_string);
        let args = QueryArgs {
            db: Some(self.db.clone()),
            kind,
            secret: q("secret"),
            rule: q("rule"),
            pid: match q("pid").map(|p| p.parse::<u32>()) {
                Some(Ok(p)) => Some(p),
                Some(Err(_)) => return ApiResponse::error(400, "pid must be a number"),
                None => None,
            },
            namespace: q("namespace"),
            pod: q("pod"),
            since: q("since"),
            until: q("until"),
            limit: match q("limit").map(|l| l.parse::<usize>()) {
                Some(Ok(l)) => l.min(10_000),
                Some(Err(_)) => return ApiResponse::error(400, "limit must be a number"),
                None => 100,
            },
            format: QueryFormat::Json,
        };
        let mut f = match filter_of(&args, Utc::now()) {
            Ok(f) => f,
            Err(e) => return ApiResponse::error(400, format!("{e:#}")),
        };
        // Pages run oldest first from the cursor; `next` is set only when
        // more remain (the filter asks for one row beyond the limit).
        f.after_id = match q("after").map(|a| a.parse::<u64>()) {
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => return ApiResponse::error(400, "after must be a number"),
            None => Some(0),
        };
        let limit = args.limit;
        let store = match Store::open_readonly(&self.db) {
            Ok(s) => s,
            Err(e) => return ApiResponse::error(500, format!("{e:#}")),
        };
        let page = match kind {
            QueryKind::Alerts => store.query_alert_rows(&f).map(|rows| {
                rows.into_iter()
                    .map(|r| (r.id, json!(r.alert)))
                    .collect::<Vec<_>>()
            }),
            QueryKind::Events => store.query_events(&f).map(|evs| {
                evs.into_iter()
                    .map(|e| (e.id, json!(e)))
                    .collect::<Vec<_>>()
            }),
        }
        .map(|mut rows| {
            let more = limit > 0 && rows.len() > limit;
            if more {
                rows.truncate(limit);
            }
            let next = if more {
                rows.last().map(|(id, _)| *id)
            } else {
                None
            };
            (rows.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), next)
        });
        match page {
            Ok((items, next)) => ApiResponse::ok(json!({"items": items, "next": next})),
            Err(e) => ApiResponse::error(500, format!("{e:#}")),
        }
    }

    /// `GET /timeline/<secret_id>[?format=json|text|dot]`.
    pub fn timeline(&self, secret_id: &str, req: &ApiRequest) -> ApiResponse {
        self.store.flush();
        let store = match Store::open_readonly(&self.db) {
            Ok(s) => s,
            Err(e) => return ApiResponse::error(500, format!("{e:#}")),
        };
        let t = match Timeline::build(&store, secret_id) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => {
                return ApiResponse::error(404, format!("nothing known about secret {secret_id:?}"))
            }
            Err(e) => return ApiResponse::error(500, format!("{e:#}")),
        };
        match req.query_param("format").unwrap_or("json") {
            "json" => match serde_json::from_str(&t.render_json()) {
                Ok(v) => ApiResponse::ok(v),
                Err(e) => ApiResponse::error(500, e.to_string()),
            },
            "text" => ApiResponse::ok(
                json!({"secret_id": secret_id, "format": "text", "text": t.render_text()}),
            ),
            "dot" => ApiResponse::ok(
                json!({"secret_id": secret_id, "format": "dot", "text": t.render_dot()}),
            ),
            other => ApiResponse::error(
                400,
                format!("format must be json, text or dot, not {other:?}"),
            ),
        }
    }
}

/// Requests from the API server: the store's queries answered here (on a
/// blocking thread of the serving runtime), the rest handed to the event
/// loop. Ends when the event loop is gone (the server then stops too).
pub async fn route_api(
    mut front: mpsc::Receiver<ApiRequest>,
    to_loop: mpsc::Sender<ApiRequest>,
    queries: StoreQueries,
) {
    loop {
        let req = tokio::select! {
            _ = to_loop.closed() => return,
            r = front.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        if StoreQueries::wants(&req) {
            let q = queries.clone();
            tokio::task::spawn_blocking(move || {
                let resp = q.answer(&req);
                let _ = req.reply.send(resp);
            });
        } else {
            // Waits for room in the loop's backlog without holding up the
            // queries behind it.
            let tx = to_loop.clone();
            tokio::spawn(async move {
                let _ = tx.send(req).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testutil, writer::StoreWriter};

    /// An issuance and a revocation, one a line.
    const TWO_RECORDS: &str = concat!(
        r#"{"secret_id":"db-prod","issued_at":"2026-11-22T10:00:00Z","ttl_seconds":300,"#,
        r#""holder":{"pid":4242},"delivery":[{"file":"/vault/secrets/db"}]}"#,
        "\n",
        r#"{"revoke":"db-prod"}"#,
        "\n"
    );

    fn request(method: &str, target: &str, body: &[u8]) -> ApiRequest {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        ApiRequest {
            method: method.into(),
            path: path.into(),
            query: query
                .split('&')
                .filter(|q| !q.is_empty())
                .map(|q| {
                    let (k, v) = q.split_once('=').unwrap_or((q, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            body: body.to_vec(),
            reply: tokio::sync::oneshot::channel().0,
        }
    }

    /// The error answer (status, message, bad records) to a request the
    /// route table rejects; panics if it routes it.
    fn rejected(method: &str, target: &str, body: &[u8]) -> (u16, String, u64) {
        let req = request(method, target, body);
        match Route::of(&req) {
            Ok(r) => panic!("{method} {target} routed to {r:?}"),
            Err(r) => (
                r.response.status,
                r.response.body["error"].as_str().unwrap().to_string(),
                r.bad_records,
            ),
        }
    }

    #[test]
    fn unknown_paths_are_404_naming_the_path() {
        for (m, p) in [
            ("GET", "/nope"),
            ("GET", "/"),
            ("GET", "/secrets/x"),
            ("POST", "/timeline/db-prod"),
        ] {
            assert_eq!(
                rejected(m, p, b""),
                (404, format!("no such endpoint: {p}"), 0),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn a_known_path_with_the_wrong_method_is_405() {
        for (m, p) in [
            ("GET", "/issuances"),
            ("DELETE", "/secrets"),
            ("PUT", "/watches"),
            ("POST", "/alerts"),
            ("get", "/events"),
        ] {
            assert_eq!(
                rejected(m, p, b""),
                (405, "method not allowed".to_string(), 0),
                "{m} {p}"
            );
        }
    }

    #[test]
    fn known_endpoints_route() {
        let route = |m: &str, p: &str, body: &[u8]| {
            let req = request(m, p, body);
            format!("{:?}", Route::of(&req).unwrap())
        };
        assert_eq!(route("GET", "/secrets", b""), "Secrets");
        assert_eq!(route("GET", "/watches", b""), "Watches");
        assert_eq!(
            route("POST", "/watches", br#"{"pattern": "/etc/app/*.key"}"#),
            "AddWatch(\"/etc/app/*.key\")"
        );
        for p in ["/alerts?pid=1", "/events", "/timeline/db-prod"] {
            assert_eq!(route("GET", p, b""), "Store", "{p}");
        }
        let req = request("POST", "/issuances", TWO_RECORDS.as_bytes());
        match Route::of(&req).unwrap() {
            Route::Issue { records, text } => {
                assert_eq!(records.len(), 2);
                assert_eq!(text, TWO_RECORDS);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn a_bad_records_body_is_400_naming_the_line_and_counted() {
        let good = TWO_RECORDS.lines().next().unwrap();
        // The bad line is the third (blank lines count, are skipped).
        let body = format!("{good}\n\n{{\"secret_id\": 7}}\n");
        let (status, msg, bad) = rejected("POST", "/issuances", body.as_bytes());
        assert_eq!((status, bad), (400, 1));
        assert!(msg.starts_with("line 3: "), "{msg}");
        let (status, msg, bad) = rejected("POST", "/issuances", b"{not json\n");
        assert_eq!((status, bad), (400, 1));
        assert!(msg.starts_with("line 1: "), "{msg}");
        assert_eq!(
            rejected("POST", "/issuances", b"\n  \n"),
            (
                400,
                "empty body: expected an issuance or revocation record".to_string(),
                0
            )
        );
        assert_eq!(
            rejected("POST", "/issuances", b"\xff\xfe"),
            (400, "body is not UTF-8".to_string(), 0)
        );
    }

    #[test]
    fn a_bad_watch_body_is_400_showing_the_shape() {
        for body in [&b""[..], b"[]", br#"{"pattern": 3}"#, b"/etc/x"] {
            assert_eq!(
                rejected("POST", "/watches", body),
                (
                    400,
                    "body must be {\"pattern\": \"/abs/glob\"}".to_string(),
                    0
                )
            );
        }
    }

    /// The store's endpoints over a real store (the scenario's), written
    /// through a real writer.
    fn queries(dir: &testutil::TempDir) -> (StoreQueries, StoreWriter) {
        let (store, _) = testutil::scenario_store(&dir.db());
        let writer = StoreWriter::spawn(store, 16);
        (StoreQueries::new(dir.db(), writer.sender()), writer)
    }

    fn ask(q: &StoreQueries, target: &str) -> ApiResponse {
        let req = request("GET", target, b"");
        assert!(StoreQueries::wants(&req), "{target}");
        q.answer(&req)
    }

    #[test]
    fn a_bad_query_parameter_is_400_naming_it() {
        let dir = testutil::TempDir::new("routes-params");
        let (q, _w) = queries(&dir);
        for (target, msg) in [
            ("/alerts?pid=abc", "pid must be a number"),
            ("/events?pid=-1", "pid must be a number"),
            ("/alerts?limit=ten", "limit must be a number"),
            ("/events?after=x", "after must be a number"),
        ] {
            let r = ask(&q, target);
            assert_eq!(
                (r.status, r.body),
                (400, json!({ "error": msg })),
                "{target}"
            );
        }
        let r = ask(&q, "/alerts?since=yesterday");
        assert_eq!(r.status, 400);
        let msg = r.body["error"].as_str().unwrap();
        assert!(
            msg.starts_with("--since: invalid time \"yesterday\""),
            "{msg}"
        );
        let r = ask(&q, "/timeline/db-prod?format=xml");
        assert_eq!(
            (r.status, r.body),
            (
                400,
                json!({"error": "format must be json, text or dot, not \"xml\""})
            )
        );
    }

    #[test]
    fn store_queries_page_and_find_nothing_with_404() {
        let dir = testutil::TempDir::new("routes-store");
        let (q, _w) = queries(&dir);
        let all = ask(&q, "/alerts?limit=0");
        assert_eq!(all.status, 200, "{}", all.body);
        let n = all.body["items"].as_array().unwrap().len();
        assert!(n >= 2, "{}", all.body);
        assert_eq!(all.body["next"], Value::Null);
        // Page by page, one alert each, the same alerts in the same order.
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let r = ask(&q, &format!("/alerts?limit=1&after={after}"));
            assert_eq!(r.status, 200, "{}", r.body);
            paged.extend(r.body["items"].as_array().unwrap().iter().cloned());
            match r.body["next"].as_u64() {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(&paged, all.body["items"].as_array().unwrap());
        let r = ask(&q, "/timeline/db-prod?format=text");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["format"], "text");
        let r = ask(&q, "/timeline/no-such-secret");
        assert_eq!(
            (r.status, r.body),
            (
                404,
                json!({"error": "nothing known about secret \"no-such-secret\""})
            )
        );
    }
}
