//! The crate's one error type, [`CellError`], and the small enums its variants carry.
//!
//! Every type here is `Copy` and allocation-free, so the same errors exist with and without
//! `alloc`, and returning one never touches a heap.

use crate::{AgentId, AgentState, DigestPrefix};
use core::fmt;

/// Everything that can go wrong in `mielin-cells`.
///
/// Each message says what was expected and what was found. New variants may be added in minor
/// releases, so match with a wildcard arm.
///
/// ```
/// use mielin_cells::{Agent, AgentId, AgentState, CellError, Dna};
///
/// let err = Dna::new(&b"\x7fELF\x02\x01\x01\0"[..]).unwrap_err();
/// assert_eq!(err, CellError::NotWasm { found: *b"\x7fELF" });
///
/// let dna = Dna::new(&b"\0asm\x01\0\0\0"[..]).unwrap();
/// let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna);
/// match agent.set_state(AgentState::Migrating) {
///     Err(CellError::InvalidState { from, to }) => {
///         assert_eq!((from, to), (AgentState::Created, AgentState::Migrating));
///     }
///     other => panic!("expected InvalidState, got {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CellError {
    /// The bytes are shorter than the 8-byte WebAssembly header (magic and version).
    #[error(
        "not a WebAssembly module: expected at least 8 bytes (magic and version), found {found}"
    )]
    WasmTooShort {
        /// How many bytes there were.
        found: usize,
    },
    /// The bytes do not start with the WebAssembly magic `\0asm`.
    #[error("not a WebAssembly module: expected magic [00, 61, 73, 6d], found {found:02x?}")]
    NotWasm {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The module has the WebAssembly magic but a version other than 1 (for example a component).
    #[error("unsupported WebAssembly version: expected 1, found {found:#010x}")]
    UnsupportedWasmVersion {
        /// The little-endian version word that was found.
        found: u32,
    },
    /// A lifecycle move that the state machine does not allow; nothing was changed.
    #[error("invalid state transition: {from} cannot move to {to}")]
    InvalidState {
        /// The agent's state.
        from: AgentState,
        /// The state that was asked for.
        to: AgentState,
    },
    /// A SHA-256 digest did not match the bytes it covers.
    #[error(
        "integrity check failed for the {what}: expected SHA-256 {expected}…, computed {found}…"
    )]
    IntegrityMismatch {
        /// Which digest failed.
        what: Digested,
        /// The digest that was recorded (first 8 bytes).
        expected: DigestPrefix,
        /// The digest computed over the bytes (first 8 bytes).
        found: DigestPrefix,
    },
    /// A migration request that the manager refused; nothing was changed.
    #[error("migration of agent {agent} failed: {reason}")]
    MigrationFailed {
        /// The agent concerned.
        agent: AgentId,
        /// Why.
        reason: MigrationFailure,
    },
    /// Starting, calling, capturing or resuming a live agent failed (feature `wasmi`), or the
    /// embedder reports that running an agent failed.
    #[error("execution failed: {0}")]
    ExecutionFailed(ExecutionError),
    /// The output buffer is too small for the serialized snapshot; nothing useful was written.
    #[error(
        "serialization failed: the snapshot needs {needed} bytes, the buffer holds {available}"
    )]
    BufferTooSmall {
        /// Bytes the snapshot needs ([`MigrationSnapshot::size_bytes`](crate::migration::MigrationSnapshot::size_bytes)).
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The encoder failed for a reason other than buffer size.
    #[error("serialization failed: {reason}")]
    SerializationFailed {
        /// What went wrong.
        reason: &'static str,
    },
    /// Bytes that are not a valid snapshot in the version-1 wire format.
    #[error("deserialization failed: {0}")]
    DeserializationFailed(DecodeError),
    /// A snapshot names its DNA by hash (DNA by reference) and this node does not hold a binary
    /// with that hash: send the snapshot again with the binary.
    #[error("DNA not found: no binary with SHA-256 {hash}… is held here")]
    DnaNotFound {
        /// The DNA hash the snapshot names (first 8 bytes).
        hash: DigestPrefix,
    },
    /// A signed-snapshot check failed (feature `signatures`).
    #[error("signature rejected: {0}")]
    SignatureRejected(SignatureError),
    /// A journal could not make a record durable (an I/O error); nothing was accepted.
    #[error("the journal could not record durably")]
    JournalFailed,
    /// A fixed-capacity container is full.
    #[error("capacity exceeded: {what} hold at most {capacity}, {requested} requested")]
    CapacityExceeded {
        /// Which container.
        what: Capacity,
        /// Its capacity.
        capacity: usize,
        /// How many entries were asked for.
        requested: usize,
    },
}

