//! Running agents with [`wasmi`], and carrying a live instance's state across a migration
//! (feature `wasmi`).
//!
//! [`Runtime::start`] instantiates an agent's DNA; [`LiveAgent::call`] runs its exports with a
//! fuel limit per call; [`LiveAgent::capture`] copies the instance's linear memory and every
//! mutable global (exported or not) into the [`Agent`] at a quiescent point, between calls, so
//! that an ordinary [`MigrationSnapshot`](crate::migration::MigrationSnapshot) carries them;
//! [`Runtime::resume`] instantiates the same DNA on another node, writes memory and globals
//! back and continues.
//!
//! # What is carried
//!
//! - linear memory (one memory, 32-bit, not shared), grown on the target to the captured size;
//! - every mutable global the module defines, exported or not (Rust and C modules keep their
//!   stack pointer in one), bit-exact;
//! - that the start function already ran: it is not run again on resume.
//!
//! # What is refused
//!
//! Modules whose state lives where a snapshot cannot reach are refused with
//! [`CellError::ExecutionFailed`] when they are started, rather than migrated with state
//! silently dropped: imported memories, tables or mutable globals (the host's state), more than
//! one memory, 64-bit or shared memory, and code that modifies tables (`table.set`, `.grow`,
//! `.fill`, `.copy`, `.init`) or drops segments (`data.drop`, `elem.drop`). Exported tables are
//! allowed: the embedder must not modify them from the host. Host state behind imports is the
//! embedder's to carry.
//!
//! # How
//!
//! wasmi only reaches a module's exports, so before instantiating, the module is rewritten as
//! Wizer does: its memory and mutable globals are exported under reserved names (`__mielin_*`),
//! and its start section becomes an export that [`Runtime::start`] calls and
//! [`Runtime::resume`] does not. The rewrite is deterministic, so every node derives the same
//! module from the same DNA; the agent's DNA and hash stay those of the original binary.

mod rewrite;

use crate::globals::{self, Globals};
use crate::{Agent, AgentState, CellError, GlobalValue};
use alloc::vec::Vec;
use wasmi::{Config, Engine, Global, Instance, Memory, Module, Store};
pub use wasmi::{Linker, Val};

/// One WebAssembly page: 64 KiB.
pub const PAGE_SIZE: usize = 65_536;

/// Compiles and runs agents; one per node is enough.
pub struct Runtime {
    engine: Engine,
    fuel_per_call: u64,
}

impl Runtime {
    /// A runtime that gives every call (and the start function) `fuel_per_call` units of fuel,
    /// roughly one per executed instruction; a call that runs out fails with
    /// [`CellError::ExecutionFailed`].
    pub fn new(fuel_per_call: u64) -> Self {
        let mut config = Config::default();
        config.consume_fuel(true);
        Runtime {
            engine: Engine::new(&config),
            fuel_per_call,
        }
    }

    /// Instantiates a new agent (state `Created` or `Running`), runs its start function if it
    /// has one, and leaves it `Running`.
    ///
    /// `host` is the store's data, which host functions reach through their `Caller`; `link`
    /// defines the imports on the [`Linker`].
    pub fn start<T>(
        &self,
        mut agent: Agent<Vec<u8>>,
        host: T,
        link: impl FnOnce(&mut Linker<T>) -> Result<(), wasmi::Error>,
    ) -> Result<LiveAgent<T>, CellError> {
        if agent.state() == AgentState::Created {
            agent.set_state(AgentState::Running)?;
        }
        let (mut live, has_start) = self.instantiate(agent, host, link)?;
        if has_start {
            live.call(rewrite::START_EXPORT, &[])?;
        }
        Ok(live)
    }

    /// Continues an agent captured on another node (state `Migrating` or `Suspended`, as
    /// [`restore`](crate::migration::MigrationSnapshot::restore) gives it): verifies the DNA
    /// hash before anything is compiled, instantiates the same DNA, grows memory to the captured
    /// size, writes memory and globals back, and leaves it `Running`. The start function is not
    /// run again.
    ///
    /// Takes the agent by value: `Vec<u8>` storage moves into the [`LiveAgent`] without a copy
    /// (borrowed storage is copied once); the memory is then written into the instance.
    pub fn resume<B: AsRef<[u8]> + Into<Vec<u8>>, T>(
        &self,
        agent: Agent<B>,
        host: T,
        link: impl FnOnce(&mut Linker<T>) -> Result<(), wasmi::Error>,
    ) -> Result<LiveAgent<T>, CellError> {
        agent.dna().verify()?;
        let mut agent = agent.convert(Into::into);
        agent.set_state(AgentState::Running)?;
        let (mut live, _) = self.instantiate(agent, host, link)?;
        live.write_back()?;
        Ok(live)
    }

