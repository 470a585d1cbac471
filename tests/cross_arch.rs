//! The cross-architecture vector: the snapshot of `tests/vectors/case.rs` must serialize to the
//! bytes in `tests/vectors/v1-cross.bin` on every architecture (x86_64 and aarch64 here, the
//! Cortex-M firmware in `examples/firmware-cortex-m`), and those bytes must restore to the same
//! agent everywhere.
//!
//! `MIELIN_CROSS_VECTOR=path` checks another file (CI uses it to show a corrupted copy fails);
//! `MIELIN_WRITE_VECTORS=1` rewrites the vector, only for a deliberate format change.
#![cfg(feature = "std")]
// Version 1, 2 and 3 vectors: `v1-cross.bin`, `v2-cross.bin`, `v3-cross.bin`.

#[path = "vectors/case.rs"]
mod case;

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::AgentState;
use std::path::PathBuf;

fn vector() -> Vec<u8> {
    let path = std::env::var_os("MIELIN_CROSS_VECTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1-cross.bin")
        });
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn memory() -> Vec<u8> {
    let mut m = vec![0u8; case::MEMORY_LEN];
    case::fill_memory(&mut m);
    m
}

#[test]
fn this_architecture_writes_the_vector_bytes() {
    let memory = memory();
    let mut agent = case::agent(&case::WASM[..], &memory[..]).unwrap();
    let mut manager = MigrationManager::with_capacity::<4>(case::SOURCE);
    let snapshot = case::migrate(&mut agent, &mut manager).unwrap().unwrap();
    let mut buf = vec![0u8; 4096];
    let n = snapshot.serialize_into(&mut buf).unwrap();
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1-cross.bin");
        std::fs::write(path, &buf[..n]).unwrap();
    }
    assert!(
        buf[..n] == vector()[..],
        "serialized bytes differ from the vector"
    );

    // Version 2: the same snapshot addressed to the target, into the same kind of buffer.
    let routed = snapshot.with_route(case::route());
    let n = routed.serialize_into(&mut buf).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v2-cross.bin");
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &buf[..n]).unwrap();
    }
    assert!(
        buf[..n] == std::fs::read(&path).unwrap()[..],
        "version-2 bytes differ from the vector"
    );
    let view = MigrationSnapshot::view(&buf[..n]).unwrap();
    assert_eq!(view.route(), Some(case::route()));
    assert_eq!(view.restore().unwrap(), routed.restore().unwrap());

    // Version 3: the container, with the inbox section, written without an allocator.
    let contained = routed.with_inbox(&case::INBOX[..]);
    let n = contained
        .serialize_into_with(&case::v3_options(), &mut buf)
        .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v3-cross.bin");
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &buf[..n]).unwrap();
    }
    assert!(
        buf[..n] == std::fs::read(&path).unwrap()[..],
        "version-3 bytes differ from the vector"
    );
    let mut memory_out = vec![0u8; case::MEMORY_LEN];
    let decoded = MigrationSnapshot::decode_into(
        &buf[..n],
        &mielin_cells::migration::DecodeOptions::default(),
        &mut memory_out,
    )
    .unwrap();
    assert_eq!(decoded.inbox(), Some(&case::INBOX[..]));
    assert_eq!(decoded.restore().unwrap(), contained.restore().unwrap());
}

/// The inbox bytes of the cross vector are what the library encodes for the state they
/// describe (so the vector pins the inbox section too).
#[test]
fn the_inbox_bytes_are_the_library_encoding() {
    use mielin_cells::mesh::{Inbox, InboxLimits};
    use mielin_cells::{AgentId, NodeId};
    let l = InboxLimits::default();
    let mut i = Inbox::with_secret([0x5e; 16]);
    assert!(i.send(AgentId::from_bytes([0x0a; 16]), b"ping", &l));
    i.offer(
        NodeId::from_bytes([0xa0; 16]),
        AgentId::from_bytes([0x0b; 16]),
        [0xb0; 16],
        1,
        b"pong",
        &l,
    );
    assert_eq!(i.to_bytes(), case::INBOX);
    assert_eq!(Inbox::decode(&case::INBOX), Ok(i));
}

#[test]
fn the_vector_restores_to_the_same_agent() {
    let bytes = vector();
    let memory = memory();
    let mut agent = case::agent(case::WASM.to_vec(), memory).unwrap();
    agent.set_state(AgentState::Migrating).unwrap();

    let view = MigrationSnapshot::view(&bytes).unwrap();
    assert_eq!(view.source_node(), Some(case::SOURCE));
    assert_eq!(view.timestamp(), case::TIMESTAMP);
    assert_eq!(view.restore().unwrap(), agent);
    assert_eq!(
        MigrationSnapshot::deserialize(&bytes)
            .unwrap()
            .restore()
            .unwrap(),
        agent
    );
}