impl From<ExecutionError> for CellError {
    fn from(e: ExecutionError) -> Self {
        CellError::ExecutionFailed(e)
    }
}

impl From<DecodeError> for CellError {
    fn from(e: DecodeError) -> Self {
        CellError::DeserializationFailed(e)
    }
}

/// Which digest an [`CellError::IntegrityMismatch`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Digested {
    /// The SHA-256 trailer over a serialized snapshot.
    SnapshotTrailer,
    /// An agent's DNA: the SHA-256 of its WebAssembly binary.
    Dna,
    /// The linear memory, against the memory root of a version-2 snapshot.
    Memory,
}

impl fmt::Display for Digested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Digested::SnapshotTrailer => "snapshot trailer",
            Digested::Dna => "agent DNA",
            Digested::Memory => "linear memory (version-2 memory root)",
        })
    }
}

/// Why the [`MigrationManager`](crate::migration::MigrationManager) refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MigrationFailure {
    /// The agent already has a pending migration.
    AlreadyPending,
    /// The agent has no pending migration on this manager.
    NotPending,
    /// The target node is the node the manager runs on.
    TargetIsSource,
    /// The agent is pending but was moved out of `Migrating` by hand.
    NotMigrating {
        /// The state the agent is in.
        found: AgentState,
    },
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationFailure::AlreadyPending => f.write_str("a migration is already pending"),
            MigrationFailure::NotPending => f.write_str("no migration is pending for it"),
            MigrationFailure::TargetIsSource => {
                f.write_str("the target node is this node (the source)")
            }
            MigrationFailure::NotMigrating { found } => {
                write!(f, "expected it in state Migrating, found {found}")
            }
        }
    }
}

/// Which fixed-capacity container a [`CellError::CapacityExceeded`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capacity {
    /// An agent's mutable globals ([`MAX_GLOBALS`](crate::MAX_GLOBALS)).
    Globals,
    /// A policy's preferred architectures ([`MAX_ARCHITECTURES`](crate::MAX_ARCHITECTURES)).
    Architectures,
    /// A migration manager's pending migrations (its `N`).
    PendingMigrations,
    /// A fixed-capacity DNA store.
    DnaStore,
    /// A trust list's keys or its per-agent sequence numbers.
    TrustList,
    /// Agents an epoch journal remembers.
    EpochJournal,
    /// Epoch journal entries one peer's snapshots may create (a trust list's per-peer quota).
    PeerEpochQuota,
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capacity::Globals => "agent globals",
            Capacity::Architectures => "preferred architectures",
            Capacity::PendingMigrations => "pending migrations",
            Capacity::DnaStore => "DNA store entries",
            Capacity::TrustList => "trust list entries",
            Capacity::EpochJournal => "epoch journal entries",
            Capacity::PeerEpochQuota => "epoch journal entries created by one peer",
        })
    }
}

