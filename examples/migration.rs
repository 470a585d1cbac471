//! Two nodes, one agent: capture on the source, move the bytes, restore on the target, and check
//! that the same agent arrived.
//!
//! `cargo run --example migration`

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::{Agent, AgentState, CellError, GlobalValue, NodeId};

/// A real 41-byte module exporting `add(i32, i32) -> i32`.
const ADD_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01,
    0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, b'a', b'd', b'd', 0x00, 0x00, 0x0a, 0x09,
    0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), CellError> {
    let source = NodeId::new_v4();
    let target = NodeId::new_v4();

    // On the source node: an agent that has run and stopped at a quiescent point. A WebAssembly
    // runtime would hand over its linear memory and globals here; this example makes one page of
    // memory with a recognisable pattern and a stack pointer.
    let mut agent = Agent::new(ADD_WASM.to_vec())?;
    agent.set_state(AgentState::Running)?;
    let memory: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    agent.set_wasm_state(memory);
    agent.set_globals(&[GlobalValue::I32(65_536 - 128)])?;

    let mut manager = MigrationManager::new(source);
    let snapshot = manager.initiate_migration(&mut agent, target)?;
    let wire = snapshot.serialize()?;
    println!("source {source}");
    println!("  agent      {}", agent.id());
    println!("  state      {}", agent.state());
    println!(
        "  DNA        {} ({} bytes)",
        hex(agent.dna().hash()),
        agent.dna().size()
    );
    println!("  memory     {} bytes", agent.wasm_state().len());
    println!("  globals    {:?}", agent.globals());
    println!(
        "  snapshot   {} bytes on the wire (size_bytes() = {})",
        wire.len(),
        snapshot.size_bytes()
    );

    // On the target node: only `wire` arrives. Decoding checks the trailer digest and the DNA
    // hash before anything is trusted.
    let received = MigrationSnapshot::deserialize(&wire)?;
    let mut restored = received.restore()?;
    restored.set_state(AgentState::Running)?;
    println!("target {target}");
    println!("  agent      {}", restored.id());
    println!("  state      {}", restored.state());
    println!("  DNA        {}", hex(restored.dna().hash()));
    println!(
        "  verified   DNA hash recomputed: {:?}",
        restored.dna().verify()
    );
    println!("  memory     {} bytes", restored.wasm_state().len());
    println!("  globals    {:?}", restored.globals());
    println!("  from       {:?}", received.source_node());

    // Back on the source: the target has it, so the source copy ends.
    manager.complete_migration(&mut agent)?;

    let same = restored.id() == agent.id()
        && restored.dna().hash() == agent.dna().hash()
        && restored.wasm_state() == agent.wasm_state()
        && restored.globals() == agent.globals()
        && restored.policy() == agent.policy();
    println!(
        "same id, DNA hash, memory, globals and policy: {same}; source is now {}",
        agent.state()
    );
    if !same {
        std::process::exit(1);
    }
    Ok(())
}
