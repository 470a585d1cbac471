//! Golden vectors of wire format version 3, checked byte for byte:
//! `tests/vectors/v3-{bin|ref}-{plain|chunked|delta}-{open|signed}.bin` (the binary carried or by
//! reference; memory as zero and raw chunks, with LZ4, or a delta; unsigned or signed with the
//! published test key), each with the same inbox section, plus `v3-minimal.bin` and
//! `v3-manifest.bin` (memory by manifest). The same agent and memory as the version-1 and -2 flag
//! vectors, addressed to node `a5` x 16 at epoch 1, captured on node `5a` x 16.
//!
//! Regenerate only for a deliberate format change: `MIELIN_WRITE_VECTORS=1 cargo test
//! --features lz4,signatures --test golden_v3`.
#![cfg(all(feature = "std", feature = "lz4", feature = "signatures"))]

mod common;

use common::v3ref;
use common::{sample_agent, SOURCE, TARGET};
use mielin_cells::mesh::{Inbox, InboxLimits};
use mielin_cells::migration::{
    Container, DecodeLimits, DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, EpochTable,
    MigrationSnapshot, Route, StateEncoding, TrustList, CHUNK_SIZE, MAX_CALL_SECTION_LEN,
    SECTION_BINARY, SECTION_CALL, SECTION_INBOX, SECTION_MEMORY, SECTION_TAIL,
};
use mielin_cells::{AgentId, Dna, NodeId, Policy};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Checks `bytes` against the vector `name`, or writes it with `MIELIN_WRITE_VECTORS`.
fn golden(name: &str, bytes: &[u8]) {
    let path = dir().join(name);
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(golden == bytes, "{name} differs from the golden vector");
}

/// The flag vectors' memory (`tests/golden_flags.rs`): zeros, repetitive text, random bytes.
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

/// The published delta base, `v1-delta-base.memory`.
fn base() -> Vec<u8> {
    std::fs::read(dir().join("v1-delta-base.memory")).unwrap()
}

/// The inbox of every flag vector: secret `5e` x 16, "ping" sent to agent `0a` x 16, "pong"
/// from agent `0b` x 16 in stream `b0` x 16 delivered by node `a0` x 16 (the cross vector's
/// inbox, `case.rs`).
fn inbox() -> Vec<u8> {
    let l = InboxLimits::default();
    let mut i = Inbox::with_secret([0x5e; 16]);
    i.send(AgentId::from_bytes([0x0a; 16]), b"ping", &l);
    i.offer(
        NodeId::from_bytes([0xa0; 16]),
        AgentId::from_bytes([0x0b; 16]),
        [0xb0; 16],
        1,
        b"pong",
        &l,
    );
    i.to_bytes()
}

fn snapshot() -> MigrationSnapshot<Vec<u8>> {
    let mut agent = sample_agent();
    agent.set_wasm_state(memory());
    MigrationSnapshot::capture_at(&agent, Some(SOURCE), 1_790_000_000)
        .with_route(Route {
            target: TARGET,
            epoch: 1,
        })
        .with_inbox(inbox())
}

#[test]
fn every_flag_combination() {
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let base = base();
    let s = snapshot();
    let mut store = DnaMap::new();
    store.insert(sample_agent().dna());
    let opts = DecodeOptions {
        dna_store: Some(&store),
        base_state: Some(&base),
        ..Default::default()
    };
    for by_ref in [false, true] {
        for (state_name, state) in [
            ("plain", StateEncoding::Raw),
            ("chunked", StateEncoding::Chunked),
            ("delta", StateEncoding::Delta { base: &base }),
        ] {
            for signed in [false, true] {
                let bytes = s
                    .serialize_with(&EncodeOptions {
                        version: Some(3),
                        dna_by_reference: by_ref,
                        state,
                        signer: signed.then_some((&signer as _, 1)),
                        ..Default::default()
                    })
                    .unwrap();
                let name = format!(
                    "v3-{}-{state_name}-{}.bin",
                    if by_ref { "ref" } else { "bin" },
                    if signed { "signed" } else { "open" }
                );
                golden(&name, &bytes);
                assert_eq!(
                    MigrationSnapshot::deserialize_with(&bytes, &opts).unwrap(),
                    s,
                    "{name}"
                );
                // The independent reading computes the same trailer and root.
                let p = v3ref::split(&bytes);
                assert_eq!(v3ref::join(&p), bytes, "{name}");
                assert_eq!(p.header[112..144], v3ref::tree_root(&memory()), "{name}");
                if signed {
                    let mut t = TrustList::<4, _>::new(TARGET, EpochTable::<4>::new());
                    t.trust(SOURCE, signer.verifying_key()).unwrap();
                    assert_eq!(t.deserialize(&bytes, &opts, 1_790_000_000).unwrap(), s);
                }
            }
        }
    }
}