/// Why bytes were rejected as a snapshot; the checks run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header and trailer need.
    #[error("too short: expected at least {needed} bytes, found {found}")]
    TooShort {
        /// The minimum length of any snapshot.
        needed: usize,
        /// The length given.
        found: usize,
    },
    /// The first four bytes are not the snapshot magic.
    #[error("bad magic: expected {expected:02x?}, found {found:02x?}")]
    BadMagic {
        /// The magic of this format.
        expected: [u8; 4],
        /// What the bytes start with.
        found: [u8; 4],
    },
    /// A format version this build does not read.
    #[error("unsupported format version: expected {expected}, found {found}")]
    UnsupportedVersion {
        /// The version this build reads.
        expected: u16,
        /// The version in the header.
        found: u16,
    },
    /// Flag bits that version 1 reserves are set.
    #[error("unsupported flags: expected 0x0000, found {found:#06x}")]
    UnsupportedFlags {
        /// The flags word in the header.
        found: u16,
    },
    /// The body ends in the middle of a field.
    #[error("body ends early: a field runs past the end of the body")]
    UnexpectedEnd,
    /// A variable-length integer is malformed or too large for its field.
    #[error("body has a malformed varint")]
    BadVarint,
    /// An option or enum tag is out of range.
    #[error("body has an out-of-range option or enum tag")]
    BadTag,
    /// The body is otherwise malformed (for example more globals than fit).
    #[error("body is malformed (a value out of range or a list over capacity)")]
    Malformed,
    /// Bytes remain between the end of the body and the trailer.
    #[error("expected the body to end at the trailer, found {count} extra bytes")]
    TrailingBytes {
        /// How many extra bytes.
        count: usize,
    },
    /// The body decodes but is not in canonical form (e.g. an over-long varint), so it would not
    /// re-encode to the same bytes.
    #[error("body is not canonically encoded: expected {expected} bytes, found {found}")]
    NonCanonical {
        /// The length of the canonical encoding of what was decoded.
        expected: usize,
        /// The length of the body given.
        found: usize,
    },
    /// A field is larger than the receiver's [`DecodeLimits`](crate::migration::DecodeLimits)
    /// allow; nothing was allocated for it.
    #[error("{field} too large: the limit is {limit} bytes, found {found}")]
    TooLarge {
        /// Which field.
        field: LimitedField,
        /// The receiver's limit.
        limit: usize,
        /// The field's length in the input.
        found: usize,
    },
    /// A memory chunk is malformed, or not written the way the encoder writes it (a zero chunk
    /// stored as data, an LZ4 chunk no smaller than the chunk, an unchanged chunk in a delta,
    /// chunks out of order).
    #[error("state chunk is malformed")]
    BadChunk,
    /// Version 2 without a target node: version 2 is written for routed snapshots only.
    #[error("a version-2 snapshot must name its target node")]
    MissingTarget,
    /// Version 2: raw memory whose length is not the declared memory length.
    #[error("raw memory's length differs from the declared memory length")]
    StateLengthMismatch,
    /// The base digests given describe a memory of another length than the base.
    #[error("the base digests given do not describe the base memory")]
    BaseDigestsMismatch,
    /// An LZ4 chunk, in a build without the `lz4` feature.
    #[error("state chunk is LZ4-compressed, and this build has no `lz4` feature")]
    Lz4Disabled,
    /// A delta names another base memory than the one given.
    #[error("delta applies to base memory with SHA-256 {expected}…, the base given has {found}…")]
    WrongDeltaBase {
        /// The base the delta names (first 8 bytes of its SHA-256).
        expected: DigestPrefix,
        /// The base given (first 8 bytes of its SHA-256).
        found: DigestPrefix,
    },
    /// A delta was decoded without a base memory to apply it to.
    #[error("the snapshot is a delta: decode it with the base memory it applies to")]
    DeltaWithoutBase,
    /// A by-reference snapshot also carries a binary.
    #[error("DNA by reference, but the snapshot also carries a binary")]
    BinaryWithReference,
    /// Chunked or delta state needs an allocator to decode: use `deserialize_with`.
    #[error("the state is chunked or a delta: the zero-copy view cannot decode it")]
    StateNeedsAlloc,
    /// An architecture tag this build does not know.
    #[error("unknown architecture tag {tag}")]
    UnknownArchitecture {
        /// The tag.
        tag: u8,
    },
    /// More preferred architectures than a policy holds.
    #[error("expected at most {capacity} preferred architectures, found {found}")]
    TooManyArchitectures {
        /// [`MAX_ARCHITECTURES`](crate::MAX_ARCHITECTURES).
        capacity: usize,
        /// How many the body lists.
        found: usize,
    },
    /// Version 3: a section table with no section or more than
    /// [`MAX_SECTIONS`](crate::migration::MAX_SECTIONS), kinds not strictly increasing, or a
    /// reserved field not zero.
    #[error("malformed section table (count, order of kinds, or a reserved field)")]
    BadSectionTable,
    /// Version 3: a section kind this build does not know and may not skip.
    #[error("unknown section kind {kind:#06x}")]
    UnknownSection {
        /// The kind.
        kind: u16,
    },
    /// Version 3: a required section is missing.
    #[error("section {kind:#06x} is missing")]
    MissingSection {
        /// The kind.
        kind: u16,
    },
    /// Version 3: a section the flags or another section rule out.
    #[error("section {kind:#06x} is not allowed here")]
    UnexpectedSection {
        /// The kind.
        kind: u16,
    },
    /// Version 3: a section longer than its kind allows; nothing was hashed.
    #[error("section {kind:#06x} too large: the limit is {limit} bytes, found {found}")]
    SectionTooLarge {
        /// The kind.
        kind: u16,
        /// The largest length its kind allows.
        limit: usize,
        /// Its declared length.
        found: usize,
    },
    /// An epoch above [`MAX_EPOCH`](crate::MAX_EPOCH).
    #[error("epoch {found} is above the largest allowed")]
    EpochOutOfRange {
        /// The epoch found.
        found: u64,
    },
    /// Version 3: the memory comes by manifest, in chunk frames, not in these bytes.
    #[error("the memory comes by manifest in chunk frames, not in these bytes")]
    MemoryByManifest,
    /// A sealed container whose seal does not verify with this node's key: written by another
    /// node, or edited.
    #[error("the seal does not verify with this node's key (another node's file, or edited)")]
    BadSeal,
    /// A container that must be sealed (a node's own file) is not.
    #[error("expected a sealed container, found one without a seal")]
    NotSealed,
    /// Version 3: the snapshot carries a call suspended in the middle (the call section), and
    /// was asked for as an agent captured between calls (`MigrationSnapshot::into_agent` or
    /// `restore`, `Runtime::resume_bytes` or `stage`, `LiveAgent::apply_delta`). Resumed that
    /// way, the export would restart with the unwound frames left in memory: take the call with
    /// `MigrationSnapshot::into_agent_with_call` and `LiveAgent::restore_call` (or
    /// `LiveAgent::apply_delta_with_call`) instead.
    #[error("the snapshot carries a suspended call: restore it with the call-aware path")]
    CallNotTaken,
}

