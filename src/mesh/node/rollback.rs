//! The rollback check of a restart: before an agent runs again, the peers say whether they
//! have seen it at a higher epoch (docs/protocol.md, "Rollback").
//!
//! A journal restored from an older copy (a backup, a VM snapshot, a flash sector that lost its
//! last writes) holds records that are out of date: an agent recorded as running here may have
//! moved on since. Nothing in the node's own files can show that; the peers' fences can, since
//! every epoch after the one recorded here was prepared or decided on a peer. The journal's
//! generation (raised at every restart, remembered by the peers that were asked) shows a
//! journal older than its last restart even when no agent moved.

use super::frame::SeenState;
use super::*;

/// At most this many peers are asked in a rollback check (the first ones given).
pub const CHECK_PEERS: usize = 32;

/// Something the embedder should log ([`Node::poll_notice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// A message has waited longer than [`Config::undelivered_ms`]; it is still sent.
    Undelivered(Stalled),
    /// After a restart, peer `by` had seen the agent at epoch `seen`, above the `epoch` this
    /// node's journal holds: the journal was rolled back, and the agent is not run here.
    RolledBack {
        /// The agent.
        agent: AgentId,
        /// The epoch of this node's record.
        epoch: u64,
        /// The higher epoch the peer has seen.
        seen: u64,
        /// The peer.
        by: NodeId,
    },
    /// After a restart, the agent runs although not every peer answered within
    /// [`Config::rollback_check_ms`]: a rollback could not be ruled out (with
    /// [`Config::strict_rollback`] it would have waited).
    Unchecked {
        /// The agent.
        agent: AgentId,
        /// The epoch it runs at.
        epoch: u64,
        /// Peers that answered, of those asked.
        answered: u8,
        /// Peers asked.
        asked: u8,
    },
    /// Peer `by` had been asked by this node with generation `seen` already, at least the
    /// `generation` this restart has: the whole journal is older than a restart the peer saw.
    JournalRolledBack {
        /// This restart's generation.
        generation: u64,
        /// The generation the peer had seen.
        seen: u64,
        /// The peer.
        by: NodeId,
    },
}

/// Reports held until [`Node::poll_notice`] takes them; more are counted in [`Stats`] only.
pub const NOTICES: usize = 8;

/// An agent the check holds: not run until its peers answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// The epoch it would run at.
    pub(super) epoch: u64,
    /// The target of the hand-off a restart aborts, for an `Outgoing` record.
    outgoing: Option<NodeId>,
    /// The source of a `Prepared` record: the agent is not run but its hand-off resumed (the
    /// source asked again) once cleared; until then a Commit is ignored.
    prepared_from: Option<NodeId>,
    /// Peers (bit `i` for `Check::peers[i]`) that hold a prepared copy at `epoch` and were
    /// told to discard it (after this node's abort was durable): the agent does not run, not
    /// even after the deadline, until each one's answer shows the copy gone.
    discarding: u32,
    /// Peers that answered (bit `i` for `Check::peers[i]`).
    answered: u32,
    /// A peer had seen it above `epoch`: it stays stopped here.
    pub(super) stale: bool,
    /// A tombstone (`Moved`): nothing runs or waits for it; the peers' answers only raise its
    /// fence to the highest epoch they have seen, which a rolled-back journal may have lost
    /// (a stale duplicate above the old fence would otherwise be prepared and run).
    pub(super) tombstone: bool,
}

/// What a node knows of a peer's boots, from its queries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Boots {
    /// The latest boot that asked, and its generation.
    boot: u64,
    generation: u64,
    /// The highest generation of the boots before it.
    before: u64,
}

/// The check in progress.
#[derive(Debug, Clone)]
pub(super) struct Check {
    generation: u64,
    boot: u64,
    peers: heapless::Vec<NodeId, CHECK_PEERS>,
    /// Not strict: agents still unanswered at this time run anyway.
    deadline: u64,
    next_query: u64,
    /// A peer had seen this node's generation (the journal is older than a restart).
    journal_rolled_back: bool,
    /// Whether the generation is durable: no query goes out before, or a crash could bring
    /// the node back with the old generation that peers then take for a rollback.
    durable: bool,
}

