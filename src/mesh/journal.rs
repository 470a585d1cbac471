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
/// - a sequence number per agent: the agent's **fence**, the highest epoch this node has
///   prepared from a verified snapshot, run or decided itself. [`Node`](super::Node) raises it
///   and refuses any hand-off below it (docs/protocol.md, "The fence"); a trust list given the
///   same journal records the epochs it accepts in it, so a restart does not reopen replays.
///   Entries are never removed: when the table is full, new agents are refused.
///
/// **Contract**: a change (`put`, `remove`, `set_sequence`, `set_generation`) that returned
/// `Ok` survives a crash once [`sync`](Self::sync) returned `Ok` after it; reads see it at
/// once. A journal may make each change durable before it returns (`MemJournal`,
/// `FileJournal`, `FlashJournal`, and `LogJournal` by default: their `sync` has nothing to do),
/// or defer it to the next `sync`, one group commit for every change since the last
/// (`LogJournal::deferred`). After a crash a deferring journal holds every synced change and a
/// prefix of the later ones, in order. A write that fails leaves the old value in place, or
/// poisons the journal (every later write refused until it is reopened). [`Node`](super::Node)
/// syncs before any frame leaves and before any host call that acts on a change (running,
/// releasing or discarding a copy), so nothing a peer hears of and nothing it does to an
/// agent's copies rests on an undurable record (docs/protocol.md, "Durability tickets"). The
/// protocol's guarantees hold only for journals that keep this promise and are never lost.
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
    /// The highest sequence number (epoch) recorded for the agent: its fence.
    fn sequence(&self, agent: AgentId) -> Option<u64>;
    /// Durably records a sequence number for the agent (replacing the old one).
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError>;
    /// How many times a node restarted from this journal: [`Node::restart`](super::Node::restart)
    /// raises it before it runs anything, and peers remember the highest they were asked
    /// with, so a journal restored from a copy older than the last restart shows
    /// (docs/protocol.md, "Rollback"). 0 for a new journal.
    fn generation(&self) -> u64;
    /// Durably records the generation.
    fn set_generation(&mut self, generation: u64) -> Result<(), MeshError>;
    /// Makes every change so far durable: one group commit. A journal whose changes are
    /// durable when they return has nothing to do. A failure leaves the changes in doubt: the
    /// journal refuses every later write (it is poisoned) and the node must be restarted from
    /// what reached the medium. No default: a wrapper that did not pass it on would silently
    /// turn a deferring journal's group commits into nothing.
    fn sync(&mut self) -> Result<(), MeshError>;
    /// Whether a change awaits [`sync`](Self::sync).
    fn unsynced(&self) -> bool;
}

/// A journal in memory with room for `N` records and `N` sequence numbers: what a simulator
/// keeps across a simulated crash, or a device with battery-backed RAM. No allocation.
#[derive(Debug, Clone, Default)]
pub struct MemJournal<const N: usize> {
    records: heapless::LinearMap<AgentId, Record, N>,
    /// Each agent's sequence number and the peer whose snapshot created the entry.
    sequences: heapless::LinearMap<AgentId, (u64, Option<NodeId>), N>,
    generation: u64,
}

impl<const N: usize> MemJournal<N> {
    /// An empty journal.
    pub const fn new() -> Self {
        MemJournal {
            records: heapless::LinearMap::new(),
            sequences: heapless::LinearMap::new(),
            generation: 0,
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
        self.sequences.get(&agent).map(|(s, _)| *s)
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        self.set_sequence_created(agent, seq, None)
    }
    fn generation(&self) -> u64 {
        self.generation
    }
    fn set_generation(&mut self, generation: u64) -> Result<(), MeshError> {
        self.generation = generation;
        Ok(())
    }
    /// Nothing to do: its tables are what a crash keeps.
    fn sync(&mut self) -> Result<(), MeshError> {
        Ok(())
    }
    fn unsynced(&self) -> bool {
        false
    }
}

impl<const N: usize> MemJournal<N> {
    /// Puts back a fence entry exactly as it was recorded (a journal read from storage).
    #[cfg(feature = "flash")]
    pub(crate) fn restore_sequence(
        &mut self,
        agent: AgentId,
        seq: u64,
        created_by: Option<NodeId>,
    ) -> Result<(), MeshError> {
        self.sequences
            .insert(agent, (seq, created_by))
            .map(|_| ())
            .map_err(|_| MeshError::JournalFull)
    }

