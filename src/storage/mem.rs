//! A log in memory with injectable faults, for tests and the simulator.

use super::{Log, Lsn};
use crate::StoreError;
use alloc::vec::Vec;

/// A [`Log`] in memory (feature `alloc`) that plays a medium under the faults a disk has: a
/// failed write, a failed sync, and a crash that keeps only some of what was not synced.
///
/// Holds at most `capacity` bytes of records (each record counts its length); past that,
/// [`StoreError::LogFull`]. What a crash keeps is the caller's choice ([`crash`](Self::crash)),
/// so a simulator draws it from its seed and a test can try every choice.
#[derive(Debug, Clone)]
pub struct MemLog {
    /// Every record on the "medium", durable or not, in order: record `i` has ticket `i + 1`.
    records: Vec<Vec<u8>>,
    durable: usize,
    bytes: usize,
    capacity: usize,
    max_record: usize,
    poisoned: bool,
    fail_append: bool,
    fail_sync: bool,
    syncs: u64,
}

impl MemLog {
    /// An empty log holding records of at most `max_record` bytes and `capacity` bytes in all.
    pub fn new(max_record: usize, capacity: usize) -> MemLog {
        MemLog {
            records: Vec::new(),
            durable: 0,
            bytes: 0,
            capacity,
            max_record,
            poisoned: false,
            fail_append: false,
            fail_sync: false,
            syncs: 0,
        }
    }

    /// Makes the next `append` fail (and poison the log), as a write error would.
    pub fn fail_next_append(&mut self) {
        self.fail_append = true;
    }

    /// Makes the next `sync` that has records to commit fail (and poison the log), as a failed
    /// `fsync` would. The records it was to commit stay where they are, neither durable nor
    /// gone: a later [`crash`](Self::crash) decides.
    pub fn fail_next_sync(&mut self) {
        self.fail_sync = true;
    }

    /// A crash and a reopen: every durable record survives, and of the records after them the
    /// first `keep` (at most all of them) — a disk that wrote some of the batch before power
    /// went. The survivors are durable from now on; what the log held in memory (faults
    /// armed, poison) is gone. Returns the durable ticket after the crash.
    pub fn crash(&mut self, keep: usize) -> Lsn {
        let end = self.durable + keep.min(self.records.len() - self.durable);
        for r in self.records.drain(end..) {
            self.bytes -= r.len();
        }
        self.durable = end;
        self.poisoned = false;
        self.fail_append = false;
        self.fail_sync = false;
        self.durable()
    }

    /// How many syncs committed records (what a disk would have paid an `fdatasync` for).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Whether a failure poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Bytes of records held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Log for MemLog {
    fn max_record(&self) -> usize {
        self.max_record
    }

    fn append(&mut self, record: &[u8]) -> Result<Lsn, StoreError> {
        super::admit(self.poisoned, record.len(), self.max_record)?;
        if record.len() > self.capacity - self.bytes {
            return Err(StoreError::LogFull {
                capacity: self.capacity as u64,
            });
        }
        if core::mem::take(&mut self.fail_append) {
            self.poisoned = true;
            return Err(StoreError::WriteFailed);
        }
        self.records.push(record.to_vec());
        self.bytes += record.len();
        Ok(self.appended())
    }

    fn sync(&mut self) -> Result<Lsn, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.durable == self.records.len() {
            return Ok(self.durable());
        }
        if core::mem::take(&mut self.fail_sync) {
            self.poisoned = true;
            return Err(StoreError::WriteFailed);
        }
        self.durable = self.records.len();
        self.syncs += 1;
        Ok(self.durable())
    }

    fn durable(&self) -> Lsn {
        Lsn(self.durable as u64)
    }

    fn appended(&self) -> Lsn {
        Lsn(self.records.len() as u64)
    }

    fn replay(&mut self, f: &mut dyn FnMut(Lsn, &[u8])) -> Result<(), StoreError> {
        for (i, r) in self.records.iter().enumerate() {
            f(Lsn(i as u64 + 1), r);
        }
        Ok(())
    }
}
