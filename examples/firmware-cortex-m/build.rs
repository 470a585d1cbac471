//! Puts `memory.x` where cortex-m-rt's `link.x` finds it, and names the cross-architecture
//! vector the firmware embeds (`MIELIN_CROSS_VECTOR` overrides it, as CI does to show that a
//! corrupted vector fails).
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let vector = std::env::var_os("MIELIN_CROSS_VECTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../tests/vectors/v1-cross.bin"));
    let vector = vector
        .canonicalize()
        .expect("the cross-architecture vector exists");
    println!("cargo:rustc-env=MIELIN_CROSS_VECTOR={}", vector.display());
    println!("cargo:rerun-if-env-changed=MIELIN_CROSS_VECTOR");
    println!("cargo:rerun-if-changed={}", vector.display());
}
