//! Mid-call capture: an agent suspended inside a call, captured, moved, and resumed there.
//!
//! Between calls, a snapshot carries memory and globals and nothing else is live. A module that
//! went through the deploy-time transform (`runtime::transform`, Binaryen's Asyncify) can also
//! *unwind* its whole call stack into a buffer in its own linear memory at chosen imports, and
//! *rewind* it later: then memory (which every snapshot carries) holds the suspended frames, and
//! the few facts below ([`SuspendedCall`]) say how to continue.
//!
//! # How an import suspends
//!
//! The store's data implements [`Suspendable`] (it holds a [`MidCall`]). An import that may
//! suspend, for example a blocking receive, is written as:
//!
//! ```text
//! |mut caller: Caller<'_, Host>, ptr: i32, cap: i32| {
//!     midcall::enter(&mut caller)?;           // first: ends a rewind that arrived here
//!     match caller.data_mut().mailbox.pop() {
//!         Some(m) => Ok(write(&mut caller, ptr, cap, &m)),
//!         None => { midcall::suspend(&mut caller, &[])?; Ok(0) } // the 0 is never seen
//!     }
//! }
//! ```
//!
//! [`suspend`] writes the buffer's header and calls the module's `asyncify_start_unwind`; the
//! import returns, every frame saves its locals into the buffer and returns, and the export
//! returns a dummy value. [`LiveAgent::run`] sees Asyncify's state and calls
//! `asyncify_stop_unwind`: the call is suspended ([`Completion::Suspended`]). The agent can be
//! captured now as between calls, with [`LiveAgent::suspended_call`] beside it (the version-3
//! container's call section: `MigrationSnapshot::with_call`, `docs/wire-format.md`).
//! [`LiveAgent::resume_call`] calls `asyncify_start_rewind` and the same export again: the frames restore their locals (arguments included) from the buffer and call the
//! import again, whose [`enter`] calls `asyncify_stop_rewind` and hands back the host-side state
//! given to [`suspend`]; from there the import runs normally (and may suspend again).
//!
//! # The unwind buffer
//!
//! The last bytes of linear memory, in pages the runtime grows on the first suspension
//! ([`MidCall::new`] sets its size; 64 KiB by default), after every page the module itself grew: an allocator that takes its pages from `memory.grow` never hands it out. Its
//! first 8 bytes are Asyncify's header (the current position and the end, `u32` LE), the rest
//! holds the frames (Asyncify saves every local of every frame: the cost grows with depth and
//! with the frames' locals). Every suspension checks the header and that the buffer still ends
//! where memory ends, and moves it to a newly grown end if the module grew memory since. So an
//! unwind that does not fit writes past the end of memory, which traps before it writes: the
//! call fails with [`ExecutionError::UnwindBufferOverflow`] and nothing outside the buffer
//! changed (Asyncify itself would only notice at `asyncify_stop_unwind`, after the damage).
//!
//! # Limits
//!
//! wasmi's call-depth limit still applies to the rewound stack; reference-typed locals cannot
//! be saved (the transform refuses them); while a call is suspended no other export is called.

use super::rewrite::MEMORY_EXPORT as MEMORY_EXPORT_NAME;
use super::{failed, LiveAgent, PreCopy, PAGE_SIZE};
use crate::migration::{DecodeOptions, EncodeOptions, MemoryDigests};
use crate::{Agent, AgentState, CellError, ExecutionError, NodeId, Trap};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use wasmi::{AsContext, AsContextMut, Caller, Extern, Func, Instance, Store, Val};

