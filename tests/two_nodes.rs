//! The README's flow end to end: a source node migrates a running agent to a target node that
//! it picked with the agent's policy, through bytes only.
#![cfg(feature = "std")]

mod common;

use common::{sample_agent, SOURCE, TARGET};
use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::{AgentState, Arch, NodeStatus};

#[test]
fn source_to_bytes_to_target() {
    // Source node: the agent runs, then the policy picks a target among candidates.
    let mut agent = sample_agent();
    let candidates = [
        NodeStatus {
            battery_percent: 10,
            latency_ms: 5,
            arch: Arch::Aarch64,
        },
        NodeStatus {
            battery_percent: 90,
            latency_ms: 40,
            arch: Arch::Aarch64,
        },
        NodeStatus {
            battery_percent: 95,
            latency_ms: 2,
            arch: Arch::X86_64,
        },
    ];
    // Node 0 breaks the 25% battery rule; node 1 runs the first preferred architecture.
    assert_eq!(agent.policy().select(&candidates), Some(1));

    let mut manager = MigrationManager::with_capacity::<8>(SOURCE);
    let snapshot = manager.initiate_migration(&mut agent, TARGET).unwrap();
    let wire: Vec<u8> = snapshot.serialize().unwrap();
    drop(snapshot);

    // Target node: only the bytes arrive.
    let received = MigrationSnapshot::deserialize(&wire).unwrap();
    assert_eq!(received.source_node(), Some(SOURCE));
    assert!(received.age_seconds().is_some_and(|age| age < 60));
    let mut restored = received.restore().unwrap();
    assert_eq!(restored.id(), agent.id());
    assert_eq!(restored.dna(), agent.dna());
    assert_eq!(restored.dna().hash(), agent.dna().hash());
    assert_eq!(restored.wasm_state(), agent.wasm_state());
    assert_eq!(restored.globals(), agent.globals());
    assert_eq!(restored.policy(), agent.policy());
    restored.set_state(AgentState::Running).unwrap();

    // Back on the source: the target confirmed, the source copy ends.
    manager.complete_migration(&mut agent).unwrap();
    assert_eq!(agent.state(), AgentState::Terminated);
    assert_eq!(manager.pending_count(), 0);
}
