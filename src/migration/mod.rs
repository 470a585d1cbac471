//! Stateful migration: capture an agent into a [`MigrationSnapshot`], move its bytes to another
//! node, and restore the same agent there; and the [`MigrationManager`] that tracks migrations a
//! node has started.
//!
//! The byte format is specified in `docs/wire-format.md`: version 1, and version 2
//! ([`FORMAT_VERSION_2`]), whose [`Frame`] binds a snapshot to its target node and epoch and is
//! hashed once per byte.

mod journal;
mod manager;
#[cfg(feature = "signatures")]
mod sign;
pub(crate) mod snapshot;
mod store;
pub(crate) mod wire;

/// The one epoch range of the crate (defined at the root; here too, where it always was).
pub use crate::MAX_EPOCH;
#[cfg(feature = "std")]
pub use journal::FileEpochJournal;
pub use journal::{EpochJournal, EpochTable};
pub use manager::{MigrationManager, PendingMigration};
#[cfg(feature = "signatures")]
pub use sign::{
    default_peer_quota, key_id, verify_v1, Admitted, Ed25519Signer, EpochRefusals, TrustList,
    DEFAULT_MAX_SKEW_SECS,
};
pub use snapshot::{DecodeOptions, EncodeOptions, MigrationSnapshot, SnapshotView, StateEncoding};
#[cfg(feature = "alloc")]
pub use store::DnaMap;
pub use store::{DnaSlots, DnaStore};
#[cfg(feature = "alloc")]
pub use wire::memory::MemoryDigests;
pub use wire::memory::CHUNK_SIZE;
pub use wire::{
    Container, DecodeLimits, Frame, Route, SnapshotSealer, SnapshotSigner, ENVELOPE_LEN,
    FLAG_DNA_BY_REFERENCE, FLAG_MEMORY_BY_MANIFEST, FLAG_SEALED, FLAG_SIGNED, FLAG_STATE_CHUNKED,
    FLAG_STATE_DELTA, FORMAT_VERSION, FORMAT_VERSION_2, FORMAT_VERSION_3, HEADER_LEN, MAGIC,
    MAX_CALL_SECTION_LEN, MAX_IGNORABLE_SECTION_LEN, MAX_INBOX_SECTION_LEN, MAX_SECTIONS,
    SEAL_CONTEXT, SEAL_LEN, SECTION_BINARY, SECTION_CALL, SECTION_ENTRY_LEN, SECTION_IGNORABLE,
    SECTION_INBOX, SECTION_MEMORY, SECTION_MEMORY_DELTA, SECTION_TAIL, SIGNATURE_BLOCK_LEN,
    SIGNATURE_CONTEXT, TRAILER_LEN, V2_SIGNATURE_BLOCK_LEN, V3_HEADER_LEN, V3_SIGNATURE_CONTEXT,
};