/// The unwind buffer's size unless [`MidCall::new`] says otherwise: 64 KiB.
pub const DEFAULT_BUFFER_LEN: u32 = 65_536;
/// The smallest unwind buffer: the 8-byte header and room for one frame.
pub const MIN_BUFFER_LEN: u32 = 16;
/// The largest unwind buffer [`MidCall::new`] sets up: 16 MiB.
pub const MAX_BUFFER_LEN: u32 = 16 << 20;
/// The most bytes of host-side state a suspending import keeps ([`suspend`]).
pub const MAX_HOST_STATE: usize = 1024;
/// The longest export name a suspended call records.
pub const MAX_EXPORT_NAME: usize = 255;
/// The longest encoding of a [`SuspendedCall`]: format, name, buffer, host state.
pub const MAX_SUSPENDED_CALL_LEN: usize = 1 + 1 + MAX_EXPORT_NAME + 8 + 2 + MAX_HOST_STATE;
/// Fuel given to an unwind on top of what the call has left (and to the bridge's own calls into
/// Asyncify): an unwind runs no guest code but the saving of each frame's locals, bounded by
/// the engine's call depth, so the allowance only keeps `OutOfFuel` from losing a call halfway
/// through its unwind. The rewind is charged to the resumed call's own fuel.
pub const UNWIND_FUEL: u64 = 10_000_000;
// Every encoding fits the container's call section.
const _: () = assert!(MAX_SUSPENDED_CALL_LEN <= crate::migration::MAX_CALL_SECTION_LEN);
/// The format byte [`SuspendedCall::to_bytes`] writes.
pub const SUSPENDED_CALL_FORMAT: u8 = 1;
/// Asyncify's header at the start of the buffer: current position, end.
const HEADER_LEN: u32 = 8;

/// Asyncify's exports in a transformed module.
#[derive(Clone, Copy)]
pub(super) struct Asyncify {
    stop_unwind: Func,
    start_rewind: Func,
    stop_rewind: Func,
    get_state: Func,
}

/// `asyncify_get_state`'s values.
const NORMAL: i32 = 0;
const UNWINDING: i32 = 1;
const REWINDING: i32 = 2;

impl Asyncify {
    /// Asyncify's exports, if the instance has all of them.
    pub(super) fn find<T>(instance: &Instance, store: &Store<T>) -> Option<Self> {
        let f = |name| instance.get_func(store, name);
        // `asyncify_start_unwind` is called by `suspend`, through the caller.
        f("asyncify_start_unwind")?;
        Some(Asyncify {
            stop_rewind: f("asyncify_stop_rewind")?,
            stop_unwind: f("asyncify_stop_unwind")?,
            start_rewind: f("asyncify_start_rewind")?,
            get_state: f("asyncify_get_state")?,
        })
    }

    fn state(&self, ctx: impl AsContextMut) -> Option<i32> {
        let mut out = [Val::I32(0)];
        self.get_state.call(ctx, &[], &mut out).ok()?;
        match out[0] {
            Val::I32(v) => Some(v),
            _ => None,
        }
    }
}

/// Where the unwind buffer lies in linear memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwindBuffer {
    /// Its first byte (Asyncify's header).
    pub start: u32,
    /// Its length, header included.
    pub len: u32,
}

impl UnwindBuffer {
    fn end(&self) -> Option<u32> {
        self.start.checked_add(self.len)
    }
}

/// The host-side state of mid-call suspension, kept in the store's data ([`Suspendable`]).
#[derive(Debug, Clone)]
pub struct MidCall {
    buffer_len: u32,
    buffer: Option<UnwindBuffer>,
    rewinding: bool,
    host_state: Vec<u8>,
}

impl Default for MidCall {
    fn default() -> Self {
        Self::new(DEFAULT_BUFFER_LEN)
    }
}

impl MidCall {
    /// Suspensions will use an unwind buffer of `buffer_len` bytes (at least
    /// [`MIN_BUFFER_LEN`], at most [`MAX_BUFFER_LEN`]): the last bytes of whole pages grown at the end of memory on the
    /// first suspension.
    pub fn new(buffer_len: u32) -> Self {
        MidCall {
            buffer_len: buffer_len.clamp(MIN_BUFFER_LEN, MAX_BUFFER_LEN),
            buffer: None,
            rewinding: false,
            host_state: Vec::new(),
        }
    }

