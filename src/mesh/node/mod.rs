//! The hand-off state machine: events in, frames out.
//!
//! What the node holds and the commands it takes are here; the hand-off's two sides, messages,
//! timers and the writing of frames are in the submodules.

mod handoff;
mod host;
mod messages;
mod rollback;
#[cfg(test)]
mod tests;
mod timers;
mod transmit;

use super::frame::{self, Body, DeliveryStatus, RefuseReason, Repr};
use super::journal::{Journal, Phase, Record};
use super::{HostRefusal, MeshError};
use crate::{AgentId, NodeId};

/// Frames a node queues before [`Node::poll_transmit`] takes them. When the queue is full a new
/// frame is dropped, as a lossy network would drop it; every frame the protocol depends on is
/// re-sent by a timer, so this costs time, never safety.
pub const OUTBOX: usize = 32;

/// The longest wait between two lookups of an addressee that keep answering `Unknown`, in
/// retransmission timeouts ([`Config::rto_ms`]); the waits double from one up to this.
pub const MAX_LOOKUP_BACKOFF: u64 = 8;

pub use host::{AgentHost, AgentInfo, Delivery, Outgoing, Stream};
pub use rollback::{Notice, CHECK_PEERS, NOTICES};

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
    /// A message still unacknowledged this long after it became its pair's oldest is reported
    /// once ([`Notice::Undelivered`], [`Stats::undelivered`]), milliseconds. It keeps being
    /// sent.
    pub undelivered_ms: u64,
    /// How long a restart's rollback check ([`Node::restart_checked`]) waits for every peer's
    /// answer before it runs an agent anyway (and reports it), milliseconds.
    pub rollback_check_ms: u64,
    /// Never run an agent after a restart until every peer asked has answered, and run none
    /// once a peer shows the whole journal is older than a restart it saw.
    pub strict_rollback: bool,
    /// Messages in flight per sender–addressee pair: each scan sends up to this many of the
    /// pair's oldest unacknowledged messages (the addressee takes them in order and answers
    /// each; one group commit of its host covers them all). 1 sends one at a time; 0 counts
    /// as 1. The sender's outbox bounds it too (`InboxLimits::outbox`).
    pub window: u8,
    /// The slowest a Transfer is expected to be, milliseconds per MiB of its frame, from being
    /// handed to the transport to the target's `Prepared` (the wire, the target's checks and
    /// its durable prepare): a Transfer's retransmission waits this much longer than `rto_ms`
    /// per MiB, or twice the rate measured on earlier transfers to the same target if that is
    /// slower (at most [`MAX_MEASURED_FACTOR`] times this), so a large snapshot is not sent
    /// again while the target is still at work (see [`Node::transfer_allowance`]). 500:
    /// 2 MiB/s.
    pub transfer_ms_per_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rto_ms: 200,
            max_attempts: 8,
            tombstone_ttl_ms: 60_000,
            max_in_doubt: 4,
            undelivered_ms: 10_000,
            rollback_check_ms: 2_000,
            strict_rollback: false,
            window: 8,
            transfer_ms_per_mib: 500,
        }
    }
}

/// The longest a Transfer's retransmission is put off for its size (10 minutes), whatever the
/// rate measured.
pub const MAX_TRANSFER_ALLOWANCE_MS: u64 = 600_000;

/// A measured rate counts for at most this many times [`Config::transfer_ms_per_mib`]: a
/// target that answers just before each deadline cannot ratchet the allowance up (each answer
/// would raise it a quarter) until a lost transfer waits minutes.
pub const MAX_MEASURED_FACTOR: u64 = 8;

/// How many targets' rates a node remembers.
const MEASURED_PEERS: usize = 8;

/// Transfers shorter than this (1 MiB) are not measured: their time is mostly round trips and
/// fixed costs, not bytes.
const MEASURED_TRANSFER_MIN: u32 = 1 << 20;

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
    /// Hand-off frames refused or ignored because their epoch is below the agent's fence (or at
    /// it without matching the journal): stale duplicates, never prepared or run.
    pub fenced: u64,
    /// Agents refused because the fence table was full (or could not be written).
    pub fence_full: u64,
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
    /// Lookups of an addressee's node through [`AgentHost::locate`] (none known, or the last
    /// one answered `Unknown`).
    pub lookups: u64,
    /// Messages reported as not delivered within [`Config::undelivered_ms`].
    pub undelivered: u64,
    /// Agents not run after a restart because a peer had seen them at a higher epoch (the
    /// journal was rolled back).
    pub rolled_back: u64,
    /// Agents run after a restart without every peer's answer (rollback not ruled out).
    pub rollback_unchecked: u64,
    /// Restarts whose whole journal a peer showed to be older than an earlier restart.
    pub journal_rollbacks: u64,
    /// Journal writes of the generation that failed.
    pub journal_errors: u64,
    /// Records a restart found beyond the node's `N` (a journal written by a node with larger
    /// tables): not resumed by this node.
    pub records_beyond: u64,
}

