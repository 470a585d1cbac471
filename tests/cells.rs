//! `mesh::cells::Cells`, the library's one agent host, driven through `AgentHost` as the
//! protocol drives it: hand-offs carry memory and inbox, restarts reload from the keeper,
//! containers for another hand-off are refused with a typed reason, and the gate is asked to
//! record an epoch only for a container that decoded.

use mielin_cells::mesh::cells::{
    Cells, Diverged, Event, Gate, KeepError, Keeper, MemKeeper, Open, Refusal, Saved,
};
use mielin_cells::mesh::wasm::{self, SharedInbox};
use mielin_cells::mesh::{AgentHost, Delivery, HostRefusal, Inbox, MeshError, Stream};
use mielin_cells::migration::{DecodeLimits, EncodeOptions, MigrationSnapshot, Route};
use mielin_cells::runtime::{Runtime, Val};
use mielin_cells::{Agent, AgentId, CellError, Dna, NodeId};

const A: NodeId = NodeId::from_bytes([0xa; 16]);
const B: NodeId = NodeId::from_bytes([0xb; 16]);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);
const SENDER: AgentId = AgentId::from_bytes([8; 16]);

/// `set(v)` stores v at 0, `get()` reads it; `take()` receives one message and returns its
/// first byte (-1 when there is none).
const WAT: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "set") (param i32) (i32.store (i32.const 0) (local.get 0)))
  (func (export "get") (result i32) (i32.load (i32.const 0)))
  (func (export "take") (result i32)
    (if (result i32) (i32.lt_s (call $recv (i32.const 64) (i32.const 128) (i32.const 64)) (i32.const 1))
      (then (i32.const -1))
      (else (i32.load8_u (i32.const 128))))))"#;

fn host<G: Gate>(node: NodeId, keeper: MemKeeper, gate: G) -> Cells<MemKeeper, G> {
    Cells::new(
        node,
        Runtime::new(1_000_000),
        keeper,
        gate,
        DecodeLimits::default(),
    )
}

fn agent() -> Agent<Vec<u8>> {
    Agent::with_id(AGENT, Dna::new(wat::parse_str(WAT).unwrap()).unwrap())
}

fn call<G: Gate>(h: &mut Cells<MemKeeper, G>, export: &str, args: &[Val]) -> i32 {
    match h
        .live_mut(AGENT)
        .expect("running")
        .call(export, args)
        .unwrap()[..]
    {
        [Val::I32(v)] => v,
        [] => 0,
        ref v => panic!("{v:?}"),
    }
}

/// A running on A with 41 in memory and one message from SENDER waiting in its mailbox.
fn started() -> Cells<MemKeeper, Open> {
    let mut a = host(A, MemKeeper::new(), Open);
    a.start(agent(), Inbox::with_secret([1; 16])).unwrap();
    call(&mut a, "set", &[Val::I32(41)]);
    a.save(AGENT).unwrap();
    let stream: Stream = [3; 16];
    assert_eq!(
        a.deliver(AGENT, A, SENDER, stream, 1, b"\x2a"),
        Delivery::Accepted
    );
    a
}

