//! [`FlashKeeper`]: a board's agents in NOR flash (features `wasmi` and `flash`), in a
//! `sequential-storage` map, so that a reset in the middle of a hand-off keeps exactly one copy.

use super::{open_copy, seal_copy, Event, KeepError, Keeper, Saved};
use crate::mesh::Inbox;
use crate::migration::{DecodeLimits, DnaStore, MigrationSnapshot};
use crate::storage::block_on;
use crate::{AgentId, Dna, LocalKey, NodeId};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;
use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};

/// Slots per agent: the running copy, the one being written, and prepared ones.
pub const FLASH_SLOTS: u8 = 4;
const SLOTS: u8 = FLASH_SLOTS;
/// Prepared copies kept per agent (the protocol holds one per hand-off in flight).
const MAX_PREPARED: usize = (SLOTS - 2) as usize;

type Key = [u8; 20];
type Map<S> = MapStorage<Key, S, Cache<Uncached, Uncached, Uncached, Key>>;

const HEAD: u8 = 0;
const CHUNK: u8 = 1;
const EVENT: u8 = 2;
/// The key of the last generation issued (no agent key has kind 0xff).
const GENERATION: Key = [0xff; 20];

const HEAD_DOMAIN: &str = "mielin-cells/flash-keeper/head/v1";
const EVENT_DOMAIN: &str = "mielin-cells/flash-keeper/event/v1";
const MAC: usize = crate::seal::MAC_LEN;
/// A copy's place in a head: slot, epoch, length, SHA-256.
const PLACE_LEN: usize = 1 + 8 + 4 + 32;
/// The longest event value: generation, event, MAC.
const EVENT_VALUE_LEN: usize = 8 + super::MAX_EVENT_LEN + MAC;
/// The longest head: version, generation, running flag and place, count and prepared places.
const HEAD_LEN: usize = 1 + 8 + 1 + PLACE_LEN + 1 + MAX_PREPARED * PLACE_LEN + MAC;

fn key(agent: AgentId, kind: u8, index: u16, slot: u8) -> Key {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(agent.as_bytes());
    k[16] = kind;
    k[17..19].copy_from_slice(&index.to_le_bytes());
    k[19] = slot;
    k
}

/// Where one copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    slot: u8,
    epoch: u64,
    len: u32,
    digest: [u8; 32],
}

impl Place {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.slot);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.digest);
    }

    fn decode(b: &[u8]) -> Option<Place> {
        let b: &[u8; PLACE_LEN] = b.get(..PLACE_LEN)?.try_into().ok()?;
        let slot = b[0];
        (slot < SLOTS).then_some(())?;
        Some(Place {
            slot,
            epoch: u64::from_le_bytes(b[1..9].try_into().ok()?),
            len: u32::from_le_bytes(b[9..13].try_into().ok()?),
            digest: b[13..45].try_into().ok()?,
        })
    }
}

/// An agent's head: the generation of its running copy, where that copy is, its prepared ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Head {
    generation: u64,
    running: Option<Place>,
    prepared: Vec<Place>,
}

