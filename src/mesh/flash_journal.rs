//! [`FlashJournal`]: the mesh [`Journal`] of a board, in NOR flash through a `sequential-storage`
//! map (feature `flash`, no allocator).

use super::journal::{Journal, MemJournal, Record, RECORD_LEN};
use super::MeshError;
use crate::seal::{LocalKey, Part, StoreError, MAC_LEN};
use crate::storage::block_on;
use crate::{AgentId, NodeId};
use embedded_storage_async::nor_flash::NorFlash;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};

/// An item's key: a kind and an agent id (zeros for the generation).
type Key = [u8; 17];
type Map<S> = MapStorage<Key, S, Cache<Uncached, Uncached, Uncached, Key>>;

const RECORD: u8 = 0;
const SEQUENCE: u8 = 1;
const GENERATION: u8 = 2;
const DOMAIN: &str = "mielin-cells/flash-journal/v1";
/// A sequence entry: the sequence (`u64` LE), the creator's tag (0 this node, 1 a peer) and id.
const SEQUENCE_LEN: usize = 8 + 1 + 16;
/// The longest value: a record and its MAC.
const VALUE_LEN: usize = RECORD_LEN + MAC_LEN;
/// The data buffer: key, value, and the map's word rounding.
const BUF: usize = 17 + VALUE_LEN + 16;

fn key(kind: u8, agent: Option<AgentId>) -> Key {
    let mut k = [0u8; 17];
    k[0] = kind;
    if let Some(a) = agent {
        k[1..].copy_from_slice(a.as_bytes());
    }
    k
}

/// The mesh [`Journal`] of a board (feature `flash`, no allocator): each change is one item of a
/// `sequential-storage` map in NOR flash — an agent's hand-off record, its fence, or the
/// restart generation, keyed by what it is about, with a MAC under the node's key
/// ([`LocalKey::UNKEYED`] on a board without a secret: a checksum then) — and the tables are
/// held in RAM as in [`MemJournal`], with room for `N` agents.
///
/// **Durability.** A NOR write is durable when it returns, so the [`Journal`] contract holds as
/// written: when a write returns `Ok`, it survives a reset. The map keeps the value before a
/// write until the new item is whole (a write cut by a power failure fails its CRC and is
/// ignored), and collects the garbage of replaced items itself. A removed record is an empty
/// item, so keys are bounded by the agents the node ever held (at most `N`: the fence table
/// never forgets one).
///
/// **Faults.** A failed write *poisons* the journal, as [`LogJournal`](super::LogJournal)'s
/// does: after it nobody knows whether the item landed, so every later write is refused
/// ([`MeshError::JournalIo`]) and [`is_poisoned`](Self::is_poisoned) tells the board to
/// restart from the flash. [`open`](Self::open) refuses a flash with an item that does not
/// verify. Not detected (as for `FlashLog`): damage to the newest item of a key after it was
/// written, which the map reads as a write cut by a power failure (the value before it).
pub struct FlashJournal<S: NorFlash, const N: usize> {
    map: Map<S>,
    key: LocalKey,
    t: MemJournal<N>,
    poisoned: bool,
}

