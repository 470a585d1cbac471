//! What a node keeps of its agents across a restart ([`Keeper`]), and how it admits agents that
//! arrive and signs those that leave ([`Gate`]): the two parts of [`Cells`](super::Cells) that
//! differ between a server, a test and a board.

use super::Event;
use crate::mesh::Inbox;
use crate::migration::{
    DecodeLimits, DecodeOptions, DnaStore, EncodeOptions, MigrationSnapshot, Route, SnapshotSigner,
    StateEncoding,
};
use crate::{Agent, AgentId, CellError, Dna, LocalKey, NodeId};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// An agent as a [`Keeper`] gives it back: its state, its messages, the epoch it was saved at,
/// and the events logged since ([`Keeper::append`]), which the host applies again in order.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The agent.
    pub agent: Agent<Vec<u8>>,
    /// Its mailbox, outbox and sequence numbers.
    pub inbox: Inbox,
    /// The epoch it was saved at.
    pub epoch: u64,
    /// What happened to it after it was saved, in order (empty for a prepared copy).
    pub events: Vec<Event>,
    /// The call it was saved in the middle of (the container's call section,
    /// `runtime::midcall::SuspendedCall::to_bytes`), if it was waiting in one: the host takes
    /// it over before anything else runs.
    pub call: Option<Vec<u8>>,
}

/// Why a [`Keeper`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeepError {
    /// Writing failed (the keeper says where, in its own log).
    #[error("writing failed")]
    Write,
    /// Reading failed.
    #[error("reading failed")]
    Read,
    /// What was read was refused: another node's, edited, or not a container.
    #[error("the saved copy was refused: {0}")]
    Refused(CellError),
    /// The saved copy is of another agent than the one asked for (a file copied or renamed).
    #[error("the saved copy is of another agent, {found:?}")]
    OtherAgent {
        /// The agent it holds.
        found: AgentId,
    },
    /// The saved copy is of another epoch than the one asked for.
    #[error("the saved copy is of epoch {found}")]
    WrongEpoch {
        /// Its epoch.
        found: u64,
    },
    /// The storage has no room for it. Nothing was written that a restart would read (the
    /// keeper's other copies and events are as before), so the keeper goes on working.
    #[error("no room in the storage")]
    NoRoom,
    /// One record is longer than the storage holds in one item (a board's flash page): it can
    /// never be written there. Nothing was written; the keeper goes on working.
    #[error("longer than one item of the storage")]
    TooLong,
}

/// The bytes a keeper stores for an agent: a version-3 container addressed to `node` at
/// `epoch`, its DNA by reference, its inbox inside, sealed with `key` (the node's own key, or
/// [`LocalKey::UNKEYED`] on a board without a secret: a checksum then, not a MAC).
#[cfg_attr(not(any(feature = "flash", feature = "quic")), allow(dead_code))]
pub(crate) fn seal_copy(
    node: NodeId,
    key: &LocalKey,
    epoch: u64,
    agent: &MigrationSnapshot<&[u8]>,
    inbox: &Inbox,
) -> Result<Vec<u8>, KeepError> {
    let inbox = inbox.to_bytes();
    agent
        .clone()
        .with_route(Route {
            target: node,
            epoch,
        })
        .with_inbox(&inbox[..])
        .serialize_with(&EncodeOptions {
            version: Some(3),
            dna_by_reference: true,
            state: StateEncoding::Chunked,
            sealer: Some(key),
            ..Default::default()
        })
        .map_err(KeepError::Refused)
}

