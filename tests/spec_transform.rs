//! The WebAssembly spec suite through the deploy-time transform (features `transform`, `simd`;
//! needs Binaryen's `wasm-opt`).
//!
//! `tests/spec_suite.rs` runs every module three ways (plain wasmi, the bridge, the bridge with
//! a migration before every command) and compares each command's results and traps. Here the
//! bridge's two runs start the module as the transform makes it, so every difference from plain
//! wasmi running the original is a miscompilation, and every module the transform cannot handle
//! must be refused with a reason (they are counted by reason).
//!
//! Few spec modules import a function, and Asyncify instruments only the code that can reach an
//! unwinding import: so the transform inserts its yield points (`YieldPoints`: a countdown at
//! every function entry and loop head that calls a new import, `mielin_test.yield`, which does
//! nothing here), and that import is unwinding, as is every function the module imports. So the
//! suite checks the yield points' rewrite (function indices shift by one everywhere) as much as
//! Asyncify. A module without a memory first gets one of a page, for the unwind buffer (the
//! transform refuses a module without one, and it cannot be observed: no instruction of the
//! module names a memory).
//!
//! `cargo test --features transform,simd --test spec_transform`. Without `wasm-opt` on the
//! `PATH` it fails: `.ci/run` installs Binaryen.

#[path = "spec_suite.rs"]
#[allow(dead_code)]
mod suite;

use std::convert::Infallible;

use mielin_cells::runtime::transform::{transform, TransformError, TransformOptions, YieldPoints};
use suite::{Def, Prepared};
use wasm_encoder::reencode::{Error, Reencode};
use wasm_encoder::{MemorySection, MemoryType, Module, SectionId};
use wasmparser_reencode::{Parser, Payload, TypeRef};

/// The import the yield points call: `() -> ()`.
const YIELD: (&str, &str) = ("mielin_test", "yield");
/// The yield points call it once every this many passes (both of a point's paths run often).
const INTERVAL: u32 = 3;

/// The fewest modules a run must start transformed: 1,431 did on 2026-12-06. A transform that
/// refused everything for a reason the harness accepts (wasm-opt failing on every module, say)
/// would otherwise compare nothing and pass.
const MIN_STARTED: usize = 1_400;

fn main() {
    let summary = suite::run("through the deploy-time transform", Some(prepare));
    if let Some(started) = summary.started {
        assert!(
            started >= MIN_STARTED,
            "only {started} modules started transformed (at least {MIN_STARTED} expected)"
        );
    }
}

/// The module through the transform, with yield points and unwinding at them and at every
/// function it imports, and the yield import's definition.
fn prepare(wasm: &[u8]) -> Result<Prepared, String> {
    let (with_memory, imported) = with_memory(wasm);
    let pairs: Vec<(&str, &str)> = imported
        .iter()
        .map(|(m, n)| (m.as_str(), n.as_str()))
        .collect();
    let mut options = TransformOptions::new(&pairs);
    options.yield_points = Some(YieldPoints::new(YIELD.0, YIELD.1, INTERVAL));
    let out = transform(&with_memory, &options).map_err(|e| {
        // Only what the transform states it cannot handle may be refused; anything else (its
        // own rewrite refused by the engine, a valid module called invalid) fails the run.
        let engine = wasmi::Engine::new(&mielin_cells::runtime::Runtime::config());
        let invalid_input = wasmi::Module::validate(&engine, wasm).is_err();
        match &e {
            TransformError::WasmOptFailed { .. }
            | TransformError::ReferenceTypedLocal { .. }
            | TransformError::TailCall
            | TransformError::BlockParams { .. }
            | TransformError::NoMemory
            | TransformError::BadImportName => {}
            TransformError::InvalidModule if invalid_input => {}
            other => panic!("the transform refused a module it must take: {other}"),
        }
        if let TransformError::WasmOptFailed { message, .. } = &e {
            // What wasm-opt said, without positions and numbers, so that refusals count by
            // kind.
            let kind: String = message
                .split(" (at ")
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect();
            return format!("wasm-opt refuses: {}", kind.trim());
        }
        // The reason without the function's index, so that refusals count by kind.
        let text = e.to_string();
        match text.split_once(' ') {
            Some(("function", rest)) => format!(
                "function{}",
                rest.trim_start_matches(|c: char| c.is_ascii_digit())
            ),
            _ => text,
        }
    })?;
    let ty = wasmi::FuncType::new([], []);
    Ok((
        out,
        vec![(YIELD.0.to_string(), YIELD.1.to_string(), Def::Func(ty))],
    ))
}

/// `wasm` with a memory of a page if it has none, and the functions it imports (module, name).
/// An invalid module comes back as it was (a memory could make it valid; the transform refuses
/// it).
fn with_memory(wasm: &[u8]) -> (Vec<u8>, Vec<(String, String)>) {
    let mut imported = Vec::new();
    let engine = wasmi::Engine::new(&mielin_cells::runtime::Runtime::config());
    if wasmi::Module::validate(&engine, wasm).is_err() {
        return (wasm.to_vec(), imported);
    }
    let mut memory = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("validated") {
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    let import = import.expect("validated");
                    match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => {
                            imported.push((import.module.to_string(), import.name.to_string()))
                        }
                        TypeRef::Memory(_) => memory = true,
                        _ => {}
                    }
                }
            }
            // An empty memory section too: a second one would make the module invalid.
            Payload::MemorySection(_) => memory = true,
            _ => {}
        }
    }
    if memory {
        return (wasm.to_vec(), imported);
    }
    let mut module = Module::new();
    AddMemory { written: false }
        .parse_core_module(&mut module, Parser::new(0), wasm)
        .expect("a valid module reencodes");
    (module.finish(), imported)
}

/// Adds a memory of one page where the memory section goes.
struct AddMemory {
    written: bool,
}

impl Reencode for AddMemory {
    type Error = Infallible;

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), Error<Infallible>> {
        // Before the first of the sections that follow the memory section.
        let follows_memory = match before {
            None => true,
            Some(id) => matches!(
                id,
                SectionId::Tag
                    | SectionId::Global
                    | SectionId::Export
                    | SectionId::Start
                    | SectionId::Element
                    | SectionId::DataCount
                    | SectionId::Code
                    | SectionId::Data
            ),
        };
        if follows_memory && !self.written {
            let mut memories = MemorySection::new();
            memories.memory(MemoryType {
                minimum: 1,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
            module.section(&memories);
            self.written = true;
        }
        Ok(())
    }
}