    fn instantiate<T>(
        &self,
        agent: Agent<Vec<u8>>,
        host: T,
        link: impl FnOnce(&mut Linker<T>) -> Result<(), wasmi::Error>,
    ) -> Result<(LiveAgent<T>, bool), CellError> {
        let rewritten = rewrite::rewrite(agent.dna().binary()).map_err(failed)?;
        let module = Module::new(&self.engine, &rewritten.binary)
            .map_err(|_| failed("the module failed to compile or validate"))?;
        let mut store = Store::new(&self.engine, host);
        let mut linker = Linker::new(&self.engine);
        link(&mut linker).map_err(|_| failed("the embedder's imports could not be defined"))?;
        store
            .set_fuel(self.fuel_per_call)
            .map_err(|_| failed("fuel metering is off"))?;
        let instance = linker
            .instantiate_and_start(&mut store, &module)
            .map_err(|e| failed(reason(&e, "the module's imports could not be linked")))?;
        let memory = match rewritten.has_memory {
            true => Some(
                instance
                    .get_memory(&store, rewrite::MEMORY_EXPORT)
                    .ok_or(failed("the rewritten module lost its memory export"))?,
            ),
            false => None,
        };
        let globals = rewritten
            .globals
            .iter()
            .map(|name| instance.get_global(&store, name))
            .collect::<Option<Vec<Global>>>()
            .ok_or(failed("the rewritten module lost a global export"))?;
        let live = LiveAgent {
            agent,
            store,
            instance,
            memory,
            globals,
            fuel_per_call: self.fuel_per_call,
        };
        Ok((live, rewritten.has_start))
    }
}

/// An agent with a live wasmi instance.
pub struct LiveAgent<T> {
    agent: Agent<Vec<u8>>,
    store: Store<T>,
    instance: Instance,
    memory: Option<Memory>,
    globals: Vec<Global>,
    fuel_per_call: u64,
}

impl<T> LiveAgent<T> {
    /// The agent, with memory and globals as of the last [`capture`](Self::capture).
    pub fn agent(&self) -> &Agent<Vec<u8>> {
        &self.agent
    }

    /// The host data given to [`Runtime::start`] or [`Runtime::resume`].
    pub fn host(&self) -> &T {
        self.store.data()
    }

    /// Runs the exported function `export` with `args` and a fresh fuel allowance; the agent
    /// must be `Running`.
    ///
    /// A trap, running out of fuel, a missing export or arguments of the wrong type are
    /// [`CellError::ExecutionFailed`] with the reason. After a trap or running out of fuel the
    /// agent is `Suspended`: its memory may be half-updated, and it runs again only when the
    /// embedder moves it back to `Running` with [`set_state`](Self::set_state).
    pub fn call(&mut self, export: &str, args: &[Val]) -> Result<Vec<Val>, CellError> {
        if self.agent.state() != AgentState::Running {
            return Err(failed("the agent is not Running"));
        }
        let func = self
            .instance
            .get_func(&self.store, export)
            .ok_or(failed("no exported function with that name"))?;
        let ty = func.ty(&self.store);
        if ty.params().len() != args.len()
            || ty.params().iter().zip(args).any(|(p, a)| *p != a.ty())
        {
            return Err(failed("the arguments do not match the function's type"));
        }
        let mut results: Vec<Val> = ty
            .results()
            .iter()
            .map(|t| Val::default_for_ty(*t))
            .collect();
        self.store
            .set_fuel(self.fuel_per_call)
            .map_err(|_| failed("fuel metering is off"))?;
        match func.call(&mut self.store, args, &mut results) {
            Ok(()) => Ok(results),
            Err(e) => {
                self.agent.set_state(AgentState::Suspended)?;
                Err(failed(reason(&e, "the call failed")))
            }
        }
    }

    /// Moves the agent to another state, as [`Agent::set_state`] does.
    pub fn set_state(&mut self, next: AgentState) -> Result<(), CellError> {
        self.agent.set_state(next)
    }

    /// Copies the instance's linear memory and mutable globals into the agent. Call it between
    /// calls (no WebAssembly frames are running then, which is the only time this API can).
    pub fn capture(&mut self) -> Result<&Agent<Vec<u8>>, CellError> {
        let values = self
            .globals
            .iter()
            .map(|g| to_global_value(g.get(&self.store)))
            .collect::<Option<Vec<GlobalValue>>>()
            .ok_or(failed("a mutable global holds a reference or vector value"))?;
        self.agent.set_globals(&values)?;
        // Reuses the agent's buffer: repeated captures do not reallocate.
        let memory = self.memory.map_or(&[][..], |m| m.data(&self.store));
        let state = self.agent.wasm_state_vec_mut();
        state.clear();
        state.extend_from_slice(memory);
        Ok(&self.agent)
    }

    /// Captures, then gives back the agent (for a snapshot) and drops the instance.
    pub fn into_agent(mut self) -> Result<Agent<Vec<u8>>, CellError> {
        self.capture()?;
        Ok(self.agent)
    }