/// Decodes what [`seal_copy`] wrote, as strictly as bytes from a peer: sealed with `key`,
/// addressed to `node`, every check of the container and of its inbox.
#[cfg_attr(not(any(feature = "flash", feature = "quic")), allow(dead_code))]
pub(crate) fn open_copy(
    node: NodeId,
    key: &LocalKey,
    limits: DecodeLimits,
    dna: &dyn DnaStore,
    bytes: &[u8],
) -> Result<Saved, KeepError> {
    let malformed = || KeepError::Refused(CellError::from(crate::DecodeError::Malformed));
    let opts = DecodeOptions {
        limits,
        dna_store: Some(dna),
        ..Default::default()
    };
    let s = MigrationSnapshot::deserialize_sealed(bytes, &opts, key).map_err(KeepError::Refused)?;
    let route = s.route().ok_or_else(malformed)?;
    if route.target != node {
        return Err(KeepError::Refused(CellError::SignatureRejected(
            crate::SignatureError::WrongTarget {
                target: route.target,
            },
        )));
    }
    let inbox =
        Inbox::decode(s.inbox().unwrap_or_default()).map_err(|e| KeepError::Refused(e.into()))?;
    let (agent, call) = s.into_agent_with_call().map_err(KeepError::Refused)?;
    Ok(Saved {
        agent,
        inbox,
        epoch: route.epoch,
        events: Vec::new(),
        call,
    })
}

/// Where a node's agents survive a restart. Every method that saves returns once the copy is
/// durable; one that fails leaves the copy saved before it in place.
///
/// The host calls [`save`](Self::save) when an agent starts, stops for a hand-off, accepts a
/// message and after a call that changed it; [`save_prepared`](Self::save_prepared) before it
/// answers `Prepared`; [`commit_prepared`](Self::commit_prepared) when the hand-off commits. A
/// keeper that keeps nothing ([`Keeper::keeps_state`] `false`) spares the host the snapshots.
pub trait Keeper {
    /// Whether this keeper keeps agents at all (`false`: [`save`](Self::save) and
    /// [`save_prepared`](Self::save_prepared) are not called, and nothing survives a restart).
    fn keeps_state(&self) -> bool {
        true
    }
    /// DNA this node holds, for containers that name theirs by hash.
    fn dna(&self) -> &dyn DnaStore;
    /// Keeps `dna` (an agent was created with it or arrived with it).
    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) -> Result<(), KeepError>;
    /// Saves the running copy of the agent at `epoch`, replacing the one before and the events
    /// logged after it.
    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError>;
    /// The running copy saved last, if any.
    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError>;
    /// Saves a copy that arrived for a hand-off at `epoch`, not running.
    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError>;
    /// The copy prepared at `epoch`, if any (after a restart).
    fn load_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<Option<Saved>, KeepError>;
    /// The hand-off at `epoch` committed: the prepared copy becomes the running one. Nothing
    /// when there is none.
    fn commit_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<(), KeepError>;
    /// Forgets every prepared copy for which `keep(agent, epoch)` is `false`.
    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool);
    /// Forgets the agent's running copy (it belongs to another node now).
    fn remove(&mut self, agent: AgentId);

    /// Whether [`append`](Self::append) logs events (then the host flushes them before it
    /// saves an agent whole, and a failed save stops everything that depends on it).
    fn logs_events(&self) -> bool {
        false
    }

    /// Logs `event` of the running agent after its saved copy. Not durable yet:
    /// [`flush`](Self::flush) makes it so, and the node calls it before any frame leaves
    /// ([`AgentHost::flush`](crate::mesh::AgentHost::flush)), so a peer never hears of an event
    /// a crash could lose. `Ok(false)`: this keeper logs no events (the default), and the host
    /// saves the whole agent instead.
    fn append(&mut self, agent: AgentId, event: &Event) -> Result<bool, KeepError> {
        let _ = (agent, event);
        Ok(false)
    }

    /// Makes every event appended so far durable: one group commit for all of them. A keeper
    /// that failed to does not try again: it fails every later call (the node must restart
    /// from what reached its storage).
    fn flush(&mut self) -> Result<(), KeepError> {
        Ok(())
    }
}

