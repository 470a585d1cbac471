//! The migration manager: every call's success and refusal paths.
#![cfg(feature = "alloc")]

mod common;

use common::{sample_agent, SOURCE, TARGET};
use mielin_cells::migration::{MigrationManager, PendingMigration};
use mielin_cells::{Agent, AgentId, AgentState, Capacity, CellError, Dna, MigrationFailure};

fn other_agent(n: u8) -> Agent<Vec<u8>> {
    let dna = Dna::new(common::ADD_WASM.to_vec()).unwrap();
    let mut agent = Agent::with_id(AgentId::from_bytes([n; 16]), dna);
    agent.set_state(AgentState::Running).unwrap();
    agent
}

#[test]
fn initiate_then_complete() {
    let mut m = MigrationManager::with_capacity::<4>(SOURCE);
    let mut agent = sample_agent();
    let snap = m.initiate_migration_at(&mut agent, TARGET, 100).unwrap();
    assert_eq!(agent.state(), AgentState::Migrating);
    assert_eq!(snap.source_node(), Some(SOURCE), "source, never the target");
    assert_eq!(snap.timestamp(), 100);
    assert_eq!(snap.agent_id(), agent.id());
    assert_eq!(m.pending_count(), 1);
    assert!(m.is_pending(agent.id()));

    let done = m.complete_migration(&mut agent).unwrap();
    assert_eq!(
        done,
        PendingMigration {
            agent: agent.id(),
            target: TARGET,
            previous_state: AgentState::Running,
            started_at: 100
        }
    );
    assert_eq!(agent.state(), AgentState::Terminated);
    assert_eq!(m.pending_count(), 0);
}

#[test]
fn cancel_returns_to_the_previous_state() {
    let mut m = MigrationManager::with_capacity::<4>(SOURCE);
    for previous in [AgentState::Running, AgentState::Suspended] {
        let mut agent = sample_agent();
        if previous == AgentState::Suspended {
            agent.set_state(AgentState::Suspended).unwrap();
        }
        m.initiate_migration_at(&mut agent, TARGET, 0).unwrap();
        m.cancel_migration(&mut agent).unwrap();
        assert_eq!(agent.state(), previous);
        assert_eq!(m.pending_count(), 0);
    }
}

#[test]
fn refusals_change_nothing() {
    let mut m = MigrationManager::with_capacity::<1>(SOURCE);
    let mut agent = sample_agent();
    let id = agent.id();

    // Not Running or Suspended.
    let mut created = Agent::with_id(AgentId::from_bytes([9; 16]), agent.dna().clone());
    assert_eq!(
        m.initiate_migration_at(&mut created, TARGET, 0)
            .unwrap_err(),
        CellError::InvalidState {
            from: AgentState::Created,
            to: AgentState::Migrating
        }
    );
    assert_eq!(created.state(), AgentState::Created);

    // To itself.
    assert_eq!(
        m.initiate_migration_at(&mut agent, SOURCE, 0).unwrap_err(),
        CellError::MigrationFailed {
            agent: id,
            reason: MigrationFailure::TargetIsSource
        }
    );
    assert_eq!(agent.state(), AgentState::Running);

    // Complete or cancel with nothing pending.
    for r in [
        m.complete_migration(&mut agent),
        m.cancel_migration(&mut agent),
    ] {
        assert_eq!(
            r.unwrap_err(),
            CellError::MigrationFailed {
                agent: id,
                reason: MigrationFailure::NotPending
            }
        );
    }
    assert_eq!(agent.state(), AgentState::Running);
    assert_eq!(m.pending_count(), 0);

    // Twice.
    m.initiate_migration_at(&mut agent, TARGET, 0).unwrap();
    assert_eq!(
        m.initiate_migration_at(&mut agent, TARGET, 0).unwrap_err(),
        CellError::MigrationFailed {
            agent: id,
            reason: MigrationFailure::AlreadyPending
        }
    );

    // Full.
    let mut second = other_agent(2);
    assert_eq!(
        m.initiate_migration_at(&mut second, TARGET, 0).unwrap_err(),
        CellError::CapacityExceeded {
            what: Capacity::PendingMigrations,
            capacity: 1,
            requested: 2
        }
    );
    assert_eq!(second.state(), AgentState::Running);
    assert_eq!(m.pending_count(), 1);

    // Moved out of Migrating by hand: complete is refused, the entry stays.
    agent.set_state(AgentState::Running).unwrap();
    assert_eq!(
        m.complete_migration(&mut agent).unwrap_err(),
        CellError::MigrationFailed {
            agent: id,
            reason: MigrationFailure::NotMigrating {
                found: AgentState::Running
            }
        }
    );
    assert_eq!(agent.state(), AgentState::Running);
    assert!(m.is_pending(id));
}

#[test]
fn expire_removes_only_what_is_too_old() {
    let mut m = MigrationManager::with_capacity::<8>(SOURCE);
    let mut agents: Vec<_> = (1..=4).map(other_agent).collect();
    for (a, t) in agents.iter_mut().zip([100u64, 150, 200, 260]) {
        m.initiate_migration_at(a, TARGET, t).unwrap();
    }
    // At 260 with max age 60: 100 and 150 are older than 60 s, 200 is exactly 60 s old and stays.
    let expired = m.expire(260, 60);
    let mut ids: Vec<_> = expired.iter().map(|p| p.agent).collect();
    ids.sort();
    assert_eq!(ids, vec![agents[0].id(), agents[1].id()]);
    assert_eq!(m.pending_count(), 2);
    assert!(m.is_pending(agents[2].id()) && m.is_pending(agents[3].id()));

    // The caller returns expired agents to where they were, and they can migrate again.
    for p in &expired {
        let a = agents.iter_mut().find(|a| a.id() == p.agent).unwrap();
        a.set_state(p.previous_state).unwrap();
        assert_eq!(a.state(), AgentState::Running);
    }
    m.initiate_migration_at(&mut agents[0], TARGET, 300)
        .unwrap();

    // A clock that went backwards expires nothing.
    assert!(m.expire(0, 0).is_empty());
    assert_eq!(m.pending_count(), 3);
}
