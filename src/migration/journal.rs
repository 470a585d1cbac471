//! What a receiver must remember across restarts to refuse replays: the highest epoch of each
//! agent it has accepted or sent. Without it, a restarted node accepts any old signed snapshot.

use crate::{AgentId, Capacity, CellError, NodeId};

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
    ///
    /// `created_by` is the peer whose snapshot creates the agent's entry, or `None` when this
    /// node's own decision does (it sent the agent away). It is kept with a *new* entry, durably
    /// and in the same write, so that [`created_by`](Self::created_by) still counts it after a
    /// restart; for an existing entry it is ignored (an entry stays charged to whoever created
    /// it, for ever, since entries are never removed).
    fn record_epoch(
        &mut self,
        agent: AgentId,
        epoch: u64,
        created_by: Option<NodeId>,
    ) -> Result<(), CellError>;

    /// How many entries `peer`'s snapshots created: what a trust list charges to the peer
    /// against its quota. Never decreases.
    fn created_by(&self, peer: NodeId) -> usize;

    /// How many agents the journal can hold.
    fn capacity(&self) -> usize;
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

    fn record_epoch(
        &mut self,
        agent: AgentId,
        epoch: u64,
        created_by: Option<NodeId>,
    ) -> Result<(), CellError> {
        (**self).record_epoch(agent, epoch, created_by)
    }

    fn created_by(&self, peer: NodeId) -> usize {
        (**self).created_by(peer)
    }

    fn capacity(&self) -> usize {
        (**self).capacity()
    }
}

pub(crate) fn full(capacity: usize) -> CellError {
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
    entries: heapless::Vec<(AgentId, u64, Option<NodeId>), A>,
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
            .find(|(a, _, _)| *a == agent)
            .map(|(_, e, _)| *e)
    }

    fn check_room(&self, agent: AgentId) -> Result<(), CellError> {
        if self.entries.is_full() && self.last_epoch(agent).is_none() {
            return Err(full(A));
        }
        Ok(())
    }

    fn record_epoch(
        &mut self,
        agent: AgentId,
        epoch: u64,
        created_by: Option<NodeId>,
    ) -> Result<(), CellError> {
        match self.entries.iter_mut().find(|(a, _, _)| *a == agent) {
            Some(entry) => entry.1 = epoch,
            None => self
                .entries
                .push((agent, epoch, created_by))
                .map_err(|_| full(A))?,
        }
        Ok(())
    }

    fn created_by(&self, peer: NodeId) -> usize {
        self.entries
            .iter()
            .filter(|(_, _, c)| *c == Some(peer))
            .count()
    }

    fn capacity(&self) -> usize {
        A
    }
}

#[cfg(feature = "std")]
pub use file::FileEpochJournal;

/// The file format of [`FileEpochJournal`], in bytes. Specified in `docs/protocol.md` ("What
/// is persisted"); the numbers below are the whole of it.
#[cfg(feature = "std")]
mod format {
    /// The first four bytes.
    pub const MAGIC: [u8; 4] = *b"MZEJ";
    /// The format version after the magic (`u32` LE). Files of the first, unsealed format
    /// (bare 24-byte records, no magic) are refused with `BadMagic`.
    pub const VERSION: u32 = 1;
    /// Magic and version.
    pub const PREFIX_LEN: usize = 8;
    /// A commit slot: generation (`u64` LE), committed length (`u64` LE), node id (16), head
    /// (the MAC of the last committed record, zeros before the first), MAC (32).
    pub const SLOT_LEN: usize = 8 + 8 + 16 + 32 + 32;
    /// Where slot `i` starts.
    pub const fn slot_offset(i: usize) -> usize {
        PREFIX_LEN + i * SLOT_LEN
    }
    /// Prefix and two slots; the first record starts here.
    pub const HEADER_LEN: usize = PREFIX_LEN + 2 * SLOT_LEN;
    /// A record: agent id (16), epoch (`u64` LE), creator tag (1: 0 this node, 1 a peer),
    /// creator node id (16, zeros for tag 0), MAC (32).
    pub const RECORD_LEN: usize = 16 + 8 + 1 + 16 + 32;
    /// The record's fields before its MAC.
    pub const FIELDS_LEN: usize = RECORD_LEN - 32;
    /// MAC domains, one per structure.
    pub const SLOT_DOMAIN: &str = "mielin-cells/epoch-journal/slot/v1";
    /// See [`SLOT_DOMAIN`].
    pub const RECORD_DOMAIN: &str = "mielin-cells/epoch-journal/record/v1";
}

