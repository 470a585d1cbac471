//! [`MigrationSnapshot`]: everything needed to bring an agent back to life on another node.

#[cfg(feature = "alloc")]
use super::wire::FLAG_STATE_DELTA;
use super::wire::{self, frame, v1, v3, DecodeLimits, Fields, Parsed, Route, SnapshotSigner};
#[cfg(feature = "alloc")]
use super::wire::{chunks, memory::MemoryDigests};
use super::wire::{FLAG_DNA_BY_REFERENCE, FLAG_STATE_CHUNKED, STATE_FLAGS};
use super::DnaStore;
use crate::globals::Globals;
use crate::{
    Agent, AgentId, AgentState, CellError, DecodeError, Digested, Dna, GlobalValue, NodeId, Policy,
};

/// An agent captured for migration: id, DNA (binary and SHA-256), linear memory, mutable
/// globals, policy, capture time (Unix seconds) and the node it was captured on.
///
/// `B` is the byte storage, as for [`Agent`]. A snapshot decoded with
/// [`MigrationSnapshot::view`] borrows its binary and memory from the received bytes
/// ([`SnapshotView`]); one from `MigrationSnapshot::deserialize` (with `alloc`) owns copies.
///
/// Every snapshot holds a verified [`Dna`]: one captured from an agent has the agent's, and one
/// decoded from bytes has passed every check in `docs/wire-format.md`, the DNA hash included.
#[derive(Clone)]
pub struct MigrationSnapshot<B> {
    pub(super) agent_id: AgentId,
    pub(super) dna: Dna<B>,
    pub(super) wasm_state: B,
    pub(super) globals: Globals,
    pub(super) policy: Policy,
    pub(super) timestamp: u64,
    pub(super) source_node: Option<NodeId>,
    pub(super) route: Option<Route>,
    /// Version 3: the agent's messaging state (`SECTION_INBOX`), as its host encodes it.
    pub(super) inbox: Option<B>,
    /// Version 3: a call suspended in the middle (`SECTION_CALL`), as its runtime encodes it.
    pub(super) call: Option<B>,
}

/// A snapshot that borrows its binary and memory from the bytes it was decoded from: decoding
/// one allocates nothing and copies neither.
pub type SnapshotView<'a> = MigrationSnapshot<&'a [u8]>;

/// How `MigrationSnapshot::serialize_with` (with `alloc`) encodes: each option sets one wire
/// flag.
#[derive(Clone, Copy, Default)]
pub struct EncodeOptions<'a> {
    /// Send the DNA hash instead of the binary (`FLAG_DNA_BY_REFERENCE`); the receiver needs
    /// the binary in its [`DnaStore`].
    pub dna_by_reference: bool,
    /// How to write the memory.
    pub state: StateEncoding<'a>,
    /// Sign with this signer and sequence number (`FLAG_SIGNED`). The sequence number must grow
    /// with every snapshot of the agent: receivers reject one that does not. In version 2 (a
    /// snapshot with a [`Route`]) the sequence number is the route's epoch, and this number must
    /// equal it.
    pub signer: Option<(&'a dyn SnapshotSigner, u64)>,
    /// Version 2 only: the digests of the delta's base, kept from when it was sent, so that only
    /// the chunks that changed are hashed.
    #[cfg(feature = "alloc")]
    pub base_digests: Option<&'a MemoryDigests>,
    /// The wire version to write: `None` (the default) writes version 1 without a route and
    /// version 2 with one; `Some(3)` writes the version-3 container (it needs a route and an
    /// allocator; its memory is always chunked or a delta, and it carries the inbox).
    pub version: Option<u16>,
    /// Version 3 only: seal the container with this node's own key (`FLAG_SEALED`), for files a
    /// node writes for itself; instead of a signature.
    pub sealer: Option<&'a dyn super::SnapshotSealer>,
}

/// How the memory goes on the wire.
#[derive(Clone, Copy, Default, Debug)]
pub enum StateEncoding<'a> {
    /// As it is (version 1 without flags).
    #[default]
    Raw,
    /// In 4 KiB chunks: zero chunks skipped, the rest LZ4-compressed (feature `lz4`) or raw
    /// (`FLAG_STATE_CHUNKED`).
    Chunked,
    /// Only the 4 KiB chunks that differ from `base`, a memory the receiver holds
    /// (`FLAG_STATE_DELTA`); the delta names the base by its SHA-256.
    Delta {
        /// The memory the receiver already has.
        base: &'a [u8],
    },
}