/// Why a signed-snapshot check failed; each case has its own variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureError {
    /// The snapshot is unsigned, and trust lists take signed snapshots only.
    Missing,
    /// The signer's key is not on the receiver's trust list.
    UnknownKey {
        /// The key id in the snapshot.
        key_id: [u8; 8],
    },
    /// The signature does not verify with the named key.
    Invalid,
    /// The epoch is not above the last one accepted or sent for this agent: a replay or a
    /// rollback to an older state.
    Stale {
        /// The last epoch accepted or sent for the agent.
        last: u64,
        /// The snapshot's epoch.
        found: u64,
    },
    /// A version-1 signed snapshot: its signed bytes name no target node and no epoch, so it
    /// could be replayed to any node; trust lists accept version 2 only.
    Unbound,
    /// The snapshot is addressed to another node (a replay of a hand-off to someone else).
    WrongTarget {
        /// The node it names.
        target: crate::NodeId,
    },
    /// The key is trusted for another node than the `source_node` the snapshot claims.
    WrongSource {
        /// The source it claims (`None`: none).
        claimed: Option<crate::NodeId>,
    },
    /// The signature's scalar `s` is not below the group order: a malleated signature.
    Malleable,
    /// The capture time lies further in the future than the allowed clock skew.
    FromTheFuture {
        /// The snapshot's timestamp.
        timestamp: u64,
        /// The receiver's clock.
        now: u64,
    },
    /// The snapshot is older than the receiver's maximum age.
    TooOld {
        /// Its age in seconds.
        age: u64,
        /// The maximum.
        max: u64,
    },
    /// The epoch is above [`MAX_EPOCH`](crate::MAX_EPOCH) (2^48 - 1).
    EpochOutOfRange {
        /// The epoch found.
        found: u64,
    },
    /// `trust()`: the key is a weak (small-order) point, which verifies forged signatures.
    WeakKey,
    /// `trust()`: another trusted key has the same 8-byte key id, or the key is already
    /// trusted for another node.
    KeyIdCollision {
        /// The id both keys share.
        key_id: [u8; 8],
    },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Missing => {
                f.write_str("expected a signed snapshot, found an unsigned one")
            }
            SignatureError::UnknownKey { key_id } => {
                write!(f, "key {key_id:02x?} is not trusted")
            }
            SignatureError::Invalid => f.write_str("the signature does not verify"),
            SignatureError::Stale { last, found } => write!(
                f,
                "expected an epoch above {last}, found {found} (replay or rollback)"
            ),
            SignatureError::Unbound => f.write_str(
                "a version-1 signature binds no target or epoch: only version 2 is accepted",
            ),
            SignatureError::WrongTarget { target } => {
                write!(
                    f,
                    "the snapshot is addressed to node {target}, not this one"
                )
            }
            SignatureError::WrongSource { claimed } => match claimed {
                Some(n) => write!(f, "the key is not trusted for node {n}, which it claims"),
                None => f.write_str("the snapshot names no source node for its key"),
            },
            SignatureError::Malleable => {
                f.write_str("the signature's s is not below the group order (malleated)")
            }
            SignatureError::FromTheFuture { timestamp, now } => write!(
                f,
                "captured at {timestamp}, beyond the allowed clock skew from now ({now})"
            ),
            SignatureError::TooOld { age, max } => {
                write!(f, "the snapshot is {age} s old, the limit is {max} s")
            }
            SignatureError::EpochOutOfRange { found } => {
                write!(f, "epoch {found} is above the largest allowed")
            }
            SignatureError::WeakKey => f.write_str("the key is a weak (small-order) point"),
            SignatureError::KeyIdCollision { key_id } => write!(
                f,
                "key id {key_id:02x?} is already trusted for another key or node"
            ),
        }
    }
}

