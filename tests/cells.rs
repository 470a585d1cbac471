//! `mesh::cells::Cells`, the library's one agent host, driven through `AgentHost` as the
//! protocol drives it: hand-offs carry memory and inbox, restarts reload from the keeper,
//! containers for another hand-off are refused with a typed reason, and the gate is asked to
//! record an epoch only for a container that decoded.

use mielin_cells::mesh::cells::{Cells, Gate, MemKeeper, Open, Refusal};
use mielin_cells::mesh::wasm::{self, SharedInbox};
use mielin_cells::mesh::{AgentHost, Delivery, Inbox, Stream};
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
        ref v if v.is_empty() => 0,
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
    // Another epoch than the frame's, another agent.
    assert!(b.prepare(AGENT, 2, true, &bytes).is_err());
    assert_eq!(b.last_refusal(), Some(Refusal::NotThisHandOff));
    assert!(b.prepare(SENDER, 1, true, &bytes).is_err());
    assert_eq!(b.last_refusal(), Some(Refusal::NotThisHandOff));
    // Addressed to B: a third node refuses it.
    let mut c = host(NodeId::from_bytes([0xc; 16]), MemKeeper::new(), Open);
    assert!(c.prepare(AGENT, 1, true, &bytes).is_err());
    assert_eq!(c.last_refusal(), Some(Refusal::NotThisHandOff));
    // Cut short: not a container.
    assert!(b
        .prepare(AGENT, 1, true, &bytes[..bytes.len() - 1])
        .is_err());
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
