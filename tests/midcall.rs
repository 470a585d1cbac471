//! Mid-call capture (features `transform`, which brings `wasmi`): agents suspended inside a
//! call by an import, captured, moved to a fresh runtime (a second node) and resumed there, with
//! the same result as a run that never moved.
//!
//! - a blocking receive: guests written as `loop { let m = recv_wait(); handle(m) }`, in WAT and
//!   in Rust (`tests/midcall-guest.wasm`, from `examples/guest-midcall`);
//! - preemption: CPU-bound guests with a yield point at an outer loop header, written by the
//!   author or inserted by the transform (`YieldPoints`), suspended when the call's fuel runs low
//!   and migrated several times;
//! - an unwind that does not fit its buffer, refused before it writes outside it;
//! - what `restore_call` and `resume_call` refuse.
#![cfg(feature = "transform")]

use mielin_cells::migration::{EncodeOptions, MigrationSnapshot, Route};
use mielin_cells::runtime::midcall::{self, Completion, MidCall, SuspendedCall};
use mielin_cells::runtime::transform::{
    transform, Placement, TransformError, TransformOptions, TransformRecord, UnwindingImport,
    YieldPoints,
};
use mielin_cells::runtime::{LiveAgent, Runtime, Val};
use mielin_cells::{Agent, AgentState, CellError, DecodeError, ExecutionError, NodeId};

mod common;
#[path = "common/midcall_host.rs"]
mod midcall_host;
use common::read;
use midcall_host::{crunch_without_yield, link, start, Host, CRUNCH_WAT};

fn transformed(wasm: &[u8]) -> Vec<u8> {
    transform(
        wasm,
        &TransformOptions::new(&[("mesh", "recv_wait"), ("mesh", "yield")]),
    )
    .unwrap()
}

/// Node A captures the agent (suspended in a call or not) into a version-3 container, with the
/// call section when a call is suspended; node B, a runtime of its own, decodes, restores and
/// resumes it. The host's mailbox and policy go along (as the inbox section would). Only bytes
/// cross.
fn migrate(live: LiveAgent<Host>, fuel: u64) -> LiveAgent<Host> {
    let mut live = live;
    let mailbox = std::mem::take(&mut live.host_mut().mailbox);
    let reserve = live.host().reserve;
    let (agent, call) = live.into_agent_with_call().unwrap();
    let call = call.map(|c| c.to_bytes().unwrap());
    let mut snapshot =
        MigrationSnapshot::capture_at(&agent, Some(NodeId::from_bytes([0xa; 16])), 1).with_route(
            Route {
                target: NodeId::from_bytes([0xb; 16]),
                epoch: 1,
            },
        );
    if let Some(call) = call {
        snapshot = snapshot.with_call(call);
    }
    let bytes = snapshot
        .serialize_with(&EncodeOptions {
            version: Some(3),
            ..Default::default()
        })
        .unwrap();
    drop(agent);

    let rt = Runtime::new(fuel);
    let arrived = MigrationSnapshot::deserialize(&bytes).unwrap();
    let (agent, call) = arrived.into_agent_with_call().unwrap();
    let call = call.as_deref().map(SuspendedCall::from_bytes);
    let host = Host {
        mailbox,
        reserve,
        ..Host::default()
    };
    let mut live = rt.resume(agent, host, link).unwrap();
    if let Some(call) = call {
        live.restore_call(call.unwrap()).unwrap();
    }
    live
}

fn returned(c: Completion) -> Vec<Val> {
    match c {
        Completion::Returned(v) => v,
        Completion::Suspended => panic!("suspended"),
    }
}

fn i64_of(v: &[Val]) -> i64 {
    match v {
        [Val::I64(x)] => *x,
        other => panic!("{other:?}"),
    }
}

