//! What a receiver must remember across restarts to refuse replays: the highest epoch of each
//! agent it has accepted or sent. Without it, a restarted node accepts any old signed snapshot.

use crate::{AgentId, Capacity, CellError};

/// Durable per-agent epochs: the highest epoch at which this node accepted an agent, or sent it
/// away. A trust list refuses any snapshot of the agent at that epoch or below.
///
/// `record_epoch` must not return `Ok` before the epoch is on storage that survives a crash
/// (for a file: written and synced), or a crash right after accepting an agent reopens the
/// replay window the journal exists to close.
pub trait EpochJournal {
    /// The highest epoch recorded for `agent`.
    fn last_epoch(&self, agent: AgentId) -> Option<u64>;

    /// Whether a new epoch for `agent` can be recorded (an entry exists, or there is room):
    /// [`CellError::CapacityExceeded`] if not. Checked before a snapshot is decoded, so a full
    /// journal refuses it before any work.
    fn check_room(&self, agent: AgentId) -> Result<(), CellError>;

    /// Records `epoch` for `agent`, durably. Only ever called with an epoch above
    /// [`last_epoch`](Self::last_epoch).
    fn record_epoch(&mut self, agent: AgentId, epoch: u64) -> Result<(), CellError>;
}

/// A journal lent to a trust list, so that the node keeps owning it (e.g. the mesh node's
/// journal, which holds the agents' epochs as well).
impl<T: EpochJournal + ?Sized> EpochJournal for &mut T {
    fn last_epoch(&self, agent: AgentId) -> Option<u64> {
        (**self).last_epoch(agent)
    }

    fn check_room(&self, agent: AgentId) -> Result<(), CellError> {
        (**self).check_room(agent)
    }

    fn record_epoch(&mut self, agent: AgentId, epoch: u64) -> Result<(), CellError> {
        (**self).record_epoch(agent, epoch)
    }
}

fn full(capacity: usize) -> CellError {
    CellError::CapacityExceeded {
        what: Capacity::EpochJournal,
        capacity,
        requested: capacity.saturating_add(1),
    }
}

/// An in-memory [`EpochJournal`] of at most `A` agents, with no allocation: forgotten on
/// restart, so use it where a restart also forgets the agents (or in tests); persist with
/// `FileEpochJournal` (feature `std`) or an implementation of your own.
#[derive(Debug, Clone, Default)]
pub struct EpochTable<const A: usize> {
    entries: heapless::Vec<(AgentId, u64), A>,
}

impl<const A: usize> EpochTable<A> {
    /// An empty table.
    pub const fn new() -> Self {
        EpochTable {
            entries: heapless::Vec::new(),
        }
    }

    /// How many agents it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<const A: usize> EpochJournal for EpochTable<A> {
    fn last_epoch(&self, agent: AgentId) -> Option<u64> {
        self.entries
            .iter()
            .find(|(a, _)| *a == agent)
            .map(|(_, e)| *e)
    }

    fn check_room(&self, agent: AgentId) -> Result<(), CellError> {
        if self.entries.is_full() && self.last_epoch(agent).is_none() {
            return Err(full(A));
        }
        Ok(())
    }

    fn record_epoch(&mut self, agent: AgentId, epoch: u64) -> Result<(), CellError> {
        match self.entries.iter_mut().find(|(a, _)| *a == agent) {
            Some(entry) => entry.1 = epoch,
            None => self.entries.push((agent, epoch)).map_err(|_| full(A))?,
        }
        Ok(())
    }
}

/// A file-backed [`EpochJournal`]: an append-only file of 24-byte records (agent id, epoch as
/// u64 little-endian), synced before `record_epoch` returns; reopened, the highest epoch per
/// agent wins. A torn last record (a crash mid-write) is ignored on open.
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug)]
pub struct FileEpochJournal {
    file: std::fs::File,
    epochs: alloc::collections::BTreeMap<AgentId, u64>,
    max_agents: usize,
}

#[cfg(feature = "std")]
impl FileEpochJournal {
    /// Opens (or creates) the journal at `path`, holding at most `max_agents` agents.
    pub fn open(path: &std::path::Path, max_agents: usize) -> std::io::Result<Self> {
        use std::io::Read;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut bytes = alloc::vec::Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut epochs = alloc::collections::BTreeMap::new();
        for record in bytes.chunks_exact(24) {
            let mut id = [0u8; 16];
            id.copy_from_slice(&record[..16]);
            let mut e = [0u8; 8];
            e.copy_from_slice(&record[16..]);
            let e = u64::from_le_bytes(e);
            let slot = epochs.entry(AgentId::from_bytes(id)).or_insert(e);
            *slot = (*slot).max(e);
        }
        Ok(FileEpochJournal {
            file,
            epochs,
            max_agents,
        })
    }
}

#[cfg(feature = "std")]
impl EpochJournal for FileEpochJournal {
    fn last_epoch(&self, agent: AgentId) -> Option<u64> {
        self.epochs.get(&agent).copied()
    }

    fn check_room(&self, agent: AgentId) -> Result<(), CellError> {
        if self.epochs.len() >= self.max_agents && !self.epochs.contains_key(&agent) {
            return Err(full(self.max_agents));
        }
        Ok(())
    }

    fn record_epoch(&mut self, agent: AgentId, epoch: u64) -> Result<(), CellError> {
        use std::io::Write;
        self.check_room(agent)?;
        let mut record = [0u8; 24];
        record[..16].copy_from_slice(agent.as_bytes());
        record[16..].copy_from_slice(&epoch.to_le_bytes());
        self.file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
            .map_err(|_| CellError::JournalFailed)?;
        self.epochs.insert(agent, epoch);
        Ok(())
    }
}
