//! [`MigrationSnapshot`]: everything needed to bring an agent back to life on another node.

use super::wire::{self, DecodeLimits, SnapshotSigner};
use super::DnaStore;
use crate::globals::Globals;
use crate::{Agent, AgentId, AgentState, CellError, Dna, GlobalValue, NodeId, Policy};

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
    /// with every snapshot of the agent: receivers reject one that does not.
    pub signer: Option<(&'a dyn SnapshotSigner, u64)>,
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
    /// It returns a `Result` because later format features (DNA sent by reference) can fail
    /// here; a snapshot from [`capture_at`](Self::capture_at), [`view`](MigrationSnapshot::view)
    /// or `deserialize` (with `alloc`) restores without error.
    pub fn restore(&self) -> Result<Agent<B>, CellError> {
        self.clone().into_agent()
    }
}

impl<B: AsRef<[u8]>> MigrationSnapshot<B> {
    /// [`restore`](Self::restore) without copying the storage.
    pub fn into_agent(self) -> Result<Agent<B>, CellError> {
        Ok(Agent::from_parts(
            self.agent_id,
            AgentState::Migrating,
            self.dna,
            self.policy,
            self.wasm_state,
            self.globals,
        ))
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

    /// Seconds from capture to `now_unix_secs`; 0 if `now` is before the capture (clock skew
    /// between nodes).
    pub fn age_seconds_at(&self, now_unix_secs: u64) -> u64 {
        now_unix_secs.saturating_sub(self.timestamp)
    }

    /// [`age_seconds_at`](Self::age_seconds_at) with the system clock.
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn age_seconds(&self) -> u64 {
        self.age_seconds_at(crate::unix_now())
    }

    /// The exact length of the serialized snapshot in bytes, computed without serializing.
    pub fn size_bytes(&self) -> usize {
        wire::encoded_len(self)
    }

    /// Serializes into `buf` and returns how many bytes were written (the first
    /// [`size_bytes`](Self::size_bytes)). A short buffer is [`CellError::BufferTooSmall`].
    pub fn serialize_into(&self, buf: &mut [u8]) -> Result<usize, CellError> {
        wire::encode_into(self, buf)
    }

    /// Serializes into a new `Vec` of exactly [`size_bytes`](Self::size_bytes) bytes.
    #[cfg(feature = "alloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn serialize(&self) -> Result<alloc::vec::Vec<u8>, CellError> {
        wire::encode_vec(self)
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
        wire::encode_with(self, opts)
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
        }
    }
}

impl<'a> MigrationSnapshot<&'a [u8]> {
    /// Decodes and verifies `bytes` without allocating or copying the binary or memory.
    ///
    /// Runs every check of the wire format in order (length, magic, version, flags, trailer
    /// digest, body, canonical form, DNA hash); any failure is a distinct [`CellError`].
    /// Verification reads every byte through SHA-256 (the trailer), and the binary a second time
    /// (the DNA hash).
    pub fn view(bytes: &'a [u8]) -> Result<Self, CellError> {
        wire::parse(bytes, &DecodeLimits::UNLIMITED)?.into_view(None)
    }

    /// [`view`](MigrationSnapshot::view) with a receiver's options: limits, and a
    /// [`DnaStore`] for snapshots that name their DNA by reference (the view then borrows the
    /// store's binary). Chunked and delta memory need an allocator
    /// (`DecodeError::StateNeedsAlloc`): decode those with `deserialize_with`. A signature is
    /// not checked here: see `TrustList` (feature `signatures`).
    pub fn view_with(bytes: &'a [u8], opts: &DecodeOptions<'a>) -> Result<Self, CellError> {
        wire::parse(bytes, &opts.limits)?.into_view(opts.dna_store)
    }

    /// [`view`](MigrationSnapshot::view), refusing a binary or memory larger than `limits`
    /// ([`DecodeError::TooLarge`](crate::DecodeError::TooLarge)).
    pub fn view_with_limits(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Self, CellError> {
        wire::parse(bytes, limits)?.into_view(None)
    }
}

#[cfg(feature = "alloc")]
impl MigrationSnapshot<alloc::vec::Vec<u8>> {
    /// Decodes and verifies `bytes` like [`view`](MigrationSnapshot::view), then copies the
    /// binary and memory out; chunked memory is decoded too (see
    /// [`deserialize_with`](Self::deserialize_with) for deltas and DNA by reference). For a
    /// snapshot without flags it allocates only after every check passed, and at most
    /// `bytes.len()` bytes in all.
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize(bytes: &[u8]) -> Result<Self, CellError> {
        Self::deserialize_with(bytes, &DecodeOptions::default())
    }

    /// [`deserialize`](MigrationSnapshot::deserialize), refusing a binary or memory larger than
    /// `limits` before allocating anything
    /// ([`DecodeError::TooLarge`](crate::DecodeError::TooLarge)).
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize_with_limits(bytes: &[u8], limits: &DecodeLimits) -> Result<Self, CellError> {
        let opts = DecodeOptions {
            limits: *limits,
            ..DecodeOptions::default()
        };
        Self::deserialize_with(bytes, &opts)
    }

    /// Decodes any version-1 snapshot, whatever its flags: DNA by reference (from
    /// `opts.dna_store`), chunked memory, a delta (against `opts.base_state`, which must be the
    /// base the delta names, or nothing is applied). A signature is not checked here: see
    /// `TrustList` (feature `signatures`).
    ///
    /// Allocation: the binary, and the memory's decoded length, which is checked against
    /// `opts.limits` before anything is allocated and can be at most 4096 times the encoded
    /// memory (plus the base's length, for a delta). Raw memory is copied only after every check
    /// passed; chunked or delta memory is decoded into its buffer chunk by chunk, so a bad chunk
    /// is found after that buffer was allocated (and is then freed).
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn deserialize_with(bytes: &[u8], opts: &DecodeOptions<'_>) -> Result<Self, CellError> {
        wire::parse(bytes, &opts.limits)?.into_owned(opts)
    }
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
            .finish()
    }
}
