//! `cargo xtask setup`: idempotently make a fresh Debian 12 machine ready to
//! build and test the monitor. Prints one line per step saying what it found
//! or did.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, cargo, is_root, which};

/// Debian packages the tests (and the build) need; only the missing ones are
/// installed. Extend this list as tests grow.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "python3",
    // The manifests' validator (kubernetes-validate, PyPI) runs in a venv.
    "python3-venv",
    "procps",
    "util-linux",
    "coreutils",
    // `cc` is the linker for every Rust binary (and for building
    // bpf-linker); libc6-dev provides crt1.o/libc.so, which gcc only
    // recommends and `--no-install-recommends` would otherwise skip.
    "gcc",
    "libc6-dev",
    // `dot` renders the timeline's Graphviz output in its test.
    "graphviz",
    // The syslog feed is tested against a real rsyslogd; the webhook's TLS
    // test makes its certificates with the openssl CLI.
    "rsyslog",
    "openssl",
    // The io_uring tests build a small C program against liburing.
    "liburing-dev",
    // The fleet tests run a 3-server JetStream cluster on loopback.
    "nats-server",
    // The TLS tests: curl (OpenSSL), gnutls-cli (GnuTLS), a Go client
    // built offline from the standard library, and a C client with OpenSSL
    // linked in statically.
    "curl",
    "gnutls-bin",
    "golang-go",
    // libssl.a/libcrypto.a for the statically linked OpenSSL client.
    "libssl-dev",
];

/// Debian packages only `cargo xtask bench` needs, installed by it (not by
/// every `setup`): the tools the benchmarks compare the agent with.
pub const BENCH_PACKAGES: &[&str] = &["bpftrace", "auditd", "redis-server", "redis-tools"];

/// The bpf-linker release line we build.
const BPF_LINKER_VERSION: &str = "^0.13";
/// Name of the file, next to the bpf-linker binary, that records the LLVM
/// major version it was built for.
const BPF_LINKER_STAMP: &str = ".bpf-linker-llvm-major";

fn step(name: &str, msg: impl std::fmt::Display) {
    eprintln!("[setup] {name}: {msg}");
}

pub fn setup() -> Result<()> {
    check_root();
    nightly_toolchain()?;
    rust_src()?;
    // Before bpf-linker: building it needs a C toolchain (gcc, libc6-dev).
    debian_packages("debian packages", DEBIAN_PACKAGES)?;
    bpf_linker()?;
    cargo_fuzz()?;
    step("done", "machine is ready");
    Ok(())
}

/// The benchmarks' own packages ([`BENCH_PACKAGES`]), after [`setup`].
pub fn bench_packages() -> Result<()> {
    debian_packages("bench packages", BENCH_PACKAGES)
}

fn check_root() {
    match util::euid() {
        Ok(0) => step("user", "running as root"),
        Ok(uid) => step(
            "user",
            format!(
                "WARNING: running as uid {uid}, not root; the agent and its tests \
                 need root (apt-get, and later the agent/tests, will use sudo if available)"
            ),
        ),
        Err(e) => step("user", format!("WARNING: cannot determine uid: {e:#}")),
    }
}

fn rustup() -> Command {
    Command::new("rustup")
}

/// `rustup run nightly <program>`: the same environment aya-build uses when
/// it builds the eBPF crate (notably `LD_LIBRARY_PATH` with nightly's lib/).
fn nightly(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = rustup();
    cmd.args(["run", "nightly"]).arg(program);
    cmd
}

/// Step 1: a `nightly` toolchain (the one aya-build runs via `rustup run nightly`).
fn nightly_toolchain() -> Result<()> {
    const NAME: &str = "nightly toolchain";
    let list = util::stdout(rustup().args(["toolchain", "list"]))
        .context("is rustup installed and on PATH? (https://rustup.rs)")?;
    // `nightly-<host>` (possibly with " (active)" etc.), but not a dated
    // `nightly-YYYY-MM-DD-<host>`, which `rustup run nightly` would not use.
    let found = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|t| {
            *t == "nightly"
                || t.strip_prefix("nightly-")
                    .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        });
    if let Some(name) = found {
        step(NAME, format!("found {name}"));
        return Ok(());
    }
    step(NAME, "not installed; installing (profile minimal)");
    util::run(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))
        .context("could not install the nightly toolchain (offline? install it by hand: `rustup toolchain install nightly --profile minimal`)")?;
    step(NAME, "installed nightly");
    Ok(())
}

/// Step 2: `rust-src` on nightly (needed to build core for bpfel-unknown-none).
fn rust_src() -> Result<()> {
    const NAME: &str = "rust-src (nightly)";
    let installed = util::stdout(rustup().args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        step(NAME, "found");
        return Ok(());
    }
    step(NAME, "not installed; adding");
    util::run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("could not add rust-src to nightly (offline?)")?;
    step(NAME, "added");
    Ok(())
}