impl<S: NorFlash, const N: usize> core::fmt::Debug for FlashJournal<S, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlashJournal")
            .field("records", &self.t.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn malformed(reason: &'static str) -> StoreError {
    StoreError::Malformed {
        part: Part::Record,
        offset: 0,
        reason,
    }
}

impl<S: NorFlash, const N: usize> FlashJournal<S, N> {
    /// Opens the journal in `range` of `flash` (whole pages, at least two; erased flash is a
    /// new journal), its items checked against `key`. Refused when an item does not verify
    /// ([`StoreError::BadMac`]), does not decode, or the tables cannot hold what it records.
    pub fn open(
        flash: S,
        range: core::ops::Range<u32>,
        key: &LocalKey,
    ) -> Result<Self, StoreError> {
        let config = MapConfig::try_new(range).map_err(|_| StoreError::Malformed {
            part: Part::Header,
            offset: 0,
            reason: "the flash range is not whole pages (at least two)",
        })?;
        let mut j = FlashJournal {
            map: MapStorage::new(flash, config, Cache::new_uncached()),
            key: key.clone(),
            t: MemJournal::new(),
            poisoned: false,
        };
        j.load()?;
        Ok(j)
    }

    /// Whether a write failed: restart the node from the flash.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The flash, back.
    pub fn into_flash(self) -> S {
        self.map.destroy().0
    }

    /// The flash, to arm a fault or read its counters (a test's
    /// [`RamFlash`](crate::storage::RamFlash)), or to mirror it. Changing its contents under the
    /// journal is at the caller's risk.
    pub fn flash_mut(&mut self) -> &mut S {
        self.map.flash()
    }

    /// Reads every item in flash order (the last one of a key is its value) into the tables.
    fn load(&mut self) -> Result<(), StoreError> {
        let mut buf = [0u8; BUF];
        let key = self.key.clone();
        let t = &mut self.t;
        let map = &mut self.map;
        block_on(async {
            let mut it = map
                .fetch_all_items(&mut buf)
                .await
                .map_err(|_| malformed("the flash map is corrupted"))?;
            while let Some((k, v)) = it
                .next::<&[u8]>(&mut buf)
                .await
                .map_err(|_| malformed("the flash map is corrupted"))?
            {
                apply(t, &key, &k, v)?;
            }
            Ok(())
        })
    }

    /// Stores `value` under `k` with its MAC (an empty value stays empty: a removed record).
    fn store(&mut self, k: &Key, value: &[u8]) -> Result<(), MeshError> {
        if self.poisoned {
            return Err(MeshError::JournalIo);
        }
        let mut v = [0u8; VALUE_LEN];
        let len = match value.is_empty() {
            true => 0,
            false => {
                v[..value.len()].copy_from_slice(value);
                let mac = self.key.mac(DOMAIN, &[k, value]);
                v[value.len()..value.len() + MAC_LEN].copy_from_slice(&mac);
                value.len() + MAC_LEN
            }
        };
        let mut buf = [0u8; BUF];
        if block_on(self.map.store_item(&mut buf, k, &&v[..len])).is_err() {
            self.poisoned = true;
            return Err(MeshError::JournalIo);
        }
        Ok(())
    }

    /// The tables as they would be after a write, checked before it is stored (a full table
    /// refuses without writing).
    fn staged(
        &self,
        f: impl FnOnce(&mut MemJournal<N>) -> Result<(), MeshError>,
    ) -> Result<MemJournal<N>, MeshError> {
        let mut t = self.t.clone();
        f(&mut t)?;
        Ok(t)
    }
}

/// Applies one item read from flash to the tables.
fn apply<const N: usize>(
    t: &mut MemJournal<N>,
    key: &LocalKey,
    k: &Key,
    v: &[u8],
) -> Result<(), StoreError> {
    let agent = || {
        let mut id = [0u8; 16];
        id.copy_from_slice(&k[1..]);
        AgentId::from_bytes(id)
    };
    if k[0] == RECORD && v.is_empty() {
        let _ = t.remove(agent());
        return Ok(());
    }
    let (body, mac) = v
        .split_at_checked(
            v.len()
                .checked_sub(MAC_LEN)
                .ok_or(malformed("an item too short"))?,
        )
        .ok_or(malformed("an item too short"))?;
    if !key.verify(DOMAIN, &[k, body], mac) {
        return Err(StoreError::BadMac {
            part: Part::Record,
            offset: 0,
        });
    }
    let full = |_| malformed("more agents than the journal holds");
    match k[0] {
        RECORD => {
            let b: &[u8; RECORD_LEN] = body
                .try_into()
                .map_err(|_| malformed("a record of another length"))?;
            let (a, r) = Record::decode(b).ok_or(malformed("a record that does not decode"))?;
            if a != agent() {
                return Err(malformed("a record filed under another agent"));
            }
            t.put(a, r).map_err(full)
        }
        SEQUENCE => {
            let b: &[u8; SEQUENCE_LEN] = body
                .try_into()
                .map_err(|_| malformed("a fence of another length"))?;
            let seq = u64::from_le_bytes(b[..8].try_into().map_err(|_| malformed("a fence"))?);
            let created = match b[8] {
                0 => None,
                1 => Some(NodeId::from_bytes(
                    b[9..].try_into().map_err(|_| malformed("a fence"))?,
                )),
                _ => return Err(malformed("a fence with an unknown creator tag")),
            };
            t.restore_sequence(agent(), seq, created).map_err(full)
        }
        GENERATION => {
            let g = u64::from_le_bytes(
                body.try_into()
                    .map_err(|_| malformed("a generation of another length"))?,
            );
            t.set_generation(g).map_err(full)
        }
        _ => Err(malformed("an item of an unknown kind")),
    }
}

impl<S: NorFlash, const N: usize> Journal for FlashJournal<S, N> {
    fn get(&self, agent: AgentId) -> Option<Record> {
        self.t.get(agent)
    }
    fn put(&mut self, agent: AgentId, record: Record) -> Result<(), MeshError> {
        let t = self.staged(|t| t.put(agent, record))?;
        self.store(&key(RECORD, Some(agent)), &record.encode(agent))?;
        self.t = t;
        Ok(())
    }
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
        if self.t.get(agent).is_none() {
            return Ok(());
        }
        self.store(&key(RECORD, Some(agent)), &[])?;
        self.t.remove(agent)
    }
    fn for_each(&self, f: &mut dyn FnMut(AgentId, Record)) {
        self.t.for_each(f)
    }
    fn sequence(&self, agent: AgentId) -> Option<u64> {
        self.t.sequence(agent)
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        let t = self.staged(|t| t.set_sequence(agent, seq))?;
        let created = t.created_by(agent);
        let mut v = [0u8; SEQUENCE_LEN];
        v[..8].copy_from_slice(&seq.to_le_bytes());
        if let Some(n) = created {
            v[8] = 1;
            v[9..].copy_from_slice(n.as_bytes());
        }
        self.store(&key(SEQUENCE, Some(agent)), &v)?;
        self.t = t;
        Ok(())
    }
    fn generation(&self) -> u64 {
        self.t.generation()
    }
    fn set_generation(&mut self, generation: u64) -> Result<(), MeshError> {
        self.store(&key(GENERATION, None), &generation.to_le_bytes())?;
        self.t.set_generation(generation)
    }
    /// Nothing to do: every change is an item written to the flash before it returned.
    fn sync(&mut self) -> Result<(), MeshError> {
        Ok(())
    }
    fn unsynced(&self) -> bool {
        false
    }
}