/// A's container of the agent for B at `epoch`.
fn capture(a: &mut Cells<MemKeeper, Open>, epoch: u64) -> Vec<u8> {
    a.route(AGENT, B, epoch);
    a.stop(AGENT);
    let mut buf = vec![0u8; a.transmit_room()];
    let n = a.capture(AGENT, true, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_hand_off_carries_memory_and_mailbox() {
    let mut a = started();
    let bytes = capture(&mut a, 1);
    let mut b = host(B, MemKeeper::new(), Open);
    b.prepare(AGENT, 1, true, &bytes).unwrap();
    assert!(!b.is_running(AGENT), "prepared, not running");
    assert_eq!(b.prepared(), vec![(AGENT, 1)]);
    b.run(AGENT, 1);
    a.release(AGENT);
    assert_eq!(call(&mut b, "get", &[]), 41);
    assert_eq!(call(&mut b, "take", &[]), 0x2a, "the message travelled");
    assert_eq!(call(&mut b, "take", &[]), -1);
    // The sequence numbers travelled too: the same message again is a duplicate.
    assert_eq!(
        b.deliver(AGENT, A, SENDER, [3; 16], 1, b"\x2a"),
        Delivery::Duplicate
    );
    assert_eq!(b.duplicates(), 1);
    assert!(!a.is_running(AGENT) && !a.is_stopped(AGENT));
}

#[test]
fn an_aborted_hand_off_runs_the_stopped_copy_again() {
    let mut a = started();
    let _ = capture(&mut a, 1);
    assert!(a.is_stopped(AGENT));
    assert!(
        a.live_mut(AGENT).is_none(),
        "a stopped agent takes no calls"
    );
    a.run(AGENT, 1);
    assert_eq!(call(&mut a, "get", &[]), 41);
    assert_eq!(a.epoch(AGENT), Some(1));
}

#[test]
fn a_restarted_host_reloads_running_and_prepared_copies_from_its_keeper() {
    let a = started();
    let keeper = a.keeper().clone();
    drop(a);
    let mut a = host(A, keeper, Open);
    a.run(AGENT, 0);
    assert_eq!(call(&mut a, "get", &[]), 41, "the saved memory");
    assert_eq!(call(&mut a, "take", &[]), 0x2a, "the saved mailbox");

    // B prepares, restarts before the commit, and runs the prepared copy from its keeper.
    let bytes = capture(&mut a, 1);
    let mut b = host(B, MemKeeper::new(), Open);
    b.prepare(AGENT, 1, true, &bytes).unwrap();
    let keeper = b.keeper().clone();
    drop(b);
    let mut b = host(B, keeper, Open);
    b.run(AGENT, 1);
    assert_eq!(call(&mut b, "get", &[]), 41);
    assert_eq!(b.epoch(AGENT), Some(1));
}

#[test]
fn a_saved_copy_of_another_epoch_is_not_run() {
    let a = started(); // saved at epoch 0
    let keeper = a.keeper().clone();
    let mut a = host(A, keeper, Open);
    // The journal says epoch 2: the copy at 0 is a rolled-back one.
    a.run(AGENT, 2);
    assert!(!a.is_running(AGENT));
    assert!(matches!(a.last_refusal(), Some(Refusal::Keep(_))));
    let (problems, dropped) = a.take_problems();
    assert_eq!((problems.len(), dropped), (1, 0));
    assert_eq!(problems[0].agent, AGENT);
    // One epoch ahead is a hand-off aborted before the agent was saved at the new epoch.
    a.run(AGENT, 1);
    assert!(a.is_running(AGENT));
}

#[test]
fn containers_for_another_hand_off_are_refused_with_a_reason() {
    let mut a = started();
    let bytes = capture(&mut a, 1);
    let mut b = host(B, MemKeeper::new(), Open);
    // Another epoch than the frame's, another agent. The node sees the refusal's kind, typed.
    assert_eq!(
        b.prepare(AGENT, 2, true, &bytes),
        Err(MeshError::HostRefused {
            reason: HostRefusal::NotThisHandOff
        })
    );
    assert_eq!(b.last_refusal(), Some(Refusal::NotThisHandOff));
    assert!(b.prepare(SENDER, 1, true, &bytes).is_err());
    assert_eq!(b.last_refusal(), Some(Refusal::NotThisHandOff));
    // Addressed to B: a third node refuses it.
    let mut c = host(NodeId::from_bytes([0xc; 16]), MemKeeper::new(), Open);
    assert!(c.prepare(AGENT, 1, true, &bytes).is_err());
    assert_eq!(c.last_refusal(), Some(Refusal::NotThisHandOff));
    // Cut short: not a container.
    assert_eq!(
        b.prepare(AGENT, 1, true, &bytes[..bytes.len() - 1]),
        Err(MeshError::HostRefused {
            reason: HostRefusal::Snapshot
        })
    );
    assert!(matches!(b.last_refusal(), Some(Refusal::Container(_))));
    assert!(b.prepared().is_empty());

    // A version-3 container with no inbox section.
    let live = a
        .runtime()
        .start(
            agent(),
            SharedInbox::new(Inbox::new(), Default::default()),
            wasm::link,
        )
        .unwrap();
    let bare = live
        .snapshot_at(Some(A), 0)
        .unwrap()
        .with_route(Route {
            target: B,
            epoch: 1,
        })
        .serialize_with(&EncodeOptions {
            version: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert!(MigrationSnapshot::deserialize(&bare).is_ok());
    assert!(b.prepare(AGENT, 1, true, &bare).is_err());
    assert_eq!(b.last_refusal(), Some(Refusal::NoInbox));
}

/// Counts what the host asks of its gate; refuses `check` when told to.
#[derive(Default)]
struct Counting {
    refuse: bool,
    checked: u32,
    admitted: u32,
}

impl Gate for Counting {
    fn check(&mut self, _: &[u8], _: &DecodeLimits) -> Result<(), CellError> {
        self.checked += 1;
        match self.refuse {
            true => Err(CellError::SignatureRejected(
                mielin_cells::SignatureError::Missing,
            )),
            false => Ok(()),
        }
    }
    fn admitted(&mut self, _: &[u8], _: &DecodeLimits) -> Result<(), CellError> {
        self.admitted += 1;
        Ok(())
    }
}

#[test]
fn the_gate_records_an_epoch_only_for_a_container_that_decoded() {
    let mut a = started();
    let with_dna = capture(&mut a, 1);
    let mut by_reference = vec![0u8; a.transmit_room()];
    let n = a.capture(AGENT, false, &mut by_reference).unwrap();
    by_reference.truncate(n);

    // Refused by the gate: nothing decoded, nothing recorded.
    let mut b = host(
        B,
        MemKeeper::new(),
        Counting {
            refuse: true,
            ..Default::default()
        },
    );
    assert!(b.prepare(AGENT, 1, true, &with_dna).is_err());
    assert_eq!((b.gate().checked, b.gate().admitted), (1, 0));

    // Passed the gate, but names DNA B does not hold: not decoded, so not recorded (the source
    // may send it again with its DNA at the same epoch).
    let mut b = host(B, MemKeeper::new(), Counting::default());
    assert!(b.prepare(AGENT, 1, false, &by_reference).is_err());
    assert!(matches!(b.last_refusal(), Some(Refusal::Container(_))));
    assert_eq!((b.gate().checked, b.gate().admitted), (1, 0));
    b.prepare(AGENT, 1, true, &with_dna).unwrap();
    assert_eq!((b.gate().checked, b.gate().admitted), (2, 1));
}

#[test]
fn a_capture_that_does_not_fit_is_refused_not_cut() {
    let mut a = started();
    a.route(AGENT, B, 1);
    a.stop(AGENT);
    let mut small = [0u8; 64];
    assert!(a.capture(AGENT, true, &mut small).is_err());
    assert_eq!(a.last_refusal(), Some(Refusal::BufferTooSmall));
    // Without a route there is nothing to bind the container to.
    let mut a = started();
    a.stop(AGENT);
    let mut buf = vec![0u8; a.transmit_room()];
    assert!(a.capture(AGENT, true, &mut buf).is_err());
    assert_eq!(a.last_refusal(), Some(Refusal::NoRoute));
}

/// An agent that counts what it receives: `tick()` takes every message, adds its first byte to
/// a sum at 0 and returns how many it took; `sum()` reads the sum.
const COUNTER: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "tick") (result i32) (local $n i32)
    (block $done (loop $more
      (br_if $done (i32.lt_s (call $recv (i32.const 64) (i32.const 128) (i32.const 64)) (i32.const 1)))
      (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.load8_u (i32.const 128))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $more)))
    (local.get $n))
  (func (export "sum") (result i32) (i32.load (i32.const 0))))"#;