/// The cargo-fuzz release line `cargo xtask fuzz` uses.
const CARGO_FUZZ_VERSION: &str = "^0.13";

/// Step 5: cargo-fuzz (`cargo xtask fuzz`), built from crates.io if missing.
pub fn cargo_fuzz() -> Result<()> {
    const NAME: &str = "cargo-fuzz";
    if let Ok(v) = util::stdout(Command::new("cargo").args(["+nightly", "fuzz", "--version"])) {
        step(NAME, format!("found {}", v.trim()));
        return Ok(());
    }
    step(NAME, "not installed; building it from crates.io");
    util::run(
        Command::new(cargo())
            .args(["install", "--locked", "cargo-fuzz", "--version"])
            .arg(CARGO_FUZZ_VERSION),
    )
    .context("building cargo-fuzz failed (it needs crates.io access)")?;
    step(NAME, "installed");
    Ok(())
}

/// Step 4: Debian packages from [`DEBIAN_PACKAGES`] (and, for the
/// benchmarks, [`BENCH_PACKAGES`]): only the missing ones are installed.
fn debian_packages(name: &str, packages: &[&str]) -> Result<()> {
    if which("dpkg-query").is_none() {
        step(
            name,
            format!(
                "WARNING: dpkg-query not found (not Debian?); make sure these are installed: {}",
                packages.join(" ")
            ),
        );
        return Ok(());
    }
    let mut missing = Vec::new();
    for &pkg in packages {
        let out = util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))?;
        let status = String::from_utf8_lossy(&out.stdout);
        // e.g. "install ok installed"; "deinstall ok config-files" is missing.
        if !(out.status.success() && status.split_whitespace().nth(2) == Some("installed")) {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        step(name, format!("all installed ({})", packages.join(" ")));
        return Ok(());
    }
    step(name, format!("missing: {}; installing", missing.join(" ")));
    let apt = |args: &[&str]| -> Result<Command> {
        let mut cmd = if is_root() {
            Command::new("env")
        } else if let Some(sudo) = which("sudo") {
            let mut cmd = Command::new(sudo);
            cmd.arg("env");
            cmd
        } else {
            bail!(
                "not root and no sudo: install these as root: apt-get install {}",
                missing.join(" ")
            );
        };
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
            .args(args);
        Ok(cmd)
    };
    util::run(&mut apt(&["update"])?).context("apt-get update failed")?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"])?;
    install.args(&missing);
    util::run(&mut install).context("apt-get install failed")?;
    step(name, format!("installed {}", missing.join(" ")));
    Ok(())
}

/// The LLVM major version of the nightly rustc (`LLVM version: 22.1.4` -> 22).
fn nightly_llvm_major() -> Result<u32> {
    let vv = util::stdout(nightly("rustc").arg("-vV"))?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|major| major.parse().ok())
        .context("no parsable `LLVM version:` line in `rustup run nightly rustc -vV`")
}

/// Where `cargo install` puts binaries: `$CARGO_INSTALL_ROOT`, else
/// `$CARGO_HOME`, else `~/.cargo`.
fn install_root() -> Result<PathBuf> {
    for var in ["CARGO_INSTALL_ROOT", "CARGO_HOME"] {
        if let Some(dir) = env::var_os(var).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
    }
    let home =
        env::var_os("HOME").context("none of CARGO_INSTALL_ROOT, CARGO_HOME, HOME is set")?;
    Ok(Path::new(&home).join(".cargo"))
}

/// The LLVM major a cargo-installed bpf-linker was built with, from the
/// `llvm-N` feature recorded in `<root>/.crates2.json` (used to adopt an
/// install that predates the stamp file).
fn crates2_llvm_major(root: &Path) -> Option<u32> {
    let json = fs::read_to_string(root.join(".crates2.json")).ok()?;
    let entry = &json[json.find("\"bpf-linker ")?..];
    let features = &entry[entry.find("\"features\":[")? + "\"features\":[".len()..];
    let features = &features[..features.find(']')?];
    features
        .split(',')
        .filter_map(|f| f.trim().trim_matches('"').strip_prefix("llvm-"))
        .find_map(|n| n.parse().ok())
}