/// A message that has waited longer than [`Config::undelivered_ms`] to be acknowledged
/// ([`Notice::Undelivered`]): the embedder logs it. The node keeps sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// The sending agent (running on this node).
    pub sender: AgentId,
    /// The addressee.
    pub to: AgentId,
    /// The message's number in the sender's stream to it.
    pub seq: u64,
    /// Where it was last sent, if anywhere (`None`: no node is known for the addressee).
    pub sent_to: Option<NodeId>,
    /// How long it has waited, milliseconds.
    pub waited_ms: u64,
}

/// The oldest unacknowledged message of a (sender, addressee) pair, as the last scan saw it,
/// and what of the pair is in flight: messages up to `sent_up_to` went to `sent_to`, and are
/// sent again only when that node is no longer where the addressee is, from a message the
/// addressee refused (full, out of order, busy) on, or all of them one retransmission timeout
/// after the last progress (`sent_at`: the head's first send, or the acknowledgement that made
/// it the head).
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    since: u64,
    reported: bool,
    sent_up_to: u64,
    sent_at: u64,
    sent_to: Option<NodeId>,
}

/// Backoff of lookups for an addressee with no known node: the next lookup is not before
/// `next`; `unknown` answers in a row so far.
#[derive(Debug, Clone, Copy)]
struct Lookup {
    next: u64,
    unknown: u8,
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
    EpochQuery {
        generation: u64,
        boot: u64,
    },
    EpochAnswer {
        generation: u64,
        boot: u64,
        seen_generation: u64,
        state: frame::SeenState,
    },
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    to: NodeId,
    agent: AgentId,
    epoch: u64,
    out: Out,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Timer {
    deadline: u64,
    attempts: u8,
    /// Source side: the DNA answer, once the target gave it.
    with_dna: Option<bool>,
    info: Option<AgentInfo>,
    /// Source side: when the Transfer was queued, and its frame's length once it left (0
    /// before), to measure the transfer rate.
    sent_at: u64,
    sent_len: u32,
}

/// One node of the mesh: the hand-off protocol for up to `N` agents with a timer each.
///
/// Sans-IO: feed it [`Node::handle_frame`], [`Node::handle_timeout`] and commands, drain
/// [`Node::poll_transmit`], wake it at [`Node::poll_timeout`]. The [`Journal`] is the truth about
/// ownership; the node's own tables (timers, outbox) are volatile and rebuilt by
/// [`Node::restart`]. `Q` frames wait for [`Node::poll_transmit`] at most ([`OUTBOX`] unless
/// given: the QUIC driver's node queues `quic::DRIVER_OUTBOX`).
#[derive(Debug)]
pub struct Node<J: Journal, const N: usize, const Q: usize = OUTBOX> {
    id: NodeId,
    journal: J,
    config: Config,
    timers: heapless::LinearMap<AgentId, Timer, N>,
    outbox: heapless::Deque<Pending, Q>,
    /// Where addressees run, as last learned, with the epoch that told us.
    locations: heapless::LinearMap<AgentId, (NodeId, u64), N>,
    /// The node each (sender, addressee) pair's message was last sent to: only that node's
    /// `Delivered` or `Moved` is believed.
    asked: heapless::LinearMap<(AgentId, AgentId), NodeId, N>,
    /// Each pair's oldest message, to report one that waits too long.
    heads: heapless::LinearMap<(AgentId, AgentId), Head, N>,
    notices: heapless::Deque<Notice, NOTICES>,
    /// Agents a restart's rollback check holds (not run), and the check itself.
    held: heapless::LinearMap<AgentId, rollback::Held, N>,
    check: Option<rollback::Check>,
    /// What each peer's queries said of its boots.
    generations: heapless::LinearMap<NodeId, rollback::Boots, CHECK_PEERS>,
    /// Addressees whose lookup answered `Unknown`: when to look again.
    lookups: heapless::LinearMap<AgentId, Lookup, N>,
    next_message_scan: u64,
    /// Milliseconds per MiB measured on earlier transfers to each target (a moving average).
    measured_ms_per_mib: heapless::LinearMap<NodeId, u64, MEASURED_PEERS>,
    stats: Stats,
}

impl<J: Journal, const N: usize, const Q: usize> Node<J, N, Q> {
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
            heads: heapless::LinearMap::new(),
            notices: heapless::Deque::new(),
            held: heapless::LinearMap::new(),
            check: None,
            generations: heapless::LinearMap::new(),
            lookups: heapless::LinearMap::new(),
            next_message_scan: 0,
            measured_ms_per_mib: heapless::LinearMap::new(),
            stats: Stats::default(),
        }
    }

    /// How much longer than `rto_ms` a Transfer frame of `len` bytes to `target` is given
    /// before it is sent again: `len` at [`Config::transfer_ms_per_mib`], or at twice the rate
    /// measured on earlier transfers of 1 MiB or more to that target if that is slower, at most
    /// [`MAX_TRANSFER_ALLOWANCE_MS`]. A small agent's transfer gets almost nothing more.
    pub fn transfer_allowance(&self, len: usize, target: NodeId) -> u64 {
        let measured = self.measured_ms_per_mib.get(&target).copied().unwrap_or(0);
        let per_mib = self
            .config
            .transfer_ms_per_mib
            .max(measured.saturating_mul(2));
        let ms = (len as u128 * u128::from(per_mib)) >> 20;
        (ms.min(u128::from(MAX_TRANSFER_ALLOWANCE_MS))) as u64
    }

    /// `target` answered a Transfer that left once, `len` bytes queued at `sent_at`: the rate
    /// enters that target's moving average (three parts old, one part new), each sample and
    /// the average at most [`MAX_MEASURED_FACTOR`] times the configured rate. Karn's rule: a
    /// retransmitted transfer is not measured, nor one too short to say much.
    pub(super) fn measure_transfer(&mut self, now: u64, timer: Timer, target: NodeId) {
        if timer.attempts > 0 || timer.sent_len < MEASURED_TRANSFER_MIN {
            return;
        }
        let cap = self
            .config
            .transfer_ms_per_mib
            .saturating_mul(MAX_MEASURED_FACTOR);
        let took = now.saturating_sub(timer.sent_at);
        let sample = (((u128::from(took) << 20) / u128::from(timer.sent_len)) as u64).min(cap);
        let avg = match self.measured_ms_per_mib.get(&target) {
            Some(old) => (old.saturating_mul(3).saturating_add(sample)) / 4,
            None => sample,
        };
        if self
            .measured_ms_per_mib
            .insert(target, avg.min(cap))
            .is_err()
        {
            // Full: the target measured fastest makes room (it would get the configured
            // rate anyway).
            if let Some(k) = self
                .measured_ms_per_mib
                .iter()
                .min_by_key(|(_, v)| **v)
                .map(|(k, _)| *k)
            {
                self.measured_ms_per_mib.remove(&k);
                let _ = self.measured_ms_per_mib.insert(target, avg.min(cap));
            }
        }
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
        self.check.is_none()
            && self.outbox.is_empty()
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
        // An id this node has seen before never starts again at epoch 0.
        if self.journal.get(agent).is_some() || self.journal.sequence(agent).is_some() {
            return Err(MeshError::AlreadyKnown);
        }
        if !self.room_for_record(agent) {
            return Err(MeshError::JournalFull);
        }
        self.raise_fence(agent, 0)?;
        let running = Record {
            epoch: 0,
            phase: Phase::Running,
        };
        self.write_now(|j| j.put(agent, running))?;
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
        if self.is_held(agent) {
            return Err(MeshError::Busy);
        }
        if self.timers.len() >= N && !self.timers.contains_key(&agent) {
            return Err(MeshError::Busy);
        }
        let info = host.describe(agent).ok_or(MeshError::HostRefused {
            reason: HostRefusal::UnknownAgent,
        })?;
        self.raise_fence(agent, epoch)?;
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

    /// Records where `agent` runs, as the embedder's directory says. A location learned with a
    /// higher epoch replaces it; a lower one never does.
    pub fn set_location(&mut self, agent: AgentId, node: NodeId, epoch: u64) {
        self.learn(agent, node, epoch);
    }

    /// Where this node would send a message for `agent` now.
    pub fn location(&self, agent: AgentId) -> Option<NodeId> {
        self.locations.get(&agent).map(|l| l.0)
    }

    /// The frames [`Node::poll_transmit`] gave for `node` did not leave (the transport
    /// dropped them): the messages in flight to it go again at the next scan instead of one
    /// retransmission timeout later.
    pub fn not_delivered_to(&mut self, node: NodeId) {
        for (_, h) in self.heads.iter_mut() {
            if h.sent_to == Some(node) {
                h.sent_to = None;
            }
        }
    }

    /// Frames the queue can still take before [`Node::poll_transmit`] empties it (of `Q`). A
    /// driver that handles many frames before it transmits stops taking more when this runs
    /// low: each may queue an answer, and one that finds the queue full is
    /// dropped (the sender's timer sends its frame again, a retransmission timeout later).
    pub fn outbox_room(&self) -> usize {
        Q - self.outbox.len()
    }

    /// Makes the next [`Node::handle_timeout`] send agents' outgoing messages at once (call it
    /// after an agent sent one).
    pub fn wake_messages(&mut self, now: u64) {
        self.next_message_scan = now;
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
        // An agent the rollback check holds takes part in no hand-off until it is cleared:
        // offers are refused as busy, answers ignored (their senders retransmit).
        if self.is_held(agent) {
            match repr.body {
                Body::Offer { .. } | Body::Transfer { .. } => {
                    self.refuse(from, agent, p, RefuseReason::Busy);
                    return Ok(());
                }
                Body::Deliver { .. }
                | Body::Delivered { .. }
                | Body::Moved { .. }
                | Body::EpochQuery { .. }
                | Body::EpochAnswer { .. } => {}
                _ => return Ok(()),
            }
        }
        match repr.body {
            Body::Offer { dna_hash, .. } => self.on_offer(host, agent, p, from, rec, &dna_hash),
            Body::Transfer { with_dna, payload } => {
                self.on_transfer(host, now, agent, p, from, rec, with_dna, payload)
            }
            Body::Commit => self.on_commit(host, agent, p, from, rec),
            Body::Abort => self.on_abort(host, agent, p, from, rec),
            Body::HaveDna => self.on_dna_answer(now, agent, p, from, rec, false),
            Body::NeedDna => self.on_dna_answer(now, agent, p, from, rec, true),
            Body::Prepared => self.on_prepared(host, now, agent, p, from, rec),
            Body::Refuse(_) => self.on_refuse(host, agent, p, from, rec),
            Body::Done => self.on_done(now, agent, p, from, rec),
            Body::Moved { node } => self.on_moved(agent, p, from, rec, NodeId::from_bytes(node)),
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
            } => self.on_delivered(
                host,
                now,
                agent,
                p,
                from,
                AgentId::from_bytes(sender),
                seq,
                status,
            ),
            Body::EpochQuery { generation, boot } => {
                self.on_epoch_query(agent, from, generation, boot)
            }
            Body::EpochAnswer {
                generation,
                boot,
                seen_generation,
                state,
            } => self.on_epoch_answer(
                host,
                now,
                agent,
                (p, state),
                from,
                (generation, boot),
                seen_generation,
            ),
        }
        Ok(())
    }

    /// A change the host is about to act on (run, release or discard a copy), or that a restart
    /// relies on: durable before it returns. One sync covers it and every deferred change
    /// before it (`Journal::sync`).
    fn write_now(
        &mut self,
        change: impl FnOnce(&mut J) -> Result<(), MeshError>,
    ) -> Result<(), MeshError> {
        change(&mut self.journal)?;
        self.journal.sync()
    }

    /// Durably raises the agent's fence to `epoch` (never lowers it). Called only with the
    /// epoch of a snapshot the host verified or of the node's own decision. An error (the table
    /// is full, or the write failed) is counted; the caller refuses what needed the fence.
    fn raise_fence(&mut self, agent: AgentId, epoch: u64) -> Result<(), MeshError> {
        if self.journal.sequence(agent).is_some_and(|f| f >= epoch) {
            return Ok(());
        }
        let epoch = epoch.min(crate::MAX_EPOCH);
        self.journal.set_sequence(agent, epoch).inspect_err(|_| {
            self.stats.fence_full += 1;
        })
    }

    fn refuse(&mut self, to: NodeId, agent: AgentId, p: u64, why: RefuseReason) {
        self.queue(to, agent, p, Out::Control(OutBody::Refuse(why)));
    }

    fn queue(&mut self, to: NodeId, agent: AgentId, epoch: u64, out: Out) {
        let _ = self.try_queue(to, agent, epoch, out);
    }

    /// Queues a frame for `to`; whether it was queued (not for this node itself, and not
    /// dropped because the queue was full).
    fn try_queue(&mut self, to: NodeId, agent: AgentId, epoch: u64, out: Out) -> bool {
        if to == self.id {
            return false;
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
            return false;
        }
        true
    }
}
