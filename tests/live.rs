//! Live agents under wasmi: run, capture, migrate through bytes, resume, and get the same result
//! as an agent that never moved.
#![cfg(feature = "wasmi")]

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::runtime::{LiveAgent, Runtime, Val, PAGE_SIZE};
use mielin_cells::{Agent, AgentId, AgentState, CellError, Dna, GlobalValue, NodeId};
use proptest::prelude::*;

const FUEL: u64 = 1_000_000;
const A: NodeId = NodeId::from_bytes([0xa; 16]);
const B: NodeId = NodeId::from_bytes([0xb; 16]);

fn module(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

fn counter() -> Vec<u8> {
    module(include_str!("../examples/agents/counter.wat"))
}

fn agent(wasm: Vec<u8>) -> Agent<Vec<u8>> {
    let dna = Dna::new(wasm).unwrap();
    Agent::with_id(AgentId::derive(dna.hash(), 0), dna)
}

fn start(rt: &Runtime, wasm: Vec<u8>) -> LiveAgent<()> {
    rt.start(agent(wasm), (), |_| Ok(())).unwrap()
}

fn i64_of(v: &[Val]) -> i64 {
    match v {
        [Val::I64(x)] => *x,
        other => panic!("expected one i64, got {other:?}"),
    }
}

fn i32_of(v: &[Val]) -> i32 {
    match v {
        [Val::I32(x)] => *x,
        other => panic!("expected one i32, got {other:?}"),
    }
}

/// Steps `from..to` of a fixed input sequence.
fn run_steps(live: &mut LiveAgent<()>, from: u32, to: u32) {
    for i in from..to {
        let x = (i.wrapping_mul(2_654_435_761) >> 16) as i32;
        live.call("step", &[Val::I32(x)]).unwrap();
    }
}

/// Node A runs, captures and sends; node B restores and resumes. Only bytes cross.
fn migrate(rt: &Runtime, live: LiveAgent<()>) -> LiveAgent<()> {
    let mut agent = live.into_agent().unwrap();
    let mut manager = MigrationManager::with_capacity::<4>(A);
    let bytes = manager
        .initiate_migration_at(&mut agent, B, 1_000)
        .unwrap()
        .serialize()
        .unwrap();
    manager.complete_migration(&mut agent).unwrap();
    let restored = MigrationSnapshot::deserialize(&bytes)
        .unwrap()
        .restore()
        .unwrap();
    assert_eq!(restored.state(), AgentState::Migrating);
    rt.resume(restored, (), |_| Ok(())).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn resume_equivalence(n in 0u32..60, m in 0u32..60) {
        let rt = Runtime::new(FUEL);
        let mut still = start(&rt, counter());
        run_steps(&mut still, 0, n + m);
        let expected_total = i64_of(&still.call("total", &[]).unwrap());

        let mut moving = start(&rt, counter());
        run_steps(&mut moving, 0, n);
        let mut moved = migrate(&rt, moving);
        prop_assert_eq!(moved.agent().state(), AgentState::Running);
        run_steps(&mut moved, n, n + m);
        prop_assert_eq!(i64_of(&moved.call("total", &[]).unwrap()), expected_total);
        prop_assert_eq!(i32_of(&moved.call("steps", &[]).unwrap()), (n + m) as i32);
        prop_assert_eq!(
            i64_of(&moved.call("digest", &[]).unwrap()),
            i64_of(&still.call("digest", &[]).unwrap())
        );

        // The captured state is identical too: memory, and all three unexported globals.
        let a = still.capture().unwrap().clone();
        let b = moved.capture().unwrap();
        prop_assert_eq!(a.wasm_state(), b.wasm_state());
        prop_assert_eq!(a.globals(), b.globals());
        prop_assert_eq!(a.globals().len(), 3);
    }
}

#[test]
fn stack_pointer_global_is_carried() {
    let rt = Runtime::new(FUEL);
    let mut live = start(&rt, counter());
    run_steps(&mut live, 0, 10);
    let agent = live.into_agent().unwrap();
    // $sp moved down by 4 bytes a step; $total and $steps follow.
    assert_eq!(agent.globals()[0], GlobalValue::I32(65_536 - 40));
    assert_eq!(agent.globals()[2], GlobalValue::I32(10));
    assert_eq!(agent.wasm_state().len(), PAGE_SIZE);
}

#[test]
fn grown_memory_is_restored_at_its_size() {
    let wasm = module(
        r#"(module
            (memory 1)
            (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
            (func (export "pages") (result i32) (memory.size))
            (func (export "poke") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
            (func (export "peek") (param i32) (result i32) (i32.load (local.get 0))))"#,
    );
    let rt = Runtime::new(FUEL);
    let mut live = start(&rt, wasm);
    assert_eq!(i32_of(&live.call("grow", &[Val::I32(2)]).unwrap()), 1);
    let last = (3 * PAGE_SIZE - 4) as i32;
    live.call("poke", &[Val::I32(last), Val::I32(-77)]).unwrap();
    let mut moved = migrate(&rt, live);
    assert_eq!(moved.agent().wasm_state().len(), 3 * PAGE_SIZE);
    assert_eq!(i32_of(&moved.call("pages", &[]).unwrap()), 3);
    assert_eq!(i32_of(&moved.call("peek", &[Val::I32(last)]).unwrap()), -77);
}

#[test]
fn start_function_runs_once_not_again_on_resume() {
    let wasm = module(
        r#"(module
            (memory 1)
            (func $init (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))))
            (start $init)
            (func (export "starts") (result i32) (i32.load (i32.const 0))))"#,
    );
    let rt = Runtime::new(FUEL);
    let mut live = start(&rt, wasm);
    assert_eq!(i32_of(&live.call("starts", &[]).unwrap()), 1);
    let mut moved = migrate(&rt, live);
    assert_eq!(i32_of(&moved.call("starts", &[]).unwrap()), 1);
}