#[cfg(feature = "std")]
mod file {
    use super::format::*;
    use super::{full, EpochJournal};
    use crate::seal::{LocalKey, Part, StoreError};
    use crate::storage::slots::{check_header, newest, CommitSlot};
    use crate::{AgentId, CellError, NodeId};
    use alloc::collections::BTreeMap;
    use std::fs::{File, OpenOptions};
    use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
    use std::path::Path;

    /// A commit slot as read.
    #[derive(Debug, Clone, Copy)]
    struct Slot {
        generation: u64,
        committed: u64,
        node: NodeId,
        head: [u8; 32],
    }

    impl Slot {
        fn encode(&self, index: usize, key: &LocalKey) -> [u8; SLOT_LEN] {
            let mut b = [0u8; SLOT_LEN];
            b[..8].copy_from_slice(&self.generation.to_le_bytes());
            b[8..16].copy_from_slice(&self.committed.to_le_bytes());
            b[16..32].copy_from_slice(self.node.as_bytes());
            b[32..64].copy_from_slice(&self.head);
            let mac = key.mac(SLOT_DOMAIN, &slot_mac_input(index, &b));
            b[64..].copy_from_slice(&mac);
            b
        }

        fn decode(b: &[u8; SLOT_LEN]) -> Slot {
            let u64_at = |i: usize| {
                let mut x = [0u8; 8];
                x.copy_from_slice(&b[i..i + 8]);
                u64::from_le_bytes(x)
            };
            let mut node = [0u8; 16];
            node.copy_from_slice(&b[16..32]);
            let mut head = [0u8; 32];
            head.copy_from_slice(&b[32..64]);
            Slot {
                generation: u64_at(0),
                committed: u64_at(8),
                node: NodeId::from_bytes(node),
                head,
            }
        }
    }

    impl CommitSlot for Slot {
        fn generation(&self) -> u64 {
            self.generation
        }
        fn commits(&self) -> (u64, u64) {
            (self.committed, 0)
        }
    }

    /// What a slot's MAC covers: the format's magic and version, the slot's index (a slot
    /// copied into the other place does not verify) and its fields.
    fn slot_mac_input(index: usize, b: &[u8; SLOT_LEN]) -> [&[u8]; 3] {
        const PREFIX: [u8; PREFIX_LEN] = prefix();
        const INDEX: [[u8; 1]; 2] = [[0], [1]];
        [&PREFIX, &INDEX[index], &b[..64]]
    }

