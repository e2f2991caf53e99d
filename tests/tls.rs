//! Secrets inside TLS, on the real kernel with real TLS: a TLS server on
//! loopback with a certificate made here (openssl CLI), holders sending
//! their secret in an `Authorization` header through Python's `ssl`,
//! `curl https://`, `gnutls-cli`, a Go client built here from the standard
//! library and a C client with OpenSSL linked in statically, each to an
//! allowed and to a not-allowed destination;
//! a send after expiry, and a foreign process replaying the secret. The
//! agent sees the plaintext through its uprobes on the TLS libraries
//! (attached when the tracked process maps them) and the destination of
//! the connection it went out on. Run as root, single-threaded.
mod harness;

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use harness::*;
use serde_json::{json, Value};

const SERVER: &str = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
socks = []
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
def serve(c):
    try:
        c.settimeout(10)
        t = ctx.wrap_socket(c, server_side=True)
        got = b""
        while b"\r\n\r\n" not in got:
            b = t.recv(4096)
            if not b:
                break
            got += b
        t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        print("got", t.getsockname()[1], len(got), flush=True)
        t.close()
    except Exception as e:
        print("error", type(e).__name__, flush=True)
def loop(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
for s in socks[1:]:
    threading.Thread(target=loop, args=(s,), daemon=True).start()
loop(socks[0])
"#;

/// A TLS server on loopback (two ports) with its own certificate.
struct TlsServer {
    child: Child,
    cert: String,
    ports: Vec<u16>,
    /// "got PORT BYTES" per request served.
    log: Arc<Mutex<Vec<String>>>,
}

impl TlsServer {
    fn start(sc: &Scratch) -> TlsServer {
        let (cert, key) = (sc.path("cert.pem"), sc.path("key.pem"));
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let mut child = Command::new("python3")
            .args(["-u", "-c", SERVER])
            .arg(&cert)
            .arg(&key)
            .arg("2")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the TLS server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(ports.len(), 2, "server said {line:?}");
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        TlsServer {
            child,
            cert: cert.display().to_string(),
            ports,
            log,
        }
    }

    /// Wait until `n` requests were served on `port`.
    fn wait_served(&self, port: u16, n: usize) {
        let t0 = Instant::now();
        loop {
            let got = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with(&format!("got {port} ")))
                .count();
            if got >= n {
                return;
            }
            assert!(
                t0.elapsed() < EVENT_TIMEOUT,
                "the TLS server on {port} served {got} of {n}: {:?}",
                self.log.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct World {
    sc: Scratch,
    agent: Agent,
    /// The agent's /metrics port.
    metrics: u16,
    server: TlsServer,
    /// The delivery file: one header line with the token.
    file: String,
    /// The secret's value (the file's content but its newline).
    value: String,
    id: String,
}

fn world(name: &str) -> World {
    let sc = Scratch::new(&format!("tls-{name}"));
    let value = format!("Authorization: Bearer tls-{name}-7c1e9a4b2d6f8e03a5");
    let file = sc.file("secrets/header", format!("{value}\n").as_bytes());
    std::fs::write(sc.path("issuances.jsonl"), "").unwrap();
    let issuances = sc.path("issuances.jsonl").display().to_string();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{metrics}");
    let agent = Agent::start(&["--issuances", &issuances, "--metrics", &addr]);
    let server = TlsServer::start(&sc);
    World {
        sc,
        agent,
        metrics,
        server,
        file,
        value,
        id: format!("tls-{name}"),
    }
}

/// A Python holder's TLS send: a request with the secret header.
const PY_TLS: &str = r#"
import ssl
def tls_send(port, header):
    ctx = ssl.create_default_context(cafile=CERT)
    with socket.create_connection(("127.0.0.1", port)) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + header.encode() + b"\r\n\r\n")
            t.recv(100)
"#;

impl World {
    /// `GET /metrics` of the agent.
    fn metrics(&self) -> String {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        resp
    }

    fn allowed(&self) -> u16 {
        self.server.ports[0]
    }
    fn other(&self) -> u16 {
        self.server.ports[1]
    }

    /// Append a record to the tailed issuance file and wait until applied.
    fn issue(&self, record: Value) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.sc.path("issuances.jsonl"))
            .unwrap();
        writeln!(f, "{record}").unwrap();
        self.agent.wait_log(&format!("secret {} recorded", self.id));
    }

    /// A Python holder (pid issuance, its children too) that read its
    /// secret and loaded Python's `ssl` (the agent attaches to libssl when
    /// the holder maps it: waited for here).
    fn holder(&self, extra: Value) -> Py {
        let mut py = Py::spawn(&[]);
        let mut rec = json!({
            "secret_id": self.id,
            "holder": {"pid": py.pid},
            "delivery": [{"file": self.file}],
            "allowed_destinations": [format!("127.0.0.1:{}", self.allowed())],
            "source": "test",
        });
        for (k, v) in extra.as_object().unwrap() {
            rec[k] = v.clone();
        }
        self.issue(rec);
        self.agent
            .wait_log(&format!("watching {} (inode", self.file));
        py.run(&format!("secret = open({:?}).read().strip()", self.file));
        self.agent.wait_for("holder read", |e| {
            e["kind"] == "read" && e["process"]["pid"] == py.pid
        });
        py.run(&format!("CERT = {:?}\n{PY_TLS}", self.server.cert));
        self.agent.wait_log("tls: attached openssl probes to");
        py
    }

    /// The not-allowed send's alert (by `lib`), and no alert at all for
    /// the allowed destination although its plaintext was seen (an event
    /// of that connection carries the secret and `tls`).
    fn assert_sends(&self, lib: &str, comm: &str) -> Value {
        let other = format!("127.0.0.1:{}", self.other());
        let allowed = format!("127.0.0.1:{}", self.allowed());
        let a = self
            .agent
            .wait_alert("secret.send.unexpected_destination", |a| {
                a["evidence"]["dest"] == other.as_str() && a["evidence"]["tls"] == lib
            });
        assert_eq!(a["secret_id"], self.id.as_str());
        assert_eq!(a["severity"], "critical");
        assert_eq!(a["actor"]["comm"], comm);
        assert_eq!(a["evidence"]["fd_kind"], "socket");
        assert_eq!(a["evidence"]["encoding"], "raw");
        assert!(
            a["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("over TLS ({lib})")),
            "{a}"
        );
        let seen = self.agent.wait_for("the allowed send's plaintext", |e| {
            e["kind"] == "write"
                && e["tls"] == lib
                && e["dest"] == allowed.as_str()
                && e["secrets"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|m| m["secret_id"] == self.id.as_str()))
        });
        assert_eq!(seen["process"]["comm"], comm);
        let raised: Vec<Value> = self
            .agent
            .alerts()
            .into_iter()
            .filter(|a| a["evidence"]["dest"] == allowed.as_str())
            .collect();
        assert!(
            raised.is_empty(),
            "the allowed destination raised {raised:?}"
        );
        a
    }

    /// Stop the agent; nothing it wrote holds the secret.
    fn assert_no_plaintext(mut self) {
        let value = self.value.clone();
        let token = value.rsplit(' ').next().unwrap().to_string();
        self.agent.assert_never_wrote(&[&value, &token], &[]);
    }
}

#[test]
fn python_ssl_to_an_allowed_and_a_not_allowed_destination() {
    let w = world("python");
    let mut holder = w.holder(json!({}));
    holder.run(&format!("tls_send({}, secret)", w.allowed()));
    holder.run(&format!("tls_send({}, secret)", w.other()));
    w.server.wait_served(w.allowed(), 1);
    w.server.wait_served(w.other(), 1);
    let a = w.assert_sends("openssl", "python3");
    assert_eq!(a["actor"]["pid"], holder.pid);
    // /metrics lists the attached library (one file, whoever uses it),
    // refreshed every second.
    let t0 = Instant::now();
    let text = loop {
        let text = w.metrics();
        if text.contains("monitor_tls_attached{") || t0.elapsed() > EVENT_TIMEOUT {
            break text;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let attached: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("monitor_tls_attached{"))
        .collect();
    assert_eq!(attached.len(), 1, "{text}");
    assert!(
        attached[0].starts_with("monitor_tls_attached{library=\"openssl:/")
            && attached[0].contains("/libssl.so.3\"} 1"),
        "{attached:?}"
    );
    assert_eq!(a["evidence"]["syscall"], "SSL_write_ex");
    // The connect to the other port is also unexpected egress, as in clear.
    let dest = format!("127.0.0.1:{}", w.other());
    w.agent.wait_alert("holder.egress.unexpected", |a| {
        a["evidence"]["dest"] == dest.as_str() && a["actor"]["pid"] == holder.pid
    });
    drop(holder);
    w.assert_no_plaintext();
}

#[test]
fn curl_https_to_an_allowed_and_a_not_allowed_destination() {
    let w = world("curl");
    let mut holder = w.holder(json!({}));
    // curl reads the header from the delivery file itself (a child of the
    // holder: holding it too).
    for port in [w.allowed(), w.other()] {
        holder.run(&format!(
            "subprocess.run(['curl', '-sS', '-o', '/dev/null', '--cacert', CERT, '-H', '@{}', 'https://127.0.0.1:{port}/'], check=True)",
            w.file
        ));
        w.server.wait_served(port, 1);
    }
    let a = w.assert_sends("openssl", "curl");
    assert_eq!(a["evidence"]["syscall"], "SSL_write");
    drop(holder);
    w.assert_no_plaintext();
}

#[test]
fn gnutls_cli_to_an_allowed_and_a_not_allowed_destination() {
    let w = world("gnutls");
    let mut holder = w.holder(json!({}));
    // First use of libgnutls by a tracked process: the agent attaches to it.
    holder
        .run("subprocess.run(['gnutls-cli', '--version'], stdout=subprocess.DEVNULL, check=True)");
    w.agent.wait_log("tls: attached gnutls probes to");
    // The request is the delivery file itself on stdin (gnutls-cli sends
    // what it reads; the server answers once the client closes).
    for port in [w.allowed(), w.other()] {
        holder.run(&format!(
            "subprocess.run(['gnutls-cli', '--x509cafile', CERT, '-p', '{port}', '127.0.0.1'], stdin=open({:?}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)",
            w.file
        ));
        w.server.wait_served(port, 1);
    }
    let a = w.assert_sends("gnutls", "gnutls-cli");
    assert_eq!(a["evidence"]["syscall"], "gnutls_record_send");
    drop(holder);
    w.assert_no_plaintext();
}

const GO_CLIENT: &str = r#"package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
)

// client CA ADDR FILE: send FILE's bytes as a header over TLS to ADDR.
func main() {
	if len(os.Args) != 4 {
		os.Exit(2)
	}
	ca, err := os.ReadFile(os.Args[1])
	if err != nil {
		os.Exit(3)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c, err := tls.Dial("tcp", os.Args[2], &tls.Config{RootCAs: pool})
	if err != nil {
		os.Exit(4)
	}
	body, err := os.ReadFile(os.Args[3])
	if err != nil {
		os.Exit(5)
	}
	req := append([]byte("GET / HTTP/1.1\r\nHost: x\r\n"), body...)
	req = append(req, "\r\n\r\n"...)
	if _, err := c.Write(req); err != nil {
		os.Exit(6)
	}
	io.ReadAll(c)
	c.Close()
}
"#;

/// Build the Go client with Debian's `golang-go`: standard library only,
/// offline, caches in the scratch directory.
fn go_client(sc: &Scratch) -> PathBuf {
    let src = sc.path("goclient/client.go");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::write(&src, GO_CLIENT).unwrap();
    let bin = sc.path("goclient/tlsclient");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", sc.path("gocache"))
        .env("GOPATH", sc.path("gopath"))
        .env("HOME", &sc.dir)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("go (Debian golang-go; cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

#[test]
fn go_crypto_tls_to_an_allowed_and_a_not_allowed_destination() {
    let w = world("go");
    let bin = go_client(&w.sc);
    let mut holder = w.holder(json!({}));
    let bin = bin.display().to_string();
    // Its first run by a tracked process: the agent attaches to the
    // executable (crypto/tls.(*Conn).Write from its symbol table).
    holder.run(&format!("subprocess.run([{bin:?}])"));
    w.agent.wait_log("tls: attached go probes to");
    for port in [w.allowed(), w.other()] {
        holder.run(&format!(
            "subprocess.run([{bin:?}, CERT, '127.0.0.1:{port}', {:?}], check=True, timeout=20)",
            w.file
        ));
        w.server.wait_served(port, 1);
    }
    let a = w.assert_sends("go", "tlsclient");
    assert_eq!(a["evidence"]["syscall"], "crypto/tls.(*Conn).Write");
    drop(holder);
    w.assert_no_plaintext();
}

/// The C client with OpenSSL linked in statically (tests/c/tls_static.c).
fn static_client(sc: &Scratch) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/c/tls_static.c");
    let bin = sc.path("tlsstatic");
    let st = Command::new("gcc")
        .arg("-O1")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .args(["-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic"])
        .args(["-ldl", "-lpthread"])
        .status()
        .expect("gcc (installed by cargo xtask setup)");
    assert!(st.success(), "gcc {} (libssl-dev)", src.display());
    bin.display().to_string()
}

#[test]
fn static_openssl_executable_to_an_allowed_and_a_not_allowed_destination() {
    let w = world("static");
    let bin = static_client(&w.sc);
    let mut holder = w.holder(json!({}));
    // No libssl.so mapped: the executable itself exports SSL_write.
    holder.run(&format!("subprocess.run([{bin:?}])"));
    w.agent
        .wait_log(&format!("tls: attached openssl probes to {bin} (SSL_write"));
    for port in [w.allowed(), w.other()] {
        holder.run(&format!(
            "subprocess.run([{bin:?}, CERT, '{port}', {:?}], check=True, timeout=20)",
            w.file
        ));
        w.server.wait_served(port, 1);
    }
    let a = w.assert_sends("openssl", "tlsstatic");
    assert_eq!(a["evidence"]["syscall"], "SSL_write");
    drop(holder);
    w.assert_no_plaintext();
}

#[test]
fn tls_send_after_expiry_is_a_replay() {
    let w = world("expired");
    let mut holder = w.holder(json!({"ttl_seconds": 3}));
    thread::sleep(Duration::from_millis(3500));
    holder.run(&format!("tls_send({}, secret)", w.allowed()));
    w.server.wait_served(w.allowed(), 1);
    let dest = format!("127.0.0.1:{}", w.allowed());
    let a = w.agent.wait_alert("secret.replay.expired", |a| {
        a["actor"]["pid"] == holder.pid && a["evidence"]["tls"] == "openssl"
    });
    assert_eq!(a["secret_id"], w.id.as_str());
    assert_eq!(a["evidence"]["dest"], dest.as_str());
    assert!(a["evidence"]["expired_at"].is_string(), "{a}");
    // Allowed destination: expired, but not an unexpected one.
    assert!(!w
        .agent
        .alerts()
        .iter()
        .any(|a| a["rule"] == "secret.send.unexpected_destination"));
    drop(holder);
    w.assert_no_plaintext();
}

/// A process that never held the secret sends it over TLS (read from its
/// stdin, so it is not on its command line).
const FOREIGN: &str = r#"
import socket, ssl, sys
header = sys.stdin.readline().strip()
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + header.encode() + b"\r\n\r\n")
        t.recv(100)
"#;

#[test]
fn foreign_process_replaying_the_secret_over_tls() {
    let w = world("foreign");
    // The holder maps libssl: the probes serve every process using it.
    let _holder = w.holder(json!({}));
    let port = w.other();
    let mut child = Command::new("python3")
        .args(["-c", FOREIGN, &w.server.cert, &port.to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    writeln!(child.stdin.take().unwrap(), "{}", w.value).unwrap();
    assert!(child.wait().unwrap().success());
    w.server.wait_served(port, 1);
    let a = w
        .agent
        .wait_alert("secret.replay.foreign", |a| a["actor"]["pid"] == pid);
    assert_eq!(a["secret_id"], w.id.as_str());
    assert_eq!(a["evidence"]["dest"], format!("127.0.0.1:{port}"));
    assert_eq!(a["evidence"]["tls"], "openssl");
    assert_eq!(a["evidence"]["syscall"], "SSL_write_ex");
    assert_eq!(a["severity"], "critical");
    w.assert_no_plaintext();
}

#[test]
fn monitor_check_lists_the_tls_libraries() {
    require_root();
    let out = Command::new(MONITOR).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let tls = text
        .lines()
        .find(|l| l.starts_with("tls "))
        .unwrap_or_else(|| panic!("no tls line:\n{text}"));
    assert!(tls.contains("4/4 programs loaded"), "{tls}");
    let lib = |name: &str, functions: &str| {
        assert!(
            text.lines()
                .any(|l| l.contains(name) && l.contains(&format!("attached ({functions})"))),
            "{name} not attached:\n{text}"
        );
    };
    lib("libssl.so.3", "SSL_write, SSL_write_ex");
    lib("libgnutls.so.30", "gnutls_record_send");
}
