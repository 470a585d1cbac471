//! The hand-off's two sides: the source offers, transfers and commits; the target prepares
//! and runs. Both resume from the journal after a crash ([`Node::restart`]).

use super::*;

impl<J: Journal, const N: usize, const Q: usize> Node<J, N, Q> {
    /// A node coming back from a crash: resumes what its journal says. Agents it owns run
    /// again; a hand-off it offered but had not decided is aborted (it never sent a commit);
    /// in-doubt hand-offs ask their source again; unconfirmed commits are re-sent. The
    /// journal's generation is raised. Nothing checks that the journal is not an older copy:
    /// [`Node::restart_checked`] asks the peers first.
    pub fn restart<H: AgentHost>(
        id: NodeId,
        journal: J,
        config: Config,
        host: &mut H,
        now: u64,
    ) -> Self {
        let mut node = Node::new(id, journal, config);
        let generation = node.journal.generation().saturating_add(1);
        if node.write_now(|j| j.set_generation(generation)).is_err() {
            node.stats.journal_errors += 1;
        }
        node.resume(host, now, false);
        node
    }

    /// What a restart does with each record; with `checking`, agents that would run are held
    /// for the rollback check instead.
    pub(super) fn resume<H: AgentHost>(&mut self, host: &mut H, now: u64, checking: bool) {
        // A journal that cannot sync (poisoned by a failed write) may show changes that never
        // reached the medium: nothing is run, released or discarded on its word. The embedder
        // reopens it (`LogJournal::is_poisoned`) and restarts from what is there.
        if self.journal.sync().is_err() {
            self.stats.journal_errors += 1;
            return;
        }
        let node = self;
        let config = node.config;
        let mut pending: heapless::Vec<(AgentId, Record), N> = heapless::Vec::new();
        let mut beyond = 0u64;
        node.journal.for_each(&mut |a, r| {
            // The node never writes more than `N` records (`room_for_record`); a journal
            // written by a node with larger tables can hold more, and those are counted.
            if pending.push((a, r)).is_err() {
                beyond += 1;
            }
        });
        node.stats.records_beyond += beyond;
        {
            // A prepared copy stays if the journal says it is in doubt, or that it runs: the
            // commit is recorded in the journal before the host commits the copy, so a crash
            // between the two leaves `Running` at its epoch and the copy still prepared, and
            // it is the one `run` must find.
            let journal = &node.journal;
            host.prune(&|agent, epoch| {
                matches!(
                    journal.get(agent),
                    Some(Record { epoch: e, phase: Phase::Prepared { .. } | Phase::Running })
                        if e == epoch
                )
            });
        }
        for (agent, rec) in pending {
            match rec.phase {
                Phase::Running if checking => node.hold(agent, rec.epoch, None, None),
                Phase::Prepared { source } if checking => {
                    node.hold(agent, rec.epoch, None, Some(source))
                }
                Phase::Running => host.run(agent, rec.epoch),
                Phase::Outgoing { target } if checking => {
                    node.hold(agent, rec.epoch, Some(target), None)
                }
                Phase::Outgoing { target } => {
                    node.abort_outgoing(host, agent, rec.epoch, target);
                    node.retry_abort_later(agent, now);
                }
                Phase::Prepared { .. } => {
                    node.set_timer(agent, now, None, None);
                    if checking {
                        node.ask_about_tombstone(agent, rec.epoch);
                    }
                }
                Phase::Moved { acked, .. } => {
                    // The agent left: whatever copy of it the host still keeps (a crash in
                    // `release`, after the decision) goes. Not while checking: a journal
                    // older than the host's copies is what the check looks for, and the copy
                    // may be the agent's newest.
                    if !checking {
                        host.release(agent);
                    }
                    let at = match acked {
                        false => now,
                        true => now + config.tombstone_ttl_ms,
                    };
                    node.set_timer(agent, at, None, None);
                    if checking {
                        node.ask_about_tombstone(agent, rec.epoch);
                    }
                }
            }
        }
    }

