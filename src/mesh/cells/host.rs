//! [`AgentHost`] for [`Cells`]: what the protocol asks of the host, step by step.

use super::{Base, Cells, Event, Gate, Keeper, Prepared, Refusal, Running, MAX_PROBES};
use crate::mesh::wasm::{self, SharedInbox};
use crate::mesh::{AgentHost, AgentInfo, Delivery, Inbox, MeshError, Outgoing, Stream};
use crate::migration::{Container, DecodeOptions, SECTION_CALL, SECTION_INBOX};
use crate::runtime::LiveAgent;
use crate::{AgentId, AgentState, NodeId};
use alloc::vec::Vec;

/// The copy `run` starts: its instance; its base (`Some`: arrived here, with the memory it came
/// with or none; `None`: the base it had); `kept`: the keeper holds it as it is, with this many
/// events after its saved copy (nothing to save).
struct ToRun {
    live: LiveAgent<SharedInbox>,
    base: Option<Option<Base>>,
    kept: Option<u32>,
}

fn refused(r: Refusal) -> MeshError {
    match r {
        Refusal::BufferTooSmall => MeshError::PayloadTooLarge,
        _ => MeshError::HostRefused { reason: r.kind() },
    }
}

impl<K: Keeper, G: Gate> Cells<K, G> {
    /// Checks a container for the hand-off of `agent` at `epoch` and decodes it into an
    /// instance that does not run; saves it with the keeper.
    fn prepare_inner(
        &mut self,
        agent: AgentId,
        epoch: u64,
        with_dna: bool,
        bytes: &[u8],
    ) -> Result<(), Refusal> {
        // What the frame says and what the container says must be one hand-off; checked before
        // the gate, which records the epoch it admits: a container sent under another frame's
        // epoch must not use up its own.
        let c = Container::new_checked(bytes, &self.limits)
            .map_err(|e| Refusal::Container(e.into()))?;
        let route = c.route();
        if c.agent_id() != agent || route.epoch != epoch || route.target != self.node {
            return Err(Refusal::NotThisHandOff);
        }
        // Refused before the gate too, so the epoch is not used up and the source may offer
        // the agent elsewhere.
        if c.section(SECTION_CALL).is_some() && !self.mid_call {
            return Err(Refusal::SuspendedCall);
        }
        let inbox = Inbox::decode(c.section(SECTION_INBOX).ok_or(Refusal::NoInbox)?)
            .map_err(|e| Refusal::Inbox(e.into()))?;
        self.gate
            .check(bytes, &self.limits)
            .map_err(Refusal::Container)?;
        let base = self.bases.get(&agent);
        let opts = DecodeOptions {
            limits: self.limits,
            dna_store: Some(self.keeper.dna()),
            base_state: base.map(|b| &b.memory[..]),
            base_digests: base.map(|b| &b.digests),
        };
        // Decoded straight into a new instance (memory checked against its digests, DNA against
        // its hash): one copy of the memory.
        let inbox_host = self.shared(inbox);
        let (mut live, digests) = self
            .rt
            .stage_with_call(bytes, &opts, inbox_host, wasm::link_blocking)
            .map_err(Refusal::Container)?;
        self.gate
            .admitted(bytes, &self.limits)
            .map_err(Refusal::Container)?;
        // Kept whatever the frame's flag said: a container that carries its DNA is saved naming
        // it by hash. Nothing to do when the keeper holds it already.
        let _ = with_dna;
        self.keeper
            .keep_dna(live.agent().dna())
            .map_err(Refusal::Keep)?;
        if self.keeper.keeps_state() {
            let call = live.call_bytes().map_err(Refusal::Runtime)?;
            let snapshot = live
                .snapshot_with_call_at(Some(self.node), self.gate.now(), call.as_deref())
                .map_err(Refusal::Runtime)?;
            let inbox = live.host().get();
            self.keeper
                .save_prepared(epoch, &snapshot, &inbox)
                .map_err(Refusal::Keep)?;
        }
        // The memory as it came: the base of a delta when the agent goes back.
        let base = match self.send_delta {
            true => {
                let memory = live.memory_bytes().to_vec();
                Some(Base { memory, digests })
            }
            false => None,
        };
        self.prepared
            .insert((agent, epoch), Prepared { live, base });
        Ok(())
    }