/// The call section of `v3-call-signed.bin`, in `runtime::midcall::SuspendedCall`'s encoding:
/// format 1, the export `serve`, the unwind buffer at 0x2000 (4,096 bytes), host state `recv`.
const CALL: &[u8] = b"\x01\x05serve\x00\x20\x00\x00\x00\x10\x00\x00\x04\x00recv";

/// An agent captured in the middle of a call: the flag vectors' agent, memory and inbox, plus a
/// call section; the binary carried, memory chunked, signed. Containers without a call section
/// (every other vector) are agents captured between calls.
#[test]
fn suspended_call() {
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let s = snapshot().with_call(CALL.to_vec());
    let bytes = s
        .serialize_with(&EncodeOptions {
            version: Some(3),
            state: StateEncoding::Chunked,
            signer: Some((&signer as _, 1)),
            ..Default::default()
        })
        .unwrap();
    golden("v3-call-signed.bin", &bytes);
    let back = MigrationSnapshot::deserialize(&bytes).unwrap();
    assert_eq!(back.call(), Some(CALL));
    assert_eq!(back, s);
    let p = v3ref::split(&bytes);
    assert_eq!(v3ref::join(&p), bytes);
    assert_eq!(
        p.sections.iter().map(|s| s.0).collect::<Vec<_>>(),
        [
            SECTION_TAIL,
            SECTION_BINARY,
            SECTION_MEMORY,
            SECTION_INBOX,
            SECTION_CALL
        ]
    );
    let mut t = TrustList::<4, _>::new(TARGET, EpochTable::<4>::new());
    t.trust(SOURCE, signer.verifying_key()).unwrap();
    assert_eq!(
        t.deserialize(&bytes, &DecodeOptions::default(), 1_790_000_000)
            .unwrap()
            .call(),
        Some(CALL)
    );
    // A call section longer than its bound is refused by the encoder and by the decoder.
    let long = snapshot().with_call(vec![0; MAX_CALL_SECTION_LEN + 1]);
    assert!(long
        .serialize_with(&EncodeOptions {
            version: Some(3),
            ..Default::default()
        })
        .is_err());
    // The call section needs the container: versions 1 and 2 cannot carry it.
    let mut no_route = sample_agent();
    no_route.set_wasm_state(memory());
    assert!(MigrationSnapshot::capture_at(&no_route, None, 0)
        .with_call(CALL.to_vec())
        .serialize()
        .is_err());
}

/// The smallest container with a binary and memory: the 8-byte empty module, no memory, no
/// globals, the default policy, timestamp 0, no source, no inbox; annotated byte by byte in
/// `docs/wire-format.md`, which a test there compares with this file.
#[test]
fn minimal() {
    let dna = Dna::new(b"\0asm\x01\0\0\0".to_vec()).unwrap();
    let agent = mielin_cells::Agent::with_id(AgentId::from_bytes([0x11; 16]), dna);
    let bytes = MigrationSnapshot::capture_at(&agent, None, 0)
        .with_route(Route {
            target: NodeId::from_bytes([0x22; 16]),
            epoch: 1,
        })
        .serialize_with(&EncodeOptions {
            version: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(*agent.policy(), Policy::default());
    golden("v3-minimal.bin", &bytes);
    assert_eq!(bytes.len(), 232);
}

/// A container whose memory comes by manifest: the header commits to the memory's length and
/// root, no memory section; signed. (`v3-bin-plain-signed.bin` with its memory section taken
/// out and the flag set, re-signed.)
#[test]
fn manifest() {
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let plain = snapshot()
        .serialize_with(&EncodeOptions {
            version: Some(3),
            ..Default::default()
        })
        .unwrap();
    let mut p = v3ref::split(&plain);
    p.sections.retain(|s| s.0 != SECTION_MEMORY);
    p.header[6] |= 0x0a; // by manifest, signed
    let key_id = mielin_cells::migration::key_id(&signer.verifying_key());
    p.auth = key_id.to_vec();
    p.auth.extend_from_slice(&[0; 64]);
    let digest = v3ref::digest(&p);
    let mut message = b"mielin-cells/snapshot-signature/v3".to_vec();
    message.extend_from_slice(&digest);
    use mielin_cells::migration::SnapshotSigner;
    p.auth[8..].copy_from_slice(&signer.sign(&message));
    let bytes = v3ref::join(&p);
    golden("v3-manifest.bin", &bytes);
    let c = Container::new_checked(&bytes[..], &DecodeLimits::DEFAULT).unwrap();
    assert_eq!(c.memory_len(), 3 * CHUNK_SIZE);
    assert_eq!(c.memory_root(), v3ref::tree_root(&memory()));
    assert_eq!(c.key_id(), Some(key_id));
    c.check_trailer().unwrap();
}
