//! Workloads and in-process measurements for `cargo xtask bench`.
//!
//! Each subcommand does one thing and prints `key=value` lines on stdout
//! that `xtask/src/bench*.rs` parses. Nothing here decides pass/fail.
//!
//! | subcommand | what it does |
//! | --- | --- |
//! | `open` | open/read(64 B)/close loop over 16 small files |
//! | `pipe` | 1-byte write + 1-byte read on one pipe |
//! | `connect` | TCP connect + close to a loopback listener (SO_LINGER 0) |
//! | `exec` | fork + execv `/bin/true` + waitpid |
//! | `holder-io` | a secret holder: reads its delivery file, then pwrite + send loops |
//! | `gen` | reads a watched file (becomes tracked), then paced writes to /dev/null |
//! | `scan` | `FingerprintSet::scan` throughput over 4 KiB buffers |
//! | `foreign-read` | forked readers of a delivery file; stdin is the agent's alert stream |
//! | `floor` | loads empty eBPF programs on tracepoints and waits |
//! | `tracepoints` | the agent's tracepoints (its probe table), one per line |
//! | `fleet-publish` | events or alerts through the agent's fleet link into a NATS cluster, until all acked |
//! | `fleet-replay` | forked senders of a secret (env `MB_VALUE`) in another node's cgroup; waits for each fleet alert |
use std::{
    collections::HashMap,
    ffi::CString,
    io::{BufRead, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use monitor::correlate::fingerprint::{FingerprintKey, FingerprintSet};

type Res<T = ()> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: monitor-bench <open|pipe|connect|exec|holder-io|gen|scan|foreign-read|floor|tracepoints> [--flag value]...");
        std::process::exit(2);
    };
    let flags = match Flags::parse(rest) {
        Ok(f) => f,
        Err(e) => fail(&e),
    };
    if let Some(cpu) = flags.opt_u64("cpu") {
        if let Err(e) = pin(cpu as usize) {
            fail(&e);
        }
    }
    let r = match cmd.as_str() {
        "open" => open_loop(&flags),
        "pipe" => pipe_loop(&flags),
        "connect" => connect_loop(&flags),
        "exec" => exec_loop(&flags),
        "holder-io" => holder_io(&flags),
        "gen" => gen(&flags),
        "scan" => scan(&flags),
        "foreign-read" => foreign_read(&flags),
        "floor" => floor(&flags),
        "fleet-publish" => fleet_publish(&flags),
        "fleet-replay" => fleet_replay(&flags),
        "tracepoints" => {
            tracepoints();
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}")),
    };
    if let Err(e) = r {
        fail(&e);
    }
}

fn fail(e: &str) -> ! {
    eprintln!("monitor-bench: error: {e}");
    std::process::exit(1);
}

/// `--name value` pairs.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> Res<Self> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, got {a:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            m.insert(name.to_string(), v.clone());
        }
        Ok(Flags(m))
    }
    fn str(&self, k: &str) -> Res<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("missing --{k}"))
    }
    fn opt_u64(&self, k: &str) -> Option<u64> {
        self.0.get(k).and_then(|v| v.parse().ok())
    }
    fn u64(&self, k: &str) -> Res<u64> {
        self.str(k)?
            .parse()
            .map_err(|_| format!("--{k} must be an integer"))
    }
    fn u64_or(&self, k: &str, d: u64) -> u64 {
        self.opt_u64(k).unwrap_or(d)
    }
}

fn pin(cpu: usize) -> Res {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity({cpu}): {}", errno()));
        }
    }
    Ok(())
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in path")
}

fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn report(iters: u64, t: Duration) {
    let ns = t.as_nanos() as f64 / iters.max(1) as f64;
    println!(
        "iters={iters} secs={:.6} ns_per_op={ns:.1}",
        t.as_secs_f64()
    );
}

// ------------------------------------------------------------ untracked work

