//! `Cells`, the node's agent host, running agents in the middle of a call (feature
//! `transform`: the modules go through the deploy-time Asyncify transform, which needs
//! Binaryen's `wasm-opt`): an agent whose `tick` export is its whole life,
//! `loop { recv_wait(); handle() }`, waits in the middle of that call for mail, crosses to
//! another host, survives a restart there and goes on with the frames it had; a CPU-bound
//! agent is preempted at its yield points, moved twice in the middle of its loop and ends with
//! the unmoved result. A host that does not take such agents refuses them before its gate
//! records the epoch, and a call section that does not fit the memory is refused. The Rust
//! guest of `examples/guest-midcall` answers every message the same, moved or not.

use mielin_cells::mesh::cells::{Cells, Gate, Keeper, MemKeeper, Open, Refusal};
use mielin_cells::mesh::{AgentHost, Delivery, HostRefusal, Inbox, MeshError, Stream};
use mielin_cells::migration::{DecodeLimits, EncodeOptions, Route};
use mielin_cells::runtime::midcall::{SuspendedCall, UnwindBuffer};
use mielin_cells::runtime::transform::{transform, TransformOptions};
use mielin_cells::runtime::{Runtime, Val};
use mielin_cells::{Agent, AgentId, CellError, Dna, NodeId};

const A: NodeId = NodeId::from_bytes([0xa; 16]);
const B: NodeId = NodeId::from_bytes([0xb; 16]);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);
const SENDER: AgentId = AgentId::from_bytes([8; 16]);
const STREAM: Stream = [3; 16];

/// `tick` never returns: it waits for a message, folds its first byte into a local (which lives
/// only in the call's frame, so it survives a move only if the frame does), and publishes the
/// fold and the count in globals.
const WAITER: &str = r#"(module
  (import "mesh" "recv_wait" (func $wait (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $count (export "count") (mut i32) (i32.const 0))
  (global $fold (export "fold") (mut i64) (i64.const 0))
  (func (export "tick") (result i32)
    (local $acc i64)
    (loop $forever
      (drop (call $wait (i32.const 0) (i32.const 16) (i32.const 64)))
      (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 31))
                               (i64.load8_u (i32.const 16))))
      (global.set $fold (local.get $acc))
      (global.set $count (i32.add (global.get $count) (i32.const 1)))
      (br $forever))
    (i32.const 0)))"#;

/// The CPU-bound agent (`examples/agents/crunch.wat`): 10^6 steps, a yield point at the head
/// of its outer loop, the loop's state in locals; `result` and `done` published at the end.
const CRUNCH: &str = include_str!("../examples/agents/crunch.wat");

fn transformed(wat: &str, import: &str) -> Vec<u8> {
    let wasm = wat::parse_str(wat).unwrap();
    transform(&wasm, &TransformOptions::new(&[("mesh", import)])).expect("wasm-opt (binaryen)")
}

/// Counts what the host asks of its gate.
#[derive(Default)]
struct Counting {
    checked: u32,
    admitted: u32,
}

impl Gate for Counting {
    fn check(&mut self, _: &[u8], _: &DecodeLimits) -> Result<(), CellError> {
        self.checked += 1;
        Ok(())
    }
    fn admitted(&mut self, _: &[u8], _: &DecodeLimits) -> Result<(), CellError> {
        self.admitted += 1;
        Ok(())
    }
}

fn counting(node: NodeId) -> Cells<MemKeeper, Counting> {
    Cells::new(
        node,
        Runtime::new(1_000_000),
        MemKeeper::new(),
        Counting::default(),
        DecodeLimits::default(),
    )
}

fn host(node: NodeId, keeper: MemKeeper, fuel: u64) -> Cells<MemKeeper, Open> {
    Cells::new(
        node,
        Runtime::new(fuel),
        keeper,
        Open,
        DecodeLimits::default(),
    )
}

fn started(wasm: &[u8], fuel: u64) -> Cells<MemKeeper, Open> {
    let mut a = host(A, MemKeeper::new(), fuel);
    let agent = Agent::with_id(AGENT, Dna::new(wasm.to_vec()).unwrap());
    a.start(agent, Inbox::with_secret([1; 16])).unwrap();
    a
}