fn counter_host(keeper: MemKeeper) -> Cells<MemKeeper, Open> {
    let mut h = host(A, keeper, Open);
    h.checkpoint_every = 5;
    h
}

/// With a keeper that logs events, each accepted message and each tick that handled some is
/// one event, not a save of the whole agent; a crash keeps the saved copy and the flushed
/// events, and the restarted host applies them again to exactly the agent the node last
/// let a peer hear about. Unflushed events are lost, and with them only changes no peer was
/// told of.
#[test]
fn a_restart_applies_the_flushed_events_again() {
    let dna = Dna::new(wat::parse_str(COUNTER).unwrap()).unwrap();
    // Runs messages 1..=23 through a host that saves whole every `every` events, flushing
    // after every fourth; returns it, the sum, and the last message flushed.
    let run = |every: u32| {
        let mut a = counter_host(MemKeeper::logging());
        a.checkpoint_every = every;
        a.start(
            Agent::with_id(AGENT, dna.clone()),
            Inbox::with_secret([1; 16]),
        )
        .unwrap();
        let (mut sum, mut flushed) = (0, 0);
        for seq in 1..=23u64 {
            let d = a.deliver(AGENT, B, SENDER, [3; 16], seq, &[seq as u8]);
            assert_eq!(d, Delivery::Accepted);
            if seq % 3 == 0 {
                assert!(a.tick("tick", &[]) > 0);
            }
            sum += seq as i32;
            if seq % 4 == 0 {
                AgentHost::flush(&mut a).unwrap();
                flushed = seq;
            }
        }
        a.tick("tick", &[]);
        assert_eq!(call(&mut a, "sum", &[]), sum);
        (a, sum, flushed)
    };

    // 23 deliveries and 8 ticks: 31 events; a save every 5 events instead of one per event.
    let (a, sum, _) = run(5);
    assert_eq!(a.keeper().appends, 31);
    assert_eq!(a.keeper().saves, 1 + 6, "the start, then one per 5 events");
    // Without a crash a restart has every event.
    let mut c = counter_host(a.keeper().clone());
    c.run(AGENT, 0);
    assert_eq!(call(&mut c, "sum", &[]), sum);

    // Saved once, at the start: a crash keeps the events flushed (to message 20), and the
    // restarted host runs the agent as of then, with what it had not taken yet still in
    // its mailbox.
    let (a, sum, flushed) = run(1000);
    assert_eq!(a.keeper().saves, 1);
    let mut b = counter_host(a.keeper().crashed());
    b.run(AGENT, 0);
    assert!(b.is_running(AGENT), "{:?}", b.last_refusal());
    b.tick("tick", &[]);
    assert_eq!(call(&mut b, "sum", &[]), (1..=flushed as i32).sum::<i32>());
    // Messages 21..23 were never acknowledged (no frame left before a flush): the sender
    // re-sends them, and they are new here; the earlier ones are still duplicates.
    for seq in flushed + 1..=23 {
        assert_eq!(
            b.deliver(AGENT, B, SENDER, [3; 16], seq, &[seq as u8]),
            Delivery::Accepted
        );
    }
    assert_eq!(
        b.deliver(AGENT, B, SENDER, [3; 16], 7, &[7]),
        Delivery::Duplicate
    );
    b.tick("tick", &[]);
    assert_eq!(call(&mut b, "sum", &[]), sum);
}