    /// The peer whose snapshot created the agent's fence entry, if one did.
    #[cfg(feature = "flash")]
    pub(crate) fn created_by(&self, agent: AgentId) -> Option<NodeId> {
        self.sequences.get(&agent).and_then(|(_, c)| *c)
    }

    /// `set_sequence`, keeping `created_by` with a new entry (an existing one keeps its own).
    fn set_sequence_created(
        &mut self,
        agent: AgentId,
        seq: u64,
        created_by: Option<NodeId>,
    ) -> Result<(), MeshError> {
        let created_by = self.sequences.get(&agent).map_or(created_by, |(_, c)| *c);
        self.sequences
            .insert(agent, (seq, created_by))
            .map(|_| ())
            .map_err(|_| MeshError::JournalFull)
    }

    fn created_count(&self, peer: NodeId) -> usize {
        self.sequences
            .values()
            .filter(|(_, c)| *c == Some(peer))
            .count()
    }
}

#[cfg(feature = "std")]
mod file {
    use super::*;
    use crate::seal::{LocalKey, Part, StoreError};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::vec::Vec;

    /// A journal in one file (feature `std`), sealed to its node.
    ///
    /// The file is rewritten whole on every change — a temporary file, `fsync`, then an atomic
    /// rename — so a crash leaves the old or the new contents, never a mix. Meant for tens to
    /// thousands of agents; each write costs the whole file.
    ///
    /// **Format** (`docs/protocol.md`, "What is persisted"): the magic `MZJL`, the version
    /// (`u32` LE, 3), the node id (16), the generation (`u64` LE), a `u32` LE count and
    /// [`RECORD_LEN`]-byte records (see [`Record::encode`]), a `u32` LE count and 41-byte sequence entries (agent id, `u64` LE,
    /// creator tag 0 this node / 1 a peer, creator node id), then an HMAC-SHA256 over every
    /// byte before it under the node's [`LocalKey`].
    ///
    /// **Open** refuses, each with its own [`StoreError`]: a missing or empty file (unless
    /// creating), a file too short for its header, another magic (the unsealed format of
    /// version 1 is `UnsupportedVersion`), another version, another node's id, a MAC that
    /// does not verify (an edit, corruption, or another node's key), and after the MAC, any
    /// structure that breaks the format. A file longer than a journal of its capacity can be
    /// is refused before it is read.
    #[derive(Debug)]
    pub struct FileJournal {
        path: PathBuf,
        node: NodeId,
        key: LocalKey,
        records: BTreeMap<AgentId, Record>,
        sequences: BTreeMap<AgentId, (u64, Option<NodeId>)>,
        generation: u64,
        capacity: usize,
    }

    const MAGIC: [u8; 4] = *b"MZJL";
    /// The unsealed journals before version 2 started with this (and had no version field).
    const MAGIC_V1: [u8; 4] = *b"MZJ1";
    /// Version 3 added the generation. Version 2 files (the same without it) are read as
    /// generation 0 and written back as version 3.
    const VERSION: u32 = 3;
    const DOMAIN: &str = "mielin-cells/mesh-journal/v3";
    const DOMAIN_V2: &str = "mielin-cells/mesh-journal/v2";
    /// Magic, version, node id, generation.
    const HEADER_LEN: usize = 4 + 4 + 16 + 8;
    /// Version 2's header: no generation.
    const HEADER_LEN_V2: usize = 4 + 4 + 16;
    /// A sequence entry: agent id, sequence number, creator tag and node id.
    const SEQUENCE_LEN: usize = 16 + 8 + 1 + 16;
    /// The smallest file: header, two zero counts, the MAC.
    const MIN_LEN: usize = HEADER_LEN + 4 + 4 + crate::MAC_LEN;

    impl FileJournal {
        pub(super) fn has_sequence_room(&self) -> bool {
            self.sequences.len() < self.capacity
        }

        pub(super) fn sequence_capacity(&self) -> usize {
            self.capacity
        }

        pub(super) fn created_count(&self, peer: NodeId) -> usize {
            self.sequences
                .values()
                .filter(|(_, c)| *c == Some(peer))
                .count()
        }

        /// The longest file a journal of `capacity` records and sequence numbers writes.
        fn max_len(capacity: usize) -> u64 {
            let per = (RECORD_LEN + SEQUENCE_LEN) as u64;
            (MIN_LEN as u64).saturating_add(per.saturating_mul(capacity as u64))
        }
    }