/// A snapshot field that [`DecodeLimits`](crate::migration::DecodeLimits) bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitedField {
    /// The agent's WebAssembly binary.
    WasmBinary,
    /// The agent's linear memory.
    WasmState,
    /// The whole snapshot: longer than any snapshot within the other limits can be.
    Snapshot,
}

impl fmt::Display for LimitedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitedField::WasmBinary => "WebAssembly binary",
            LimitedField::WasmState => "linear memory",
            LimitedField::Snapshot => "snapshot",
        })
    }
}

impl DecodeError {
    pub(crate) fn from_postcard(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::UnexpectedEnd,
            postcard::Error::DeserializeBadVarint => DecodeError::BadVarint,
            postcard::Error::DeserializeBadOption
            | postcard::Error::DeserializeBadEnum
            | postcard::Error::DeserializeBadBool => DecodeError::BadTag,
            _ => DecodeError::Malformed,
        }
    }
}

/// Why running an agent failed: the reason carried by [`CellError::ExecutionFailed`].
///
/// The `runtime` module (feature `wasmi`) returns these; the type exists in every build so that
/// an embedder with another engine can report the same reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExecutionError {
    /// The call used up its fuel (the runtime's `fuel_per_call`).
    OutOfFuel,
    /// The WebAssembly code trapped.
    Trap(Trap),
    /// A host function returned an error that is not a WebAssembly trap.
    HostFailed,
    /// Calls need the agent `Running`; it was in another state (after a trap it is `Suspended`).
    NotRunning {
        /// The agent's state.
        found: AgentState,
    },
    /// The module exports no function with the name called.
    MissingExport,
    /// The arguments' number or types do not match the exported function's type.
    WrongArguments,
    /// The binary is not valid WebAssembly for the engine's feature set (validated before
    /// anything else is done with it).
    InvalidModule,
    /// The module is valid but the engine could not compile it (an engine limit).
    CompileFailed,
    /// The module is valid but cannot be carried by a migration, so it is not started.
    Refused(Refusal),
    /// The embedder's `link` step returned an error.
    LinkFailed,
    /// An import of the module is not defined, or is defined with another type.
    UnresolvedImports,
    /// Instantiation failed for another reason than a trap (for example a resource limit).
    InstantiationFailed,
    /// The runtime's engine does not meter fuel.
    FuelMeteringOff,
    /// The rewritten module lost an export the runtime added; a bug, reported instead of a panic.
    MissingStateExport,
    /// A carried memory is not a whole number of 64 KiB pages.
    StateNotWholePages,
    /// A carried memory is smaller than the module's minimum.
    StateBelowMinimum,
    /// Memory could not grow to the carried size (the engine's limits).
    StateGrowFailed,
    /// Carried memory for a module that has none.
    StateWithoutMemory,
    /// The agent carries another number of mutable globals than its module has.
    GlobalCountMismatch,
    /// A delta for another agent (or another DNA) than the staged one.
    WrongAgent,
    /// A carried global's type differs from the module's global of that index.
    GlobalTypeMismatch,
    /// The call was suspended in the middle (an import unwound it, `runtime::midcall`): resume
    /// it with `LiveAgent::resume_call`. Also: another export was called while a call is
    /// suspended, or the agent was captured by a path that cannot carry the call
    /// (`LiveAgent::capture`, `into_agent`, `snapshot_at`, `precopy_begin`, `precopy_finish`);
    /// both are refused. Capture a suspended agent with `LiveAgent::capture_with_call`,
    /// `into_agent_with_call` or `precopy_finish_with_call`, which carry the call
    /// (`LiveAgent::suspended_call`, `MigrationSnapshot::with_call`).
    CallSuspended,
    /// `LiveAgent::resume_call` with no suspended call.
    NotSuspended,
    /// An unwind did not fit its buffer. Refused before anything outside the buffer was
    /// written (the buffer ends where memory ends, so the write past it trapped); the call is
    /// lost and the agent `Suspended`.
    UnwindBufferOverflow,
    /// A suspended call that does not fit the instance: the module is not transformed, the
    /// buffer lies outside memory or its header is not a finished unwind, or the export is
    /// missing; or a rewind that did not reach the import that suspended.
    BadSuspendedCall,
}