/// A keeper whose `load` drops the first event it logged (storage that lost a record in the
/// middle, or copies mixed up): everything else is `MemKeeper`'s.
struct DropsFirstEvent(MemKeeper);

impl Keeper for DropsFirstEvent {
    fn dna(&self) -> &dyn mielin_cells::migration::DnaStore {
        self.0.dna()
    }
    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) -> Result<(), KeepError> {
        self.0.keep_dna(dna)
    }
    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        self.0.save(epoch, agent, inbox)
    }
    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        let mut s = self.0.load(agent)?;
        if let Some(s) = &mut s {
            s.events.remove(0);
        }
        Ok(s)
    }
    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        self.0.save_prepared(epoch, agent, inbox)
    }
    fn load_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<Option<Saved>, KeepError> {
        self.0.load_prepared(agent, epoch)
    }
    fn commit_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<(), KeepError> {
        self.0.commit_prepared(agent, epoch)
    }
    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool) {
        self.0.prune(keep)
    }
    fn remove(&mut self, agent: AgentId) {
        self.0.remove(agent)
    }
}

/// An event that does not come out the same when applied again (here a logged tick that
/// took one message finds none, its delivery lost) refuses the copy instead of running a
/// different agent.
#[test]
fn events_that_do_not_apply_again_refuse_the_copy() {
    let mut a = counter_host(MemKeeper::logging());
    let dna = Dna::new(wat::parse_str(COUNTER).unwrap()).unwrap();
    a.start(Agent::with_id(AGENT, dna), Inbox::new()).unwrap();
    a.deliver(AGENT, B, SENDER, [3; 16], 1, &[1]);
    assert_eq!(a.tick("tick", &[]), 1);
    AgentHost::flush(&mut a).unwrap();
    let mut b = Cells::new(
        A,
        Runtime::new(1_000_000),
        DropsFirstEvent(a.keeper().crashed()),
        Open,
        DecodeLimits::default(),
    );
    b.run(AGENT, 0);
    assert!(!b.is_running(AGENT));
    assert!(
        matches!(
            b.last_refusal(),
            Some(Refusal::Diverged {
                index: 0,
                why: Diverged::Result {
                    logged: 1,
                    now: Some(0)
                }
            })
        ),
        "{:?}",
        b.last_refusal()
    );
    // The intact log runs.
    let mut c = counter_host(a.keeper().crashed());
    c.run(AGENT, 0);
    assert_eq!(call(&mut c, "sum", &[]), 1);
}

/// After a restart, a copy reloaded from the keeper to describe or capture it (the node asks
/// before a hand-off) obeys the same epoch rule as one loaded to run: a copy saved at 0 does
/// not run at epoch 5, nor leave at epoch 5.
#[test]
fn a_copy_reloaded_for_a_hand_off_obeys_the_epoch_rule() {
    let a = started(); // saved at epoch 0
    let mut b = host(A, a.keeper().clone(), Open);
    assert!(b.describe(AGENT).is_some());
    b.run(AGENT, 5);
    assert!(!b.is_running(AGENT));
    assert!(matches!(b.last_refusal(), Some(Refusal::Keep(_))));

    let mut c = host(A, a.keeper().clone(), Open);
    c.route(AGENT, B, 5);
    let mut buf = vec![0u8; 1 << 20];
    assert!(c.capture(AGENT, true, &mut buf).is_err());
    // At the epoch after the saved one it leaves.
    c.route(AGENT, B, 1);
    assert!(c.capture(AGENT, true, &mut buf).is_ok());
}