    /// The unwind buffer, once a suspension placed it.
    pub fn buffer(&self) -> Option<UnwindBuffer> {
        self.buffer
    }

    /// The host-side state the suspending import gave [`suspend`] (empty once [`enter`] has
    /// handed it back).
    pub fn host_state(&self) -> &[u8] {
        &self.host_state
    }

    /// Whether a rewind is on its way to the import that suspended.
    pub fn is_rewinding(&self) -> bool {
        self.rewinding
    }
}

/// A store's data that holds a [`MidCall`]: what suspending imports need.
pub trait Suspendable {
    /// The mid-call state.
    fn mid_call(&mut self) -> &mut MidCall;
}

impl Suspendable for MidCall {
    fn mid_call(&mut self) -> &mut MidCall {
        self
    }
}

/// How a call ended: it returned, or an import suspended it.
#[derive(Debug, Clone)]
pub enum Completion {
    /// The export returned these results.
    Returned(Vec<Val>),
    /// The call is suspended; [`LiveAgent::resume_call`] continues it.
    Suspended,
}

impl Completion {
    pub(super) fn from_call(r: Result<Vec<Val>, CellError>) -> Result<Self, CellError> {
        match r {
            Ok(results) => Ok(Completion::Returned(results)),
            Err(CellError::ExecutionFailed(ExecutionError::CallSuspended)) => {
                Ok(Completion::Suspended)
            }
            Err(e) => Err(e),
        }
    }
}

fn host_error(what: &'static str) -> wasmi::Error {
    wasmi::Error::new(what)
}

fn call_export<T>(
    caller: &mut Caller<'_, T>,
    name: &str,
    args: &[Val],
) -> Result<(), wasmi::Error> {
    let func = caller
        .get_export(name)
        .and_then(Extern::into_func)
        .ok_or_else(|| host_error("the module is not transformed for mid-call capture"))?;
    func.call(caller.as_context_mut(), args, &mut [])
}

/// Called first by every import that may suspend: if this call of the import is the end of a
/// rewind, stops it (`asyncify_stop_rewind`) and returns the host-side state given to
/// [`suspend`]; otherwise `None`.
pub fn enter<T: Suspendable>(caller: &mut Caller<'_, T>) -> Result<Option<Vec<u8>>, wasmi::Error> {
    if !caller.data_mut().mid_call().rewinding {
        return Ok(None);
    }
    call_export(caller, "asyncify_stop_rewind", &[])?;
    let mid = caller.data_mut().mid_call();
    mid.rewinding = false;
    Ok(Some(core::mem::take(&mut mid.host_state)))
}