/// How a node admits agents that arrive and signs those that leave.
///
/// The default methods admit every container that is addressed to this node and decodes, and
/// sign nothing: for trusted links (a board on its serial line, a test). The QUIC node checks
/// a [`TrustList`](crate::migration::TrustList) and signs with its key.
pub trait Gate {
    /// The key that signs containers sent to other nodes; `None`: unsigned.
    fn signer(&self) -> Option<&dyn SnapshotSigner> {
        None
    }
    /// The time written into containers and checked against their timestamps, in seconds
    /// since the Unix epoch (0 where there is no clock).
    fn now(&self) -> u64 {
        0
    }
    /// Checks a container received for a hand-off before it is decoded (signature, source,
    /// epoch freshness). Nothing may be recorded yet: [`admitted`](Self::admitted) follows
    /// once it decoded.
    fn check(&mut self, bytes: &[u8], limits: &DecodeLimits) -> Result<(), CellError> {
        let _ = (bytes, limits);
        Ok(())
    }
    /// The container [`check`](Self::check) passed decoded: record whatever refuses it from
    /// now on (its epoch).
    fn admitted(&mut self, bytes: &[u8], limits: &DecodeLimits) -> Result<(), CellError> {
        let _ = (bytes, limits);
        Ok(())
    }
    /// This node handed `agent` off at `epoch`.
    fn sent(&mut self, agent: AgentId, epoch: u64) -> Result<(), CellError> {
        let _ = (agent, epoch);
        Ok(())
    }
    /// The nodes [`Cells::locate`](super::Cells) asks in turn for an agent it has no route
    /// for.
    fn peers(&self, f: &mut dyn FnMut(NodeId)) {
        let _ = f;
    }
}

/// A [`Gate`] that admits every container addressed to this node and signs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open;

impl Gate for Open {}

/// A [`Keeper`] in memory: agents survive what the embedder keeps of it (a test that restarts a
/// node hands the same `MemKeeper`, or what [`crashed`](MemKeeper::crashed) leaves of it, to
/// the new host), not a power cut. Holds DNA in a map. Logs events when made with
/// [`logging`](MemKeeper::logging).
#[derive(Debug, Default, Clone)]
pub struct MemKeeper {
    dna: crate::migration::DnaMap,
    running: BTreeMap<AgentId, Saved>,
    prepared: BTreeMap<(AgentId, u64), Saved>,
    /// Per agent, how many of its events are durable (flushed).
    flushed: BTreeMap<AgentId, usize>,
    logs_events: bool,
    /// Copies saved so far (running and prepared).
    pub saves: u64,
    /// Events appended so far.
    pub appends: u64,
    /// Flushes that had events to make durable.
    pub flushes: u64,
}

impl MemKeeper {
    /// Keeps nothing yet.
    pub fn new() -> Self {
        MemKeeper::default()
    }

    /// Keeps nothing yet, and logs events instead of saving the agent for each.
    pub fn logging() -> Self {
        MemKeeper {
            logs_events: true,
            ..MemKeeper::default()
        }
    }

    /// What a power cut now would leave: every saved copy, and of each agent's events only
    /// those flushed.
    pub fn crashed(&self) -> MemKeeper {
        let mut k = self.clone();
        for (a, s) in k.running.iter_mut() {
            s.events.truncate(self.flushed.get(a).copied().unwrap_or(0));
        }
        k
    }

    /// The agents with a running copy here.
    pub fn agents(&self) -> impl Iterator<Item = AgentId> + '_ {
        self.running.keys().copied()
    }

    /// How many events follow `agent`'s saved copy (flushed or not): what a restart now would
    /// apply again if all were flushed.
    pub fn events(&self, agent: AgentId) -> usize {
        self.running.get(&agent).map_or(0, |s| s.events.len())
    }

    fn saved(
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<Saved, KeepError> {
        let (agent, call) = agent
            .to_owned_snapshot()
            .into_agent_with_call()
            .map_err(KeepError::Refused)?;
        Ok(Saved {
            agent,
            inbox: inbox.clone(),
            epoch,
            events: Vec::new(),
            call,
        })
    }
}