/// open/read/close of 16 small files (created here, before timing).
fn open_loop(f: &Flags) -> Res {
    let iters = f.u64("iters")?;
    let dir = f.str("dir")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    let paths: Vec<CString> = (0..16)
        .map(|i| {
            let p = format!("{dir}/small-{i}");
            if !std::path::Path::new(&p).exists() {
                std::fs::write(&p, format!("small file {i} for the open/read/close loop\n"))
                    .expect("write small file");
            }
            cstr(&p)
        })
        .collect();
    let mut buf = [0u8; 64];
    let t = Instant::now();
    for i in 0..iters {
        unsafe {
            let fd = libc::open(paths[(i & 15) as usize].as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return Err(format!("open: {}", errno()));
            }
            libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
        }
    }
    report(iters, t.elapsed());
    Ok(())
}

/// 1-byte write then 1-byte read on one pipe.
fn pipe_loop(f: &Flags) -> Res {
    let iters = f.u64("iters")?;
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", errno()));
    }
    let mut b = [7u8; 1];
    let t = Instant::now();
    for _ in 0..iters {
        unsafe {
            if libc::write(fds[1], b.as_ptr().cast(), 1) != 1 {
                return Err(format!("write: {}", errno()));
            }
            if libc::read(fds[0], b.as_mut_ptr().cast(), 1) != 1 {
                return Err(format!("read: {}", errno()));
            }
        }
    }
    report(iters, t.elapsed());
    Ok(())
}

/// Blocking TCP connect + close to a loopback listener whose thread accepts
/// and drops. SO_LINGER 0 so that no TIME_WAIT piles up across runs.
fn connect_loop(f: &Flags) -> Res {
    let iters = f.u64("iters")?;
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = match l.local_addr().map_err(|e| e.to_string())? {
        std::net::SocketAddr::V4(a) => a,
        _ => return Err("not v4".into()),
    };
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    thread::spawn(move || {
        while let Ok((s, _)) = l.accept() {
            drop(s);
        }
    });
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let t = Instant::now();
    for _ in 0..iters {
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(format!("socket: {}", errno()));
            }
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            );
            if libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                let e = errno();
                libc::close(fd);
                return Err(format!("connect: {e}"));
            }
            libc::close(fd);
        }
    }
    report(iters, t.elapsed());
    Ok(())
}

/// fork + execv("/bin/true") + waitpid.
fn exec_loop(f: &Flags) -> Res {
    let iters = f.u64("iters")?;
    let path = cstr("/bin/true");
    let arg0 = cstr("true");
    let argv = [arg0.as_ptr(), std::ptr::null()];
    let t = Instant::now();
    for _ in 0..iters {
        unsafe {
            let pid = libc::fork();
            if pid < 0 {
                return Err(format!("fork: {}", errno()));
            }
            if pid == 0 {
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
                return Err(format!("/bin/true failed: status {st}"));
            }
        }
    }
    report(iters, t.elapsed());
    Ok(())
}

// ------------------------------------------------------------ tracked work

/// Text that contains no secret: what a service logs and sends.
fn filler(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz  eeettaaoo=:/,.{}\"\nABCDEFGH0123456789";
    (0..n)
        .map(|_| alphabet[rng.below(alphabet.len())])
        .collect()
}

fn read_file_once(path: &str) -> Res<usize> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(|e| format!("{path}: {e}"))?;
    Ok(v.len())
}

/// Print `ready pid=N` and, with `--wait 1`, wait for a line on stdin.
fn handshake(f: &Flags) -> Res {
    println!("ready pid={}", std::process::id());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    if f.u64_or("wait", 0) != 0 {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A holder that writes and sends heavily: reads its delivery file (so the
/// agent tracks it and learns the secret), then per iteration one pwrite of
/// `--size` bytes to a regular file and one send of `--size` bytes on a
/// loopback TCP connection (drained by a thread).
fn holder_io(f: &Flags) -> Res {
    let iters = f.u64("iters")?;
    let size = f.u64_or("size", 4096) as usize;
    let file = f.str("file")?;
    let out = f.str("out")?;
    handshake(f)?;
    read_file_once(file)?;
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut b = vec![0u8; 1 << 16];
            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
        }
    });
    let sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let outf = std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?;
    let buf = filler(size, 42);
    let (ofd, sfd) = (outf.as_raw_fd(), sock.as_raw_fd());
    let t = Instant::now();
    for _ in 0..iters {
        unsafe {
            if libc::pwrite(ofd, buf.as_ptr().cast(), size, 0) != size as isize {
                return Err(format!("pwrite: {}", errno()));
            }
            let mut sent = 0;
            while sent < size {
                let n = libc::send(sfd, buf[sent..].as_ptr().cast(), size - sent, 0);
                if n <= 0 {
                    return Err(format!("send: {}", errno()));
                }
                sent += n as usize;
            }
        }
    }
    report(iters, t.elapsed());
    drop(sock);
    Ok(())
}