/// What a receiver brings to decoding.
#[derive(Clone, Copy, Default)]
pub struct DecodeOptions<'a> {
    /// The largest binary and memory accepted.
    pub limits: DecodeLimits,
    /// Where to find DNA that a snapshot names by reference.
    pub dna_store: Option<&'a dyn DnaStore>,
    /// The memory a delta applies to (the state of the agent's previous snapshot).
    pub base_state: Option<&'a [u8]>,
    /// Version 2 only: the digests of `base_state` (from
    /// [`deserialize_with_digests`](MigrationSnapshot::deserialize_with_digests) or
    /// [`MemoryDigests::of`]), so that applying a delta hashes only the chunks it carries. They
    /// must describe `base_state`: they are the receiver's own record, not checked again.
    #[cfg(feature = "alloc")]
    pub base_digests: Option<&'a MemoryDigests>,
}

impl<B: AsRef<[u8]> + Clone> MigrationSnapshot<B> {
    /// Captures `agent` as it is now, stamped `unix_secs`, taken on `source_node`.
    ///
    /// Clones the storage: a copy of the binary and memory for `Vec<u8>`, a copy of the
    /// references for `&[u8]`.
    pub fn capture_at(agent: &Agent<B>, source_node: Option<NodeId>, unix_secs: u64) -> Self {
        MigrationSnapshot {
            agent_id: agent.id(),
            dna: agent.dna().clone(),
            wasm_state: agent.wasm_state_storage().clone(),
            globals: agent.globals_list().clone(),
            policy: agent.policy().clone(),
            timestamp: unix_secs,
            source_node,
            route: None,
            inbox: None,
            call: None,
        }
    }

    /// [`capture_at`](Self::capture_at) with the system clock.
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn capture(agent: &Agent<B>, source_node: Option<NodeId>) -> Self {
        Self::capture_at(agent, source_node, crate::unix_now())
    }

    /// The agent this snapshot holds: the same id, DNA, policy, memory and globals, in state
    /// [`AgentState::Migrating`] (the target moves it to `Running`).
    ///
    /// A snapshot with a call section (captured in the middle of a call) is
    /// [`DecodeError::CallNotTaken`]: restored as an agent between calls, it would restart the
    /// export with the unwound frames left in memory. Take it with
    /// [`into_agent_with_call`](MigrationSnapshot::into_agent_with_call). Any other snapshot
    /// from [`capture_at`](Self::capture_at), [`view`](MigrationSnapshot::view) or
    /// `deserialize` (with `alloc`) restores without error.
    pub fn restore(&self) -> Result<Agent<B>, CellError> {
        self.clone().into_agent()
    }
}

impl<B: AsRef<[u8]>> MigrationSnapshot<B> {
    /// A snapshot from its parts, for a runtime that captures straight from a live instance.
    #[cfg_attr(not(feature = "wasmi"), allow(dead_code))]
    pub(crate) fn from_parts(
        agent_id: AgentId,
        dna: Dna<B>,
        memory: B,
        globals: Globals,
        policy: Policy,
        timestamp: u64,
        source_node: Option<NodeId>,
    ) -> Self {
        MigrationSnapshot {
            agent_id,
            dna,
            wasm_state: memory,
            globals,
            policy,
            timestamp,
            source_node,
            route: None,
            inbox: None,
            call: None,
        }
    }

    /// This snapshot addressed to `route.target` at `route.epoch`: it then serializes as wire
    /// format version 2, whose signed bytes bind the target and epoch, so that a signed snapshot
    /// cannot be replayed to another node or after a newer hand-off.
    pub fn with_route(mut self, route: Route) -> Self {
        self.route = Some(route);
        self
    }

    /// The node and epoch this snapshot is addressed to (version 2), if any.
    pub fn route(&self) -> Option<Route> {
        self.route
    }

    /// This snapshot carrying `inbox`, the agent's messaging state as its host encodes it
    /// (`mesh::Inbox::encode`): written as the version-3 inbox section, under the same signature
    /// as the agent, so nobody on the way can change an agent's pending messages.
    pub fn with_inbox(mut self, inbox: B) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// The inbox section, if the snapshot has one (version 3).
    pub fn inbox(&self) -> Option<&[u8]> {
        self.inbox.as_ref().map(|b| b.as_ref())
    }

    /// This snapshot carrying `call`, a call suspended in the middle as the runtime encodes it
    /// (`runtime::midcall::SuspendedCall::to_bytes`, at most `MAX_CALL_SECTION_LEN` bytes):
    /// written as the version-3 call section, under the same signature as the memory that holds
    /// the call's frames. A snapshot without one was captured between calls.
    pub fn with_call(mut self, call: B) -> Self {
        self.call = Some(call);
        self
    }

    /// The call section, if the agent was captured in the middle of a call (version 3).
    pub fn call(&self) -> Option<&[u8]> {
        self.call.as_ref().map(|b| b.as_ref())
    }

    /// [`restore`](Self::restore) without copying the storage (the inbox, if any, is dropped:
    /// take it with [`inbox`](Self::inbox) first). A snapshot with a call section is
    /// [`DecodeError::CallNotTaken`], as for `restore`.
    pub fn into_agent(self) -> Result<Agent<B>, CellError> {
        if self.call.is_some() {
            return Err(DecodeError::CallNotTaken.into());
        }
        self.into_agent_with_call().map(|(agent, _)| agent)
    }

