//! The server half of the control API: a small, strict HTTP/1.1 server on a
//! unix socket.
//!
//! [`bind`] creates the socket (mode 0600, refusing to steal it from a live
//! agent); [`serve`] accepts connections, parses requests and hands each one
//! to the agent as an [`ApiRequest`], then writes the agent's [`ApiResponse`]
//! back as `application/json`.
//!
//! What is accepted:
//! - origin-form targets (`/path?query`), HTTP/1.1 (with `Host`) or HTTP/1.0;
//! - a request head (request line and headers) of at most [`MAX_HEAD_BYTES`]
//!   and [`MAX_HEADERS`] fields (else 431);
//! - a body only with `Content-Length`, at most [`MAX_BODY_BYTES`] (else 413);
//!   `Transfer-Encoding` (chunked) is refused with 411, `POST`/`PUT`/`PATCH`
//!   without `Content-Length` with 411; `Expect: 100-continue` is honoured;
//! - keep-alive for sequential (and pipelined) requests, `Connection: close`
//!   honoured; lines may end in CRLF or a bare LF.
//!
//! Anything else gets a 4xx/5xx answer `{"error": "..."}` naming the problem,
//! after which the connection is closed (its framing can no longer be
//! trusted). A request must arrive within [`READ_TIMEOUT`]; the agent must
//! answer within [`AGENT_TIMEOUT`] (else 504) and a dropped answer is a 503.
//! Nothing here panics on input.
use std::{
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
    time::{timeout, timeout_at, Instant},
};

use super::{ApiRequest, ApiResponse};

/// Largest request head (request line, headers and the blank line), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// Time allowed to receive one whole request (head and body), counted from
/// when the server starts waiting for it; an idle keep-alive connection is
/// closed after it too.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to write one response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the agent has to answer one request before the client gets 504.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// How long [`bind`] waits for a possible live agent to accept.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// After an error answer, how long and how much unread input is discarded
/// before closing, so that the client gets to read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

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

/// The limits one server runs with (tests shrink the timeouts).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_head: usize,
    max_body: usize,
    max_headers: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    agent_timeout: Duration,
    max_connections: usize,
}

const LIMITS: Limits = Limits {
    max_head: MAX_HEAD_BYTES,
    max_body: MAX_BODY_BYTES,
    max_headers: MAX_HEADERS,
    read_timeout: READ_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    agent_timeout: AGENT_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
};

/// Accepts connections until the agent drops its receiver, one task per
/// connection; every request goes to the agent through `tx`.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<ApiRequest>) {
    serve_with(listener, tx, LIMITS).await
}

async fn serve_with(listener: UnixListener, tx: mpsc::Sender<ApiRequest>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        handle_connection(stream, tx, limits).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tokio::spawn(async move {
                        let msg =
                            format!("too many connections (at most {})", limits.max_connections);
                        let resp = ApiResponse::error(503, msg);
                        reject(stream, &resp, limits).await;
                    });
                }
            },
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!("monitor: api: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// A request the server answers itself (and then closes the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reject {
    status: u16,
    msg: String,
}

fn rej<T>(status: u16, msg: impl Into<String>) -> Result<T, Reject> {
    Err(Reject {
        status,
        msg: msg.into(),
    })
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    http10: bool,
    content_length: usize,
    keep_alive: bool,
    expect_continue: bool,
}

/// A whole request off the wire.
#[derive(Debug)]
struct Request {
    head: Head,
    body: Vec<u8>,
}

/// What reading one request came to.
#[derive(Debug)]
enum Read {
    Request(Request),
    /// The peer went away (cleanly between requests, or with an I/O error).
    Closed,
    Reject(Reject),
}