/// Throughput generator: becomes tracked by reading `--file`, then writes
/// `--size`-byte buffers to /dev/null at `--rate` per second (0: as fast as
/// it can) for `--secs` seconds. One write = one event for the agent.
fn gen(f: &Flags) -> Res {
    let rate = f.u64("rate")?;
    let secs = f.str("secs")?.parse::<f64>().map_err(|e| e.to_string())?;
    let size = f.u64_or("size", 64) as usize;
    let file = f.str("file")?;
    handshake(f)?;
    read_file_once(file)?;
    // Give the agent time to learn that we are tracked (the kernel already
    // knows: tracking starts at the open).
    thread::sleep(Duration::from_millis(200));
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| e.to_string())?;
    let fd = null.as_raw_fd();
    let buf = filler(size, 7);
    let total = if rate == 0 {
        u64::MAX
    } else {
        (rate as f64 * secs) as u64
    };
    let dur = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut n: u64 = 0;
    // Pacing in steps of 1/rate against the monotonic clock; at high rates
    // the loop writes a burst, then spins until the next deadline.
    let step_ns = if rate == 0 { 0.0 } else { 1e9 / rate as f64 };
    while n < total {
        if rate == 0 {
            if n.is_multiple_of(1024) && t0.elapsed() >= dur {
                break;
            }
        } else {
            let due = Duration::from_nanos((n as f64 * step_ns) as u64);
            loop {
                let now = t0.elapsed();
                if now >= due {
                    break;
                }
                if due - now > Duration::from_micros(200) {
                    thread::sleep(due - now - Duration::from_micros(100));
                }
                std::hint::spin_loop();
            }
        }
        unsafe { libc::write(fd, buf.as_ptr().cast(), size) };
        n += 1;
    }
    let t = t0.elapsed();
    println!(
        "writes={n} secs={:.6} rate={:.0}",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64()
    );
    Ok(())
}

// ------------------------------------------------------------ scanning

/// xorshift64*: reproducible test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(v: &[u8], url: bool, pad: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for c in v.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        let chars = c.len() + 1;
        for i in 0..4 {
            if i < chars {
                let mut ch = B64[((n >> (18 - 6 * i)) & 63) as usize];
                if url {
                    ch = match ch {
                        b'+' => b'-',
                        b'/' => b'_',
                        x => x,
                    };
                }
                out.push(ch);
            } else if pad {
                out.push(b'=');
            }
        }
    }
    out
}

