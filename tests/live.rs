//! Live agents under wasmi: run, capture, migrate through bytes, resume, and get the same result
//! as an agent that never moved.
#![cfg(feature = "wasmi")]

use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::runtime::{LiveAgent, Runtime, Val, PAGE_SIZE};
use mielin_cells::{
    Agent, AgentId, AgentState, CellError, Dna, ExecutionError, GlobalValue, NodeId, Refusal, Trap,
};
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
    // The live agent keeps one copy of its memory, the instance's: the agent's own is empty
    // until a capture copies the instance's out.
    assert!(moved.agent().wasm_state().is_empty());
    assert_eq!(moved.capture().unwrap().wasm_state().len(), 3 * PAGE_SIZE);
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
        CellError::ExecutionFailed(ExecutionError::Trap(Trap::Unreachable))
    );
    assert_eq!(live.agent().state(), AgentState::Suspended);
    assert_eq!(
        live.call("div", &[Val::I32(1)]).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::NotRunning {
            found: AgentState::Suspended
        })
    );

    live.set_state(AgentState::Running).unwrap();
    assert_eq!(
        live.call("div", &[Val::I32(0)]).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::Trap(Trap::IntegerDivisionByZero))
    );

    live.set_state(AgentState::Running).unwrap();
    assert_eq!(
        live.call("spin", &[]).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::OutOfFuel)
    );
    assert_eq!(live.agent().state(), AgentState::Suspended);

    // Each call gets fresh fuel: after running out, the agent works again once resumed.
    live.set_state(AgentState::Running).unwrap();
    assert_eq!(i32_of(&live.call("div", &[Val::I32(1)]).unwrap()), 1);

    assert_eq!(
        live.call("nope", &[]).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::MissingExport)
    );
    assert_eq!(
        live.call("div", &[Val::I64(1)]).unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::WrongArguments)
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
        CellError::ExecutionFailed(ExecutionError::UnresolvedImports)
    );
}

#[test]
fn uncarriable_state_is_refused() {
    let rt = Runtime::new(FUEL);
    let cases = [
        (
            r#"(module (import "env" "mem" (memory 1)))"#,
            Refusal::ImportedMemory,
        ),
        (
            r#"(module (import "env" "g" (global (mut i32))))"#,
            Refusal::ImportedMutableGlobal,
        ),
        (
            r#"(module (table 1 funcref)
                 (func (export "f") (drop (table.grow (ref.null func) (i32.const 1)))))"#,
            Refusal::TableMutation,
        ),
        (
            r#"(module (memory 1) (data "x") (func (export "f") (data.drop 0)))"#,
            Refusal::SegmentDrop,
        ),
        (
            r#"(module (func (export "__mielin_memory")))"#,
            Refusal::ReservedExport,
        ),
        (
            r#"(module (import "env" "t" (table 1 funcref)))"#,
            Refusal::ImportedTable,
        ),
        (
            r#"(module (memory 1) (memory 1))"#,
            Refusal::MultipleMemories,
        ),
        (
            r#"(module (table 1 funcref) (elem (i32.const 0) func $f) (func $f)
                 (func (export "f") (elem.drop 0)))"#,
            Refusal::SegmentDrop,
        ),
    ];
    for (wat, why) in cases {
        let err = rt.start(agent(module(wat)), (), |_| Ok(())).err().unwrap();
        assert_eq!(
            err,
            CellError::ExecutionFailed(ExecutionError::Refused(why)),
            "{wat}"
        );
    }
    // One mutable global more than an agent carries.
    let globals = "(global (mut i32) (i32.const 0))".repeat(mielin_cells::MAX_GLOBALS + 1);
    let err = rt
        .start(
            agent(module(&format!("(module {globals})"))),
            (),
            |_| Ok(()),
        )
        .err()
        .unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed(ExecutionError::Refused(Refusal::TooManyMutableGlobals {
            found: mielin_cells::MAX_GLOBALS + 1
        }))
    );
    // 64-bit and shared memories are not even valid for the runtime's engine (wasmi's
    // `memory64` and threads are off); the rewrite refuses them should that change.
    for wat in ["(module (memory i64 1))", "(module (memory 1 1 shared))"] {
        let err = rt.start(agent(module(wat)), (), |_| Ok(())).err().unwrap();
        assert_eq!(
            err,
            CellError::ExecutionFailed(ExecutionError::InvalidModule),
            "{wat}"
        );
    }
    // Not valid WebAssembly past the header.
    let mut broken = b"\0asm\x01\0\0\0".to_vec();
    broken.extend_from_slice(&[0x01, 0x05, 0xff]);
    let err = rt.start(agent(broken), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed(ExecutionError::InvalidModule)
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
        CellError::ExecutionFailed(ExecutionError::GlobalCountMismatch)
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
        CellError::ExecutionFailed(ExecutionError::GlobalTypeMismatch)
    );
    wrong.set_wasm_state(vec![0; 100]);
    let err = rt.resume(wrong.clone(), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed(ExecutionError::StateNotWholePages)
    );
}