/// The event records' bytes (what the QUIC node's `.log` files hold; fuzz/seed.sh seeds the
/// `cell_event` target with the same three): golden, and one encoding each.
#[test]
fn event_records_golden_bytes() {
    let delivered = Event::Delivered {
        peer: NodeId::from_bytes([2; 16]),
        from: AgentId::from_bytes([3; 16]),
        stream: [4; 16],
        seq: 7,
        payload: b"hi".to_vec(),
    };
    let mut want = vec![1u8];
    want.extend([2u8; 16]);
    want.extend([3u8; 16]);
    want.extend([4u8; 16]);
    want.extend(7u64.to_le_bytes());
    want.extend(2u32.to_le_bytes());
    want.extend(b"hi");
    let called = Event::called("tick", &[Val::I32(5)], 1).unwrap();
    let mut want_called = b"\x02\x04tick\x01\x00".to_vec();
    want_called.extend(5u64.to_le_bytes());
    want_called.extend(1i32.to_le_bytes());
    let acked = Event::Acked {
        to: AgentId::from_bytes([5; 16]),
        seq: 9,
    };
    let mut want_acked = vec![3u8];
    want_acked.extend([5u8; 16]);
    want_acked.extend(9u64.to_le_bytes());
    for (e, want) in [
        (delivered, want),
        (called, want_called),
        (acked, want_acked),
    ] {
        let mut out = Vec::new();
        e.encode(&mut out);
        assert_eq!(out, want);
        assert_eq!(Event::decode(&out), Ok(e));
        // Cut anywhere, or one byte more: refused.
        for n in 0..out.len() {
            assert!(Event::decode(&out[..n]).is_err());
        }
        out.push(0);
        assert!(Event::decode(&out).is_err());
    }
    // An i32 argument with upper bits set is not its encoding (found by the fuzzer).
    let mut odd = b"\x02\x04tick\x01\x00".to_vec();
    odd.extend(0xd600_0000_0000_0005u64.to_le_bytes());
    odd.extend(1i32.to_le_bytes());
    assert!(Event::decode(&odd).is_err());
    // Names and arguments beyond the bounds are not recorded.
    assert!(Event::called(&"x".repeat(65), &[], 1).is_none());
    assert!(Event::called("tick", &vec![Val::I32(0); 9], 1).is_none());
}

/// The target records `Running` in its journal before the host commits the prepared copy: a
/// crash between the two must not lose the agent. The restart used to prune every prepared
/// copy the journal did not name as `Prepared`, this one included, and then found nothing to
/// run (found by the board's power-cut test, `.ci/firmware-wasmi`).
#[test]
fn a_crash_between_the_journal_commit_and_the_keeper_commit_keeps_the_agent() {
    use mielin_cells::mesh::{Config, Journal, MemJournal, Node, Phase, Record};
    let mut a = started();
    let bytes = capture(&mut a, 1);
    let mut b = host(B, MemKeeper::new(), Open);
    b.prepare(AGENT, 1, true, &bytes).unwrap();
    let keeper = b.keeper().clone();
    drop(b);
    // What the journal holds once `on_commit` wrote it, before `run` reached the keeper.
    let mut journal: MemJournal<8> = MemJournal::new();
    journal.set_sequence(AGENT, 1).unwrap();
    journal
        .put(
            AGENT,
            Record {
                epoch: 1,
                phase: Phase::Running,
            },
        )
        .unwrap();
    let mut b = host(B, keeper, Open);
    let _node = Node::<_, 8>::restart(B, journal, Config::default(), &mut b, 0);
    assert!(b.is_running(AGENT), "{:?}", b.take_problems());
    assert_eq!(call(&mut b, "get", &[]), 41);
    assert_eq!(call(&mut b, "take", &[]), 0x2a);
}

/// A keeper whose commit of a prepared copy fails (as a failed rename does in `NodeFiles`) and
/// whose pruning does not happen (the node stopped before it): the prepared copy stays beside
/// the running one saved after it at the same epoch.
#[derive(Clone)]
struct CommitFails(MemKeeper);

