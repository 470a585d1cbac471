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
//!   stack pointer in one), bit-exact, if it is an `i32`, `i64`, `f32` or `f64`;
//! - that the start function already ran: it is not run again on resume.
//!
//! # What is refused
//!
//! The binary is first validated as it is, with the engine's feature set: what the engine
//! refuses is [`ExecutionError::InvalidModule`], whatever the rewrite below would make of it.
//! Then modules whose state lives where a snapshot cannot reach are refused when they are
//! started, with [`CellError::ExecutionFailed`] and a [`Refusal`], rather than migrated with state
//! silently dropped or failing at every capture: imported memories, tables or mutable globals
//! (the host's state), more than one memory, 64-bit or shared memory, mutable globals of a
//! reference type or of type `v128`, and code that modifies tables (`table.set`, `.grow`,
//! `.fill`, `.copy`, `.init`) or drops segments (`data.drop`, `elem.drop`). Exported tables are
//! allowed: the embedder must not modify them from the host. Host state behind imports is the
//! embedder's to carry. `docs/runtime.md` gives the reasons and what the spec test suite shows.
//!
//! # Imports
//!
//! The `link` step of [`Runtime::start`] and [`Runtime::resume`] gets an [`Imports`]: host
//! functions and immutable globals, the only imports a carried module can have. Both are created
//! in the agent's own store, so no import can come from another store (wasmi panics on such
//! an import).
//!
//! # How
//!
//! wasmi only reaches a module's exports, so before instantiating, the module is rewritten as
//! Wizer does: its memory and mutable globals are exported under reserved names (`__mielin_*`),
//! and its start section becomes an export that [`Runtime::start`] calls and
//! [`Runtime::resume`] does not. The rewrite is deterministic, so every node derives the same
//! module from the same DNA; the agent's DNA and hash stay those of the original binary.

pub mod midcall;
mod precopy;
mod rewrite;
#[cfg(feature = "transform")]
#[cfg_attr(docsrs, doc(cfg(feature = "transform")))]
pub mod transform;
#[cfg(feature = "transform")]
mod yield_points;

pub use precopy::PreCopy;