async fn handle_connection(mut stream: UnixStream, tx: mpsc::Sender<ApiRequest>, limits: Limits) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let mut started = false;
        let deadline = Instant::now() + limits.read_timeout;
        let read = timeout_at(
            deadline,
            read_request(&mut stream, &mut buf, &mut started, &limits),
        )
        .await;
        let req = match read {
            Ok(Read::Request(r)) => r,
            Ok(Read::Closed) => return,
            Ok(Read::Reject(r)) => {
                reject(stream, &ApiResponse::error(r.status, r.msg), limits).await;
                return;
            }
            Err(_elapsed) => {
                if started || !buf.is_empty() {
                    let msg = format!(
                        "timed out reading the request ({} s)",
                        limits.read_timeout.as_secs_f64()
                    );
                    reject(stream, &ApiResponse::error(408, msg), limits).await;
                }
                return;
            }
        };
        let Request { head, body } = req;
        let head_only = head.method == "HEAD";
        let mut keep_alive = head.keep_alive;
        let (reply_tx, reply_rx) = oneshot::channel();
        let api_req = ApiRequest {
            method: head.method,
            path: head.path,
            query: head.query,
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
        let resp = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(msg)) => {
                if tx.is_closed() {
                    keep_alive = false;
                }
                ApiResponse::error(503, msg)
            }
            Err(_) => {
                keep_alive = false;
                let msg = format!(
                    "the agent did not answer within {} s",
                    limits.agent_timeout.as_secs_f64()
                );
                ApiResponse::error(504, msg)
            }
        };
        let bytes = render(&resp, head_only, keep_alive, head.http10, SystemTime::now());
        match timeout(limits.write_timeout, stream.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if !keep_alive {
            let _ = timeout(limits.write_timeout, stream.shutdown()).await;
            return;
        }
    }
}

/// Answers `resp` with `Connection: close`, then closes gracefully: the
/// write side first, then a bounded drain of whatever the client still
/// sends, so that it can read the answer rather than a reset.
async fn reject(mut stream: UnixStream, resp: &ApiResponse, limits: Limits) {
    let bytes = render(resp, false, false, false, SystemTime::now());
    match timeout(limits.write_timeout, stream.write_all(&bytes)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
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

/// Reads one request into `buf` (which keeps any bytes of the next one).
/// `started` is set once any part of a request has arrived.
async fn read_request(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    started: &mut bool,
    limits: &Limits,
) -> Read {
    // The head.
    let head_end = loop {
        skip_leading_newlines(buf);
        if !buf.is_empty() {
            *started = true;
        }
        if let Some(end) = find_head_end(buf) {
            if end > limits.max_head {
                return Read::Reject(head_too_large(limits));
            }
            break end;
        }
        if buf.len() >= limits.max_head {
            return Read::Reject(head_too_large(limits));
        }
        match read_some(stream, buf).await {
            Ok(0) if buf.is_empty() => return Read::Closed,
            Ok(0) => {
                return Read::Reject(Reject {
                    status: 400,
                    msg: "connection closed in the middle of the request head".into(),
                })
            }
            Ok(_) => {}
            Err(_) => return Read::Closed,
        }
    };
    let head = match parse_head(&buf[..head_end], limits) {
        Ok(h) => h,
        Err(r) => return Read::Reject(r),
    };
    buf.drain(..head_end);
    // The body.
    let want = head.content_length;
    if head.expect_continue
        && want > buf.len()
        && stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return Read::Closed;
    }
    while buf.len() < want {
        match read_some(stream, buf).await {
            Ok(0) => {
                return Read::Reject(Reject {
                    status: 400,
                    msg: format!(
                        "connection closed after {} of the {want} body bytes announced by Content-Length",
                        buf.len()
                    ),
                })
            }
            Ok(_) => {}
            Err(_) => return Read::Closed,
        }
    }
    let body: Vec<u8> = buf.drain(..want).collect();
    Read::Request(Request { head, body })
}

fn head_too_large(limits: &Limits) -> Reject {
    Reject {
        status: 431,
        msg: format!(
            "request head too large (the request line and headers may take at most {} bytes)",
            limits.max_head
        ),
    }
}

async fn read_some(stream: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Drops empty lines before a request line (RFC 9112 §2.2).
fn skip_leading_newlines(buf: &mut Vec<u8>) {
    let mut i = 0;
    loop {
        match &buf[i..] {
            [b'\n', ..] => i += 1,
            [b'\r', b'\n', ..] => i += 2,
            _ => break,
        }
    }
    if i > 0 {
        buf.drain(..i);
    }
}

/// The length of the head (through its blank line), if it is complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.iter().enumerate().find_map(|(i, b)| {
        if *b != b'\n' {
            return None;
        }
        match buf.get(i + 1..) {
            Some([b'\n', ..]) => Some(i + 2),
            Some([b'\r', b'\n', ..]) => Some(i + 3),
            _ => None,
        }
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| is_tchar(*b))
}

