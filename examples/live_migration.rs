//! A live agent moves between two nodes in the middle of its work and finishes with the same
//! result as an agent that never moved.
//!
//! `cargo run --example live_migration --features wasmi`
//!
//! The agent (`examples/agents/counter.wat`) keeps a running total and a step count in
//! unexported mutable globals, a stack of its inputs in linear memory below a stack-pointer
//! global (the way Rust and C modules keep their shadow stack), and a histogram at the bottom of
//! memory.

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::runtime::{LiveAgent, Runtime, Val};
use mielin_cells::{Agent, AgentId, CellError, Dna, NodeId};

const N: u32 = 40; // steps on node A
const M: u32 = 25; // steps on node B

fn input(i: u32) -> i32 {
    (i.wrapping_mul(2_654_435_761) >> 16) as i32
}

fn run(live: &mut LiveAgent<()>, steps: core::ops::Range<u32>) -> Result<(), CellError> {
    for i in steps {
        live.call("step", &[Val::I32(input(i))])?;
    }
    Ok(())
}

fn read(live: &mut LiveAgent<()>, export: &str) -> Result<i64, CellError> {
    match live.call(export, &[])?.as_slice() {
        [Val::I64(v)] => Ok(*v),
        [Val::I32(v)] => Ok((*v).into()),
        other => panic!("counter.wat's readers return one integer, got {other:?}"),
    }
}

fn main() -> Result<(), CellError> {
    let wasm = wat::parse_str(include_str!("agents/counter.wat")).expect("counter.wat compiles");
    let rt = Runtime::new(1_000_000);
    let (node_a, node_b) = (NodeId::new_v4(), NodeId::new_v4());
    let new_agent = || -> Result<Agent<Vec<u8>>, CellError> {
        let dna = Dna::new(wasm.clone())?;
        Ok(Agent::with_id(AgentId::derive(dna.hash(), 0), dna))
    };

    // Node A: N steps, then capture at a quiescent point (between calls) and send.
    let mut live = rt.start(new_agent()?, (), |_| Ok(()))?;
    run(&mut live, 0..N)?;
    println!("node A: {N} steps, total {}", read(&mut live, "total")?);
    let mut agent = live.into_agent()?;
    println!(
        "        captured {} bytes of memory and globals {:?}",
        agent.wasm_state().len(),
        agent.globals()
    );
    let mut manager = MigrationManager::with_capacity::<4>(node_a);
    let bytes = manager
        .initiate_migration(&mut agent, node_b)?
        .serialize()?;
    println!("        snapshot: {} bytes on the wire", bytes.len());

    // Node B: verify, restore, resume, M more steps.
    let restored = MigrationSnapshot::deserialize(&bytes)?.restore()?;
    let mut moved = rt.resume(restored, (), |_| Ok(()))?;
    manager.complete_migration(&mut agent)?; // node B has it; node A's copy ends
    run(&mut moved, N..N + M)?;
    let (moved_total, moved_digest) = (read(&mut moved, "total")?, read(&mut moved, "digest")?);
    println!("node B: {M} more steps, total {moved_total}, digest {moved_digest:#018x}");

    // The same agent, N + M steps without moving.
    let mut still = rt.start(new_agent()?, (), |_| Ok(()))?;
    run(&mut still, 0..N + M)?;
    let (still_total, still_digest) = (read(&mut still, "total")?, read(&mut still, "digest")?);
    println!(
        "unmoved: {} steps, total {still_total}, digest {still_digest:#018x}",
        N + M
    );

    let same = moved_total == still_total
        && moved_digest == still_digest
        && read(&mut moved, "steps")? == read(&mut still, "steps")?;
    println!("results match: {same}");
    if !same {
        std::process::exit(1);
    }
    Ok(())
}