impl Head {
    fn encode(&self, agent: AgentId, key: &LocalKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_LEN);
        out.push(1);
        out.extend_from_slice(&self.generation.to_le_bytes());
        match &self.running {
            Some(p) => {
                out.push(1);
                p.encode(&mut out);
            }
            None => out.push(0),
        }
        out.push(self.prepared.len() as u8);
        for p in &self.prepared {
            p.encode(&mut out);
        }
        let mac = key.mac(HEAD_DOMAIN, &[agent.as_bytes(), &out]);
        out.extend_from_slice(&mac);
        out
    }

    /// `None`: not a head of this agent under this key (edited, another node's or agent's).
    fn decode(agent: AgentId, key: &LocalKey, b: &[u8]) -> Option<Head> {
        let (body, mac) = b.split_at_checked(b.len().checked_sub(MAC)?)?;
        if !key.verify(HEAD_DOMAIN, &[agent.as_bytes(), body], mac) {
            return None;
        }
        let (&version, rest) = body.split_first()?;
        (version == 1).then_some(())?;
        let generation = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let mut rest = &rest[8..];
        let (&flag, r) = rest.split_first()?;
        rest = r;
        let running = match flag {
            0 => None,
            1 => {
                let p = Place::decode(rest)?;
                rest = &rest[PLACE_LEN..];
                Some(p)
            }
            _ => return None,
        };
        let (&n, mut rest) = rest.split_first()?;
        if usize::from(n) > MAX_PREPARED {
            return None;
        }
        let mut prepared = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            prepared.push(Place::decode(rest)?);
            rest = &rest[PLACE_LEN..];
        }
        rest.is_empty().then_some(Head {
            generation,
            running,
            prepared,
        })
    }

    fn slots_used(&self) -> impl Iterator<Item = u8> + '_ {
        self.running
            .iter()
            .chain(self.prepared.iter())
            .map(|p| p.slot)
    }
}

/// Figures for a board's report: what the keeper wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlashKeeperStats {
    /// Copies written (running and prepared).
    pub copies: u64,
    /// Bytes of copies written (chunks' data).
    pub copy_bytes: u64,
    /// Events written.
    pub events: u64,
    /// Bytes of events written (with their generation and MAC).
    pub event_bytes: u64,
}

/// A [`Keeper`] in NOR flash (features `wasmi` and `flash`): the board's agents survive a
/// reset.
///
/// **Layout.** Every item's key is 20 bytes: the agent's id, a kind, two bytes of index and a
/// slot. Per agent:
/// - a *head* (kind 0): the generation of its running copy and where that copy and its prepared
///   ones are: slot, epoch, length and SHA-256, MAC'd under the keeper's key;
/// - *chunks* (kind 1) of each copy, in one of [`FLASH_SLOTS`] slots: the container as
///   the QUIC node's files hold it (sealed, version 3), cut into pieces that fit a flash page;
/// - *events* (kind 2), numbered from 0 after the running copy: the generation, the event,
///   and a MAC over the agent, the number, the generation and the event.
///
/// One more item holds the last generation issued (so that a generation is never used twice,
/// not even for an agent that left and came back).
///
/// **Why a reset keeps one copy.** A copy is written whole into a slot that no head names, and
/// only then does a new head name it: one item, written atomically (the map keeps the previous
/// value of a key until the new item is complete; a write cut by a power failure fails its CRC
/// and is ignored). Committing a prepared copy is the same pointer flip. An event counts only
/// if its generation is the head's and every event before it is there, so a torn event ends
/// the list, and events of an older copy never apply to a newer one.
///
/// **Space.** The map collects the garbage of superseded items itself; what stays is the last
/// value of every key. So a slot's chunks stay until the slot is written again (at most
/// [`FLASH_SLOTS`] copies' worth per agent), and events up to the highest number a copy
/// reached stay until overwritten: set [`Cells::checkpoint_every`](super::Cells::checkpoint_every)
/// low on a board. An agent left with no copy here — it moved away ([`Keeper::remove`]), or
/// the hand-offs that brought it aborted ([`Keeper::prune`]) — is forgotten whole: its head
/// emptied first, then every key it has, the head's last (each removal reads the whole map:
/// slow, and only then); what a power cut leaves of that, or of a copy written before any
/// head named it, is removed when the keeper next opens. The
/// flash must hold two copies of an agent at once (a new copy is written before the old one is
/// let go) and its events between checkpoints. A copy that does not fit is refused with
/// [`KeepError::NoRoom`] and what it wrote is removed; nothing else changes and the keeper goes
/// on (a checkpoint that does not fit is skipped: the events hold the agent). When even an
/// event does not fit, the host stops (it cannot make the message durable); and an agent
/// whose events filled the flash cannot be handed off either (the whole save of `stop` finds
/// no room): a flash too small for its agents needs an operator.
///
/// Needs a [`MultiwriteNorFlash`] (a word may be written again to clear more bits, as NOR flash
/// allows) because an agent's keys are removed when it leaves. DNA comes from the embedder's
/// store `D` (a board's DNA in flash); [`keep_dna`](Keeper::keep_dna) checks it is there.
///
/// **Faults.** A write that fails poisons the keeper (every later write fails, and
/// [`Keeper::flush`] reports it): after a failed write nobody knows which items landed, so the
/// board must restart from the flash. Reads that find a head that does not verify, or a copy
/// whose length or SHA-256 is not the head's, refuse that agent ([`KeepError::Refused`] or
/// [`KeepError::Read`]); other agents still load. Damage to the newest item of a key reads as
/// the value before it (the map cannot tell it from a write cut by the power): for an event,
/// that event and the ones after it are lost, and the agent is saved whole at its next event
/// so that they never come back after a new one. The firmware in `examples/firmware-wasmi`
/// resets when its host or journal is poisoned.
pub struct FlashKeeper<S: MultiwriteNorFlash, D> {
    map: Map<S>,
    node: NodeId,
    key: LocalKey,
    dna: D,
    limits: DecodeLimits,
    /// One item's bytes (key and value) and room for the map's framing.
    buf: Vec<u8>,
    /// The data bytes of one chunk.
    chunk: usize,
    heads: BTreeMap<AgentId, Head>,
    /// Agents whose head did not verify when the keeper opened: loading them is refused.
    bad_heads: BTreeSet<AgentId>,
    /// The number of the next event of each agent's running copy (after a load or a save).
    next_event: BTreeMap<AgentId, u16>,
    /// Agents whose events, when loaded, stopped at a damaged item with events of the same
    /// generation beyond it: their next event is not logged but saved whole (a new
    /// generation), as appending in the damaged one's place would bring the ones beyond back
    /// after it: two histories mixed.
    resave: BTreeSet<AgentId>,
    generation: u64,
    failed: bool,
    stats: FlashKeeperStats,
}

