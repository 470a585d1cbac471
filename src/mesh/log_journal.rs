//! The mesh [`Journal`] as records in a [`Log`]: one append per change instead of a rewritten
//! file, the hand-off records and the fence table in one log.

use super::journal::{Journal, Record, RECORD_LEN};
use super::MeshError;
use crate::storage::{Log, Lsn};
use crate::{AgentId, NodeId, Part, StoreError};
use alloc::collections::BTreeMap;

/// The kinds of record in the log (the first byte of each).
mod kind {
    /// An agent's hand-off record: [`Record::encode`](super::Record::encode) (42 bytes).
    pub const PUT: u8 = 1;
    /// An agent's record forgotten: its id (16).
    pub const REMOVE: u8 = 2;
    /// An agent's fence: id (16), sequence (`u64` LE), creator tag (0 this node, 1 a peer),
    /// creator node id (16, zeros for tag 0).
    pub const SEQUENCE: u8 = 3;
    /// The restart generation (`u64` LE).
    pub const GENERATION: u8 = 4;
}

/// The longest record the journal writes: a kind byte and a hand-off record.
pub const LOG_JOURNAL_RECORD: usize = 1 + RECORD_LEN;

/// A [`Journal`] (feature `alloc`) kept as records appended to a [`Log`]: each change is one
/// record of at most [`LOG_JOURNAL_RECORD`] bytes, synced before the write returns, or — once
/// [`deferred`](Self::deferred) — at the next [`Journal::sync`], one group commit for every
/// change since the last (a [`Node`](super::Node) syncs before it lets anything depend on
/// them). Opening replays the log into the tables. Holds at most `capacity` hand-off records and as many
/// fence entries, like `FileJournal` (feature `std`), which rewrites its whole file on
/// every change.
///
/// **Failures.** The [`Journal`] contract says a failed write leaves the old value. A log
/// cannot promise that: after a failed append or sync the record may still reach the medium and
/// appear after a crash. So a failure *poisons* the journal: it keeps answering reads with the
/// old tables, refuses every later write ([`MeshError::JournalIo`]), and
/// [`is_poisoned`](Self::is_poisoned) tells the embedder to restart the node from the reopened
/// log. For the protocol that is a crash at that write, with the write landed or not — the
/// fault the simulator injects at every durable write (`tests/sim.rs`).
///
/// The log grows by one record per change; [`rewrite_into`](Self::rewrite_into) writes the
/// current tables into a fresh log (compaction; the caller swaps the logs).
#[derive(Debug, Clone)]
pub struct LogJournal<L> {
    log: L,
    t: Tables,
    poisoned: bool,
    /// Changes wait for `Journal::sync` (the epochs a trust list records never do).
    deferred: bool,
}

/// What the log's records add up to.
#[derive(Debug, Clone)]
struct Tables {
    records: BTreeMap<AgentId, Record>,
    sequences: BTreeMap<AgentId, (u64, Option<NodeId>)>,
    generation: u64,
    capacity: usize,
}

impl<L: Log> LogJournal<L> {
    /// Opens the journal kept in `log` (a new, empty log is a new journal), replaying every
    /// record, with room for `capacity` agents. Refused when the log takes records shorter than
    /// [`LOG_JOURNAL_RECORD`], when a record is not one this journal writes
    /// ([`StoreError::Malformed`], its `offset` the record's ticket), or when the log holds more
    /// agents than `capacity`.
    pub fn open(mut log: L, capacity: usize) -> Result<Self, StoreError> {
        Self::open_with(capacity, |f| log.replay(f).map(|()| log))
    }

    /// [`open`](Self::open) with a log whose own open reads its records (such as
    /// [`FileLog::open`](crate::storage::FileLog::open), which verifies each as it reads it):
    /// `open` is given the function that takes each record into the tables, so the log is read
    /// once, not opened and then replayed.
    pub fn open_with(
        capacity: usize,
        open: impl FnOnce(&mut dyn FnMut(Lsn, &[u8])) -> Result<L, StoreError>,
    ) -> Result<Self, StoreError> {
        let mut t = Tables {
            records: BTreeMap::new(),
            sequences: BTreeMap::new(),
            generation: 0,
            capacity,
        };
        let mut bad = None;
        let log = open(&mut |lsn, bytes| {
            if bad.is_none() {
                bad = t.apply(bytes).err().map(|reason| (lsn, reason));
            }
        })?;
        if log.max_record() < LOG_JOURNAL_RECORD {
            return Err(StoreError::RecordTooLong {
                len: LOG_JOURNAL_RECORD as u64,
                max: log.max_record() as u64,
            });
        }
        if let Some((Lsn(at), reason)) = bad {
            return Err(StoreError::Malformed {
                part: Part::LogRecord,
                offset: at,
                reason,
            });
        }
        Ok(LogJournal {
            log,
            t,
            poisoned: false,
            deferred: false,
        })
    }

