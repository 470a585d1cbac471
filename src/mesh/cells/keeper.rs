//! What a node keeps of its agents across a restart ([`Keeper`]), and how it admits agents that
//! arrive and signs those that leave ([`Gate`]): the two parts of [`Cells`](super::Cells) that
//! differ between a server, a test and a board.

use crate::mesh::Inbox;
use crate::migration::{DecodeLimits, DnaStore, MigrationSnapshot, SnapshotSigner};
use crate::{Agent, AgentId, CellError, Dna, NodeId};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// An agent as a [`Keeper`] gives it back: its state, its messages and the epoch it was saved
/// at.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The agent.
    pub agent: Agent<Vec<u8>>,
    /// Its mailbox, outbox and sequence numbers.
    pub inbox: Inbox,
    /// The epoch it was saved at.
    pub epoch: u64,
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
    /// The saved copy is of another epoch than the one asked for.
    #[error("the saved copy is of epoch {found}")]
    WrongEpoch {
        /// Its epoch.
        found: u64,
    },
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
    /// Saves the running copy of the agent at `epoch`, replacing the one before.
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
/// node hands the same `MemKeeper` to the new host), not a power cut. Holds DNA in a map.
#[derive(Debug, Default, Clone)]
pub struct MemKeeper {
    dna: crate::migration::DnaMap,
    running: BTreeMap<AgentId, Saved>,
    prepared: BTreeMap<(AgentId, u64), Saved>,
    /// Copies saved so far (running and prepared).
    pub saves: u64,
}

impl MemKeeper {
    /// Keeps nothing yet.
    pub fn new() -> Self {
        MemKeeper::default()
    }

    /// The agents with a running copy here.
    pub fn agents(&self) -> impl Iterator<Item = AgentId> + '_ {
        self.running.keys().copied()
    }

    fn saved(
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<Saved, KeepError> {
        let agent = agent
            .to_owned_snapshot()
            .into_agent()
            .map_err(KeepError::Refused)?;
        Ok(Saved {
            agent,
            inbox: inbox.clone(),
            epoch,
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
            self.running.insert(agent, s);
        }
        Ok(())
    }
    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool) {
        self.prepared.retain(|&(a, e), _| keep(a, e));
    }
    fn remove(&mut self, agent: AgentId) {
        self.running.remove(&agent);
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
