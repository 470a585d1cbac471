//! Golden byte vectors for wire format version 1, checked byte for byte.
//!
//! The files in `tests/vectors/` are the format: if a change makes these tests fail, the change
//! broke compatibility. Regenerate only for a deliberate format change (with a new version):
//! `MIELIN_WRITE_VECTORS=1 cargo test --test golden`.
#![cfg(feature = "std")]

mod common;

use common::{sample_agent, ADD_WASM, SOURCE};
use mielin_cells::migration::MigrationSnapshot;
use mielin_cells::{Agent, AgentId, AgentState, Dna, Policy};
use std::path::PathBuf;

const T: u64 = 1_790_000_000;

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

/// Compares `bytes` with the vector file, or writes it when regenerating.
fn check(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = vector_path(name);
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let golden = std::fs::read(&path).unwrap();
    assert_eq!(bytes, &golden[..], "{name} differs from the golden vector");
    golden
}

/// The smallest agent: an empty module, no memory, no globals, default policy, no source.
fn minimal() -> MigrationSnapshot<&'static [u8]> {
    let dna = Dna::new(&b"\0asm\x01\0\0\0"[..]).unwrap();
    let agent = Agent::with_id(AgentId::from_bytes([0x11; 16]), dna);
    MigrationSnapshot::capture_at(&agent, None, 0)
}

/// Every field set: see `common::sample_agent`.
fn full() -> MigrationSnapshot<Vec<u8>> {
    let mut agent = sample_agent();
    agent.set_state(AgentState::Migrating).unwrap();
    MigrationSnapshot::capture_at(&agent, Some(SOURCE), T)
}

#[test]
fn minimal_vector() {
    let snap = minimal();
    let golden = check("v1-minimal.bin", &snap.serialize().unwrap());
    let view = MigrationSnapshot::view(&golden).unwrap();
    assert_eq!(view, snap);
    assert_eq!(view.policy(), &Policy::default());
    assert_eq!(view.source_node(), None);
}

#[test]
fn full_vector() {
    let snap = full();
    let golden = check("v1-full.bin", &snap.serialize().unwrap());
    let view = MigrationSnapshot::view(&golden).unwrap();
    assert_eq!(view, snap);
    assert_eq!(view.wasm_binary(), ADD_WASM);
    assert_eq!(view.restore().unwrap(), full().restore().unwrap());
}

/// Version 2's smallest snapshot: the minimal agent addressed to node `22` x 16 at epoch 1.
#[test]
fn minimal_v2_vector() {
    let snap = minimal().with_route(mielin_cells::migration::Route {
        target: mielin_cells::NodeId::from_bytes([0x22; 16]),
        epoch: 1,
    });
    let golden = check("v2-minimal.bin", &snap.serialize().unwrap());
    assert_eq!(golden.len(), snap.size_bytes());
    let view = MigrationSnapshot::view(&golden).unwrap();
    assert_eq!(view, snap);
}

/// The annotated examples in `docs/wire-format.md` are the minimal vectors.
#[test]
fn spec_examples_are_the_minimal_vectors() {
    for name in ["v1-minimal.bin", "v2-minimal.bin"] {
        assert_eq!(
            spec_example(name),
            std::fs::read(vector_path(name)).unwrap()
        );
    }
}

fn spec_example(name: &str) -> Vec<u8> {
    let spec = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/wire-format.md"),
    )
    .unwrap();
    let block = spec
        .split("```text\n")
        .find(|b| b.starts_with(&format!("# {name}")))
        .expect("the spec has an example block for the vector")
        .split("```")
        .next()
        .unwrap();
    let hex: String = block
        .lines()
        .skip(1)
        .map(|l| l.split('#').next().unwrap())
        .collect::<String>()
        .split_whitespace()
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