/// An exported global's value (`i32` or `i64`).
fn global<G: Gate>(h: &mut Cells<MemKeeper, G>, name: &str) -> i64 {
    match h.live_mut(AGENT).expect("running").global(name).unwrap() {
        Val::I32(v) => i64::from(v),
        Val::I64(v) => v,
        v => panic!("{v:?}"),
    }
}

fn waiting<G: Gate>(h: &mut Cells<MemKeeper, G>) -> bool {
    h.live_mut(AGENT).expect("running").is_suspended_in_call()
}

/// The container of the agent for `to` at `epoch`, captured by `from`.
fn capture<G: Gate>(from: &mut Cells<MemKeeper, G>, to: NodeId, epoch: u64) -> Vec<u8> {
    from.route(AGENT, to, epoch);
    from.stop(AGENT);
    let mut buf = vec![0u8; from.transmit_room()];
    let n = from.capture(AGENT, true, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Moves the agent from `from` to `to` at `epoch`.
fn hand_off(from: &mut Cells<MemKeeper, Open>, to: &mut Cells<MemKeeper, Open>, epoch: u64) {
    let bytes = capture(from, to.node(), epoch);
    to.prepare(AGENT, epoch, true, &bytes).unwrap();
    to.run(AGENT, epoch);
    from.release(AGENT);
    assert!(to.is_running(AGENT) && !from.is_running(AGENT));
}

/// Moves the agent from `hosts[here]` to the other host at the next epoch; returns where it is.
fn to_the_other(hosts: &mut [Cells<MemKeeper, Open>; 2], here: usize, epoch: &mut u64) -> usize {
    *epoch += 1;
    let [a, b] = hosts;
    match here {
        0 => hand_off(a, b, *epoch),
        _ => hand_off(b, a, *epoch),
    }
    1 - here
}

fn fold(bytes: &[u8]) -> i64 {
    bytes.iter().fold(0i64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(i64::from(*b))
    })
}

#[test]
fn a_waiting_agent_crosses_in_the_middle_of_its_call_and_keeps_its_frames() {
    let wasm = transformed(WAITER, "recv_wait");
    let mut a = started(&wasm, 1_000_000);
    assert_eq!(a.tick("tick", &[]), 1, "the call started and is waiting");
    assert!(waiting(&mut a));
    assert_eq!(a.tick("tick", &[]), 0, "no mail: not continued");
    let mut seq = 0;
    let send = |h: &mut Cells<MemKeeper, Open>, seq: &mut u64, byte: u8| {
        *seq += 1;
        assert_eq!(
            h.deliver(AGENT, A, SENDER, STREAM, *seq, &[byte]),
            Delivery::Accepted
        );
    };
    send(&mut a, &mut seq, 5);
    send(&mut a, &mut seq, 9);
    assert_eq!(a.tick("tick", &[]), 1);
    assert_eq!(global(&mut a, "count"), 2);
    assert_eq!(global(&mut a, "fold"), fold(&[5, 9]));
    // The continued call was saved whole, with its call: the keeper's copy is the live one.
    let saved = a.keeper().clone().load(AGENT).unwrap().expect("saved");
    let call = a.live_mut(AGENT).unwrap().call_bytes().unwrap();
    assert!(call.is_some() && saved.call == call);
    assert_eq!(
        saved.agent.wasm_state(),
        a.live_mut(AGENT).unwrap().memory_bytes()
    );
    // A message longer than the agent's 64-byte buffer is taken, cut: the loop goes on.
    seq += 1;
    let mut long = vec![3u8; 100];
    long[0] = 7;
    assert_eq!(
        a.deliver(AGENT, A, SENDER, STREAM, seq, &long),
        Delivery::Accepted
    );
    assert_eq!(a.tick("tick", &[]), 1);
    assert!(waiting(&mut a));
    assert_eq!(global(&mut a, "count"), 3);
    assert_eq!(global(&mut a, "fold"), fold(&[5, 9, 7]));

    // One message waits in the mailbox while the agent, waiting in its call, crosses.
    send(&mut a, &mut seq, 11);
    let mut b = host(B, MemKeeper::new(), 1_000_000);
    hand_off(&mut a, &mut b, 1);
    assert!(waiting(&mut b), "it arrived in the middle of its call");
    assert_eq!(b.tick("tick", &[]), 1);
    send(&mut b, &mut seq, 13);
    assert_eq!(b.tick("tick", &[]), 1);
    assert_eq!(global(&mut b, "count"), 5);
    // The fold lives in a local of the suspended frame: it came across with the frame.
    assert_eq!(global(&mut b, "fold"), fold(&[5, 9, 7, 11, 13]));

    // B restarts from its keeper: the saved call is taken over, frames and all.
    let keeper = b.keeper().clone();
    drop(b);
    let mut b = host(B, keeper, 1_000_000);
    b.run(AGENT, 1);
    assert!(waiting(&mut b), "the saved copy carries its call");
    send(&mut b, &mut seq, 17);
    assert_eq!(b.tick("tick", &[]), 1);
    assert_eq!(global(&mut b, "fold"), fold(&[5, 9, 7, 11, 13, 17]));

    // And back to A, which gave it up: the same again.
    let mut a = host(A, MemKeeper::new(), 1_000_000);
    hand_off(&mut b, &mut a, 2);
    send(&mut a, &mut seq, 19);
    assert_eq!(a.tick("tick", &[]), 1);
    assert_eq!(global(&mut a, "count"), 7);
    assert_eq!(global(&mut a, "fold"), fold(&[5, 9, 7, 11, 13, 17, 19]));
    assert_eq!(a.problems_seen(), 0);
}

/// Runs the crunch on one host to the end, moving it to the other host after each tick in
/// `moves`; returns its result, the ticks it took and the host it ended on.
/// The crunch with `outer` outer iterations of 1,000 steps.
fn crunch_wat(outer: u32) -> String {
    let bound = "(i32.ge_u (local.get $i) (i32.const 1000))";
    assert!(CRUNCH.contains(bound));
    CRUNCH.replace(
        bound,
        &format!("(i32.ge_u (local.get $i) (i32.const {outer}))"),
    )
}

/// Runs the crunch (`outer` thousand steps, `fuel` a call) on host A to the end, moving it to
/// the other host after each tick `moves` names; returns its result, the ticks it took and the
/// host it ended on.
fn crunch(outer: u32, fuel: u64, moves: impl Fn(u32) -> bool) -> (i64, u32, NodeId) {
    let wasm = transformed(&crunch_wat(outer), "yield");
    let mut hosts = [started(&wasm, fuel), host(B, MemKeeper::new(), fuel)];
    let (mut here, mut epoch, mut ticks) = (0, 0, 0);
    while global(&mut hosts[here], "done") == 0 {
        hosts[here].tick("tick", &[]);
        ticks += 1;
        assert!(ticks < 100_000, "the crunch does not finish");
        assert_eq!(
            hosts[here].problems_seen(),
            0,
            "{:?}",
            hosts[here].take_problems()
        );
        if moves(ticks) && global(&mut hosts[here], "done") == 0 {
            assert!(waiting(&mut hosts[here]), "moved in the middle of its loop");
            here = to_the_other(&mut hosts, here, &mut epoch);
        }
    }
    let node = hosts[here].node();
    (global(&mut hosts[here], "result"), ticks, node)
}

/// `MIELIN_CRUNCH_OUTER` (default 1,000: 10^6 steps) and `MIELIN_CRUNCH_FUEL` (default 300,000
/// a call, about 10 outer iterations: 100 preemptions). With either set, the agent moves after
/// every tick; by default after ticks 3 and 7. The release run of docs/testing.md:
/// `MIELIN_CRUNCH_OUTER=1000000 MIELIN_CRUNCH_FUEL=100000000 cargo test --release --features
/// transform --test cells_midcall a_preempted -- --nocapture` (10^9 steps).
#[test]
fn a_preempted_agent_moves_twice_in_the_middle_of_its_loop_and_ends_as_if_unmoved() {
    let env = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u64>().unwrap());
    let (outer, fuel) = (env("MIELIN_CRUNCH_OUTER"), env("MIELIN_CRUNCH_FUEL"));
    let every = outer.is_some() || fuel.is_some();
    let (outer, fuel) = (outer.unwrap_or(1_000) as u32, fuel.unwrap_or(300_000));
    let t0 = std::time::Instant::now();
    let (unmoved, ticks, node) = crunch(outer, fuel, |_| false);
    let unmoved_time = t0.elapsed();
    assert!(ticks > 10, "preempted {ticks} times only");
    assert_eq!(node, A);
    let t0 = std::time::Instant::now();
    let (moved, moved_ticks, node) = crunch(outer, fuel, |t| every || t == 3 || t == 7);
    if !every {
        assert_eq!(node, A, "there and back");
    }
    println!(
        "crunch of {outer} x 1,000 steps: {ticks} ticks, result {unmoved:#x} in {:.1} s unmoved; \
         moved {} times: {moved:#x} in {:.1} s",
        unmoved_time.as_secs_f64(),
        if every { moved_ticks - 1 } else { 2 },
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(moved, unmoved);
    assert_eq!(moved_ticks, ticks, "no work lost or done twice");
    // Without a reserve the call runs out of fuel instead of yielding: the result is never
    // published (what preemption is for).
    let wasm = transformed(CRUNCH, "yield");
    let mut a = host(A, MemKeeper::new(), 300_000);
    a.preempt_below = 0;
    a.start(
        Agent::with_id(AGENT, Dna::new(wasm).unwrap()),
        Inbox::with_secret([1; 16]),
    )
    .unwrap();
    assert_eq!(a.tick("tick", &[]), 0);
    assert!(!waiting(&mut a));
    assert_eq!(global(&mut a, "done"), 0);
}

/// The Rust guest (`examples/guest-midcall`, `tests/midcall-guest.wasm`): its `tick` is
/// `loop { recv_wait(); handle(); reply(digest) }`. Each message is delivered and the agent
/// ticked; it moves between two hosts after each message in `moves`. Returns its replies.
fn rust_guest(moves: &[usize]) -> Vec<i32> {
    let original = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/midcall-guest.wasm"
    ))
    .unwrap();
    let wasm = transform(
        &original,
        &TransformOptions::new(&[("mesh", "recv_wait"), ("mesh", "yield")]),
    )
    .unwrap();
    let mut hosts = [
        started(&wasm, 10_000_000),
        host(B, MemKeeper::new(), 10_000_000),
    ];
    let (mut here, mut epoch, mut replies) = (0, 0, Vec::new());
    // The last is longer than the guest's 256-byte buffer: taken, cut, answered.
    let words: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "w{} shared w{} {}",
                i % 4,
                i % 3,
                "x".repeat(if i == 11 { 300 } else { i })
            )
        })
        .collect();
    assert!(words[11].len() > 256);
    for (i, w) in words.iter().enumerate() {
        let h = &mut hosts[here];
        assert_eq!(
            h.deliver(AGENT, A, SENDER, STREAM, i as u64 + 1, w.as_bytes()),
            Delivery::Accepted
        );
        assert_eq!(h.tick("tick", &[]), 1);
        assert!(waiting(h), "waiting for the next message");
        let mut got = Vec::new();
        h.outgoing(AGENT, &mut |m| {
            assert_eq!(m.to, SENDER);
            got.push((m.seq, i32::from_le_bytes(m.payload.try_into().unwrap())));
        });
        for (seq, reply) in got {
            h.acked(AGENT, SENDER, seq);
            replies.push(reply);
        }
        if moves.contains(&i) {
            here = to_the_other(&mut hosts, here, &mut epoch);
        }
    }
    assert_eq!(hosts[here].problems_seen(), 0);
    replies
}

