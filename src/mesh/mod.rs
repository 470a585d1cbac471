//! A sans-IO protocol that moves agents between nodes with exactly-once ownership.
//!
//! The protocol is a set of pure state machines in the style of quinn-proto and smoltcp: the
//! embedder feeds a [`Node`] events — a frame received ([`Node::handle_frame`]), the time
//! ([`Node::handle_timeout`]), a command ([`Node::migrate`]) — and takes frames out
//! ([`Node::poll_transmit`]). The node has no clock, no sockets, no RNG and no allocator: time is
//! a `u64` of milliseconds passed in, persistence is the embedder's [`Journal`], and agents are
//! captured, verified and run by the embedder's [`AgentHost`]. Snapshots are opaque bytes to the
//! protocol.
//!
//! Layers, bytes below meaning:
//! - [`frame`]: the wire codec (a checked view and a typed [`frame::Repr`]); knows nothing above.
//! - [`Journal`] and [`Record`]: what survives a restart.
//! - [`Node`]: the hand-off state machine.
//! - [`placement`]: required imports from a DNA and a selection that refuses nodes lacking one.
//! - `records` (feature `alloc`): length-prefixed records that put frames on a byte stream
//!   (the QUIC driver's framing).
//! - `certificate` (feature `quic`): a peer's Ed25519 key from its TLS certificates, read by
//!   rustls' own parser (the QUIC driver pins peers by it).
//! - `wasm` (feature `wasmi`): host functions `mesh.send` / `mesh.recv` for WebAssembly agents.
//! - `cells` (feature `wasmi`): `Cells`, the agent host for WebAssembly agents, over a
//!   `Keeper` (where agents survive a restart) and a `Gate` (how they are admitted and signed).
//! - `Inbox` (feature `alloc`): an agent's mailbox, outbox and sequence numbers, and their
//!   wire form, the inbox section of a version-3 container.
//!
//! `docs/protocol.md` specifies messages, states, guarantees and their assumptions.

#[cfg(feature = "wasmi")]
#[cfg_attr(docsrs, doc(cfg(feature = "wasmi")))]
pub mod cells;
#[cfg(feature = "_certificate")]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
pub mod certificate;
#[cfg(feature = "flash")]
#[cfg_attr(docsrs, doc(cfg(feature = "flash")))]
mod flash_journal;
#[cfg(feature = "signatures")]
#[cfg_attr(docsrs, doc(cfg(feature = "signatures")))]
pub mod fleet;
#[cfg(all(feature = "_certificate", feature = "signatures"))]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
pub mod fleet_certificate;
pub mod frame;
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
mod inbox;
mod journal;
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
mod log_journal;
mod node;
pub mod placement;
pub mod planner;
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
pub mod records;
#[cfg(feature = "wasmi")]
#[cfg_attr(docsrs, doc(cfg(feature = "wasmi")))]
pub mod wasm;

#[cfg(feature = "flash")]
#[cfg_attr(docsrs, doc(cfg(feature = "flash")))]
pub use flash_journal::FlashJournal;
#[cfg(feature = "alloc")]
pub use inbox::{Inbox, InboxLimits, MAX_INBOX_MESSAGE_LEN};
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub use journal::{FileJournal, SharedJournal};
pub use journal::{Journal, MemJournal, Phase, Record, RECORD_LEN};
#[cfg(feature = "alloc")]
pub use log_journal::{LogJournal, LOG_JOURNAL_RECORD};
pub use node::{
    AgentHost, AgentInfo, Config, Delivery, Node, Notice, Outgoing, Stalled, Stats, Stream,
    Transmit, CHECK_PEERS, MAX_LOOKUP_BACKOFF, MAX_MEASURED_FACTOR, MAX_TRANSFER_ALLOWANCE_MS,
    NOTICES, OUTBOX,
};