impl Keeper for CommitFails {
    fn dna(&self) -> &dyn mielin_cells::migration::DnaStore {
        self.0.dna()
    }
    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) -> Result<(), KeepError> {
        self.0.keep_dna(dna)
    }
    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        self.0.save(epoch, agent, inbox)
    }
    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        self.0.load(agent)
    }
    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        self.0.save_prepared(epoch, agent, inbox)
    }
    fn load_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<Option<Saved>, KeepError> {
        self.0.load_prepared(agent, epoch)
    }
    fn commit_prepared(&mut self, _: AgentId, _: u64) -> Result<(), KeepError> {
        Err(KeepError::Write)
    }
    fn prune(&mut self, _: &dyn Fn(AgentId, u64) -> bool) {}
    fn remove(&mut self, agent: AgentId) {
        self.0.remove(agent)
    }
}

/// After a restart, the running copy saved at the journal's epoch wins over a prepared copy
/// of that epoch left beside it (the commit could not remove it): the prepared one is the
/// agent as it arrived, the running one what it became after.
#[test]
fn a_running_copy_saved_after_the_commit_wins_over_the_prepared_one() {
    use mielin_cells::mesh::{Config, Journal, MemJournal, Node, Phase, Record};
    let mut a = started();
    let bytes = capture(&mut a, 1);
    let new =
        |k: CommitFails| Cells::new(B, Runtime::new(1_000_000), k, Open, DecodeLimits::default());
    let mut b = new(CommitFails(MemKeeper::new()));
    b.prepare(AGENT, 1, true, &bytes).unwrap();
    b.run(AGENT, 1);
    assert!(b.is_running(AGENT));
    b.live_mut(AGENT)
        .unwrap()
        .call("set", &[Val::I32(99)])
        .unwrap();
    b.save(AGENT).unwrap();
    let keeper = b.keeper().clone();
    drop(b);
    let mut journal: MemJournal<8> = MemJournal::new();
    journal.set_sequence(AGENT, 1).unwrap();
    journal
        .put(
            AGENT,
            Record {
                epoch: 1,
                phase: Phase::Running,
            },
        )
        .unwrap();
    let mut b = new(keeper);
    let _node = Node::<_, 8>::restart(B, journal, Config::default(), &mut b, 0);
    assert!(b.is_running(AGENT), "{:?}", b.take_problems());
    let got = match b.live_mut(AGENT).unwrap().call("get", &[]).unwrap()[..] {
        [Val::I32(v)] => v,
        ref v => panic!("{v:?}"),
    };
    assert_eq!(
        got, 99,
        "the copy saved after the commit, not the one that arrived"
    );
}

/// A logging keeper whose whole saves fail with `fail` once `armed`.
struct SaveFails {
    inner: MemKeeper,
    armed: bool,
    fail: KeepError,
}

impl Keeper for SaveFails {
    fn dna(&self) -> &dyn mielin_cells::migration::DnaStore {
        self.inner.dna()
    }
    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) -> Result<(), KeepError> {
        self.inner.keep_dna(dna)
    }
    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        match self.armed {
            true => Err(self.fail),
            false => self.inner.save(epoch, agent, inbox),
        }
    }
    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        self.inner.load(agent)
    }
    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        self.inner.save_prepared(epoch, agent, inbox)
    }
    fn load_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<Option<Saved>, KeepError> {
        self.inner.load_prepared(agent, epoch)
    }
    fn commit_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<(), KeepError> {
        self.inner.commit_prepared(agent, epoch)
    }
    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool) {
        self.inner.prune(keep)
    }
    fn remove(&mut self, agent: AgentId) {
        self.inner.remove(agent)
    }
    fn logs_events(&self) -> bool {
        true
    }
    fn append(&mut self, agent: AgentId, event: &Event) -> Result<bool, KeepError> {
        self.inner.append(agent, event)
    }
    fn flush(&mut self) -> Result<(), KeepError> {
        self.inner.flush()
    }
}

/// A checkpoint (the whole save after `checkpoint_every` events) that found no room loses
/// nothing: the events hold the agent, and the host goes on. One that failed otherwise may have
/// landed in part (a file renamed into place, its directory not synced): the host stops.
#[test]
fn only_a_checkpoint_that_found_no_room_lets_the_host_go_on() {
    for (fail, poisoned) in [(KeepError::NoRoom, false), (KeepError::Write, true)] {
        let keeper = SaveFails {
            inner: MemKeeper::logging(),
            armed: false,
            fail,
        };
        let mut b = Cells::new(
            A,
            Runtime::new(1_000_000),
            keeper,
            Open,
            DecodeLimits::default(),
        );
        b.checkpoint_every = 4;
        b.start(agent(), Inbox::with_secret([1; 16])).unwrap();
        b.keeper_mut().armed = true;
        for seq in 1..=4 {
            assert_eq!(
                b.deliver(AGENT, A, SENDER, [3; 16], seq, b"\x01"),
                Delivery::Accepted
            );
        }
        assert_eq!(b.is_poisoned(), poisoned, "{fail:?}");
        assert_eq!(b.flush().is_err(), poisoned, "{fail:?}");
    }
}

