//! The borrowed core on its own: this test uses nothing that needs an allocator, and CI runs it
//! with `--no-default-features` (the library then has neither `std` nor `alloc`).

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::{
    Agent, AgentId, AgentState, Arch, Dna, GlobalValue, NodeId, NodeStatus, Policy,
};

/// A module as it would sit in flash.
static MODULE: [u8; 41] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01,
    0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, b'a', b'd', b'd', 0x00, 0x00, 0x0a, 0x09,
    0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
];

#[test]
fn borrowed_migration_without_alloc() {
    let mut memory = [0u8; 1024];
    for (i, b) in memory.iter_mut().enumerate() {
        *b = (i % 7) as u8;
    }

    let dna = Dna::new(&MODULE[..]).unwrap();
    let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 3), dna);
    agent.set_state(AgentState::Running).unwrap();
    agent.set_policy(Policy::new(10, 20, &[Arch::Arm]).unwrap());
    agent.set_wasm_state(&memory[..]);
    agent
        .set_globals(&[GlobalValue::I32(900), GlobalValue::from_f32(1.5)])
        .unwrap();

    let nodes = [
        NodeStatus {
            battery_percent: 50,
            latency_ms: 30,
            arch: Arch::Arm,
        },
        NodeStatus {
            battery_percent: 50,
            latency_ms: 10,
            arch: Arch::X86_64,
        },
    ];
    assert_eq!(agent.policy().select(&nodes), Some(1));

    let mut manager = MigrationManager::with_capacity::<2>(NodeId::from_bytes([1; 16]));
    let snapshot = manager
        .initiate_migration_at(&mut agent, NodeId::from_bytes([2; 16]), 42)
        .unwrap();
    let mut wire = [0u8; 2048];
    let n = snapshot.serialize_into(&mut wire).unwrap();
    assert_eq!(n, snapshot.size_bytes());

    let view = MigrationSnapshot::view(&wire[..n]).unwrap();
    assert!(wire.as_ptr_range().contains(&view.wasm_state().as_ptr()));
    let restored = view.restore().unwrap();
    assert_eq!(restored, agent);
    assert_eq!(
        restored.dna().binary().as_ptr(),
        wire[..n].as_ptr().wrapping_add(8 + 16 + 32 + 1)
    );

    manager.complete_migration(&mut agent).unwrap();
    assert_eq!(agent.state(), AgentState::Terminated);
}
