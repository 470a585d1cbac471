//! The hand-off state machine: events in, frames out.

use super::frame::{self, Body, DeliveryStatus, RefuseReason, Repr};
use super::journal::{Journal, Phase, Record};
use super::MeshError;
use crate::{AgentId, NodeId};

/// Frames a node queues before [`Node::poll_transmit`] takes them. When the queue is full a new
/// frame is dropped, as a lossy network would drop it; every frame the protocol depends on is
/// re-sent by a timer, so this costs time, never safety.
pub const OUTBOX: usize = 32;

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
    /// like duplicates; [`Inbox`](super::Inbox) implements the rule. The default keeps no
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
    /// ([`Inbox::stream`](super::Inbox::stream)). The default has none.
    fn outgoing(&mut self, agent: AgentId, f: &mut dyn FnMut(Outgoing<'_>)) {
        let _ = (agent, f);
    }

    /// The addressee's node accepted message `seq` from `agent` to `to`: forget it.
    fn acked(&mut self, agent: AgentId, to: AgentId, seq: u64) {
        let _ = (agent, to, seq);
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

/// Timing and limits of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// Retransmission timeout, milliseconds.
    pub rto_ms: u64,
    /// Retransmissions of an Offer or Transfer before the source aborts the hand-off.
    pub max_attempts: u8,
    /// How long a confirmed tombstone is kept to answer `Moved`, milliseconds.
    pub tombstone_ttl_ms: u64,
    /// At most this many hand-offs held in doubt (prepared) on this node; more Offers are
    /// refused with `Busy`.
    pub max_in_doubt: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rto_ms: 200,
            max_attempts: 8,
            tombstone_ttl_ms: 60_000,
            max_in_doubt: 4,
        }
    }
}

/// A frame ready to send: `len` bytes at the start of the buffer given to
/// [`Node::poll_transmit`], for node `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: NodeId,
    /// The frame's length.
    pub len: usize,
}

/// Counters, for the embedder's logs and the simulator's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Hand-offs this node decided to commit (as source).
    pub committed: u64,
    /// Hand-offs this node aborted (as source).
    pub aborted: u64,
    /// Agents this node started running after a commit (as target).
    pub adopted: u64,
    /// Frames re-sent by a timer.
    pub retransmits: u64,
    /// Frames ignored because their epoch is lower than the one known here.
    pub fenced: u64,
    /// Frames that failed to decode.
    pub malformed: u64,
    /// Frames dropped because the outbox was full.
    pub outbox_drops: u64,
    /// Messages put in a local agent's mailbox (from a frame or from a local sender).
    pub messages_accepted: u64,
    /// Message deliveries answered `Full` (back-pressure).
    pub messages_full: u64,
    /// `Moved` answers from tombstones.
    pub moved_answers: u64,
    /// `Delivered` and `Moved` frames ignored because they came from a node this one did not
    /// ask (a bystander acknowledging a message it never received, or redirecting an agent it
    /// never held).
    pub unsolicited: u64,
}

#[derive(Debug, Clone, Copy)]
enum Out {
    Control(OutBody),
    Transfer {
        with_dna: bool,
    },
    /// A message from `sender` to the pending frame's agent; the payload is read from the host
    /// when the frame is written.
    Deliver {
        sender: AgentId,
        seq: u64,
    },
    Delivered {
        sender: AgentId,
        seq: u64,
        status: DeliveryStatus,
    },
    Moved {
        node: NodeId,
    },
}

#[derive(Debug, Clone, Copy)]
enum OutBody {
    Offer(AgentInfo),
    HaveDna,
    NeedDna,
    Refuse(RefuseReason),
    Prepared,
    Commit,
    Abort,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    to: NodeId,
    agent: AgentId,
    epoch: u64,
    out: Out,
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    deadline: u64,
    attempts: u8,
    /// Source side: the DNA answer, once the target gave it.
    with_dna: Option<bool>,
    info: Option<AgentInfo>,
}

/// One node of the mesh: the hand-off protocol for up to `N` agents with a timer each.
///
/// Sans-IO: feed it [`Node::handle_frame`], [`Node::handle_timeout`] and commands, drain
/// [`Node::poll_transmit`], wake it at [`Node::poll_timeout`]. The [`Journal`] is the truth about
/// ownership; the node's own tables (timers, outbox) are volatile and rebuilt by
/// [`Node::restart`].
#[derive(Debug)]
pub struct Node<J: Journal, const N: usize> {
    id: NodeId,
    journal: J,
    config: Config,
    timers: heapless::LinearMap<AgentId, Timer, N>,
    outbox: heapless::Deque<Pending, OUTBOX>,
    /// Where addressees run, as last learned, with the epoch that told us.
    locations: heapless::LinearMap<AgentId, (NodeId, u64), N>,
    /// The node each (sender, addressee) pair's message was last sent to: only that node's
    /// `Delivered` or `Moved` is believed.
    asked: heapless::LinearMap<(AgentId, AgentId), NodeId, N>,
    next_message_scan: u64,
    stats: Stats,
}