    /// The copy to run at `epoch`: the prepared one (committed here), the stopped one (an
    /// aborted hand-off), or after a restart the keeper's.
    fn copy_to_run(&mut self, agent: AgentId, epoch: u64) -> Result<ToRun, Refusal> {
        if let Some(p) = self.prepared.remove(&(agent, epoch)) {
            self.commit(agent, epoch);
            return Ok(ToRun {
                live: p.live,
                base: Some(p.base),
                kept: None,
            });
        }
        // After a restart: the keeper's running copy, if it was saved at this very epoch, is
        // newer than a prepared one (it was saved after the commit; a prepared copy left beside
        // it is one the commit could not remove): it wins.
        // A running copy that fails to load does not stop a prepared one that loads (it is
        // an older copy); its error is returned only if nothing else runs.
        let (running, load_error) = match self.stopped.contains_key(&agent) {
            true => (None, None),
            false => match self.keeper.load(agent) {
                Ok(r) => (r, None),
                Err(e) => (None, Some(e)),
            },
        };
        if let Some(s) = running.as_ref().filter(|s| s.epoch == epoch) {
            let s = Self::of_agent(agent, s.clone())?;
            let kept = Some(s.events.len() as u32);
            return Ok(ToRun {
                live: self.resume_saved(s)?,
                base: None,
                kept,
            });
        }
        if let Some(s) = self
            .keeper
            .load_prepared(agent, epoch)
            .map_err(Refusal::Keep)?
        {
            let s = Self::of_agent(agent, s)?;
            if s.epoch != epoch {
                return Err(Refusal::Keep(super::KeepError::WrongEpoch {
                    found: s.epoch,
                }));
            }
            let live = self.resume_saved(s)?;
            self.commit(agent, epoch);
            return Ok(ToRun {
                live,
                base: Some(None),
                kept: None,
            });
        }
        if let Some(s) = self.stopped.remove(&agent) {
            // Stopped here before a restart and reloaded from the keeper: the same epoch rule
            // as a copy loaded to run.
            if let Some(saved) = s.saved_epoch {
                check_saved_epoch(saved, epoch)?;
            }
            return Ok(ToRun {
                live: s.live,
                base: None,
                kept: None,
            });
        }
        if let Some(e) = load_error {
            return Err(Refusal::Keep(e));
        }
        let s = running.ok_or(Refusal::NoCopy { epoch })?;
        let s = Self::of_agent(agent, s)?;
        check_saved_epoch(s.epoch, epoch)?;
        // Saved at this epoch, with its events after it: the keeper already holds exactly the
        // agent that runs (a restart), nothing to save again.
        let kept = (s.epoch == epoch).then_some(s.events.len() as u32);
        Ok(ToRun {
            live: self.resume_saved(s)?,
            base: None,
            kept,
        })
    }

    /// The hand-off at `epoch` committed here: the keeper makes the prepared copy the running
    /// one. If it cannot, the copy runs anyway (the node has recorded it as running and the
    /// source lets go of it) and is saved whole once it runs; the failure is kept as a problem.
    fn commit(&mut self, agent: AgentId, epoch: u64) {
        let r = self
            .keeper
            .commit_prepared(agent, epoch)
            .map_err(Refusal::Keep);
        let _ = self.refused(agent, r);
    }

    fn run_inner(&mut self, agent: AgentId, epoch: u64) -> Result<(), Refusal> {
        let found = self.copy_to_run(agent, epoch);
        // Other prepared copies of this agent are obsolete, whatever happened; the keeper's
        // go once the copy that runs is saved (a failed commit leaves it in its prepared file).
        self.prepared.retain(|(a, _), _| *a != agent);
        let saved = found.and_then(|t| self.go_live(agent, epoch, t.live, t.base, t.kept));
        if saved.is_ok() {
            self.keeper.prune(&|a, _| a != agent);
        }
        saved
    }

    fn go_live(
        &mut self,
        agent: AgentId,
        epoch: u64,
        mut live: LiveAgent<SharedInbox>,
        base: Option<Option<Base>>,
        kept: Option<u32>,
    ) -> Result<(), Refusal> {
        if live.agent().state() != AgentState::Running {
            live.set_state(AgentState::Running)
                .map_err(Refusal::Runtime)?;
        }
        // Arrived here: its base is the memory it came with (or none). Resumed after an abort
        // or a restart: the base it had.
        match base {
            Some(Some(b)) => {
                self.bases.insert(agent, b);
            }
            Some(None) => {
                self.bases.remove(&agent);
            }
            None => {}
        }
        self.live.insert(
            agent,
            Running {
                live,
                epoch,
                // Events already in the keeper's log after its copy count toward the next save.
                events: kept.unwrap_or(0),
                // Unknown until its next save: until then it is saved by count alone.
                event_bytes: 0,
                saved_len: 0,
            },
        );
        // Saved at its epoch now (after an abort, one more than before; after a commit, as it
        // runs), unless the keeper holds it as it is.
        match kept {
            Some(_) => Ok(()),
            None => self.save_running(agent),
        }
    }
}

