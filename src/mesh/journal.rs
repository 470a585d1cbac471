//! What survives a restart: the [`Journal`] trait, its record format and two implementations.

use super::MeshError;
use crate::{AgentId, NodeId};

/// Where an agent stands on this node. Together with [`Record::epoch`] this is everything the
/// hand-off protocol needs after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// The agent is owned by and runs on this node at the epoch.
    Running,
    /// This node offered the agent to `target` at the epoch (one more than the epoch it ran at);
    /// the agent is stopped here and no decision was taken. A restart aborts it.
    Outgoing {
        /// The node offered the agent.
        target: NodeId,
    },
    /// This node holds a snapshot of the agent durably, received from `source` for the epoch,
    /// and waits for the source's decision (an in-doubt hand-off).
    Prepared {
        /// The node that decides.
        source: NodeId,
    },
    /// A tombstone: the agent moved to `target` at the epoch (decided here). `acked` once the
    /// target confirmed it runs the agent; until then the commit is re-sent.
    Moved {
        /// Where the agent went.
        target: NodeId,
        /// Whether the target confirmed.
        acked: bool,
    },
}

/// One agent's entry in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Record {
    /// The epoch the phase is about.
    pub epoch: u64,
    /// The phase.
    pub phase: Phase,
}

/// Bytes of an encoded record: agent id (16), epoch (8, LE), phase tag (1), node id (16),
/// acked flag (1).
pub const RECORD_LEN: usize = 42;

impl Record {
    /// Encodes `agent`'s record into [`RECORD_LEN`] bytes, for journals that write bytes.
    pub fn encode(&self, agent: AgentId) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[..16].copy_from_slice(agent.as_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        let (tag, node, acked) = match self.phase {
            Phase::Running => (0u8, [0u8; 16], false),
            Phase::Outgoing { target } => (1, *target.as_bytes(), false),
            Phase::Prepared { source } => (2, *source.as_bytes(), false),
            Phase::Moved { target, acked } => (3, *target.as_bytes(), acked),
        };
        b[24] = tag;
        b[25..41].copy_from_slice(&node);
        b[41] = u8::from(acked);
        b
    }

    /// Decodes what [`Record::encode`] wrote; `None` for anything else.
    pub fn decode(b: &[u8; RECORD_LEN]) -> Option<(AgentId, Record)> {
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[..16]);
        let mut e = [0u8; 8];
        e.copy_from_slice(&b[16..24]);
        let mut n = [0u8; 16];
        n.copy_from_slice(&b[25..41]);
        let node = NodeId::from_bytes(n);
        let acked = match b[41] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let phase = match b[24] {
            0 => Phase::Running,
            1 => Phase::Outgoing { target: node },
            2 => Phase::Prepared { source: node },
            3 => Phase::Moved {
                target: node,
                acked,
            },
            _ => return None,
        };
        Some((
            AgentId::from_bytes(id),
            Record {
                epoch: u64::from_le_bytes(e),
                phase,
            },
        ))
    }
}

/// Durable storage for what a node must remember across a crash.
///
/// Two tables, both keyed by [`AgentId`]:
/// - the hand-off [`Record`] of each agent this node owns, offers, holds in doubt or remembers
///   as moved (a tombstone);
/// - a sequence number per agent: the highest one accepted (for a trust list, so that a restart
///   does not reopen replays).
///
/// **Contract**: when `put`, `remove` or `set_sequence` returns `Ok`, the change survives a crash
/// (written and flushed). A write that fails leaves the old value in place. The protocol's
/// guarantees hold only for journals that keep this promise and are never lost.
pub trait Journal {
    /// The agent's record, if any.
    fn get(&self, agent: AgentId) -> Option<Record>;
    /// Durably replaces the agent's record. [`MeshError::JournalFull`] when a new agent does not
    /// fit, [`MeshError::JournalIo`] when it could not be made durable.
    fn put(&mut self, agent: AgentId, record: Record) -> Result<(), MeshError>;
    /// Durably forgets the agent's record (no-op when absent).
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError>;
    /// Calls `f` with every record, in no particular order (used on restart).
    fn for_each(&self, f: &mut dyn FnMut(AgentId, Record));
    /// The highest sequence number recorded for the agent.
    fn sequence(&self, agent: AgentId) -> Option<u64>;
    /// Durably records a sequence number for the agent (replacing the old one).
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError>;
}

