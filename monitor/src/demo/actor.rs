//! `monitor demo-actor` (hidden): the few actions of the demo that need a
//! syscall coreutils cannot make, each run as a real, separate process
//! (the demo re-executes its own binary), named by its comm so the alerts
//! read well: `demo-holder` (the workload given the secret), `demo-scraper`
//! (reads the holder's `/proc/<pid>/environ`), `demo-replayer` (a process
//! never given the secret that sends it to the service).
//!
//! None of them prints the secret: the holder answers its commands with
//! `ok` / `err <message>` on stdout; the secret only goes where a command
//! sends it (its stderr for the log leak, a socket, an exec's argv).
use std::{
    io::{self, BufRead, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use zeroize::{Zeroize, Zeroizing};

#[derive(Args, Debug)]
pub struct ActorArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// The secret's holder: answers commands read on stdin, one a line.
    Holder {
        /// The delivery file (read by the `read` command).
        #[arg(long)]
        file: PathBuf,
        /// The environment variable it was started with the secret in.
        #[arg(long)]
        env: String,
        /// The program the `argv` command starts with the secret in its
        /// arguments (`true` from coreutils).
        #[arg(long)]
        exec: PathBuf,
    },
    /// Reads `/proc/<pid>/environ` (and throws it away).
    Scrape {
        #[arg(long)]
        pid: u32,
    },
    /// Reads a secret on stdin and sends it as a bearer token to `--to`.
    Replay {
        #[arg(long)]
        to: SocketAddr,
    },
}

/// Longest a connect or send to the demo's loopback listeners may take.
const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's comm (what the kernel, and so every alert, names it).
fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

pub fn run(a: ActorArgs) -> Result<()> {
    match a.action {
        Action::Holder { file, env, exec } => {
            set_comm("demo-holder");
            holder(file, &env, exec)
        }
        Action::Scrape { pid } => {
            set_comm("demo-scraper");
            let path = format!("/proc/{pid}/environ");
            let mut environ = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
            environ.zeroize();
            Ok(())
        }
        Action::Replay { to } => {
            set_comm("demo-replayer");
            let mut secret = Zeroizing::new(String::new());
            io::stdin()
                .lock()
                .read_line(&mut secret)
                .context("reading the secret on stdin")?;
            let token = secret.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                bail!("no secret on stdin");
            }
            let request = Zeroizing::new(format!(
                "POST /login HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ));
            send(to, request.as_bytes())
        }
    }
}

fn connect(to: SocketAddr) -> Result<TcpStream> {
    TcpStream::connect_timeout(&to, NET_TIMEOUT).with_context(|| format!("connecting to {to}"))
}

/// Connect, send `bytes` in one write, close (after the peer read it all).
fn send(to: SocketAddr, bytes: &[u8]) -> Result<()> {
    let mut c = connect(to)?;
    c.set_write_timeout(Some(NET_TIMEOUT))?;
    c.set_read_timeout(Some(NET_TIMEOUT))?;
    c.write_all(bytes)
        .with_context(|| format!("sending to {to}"))?;
    c.shutdown(Shutdown::Write)?;
    // Wait for the listener to close its end: the bytes were taken.
    let mut sink = [0u8; 256];
    while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
    sink.zeroize();
    Ok(())
}

fn holder(file: PathBuf, env: &str, exec: PathBuf) -> Result<()> {
    // Until it reads its file, the holder knows the secret from its
    // environment.
    let mut secret = Zeroizing::new(std::env::var(env).unwrap_or_default());
    let stdout = io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let r: Result<()> = match cmd {
            "read" => std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))
                .map(|s| {
                    let mut s = Zeroizing::new(s);
                    let value = s.strip_suffix('\n').unwrap_or(&s);
                    secret = Zeroizing::new(value.to_string());
                    s.zeroize();
                }),
            "connect" => arg
                .parse::<SocketAddr>()
                .context("connect ADDR")
                .and_then(|to| {
                    let c = connect(to)?;
                    let _ = c.shutdown(Shutdown::Both);
                    Ok(())
                }),
            "send" => arg
                .parse::<SocketAddr>()
                .context("send ADDR")
                .and_then(|to| {
                    let msg = Zeroizing::new(format!("PASS {}\r\n", secret.as_str()));
                    send(to, msg.as_bytes())
                }),
            "log" => {
                // One write, as a logger would make it.
                let msg = Zeroizing::new(format!(
                    "app: connecting to the database with password={}\n",
                    secret.as_str()
                ));
                io::stderr()
                    .write_all(msg.as_bytes())
                    .context("writing to stderr")
            }
            "argv" => {
                let mut arg = Zeroizing::new(format!("--password={}", secret.as_str()));
                let status = Command::new(&exec)
                    .arg(arg.as_str())
                    .env_clear()
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .with_context(|| format!("starting {}", exec.display()));
                arg.zeroize();
                status.and_then(|s| {
                    if s.success() {
                        Ok(())
                    } else {
                        bail!("{} exited with {s}", exec.display())
                    }
                })
            }
            "exit" => break,
            other => Err(anyhow::anyhow!("unknown command {other:?}")),
        };
        match r {
            Ok(()) => writeln!(out, "ok")?,
            Err(e) => writeln!(out, "err {e:#}")?,
        }
        out.flush()?;
    }
    Ok(())
}