impl<J: Journal, const N: usize, const Q: usize> Node<J, N, Q> {
    /// [`Node::restart`], with the rollback check: the journal's generation is raised, and
    /// every agent that would run again (`Running`, or `Outgoing`, whose hand-off a restart
    /// aborts) or could be committed here (`Prepared`) is held until each of `peers` (at most
    /// [`CHECK_PEERS`]) says it has not seen the agent at a higher epoch. An agent a peer has
    /// seen higher is never run here ([`Notice::RolledBack`], [`Stats::rolled_back`]).
    /// Without every answer after [`Config::rollback_check_ms`] the agent runs (or its
    /// hand-off resumes) and that is reported ([`Notice::Unchecked`]), unless
    /// [`Config::strict_rollback`], which waits for every peer; but never while a peer that
    /// answered holds a prepared copy at the epoch this node would run. With no peers there is
    /// nothing to ask: agents run at once, reported as unchecked (strict: never).
    ///
    /// `boot` is a number that differs between boots (random, or a clock reading): a journal
    /// rolled back by exactly one restart repeats a generation, and only the boot number tells
    /// the two restarts apart.
    pub fn restart_checked<H: AgentHost>(
        id: NodeId,
        journal: J,
        config: Config,
        host: &mut H,
        (now, boot): (u64, u64),
        peers: &[NodeId],
    ) -> Self {
        let mut node = Node::new(id, journal, config);
        let generation = node.journal.generation().saturating_add(1);
        // Until the generation is durable no query goes out (handle_timeout writes it again).
        let durable = node.write_now(|j| j.set_generation(generation)).is_ok();
        if !durable {
            node.stats.journal_errors += 1;
        }
        let mut asked = heapless::Vec::new();
        for p in peers.iter().filter(|p| **p != id) {
            if !asked.contains(p) && asked.push(*p).is_err() {
                break;
            }
        }
        node.check = Some(Check {
            generation,
            boot,
            peers: asked,
            deadline: now.saturating_add(config.rollback_check_ms),
            next_query: now,
            journal_rolled_back: false,
            durable,
        });
        node.resume(host, now, true);
        node.settle_all(host, now);
        node
    }

    /// Holds an agent the check must clear before it runs.
    pub(super) fn hold(
        &mut self,
        agent: AgentId,
        epoch: u64,
        outgoing: Option<NodeId>,
        prepared_from: Option<NodeId>,
    ) {
        let held = Held {
            epoch,
            outgoing,
            prepared_from,
            discarding: 0,
            answered: 0,
            stale: false,
            tombstone: false,
        };
        // The table has room for every record the restart picked up (both hold `N`).
        let _ = self.held.insert(agent, held);
    }

    /// Asks the peers about a tombstone too, to raise its fence (it is not held).
    pub(super) fn ask_about_tombstone(&mut self, agent: AgentId, epoch: u64) {
        self.hold(agent, epoch, None, None);
        if let Some(h) = self.held.get_mut(&agent) {
            h.tombstone = true;
        }
    }

    /// Whether the agent is held by the check (not yet cleared, or found stale).
    pub(super) fn is_held(&self, agent: AgentId) -> bool {
        self.held.get(&agent).is_some_and(|h| !h.tombstone)
    }

    /// Whether a held agent was found stale: `None` if it is not held.
    pub(super) fn held_stale(&self, agent: AgentId) -> Option<bool> {
        self.held
            .get(&agent)
            .filter(|h| !h.tombstone)
            .map(|h| h.stale)
    }

