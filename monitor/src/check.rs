//! `monitor check`: preflight. Says, line by line, whether this machine can
//! run the agent: privileges, kernel, BTF, tracefs, cgroup v2, and which
//! probes attach (by really loading and attaching them, then detaching).
use anyhow::Result;

use crate::sensors::{preflight, SensorOptions, Sensors};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub what: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Effective capabilities from `/proc/self/status` (`CapEff:` hex mask).
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// `major.minor` of a kernel release string.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn privileges() -> Item {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| cap_eff(&s))
        .unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let perf = has(CAP_PERFMON) || has(CAP_SYS_ADMIN);
    let euid = unsafe { libc::geteuid() };
    Item {
        what: "privileges",
        ok: bpf && perf,
        detail: format!(
            "euid {euid}; CAP_BPF {} CAP_PERFMON {} CAP_SYS_ADMIN {}",
            yes(has(CAP_BPF)),
            yes(has(CAP_PERFMON)),
            yes(has(CAP_SYS_ADMIN))
        ),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn kernel() -> Item {
    let release = crate::host::kernel_release();
    let ok = kernel_version(&release).is_some_and(|v| v >= (5, 8));
    Item {
        what: "kernel",
        ok,
        detail: format!("{release} (5.8 or later needed: ring buffer, boot clock)"),
    }
}

/// Whether io_uring requests are seen on this kernel (the agent runs either
/// way: without it, io_uring is a blind spot).
pub fn uring_item(p: &crate::sensors::Preflight) -> Item {
    Item {
        what: "io_uring",
        ok: true,
        detail: match (&p.uring, &p.offsets) {
            (Ok(_), Ok(_)) => "covered: requests of tracked processes through the io_uring \
                 tracepoints (open, read, write, send, sendmsg, connect, splice, tee, close; \
                 not registered files)"
                .into(),
            (Err(e), _) => format!("NOT COVERED ({e}): io_uring requests are not seen"),
            (Ok(_), Err(_)) => {
                "NOT COVERED (no kernel struct offsets): io_uring requests are not seen".into()
            }
        },
    }
}

/// Run every check; print the report; `Ok(true)` when the agent can run.
pub fn run(opts: &SensorOptions) -> Result<bool> {
    let mut items = vec![privileges(), kernel()];
    let pre = preflight(opts);
    match &pre {
        Ok(p) => {
            items.push(Item {
                what: "tracefs",
                ok: true,
                detail: p.tracefs.display().to_string(),
            });
            items.push(Item {
                what: "btf",
                // Without offsets the agent runs, with fewer details.
                ok: true,
                detail: match &p.offsets {
                    Ok(_) => format!("{}: struct offsets read", opts.btf_path.display()),
                    Err(e) => format!(
                        "{}: UNAVAILABLE ({e}); file, socket and /proc details off",
                        opts.btf_path.display()
                    ),
                },
            });
            items.push(uring_item(p));
        }
        Err(e) => items.push(Item {
            what: "tracefs",
            ok: false,
            detail: format!("{e:#}"),
        }),
    }
    let cg = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| crate::host::parse_mountinfo(&t).ok())
        .and_then(|m| crate::host::cgroup2_mount(&m));
    items.push(Item {
        what: "cgroup v2",
        ok: true,
        detail: match cg {
            Some(p) => p.display().to_string(),
            None => "not mounted: cgroup paths from /proc/<pid>/cgroup".into(),
        },
    });

    items.push(Item {
        what: "fanotify",
        // Without it the tracepoints still see watched files (and
        // `enforce` cannot be used).
        ok: true,
        detail: match crate::sensors::fanotify::probe() {
            Ok(()) => "used: watched files through inode marks; enforce available".into(),
            Err(e) => format!(
                "UNAVAILABLE ({e:#}): watched files through the tracepoints only, no enforce"
            ),
        },
    });
    let mut can_run = items.iter().all(|i| i.ok);
    for i in &items {
        println!(
            "{:<12} {:<4} {}",
            i.what,
            if i.ok { "ok" } else { "FAIL" },
            i.detail
        );
    }
    if can_run {
        match Sensors::load(opts) {
            Ok(mut s) => {
                println!(
                    "{:<12} {:<4} {}/{} attach ({} attached with no tracked process alive)",
                    "probes",
                    "ok",
                    s.available(),
                    s.status.len(),
                    s.attached()
                );
                println!(
                    "{:<12} {:<4} {}",
                    "capture",
                    "ok",
                    if s.capture_always {
                        "always (capture_always): every capture probe stays attached"
                    } else {
                        "on demand: the lifecycle probes (sched/task tracepoints) are always \
                         attached; the capture probes (syscall and io_uring tracepoints, libc \
                         uprobes) only while a tracked process (holder, reader of a delivery \
                         file) is alive, a selector holder is issued or a secret value is \
                         known (replays)"
                    }
                );
                match &s.ebpf_log_error {
                    None => println!(
                        "{:<12} {:<4} error paths (user-memory read failed, kernel struct walk \
                         failed, map full) are logged by the programs at warn, target \
                         monitor::ebpf: at most one record per kind per CPU per second, never \
                         captured bytes",
                        "ebpf-log", "ok"
                    ),
                    Some(e) => println!(
                        "{:<12} {:<4} off ({e}): error paths are only counted",
                        "ebpf-log", "WARN"
                    ),
                }
                for st in &s.status {
                    let state = if st.attached {
                        "attached".to_string()
                    } else if st.available {
                        "attached on demand (see capture)".to_string()
                    } else {
                        format!(
                            "NOT ATTACHED ({}): {}",
                            st.error.as_deref().unwrap_or("?"),
                            st.probe.purpose
                        )
                    };
                    println!(
                        "  {:<6} {:<28} {}",
                        st.probe.concern.as_str(),
                        st.probe.program,
                        state
                    );
                }
                tls_check(&mut s);
            }
            Err(e) => {
                can_run = false;
                println!("{:<12} {:<4} {e:#}", "probes", "FAIL");
            }
        }
    }
    println!(
        "{}",
        if can_run {
            "result: the agent can run on this machine"
        } else {
            "result: the agent cannot run on this machine"
        }
    );
    Ok(can_run)
}

