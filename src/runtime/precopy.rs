//! Migration straight from and into a live instance, and pre-copy.
//!
//! - [`LiveAgent::snapshot_at`] borrows the instance's memory for a snapshot: serializing it is
//!   the one copy of memory on the sending side.
//! - [`Runtime::resume_bytes`] (and [`Runtime::stage`]) decode a snapshot straight into a new
//!   instance's memory, hashing each chunk once: the one copy on the receiving side.
//! - Pre-copy: [`LiveAgent::precopy_begin`] sends a full snapshot while the agent keeps
//!   running; at the stop, [`LiveAgent::precopy_finish`] sends only the 4 KiB chunks that
//!   changed since (found by comparing with what was sent: wasmi tracks no dirty pages), and
//!   the receiver, which staged the first snapshot in an instance, applies them in place with
//!   [`LiveAgent::apply_delta`], hashing only those chunks.

use super::midcall::{Suspendable, SuspendedCall};
use super::{failed, to_global_value, Imports, LiveAgent, Runtime};
use crate::globals::Globals;
use crate::migration::snapshot::{assemble, resolve_dna};
use crate::migration::wire::memory::{chunk_digest, CHUNK_SIZE};
use crate::migration::wire::{self, chunks};
use crate::migration::{
    DecodeOptions, EncodeOptions, MemoryDigests, MigrationSnapshot, Route, StateEncoding,
};
use crate::{AgentState, CellError, DecodeError, Digested, ExecutionError, NodeId, Refusal};
use alloc::vec::Vec;

/// What the sending side keeps between the rounds of a pre-copy migration: a copy of the
/// memory it sent (to find the chunks that changed since) and its digests (so that only those
/// are hashed). The sender holds two copies of the agent's memory until the migration ends.
#[derive(Debug, Clone)]
pub struct PreCopy {
    sent: Vec<u8>,
    digests: MemoryDigests,
    route: Route,
}

impl PreCopy {
    /// The route both rounds are addressed to.
    pub fn route(&self) -> Route {
        self.route
    }
}

impl<T> LiveAgent<T> {
    /// A snapshot of the running instance, taken between calls, that borrows the instance's
    /// memory and the agent's binary: nothing is copied until it is serialized.
    ///
    /// While a call is suspended this is [`ExecutionError::CallSuspended`] (the snapshot would
    /// not carry the call); so are [`precopy_begin`](Self::precopy_begin) and
    /// [`precopy_finish`](Self::precopy_finish), which take it. Use
    /// [`capture_with_call`](Self::capture_with_call) or
    /// [`precopy_finish_with_call`](Self::precopy_finish_with_call).
    pub fn snapshot_at(
        &self,
        source_node: Option<NodeId>,
        unix_secs: u64,
    ) -> Result<MigrationSnapshot<&[u8]>, CellError> {
        self.refuse_suspended()?;
        self.snapshot_state_at(source_node, unix_secs)
    }