/// Printable, bounded excerpt of client bytes for an error message.
fn snippet(b: &[u8]) -> String {
    const MAX: usize = 60;
    let mut s: String = b
        .iter()
        .take(MAX)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect();
    if b.len() > MAX {
        s.push_str("...");
    }
    s
}

/// Parses a complete head (request line, header lines, blank line).
fn parse_head(raw: &[u8], limits: &Limits) -> Result<Head, Reject> {
    let mut lines = Vec::new();
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'\r') {
            return rej(400, "stray carriage return in the request head");
        }
        lines.push(line);
    }
    // The split leaves the blank line and an empty tail; drop both.
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let Some((request_line, header_lines)) = lines.split_first() else {
        return rej(400, "empty request");
    };

    // Request line: METHOD SP request-target SP HTTP-version.
    let parts: Vec<&[u8]> = request_line.split(|b| *b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return rej(
            400,
            format!(
                "malformed request line {:?}: expected `METHOD /path HTTP/1.1`",
                snippet(request_line)
            ),
        );
    };
    if !is_token(method) {
        return rej(
            400,
            format!("malformed request method {:?}", snippet(method)),
        );
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return rej(
                505,
                format!(
                    "HTTP version {} is not supported (use HTTP/1.1)",
                    snippet(version)
                ),
            )
        }
        _ => {
            return rej(
                400,
                format!(
                    "malformed request line: bad HTTP version {:?}",
                    snippet(version)
                ),
            )
        }
    };
    let (path, query) = parse_target(target)?;

    // Header fields.
    if header_lines.len() > limits.max_headers {
        return rej(
            431,
            format!(
                "too many header fields ({}; at most {})",
                header_lines.len(),
                limits.max_headers
            ),
        );
    }
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut hosts = 0usize;
    let mut expect: Option<String> = None;
    for line in header_lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return rej(400, "obsolete header line folding is not accepted");
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return rej(
                400,
                format!("malformed header line {:?}: no colon", snippet(line)),
            );
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return rej(
                400,
                format!(
                    "malformed header line {:?}: whitespace before the colon",
                    snippet(line)
                ),
            );
        }
        if !is_token(name) {
            return rej(400, format!("malformed header name {:?}", snippet(name)));
        }
        let value = value.trim_ascii();
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return rej(
                400,
                format!("control character in the value of header {}", snippet(name)),
            );
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value_str = String::from_utf8_lossy(value);
        match name.as_str() {
            "content-length" => {
                for part in value_str.split(',') {
                    let part = part.trim_matches([' ', '\t']);
                    let n = if !part.is_empty()
                        && part.len() <= 18
                        && part.bytes().all(|b| b.is_ascii_digit())
                    {
                        part.parse::<u64>().ok()
                    } else {
                        None
                    };
                    let Some(n) = n else {
                        return rej(400, format!("invalid Content-Length {:?}", snippet(value)));
                    };
                    if content_length.is_some_and(|c| c != n) {
                        return rej(400, "conflicting Content-Length values");
                    }
                    content_length = Some(n);
                }
            }
            "transfer-encoding" => transfer_encoding = true,
            "connection" => {
                for token in value_str.split(',') {
                    let token = token.trim_matches([' ', '\t']);
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        keep_alive_token = true;
                    }
                }
            }
            "host" => hosts += 1,
            "expect" => expect = Some(value_str.into_owned()),
            _ => {}
        }
    }
    if transfer_encoding {
        if content_length.is_some() {
            return rej(
                400,
                "both Transfer-Encoding and Content-Length: the body's length is ambiguous",
            );
        }
        return rej(
            411,
            "Transfer-Encoding (chunked) request bodies are not accepted: send Content-Length",
        );
    }
    if !http10 && hosts == 0 {
        return rej(400, "missing Host header (required in HTTP/1.1)");
    }
    if hosts > 1 {
        return rej(400, "more than one Host header");
    }
    let content_length = match content_length {
        Some(n) if n > limits.max_body as u64 => {
            return rej(
                413,
                format!(
                    "request body too large ({n} bytes; at most {})",
                    limits.max_body
                ),
            )
        }
        // Fits: n <= max_body, a usize.
        Some(n) => n as usize,
        None if matches!(method, b"POST" | b"PUT" | b"PATCH") => {
            return rej(
                411,
                format!(
                    "{} needs a Content-Length header",
                    String::from_utf8_lossy(method)
                ),
            )
        }
        None => 0,
    };
    let expect_continue = match expect {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("100-continue") => true,
        Some(e) => {
            return rej(
                417,
                format!("unsupported Expect: {:?}", snippet(e.as_bytes())),
            )
        }
    };
    let keep_alive = !close && (!http10 || keep_alive_token);
    Ok(Head {
        // A token is ASCII.
        method: String::from_utf8_lossy(method).into_owned(),
        path,
        query,
        http10,
        content_length,
        keep_alive,
        expect_continue,
    })
}