/// Everything that can go wrong in the mesh protocol. `Copy`, allocation-free; match with a
/// wildcard arm, new variants may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// A frame is shorter than its header or than its kind requires.
    #[error("frame truncated")]
    Truncated,
    /// A frame does not start with the magic `MZ`.
    #[error("not a mesh frame: bad magic")]
    BadMagic,
    /// A frame version this codec does not read.
    #[error("unsupported frame version: expected 2, found {found}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// A frame kind this codec does not know.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// The kind byte found.
        found: u8,
    },
    /// An epoch above [`MAX_EPOCH`](crate::MAX_EPOCH): the mesh and the snapshot formats share
    /// one epoch range.
    #[error("epoch {found} is above the largest allowed")]
    EpochOutOfRange {
        /// The epoch found.
        found: u64,
    },
    /// Reserved flag bits are set.
    #[error("reserved flag bits set")]
    BadFlags,
    /// Bytes follow the end of the frame.
    #[error("trailing bytes after the frame")]
    TrailingBytes,
    /// The output buffer cannot hold the frame.
    #[error("buffer too small: the frame needs {needed} bytes, the buffer holds {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A payload longer than the length field can say.
    #[error("payload too large for a frame")]
    PayloadTooLarge,
    /// The journal has no room for another record.
    #[error("journal full")]
    JournalFull,
    /// The journal could not make a record durable.
    #[error("journal write failed")]
    JournalIo,
    /// A fixed-capacity table of the node (timers, outbox) is full; nothing was changed.
    #[error("node busy: a fixed-capacity table is full")]
    Busy,
    /// The command needs the agent to run here, and it does not.
    #[error("the agent does not run on this node")]
    NotOwner,
    /// The agent is already known here.
    #[error("the agent is already known on this node")]
    AlreadyKnown,
    /// A hand-off to the node itself.
    #[error("cannot hand an agent off to its own node")]
    SelfTarget,
    /// The agent's epoch cannot grow any more.
    #[error("epoch exhausted")]
    EpochExhausted,
    /// A WebAssembly module whose import section cannot be read.
    #[error("malformed WebAssembly module (import section)")]
    BadModule,
    /// The host refused (capture failed, snapshot invalid, agent unknown to the host).
    #[error("the agent host refused: {reason}")]
    HostRefused {
        /// Why, by kind; a host keeps the details (`Cells::take_problems`).
        reason: HostRefusal,
    },
    /// A hand-off to a node the driver has no connection or directory entry for.
    #[error("the target node is not in the directory")]
    UnknownTarget,
}

/// Why an [`AgentHost`] refused ([`MeshError::HostRefused`]): the kind, typed, for the node,
/// its logs and its callers to match on. Match with a wildcard arm, new kinds may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum HostRefusal {
    /// The host does not hold the agent (nothing to describe or capture).
    #[error("the agent is unknown to the host")]
    UnknownAgent,
    /// The agent is not stopped here (a capture outside a hand-off).
    #[error("the agent is not stopped here")]
    NotStopped,
    /// No route (target and epoch) was set for the hand-off.
    #[error("no route for the hand-off")]
    NoRoute,
    /// The snapshot names another agent, epoch or target than the hand-off it came in.
    #[error("the snapshot is not for this hand-off")]
    NotThisHandOff,
    /// The snapshot carries a suspended call, which the host does not take over.
    #[error("a suspended call: this host runs agents between calls only")]
    SuspendedCall,
    /// The snapshot did not verify or decode: format, limits, signature, DNA or memory.
    #[error("the snapshot was refused")]
    Snapshot,
    /// The snapshot's mailbox (inbox section) is missing or was refused.
    #[error("the inbox section is missing or was refused")]
    Inbox,
    /// Keeping the agent durably failed (storage full or failing).
    #[error("keeping the agent failed")]
    Keep,
    /// No copy of the agent at the epoch asked for.
    #[error("no copy of the agent at this epoch")]
    NoCopy,
    /// The runtime refused to capture, start or resume the agent.
    #[error("the runtime refused")]
    Runtime,
    /// The saved copy's events did not apply again.
    #[error("the saved copy's events did not apply again")]
    Diverged,
}