/// Suspends the call in progress from inside an import: places the unwind buffer at the end of
/// memory (growing it), writes Asyncify's header and starts the unwind. The import must then
/// return at once (any value of its result type: it is never seen). `host_state` (at most
/// [`MAX_HOST_STATE`] bytes) is the import's own state, carried with the suspended call and
/// handed back by [`enter`] when the call resumes.
pub fn suspend<T: Suspendable>(
    caller: &mut Caller<'_, T>,
    host_state: &[u8],
) -> Result<(), wasmi::Error> {
    if host_state.len() > MAX_HOST_STATE {
        return Err(host_error("host state too large for a suspended call"));
    }
    if caller.data_mut().mid_call().rewinding {
        return Err(host_error("suspend before the rewind was ended by `enter`"));
    }
    let memory = caller
        .get_export(MEMORY_EXPORT_NAME)
        .and_then(Extern::into_memory)
        .ok_or_else(|| host_error("no memory for the unwind buffer"))?;
    let size = memory.data_size(caller.as_context());
    let size = u32::try_from(size).map_err(|_| host_error("memory above 4 GiB"))?;
    let mid = caller.data_mut().mid_call();
    let wanted = mid.buffer_len;
    // The buffer must end where memory ends, so that an overflow traps instead of writing
    // into the module's own pages; a buffer the module has grown past is replaced.
    let buffer = match mid.buffer {
        Some(b) if b.end() == Some(size) && b.len >= wanted => b,
        _ => {
            let pages = wanted.div_ceil(PAGE_SIZE as u32);
            memory
                .grow(caller.as_context_mut(), u64::from(pages))
                .map_err(|_| host_error("memory cannot grow for the unwind buffer"))?;
            // The last `wanted` bytes of the grown memory (its end fits in 32 bits: checked
            // below, after which the start cannot overflow).
            let grown = u64::from(size) + u64::from(pages) * PAGE_SIZE as u64;
            let start = u32::try_from(grown - u64::from(wanted))
                .map_err(|_| host_error("memory above 4 GiB"))?;
            UnwindBuffer { start, len: wanted }
        }
    };
    let end = buffer
        .end()
        .filter(|e| *e as usize == memory.data_size(caller.as_context()))
        .ok_or_else(|| host_error("the unwind buffer does not end with memory"))?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&(buffer.start + HEADER_LEN).to_le_bytes());
    header[4..].copy_from_slice(&end.to_le_bytes());
    memory
        .write(caller.as_context_mut(), buffer.start as usize, &header)
        .map_err(|_| host_error("the unwind buffer is outside memory"))?;
    let mid = caller.data_mut().mid_call();
    mid.buffer = Some(buffer);
    mid.host_state.clear();
    mid.host_state.extend_from_slice(host_state);
    // The unwind runs no guest code but the saving of frames: fuel enough for it, on top of
    // what is left, so that running out cannot lose the call halfway through its unwind.
    let left = caller.get_fuel().unwrap_or(0);
    caller.set_fuel(left.saturating_add(UNWIND_FUEL))?;
    call_export(
        caller,
        "asyncify_start_unwind",
        &[Val::I32(buffer.start as i32)],
    )
}

/// Whether less than `reserve` units of the call's fuel are left: a yield point's test for
/// preemption before the engine's own `OutOfFuel` (which a call cannot survive).
pub fn fuel_below<T>(caller: &Caller<'_, T>, reserve: u64) -> bool {
    caller.get_fuel().is_ok_and(|left| left < reserve)
}

/// A call suspended in the middle: what a snapshot carries besides memory and globals (the
/// version-3 container's call section), to resume it on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspendedCall {
    /// The export whose call was suspended (it is called again to rewind).
    pub export: String,
    /// Where the unwound frames are.
    pub buffer: UnwindBuffer,
    /// The suspending import's own state ([`suspend`]).
    pub host_state: Vec<u8>,
}

