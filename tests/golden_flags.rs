//! Golden vectors for every combination of the version-1 wire flags, checked byte for byte:
//! `tests/vectors/v1-flags-XXXX.bin`, where XXXX is the flags word in hex.
//!
//! Regenerate only for a deliberate format change: `MIELIN_WRITE_VECTORS=1 cargo test
//! --all-features --test golden_flags`. (LZ4 output is that of lz4_flex 0.14; Ed25519
//! signatures are deterministic.)
#![cfg(all(feature = "std", feature = "lz4", feature = "signatures"))]

mod common;

use common::{sample_agent, SOURCE};
use mielin_cells::migration::{
    DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, MigrationSnapshot, StateEncoding,
    TrustList, CHUNK_SIZE,
};
use std::path::PathBuf;

/// Three chunks: zeros, repetitive text, pseudo-random bytes.
fn memory() -> Vec<u8> {
    let mut m = vec![0u8; 3 * CHUNK_SIZE];
    for (i, b) in m[CHUNK_SIZE..2 * CHUNK_SIZE].iter_mut().enumerate() {
        *b = b"heap object "[i % 12];
    }
    let mut x: u32 = 0x1234_5678;
    for b in &mut m[2 * CHUNK_SIZE..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    m
}

/// The base a delta applies to: the same memory before two bytes changed.
fn base() -> Vec<u8> {
    let mut b = memory();
    b[CHUNK_SIZE + 5] ^= 0x55;
    b[2 * CHUNK_SIZE + 7] ^= 0x55;
    b
}

/// The delta base and the agent's module are published beside the vectors
/// (`tests/vectors/v1-delta-base.memory`, `tests/vectors/add.wasm`, described in
/// `tests/vectors/README.md`), so the delta vectors can be rebuilt from the files alone.
#[test]
fn published_delta_base_and_module() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(dir.join("v1-delta-base.memory"), base()).unwrap();
        std::fs::write(dir.join("add.wasm"), common::ADD_WASM).unwrap();
    }
    let published = std::fs::read(dir.join("v1-delta-base.memory")).unwrap();
    assert!(
        published == base(),
        "v1-delta-base.memory is not the delta vectors' base"
    );
    let module = std::fs::read(dir.join("add.wasm")).unwrap();
    assert_eq!(module, common::ADD_WASM);
}

#[test]
fn every_flag_combination() {
    let mut agent = sample_agent();
    agent.set_wasm_state(memory());
    let snapshot = MigrationSnapshot::capture_at(&agent, Some(SOURCE), 1_790_000_000);
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let base = base();
    let mut store = DnaMap::new();
    store.insert(agent.dna());
    let opts = DecodeOptions {
        dna_store: Some(&store),
        base_state: Some(&base),
        ..Default::default()
    };

    let mut sizes = Vec::new();
    for by_ref in [false, true] {
        for state in [
            StateEncoding::Raw,
            StateEncoding::Chunked,
            StateEncoding::Delta { base: &base },
        ] {
            for signed in [false, true] {
                let encode = EncodeOptions {
                    dna_by_reference: by_ref,
                    state,
                    signer: signed.then_some((&signer as _, 1)),
                };
                let bytes = snapshot.serialize_with(&encode).unwrap();
                let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
                let name = format!("v1-flags-{flags:04x}.bin");
                let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/vectors")
                    .join(&name);
                if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
                    std::fs::write(&path, &bytes).unwrap();
                }
                let golden = std::fs::read(&path).unwrap();
                assert!(golden == bytes, "{name} differs from the golden vector");

                let decoded = if signed {
                    let mut trust = TrustList::<1, 1>::new(true);
                    trust.trust(signer.verifying_key()).unwrap();
                    trust.deserialize(&golden, &opts).unwrap()
                } else {
                    MigrationSnapshot::deserialize_with(&golden, &opts).unwrap()
                };
                assert_eq!(decoded, snapshot, "{name}");
                sizes.push((flags, bytes.len()));
            }
        }
    }
    sizes.sort();
    let flags: Vec<u16> = sizes.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        flags,
        [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd]
    );
}
