//! The server half of the control API: HTTP/1.1 (hyper) on a unix socket.
//!
//! [`bind`] creates the socket (mode 0600, refusing to steal it from a live
//! agent); [`serve`] accepts connections, serves each with hyper's HTTP/1
//! connection and hands every request to the agent as an [`ApiRequest`],
//! then writes the agent's [`ApiResponse`] back as `application/json`.
//!
//! Limits (hyper parses; keep-alive, pipelining, chunked bodies, HTTP/1.0
//! and `Expect: 100-continue` are hyper's):
//! - a request head of at most [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`]
//!   fields (else hyper answers 431), received within [`READ_TIMEOUT`]
//!   (else hyper closes the connection; an idle keep-alive connection too);
//!   a head hyper cannot parse gets hyper's 400;
//! - a body of at most [`MAX_BODY_BYTES`] (else 413), received within
//!   [`READ_TIMEOUT`] (else 408);
//! - at most [`MAX_CONNECTIONS`] connections, and at most
//!   [`MAX_CONNECTIONS_PER_PEER`] of them from one process (more are
//!   answered 503, without taking a slot of the global cap);
//! - the agent must answer within [`AGENT_TIMEOUT`] (else 504); a dropped
//!   answer is a 503; a response write stalled for [`WRITE_TIMEOUT`] ends
//!   the connection.
//!
//! Every error the server answers itself is `{"error": "..."}` (those of
//! hyper's own parser excepted: they have no body) and closes the
//! connection.
use std::{
    convert::Infallible,
    future::Future,
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    task::{ready, Context as TaskContext, Poll},
    time::Duration,
};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
    time::{timeout, Sleep},
};

use super::{ApiRequest, ApiResponse};
use crate::peers::PeerSlots;

/// Largest request head (request line, headers and the blank line), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// Time allowed to receive a request head (an idle keep-alive connection is
/// closed after it too), and then its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a response write may stay blocked (the client not reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the agent has to answer one request before the client gets 504.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one peer, a process (its pid, from
/// `SO_PEERCRED` when it connected); more are answered 503 and closed, so
/// a client holding slow connections leaves the other clients most of the
/// [`MAX_CONNECTIONS`]. The socket is 0600, so every client runs as the
/// agent's user (root): keyed by uid, they would all be one peer.
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// How long [`bind`] waits for a possible live agent to accept.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// After an error answer, how long and how much unread input is discarded
/// before closing, so that the client gets to read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * MAX_BODY_BYTES;

/// Creates the API socket at `path`: the parent directory is created (mode
/// 0700) if missing; a leftover socket file nobody answers on is replaced;
/// the socket is bound and made 0600.
///
/// The socket is bound inside a private (0700) directory, chmod'ed, then
/// hard-linked into place, so it is never reachable with looser permissions.
///
/// Errors: "another agent is already listening on PATH" if a live agent
/// answers there; refusing to replace anything that is not a socket; the
/// path is too long for a unix socket; any I/O error, naming the path.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let len = path.as_os_str().len();
    if len == 0 {
        bail!("the API socket path is empty");
    }
    if len > MAX_SOCKET_PATH {
        bail!(
            "the API socket path {} is too long ({len} bytes; a unix socket path has at most {MAX_SOCKET_PATH})",
            path.display()
        );
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot chmod {}", parent.display()))?;
    }
    clear_stale(path).await?;
    let std_listener = bind_private(path, &parent)?;
    std_listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot set up {}", path.display()))?;
    UnixListener::from_std(std_listener)
        .with_context(|| format!("cannot set up {}", path.display()))
}

/// Removes `path` if it is a socket nobody listens on; fails if somebody does
/// or if it is not a socket.
async fn clear_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "refusing to replace {}: it exists and is not a socket",
            path.display()
        );
    }
    match timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // Connected, or a listener too busy to take us: it is alive.
        Ok(Ok(_)) | Err(_) => already_listening(path),
        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => already_listening(path),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e)
                    .with_context(|| format!("cannot remove the stale socket {}", path.display())),
            }
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(e).with_context(|| {
            format!(
                "cannot tell whether an agent is listening on {}",
                path.display()
            )
        }),
    }
}