impl SuspendedCall {
    /// The encoding (at most [`MAX_SUSPENDED_CALL_LEN`] bytes):
    ///
    /// ```text
    /// 1     format, 1
    /// 1+n   the export's name, 1 to 255 bytes of UTF-8
    /// 4     the buffer's start, u32 LE
    /// 4     the buffer's length, u32 LE (header included)
    /// 2+m   the host state's length, u16 LE, at most 1024, and its bytes
    /// ```
    ///
    /// `None` if the name is empty or too long, or the host state too long.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let name = self.export.as_bytes();
        if name.is_empty() || name.len() > MAX_EXPORT_NAME || self.host_state.len() > MAX_HOST_STATE
        {
            return None;
        }
        let mut out = Vec::with_capacity(1 + 1 + name.len() + 10 + self.host_state.len());
        out.push(SUSPENDED_CALL_FORMAT);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&self.buffer.start.to_le_bytes());
        out.extend_from_slice(&self.buffer.len.to_le_bytes());
        out.extend_from_slice(&(self.host_state.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.host_state);
        Some(out)
    }

    /// Reads [`to_bytes`](Self::to_bytes)'s encoding; every length is checked against its bound
    /// and the bytes left, and nothing may follow. Whether the call fits an instance is checked
    /// by [`LiveAgent::restore_call`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ExecutionError> {
        let bad = ExecutionError::BadSuspendedCall;
        let (&format, rest) = bytes.split_first().ok_or(bad)?;
        if format != SUSPENDED_CALL_FORMAT {
            return Err(bad);
        }
        let (&n, rest) = rest.split_first().ok_or(bad)?;
        let n = usize::from(n);
        if n == 0 || rest.len() < n + 10 {
            return Err(bad);
        }
        let (name, rest) = rest.split_at(n);
        let export = core::str::from_utf8(name).map_err(|_| bad)?.to_string();
        let u32_at =
            |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let buffer = UnwindBuffer {
            start: u32_at(0),
            len: u32_at(4),
        };
        let m = usize::from(u16::from_le_bytes([rest[8], rest[9]]));
        let state = &rest[10..];
        if m > MAX_HOST_STATE || state.len() != m {
            return Err(bad);
        }
        Ok(SuspendedCall {
            export,
            buffer,
            host_state: state.to_vec(),
        })
    }
}

impl<T> LiveAgent<T> {
    /// Mutable access to the host data (a mailbox to fill before resuming, for example).
    pub fn host_mut(&mut self) -> &mut T {
        self.store.data_mut()
    }

    /// Whether a call is suspended in the middle ([`Completion::Suspended`]).
    pub fn is_suspended_in_call(&self) -> bool {
        self.interrupted.is_some()
    }

    /// After the export returned (or failed): if an import suspended it, ends the unwind and
    /// records the suspended call; a failure during an unwind (a write past the buffer, which
    /// ends with memory) is [`ExecutionError::UnwindBufferOverflow`].
    pub(super) fn settle(
        &mut self,
        export: &str,
        outcome: Result<Vec<Val>, CellError>,
    ) -> Result<Vec<Val>, CellError> {
        let Some(asyncify) = self.asyncify else {
            return outcome;
        };
        // The call is over: the bridge's own calls into Asyncify get their own allowance.
        self.store
            .set_fuel(UNWIND_FUEL)
            .map_err(|_| failed(ExecutionError::FuelMeteringOff))?;
        let state = asyncify.state(&mut self.store);
        let stop = |store: &mut Store<T>| asyncify.stop_unwind.call(store, &[], &mut []);
        match (outcome, state) {
            (Ok(results), Some(NORMAL)) => Ok(results),
            (Ok(_), Some(UNWINDING)) => {
                stop(&mut self.store).map_err(|_| failed(ExecutionError::BadSuspendedCall))?;
                self.interrupted = Some(export.to_string());
                Err(failed(ExecutionError::CallSuspended))
            }
            (Err(e), Some(UNWINDING)) => {
                // Back to normal, so that the instance is usable if the embedder runs it again.
                let _ = stop(&mut self.store);
                // (`invoke` has made the agent `Suspended` already.)
                Err(match e {
                    CellError::ExecutionFailed(ExecutionError::Trap(Trap::MemoryOutOfBounds)) => {
                        failed(ExecutionError::UnwindBufferOverflow)
                    }
                    e => e,
                })
            }
            (Err(e), Some(REWINDING)) => {
                let _ = asyncify.stop_rewind.call(&mut self.store, &[], &mut []);
                Err(e)
            }
            (Err(e), _) => Err(e),
            // Rewinding after the export returned: the rewind never reached the import.
            (Ok(_), _) => {
                self.agent.set_state(AgentState::Suspended)?;
                Err(failed(ExecutionError::BadSuspendedCall))
            }
        }
    }
}