#[test]
fn the_rust_guest_answers_across_moves_as_an_unmoved_one() {
    let unmoved = rust_guest(&[]);
    assert_eq!(unmoved.len(), 12, "one answer a message");
    assert!(unmoved.windows(2).all(|w| w[0] != w[1]), "{unmoved:?}");
    assert_eq!(rust_guest(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), unmoved);
    assert_eq!(rust_guest(&[5]), unmoved);
}

/// The board's copy (`examples/firmware-wasmi`, which cannot run wasm-opt) is the transform of
/// `examples/agents/crunch.wat`, unwinding at `mesh.yield` only.
#[test]
fn the_boards_crunch_is_the_transform_of_its_source() {
    use mielin_cells::runtime::transform::{TransformRecord, UnwindingImport};
    let board = include_bytes!("../examples/firmware-wasmi/agents/crunch.async.wasm");
    let record = TransformRecord::find(board).expect("a transformed module");
    assert_eq!(
        record.original,
        mielin_cells::sha256(&wat::parse_str(CRUNCH).unwrap()),
        "rebuild it: mielin transform examples/agents/crunch.wat -o \
         examples/firmware-wasmi/agents/crunch.async.wasm --unwind mesh.yield"
    );
    assert_eq!(record.imports, [UnwindingImport::new("mesh", "yield")]);
}