/// `--version` of `bin`, run the way rustc runs it during the eBPF build.
fn bpf_linker_version(bin: &Path) -> Result<String, String> {
    if !bin.exists() {
        return Err("not installed".into());
    }
    let mut cmd = nightly(bin);
    cmd.arg("--version");
    match util::output(&mut cmd) {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Err(format!(
            "does not run ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("does not run: {e:#}")),
    }
}

/// Step 3: bpf-linker, built against the nightly's own libLLVM.
fn bpf_linker() -> Result<()> {
    const NAME: &str = "bpf-linker";
    let major = nightly_llvm_major()?;
    let root = install_root()?;
    let bin = root.join("bin").join("bpf-linker");
    let stamp = root.join("bin").join(BPF_LINKER_STAMP);

    let version = bpf_linker_version(&bin);
    let stamped = fs::read_to_string(&stamp)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let built_for = stamped.or_else(|| crates2_llvm_major(&root));

    let reason = match (&version, built_for) {
        (Ok(v), Some(m)) if m == major => {
            let how = if stamped.is_some() {
                "ok"
            } else {
                fs::write(&stamp, format!("{major}\n"))
                    .with_context(|| format!("failed to write {}", stamp.display()))?;
                "ok (adopted existing install, recorded stamp)"
            };
            step(
                NAME,
                format!(
                    "{} ({v}) built for LLVM {m} = nightly's LLVM {major}: {how}",
                    bin.display()
                ),
            );
            check_on_path(&bin);
            return Ok(());
        }
        (Err(e), _) => format!("{}: {e}", bin.display()),
        (Ok(_), Some(m)) => format!("built for LLVM {m}, nightly has LLVM {major}"),
        (Ok(_), None) => format!("unknown LLVM version (no {})", stamp.display()),
    };
    step(
        NAME,
        format!("{reason}; building for LLVM {major} (takes ~1-2 min)"),
    );

    // LLVM_PREFIX for bpf-linker's build.rs: a dir whose lib/ holds
    // `libLLVM.so` -> the nightly's libLLVM. The binary gets that lib/ as
    // rpath, so it lives in the install root (not in target/, which `cargo
    // clean` would wipe), and also gets a link under the library's own
    // file name (= its soname) so bpf-linker starts even outside `rustup run`.
    let sysroot = util::stdout(nightly("rustc").args(["--print", "sysroot"]))?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let libllvm = find_libllvm(&sysroot_lib, major)?;
    let file_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    let prefix = root.join("bpf-linker-llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("failed to create {}", prefix_lib.display()))?;
    for entry in fs::read_dir(&prefix_lib)? {
        let path = entry?.path();
        let is_ours = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM"));
        if is_ours && path.is_symlink() {
            fs::remove_file(&path)
                .with_context(|| format!("failed to remove stale {}", path.display()))?;
        }
    }
    for name in [std::ffi::OsStr::new("libLLVM.so"), file_name] {
        let link = prefix_lib.join(name);
        symlink(&libllvm, &link).with_context(|| {
            format!(
                "failed to symlink {} -> {}",
                link.display(),
                libllvm.display()
            )
        })?;
    }

    // Don't leave a stamp claiming the old (or an interrupted) build.
    if stamp.exists() {
        fs::remove_file(&stamp).with_context(|| format!("failed to remove {}", stamp.display()))?;
    }
    let feature = format!("llvm-{major}");
    let mut install = Command::new(cargo());
    install
        .env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            &feature,
            "--force",
            "--root",
        ])
        .arg(&root);
    util::run(&mut install)
        .context("building bpf-linker failed (it needs crates.io access and a C toolchain)")?;
    fs::write(&stamp, format!("{major}\n"))
        .with_context(|| format!("failed to write {}", stamp.display()))?;

    // Check it starts on its own (rpath + soname link), not only via rustup.
    let out = util::stdout(Command::new(&bin).arg("--version"))
        .context("the freshly built bpf-linker does not run")?;
    step(
        NAME,
        format!(
            "built {} ({}) for LLVM {major}, stamp {}",
            bin.display(),
            out.trim(),
            stamp.display()
        ),
    );
    check_on_path(&bin);
    Ok(())
}

/// `<sysroot>/lib/libLLVM.so.<major>*` (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`).
fn find_libllvm(sysroot_lib: &Path, major: u32) -> Result<PathBuf> {
    let exact = format!("libLLVM.so.{major}");
    let prefix = format!("{exact}.");
    let mut found: Vec<PathBuf> = fs::read_dir(sysroot_lib)
        .with_context(|| format!("failed to list {}", sysroot_lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n == exact || n.starts_with(&prefix))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some(path) => Ok(path),
        None => bail!(
            "no {exact}* in the nightly sysroot {}; is the nightly toolchain complete?",
            sysroot_lib.display()
        ),
    }
}

/// rustc finds `bpf-linker` through PATH; warn if that is not `bin`.
fn check_on_path(bin: &Path) {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match which("bpf-linker") {
        Some(found) if canon(&found) == canon(bin) => {}
        Some(found) => step(
            "bpf-linker",
            format!(
                "WARNING: PATH resolves bpf-linker to {}, not {}; put {} first in PATH",
                found.display(),
                bin.display(),
                bin.parent().unwrap_or(bin).display()
            ),
        ),
        None => step(
            "bpf-linker",
            format!(
                "WARNING: bpf-linker is not on PATH; add {} to PATH",
                bin.parent().unwrap_or(bin).display()
            ),
        ),
    }
}