    /// Answers an Offer without keeping any state.
    pub(super) fn on_offer<H: AgentHost>(
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
    pub(super) fn answered_by_record(
        &mut self,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) -> bool {
        // The fence: below it nothing is prepared; at it, only what the journal record matches
        // (the same attempt, answered again below). The source hears `Stale`, so it stops
        // re-sending; it aborts only if that attempt is still open there, which a fence above it
        // rules out (epochs rise only with ownership).
        let at_record = rec.is_some_and(|r| r.epoch == p);
        let fenced = match self.journal.sequence(agent) {
            Some(f) => p < f || (p == f && !at_record),
            None => false,
        };
        if fenced || rec.is_some_and(|r| r.epoch > p) {
            self.stats.fenced += 1;
            self.refuse(from, agent, p, RefuseReason::Stale);
            return true;
        }
        if let Some(r) = rec {
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
                Phase::Moved { .. } if r.epoch == p => {
                    // Handed on at this very epoch: the frame is a stale duplicate.
                    self.stats.fenced += 1;
                    self.refuse(from, agent, p, RefuseReason::Stale);
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
    pub(super) fn on_transfer<H: AgentHost>(
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
        // Verified: the fence rises before the record says Prepared, so that no later abort or
        // expiry of the record can let this epoch be prepared again.
        if self.raise_fence(agent, p).is_err() {
            host.discard(agent, p);
            self.refuse(from, agent, p, RefuseReason::Busy);
            return;
        }
        let prepared = Record {
            epoch: p,
            phase: Phase::Prepared { source: from },
        };
        // Deferred: the Prepared answer waits for the sync before frames leave.
        if self.journal.put(agent, prepared).is_err() {
            host.discard(agent, p);
            self.refuse(from, agent, p, RefuseReason::Busy);
            return;
        }
        // An older in-doubt copy is superseded: a higher epoch exists only if that attempt was
        // decided without this node (aborted). Discarded once the new record is durable.
        if let Some(Record {
            epoch,
            phase: Phase::Prepared { .. },
        }) = rec
        {
            if self.journal.sync().is_err() {
                return; // poisoned: the node restarts, and its restart prunes the copy
            }
            host.discard(agent, epoch);
        }
        self.set_timer(agent, now + self.config.rto_ms, None, None);
        self.queue(from, agent, p, Out::Control(OutBody::Prepared));
    }

    pub(super) fn on_commit<H: AgentHost>(
        &mut self,
        host: &mut H,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) {
        let Some(r) = rec else {
            // Nothing to run. A commit for an attempt this node prepared (at or below the fence)
            // is confirmed, so the source stops re-sending: its record went away after the
            // agent ran here and moved on, or after an abort the source's commit crossed. A
            // commit above the fence was never prepared here and is ignored.
            if self.journal.sequence(agent).is_some_and(|f| p <= f) {
                self.queue(from, agent, p, Out::Control(OutBody::Done));
            } else {
                self.stats.fenced += 1;
            }
            return;
        };
        match r.phase {
            Phase::Prepared { source } if r.epoch == p && source == from => {
                let running = Record {
                    epoch: p,
                    phase: Phase::Running,
                };
                if self.write_now(|j| j.put(agent, running)).is_err() {
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

    pub(super) fn on_abort<H: AgentHost>(
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
            if epoch == p && source == from && self.write_now(|j| j.remove(agent)).is_ok() {
                self.timers.remove(&agent);
                host.discard(agent, p);
            }
        }
    }

    pub(super) fn on_prepared<H: AgentHost>(
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
                if self.write_now(|j| j.put(agent, moved)).is_err() {
                    return; // undecided; the target asks again
                }
                if let Some(t) = self.timers.get(&agent).copied() {
                    self.measure_transfer(now, t, target);
                }
                host.release(agent);
                self.stats.committed += 1;
                self.set_timer(agent, now + self.config.rto_ms, None, None);
                self.queue(from, agent, p, Out::Control(OutBody::Commit));
            }
            // Committed, and the target has not confirmed: the decision again.
            Some(Record {
                epoch,
                phase:
                    Phase::Moved {
                        target,
                        acked: false,
                    },
            }) if epoch == p && target == from => {
                self.queue(from, agent, p, Out::Control(OutBody::Commit));
            }
            // Not offered to `from` at `p`, or decided otherwise: never committed here. A
            // target that confirmed (`Done`: it runs the agent) and asks again is a late
            // duplicate, which the running target ignores, or a target whose journal was
            // rolled back to before the commit, which must not run that old copy: both get
            // Abort, as a forgotten tombstone does.
            _ => self.queue(from, agent, p, Out::Control(OutBody::Abort)),
        }
    }

    pub(super) fn abort_outgoing<H: AgentHost>(
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
        if self.write_now(|j| j.put(agent, running)).is_err() {
            return; // still undecided; the timer tries again
        }
        self.timers.remove(&agent);
        host.run(agent, epoch);
        self.stats.aborted += 1;
        self.queue(target, agent, epoch, Out::Control(OutBody::Abort));
    }

    /// If `agent` is still offered after an abort whose journal write failed, arms its timer
    /// so that [`Node::handle_timeout`] tries the abort again (the agent is stopped until then).
    pub(super) fn retry_abort_later(&mut self, agent: AgentId, now: u64) {
        if let Some(Record {
            phase: Phase::Outgoing { .. },
            ..
        }) = self.journal.get(agent)
        {
            self.set_timer(agent, now + self.config.rto_ms, None, None);
            if let Some(t) = self.timers.get_mut(&agent) {
                t.attempts = self.config.max_attempts;
            }
        }
    }

    /// Whether the journal may hold a record for `agent`: it has one, or it holds fewer than
    /// `N`. A journal may hold more records than the node's tables (a `FileJournal` opened
    /// with a larger capacity), but a restart picks up only `N` of them: a record beyond would
    /// never run again.
    pub(super) fn room_for_record(&self, agent: AgentId) -> bool {
        if self.journal.get(agent).is_some() {
            return true;
        }
        let mut records = 0usize;
        self.journal.for_each(&mut |_, _| records += 1);
        records < N
    }

    pub(super) fn room_for_prepared(&self, agent: AgentId, rec: Option<Record>) -> bool {
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
        if !self.room_for_record(agent) {
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

    /// Source side: the target's answer to an Offer (whether it needs the DNA); the Transfer
    /// follows.
    pub(super) fn on_dna_answer(
        &mut self,
        now: u64,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
        need: bool,
    ) {
        if let Some(Record {
            epoch,
            phase: Phase::Outgoing { target },
        }) = rec
        {
            // Answered already (a duplicate, or the answer to a re-sent Offer): the Transfer
            // is on its way and its timer runs; queueing it again would send the snapshot
            // twice.
            let answered = self
                .timers
                .get(&agent)
                .is_some_and(|t| t.with_dna.is_some());
            if epoch == p && target == from && !answered {
                self.queue(from, agent, p, Out::Transfer { with_dna: need });
                if let Some(t) = self.timers.get_mut(&agent) {
                    t.with_dna = Some(need);
                    // Plus the transfer's allowance for its size, once it leaves
                    // (`poll_transmit`).
                    t.deadline = now + self.config.rto_ms;
                    t.attempts = 0;
                    t.sent_at = now;
                    t.sent_len = 0;
                }
            }
        }
    }

    /// Source side: the target refused the open hand-off; it is aborted.
    pub(super) fn on_refuse<H: AgentHost>(
        &mut self,
        host: &mut H,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) {
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

    /// Source side: the target confirmed the commit; the tombstone is kept until it expires.
    pub(super) fn on_done(
        &mut self,
        now: u64,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
    ) {
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
}