    /// The agent, as [`into_agent`](Self::into_agent) gives it, and the call section if the
    /// snapshot has one: the call-aware path. The caller must not run the agent's exports
    /// before the call is taken over (`SuspendedCall::from_bytes`, then
    /// `LiveAgent::restore_call` on the resumed agent, feature `wasmi`).
    pub fn into_agent_with_call(self) -> Result<(Agent<B>, Option<B>), CellError> {
        let agent = Agent::from_parts(
            self.agent_id,
            AgentState::Migrating,
            self.dna,
            self.policy,
            self.wasm_state,
            self.globals,
        );
        Ok((agent, self.call))
    }

    /// The agent's id.
    pub fn agent_id(&self) -> AgentId {
        self.agent_id
    }

    /// The agent's DNA.
    pub fn dna(&self) -> &Dna<B> {
        &self.dna
    }

    /// The agent's WebAssembly binary.
    pub fn wasm_binary(&self) -> &[u8] {
        self.dna.binary()
    }

    /// The SHA-256 of the binary.
    pub fn dna_hash(&self) -> &[u8; 32] {
        self.dna.hash()
    }

    /// The agent's linear memory at capture.
    pub fn wasm_state(&self) -> &[u8] {
        self.wasm_state.as_ref()
    }

    /// The agent's mutable globals at capture.
    pub fn globals(&self) -> &[GlobalValue] {
        &self.globals
    }

    /// The agent's policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// When the snapshot was captured, in Unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The node it was captured on, if one was given.
    pub fn source_node(&self) -> Option<NodeId> {
        self.source_node
    }

    /// Seconds from capture to `now_unix_secs`, or `None` if the capture lies in the future
    /// (clock skew, or a forged timestamp): a future timestamp never reads as a fresh snapshot.
    pub fn age_seconds_at(&self, now_unix_secs: u64) -> Option<u64> {
        now_unix_secs.checked_sub(self.timestamp)
    }

    /// [`age_seconds_at`](Self::age_seconds_at) with the system clock.
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn age_seconds(&self) -> Option<u64> {
        self.age_seconds_at(crate::unix_now())
    }