impl Keeper for MemKeeper {
    fn dna(&self) -> &dyn DnaStore {
        &self.dna
    }
    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) -> Result<(), KeepError> {
        self.dna.insert(dna);
        Ok(())
    }
    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        self.saves += 1;
        let s = Self::saved(epoch, agent, inbox)?;
        self.flushed.remove(&s.agent.id());
        self.running.insert(s.agent.id(), s);
        Ok(())
    }
    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        Ok(self.running.get(&agent).cloned())
    }
    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        self.saves += 1;
        let s = Self::saved(epoch, agent, inbox)?;
        self.prepared.insert((s.agent.id(), epoch), s);
        Ok(())
    }
    fn load_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<Option<Saved>, KeepError> {
        Ok(self.prepared.get(&(agent, epoch)).cloned())
    }
    fn commit_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<(), KeepError> {
        if let Some(s) = self.prepared.remove(&(agent, epoch)) {
            self.flushed.remove(&agent);
            self.running.insert(agent, s);
        }
        Ok(())
    }
    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool) {
        self.prepared.retain(|&(a, e), _| keep(a, e));
    }
    fn remove(&mut self, agent: AgentId) {
        self.running.remove(&agent);
        self.flushed.remove(&agent);
    }
    fn logs_events(&self) -> bool {
        self.logs_events
    }
    fn append(&mut self, agent: AgentId, event: &Event) -> Result<bool, KeepError> {
        if !self.logs_events {
            return Ok(false);
        }
        let s = self.running.get_mut(&agent).ok_or(KeepError::Write)?;
        s.events.push(event.clone());
        self.appends += 1;
        Ok(true)
    }
    fn flush(&mut self) -> Result<(), KeepError> {
        let mut any = false;
        for (a, s) in &self.running {
            let f = self.flushed.entry(*a).or_insert(0);
            any |= *f != s.events.len();
            *f = s.events.len();
        }
        self.flushes += u64::from(any);
        Ok(())
    }
}

/// A [`Keeper`] that keeps nothing across a restart, over a [`DnaStore`] of the embedder's (a
/// board's DNA in flash, `DnaSlots`).
#[derive(Debug, Clone)]
pub struct NoKeeper<D> {
    dna: D,
}

impl<D: DnaStore> NoKeeper<D> {
    /// Keeps nothing; resolves DNA named by hash from `dna`.
    pub fn new(dna: D) -> Self {
        NoKeeper { dna }
    }
}

impl<D: DnaStore> Keeper for NoKeeper<D> {
    fn keeps_state(&self) -> bool {
        false
    }
    fn dna(&self) -> &dyn DnaStore {
        &self.dna
    }
    fn keep_dna(&mut self, _: &Dna<Vec<u8>>) -> Result<(), KeepError> {
        Ok(())
    }
    fn save(&mut self, _: u64, _: &MigrationSnapshot<&[u8]>, _: &Inbox) -> Result<(), KeepError> {
        Ok(())
    }
    fn load(&mut self, _: AgentId) -> Result<Option<Saved>, KeepError> {
        Ok(None)
    }
    fn save_prepared(
        &mut self,
        _: u64,
        _: &MigrationSnapshot<&[u8]>,
        _: &Inbox,
    ) -> Result<(), KeepError> {
        Ok(())
    }
    fn load_prepared(&mut self, _: AgentId, _: u64) -> Result<Option<Saved>, KeepError> {
        Ok(None)
    }
    fn commit_prepared(&mut self, _: AgentId, _: u64) -> Result<(), KeepError> {
        Ok(())
    }
    fn prune(&mut self, _: &dyn Fn(AgentId, u64) -> bool) {}
    fn remove(&mut self, _: AgentId) {}
}
