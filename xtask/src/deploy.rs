//! Offline validation of the Kubernetes manifests in `deploy/kubernetes/`,
//! part of `cargo xtask test` (so of CI).
//!
//! Every manifest but `kustomization.yaml` is checked, strictly (unknown
//! fields are errors), against the Kubernetes API schemas bundled in the
//! PyPI package `kubernetes-validate`, for the oldest and the newest
//! Kubernetes versions we support. The tool runs from a Python venv at
//! `<target>/venv`, created on first use (Debian needs `python3-venv`).
//! The kustomization must list exactly those manifests.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{util, venv};

/// The validator, pinned in [`venv::PACKAGES`]: its bundled schemas
/// decide what passes.
pub const KUBERNETES_VALIDATE: &str = venv::KUBERNETES_VALIDATE.0;
pub const KUBERNETES_VALIDATE_VERSION: &str = venv::KUBERNETES_VALIDATE.1;
/// Kubernetes versions validated against: the oldest supported (the
/// DaemonSet's `appArmorProfile` field is GA since 1.30) and the newest
/// the validator bundles.
pub const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

fn step(msg: impl std::fmt::Display) {
    eprintln!("[deploy] {msg}");
}

/// Validates `<root>/deploy/kubernetes/*.yaml` (see the module doc).
pub fn validate_manifests(root: &Path) -> Result<()> {
    validate_manifests_with(root, &venv::dir())
}

fn validate_manifests_with(root: &Path, venv: &Path) -> Result<()> {
    let dir = root.join("deploy").join("kubernetes");
    let manifests = manifests(&dir)?;
    check_kustomization(&dir, &manifests)?;
    let tool = ensure_validator(venv)?;

    let mut cmd = Command::new(&tool);
    for v in KUBERNETES_VERSIONS {
        cmd.args(["--kubernetes-version", v]);
    }
    // Relative paths: the tool's output names them.
    let rel: Vec<&Path> = manifests
        .iter()
        .map(|m| m.strip_prefix(root).unwrap_or(m))
        .collect();
    cmd.arg("--strict").args(&rel).current_dir(root);
    let out = util::output(&mut cmd)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The tool only warns (and exits 0) when it has no schema for a kind or
    // apiVersion, e.g. a typo in either: that is an error here. A file that
    // holds no resource at all passes it silently: also an error here.
    let warned = text.lines().any(|l| l.starts_with("WARN"));
    let empty: Vec<String> = rel
        .iter()
        .filter(|m| {
            !text.lines().any(|l| {
                l.starts_with("INFO ")
                    && l.contains(m.to_string_lossy().as_ref())
                    && l.contains(" passed ")
            })
        })
        .map(|m| m.display().to_string())
        .collect();
    if !out.status.success() || warned || !empty.is_empty() {
        let mut why = format!(
            "Kubernetes manifests do not validate ({}; {}):\n{}",
            out.status,
            util::display(&cmd),
            text.trim_end()
        );
        if !empty.is_empty() {
            why.push_str(&format!("\nno valid resource in: {}", empty.join(", ")));
        }
        bail!(why);
    }
    eprint!("{text}");
    step(format!(
        "{} manifests valid (strict) against Kubernetes {} ({KUBERNETES_VALIDATE} {KUBERNETES_VALIDATE_VERSION})",
        manifests.len(),
        KUBERNETES_VERSIONS.join(", ")
    ));
    Ok(())
}

/// `*.yaml`/`*.yml` in `dir` except the kustomization, sorted, as paths.
fn manifests(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if (name.ends_with(".yaml") || name.ends_with(".yml")) && !is_kustomization(&name) {
            found.push(path);
        }
    }
    found.sort();
    if found.is_empty() {
        bail!("no manifests in {}", dir.display());
    }
    Ok(found)
}

fn is_kustomization(name: &str) -> bool {
    matches!(
        name,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    )
}

/// The kustomization's `resources:` are exactly the manifests.
fn check_kustomization(dir: &Path, manifests: &[PathBuf]) -> Result<()> {
    let path = dir.join("kustomization.yaml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut listed = kustomization_resources(&text);
    listed.sort();
    let mut files: Vec<String> = manifests
        .iter()
        .filter_map(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    files.sort();
    if listed != files {
        bail!(
            "{} lists resources {listed:?}, but the manifests are {files:?}",
            path.display()
        );
    }
    Ok(())
}

/// The items of the top-level `resources:` list (block style).
fn kustomization_resources(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim_end() != "resources:")
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.starts_with('-') || l.trim().is_empty())
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|s| s.trim().trim_matches(['"', '\'']).to_string())
        .collect()
}

/// `<venv>/bin/kubernetes-validate`, the venv made ready first.
fn ensure_validator(venv: &Path) -> Result<PathBuf> {
    venv::ensure(venv)?;
    Ok(venv.join("bin").join(KUBERNETES_VALIDATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kustomization_resources_are_read() {
        let k = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources:\n  - a.yaml\n  - \"b.yaml\"\n\n  - c.yml\nimages:\n  - name: x\n";
        assert_eq!(kustomization_resources(k), ["a.yaml", "b.yaml", "c.yml"]);
        assert!(kustomization_resources("kind: Kustomization\n").is_empty());
    }
}
