//! A rustc-compiled wasm32 agent (examples/guest-rust: heap work in a `Vec` and a `BTreeMap`)
//! runs through the runtime and migrates, in whatever profile this test is built with.
//!
//! With wasmi's tail-call dispatch, a host that builds wasmi with `opt-level = 2` and debug
//! assertions overflowed its native stack on such a guest and aborted (wasmi issue #2039). The
//! crate's dev profile is that configuration (Cargo.toml optimizes the wasmi crates), so
//! `cargo test` runs the guest where the abort happened; the default `portable-dispatch`
//! feature prevents it (see docs/runtime.md).
#![cfg(feature = "wasmi")]

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::runtime::{LiveAgent, Runtime, Val};
use mielin_cells::{Agent, AgentId, AgentState, Dna, NodeId};

/// Built by examples/guest-rust/build.sh.
const GUEST: &[u8] = include_bytes!("guest.wasm");
const STEPS: u32 = 300;

fn start(rt: &Runtime) -> LiveAgent<()> {
    let dna = Dna::new(GUEST.to_vec()).unwrap();
    let agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna);
    rt.start(agent, (), |_| Ok(())).unwrap()
}

fn input(i: u32) -> i32 {
    (i.wrapping_mul(2_654_435_761) >> 8) as i32
}

fn step(live: &mut LiveAgent<()>, i: u32) -> i64 {
    match live.call("step", &[Val::I32(input(i))]).unwrap().as_slice() {
        [Val::I64(v)] => *v,
        other => panic!("expected one i64, got {other:?}"),
    }
}

fn digest(live: &mut LiveAgent<()>) -> i64 {
    match live.call("digest", &[]).unwrap().as_slice() {
        [Val::I64(v)] => *v,
        other => panic!("expected one i64, got {other:?}"),
    }
}

#[test]
fn rustc_guest_runs_and_migrates() {
    let rt = Runtime::new(500_000_000);
    let mut still = start(&rt);
    let totals: Vec<i64> = (0..STEPS).map(|i| step(&mut still, i)).collect();

    let mut moving = start(&rt);
    for i in 0..STEPS / 2 {
        assert_eq!(step(&mut moving, i), totals[i as usize]);
    }
    let mut agent = moving.into_agent().unwrap();
    let (a, b) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
    let mut manager = MigrationManager::with_capacity::<1>(a);
    let bytes = manager
        .initiate_migration_at(&mut agent, b, 1)
        .unwrap()
        .serialize()
        .unwrap();
    manager.complete_migration(&mut agent).unwrap();
    let restored = MigrationSnapshot::deserialize(&bytes)
        .unwrap()
        .restore()
        .unwrap();
    let mut moved = rt.resume(restored, (), |_| Ok(())).unwrap();
    assert_eq!(moved.agent().state(), AgentState::Running);
    for i in STEPS / 2..STEPS {
        assert_eq!(step(&mut moved, i), totals[i as usize]);
    }
    // The digest covers everything on the guest's heap (history, BTreeMap, total).
    assert_eq!(digest(&mut moved), digest(&mut still));

    // One long call (5,000 Vec and BTreeMap entries): with tail-call dispatch and debug
    // assertions, the call that aborted the host. Same answer on both instances.
    let work = |live: &mut LiveAgent<()>| match live.call("work", &[Val::I32(5_000)]).unwrap()[..] {
        [Val::I64(h)] => h,
        ref other => panic!("expected one i64, got {other:?}"),
    };
    assert_eq!(work(&mut moved), work(&mut still));
}

/// The call that aborted in wasmi issue #2039: 2,000 steps, then `work(50000)` in one call.
/// In the dev profile (wasmi at `opt-level = 2`, debug assertions on) without the
/// `portable-dispatch` feature this test aborts the process (stack overflow); with it, it passes.
#[test]
fn long_call_in_an_optimized_interpreter_with_debug_assertions() {
    let rt = Runtime::new(2_000_000_000);
    let mut live = start(&rt);
    let mut last = 0;
    for i in 0..2_000 {
        last = step(&mut live, i);
    }
    assert_ne!(last, 0);
    match live.call("work", &[Val::I32(50_000)]).unwrap()[..] {
        [Val::I64(h)] => assert_ne!(h, 0),
        ref other => panic!("expected one i64, got {other:?}"),
    }
}
