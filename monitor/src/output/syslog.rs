//! Syslog feed: RFC 5424 messages over UDP, TCP (RFC 6587 octet counting)
//! or a unix datagram socket.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [monitor@32473 rule="..." secret_id="..." severity="..." pid="..." ...] MSG
//! ```
//!
//! - PRI = facility * 8 + severity: `critical` -> 2 (crit), `high` -> 3
//!   (err), `medium` -> 4 (warning), `low` -> 5 (notice); anything else 4.
//! - TIMESTAMP is the alert's time, UTC with microseconds.
//! - MSGID is the rule, cut to 32 printable ASCII characters (the full rule
//!   is always in the structured data).
//! - Structured data `monitor@32473` carries `rule`, `secret_id`,
//!   `severity`, `pid`, then `uid`, `comm` and, when known, `exe`,
//!   `container_id`, `pod_uid`, `path`, `dest`, `encoding`, `attack`
//!   (comma-separated) and `count` (roll-ups). PARAM-VALUEs escape `"`, `\`
//!   and `]` with a backslash; control characters become `?` so no receiver
//!   splits a message on them; each value is cut to 1024 bytes.
//! - MSG is the alert summary, UTF-8 **without** a BOM (RFC 5424's MSG-ANY):
//!   common receivers (rsyslog, syslog-ng, journald) otherwise show the BOM
//!   as part of the text. Control characters become `?`; at most 4096 bytes.
//!
//! Delivery is best effort, as syslog is: UDP is one datagram a message;
//! TCP frames each message as `LEN SP MSG`; unix sends one datagram a
//! message to the socket (e.g. `/dev/log`; the daemon must parse RFC 5424
//! there, e.g. rsyslog's imuxsock with `UseSpecialParser="off"
//! ParseHostname="on" IgnoreTimestamp="off"`). Every
//! connect and write has a 2 s timeout; a failed socket is dropped and
//! reopened on the next message (the message is retried once on a fresh
//! socket), and while the receiver stays down reconnects back off from
//! 0.5 s to 30 s, the messages in between counted as failures rather than
//! blocking the agent. Use the webhook feed where every alert must arrive.
use std::{
    fmt::Write as _,
    io::{self, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};

use serde::Deserialize;

use super::Feed;
use crate::correlate::alert::Alert;

/// Private enterprise number of the structured-data id (as specified for
/// the product: `monitor@32473`).
pub const SD_ID: &str = "monitor@32473";
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const MAX_PARAM_BYTES: usize = 1024;
const MAX_MSG_BYTES: usize = 4096;
/// `auth` (security/authorization messages).
pub const DEFAULT_FACILITY: u8 = 4;

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// A facility from the config: a name (`auth`, `local3`, also `security`
/// for 4) or a number 0..23.
pub fn parse_facility(v: &FacilityValue) -> Result<u8> {
    match v {
        FacilityValue::Code(c) if *c < 24 => Ok(*c),
        FacilityValue::Code(c) => bail!("syslog facility {c} out of range 0..23"),
        FacilityValue::Name(n) => {
            let n = n.trim().to_ascii_lowercase();
            if n == "security" {
                return Ok(4);
            }
            if let Ok(c) = n.parse::<u8>() {
                return parse_facility(&FacilityValue::Code(c));
            }
            FACILITIES
                .iter()
                .position(|f| *f == n)
                .map(|p| p as u8)
                .ok_or_else(|| {
                    anyhow!(
                        "unknown syslog facility {n:?}; expected one of {} or 0..23",
                        FACILITIES.join(", ")
                    )
                })
        }
    }
}

/// The syslog severity of an alert severity.
pub fn severity_code(severity: &str) -> u8 {
    match severity {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        "low" => 5,
        _ => 4,
    }
}

/// Printable US-ASCII (33..=126) only, at most `max` characters; `-` (the
/// NILVALUE) if nothing is left.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// The longest prefix of `s` of at most `max` bytes ending on a character
/// boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// RFC 5424 PARAM-VALUE escaping (`"`, `\`, `]`), control characters as `?`.
pub fn escape_param(s: &str) -> String {
    let s = cut(s, MAX_PARAM_BYTES);
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn msg_text(s: &str) -> String {
    cut(s, MAX_MSG_BYTES)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The alert's time as an RFC 5424 TIMESTAMP (UTC, microseconds); now if
/// it does not parse.
/// The fixed parts of every message.
#[derive(Clone, Debug)]
pub struct Header {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

/// One alert as an RFC 5424 message (without transport framing).
pub fn format_message(h: &Header, a: &Alert) -> String {
    let pri = u16::from(h.facility) * 8 + u16::from(severity_code(a.severity.as_str()));
    let mut m = String::with_capacity(512);
    let _ = write!(
        m,
        "<{pri}>1 {} {} {} {} {} [{SD_ID}",
        a.time,
        header_field(&h.hostname, 255),
        header_field(&h.app_name, 48),
        header_field(&h.procid, 128),
        header_field(a.rule.as_str(), 32),
    );
    let mut param = |name: &str, value: &str| {
        let _ = write!(m, " {name}=\"{}\"", escape_param(value));
    };
    param("rule", a.rule.as_str());
    param("secret_id", &a.secret_id);
    param("severity", a.severity.as_str());
    param("pid", &a.actor.pid.to_string());
    param("uid", &a.actor.uid.to_string());
    param("comm", &a.actor.comm);
    let opt = [
        ("exe", &a.actor.exe),
        ("container_id", &a.actor.container_id),
        ("pod_uid", &a.actor.pod_uid),
        ("path", &a.evidence.path),
        ("dest", &a.evidence.dest),
        ("encoding", &a.evidence.encoding),
    ];
    for (name, v) in opt {
        if let Some(v) = v {
            param(name, v);
        }
    }
    // The actor's Kubernetes names (`k8s_*`), then the holder's
    // (`holder_k8s_*`).
    for (prefix, k) in [
        ("k8s_", &a.actor.k8s),
        ("holder_k8s_", &a.evidence.holder_k8s),
    ] {
        let Some(k) = k else { continue };
        let k8s = [
            ("namespace", &k.namespace),
            ("pod", &k.pod),
            ("container", &k.container),
            ("service_account", &k.service_account),
        ];
        for (name, v) in k8s {
            if let Some(v) = v {
                param(&format!("{prefix}{name}"), v);
            }
        }
        if let Some(w) = &k.workload {
            param(
                &format!("{prefix}workload"),
                &format!("{}/{}", w.kind, w.name),
            );
        }
    }
    if !a.attack.is_empty() {
        param("attack", &a.attack.join(","));
    }
    if let Some(c) = a.count {
        param("count", &c.to_string());
    }
    m.push(']');
    let msg = msg_text(&a.summary);
    if !msg.is_empty() {
        m.push(' ');
        m.push_str(&msg);
    }
    m
}

/// RFC 6587 octet-counting frame: `LEN SP MSG`.
pub fn octet_counted(msg: &str) -> Vec<u8> {
    let mut v = format!("{} ", msg.len()).into_bytes();
    v.extend_from_slice(msg.as_bytes());
    v
}

/// This machine's host name (`-` if it has none).
pub fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

pub struct Syslog {
    transport: SyslogTransport,
    address: String,
    header: Header,
    conn: Option<Conn>,
    /// No reconnect before this (backing off from a failed connect).
    retry_at: Option<Instant>,
    backoff: Duration,
    failures: u64,
    pub sent: u64,
}

impl Syslog {
    pub fn new(cfg: &SyslogFeedConfig) -> Result<Self> {
        let facility = match &cfg.facility {
            Some(f) => parse_facility(f)?,
            None => DEFAULT_FACILITY,
        };
        match cfg.transport {
            SyslogTransport::Udp | SyslogTransport::Tcp => {
                let port = cfg
                    .address
                    .rsplit_once(':')
                    .and_then(|(h, p)| (!h.is_empty()).then_some(p))
                    .and_then(|p| p.parse::<u16>().ok());
                if port.is_none() {
                    bail!(
                        "syslog address {:?}: expected host:port (or [v6]:port)",
                        cfg.address
                    );
                }
            }
            SyslogTransport::Unix => {
                if cfg.address.is_empty() {
                    bail!("syslog unix address: expected a socket path such as /dev/log");
                }
            }
        }
        Ok(Syslog {
            transport: cfg.transport,
            address: cfg.address.clone(),
            header: Header {
                facility,
                hostname: cfg.hostname.clone().unwrap_or_else(local_hostname),
                app_name: cfg.app_name.clone().unwrap_or_else(|| "monitor".into()),
                procid: std::process::id().to_string(),
            },
            conn: None,
            retry_at: None,
            backoff: BACKOFF_MIN,
            failures: 0,
            sent: 0,
        })
    }

    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = self.address.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolves to no address", self.address),
            ));
        }
        Ok(addrs)
    }

    fn connect(&self) -> io::Result<Conn> {
        match self.transport {
            SyslogTransport::Udp => {
                let mut last = None;
                for addr in self.resolve()? {
                    let bind: SocketAddr = if addr.is_ipv4() {
                        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                    } else {
                        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    let r = UdpSocket::bind(bind).and_then(|s| {
                        s.connect(addr)?;
                        s.set_write_timeout(Some(IO_TIMEOUT))?;
                        Ok(s)
                    });
                    match r {
                        Ok(s) => return Ok(Conn::Udp(s)),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| io::Error::other("no address")))
            }
            SyslogTransport::Tcp => {
                let mut last = None;
                for addr in self.resolve()? {
                    match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
                        Ok(s) => {
                            s.set_write_timeout(Some(IO_TIMEOUT))?;
                            let _ = s.set_nodelay(true);
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| io::Error::other("no address")))
            }
            SyslogTransport::Unix => {
                let s = UnixDatagram::unbound()?;
                s.connect(&self.address)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Conn::Unix(s))
            }
        }
    }

    /// Whether a TCP peer has closed its end (a write would go into the
    /// void before failing).
    fn tcp_closed(s: &TcpStream) -> bool {
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let closed = match s.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => true,
        };
        closed || s.set_nonblocking(false).is_err()
    }

    fn write(conn: &mut Conn, msg: &str) -> io::Result<()> {
        match conn {
            Conn::Udp(s) => s.send(msg.as_bytes()).map(|_| ()),
            Conn::Unix(s) => s.send(msg.as_bytes()).map(|_| ()),
            Conn::Tcp(s) => {
                if Self::tcp_closed(s) {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "receiver closed the connection",
                    ));
                }
                s.write_all(&octet_counted(msg))
            }
        }
    }

    /// One message: on the open socket, else (or if that fails) on a fresh
    /// one, unless reconnecting is backing off.
    fn deliver(&mut self, msg: &str) -> io::Result<()> {
        let mut last_err = None;
        for _ in 0..2 {
            if self.conn.is_none() {
                if let Some(t) = self.retry_at {
                    if Instant::now() < t {
                        return Err(last_err.unwrap_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::NotConnected,
                                "receiver unavailable; reconnect backing off",
                            )
                        }));
                    }
                }
                match self.connect() {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.retry_at = None;
                        self.backoff = BACKOFF_MIN;
                    }
                    Err(e) => {
                        self.retry_at = Some(Instant::now() + self.backoff);
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        return Err(e);
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match Self::write(conn, msg) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.conn = None;
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("not delivered")))
    }
}

