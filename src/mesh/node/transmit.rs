//! Writing queued frames out.

use super::*;

impl<J: Journal, const N: usize, const Q: usize> Node<J, N, Q> {
    /// Takes the next frame to send, written at the start of `buf`. `Ok(None)`: nothing to
    /// send. An error drops that one frame (a timer re-sends what matters). `buf` must hold
    /// [`frame::MAX_DELIVER_LEN`] bytes (4,166) for messages, and a whole snapshot for a
    /// hand-off: a message that does not fit is dropped with `BufferTooSmall`, every time.
    ///
    /// Before a frame leaves, the journal and the host make their changes durable
    /// ([`Journal::sync`], [`AgentHost::flush`]): one group commit each covers every frame
    /// queued since the last. If either fails, every queued frame is dropped and the error
    /// returned: none leaves while a change it may depend on could still be lost.
    pub fn poll_transmit<H: AgentHost>(
        &mut self,
        host: &mut H,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, MeshError> {
        if !self.outbox.is_empty() {
            if let Err(e) = self.journal.sync().and_then(|()| host.flush()) {
                self.outbox.clear();
                return Err(e);
            }
        }
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
                // Written straight from the host's outbox: no copy of the message on the stack.
                let mut emitted = None;
                host.outgoing(sender, &mut |m| {
                    // A host's message longer than a frame carries is never sent (as before).
                    if emitted.is_none()
                        && m.to == p.agent
                        && m.seq == seq
                        && m.payload.len() <= frame::MAX_MESSAGE_LEN
                    {
                        emitted = Some(
                            Repr {
                                agent: *p.agent.as_bytes(),
                                epoch: p.epoch,
                                body: Body::Deliver {
                                    sender: *sender.as_bytes(),
                                    stream: m.stream,
                                    seq,
                                    payload: m.payload,
                                },
                            }
                            .emit(buf),
                        );
                    }
                });
                let Some(len) = emitted else {
                    continue; // acknowledged meanwhile
                };
                if len.is_err() {
                    // Not sent: the pair goes again at the next scan, not an rto later.
                    self.not_sent(sender, p.agent);
                }
                return Ok(Some(Transmit {
                    to: p.to,
                    len: len?,
                }));
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
                let len = frame::emit_transfer_with(buf, &agent, p.epoch, with_dna, |out| {
                    host.capture(p.agent, with_dna, out)
                })?;
                // The retransmission waits for a snapshot this size to get through and be
                // checked and kept: a healthy link never carries it twice.
                let allowance = self.transfer_allowance(len, p.to);
                if let Some(t) = self.timers.get_mut(&p.agent) {
                    if t.sent_len == 0 {
                        t.sent_len = u32::try_from(len).unwrap_or(u32::MAX);
                        t.deadline = t.deadline.saturating_add(allowance);
                    }
                }
                len
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
                    OutBody::EpochQuery { generation, boot } => {
                        Body::EpochQuery { generation, boot }
                    }
                    OutBody::EpochAnswer {
                        generation,
                        boot,
                        seen_generation,
                        state,
                    } => Body::EpochAnswer {
                        generation,
                        boot,
                        seen_generation,
                        state,
                    },
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
}