    fn fields(&self) -> Fields<'_> {
        Fields {
            agent_id: self.agent_id,
            dna_hash: self.dna.hash(),
            globals: &self.globals,
            policy: &self.policy,
            timestamp: self.timestamp,
            source_node: self.source_node,
            route: self.route,
        }
    }

    /// The exact length of the serialized snapshot in bytes, computed without serializing:
    /// version 2 with a [`route`](Self::route), else version 1.
    pub fn size_bytes(&self) -> usize {
        let (f, binary, state) = (self.fields(), self.dna.binary(), self.wasm_state());
        match self.route {
            Some(_) => frame::encoded_len(&f, binary, state, false),
            None => v1::encoded_len(&f, binary, state, false),
        }
    }

    /// Serializes into `buf` and returns how many bytes were written (the first
    /// [`size_bytes`](Self::size_bytes)). A short buffer is [`CellError::BufferTooSmall`].
    pub fn serialize_into(&self, buf: &mut [u8]) -> Result<usize, CellError> {
        self.serialize_into_with(&EncodeOptions::default(), buf)
    }

    /// [`serialize_into`](Self::serialize_into) with options: DNA by reference and a signature
    /// work without an allocator; chunked and delta memory need `serialize_with` (with `alloc`).
    pub fn serialize_into_with(
        &self,
        opts: &EncodeOptions<'_>,
        buf: &mut [u8],
    ) -> Result<usize, CellError> {
        if !matches!(opts.state, StateEncoding::Raw) {
            return Err(CellError::SerializationFailed {
                reason: "chunked and delta memory are encoded with serialize_with (alloc)",
            });
        }
        let state = self.wasm_state();
        if opts.version == Some(3) {
            let memory = v3::MemorySection::Plain(state);
            let root = wire::memory::Commit::Tree.root(state);
            let available = buf.len();
            return self.encode_v3_into(opts, memory, root, |needed| {
                buf.get_mut(..needed)
                    .ok_or(CellError::BufferTooSmall { needed, available })
            });
        }
        self.check_v1_v2(opts)?;
        self.encode(opts, 0, state, state.len() as u64, None, |needed| {
            let available = buf.len();
            buf.get_mut(..needed)
                .ok_or(CellError::BufferTooSmall { needed, available })
        })
    }

    /// Serializes into a new `Vec` of exactly [`size_bytes`](Self::size_bytes) bytes: version 2
    /// if the snapshot has a [`route`](Self::route), else version 1.
    #[cfg(feature = "alloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn serialize(&self) -> Result<alloc::vec::Vec<u8>, CellError> {
        self.serialize_with(&EncodeOptions::default())
    }

    /// Serializes with the wire flags `opts` asks for: DNA by reference, chunked or delta
    /// memory, a signature. `EncodeOptions::default()` gives the same bytes as
    /// [`serialize`](Self::serialize).
    #[cfg(feature = "alloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn serialize_with(
        &self,
        opts: &EncodeOptions<'_>,
    ) -> Result<alloc::vec::Vec<u8>, CellError> {
        self.encode_vec(opts, false).map(|(bytes, _)| bytes)
    }

    /// [`serialize_with`](Self::serialize_with), also returning the digests of the memory, which
    /// a sender keeps to encode the next delta hashing only the chunks that changed (version 2
    /// computes them for its memory root anyway; version 1 hashes the memory once more).
    #[cfg(feature = "alloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn serialize_with_digests(
        &self,
        opts: &EncodeOptions<'_>,
    ) -> Result<(alloc::vec::Vec<u8>, MemoryDigests), CellError> {
        let (bytes, digests) = self.encode_vec(opts, true)?;
        let digests = digests.unwrap_or_else(|| MemoryDigests::of(self.wasm_state()));
        Ok((bytes, digests))
    }

    #[cfg(feature = "alloc")]
    fn encode_vec(
        &self,
        opts: &EncodeOptions<'_>,
        want_digests: bool,
    ) -> Result<(alloc::vec::Vec<u8>, Option<MemoryDigests>), CellError> {
        if opts.version == Some(3) {
            return self.encode_v3(opts).map(|(b, d)| (b, Some(d)));
        }
        self.check_v1_v2(opts)?;
        let memory = self.wasm_state();
        let v2 = self.route.is_some();
        let mut digests = None;
        let (flags, blob) = match opts.state {
            StateEncoding::Raw => (0, None),
            StateEncoding::Chunked if v2 => {
                (FLAG_STATE_CHUNKED, Some(chunks::encode_chunked_v2(memory)))
            }
            StateEncoding::Chunked => (FLAG_STATE_CHUNKED, Some(chunks::encode_chunked(memory))),
            StateEncoding::Delta { base } if v2 => {
                let (blob, d) = chunks::encode_delta_v2(
                    base,
                    opts.base_digests,
                    memory,
                    super::wire::memory::Commit::Flat,
                )?;
                digests = Some(d);
                (FLAG_STATE_DELTA, Some(blob))
            }
            StateEncoding::Delta { base } => {
                (FLAG_STATE_DELTA, Some(chunks::encode_delta(base, memory)))
            }
        };
        if v2 && want_digests && digests.is_none() {
            digests = Some(MemoryDigests::of(memory));
        }
        let root = digests.as_ref().map(MemoryDigests::root);
        let state = blob.as_deref().unwrap_or(memory);
        let mut out = alloc::vec::Vec::new();
        self.encode(opts, flags, state, memory.len() as u64, root, |needed| {
            out.resize(needed, 0);
            Ok(&mut out[..])
        })?;
        Ok((out, digests))
    }

    /// What versions 1 and 2 cannot carry, and which of them `opts.version` may ask for.
    fn check_v1_v2(&self, opts: &EncodeOptions<'_>) -> Result<(), CellError> {
        let fail = |reason| Err(CellError::SerializationFailed { reason });
        match opts.version {
            None => {}
            Some(1) if self.route.is_none() => {}
            Some(2) if self.route.is_some() => {}
            Some(1) | Some(2) => {
                return fail("version 2 is written for a snapshot with a route, version 1 without")
            }
            Some(_) => return fail("unknown wire version: 1, 2 or 3"),
        }
        if self.inbox.is_some() || self.call.is_some() || opts.sealer.is_some() {
            return fail("an inbox, a suspended call or a seal needs the version-3 container");
        }
        Ok(())
    }

    /// Version 3, into the buffer `out` gives for the exact length: the tail, the binary (or
    /// none, by reference), `memory` committed to by `root`, the inbox if any; signed, sealed
    /// or neither.
    fn encode_v3_into<'b>(
        &self,
        opts: &EncodeOptions<'_>,
        memory: v3::MemorySection<'_>,
        root: [u8; 32],
        out: impl FnOnce(usize) -> Result<&'b mut [u8], CellError>,
    ) -> Result<usize, CellError> {
        let Some(route) = self.route else {
            return Err(CellError::SerializationFailed {
                reason: "a version-3 container names its target and epoch (a Route)",
            });
        };
        let auth = match (opts.signer, opts.sealer) {
            (Some(_), Some(_)) => {
                return Err(CellError::SerializationFailed {
                    reason: "a container is signed or sealed, not both",
                })
            }
            (Some((signer, n)), None) => {
                if n != route.epoch {
                    return Err(CellError::SerializationFailed {
                        reason: "in wire version 3 the sequence number is the route's epoch",
                    });
                }
                v3::Auth::Sign(signer)
            }
            (None, Some(sealer)) => v3::Auth::Seal(sealer),
            (None, None) => v3::Auth::None,
        };
        if self
            .call()
            .is_some_and(|c| c.len() > v3::MAX_CALL_SECTION_LEN)
        {
            return Err(CellError::SerializationFailed {
                reason: "the call section is longer than MAX_CALL_SECTION_LEN",
            });
        }
        let sections = [
            self.inbox().map(|i| (v3::SECTION_INBOX, i)),
            self.call().map(|c| (v3::SECTION_CALL, c)),
        ];
        let mut extra: heapless::Vec<(u16, &[u8]), 2> = heapless::Vec::new();
        for s in sections.into_iter().flatten() {
            // Two slots for at most two sections.
            let _ = extra.push(s);
        }
        let extra: &[(u16, &[u8])] = &extra;
        let contents = v3::Contents {
            binary: (!opts.dna_by_reference).then(|| self.dna.binary()),
            memory,
            extra,
        };
        let f = self.fields();
        let needed = v3::encoded_len(&f, &contents, auth)?;
        let commitment = frame::MemoryCommitment {
            len: self.wasm_state().len() as u64,
            root,
        };
        v3::write(&f, &contents, &commitment, auth, out(needed)?)?;
        Ok(needed)
    }

    /// Version 3 with an allocator: the memory as zero and raw chunks (`StateEncoding::Raw`),
    /// LZ4 where it is smaller (`Chunked`, feature `lz4`), or a delta. Returns the memory's
    /// digests too.
    #[cfg(feature = "alloc")]
    fn encode_v3(
        &self,
        opts: &EncodeOptions<'_>,
    ) -> Result<(alloc::vec::Vec<u8>, MemoryDigests), CellError> {
        use super::wire::memory::Commit;
        let memory = self.wasm_state();
        let (section, digests) = match opts.state {
            StateEncoding::Raw => (None, MemoryDigests::of(memory)),
            StateEncoding::Chunked => (
                Some(chunks::encode_chunked_v2(memory)),
                MemoryDigests::of(memory),
            ),
            StateEncoding::Delta { base } => {
                let (blob, d) =
                    chunks::encode_delta_v2(base, opts.base_digests, memory, Commit::Tree)?;
                (Some(blob), d)
            }
        };
        let memory_section = match (&section, opts.state) {
            (None, _) => v3::MemorySection::Plain(memory),
            (Some(d), StateEncoding::Delta { .. }) => v3::MemorySection::Delta(d),
            (Some(c), _) => v3::MemorySection::Chunked(c),
        };
        let mut out = alloc::vec::Vec::new();
        self.encode_v3_into(opts, memory_section, digests.tree_root(), |needed| {
            out.try_reserve_exact(needed)
                .map_err(|_| CellError::SerializationFailed {
                    reason: "no memory for the container",
                })?;
            out.resize(needed, 0);
            Ok(&mut out[..])
        })?;
        Ok((out, digests))
    }

    /// Picks the version, checks the signer's number, and writes into the buffer `out` gives
    /// for the exact length.
    fn encode<'b>(
        &self,
        opts: &EncodeOptions<'_>,
        mut flags: u16,
        state: &[u8],
        memory_len: u64,
        root: Option<[u8; 32]>,
        out: impl FnOnce(usize) -> Result<&'b mut [u8], CellError>,
    ) -> Result<usize, CellError> {
        let f = self.fields();
        let binary = if opts.dna_by_reference {
            flags |= FLAG_DNA_BY_REFERENCE;
            &[][..]
        } else {
            self.dna.binary()
        };
        let signed = opts.signer.is_some();
        match self.route {
            Some(route) => {
                if let Some((_, n)) = opts.signer {
                    if n != route.epoch {
                        return Err(CellError::SerializationFailed {
                            reason: "in wire version 2 the sequence number is the route's epoch",
                        });
                    }
                }
                let needed = frame::encoded_len(&f, binary, state, signed);
                let memory = frame::MemoryCommitment {
                    len: memory_len,
                    root: root.unwrap_or_else(|| wire::memory::memory_root(self.wasm_state())),
                };
                let signer = opts.signer.map(|(s, _)| s);
                frame::write(&f, flags, binary, state, &memory, signer, out(needed)?)?;
                Ok(needed)
            }
            None => {
                let needed = v1::encoded_len(&f, binary, state, signed);
                if signed {
                    flags |= super::wire::FLAG_SIGNED;
                }
                v1::write(&f, flags, binary, state, opts.signer, out(needed)?)?;
                Ok(needed)
            }
        }
    }

    /// A copy that owns its binary and memory (the DNA is not rehashed).
    #[cfg(feature = "alloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn to_owned_snapshot(&self) -> MigrationSnapshot<alloc::vec::Vec<u8>> {
        MigrationSnapshot {
            agent_id: self.agent_id,
            dna: self.dna.to_owned_dna(),
            wasm_state: self.wasm_state.as_ref().to_vec(),
            globals: self.globals.clone(),
            policy: self.policy.clone(),
            timestamp: self.timestamp,
            source_node: self.source_node,
            route: self.route,
            inbox: self.inbox.as_ref().map(|i| i.as_ref().to_vec()),
            call: self.call.as_ref().map(|c| c.as_ref().to_vec()),
        }
    }
}

