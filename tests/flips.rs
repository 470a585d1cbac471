//! Every bit of every version-2, version-3 and mesh vector in `tests/vectors/`, flipped one at a
//! time: a snapshot or container with any flipped bit is refused (`docs/security.md`: "every
//! flipped bit is caught"), and a mesh frame either is refused or, where the field is one that
//! only the transport protects (listed in `docs/protocol.md`, "What protects a frame"), decodes
//! to a frame that visibly differs — never silently to the same one. (Version 1's exhaustive
//! flips are in `tests/snapshot.rs`.)
#![cfg(all(feature = "std", feature = "lz4", feature = "signatures"))]

use mielin_cells::mesh::frame::Repr;
use mielin_cells::migration::{DecodeOptions, DnaMap, MigrationSnapshot};
use mielin_cells::Dna;
use std::path::PathBuf;

fn vectors(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".bin")
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Every `MIELIN_FLIP_STRIDE`-th bit (default 1: every bit). CI's aarch64 step, which runs the
/// tests under an emulator, sets a stride; the x86_64 steps flip every bit (about 25 s of wall
/// time on 2 cores in the unoptimized test profile).
fn stride() -> usize {
    std::env::var("MIELIN_FLIP_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Flips every bit of `bytes` (or every stride-th) on two threads; returns the bits `accepted`
/// says yes to.
fn flips(bytes: &[u8], accepted: &(dyn Fn(&[u8]) -> bool + Sync)) -> Vec<usize> {
    let bits = bytes.len() * 8;
    let threads = 2;
    let stride = stride();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut b = bytes.to_vec();
                    let mut found = Vec::new();
                    for bit in (t * stride..bits).step_by(threads * stride) {
                        b[bit / 8] ^= 1 << (bit % 8);
                        if accepted(&b) {
                            found.push(bit);
                        }
                        b[bit / 8] ^= 1 << (bit % 8);
                    }
                    found
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
#[cfg_attr(miri, ignore = "exhaustive: a million decodes")]
fn every_flipped_bit_of_a_snapshot_vector_is_refused() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let base = std::fs::read(dir.join("v1-delta-base.memory")).unwrap();
    let mut store = DnaMap::new();
    store.insert(&Dna::new(std::fs::read(dir.join("add.wasm")).unwrap()).unwrap());
    // v3-manifest.bin's memory is not in its bytes: it is checked through the container view.
    let mut all = vectors("v2-");
    all.extend(vectors("v3-"));
    assert!(all.len() >= 14 + 15, "{} vectors", all.len());
    let mut total = 0;
    for (name, good) in &all {
        let accepted = |b: &[u8]| {
            let opts = DecodeOptions {
                dna_store: Some(&store),
                base_state: Some(&base),
                ..Default::default()
            };
            if name == "v3-manifest.bin" {
                // Everything but the memory, which comes in chunk frames: the trailer, and the
                // binary against the DNA hash.
                let c = mielin_cells::migration::Container::new_checked(b, &opts.limits);
                return c.is_ok_and(|c| {
                    let binary = c.section(mielin_cells::migration::SECTION_BINARY);
                    c.check_trailer().is_ok()
                        && binary.is_some_and(|b| Dna::with_expected_hash(b, &c.dna_hash()).is_ok())
                });
            }
            MigrationSnapshot::deserialize_with(b, &opts).is_ok()
        };
        assert!(accepted(good), "{name} itself must decode");
        let bad = flips(good, &accepted);
        assert!(bad.is_empty(), "{name}: flipped bits accepted: {bad:?}");
        total += good.len() * 8;
    }
    assert!(
        total > 1_000_000,
        "{total} bits, every {}-th flipped",
        stride()
    );
}

/// The bytes of each mesh frame kind that only the transport protects (the protocol keeps no
/// checksum of its own; QUIC's AEAD and the serial link's CRC do): offsets into the frame.
/// Everything else — magic, version, kind, flag bits, lengths, the epoch's top 16 bits (above
/// `MAX_EPOCH`), a status outside its range — is refused by the decoder itself.
#[allow(clippy::single_range_in_vec_init)] // a list of ranges, one of them here
fn transport_only(name: &str, len: usize) -> Vec<std::ops::Range<usize>> {
    // The kind (control frames of one length turn into each other: Abort into Done), the
    // agent id and the epoch's low six bytes are in every frame.
    let mut r = vec![3..4, 4..20, 20..26];
    r.extend(match name {
        "mesh-offer.bin" => vec![28..68], // DNA hash, snapshot and DNA lengths
        "mesh-refuse.bin" => vec![28..29], // the reason (unknown ones are kept)
        "mesh-transfer.bin" => vec![28..29, 33..len], // DNA flag; the snapshot (host-verified)
        "mesh-moved.bin" => vec![28..44], // the node
        // sender, stream, sequence; payload
        "mesh-deliver.bin" | "mesh-deliver-longest.bin" => vec![28..68, 70..len],
        "mesh-delivered.bin" => vec![28..52, 52..53], // sender, sequence, status
        "mesh-epoch-query.bin" => vec![28..44],       // generation, boot
        // generation, boot, generation seen; the state (another valid one)
        "mesh-epoch-answer.bin" => vec![28..52, 52..53],
        _ => vec![],
    });
    r
}

#[test]
fn every_flipped_bit_of_a_mesh_vector_is_refused_or_visibly_another_frame() {
    let all = vectors("mesh-");
    assert_eq!(all.len(), 15);
    for (name, good) in &all {
        let original = Repr::decode(good).unwrap();
        let protected = transport_only(name, good.len());
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let byte = bit / 8;
            match Repr::decode(&b) {
                Err(_) => {}
                Ok(r) => {
                    assert!(
                        protected.iter().any(|p| p.contains(&byte)),
                        "{name}: bit {bit} (byte {byte}) accepted outside the fields the \
                         transport protects"
                    );
                    assert_ne!(r, original, "{name}: bit {bit} decodes to the same frame");
                }
            }
        }
    }
}