    /// Asks the peers that have not answered, once per retransmission timeout.
    pub(super) fn query_peers(&mut self, now: u64) {
        let Some(check) = self.check.as_mut() else {
            return;
        };
        if now < check.next_query {
            return;
        }
        check.next_query = now.saturating_add(self.config.rto_ms);
        if !check.durable {
            let generation = check.generation;
            if self.write_now(|j| j.set_generation(generation)).is_err() {
                self.stats.journal_errors += 1;
                return;
            }
            if let Some(c) = self.check.as_mut() {
                c.durable = true;
            }
        }
        let Some(check) = self.check.as_ref() else {
            return;
        };
        let (generation, boot, peers) = (check.generation, check.boot, check.peers.clone());
        let mut queries: heapless::Vec<(NodeId, AgentId, u64), Q> = heapless::Vec::new();
        'all: for (agent, h) in self.held.iter().filter(|(_, h)| !h.stale) {
            for (i, p) in peers.iter().enumerate() {
                if h.answered & (1 << i) == 0 && queries.push((*p, *agent, h.epoch)).is_err() {
                    break 'all; // the rest next round
                }
            }
        }
        for (p, agent, epoch) in queries {
            let query = OutBody::EpochQuery { generation, boot };
            self.queue(p, agent, epoch, Out::Control(query));
        }
    }

    /// A peer asks what this node has seen of `agent`: its fence, or its record's epoch if
    /// higher, and the highest generation the peer asked with in another boot. Remembered in
    /// memory only: a rollback of the peer across this node's own restart goes unseen here
    /// (its agents' epochs are still answered from the journal).
    pub(super) fn on_epoch_query(
        &mut self,
        agent: AgentId,
        from: NodeId,
        generation: u64,
        boot: u64,
    ) {
        let fence = self.journal.sequence(agent).unwrap_or(0);
        let rec = self.journal.get(agent);
        let seen = fence.max(rec.map_or(0, |r| r.epoch));
        // Decided: this node owns the agent at that epoch, or handed it on at that epoch to
        // someone else than the asker (handing it to the asker is the asker's own commit).
        let state = match rec {
            Some(r) if r.epoch == seen => match r.phase {
                Phase::Running | Phase::Outgoing { .. } => SeenState::Decided,
                Phase::Moved { target, .. } if target != from => SeenState::Decided,
                Phase::Moved { .. } => SeenState::Nothing,
                Phase::Prepared { .. } => SeenState::Prepared,
            },
            _ => SeenState::Nothing,
        };
        let seen_generation = match self.generations.get_mut(&from) {
            Some(b) if b.boot == boot => {
                b.generation = b.generation.max(generation);
                b.before
            }
            // A new boot, above every one seen: the latest now.
            Some(b) if generation > b.generation => {
                let before = b.before.max(b.generation);
                *b = Boots {
                    boot,
                    generation,
                    before,
                };
                before
            }
            // Another boot at or below the latest: an old boot's query delivered late (its
            // answer is ignored there, that boot is over) or a restart from a journal older
            // than the latest boot's, which this answer shows. Not remembered.
            Some(b) => b.generation.max(b.before),
            None => {
                // Full: the peer is not remembered.
                let _ = self.generations.insert(
                    from,
                    Boots {
                        boot,
                        generation,
                        before: 0,
                    },
                );
                0
            }
        };
        let answer = OutBody::EpochAnswer {
            generation,
            boot,
            seen_generation,
            state,
        };
        self.queue(from, agent, seen, Out::Control(answer));
    }

    /// A peer's answer: `seen` is the highest epoch of `agent` it has seen, `state` what it
    /// holds at that epoch (see [`Body::EpochAnswer`]).
    ///
    /// The agent is stale here if the peer has seen it above the epoch this node would run it
    /// at, or at that epoch as a decision: the peer runs it, offers it, or handed it on at that
    /// epoch, which this node's record cannot explain. A peer that holds it prepared at that
    /// epoch is the target of the hand-off the restart aborts: it is told to discard it
    /// (`Abort`) and asked again, and the agent runs only once no target holds that copy. A
    /// journal rolled back past a commit may have sent a `Commit` that is still on its way;
    /// arriving after the discard it finds nothing to run (the target answers `Done`), and
    /// arriving before, it makes the target's next answer a decision.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_epoch_answer<H: AgentHost>(
        &mut self,
        host: &mut H,
        now: u64,
        agent: AgentId,
        (seen, state): (u64, SeenState),
        from: NodeId,
        (generation, boot): (u64, u64),
        seen_generation: u64,
    ) {
        let Some(check) = self.check.as_ref() else {
            return;
        };
        // An answer to an earlier restart's check says nothing of this journal.
        if generation != check.generation || boot != check.boot {
            return;
        }
        let Some(i) = check.peers.iter().position(|p| *p == from) else {
            return;
        };
        // Generations count restarts: one from the wire above the epochs' bound is not a
        // peer's memory, and would pin this journal's generation at the top for good.
        if seen_generation > crate::MAX_EPOCH {
            self.stats.malformed += 1;
            return;
        }
        let (this_generation, reported) = (check.generation, check.journal_rolled_back);
        if seen_generation >= this_generation {
            if !reported {
                if let Some(c) = self.check.as_mut() {
                    c.journal_rolled_back = true;
                }
                self.stats.journal_rollbacks += 1;
                self.notice(Notice::JournalRolledBack {
                    generation: this_generation,
                    seen: seen_generation,
                    by: from,
                });
            }
            // The next restart must be above what every peer saw.
            let next = seen_generation.saturating_add(1);
            if seen_generation >= self.journal.generation()
                && self.write_now(|j| j.set_generation(next)).is_err()
            {
                self.stats.journal_errors += 1;
            }
        }
        let strict_stale = self.check.as_ref().is_some_and(|c| c.journal_rolled_back)
            && self.config.strict_rollback;
        let Some(h) = self.held.get(&agent).copied() else {
            return;
        };
        if h.stale {
            return;
        }
        let epoch = h.epoch;
        if h.tombstone {
            // What the journal may have lost: the fence, raised to an epoch the peer holds a
            // record of (a decision or a prepared copy; an authenticated peer's answer,
            // capped at MAX_EPOCH like every fence). Not to a bare fence: that may be this
            // node's own, echoed back (its fence is above its record after a crash between
            // the two writes of `migrate`), and would then make it take its own agent for
            // stale at its next restart.
            let recorded = state != SeenState::Nothing;
            if recorded && seen > epoch && self.raise_fence(agent, seen).is_err() {
                return; // asked again next round
            }
            if let Some(h) = self.held.get_mut(&agent) {
                h.answered |= 1 << i;
            }
            self.settle(host, now, agent);
            return;
        }
        if seen == epoch && state == SeenState::Prepared && h.prepared_from.is_none() {
            // A peer holds a prepared copy at the epoch this node would run it at: the target
            // of an offer made here at that epoch, which the restart aborts (or which an
            // earlier check aborted before a crash). The abort first, durable (Abort is never
            // sent while the record could still commit), then the discard; the agent stays
            // held until this peer's answer shows the copy gone, deadline or not.
            if h.outgoing.is_some() {
                let running = Record {
                    epoch,
                    phase: Phase::Running,
                };
                if self.write_now(|j| j.put(agent, running)).is_err() {
                    return; // asked again next round
                }
                self.stats.aborted += 1;
            }
            if let Some(h) = self.held.get_mut(&agent) {
                h.outgoing = None;
                h.discarding |= 1 << i;
                // Asked again until an answer shows the copy gone (this one may be a late
                // duplicate of an answer from before the discard).
                h.answered &= !(1 << i);
            }
            self.queue(from, agent, epoch, Out::Control(OutBody::Abort));
            return; // not answered until the copy is gone
        }
        let Some(h) = self.held.get_mut(&agent) else {
            return;
        };
        h.discarding &= !(1 << i);
        h.answered |= 1 << i;
        // A decision at this epoch by any node but the source of a held Prepared record (whose
        // own state at that epoch the resumed hand-off settles) cannot be explained by this
        // journal.
        let decided_elsewhere =
            seen == epoch && state == SeenState::Decided && h.prepared_from != Some(from);
        if seen > epoch && h.prepared_from.is_some() && !strict_stale {
            // A prepared copy some node has seen past: its hand-off was aborted by the source
            // (which needs no answer to abort) and the agent moved on, or it was committed here
            // and moved on after the copy of this journal was taken. Either way it must never
            // run: it is discarded, as an Abort would (the fence stays).
            if self.write_now(|j| j.remove(agent)).is_ok() {
                self.held.remove(&agent);
                host.discard(agent, epoch);
                self.stats.fenced += 1;
            }
            return;
        }
        if seen > epoch || decided_elsewhere || strict_stale {
            self.mark_stale(agent, epoch, seen, from);
            return;
        }
        self.settle(host, now, agent);
    }

    fn mark_stale(&mut self, agent: AgentId, epoch: u64, seen: u64, by: NodeId) {
        if let Some(h) = self.held.get_mut(&agent) {
            h.stale = true;
        }
        self.stats.rolled_back += 1;
        self.notice(Notice::RolledBack {
            agent,
            epoch,
            seen,
            by,
        });
    }

    /// Runs `agent` if every peer answered (or, not strict, the deadline passed).
    fn settle<H: AgentHost>(&mut self, host: &mut H, now: u64, agent: AgentId) {
        let Some(check) = self.check.as_ref() else {
            return;
        };
        let Some(h) = self.held.get(&agent).copied() else {
            return;
        };
        if h.stale || h.discarding != 0 {
            return;
        }
        let asked = check.peers.len();
        let all = if asked == 0 {
            0
        } else {
            u32::MAX >> (32 - asked)
        };
        // With no peer to ask the check is never complete: the agent runs unchecked at once,
        // or, strict, never.
        let complete = asked > 0 && h.answered & all == all;
        let late = (asked == 0 || now >= check.deadline) && !self.config.strict_rollback;
        if h.tombstone {
            // Its timers run as after any restart; only the asking ends here.
            if complete || now >= check.deadline || asked == 0 {
                self.held.remove(&agent);
            }
            return;
        }
        if !complete && !late {
            return;
        }
        if !complete {
            self.stats.rollback_unchecked += 1;
            self.notice(Notice::Unchecked {
                agent,
                epoch: h.epoch,
                answered: (h.answered & all).count_ones() as u8,
                asked: asked as u8,
            });
        }
        self.held.remove(&agent);
        match (h.prepared_from, h.outgoing) {
            // In doubt: ask the source again, as a plain restart does.
            (Some(_), _) => self.set_timer(agent, now, None, None),
            (None, None) => host.run(agent, h.epoch),
            (None, Some(target)) => {
                self.abort_outgoing(host, agent, h.epoch, target);
                self.retry_abort_later(agent, now);
            }
        }
    }

    /// Settles every held agent that can be, and ends the check when none is left but the
    /// stale ones.
    pub(super) fn settle_all<H: AgentHost>(&mut self, host: &mut H, now: u64) {
        if self.check.is_none() {
            return;
        }
        let agents: heapless::Vec<AgentId, N> = self
            .held
            .iter()
            .filter(|(_, h)| !h.stale)
            .map(|(a, _)| *a)
            .collect();
        for a in agents {
            self.settle(host, now, a);
        }
        if self.held.values().all(|h| h.stale) {
            self.check = None;
        }
    }

    /// When the check next has work: its next round of queries, or its deadline.
    pub(super) fn check_timeout(&self) -> Option<u64> {
        let c = self.check.as_ref()?;
        if self.config.strict_rollback {
            Some(c.next_query)
        } else {
            Some(c.next_query.min(c.deadline))
        }
    }

    pub(super) fn notice(&mut self, n: Notice) {
        // A full queue drops the report; the counters keep it.
        let _ = self.notices.push_back(n);
    }

    /// The next thing to log, oldest first: stalled messages and the rollback check's findings.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Whether a restart's rollback check is still waiting for peers.
    pub fn is_checking(&self) -> bool {
        self.check.is_some()
    }
}
