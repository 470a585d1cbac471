#![cfg(feature = "wasmi")]
//! `Cells::checkpoint_by_size` against light events (from a review): a `Called` event of a
//! short export with no arguments is 8 bytes, and re-applying it runs the export again with
//! all its fuel, so weighing events by bytes alone let 8,192 calls pile up on one page of
//! memory (a 10 MiB agent about 1.3 million) before a whole save. The count still bounds them:
//! at most `BY_SIZE_CAP` times `checkpoint_every`.

use mielin_cells::mesh::cells::{Cells, Keeper, MemKeeper, Open, BY_SIZE_CAP};
use mielin_cells::mesh::{AgentHost, Inbox};
use mielin_cells::migration::DecodeLimits;
use mielin_cells::runtime::Runtime;
use mielin_cells::{Agent, AgentId, Dna, NodeId};

const A: NodeId = NodeId::from_bytes([0xa; 16]);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);

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
    let mut h = Cells::new(
        A,
        Runtime::new(10_000_000),
        keeper,
        Open,
        DecodeLimits::default(),
    );
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
        let held = a
            .keeper()
            .clone()
            .load(AGENT)
            .unwrap()
            .unwrap()
            .events
            .len();
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