fn already_listening(path: &Path) -> anyhow::Result<()> {
    bail!("another agent is already listening on {}", path.display())
}

/// Removes the private bind directory (and the temporary name) on drop.
struct BindDir {
    dir: PathBuf,
    sock: PathBuf,
}

impl Drop for BindDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Binds at `path` with mode 0600, never exposing a looser mode.
fn bind_private(path: &Path, parent: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = parent.join(format!(
        ".monitor-bind-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let sock = dir.join("s");
    let mode_0600 = || std::fs::Permissions::from_mode(0o600);
    if sock.as_os_str().len() > MAX_SOCKET_PATH {
        // No room for the detour: bind in place and chmod straight away.
        let l = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("cannot bind {}", path.display()))?;
        std::fs::set_permissions(path, mode_0600())
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        return Ok(l);
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let guard = BindDir { dir, sock };
    let l = std::os::unix::net::UnixListener::bind(&guard.sock)
        .with_context(|| format!("cannot bind {}", guard.sock.display()))?;
    std::fs::set_permissions(&guard.sock, mode_0600())
        .with_context(|| format!("cannot chmod {}", guard.sock.display()))?;
    match std::fs::hard_link(&guard.sock, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => already_listening(path)?,
        // A filesystem without hard links: move it instead.
        Err(_) => std::fs::rename(&guard.sock, path)
            .with_context(|| format!("cannot bind {}", path.display()))?,
    }
    Ok(l)
}

/// The limits one server runs with (tests shrink them).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_head: usize,
    max_body: usize,
    max_headers: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    agent_timeout: Duration,
    max_connections: usize,
    max_per_peer: usize,
}

const LIMITS: Limits = Limits {
    max_head: MAX_HEAD_BYTES,
    max_body: MAX_BODY_BYTES,
    max_headers: MAX_HEADERS,
    read_timeout: READ_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    agent_timeout: AGENT_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
    max_per_peer: MAX_CONNECTIONS_PER_PEER,
};

/// Accepts connections until the agent drops its receiver, one task per
/// connection; every request goes to the agent through `tx`.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<ApiRequest>) {
    serve_with(listener, tx, LIMITS).await
}