impl<'a> MigrationSnapshot<&'a [u8]> {
    /// [`view_with`](MigrationSnapshot::view_with) with the default options.
    pub fn view(bytes: &'a [u8]) -> Result<Self, CellError> {
        Self::view_with(bytes, &DecodeOptions::default())
    }

    /// Decodes and verifies `bytes` without allocating or copying the binary or memory.
    ///
    /// Runs every check of the wire format in order (length, magic, version, flags, declared
    /// sizes against `opts.limits`, trailer, fields, canonical form, DNA hash, and in version 2
    /// the memory root); any failure is a distinct [`CellError`]. A snapshot that names its DNA
    /// by reference borrows the binary from `opts.dna_store`. Chunked and delta memory need an
    /// allocator (`DecodeError::StateNeedsAlloc`): decode those with `deserialize_with`. A
    /// signature is not checked here: see `TrustList` (feature `signatures`).
    pub fn view_with(bytes: &'a [u8], opts: &DecodeOptions<'a>) -> Result<Self, CellError> {
        into_view(wire::parse(bytes, &opts.limits)?, opts.dna_store)
    }

    /// [`view_with`](MigrationSnapshot::view_with) that also decodes a version-2 snapshot's
    /// chunked or delta memory (against `opts.base_state`) into `memory`, without an allocator:
    /// the snapshot borrows its binary from `bytes` (or the DNA store) and its memory from the
    /// first `memory_len` bytes of `memory` ([`CellError::BufferTooSmall`] if shorter). Each
    /// decoded chunk is hashed once into the memory root; a delta also hashes its base once.
    /// Raw memory is borrowed from `bytes` as by `view_with`, and `memory` is not touched.
    /// Version 1's chunked and delta memory need `deserialize_with` (alloc).
    pub fn decode_into(
        bytes: &'a [u8],
        opts: &DecodeOptions<'a>,
        memory: &'a mut [u8],
    ) -> Result<Self, CellError> {
        let p = wire::parse(bytes, &opts.limits)?;
        if p.flags & STATE_FLAGS == 0 {
            return into_view(p, opts.dna_store);
        }
        let Some((len, root)) = p.memory else {
            return Err(DecodeError::StateNeedsAlloc.into());
        };
        // Within the limits, checked by the frame, so it fits usize.
        let needed = len as usize;
        let available = memory.len();
        let out = memory
            .get_mut(..needed)
            .ok_or(CellError::BufferTooSmall { needed, available })?;
        let dna = resolve_dna(&p, opts.dna_store)?;
        let found = if p.flags & FLAG_STATE_CHUNKED != 0 {
            wire::chunk::chunked_into(p.state, out, p.commit)?
        } else {
            let base = opts.base_state.ok_or(DecodeError::DeltaWithoutBase)?;
            wire::chunk::delta_into(p.state, base, out, p.commit)?
        };
        wire::check_digest(Digested::Memory, &root, &found)?;
        let out: &'a [u8] = out;
        Ok(assemble(p, dna, out))
    }
}