#[test]
fn a_host_that_does_not_take_suspended_calls_refuses_them_before_its_gate() {
    let wasm = transformed(WAITER, "recv_wait");
    let mut a = started(&wasm, 1_000_000);
    a.tick("tick", &[]);
    let bytes = capture(&mut a, B, 1);
    let mut b = counting(B);
    b.mid_call = false;
    assert_eq!(
        b.prepare(AGENT, 1, true, &bytes),
        Err(MeshError::HostRefused {
            reason: HostRefusal::SuspendedCall
        })
    );
    assert_eq!(b.last_refusal(), Some(Refusal::SuspendedCall));
    assert!(b.prepared().is_empty());
    assert_eq!(
        (b.gate().checked, b.gate().admitted),
        (0, 0),
        "the gate was not asked"
    );
    // One that does takes the same bytes.
    b.mid_call = true;
    b.prepare(AGENT, 1, true, &bytes).unwrap();
    assert_eq!((b.gate().checked, b.gate().admitted), (1, 1));
}

#[test]
fn a_call_section_that_does_not_fit_the_memory_is_refused() {
    let wasm = transformed(WAITER, "recv_wait");
    let mut a = started(&wasm, 1_000_000);
    a.tick("tick", &[]);
    let live = a.live_mut(AGENT).unwrap();
    let good = live.suspended_call().unwrap();
    let inbox = live.host().get().to_bytes();
    let len = live.memory_bytes().len() as u32;
    let bad_calls = [
        // Past the end of memory.
        SuspendedCall {
            buffer: UnwindBuffer {
                start: len - 8,
                len: 64,
            },
            ..good.clone()
        },
        // Not where the frames are: its header is not a finished unwind.
        SuspendedCall {
            buffer: UnwindBuffer { start: 0, len: 64 },
            ..good.clone()
        },
        // An export the module does not have.
        SuspendedCall {
            export: "nothing".into(),
            ..good.clone()
        },
    ];
    for bad in bad_calls {
        let call = bad.to_bytes().unwrap();
        let container = live
            .snapshot_with_call_at(Some(A), 0, live_call(&call))
            .unwrap()
            .with_route(Route {
                target: B,
                epoch: 1,
            })
            .with_inbox(&inbox[..])
            .serialize_with(&EncodeOptions {
                version: Some(3),
                ..Default::default()
            })
            .unwrap();
        let mut b = counting(B);
        assert!(
            b.prepare(AGENT, 1, true, &container).is_err(),
            "{bad:?} was taken"
        );
        assert_eq!(b.gate().admitted, 0, "the epoch was recorded for {bad:?}");
        assert!(
            matches!(
                b.last_refusal(),
                Some(Refusal::Container(CellError::ExecutionFailed(_)))
            ),
            "{:?}",
            b.last_refusal()
        );
        assert!(b.prepared().is_empty());
    }
}