impl fmt::Display for ExecutionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecutionError::OutOfFuel => f.write_str("out of fuel"),
            ExecutionError::Trap(trap) => write!(f, "trap: {trap}"),
            ExecutionError::HostFailed => f.write_str("a host function failed"),
            ExecutionError::NotRunning { found } => {
                write!(f, "expected the agent Running, found {found}")
            }
            ExecutionError::MissingExport => f.write_str("no exported function with that name"),
            ExecutionError::WrongArguments => {
                f.write_str("the arguments do not match the function's type")
            }
            ExecutionError::InvalidModule => f.write_str("the module is not valid WebAssembly"),
            ExecutionError::CompileFailed => f.write_str("the module failed to compile"),
            ExecutionError::Refused(why) => write!(f, "refused at start: {why}"),
            ExecutionError::LinkFailed => {
                f.write_str("the embedder's imports could not be defined")
            }
            ExecutionError::UnresolvedImports => {
                f.write_str("the module's imports could not be linked")
            }
            ExecutionError::InstantiationFailed => {
                f.write_str("the module could not be instantiated")
            }
            ExecutionError::FuelMeteringOff => f.write_str("fuel metering is off"),
            ExecutionError::MissingStateExport => {
                f.write_str("the rewritten module lost a state export")
            }
            ExecutionError::StateNotWholePages => {
                f.write_str("the captured memory is not a whole number of pages")
            }
            ExecutionError::StateBelowMinimum => {
                f.write_str("the captured memory is smaller than the module's minimum")
            }
            ExecutionError::StateGrowFailed => {
                f.write_str("memory could not grow to the captured size")
            }
            ExecutionError::StateWithoutMemory => {
                f.write_str("the agent carries memory but its module has none")
            }
            ExecutionError::WrongAgent => {
                f.write_str("the delta is for another agent than the staged one")
            }
            ExecutionError::GlobalCountMismatch => {
                f.write_str("the agent carries a different number of globals than its module has")
            }
            ExecutionError::GlobalTypeMismatch => {
                f.write_str("a carried global does not match the module's global type")
            }
            ExecutionError::CallSuspended => f.write_str("the call is suspended in the middle"),
            ExecutionError::NotSuspended => f.write_str("no call is suspended"),
            ExecutionError::UnwindBufferOverflow => {
                f.write_str("the call stack did not fit the unwind buffer")
            }
            ExecutionError::BadSuspendedCall => {
                f.write_str("the suspended call does not fit the instance")
            }
        }
    }
}