#[cfg(feature = "alloc")]
impl MigrationSnapshot<alloc::vec::Vec<u8>> {
    /// [`deserialize_with`](Self::deserialize_with) with the default options (finite
    /// [`DecodeLimits::DEFAULT`]).
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize(bytes: &[u8]) -> Result<Self, CellError> {
        Self::deserialize_with(bytes, &DecodeOptions::default())
    }

    /// Decodes any version-1 or version-2 snapshot, whatever its flags: DNA by reference (from
    /// `opts.dna_store`), chunked memory, a delta (against `opts.base_state`, which must be the
    /// base the delta names, or nothing is applied). A signature is not checked here: see
    /// `TrustList` (feature `signatures`).
    ///
    /// Allocation: the binary, and the memory's decoded length, which is checked against
    /// `opts.limits` before anything is hashed or allocated; allocation is fallible, so a claim
    /// the allocator cannot meet is `DecodeError::TooLarge`, not an abort. Raw memory is copied
    /// only after every check passed.
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize_with(bytes: &[u8], opts: &DecodeOptions<'_>) -> Result<Self, CellError> {
        into_owned(wire::parse(bytes, &opts.limits)?, opts).map(|(s, _)| s)
    }

    /// Decodes a version-3 container this node sealed for itself (its own files: a prepared
    /// hand-off, a stopped agent), as strictly as bytes from a peer: every check of
    /// [`deserialize_with`](Self::deserialize_with), and the seal, which must verify with
    /// `sealer`, the node's own key. An unsealed snapshot is [`DecodeError::NotSealed`]; one
    /// sealed with another key (another node's file) or edited is [`DecodeError::BadSeal`].
    /// The seal is checked before the DNA is resolved or the memory decoded.
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize_sealed(
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        sealer: &dyn super::SnapshotSealer,
    ) -> Result<Self, CellError> {
        let p = wire::parse(bytes, &opts.limits)?;
        let Some((tag, digest)) = p.seal else {
            return Err(DecodeError::NotSealed.into());
        };
        if !wire::v3::check_seal(sealer, &tag, &digest) {
            return Err(DecodeError::BadSeal.into());
        }
        into_owned(p, opts).map(|(s, _)| s)
    }