impl<J: Journal, const N: usize> Node<J, N> {
    /// A node with an empty or existing journal; call [`Node::restart`] instead when the journal
    /// may hold records (after a crash).
    pub fn new(id: NodeId, journal: J, config: Config) -> Self {
        Node {
            id,
            journal,
            config,
            timers: heapless::LinearMap::new(),
            outbox: heapless::Deque::new(),
            locations: heapless::LinearMap::new(),
            asked: heapless::LinearMap::new(),
            next_message_scan: 0,
            stats: Stats::default(),
        }
    }

    /// A node coming back from a crash: resumes what its journal says. Agents it owns run
    /// again; a hand-off it offered but had not decided is aborted (it never sent a commit);
    /// in-doubt hand-offs ask their source again; unconfirmed commits are re-sent.
    pub fn restart<H: AgentHost>(
        id: NodeId,
        journal: J,
        config: Config,
        host: &mut H,
        now: u64,
    ) -> Self {
        let mut node = Node::new(id, journal, config);
        let mut pending: heapless::Vec<(AgentId, Record), N> = heapless::Vec::new();
        node.journal.for_each(&mut |a, r| {
            // More records than timers: the rest are picked up by the next restart.
            let _ = pending.push((a, r));
        });
        {
            let journal = &node.journal;
            host.prune(&|agent, epoch| {
                matches!(
                    journal.get(agent),
                    Some(Record { epoch: e, phase: Phase::Prepared { .. } }) if e == epoch
                )
            });
        }
        for (agent, rec) in pending {
            match rec.phase {
                Phase::Running => host.run(agent, rec.epoch),
                Phase::Outgoing { target } => node.abort_outgoing(host, agent, rec.epoch, target),
                Phase::Prepared { .. } | Phase::Moved { acked: false, .. } => {
                    node.set_timer(agent, now, None, None);
                }
                Phase::Moved { acked: true, .. } => {
                    node.set_timer(agent, now + config.tombstone_ttl_ms, None, None);
                }
            }
        }
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// The journal, mutably: for the per-agent sequence numbers of a trust list
    /// ([`Journal::set_sequence`]). Changing hand-off records behind the node's back voids its
    /// guarantees.
    pub fn journal_mut(&mut self) -> &mut J {
        &mut self.journal
    }

    /// The journal, taken back (what survives a simulated crash).
    pub fn into_journal(self) -> J {
        self.journal
    }

    /// Counters since construction.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the node has nothing left to send or retransmit, except tombstone expiry.
    pub fn is_quiet(&self) -> bool {
        self.outbox.is_empty()
            && self.timers.iter().all(|(a, _)| {
                matches!(
                    self.journal.get(*a),
                    Some(Record {
                        phase: Phase::Moved { acked: true, .. },
                        ..
                    }) | None
                )
            })
    }

    /// Starts owning a new agent at epoch 0 and runs it.
    pub fn start<H: AgentHost>(&mut self, host: &mut H, agent: AgentId) -> Result<(), MeshError> {
        if self.journal.get(agent).is_some() {
            return Err(MeshError::AlreadyKnown);
        }
        self.journal.put(
            agent,
            Record {
                epoch: 0,
                phase: Phase::Running,
            },
        )?;
        host.run(agent, 0);
        Ok(())
    }

    /// Starts handing `agent` off to `target`: the agent stops here and is offered at the next
    /// epoch. The hand-off ends committed (the target runs it) or aborted (it runs here again,
    /// at that next epoch).
    pub fn migrate<H: AgentHost>(
        &mut self,
        host: &mut H,
        now: u64,
        agent: AgentId,
        target: NodeId,
    ) -> Result<(), MeshError> {
        if target == self.id {
            return Err(MeshError::SelfTarget);
        }
        let epoch = match self.journal.get(agent) {
            Some(Record {
                epoch,
                phase: Phase::Running,
            }) => epoch
                .checked_add(1)
                .filter(|e| *e <= crate::MAX_EPOCH)
                .ok_or(MeshError::EpochExhausted)?,
            _ => return Err(MeshError::NotOwner),
        };
        if self.timers.len() >= N && !self.timers.contains_key(&agent) {
            return Err(MeshError::Busy);
        }
        let info = host.describe(agent).ok_or(MeshError::HostRefused {
            reason: "agent unknown to the host",
        })?;
        self.journal.put(
            agent,
            Record {
                epoch,
                phase: Phase::Outgoing { target },
            },
        )?;
        host.stop(agent);
        self.set_timer(agent, now + self.config.rto_ms, None, Some(info));
        self.queue(target, agent, epoch, Out::Control(OutBody::Offer(info)));
        Ok(())
    }

    /// The earliest time [`Node::handle_timeout`] has work (timers of hand-offs, and the
    /// periodic scan of outgoing messages).
    pub fn poll_timeout(&self) -> Option<u64> {
        let t = self.timers.values().map(|t| t.deadline).min();
        Some(t.map_or(self.next_message_scan, |t| t.min(self.next_message_scan)))
    }

    /// Records where `agent` runs, as the embedder's directory says. A location learned with a
    /// higher epoch replaces it; a lower one never does.
    pub fn set_location(&mut self, agent: AgentId, node: NodeId, epoch: u64) {
        self.learn(agent, node, epoch);
    }

    /// Where this node would send a message for `agent` now.
    pub fn location(&self, agent: AgentId) -> Option<NodeId> {
        self.locations.get(&agent).map(|l| l.0)
    }

    /// Makes the next [`Node::handle_timeout`] send agents' outgoing messages at once (call it
    /// after an agent sent one).
    pub fn wake_messages(&mut self, now: u64) {
        self.next_message_scan = now;
    }

    /// Re-sends, gives up or expires whatever is due at `now`, and sends agents' messages.
    pub fn handle_timeout<H: AgentHost>(&mut self, host: &mut H, now: u64) {
        if now >= self.next_message_scan {
            self.next_message_scan = now + self.config.rto_ms;
            self.scan_messages(host);
        }
        let mut due: heapless::Vec<AgentId, N> = heapless::Vec::new();
        for (a, t) in self.timers.iter() {
            if t.deadline <= now {
                let _ = due.push(*a);
            }
        }
        for agent in due {
            let Some(timer) = self.timers.get(&agent).copied() else {
                continue;
            };
            let Some(rec) = self.journal.get(agent) else {
                self.timers.remove(&agent);
                continue;
            };
            let next = now + self.config.rto_ms;
            match rec.phase {
                Phase::Outgoing { target } => {
                    if timer.attempts >= self.config.max_attempts {
                        self.abort_outgoing(host, agent, rec.epoch, target);
                        continue;
                    }
                    let out = match (timer.with_dna, timer.info) {
                        (Some(with_dna), _) => Out::Transfer { with_dna },
                        (None, Some(info)) => Out::Control(OutBody::Offer(info)),
                        (None, None) => match host.describe(agent) {
                            Some(info) => Out::Control(OutBody::Offer(info)),
                            None => {
                                self.abort_outgoing(host, agent, rec.epoch, target);
                                continue;
                            }
                        },
                    };
                    self.stats.retransmits += 1;
                    self.queue(target, agent, rec.epoch, out);
                    if let Some(t) = self.timers.get_mut(&agent) {
                        t.deadline = next;
                        t.attempts = t.attempts.saturating_add(1);
                    }
                }
                Phase::Prepared { source } => {
                    self.stats.retransmits += 1;
                    self.queue(source, agent, rec.epoch, Out::Control(OutBody::Prepared));
                    self.bump(agent, next);
                }
                Phase::Moved {
                    target,
                    acked: false,
                } => {
                    self.stats.retransmits += 1;
                    self.queue(target, agent, rec.epoch, Out::Control(OutBody::Commit));
                    self.bump(agent, next);
                }
                Phase::Moved { acked: true, .. } => {
                    if self.journal.remove(agent).is_ok() {
                        self.timers.remove(&agent);
                    } else {
                        self.bump(agent, next);
                    }
                }
                Phase::Running => {
                    self.timers.remove(&agent);
                }
            }
        }
    }

    /// Takes the next frame to send, written at the start of `buf`. `Ok(None)`: nothing to
    /// send. An error drops that one frame (a timer re-sends what matters).
    pub fn poll_transmit<H: AgentHost>(
        &mut self,
        host: &mut H,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, MeshError> {
        let p = loop {
            let Some(p) = self.outbox.pop_front() else {
                return Ok(None);
            };
            // A snapshot is captured only while the hand-off is still open: a Transfer queued
            // before the decision is obsolete after it.
            if let Out::Transfer { .. } = p.out {
                let open = matches!(
                    self.journal.get(p.agent),
                    Some(Record { epoch, phase: Phase::Outgoing { target } })
                        if epoch == p.epoch && target == p.to
                );
                if !open {
                    continue;
                }
            }
            if let Out::Deliver { sender, seq } = p.out {
                let mut payload = [0u8; frame::MAX_MESSAGE_LEN];
                let Some((stream, n)) = message_payload(host, sender, p.agent, seq, &mut payload)
                else {
                    continue; // acknowledged meanwhile
                };
                let len = Repr {
                    agent: *p.agent.as_bytes(),
                    epoch: p.epoch,
                    body: Body::Deliver {
                        sender: *sender.as_bytes(),
                        stream,
                        seq,
                        payload: &payload[..n],
                    },
                }
                .emit(buf)?;
                return Ok(Some(Transmit { to: p.to, len }));
            }
            break p;
        };
        let agent = *p.agent.as_bytes();
        let len = match p.out {
            Out::Deliver { .. } => 0, // written above
            Out::Delivered {
                sender,
                seq,
                status,
            } => Repr {
                agent,
                epoch: p.epoch,
                body: Body::Delivered {
                    sender: *sender.as_bytes(),
                    seq,
                    status,
                },
            }
            .emit(buf)?,
            Out::Moved { node } => Repr {
                agent,
                epoch: p.epoch,
                body: Body::Moved {
                    node: *node.as_bytes(),
                },
            }
            .emit(buf)?,
            Out::Transfer { with_dna } => {
                frame::emit_transfer_with(buf, &agent, p.epoch, with_dna, |out| {
                    host.capture(p.agent, with_dna, out)
                })?
            }
            Out::Control(b) => {
                let body = match b {
                    OutBody::Offer(i) => Body::Offer {
                        dna_hash: i.dna_hash,
                        snapshot_len: i.snapshot_len,
                        dna_len: i.dna_len,
                    },
                    OutBody::HaveDna => Body::HaveDna,
                    OutBody::NeedDna => Body::NeedDna,
                    OutBody::Refuse(r) => Body::Refuse(r),
                    OutBody::Prepared => Body::Prepared,
                    OutBody::Commit => Body::Commit,
                    OutBody::Abort => Body::Abort,
                    OutBody::Done => Body::Done,
                };
                Repr {
                    agent,
                    epoch: p.epoch,
                    body,
                }
                .emit(buf)?
            }
        };
        Ok(Some(Transmit { to: p.to, len }))
    }

    /// Handles one frame from peer `from` (authenticated by the transport). A frame that does
    /// not decode is an error and changes nothing; a frame that is stale, duplicated or
    /// unexpected in the agent's phase is ignored (or answered), never an error.
    pub fn handle_frame<H: AgentHost>(
        &mut self,
        host: &mut H,
        now: u64,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), MeshError> {
        let repr = match Repr::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        if from == self.id {
            return Ok(());
        }
        let agent = AgentId::from_bytes(repr.agent);
        let p = repr.epoch;
        let rec = self.journal.get(agent);
        match repr.body {
            Body::Offer { dna_hash, .. } => self.on_offer(host, agent, p, from, rec, &dna_hash),
            Body::Transfer { with_dna, payload } => {
                self.on_transfer(host, now, agent, p, from, rec, with_dna, payload)
            }
            Body::Commit => self.on_commit(host, agent, p, from, rec),
            Body::Abort => self.on_abort(host, agent, p, from, rec),
            Body::HaveDna | Body::NeedDna => {
                let need = matches!(repr.body, Body::NeedDna);
                if let Some(Record {
                    epoch,
                    phase: Phase::Outgoing { target },
                }) = rec
                {
                    if epoch == p && target == from {
                        self.queue(from, agent, p, Out::Transfer { with_dna: need });
                        if let Some(t) = self.timers.get_mut(&agent) {
                            t.with_dna = Some(need);
                            t.deadline = now + self.config.rto_ms;
                            t.attempts = 0;
                        }
                    }
                }
            }
            Body::Prepared => self.on_prepared(host, now, agent, p, from, rec),
            Body::Refuse(_) => {
                if let Some(Record {
                    epoch,
                    phase: Phase::Outgoing { target },
                }) = rec
                {
                    if epoch == p && target == from {
                        self.abort_outgoing(host, agent, p, from);
                    }
                }
            }
            Body::Done => {
                if let Some(Record {
                    epoch,
                    phase:
                        Phase::Moved {
                            target,
                            acked: false,
                        },
                }) = rec
                {
                    if epoch == p
                        && target == from
                        && self
                            .journal
                            .put(
                                agent,
                                Record {
                                    epoch,
                                    phase: Phase::Moved {
                                        target,
                                        acked: true,
                                    },
                                },
                            )
                            .is_ok()
                    {
                        self.set_timer(agent, now + self.config.tombstone_ttl_ms, None, None);
                    }
                }
            }
            Body::Moved { node } => {
                // Believed only from a node this one sent the agent's messages to, or handed the
                // agent to itself (its tombstone points there).
                let handed_there = matches!(
                    rec,
                    Some(Record {
                        phase: Phase::Moved { target, .. },
                        ..
                    }) if target == from
                );
                if !handed_there && !self.was_asked(agent, from) {
                    self.stats.unsolicited += 1;
                    return Ok(());
                }
                let node = NodeId::from_bytes(node);
                if node != self.id {
                    self.learn(agent, node, p);
                }
            }
            Body::Deliver {
                sender,
                stream,
                seq,
                payload,
            } => self.on_deliver(
                host,
                agent,
                from,
                (AgentId::from_bytes(sender), stream),
                seq,
                payload,
                rec,
            ),
            Body::Delivered {
                sender,
                seq,
                status,
            } => {
                let sender = AgentId::from_bytes(sender);
                // Only the node the message went to can say what became of it.
                if self.asked.get(&(sender, agent)) != Some(&from) {
                    self.stats.unsolicited += 1;
                    return Ok(());
                }
                match status {
                    DeliveryStatus::Unknown => {
                        if self.locations.get(&agent).is_some_and(|l| l.0 == from) {
                            self.locations.remove(&agent);
                        }
                    }
                    _ => self.learn(agent, from, p),
                }
                let sender_here = matches!(
                    self.journal.get(sender),
                    Some(Record {
                        phase: Phase::Running,
                        ..
                    })
                );
                if status == DeliveryStatus::Accepted && sender_here {
                    host.acked(sender, agent, seq);
                }
            }
        }
        Ok(())
    }

    // ---- messages ----

    #[allow(clippy::too_many_arguments)]
    fn on_deliver<H: AgentHost>(
        &mut self,
        host: &mut H,
        to: AgentId,
        from: NodeId,
        (sender, stream): (AgentId, Stream),
        seq: u64,
        payload: &[u8],
        rec: Option<Record>,
    ) {
        let (epoch, out) = match rec {
            Some(Record {
                epoch,
                phase: Phase::Running,
            }) => {
                let status = self.deliver_local(host, to, from, (sender, stream), seq, payload);
                (
                    epoch,
                    Out::Delivered {
                        sender,
                        seq,
                        status,
                    },
                )
            }
            Some(Record {
                epoch,
                phase: Phase::Moved { target, .. },
            }) => {
                self.stats.moved_answers += 1;
                (epoch, Out::Moved { node: target })
            }
            Some(Record { epoch, .. }) => (
                epoch,
                Out::Delivered {
                    sender,
                    seq,
                    status: DeliveryStatus::Busy,
                },
            ),
            None => (
                0,
                Out::Delivered {
                    sender,
                    seq,
                    status: DeliveryStatus::Unknown,
                },
            ),
        };
        self.queue(from, to, epoch, out);
    }

    fn deliver_local<H: AgentHost>(
        &mut self,
        host: &mut H,
        to: AgentId,
        peer: NodeId,
        (sender, stream): (AgentId, Stream),
        seq: u64,
        payload: &[u8],
    ) -> DeliveryStatus {
        match host.deliver(to, peer, sender, stream, seq, payload) {
            Delivery::Accepted => {
                self.stats.messages_accepted += 1;
                DeliveryStatus::Accepted
            }
            Delivery::Duplicate => DeliveryStatus::Accepted,
            Delivery::OutOfOrder => DeliveryStatus::OutOfOrder,
            Delivery::Full => {
                self.stats.messages_full += 1;
                DeliveryStatus::Full
            }
        }
    }

    /// For every agent running here, sends its oldest unacknowledged message to each addressee
    /// (one in flight per pair keeps them in order), or delivers it locally.
    fn scan_messages<H: AgentHost>(&mut self, host: &mut H) {
        let mut running: heapless::Vec<AgentId, N> = heapless::Vec::new();
        self.journal.for_each(&mut |a, r| {
            if r.phase == Phase::Running {
                let _ = running.push(a);
            }
        });
        for sender in running {
            // The oldest message per addressee, at most 16 addressees per scan.
            let mut heads: heapless::Vec<(AgentId, u64), 16> = heapless::Vec::new();
            host.outgoing(sender, &mut |m| {
                if !heads.iter().any(|h| h.0 == m.to) {
                    let _ = heads.push((m.to, m.seq));
                }
            });
            for (to, seq) in heads {
                let local = self.journal.get(to);
                match local {
                    Some(Record {
                        phase: Phase::Running,
                        ..
                    }) => {
                        let mut payload = [0u8; frame::MAX_MESSAGE_LEN];
                        if let Some((stream, n)) =
                            message_payload(host, sender, to, seq, &mut payload)
                        {
                            let here = self.id;
                            let m = (sender, stream);
                            if self.deliver_local(host, to, here, m, seq, &payload[..n])
                                == DeliveryStatus::Accepted
                            {
                                host.acked(sender, to, seq);
                            }
                        }
                        continue;
                    }
                    Some(Record {
                        epoch,
                        phase: Phase::Moved { target, .. },
                    }) => self.learn(to, target, epoch),
                    _ => {}
                }
                let node = match self.locations.get(&to) {
                    Some(l) => Some(l.0),
                    None => host.locate(to),
                };
                if let Some(node) = node.filter(|n| *n != self.id) {
                    let epoch = self.locations.get(&to).map_or(0, |l| l.1);
                    self.ask(sender, to, node);
                    self.queue(node, to, epoch, Out::Deliver { sender, seq });
                }
            }
        }
    }

    /// Remembers that `sender`'s message for `to` went to `node`. Full: the entry of a pair whose
    /// sender no longer runs here is replaced, else any (the pair is asked again next scan).
    fn ask(&mut self, sender: AgentId, to: AgentId, node: NodeId) {
        if self.asked.insert((sender, to), node).is_ok() {
            return;
        }
        let journal = &self.journal;
        let victim = self
            .asked
            .keys()
            .find(|(s, _)| {
                !matches!(
                    journal.get(*s),
                    Some(Record {
                        phase: Phase::Running,
                        ..
                    })
                )
            })
            .or_else(|| self.asked.keys().next())
            .copied();
        if let Some(v) = victim {
            self.asked.remove(&v);
            let _ = self.asked.insert((sender, to), node);
        }
    }

    /// Whether a message for `agent` was sent to `node`.
    fn was_asked(&self, agent: AgentId, node: NodeId) -> bool {
        self.asked
            .iter()
            .any(|((_, to), n)| *to == agent && *n == node)
    }

    fn learn(&mut self, agent: AgentId, node: NodeId, epoch: u64) {
        match self.locations.get_mut(&agent) {
            Some(l) if l.1 > epoch => {}
            Some(l) => *l = (node, epoch),
            None => {
                if self.locations.insert(agent, (node, epoch)).is_err() {
                    // Full: forget the entry with the lowest epoch (a cache; the directory
                    // answers again).
                    if let Some(victim) = self
                        .locations
                        .iter()
                        .min_by_key(|(_, l)| l.1)
                        .map(|(a, _)| *a)
                    {
                        self.locations.remove(&victim);
                        let _ = self.locations.insert(agent, (node, epoch));
                    }
                }
            }
        }
    }

    // ---- target side ----

    /// Answers an Offer without keeping any state.
    fn on_offer<H: AgentHost>(
        &mut self,
        host: &mut H,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
        dna_hash: &[u8; 32],
    ) {
        if self.answered_by_record(agent, p, from, rec) {
            return;
        }
        let out = if host.has_dna(dna_hash) {
            OutBody::HaveDna
        } else {
            OutBody::NeedDna
        };
        self.queue(from, agent, p, Out::Control(out));
    }

    /// What a target answers an Offer or a Transfer for attempt `p` from what it already
    /// knows of the agent: a higher epoch fences it, the same attempt already prepared or run is
    /// answered again, a copy it runs or is sending refuses it, and a full prepared table
    /// refuses it as busy. Returns whether it answered (the caller then does nothing more).
    fn answered_by_record(
        &mut self,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) -> bool {
        if let Some(r) = rec {
            if r.epoch > p {
                self.stats.fenced += 1;
                return true;
            }
            match r.phase {
                Phase::Prepared { source } if r.epoch == p => {
                    if source == from {
                        self.queue(from, agent, p, Out::Control(OutBody::Prepared));
                    }
                    return true;
                }
                Phase::Running if r.epoch == p => {
                    self.queue(from, agent, p, Out::Control(OutBody::Done));
                    return true;
                }
                Phase::Running | Phase::Outgoing { .. } => {
                    self.refuse(from, agent, p, RefuseReason::Conflict);
                    return true;
                }
                _ => {}
            }
        }
        if !self.room_for_prepared(agent, rec) {
            self.refuse(from, agent, p, RefuseReason::Busy);
            return true;
        }
        false
    }

    #[allow(clippy::too_many_arguments)]
    fn on_transfer<H: AgentHost>(
        &mut self,
        host: &mut H,
        now: u64,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
        with_dna: bool,
        payload: &[u8],
    ) {
        if self.answered_by_record(agent, p, from, rec) {
            return;
        }
        if host.prepare(agent, p, with_dna, payload).is_err() {
            self.refuse(from, agent, p, RefuseReason::Invalid);
            return;
        }
        let prepared = Record {
            epoch: p,
            phase: Phase::Prepared { source: from },
        };
        if self.journal.put(agent, prepared).is_err() {
            host.discard(agent, p);
            self.refuse(from, agent, p, RefuseReason::Busy);
            return;
        }
        // An older in-doubt copy is superseded: a higher epoch exists only if that attempt was
        // decided without this node (aborted).
        if let Some(Record {
            epoch,
            phase: Phase::Prepared { .. },
        }) = rec
        {
            host.discard(agent, epoch);
        }
        self.set_timer(agent, now + self.config.rto_ms, None, None);
        self.queue(from, agent, p, Out::Control(OutBody::Prepared));
    }

    fn on_commit<H: AgentHost>(
        &mut self,
        host: &mut H,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) {
        let Some(r) = rec else {
            // A commit is sent only after this node prepared the agent durably; the record goes
            // away only once the agent ran here, moved on and its tombstone expired (an abort
            // never follows a commit). So the hand-off did complete here: confirm it.
            self.queue(from, agent, p, Out::Control(OutBody::Done));
            return;
        };
        match r.phase {
            Phase::Prepared { source } if r.epoch == p && source == from => {
                let running = Record {
                    epoch: p,
                    phase: Phase::Running,
                };
                if self.journal.put(agent, running).is_err() {
                    return; // the source re-sends the commit
                }
                self.timers.remove(&agent);
                host.run(agent, p);
                self.stats.adopted += 1;
                self.queue(from, agent, p, Out::Control(OutBody::Done));
            }
            _ if r.epoch > p || (r.epoch == p && r.phase == Phase::Running) => {
                self.queue(from, agent, p, Out::Control(OutBody::Done));
            }
            _ => self.stats.fenced += 1,
        }
    }

    fn on_abort<H: AgentHost>(
        &mut self,
        host: &mut H,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) {
        if let Some(Record {
            epoch,
            phase: Phase::Prepared { source },
        }) = rec
        {
            if epoch == p && source == from && self.journal.remove(agent).is_ok() {
                self.timers.remove(&agent);
                host.discard(agent, p);
            }
        }
    }

    // ---- source side ----

    fn on_prepared<H: AgentHost>(
        &mut self,
        host: &mut H,
        now: u64,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) {
        match rec {
            Some(Record {
                epoch,
                phase: Phase::Outgoing { target },
            }) if epoch == p && target == from => {
                // The decision. Durable before anyone hears of it.
                let moved = Record {
                    epoch: p,
                    phase: Phase::Moved {
                        target,
                        acked: false,
                    },
                };
                if self.journal.put(agent, moved).is_err() {
                    return; // undecided; the target asks again
                }
                host.release(agent);
                self.stats.committed += 1;
                self.set_timer(agent, now + self.config.rto_ms, None, None);
                self.queue(from, agent, p, Out::Control(OutBody::Commit));
            }
            Some(Record {
                epoch,
                phase: Phase::Moved { target, .. },
            }) if epoch == p && target == from => {
                self.queue(from, agent, p, Out::Control(OutBody::Commit));
            }
            // Not offered to `from` at `p`, or decided otherwise: never committed here. (A
            // forgotten tombstone means the target confirmed and runs; it ignores the Abort.)
            _ => self.queue(from, agent, p, Out::Control(OutBody::Abort)),
        }
    }

    fn abort_outgoing<H: AgentHost>(
        &mut self,
        host: &mut H,
        agent: AgentId,
        epoch: u64,
        target: NodeId,
    ) {
        let running = Record {
            epoch,
            phase: Phase::Running,
        };
        if self.journal.put(agent, running).is_err() {
            return; // still undecided; the timer tries again
        }
        self.timers.remove(&agent);
        host.run(agent, epoch);
        self.stats.aborted += 1;
        self.queue(target, agent, epoch, Out::Control(OutBody::Abort));
    }

    // ---- helpers ----

    fn room_for_prepared(&self, agent: AgentId, rec: Option<Record>) -> bool {
        if matches!(
            rec,
            Some(Record {
                phase: Phase::Prepared { .. },
                ..
            })
        ) {
            return true;
        }
        if !self.timers.contains_key(&agent) && self.timers.len() >= N {
            return false;
        }
        let mut in_doubt = 0usize;
        self.journal.for_each(&mut |_, r| {
            if matches!(r.phase, Phase::Prepared { .. }) {
                in_doubt += 1;
            }
        });
        in_doubt < self.config.max_in_doubt
    }

    fn refuse(&mut self, to: NodeId, agent: AgentId, p: u64, why: RefuseReason) {
        self.queue(to, agent, p, Out::Control(OutBody::Refuse(why)));
    }

    fn set_timer(
        &mut self,
        agent: AgentId,
        deadline: u64,
        with_dna: Option<bool>,
        info: Option<AgentInfo>,
    ) {
        let t = Timer {
            deadline,
            attempts: 0,
            with_dna,
            info,
        };
        // A full table was checked before any state that needs a timer was created; if it is
        // full anyway the record stays in the journal and `restart` finds it.
        let _ = self.timers.insert(agent, t);
    }

    fn bump(&mut self, agent: AgentId, deadline: u64) {
        if let Some(t) = self.timers.get_mut(&agent) {
            t.deadline = deadline;
        }
    }

    fn queue(&mut self, to: NodeId, agent: AgentId, epoch: u64, out: Out) {
        if to == self.id {
            return;
        }
        if self
            .outbox
            .push_back(Pending {
                to,
                agent,
                epoch,
                out,
            })
            .is_err()
        {
            self.stats.outbox_drops += 1;
        }
    }
}

/// Copies message `seq` from `sender` to `to` out of the host's outgoing messages; its stream
/// and length.
fn message_payload<H: AgentHost>(
    host: &mut H,
    sender: AgentId,
    to: AgentId,
    seq: u64,
    out: &mut [u8; frame::MAX_MESSAGE_LEN],
) -> Option<(Stream, usize)> {
    let mut found = None;
    host.outgoing(sender, &mut |m| {
        if found.is_none()
            && m.to == to
            && m.seq == seq
            && m.payload.len() <= frame::MAX_MESSAGE_LEN
        {
            out[..m.payload.len()].copy_from_slice(m.payload);
            found = Some((m.stream, m.payload.len()));
        }
    });
    found
}

#[cfg(test)]
mod tests {
    //! A hand-off and a message between two nodes with no allocator: fixed-size journals,
    //! nodes and a host that keeps one agent as a counter.
    use super::*;
    use crate::mesh::MemJournal;

    #[derive(Default)]
    struct Host {
        owned: Option<u64>,
        prepared: Option<(u64, u64)>,
        running: Option<u64>,
        inbox_last: u64,
        outbox: Option<(AgentId, u64)>,
    }

    const A: AgentId = AgentId::from_bytes([0xa; 16]);
    const B: AgentId = AgentId::from_bytes([0xb; 16]);
    const N1: NodeId = NodeId::from_bytes([1; 16]);
    const N2: NodeId = NodeId::from_bytes([2; 16]);

    impl AgentHost for Host {
        fn describe(&mut self, _: AgentId) -> Option<AgentInfo> {
            self.owned.map(|_| AgentInfo {
                dna_hash: [7; 32],
                snapshot_len: 8,
                dna_len: 0,
            })
        }
        fn has_dna(&mut self, _: &[u8; 32]) -> bool {
            true
        }
        fn stop(&mut self, _: AgentId) {
            self.running = None;
        }
        fn capture(&mut self, _: AgentId, _: bool, out: &mut [u8]) -> Result<usize, MeshError> {
            let v = self
                .owned
                .ok_or(MeshError::HostRefused { reason: "none" })?;
            out.get_mut(..8)
                .ok_or(MeshError::PayloadTooLarge)?
                .copy_from_slice(&v.to_le_bytes());
            Ok(8)
        }
        fn prepare(&mut self, _: AgentId, e: u64, _: bool, s: &[u8]) -> Result<(), MeshError> {
            let b: [u8; 8] = s.try_into().map_err(|_| MeshError::Truncated)?;
            self.prepared = Some((e, u64::from_le_bytes(b)));
            Ok(())
        }
        fn run(&mut self, _: AgentId, epoch: u64) {
            if let Some((e, v)) = self.prepared.take() {
                if e == epoch {
                    self.owned = Some(v);
                }
            }
            self.running = Some(epoch);
        }
        fn discard(&mut self, _: AgentId, _: u64) {
            self.prepared = None;
        }
        fn release(&mut self, _: AgentId) {
            self.owned = None;
            self.running = None;
        }
        fn deliver(
            &mut self,
            _: AgentId,
            _: NodeId,
            _: AgentId,
            _: Stream,
            seq: u64,
            _: &[u8],
        ) -> Delivery {
            if seq <= self.inbox_last {
                Delivery::Duplicate
            } else if seq == self.inbox_last + 1 {
                self.inbox_last = seq;
                Delivery::Accepted
            } else {
                Delivery::OutOfOrder
            }
        }
        fn outgoing(&mut self, _: AgentId, f: &mut dyn FnMut(Outgoing<'_>)) {
            if let Some((to, seq)) = self.outbox {
                f(Outgoing {
                    to,
                    stream: [0; 16],
                    seq,
                    payload: b"hi",
                });
            }
        }
        fn acked(&mut self, _: AgentId, _: AgentId, seq: u64) {
            if self.outbox.is_some_and(|o| o.1 == seq) {
                self.outbox = None;
            }
        }
    }

    type TestNode = Node<MemJournal<4>, 4>;

    fn pump(a: &mut TestNode, ha: &mut Host, b: &mut TestNode, hb: &mut Host, now: &mut u64) {
        let mut buf = [0u8; 128];
        for _ in 0..50 {
            while let Ok(Some(t)) = a.poll_transmit(ha, &mut buf) {
                assert_eq!(t.to, N2);
                b.handle_frame(hb, *now, N1, &buf[..t.len]).unwrap();
            }
            while let Ok(Some(t)) = b.poll_transmit(hb, &mut buf) {
                assert_eq!(t.to, N1);
                a.handle_frame(ha, *now, N2, &buf[..t.len]).unwrap();
            }
            *now += 100;
            a.handle_timeout(ha, *now);
            b.handle_timeout(hb, *now);
        }
    }

    #[test]
    fn hand_off_then_message_without_alloc() {
        let mut h1 = Host {
            owned: Some(41),
            ..Host::default()
        };
        let mut h2 = Host::default();
        let mut n1: TestNode = Node::new(N1, MemJournal::new(), Config::default());
        let mut n2: TestNode = Node::new(N2, MemJournal::new(), Config::default());
        n1.start(&mut h1, A).unwrap();
        assert_eq!(n1.start(&mut h1, A), Err(MeshError::AlreadyKnown));
        let mut now = 0;
        n1.migrate(&mut h1, now, A, N2).unwrap();
        assert_eq!(n1.migrate(&mut h1, now, A, N2), Err(MeshError::NotOwner));
        pump(&mut n1, &mut h1, &mut n2, &mut h2, &mut now);
        assert_eq!((h1.running, h1.owned), (None, None));
        assert_eq!((h2.running, h2.owned), (Some(1), Some(41)));
        assert_eq!(n1.stats().committed, 1);
        assert_eq!(n2.stats().adopted, 1);

        // B, started on node 1, sends to A: node 1's tombstone for A points to node 2.
        n1.start(&mut h1, B).unwrap();
        h1.outbox = Some((A, 1));
        n1.wake_messages(now);
        pump(&mut n1, &mut h1, &mut n2, &mut h2, &mut now);
        assert_eq!(h1.outbox, None, "acknowledged");
        assert_eq!(h2.inbox_last, 1, "delivered once");
        assert_eq!(n1.location(A), Some(N2));
        // Trust-list sequence numbers live in the same journal.
        n1.journal_mut().set_sequence(A, 9).unwrap();
        assert_eq!(n1.journal().sequence(A), Some(9));
    }

    #[test]
    fn garbage_changes_nothing() {
        let mut h = Host {
            owned: Some(1),
            ..Host::default()
        };
        let mut n: TestNode = Node::new(N1, MemJournal::new(), Config::default());
        n.start(&mut h, A).unwrap();
        assert!(n.handle_frame(&mut h, 0, N2, b"MZ").is_err());
        assert_eq!(n.stats().malformed, 1);
        assert_eq!(n.journal().get(A).map(|r| r.phase), Some(Phase::Running));
        assert_eq!(h.running, Some(0));
    }
}