async fn serve_with(listener: UnixListener, tx: mpsc::Sender<ApiRequest>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = PeerSlots::new(limits.max_per_peer);
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                // Over a limit: the connection's request is answered 503.
                // The peer's cap first: a peer over it takes no global slot.
                let held = peers
                    .try_take(Peer::of(&stream))
                    .ok_or(Busy::Peer)
                    .and_then(|peer| {
                        let global = slots.clone().try_acquire_owned();
                        global.map(|g| (peer, g)).map_err(|_| Busy::All)
                    });
                let tx = tx.clone();
                tokio::spawn(async move {
                    let busy = held.as_ref().err().copied();
                    serve_connection(stream, tx, limits, busy).await;
                    drop(held);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!("monitor: api: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Who a connection comes from, for [`MAX_CONNECTIONS_PER_PEER`]: the
/// connecting process (pid); `Unknown` (one shared peer) if the kernel
/// gives no pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Peer {
    Pid(i32),
    Unknown,
}

impl Peer {
    fn of(stream: &UnixStream) -> Peer {
        match stream.peer_cred().ok().and_then(|c| c.pid()) {
            Some(pid) => Peer::Pid(pid),
            None => Peer::Unknown,
        }
    }
}

/// Which cap a connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// [`MAX_CONNECTIONS`].
    All,
    /// [`MAX_CONNECTIONS_PER_PEER`].
    Peer,
}

/// Serves one connection with hyper (its requests answered 503 if `busy`),
/// then closes it gracefully: the write side first, then a bounded drain of
/// whatever the client still sends, so that it reads the answer rather than
/// a reset.
async fn serve_connection(
    stream: UnixStream,
    tx: mpsc::Sender<ApiRequest>,
    limits: Limits,
    busy: Option<Busy>,
) {
    let mut io = WriteTimeout {
        stream,
        limit: limits.write_timeout,
        stalled: None,
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let resp = match busy {
                Some(Busy::All) => {
                    let msg = format!("too many connections (at most {})", limits.max_connections);
                    respond(ApiResponse::error(503, msg), true)
                }
                Some(Busy::Peer) => {
                    let msg = format!(
                        "too many connections from this process (at most {})",
                        limits.max_per_peer
                    );
                    respond(ApiResponse::error(503, msg), true)
                }
                None => answer(req, &tx, limits).await,
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = http1::Builder::new()
        .keep_alive(busy.is_none())
        .title_case_headers(true)
        .max_buf_size(limits.max_head.max(8192))
        .max_headers(limits.max_headers)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .serve_connection(TokioIo::new(&mut io), service)
        .await;
    let mut stream = io.stream;
    let _ = timeout(limits.write_timeout, stream.shutdown()).await;
    let _ = timeout(LINGER_TIME, async {
        let mut sink = [0u8; 8192];
        let mut seen = 0usize;
        while seen < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    })
    .await;
}

/// Hands one request to the agent and returns its answer, or the server's
/// own error answer (which closes the connection).
async fn answer(
    req: Request<Incoming>,
    tx: &mpsc::Sender<ApiRequest>,
    limits: Limits,
) -> Response<Full<Bytes>> {
    let refuse = |status: u16, msg: String| respond(ApiResponse::error(status, msg), true);
    let (parts, body) = req.into_parts();
    let uri = &parts.uri;
    if uri.authority().is_some() || !uri.path().starts_with('/') {
        return refuse(
            400,
            format!("request target {uri} must be an absolute path like /issuances"),
        );
    }
    let query = match parse_target(uri.path(), uri.query()) {
        Ok(q) => q,
        Err(msg) => return refuse(400, msg),
    };
    let too_large = |n: String| {
        refuse(
            413,
            format!(
                "request body too large ({n} bytes; at most {})",
                limits.max_body
            ),
        )
    };
    let announced = hyper::body::Body::size_hint(&body).lower();
    if announced > limits.max_body as u64 {
        return too_large(announced.to_string());
    }
    let body = match timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes().to_vec(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return too_large(format!("more than {}", limits.max_body))
        }
        Ok(Err(e)) => return refuse(400, format!("reading the request body failed: {e}")),
        Err(_) => {
            let secs = limits.read_timeout.as_secs_f64();
            return refuse(
                408,
                format!("timed out reading the request body ({secs} s)"),
            );
        }
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let api_req = ApiRequest {
        method: parts.method.as_str().to_string(),
        // Checked by hyper: visible ASCII, passed on as sent.
        path: uri.path().to_string(),
        query,
        body,
        reply: reply_tx,
    };
    let answer = timeout(limits.agent_timeout, async {
        if tx.send(api_req).await.is_err() {
            return Err("the agent is shutting down");
        }
        reply_rx
            .await
            .map_err(|_| "the agent dropped the request without answering")
    })
    .await;
    match answer {
        Ok(Ok(r)) => respond(r, false),
        Ok(Err(msg)) => respond(ApiResponse::error(503, msg), tx.is_closed()),
        Err(_) => {
            let secs = limits.agent_timeout.as_secs_f64();
            refuse(504, format!("the agent did not answer within {secs} s"))
        }
    }
}

/// Checks the path's escapes and decodes the query's `key=value` pairs.
fn parse_target(path: &str, query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    if percent_decode(path.as_bytes(), false).is_none() {
        return Err(format!("malformed percent-encoding in path {path:?}"));
    }
    let mut pairs = Vec::new();
    for piece in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let decode =
            |s: &str| percent_decode(s.as_bytes(), true).and_then(|d| String::from_utf8(d).ok());
        let (Some(k), Some(v)) = (decode(k), decode(v)) else {
            return Err(format!(
                "malformed query parameter {piece:?}: bad percent-encoding or not UTF-8"
            ));
        };
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes (and `+` as a space if `plus`); `None` if an escape
/// is malformed.
fn percent_decode(s: &[u8], plus: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The HTTP answer for `resp`: its body as one line of JSON (none for 204
/// and 304); a status outside 200..=599 becomes a 500 naming it.
fn respond(resp: ApiResponse, close: bool) -> Response<Full<Bytes>> {
    let resp = if (200..=599).contains(&resp.status) {
        resp
    } else {
        let msg = format!("the agent answered with an invalid status {}", resp.status);
        ApiResponse::error(500, msg)
    };
    let no_body = matches!(resp.status, 204 | 304);
    let body = if no_body {
        Vec::new()
    } else {
        let mut b = serde_json::to_vec(&resp.body)
            .unwrap_or_else(|_| br#"{"error":"unserialisable answer"}"#.to_vec());
        b.push(b'\n');
        b
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !no_body {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The connection's stream, failing a write that stays blocked for `limit`
/// (a client that does not read its answers).
struct WriteTimeout {
    stream: UnixStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteTimeout {
    fn poll_timed<T>(
        &mut self,
        cx: &mut TaskContext<'_>,
        op: impl FnOnce(Pin<&mut UnixStream>, &mut TaskContext<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(r) = op(Pin::new(&mut self.stream), cx) {
            self.stalled = None;
            return Poll::Ready(r);
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {} s", limit.as_secs_f64()),
        )))
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_timed(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_timed(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Helpers shared by the API tests: temp dirs, a fake agent, raw exchanges.
#[cfg(test)]
pub(super) mod test_support {
    use std::time::Duration;

    use serde_json::{json, Value};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::UnixStream,
        sync::mpsc,
    };

    use crate::api::{ApiRequest, ApiResponse};

    pub use crate::testutil::TempDir;

    /// A fresh [`TempDir`].
    pub fn temp_dir(tag: &str) -> TempDir {
        TempDir::new(&format!("api-{tag}"))
    }

    /// A fake agent: echoes every request as
    /// `{"method","path","query","body"}` (body parsed as JSON if it is,
    /// else as a string). `/status/N` answers with status N; `/drop` drops
    /// the reply; `/hang` keeps it unanswered for 5 s;
    /// `/issuances` answers 400 if the body has `"bad"`, else 201.
    pub fn fake_agent() -> mpsc::Sender<ApiRequest> {
        let (tx, mut rx) = mpsc::channel::<ApiRequest>(16);
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let body: Value = serde_json::from_slice(&req.body)
                    .unwrap_or_else(|_| json!(String::from_utf8_lossy(&req.body)));
                let echo = json!({
                    "method": req.method, "path": req.path,
                    "query": req.query, "body": body,
                });
                if req.path == "/drop" {
                    drop(req.reply);
                    continue;
                }
                if req.path == "/hang" {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        let _ = req.reply.send(ApiResponse::ok(json!(null)));
                    });
                    continue;
                }
                let resp = if let Some(code) = req.path.strip_prefix("/status/") {
                    ApiResponse {
                        status: code.parse().unwrap_or(500),
                        body: echo,
                    }
                } else if req.path == "/issuances" {
                    if body.get("bad").is_some() {
                        ApiResponse::error(400, "line 1: field `bad` is not allowed")
                    } else {
                        ApiResponse::created(json!({"accepted": body}))
                    }
                } else {
                    ApiResponse::ok(echo)
                };
                let _ = req.reply.send(resp);
            }
        });
        tx
    }

    /// Writes `bytes`, half-closes, and returns everything the server sent.
    pub async fn raw(sock: &std::path::Path, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(sock).await.unwrap();
        // The server may close early (that is the point of some tests).
        let _ = s.write_all(bytes).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Reads one response (head + Content-Length body) off `s`.
    pub async fn read_one(s: &mut UnixStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "eof in head");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf.clone()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        buf.extend_from_slice(&body);
        String::from_utf8(buf).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::test_support::{fake_agent, raw, read_one, temp_dir, TempDir};
    use super::*;
    use crate::api::client::request;

    /// Binds and serves with the fake agent; returns the directory (keep it
    /// alive) and the socket path.
    async fn start(tag: &str, limits: Limits) -> (TempDir, PathBuf) {
        let dir = temp_dir(tag);
        let sock = dir.join("api.sock");
        let l = bind(&sock).await.unwrap();
        tokio::spawn(serve_with(l, fake_agent(), limits));
        (dir, sock)
    }

    fn status_line(resp: &str) -> &str {
        resp.lines().next().unwrap_or("")
    }

    fn body_of(resp: &str) -> serde_json::Value {
        let (_, body) = resp.split_once("\r\n\r\n").expect("no head end");
        serde_json::from_str(body).unwrap()
    }

    #[tokio::test]
    async fn round_trip_get_post_query_and_status() {
        let (_dir, sock) = start("rt", LIMITS).await;
        let (status, v) = request(&sock, "GET", "/status/418?a%20b=c%2Bd&x=1+2&flag", None)
            .await
            .unwrap();
        assert_eq!(status, 418);
        assert_eq!(
            v,
            json!({"method": "GET", "path": "/status/418",
                   "query": [["a b", "c+d"], ["x", "1 2"], ["flag", ""]], "body": ""})
        );
        let body = json!({"secret_id": "db-prod", "nested": {"n": [1, 2, 3]}});
        let (status, v) = request(&sock, "POST", "/things?k=v%2Fw", Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/things");
        assert_eq!(v["query"], json!([["k", "v/w"]]));
        assert_eq!(v["body"], body);
        for code in [201, 204, 400, 404, 405, 500, 299] {
            let (status, v) = request(&sock, "DELETE", &format!("/status/{code}"), None)
                .await
                .unwrap();
            assert_eq!(status, code);
            if code == 204 {
                assert_eq!(v, serde_json::Value::Null);
            } else {
                assert_eq!(v["method"], "DELETE");
            }
        }
        // A status no HTTP answer may have becomes a 500 naming it.
        let (status, v) = request(&sock, "GET", "/status/42", None).await.unwrap();
        assert_eq!(status, 500);
        assert_eq!(
            v,
            json!({"error": "the agent answered with an invalid status 42"})
        );
        // A path is passed on as sent, not decoded.
        let (_, v) = request(&sock, "GET", "/a%2Fb", None).await.unwrap();
        assert_eq!(v["path"], "/a%2Fb");
        // The answer's head.
        let resp = raw(
            &sock,
            b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        for h in [
            "Content-Type: application/json\r\n",
            "Cache-Control: no-store\r\n",
            "Date: ",
        ] {
            assert!(resp.contains(h), "{h:?} missing: {resp}");
        }
        assert!(resp.ends_with("}\n"), "{resp}");
    }

    #[tokio::test]
    async fn socket_is_0600_and_parent_is_created_0700() {
        let dir = temp_dir("mode");
        let sock = dir.join("run/monitor/api.sock");
        let _l = bind(&sock).await.unwrap();
        let meta = std::fs::symlink_metadata(&sock).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let parent = std::fs::metadata(sock.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        // The private bind directory is gone.
        let left: Vec<_> = std::fs::read_dir(sock.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("api.sock")]);
    }

    #[tokio::test]
    async fn second_bind_fails_while_the_first_serves() {
        let (_dir, sock) = start("twice", LIMITS).await;
        let err = bind(&sock).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("another agent is already listening on {}", sock.display())
        );
        // The first one is unharmed.
        let (status, _) = request(&sock, "GET", "/x", None).await.unwrap();
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_other_files_are_not() {
        let dir = temp_dir("stale");
        let sock = dir.join("api.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert!(sock.exists(), "a dead socket file is left behind");
        let l = bind(&sock).await.unwrap();
        tokio::spawn(serve(l, fake_agent()));
        let (status, _) = request(&sock, "GET", "/x", None).await.unwrap();
        assert_eq!(status, 200);

        let file = dir.join("plain");
        std::fs::write(&file, b"keep me").unwrap();
        let err = bind(&file).await.unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let err = bind(&long).await.unwrap_err().to_string();
        assert!(err.contains("too long"), "{err}");
    }

    #[tokio::test]
    async fn malformed_requests_are_refused_and_serving_goes_on() {
        let (_dir, sock) = start("bad", LIMITS).await;
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        let chunk = "x".repeat(64 * 1024);
        let big_chunked = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
            format!("{:x}\r\n{chunk}\r\n", chunk.len()).repeat(MAX_BODY_BYTES / chunk.len() + 1)
        );
        // Refused by hyper's parser: its status, no body.
        let by_hyper: Vec<(&str, Vec<u8>, &str)> = vec![
            ("garbage", b"HELLO THERE\r\n\r\n".to_vec(), "400 Bad Request"),
            ("binary", b"\x00\x01\x02\xff\r\n\r\n".to_vec(), "400 Bad Request"),
            ("bad method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request"),
            ("te+cl", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}".to_vec(), "400 Bad Request"),
            ("header too large", big_header.into_bytes(), "431 Request Header Fields Too Large"),
            ("too many headers", many_headers.into_bytes(), "431 Request Header Fields Too Large"),
            ("bad length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), "400 Bad Request"),
            ("two lengths", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), "400 Bad Request"),
            ("bad version", b"GET / HTTQ/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request"),
            ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request"),
            ("space colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(), "400 Bad Request"),
            ("no colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(), "400 Bad Request"),
            ("ctl in value", b"GET / HTTP/1.1\r\nHost: x\x01y\r\n\r\n".to_vec(), "400 Bad Request"),
        ];
        for (name, bytes, want_status) in by_hyper {
            let resp = raw(&sock, &bytes).await;
            assert_eq!(
                status_line(&resp),
                format!("HTTP/1.1 {want_status}"),
                "{name}: {resp}"
            );
            let (status, _) = request(&sock, "GET", "/still", None).await.unwrap();
            assert_eq!(status, 200, "after {name}");
        }
        // Refused by the server: its status and `{"error": ...}`.
        let by_server: Vec<(&str, Vec<u8>, &str, &str)> = vec![
            (
                "body too large",
                format!(
                    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY_BYTES + 1
                )
                .into_bytes(),
                "413 Payload Too Large",
                "request body too large (1048577 bytes; at most 1048576)",
            ),
            (
                "chunked too large",
                big_chunked.into_bytes(),
                "413 Payload Too Large",
                "request body too large (more than 1048576 bytes; at most 1048576)",
            ),
            (
                "absolute form",
                b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "400 Bad Request",
                "absolute path",
            ),
            (
                "bad escape",
                b"GET /x?a=%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "400 Bad Request",
                "percent-encoding",
            ),
            (
                "bad path escape",
                b"GET /x%4 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "400 Bad Request",
                "malformed percent-encoding in path",
            ),
            (
                "not utf-8",
                b"GET /x?a=%ff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "400 Bad Request",
                "not UTF-8",
            ),
            (
                "short body",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
                "400 Bad Request",
                "reading the request body failed",
            ),
        ];
        for (name, bytes, want_status, want_msg) in by_server {
            let resp = raw(&sock, &bytes).await;
            assert_eq!(
                status_line(&resp),
                format!("HTTP/1.1 {want_status}"),
                "{name}: {resp}"
            );
            assert!(resp.contains("Connection: close\r\n"), "{name}: {resp}");
            let err = body_of(&resp)["error"].as_str().unwrap().to_string();
            assert!(err.contains(want_msg), "{name}: {err:?} lacks {want_msg:?}");
            let (status, _) = request(&sock, "GET", "/still", None).await.unwrap();
            assert_eq!(status, 200, "after {name}");
        }
        // Invalid JSON is the agent's business, not the server's; so is a
        // POST without a body.
        let resp = raw(
            &sock,
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope",
        )
        .await;
        assert_eq!(status_line(&resp), "HTTP/1.1 200 OK", "{resp}");
        assert_eq!(body_of(&resp)["body"], "{nope");
        let resp = raw(
            &sock,
            b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(body_of(&resp)["body"], "", "{resp}");
        // A chunked body is read whole.
        let resp = raw(
            &sock,
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(body_of(&resp)["body"], json!({"a": 1}), "{resp}");
        // An empty connection gets no answer at all.
        assert_eq!(raw(&sock, b"").await, "");
    }

    #[tokio::test]
    async fn keep_alive_serves_sequential_and_pipelined_requests() {
        let (_dir, sock) = start("ka", LIMITS).await;
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r1 = read_one(&mut s).await;
        assert_eq!(status_line(&r1), "HTTP/1.1 200 OK");
        assert!(!r1.contains("Connection: close"), "{r1}");
        assert_eq!(body_of(&r1)["path"], "/one");
        s.write_all(b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let r2 = read_one(&mut s).await;
        assert_eq!(body_of(&r2)["path"], "/two");
        assert_eq!(body_of(&r2)["body"], json!({}));
        // Pipelined, with a stray CRLF between, and a bare-LF request last
        // that asks to close.
        s.write_all(
            b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /four HTTP/1.1\nHost: x\nConnection: close\n\n",
        )
        .await
        .unwrap();
        let r3 = read_one(&mut s).await;
        assert_eq!(body_of(&r3)["path"], "/three");
        let r4 = read_one(&mut s).await;
        assert_eq!(body_of(&r4)["path"], "/four");
        assert!(r4.contains("Connection: close\r\n"), "{r4}");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the server closed after Connection: close");
    }

    #[tokio::test]
    async fn http10_head_and_expect_continue() {
        let (_dir, sock) = start("misc", LIMITS).await;
        // HTTP/1.0 closes by default and needs no Host.
        let resp = raw(&sock, b"GET /old HTTP/1.0\r\n\r\n").await;
        assert!(resp.contains(" 200 OK\r\n"), "{resp}");
        assert_eq!(body_of(&resp)["path"], "/old");
        // HTTP/1.0 keep-alive is honoured.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let r = read_one(&mut s).await;
        assert!(r.contains("Connection: keep-alive\r\n"), "{r}");
        s.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
        let r = read_one(&mut s).await;
        assert_eq!(body_of(&r)["path"], "/b");
        // HEAD: the length of the body, not the body.
        let resp = raw(
            &sock,
            b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(resp.ends_with("\r\n\r\n"), "{resp}");
        assert!(resp.contains("Content-Length: "));
        // Expect: 100-continue gets an interim 100 before the body is sent.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let mut interim = [0u8; 25];
        s.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"[]").await.unwrap();
        let r = read_one(&mut s).await;
        assert_eq!(body_of(&r)["body"], json!([]));
    }

    #[tokio::test]
    async fn dropped_reply_is_503_and_a_gone_agent_too() {
        let (_dir, sock) = start("drop", LIMITS).await;
        let (status, v) = request(&sock, "POST", "/drop", Some(&json!({})))
            .await
            .unwrap();
        assert_eq!(status, 503);
        assert_eq!(
            v,
            json!({"error": "the agent dropped the request without answering"})
        );

        // The agent answers once, then goes away: the next request on the
        // same connection gets 503 and the connection is closed; serve()
        // returns.
        let gone = temp_dir("gone");
        let sock = gone.join("api.sock");
        let l = bind(&sock).await.unwrap();
        let (tx, mut rx) = mpsc::channel::<ApiRequest>(1);
        tokio::spawn(async move {
            let req = rx.recv().await.unwrap();
            let _ = req.reply.send(ApiResponse::ok(json!("once")));
            drop(rx);
        });
        let server = tokio::spawn(serve(l, tx));
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_one(&mut s).await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_one(&mut s).await;
        assert_eq!(status_line(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
        assert!(r.contains("Connection: close\r\n"), "{r}");
        assert_eq!(body_of(&r), json!({"error": "the agent is shutting down"}));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve() returns once the agent is gone")
            .unwrap();
    }

    #[tokio::test]
    async fn timeouts_408_504_and_idle_close() {
        let limits = Limits {
            read_timeout: Duration::from_millis(200),
            agent_timeout: Duration::from_millis(200),
            ..LIMITS
        };
        let (_dir, sock) = start("time", limits).await;
        let closed_within = |s: UnixStream, what: &'static str| async move {
            let mut s = s;
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
                .await
                .unwrap_or_else(|_| panic!("{what}: still open after 3 s"))
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        // Half a head: hyper closes the connection without an answer.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        assert_eq!(closed_within(s, "half a head").await, "");
        // The head but not the whole body: 408.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
            .await
            .unwrap();
        let out = closed_within(s, "half a body").await;
        assert_eq!(status_line(&out), "HTTP/1.1 408 Request Timeout", "{out}");
        assert_eq!(
            body_of(&out),
            json!({"error": "timed out reading the request body (0.2 s)"})
        );
        // Idle, before or after a request: closed without a word.
        let s = UnixStream::connect(&sock).await.unwrap();
        assert_eq!(closed_within(s, "idle").await, "");
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_one(&mut s).await;
        assert_eq!(body_of(&r)["path"], "/k");
        assert_eq!(closed_within(s, "idle keep-alive").await, "");
        // The agent takes too long: 504.
        let (status, v) = request(&sock, "GET", "/hang", None).await.unwrap();
        assert_eq!(status, 504);
        assert_eq!(v, json!({"error": "the agent did not answer within 0.2 s"}));
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped() {
        let limits = Limits {
            write_timeout: Duration::from_millis(300),
            ..LIMITS
        };
        let (_dir, sock) = start("noread", limits).await;
        // Pipelined requests whose (echoed) answers fill the socket buffers
        // while the client reads nothing: the server gives up writing and
        // closes, so the client's writes fail.
        let s = UnixStream::connect(&sock).await.unwrap();
        let (_read_half, mut write_half) = s.into_split();
        let req = format!(
            "GET /q?pad={} HTTP/1.1\r\nHost: x\r\n\r\n",
            "p".repeat(8 * 1024)
        );
        let writer = async {
            for _ in 0..10_000 {
                write_half.write_all(req.as_bytes()).await?;
            }
            Ok::<_, io::Error>(())
        };
        let written = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the server still reads after 10 s");
        assert!(written.is_err(), "80 MB of requests taken without reading");
    }

    #[tokio::test]
    async fn connections_over_the_per_process_limit_get_503() {
        let (_dir, sock) = start(
            "peer",
            Limits {
                max_per_peer: 2,
                ..LIMITS
            },
        )
        .await;
        // This process holds two connections, each served once.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = UnixStream::connect(&sock).await.unwrap();
            s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert!(read_one(&mut s).await.starts_with("HTTP/1.1 200 "));
            held.push(s);
        }
        let resp = raw(&sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 503 Service Unavailable",
            "{resp}"
        );
        assert!(resp.contains("Connection: close\r\n"), "{resp}");
        assert_eq!(
            body_of(&resp),
            json!({"error": "too many connections from this process (at most 2)"})
        );
        // The held ones are still served.
        held[0]
            .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_one(&mut held[0]).await.starts_with("HTTP/1.1 200 "));
        drop(held.pop());
        // The slot comes back once the server has seen the close.
        let mut status = 0;
        for _ in 0..100 {
            status = request(&sock, "GET", "/c", None).await.unwrap().0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn connections_over_the_limit_get_503() {
        let (_dir, sock) = start(
            "busy",
            Limits {
                max_connections: 1,
                ..LIMITS
            },
        )
        .await;
        let mut first = UnixStream::connect(&sock).await.unwrap();
        first
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_one(&mut first).await; // the first holds its slot
        assert!(r.starts_with("HTTP/1.1 200 "));
        let resp = raw(&sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 503 Service Unavailable",
            "{resp}"
        );
        assert!(resp.contains("Connection: close\r\n"), "{resp}");
        assert_eq!(
            body_of(&resp),
            json!({"error": "too many connections (at most 1)"})
        );
        drop(first);
        // The slot comes back once the server has seen the close.
        let mut status = 0;
        for _ in 0..100 {
            status = request(&sock, "GET", "/b", None).await.unwrap().0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, 200);
    }
}
