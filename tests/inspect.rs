//! `examples/inspect.rs`, the operator's view of a snapshot file, run on the golden vectors and
//! on corrupted copies: each check must say ok on a good file and name the check that fails on a
//! bad one, and the exit code must follow.

use std::path::{Path, PathBuf};

// The example itself, compiled into this test: what is tested is what `cargo run --example
// inspect` runs, never a stale binary.
#[allow(dead_code)]
#[path = "../examples/inspect.rs"]
mod inspect;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
/// The published test key of the signed vectors (tests/vectors/README.md).
const TEST_KEY: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";

fn run(file: &Path, extra: &[&str]) -> (u8, String) {
    let mut out = String::new();
    let args = std::iter::once(file.to_str().unwrap())
        .chain(extra.iter().copied())
        .map(String::from);
    let code = inspect::run(args, &mut out);
    (code, out)
}

fn vector(name: &str) -> PathBuf {
    Path::new(VECTORS).join(name)
}

fn with_everything(file: &Path) -> (u8, String) {
    let dna = vector("add.wasm");
    let base = vector("v1-delta-base.memory");
    run(
        file,
        &[
            "--dna",
            dna.to_str().unwrap(),
            "--base",
            base.to_str().unwrap(),
            "--key",
            TEST_KEY,
        ],
    )
}

/// The result line of one check (indented under "checks").
fn line<'a>(text: &'a str, check: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with("  ") && l.trim_start().starts_with(check))
        .unwrap_or_else(|| panic!("no {check} line in:\n{text}"))
}

/// Whether that check passed.
fn ok(text: &str, check: &str) -> bool {
    line(text, check).starts_with(&format!("  {check:<10} ok"))
}

/// Whether it failed.
fn failed(text: &str, check: &str) -> bool {
    line(text, check).starts_with(&format!("  {check:<10} FAILED"))
}

#[test]
fn every_signed_vector_passes_every_check() {
    for version in ["v1", "v2"] {
        for flags in ["0008", "0009", "000a", "000b", "000c", "000d"] {
            let (code, text) = with_everything(&vector(&format!("{version}-flags-{flags}.bin")));
            for check in ["frame", "trailer", "decode"] {
                assert!(ok(&text, check), "{version} {flags}:\n{text}");
            }
            let signature = line(&text, "signature");
            if version == "v2" {
                assert_eq!(code, 0, "{text}");
                assert!(ok(&text, "signature"), "{text}");
                assert!(text.contains("key id fe812c12f3ab4ce6"), "{text}");
            } else {
                // Trust lists take version 2 only: a v1 signature binds no target.
                assert_eq!(code, 1, "{text}");
                assert!(signature.contains("binds no target"), "{text}");
            }
            assert!(text.contains("policy     battery >= 25%"), "{text}");
        }
    }
}

#[test]
fn unsigned_vectors_decode_and_say_what_is_not_checked() {
    for name in [
        "v2-cross.bin",
        "v2-minimal.bin",
        "v1-cross.bin",
        "v1-full.bin",
    ] {
        let (code, text) = run(&vector(name), &[]);
        assert_eq!(code, 0, "{name}:\n{text}");
        assert!(ok(&text, "decode"), "{text}");
        assert!(line(&text, "signature").contains("not checked"), "{text}");
    }
    // With a key, an unsigned snapshot is what a trusting node refuses.
    let (code, text) = with_everything(&vector("v2-cross.bin"));
    assert_eq!(code, 1);
    assert!(failed(&text, "signature"), "{text}");
}

#[test]
fn a_corrupted_file_names_the_check_that_fails() {
    let good = std::fs::read(vector("v2-flags-000a.bin")).unwrap();
    let dir = std::env::temp_dir().join(format!("mielin-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // A flipped bit in the envelope (the timestamp): the trailer.
    let mut bad = good.clone();
    bad[100] ^= 1;
    let file = dir.join("envelope.bin");
    std::fs::write(&file, &bad).unwrap();
    let (code, text) = with_everything(&file);
    assert_eq!(code, 1, "{text}");
    assert!(failed(&text, "trailer"), "{text}");

    // A flipped bit in the memory, which the trailer does not cover: the memory root.
    let mut bad = good.clone();
    bad[300] ^= 1;
    let file = dir.join("memory.bin");
    std::fs::write(&file, &bad).unwrap();
    let (code, text) = with_everything(&file);
    assert_eq!(code, 1, "{text}");
    assert!(ok(&text, "trailer"), "{text}");
    assert!(failed(&text, "decode"), "{text}");

    // A length past the default limits: the frame, and nothing panics.
    let mut bad = good;
    bad[104..112].copy_from_slice(&u64::MAX.to_le_bytes()); // memory_len
    let file = dir.join("huge.bin");
    std::fs::write(&file, &bad).unwrap();
    let (code, text) = with_everything(&file);
    assert_eq!(code, 1, "{text}");
    assert!(failed(&text, "frame"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn by_reference_without_the_dna_says_what_to_give() {
    let (code, text) = run(&vector("v2-flags-0001.bin"), &[]);
    assert_eq!(code, 1);
    assert!(line(&text, "decode").contains("--dna"), "{text}");
    let (code, text) = run(
        &vector("v2-flags-0004.bin"),
        &["--dna", vector("add.wasm").to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(line(&text, "decode").contains("--base"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, text) = run(&vector("v2-cross.bin"), &["--key", "xyz"]);
    assert_eq!(code, 2, "{text}");
    let (code, _) = run(Path::new("/nonexistent/snapshot.bin"), &[]);
    assert_eq!(code, 2);
}

/// Hostile files: nothing panics, and something fails (exit 1): empty, short, every prefix of
/// a vector, another magic, an unknown version.
#[test]
fn hostile_files_fail_without_panicking() {
    let good = std::fs::read(vector("v2-flags-000d.bin")).unwrap();
    let dir = std::env::temp_dir().join(format!("mielin-inspect-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<Vec<u8>> = (0..good.len())
        .step_by(7)
        .map(|n| good[..n].to_vec())
        .collect();
    let mut magic = good.clone();
    magic[0] = b'X';
    let mut version = good.clone();
    version[4] = 3;
    files.extend([magic, version, vec![0xff; 300]]);
    let file = dir.join("hostile.bin");
    for bytes in &files {
        std::fs::write(&file, bytes).unwrap();
        let (code, text) = with_everything(&file);
        assert_eq!(code, 1, "{} bytes:\n{text}", bytes.len());
        assert!(text.contains("FAILED"), "{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