impl<T: Suspendable> LiveAgent<T> {
    /// The suspended call, to carry beside the captured agent; `None` between calls.
    pub fn suspended_call(&mut self) -> Option<SuspendedCall> {
        let export = self.interrupted.clone()?;
        let mid = self.store.data_mut().mid_call();
        Some(SuspendedCall {
            export,
            buffer: mid.buffer?,
            host_state: mid.host_state.clone(),
        })
    }

    /// The suspended call encoded as a snapshot's call section ([`SuspendedCall::to_bytes`]),
    /// or `None` between calls: give it to
    /// [`snapshot_with_call_at`](Self::snapshot_with_call_at).
    pub fn call_bytes(&mut self) -> Result<Option<Vec<u8>>, CellError> {
        match self.call_to_carry()? {
            Some(c) => c
                .to_bytes()
                .map(Some)
                .ok_or(failed(ExecutionError::BadSuspendedCall)),
            None => Ok(None),
        }
    }

    /// The suspended call, or `None` between calls; a call recorded without its buffer (which
    /// `settle` never leaves) is [`ExecutionError::BadSuspendedCall`] rather than `None`.
    fn call_to_carry(&mut self) -> Result<Option<SuspendedCall>, CellError> {
        match (self.is_suspended_in_call(), self.suspended_call()) {
            (true, None) => Err(failed(ExecutionError::BadSuspendedCall)),
            (_, call) => Ok(call),
        }
    }

    /// [`capture`](Self::capture) that also works while a call is suspended: the agent, and the
    /// call to carry with it (`None` between calls), for
    /// `MigrationSnapshot::capture_at(..).with_call(call.to_bytes())`.
    pub fn capture_with_call(
        &mut self,
    ) -> Result<(&Agent<Vec<u8>>, Option<SuspendedCall>), CellError> {
        let call = self.call_to_carry()?;
        self.capture_state()?;
        Ok((&self.agent, call))
    }

    /// [`into_agent`](Self::into_agent) that also works while a call is suspended, giving the
    /// call with the agent (see [`capture_with_call`](Self::capture_with_call)).
    pub fn into_agent_with_call(
        mut self,
    ) -> Result<(Agent<Vec<u8>>, Option<SuspendedCall>), CellError> {
        let call = self.call_to_carry()?;
        self.capture_state()?;
        Ok((self.agent, call))
    }

    /// [`precopy_finish`](Self::precopy_finish) that also works while a call is suspended: the
    /// delta then carries the call section, which needs the version-3 container
    /// (`opts.version` `Some(3)`; otherwise this is refused before the agent's state changes).
    /// The receiver applies it with [`apply_delta_with_call`](Self::apply_delta_with_call).
    pub fn precopy_finish_with_call(
        &mut self,
        pre: &PreCopy,
        source_node: Option<NodeId>,
        unix_secs: u64,
        opts: &EncodeOptions<'_>,
    ) -> Result<Vec<u8>, CellError> {
        let call = self.call_to_carry()?;
        let call = match call {
            Some(_) if opts.version != Some(3) => {
                return Err(CellError::SerializationFailed {
                    reason: "a suspended call needs the version-3 container",
                });
            }
            Some(c) => Some(
                c.to_bytes()
                    .ok_or(failed(ExecutionError::BadSuspendedCall))?,
            ),
            None => None,
        };
        self.precopy_finish_inner(pre, call.as_deref(), source_node, unix_secs, opts)
    }

    /// [`apply_delta`](Self::apply_delta) that also takes a call section: the call is decoded
    /// (and a malformed one refused) before the instance is touched, and taken over with
    /// [`restore_call`](Self::restore_call) after memory and globals are written; then the agent
    /// is `Running` and [`resume_call`](Self::resume_call) continues the call. If
    /// `restore_call` refuses the call, memory and globals are already written but the agent
    /// stays `Migrating` (no export runs). A delta without a call section is applied as by
    /// `apply_delta`.
    pub fn apply_delta_with_call(
        &mut self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        digests: &mut MemoryDigests,
    ) -> Result<(), CellError> {
        if let Some(call) = self.apply_delta_inner(bytes, opts, digests, true)? {
            self.restore_call(call)?;
        }
        self.agent.set_state(AgentState::Running)
    }