/// The value in one of the encodings the agent fingerprints.
fn encode(v: &[u8], which: usize) -> (&'static str, Vec<u8>) {
    match which % 7 {
        0 => ("raw", v.to_vec()),
        1 => ("base64", base64(v, false, true)),
        2 => ("base64url", base64(v, true, false)),
        3 => (
            "hex",
            v.iter()
                .flat_map(|b| format!("{b:02x}").into_bytes())
                .collect(),
        ),
        4 => (
            "HEX",
            v.iter()
                .flat_map(|b| format!("{b:02X}").into_bytes())
                .collect(),
        ),
        5 => (
            "percent",
            v.iter()
                .flat_map(|&b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        vec![b]
                    } else {
                        format!("%{b:02X}").into_bytes()
                    }
                })
                .collect(),
        ),
        _ => ("json", {
            let q = serde_json::to_string(std::str::from_utf8(v).expect("printable secret"))
                .expect("json");
            // Without the surrounding quotes (exactly one each side).
            q.as_bytes()[1..q.len() - 1].to_vec()
        }),
    }
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// `FingerprintSet::scan` over `--mib` MiB per corpus in 4 KiB buffers, with
/// `--secrets` known secrets (printable, 20..=64 bytes, every encoding
/// fingerprinted by `add`). Corpora: text, random bytes, text with one
/// secret (rotating through the encodings) planted in every buffer.
fn scan(f: &Flags) -> Res {
    let n = f.u64("secrets")? as usize;
    let mib = f.u64_or("mib", 32) as usize;
    let reps = f.u64_or("reps", 3).max(1) as usize;
    let chunk = f.u64_or("chunk", 4096) as usize;
    let mut rng = Rng(0x5eed ^ n as u64);
    let printable: Vec<u8> = (0x21u8..0x7f).collect();
    let secrets: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let len = 20 + rng.below(45);
            (0..len)
                .map(|_| printable[rng.below(printable.len())])
                .collect()
        })
        .collect();
    let rss0 = vm_rss_kib();
    let mut set = FingerprintSet::new(FingerprintKey::random().map_err(|e| e.to_string())?);
    let t = Instant::now();
    for s in &secrets {
        set.add(s).ok_or("secret not fingerprinted")?;
    }
    let add_us = t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    let rss_kib = vm_rss_kib().saturating_sub(rss0);
    // `Debug` prints counts only: `FingerprintSet { secrets: N, fingerprints: M, .. }`.
    let dbg = format!("{set:?}");
    let fingerprints: u64 = dbg
        .split("fingerprints: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!(
        "secrets={n} add_us_per_secret={add_us:.1} set_rss_kib={rss_kib} fingerprints={fingerprints}"
    );

    let len = mib << 20;
    let text = filler(len, 11);
    let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let mut planted = text.clone();
    let mut planted_n = 0usize;
    for (j, c) in planted.chunks_mut(chunk).enumerate() {
        let (_, e) = encode(&secrets[j % n], j);
        if e.len() + 2 > c.len() {
            continue;
        }
        let at = 1 + rng.below(c.len() - e.len() - 1);
        c[at..at + e.len()].copy_from_slice(&e);
        // Separators around it so that the neighbours cannot extend a
        // base64 or hex run.
        c[at - 1] = b' ';
        if at + e.len() < c.len() {
            c[at + e.len()] = b' ';
        }
        planted_n += 1;
    }
    for (name, data) in [("text", &text), ("random", &random), ("planted", &planted)] {
        let mut rates = Vec::new();
        let mut hits = 0;
        for _ in 0..reps {
            let t = Instant::now();
            hits = 0;
            for c in data.chunks(chunk) {
                hits += std::hint::black_box(set.scan(std::hint::black_box(c))).len();
            }
            rates.push(data.len() as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        let med = rates[rates.len() / 2];
        let expect = if name == "planted" { planted_n } else { 0 };
        println!(
            "corpus={name} bytes_per_sec={med:.0} matches={hits} planted={expect} reps={reps}"
        );
    }
    Ok(())
}

// ------------------------------------------------------------ latency

/// Minimal RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac]Z` to Unix nanoseconds.
fn parse_rfc3339_ns(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut frac_ns: i64 = 0;
    let rest = &s[19..];
    if let Some(fr) = rest.strip_prefix('.') {
        let digits: String = fr.chars().take_while(|c| c.is_ascii_digit()).collect();
        let mut v: i64 = digits.get(..9.min(digits.len()))?.parse().ok()?;
        for _ in digits.len().min(9)..9 {
            v *= 10;
        }
        frac_ns = v;
    }
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some(secs as i128 * 1_000_000_000 + frac_ns as i128)
}

/// stdin: the agent's alert stream. Forks `--samples` readers of `--file`,
/// one every `--interval-ms`; each child opens the file, takes
/// CLOCK_REALTIME and reads. Prints one line per sample: the child's pid,
/// the syscall time, the alert's event `time`, and when the alert line
/// arrived here (all Unix ns; `-` when no alert came within `--timeout-ms`).
fn foreign_read(f: &Flags) -> Res {
    let samples = f.u64("samples")?;
    let interval = Duration::from_millis(f.u64_or("interval-ms", 20));
    let timeout = Duration::from_millis(f.u64_or("timeout-ms", 5000));
    let file = cstr(f.str("file")?);
    // pid -> (event time, arrival)
    let seen: Arc<Mutex<HashMap<u32, (i128, i128)>>> = Arc::default();
    let s2 = seen.clone();
    thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let arrival = realtime_ns();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["rule"] != "secret.read.foreign" {
                continue;
            }
            let Some(pid) = v["actor"]["pid"].as_u64() else {
                continue;
            };
            let t = v["time"].as_str().and_then(parse_rfc3339_ns).unwrap_or(0);
            s2.lock().unwrap().entry(pid as u32).or_insert((t, arrival));
        }
    });
    let mut sent: Vec<(u32, i128)> = Vec::new();
    let mut pfd = [0i32; 2];
    if unsafe { libc::pipe2(pfd.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", errno()));
    }
    for _ in 0..samples {
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", errno()));
        }
        if pid == 0 {
            // Child: raw syscalls only (the parent has threads).
            unsafe {
                let fd = libc::open(file.as_ptr(), libc::O_RDONLY);
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
                let mut buf = [0u8; 256];
                libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                libc::close(fd);
                let t0: i128 = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
                let bytes = t0.to_le_bytes();
                libc::write(pfd[1], bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        let mut bytes = [0u8; 16];
        let n = unsafe { libc::read(pfd[0], bytes.as_mut_ptr().cast(), 16) };
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if n == 16 {
            sent.push((pid as u32, i128::from_le_bytes(bytes)));
        }
        thread::sleep(interval);
    }
    let t = Instant::now();
    while t.elapsed() < timeout {
        let got = {
            let m = seen.lock().unwrap();
            sent.iter().filter(|(p, _)| m.contains_key(p)).count()
        };
        if got == sent.len() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let m = seen.lock().unwrap();
    for (pid, t0) in &sent {
        match m.get(pid) {
            Some((ev, arr)) => println!("sample pid={pid} t0={t0} event={ev} arrival={arr}"),
            None => println!("sample pid={pid} t0={t0} event=- arrival=-"),
        }
    }
    Ok(())
}

// ------------------------------------------------------------ floor

/// The agent's tracepoints (`category:name`), from its probe table.
fn tracepoints() {
    use monitor::sensors::probes::{Attach, PROBES};
    for p in PROBES {
        if let Attach::Tracepoint { category, name } = p.attach {
            println!("{category}:{name}");
        }
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// `r0 = 0; exit`: the empty program.
fn load_empty_prog(name: &str) -> Res<i32> {
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    // union bpf_attr, BPF_PROG_LOAD layout: prog_type u32, insn_cnt u32,
    // insns u64, license u64, log_level u32, log_size u32, log_buf u64,
    // kern_version u32, prog_flags u32, prog_name [16]u8, ...
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_TRACEPOINT.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let short: Vec<u8> = name.bytes().take(15).collect();
    attr[48..48 + short.len()].copy_from_slice(&short);
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(format!("BPF_PROG_LOAD: {}", errno()));
    }
    Ok(fd as i32)
}

/// Attach like aya and libbpf do for tracepoints: a perf event on the
/// tracepoint id (pid -1, cpu 0: the program runs for every task on every
/// CPU), PERF_EVENT_IOC_SET_BPF, enable.
fn attach_tracepoint(tracefs: &str, cat: &str, name: &str, prog: i32) -> Res<i32> {
    let idp = format!("{tracefs}/events/{cat}/{name}/id");
    let id: u64 = std::fs::read_to_string(&idp)
        .map_err(|e| format!("{idp}: {e}"))?
        .trim()
        .parse()
        .map_err(|_| format!("{idp}: not a number"))?;
    // struct perf_event_attr (PERF_ATTR_SIZE_VER7 = 128 bytes): type u32,
    // size u32, config u64, sample_period u64, ...
    let mut attr = [0u64; 16];
    attr[0] = PERF_TYPE_TRACEPOINT as u64 | (128u64 << 32);
    attr[1] = id;
    attr[2] = 1; // sample_period
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            0i32,
            -1i32,
            8u64, // PERF_FLAG_FD_CLOEXEC
        )
    };
    if fd < 0 {
        return Err(format!("perf_event_open({cat}:{name}): {}", errno()));
    }
    let fd = fd as i32;
    unsafe {
        if libc::ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog) != 0 {
            return Err(format!("PERF_EVENT_IOC_SET_BPF({cat}:{name}): {}", errno()));
        }
        if libc::ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) != 0 {
            return Err(format!("PERF_EVENT_IOC_ENABLE({cat}:{name}): {}", errno()));
        }
    }
    Ok(fd)
}