/// A journal in memory with room for `N` records and `N` sequence numbers: what a simulator
/// keeps across a simulated crash, or a device with battery-backed RAM. No allocation.
#[derive(Debug, Clone, Default)]
pub struct MemJournal<const N: usize> {
    records: heapless::LinearMap<AgentId, Record, N>,
    sequences: heapless::LinearMap<AgentId, u64, N>,
}

impl<const N: usize> MemJournal<N> {
    /// An empty journal.
    pub const fn new() -> Self {
        MemJournal {
            records: heapless::LinearMap::new(),
            sequences: heapless::LinearMap::new(),
        }
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.len() == 0
    }
}

impl<const N: usize> Journal for MemJournal<N> {
    fn get(&self, agent: AgentId) -> Option<Record> {
        self.records.get(&agent).copied()
    }
    fn put(&mut self, agent: AgentId, record: Record) -> Result<(), MeshError> {
        self.records
            .insert(agent, record)
            .map(|_| ())
            .map_err(|_| MeshError::JournalFull)
    }
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
        self.records.remove(&agent);
        Ok(())
    }
    fn for_each(&self, f: &mut dyn FnMut(AgentId, Record)) {
        for (a, r) in self.records.iter() {
            f(*a, *r);
        }
    }
    fn sequence(&self, agent: AgentId) -> Option<u64> {
        self.sequences.get(&agent).copied()
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        self.sequences
            .insert(agent, seq)
            .map(|_| ())
            .map_err(|_| MeshError::JournalFull)
    }
}

#[cfg(feature = "std")]
mod file {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::vec::Vec;

    /// A journal in one file (feature `std`).
    ///
    /// The file is rewritten whole on every change — a temporary file, `fsync`, then an atomic
    /// rename — so a crash leaves the old or the new contents, never a mix. Format: the magic
    /// `MZJ1`, then [`RECORD_LEN`]-byte records (see [`Record::encode`]), then 24-byte sequence
    /// entries (agent id, `u64` LE) after a `u32` LE count. Meant for tens to thousands of agents;
    /// each write costs the whole file.
    #[derive(Debug)]
    pub struct FileJournal {
        path: PathBuf,
        records: BTreeMap<AgentId, Record>,
        sequences: BTreeMap<AgentId, u64>,
        capacity: usize,
    }

    const MAGIC: &[u8; 4] = b"MZJ1";

    impl FileJournal {
        pub(super) fn has_sequence_room(&self) -> bool {
            self.sequences.len() < self.capacity
        }

        pub(super) fn sequence_capacity(&self) -> usize {
            self.capacity
        }
    }

    impl FileJournal {
        /// Opens the journal at `path` (an absent file is an empty journal), holding at most
        /// `capacity` records. A file that is not a journal is an `InvalidData` error.
        pub fn open(path: impl AsRef<Path>, capacity: usize) -> std::io::Result<FileJournal> {
            let path = path.as_ref().to_path_buf();
            let mut j = FileJournal {
                path,
                records: BTreeMap::new(),
                sequences: BTreeMap::new(),
                capacity,
            };
            let bytes = match std::fs::read(&j.path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(j),
                Err(e) => return Err(e),
            };
            let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a journal");
            let rest = bytes.strip_prefix(&MAGIC[..]).ok_or_else(bad)?;
            if rest.len() < 4 {
                return Err(bad());
            }
            let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let rest = &rest[4..];
            let rec_bytes = n
                .checked_mul(RECORD_LEN)
                .filter(|&l| l <= rest.len())
                .ok_or_else(bad)?;
            for c in rest[..rec_bytes].chunks_exact(RECORD_LEN) {
                let mut b = [0u8; RECORD_LEN];
                b.copy_from_slice(c);
                let (a, r) = Record::decode(&b).ok_or_else(bad)?;
                j.records.insert(a, r);
            }
            let seqs = &rest[rec_bytes..];
            if seqs.len() % 24 != 0 {
                return Err(bad());
            }
            for c in seqs.chunks_exact(24) {
                let mut id = [0u8; 16];
                id.copy_from_slice(&c[..16]);
                let mut s = [0u8; 8];
                s.copy_from_slice(&c[16..]);
                j.sequences
                    .insert(AgentId::from_bytes(id), u64::from_le_bytes(s));
            }
            Ok(j)
        }