    const fn prefix() -> [u8; PREFIX_LEN] {
        let v = VERSION.to_le_bytes();
        [
            MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], v[2], v[3],
        ]
    }

    /// One record's fields, sealed at `offset` after the record whose MAC is `prev`.
    fn seal_record(
        key: &LocalKey,
        offset: u64,
        prev: &[u8; 32],
        fields: &[u8; FIELDS_LEN],
    ) -> [u8; 32] {
        key.mac(RECORD_DOMAIN, &[&offset.to_le_bytes(), prev, fields])
    }

    fn encode_fields(agent: AgentId, epoch: u64, created_by: Option<NodeId>) -> [u8; FIELDS_LEN] {
        let mut f = [0u8; FIELDS_LEN];
        f[..16].copy_from_slice(agent.as_bytes());
        f[16..24].copy_from_slice(&epoch.to_le_bytes());
        if let Some(peer) = created_by {
            f[24] = 1;
            f[25..41].copy_from_slice(peer.as_bytes());
        }
        f
    }

    /// The fields of a record whose MAC verified; `None` if they break the format's rules.
    fn decode_fields(f: &[u8; FIELDS_LEN]) -> Option<(AgentId, u64, Option<NodeId>)> {
        let mut agent = [0u8; 16];
        agent.copy_from_slice(&f[..16]);
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&f[16..24]);
        let mut node = [0u8; 16];
        node.copy_from_slice(&f[25..41]);
        let created_by = match f[24] {
            0 if node == [0; 16] => None,
            1 => Some(NodeId::from_bytes(node)),
            _ => return None,
        };
        Some((
            AgentId::from_bytes(agent),
            u64::from_le_bytes(epoch),
            created_by,
        ))
    }

    /// A file-backed [`EpochJournal`] (feature `std`), sealed to its node: an append-only log
    /// of records under a header of two commit slots, every structure MAC'd with the node's
    /// [`LocalKey`].
    ///
    /// **Format** (`docs/protocol.md`, "What is persisted"): the magic `MZEJ` and version 1;
    /// two slots of 96 bytes (generation, committed length, node id, the MAC of the last
    /// committed record, the slot's MAC); then 73-byte records (agent id, epoch, which peer's
    /// snapshot created the entry, and a MAC over the record's offset, the previous record's
    /// MAC and its fields).
    ///
    /// **Commit** (`record_epoch`): the record is written at the committed length and synced;
    /// then the *other* slot gets the next generation and the new committed length, and is
    /// synced. `Ok` only after both. A crash leaves either slot valid, so a torn slot write is
    /// never the only copy.
    ///
    /// **Open**: the valid slot with the highest generation wins. Refused, each with its own
    /// [`StoreError`] naming the structure and its offset: a missing or empty file, a short
    /// header, a bad magic or version, a file of another node (its node id, or any MAC under
    /// another key), a record inside the committed length whose MAC fails, a file shorter than
    /// its committed length (its tail cut at a record boundary: a rollback of the last
    /// records). Bytes past the committed length — a record torn by a crash — are cut off and
    /// the cut synced before `open` returns, so the next record goes where the slot says.
    /// A slot that does not verify is accepted only as a crash explains it: exactly one whole
    /// record, chained to the other slot, follows the committed length and ends the file (it
    /// was synced before the slot write began); that record counts and the slot is rewritten.
    /// Any other broken slot is refused (`BadMac`), never read as an older state.
    ///
    /// Not detected here: a whole older copy of the file (a rollback of everything), which
    /// is indistinguishable from the file as it was; see `docs/security.md`.
    ///
    /// The log grows by 73 bytes per recorded epoch and is read whole on open; a later storage
    /// layer compacts it.
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    #[derive(Debug)]
    pub struct FileEpochJournal {
        file: File,
        key: LocalKey,
        node: NodeId,
        tables: Tables,
        max_agents: usize,
        /// The active slot (the one with the highest generation) and its contents.
        active: usize,
        slot: Slot,
        poisoned: bool,
    }

    impl FileEpochJournal {
        /// Creates the journal of a new node at `path`, for node `node` sealed with `key`
        /// (the node's [`LocalKey`]), holding at most `max_agents` agents. Refused with
        /// [`StoreError::Exists`] if a file is there: creating never erases a journal.
        ///
        /// The header is written to `PATH.tmp`, synced, and renamed into place (and the
        /// directory synced), so a crash leaves no file or a whole empty journal.
        pub fn create(
            path: &Path,
            node: NodeId,
            key: &LocalKey,
            max_agents: usize,
        ) -> Result<Self, StoreError> {
            if path.symlink_metadata().is_ok() {
                return Err(StoreError::Exists);
            }
            let mut header = [0u8; HEADER_LEN];
            header[..PREFIX_LEN].copy_from_slice(&prefix());
            let mut slot = Slot {
                generation: 0,
                committed: HEADER_LEN as u64,
                node,
                head: [0; 32],
            };
            for i in 0..2 {
                slot.generation = i as u64;
                header[slot_offset(i)..slot_offset(i) + SLOT_LEN]
                    .copy_from_slice(&slot.encode(i, key));
            }
            crate::storage::write_durable(path, &header)?;
            Self::open(path, node, key, max_agents)
        }

        /// Opens the journal of node `node` at `path`, checking every byte of it against
        /// `key` (see the type's documentation for what is refused), holding at most
        /// `max_agents` agents. A missing file is [`StoreError::Missing`]: a node that lost
        /// its journal must not start as if it had none (it would accept replays).
        pub fn open(
            path: &Path,
            node: NodeId,
            key: &LocalKey,
            max_agents: usize,
        ) -> Result<Self, StoreError> {
            let mut file = match OpenOptions::new().read(true).write(true).open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::Missing),
                Err(e) => return Err(e.into()),
            };
            let len = file.metadata()?.len();
            let (active, slot, other_valid) = read_header(&mut file, len, node, key)?;
            if len < slot.committed {
                return Err(StoreError::Truncated {
                    committed: slot.committed,
                    found: len,
                });
            }
            let mut tables = Tables::default();
            let mut reader = std::io::BufReader::with_capacity(64 * RECORD_LEN, &file);
            reader.seek(SeekFrom::Start(HEADER_LEN as u64))?;
            let mut head = [0u8; 32];
            let mut offset = HEADER_LEN as u64;
            while offset < slot.committed {
                let mut record = [0u8; RECORD_LEN];
                reader.read_exact(&mut record)?;
                head = check_record(key, offset, &head, &record, &mut tables)?;
                offset += RECORD_LEN as u64;
            }
            if head != slot.head {
                // Every record verified, yet the last is not the one the slot committed: the
                // file was spliced from two copies of itself.
                return Err(StoreError::Malformed {
                    part: Part::Record,
                    offset: offset.saturating_sub(RECORD_LEN as u64),
                    reason:
                        "not the record its commit slot vouches for (spliced from another copy)",
                });
            }
            // A slot that does not verify is explained by one thing only: a crash while it was
            // being written, to commit the record that follows (synced before the slot write
            // began), with nothing after that record. Then the record counts: either the crash
            // hit before the slot was whole, or the slot was damaged after committing it. Any
            // other file with a broken slot (damage, or damage and a cut) is refused rather
            // than read as an older state.
            let mut roll_forward = None;
            if !other_valid {
                let broken = StoreError::BadMac {
                    part: Part::Slot,
                    offset: slot_offset(1 - active) as u64,
                };
                if len != offset + RECORD_LEN as u64 {
                    return Err(broken);
                }
                let mut record = [0u8; RECORD_LEN];
                reader.read_exact(&mut record)?;
                let mac =
                    check_record(key, offset, &head, &record, &mut tables).map_err(|_| broken)?;
                offset += RECORD_LEN as u64;
                roll_forward = Some(mac);
            }
            drop(reader);
            let mut journal = FileEpochJournal {
                file,
                key: key.clone(),
                node,
                tables,
                max_agents,
                active,
                slot,
                poisoned: false,
            };
            if let Some(mac) = roll_forward {
                journal.write_slot(offset, mac)?;
            }
            if len > offset {
                // A torn tail: cut it off, durably, before anything is appended after it.
                journal.file.set_len(offset)?;
                journal.file.sync_data()?;
            }
            Ok(journal)
        }

        /// Writes the other slot with the next generation, `committed` and `head`, synced; it
        /// becomes the active one.
        fn write_slot(&mut self, committed: u64, head: [u8; 32]) -> Result<(), StoreError> {
            let next = Slot {
                generation: self.slot.generation.wrapping_add(1),
                committed,
                node: self.node,
                head,
            };
            let index = 1 - self.active;
            self.file.seek(SeekFrom::Start(slot_offset(index) as u64))?;
            self.file.write_all(&next.encode(index, &self.key))?;
            self.file.sync_data()?;
            self.active = index;
            self.slot = next;
            Ok(())
        }

        fn commit(
            &mut self,
            agent: AgentId,
            epoch: u64,
            created_by: Option<NodeId>,
        ) -> Result<(), StoreError> {
            let offset = self.slot.committed;
            let fields = encode_fields(agent, epoch, created_by);
            let mac = seal_record(&self.key, offset, &self.slot.head, &fields);
            let mut record = [0u8; RECORD_LEN];
            record[..FIELDS_LEN].copy_from_slice(&fields);
            record[FIELDS_LEN..].copy_from_slice(&mac);
            self.file.seek(SeekFrom::Start(offset))?;
            self.file.write_all(&record)?;
            self.file.sync_data()?;
            self.write_slot(offset + RECORD_LEN as u64, mac)
        }

        /// The node this journal belongs to.
        pub fn node(&self) -> NodeId {
            self.node
        }

        /// How many agents it holds.
        pub fn len(&self) -> usize {
            self.tables.epochs.len()
        }

        /// Whether it holds none.
        pub fn is_empty(&self) -> bool {
            self.tables.epochs.is_empty()
        }

        /// Every entry: agent, highest epoch, and the peer whose snapshot created it (`None`:
        /// this node), in agent order.
        pub fn entries(&self) -> impl Iterator<Item = (AgentId, u64, Option<NodeId>)> + '_ {
            self.tables.epochs.iter().map(|(a, (e, c))| (*a, *e, *c))
        }
    }

    /// The journal's contents: highest epoch and creator per agent, entries per creator.
    #[derive(Debug, Default)]
    struct Tables {
        epochs: BTreeMap<AgentId, (u64, Option<NodeId>)>,
        created: BTreeMap<NodeId, usize>,
    }

    impl Tables {
        /// Takes a record in: the highest epoch wins, the first creator stays.
        fn take(&mut self, agent: AgentId, epoch: u64, created_by: Option<NodeId>) {
            match self.epochs.get_mut(&agent) {
                Some(entry) => entry.0 = entry.0.max(epoch),
                None => {
                    self.epochs.insert(agent, (epoch, created_by));
                    if let Some(peer) = created_by {
                        *self.created.entry(peer).or_insert(0) += 1;
                    }
                }
            }
        }
    }

    /// Checks the record at `offset` after the one whose MAC is `prev`, and takes it into
    /// `tables`; its MAC.
    fn check_record(
        key: &LocalKey,
        offset: u64,
        prev: &[u8; 32],
        record: &[u8; RECORD_LEN],
        tables: &mut Tables,
    ) -> Result<[u8; 32], StoreError> {
        let mut fields = [0u8; FIELDS_LEN];
        fields.copy_from_slice(&record[..FIELDS_LEN]);
        let mac = &record[FIELDS_LEN..];
        if !key.verify(RECORD_DOMAIN, &[&offset.to_le_bytes(), prev, &fields], mac) {
            return Err(StoreError::BadMac {
                part: Part::Record,
                offset,
            });
        }
        let Some((agent, epoch, created_by)) = decode_fields(&fields) else {
            return Err(StoreError::Malformed {
                part: Part::Record,
                offset,
                reason: "creator tag is neither 0 (this node) nor 1 (a peer)",
            });
        };
        tables.take(agent, epoch, created_by);
        let mut out = [0u8; 32];
        out.copy_from_slice(mac);
        Ok(out)
    }

    fn slot_valid(index: usize, b: &[u8; SLOT_LEN], node: NodeId, key: &LocalKey) -> bool {
        key.verify(SLOT_DOMAIN, &slot_mac_input(index, b), &b[64..]) && Slot::decode(b).node == node
    }

    /// Reads the prefix and both slots; the active slot (the valid one with the highest
    /// generation), its committed length checked against the format.
    fn read_header(
        file: &mut File,
        len: u64,
        node: NodeId,
        key: &LocalKey,
    ) -> Result<(usize, Slot, bool), StoreError> {
        let header: [u8; HEADER_LEN] = check_header(file, len, MAGIC, VERSION)?;
        let mut slots = [None, None];
        let mut other_node = None;
        for (i, slot) in slots.iter_mut().enumerate() {
            let mut b = [0u8; SLOT_LEN];
            b.copy_from_slice(&header[slot_offset(i)..slot_offset(i) + SLOT_LEN]);
            if slot_valid(i, &b, node, key) {
                *slot = Some(Slot::decode(&b));
            } else if Slot::decode(&b).node != node {
                other_node = Some(Slot::decode(&b).node);
            }
        }
        let (active, slot) = newest(slots, node, other_node, slot_offset)?;
        let records = slot.committed.checked_sub(HEADER_LEN as u64);
        if records.is_none_or(|r| r % RECORD_LEN as u64 != 0) {
            return Err(StoreError::Malformed {
                part: Part::Slot,
                offset: slot_offset(active) as u64,
                reason: "committed length is not the header plus whole records",
            });
        }
        Ok((active, slot, slots[1 - active].is_some()))
    }

    impl EpochJournal for FileEpochJournal {
        fn last_epoch(&self, agent: AgentId) -> Option<u64> {
            self.tables.epochs.get(&agent).map(|(e, _)| *e)
        }

        fn check_room(&self, agent: AgentId) -> Result<(), CellError> {
            if self.tables.epochs.len() >= self.max_agents
                && !self.tables.epochs.contains_key(&agent)
            {
                return Err(full(self.max_agents));
            }
            Ok(())
        }

        fn record_epoch(
            &mut self,
            agent: AgentId,
            epoch: u64,
            created_by: Option<NodeId>,
        ) -> Result<(), CellError> {
            self.check_room(agent)?;
            if self.poisoned {
                return Err(CellError::JournalFailed);
            }
            if self.commit(agent, epoch, created_by).is_err() {
                // After a failed write or sync the file's state is unknown (a partial record,
                // a torn slot): refuse further commits; a reopen settles it.
                self.poisoned = true;
                return Err(CellError::JournalFailed);
            }
            self.tables.take(agent, epoch, created_by);
            Ok(())
        }

        fn created_by(&self, peer: NodeId) -> usize {
            self.tables.created.get(&peer).copied().unwrap_or(0)
        }

        fn capacity(&self) -> usize {
            self.max_agents
        }
    }
}