/// `checkpoint_by_size`: an agent whose memory (one 64 KiB page here) outweighs its events is
/// saved whole only once they weigh as much, however many they are; without it, every
/// `checkpoint_every` events. Either way a restart applies the events and loses nothing.
#[test]
fn a_large_agent_is_saved_whole_only_once_its_events_weigh_as_much() {
    let dna = Dna::new(wat::parse_str(COUNTER).unwrap()).unwrap();
    let run = |by_size: bool| {
        let mut a = counter_host(MemKeeper::logging());
        // The cap (64 x 16 = 1,024 events) is past where the bytes decide (about 940).
        a.checkpoint_every = 16;
        a.checkpoint_by_size = by_size;
        a.start(
            Agent::with_id(AGENT, dna.clone()),
            Inbox::with_secret([1; 16]),
        )
        .unwrap();
        let saves = a.keeper().saves;
        // 600 messages of 64 bytes, each taken at once: 1,200 events, about 87 KiB.
        let mut sum = 0;
        let mut saved_at = Vec::new();
        for seq in 1..=600u64 {
            let before = a.keeper().saves;
            let m = [seq as u8; 64];
            assert_eq!(
                a.deliver(AGENT, B, SENDER, [3; 16], seq, &m),
                Delivery::Accepted
            );
            assert_eq!(a.tick("tick", &[]), 1);
            sum += i32::from(seq as u8);
            AgentHost::flush(&mut a).unwrap();
            if a.keeper().saves > before {
                saved_at.push(seq);
            }
        }
        assert!(a.keeper().saves > saves);
        let mut b = counter_host(a.keeper().crashed());
        b.run(AGENT, 0);
        assert!(b.is_running(AGENT), "{:?}", b.take_problems());
        assert_eq!(call(&mut b, "sum", &[]), sum);
        saved_at
    };
    let by_count = run(false);
    let by_size = run(true);
    // Every eighth message (two events each) with the count alone.
    assert_eq!(by_count.len(), 75, "{by_count:?}");
    // Once 64 KiB of events (a message's are 61 bytes and its own, a tick's 20) gathered.
    assert_eq!(by_size.len(), 1, "{by_size:?}");
    assert!((450..=500).contains(&by_size[0]), "{by_size:?}");
}

/// `Cells::checkpoint_by_size` against light events (from a review): a `Called` event of a
/// short export with no arguments is 8 bytes, and re-applying it runs the export again with
/// all its fuel, so weighing events by bytes alone let 8,192 calls pile up on one page of
/// memory (a 10 MiB agent about 1.3 million) before a whole save. The count still bounds them:
/// at most `BY_SIZE_CAP` times `checkpoint_every`.
mod checkpoint_by_size {
    use super::{A, AGENT};
    use mielin_cells::mesh::cells::{Cells, Keeper, MemKeeper, Open, BY_SIZE_CAP};
    use mielin_cells::mesh::{AgentHost, Inbox};
    use mielin_cells::{Agent, Dna};