    /// [`deserialize_with`](Self::deserialize_with), also returning the digests of the decoded
    /// memory, which the receiver keeps to apply the next delta cheaply (version 2 computes them
    /// while checking the memory root; version 1 hashes the memory once more for them).
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize_with_digests(
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
    ) -> Result<(Self, MemoryDigests), CellError> {
        let (s, d) = into_owned(wire::parse(bytes, &opts.limits)?, opts)?;
        let d = d.unwrap_or_else(|| MemoryDigests::of(s.wasm_state()));
        Ok((s, d))
    }

    /// Decodes a version-2 snapshot whose memory is a delta against `held`, a memory this
    /// receiver already holds (an earlier snapshot's, e.g. a pre-copy round's), applying it in
    /// place: only the chunks the delta carries are decoded and hashed, and the memory is not
    /// copied. `held_digests` must be `held`'s digests (from
    /// [`deserialize_with_digests`](Self::deserialize_with_digests) or [`MemoryDigests::of`]).
    ///
    /// On success the snapshot owns the new memory, moved out of `held` (left empty), and the
    /// new memory's digests come with it for the next delta. On any error `held` is unchanged:
    /// everything is checked, the memory root included, before it is written. Snapshots that
    /// are not version-2 deltas decode as with [`deserialize_with`](Self::deserialize_with),
    /// leaving `held` alone. `opts.base_state` and `opts.base_digests` are not used.
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize_onto(
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        held: &mut alloc::vec::Vec<u8>,
        held_digests: &MemoryDigests,
    ) -> Result<(Self, MemoryDigests), CellError> {
        let p = wire::parse(bytes, &opts.limits)?;
        let (Some((len, root)), true) = (p.memory, p.flags & FLAG_STATE_DELTA != 0) else {
            let (s, d) = into_owned(p, opts)?;
            let d = d.unwrap_or_else(|| MemoryDigests::of(s.wasm_state()));
            return Ok((s, d));
        };
        let dna = resolve_dna(&p, opts.dna_store)?;
        let digests = chunks::delta_onto(
            p.state,
            held,
            held_digests,
            len as usize,
            opts.limits.max_wasm_state,
            &root,
            p.commit,
        )?;
        let memory = core::mem::take(held);
        Ok((assemble_owned(p, dna.to_owned_dna(), memory), digests))
    }
}

/// The DNA: the carried binary, or the store's for a by-reference snapshot; either way its
/// SHA-256 must be the hash the snapshot names (one pass over the binary).
pub(crate) fn resolve_dna<'a>(
    p: &Parsed<'a>,
    store: Option<&'a dyn DnaStore>,
) -> Result<Dna<&'a [u8]>, CellError> {
    let binary = if p.flags & FLAG_DNA_BY_REFERENCE != 0 {
        store
            .and_then(|s| s.get(&p.dna_hash))
            .ok_or(CellError::DnaNotFound {
                hash: crate::DigestPrefix::of(&p.dna_hash),
            })?
    } else {
        p.binary
    };
    Dna::with_expected_hash(binary, &p.dna_hash)
}

/// The snapshot of `p`, borrowing its binary, memory and inbox.
pub(crate) fn assemble<'a>(
    p: Parsed<'a>,
    dna: Dna<&'a [u8]>,
    state: &'a [u8],
) -> MigrationSnapshot<&'a [u8]> {
    let (inbox, call) = (p.inbox, p.call);
    assemble_with(p, dna, state, inbox, call)
}

/// The snapshot of `p`, owning its binary, memory and a copy of its inbox.
#[cfg(feature = "alloc")]
pub(crate) fn assemble_owned(
    p: Parsed<'_>,
    dna: Dna<alloc::vec::Vec<u8>>,
    state: alloc::vec::Vec<u8>,
) -> MigrationSnapshot<alloc::vec::Vec<u8>> {
    let inbox = p.inbox.map(<[u8]>::to_vec);
    let call = p.call.map(<[u8]>::to_vec);
    assemble_with(p, dna, state, inbox, call)
}

