//! Offline validation of the Kubernetes manifests in `deploy/kubernetes/`,
//! part of `cargo xtask test` (so of CI).
//!
//! Every manifest but `kustomization.yaml` is checked, strictly (unknown
//! fields are errors), against the Kubernetes API schemas bundled in the
//! PyPI package `kubernetes-validate`, for the oldest and the newest
//! Kubernetes versions we support. The tool runs from a Python venv at
//! `<target>/venv`, created on first use (Debian needs `python3-venv`).
//! The kustomization must list exactly those manifests.
//!
//! Then `checkov` (PyPI, same venv) checks the deploy posture of
//! `deploy/kubernetes/`: every check passes or is skipped by a
//! `checkov.io/skipN: CKV_ID=reason` annotation in the manifest, and a skip
//! without a reason is an error here.

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
/// The deploy posture checker, pinned in [`venv::PACKAGES`].
pub const CHECKOV: &str = venv::CHECKOV.0;
pub const CHECKOV_VERSION: &str = venv::CHECKOV.1;
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
    checkov(root, venv, &manifests)
}

/// `checkov` on `deploy/kubernetes/` (see the module doc).
fn checkov(root: &Path, venv: &Path, manifests: &[PathBuf]) -> Result<()> {
    let mut skips = 0;
    for m in manifests {
        let text = fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
        for (id, reason) in checkov_skips(&text) {
            if reason.trim().is_empty() {
                bail!(
                    "{}: the checkov skip of {id} gives no reason (checkov.io/skipN: {id}=REASON)",
                    m.display()
                );
            }
            skips += 1;
        }
    }
    let mut cmd = Command::new(venv.join("bin").join(CHECKOV));
    cmd.args([
        "--directory",
        "deploy/kubernetes",
        "--framework",
        "kubernetes",
    ])
    // Offline: no guideline download from the vendor's API.
    .args(["--skip-download", "--compact", "--quiet"])
    .current_dir(root);
    let out = util::output(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.starts_with("Passed checks:"))
        .unwrap_or("no summary")
        .to_string();
    if !out.status.success() || !summary.contains("Failed checks: 0,") {
        bail!(
            "checkov fails on deploy/kubernetes ({}; {}):\n{}{}",
            out.status,
            util::display(&cmd),
            text.trim_end(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let skipped = summary
        .split("Skipped checks: ")
        .nth(1)
        .and_then(|n| n.trim().parse::<usize>().ok());
    if skipped != Some(skips) {
        bail!("checkov skipped {skipped:?} checks, the manifests annotate {skips}: {summary}");
    }
    step(format!(
        "checkov {CHECKOV_VERSION}: {summary} (each skip's reason is in its annotation)"
    ));
    Ok(())
}

/// `(check id, reason)` of every `checkov.io/skipN: "ID=reason"` annotation.
fn checkov_skips(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("checkov.io/skip")?;
            let (_, value) = rest.split_once(':')?;
            let value = value.trim().trim_matches('"');
            let (id, reason) = value.split_once('=').unwrap_or((value, ""));
            Some((id.trim().to_string(), reason.trim().to_string()))
        })
        .collect()
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

    #[test]
    fn checkov_skips_are_read_with_their_reasons() {
        let m = "metadata:\n  annotations:\n    checkov.io/skip1: \"CKV_K8S_17=hostPID: every process\"\n\
                 \x20   checkov.io/skip2: CKV_K8S_23\n    other: x\n";
        assert_eq!(
            checkov_skips(m),
            [
                (
                    "CKV_K8S_17".to_string(),
                    "hostPID: every process".to_string()
                ),
                ("CKV_K8S_23".to_string(), String::new()),
            ]
        );
    }
}
