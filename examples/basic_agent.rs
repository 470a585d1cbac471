//! An agent's life on one node: DNA, identity, lifecycle and policy.
//!
//! `cargo run --example basic_agent`

use mielin_cells::{Agent, AgentId, AgentState, Arch, CellError, Dna, Policy};

const ADD_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01,
    0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, b'a', b'd', b'd', 0x00, 0x00, 0x0a, 0x09,
    0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
];

fn main() -> Result<(), CellError> {
    // DNA: the module and its SHA-256. Anything that is not a WebAssembly module is refused.
    let dna = Dna::new(ADD_WASM)?;
    let hash: String = dna.hash().iter().map(|b| format!("{b:02x}")).collect();
    println!("DNA sha256 {hash} ({} bytes)", dna.size());
    match Dna::new(&b"#!/bin/sh"[..]) {
        Err(e) => println!("refused: {e}"),
        Ok(_) => unreachable!("a shell script is not WebAssembly"),
    }

    // Identity: random under std, or derived from the DNA for devices without an RNG.
    let random = Agent::new(ADD_WASM.to_vec())?;
    println!("random id  {}", random.id());
    let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna);
    println!("derived id {} (instance 0 of this DNA)", agent.id());

    // Lifecycle: only legal moves succeed, and a refused one changes nothing.
    agent.set_state(AgentState::Running)?;
    agent.set_state(AgentState::Suspended)?;
    if let Err(e) = agent.set_state(AgentState::Created) {
        println!("refused: {e}");
    }
    agent.set_state(AgentState::Running)?;
    println!("state      {}", agent.state());

    // Policy: where it may run.
    agent.set_policy(Policy::new(30, 100, &[Arch::Aarch64, Arch::X86_64])?);
    println!(
        "policy     {:?}, allows low battery: {}",
        agent.policy(),
        agent.policy().allows_low_battery()
    );

    agent.set_state(AgentState::Terminated)?;
    println!("state      {}", agent.state());
    Ok(())
}