impl<S: MultiwriteNorFlash, D> core::fmt::Debug for FlashKeeper<S, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlashKeeper")
            .field("agents", &self.heads.len())
            .field("generation", &self.generation)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<S: MultiwriteNorFlash, D: DnaStore> FlashKeeper<S, D> {
    /// Opens the keeper in `range` of `flash` (whole pages, at least two; erased flash is an
    /// empty keeper) for `node`, its items MAC'd under `key` ([`LocalKey::UNKEYED`] on a board
    /// without a secret: then the MACs are checksums, which find damage but not a forger).
    /// Reads every head once. `limits` bound the copies it decodes (and so what a head may
    /// make it allocate: their sum and 1 MiB). Refused ([`KeepError::Read`]) when the map
    /// reports corruption it cannot repair or holds an item longer than the keeper ever writes.
    pub fn open(
        flash: S,
        range: core::ops::Range<u32>,
        node: NodeId,
        key: &LocalKey,
        dna: D,
        limits: DecodeLimits,
    ) -> Result<Self, KeepError> {
        let config = MapConfig::try_new(range).map_err(|_| KeepError::Read)?;
        let page = S::ERASE_SIZE;
        // A quarter of a page per chunk: the map moves live items between pages when it
        // collects garbage, and large items waste the end of each page.
        let chunk = (page / 4).saturating_sub(64).max(64);
        let mut k = FlashKeeper {
            map: MapStorage::new(flash, config, Cache::new_uncached()),
            node,
            key: key.clone(),
            dna,
            limits,
            buf: vec![0; chunk.max(HEAD_LEN).max(EVENT_VALUE_LEN) + 64],
            chunk,
            heads: BTreeMap::new(),
            bad_heads: BTreeSet::new(),
            next_event: BTreeMap::new(),
            resave: BTreeSet::new(),
            generation: 0,
            failed: false,
            stats: FlashKeeperStats::default(),
        };
        k.scan()?;
        Ok(k)
    }

    /// The flash, back.
    pub fn into_flash(self) -> S {
        self.map.destroy().0
    }

    /// The flash, to arm a fault or read its counters (a test's
    /// [`RamFlash`](crate::storage::RamFlash)), or to mirror it. Changing its contents under the keeper
    /// is at the caller's risk.
    pub fn flash_mut(&mut self) -> &mut S {
        self.map.flash()
    }

    /// What this keeper wrote since it opened.
    pub fn stats(&self) -> FlashKeeperStats {
        self.stats
    }

    /// The agents with a running copy here.
    pub fn agents(&self) -> impl Iterator<Item = AgentId> + '_ {
        self.heads
            .iter()
            .filter(|(_, h)| h.running.is_some())
            .map(|(a, _)| *a)
    }

    /// The copies it holds: agents with a running copy, and prepared copies.
    pub fn copies(&self) -> (usize, usize) {
        let running = self.heads.values().filter(|h| h.running.is_some()).count();
        let prepared = self.heads.values().map(|h| h.prepared.len()).sum();
        (running, prepared)
    }

    /// Reads every head and the last generation issued. A head that does not verify is left
    /// out (its agent then has no copy here; loading it refuses).
    fn scan(&mut self) -> Result<(), KeepError> {
        let mut heads: BTreeMap<AgentId, Vec<u8>> = BTreeMap::new();
        // Every agent with any item, and its keys (bounded by the items the flash holds).
        let mut keys: BTreeMap<AgentId, BTreeSet<Key>> = BTreeMap::new();
        let mut generation = 0u64;
        let buf = &mut self.buf;
        let map = &mut self.map;
        block_on(async {
            let mut it = map
                .fetch_all_items(&mut buf[..])
                .await
                .map_err(|_| KeepError::Read)?;
            // Every item in flash order: the last one of a key is its value.
            while let Some((k, v)) = it
                .next::<&[u8]>(&mut buf[..])
                .await
                .map_err(|_| KeepError::Read)?
            {
                if k == GENERATION {
                    if let Ok(g) = <[u8; 8]>::try_from(v) {
                        generation = u64::from_le_bytes(g);
                    }
                    continue;
                }
                let id: [u8; 16] = k[..16].try_into().map_err(|_| KeepError::Read)?;
                let agent = AgentId::from_bytes(id);
                keys.entry(agent).or_default().insert(k);
                if k[16] == HEAD {
                    heads.insert(agent, v.to_vec());
                }
            }
            Ok::<(), KeepError>(())
        })?;
        for (agent, bytes) in heads {
            // An empty value is a removed head.
            if bytes.is_empty() {
                continue;
            }
            match Head::decode(agent, &self.key, &bytes) {
                Some(h) => {
                    generation = generation.max(h.generation);
                    self.heads.insert(agent, h);
                }
                None => {
                    self.bad_heads.insert(agent);
                }
            }
        }
        self.generation = generation;
        // What a power cut left half-forgotten (its head emptied, its other keys not all
        // removed yet) or half-written (a copy's chunks before any head named them): nothing
        // loads it and nothing else would free it. A head that does not verify is kept, with
        // everything of its agent: refused, not erased.
        for (agent, keys) in keys {
            if !self.heads.contains_key(&agent) && !self.bad_heads.contains(&agent) {
                self.remove_keys(keys)?;
            }
        }
        Ok(())
    }

    fn store(&mut self, key: &Key, value: &[u8]) -> Result<(), KeepError> {
        if self.failed {
            return Err(KeepError::Write);
        }
        match block_on(self.map.store_item(&mut self.buf[..], key, &value)) {
            Ok(()) => Ok(()),
            // Refused before anything of the item was written: the map is as it was.
            Err(sequential_storage::Error::FullStorage) => Err(KeepError::NoRoom),
            Err(sequential_storage::Error::ItemTooBig) => Err(KeepError::TooLong),
            Err(_) => {
                self.failed = true;
                Err(KeepError::Write)
            }
        }
    }

    /// Removes the items of `keys` (each removal reads the whole map: slow, and only on a
    /// hand-off away, an aborted one, or a copy that did not fit).
    fn remove_keys(&mut self, keys: impl IntoIterator<Item = Key>) -> Result<(), KeepError> {
        for k in keys {
            if self.failed {
                return Err(KeepError::Write);
            }
            if block_on(self.map.remove_item(&mut self.buf[..], &k)).is_err() {
                self.failed = true;
                return Err(KeepError::Write);
            }
        }
        Ok(())
    }

    /// Every key of `agent` in the map but its head.
    fn keys_of(&mut self, agent: AgentId) -> Result<BTreeSet<Key>, KeepError> {
        let mut keys = BTreeSet::new();
        let buf = &mut self.buf;
        let map = &mut self.map;
        block_on(async {
            let mut it = map.fetch_all_items(&mut buf[..]).await.ok()?;
            while let Some((k, _)) = it.next::<&[u8]>(&mut buf[..]).await.ok()? {
                if k[..16] == agent.as_bytes()[..] && k[16] != HEAD && k != GENERATION {
                    keys.insert(k);
                }
            }
            Some(())
        })
        .ok_or(KeepError::Read)?;
        Ok(keys)
    }

    /// Forgets everything of `agent`: its head first (an empty value: from then on nothing of
    /// it loads, whatever of the rest a reset leaves), then its other keys and the head's own
    /// items, so that nothing of it fills the flash (a cut on the way: the next open finishes).
    fn forget(&mut self, agent: AgentId) -> Result<(), KeepError> {
        self.heads.remove(&agent);
        self.next_event.remove(&agent);
        self.resave.remove(&agent);
        self.store(&key(agent, HEAD, 0, 0), &[])?;
        let keys = self.keys_of(agent)?;
        self.remove_keys(keys)?;
        // Last the head's own items, the empty one included, so that agents passing through
        // leave nothing behind. A cut before this leaves an empty head, and the next open
        // finishes the job.
        self.remove_keys([key(agent, HEAD, 0, 0)])
    }

    /// Writes the agent's head, or forgets the agent when the head names no copy.
    fn put_or_forget(&mut self, agent: AgentId, head: Head) -> Result<(), KeepError> {
        match head.running.is_none() && head.prepared.is_empty() {
            true => self.forget(agent),
            false => self.put_head(agent, head),
        }
    }

    fn fetch(&mut self, key: &Key) -> Result<Option<Vec<u8>>, KeepError> {
        let buf = &mut self.buf;
        let map = &mut self.map;
        block_on(async {
            match map.fetch_item::<&[u8]>(&mut buf[..], key).await {
                Ok(v) => Ok(v.map(|v| v.to_vec())),
                Err(_) => Err(KeepError::Read),
            }
        })
    }

    /// A new generation, recorded before it is used.
    fn next_generation(&mut self) -> Result<u64, KeepError> {
        let g = self.generation + 1;
        self.store(&GENERATION, &g.to_le_bytes())?;
        self.generation = g;
        Ok(g)
    }

    fn put_head(&mut self, agent: AgentId, head: Head) -> Result<(), KeepError> {
        let bytes = head.encode(agent, &self.key);
        self.store(&key(agent, HEAD, 0, 0), &bytes)?;
        self.heads.insert(agent, head);
        Ok(())
    }

    /// Writes `bytes` into a slot no head of the agent names; its place.
    fn write_copy(&mut self, agent: AgentId, epoch: u64, bytes: &[u8]) -> Result<Place, KeepError> {
        let head = self.heads.get(&agent).cloned().unwrap_or_default();
        let used: BTreeSet<u8> = head.slots_used().collect();
        let slot = (0..SLOTS)
            .find(|s| !used.contains(s))
            .ok_or(KeepError::Write)?;
        let len = u32::try_from(bytes.len()).map_err(|_| KeepError::Write)?;
        if bytes.len().div_ceil(self.chunk) > usize::from(u16::MAX) {
            return Err(KeepError::Write);
        }
        for (i, piece) in bytes.chunks(self.chunk).enumerate() {
            if let Err(e) = self.store(&key(agent, CHUNK, i as u16, slot), piece) {
                // A copy that did not fit: its chunks go again, or nothing would ever free
                // them (no head names them).
                if matches!(e, KeepError::NoRoom | KeepError::TooLong) {
                    self.remove_keys((0..i as u16).map(|j| key(agent, CHUNK, j, slot)))?;
                    if !self.heads.contains_key(&agent) {
                        self.forget(agent)?;
                    }
                }
                return Err(e);
            }
        }
        self.stats.copies += 1;
        self.stats.copy_bytes += bytes.len() as u64;
        Ok(Place {
            slot,
            epoch,
            len,
            digest: crate::hash::sha256(bytes),
        })
    }

    /// Reads the copy at `place` back and checks its length and SHA-256.
    fn read_copy(&mut self, agent: AgentId, place: Place) -> Result<Saved, KeepError> {
        let len = place.len as usize;
        let max = self
            .limits
            .max_wasm_state
            .saturating_add(self.limits.max_wasm_binary)
            .saturating_add(1 << 20);
        if len > max {
            return Err(KeepError::Read);
        }
        let mut bytes = Vec::with_capacity(len);
        let mut i = 0u16;
        while bytes.len() < len {
            let piece = self
                .fetch(&key(agent, CHUNK, i, place.slot))?
                .ok_or(KeepError::Read)?;
            if piece.is_empty() || bytes.len() + piece.len() > len {
                return Err(KeepError::Read);
            }
            bytes.extend_from_slice(&piece);
            i = i.checked_add(1).ok_or(KeepError::Read)?;
        }
        if crate::hash::sha256(&bytes) != place.digest {
            return Err(KeepError::Read);
        }
        let saved = open_copy(self.node, &self.key, self.limits, &self.dna, &bytes)?;
        if saved.agent.id() != agent {
            return Err(KeepError::OtherAgent {
                found: saved.agent.id(),
            });
        }
        if saved.epoch != place.epoch {
            return Err(KeepError::WrongEpoch { found: saved.epoch });
        }
        Ok(saved)
    }

    fn event_value(&self, agent: AgentId, n: u16, generation: u64, event: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + event.len() + MAC);
        v.extend_from_slice(&generation.to_le_bytes());
        v.extend_from_slice(event);
        let mac = self
            .key
            .mac(EVENT_DOMAIN, &[agent.as_bytes(), &n.to_le_bytes(), &v]);
        v.extend_from_slice(&mac);
        v
    }

    /// The generation of the event item at `n`, if there is one that has one.
    fn event_generation(
        &mut self,
        agent: AgentId,
        n: u16,
    ) -> Result<Option<(u64, Vec<u8>)>, KeepError> {
        let Some(v) = self.fetch(&key(agent, EVENT, n, 0))? else {
            return Ok(None);
        };
        let g = v.get(..8).and_then(|g| <[u8; 8]>::try_from(g).ok());
        Ok(g.map(|g| (u64::from_le_bytes(g), v)))
    }

    /// The events after the running copy of generation `generation`: numbered from 0, each of
    /// that generation with a MAC that verifies, up to the first that is missing or is not;
    /// and whether an event of that generation lies beyond it (a damaged item in between: the
    /// map read its older value). Then appending in its place would bring the ones beyond back
    /// after it, so the agent must be saved whole before its next event.
    fn read_events(
        &mut self,
        agent: AgentId,
        generation: u64,
    ) -> Result<(Vec<Event>, bool), KeepError> {
        let mut events = Vec::new();
        let mut n = 0u16;
        while let Some((g, v)) = self.event_generation(agent, n)? {
            if g != generation || v.len() < 8 + MAC {
                break;
            }
            let (body, mac) = v.split_at(v.len() - MAC);
            if !self.key.verify(
                EVENT_DOMAIN,
                &[agent.as_bytes(), &n.to_le_bytes(), body],
                mac,
            ) {
                // The generation matches but the MAC does not: edited, not torn.
                return Err(KeepError::Refused(crate::CellError::from(
                    crate::DecodeError::Malformed,
                )));
            }
            events.push(Event::decode(&body[8..]).map_err(|e| KeepError::Refused(e.into()))?);
            n = match n.checked_add(1) {
                Some(n) => n,
                None => return Ok((events, false)),
            };
        }
        // Beyond the end: items of older generations are left-overs (each save starts again at
        // 0); one of this generation means a gap. Every item up to the first missing key.
        let mut gap = false;
        let mut m = n;
        while let Some(next) = m.checked_add(1) {
            m = next;
            match self.event_generation(agent, m)? {
                Some((g, _)) => gap |= g == generation,
                None => break,
            }
        }
        Ok((events, gap))
    }
}