/// Issue 15, finding 1: the rewrite drops the start section and adds exports, which made these
/// invalid modules valid. The original is validated first; plain wasmi with the runtime's
/// configuration refuses each of them too.
#[test]
fn invalid_originals_stay_invalid_after_the_rewrite() {
    let two_starts: &[u8] = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x08\x01\0\x08\x01\0\x0a\x04\x01\x02\0\x0b";
    // The same module with one start section is valid: the bytes above differ only by it.
    let one_start: &[u8] =
        b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x08\x01\0\x0a\x04\x01\x02\0\x0b";
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "a start function with a result (start.wast)",
            module(r#"(module (func $main (result i32) (return (i32.const 0))) (start $main))"#),
        ),
        (
            "an undeclared ref.func (ref_func.wast)",
            module(r#"(module (start $f) (func $f (drop (ref.func $f))))"#),
        ),
        ("two start sections (binary.wast)", two_starts.to_vec()),
    ];
    let rt = Runtime::new(FUEL);
    let plain = wasmi::Engine::new(&Runtime::config());
    for (what, wasm) in cases {
        assert!(wasmi::Module::new(&plain, &wasm).is_err(), "{what}");
        let err = rt.start(agent(wasm), (), |_| Ok(())).err().unwrap();
        assert_eq!(
            err,
            CellError::ExecutionFailed(ExecutionError::InvalidModule),
            "{what}"
        );
    }
    start(&rt, one_start.to_vec());
}

/// Issue 15, finding 2: a mutable reference global started, then failed every capture. Capture
/// carries numbers only, so such a module is refused at start; immutable reference globals are
/// not captured and are fine.
#[test]
fn mutable_reference_globals_are_refused_at_start() {
    let rt = Runtime::new(FUEL);
    for wat in [
        r#"(module (global (mut externref) (ref.null extern)) (func (export "f")))"#,
        r#"(module (global (mut funcref) (ref.null func)) (func (export "f")))"#,
    ] {
        let err = rt.start(agent(module(wat)), (), |_| Ok(())).err().unwrap();
        assert_eq!(
            err,
            CellError::ExecutionFailed(ExecutionError::Refused(Refusal::MutableReferenceGlobal)),
            "{wat}"
        );
    }
    let wasm = module(
        r#"(module (global externref (ref.null extern)) (global (mut i32) (i32.const 7))
             (func (export "g") (result i32) (global.get 1)))"#,
    );
    let mut moved = migrate(&rt, start(&rt, wasm));
    assert_eq!(i32_of(&moved.call("g", &[]).unwrap()), 7);
}