use crate::globals::{self, Globals};
use crate::{Agent, AgentState, CellError, ExecutionError, GlobalValue, Refusal, Trap};
use alloc::string::String;
use alloc::vec::Vec;
pub use wasmi::{Caller, Val};
use wasmi::{
    Config, Engine, FuncType, Global, Instance, IntoFunc, Linker, Memory, Module, Mutability, Store,
};

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
    /// [`ExecutionError::OutOfFuel`].
    pub fn new(fuel_per_call: u64) -> Self {
        Runtime {
            engine: Engine::new(&Self::config()),
            fuel_per_call,
        }
    }

    /// The fuel every call gets.
    pub fn fuel_per_call(&self) -> u64 {
        self.fuel_per_call
    }

    /// The engine configuration every runtime uses: wasmi's default WebAssembly features (with
    /// `simd` when the crate feature is on) and fuel metering. Exposed so that tests can compare
    /// with a plain wasmi engine of the same features.
    #[doc(hidden)]
    pub fn config() -> Config {
        let mut config = Config::default();
        config.consume_fuel(true);
        config
    }

    /// Instantiates a new agent (state `Created` or `Running`), runs its start function if it
    /// has one, and leaves it `Running`.
    ///
    /// `host` is the store's data, which host functions reach through their [`Caller`]; `link`
    /// defines the imports on an [`Imports`].
    pub fn start<T>(
        &self,
        mut agent: Agent<Vec<u8>>,
        host: T,
        link: impl FnOnce(&mut Imports<'_, T>) -> Result<(), wasmi::Error>,
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
    /// [`restore`](crate::migration::MigrationSnapshot::restore) gives it): instantiates the same
    /// DNA, grows memory to the captured size, writes memory and globals back, and leaves it
    /// `Running`. The start function is not run again. The DNA hash is verified first (the
    /// agent's storage may have changed since it was hashed); [`resume_bytes`](Self::resume_bytes)
    /// decodes and resumes in one step and hashes the DNA once.
    ///
    /// Takes the agent by value: `Vec<u8>` storage moves into the [`LiveAgent`] without a copy
    /// (borrowed storage is copied once); the memory is then written into the instance, and the
    /// agent's copy freed, so the instance's memory is the only one kept. To decode and resume
    /// with one copy of memory in all, use [`resume_bytes`](Self::resume_bytes).
    pub fn resume<B: AsRef<[u8]> + Into<Vec<u8>>, T>(
        &self,
        agent: Agent<B>,
        host: T,
        link: impl FnOnce(&mut Imports<'_, T>) -> Result<(), wasmi::Error>,
    ) -> Result<LiveAgent<T>, CellError> {
        // The agent's storage may have changed since its `Dna` was hashed (flash or RAM going
        // bad, `tests`: `Decaying`): checked once more before anything is compiled.
        // `resume_bytes` decodes and instantiates in one step, and does not hash it again.
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
        link: impl FnOnce(&mut Imports<'_, T>) -> Result<(), wasmi::Error>,
    ) -> Result<(LiveAgent<T>, bool), CellError> {
        // The original, as it is: the rewrite drops the start section and adds exports, which
        // could make an invalid module valid (a start function with results, an undeclared
        // `ref.func`, two start sections).
        Module::validate(&self.engine, agent.dna().binary())
            .map_err(|_| failed(ExecutionError::InvalidModule))?;
        let rewritten = rewrite::rewrite(agent.dna().binary()).map_err(failed)?;
        let module = Module::new(&self.engine, &rewritten.binary)
            .map_err(|_| failed(ExecutionError::CompileFailed))?;
        let mut store = Store::new(&self.engine, host);
        let mut linker = Linker::new(&self.engine);
        link(&mut Imports {
            linker: &mut linker,
            store: &mut store,
        })
        .map_err(|_| failed(ExecutionError::LinkFailed))?;
        store
            .set_fuel(self.fuel_per_call)
            .map_err(|_| failed(ExecutionError::FuelMeteringOff))?;
        let instance = linker
            .instantiate_and_start(&mut store, &module)
            .map_err(|e| failed(instantiation_error(&e)))?;
        let memory = match rewritten.has_memory {
            true => Some(
                instance
                    .get_memory(&store, rewrite::MEMORY_EXPORT)
                    .ok_or(failed(ExecutionError::MissingStateExport))?,
            ),
            false => None,
        };
        let globals = rewritten
            .globals
            .iter()
            .map(|name| instance.get_global(&store, name))
            .collect::<Option<Vec<Global>>>()
            .ok_or(failed(ExecutionError::MissingStateExport))?;
        let asyncify = midcall::Asyncify::find(&instance, &store);
        let live = LiveAgent {
            agent,
            store,
            instance,
            memory,
            globals,
            fuel_per_call: self.fuel_per_call,
            asyncify,
            interrupted: None,
        };
        Ok((live, rewritten.has_start))
    }
}

/// The imports an agent's module can have, defined by the embedder's `link` step: host
/// functions, and immutable globals.
///
/// Everything defined here belongs to the agent's own store. Memories, tables and mutable
/// globals cannot be imported by a carried module (their state would be the host's), so there
/// is no way to define them.
pub struct Imports<'a, T> {
    linker: &'a mut Linker<T>,
    store: &'a mut Store<T>,
}

impl<T> Imports<'_, T> {
    /// Defines the host function `module`.`name` from a Rust closure or function, as
    /// [`Linker::func_wrap`] does.
    pub fn func_wrap<Params, Args>(
        &mut self,
        module: &str,
        name: &str,
        func: impl IntoFunc<T, Params, Args>,
    ) -> Result<&mut Self, wasmi::Error> {
        self.linker.func_wrap(module, name, func)?;
        Ok(self)
    }

    /// Defines the host function `module`.`name` of type `ty`, as [`Linker::func_new`] does.
    pub fn func_new(
        &mut self,
        module: &str,
        name: &str,
        ty: FuncType,
        func: impl Fn(Caller<'_, T>, &[Val], &mut [Val]) -> Result<(), wasmi::Error>
            + Send
            + Sync
            + 'static,
    ) -> Result<&mut Self, wasmi::Error> {
        self.linker.func_new(module, name, ty, func)?;
        Ok(self)
    }

    /// Defines the immutable global `module`.`name` holding `value`. A reference value must be
    /// null (no reference can come from outside the agent's store); a `v128` needs the `simd`
    /// feature. Either is an error otherwise, not a panic.
    pub fn global(
        &mut self,
        module: &str,
        name: &str,
        value: Val,
    ) -> Result<&mut Self, wasmi::Error> {
        let allowed = match &value {
            Val::FuncRef(r) => r.is_null(),
            Val::ExternRef(r) => r.is_null(),
            Val::V128(_) => cfg!(feature = "simd"),
            Val::I32(_) | Val::I64(_) | Val::F32(_) | Val::F64(_) => true,
        };
        if !allowed {
            return Err(wasmi::Error::new(
                "an imported global holds a non-null reference, or a v128 without `simd`",
            ));
        }
        let global = Global::new(&mut *self.store, value, Mutability::Const);
        self.linker.define(module, name, global)?;
        Ok(self)
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
    /// Asyncify's exports, if the module went through the deploy-time transform.
    asyncify: Option<midcall::Asyncify>,
    /// The export whose call is suspended in the middle, if one is (`midcall`).
    interrupted: Option<String>,
}

impl<T> LiveAgent<T> {
    /// The agent, with memory and globals as of the last [`capture`](Self::capture). A resumed
    /// agent's memory is empty until then: the instance holds the only copy (see
    /// [`snapshot_at`](Self::snapshot_at) to serialize from it without copying).
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
    /// Errors are [`CellError::ExecutionFailed`]: [`ExecutionError::Trap`],
    /// [`OutOfFuel`](ExecutionError::OutOfFuel), [`HostFailed`](ExecutionError::HostFailed),
    /// [`MissingExport`](ExecutionError::MissingExport), [`WrongArguments`](ExecutionError::WrongArguments)
    /// (reference arguments must be null: a reference from another store would make wasmi
    /// panic), [`NotRunning`](ExecutionError::NotRunning). After a trap, running out of fuel or a
    /// failed host function the agent is `Suspended`: its memory may be half-updated, and it runs
    /// again only when the embedder moves it back to `Running` with [`set_state`](Self::set_state).
    ///
    /// In a module transformed for mid-call capture (`runtime::transform`), an import may
    /// suspend the call ([`midcall`]): then this is [`ExecutionError::CallSuspended`], the
    /// agent stays `Running`, and [`resume_call`](Self::resume_call) continues it
    /// ([`run`](Self::run) says the same without an error). While a call is suspended, every
    /// other call is refused with the same error.
    pub fn call(&mut self, export: &str, args: &[Val]) -> Result<Vec<Val>, CellError> {
        if self.interrupted.is_some() {
            return Err(failed(ExecutionError::CallSuspended));
        }
        let outcome = self.invoke(export, args);
        self.settle(export, outcome)
    }

    /// Runs `export` as [`call`](Self::call) does, and returns its results, or
    /// [`Completion::Suspended`](midcall::Completion::Suspended) if an import suspended it.
    pub fn run(&mut self, export: &str, args: &[Val]) -> Result<midcall::Completion, CellError> {
        if self.interrupted.is_some() {
            return Err(failed(ExecutionError::CallSuspended));
        }
        midcall::Completion::from_call(self.call(export, args))
    }

    /// Calls `export` with a fresh fuel allowance; on an error the agent is `Suspended`.
    fn invoke(&mut self, export: &str, args: &[Val]) -> Result<Vec<Val>, CellError> {
        let state = self.agent.state();
        if state != AgentState::Running {
            return Err(failed(ExecutionError::NotRunning { found: state }));
        }
        let func = self
            .instance
            .get_func(&self.store, export)
            .ok_or(failed(ExecutionError::MissingExport))?;
        let ty = func.ty(&self.store);
        if ty.params().len() != args.len()
            || ty.params().iter().zip(args).any(|(p, a)| *p != a.ty())
            || args.iter().any(|a| match a {
                Val::FuncRef(r) => !r.is_null(),
                Val::ExternRef(r) => !r.is_null(),
                _ => false,
            })
        {
            return Err(failed(ExecutionError::WrongArguments));
        }
        let mut results: Vec<Val> = ty
            .results()
            .iter()
            .map(|t| Val::default_for_ty(*t))
            .collect();
        self.store
            .set_fuel(self.fuel_per_call)
            .map_err(|_| failed(ExecutionError::FuelMeteringOff))?;
        match func.call(&mut self.store, args, &mut results) {
            Ok(()) => Ok(results),
            Err(e) => {
                self.agent.set_state(AgentState::Suspended)?;
                Err(failed(call_error(&e)))
            }
        }
    }

    /// The value of the global the module exports as `name`, if it exports one.
    pub fn global(&self, name: &str) -> Option<Val> {
        self.instance
            .get_global(&self.store, name)
            .map(|g| g.get(&self.store))
    }

    /// Moves the agent to another state, as [`Agent::set_state`] does.
    pub fn set_state(&mut self, next: AgentState) -> Result<(), CellError> {
        self.agent.set_state(next)
    }

    /// Copies the instance's linear memory and mutable globals into the agent. Call it between
    /// calls (no WebAssembly frames are running then, which is the only time this API can).
    ///
    /// While a call is suspended ([`is_suspended_in_call`](Self::is_suspended_in_call)) this is
    /// [`ExecutionError::CallSuspended`]: the agent alone would restart the export with the
    /// unwound frames left in memory. [`capture_with_call`](Self::capture_with_call) captures
    /// it with its call.
    pub fn capture(&mut self) -> Result<&Agent<Vec<u8>>, CellError> {
        self.refuse_suspended()?;
        self.capture_state()?;
        Ok(&self.agent)
    }

    /// [`ExecutionError::CallSuspended`] while a call is suspended: for the capture paths that
    /// cannot carry the call.
    fn refuse_suspended(&self) -> Result<(), CellError> {
        match self.interrupted {
            Some(_) => Err(failed(ExecutionError::CallSuspended)),
            None => Ok(()),
        }
    }

    /// Copies memory and globals into the agent, suspended call or not.
    fn capture_state(&mut self) -> Result<(), CellError> {
        let values = self
            .globals
            .iter()
            .map(|g| to_global_value(g.get(&self.store)))
            .collect::<Option<Vec<GlobalValue>>>()
            // Start refuses modules with such globals: unreachable, reported rather than hidden.
            .ok_or(failed(ExecutionError::Refused(
                Refusal::MutableReferenceGlobal,
            )))?;
        self.agent.set_globals(&values)?;
        // Reuses the agent's buffer: repeated captures do not reallocate.
        let memory = self.memory.map_or(&[][..], |m| m.data(&self.store));
        let state = self.agent.wasm_state_vec_mut();
        state.clear();
        state.extend_from_slice(memory);
        Ok(())
    }

    /// Captures, then gives back the agent (for a snapshot) and drops the instance. Refused
    /// while a call is suspended, as [`capture`](Self::capture) is:
    /// [`into_agent_with_call`](Self::into_agent_with_call) gives the call too.
    pub fn into_agent(mut self) -> Result<Agent<Vec<u8>>, CellError> {
        self.capture()?;
        Ok(self.agent)
    }

    /// Writes the agent's memory and globals into the fresh instance, then frees the agent's
    /// copy of the memory: the instance's is the only one a live agent keeps.
    fn write_back(&mut self) -> Result<(), CellError> {
        let len = self.agent.wasm_state().len();
        let target = self.sized_memory(len)?;
        if let Some(memory) = target {
            let state = self.agent.wasm_state();
            memory
                .write(&mut self.store, 0, state)
                // The memory was just grown to the state's size.
                .map_err(|_| failed(ExecutionError::StateGrowFailed))?;
        }
        let values: Globals = globals::collect(self.agent.globals())?;
        self.set_globals(&values)?;
        *self.agent.wasm_state_vec_mut() = Vec::new();
        Ok(())
    }

    /// The instance's memory grown to `len` bytes (whole pages, at least its current size), or
    /// `None` for a module without memory and `len` 0.
    pub(crate) fn sized_memory(&mut self, len: usize) -> Result<Option<Memory>, CellError> {
        match self.memory {
            Some(memory) => {
                if !len.is_multiple_of(PAGE_SIZE) {
                    return Err(failed(ExecutionError::StateNotWholePages));
                }
                let have = memory.data_size(&self.store);
                if len < have {
                    return Err(failed(ExecutionError::StateBelowMinimum));
                }
                let grow = ((len - have) / PAGE_SIZE) as u64;
                if grow > 0 {
                    memory
                        .grow(&mut self.store, grow)
                        .map_err(|_| failed(ExecutionError::StateGrowFailed))?;
                }
                Ok(Some(memory))
            }
            None if len != 0 => Err(failed(ExecutionError::StateWithoutMemory)),
            None => Ok(None),
        }
    }

    /// Sets the instance's mutable globals.
    pub(crate) fn set_globals(&mut self, values: &[GlobalValue]) -> Result<(), CellError> {
        if values.len() != self.globals.len() {
            return Err(failed(ExecutionError::GlobalCountMismatch));
        }
        for (global, value) in self.globals.iter().zip(values) {
            global
                .set(&mut self.store, to_val(*value))
                .map_err(|_| failed(ExecutionError::GlobalTypeMismatch))?;
        }
        Ok(())
    }
}

fn failed(e: ExecutionError) -> CellError {
    CellError::ExecutionFailed(e)
}

fn trap(code: wasmi::TrapCode) -> ExecutionError {
    use wasmi::TrapCode as C;
    ExecutionError::Trap(match code {
        C::OutOfFuel => return ExecutionError::OutOfFuel,
        C::UnreachableCodeReached => Trap::Unreachable,
        C::MemoryOutOfBounds => Trap::MemoryOutOfBounds,
        C::TableOutOfBounds => Trap::TableOutOfBounds,
        C::IndirectCallToNull => Trap::IndirectCallToNull,
        C::IntegerDivisionByZero => Trap::IntegerDivisionByZero,
        C::IntegerOverflow => Trap::IntegerOverflow,
        C::BadConversionToInteger => Trap::BadConversionToInteger,
        C::StackOverflow => Trap::StackOverflow,
        C::BadSignature => Trap::BadSignature,
        #[allow(unreachable_patterns)]
        _ => Trap::Other,
    })
}

/// A failed call: a trap (out of fuel included), else a host function's error.
fn call_error(e: &wasmi::Error) -> ExecutionError {
    e.as_trap_code().map_or(ExecutionError::HostFailed, trap)
}

/// A failed instantiation: a trap (in an active segment, or the start function), an import
/// that is missing or of the wrong type, or another failure.
fn instantiation_error(e: &wasmi::Error) -> ExecutionError {
    use wasmi::errors::{ErrorKind, InstantiationError};
    match (e.as_trap_code(), e.kind()) {
        (Some(code), _) => trap(code),
        (None, ErrorKind::Linker(_)) => ExecutionError::UnresolvedImports,
        (
            None,
            ErrorKind::Instantiation(
                InstantiationError::MismatchedNumberOfImports { .. }
                | InstantiationError::ImportTypeMismatch { .. }
                | InstantiationError::GlobalTypeMismatch { .. }
                | InstantiationError::FuncTypeMismatch { .. }
                | InstantiationError::TableTypeMismatch { .. }
                | InstantiationError::MemoryTypeMismatch { .. },
            ),
        ) => ExecutionError::UnresolvedImports,
        // An active element segment out of its table's bounds: a trap, as the spec says.
        (None, ErrorKind::Instantiation(InstantiationError::ElementSegmentDoesNotFit { .. })) => {
            ExecutionError::Trap(Trap::TableOutOfBounds)
        }
        _ => ExecutionError::InstantiationFailed,
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
    fn rewrite_refuses_memories_it_cannot_carry() {
        // The engine refuses these as invalid first; the rewrite refuses them on its own too.
        for (wat, why) in [
            ("(module (memory i64 1))", Refusal::Memory64),
            ("(module (memory 1 1 shared))", Refusal::SharedMemory),
            (
                "(module (import \"e\" \"m\" (memory 1)))",
                Refusal::ImportedMemory,
            ),
        ] {
            let wasm = wat::parse_str(wat).unwrap();
            assert_eq!(
                rewrite::rewrite(&wasm).err(),
                Some(ExecutionError::Refused(why)),
                "{wat}"
            );
        }
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
