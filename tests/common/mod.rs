//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod v3ref;

use mielin_cells::{Agent, AgentId, AgentState, Arch, Dna, GlobalValue, NodeId, Policy};

/// The bytes of the file `name` in `tests/` (a guest module, a vector).
pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(name),
    )
    .unwrap()
}

/// A real 41-byte module exporting `add(i32, i32) -> i32`.
pub const ADD_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f, // type: (i32, i32) -> i32
    0x03, 0x02, 0x01, 0x00, // function 0 has type 0
    0x07, 0x07, 0x01, 0x03, b'a', b'd', b'd', 0x00, 0x00, // export "add" = func 0
    0x0a, 0x09, 0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a,
    0x0b, // local.get 0/1, i32.add
];

/// A valid module of exactly `len` bytes (at least 16): the header and one custom section named
/// "pad" whose payload is a deterministic byte pattern.
pub fn wasm_of_len(len: usize) -> Vec<u8> {
    assert!(len >= 16);
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    out.push(0); // custom section
                 // The section size is a 5-byte padded LEB128 so the total length is exact.
    let size = len - out.len() - 5;
    let mut s = size as u32;
    for i in 0..5 {
        let mut byte = (s & 0x7f) as u8;
        s >>= 7;
        if i < 4 {
            byte |= 0x80;
        }
        out.push(byte);
    }
    out.extend_from_slice(&[3, b'p', b'a', b'd']);
    let mut x: u32 = 0x1234_5678;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    out
}

pub const SOURCE: NodeId = NodeId::from_bytes([0x5a; 16]);
pub const TARGET: NodeId = NodeId::from_bytes([0xa5; 16]);

/// The agent the golden vectors and the README flow use: every field set to something that
/// would show if it were dropped.
pub fn sample_agent() -> Agent<Vec<u8>> {
    let dna = Dna::new(ADD_WASM.to_vec()).unwrap();
    let id = AgentId::derive(dna.hash(), 1);
    let mut agent = Agent::with_id(id, dna);
    agent.set_state(AgentState::Running).unwrap();
    agent.set_policy(Policy::new(25, 150, &[Arch::Aarch64, Arch::Arm]).unwrap());
    agent.set_wasm_state((0u8..64).collect());
    agent
        .set_globals(&[
            GlobalValue::I32(65_536),
            GlobalValue::I64(-1),
            GlobalValue::F32(0x7fc0_0001), // a NaN with a payload
            GlobalValue::from_f64(-0.0),
        ])
        .unwrap();
    agent
}

/// Recomputes the SHA-256 trailer, so that a deliberate change reaches the checks after it.
pub fn reseal(bytes: &mut [u8]) {
    let n = bytes.len() - mielin_cells::migration::TRAILER_LEN;
    let digest = mielin_cells::sha256(&bytes[..n]);
    bytes[n..].copy_from_slice(&digest);
}

/// Where a version-2 snapshot's tail starts: after the 160-byte envelope, the binary and the
/// state, whose lengths the envelope gives at offsets 144 and 152.
pub fn v2_tail_start(bytes: &[u8]) -> usize {
    let len = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    160 + len(144) + len(152)
}

/// Recomputes a version-2 trailer: SHA-256 of everything but the binary and state fields (the
/// envelope, then the tail and any signature block).
pub fn reseal_v2(bytes: &mut [u8]) {
    let n = bytes.len() - mielin_cells::migration::TRAILER_LEN;
    let mut covered = bytes[..160].to_vec();
    covered.extend_from_slice(&bytes[v2_tail_start(bytes)..n]);
    bytes[n..].copy_from_slice(&mielin_cells::sha256(&covered));
}