#[test]
fn traps_map_to_execution_failed_and_suspend_the_agent() {
    let wasm = module(
        r#"(module
            (func (export "boom") unreachable)
            (func (export "spin") (loop $l (br $l)))
            (func (export "div") (param i32) (result i32) (i32.div_s (i32.const 1) (local.get 0))))"#,
    );
    let rt = Runtime::new(10_000);
    let mut live = start(&rt, wasm);

    let err = live.call("boom", &[]).unwrap_err();
    assert_eq!(
        err,
        CellError::ExecutionFailed {
            reason: wasmi::TrapCode::UnreachableCodeReached.trap_message()
        }
    );
    assert_eq!(live.agent().state(), AgentState::Suspended);
    assert_eq!(
        live.call("div", &[Val::I32(1)]).unwrap_err(),
        CellError::ExecutionFailed {
            reason: "the agent is not Running"
        }
    );

    live.set_state(AgentState::Running).unwrap();
    assert_eq!(
        live.call("div", &[Val::I32(0)]).unwrap_err(),
        CellError::ExecutionFailed {
            reason: wasmi::TrapCode::IntegerDivisionByZero.trap_message()
        }
    );

    live.set_state(AgentState::Running).unwrap();
    assert_eq!(
        live.call("spin", &[]).unwrap_err(),
        CellError::ExecutionFailed {
            reason: "out of fuel"
        }
    );
    assert_eq!(live.agent().state(), AgentState::Suspended);

    // Each call gets fresh fuel: after running out, the agent works again once resumed.
    live.set_state(AgentState::Running).unwrap();
    assert_eq!(i32_of(&live.call("div", &[Val::I32(1)]).unwrap()), 1);

    assert_eq!(
        live.call("nope", &[]).unwrap_err(),
        CellError::ExecutionFailed {
            reason: "no exported function with that name"
        }
    );
    assert_eq!(
        live.call("div", &[Val::I64(1)]).unwrap_err(),
        CellError::ExecutionFailed {
            reason: "the arguments do not match the function's type"
        }
    );
    assert_eq!(live.agent().state(), AgentState::Running);
}