/// A copy the keeper saved at `saved` may run at `epoch` if that is the journal's epoch, or the
/// one after it (a hand-off aborted here and the node stopped before the agent was saved at
/// the new epoch). Anything else is another epoch's copy (a rolled-back file).
fn check_saved_epoch(saved: u64, epoch: u64) -> Result<(), Refusal> {
    match saved == epoch || saved.checked_add(1) == Some(epoch) {
        true => Ok(()),
        false => Err(Refusal::Keep(super::KeepError::WrongEpoch { found: saved })),
    }
}

impl<K: Keeper, G: Gate> AgentHost for Cells<K, G> {
    fn describe(&mut self, agent: AgentId) -> Option<AgentInfo> {
        let dna = match self.live.get(&agent) {
            Some(r) => r.live.agent().dna(),
            None => self.stopped_copy(agent).ok()?.live.agent().dna(),
        };
        Some(AgentInfo {
            dna_hash: *dna.hash(),
            snapshot_len: 0,
            dna_len: dna.size() as u32,
        })
    }

    fn has_dna(&mut self, dna_hash: &[u8; 32]) -> bool {
        self.claim_dna && self.keeper.dna().get(dna_hash).is_some()
    }

    fn stop(&mut self, agent: AgentId) {
        let _ = self.save(agent);
        if let Some(Running { mut live, .. }) = self.live.remove(&agent) {
            // Running → Migrating: no call runs until the hand-off ends.
            if let Err(e) = live.set_state(AgentState::Migrating) {
                let _ = self.refused::<()>(agent, Err(Refusal::Runtime(e)));
            }
            self.stopped.insert(
                agent,
                super::Stopped {
                    live,
                    saved_epoch: None,
                    by_reference: None,
                    with_dna: None,
                },
            );
        }
    }

    fn capture(
        &mut self,
        agent: AgentId,
        with_dna: bool,
        out: &mut [u8],
    ) -> Result<usize, MeshError> {
        let r = self.encode(agent, with_dna).and_then(|bytes| {
            let dst = out.get_mut(..bytes.len()).ok_or(Refusal::BufferTooSmall)?;
            dst.copy_from_slice(bytes);
            Ok(bytes.len())
        });
        self.refused(agent, r).map_err(refused)
    }

    fn prepare(
        &mut self,
        agent: AgentId,
        epoch: u64,
        with_dna: bool,
        snapshot: &[u8],
    ) -> Result<(), MeshError> {
        let r = self.prepare_inner(agent, epoch, with_dna, snapshot);
        self.refused(agent, r).map_err(refused)
    }

    fn run(&mut self, agent: AgentId, epoch: u64) {
        if self.live.contains_key(&agent) {
            return;
        }
        let r = self.run_inner(agent, epoch);
        let _ = self.refused(agent, r);
    }

    fn discard(&mut self, agent: AgentId, epoch: u64) {
        self.prepared.remove(&(agent, epoch));
        self.keeper.prune(&|a, e| a != agent || e != epoch);
    }

    fn prune(&mut self, prepared: &dyn Fn(AgentId, u64) -> bool) {
        self.prepared.retain(|&(a, e), _| prepared(a, e));
        self.keeper.prune(prepared);
    }

    fn release(&mut self, agent: AgentId) {
        self.live.remove(&agent);
        if let Some(s) = self.stopped.remove(&agent) {
            self.bases.remove(&agent);
            if self.keep_sent_base {
                if let Ok(b) = Self::memory_of(&s.live) {
                    self.bases.insert(agent, b);
                }
            }
        }
        // This node sent the agent away at the route's epoch: the gate refuses a replay of an
        // earlier hand-off of it from now on.
        if let Some(route) = self.routes.remove(&agent) {
            if let Err(e) = self.gate.sent(agent, route.epoch) {
                let _ = self.refused::<()>(agent, Err(Refusal::Container(e)));
            }
        }
        self.keeper.remove(agent);
    }