    /// Continues the suspended call: starts the rewind and calls the same export again (its
    /// arguments come back from the buffer); the import that suspended is called again, and its
    /// [`enter`] ends the rewind. A fresh fuel allowance, as for any call.
    pub fn resume_call(&mut self) -> Result<Completion, CellError> {
        let export = self
            .interrupted
            .clone()
            .ok_or(failed(ExecutionError::NotSuspended))?;
        let asyncify = self
            .asyncify
            .ok_or(failed(ExecutionError::BadSuspendedCall))?;
        let buffer = self
            .store
            .data_mut()
            .mid_call()
            .buffer
            .ok_or(failed(ExecutionError::BadSuspendedCall))?;
        let state = self.agent.state();
        if state != AgentState::Running {
            return Err(failed(ExecutionError::NotRunning { found: state }));
        }
        let func = self
            .instance
            .get_func(&self.store, &export)
            .ok_or(failed(ExecutionError::MissingExport))?;
        let args: Vec<Val> = func
            .ty(&self.store)
            .params()
            .iter()
            .map(|t| Val::default_for_ty(*t))
            .collect();
        self.store
            .set_fuel(UNWIND_FUEL)
            .map_err(|_| failed(ExecutionError::FuelMeteringOff))?;
        asyncify
            .start_rewind
            .call(&mut self.store, &[Val::I32(buffer.start as i32)], &mut [])
            .map_err(|_| failed(ExecutionError::BadSuspendedCall))?;
        self.store.data_mut().mid_call().rewinding = true;
        self.interrupted = None;
        let outcome = self.invoke(&export, &args);
        // A rewind the import never ended (it did not call `enter`, or the call failed first).
        let unfinished = core::mem::replace(&mut self.store.data_mut().mid_call().rewinding, false);
        if unfinished && outcome.is_ok() {
            self.agent.set_state(AgentState::Suspended)?;
            return Err(failed(ExecutionError::BadSuspendedCall));
        }
        Completion::from_call(self.settle(&export, outcome))
    }

    /// Takes over a suspended call carried from another node, on an agent just resumed from the
    /// same capture ([`Runtime::resume`](super::Runtime::resume)): checks that the module is
    /// transformed, exports the function, and that the buffer lies within memory and holds a
    /// finished unwind (its header's position past the header and within the buffer, its end
    /// the buffer's end). Then [`resume_call`](Self::resume_call) continues it.
    pub fn restore_call(&mut self, call: SuspendedCall) -> Result<(), CellError> {
        let bad = failed(ExecutionError::BadSuspendedCall);
        if self.interrupted.is_some() || self.asyncify.is_none() {
            return Err(bad);
        }
        if call.host_state.len() > MAX_HOST_STATE {
            return Err(bad);
        }
        self.instance
            .get_func(&self.store, &call.export)
            .ok_or(failed(ExecutionError::MissingExport))?;
        let memory = self.memory.ok_or(bad)?;
        let end = call.buffer.end().ok_or(bad)?;
        if call.buffer.len < MIN_BUFFER_LEN || end as usize > memory.data_size(&self.store) {
            return Err(bad);
        }
        let mut header = [0u8; 8];
        memory
            .read(&self.store, call.buffer.start as usize, &mut header)
            .map_err(|_| bad)?;
        let current = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let header_end = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if header_end != end || current < call.buffer.start + HEADER_LEN || current > end {
            return Err(bad);
        }
        let mid = self.store.data_mut().mid_call();
        mid.buffer = Some(call.buffer);
        mid.host_state = call.host_state;
        mid.rewinding = false;
        self.interrupted = Some(call.export);
        Ok(())
    }
}