const RECV_WAT: &str = r#"(module
  (import "mesh" "recv_wait" (func $recv (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; loop { n = recv_wait(); if n == 0 { return acc } fold(message) }
  (func (export "serve") (param $seed i32) (result i64)
    (local $acc i64) (local $n i32) (local $i i32)
    (local.set $acc (i64.extend_i32_u (local.get $seed)))
    (loop $l
      (local.set $n (call $recv (i32.const 0) (i32.const 64) (i32.const 64)))
      (if (i32.eqz (local.get $n)) (then (return (local.get $acc))))
      (local.set $i (i32.const 0))
      (loop $b
        (local.set $acc
          (i64.add (i64.mul (local.get $acc) (i64.const 31))
                   (i64.load8_u offset=64 (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $b (i32.lt_u (local.get $i) (local.get $n))))
      (br $l))
    (local.get $acc))
  ;; `depth` frames, then one receive at the bottom.
  (func $down (param $d i32) (result i64)
    (if (result i64) (i32.eqz (local.get $d))
      (then (i64.extend_i32_u (call $recv (i32.const 0) (i32.const 64) (i32.const 8))))
      (else (i64.add (call $down (i32.sub (local.get $d) (i32.const 1)))
                     (i64.extend_i32_u (local.get $d))))))
  (func (export "deep") (param i32) (result i64) (call $down (local.get 0))))"#;

const MESSAGES: [&[u8]; 5] = [b"hello", b"world", b"a longer message here", b"x", b""];

#[test]
fn a_receive_loop_moves_at_every_receive_and_ends_as_an_unmoved_run() {
    let wasm = transformed(&wat::parse_str(RECV_WAT).unwrap());
    let fuel = 1_000_000;

    // Unmoved: every message there from the start, no suspension.
    let mut host = Host::default();
    host.mailbox.extend(MESSAGES.iter().map(|m| m.to_vec()));
    let mut stayed = start(&Runtime::new(fuel), &wasm, host);
    let unmoved = i64_of(&returned(stayed.run("serve", &[Val::I32(7)]).unwrap()));

    // Moved: the mailbox is empty at every receive; the agent suspends, moves to a fresh
    // runtime, gets one message, and resumes there.
    let mut live = start(&Runtime::new(fuel), &wasm, Host::default());
    assert!(matches!(
        live.run("serve", &[Val::I32(7)]).unwrap(),
        Completion::Suspended
    ));
    assert!(live.is_suspended_in_call());
    // No other call while suspended.
    assert_eq!(
        live.call("deep", &[Val::I32(1)]).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::CallSuspended)
    );
    let mut result = None;
    for (i, m) in MESSAGES.iter().enumerate() {
        live = migrate(live, fuel);
        live.host_mut().mailbox.push_back(m.to_vec());
        match live.resume_call().unwrap() {
            Completion::Suspended => assert!(i + 1 < MESSAGES.len()),
            Completion::Returned(v) => {
                assert_eq!(i + 1, MESSAGES.len());
                result = Some(i64_of(&v));
            }
        }
    }
    assert_eq!(result, Some(unmoved));
    assert!(!live.is_suspended_in_call());
    // Between calls again: an ordinary call works.
    live.host_mut().mailbox.push_back(b"z".to_vec());
    live.call("deep", &[Val::I32(3)]).unwrap();
}

#[test]
fn the_rust_guest_serves_and_crunches_across_moves() {
    let original = read("midcall-guest.wasm");
    let wasm = transformed(&original);
    let fuel = 2_000_000;
    let messages: [&[u8]; 6] = [
        b"the quick brown fox",
        b"jumps over the lazy dog",
        b"the dog sleeps",
        b"",
        b"fox fox fox",
        b"stop",
    ];

    // The original module, never suspended (every message there), is the reference.
    let mut host = Host::default();
    host.mailbox.extend(messages.iter().map(|m| m.to_vec()));
    let mut reference = start(&Runtime::new(fuel), &original, host);
    let unmoved = i64_of(&reference.call("serve", &[]).unwrap());

    let mut live = start(&Runtime::new(fuel), &wasm, Host::default());
    assert!(matches!(
        live.run("serve", &[]).unwrap(),
        Completion::Suspended
    ));
    let mut result = None;
    for m in messages {
        live = migrate(live, fuel);
        live.host_mut().mailbox.push_back(m.to_vec());
        if let Completion::Returned(v) = live.resume_call().unwrap() {
            result = Some(i64_of(&v));
        }
    }
    assert_eq!(result, Some(unmoved));

    // Suspended under 100 frames of rustc's code, the receive buffer on the shadow stack: the
    // stack pointer (an unexported mutable global, carried like every other) travels with it.
    let mut host = Host::default();
    host.mailbox.push_back(vec![9, 9]);
    let mut reference = start(&Runtime::new(fuel), &original, host);
    let unmoved = i64_of(&reference.call("deep", &[Val::I32(100)]).unwrap());
    let mut live = start(&Runtime::new(fuel), &wasm, Host::default());
    assert!(matches!(
        live.run("deep", &[Val::I32(100)]).unwrap(),
        Completion::Suspended
    ));
    assert!(!live.capture_with_call().unwrap().0.globals().is_empty());
    live = migrate(live, fuel);
    live.host_mut().mailbox.push_back(vec![9, 9]);
    assert_eq!(i64_of(&returned(live.resume_call().unwrap())), unmoved);

    // CPU-bound: 10^6 steps with a yield point every 1,000; the call is preempted whenever
    // less fuel is left than one outer iteration and a half takes, and moved at every
    // preemption. The release run of 10^9 steps (docs/testing.md) sets MIELIN_MIDCALL_STEPS
    // and MIELIN_MIDCALL_FUEL (the fuel per call, so that it moves hundreds of times, not
    // hundreds of thousands).
    let env = |name: &str, default: u64| {
        std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let steps = env("MIELIN_MIDCALL_STEPS", 1_000_000) as i64;
    let mut reference = start(&Runtime::new(u64::MAX / 2), &original, Host::default());
    let unmoved = i64_of(&reference.call("crunch", &[Val::I64(steps)]).unwrap());
    // The fuel one outer iteration takes (from one yield point to the next): the guest time
    // from "fuel low" to a suspended agent is at most that. The reserve covers it.
    let per_iteration = |f: &[u64]| f[0] - f[1];
    let original_cost = per_iteration(&reference.host().last_fuel);
    let mut probe = start(&Runtime::new(u64::MAX / 2), &wasm, Host::default());
    probe
        .call("crunch", &[Val::I64(steps.min(1_000_000))])
        .unwrap();
    let cost = per_iteration(&probe.host().last_fuel);
    eprintln!(
        "fuel per outer iteration of 1,000 steps: original {original_cost}, transformed {cost}"
    );
    let fuel = env("MIELIN_MIDCALL_FUEL", 400_000);
    let host = Host {
        reserve: cost + cost / 2,
        ..Host::default()
    };
    let mut live = start(&Runtime::new(fuel), &wasm, host);
    let mut outcome = live.run("crunch", &[Val::I64(steps)]).unwrap();
    let mut moves = 0;
    while let Completion::Suspended = outcome {
        live = migrate(live, fuel);
        moves += 1;
        outcome = live.resume_call().unwrap();
    }
    assert_eq!(i64_of(&returned(outcome)), unmoved);
    assert!(moves >= 5, "{moves} moves");
    eprintln!("crunch({steps}): moved {moves} times, the unmoved result");
}

#[test]
fn a_cpu_bound_wat_loop_is_preempted_and_moved_several_times() {
    let original = wat::parse_str(CRUNCH_WAT).unwrap();
    let moves = preempted_and_moved(&original, &transformed(&original), 50_000);
    assert!(moves >= 5, "{moves} moves");
}

#[test]
fn a_cpu_bound_loop_without_yield_points_gets_them_from_the_transform() {
    let original = wat::parse_str(crunch_without_yield()).unwrap();
    // Without yield points nothing could unwind.
    assert_eq!(
        transform(&original, &TransformOptions::new(&[])),
        Err(TransformError::NoUnwindingImport)
    );
    // With them, at every function entry and loop head, calling mesh.yield every 500 passes:
    // the inner loop (about 20 units of fuel an iteration) reaches the import within about
    // 10,000 units, so a reserve of 50,000 covers the stretch from "fuel low" to the unwind.
    let mut options = TransformOptions::new(&[]);
    options.yield_points = Some(YieldPoints::new("mesh", "yield", 500));
    let wasm = transform(&original, &options).unwrap();
    let record = TransformRecord::find(&wasm).unwrap();
    assert_eq!(record.original, mielin_cells::sha256(&original));
    assert_eq!(record.imports, [UnwindingImport::new("mesh", "yield")]);
    let moves = preempted_and_moved(&original, &wasm, 50_000);
    assert!(moves >= 5, "{moves} moves");
    // At the outer loop's head only (and function entries), every pass calls the import: an
    // outer iteration is about 20,000 units, within the reserve.
    options.yield_points = Some(YieldPoints {
        placement: Placement::OutermostLoops,
        ..YieldPoints::new("mesh", "yield", 1)
    });
    let outer = transform(&original, &options).unwrap();
    assert!(outer.len() < wasm.len());
    let moves = preempted_and_moved(&original, &outer, 50_000);
    assert!(moves >= 5, "{moves} moves");
}

/// Runs `crunch(200,000)` of `wasm` (the transformed `original`) with 300,000 units of fuel per
/// call, preempted below `reserve` and moved to a fresh runtime at every suspension, and checks
/// the result against `original` run unmoved; how many times it moved. Without preemption the
/// same call runs out of fuel.
fn preempted_and_moved(original: &[u8], wasm: &[u8], reserve: u64) -> usize {
    let steps = 200_000i64;
    let mut reference = start(&Runtime::new(u64::MAX / 2), original, Host::default());
    let unmoved = i64_of(&reference.call("crunch", &[Val::I64(steps)]).unwrap());

    let fuel = 300_000;
    let mut plain = start(&Runtime::new(fuel), wasm, Host::default());
    assert_eq!(
        plain.call("crunch", &[Val::I64(steps)]).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::OutOfFuel)
    );

    let host = Host {
        reserve,
        ..Host::default()
    };
    let mut live = start(&Runtime::new(fuel), wasm, host);
    let mut outcome = live.run("crunch", &[Val::I64(steps)]).unwrap();
    let mut moves = 0;
    while let Completion::Suspended = outcome {
        let call = live.suspended_call().unwrap();
        assert_eq!(call.export, "crunch");
        assert_eq!(call.host_state, b"yield");
        live = migrate(live, fuel);
        moves += 1;
        outcome = live.resume_call().unwrap();
    }
    assert_eq!(i64_of(&returned(outcome)), unmoved);
    moves
}

#[test]
fn an_unwind_that_does_not_fit_is_refused_before_it_writes_outside_its_buffer() {
    let wasm = transformed(&wat::parse_str(RECV_WAT).unwrap());
    let host = Host {
        mid: MidCall::new(64),
        ..Host::default()
    };
    let mut live = start(&Runtime::new(1_000_000), &wasm, host);
    // Shallow: fits in 64 bytes.
    assert!(matches!(
        live.run("deep", &[Val::I32(0)]).unwrap(),
        Completion::Suspended
    ));
    let buffer = live.suspended_call().unwrap().buffer;
    assert_eq!(buffer.len, 64);
    live.host_mut().mailbox.push_back(vec![5]);
    assert_eq!(
        i64_of(&returned(live.resume_call().unwrap())),
        1 // one byte received
    );

    // Deep: 50 frames do not fit. The memory before the buffer is as it was.
    let before = live.capture().unwrap().wasm_state().to_vec();
    let err = live.run("deep", &[Val::I32(50)]).unwrap_err();
    assert_eq!(
        err,
        CellError::ExecutionFailed(ExecutionError::UnwindBufferOverflow)
    );
    let after = live.capture().unwrap();
    assert_eq!(after.state(), AgentState::Suspended);
    let start = buffer.start as usize;
    assert_eq!(after.wasm_state().len(), before.len());
    assert_eq!(&after.wasm_state()[..start], &before[..start]);
    // The instance is back to normal: moved back to Running, it runs an ordinary call.
    live.set_state(AgentState::Running).unwrap();
    live.host_mut().mailbox.push_back(vec![1]);
    live.call("deep", &[Val::I32(50)]).unwrap();
}

#[test]
fn a_suspended_call_that_does_not_fit_is_refused() {
    let wasm = transformed(&wat::parse_str(RECV_WAT).unwrap());
    let rt = Runtime::new(1_000_000);
    let mut live = start(&rt, &wasm, Host::default());
    assert_eq!(
        live.resume_call().unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::NotSuspended)
    );
    assert!(matches!(
        live.run("serve", &[Val::I32(1)]).unwrap(),
        Completion::Suspended
    ));
    let call = live.suspended_call().unwrap();
    let bytes = call.to_bytes().unwrap();
    assert_eq!(SuspendedCall::from_bytes(&bytes).unwrap(), call);
    // Every truncation and any trailing byte are refused by the decoder.
    for cut in 0..bytes.len() {
        assert!(SuspendedCall::from_bytes(&bytes[..cut]).is_err(), "{cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(SuspendedCall::from_bytes(&longer).is_err());

    let agent = live.into_agent_with_call().unwrap().0;
    let fresh = |agent: &Agent<Vec<u8>>| {
        let restored = MigrationSnapshot::capture_at(agent, None, 1)
            .restore()
            .unwrap();
        rt.resume(restored, Host::default(), link).unwrap()
    };
    let bad = CellError::ExecutionFailed(ExecutionError::BadSuspendedCall);
    let mut broken = call.clone();
    broken.buffer.start += 8; // not where the header is
    assert_eq!(fresh(&agent).restore_call(broken).unwrap_err(), bad);
    let mut broken = call.clone();
    broken.buffer.start = u32::MAX - 4; // past memory, and its end overflows
    assert_eq!(fresh(&agent).restore_call(broken).unwrap_err(), bad);
    let mut broken = call.clone();
    broken.export = "nope".into();
    assert_eq!(
        fresh(&agent).restore_call(broken).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::MissingExport)
    );
    // A module that is not transformed cannot take a suspended call.
    let plain = wat::parse_str(RECV_WAT).unwrap();
    let mut untransformed = start(&rt, &plain, Host::default());
    assert_eq!(untransformed.restore_call(call.clone()).unwrap_err(), bad);
    // The right one is taken, once.
    let mut good = fresh(&agent);
    good.restore_call(call.clone()).unwrap();
    assert_eq!(good.restore_call(call).unwrap_err(), bad);
    good.host_mut().mailbox.push_back(Vec::new());
    assert_eq!(i64_of(&returned(good.resume_call().unwrap())), 1);
}

/// The transformed `RECV_WAT`, a runtime of 10^6 fuel a call, and a route to node B.
fn recv_wat_setup() -> (Vec<u8>, Runtime, Route) {
    let wasm = transformed(&wat::parse_str(RECV_WAT).unwrap());
    let route = Route {
        target: NodeId::from_bytes([0xb; 16]),
        epoch: 1,
    };
    (wasm, Runtime::new(1_000_000), route)
}

/// Pre-copy finds changed memory by comparing chunks with what it sent: the unwind's writes into
/// the buffer are among them, so a delta taken after a suspension carries the suspended frames.
#[test]
fn a_pre_copy_delta_carries_the_unwound_frames() {
    let (wasm, rt, route) = recv_wat_setup();
    let source = Some(NodeId::from_bytes([0xa; 16]));

    let mut host = Host::default();
    host.mailbox.push_back(vec![42]);
    let unmoved = i64_of(
        &start(&rt, &wasm, host)
            .call("deep", &[Val::I32(20)])
            .unwrap(),
    );

    let mut live = start(&rt, &wasm, Host::default());
    // A first suspension places the buffer (memory grows); the call finishes.
    assert!(matches!(
        live.run("deep", &[Val::I32(0)]).unwrap(),
        Completion::Suspended
    ));
    live.host_mut().mailbox.push_back(vec![1]);
    returned(live.resume_call().unwrap());
    // Round one while the agent is between calls; then it suspends under 20 frames.
    let (pre, first) = live
        .precopy_begin(source, route, 1, &EncodeOptions::default())
        .unwrap();
    assert!(matches!(
        live.run("deep", &[Val::I32(20)]).unwrap(),
        Completion::Suspended
    ));
    let call = live.suspended_call().unwrap();
    // The stop carries the call section, so it is a version-3 delta.
    let delta = live
        .precopy_finish_with_call(
            &pre,
            source,
            2,
            &EncodeOptions {
                version: Some(3),
                ..Default::default()
            },
        )
        .unwrap();

    let (mut staged, mut digests) = rt
        .stage(&first, &Default::default(), Host::default(), link)
        .unwrap();
    let base = staged.capture().unwrap().wasm_state().to_vec();
    // The between-calls receiver refuses it, and the instance is unchanged.
    let mut untouched = digests.clone();
    assert_eq!(
        staged
            .apply_delta(&delta, &Default::default(), &mut untouched)
            .unwrap_err(),
        CellError::DeserializationFailed(DecodeError::CallNotTaken)
    );
    assert_eq!(staged.capture().unwrap().wasm_state(), &base[..]);
    staged
        .apply_delta_with_call(&delta, &Default::default(), &mut digests)
        .unwrap();
    let at = call.buffer.start as usize;
    let after = staged.capture_with_call().unwrap().0.wasm_state().to_vec();
    assert_ne!(
        after[at..at + 8],
        base[at..at + 8],
        "the header moved with the unwind"
    );
    // The delta's call section was taken over (as `restore_call(call)` would).
    assert_eq!(staged.suspended_call(), Some(call));
    staged.host_mut().mailbox.push_back(vec![42]);
    assert_eq!(i64_of(&returned(staged.resume_call().unwrap())), unmoved);
}

/// Gap 1: a live agent with a suspended call is captured with its call, or not at all. Every
/// path that cannot carry the call refuses with `CallSuspended` and changes nothing; the
/// call-aware paths give the call.
#[test]
fn a_suspended_agent_is_not_captured_without_its_call() {
    let (wasm, rt, route) = recv_wat_setup();
    let mut live = start(&rt, &wasm, Host::default());
    let (pre, _) = live
        .precopy_begin(None, route, 1, &EncodeOptions::default())
        .unwrap();
    assert!(matches!(
        live.run("serve", &[Val::I32(3)]).unwrap(),
        Completion::Suspended
    ));
    let suspended = CellError::ExecutionFailed(ExecutionError::CallSuspended);
    assert_eq!(live.capture().err(), Some(suspended));
    assert_eq!(live.snapshot_at(None, 1).err(), Some(suspended));
    assert_eq!(
        live.precopy_begin(None, route, 1, &EncodeOptions::default())
            .err(),
        Some(suspended)
    );
    assert_eq!(
        live.precopy_finish(&pre, None, 2, &EncodeOptions::default())
            .err(),
        Some(suspended)
    );
    // Refused before the state changed; a version-2 stop cannot carry the call either.
    assert_eq!(live.agent().state(), AgentState::Running);
    assert!(matches!(
        live.precopy_finish_with_call(&pre, None, 2, &EncodeOptions::default()),
        Err(CellError::SerializationFailed { .. })
    ));
    assert_eq!(live.agent().state(), AgentState::Running);
    let call = live.suspended_call().unwrap();
    assert_eq!(live.capture_with_call().unwrap().1, Some(call.clone()));
    let mut again = start(&rt, &wasm, Host::default());
    assert!(matches!(
        again.run("serve", &[Val::I32(3)]).unwrap(),
        Completion::Suspended
    ));
    assert_eq!(again.into_agent().err(), Some(suspended));
    let (agent, carried) = live.into_agent_with_call().unwrap();
    assert_eq!(carried, Some(call));
    assert!(!agent.wasm_state().is_empty());
    // Between calls, the call-aware paths give no call.
    let idle = start(&rt, &wasm, Host::default());
    assert_eq!(idle.into_agent_with_call().unwrap().1, None);
}

/// Gap 2: a snapshot with a call section never becomes a runnable agent between calls
/// (`into_agent`, `restore`, `Runtime::resume_bytes`, `stage`): only the call-aware path takes
/// it, and it resumes the call where it stopped.
#[test]
fn a_call_section_is_refused_by_the_between_calls_paths() {
    let (wasm, rt, route) = recv_wat_setup();
    let mut live = start(&rt, &wasm, Host::default());
    assert!(matches!(
        live.run("serve", &[Val::I32(7)]).unwrap(),
        Completion::Suspended
    ));
    let (agent, call) = live.into_agent_with_call().unwrap();
    let call = call.unwrap().to_bytes().unwrap();
    let v3 = EncodeOptions {
        version: Some(3),
        ..Default::default()
    };
    let bytes = MigrationSnapshot::capture_at(&agent, None, 1)
        .with_route(route)
        .with_call(call.clone())
        .serialize_with(&v3)
        .unwrap();
    let not_taken = CellError::DeserializationFailed(DecodeError::CallNotTaken);

    let arrived = MigrationSnapshot::deserialize(&bytes).unwrap();
    assert_eq!(arrived.call(), Some(&call[..]));
    assert_eq!(arrived.restore().err(), Some(not_taken));
    assert_eq!(arrived.clone().into_agent().err(), Some(not_taken));
    assert_eq!(
        rt.resume_bytes(&bytes, &Default::default(), Host::default(), link)
            .err(),
        Some(not_taken)
    );
    assert_eq!(
        rt.stage(&bytes, &Default::default(), Host::default(), link)
            .err(),
        Some(not_taken)
    );

    // The call-aware path: the same agent, and the call, resumed where it stopped.
    let (restored, carried) = arrived.into_agent_with_call().unwrap();
    assert_eq!(carried.as_deref(), Some(&call[..]));
    let mut resumed = rt.resume(restored, Host::default(), link).unwrap();
    resumed
        .restore_call(SuspendedCall::from_bytes(&call).unwrap())
        .unwrap();
    resumed.host_mut().mailbox.push_back(Vec::new());
    assert_eq!(i64_of(&returned(resumed.resume_call().unwrap())), 7);
}

proptest::proptest! {
    /// Any bytes: the decoder of the call section never panics, and what it accepts encodes
    /// back to the same bytes (one encoding per call).
    #[test]
    fn the_call_decoder_takes_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        if let Ok(call) = SuspendedCall::from_bytes(&bytes) {
            proptest::prop_assert_eq!(call.to_bytes().unwrap(), bytes);
        }
    }

    /// Well-formed calls survive the round trip.
    #[test]
    fn a_call_round_trips(
        export in "[a-z_]{1,40}",
        start: u32,
        len: u32,
        host_state in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=1024),
    ) {
        let call = SuspendedCall {
            export,
            buffer: midcall::UnwindBuffer { start, len },
            host_state,
        };
        let bytes = call.to_bytes().unwrap();
        proptest::prop_assert!(bytes.len() <= midcall::MAX_SUSPENDED_CALL_LEN);
        proptest::prop_assert_eq!(SuspendedCall::from_bytes(&bytes).unwrap(), call);
    }
}
