//! Model test: random sequences of lifecycle and manager calls on a few agents, checked after
//! every call against a plain model of what the documentation promises.

use mielin_cells::migration::MigrationManager;
use mielin_cells::{
    Agent, AgentId, AgentState, Capacity, CellError, Dna, MigrationFailure, NodeId,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const AGENTS: usize = 3;
const CAPACITY: usize = 2;
const SOURCE: NodeId = NodeId::from_bytes([1; 16]);
const TARGET: NodeId = NodeId::from_bytes([2; 16]);

#[derive(Debug, Clone)]
enum Op {
    SetState(usize, AgentState),
    Initiate {
        agent: usize,
        now: u64,
        to_self: bool,
    },
    Complete(usize),
    Cancel(usize),
    Expire {
        now: u64,
        max_age: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0..AGENTS;
    let state = prop::sample::select(AgentState::ALL.to_vec());
    prop_oneof![
        3 => (agent.clone(), state).prop_map(|(a, s)| Op::SetState(a, s)),
        3 => (agent.clone(), 0u64..100, prop::bool::weighted(0.1))
            .prop_map(|(agent, now, to_self)| Op::Initiate { agent, now, to_self }),
        2 => agent.clone().prop_map(Op::Complete),
        2 => agent.prop_map(Op::Cancel),
        1 => (0u64..120, 0u64..50).prop_map(|(now, max_age)| Op::Expire { now, max_age }),
    ]
}

/// What the documentation says, written as simply as possible.
#[derive(Default)]
struct Model {
    states: Vec<AgentState>,
    /// agent index -> (previous state, started at)
    pending: BTreeMap<usize, (AgentState, u64)>,
}

impl Model {
    fn set_state(&mut self, i: usize, next: AgentState) -> Result<(), CellError> {
        let from = self.states[i];
        if !from.can_transition_to(next) {
            return Err(CellError::InvalidState { from, to: next });
        }
        self.states[i] = next;
        Ok(())
    }

    fn finish(&mut self, i: usize, id: AgentId, cancel: bool) -> Result<(), CellError> {
        let Some(&(previous, _)) = self.pending.get(&i) else {
            return Err(CellError::MigrationFailed {
                agent: id,
                reason: MigrationFailure::NotPending,
            });
        };
        if self.states[i] != AgentState::Migrating {
            let found = self.states[i];
            return Err(CellError::MigrationFailed {
                agent: id,
                reason: MigrationFailure::NotMigrating { found },
            });
        }
        self.states[i] = if cancel {
            previous
        } else {
            AgentState::Terminated
        };
        self.pending.remove(&i);
        Ok(())
    }
}

fn agent(i: usize) -> Agent<&'static [u8]> {
    let dna = Dna::new(&b"\0asm\x01\0\0\0"[..]).unwrap();
    Agent::with_id(AgentId::from_bytes([i as u8 + 10; 16]), dna)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 512 }))]

    #[test]
    fn manager_and_lifecycle_agree_with_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut agents: Vec<_> = (0..AGENTS).map(agent).collect();
        let mut manager = MigrationManager::with_capacity::<CAPACITY>(SOURCE);
        let mut model = Model { states: vec![AgentState::Created; AGENTS], ..Model::default() };

        for op in ops {
            match op {
                Op::SetState(i, s) => {
                    prop_assert_eq!(agents[i].set_state(s), model.set_state(i, s));
                }
                Op::Initiate { agent: i, now, to_self } => {
                    let id = agents[i].id();
                    let target = if to_self { SOURCE } else { TARGET };
                    let got = manager.initiate_migration_at(&mut agents[i], target, now);
                    let expected = if model.pending.contains_key(&i) {
                        Err(CellError::MigrationFailed { agent: id, reason: MigrationFailure::AlreadyPending })
                    } else if to_self {
                        Err(CellError::MigrationFailed { agent: id, reason: MigrationFailure::TargetIsSource })
                    } else if !model.states[i].can_transition_to(AgentState::Migrating) {
                        Err(CellError::InvalidState { from: model.states[i], to: AgentState::Migrating })
                    } else if model.pending.len() == CAPACITY {
                        Err(CellError::CapacityExceeded {
                            what: Capacity::PendingMigrations, capacity: CAPACITY, requested: CAPACITY + 1,
                        })
                    } else {
                        model.pending.insert(i, (model.states[i], now));
                        model.states[i] = AgentState::Migrating;
                        Ok(())
                    };
                    match (got, expected) {
                        (Ok(snapshot), Ok(())) => {
                            prop_assert_eq!(snapshot.agent_id(), id);
                            prop_assert_eq!(snapshot.source_node(), Some(SOURCE));
                            prop_assert_eq!(snapshot.timestamp(), now);
                        }
                        (got, expected) => prop_assert_eq!(got.map(|_| ()), expected),
                    }
                }
                Op::Complete(i) => {
                    let id = agents[i].id();
                    let got = manager.complete_migration(&mut agents[i]).map(|_| ());
                    prop_assert_eq!(got, model.finish(i, id, false));
                }
                Op::Cancel(i) => {
                    let id = agents[i].id();
                    let got = manager.cancel_migration(&mut agents[i]).map(|_| ());
                    prop_assert_eq!(got, model.finish(i, id, true));
                }
                Op::Expire { now, max_age } => {
                    let mut expired: Vec<_> = manager.expire(now, max_age).into_iter().collect();
                    expired.sort_by_key(|p| p.agent);
                    let mut expected: Vec<usize> = model
                        .pending
                        .iter()
                        .filter(|(_, &(_, t))| now.saturating_sub(t) > max_age)
                        .map(|(&i, _)| i)
                        .collect();
                    expected.sort_by_key(|&i| agents[i].id());
                    prop_assert_eq!(
                        expired.iter().map(|p| p.agent).collect::<Vec<_>>(),
                        expected.iter().map(|&i| agents[i].id()).collect::<Vec<_>>()
                    );
                    // The caller returns each expired agent to its previous state, as documented.
                    for (p, &i) in expired.iter().zip(&expected) {
                        let (previous, started) = model.pending.remove(&i).unwrap();
                        prop_assert_eq!(p.previous_state, previous);
                        prop_assert_eq!(p.started_at, started);
                        prop_assert_eq!(p.target, TARGET);
                        prop_assert_eq!(agents[i].set_state(previous), model.set_state(i, previous));
                    }
                }
            }
            // After every call: same states, same pending set.
            for (i, a) in agents.iter().enumerate() {
                prop_assert_eq!(a.state(), model.states[i]);
                prop_assert_eq!(manager.is_pending(a.id()), model.pending.contains_key(&i));
            }
            prop_assert_eq!(manager.pending_count(), model.pending.len());
        }
    }
}
