//! Messages between agents: delivery, acknowledgement and where addressees run.

use super::*;

impl<J: Journal, const N: usize, const Q: usize> Node<J, N, Q> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_deliver<H: AgentHost>(
        &mut self,
        host: &mut H,
        to: AgentId,
        from: NodeId,
        (sender, stream): (AgentId, Stream),
        seq: u64,
        payload: &[u8],
        rec: Option<Record>,
    ) {
        let held = self.held_stale(to);
        let (epoch, out) = match rec {
            // Held by the rollback check: wait (busy); found stale: not here (unknown), so
            // the sender looks for the real copy.
            Some(Record { epoch, .. }) if held.is_some() => (
                epoch,
                Out::Delivered {
                    sender,
                    seq,
                    status: if held == Some(true) {
                        DeliveryStatus::Unknown
                    } else {
                        DeliveryStatus::Busy
                    },
                },
            ),
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

    pub(super) fn deliver_local<H: AgentHost>(
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

    /// Delivers message `seq` from `sender`, running here, to `to`, running here too; whether
    /// it was accepted. Its own function (not inlined) so that the copy of the message, up to
    /// 4 KiB on the stack, is there only while a local delivery runs.
    #[inline(never)]
    fn deliver_own<H: AgentHost>(
        &mut self,
        host: &mut H,
        sender: AgentId,
        to: AgentId,
        seq: u64,
    ) -> bool {
        let mut payload = [0u8; frame::MAX_MESSAGE_LEN];
        match message_payload(host, sender, to, seq, &mut payload) {
            Some((stream, n)) => {
                let m = (sender, stream);
                self.deliver_local(host, to, self.id, m, seq, &payload[..n])
                    == DeliveryStatus::Accepted
            }
            None => false,
        }
    }

    /// For every agent running here, sends its oldest unacknowledged messages to each
    /// addressee, up to [`Config::window`] per pair (the addressee takes them in order), or
    /// delivers them locally; reports a message that has waited longer than
    /// [`Config::undelivered_ms`].
    pub(super) fn scan_messages<H: AgentHost>(&mut self, host: &mut H, now: u64) {
        let mut heads = heapless::LinearMap::<(AgentId, AgentId), Head, N>::new();
        let mut running: heapless::Vec<AgentId, N> = heapless::Vec::new();
        let held = &self.held;
        self.journal.for_each(&mut |a, r| {
            if r.phase == Phase::Running && held.get(&a).is_none_or(|h| h.tombstone) {
                let _ = running.push(a);
            }
        });
        let window = usize::from(self.config.window.max(1));
        // Messages delivered to an agent here: acknowledged to their sender only after the
        // host made the deliveries durable (one flush for the scan), as a `Delivered` frame
        // would be. A crash in between re-delivers them, refused as duplicates.
        let mut local_acks: heapless::Vec<(AgentId, AgentId, u64), 64> = heapless::Vec::new();
        for sender in running {
            // The oldest messages per addressee, at most 16 addressees and 64 messages per
            // scan, oldest first.
            let mut pairs: heapless::Vec<(AgentId, u64), 64> = heapless::Vec::new();
            let mut addressees: heapless::Vec<AgentId, 16> = heapless::Vec::new();
            host.outgoing(sender, &mut |m| {
                if !addressees.contains(&m.to) && addressees.push(m.to).is_err() {
                    return;
                }
                if pairs.iter().filter(|h| h.0 == m.to).count() < window {
                    let _ = pairs.push((m.to, m.seq));
                }
            });
            // Pairs whose delivery here stopped at a message: the later ones wait.
            let mut stopped: heapless::Vec<AgentId, 16> = heapless::Vec::new();
            // One directory lookup per addressee and scan, for all its messages: a directory
            // that names nodes in turn would otherwise send the window's messages to
            // different nodes, and the answers of all but the last would be unsolicited.
            let mut looked_up: heapless::LinearMap<AgentId, Option<NodeId>, 16> =
                heapless::LinearMap::new();
            for (i, &(to, seq)) in pairs.iter().enumerate() {
                if !pairs[..i].iter().any(|p| p.0 == to) {
                    self.watch(&mut heads, now, sender, to, seq);
                }
                if stopped.contains(&to) {
                    continue;
                }
                let local = self.journal.get(to);
                match local {
                    // Held by the rollback check: delivered once it runs.
                    Some(_) if self.held_stale(to) == Some(false) => continue,
                    Some(Record {
                        phase: Phase::Running,
                        ..
                    }) if !self.is_held(to) => {
                        let accepted = self.deliver_own(host, sender, to, seq);
                        if !accepted || local_acks.push((sender, to, seq)).is_err() {
                            let _ = stopped.push(to);
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
                    // No node known: ask the host's directory, backing off while lookups
                    // keep answering `Unknown`.
                    None if self.lookups.get(&to).is_some_and(|l| l.next > now) => None,
                    None => match looked_up.get(&to) {
                        Some(n) => *n,
                        None => {
                            self.stats.lookups += 1;
                            let n = host.locate(to);
                            let _ = looked_up.insert(to, n);
                            n
                        }
                    },
                };
                if let Some(node) = node.filter(|n| *n != self.id) {
                    // Each message once per round trip: what is in flight to this node is
                    // not sent again on every scan (see `Head`).
                    let head = heads.get(&(sender, to));
                    let resend = head.as_ref().is_none_or(|h| {
                        h.sent_to != Some(node)
                            || now >= h.sent_at.saturating_add(self.config.rto_ms)
                    });
                    if !resend && head.as_ref().is_some_and(|h| seq <= h.sent_up_to) {
                        continue;
                    }
                    let epoch = self.locations.get(&to).map_or(0, |l| l.1);
                    self.ask(sender, to, node);
                    if self.try_queue(node, to, epoch, Out::Deliver { sender, seq }) {
                        if let Some(h) = heads.get_mut(&(sender, to)) {
                            if resend {
                                // The whole window goes again: the timer restarts.
                                h.sent_up_to = 0;
                                h.sent_at = now;
                                h.sent_to = Some(node);
                            }
                            h.sent_up_to = h.sent_up_to.max(seq);
                        }
                    } else if let Some(h) = heads.get_mut(&(sender, to)) {
                        // Not queued: the rest of the window waits for the next scan.
                        h.sent_to = None;
                    }
                }
            }
        }
        self.heads = heads;
        if !local_acks.is_empty() && host.flush().is_ok() {
            for (sender, to, seq) in local_acks {
                host.acked(sender, to, seq);
            }
        }
    }

    /// A message of `sender` to `to` counted in flight did not leave: the pair's messages go
    /// again at the next scan.
    pub(super) fn not_sent(&mut self, sender: AgentId, to: AgentId) {
        if let Some(h) = self.heads.get_mut(&(sender, to)) {
            h.sent_to = None;
        }
    }

    /// Carries the pair's head into this scan's table and reports it once it has waited too
    /// long. Pairs beyond the table's room are not watched (the table holds `N`, as many as
    /// the pairs `ask` remembers).
    fn watch(
        &mut self,
        heads: &mut heapless::LinearMap<(AgentId, AgentId), Head, N>,
        now: u64,
        sender: AgentId,
        to: AgentId,
        seq: u64,
    ) {
        let mut head = match self.heads.get(&(sender, to)) {
            Some(h) if h.seq == seq => *h,
            // Progress: the messages after the old head stay in flight, and their
            // retransmission timer restarts (as TCP's does on a new acknowledgement).
            Some(h) => Head {
                seq,
                since: now,
                reported: false,
                sent_at: now,
                ..*h
            },
            None => Head {
                seq,
                since: now,
                reported: false,
                sent_up_to: 0,
                sent_at: now,
                sent_to: None,
            },
        };
        let waited = now.saturating_sub(head.since);
        if !head.reported && waited >= self.config.undelivered_ms {
            head.reported = true;
            self.stats.undelivered += 1;
            let sent_to = self
                .asked
                .get(&(sender, to))
                .copied()
                .or_else(|| self.locations.get(&to).map(|l| l.0));
            self.notice(Notice::Undelivered(Stalled {
                sender,
                to,
                seq,
                sent_to,
                waited_ms: waited,
            }));
        }
        let _ = heads.insert((sender, to), head);
    }

    /// Remembers that `sender`'s message for `to` went to `node`. Full: the entry of a pair whose
    /// sender no longer runs here is replaced, else any (the pair is asked again next scan).
    pub(super) fn ask(&mut self, sender: AgentId, to: AgentId, node: NodeId) {
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
    pub(super) fn was_asked(&self, agent: AgentId, node: NodeId) -> bool {
        self.asked
            .iter()
            .any(|((_, to), n)| *to == agent && *n == node)
    }

    /// A node answered that it does not know `agent`: the next lookup waits twice as long as
    /// the last, from one retransmission timeout up to [`MAX_LOOKUP_BACKOFF`] of them.
    fn back_off(&mut self, agent: AgentId, now: u64) {
        let unknown = self
            .lookups
            .get(&agent)
            .map_or(0, |l| l.unknown)
            .saturating_add(1);
        let factor = 1u64 << (unknown - 1).min(MAX_LOOKUP_BACKOFF.trailing_zeros() as u8);
        let next = now.saturating_add(self.config.rto_ms.saturating_mul(factor));
        let l = Lookup { next, unknown };
        if self.lookups.insert(agent, l).is_err() {
            // Full: the entry due soonest makes room (it would look again first anyway).
            if let Some(v) = self
                .lookups
                .iter()
                .min_by_key(|(_, l)| l.next)
                .map(|(a, _)| *a)
            {
                self.lookups.remove(&v);
                let _ = self.lookups.insert(agent, l);
            }
        }
    }

    pub(super) fn learn(&mut self, agent: AgentId, node: NodeId, epoch: u64) {
        self.lookups.remove(&agent);
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

    /// A redirect: `agent` runs on `node` now. Believed only from a node this one sent the
    /// agent's messages to, or handed the agent to itself (its tombstone points there).
    pub(super) fn on_moved(
        &mut self,
        agent: AgentId,
        p: u64,
        from: NodeId,
        rec: Option<Record>,
        node: NodeId,
    ) {
        let handed_there = matches!(
            rec,
            Some(Record {
                phase: Phase::Moved { target, .. },
                ..
            }) if target == from
        );
        if !handed_there && !self.was_asked(agent, from) {
            self.stats.unsolicited += 1;
            return;
        }
        if node != self.id {
            self.learn(agent, node, p);
        }
    }

    /// What became of message `seq` from `sender` to `agent`. Only the node the message went to
    /// can say.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_delivered<H: AgentHost>(
        &mut self,
        host: &mut H,
        now: u64,
        agent: AgentId,
        p: u64,
        from: NodeId,
        sender: AgentId,
        seq: u64,
        status: DeliveryStatus,
    ) {
        if self.asked.get(&(sender, agent)) != Some(&from) {
            self.stats.unsolicited += 1;
            return;
        }
        if status != DeliveryStatus::Accepted {
            // Refused (full, out of order, busy): it and the messages after it go again at the
            // next scan. The ones before it stay in flight: out of order usually means an
            // earlier one is still on its way (batches travel on separate streams); if it was
            // lost, the retransmission timeout sends the window again.
            if let Some(h) = self.heads.get_mut(&(sender, agent)) {
                h.sent_up_to = h.sent_up_to.min(seq.saturating_sub(1));
            }
        }
        match status {
            DeliveryStatus::Unknown => {
                if self.locations.get(&agent).is_some_and(|l| l.0 == from) {
                    self.locations.remove(&agent);
                }
                self.back_off(agent, now);
            }
            _ => {
                self.lookups.remove(&agent);
                self.learn(agent, from, p)
            }
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

/// Copies message `seq` from `sender` to `to` out of the host's outgoing messages; its stream
/// and length.
pub(super) fn message_payload<H: AgentHost>(
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
