use aya_build::{Package, Toolchain};

/// Builds `monitor-ebpf` with the nightly toolchain for the BPF target; the
/// object is embedded in the binary with `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [Package {
            name: "monitor-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../monitor-ebpf"),
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}
