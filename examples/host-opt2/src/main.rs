//! The rustc-compiled guest (`tests/guest.wasm`, source in examples/guest-rust) run through
//! the runtime by a host built with `opt-level = 2` and debug assertions, the profile in which
//! wasmi's tail-call dispatch overflowed the native stack and aborted (wasmi issue #2039).
//! With the crate's default `portable-dispatch` feature it must run to the end.
//!
//! `cargo run` here; exits non-zero on any error.

use mielin_cells::runtime::{Runtime, Val};
use mielin_cells::{Agent, AgentId, CellError, Dna};

const GUEST: &[u8] = include_bytes!("../../../tests/guest.wasm");
const STEPS: i32 = 2_000;
const WORK: i32 = 50_000;

fn main() -> Result<(), CellError> {
    let rt = Runtime::new(2_000_000_000);
    let dna = Dna::new(GUEST.to_vec())?;
    let agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna);
    let mut live = rt.start(agent, (), |_| Ok(()))?;
    let mut last = 0;
    for i in 0..STEPS {
        if let [Val::I64(total)] = live.call("step", &[Val::I32(i.wrapping_mul(40_503))])?[..] {
            last = total;
        }
    }
    // One long call: with tail-call dispatch and debug assertions, the
    // native stack grows with every instruction of a call.
    let folded = match live.call("work", &[Val::I32(WORK)])?[..] {
        [Val::I64(h)] => h,
        _ => 0,
    };
    println!("host-opt2: one call of work({WORK}) gave {folded}");
    println!(
        "host-opt2: {STEPS} guest steps in a host built with opt-level 2 and debug assertions \
         (debug_assertions = {}), total {last}",
        cfg!(debug_assertions)
    );
    Ok(())
}
