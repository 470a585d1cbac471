//! Durable storage shaped like a log, with durability tickets.
//!
//! A node writes what it must remember as records appended to a [`Log`]. `append` does not
//! wait for the disk: it returns the record's [`Lsn`], a *ticket*. [`Log::sync`] — one call for
//! everything appended since the last one, the *group commit* — makes every record up to a
//! number durable and returns that number. Whatever depends on a record (a frame that tells a
//! peer "I hold it", "it ran here", "you may forget it") waits in a [`Held`] queue until the
//! durable number covers its ticket. One `fdatasync` then covers a whole batch of records
//! instead of one each.
//!
//! The contract every backend keeps is in `docs/protocol.md`, "Durability tickets":
//! - tickets are consecutive, from 1, and never reused while the log is open;
//! - when `sync` returns `Ok(n)`, records `1..=n` survive any later crash;
//! - after a crash, the log holds a *prefix* of what was appended: every durable record and
//!   possibly some later ones, never a gap, never part of a record, never a changed one;
//! - a failed `append` or `sync` *poisons* the log: every later call is refused with
//!   [`StoreError::Poisoned`] until the log is reopened, because after a failed write or
//!   `fsync` nobody knows which of the records reached the medium (a retried `fsync` can
//!   return `Ok` for pages the kernel already dropped).
//!
//! Backends: `MemLog` (feature `alloc`), in memory with injectable faults, for tests and the
//! simulator; `FileLog` (feature `std`), one append-only file under two commit slots;
//! `FlashLog` (feature `flash`), a board's log in NOR flash, with `RamFlash` to test it.

#[cfg(feature = "std")]
mod file;
#[cfg(feature = "flash")]
mod flash;
mod held;
#[cfg(feature = "alloc")]
mod mem;
#[cfg(feature = "std")]
pub(crate) mod slots;

#[cfg(feature = "std")]
pub use file::FileLog;
#[cfg(feature = "flash")]
pub(crate) use flash::block_on;
#[cfg(feature = "flash")]
pub use flash::{FlashLog, Landing, RamFlash, FLASH_RECORD_OVERHEAD};
pub use held::Held;
#[cfg(feature = "alloc")]
pub use mem::MemLog;

use crate::StoreError;

/// A log sequence number: the position of a record in its log, counted from 1. Appending
/// returns one as a ticket; syncing returns the highest one that is durable.
/// [`Lsn::ZERO`] comes before every record (nothing is durable yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Before the first record.
    pub const ZERO: Lsn = Lsn(0);

    /// The number after this one (saturating: a log never holds 2^64 records).
    pub const fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }
}

impl core::fmt::Display for Lsn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

/// An append-only log of records with group commit. See the [module](self) for the contract.
///
/// Synchronous on purpose: a backend over an asynchronous medium (flash through
/// `embedded-storage-async`) drives its futures to completion inside these calls, so the
/// protocol's state machine stays free of I/O and of executors.
pub trait Log {
    /// The longest record [`append`](Self::append) takes, in bytes.
    fn max_record(&self) -> usize;

    /// Appends `record` and returns its ticket. The record is not durable until a
    /// [`sync`](Self::sync) returns a number at or above the ticket. Refused with
    /// [`StoreError::RecordTooLong`] above [`max_record`](Self::max_record), with
    /// [`StoreError::LogFull`] when the medium has no room, and with [`StoreError::Poisoned`]
    /// after an earlier failure.
    fn append(&mut self, record: &[u8]) -> Result<Lsn, StoreError>;

    /// Makes every record appended so far durable (one group commit) and returns the highest
    /// durable ticket. With nothing new appended it returns [`durable`](Self::durable) without
    /// touching the medium.
    fn sync(&mut self) -> Result<Lsn, StoreError>;

    /// The highest ticket a `sync` (or the open that found it on the medium) made durable.
    fn durable(&self) -> Lsn;

    /// The ticket of the last record appended ([`Lsn::ZERO`] for an empty log).
    fn appended(&self) -> Lsn;

    /// Calls `f` with every record in the log, in order, with its ticket: how a node rebuilds
    /// its tables after opening the log. A backend that cannot read a record back refuses
    /// with the error its open would give.
    fn replay(&mut self, f: &mut dyn FnMut(Lsn, &[u8])) -> Result<(), StoreError>;
}

/// The checks every backend's `append` starts with: the log is not poisoned, and the record is
/// not longer than its largest (`max`).
#[cfg(any(feature = "alloc", feature = "flash"))]
pub(crate) fn admit(poisoned: bool, len: usize, max: usize) -> Result<(), StoreError> {
    if poisoned {
        return Err(StoreError::Poisoned);
    }
    if len > max {
        return Err(StoreError::RecordTooLong {
            len: len as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably (feature `std`): to `PATH.tmp`, synced,
/// renamed into place, the directory synced. A crash leaves the old file or the new one whole.
#[cfg(feature = "std")]
pub(crate) fn write_durable(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl<L: Log + ?Sized> Log for &mut L {
    fn max_record(&self) -> usize {
        (**self).max_record()
    }
    fn append(&mut self, record: &[u8]) -> Result<Lsn, StoreError> {
        (**self).append(record)
    }
    fn sync(&mut self) -> Result<Lsn, StoreError> {
        (**self).sync()
    }
    fn durable(&self) -> Lsn {
        (**self).durable()
    }
    fn appended(&self) -> Lsn {
        (**self).appended()
    }
    fn replay(&mut self, f: &mut dyn FnMut(Lsn, &[u8])) -> Result<(), StoreError> {
        (**self).replay(f)
    }
}