impl Feed for Syslog {
    fn name(&self) -> String {
        let t = match self.transport {
            SyslogTransport::Udp => "udp",
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Unix => "unix",
        };
        format!("syslog:{t}:{}", self.address)
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<()> {
        let mut failed = 0u64;
        let mut first_err = None;
        for a in alerts {
            let msg = format_message(&self.header, a);
            match self.deliver(&msg) {
                Ok(()) => self.sent += 1,
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        self.failures += failed;
        match first_err {
            None => Ok(()),
            Some(e) => Err(anyhow!(
                "{}: {failed} of {} alerts not delivered: {e}",
                self.name(),
                alerts.len()
            )),
        }
    }

    fn failures(&self) -> u64 {
        self.failures
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Unix,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogFeedConfig {
    pub transport: SyslogTransport,
    /// `host:port` (udp, tcp; `[v6]:port` for IPv6) or a unix datagram
    /// socket path (unix, e.g. `/dev/log`).
    pub address: String,
    /// APP-NAME, default `monitor`.
    pub app_name: Option<String>,
    /// HOSTNAME, default this host's name.
    pub hostname: Option<String>,
    /// A facility name (`kern`, `user`, `daemon`, `auth`, `authpriv`,
    /// `local0`..`local7`, ...) or its number 0..23; default `auth`.
    pub facility: Option<FacilityValue>,
}

/// A syslog facility as written in the config: a name or a number.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FacilityValue {
    Code(u8),
    Name(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::file::tests::alert;
    use crate::testutil::TempDir;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;

    fn header() -> Header {
        Header {
            facility: 4,
            hostname: "node-1".into(),
            app_name: "monitor".into(),
            procid: "77".into(),
        }
    }

    #[test]
    fn formats_an_rfc5424_message() {
        let a = alert(1);
        let m = format_message(&header(), &a);
        assert_eq!(
            m,
            "<35>1 2026-11-22T10:01:02.123456Z node-1 monitor 77 secret.copy.file \
             [monitor@32473 rule=\"secret.copy.file\" secret_id=\"db-0001\" severity=\"high\" \
             pid=\"5151\" uid=\"0\" comm=\"cp\" exe=\"/usr/bin/cp\" path=\"/tmp/x\" \
             encoding=\"raw\" attack=\"T1552.001\"] \
             db-0001 copied into /tmp/x by cp (pid 5151)"
        );
    }

    #[test]
    fn kubernetes_names_are_sd_params() {
        let mut a = alert(1);
        a.actor.k8s = Some(crate::enrich::k8s::K8s {
            namespace: Some("payments".into()),
            pod: Some("api-7d9f8b6c5d-x2k4p".into()),
            container: Some("app".into()),
            service_account: None,
            workload: crate::enrich::k8s::derive_workload("api-7d9f8b6c5d-x2k4p"),
        });
        let m = format_message(&header(), &a);
        assert!(
            m.contains(
                " k8s_namespace=\"payments\" k8s_pod=\"api-7d9f8b6c5d-x2k4p\" \
                 k8s_container=\"app\" k8s_workload=\"Deployment/api\" attack="
            ),
            "{m}"
        );
        // The holder's names after the actor's.
        a.evidence.holder_k8s = Some(crate::enrich::k8s::K8s {
            namespace: Some("payments".into()),
            pod: Some("db-0".into()),
            container: Some("postgres".into()),
            service_account: Some("db".into()),
            workload: crate::enrich::k8s::derive_workload("db-0"),
        });
        let m = format_message(&header(), &a);
        assert!(
            m.contains(
                " k8s_workload=\"Deployment/api\" holder_k8s_namespace=\"payments\" \
                 holder_k8s_pod=\"db-0\" holder_k8s_container=\"postgres\" \
                 holder_k8s_service_account=\"db\" holder_k8s_workload=\"StatefulSet/db\" \
                 attack="
            ),
            "{m}"
        );
    }

    #[test]
    fn pri_from_facility_and_severity() {
        let mut a = alert(1);
        let mut h = header();
        for (sev, f, pri) in [
            ("critical", 4, 34),
            ("high", 4, 35),
            ("medium", 4, 36),
            ("low", 4, 37),
            ("critical", 16, 130),
            ("low", 23, 189),
            ("bogus", 1, 12),
        ] {
            a.severity = sev.into();
            h.facility = f;
            assert!(
                format_message(&h, &a).starts_with(&format!("<{pri}>1 ")),
                "{sev} {f}"
            );
        }
    }

    #[test]
    fn escapes_param_values() {
        assert_eq!(escape_param(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(escape_param("x\ny\tz"), "x?y?z");
        assert_eq!(escape_param("ünï"), "ünï");
        let long = "é".repeat(1000);
        let e = escape_param(&long);
        assert!(e.len() <= MAX_PARAM_BYTES && e.chars().all(|c| c == 'é'));

        let mut a = alert(1);
        a.actor.comm = "ev\"il]\\".into();
        a.summary = "line1\nline2".into();
        let m = format_message(&header(), &a);
        assert!(m.contains(r#" comm="ev\"il\]\\""#), "{m}");
        assert!(m.ends_with("] line1?line2"), "{m}");
        // Exactly one unescaped `]` closes the SD-ELEMENT.
        let sd = &m[m.find('[').unwrap()..];
        let mut closes = 0;
        let mut esc = false;
        let mut in_value = false;
        for c in sd.chars() {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_value = !in_value,
                (false, ']') if !in_value => closes += 1,
                _ => {}
            }
        }
        assert_eq!(closes, 1, "{m}");
    }

    #[test]
    fn header_fields_are_printable_and_bounded() {
        let mut a = alert(1);
        a.rule = "secret.send.unexpected_destination".into();
        let mut h = header();
        h.hostname = "bad host\n".into();
        h.app_name = "x".repeat(100);
        h.procid = String::new();
        let m = format_message(&h, &a);
        let parts: Vec<&str> = m.splitn(7, ' ').collect();
        assert_eq!(parts[2], "badhost");
        assert_eq!(parts[3].len(), 48);
        assert_eq!(parts[4], "-");
        assert_eq!(parts[5], "secret.send.unexpected_destinati");
        assert_eq!(parts[5].len(), 32);
        assert!(m.contains("rule=\"secret.send.unexpected_destination\""));
        // No BOM.
        assert!(!m.contains('\u{feff}'));
        // A roll-up carries its count. (A time is a time: the alert
        // cannot hold a malformed one any more.)
        a.count = Some(9);
        let m = format_message(&h, &a);
        assert!(m.contains(" count=\"9\"]"), "{m}");
        let ts = m.split(' ').nth(1).unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn facilities_by_name_and_number() {
        let n = |s: &str| parse_facility(&FacilityValue::Name(s.into()));
        assert_eq!(n("auth").unwrap(), 4);
        assert_eq!(n("AuthPriv").unwrap(), 10);
        assert_eq!(n("local7").unwrap(), 23);
        assert_eq!(n("security").unwrap(), 4);
        assert_eq!(n("16").unwrap(), 16);
        assert!(n("local8").is_err());
        assert_eq!(parse_facility(&FacilityValue::Code(0)).unwrap(), 0);
        assert!(parse_facility(&FacilityValue::Code(24)).is_err());
    }

    #[test]
    fn octet_counting_frames() {
        assert_eq!(octet_counted("<13>1 - - - - - -"), b"17 <13>1 - - - - - -");
        assert_eq!(octet_counted("é"), "2 é".as_bytes());
    }

    fn cfg(transport: SyslogTransport, address: String) -> SyslogFeedConfig {
        SyslogFeedConfig {
            transport,
            address,
            app_name: None,
            hostname: Some("node-1".into()),
            facility: Some(FacilityValue::Name("local0".into())),
        }
    }

    #[test]
    fn bad_addresses_are_config_errors() {
        assert!(Syslog::new(&cfg(SyslogTransport::Udp, "nohostport".into())).is_err());
        assert!(Syslog::new(&cfg(SyslogTransport::Tcp, "h:99999".into())).is_err());
        assert!(Syslog::new(&cfg(SyslogTransport::Tcp, ":514".into())).is_err());
        assert!(Syslog::new(&cfg(SyslogTransport::Unix, String::new())).is_err());
        assert!(Syslog::new(&cfg(SyslogTransport::Tcp, "[::1]:514".into())).is_ok());
    }

    #[test]
    fn udp_sends_one_datagram_a_message() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = rx.local_addr().unwrap();
        let mut s = Syslog::new(&cfg(SyslogTransport::Udp, addr.to_string())).unwrap();
        s.send(&[alert(1), alert(2)]).unwrap();
        let mut buf = [0u8; 4096];
        for i in 1..=2 {
            let n = rx.recv(&mut buf).unwrap();
            let m = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(m.starts_with("<131>1 "), "{m}");
            assert!(m.contains(&format!("secret_id=\"db-000{i}\"")), "{m}");
        }
        assert_eq!(s.failures(), 0);
        assert_eq!(s.name(), format!("syslog:udp:{addr}"));
    }

    #[test]
    fn unix_datagram_socket() {
        let d = TempDir::new("syslog-unix");
        let p = d.join("log.sock");
        let rx = UnixDatagram::bind(&p).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = Syslog::new(&cfg(SyslogTransport::Unix, p.display().to_string())).unwrap();
        s.send(&[alert(3)]).unwrap();
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(m.contains("secret_id=\"db-0003\""), "{m}");
        // The daemon goes away and comes back (a new socket at the same path).
        drop(rx);
        std::fs::remove_file(&p).unwrap();
        assert!(s.send(&[alert(4)]).is_err());
        assert_eq!(s.failures(), 1);
        let rx = UnixDatagram::bind(&p).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.send(&[alert(5)]).is_err() {
            assert!(Instant::now() < deadline, "never reconnected");
            std::thread::sleep(Duration::from_millis(100));
        }
        let n = rx.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(m.contains("secret_id=\"db-0005\""), "{m}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Reads octet-counted frames from one connection.
    fn read_frames(conn: TcpStream, n: usize) -> Vec<String> {
        let mut r = BufReader::new(conn);
        let mut out = Vec::new();
        for _ in 0..n {
            let mut len = Vec::new();
            r.read_until(b' ', &mut len).unwrap();
            let len: usize = std::str::from_utf8(&len[..len.len() - 1])
                .unwrap()
                .parse()
                .unwrap();
            let mut msg = vec![0u8; len];
            r.read_exact(&mut msg).unwrap();
            out.push(String::from_utf8(msg).unwrap());
        }
        out
    }

    #[test]
    fn tcp_octet_counting_and_reconnect() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut s = Syslog::new(&cfg(SyslogTransport::Tcp, addr.to_string())).unwrap();
        s.send(&[alert(1), alert(2)]).unwrap();
        let (c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let got = read_frames(c, 2);
        assert!(got[0].contains("secret_id=\"db-0001\""));
        assert!(got[1].contains("secret_id=\"db-0002\""));
        // The connection was closed by the receiver: the next alert goes on
        // a new connection, not into the void.
        s.send(&[alert(3)]).unwrap();
        let (c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let got = read_frames(c, 1);
        assert!(got[0].contains("secret_id=\"db-0003\""), "{got:?}");
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn a_down_receiver_is_counted_and_never_blocks() {
        // A port nobody listens on.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut s = Syslog::new(&cfg(SyslogTransport::Tcp, addr.to_string())).unwrap();
        let t = Instant::now();
        let alerts: Vec<Alert> = (0..50).map(alert).collect();
        let e = s.send(&alerts).unwrap_err();
        assert!(e.to_string().contains("50 of 50"), "{e}");
        assert_eq!(s.failures(), 50);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Backing off: the next send does not even try to connect.
        assert!(s.send(&alerts[..1]).is_err());
        assert_eq!(s.failures(), 51);
        // The receiver comes up: after the backoff, delivery resumes.
        let l = TcpListener::bind(addr).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        s.send(&alerts[..1]).unwrap();
        let (c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(read_frames(c, 1)[0].contains("db-0000"));
    }

    // ---- a real receiver: rsyslogd ----

    struct Rsyslogd {
        child: std::process::Child,
        /// Removed on drop, after rsyslogd is gone.
        _dir: TempDir,
    }

    impl Drop for Rsyslogd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn which(cmd: &str) -> Option<std::path::PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    }

    fn free_port() -> u16 {
        // A port free for both TCP and UDP on loopback.
        loop {
            let t = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = t.local_addr().unwrap().port();
            if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    #[test]
    fn delivers_to_a_real_rsyslogd_over_udp_tcp_and_unix() {
        // `cargo xtask setup` installs rsyslog: its absence is a failure,
        // not a reason to pass.
        let bin =
            which("rsyslogd").expect("rsyslogd not installed (cargo xtask setup installs it)");
        let dir = TempDir::new("rsyslog");
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("out.log");
        let sock = dir.join("log.sock");
        let (udp, tcp) = (free_port(), free_port());
        let conf = format!(
            r#"global(workDirectory="{work}" maxMessageSize="16k")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
input(type="imuxsock" Socket="{sock}" CreatePath="on" UseSpecialParser="off" ParseHostname="on" IgnoreTimestamp="off")
template(name="t" type="string" string="%pri% %timereported:::date-rfc3339% %msgid% %app-name% %structured-data% %msg%\n")
*.* action(type="omfile" file="{out}" template="t")
"#,
            work = work.display(),
            sock = sock.display(),
            out = out.display(),
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start rsyslogd");
        let mut rs = Rsyslogd { child, _dir: dir };

        // Ready when its TCP input accepts and its socket exists.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = rs.child.try_wait() {
                panic!("rsyslogd exited: {st}");
            }
            if TcpStream::connect(("127.0.0.1", tcp)).is_ok() && sock.exists() {
                break;
            }
            assert!(Instant::now() < deadline, "rsyslogd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }

        let cases = [
            (
                SyslogTransport::Udp,
                format!("127.0.0.1:{udp}"),
                "udp-secret",
            ),
            (
                SyslogTransport::Tcp,
                format!("127.0.0.1:{tcp}"),
                "tcp-secret",
            ),
            (
                SyslogTransport::Unix,
                sock.display().to_string(),
                "unix-secret",
            ),
        ];
        for (transport, address, secret) in cases {
            let mut feed = Syslog::new(&SyslogFeedConfig {
                transport,
                address,
                app_name: Some("monitor-test".into()),
                hostname: None,
                facility: None,
            })
            .unwrap();
            let mut a = alert(1);
            a.secret_id = secret.into();
            a.rule = "secret.send.unexpected_destination".into();
            a.severity = "critical".into();
            a.actor.comm = "we\"ird]\\".into();
            a.summary = format!("{secret} sent to 203.0.113.9:443 by curl");
            // Datagrams may race the input's start: resend until seen.
            let deadline = Instant::now() + Duration::from_secs(15);
            let line = loop {
                // UDP may see ECONNREFUSED from a previous datagram if the
                // input was not up yet; the resend covers it.
                let r = feed.send(std::slice::from_ref(&a));
                if transport != SyslogTransport::Udp {
                    r.unwrap();
                }
                let seen = Instant::now() + Duration::from_secs(1);
                let found = loop {
                    let text = std::fs::read_to_string(&out).unwrap_or_default();
                    if let Some(l) = text.lines().find(|l| l.contains(secret)) {
                        break Some(l.to_string());
                    }
                    if Instant::now() > seen {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                if let Some(l) = found {
                    break l;
                }
                assert!(
                    Instant::now() < deadline,
                    "{secret}: not received by rsyslogd; got:\n{}",
                    std::fs::read_to_string(&out).unwrap_or_default()
                );
            };
            // rsyslog parsed it as RFC 5424: msgid, app-name and the
            // structured data are its own fields.
            // PRI 34 = auth (4) * 8 + crit (2); the alert's own time.
            assert!(
                line.starts_with("34 2026-11-22T10:01:02.123456"),
                "{transport:?}: {line}"
            );
            assert!(
                line.contains(" secret.send.unexpected_destinati monitor-test [monitor@32473 "),
                "{transport:?}: {line}"
            );
            for want in [
                "rule=\"secret.send.unexpected_destination\"".to_string(),
                format!("secret_id=\"{secret}\""),
                "severity=\"critical\"".into(),
                "pid=\"5151\"".into(),
                r#"comm="we\"ird\]\\""#.into(),
            ] {
                assert!(
                    line.contains(&want),
                    "{transport:?}: {want} missing in {line}"
                );
            }
            assert!(
                line.ends_with(&format!("] {secret} sent to 203.0.113.9:443 by curl")),
                "{transport:?}: {line}"
            );
            println!("rsyslogd got over {transport:?}: {line}");
        }
        let _ = rs.child.kill();
        let _ = rs.child.wait();
    }
}