    impl FileJournal {
        /// Creates the journal of a new node at `path`, for node `node` sealed with `key` (the
        /// node's [`LocalKey`]), holding at most `capacity` records and as many sequence
        /// numbers. Refused with [`StoreError::Exists`] if a file is there.
        pub fn create(
            path: impl AsRef<Path>,
            node: NodeId,
            key: &LocalKey,
            capacity: usize,
        ) -> Result<FileJournal, StoreError> {
            let path = path.as_ref();
            if path.symlink_metadata().is_ok() {
                return Err(StoreError::Exists);
            }
            let j = FileJournal {
                path: path.to_path_buf(),
                node,
                key: key.clone(),
                records: BTreeMap::new(),
                sequences: BTreeMap::new(),
                generation: 0,
                capacity,
            };
            j.flush()?;
            Ok(j)
        }

        /// Opens the journal of node `node` at `path`, checked against `key`, holding at most
        /// `capacity` records. A missing file is [`StoreError::Missing`]: only
        /// [`create`](Self::create) starts an empty journal.
        pub fn open(
            path: impl AsRef<Path>,
            node: NodeId,
            key: &LocalKey,
            capacity: usize,
        ) -> Result<FileJournal, StoreError> {
            use std::io::Read;
            let path = path.as_ref();
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Missing)
                }
                Err(e) => return Err(e.into()),
            };
            let len = file.metadata()?.len();
            let limit = Self::max_len(capacity);
            if len > limit {
                return Err(StoreError::TooLong { limit, found: len });
            }
            let mut bytes = Vec::new();
            file.take(limit).read_to_end(&mut bytes)?;
            let mut j = FileJournal {
                path: path.to_path_buf(),
                node,
                key: key.clone(),
                records: BTreeMap::new(),
                sequences: BTreeMap::new(),
                generation: 0,
                capacity,
            };
            j.decode(&bytes)?;
            Ok(j)
        }

        /// Checks and reads a whole file: header, node, MAC, then the structures.
        fn decode(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
            let found = bytes.len() as u64;
            if bytes.is_empty() {
                return Err(StoreError::Empty);
            }
            if let Some(m) = bytes.get(..4) {
                if m == MAGIC_V1 {
                    return Err(StoreError::UnsupportedVersion {
                        found: 1,
                        supported: VERSION,
                    });
                }
                if m != MAGIC {
                    return Err(StoreError::BadMagic {
                        expected: MAGIC,
                        found: [m[0], m[1], m[2], m[3]],
                    });
                }
            }
            let min_v2 = MIN_LEN - (HEADER_LEN - HEADER_LEN_V2);
            if bytes.len() < min_v2 {
                return Err(StoreError::TooShort {
                    part: Part::Header,
                    offset: 0,
                    needed: MIN_LEN as u64,
                    found,
                });
            }
            let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let (header_len, domain) = match version {
                VERSION => (HEADER_LEN, DOMAIN),
                2 => (HEADER_LEN_V2, DOMAIN_V2),
                _ => {
                    return Err(StoreError::UnsupportedVersion {
                        found: version,
                        supported: VERSION,
                    })
                }
            };
            if bytes.len() < header_len + 8 + crate::MAC_LEN {
                return Err(StoreError::TooShort {
                    part: Part::Header,
                    offset: 0,
                    needed: (header_len + 8 + crate::MAC_LEN) as u64,
                    found,
                });
            }
            let mut node = [0u8; 16];
            node.copy_from_slice(&bytes[8..24]);
            let node = NodeId::from_bytes(node);
            if node != self.node {
                return Err(StoreError::WrongNode {
                    expected: self.node,
                    found: node,
                });
            }
            let (body, mac) = bytes.split_at(bytes.len() - crate::MAC_LEN);
            if !self.key.verify(domain, &[body], mac) {
                return Err(StoreError::BadMac {
                    part: Part::FileMac,
                    offset: body.len() as u64,
                });
            }
            // Authenticated from here on: what follows only checks the structure this crate
            // wrote, without trusting any count beyond the bytes there are.
            if version == VERSION {
                let mut g = [0u8; 8];
                g.copy_from_slice(&body[HEADER_LEN_V2..HEADER_LEN]);
                self.generation = u64::from_le_bytes(g);
            }
            let mut at = header_len;
            let malformed = |part, offset: usize, reason| StoreError::Malformed {
                part,
                offset: offset as u64,
                reason,
            };
            let count = |at: usize, item: usize, part| {
                let n = body
                    .get(at..at + 4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
                    .ok_or(malformed(part, at, "count cut off"))?;
                n.checked_mul(item)
                    .filter(|&l| l <= body.len() - at - 4)
                    .map(|_| n)
                    .ok_or(malformed(
                        part,
                        at,
                        "count larger than the bytes that follow",
                    ))
            };
            let n = count(at, RECORD_LEN, Part::Record)?;
            at += 4;
            for _ in 0..n {
                let mut b = [0u8; RECORD_LEN];
                b.copy_from_slice(&body[at..at + RECORD_LEN]);
                let (a, r) = Record::decode(&b).ok_or(malformed(
                    Part::Record,
                    at,
                    "not a hand-off record",
                ))?;
                if self.records.insert(a, r).is_some() {
                    return Err(malformed(Part::Record, at, "a second record of one agent"));
                }
                at += RECORD_LEN;
            }
            let n = count(at, SEQUENCE_LEN, Part::Sequence)?;
            at += 4;
            for _ in 0..n {
                let c = &body[at..at + SEQUENCE_LEN];
                let mut id = [0u8; 16];
                id.copy_from_slice(&c[..16]);
                let mut s = [0u8; 8];
                s.copy_from_slice(&c[16..24]);
                let mut peer = [0u8; 16];
                peer.copy_from_slice(&c[25..41]);
                let created_by = match c[24] {
                    0 if peer == [0; 16] => None,
                    1 => Some(NodeId::from_bytes(peer)),
                    _ => return Err(malformed(Part::Sequence, at, "creator tag is not 0 or 1")),
                };
                let entry = (u64::from_le_bytes(s), created_by);
                if self
                    .sequences
                    .insert(AgentId::from_bytes(id), entry)
                    .is_some()
                {
                    return Err(malformed(Part::Sequence, at, "a second entry of one agent"));
                }
                at += SEQUENCE_LEN;
            }
            if at != body.len() {
                return Err(malformed(
                    Part::FileMac,
                    at,
                    "bytes between the last entry and the MAC",
                ));
            }
            Ok(())
        }

        /// The file's bytes.
        fn encode(&self) -> Vec<u8> {
            let mut out = Vec::with_capacity(
                MIN_LEN + self.records.len() * RECORD_LEN + self.sequences.len() * SEQUENCE_LEN,
            );
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&VERSION.to_le_bytes());
            out.extend_from_slice(self.node.as_bytes());
            out.extend_from_slice(&self.generation.to_le_bytes());
            out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
            for (a, r) in &self.records {
                out.extend_from_slice(&r.encode(*a));
            }
            out.extend_from_slice(&(self.sequences.len() as u32).to_le_bytes());
            for (a, (s, c)) in &self.sequences {
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(&s.to_le_bytes());
                out.push(u8::from(c.is_some()));
                out.extend_from_slice(c.map_or([0u8; 16], |n| *n.as_bytes()).as_slice());
            }
            let mac = self.key.mac(DOMAIN, &[&out]);
            out.extend_from_slice(&mac);
            out
        }

        fn flush(&self) -> std::io::Result<()> {
            use std::io::Write;
            let out = self.encode();
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

        /// `set_sequence`, keeping `created_by` with a new entry (an existing one keeps its
        /// own).
        pub(super) fn set_sequence_created(
            &mut self,
            agent: AgentId,
            seq: u64,
            created_by: Option<NodeId>,
        ) -> Result<(), MeshError> {
            if !self.sequences.contains_key(&agent) && self.sequences.len() >= self.capacity {
                return Err(MeshError::JournalFull);
            }
            let created_by = self.sequences.get(&agent).map_or(created_by, |(_, c)| *c);
            self.commit(
                |j| j.sequences.insert(agent, (seq, created_by)),
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

        /// The node this journal belongs to.
        pub fn node(&self) -> NodeId {
            self.node
        }

        /// Every fence entry: agent, sequence number, and the peer whose snapshot created it
        /// (`None`: this node), in agent order (to copy the journal into another format).
        pub fn sequences(&self) -> impl Iterator<Item = (AgentId, u64, Option<NodeId>)> + '_ {
            self.sequences.iter().map(|(a, (s, c))| (*a, *s, *c))
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
            self.sequences.get(&agent).map(|(s, _)| *s)
        }
        fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
            self.set_sequence_created(agent, seq, None)
        }
        fn generation(&self) -> u64 {
            self.generation
        }
        fn set_generation(&mut self, generation: u64) -> Result<(), MeshError> {
            self.commit(
                |j| core::mem::replace(&mut j.generation, generation),
                |j, old| j.generation = old,
            )
        }
        /// Nothing to do: every change rewrote and synced the file.
        fn sync(&mut self) -> Result<(), MeshError> {
            Ok(())
        }
        fn unsynced(&self) -> bool {
            false
        }
    }
}

