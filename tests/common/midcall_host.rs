//! The host of the mid-call tests and of the cost example (feature `transform`): the mid-call
//! state, a mailbox, the preemption policy, and the imports a mesh node gives a transformed
//! agent (`mesh.recv_wait`, `mesh.yield`, and `mesh.send`, which this host drops), with the same
//! signatures as `mesh::wasm::link_blocking`.
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
    /// `mesh.yield` skips its bookkeeping (`yields`, `last_fuel`), as a host that only preempts
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

/// `mesh.recv_wait(from_ptr, ptr, cap) -> len` (suspends while the mailbox is empty; the
/// sender written at `from_ptr` is all zeros), `mesh.yield()` (suspends when the call's fuel
/// runs below the host's reserve) and `mesh.send` (queues nothing, answers 0).
pub fn link(imports: &mut Imports<'_, Host>) -> Result<(), wasmi::Error> {
    imports.func_wrap(
        "mesh",
        "recv_wait",
        |mut caller: Caller<'_, Host>,
         from: i32,
         ptr: i32,
         cap: i32|
         -> Result<i32, wasmi::Error> {
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
            memory.write(&mut caller, from as u32 as usize, &[0; 16])?;
            memory.write(&mut caller, ptr as u32 as usize, &message[..n])?;
            Ok(n as i32)
        },
    )?;
    imports.func_wrap(
        "mesh",
        "send",
        |_: Caller<'_, Host>, _: i32, _: i32, _: i32| -> i32 { 0 },
    )?;
    imports.func_wrap(
        "mesh",
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

/// A CPU-bound loop, 1,000 xorshift steps an outer iteration, with its author's yield point
/// (`mesh.yield`) at the outer loop's head.
pub const CRUNCH_WAT: &str = r#"(module
  (import "mesh" "yield" (func $yield))
  (memory (export "memory") 1)
  (func (export "crunch") (param $steps i64) (result i64)
    (local $x i64) (local $done i64) (local $j i32)
    (local.set $x (i64.const 0x1234567887654321))
    (block $out
      (loop $outer
        (br_if $out (i64.ge_u (local.get $done) (local.get $steps)))
        (call $yield)
        (local.set $j (i32.const 0))
        (loop $inner
          (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
          (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
          (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $inner (i32.lt_u (local.get $j) (i32.const 1000))))
        (local.set $done (i64.add (local.get $done) (i64.const 1000)))
        (br $outer)))
    (local.get $x)))"#;

/// `CRUNCH_WAT` without its author's yield point.
pub fn crunch_without_yield() -> String {
    CRUNCH_WAT
        .replace(r#"(import "mesh" "yield" (func $yield))"#, "")
        .replace("(call $yield)", "")
}