/// Splits and checks an origin-form target; decodes the query.
fn parse_target(target: &[u8]) -> Result<(String, Vec<(String, String)>), Reject> {
    if target.first() != Some(&b'/') {
        return rej(
            400,
            format!(
                "request target {:?} must be an absolute path like /issuances",
                snippet(target)
            ),
        );
    }
    if let Some(bad) = target
        .iter()
        .find(|&&b| !(0x21..0x7f).contains(&b) || b == b'#')
    {
        return rej(
            400,
            format!(
                "invalid character 0x{bad:02x} in request target {:?}",
                snippet(target)
            ),
        );
    }
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    if percent_decode(path, false).is_none() {
        return rej(
            400,
            format!("malformed percent-encoding in path {:?}", snippet(path)),
        );
    }
    let mut pairs = Vec::new();
    for piece in query.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match piece.iter().position(|b| *b == b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &b""[..]),
        };
        let decode = |s: &[u8]| percent_decode(s, true).and_then(|d| String::from_utf8(d).ok());
        let (Some(k), Some(v)) = (decode(k), decode(v)) else {
            return rej(
                400,
                format!(
                    "malformed query parameter {:?}: bad percent-encoding or not UTF-8",
                    snippet(piece)
                ),
            );
        };
        pairs.push((k, v));
    }
    // Checked above: visible ASCII only.
    let path = String::from_utf8_lossy(path).into_owned();
    Ok((path, pairs))
}