    /// The same journal, with its changes made durable by [`Journal::sync`] instead of one
    /// sync each: for a [`Node`](super::Node), which syncs before a frame leaves and before a
    /// host call acts on a change, so that the changes of one turn share one group commit.
    /// The epochs a trust list records through it ([`EpochJournal`](crate::migration::EpochJournal))
    /// are still synced before they return: a trust list relies on that.
    pub fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Records its tables hold: hand-off records, fence entries and the generation (what
    /// [`rewrite_into`](Self::rewrite_into) writes), against which the log's length tells
    /// when compacting pays.
    pub fn live_records(&self) -> usize {
        self.t.records.len() + self.t.sequences.len() + usize::from(self.t.generation != 0)
    }

    /// Whether a failed write poisoned the journal: restart the node from the reopened log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The log, for the embedder (its ticket counters) or to reopen it after a failure.
    pub fn into_log(self) -> L {
        self.log
    }

    /// The log, read-only.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The log itself, for fault injection and its counters. A record appended here directly
    /// is not one of the journal's: the next open refuses the log.
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// Writes the current tables into `fresh` (an empty log) and syncs it: the compacted
    /// journal. The caller then opens a `LogJournal` on it and retires the old log.
    pub fn rewrite_into<M: Log>(&self, fresh: &mut M) -> Result<(), StoreError> {
        if self.t.generation != 0 {
            fresh.append(&generation_record(self.t.generation))?;
        }
        for (a, r) in &self.t.records {
            fresh.append(&put_record(*a, r))?;
        }
        for (a, (s, c)) in &self.t.sequences {
            fresh.append(&sequence_record(*a, *s, *c))?;
        }
        fresh.sync().map(|_| ())
    }

    /// Appends `bytes`, and syncs unless the journal defers (`sync` false); on success applies
    /// them to the tables.
    fn write(&mut self, bytes: &[u8], sync: bool) -> Result<(), MeshError> {
        if self.poisoned {
            return Err(MeshError::JournalIo);
        }
        let appended = self.log.append(bytes);
        if appended.is_err() || (sync && self.log.sync().is_err()) {
            self.poisoned = true;
            return Err(MeshError::JournalIo);
        }
        let applied = self.t.apply(bytes);
        debug_assert!(applied.is_ok(), "a record this journal wrote did not apply");
        Ok(())
    }

    pub(super) fn has_sequence_room(&self) -> bool {
        self.t.sequences.len() < self.t.capacity
    }

    pub(super) fn sequence_capacity(&self) -> usize {
        self.t.capacity
    }

    pub(super) fn created_count(&self, peer: NodeId) -> usize {
        self.t
            .sequences
            .values()
            .filter(|(_, c)| *c == Some(peer))
            .count()
    }

    /// `set_sequence`, keeping `created_by` with a new entry (an existing one keeps its own);
    /// durable when it returns, deferred or not (a trust list's write).
    pub(super) fn set_sequence_created(
        &mut self,
        agent: AgentId,
        seq: u64,
        created_by: Option<NodeId>,
    ) -> Result<(), MeshError> {
        self.sequence_record(agent, seq, created_by, true)
    }

    fn sequence_record(
        &mut self,
        agent: AgentId,
        seq: u64,
        created_by: Option<NodeId>,
        sync: bool,
    ) -> Result<(), MeshError> {
        let created_by = match self.t.sequences.get(&agent) {
            Some((_, c)) => *c,
            None if self.t.sequences.len() >= self.t.capacity => {
                return Err(MeshError::JournalFull)
            }
            None => created_by,
        };
        self.write(&sequence_record(agent, seq, created_by), sync)
    }
}

impl Tables {
    /// Takes one record into the tables; why not, if it is not one this journal writes.
    fn apply(&mut self, b: &[u8]) -> Result<(), &'static str> {
        let agent_at = |i: usize| -> Option<AgentId> {
            Some(AgentId::from_bytes(b.get(i..i + 16)?.try_into().ok()?))
        };
        match (b.first().copied(), b.len()) {
            (Some(kind::PUT), LOG_JOURNAL_RECORD) => {
                let mut r = [0u8; RECORD_LEN];
                r.copy_from_slice(&b[1..]);
                let (agent, record) = Record::decode(&r).ok_or("not a hand-off record")?;
                if !self.records.contains_key(&agent) && self.records.len() >= self.capacity {
                    return Err("more agents than the journal's capacity");
                }
                self.records.insert(agent, record);
            }
            (Some(kind::REMOVE), 17) => {
                self.records.remove(&agent_at(1).ok_or("cut off")?);
            }
            (Some(kind::SEQUENCE), 42) => {
                let agent = agent_at(1).ok_or("cut off")?;
                let seq = u64::from_le_bytes(b[17..25].try_into().map_err(|_| "cut off")?);
                let node = NodeId::from_bytes(b[26..42].try_into().map_err(|_| "cut off")?);
                let created_by = match b[25] {
                    0 if node == NodeId::from_bytes([0; 16]) => None,
                    1 => Some(node),
                    _ => return Err("creator tag is neither 0 (this node) nor 1 (a peer)"),
                };
                let full = self.sequences.len() >= self.capacity;
                match self.sequences.get_mut(&agent) {
                    Some(entry) => entry.0 = seq,
                    None if full => return Err("more agents than the journal's capacity"),
                    None => {
                        self.sequences.insert(agent, (seq, created_by));
                    }
                }
            }
            (Some(kind::GENERATION), 9) => {
                self.generation = u64::from_le_bytes(b[1..9].try_into().map_err(|_| "cut off")?);
            }
            _ => return Err("not a record of the mesh journal (unknown kind or length)"),
        }
        Ok(())
    }
}

