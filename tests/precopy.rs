//! Migration straight from and into live instances, and pre-copy: the target ends with exactly
//! the memory and globals of an instance that never moved, a bad delta changes nothing, and
//! each side copies the memory once.
#![cfg(feature = "wasmi")]

mod common;

use mielin_cells::migration::{
    DecodeOptions, EncodeOptions, MemoryDigests, MigrationSnapshot, Route, CHUNK_SIZE,
};
use mielin_cells::runtime::{LiveAgent, Runtime, Val, PAGE_SIZE};
use mielin_cells::{Agent, AgentId, AgentState, CellError, Dna, NodeId};

const FUEL: u64 = 100_000_000;
const A: NodeId = NodeId::from_bytes([0xa; 16]);
const B: NodeId = NodeId::from_bytes([0xb; 16]);
const ROUTE: Route = Route {
    target: B,
    epoch: 1,
};

fn pages_agent() -> Agent<Vec<u8>> {
    let wasm = wat::parse_str(include_str!("../examples/agents/pages.wat")).unwrap();
    let dna = Dna::new(wasm).unwrap();
    Agent::with_id(AgentId::derive(dna.hash(), 7), dna)
}

/// An agent of `pages` pages with every chunk written once.
fn started(rt: &Runtime, pages: i32) -> LiveAgent<()> {
    let mut live = rt.start(pages_agent(), (), |_| Ok(())).unwrap();
    live.call("grow", &[Val::I32(pages - 1)]).unwrap();
    let chunks = pages * (PAGE_SIZE / CHUNK_SIZE) as i32;
    dirty(&mut live, 0, chunks, 1, 1000);
    live
}

fn dirty(live: &mut LiveAgent<()>, first: i32, count: i32, stride: i32, v: i32) {
    live.call(
        "dirty",
        &[
            Val::I32(first),
            Val::I32(count),
            Val::I32(stride),
            Val::I32(v),
        ],
    )
    .unwrap();
}

/// Memory and globals of a live agent, captured.
fn state(live: &mut LiveAgent<()>) -> (Vec<u8>, Vec<mielin_cells::GlobalValue>) {
    let a = live.capture().unwrap();
    (a.wasm_state().to_vec(), a.globals().to_vec())
}

#[test]
fn snapshot_at_borrows_the_instance_and_equals_a_capture() {
    let rt = Runtime::new(FUEL);
    let mut live = started(&rt, 2);
    let bytes = live.snapshot_at(Some(A), 5).unwrap().serialize().unwrap();
    let captured = MigrationSnapshot::capture_at(live.capture().unwrap(), Some(A), 5);
    assert_eq!(bytes, captured.serialize().unwrap());
}

#[test]
fn resume_bytes_continues_like_resume() {
    let rt = Runtime::new(FUEL);
    let mut live = started(&rt, 3);
    dirty(&mut live, 5, 7, 3, 42);
    for route in [None, Some(ROUTE)] {
        let mut snap = live.snapshot_at(Some(A), 5).unwrap();
        if let Some(r) = route {
            snap = snap.with_route(r);
        }
        let bytes = snap.serialize().unwrap();
        let (mut moved, digests) = rt
            .resume_bytes(&bytes, &DecodeOptions::default(), (), |_| Ok(()))
            .unwrap();
        assert_eq!(moved.agent().state(), AgentState::Running);
        assert_eq!(state(&mut moved), state(&mut live));
        assert_eq!(digests, MemoryDigests::of(&state(&mut live).0));
        dirty(&mut moved, 0, 1, 1, 9);
        assert!(matches!(
            moved.call("calls", &[]).unwrap()[..],
            [Val::I64(3)]
        ));
    }
}

/// Pre-copy: a full round while the agent runs, then only what changed; the target's agent
/// equals one that never moved, and a corrupted or foreign delta changes nothing on it.
#[test]
fn precopy_ends_with_the_unmoved_agent() {
    let rt = Runtime::new(FUEL);
    let mut source = started(&rt, 4);
    let mut twin = started(&rt, 4);
    let (pre, first) = source
        .precopy_begin(Some(A), ROUTE, 10, &EncodeOptions::default())
        .unwrap();
    let (mut target, mut digests) = rt
        .stage(&first, &DecodeOptions::default(), (), |_| Ok(()))
        .unwrap();
    assert_eq!(target.agent().state(), AgentState::Migrating);
    assert!(matches!(
        target.call("calls", &[]),
        Err(CellError::ExecutionFailed(_))
    ));

    // The source keeps running: about 1% of its 64 chunks change, and it grows a page.
    for (s, v) in [(&mut source, 7), (&mut twin, 7)] {
        dirty(s, 3, 2, 17, v);
        s.call("grow", &[Val::I32(1)]).unwrap();
        dirty(s, 64, 1, 1, v + 1); // the new page's first chunk
    }
    let delta = source
        .precopy_finish(&pre, Some(A), 11, &EncodeOptions::default())
        .unwrap();
    assert_eq!(source.agent().state(), AgentState::Migrating);
    assert!(
        delta.len() < first.len() / 10,
        "delta {} bytes, first round {}",
        delta.len(),
        first.len()
    );

    // A corrupted delta (one byte of a carried chunk) and another agent's delta: refused,
    // the staged instance unchanged.
    let before = state(&mut target);
    let state_end = common::v2_tail_start(&delta);
    let mut bad = delta.clone();
    bad[state_end - 1] ^= 1;
    assert!(target
        .apply_delta(&bad, &DecodeOptions::default(), &mut digests)
        .is_err());
    assert_eq!(state(&mut target), before);
    assert_eq!(target.agent().state(), AgentState::Migrating);

    target
        .apply_delta(&delta, &DecodeOptions::default(), &mut digests)
        .unwrap();
    assert_eq!(target.agent().state(), AgentState::Running);
    let (memory, globals) = state(&mut twin);
    assert_eq!(state(&mut target), (memory.clone(), globals));
    assert_eq!(digests, MemoryDigests::of(&memory));
    // It continues where the source stopped.
    for s in [&mut target, &mut twin] {
        dirty(s, 1, 3, 5, 99);
    }
    assert_eq!(state(&mut target), state(&mut twin));
}
