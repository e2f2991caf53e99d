//! The Python venv of the tests, `<target>/venv`: the PyPI tools `cargo
//! xtask test` runs, pinned (their bundled schemas decide what passes).
//! Created on first use (Debian needs `python3-venv`, installed by setup);
//! a package at another version is reinstalled at the pinned one.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::util;

/// The Kubernetes API schemas (deploy manifests).
pub const KUBERNETES_VALIDATE: (&str, &str) = ("kubernetes-validate", "1.37.0");
/// The official OCSF exports 1.0.0 .. 1.8.0 (the agent's OCSF lines).
pub const OCSF_JSON_SCHEMA: (&str, &str) = ("ocsf-json-schema", "1.2.0");
/// The JSON Schema validator the OCSF check uses.
pub const JSONSCHEMA: (&str, &str) = ("jsonschema", "4.26.0");

/// The deploy posture checks (deploy/kubernetes).
pub const CHECKOV: (&str, &str) = ("checkov", "3.3.30");

/// Every package of the venv, pinned.
pub const PACKAGES: &[(&str, &str)] = &[KUBERNETES_VALIDATE, OCSF_JSON_SCHEMA, JSONSCHEMA, CHECKOV];

fn step(msg: impl std::fmt::Display) {
    eprintln!("[venv] {msg}");
}

/// The venv's directory.
pub fn dir() -> PathBuf {
    util::target_dir().join("venv")
}

/// The venv's `python`.
pub fn python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Makes sure `venv` exists and holds [`PACKAGES`] at their versions.
pub fn ensure(venv: &Path) -> Result<()> {
    let bin = venv.join("bin");
    // A venv whose creation failed half-way (no pip) is made again.
    if !bin.join("pip").exists() {
        if venv.exists() {
            fs::remove_dir_all(venv)
                .with_context(|| format!("removing the broken venv {}", venv.display()))?;
        }
        step(format!("creating a Python venv at {}", venv.display()));
        util::run(Command::new("python3").args(["-m", "venv"]).arg(venv))
            .context("could not create a Python venv (Debian: apt-get install python3-venv)")?;
    }
    let installed = installed(venv);
    let missing: Vec<String> = PACKAGES
        .iter()
        .zip(&installed)
        .filter(|((_, want), have)| have.as_deref() != Some(*want))
        .map(|((name, want), _)| format!("{name}=={want}"))
        .collect();
    if missing.is_empty() {
        step(format!(
            "{}: found in {}",
            PACKAGES
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            venv.display()
        ));
        return Ok(());
    }
    step(format!("installing {}", missing.join(" ")));
    util::run(
        Command::new(bin.join("pip"))
            .args([
                "install",
                "-q",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
            ])
            .args(&missing),
    )
    .with_context(|| format!("could not install {} from PyPI", missing.join(" ")))
}

/// The installed version of each of [`PACKAGES`] (None: not installed).
fn installed(venv: &Path) -> Vec<Option<String>> {
    let script = "import importlib.metadata as m, sys\n\
                  for n in sys.argv[1:]:\n\
                  \x20   try: print(m.version(n))\n\
                  \x20   except m.PackageNotFoundError: print('-')\n";
    let out = util::stdout(
        Command::new(python(venv))
            .arg("-c")
            .arg(script)
            .args(PACKAGES.iter().map(|(n, _)| n)),
    )
    .unwrap_or_default();
    let mut lines = out.lines();
    PACKAGES
        .iter()
        .map(|_| {
            lines
                .next()
                .map(str::trim)
                .filter(|v| *v != "-")
                .map(String::from)
        })
        .collect()
}
