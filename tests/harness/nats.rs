//! A real 3-server NATS JetStream cluster on loopback ports (Debian's
//! `nats-server`, installed by `cargo xtask setup`), scratch store
//! directories, torn down on drop.
#![allow(dead_code)]

use crate::harness::free_port;
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

pub const NATS_SERVER: &str = "nats-server";

pub struct NatsCluster {
    pub dir: PathBuf,
    servers: Vec<Server>,
}

struct Server {
    name: String,
    conf: PathBuf,
    client: u16,
    http: u16,
    child: Option<Child>,
}

impl NatsCluster {
    /// Three servers, one cluster, JetStream on each; returns once
    /// JetStream has a meta leader (streams can be created).
    pub fn start(name: &str) -> NatsCluster {
        let dir =
            std::env::temp_dir().join(format!("monitor-it-nats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut servers = Vec::new();
        for (i, (client, route, http)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r, _))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let sname = format!("n{}", i + 1);
            let store = dir.join(&sname);
            let conf = dir.join(format!("{sname}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {sname}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     jetstream {{ store_dir: {store:?}, max_memory_store: 64MB, max_file_store: 1GB }}\n\
                     cluster {{ name: monitor-it, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    routes.join(", ")
                ),
            )
            .unwrap();
            servers.push(Server {
                name: sname,
                conf,
                client: *client,
                http: *http,
                child: None,
            });
        }
        let mut c = NatsCluster { dir, servers };
        for i in 0..3 {
            c.start_server(i);
        }
        c.wait_ready();
        c
    }

    /// Client URLs, comma-separated (the agent's `--fleet`).
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start_server(&mut self, i: usize) {
        let s = &mut self.servers[i];
        assert!(s.child.is_none(), "{} already runs", s.name);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", s.name))).unwrap();
        let child = Command::new(NATS_SERVER)
            .arg("-c")
            .arg(&s.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{NATS_SERVER}: {e} (installed by cargo xtask setup: apt-get install nats-server)")
            });
        s.child = Some(child);
    }

    /// SIGKILL one server (a crash).
    pub fn kill_server(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.servers.len() {
            self.kill_server(i);
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].child.is_none() {
                self.start_server(i);
            }
        }
        self.wait_ready();
    }

    fn http_get(port: u16, path: &str) -> Option<String> {
        let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        Some(s.split_once("\r\n\r\n")?.1.to_string())
    }

    /// Every running server is up and JetStream has a meta leader.
    pub fn wait_ready(&self) {
        let t0 = Instant::now();
        loop {
            let ok = self.servers.iter().filter(|s| s.child.is_some()).all(|s| {
                Self::http_get(s.http, "/jsz")
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| {
                        v["meta_cluster"]["leader"]
                            .as_str()
                            .is_some_and(|l| !l.is_empty())
                    })
            });
            if ok {
                return;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                panic!(
                    "NATS cluster not ready after 60 s; logs in {}",
                    self.dir.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