fn live_call(call: &[u8]) -> Option<&[u8]> {
    Some(call)
}

#[test]
fn an_agent_that_is_not_transformed_fails_its_wait_instead_of_suspending() {
    let wasm = wat::parse_str(WAITER).unwrap();
    let mut a = started(&wasm, 1_000_000);
    assert_eq!(a.tick("tick", &[]), 0);
    assert!(!waiting(&mut a));
    // The failed call left the agent `Suspended` (its state), as any failed call does.
    assert!(a.live_mut(AGENT).unwrap().call("tick", &[]).is_err());
}

/// `replace_live` (used by benchmarks and tests to change an agent's memory) keeps the call an
/// agent waits in: it used to drop the agent instead (its capture refused the suspended call).
#[test]
fn replacing_a_waiting_agents_memory_keeps_its_call() {
    let wasm = transformed(WAITER, "recv_wait");
    let mut a = started(&wasm, 1_000_000);
    a.tick("tick", &[]);
    a.replace_live(AGENT, |agent| {
        let mut memory = agent.wasm_state().to_vec();
        memory[40] = 1;
        agent.set_wasm_state(memory);
    })
    .unwrap();
    assert!(a.is_running(AGENT) && waiting(&mut a));
    assert_eq!(
        a.deliver(AGENT, A, SENDER, STREAM, 1, &[21]),
        Delivery::Accepted
    );
    assert_eq!(a.tick("tick", &[]), 1);
    assert_eq!(global(&mut a, "fold"), fold(&[21]));
}
