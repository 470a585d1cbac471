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

#[cfg(feature = "std")]
pub use journal::FileEpochJournal;
pub use journal::{EpochJournal, EpochTable};
pub use manager::{MigrationManager, PendingMigration};
#[cfg(feature = "signatures")]
pub use sign::{
    default_peer_quota, key_id, verify_v1, Ed25519Signer, EpochRefusals, TrustList,
    DEFAULT_MAX_SKEW_SECS, MAX_EPOCH,
};
pub use snapshot::{DecodeOptions, EncodeOptions, MigrationSnapshot, SnapshotView, StateEncoding};
#[cfg(feature = "alloc")]
pub use store::DnaMap;
pub use store::{DnaSlots, DnaStore};
#[cfg(feature = "alloc")]
pub use wire::memory::MemoryDigests;
pub use wire::memory::CHUNK_SIZE;
pub use wire::{
    DecodeLimits, Frame, Route, SnapshotSigner, ENVELOPE_LEN, FLAG_DNA_BY_REFERENCE, FLAG_SIGNED,
    FLAG_STATE_CHUNKED, FLAG_STATE_DELTA, FORMAT_VERSION, FORMAT_VERSION_2, HEADER_LEN, MAGIC,
    SIGNATURE_BLOCK_LEN, SIGNATURE_CONTEXT, TRAILER_LEN, V2_SIGNATURE_BLOCK_LEN,
};