    /// Writes the agent's memory and globals into the fresh instance.
    fn write_back(&mut self) -> Result<(), CellError> {
        let state = self.agent.wasm_state();
        match self.memory {
            Some(memory) => {
                if !state.len().is_multiple_of(PAGE_SIZE) {
                    return Err(failed("the captured memory is not a whole number of pages"));
                }
                let have = memory.data_size(&self.store);
                if state.len() < have {
                    return Err(failed(
                        "the captured memory is smaller than the module's minimum",
                    ));
                }
                let grow = ((state.len() - have) / PAGE_SIZE) as u64;
                if grow > 0 {
                    memory
                        .grow(&mut self.store, grow)
                        .map_err(|_| failed("memory could not grow to the captured size"))?;
                }
                memory
                    .write(&mut self.store, 0, state)
                    .map_err(|_| failed("memory could not be written"))?;
            }
            None if !state.is_empty() => {
                return Err(failed("the agent carries memory but its module has none"));
            }
            None => {}
        }
        let values: Globals = globals::collect(self.agent.globals())?;
        if values.len() != self.globals.len() {
            return Err(failed(
                "the agent carries a different number of globals than its module has",
            ));
        }
        for (global, value) in self.globals.iter().zip(&values) {
            global
                .set(&mut self.store, to_val(*value))
                .map_err(|_| failed("a carried global does not match the module's global type"))?;
        }
        Ok(())
    }
}

fn failed(reason: &'static str) -> CellError {
    CellError::ExecutionFailed { reason }
}

/// The trap's own message where there is one, `otherwise` else.
fn reason(e: &wasmi::Error, otherwise: &'static str) -> &'static str {
    match e.as_trap_code() {
        Some(wasmi::TrapCode::OutOfFuel) => "out of fuel",
        Some(code) => code.trap_message(),
        None => otherwise,
    }
}

fn to_global_value(v: Val) -> Option<GlobalValue> {
    Some(match v {
        Val::I32(v) => GlobalValue::I32(v),
        Val::I64(v) => GlobalValue::I64(v),
        Val::F32(v) => GlobalValue::F32(v.to_bits()),
        Val::F64(v) => GlobalValue::F64(v.to_bits()),
        _ => return None,
    })
}

fn to_val(v: GlobalValue) -> Val {
    match v {
        GlobalValue::I32(v) => Val::I32(v),
        GlobalValue::I64(v) => Val::I64(v),
        GlobalValue::F32(bits) => Val::F32(wasmi::F32::from_bits(bits)),
        GlobalValue::F64(bits) => Val::F64(wasmi::F64::from_bits(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dna::Decaying;
    use crate::{AgentId, Digested, Dna};

    #[test]
    fn dna_mismatch_is_refused_before_instantiation() {
        let good = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
        // The changed binary is not even valid WebAssembly: had it been compiled, the error
        // would be a validation error, not the integrity error below.
        let mut bad = good.clone();
        bad.push(0xff);
        let dna = Dna::new(Decaying::new(good, bad)).unwrap();
        let mut agent = Agent::with_id(AgentId::from_bytes([1; 16]), dna);
        agent.set_state(AgentState::Running).unwrap();
        agent.set_state(AgentState::Suspended).unwrap();
        let err = Runtime::new(1000)
            .resume(agent, (), |_| Ok(()))
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                CellError::IntegrityMismatch {
                    what: Digested::Dna,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rewrite_is_deterministic_and_exports_state() {
        let wasm = wat::parse_str(
            r#"(module
                (import "env" "c" (global i32))
                (memory 1)
                (global (mut i32) (i32.const 1))
                (global i64 (i64.const 2))
                (global (mut f64) (f64.const 3))
                (func $s)
                (start $s)
                (func (export "f")))"#,
        )
        .unwrap();
        let a = rewrite::rewrite(&wasm).unwrap();
        let b = rewrite::rewrite(&wasm).unwrap();
        assert_eq!(a.binary, b.binary);
        assert!(a.has_memory && a.has_start);
        // Global indices count the imported global first; the immutable one is not exported.
        assert_eq!(a.globals, ["__mielin_global_1", "__mielin_global_3"]);

        let mut names = Vec::new();
        let mut start = false;
        for payload in wasmparser::Parser::new(0).parse_all(&a.binary) {
            match payload.unwrap() {
                wasmparser::Payload::ExportSection(r) => {
                    names = r.into_iter().map(|e| e.unwrap().name).collect();
                }
                wasmparser::Payload::StartSection { .. } => start = true,
                _ => {}
            }
        }
        assert!(!start, "the start section is removed");
        assert_eq!(
            names,
            [
                "f",
                "__mielin_memory",
                "__mielin_global_1",
                "__mielin_global_3",
                "__mielin_start"
            ]
        );
        wasmparser::Validator::new()
            .validate_all(&a.binary)
            .unwrap();
    }

    #[test]
    fn rewrite_adds_an_export_section_where_there_was_none() {
        let wasm =
            wat::parse_str(r#"(module (memory 1) (func) (data (i32.const 0) "x"))"#).unwrap();
        let out = rewrite::rewrite(&wasm).unwrap();
        assert!(out.has_memory && out.globals.is_empty() && !out.has_start);
        wasmparser::Validator::new()
            .validate_all(&out.binary)
            .unwrap();
    }
}