/// Decodes `%XX` escapes (and `+` as a space if `plus`); `None` if an escape
/// is malformed.
fn percent_decode(s: &[u8], plus: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = hex_val(*s.get(i + 1)?)?;
                let lo = hex_val(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
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

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The bytes of one response.
fn render(
    resp: &ApiResponse,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
    now: SystemTime,
) -> Vec<u8> {
    let fallback;
    let resp = if (200..=599).contains(&resp.status) {
        resp
    } else {
        fallback = ApiResponse::error(
            500,
            format!("the agent answered with an invalid status {}", resp.status),
        );
        &fallback
    };
    let no_body = matches!(resp.status, 204 | 304);
    let mut body = if no_body {
        Vec::new()
    } else {
        serde_json::to_vec(&resp.body)
            .unwrap_or_else(|_| br#"{"error":"unserialisable answer"}"#.to_vec())
    };
    if !no_body {
        body.push(b'\n');
    }
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nCache-Control: no-store\r\n",
        resp.status,
        reason(resp.status),
        http_date(now)
    );
    if !no_body {
        out.push_str("Content-Type: application/json\r\n");
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    } else if http10 {
        out.push_str("Connection: keep-alive\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&body);
    }
    bytes
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WEEKDAYS[days.rem_euclid(7) as usize];
    let mon = MONTHS[(month - 1).clamp(0, 11) as usize];
    format!("{wd}, {day:02} {mon} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// Helpers shared by the API tests: temp dirs, a fake agent, raw exchanges.
#[cfg(test)]
pub(super) mod test_support {
    use std::{
        path::PathBuf,
        sync::atomic::{AtomicU32, Ordering},
        time::Duration,
    };

    use serde_json::{json, Value};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::UnixStream,
        sync::mpsc,
    };

    use crate::api::{ApiRequest, ApiResponse};

    /// A fresh, empty directory (short enough for socket paths), removed
    /// on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        /// `path` inside the directory.
        pub fn join(&self, path: &str) -> PathBuf {
            self.0.join(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh [`TempDir`].
    pub fn temp_dir(tag: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "monitor-api-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut dir = std::env::temp_dir().join(&name);
        if dir.as_os_str().len() > 60 {
            dir = PathBuf::from("/tmp").join(&name);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
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
        for code in [201, 204, 400, 404, 405, 500] {
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
        // A path is passed on as sent, not decoded.
        let (_, v) = request(&sock, "GET", "/a%2Fb", None).await.unwrap();
        assert_eq!(v["path"], "/a%2Fb");
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
        let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
            ("garbage", b"HELLO THERE\r\n\r\n".to_vec(), "400 Bad Request", "malformed request line"),
            ("binary", b"\x00\x01\x02\xff\r\n\r\n".to_vec(), "400 Bad Request", "malformed request line"),
            ("bad method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request", "method"),
            ("no length", b"POST /issuances HTTP/1.1\r\nHost: x\r\n\r\n{\"a\":1}".to_vec(), "411 Length Required", "Content-Length"),
            ("chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec(), "411 Length Required", "Transfer-Encoding"),
            ("te+cl", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}".to_vec(), "400 Bad Request", "ambiguous"),
            ("header too large", big_header.into_bytes(), "431 Request Header Fields Too Large", "at most 16384 bytes"),
            ("too many headers", many_headers.into_bytes(), "431 Request Header Fields Too Large", "too many header fields"),
            ("body too large", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1).into_bytes(), "413 Content Too Large", "1048577 bytes"),
            ("bad length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(), "400 Bad Request", "invalid Content-Length"),
            ("two lengths", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), "400 Bad Request", "conflicting Content-Length"),
            ("no host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "400 Bad Request", "missing Host"),
            ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), "400 Bad Request", "more than one Host"),
            ("version", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), "505 HTTP Version Not Supported", "HTTP/2.0"),
            ("bad version", b"GET / HTTQ/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request", "bad HTTP version"),
            ("absolute form", b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request", "absolute path"),
            ("bad escape", b"GET /x?a=%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request", "percent-encoding"),
            ("not utf-8", b"GET /x?a=%ff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "400 Bad Request", "not UTF-8"),
            ("fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n".to_vec(), "400 Bad Request", "folding"),
            ("space colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(), "400 Bad Request", "whitespace before the colon"),
            ("no colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(), "400 Bad Request", "no colon"),
            ("ctl in value", b"GET / HTTP/1.1\r\nHost: x\x01y\r\n\r\n".to_vec(), "400 Bad Request", "control character"),
            ("stray cr", b"GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n".to_vec(), "400 Bad Request", "carriage return"),
            ("expect", b"GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n".to_vec(), "417 Expectation Failed", "Expect"),
            ("short body", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc".to_vec(), "400 Bad Request", "3 of the 10 body bytes"),
            ("cut head", b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(), "400 Bad Request", "middle of the request head"),
        ];
        for (name, bytes, want_status, want_msg) in cases {
            let resp = raw(&sock, &bytes).await;
            assert_eq!(
                status_line(&resp),
                format!("HTTP/1.1 {want_status}"),
                "{name}: {resp}"
            );
            assert!(resp.contains("Connection: close\r\n"), "{name}: {resp}");
            let err = body_of(&resp)["error"].as_str().unwrap().to_string();
            assert!(err.contains(want_msg), "{name}: {err:?} lacks {want_msg:?}");
            // Still serving.
            let (status, _) = request(&sock, "GET", "/still", None).await.unwrap();
            assert_eq!(status, 200, "after {name}");
        }
        // Invalid JSON is the agent's business, not the server's.
        let resp = raw(
            &sock,
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope",
        )
        .await;
        assert_eq!(status_line(&resp), "HTTP/1.1 200 OK", "{resp}");
        assert_eq!(body_of(&resp)["body"], "{nope");
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
        assert_eq!(status_line(&resp), "HTTP/1.1 200 OK");
        assert!(resp.contains("Connection: close\r\n"));
        // HTTP/1.0 keep-alive is honoured.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let r = read_one(&mut s).await;
        assert!(r.contains("Connection: keep-alive\r\n"), "{r}");
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
        assert!(
            v["error"].as_str().unwrap().contains("without answering"),
            "{v}"
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
        assert!(body_of(&r)["error"]
            .as_str()
            .unwrap()
            .contains("shutting down"));
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
        // Half a request: 408.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(status_line(&out), "HTTP/1.1 408 Request Timeout", "{out}");
        // Head but not the whole body: 408 too.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 408 "));
        // Idle: closed without a word.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(out.is_empty());
        // The agent takes too long: 504.
        let (status, v) = request(&sock, "GET", "/hang", None).await.unwrap();
        assert_eq!(status, 504);
        assert!(
            v["error"].as_str().unwrap().contains("did not answer"),
            "{v}"
        );
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
        assert!(body_of(&resp)["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"));
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

    #[test]
    fn render_shapes() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let r = String::from_utf8(render(
            &ApiResponse::ok(json!({"a": 1})),
            false,
            true,
            false,
            t,
        ))
        .unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nCache-Control: no-store\r\n\
             Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n"
        );
        let r = String::from_utf8(render(
            &ApiResponse {
                status: 204,
                body: json!({"x": 1}),
            },
            false,
            false,
            false,
            t,
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(
            !r.contains("Content-Length") && r.ends_with("Connection: close\r\n\r\n"),
            "{r}"
        );
        let r = String::from_utf8(render(
            &ApiResponse {
                status: 42,
                body: json!(null),
            },
            false,
            true,
            false,
            t,
        ))
        .unwrap();
        assert!(
            r.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{r}"
        );
        assert!(r.contains("invalid status 42"));
        let r = String::from_utf8(render(
            &ApiResponse::error(299, "odd"),
            false,
            true,
            false,
            t,
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 299 \r\n"), "{r}");
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let at = |s: u64| http_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(1_795_341_661), "Sun, 22 Nov 2026 10:01:01 GMT");
    }

    #[test]
    fn parsing_never_panics() {
        // A small xorshift fuzz: random bytes, and mutations of a valid head.
        let valid = b"POST /issuances?a=%20b&c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"GETPOST /?%&=:\r\n\t 0123456789abcxyzHTP.-+\x00\x7f\xff";
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 200) as usize;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            } else {
                let mut v = valid.to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() % v.len() as u64) as usize;
                    v[i] = alphabet[(next() % alphabet.len() as u64) as usize];
                }
                v
            };
            let mut buf = bytes.clone();
            skip_leading_newlines(&mut buf);
            if let Some(end) = find_head_end(&buf) {
                let _ = parse_head(&buf[..end], &LIMITS);
            }
            let _ = parse_head(&bytes, &LIMITS);
        }
        let head = parse_head(valid, &LIMITS).unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(
            head.query,
            vec![("a".into(), " b".into()), ("c".into(), String::new())]
        );
        assert_eq!(head.content_length, 2);
        assert!(!head.keep_alive);
    }
}
