//! Retransmission, give-up and tombstone expiry.

use super::*;

impl<J: Journal, const N: usize, const Q: usize> Node<J, N, Q> {
    /// The earliest time [`Node::handle_timeout`] has work (timers of hand-offs, and the
    /// periodic scan of outgoing messages).
    pub fn poll_timeout(&self) -> Option<u64> {
        let t = self.timers.values().map(|t| t.deadline).min();
        let t = t.map_or(self.next_message_scan, |t| t.min(self.next_message_scan));
        Some(self.check_timeout().map_or(t, |c| c.min(t)))
    }

    /// Re-sends, gives up or expires whatever is due at `now`, and sends agents' messages.
    pub fn handle_timeout<H: AgentHost>(&mut self, host: &mut H, now: u64) {
        if self.check.is_some() {
            self.settle_all(host, now);
            self.query_peers(now);
        }
        if now >= self.next_message_scan {
            self.next_message_scan = now + self.config.rto_ms;
            self.scan_messages(host, now);
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
                        self.retry_abort_later(agent, now);
                        continue;
                    }
                    let out = match (timer.with_dna, timer.info) {
                        (Some(with_dna), _) => Out::Transfer { with_dna },
                        (None, Some(info)) => Out::Control(OutBody::Offer(info)),
                        (None, None) => match host.describe(agent) {
                            Some(info) => Out::Control(OutBody::Offer(info)),
                            None => {
                                self.abort_outgoing(host, agent, rec.epoch, target);
                                self.retry_abort_later(agent, now);
                                continue;
                            }
                        },
                    };
                    self.stats.retransmits += 1;
                    let transfer = matches!(out, Out::Transfer { .. });
                    self.queue(target, agent, rec.epoch, out);
                    if let Some(t) = self.timers.get_mut(&agent) {
                        t.attempts = t.attempts.saturating_add(1);
                        t.deadline = next;
                        if transfer {
                            // The size's allowance is added again when it leaves; no backoff
                            // on top (it made a silent target cost 36 s instead of 1.8 s).
                            t.sent_at = now;
                            t.sent_len = 0;
                        }
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

    pub(super) fn set_timer(
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
            sent_at: 0,
            sent_len: 0,
        };
        // A full table was checked before any state that needs a timer was created; if it is
        // full anyway the record stays in the journal and `restart` finds it.
        let _ = self.timers.insert(agent, t);
    }

    pub(super) fn bump(&mut self, agent: AgentId, deadline: u64) {
        if let Some(t) = self.timers.get_mut(&agent) {
            t.deadline = deadline;
        }
    }
}