impl<S: MultiwriteNorFlash, D: DnaStore> Keeper for FlashKeeper<S, D> {
    fn dna(&self) -> &dyn DnaStore {
        &self.dna
    }

    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) -> Result<(), KeepError> {
        // Copies name their DNA by hash: it must be in the board's store to load them again.
        match self.dna.get(dna.hash()) {
            Some(_) => Ok(()),
            None => Err(KeepError::Refused(crate::CellError::DnaNotFound {
                hash: crate::DigestPrefix::of(dna.hash()),
            })),
        }
    }

    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let id = agent.agent_id();
        let r = self.save_running(id, epoch, agent, inbox);
        self.after_failed_write(id, &r);
        r
    }

    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        self.load_running(agent)
    }

    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let id = agent.agent_id();
        let r = self.save_prepared_copy(id, epoch, agent, inbox);
        self.after_failed_write(id, &r);
        r
    }

    fn load_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<Option<Saved>, KeepError> {
        let place = self
            .heads
            .get(&agent)
            .and_then(|h| h.prepared.iter().find(|p| p.epoch == epoch).copied());
        match place {
            Some(p) => self.read_copy(agent, p).map(Some),
            None => Ok(None),
        }
    }

    fn commit_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<(), KeepError> {
        let Some(mut head) = self.heads.get(&agent).cloned() else {
            return Ok(());
        };
        let Some(i) = head.prepared.iter().position(|p| p.epoch == epoch) else {
            return Ok(());
        };
        let generation = self.next_generation()?;
        head.running = Some(head.prepared.remove(i));
        head.generation = generation;
        self.put_head(agent, head)?;
        self.next_event.insert(agent, 0);
        self.resave.remove(&agent);
        Ok(())
    }

    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool) {
        let changed: Vec<(AgentId, Head)> = self
            .heads
            .iter()
            .filter(|(a, h)| h.prepared.iter().any(|p| !keep(**a, p.epoch)))
            .map(|(a, h)| {
                let mut h = h.clone();
                h.prepared.retain(|p| keep(*a, p.epoch));
                (*a, h)
            })
            .collect();
        for (agent, head) in changed {
            // A failure poisons the keeper (a write) or leaves the copy named (no room); a
            // restart prunes it again. An agent left with no copy is forgotten whole, so
            // that aborted hand-offs do not fill the flash.
            let _ = self.put_or_forget(agent, head);
        }
    }

    fn remove(&mut self, agent: AgentId) {
        self.bad_heads.remove(&agent);
        let Some(mut head) = self.heads.get(&agent).cloned() else {
            return;
        };
        // The running copy goes; prepared ones stay (the trait's contract). An agent left
        // with none is forgotten whole. A failure poisons the keeper (a write) or leaves the
        // copy (no room): the journal says the agent moved, and a restart releases it again.
        head.running = None;
        self.next_event.remove(&agent);
        let _ = self.put_or_forget(agent, head);
    }

    fn logs_events(&self) -> bool {
        true
    }

    fn append(&mut self, agent: AgentId, event: &Event) -> Result<bool, KeepError> {
        if self.resave.contains(&agent) {
            return Ok(false);
        }
        let generation = match self.heads.get(&agent) {
            Some(h) if h.running.is_some() => h.generation,
            _ => return Err(KeepError::Write),
        };
        let n = *self.next_event.get(&agent).ok_or(KeepError::Write)?;
        let next = n.checked_add(1).ok_or(KeepError::Write)?;
        let mut bytes = Vec::new();
        event.encode(&mut bytes);
        let value = self.event_value(agent, n, generation, &bytes);
        self.store(&key(agent, EVENT, n, 0), &value)?;
        self.stats.events += 1;
        self.stats.event_bytes += value.len() as u64;
        self.next_event.insert(agent, next);
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), KeepError> {
        // A NOR write is durable when it returns: nothing is pending. A keeper whose write
        // failed reports it here, so the node holds its frames back and the board restarts.
        match self.failed {
            true => Err(KeepError::Write),
            false => Ok(()),
        }
    }
}