#[cfg(feature = "std")]
pub use file::FileJournal;

#[cfg(feature = "std")]
pub use shared::SharedJournal;

#[cfg(feature = "std")]
mod shared {
    use super::*;
    use std::sync::{Arc, Mutex, MutexGuard};

    /// One journal, two holders (feature `std`): the [`Node`](super::super::Node), which keeps
    /// hand-off records and each agent's fence in it, and a
    /// [`TrustList`](crate::migration::TrustList), which records in the same sequence table the
    /// epochs of the snapshots it accepts and sends. One table, so the fence and the replay
    /// check can never disagree (docs/protocol.md, "The fence"). Clones share the journal.
    #[derive(Debug)]
    pub struct SharedJournal<J>(Arc<Mutex<J>>);

    impl<J> Clone for SharedJournal<J> {
        fn clone(&self) -> Self {
            SharedJournal(self.0.clone())
        }
    }

    impl<J> SharedJournal<J> {
        /// Shares `journal`.
        pub fn new(journal: J) -> Self {
            SharedJournal(Arc::new(Mutex::new(journal)))
        }

        /// The journal, locked. A holder that panicked while writing left it as its last
        /// completed write did (each write is whole or not at all), so a poisoned lock is
        /// taken over.
        pub fn lock(&self) -> MutexGuard<'_, J> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    impl<J: Journal> Journal for SharedJournal<J> {
        fn get(&self, agent: AgentId) -> Option<Record> {
            self.lock().get(agent)
        }
        fn put(&mut self, agent: AgentId, record: Record) -> Result<(), MeshError> {
            self.lock().put(agent, record)
        }
        fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
            self.lock().remove(agent)
        }
        fn for_each(&self, f: &mut dyn FnMut(AgentId, Record)) {
            self.lock().for_each(f)
        }
        fn sequence(&self, agent: AgentId) -> Option<u64> {
            self.lock().sequence(agent)
        }
        fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
            self.lock().set_sequence(agent, seq)
        }
        fn generation(&self) -> u64 {
            self.lock().generation()
        }
        fn set_generation(&mut self, generation: u64) -> Result<(), MeshError> {
            self.lock().set_generation(generation)
        }
        fn sync(&mut self) -> Result<(), MeshError> {
            self.lock().sync()
        }
        fn unsynced(&self) -> bool {
            self.lock().unsynced()
        }
    }

    impl<J: crate::migration::EpochJournal> crate::migration::EpochJournal for SharedJournal<J> {
        fn last_epoch(&self, agent: AgentId) -> Option<u64> {
            self.lock().last_epoch(agent)
        }
        fn check_room(&self, agent: AgentId) -> Result<(), crate::CellError> {
            self.lock().check_room(agent)
        }
        fn record_epoch(
            &mut self,
            agent: AgentId,
            epoch: u64,
            created_by: Option<NodeId>,
        ) -> Result<(), crate::CellError> {
            self.lock().record_epoch(agent, epoch, created_by)
        }
        fn created_by(&self, peer: NodeId) -> usize {
            self.lock().created_by(peer)
        }
        fn capacity(&self) -> usize {
            self.lock().capacity()
        }
    }
}

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

        fn record_epoch(
            &mut self,
            agent: AgentId,
            epoch: u64,
            created_by: Option<NodeId>,
        ) -> Result<(), crate::CellError> {
            self.set_sequence_created(agent, epoch, created_by)
                .map_err(|e| match e {
                    MeshError::JournalFull => crate::CellError::CapacityExceeded {
                        what: crate::Capacity::EpochJournal,
                        capacity: self.sequence_capacity(),
                        requested: self.sequence_capacity().saturating_add(1),
                    },
                    _ => crate::CellError::JournalFailed,
                })
        }

        fn created_by(&self, peer: NodeId) -> usize {
            self.created_count(peer)
        }

        fn capacity(&self) -> usize {
            self.sequence_capacity()
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

#[cfg(feature = "alloc")]
impl<L: crate::storage::Log> crate::migration::EpochJournal for super::log_journal::LogJournal<L> {
    epochs_in_mesh_journal!();
}
