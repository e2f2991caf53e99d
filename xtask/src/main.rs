//! Development tasks for the monitor workspace: `cargo xtask <command>`.

mod bench;
mod deploy;
mod fuzz;
mod setup;
mod util;
mod venv;

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use crate::util::{cargo, display, is_root, which, workspace_root};

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "Development tasks for the monitor workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make this (Debian 12) machine ready: nightly + rust-src, bpf-linker
    /// for the nightly's LLVM, Debian packages. Idempotent.
    Setup,
    /// Run setup, then build the agent (its build.rs builds the eBPF object).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Run setup and build, then run the agent as root: `run [--release] -- ARGS`
    /// (ARGS default to `run`).
    Run {
        /// Build and run with the release profile.
        #[arg(long)]
        release: bool,
        /// Arguments for the agent.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Run setup, then the tests single-threaded as root:
    /// `test [-- CARGO_TEST_ARGS [-- TEST_BINARY_ARGS]]`.
    Test {
        /// Extra arguments for `cargo test`; a further `--` separates
        /// arguments for the test binaries.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Run setup (plus bpftrace and auditd), build in release, then run the
    /// benchmarks; writes BENCHMARKS.md and target/bench/results.json.
    Bench {
        /// Every benchmark with tiny counts (under a minute, for CI); writes
        /// only under target/bench/.
        #[arg(long)]
        smoke: bool,
        /// Run only these benchmarks (comma-separated: untracked, tracked,
        /// throughput, scan, latency, footprint); writes only under
        /// target/bench/.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Run the `cargo fuzz` targets in fuzz/ (nightly, libFuzzer), each for
    /// a bounded time; fails on a crash, naming its input.
    Fuzz {
        /// Every target for a few seconds (about a minute in all, for CI).
        #[arg(long)]
        smoke: bool,
        /// Run only these targets (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Seconds per target (default: 8 with --smoke, else 60).
        #[arg(long)]
        seconds: Option<u32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => build(release),
        Cmd::Run { release, args } => run(release, args),
        Cmd::Test { args } => test(args),
        Cmd::Bench { smoke, only } => bench::bench(smoke, &only),
        Cmd::Fuzz {
            smoke,
            only,
            seconds,
        } => fuzz::fuzz(smoke, &only, seconds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error chain only: no backtrace, even with RUST_BACKTRACE set.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn profile(release: bool) -> &'static str {
    if release {
        "release"
    } else {
        "debug"
    }
}

fn build(release: bool) -> Result<()> {
    setup::setup()?;
    build_monitor(release)
}

fn build_monitor(release: bool) -> Result<()> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root())
        .args(["build", "--package", "monitor"]);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)
}

fn run(release: bool, args: Vec<OsString>) -> Result<()> {
    setup::setup()?;
    build_monitor(release)?;
    let bin = util::target_dir().join(profile(release)).join("monitor");
    if !bin.is_file() {
        bail!("built the agent, but {} does not exist", bin.display());
    }
    let args = if args.is_empty() {
        vec![OsString::from("run")]
    } else {
        args
    };
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else if let Some(sudo) = which("sudo") {
        eprintln!("[run] not root: running the agent via sudo -E");
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&bin);
        cmd
    } else {
        eprintln!(
            "[run] WARNING: not root and no sudo; the agent will likely fail to load eBPF programs"
        );
        Command::new(&bin)
    };
    cmd.args(&args);
    eprintln!("+ {}", display(&cmd));
    // Replace this process: stdio, signals and the exit code are the agent's.
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to exec: {}", display(&cmd)))
}

fn test(args: Vec<OsString>) -> Result<()> {
    setup::setup()?;
    // The tests validate the agent's OCSF lines with the official schemas
    // (tests/ocsf/validate.py) in the venv's Python.
    let venv = venv::dir();
    venv::ensure(&venv)?;
    let (cargo_args, binary_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (&args[..], &args[..0]),
    };
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root())
        .env("RUST_BACKTRACE", "1")
        .env("MONITOR_TEST_PYTHON", venv::python(&venv));
    if !is_root() {
        if which("sudo").is_some() {
            eprintln!("[test] not root: running the test binaries via sudo -E");
            cmd.args(["--config", r#"target."cfg(all())".runner="sudo -E""#]);
        } else {
            eprintln!(
                "[test] WARNING: not root and no sudo; tests that load eBPF programs will fail"
            );
        }
    }
    cmd.args([
        "test",
        "--package",
        "monitor",
        "--package",
        "monitor-common",
        "--all-targets",
    ])
    .args(cargo_args)
    // The tests load real eBPF programs and share kernel state.
    .args(["--", "--test-threads=1"])
    .args(binary_args);
    let status = util::status(&mut cmd)?;
    if !status.success() {
        eprintln!("[test] FAILED ({status}): {}", display(&cmd));
        std::process::exit(status.code().unwrap_or(1));
    }
    // The deployment manifests, offline, against the Kubernetes schemas;
    // and xtask's own unit tests (the validator's kustomization parser).
    deploy::validate_manifests(&workspace_root())?;
    util::run(Command::new(cargo()).current_dir(workspace_root()).args([
        "test",
        "--package",
        "xtask",
        "--quiet",
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn test_args_keep_a_second_separator() {
        let Cmd::Test { args } = parse(&["test", "--", "filter", "--", "--nocapture"]) else {
            panic!("not test");
        };
        assert_eq!(args, ["filter", "--", "--nocapture"]);
    }

    #[test]
    fn run_args_after_separator() {
        let Cmd::Run { release, args } = parse(&["run", "--release", "--", "run", "--foo"]) else {
            panic!("not run");
        };
        assert!(release);
        assert_eq!(args, ["run", "--foo"]);
    }
}