/// Issue 15, finding 3: imported immutable globals are defined through the link step, in the
/// agent's own store; a reference from another store is an error, not a wasmi panic.
#[test]
fn imported_globals_are_linked_in_the_agents_store() {
    let wasm = module(
        r#"(module (import "spectest" "global_i32" (global i32))
             (global $g (mut i32) (i32.const 0))
             (func (export "g") (result i32) (global.get 0))
             (func (export "bump") (global.set $g (i32.add (global.get $g) (global.get 0))))
             (func (export "get") (result i32) (global.get $g)))"#,
    );
    let rt = Runtime::new(FUEL);
    let link = |imports: &mut mielin_cells::runtime::Imports<'_, ()>| {
        imports.global("spectest", "global_i32", Val::I32(666))?;
        Ok(())
    };
    let mut live = rt.start(agent(wasm.clone()), (), link).unwrap();
    assert_eq!(i32_of(&live.call("g", &[]).unwrap()), 666);
    live.call("bump", &[]).unwrap();
    let mut carried = live.into_agent().unwrap();
    carried.set_state(AgentState::Suspended).unwrap();
    let mut moved = rt.resume(carried, (), link).unwrap();
    assert_eq!(i32_of(&moved.call("get", &[]).unwrap()), 666);

    // Defined with another type: the import is unresolved.
    let err = rt
        .start(agent(wasm.clone()), (), |imports| {
            imports.global("spectest", "global_i32", Val::I64(666))?;
            Ok(())
        })
        .err()
        .unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed(ExecutionError::UnresolvedImports)
    );

    // A function reference made in another store: refused by the link step, no panic.
    let mut other = wasmi::Store::new(&wasmi::Engine::default(), ());
    let foreign = wasmi::Func::wrap(&mut other, || {});
    let ref_wasm = module(
        r#"(module (import "spectest" "global_funcref" (global funcref))
             (func (export "null") (result i32) (ref.is_null (global.get 0))))"#,
    );
    let err = rt
        .start(agent(ref_wasm.clone()), (), |imports| {
            imports.global("spectest", "global_funcref", Val::FuncRef(foreign.into()))?;
            Ok(())
        })
        .err()
        .unwrap();
    assert_eq!(err, CellError::ExecutionFailed(ExecutionError::LinkFailed));
    // A null reference is fine.
    let mut live = rt
        .start(agent(ref_wasm), (), |imports| {
            imports.global(
                "spectest",
                "global_funcref",
                Val::FuncRef(wasmi::Nullable::Null),
            )?;
            Ok(())
        })
        .unwrap();
    assert_eq!(i32_of(&live.call("null", &[]).unwrap()), 1);

    // A reference argument from another store is refused too (wasmi would panic on it).
    let wasm = module(r#"(module (func (export "take") (param funcref)))"#);
    let mut live = start(&rt, wasm);
    assert_eq!(
        live.call("take", &[Val::FuncRef(foreign.into())])
            .unwrap_err(),
        CellError::ExecutionFailed(ExecutionError::WrongArguments)
    );
    live.call("take", &[Val::FuncRef(wasmi::Nullable::Null)])
        .unwrap();
}

/// Issue 15, finding 4: with the `simd` feature agents may use v128; a mutable v128 global is
/// refused at start (the version-1 wire format carries no 128-bit global), an immutable one and
/// v128 values in memory are carried.
#[cfg(feature = "simd")]
#[test]
fn simd_agents_run_and_migrate() {
    let rt = Runtime::new(FUEL);
    let wasm = module(
        r#"(module (memory 1)
             (global $k v128 (v128.const i32x4 1 2 3 4))
             (func (export "acc")
               (v128.store (i32.const 16) (i32x4.add (v128.load (i32.const 16)) (global.get $k))))
             (func (export "lane") (param i32) (result i32)
               (i32.load (i32.add (i32.const 16) (i32.mul (local.get 0) (i32.const 4))))))"#,
    );
    let mut live = start(&rt, wasm);
    live.call("acc", &[]).unwrap();
    let mut moved = migrate(&rt, live);
    moved.call("acc", &[]).unwrap();
    for lane in 0..4 {
        assert_eq!(
            i32_of(&moved.call("lane", &[Val::I32(lane)]).unwrap()),
            2 * (lane + 1)
        );
    }
    let err = rt
        .start(
            agent(module(
                r#"(module (global (mut v128) (v128.const i64x2 0 0)) (func (export "f")))"#,
            )),
            (),
            |_| Ok(()),
        )
        .err()
        .unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed(ExecutionError::Refused(Refusal::MutableV128Global))
    );
}

/// Without the `simd` feature, SIMD code is not valid for the engine, and refused as such.
#[cfg(not(feature = "simd"))]
#[test]
fn simd_needs_the_feature() {
    let rt = Runtime::new(FUEL);
    let wasm = module(r#"(module (func (export "f") (drop (v128.const i64x2 0 0))))"#);
    let err = rt.start(agent(wasm), (), |_| Ok(())).err().unwrap();
    assert_eq!(
        err,
        CellError::ExecutionFailed(ExecutionError::InvalidModule)
    );
}