    /// `w()` burns about 3 x 2,000 instructions, adds one to the counter at 0 and returns 1 (so
    /// every call is logged as a `Called` event).
    const WAT: &str = r#"(module
      (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
      (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
      (memory 1)
      (func (export "w") (result i32) (local $i i32)
        (block $done (loop $more
          (br_if $done (i32.ge_u (local.get $i) (i32.const 2000)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $more)))
        (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
        (i32.const 1))
      (func (export "count") (result i32) (i32.load (i32.const 0))))"#;

    fn host(keeper: MemKeeper, by_size: bool) -> Cells<MemKeeper, Open> {
        let mut h = super::host(A, keeper, Open);
        h.checkpoint_every = 64;
        h.checkpoint_by_size = by_size;
        h
    }

    /// Calls `w` `calls` times (each flushed); the most events the keeper held after one copy,
    /// and the events a restart then re-applies.
    fn run(by_size: bool, calls: usize) -> (usize, usize) {
        let dna = Dna::new(wat::parse_str(WAT).unwrap()).unwrap();
        let mut a = host(MemKeeper::logging(), by_size);
        a.start(Agent::with_id(AGENT, dna), Inbox::with_secret([1; 16]))
            .unwrap();
        let mut most = 0;
        for _ in 0..calls {
            assert_eq!(a.tick("w", &[]), 1);
            AgentHost::flush(&mut a).unwrap();
            // Counted in place: a clone of the keeper per call made the test quadratic (55 s
            // under qemu-user).
            let held = a.keeper().events(AGENT);
            most = most.max(held);
        }
        let replayed = a
            .keeper()
            .crashed()
            .load(AGENT)
            .unwrap()
            .unwrap()
            .events
            .len();
        let mut b = host(a.keeper().crashed(), by_size);
        let t = std::time::Instant::now();
        b.run(AGENT, 0);
        assert!(b.is_running(AGENT), "{:?}", b.take_problems());
        println!(
            "by_size {by_size}: {calls} calls, at most {most} events after a copy, \
             restart re-applied {replayed} calls in {:?}",
            t.elapsed()
        );
        (most, replayed)
    }

    #[test]
    fn replayed_calls_with_and_without_by_size() {
        let (by_count, _) = run(false, 3_000);
        let (by_size, _) = run(true, 3_000);
        assert!(by_count <= 64, "{by_count}");
        // 8-byte events: by their bytes alone nothing would be saved before 8,192 of them; the
        // cap saves the agent after 64 x 64 = 4,096.
        assert!(by_size >= 3_000 - 1, "{by_size}");
    }

    /// What `checkpoint_every` promises ("bounding what a restart re-applies"), with
    /// `checkpoint_by_size` on as the QUIC host runs it: at most `BY_SIZE_CAP` times as many.
    #[test]
    fn the_events_a_restart_replays_are_bounded_by_count_too() {
        let (most, replayed) = run(true, 9_000);
        let cap = (BY_SIZE_CAP * 64) as usize;
        assert!(most < cap, "{most} calls would be re-run after a restart");
        assert!(replayed < cap);
        // And the cap was reached: without it the page's 64 KiB would have let 8,192 through.
        assert!(most >= cap - 1, "{most}");
    }
}

/// A gate whose peers are b, c and d (the nodes `locate` probes in turn).
struct ThreePeers;
impl Gate for ThreePeers {
    fn peers(&self, f: &mut dyn FnMut(NodeId)) {
        for n in [0xb, 0xc, 0xd] {
            f(NodeId::from_bytes([n; 16]));
        }
    }
}

/// `locate` with a locator (a fleet's location records): the node it names, if a peer, is
/// asked first; a lookup again for the same addressee (the named node did not answer, or did
/// not have it) alternates between that node and the peers in turn, so a right answer whose
/// node was slow is asked again and a stale one does not stop the probing; a new answer is
/// used at once; an answer that is no peer, or this node, is ignored.
#[test]
fn a_locator_is_asked_first_and_a_wrong_answer_costs_every_other_lookup() {
    use std::sync::{Arc, Mutex};
    let n = |b: u8| NodeId::from_bytes([b; 16]);
    let mut h = host(A, MemKeeper::default(), ThreePeers);
    // Without a locator: b, c, d, b.
    let probed: Vec<_> = (0..4).map(|_| h.locate(SENDER)).collect();
    assert_eq!(
        probed,
        [Some(n(0xb)), Some(n(0xc)), Some(n(0xd)), Some(n(0xb))]
    );
    let answer = Arc::new(Mutex::new(Some(n(0xd))));
    let shared = answer.clone();
    h.set_locator(Some(Box::new(move |agent| {
        assert_eq!(agent, AGENT);
        *shared.lock().unwrap()
    })));
    // d, then the peers in turn with d between them.
    let asked: Vec<_> = (0..5).map(|_| h.locate(AGENT)).collect();
    assert_eq!(
        asked,
        [
            Some(n(0xd)),
            Some(n(0xb)),
            Some(n(0xd)),
            Some(n(0xc)),
            Some(n(0xd))
        ]
    );
    assert_eq!(h.hinted_lookups(), 3);
    // A newer record names c: asked at once, though a probe was due.
    *answer.lock().unwrap() = Some(n(0xc));
    assert_eq!(h.locate(AGENT), Some(n(0xc)));
    assert_eq!(h.hinted_lookups(), 4);
    // A node that is not a peer, or this node: ignored; the probing goes on (d, b).
    let mut probes = Vec::new();
    for wrong in [n(0xe), A] {
        *answer.lock().unwrap() = Some(wrong);
        probes.push(h.locate(AGENT));
    }
    assert_eq!(probes, [Some(n(0xd)), Some(n(0xb))]);
    assert_eq!(h.hinted_lookups(), 4);
    h.set_locator(None);
    assert_eq!(h.locate(AGENT), Some(n(0xc)));
}
