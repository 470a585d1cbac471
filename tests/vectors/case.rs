//! The inputs of the cross-architecture vector (`tests/vectors/v1-cross.bin`).
//!
//! This one file is compiled into the host test (`tests/cross_arch.rs`) and into the Cortex-M
//! firmware (`examples/firmware-cortex-m`), so every architecture builds the same agent from the
//! same inputs and must serialize it to the same bytes. It needs neither `std` nor `alloc`.
#![allow(dead_code)]

use mielin_cells::{Arch, CellError, GlobalValue, NodeId, NodeStatus, Policy};

/// A real 41-byte module exporting `add(i32, i32) -> i32`, as it sits in flash.
pub static WASM: [u8; 41] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01,
    0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, b'a', b'd', b'd', 0x00, 0x00, 0x0a, 0x09,
    0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
];

/// SHA-256 of [`WASM`], from `sha256sum` (not from this crate).
pub const WASM_SHA256: [u8; 32] = [
    0xf6, 0x1f, 0xd6, 0x2f, 0x57, 0xc4, 0x12, 0x69, 0xc3, 0xc2, 0x3f, 0x36, 0x0e, 0xea, 0xf1, 0x09,
    0x0b, 0x1d, 0xb9, 0xc3, 0x86, 0x51, 0x10, 0x66, 0x74, 0xd4, 0x8b, 0xc6, 0x5d, 0xba, 0x88, 0xba,
];

/// The agent's id is `AgentId::derive(WASM_SHA256, INSTANCE)`: no RNG needed.
pub const INSTANCE: u64 = 7;

/// Linear memory carried by the snapshot.
pub const MEMORY_LEN: usize = 2048;

/// Fills the memory with a pattern that shows any dropped, moved or flipped byte.
pub fn fill_memory(memory: &mut [u8]) {
    let mut x: u32 = 0x9e37_79b9;
    for b in memory.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x >> 24) as u8;
    }
}

/// The instance's mutable globals: a stack pointer and one of each other type, the floats
/// chosen to catch anything but a bit-exact copy.
pub const GLOBALS: [GlobalValue; 4] = [
    GlobalValue::I32(65_536 - 256),
    GlobalValue::I64(-0x0123_4567_89ab_cdef),
    GlobalValue::F32(0x7fa0_0001), // a signalling NaN with a payload
    GlobalValue::F64(0x8000_0000_0000_0000), // -0.0
];

pub fn policy() -> Result<Policy, CellError> {
    Policy::new(25, 80, &[Arch::Arm, Arch::Aarch64])
}

/// Capture time, Unix seconds.
pub const TIMESTAMP: u64 = 1_790_000_000;

/// The node the agent is captured on.
pub const SOURCE: NodeId = NodeId::from_bytes([0x5a; 16]);

/// Candidate targets and what they report.
pub const NODE_IDS: [NodeId; 4] = [
    NodeId::from_bytes([0xa0; 16]),
    NodeId::from_bytes([0xa1; 16]),
    NodeId::from_bytes([0xa2; 16]),
    NodeId::from_bytes([0xa3; 16]),
];
pub const NODES: [NodeStatus; 4] = [
    // Breaks the battery rule.
    NodeStatus {
        battery_percent: 20,
        latency_ms: 5,
        arch: Arch::Arm,
    },
    // Eligible, second preference.
    NodeStatus {
        battery_percent: 90,
        latency_ms: 10,
        arch: Arch::Aarch64,
    },
    // Eligible, first preference: the pick.
    NodeStatus {
        battery_percent: 60,
        latency_ms: 30,
        arch: Arch::Arm,
    },
    // Breaks the latency rule.
    NodeStatus {
        battery_percent: 100,
        latency_ms: 200,
        arch: Arch::Arm,
    },
];
pub const EXPECTED_TARGET: usize = 2;

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::{Agent, AgentId, AgentState, Dna};

/// Builds the agent from the case's inputs, in state `Running`. `wasm` must be [`WASM`] and
/// `memory` [`MEMORY_LEN`] bytes filled by [`fill_memory`], in whatever storage the caller has.
pub fn agent<B: AsRef<[u8]> + Default>(wasm: B, memory: B) -> Result<Agent<B>, CellError> {
    let dna = Dna::with_expected_hash(wasm, &WASM_SHA256)?;
    let mut agent = Agent::with_id(AgentId::derive(dna.hash(), INSTANCE), dna);
    agent.set_policy(policy()?);
    agent.set_state(AgentState::Running)?;
    agent.set_wasm_state(memory);
    agent.set_globals(&GLOBALS)?;
    Ok(agent)
}

/// Picks the target with the agent's policy and initiates the migration there: the agent moves
/// to `Migrating` and the returned snapshot is the vector's content. `None` if the policy picks
/// another node than [`EXPECTED_TARGET`].
pub fn migrate<B: AsRef<[u8]> + Clone, const N: usize>(
    agent: &mut Agent<B>,
    manager: &mut MigrationManager<N>,
) -> Result<Option<MigrationSnapshot<B>>, CellError> {
    match agent.policy().select(&NODES) {
        Some(EXPECTED_TARGET) => {}
        _ => return Ok(None),
    }
    manager
        .initiate_migration_at(agent, NODE_IDS[EXPECTED_TARGET], TIMESTAMP)
        .map(Some)
}

/// The route of the version-2 cross-architecture vector (`v2-cross.bin`): the snapshot of
/// [`migrate`] addressed to the node the policy picks, at epoch 1.
pub fn route() -> mielin_cells::migration::Route {
    mielin_cells::migration::Route {
        target: NODE_IDS[EXPECTED_TARGET],
        epoch: 1,
    }
}

/// The agent's messaging state in the version-3 cross vector (`v3-cross.bin`): the inbox
/// section of an agent with the secret `5e` x 16 that sent "ping" to agent `0a` x 16 (not yet
/// acknowledged) and holds "pong" from agent `0b` x 16 in its stream `b0` x 16, delivered by
/// node `a0` x 16. Written out byte by byte (its layout is in `docs/wire-format.md`, "Inbox
/// section"); `tests/cross_arch.rs` checks that the library encodes that state to exactly
/// these bytes.
pub static INBOX: [u8; 150] = [
    // the agent's secret
    0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e,
    // next sequence number per addressee: 1 entry, agent 0a.., 1
    0x01, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // last sequence number per (sender, stream): 1 entry, agent 0b.., stream b0.., 1, first
    // delivered by node a0..
    0x01, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
    0x0b, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0, 0xb0,
    0xb0, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0,
    0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0,
    // mailbox: 1 message from agent 0b.., 4 bytes "pong"
    0x01, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
    0x0b, 0x04, b'p', b'o', b'n', b'g',
    // outbox: 1 message to agent 0a.., sequence 1, 4 bytes "ping"
    0x01, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, b'p', b'i', b'n', b'g',
];

/// The version-3 cross vector's options: the container, memory as zero and raw chunks (the same
/// bytes with or without an allocator or LZ4), unsigned.
pub fn v3_options<'a>() -> mielin_cells::migration::EncodeOptions<'a> {
    mielin_cells::migration::EncodeOptions {
        version: Some(3),
        ..Default::default()
    }
}
