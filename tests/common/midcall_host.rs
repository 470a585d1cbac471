//! The host of the mid-call tests and of the cost example (feature `transform`): the mid-call
//! state, a mailbox, the preemption policy, and the imports `mesh.recv_wait` and `env.yield`.
//! Included with `#[path]` by `tests/midcall.rs` and `examples/midcall_costs.rs`.

use mielin_cells::runtime::midcall::{self, MidCall, Suspendable};
use mielin_cells::runtime::{Caller, Imports, LiveAgent, Runtime};
use mielin_cells::{Agent, AgentId, Dna};
use std::collections::VecDeque;

/// The mid-call state, a mailbox, and the preemption policy.
#[derive(Default)]
pub struct Host {
    pub mid: MidCall,
    pub mailbox: VecDeque<Vec<u8>>,
    /// A yield point suspends when less fuel than this is left (0: never).
    pub reserve: u64,
    /// `env.yield` skips its bookkeeping (`yields`, `last_fuel`), as a host that only preempts
    /// would: the cost example sets it, so that it times the bare yield point.
    pub bare: bool,
    pub yields: u64,
    /// The fuel left at each yield point.
    pub last_fuel: Vec<u64>,
}

impl Suspendable for Host {
    fn mid_call(&mut self) -> &mut MidCall {
        &mut self.mid
    }
}

/// `mesh.recv_wait(ptr, cap) -> len` (suspends while the mailbox is empty) and `env.yield()`
/// (suspends when the call's fuel runs below the host's reserve).
pub fn link(imports: &mut Imports<'_, Host>) -> Result<(), wasmi::Error> {
    imports.func_wrap(
        "mesh",
        "recv_wait",
        |mut caller: Caller<'_, Host>, ptr: i32, cap: i32| -> Result<i32, wasmi::Error> {
            midcall::enter(&mut caller)?;
            let Some(message) = caller.data_mut().mailbox.pop_front() else {
                midcall::suspend(&mut caller, b"recv")?;
                return Ok(0);
            };
            let n = message.len().min(cap.max(0) as usize);
            let memory = caller
                .get_export("memory")
                .and_then(wasmi::Extern::into_memory)
                .ok_or_else(|| wasmi::Error::new("no memory"))?;
            memory.write(&mut caller, ptr as u32 as usize, &message[..n])?;
            Ok(n as i32)
        },
    )?;
    imports.func_wrap(
        "env",
        "yield",
        |mut caller: Caller<'_, Host>| -> Result<(), wasmi::Error> {
            if midcall::enter(&mut caller)?.is_some() {
                return Ok(()); // just resumed here: go on
            }
            if !caller.data().bare {
                caller.data_mut().yields += 1;
                let left = caller.get_fuel().unwrap_or(0);
                caller.data_mut().last_fuel.push(left);
            }
            let reserve = caller.data().reserve;
            if reserve > 0 && midcall::fuel_below(&caller, reserve) {
                midcall::suspend(&mut caller, b"yield")?;
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// Starts `wasm` as a fresh agent on `rt` with `host` and [`link`].
pub fn start(rt: &Runtime, wasm: &[u8], host: Host) -> LiveAgent<Host> {
    let dna = Dna::new(wasm.to_vec()).unwrap();
    let id = AgentId::derive(dna.hash(), 0);
    rt.start(Agent::with_id(id, dna), host, link).unwrap()
}
