//! Stateful migration: capture an agent into a [`MigrationSnapshot`], move its bytes to another
//! node, and restore the same agent there; and the [`MigrationManager`] that tracks migrations a
//! node has started.
//!
//! The byte format is specified in `docs/wire-format.md` (format version
//! [`FORMAT_VERSION`]).

#[cfg(feature = "alloc")]
mod chunks;
mod manager;
#[cfg(feature = "signatures")]
mod sign;
mod snapshot;
mod store;
mod wire;

#[cfg(feature = "alloc")]
pub use chunks::CHUNK_SIZE;
pub use manager::{MigrationManager, PendingMigration};
#[cfg(feature = "signatures")]
pub use sign::{key_id, Ed25519Signer, TrustList};
pub use snapshot::{DecodeOptions, EncodeOptions, MigrationSnapshot, SnapshotView, StateEncoding};
#[cfg(feature = "alloc")]
pub use store::DnaMap;
pub use store::{DnaSlots, DnaStore};
pub use wire::{
    DecodeLimits, SnapshotSigner, FLAG_DNA_BY_REFERENCE, FLAG_SIGNED, FLAG_STATE_CHUNKED,
    FLAG_STATE_DELTA, FORMAT_VERSION, HEADER_LEN, MAGIC, SIGNATURE_BLOCK_LEN, TRAILER_LEN,
};