pub(crate) fn assemble_with<B>(
    p: Parsed<'_>,
    dna: Dna<B>,
    state: B,
    inbox: Option<B>,
    call: Option<B>,
) -> MigrationSnapshot<B> {
    MigrationSnapshot {
        agent_id: p.agent_id,
        dna,
        wasm_state: state,
        globals: p.globals,
        policy: p.policy,
        timestamp: p.timestamp,
        source_node: p.source_node,
        route: p.route,
        inbox,
        call,
    }
}

/// The zero-copy snapshot: raw memory only (`StateNeedsAlloc` otherwise), DNA from the input or
/// `store`; in version 2 the memory's root is checked, allocating nothing.
pub(super) fn into_view<'a>(
    p: Parsed<'a>,
    store: Option<&'a dyn DnaStore>,
) -> Result<MigrationSnapshot<&'a [u8]>, CellError> {
    if p.flags & STATE_FLAGS != 0 {
        return Err(DecodeError::StateNeedsAlloc.into());
    }
    let dna = resolve_dna(&p, store)?;
    if let Some((_, root)) = p.memory {
        let found = p.commit.root(p.state);
        wire::check_digest(Digested::Memory, &root, &found)?;
    }
    let state = p.state;
    Ok(assemble(p, dna, state))
}

/// The owned snapshot: any flags. The DNA is verified first, the memory decoded next (chunked
/// and delta memory allocate here, within the limits), and the binary copied last, so a
/// snapshot refused for its memory never copied its binary. Version 2 also gives the memory's
/// digests.
#[cfg(feature = "alloc")]
pub(super) fn into_owned(
    p: Parsed<'_>,
    opts: &DecodeOptions<'_>,
) -> Result<
    (
        MigrationSnapshot<alloc::vec::Vec<u8>>,
        Option<MemoryDigests>,
    ),
    CellError,
> {
    let dna = resolve_dna(&p, opts.dna_store)?;
    let limit = opts.limits.max_wasm_state;
    let (state, digests) = match p.memory {
        None if p.flags & FLAG_STATE_CHUNKED != 0 => {
            (chunks::decode_chunked(p.state, limit)?, None)
        }
        None if p.flags & FLAG_STATE_DELTA != 0 => {
            let base = opts.base_state.ok_or(DecodeError::DeltaWithoutBase)?;
            (chunks::decode_delta(p.state, base, limit)?, None)
        }
        None => (p.state.to_vec(), None),
        Some((len, root)) => {
            // Checked against the limit by the frame, so it fits usize.
            let len = len as usize;
            let (memory, d) = if p.flags & FLAG_STATE_CHUNKED != 0 {
                chunks::decode_chunked_v2(p.state, len, limit)?
            } else if p.flags & FLAG_STATE_DELTA != 0 {
                let base = opts.base_state.ok_or(DecodeError::DeltaWithoutBase)?;
                chunks::decode_delta_v2(p.state, base, opts.base_digests, len, limit, p.commit)?
            } else {
                chunks::copy_with_digests(p.state, limit)?
            };
            wire::check_digest(Digested::Memory, &root, &d.root_by(p.commit))?;
            (memory, Some(d))
        }
    };
    let dna = dna.to_owned_dna();
    Ok((assemble_owned(p, dna, state), digests))
}

/// Snapshots are equal when every field is, whatever their storage.
impl<B: AsRef<[u8]>, C: AsRef<[u8]>> PartialEq<MigrationSnapshot<C>> for MigrationSnapshot<B> {
    fn eq(&self, other: &MigrationSnapshot<C>) -> bool {
        self.agent_id == other.agent_id
            && self.dna == other.dna
            && self.wasm_state.as_ref() == other.wasm_state.as_ref()
            && self.globals == other.globals
            && self.policy == other.policy
            && self.timestamp == other.timestamp
            && self.source_node == other.source_node
            && self.route == other.route
            && self.inbox() == other.inbox()
            && self.call() == other.call()
    }
}

impl<B: AsRef<[u8]>> Eq for MigrationSnapshot<B> {}

/// Shows the memory's size, not its bytes.
impl<B: AsRef<[u8]>> core::fmt::Debug for MigrationSnapshot<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MigrationSnapshot")
            .field("agent_id", &self.agent_id)
            .field("dna", &self.dna)
            .field("wasm_state_len", &self.wasm_state().len())
            .field("globals", &self.globals())
            .field("policy", &self.policy)
            .field("timestamp", &self.timestamp)
            .field("source_node", &self.source_node)
            .field("route", &self.route)
            .field("inbox_len", &self.inbox().map(<[u8]>::len))
            .field("call_len", &self.call().map(<[u8]>::len))
            .finish()
    }
}
