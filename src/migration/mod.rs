//! Stateful migration: capture an agent into a [`MigrationSnapshot`], move its bytes to another
//! node, and restore the same agent there; and the [`MigrationManager`] that tracks migrations a
//! node has started.
//!
//! The byte format is specified in `docs/wire-format.md` (format version
//! [`FORMAT_VERSION`]).

mod manager;
mod snapshot;
mod wire;

pub use manager::{MigrationManager, PendingMigration};
pub use snapshot::{MigrationSnapshot, SnapshotView};
pub use wire::{DecodeLimits, FORMAT_VERSION, HEADER_LEN, MAGIC, TRAILER_LEN};