    /// [`snapshot_at`](Self::snapshot_at) that also works while a call is suspended: `call` is
    /// the call's encoding ([`call_bytes`](Self::call_bytes)), carried as the snapshot's call
    /// section, and must be given exactly when a call is suspended
    /// ([`ExecutionError::CallSuspended`] without it, [`ExecutionError::NotSuspended`] with one
    /// between calls): a snapshot never holds unwound frames without the call that resumes them.
    pub fn snapshot_with_call_at<'a>(
        &'a self,
        source_node: Option<NodeId>,
        unix_secs: u64,
        call: Option<&'a [u8]>,
    ) -> Result<MigrationSnapshot<&'a [u8]>, CellError> {
        match (self.interrupted.is_some(), call) {
            (true, None) => Err(failed(ExecutionError::CallSuspended)),
            (false, Some(_)) => Err(failed(ExecutionError::NotSuspended)),
            (_, None) => self.snapshot_state_at(source_node, unix_secs),
            (_, Some(c)) => Ok(self.snapshot_state_at(source_node, unix_secs)?.with_call(c)),
        }
    }

    /// The instance's linear memory as it is now (empty without one), suspended call or not.
    pub fn memory_bytes(&self) -> &[u8] {
        self.memory.map_or(&[][..], |m| m.data(&self.store))
    }

    /// [`snapshot_at`](Self::snapshot_at), suspended call or not (the caller carries it).
    pub(super) fn snapshot_state_at(
        &self,
        source_node: Option<NodeId>,
        unix_secs: u64,
    ) -> Result<MigrationSnapshot<&[u8]>, CellError> {
        let mut globals = Globals::new();
        for g in &self.globals {
            let v = to_global_value(g.get(&self.store)).ok_or(failed(ExecutionError::Refused(
                Refusal::MutableReferenceGlobal,
            )))?;
            // At most MAX_GLOBALS: start refuses more.
            globals
                .push(v)
                .map_err(|_| failed(ExecutionError::GlobalCountMismatch))?;
        }
        let memory = self.memory.map_or(&[][..], |m| m.data(&self.store));
        Ok(MigrationSnapshot::from_parts(
            self.agent.id(),
            self.agent.dna().as_borrowed(),
            memory,
            globals,
            self.agent.policy().clone(),
            unix_secs,
            source_node,
        ))
    }

    /// Pre-copy, first round: a full snapshot of the agent as it is now, addressed to `route`,
    /// serialized with `opts` (whose `state` must be `Raw`), while the agent keeps running.
    /// Keep the [`PreCopy`] for [`precopy_finish`](Self::precopy_finish).
    pub fn precopy_begin(
        &self,
        source_node: Option<NodeId>,
        route: Route,
        unix_secs: u64,
        opts: &EncodeOptions<'_>,
    ) -> Result<(PreCopy, Vec<u8>), CellError> {
        if !matches!(opts.state, StateEncoding::Raw) {
            return Err(CellError::SerializationFailed {
                reason: "a pre-copy's first round carries the whole memory: StateEncoding::Raw",
            });
        }
        let snapshot = self.snapshot_at(source_node, unix_secs)?.with_route(route);
        let (bytes, digests) = snapshot.serialize_with_digests(opts)?;
        let pre = PreCopy {
            sent: snapshot.wasm_state().to_vec(),
            digests,
            route,
        };
        Ok((pre, bytes))
    }

    /// Pre-copy, the stop: moves the agent to `Migrating` (no more calls) and encodes only the
    /// chunks that changed since [`precopy_begin`](Self::precopy_begin), with the same route,
    /// as a delta against what was sent. `opts.state` and `opts.base_digests` are set here.
    pub fn precopy_finish(
        &mut self,
        pre: &PreCopy,
        source_node: Option<NodeId>,
        unix_secs: u64,
        opts: &EncodeOptions<'_>,
    ) -> Result<Vec<u8>, CellError> {
        // Before the state changes: a refused stop leaves the agent as it was.
        self.refuse_suspended()?;
        self.precopy_finish_inner(pre, None, source_node, unix_secs, opts)
    }

    /// [`precopy_finish`](Self::precopy_finish) with `call` (an encoded suspended call, or none)
    /// as the call section.
    pub(super) fn precopy_finish_inner(
        &mut self,
        pre: &PreCopy,
        call: Option<&[u8]>,
        source_node: Option<NodeId>,
        unix_secs: u64,
        opts: &EncodeOptions<'_>,
    ) -> Result<Vec<u8>, CellError> {
        self.agent.set_state(AgentState::Migrating)?;
        let mut snapshot = self
            .snapshot_state_at(source_node, unix_secs)?
            .with_route(pre.route);
        if let Some(call) = call {
            snapshot = snapshot.with_call(call);
        }
        snapshot.serialize_with(&EncodeOptions {
            state: StateEncoding::Delta { base: &pre.sent },
            base_digests: Some(&pre.digests),
            ..*opts
        })
    }

    /// The receiving side of a pre-copy: applies a version-2 delta (from
    /// [`precopy_finish`](Self::precopy_finish)) to this staged instance's memory in place and
    /// sets its globals, then moves the agent to `Running`. `digests` must be the instance
    /// memory's (from [`Runtime::stage`]); they become the new memory's. Only the chunks the
    /// delta carries are decoded and hashed; everything, the memory root included, is checked
    /// before the instance is touched, so on error it is unchanged.
    ///
    /// The delta must be of the same agent and DNA. Authenticate it first where peers are not
    /// trusted (a `TrustList` checks the same bytes with `base_state` set to the staged memory).
    ///
    /// A delta with a call section (a version-3 stop taken while a call was suspended,
    /// [`precopy_finish_with_call`](Self::precopy_finish_with_call)) is
    /// [`DecodeError::CallNotTaken`], the instance unchanged: apply it with
    /// [`apply_delta_with_call`](Self::apply_delta_with_call).
    pub fn apply_delta(
        &mut self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        digests: &mut MemoryDigests,
    ) -> Result<(), CellError> {
        self.apply_delta_inner(bytes, opts, digests, false)?;
        self.agent.set_state(AgentState::Running)
    }

    /// [`apply_delta`](Self::apply_delta) without the move to `Running`; a call section is
    /// refused unless `with_call`, and then decoded (and refused if malformed) before the
    /// instance is touched, and given back.
    pub(super) fn apply_delta_inner(
        &mut self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        digests: &mut MemoryDigests,
        with_call: bool,
    ) -> Result<Option<SuspendedCall>, CellError> {
        let p = wire::parse(bytes, &opts.limits)?;
        let (Some((len, root)), true) = (p.memory, p.flags & wire::FLAG_STATE_DELTA != 0) else {
            return Err(DecodeError::DeltaWithoutBase.into());
        };
        if p.agent_id != self.agent.id() {
            return Err(failed(ExecutionError::WrongAgent));
        }
        if p.dna_hash != *self.agent.dna().hash() {
            return Err(CellError::IntegrityMismatch {
                what: Digested::Dna,
                expected: crate::DigestPrefix::of(self.agent.dna().hash()),
                found: crate::DigestPrefix::of(&p.dna_hash),
            });
        }
        let call = take_call(p.call, with_call)?;
        let len = len as usize;
        let checked = {
            let base = self.memory.map_or(&[][..], |m| m.data(&self.store));
            chunks::check_delta(
                p.state,
                base,
                digests,
                len,
                opts.limits.max_wasm_state,
                &root,
                p.commit,
            )?
        };
        let values = crate::globals::collect(&p.globals)?;
        if values.len() != self.globals.len() {
            return Err(failed(ExecutionError::GlobalCountMismatch));
        }
        if let Some(memory) = self.sized_memory(len)? {
            checked.write_into(memory.data_mut(&mut self.store));
        }
        self.set_globals(&values)?;
        *digests = checked.digests;
        Ok(call)
    }
}