        fn flush(&self) -> std::io::Result<()> {
            use std::io::Write;
            let mut out = Vec::with_capacity(8 + self.records.len() * RECORD_LEN);
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
            for (a, r) in &self.records {
                out.extend_from_slice(&r.encode(*a));
            }
            for (a, s) in &self.sequences {
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(&s.to_le_bytes());
            }
            let tmp = self.path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Make the rename durable too; not every platform lets a directory be opened.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        }

        fn commit<T>(
            &mut self,
            change: impl FnOnce(&mut Self) -> T,
            undo: impl FnOnce(&mut Self, T),
        ) -> Result<(), MeshError> {
            let old = change(self);
            if self.flush().is_err() {
                undo(self, old);
                return Err(MeshError::JournalIo);
            }
            Ok(())
        }
    }

    impl Journal for FileJournal {
        fn get(&self, agent: AgentId) -> Option<Record> {
            self.records.get(&agent).copied()
        }
        fn put(&mut self, agent: AgentId, record: Record) -> Result<(), MeshError> {
            if !self.records.contains_key(&agent) && self.records.len() >= self.capacity {
                return Err(MeshError::JournalFull);
            }
            self.commit(
                |j| j.records.insert(agent, record),
                |j, old| match old {
                    Some(o) => {
                        j.records.insert(agent, o);
                    }
                    None => {
                        j.records.remove(&agent);
                    }
                },
            )
        }
        fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
            if !self.records.contains_key(&agent) {
                return Ok(());
            }
            self.commit(
                |j| j.records.remove(&agent),
                |j, old| {
                    if let Some(o) = old {
                        j.records.insert(agent, o);
                    }
                },
            )
        }
        fn for_each(&self, f: &mut dyn FnMut(AgentId, Record)) {
            for (a, r) in &self.records {
                f(*a, *r);
            }
        }
        fn sequence(&self, agent: AgentId) -> Option<u64> {
            self.sequences.get(&agent).copied()
        }
        fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
            if !self.sequences.contains_key(&agent) && self.sequences.len() >= self.capacity {
                return Err(MeshError::JournalFull);
            }
            self.commit(
                |j| j.sequences.insert(agent, seq),
                |j, old| match old {
                    Some(o) => {
                        j.sequences.insert(agent, o);
                    }
                    None => {
                        j.sequences.remove(&agent);
                    }
                },
            )
        }
    }
}

#[cfg(feature = "std")]
pub use file::FileJournal;

/// A mesh journal keeps the trust list's epochs too (its sequence numbers), so a node has one
/// journal to make durable: lend it to a [`TrustList`](crate::migration::TrustList) with
/// `TrustList::new(node_id, &mut journal)` (or through [`Node::journal_mut`](super::Node)).
macro_rules! epochs_in_mesh_journal {
    ($($generics:tt)*) => {
        fn last_epoch(&self, agent: AgentId) -> Option<u64> {
            Journal::sequence(self, agent)
        }

        fn check_room(&self, agent: AgentId) -> Result<(), crate::CellError> {
            if Journal::sequence(self, agent).is_some() || self.has_sequence_room() {
                return Ok(());
            }
            Err(crate::CellError::CapacityExceeded {
                what: crate::Capacity::EpochJournal,
                capacity: self.sequence_capacity(),
                requested: self.sequence_capacity().saturating_add(1),
            })
        }

        fn record_epoch(&mut self, agent: AgentId, epoch: u64) -> Result<(), crate::CellError> {
            Journal::set_sequence(self, agent, epoch).map_err(|e| match e {
                MeshError::JournalFull => crate::CellError::CapacityExceeded {
                    what: crate::Capacity::EpochJournal,
                    capacity: self.sequence_capacity(),
                    requested: self.sequence_capacity().saturating_add(1),
                },
                _ => crate::CellError::JournalFailed,
            })
        }
    };
}

impl<const N: usize> crate::migration::EpochJournal for MemJournal<N> {
    epochs_in_mesh_journal!();
}

impl<const N: usize> MemJournal<N> {
    fn has_sequence_room(&self) -> bool {
        self.sequences.len() < N
    }

    fn sequence_capacity(&self) -> usize {
        N
    }
}

#[cfg(feature = "std")]
impl crate::migration::EpochJournal for FileJournal {
    epochs_in_mesh_journal!();
}