/// A WebAssembly trap, by its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trap {
    /// `unreachable` was executed.
    Unreachable,
    /// A memory access out of bounds.
    MemoryOutOfBounds,
    /// A table access out of bounds.
    TableOutOfBounds,
    /// `call_indirect` on a null table entry.
    IndirectCallToNull,
    /// Integer division or remainder by zero.
    IntegerDivisionByZero,
    /// Integer overflow (`i32.div_s` of `MIN` by -1, for example).
    IntegerOverflow,
    /// A float-to-integer conversion of NaN or of a value out of range.
    BadConversionToInteger,
    /// The engine's call stack is exhausted (deep recursion).
    StackOverflow,
    /// `call_indirect` with a function of another type.
    BadSignature,
    /// A trap the engine reports with a code this crate does not know.
    Other,
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trap::Unreachable => "unreachable code reached",
            Trap::MemoryOutOfBounds => "out of bounds memory access",
            Trap::TableOutOfBounds => "out of bounds table access",
            Trap::IndirectCallToNull => "indirect call to null",
            Trap::IntegerDivisionByZero => "integer divide by zero",
            Trap::IntegerOverflow => "integer overflow",
            Trap::BadConversionToInteger => "invalid conversion to integer",
            Trap::StackOverflow => "call stack exhausted",
            Trap::BadSignature => "indirect call type mismatch",
            Trap::Other => "another trap",
        })
    }
}

/// What a module does that a migration could not carry, so that it is refused at start rather
/// than migrated with state silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// It imports its memory: the host's state.
    ImportedMemory,
    /// It imports a table: the host's state.
    ImportedTable,
    /// It imports a mutable global: the host's state.
    ImportedMutableGlobal,
    /// It defines more than one memory; one linear memory is carried.
    MultipleMemories,
    /// It defines a 64-bit memory.
    Memory64,
    /// It defines a shared memory.
    SharedMemory,
    /// Its code modifies tables (`table.set`, `.grow`, `.fill`, `.copy`, `.init`): table state is
    /// not carried.
    TableMutation,
    /// Its code drops data or element segments (`data.drop`, `elem.drop`): segment state is not
    /// carried.
    SegmentDrop,
    /// It exports a name starting with `__mielin_`, reserved for the runtime's own exports.
    ReservedExport,
    /// It defines more mutable globals than an agent carries
    /// ([`MAX_GLOBALS`](crate::MAX_GLOBALS)).
    TooManyMutableGlobals {
        /// How many mutable globals it defines.
        found: usize,
    },
    /// It defines a mutable global of a reference type (`funcref`, `externref`): a snapshot
    /// carries numbers only.
    MutableReferenceGlobal,
    /// It defines a mutable `v128` global: the version-1 wire format carries 32- and 64-bit
    /// globals only.
    MutableV128Global,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ImportedMemory => {
                f.write_str("the module imports its memory: host state cannot be carried")
            }
            Refusal::ImportedTable => {
                f.write_str("the module imports a table: host state cannot be carried")
            }
            Refusal::ImportedMutableGlobal => {
                f.write_str("the module imports a mutable global: host state cannot be carried")
            }
            Refusal::MultipleMemories => {
                f.write_str("the module has more than one memory; one linear memory is carried")
            }
            Refusal::Memory64 => f.write_str("64-bit memories are not carried"),
            Refusal::SharedMemory => f.write_str("shared memories are not carried"),
            Refusal::TableMutation => {
                f.write_str("the module modifies tables at run time: table state is not carried")
            }
            Refusal::SegmentDrop => f.write_str(
                "the module drops data or element segments: segment state is not carried",
            ),
            Refusal::ReservedExport => {
                f.write_str("the module exports a name reserved for mielin-cells (__mielin_*)")
            }
            Refusal::TooManyMutableGlobals { found } => write!(
                f,
                "the module has {found} mutable globals, an agent carries at most {}",
                crate::MAX_GLOBALS
            ),
            Refusal::MutableReferenceGlobal => {
                f.write_str("the module has a mutable reference global: references are not carried")
            }
            Refusal::MutableV128Global => {
                f.write_str("the module has a mutable v128 global: the wire format carries none")
            }
        }
    }
}
