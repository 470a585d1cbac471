//! What the node asks of the embedder.

use super::frame;
use crate::mesh::MeshError;
use crate::{AgentId, NodeId};

/// What the node asks of the embedder: capture, verify, run and stop agents. The protocol never
/// looks inside a snapshot.
///
/// Durability: [`AgentHost::prepare`] must keep the bytes (or the agent built from them) durably
/// before it returns `Ok`, and the state of a stopped agent must survive a crash until
/// [`AgentHost::release`]; the protocol's "no loss" guarantee rests on both.
pub trait AgentHost {
    /// The DNA hash and sizes of an agent this node runs, for the Offer; `None` if unknown.
    fn describe(&mut self, agent: AgentId) -> Option<AgentInfo>;
    /// Whether this node holds the DNA with this SHA-256 (so the snapshot may name it by hash).
    fn has_dna(&mut self, dna_hash: &[u8; 32]) -> bool;
    /// Stops the agent and freezes its state (a hand-off starts); captures that follow must
    /// describe this frozen state.
    fn stop(&mut self, agent: AgentId);
    /// Writes the stopped agent's snapshot — with its DNA or naming it by hash — into `out` and
    /// returns the length. Called again for every retransmission.
    fn capture(
        &mut self,
        agent: AgentId,
        with_dna: bool,
        out: &mut [u8],
    ) -> Result<usize, MeshError>;
    /// Verifies the snapshot and keeps it durably as the agent at `epoch`, not running.
    fn prepare(
        &mut self,
        agent: AgentId,
        epoch: u64,
        with_dna: bool,
        snapshot: &[u8],
    ) -> Result<(), MeshError>;
    /// Runs the agent at `epoch`: the prepared copy after a commit, or this node's own stopped
    /// copy after an abort or a restart.
    fn run(&mut self, agent: AgentId, epoch: u64);
    /// Discards the copy prepared for `epoch` (the hand-off was aborted).
    fn discard(&mut self, agent: AgentId, epoch: u64);
    /// The agent now belongs to another node: free its stopped copy.
    fn release(&mut self, agent: AgentId);

    /// After a restart, discards every prepared copy except those `prepared(agent, epoch)`
    /// says the journal holds in doubt: a crash between [`prepare`](Self::prepare) and the
    /// journal's write leaves a copy that no commit can ever reach. The default keeps nothing
    /// on its own and does nothing.
    fn prune(&mut self, prepared: &dyn Fn(AgentId, u64) -> bool) {
        let _ = prepared;
    }

    /// Offers message `seq` of agent `from`'s `stream`, delivered by the node `peer` (this
    /// node's own id for a sender running here), to the mailbox of `to`, an agent running here.
    ///
    /// The host keeps, per (sender, stream), the last sequence number it accepted — durably,
    /// and inside the agent's snapshot so that it travels with the agent — and answers:
    /// `seq == last + 1`, stored: [`Delivery::Accepted`]; `seq <= last`:
    /// [`Delivery::Duplicate`]; `seq > last + 1`: [`Delivery::OutOfOrder`]; no room:
    /// [`Delivery::Full`]. The stream is a token only the sender's and the addressee's hosts
    /// see, so a peer that names another node's agent cannot make that agent's messages look
    /// like duplicates; `Inbox` (feature `alloc`) implements the rule. The default keeps no
    /// mailboxes and answers `Full`.
    fn deliver(
        &mut self,
        to: AgentId,
        peer: NodeId,
        from: AgentId,
        stream: Stream,
        seq: u64,
        payload: &[u8],
    ) -> Delivery {
        let _ = (to, peer, from, stream, seq, payload);
        Delivery::Full
    }

    /// Calls `f` with each message `agent` sent and the mesh has not yet acknowledged, oldest
    /// first. The host keeps them durably and inside the agent's snapshot, and numbers them per
    /// addressee from 1 in the agent's stream to that addressee
    /// (`Inbox::stream`). The default has none.
    fn outgoing(&mut self, agent: AgentId, f: &mut dyn FnMut(Outgoing<'_>)) {
        let _ = (agent, f);
    }

    /// The addressee's node accepted message `seq` from `agent` to `to`: forget it.
    fn acked(&mut self, agent: AgentId, to: AgentId, seq: u64) {
        let _ = (agent, to, seq);
    }

    /// Makes every change this host accepted so far durable, in one group commit. The node
    /// calls it before it lets a frame out ([`Node::poll_transmit`](super::Node::poll_transmit)),
    /// so a peer never hears of a change (a `Delivered` for a message accepted into a mailbox)
    /// that a crash could still lose. A host whose every change is durable when its method
    /// returns has nothing to do: the default. An error silences the node: the frames queued
    /// are dropped (timers re-send what matters) and none leaves until a flush succeeds.
    fn flush(&mut self) -> Result<(), MeshError> {
        Ok(())
    }

    /// A directory lookup, for an addressee this node knows no location for. Default: none.
    fn locate(&mut self, agent: AgentId) -> Option<NodeId> {
        let _ = agent;
        None
    }
}

/// A sender's stream token to one addressee ([`frame::Body::Deliver`]).
pub type Stream = [u8; frame::STREAM_LEN];

/// A message sent and not yet acknowledged ([`AgentHost::outgoing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The addressee.
    pub to: AgentId,
    /// The sender's stream to it.
    pub stream: Stream,
    /// The message's number in the stream.
    pub seq: u64,
    /// Its bytes.
    pub payload: &'a [u8],
}

/// What a host did with a message ([`AgentHost::deliver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Stored in the mailbox.
    Accepted,
    /// Already received before; not stored again.
    Duplicate,
    /// An earlier message from this sender is missing; not stored.
    OutOfOrder,
    /// The mailbox is full; not stored (back-pressure).
    Full,
}

/// What an Offer says about an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentInfo {
    /// SHA-256 of the DNA.
    pub dna_hash: [u8; 32],
    /// Snapshot bytes without the DNA.
    pub snapshot_len: u32,
    /// DNA bytes.
    pub dna_len: u32,
}