/// The TLS programs, and the host's TLS libraries really attached (then
/// detached when the check ends). The agent attaches them on demand: when
/// a tracked process maps one (and Go or static builds' executables).
fn tls_check(s: &mut Sensors) {
    use crate::sensors::tls;
    let loaded = tls::TLS_PROBES.len() - s.tls_load_errors.len();
    println!(
        "{:<12} {:<4} {loaded}/{} programs loaded; libraries attached on demand",
        "tls",
        if s.tls_load_errors.is_empty() {
            "ok"
        } else {
            "WARN"
        },
        tls::TLS_PROBES.len()
    );
    for (program, e) in s.tls_load_errors.clone() {
        println!("  tls    {program:<28} NOT LOADED: {e}");
    }
    for (path, lib) in tls::system_libraries() {
        let state = match s.attach_tls(
            std::path::Path::new(&path),
            &path,
            tls::Candidate::Library(lib),
        ) {
            Some(a) if a.path != path => format!(
                "attached ({}; the same file as {})",
                a.functions.join(", "),
                a.path
            ),
            Some(a) => format!("attached ({})", a.functions.join(", ")),
            None => "NOT ATTACHED (no TLS write function found)".into(),
        };
        println!("  tls    {:<8} {path} {state}", lib.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capabilities_and_kernel_versions() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let c = cap_eff(s).unwrap();
        assert!(c & (1 << CAP_BPF) != 0 && c & (1 << CAP_PERFMON) != 0);
        assert_eq!(cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(cap_eff("nothing"), None);
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
