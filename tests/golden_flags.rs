//! Golden vectors for every combination of the wire flags in versions 1 and 2, checked byte for
//! byte: `tests/vectors/vN-flags-XXXX.bin`, where N is the version and XXXX the flags word in
//! hex. Version 2's are addressed to `TARGET` at epoch 1.
//!
//! Regenerate only for a deliberate format change: `MIELIN_WRITE_VECTORS=1 cargo test
//! --all-features --test golden_flags`. (LZ4 output is that of lz4_flex 0.14; Ed25519
//! signatures are deterministic.)
#![cfg(all(feature = "std", feature = "lz4", feature = "signatures"))]

mod common;

use common::{sample_agent, SOURCE, TARGET};
use mielin_cells::migration::{
    verify_v1, DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, EpochTable, MigrationSnapshot,
    Route, StateEncoding, TrustList, CHUNK_SIZE,
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
    for version in [1u16, 2] {
        let snapshot = match version {
            1 => snapshot.clone(),
            _ => snapshot.clone().with_route(Route {
                target: TARGET,
                epoch: 1,
            }),
        };
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
                        ..Default::default()
                    };
                    let bytes = snapshot.serialize_with(&encode).unwrap();
                    assert_eq!(bytes[4..6], version.to_le_bytes());
                    let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
                    let name = format!("v{version}-flags-{flags:04x}.bin");
                    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/vectors")
                        .join(&name);
                    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
                        std::fs::write(&path, &bytes).unwrap();
                    }
                    let golden = std::fs::read(&path).unwrap();
                    assert!(golden == bytes, "{name} differs from the golden vector");

                    let decoded = match (signed, version) {
                        (true, 1) => {
                            // Trust lists take version 2 only; the version-1 signature still
                            // verifies over its bare digest.
                            assert_eq!(verify_v1(&golden, &signer.verifying_key()).unwrap(), 1);
                            MigrationSnapshot::deserialize_with(&golden, &opts).unwrap()
                        }
                        (true, _) => {
                            let mut trust = TrustList::<1, _>::new(TARGET, EpochTable::<1>::new());
                            trust.trust(SOURCE, signer.verifying_key()).unwrap();
                            trust.deserialize(&golden, &opts, 1_790_000_000).unwrap()
                        }
                        _ => MigrationSnapshot::deserialize_with(&golden, &opts).unwrap(),
                    };
                    assert_eq!(decoded, snapshot, "{name}");
                    sizes.push((version, flags, bytes.len()));
                }
            }
        }
    }
    sizes.sort();
    for version in [1, 2] {
        let flags: Vec<u16> = sizes
            .iter()
            .filter(|(v, _, _)| *v == version)
            .map(|(_, f, _)| *f)
            .collect();
        assert_eq!(
            flags,
            [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd]
        );
    }
}