#[test]
fn host_imports_are_the_embedders() {
    let wasm = module(
        r#"(module
            (import "env" "tick" (func $tick (param i32) (result i32)))
            (func (export "run") (param i32) (result i32) (call $tick (local.get 0))))"#,
    );
    let rt = Runtime::new(FUEL);
    let mut live = rt
        .start(agent(wasm.clone()), 100i32, |linker| {
            linker.func_wrap("env", "tick", |caller: wasmi::Caller<'_, i32>, x: i32| {
                *caller.data() + x
            })?;
            Ok(())
        })
        .unwrap();
    assert_eq!(i32_of(&live.call("run", &[Val::I32(5)]).unwrap()), 105);
    assert_eq!(*live.host(), 100);

    // Without the import the module cannot be linked.
    let err = rt.start(agent(wasm), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed {
            reason: "the module's imports could not be linked"
        }
    );
}

#[test]
fn uncarriable_state_is_refused() {
    let rt = Runtime::new(FUEL);
    let cases = [
        (
            r#"(module (import "env" "mem" (memory 1)))"#,
            "the module imports its memory: host state cannot be carried",
        ),
        (
            r#"(module (import "env" "g" (global (mut i32))))"#,
            "the module imports a mutable global: host state cannot be carried",
        ),
        (
            r#"(module (table 1 funcref)
                 (func (export "f") (drop (table.grow (ref.null func) (i32.const 1)))))"#,
            "the module modifies tables at run time: table state is not carried",
        ),
        (
            r#"(module (memory 1) (data "x") (func (export "f") (data.drop 0)))"#,
            "the module drops data or element segments: segment state is not carried",
        ),
        (
            r#"(module (func (export "__mielin_memory")))"#,
            "the module exports a name reserved for mielin-cells",
        ),
    ];
    for (wat, reason) in cases {
        let err = rt.start(agent(module(wat)), (), |_| Ok(())).err().unwrap();
        assert_eq!(err, CellError::ExecutionFailed { reason }, "{wat}");
    }
    // Not valid WebAssembly past the header.
    let mut broken = b"\0asm\x01\0\0\0".to_vec();
    broken.extend_from_slice(&[0x01, 0x05, 0xff]);
    let err = rt.start(agent(broken), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed {
            reason: "the module is not valid WebAssembly"
        }
    );
}

#[test]
fn snapshot_from_another_module_is_refused() {
    // An agent whose carried globals do not fit its module (as if its state came from elsewhere).
    let rt = Runtime::new(FUEL);
    let mut wrong = agent(counter());
    wrong.set_state(AgentState::Running).unwrap();
    wrong.set_wasm_state(vec![0; PAGE_SIZE]);
    wrong.set_globals(&[GlobalValue::I32(0)]).unwrap();
    // An agent that is already Running elsewhere is not resumed.
    assert_eq!(
        rt.resume(wrong.clone(), (), |_| Ok(())).err().unwrap(),
        CellError::InvalidState {
            from: AgentState::Running,
            to: AgentState::Running
        }
    );
    wrong.set_state(AgentState::Suspended).unwrap();
    let err = rt.resume(wrong.clone(), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed {
            reason: "the agent carries a different number of globals than its module has"
        }
    );
    wrong
        .set_globals(&[
            GlobalValue::I64(0),
            GlobalValue::I64(0),
            GlobalValue::I32(0),
        ])
        .unwrap();
    let err = rt.resume(wrong.clone(), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed {
            reason: "a carried global does not match the module's global type"
        }
    );
    wrong.set_wasm_state(vec![0; 100]);
    let err = rt.resume(wrong.clone(), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed {
            reason: "the captured memory is not a whole number of pages"
        }
    );
}