impl<S: MultiwriteNorFlash, D: DnaStore> FlashKeeper<S, D> {
    /// A save that found no room: an agent that has no head after it is forgotten, or the
    /// chunks it wrote would stay with nothing naming them.
    fn after_failed_write(&mut self, agent: AgentId, r: &Result<(), KeepError>) {
        if matches!(r, Err(KeepError::NoRoom | KeepError::TooLong))
            && !self.heads.contains_key(&agent)
        {
            let _ = self.forget(agent);
        }
    }

    fn save_running(
        &mut self,
        id: AgentId,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let bytes = seal_copy(self.node, &self.key, epoch, agent, inbox)?;
        let place = self.write_copy(id, epoch, &bytes)?;
        let generation = self.next_generation()?;
        let mut head = self.heads.get(&id).cloned().unwrap_or_default();
        head.generation = generation;
        head.running = Some(place);
        self.put_head(id, head)?;
        self.next_event.insert(id, 0);
        self.resave.remove(&id);
        Ok(())
    }

    fn load_running(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        if self.bad_heads.contains(&agent) {
            return Err(KeepError::Refused(crate::CellError::from(
                crate::DecodeError::Malformed,
            )));
        }
        let Some(head) = self.heads.get(&agent).cloned() else {
            return Ok(None);
        };
        let Some(place) = head.running else {
            return Ok(None);
        };
        let mut saved = self.read_copy(agent, place)?;
        let (events, gap) = self.read_events(agent, head.generation)?;
        saved.events = events;
        self.next_event.insert(agent, saved.events.len() as u16);
        if gap {
            self.resave.insert(agent);
        }
        Ok(Some(saved))
    }

    fn save_prepared_copy(
        &mut self,
        id: AgentId,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let mut head = self.heads.get(&id).cloned().unwrap_or_default();
        // A copy prepared at this epoch before is replaced; the oldest other goes if full.
        head.prepared.retain(|p| p.epoch != epoch);
        if head.prepared.len() >= MAX_PREPARED {
            head.prepared.remove(0);
            self.put_head(id, head.clone())?;
        }
        let bytes = seal_copy(self.node, &self.key, epoch, agent, inbox)?;
        let place = self.write_copy(id, epoch, &bytes)?;
        head.prepared.push(place);
        self.put_head(id, head)
    }
}