/// Empty programs on `--tracepoints cat:name,...`; prints `ready attached=N`
/// and stays until stdin closes (or it is killed).
fn floor(f: &Flags) -> Res {
    let tracefs = f.str("tracefs").unwrap_or("/sys/kernel/tracing");
    let mut fds = Vec::new();
    let mut skipped = Vec::new();
    for tp in f.str("tracepoints")?.split(',').filter(|s| !s.is_empty()) {
        let (cat, name) = tp.split_once(':').ok_or(format!("bad tracepoint {tp:?}"))?;
        let prog = load_empty_prog(name)?;
        match attach_tracepoint(tracefs, cat, name, prog) {
            Ok(fd) => fds.push((prog, fd)),
            Err(e) => skipped.push(e),
        }
    }
    for s in &skipped {
        eprintln!("monitor-bench: floor: skipped {s}");
    }
    println!("ready attached={} skipped={}", fds.len(), skipped.len());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(fds);
    Ok(())
}

/// `--url U --count N --kind events|alerts [--node N]`: N events or alerts
/// of the agent's shapes through its fleet link (events packed as the
/// agent packs them, channel, batches, acks, `Nats-Msg-Id`s) into the
/// cluster; `rate=` events or alerts a second until the last is
/// acknowledged, `messages=` JetStream messages they took.
fn fleet_publish(f: &Flags) -> Res {
    use monitor::fleet::{link, spool};
    let url = f.str("url")?.to_string();
    let count = f.u64("count")?;
    let kind = f.str("kind")?.to_string();
    let node = f.str("node").unwrap_or("bench").to_string();
    let dir = std::env::temp_dir().join(format!("monitor-bench-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sp = spool::Spool::open(&dir, 1 << 30).map_err(|e| format!("{e:#}"))?;
    let cfg = link::NatsConfig {
        url,
        ..Default::default()
    };
    let l = link::Link::start(cfg, &node, sp).map_err(|e| format!("{e:#}"))?;
    let t0 = Instant::now();
    while !l.stats.connected.load(std::sync::atomic::Ordering::Relaxed) {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("the fleet link did not connect in 30 s".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    // An event as the agent stores it (a read of a delivery file), or an
    // alert (secret.read.foreign), with a unique id each.
    let body = if kind == "alerts" {
        r#""rule":"secret.read.foreign","severity":"high","secret_id":"db-prod","secret_ids":["db-prod"],"summary":"db-prod (/vault/secrets/db) read by cat (pid 81234), not its holder","actor":{"pid":81234,"ppid":81190,"uid":0,"comm":"cat","exe":"/usr/bin/cat","cgroup":"/kubepods.slice/x.scope"},"evidence":{"path":"/vault/secrets/db","fd_kind":"file","bytes":24,"syscall":"read"},"attack":["T1552.001"],"owasp_nhi":["NHI2","NHI9"],"event_ids":[12]"#
    } else {
        r#""kind":"read","syscall":"read","process":{"pid":5151,"tid":5151,"ppid":5150,"uid":0,"gid":0,"comm":"cat","exe":"/usr/bin/cat","cgroup":"/user.slice"},"tracked":true,"fd":3,"path":"/vault/secrets/db","fd_kind":"file","bytes":37,"captured":37,"truncated":false,"secrets":[{"secret_id":"db-prod","encoding":"raw"}]"#
    };
    // Events are packed as the agent packs them (`monitor::fleet::pack`),
    // alerts go one a message; the pid in each keeps the runs' ids apart.
    let mut pack = monitor::fleet::pack::EventPack::new(&node);
    let mut messages = 0u64;
    let t0 = Instant::now();
    for i in 0..count {
        let payload = format!(
            r#"{{"id":{i},"run":{},"time":"2026-12-02T10:01:02.123456Z",{body},"node":"{node}"}}"#,
            std::process::id()
        );
        if kind == "events" {
            if let Some(m) = pack.push(&payload) {
                l.send(m);
                messages += 1;
            }
        } else {
            l.send(spool::Outgoing {
                subject: format!("monitor.{node}.{kind}"),
                id: format!("{node}.{kind}.{}.{i}", std::process::id()),
                payload,
            });
            messages += 1;
        }
    }
    if let Some(m) = pack.take() {
        l.send(m);
        messages += 1;
    }
    loop {
        let done = l.stats.published.load(std::sync::atomic::Ordering::Relaxed);
        let (pending, _, dropped) = l.spool_state();
        if done >= messages {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "{done} of {messages} messages ({count} {kind}) acknowledged after 300 s \
                 ({pending} spooled, {dropped} dropped)"
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs_f64();
    let failures = l.stats.failures.load(std::sync::atomic::Ordering::Relaxed);
    l.finish(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
    println!("count={count}");
    println!("messages={messages}");
    println!("secs={secs}");
    println!("rate={}", count as f64 / secs);
    println!("failures={failures}");
    Ok(())
}

/// `--url U --node B --cgroup DIR --samples N [--interval-ms 50]`, the
/// secret in env `MB_VALUE`: moves itself into the cgroup (node B's
/// scope), then forks one sender a sample that connects to a loopback
/// listener and sends the secret (base64, as a bearer token), and times
/// from the fork to the `secret.replay.foreign` alert of that pid arriving
/// on `monitor.<node>.alerts` from the cluster. `p50_ms=`, `p99_ms=`,
/// `max_ms=`, `received=`.
fn fleet_replay(f: &Flags) -> Res {
    use futures_util::StreamExt;
    let url = f.str("url")?.to_string();
    let node = f.str("node")?.to_string();
    let samples = f.u64("samples")?;
    let interval = Duration::from_millis(f.u64_or("interval-ms", 50));
    let value = std::env::var("MB_VALUE").map_err(|_| "MB_VALUE not set".to_string())?;
    let token = base64(value.as_bytes(), false, true);
    std::fs::write(
        format!("{}/cgroup.procs", f.str("cgroup")?),
        std::process::id().to_string(),
    )
    .map_err(|e| format!("joining the cgroup: {e}"))?;
    // pid -> arrival (realtime ns)
    let seen: Arc<Mutex<HashMap<u32, i128>>> = Arc::default();
    let s2 = seen.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subject = format!("monitor.{node}.alerts");
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = monitor::fleet::link::NatsConfig {
                url,
                ..Default::default()
            };
            let c = match monitor::fleet::link::connect(&cfg, "bench", false).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let mut sub = c.subscribe(subject).await.unwrap();
            let _ = c.flush().await;
            let _ = ready_tx.send(Ok(()));
            while let Some(m) = sub.next().await {
                let arrival = realtime_ns();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                    continue;
                };
                if v["rule"] != "secret.replay.foreign" {
                    continue;
                }
                if let Some(pid) = v["actor"]["pid"].as_u64() {
                    s2.lock().unwrap().entry(pid as u32).or_insert(arrival);
                }
            }
        });
    });
    ready_rx.recv().map_err(|e| e.to_string())??;
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            thread::spawn(move || {
                let mut b = Vec::new();
                let _ = c.read_to_end(&mut b);
            });
        }
    });
    let mut msg = b"Authorization: Bearer ".to_vec();
    msg.extend_from_slice(&token);
    msg.extend_from_slice(b"\r\n");
    let mut sent: Vec<(u32, i128)> = Vec::new();
    for _ in 0..samples {
        let t = realtime_ns();
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match TcpStream::connect(("127.0.0.1", port)) {
                Ok(mut s) => i32::from(s.write_all(&msg).is_err()),
                Err(_) => 1,
            };
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            return Err(format!("fork: {}", errno()));
        }
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        sent.push((pid as u32, t));
        thread::sleep(interval);
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if sent
            .iter()
            .all(|(p, _)| seen.lock().unwrap().contains_key(p))
        {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let seen = seen.lock().unwrap();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(p, t)| seen.get(p).map(|a| (a - t) as f64 / 1e6))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |x: f64| {
        lat.get(((lat.len() as f64 - 1.0) * x).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("sent={}", sent.len());
    println!("received={}", lat.len());
    println!("p50_ms={}", q(0.5));
    println!("p99_ms={}", q(0.99));
    println!("max_ms={}", lat.last().copied().unwrap_or(f64::NAN));
    Ok(())
}
