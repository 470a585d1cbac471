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
/// value of every key. So a slot's chunks stay until the slot is written again, and events up
/// to the highest number a copy reached stay until overwritten: set
/// [`Cells::checkpoint_every`](super::Cells::checkpoint_every) low on a board. An agent that
/// leaves ([`Keeper::remove`]) has all its keys removed (which reads the whole map per key:
/// slow, and only on a hand-off away).
///
/// Needs a [`MultiwriteNorFlash`] (a word may be written again to clear more bits, as NOR flash
/// allows) because an agent's keys are removed when it leaves. DNA comes from the embedder's
/// store `D` (a board's DNA in flash); [`keep_dna`](Keeper::keep_dna) checks it is there.
///
/// **Faults.** A write that fails poisons the keeper (every later write fails, and
/// [`Keeper::flush`] reports it): after a failed write nobody knows which items landed, so the
/// board must restart from the flash. Reads that find a head that does not verify, or a copy
/// whose length or SHA-256 is not the head's, refuse that agent ([`KeepError::Refused`] or
/// [`KeepError::Read`]); other agents still load.
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
    /// Reads every head once. `limits` bound the copies it decodes.
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
                } else if k[16] == HEAD {
                    let id: [u8; 16] = k[..16].try_into().map_err(|_| KeepError::Read)?;
                    heads.insert(AgentId::from_bytes(id), v.to_vec());
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
        Ok(())
    }

    fn store(&mut self, key: &Key, value: &[u8]) -> Result<(), KeepError> {
        if self.failed {
            return Err(KeepError::Write);
        }
        let r = block_on(self.map.store_item(&mut self.buf[..], key, &value));
        if r.is_err() {
            self.failed = true;
            return Err(KeepError::Write);
        }
        Ok(())
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
            self.store(&key(agent, CHUNK, i as u16, slot), piece)?;
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

    /// The events after the running copy of generation `generation`: numbered from 0, each of
    /// that generation with a MAC that verifies, up to the first that is missing or is not.
    fn read_events(&mut self, agent: AgentId, generation: u64) -> Result<Vec<Event>, KeepError> {
        let mut events = Vec::new();
        for n in 0..=u16::MAX {
            let Some(v) = self.fetch(&key(agent, EVENT, n, 0))? else {
                break;
            };
            let Some((body, mac)) = v.split_at_checked(v.len().saturating_sub(MAC)) else {
                break;
            };
            if body.len() < 8
                || u64::from_le_bytes(body[..8].try_into().map_err(|_| KeepError::Read)?)
                    != generation
            {
                break;
            }
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
        }
        Ok(events)
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
            None => Err(KeepError::Write),
        }
    }

    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let id = agent.agent_id();
        let bytes = seal_copy(self.node, &self.key, epoch, agent, inbox)?;
        let place = self.write_copy(id, epoch, &bytes)?;
        let generation = self.next_generation()?;
        let mut head = self.heads.get(&id).cloned().unwrap_or_default();
        head.generation = generation;
        head.running = Some(place);
        self.put_head(id, head)?;
        self.next_event.insert(id, 0);
        Ok(())
    }

    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
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
        saved.events = self.read_events(agent, head.generation)?;
        self.next_event.insert(agent, saved.events.len() as u16);
        Ok(Some(saved))
    }

    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let id = agent.agent_id();
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
            // A failure poisons the keeper; the prepared copy stays named until a restart
            // prunes it again.
            let _ = self.put_head(agent, head);
        }
    }

    fn remove(&mut self, agent: AgentId) {
        self.bad_heads.remove(&agent);
        if self.heads.remove(&agent).is_none() {
            return;
        }
        self.next_event.remove(&agent);
        // The head first (an empty value): from then on nothing of the agent loads, whatever
        // of the rest a reset leaves. Then its other keys, so they do not fill the flash.
        if self.store(&key(agent, HEAD, 0, 0), &[]).is_err() {
            return;
        }
        let mut keys = BTreeSet::new();
        let buf = &mut self.buf;
        let map = &mut self.map;
        let listed = block_on(async {
            let mut it = map.fetch_all_items(&mut buf[..]).await.ok()?;
            while let Some((k, _)) = it.next::<&[u8]>(&mut buf[..]).await.ok()? {
                if k[..16] == agent.as_bytes()[..] && k[16] != HEAD && k != GENERATION {
                    keys.insert(k);
                }
            }
            Some(())
        });
        if listed.is_none() {
            return;
        }
        for k in keys {
            if block_on(self.map.remove_item(&mut self.buf[..], &k)).is_err() {
                self.failed = true;
                return;
            }
        }
    }

    fn logs_events(&self) -> bool {
        true
    }

    fn append(&mut self, agent: AgentId, event: &Event) -> Result<bool, KeepError> {
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
