//! `cargo xtask fuzz`: the `cargo fuzz` targets in `fuzz/` (libFuzzer,
//! AddressSanitizer, nightly), each for a bounded time.
//!
//! `--smoke` (CI) gives every target [`SMOKE_SECONDS`]: about a minute in
//! all. The corpus grows under `target/fuzz/corpus/<target>` (seeded from
//! `fuzz/seeds/<target>`); a crash leaves its input under
//! `target/fuzz/artifacts/<target>/` and fails the command, naming it:
//! make it a regression unit test next to the code, then fix the bug.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, workspace_root};

/// The targets, in `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &[
    "issuance_record",
    "tail_lines",
    "vault_pairing",
    "jwt_claims",
    "config",
    "ring_decode",
    "btf",
];

/// Seconds per target with `--smoke`.
pub const SMOKE_SECONDS: u32 = 8;
/// Seconds per target without it.
pub const DEFAULT_SECONDS: u32 = 60;

fn step(msg: impl std::fmt::Display) {
    eprintln!("[fuzz] {msg}");
}

fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").arg("fuzz").current_dir(fuzz_dir);
    cmd
}

pub fn fuzz(smoke: bool, only: &[String], seconds: Option<u32>) -> Result<()> {
    crate::setup::cargo_fuzz()?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    for t in only {
        if !TARGETS.contains(&t.as_str()) {
            bail!("no fuzz target {t:?} (targets: {})", TARGETS.join(", "));
        }
    }
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    let secs = seconds.unwrap_or(if smoke {
        SMOKE_SECONDS
    } else {
        DEFAULT_SECONDS
    });
    let out = util::target_dir().join("fuzz");
    step(format!("building {} targets", targets.len()));
    util::run(
        cargo_fuzz(&fuzz_dir)
            .args(["build", "--debug-assertions", "--target-dir"])
            .arg(out.join("build")),
    )
    .context("cargo fuzz build failed")?;
    let mut crashed = Vec::new();
    for t in &targets {
        let corpus = out.join("corpus").join(t);
        let artifacts = out.join("artifacts").join(t);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let mut cmd = cargo_fuzz(&fuzz_dir);
        cmd.args(["run", "--debug-assertions", "--target-dir"])
            .arg(out.join("build"))
            .arg(t)
            .arg(&corpus);
        let seeds = fuzz_dir.join("seeds").join(t);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        step(format!("{t}: {secs} s"));
        let status = util::status(&mut cmd)?;
        if !status.success() {
            crashed.push(format!("{t} (inputs in {})", artifacts.display()));
        }
    }
    if !crashed.is_empty() {
        bail!(
            "fuzzing found crashes: {}; make each a regression test and fix it",
            crashed.join(", ")
        );
    }
    step(format!(
        "{} targets, {secs} s each: no crash",
        targets.len()
    ));
    Ok(())
}