impl Runtime {
    /// Decodes `bytes` straight into a new instance and continues the agent there, as
    /// [`resume`](Self::resume) does after `deserialize` and `restore`, but with one copy of the
    /// memory instead of three: raw memory goes from the input into the instance's memory,
    /// hashed chunk by chunk on the way (version 2 checks its memory root; the DNA hash is
    /// checked once, and not again). Chunked and delta memory are decoded with
    /// `deserialize_with` first. Returns the memory's digests too, for a later delta.
    ///
    /// A snapshot with a call section (captured while a call was suspended) is
    /// [`DecodeError::CallNotTaken`]: decode it, take the agent and the call with
    /// [`MigrationSnapshot::into_agent_with_call`], [`resume`](Self::resume) the agent and give
    /// the call to [`LiveAgent::restore_call`].
    pub fn resume_bytes<T>(
        &self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        host: T,
        link: impl FnOnce(&mut Imports<'_, T>) -> Result<(), wasmi::Error>,
    ) -> Result<(LiveAgent<T>, MemoryDigests), CellError> {
        let (mut live, digests) = self.stage(bytes, opts, host, link)?;
        live.agent.set_state(AgentState::Running)?;
        Ok((live, digests))
    }

    /// [`resume_bytes`](Self::resume_bytes), leaving the agent `Migrating`: the receiving side
    /// of a pre-copy holds the first round here, not running, until
    /// [`LiveAgent::apply_delta`] brings the rest and starts it.
    pub fn stage<T>(
        &self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        host: T,
        link: impl FnOnce(&mut Imports<'_, T>) -> Result<(), wasmi::Error>,
    ) -> Result<(LiveAgent<T>, MemoryDigests), CellError> {
        let (live, digests, _) = self.stage_inner(bytes, opts, host, link, false)?;
        Ok((live, digests))
    }

    /// [`stage`](Self::stage) that also takes a snapshot captured while a call was suspended:
    /// its call section is decoded (a malformed one refused) before the instance is made, and
    /// taken over with [`LiveAgent::restore_call`] once memory and globals are written. The
    /// agent is `Migrating`; once it is `Running`, [`LiveAgent::resume_call`] continues the
    /// call. A snapshot without a call section is staged as by `stage`.
    pub fn stage_with_call<T: Suspendable>(
        &self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        host: T,
        link: impl FnOnce(&mut Imports<'_, T>) -> Result<(), wasmi::Error>,
    ) -> Result<(LiveAgent<T>, MemoryDigests), CellError> {
        let (mut live, digests, call) = self.stage_inner(bytes, opts, host, link, true)?;
        if let Some(call) = call {
            live.restore_call(call)?;
        }
        Ok((live, digests))
    }

    fn stage_inner<T>(
        &self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        host: T,
        link: impl FnOnce(&mut Imports<'_, T>) -> Result<(), wasmi::Error>,
        with_call: bool,
    ) -> Result<(LiveAgent<T>, MemoryDigests, Option<SuspendedCall>), CellError> {
        let p = wire::parse(bytes, &opts.limits)?;
        let call = take_call(p.call, with_call)?;
        if p.flags & wire::STATE_FLAGS != 0 {
            let (snapshot, digests) = MigrationSnapshot::deserialize_with_digests(bytes, opts)?;
            // Migrating, as restored (the call section, decoded above, is taken by the caller).
            let (agent, _) = snapshot.into_agent_with_call()?;
            let (mut live, _) = self.instantiate(agent, host, link)?;
            live.write_back()?;
            return Ok((live, digests, call));
        }
        let dna = resolve_dna(&p, opts.dna_store)?;
        let state = p.state;
        let root = p.memory.map(|(_, root)| root);
        let commit = p.commit;
        // The agent without its memory: the memory goes into the instance, once.
        let view = assemble(p, dna, &[][..]);
        let (agent, _) = view.to_owned_snapshot().into_agent_with_call()?;
        let globals = crate::globals::collect(view.globals())?;
        let (mut live, _) = self.instantiate(agent, host, link)?;
        let mut digests = chunks::digest_vec(state.len(), opts.limits.max_wasm_state)?;
        if let Some(memory) = live.sized_memory(state.len())? {
            let data = memory.data_mut(&mut live.store);
            for (i, chunk) in state.chunks(CHUNK_SIZE).enumerate() {
                let at = i * CHUNK_SIZE;
                let dst = &mut data[at..at + chunk.len()];
                dst.copy_from_slice(chunk);
                digests.push(chunk_digest(dst));
            }
        }
        let digests = MemoryDigests::from_parts(state.len(), digests);
        if let Some(root) = root {
            wire::check_digest(Digested::Memory, &root, &digests.root_by(commit))?;
        }
        live.set_globals(&globals)?;
        Ok((live, digests, call))
    }
}

/// A container's call section as the caller takes it: none; refused with
/// [`DecodeError::CallNotTaken`] on a path that cannot carry it (`with_call` false); else
/// decoded, a malformed one refused, before anything is made from the container.
fn take_call(call: Option<&[u8]>, with_call: bool) -> Result<Option<SuspendedCall>, CellError> {
    match (call, with_call) {
        (None, _) => Ok(None),
        (Some(_), false) => Err(DecodeError::CallNotTaken.into()),
        (Some(c), true) => Ok(Some(SuspendedCall::from_bytes(c).map_err(failed)?)),
    }
}
