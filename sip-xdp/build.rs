//! Builds the XDP program with the pinned nightly and embeds it in the
//! binary, so there is no separate object file to ship.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let toolchain_file = format!("{root}/ebpf-toolchain");
    println!("cargo:rerun-if-changed={toolchain_file}");
    // The program compiles sip-xdp-common in too; aya-build only watches the
    // eBPF crate itself.
    println!("cargo:rerun-if-changed={root}/sip-xdp-common/src");
    let toolchain = std::fs::read_to_string(&toolchain_file)?;
    let ebpf_dir = format!("{root}/sip-xdp-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "sip-xdp-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(toolchain.trim()),
    )
}