fn put_record(agent: AgentId, record: &Record) -> [u8; LOG_JOURNAL_RECORD] {
    let mut b = [0u8; LOG_JOURNAL_RECORD];
    b[0] = kind::PUT;
    b[1..].copy_from_slice(&record.encode(agent));
    b
}

fn sequence_record(agent: AgentId, seq: u64, created_by: Option<NodeId>) -> [u8; 42] {
    let mut b = [0u8; 42];
    b[0] = kind::SEQUENCE;
    b[1..17].copy_from_slice(agent.as_bytes());
    b[17..25].copy_from_slice(&seq.to_le_bytes());
    if let Some(peer) = created_by {
        b[25] = 1;
        b[26..42].copy_from_slice(peer.as_bytes());
    }
    b
}

fn generation_record(generation: u64) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0] = kind::GENERATION;
    b[1..].copy_from_slice(&generation.to_le_bytes());
    b
}

impl<L: Log> Journal for LogJournal<L> {
    fn get(&self, agent: AgentId) -> Option<Record> {
        self.t.records.get(&agent).copied()
    }
    fn put(&mut self, agent: AgentId, record: Record) -> Result<(), MeshError> {
        if !self.t.records.contains_key(&agent) && self.t.records.len() >= self.t.capacity {
            return Err(MeshError::JournalFull);
        }
        self.write(&put_record(agent, &record), !self.deferred)
    }
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
        if !self.t.records.contains_key(&agent) {
            return Ok(());
        }
        let mut b = [0u8; 17];
        b[0] = kind::REMOVE;
        b[1..].copy_from_slice(agent.as_bytes());
        self.write(&b, !self.deferred)
    }
    fn for_each(&self, f: &mut dyn FnMut(AgentId, Record)) {
        for (a, r) in &self.t.records {
            f(*a, *r);
        }
    }
    fn sequence(&self, agent: AgentId) -> Option<u64> {
        self.t.sequences.get(&agent).map(|(s, _)| *s)
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        self.sequence_record(agent, seq, None, !self.deferred)
    }
    fn generation(&self) -> u64 {
        self.t.generation
    }
    fn set_generation(&mut self, generation: u64) -> Result<(), MeshError> {
        self.write(&generation_record(generation), !self.deferred)
    }
    fn sync(&mut self) -> Result<(), MeshError> {
        if self.poisoned {
            return Err(MeshError::JournalIo);
        }
        if self.log.sync().is_err() {
            self.poisoned = true;
            return Err(MeshError::JournalIo);
        }
        Ok(())
    }
    fn unsynced(&self) -> bool {
        self.log.appended() > self.log.durable()
    }
}