    fn deliver(
        &mut self,
        to: AgentId,
        peer: NodeId,
        from: AgentId,
        stream: Stream,
        seq: u64,
        payload: &[u8],
    ) -> Delivery {
        let Some(r) = self.live.get(&to) else {
            return Delivery::Full;
        };
        let d = r.live.host().offer(peer, from, stream, seq, payload);
        match d {
            Delivery::Accepted => {
                let e = Event::Delivered {
                    peer,
                    from,
                    stream,
                    seq,
                    payload: payload.to_vec(),
                };
                if !self.note_or_refuse(to, Some(e), true, true) {
                    // Not kept (too long for the keeper, or no room): refused as if the
                    // mailbox were full; the sender tries again later.
                    if let Some(r) = self.live.get(&to) {
                        r.live.host().withdraw(from, stream, seq);
                    }
                    return Delivery::Full;
                }
            }
            Delivery::Duplicate => self.duplicates += 1,
            _ => {}
        }
        d
    }

    fn outgoing(&mut self, agent: AgentId, f: &mut dyn FnMut(Outgoing<'_>)) {
        let live = match self.live.get(&agent) {
            Some(r) => &r.live,
            None => match self.stopped.get(&agent) {
                Some(s) => &s.live,
                None => return,
            },
        };
        live.host().get().outgoing(f);
    }

    fn acked(&mut self, agent: AgentId, to: AgentId, seq: u64) {
        if let Some(r) = self.live.get(&agent) {
            let mut inbox = r.live.host().get_mut();
            let before = inbox.unacked();
            inbox.acked(to, seq);
            let changed = inbox.unacked() != before;
            drop(inbox);
            // Logged where events are (a replayed call must find the outbox as it was), and
            // only when it removed a message (a peer repeating acknowledgements costs
            // nothing); not worth a save otherwise: a lost acknowledgement only re-sends a
            // duplicate.
            if changed {
                self.note(agent, Some(Event::Acked { to, seq }), false);
            }
        }
    }

    fn flush(&mut self) -> Result<(), MeshError> {
        self.flush_events().map_err(|_| MeshError::JournalIo)
    }

    /// Where this node last handed the agent; else the locator's answer if it names a peer
    /// ([`Cells::set_locator`]): a new answer at once, the same answer at every other lookup;
    /// else each of the gate's peers in turn, one per lookup. The node backs off between
    /// lookups answered `Unknown` (doubling from one retransmission timeout to
    /// [`MAX_LOOKUP_BACKOFF`](crate::mesh::MAX_LOOKUP_BACKOFF) of them), so an agent running
    /// on one of `P` peers is found within `P` lookups, within two with a locator that knows
    /// (the first, unless an earlier lookup of the same addressee already used that answer),
    /// and within `2P` with one that is wrong.
    fn locate(&mut self, agent: AgentId) -> Option<NodeId> {
        if let Some(r) = self.routes.get(&agent) {
            return Some(r.target);
        }
        let me = self.node;
        let mut peers = Vec::new();
        self.gate.peers(&mut |n| {
            if n != me {
                peers.push(n);
            }
        });
        if peers.is_empty() {
            return None;
        }
        if let Some(hint) = self.locator.as_mut().and_then(|l| l(agent)) {
            if peers.contains(&hint) {
                // A new answer is used at once; the same one at every other lookup, the peers
                // probed in between: its node may have been down or slow to answer (then it is
                // right, and asked again), or it may be stale (then probing finds the agent).
                let use_it = match self.hinted.get(&agent) {
                    Some(&(last, probe_next)) => last != hint || !probe_next,
                    None => true,
                };
                if self.hinted.len() >= MAX_PROBES && !self.hinted.contains_key(&agent) {
                    self.hinted.clear(); // forgetting only restarts the alternation
                }
                self.hinted.insert(agent, (hint, use_it));
                if use_it {
                    self.hinted_lookups += 1;
                    return Some(hint);
                }
            }
        }
        if self.probes.len() >= MAX_PROBES && !self.probes.contains_key(&agent) {
            self.probes.clear(); // a cursor lost only restarts that agent's round
        }
        let k = self.probes.entry(agent).or_insert(0);
        let node = peers[*k % peers.len()];
        *k = k.wrapping_add(1);
        Some(node)
    }
}
