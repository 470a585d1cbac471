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
//! unwinding import: so that it instruments nearly everything, each module first gets a *yield
//! point*, a call to a new import `mielin_test.yield` (which does nothing here), at every
//! function entry and after every `loop`, and that import is the one that may unwind. The
//! rewrite shifts function indices by one (calls, `ref.func`, element segments, exports, the
//! start function, the name section); wasm-encoder's reencoder does it. A module without a
//! memory gets one of a page, for the unwind buffer (the transform refuses a module without
//! one, and it cannot be observed: no instruction of the module names a memory).
//!
//! `cargo test --features transform,simd --test spec_transform`. Without `wasm-opt` on the
//! `PATH` it fails: `.ci/run` installs Binaryen.

#[path = "spec_suite.rs"]
#[allow(dead_code)]
mod suite;

use std::convert::Infallible;

use mielin_cells::runtime::transform::{transform, TransformOptions};
use suite::{Def, Prepared};
use wasm_encoder::reencode::{utils, Error, Reencode};
use wasm_encoder::{
    CodeSection, EntityType, ImportSection, Instruction, MemorySection, MemoryType, Module,
    SectionId,
};
use wasmparser263::{Operator, Parser, Payload, TypeRef};

/// The import each yield point calls: `() -> ()`.
const YIELD: (&str, &str) = ("mielin_test", "yield");

fn main() {
    suite::run("through the deploy-time transform", Some(prepare));
}

/// The module with yield points, through the transform (unwinding at the yield import and at
/// every function it imported already), and the yield import's definition.
fn prepare(wasm: &[u8]) -> Result<Prepared, String> {
    let (with_yields, mut unwinding) = add_yield_points(wasm)?;
    unwinding.push((YIELD.0.to_string(), YIELD.1.to_string()));
    let pairs: Vec<(&str, &str)> = unwinding
        .iter()
        .map(|(m, n)| (m.as_str(), n.as_str()))
        .collect();
    let out = transform(&with_yields, &TransformOptions::new(&pairs)).map_err(|e| {
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

/// `wasm` with a call to the yield import at every function entry and after every `loop`, and
/// the functions it imported before (module, name). A module the parser refuses comes back as
/// it was (the transform refuses it as invalid); one without functions needs no yield point.
#[allow(clippy::type_complexity)]
fn add_yield_points(wasm: &[u8]) -> Result<(Vec<u8>, Vec<(String, String)>), String> {
    let mut imported = Vec::new();
    // An invalid module stays as it is: the memory added below could make it valid.
    let engine = wasmi::Engine::new(&mielin_cells::runtime::Runtime::config());
    if wasmi::Module::validate(&engine, wasm).is_err() {
        return Ok((wasm.to_vec(), imported));
    }
    let mut types = 0u32;
    let mut functions = 0u32;
    let mut memory = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else {
            return Ok((wasm.to_vec(), imported));
        };
        match payload {
            Payload::TypeSection(r) => {
                for group in r {
                    let Ok(group) = group else {
                        return Ok((wasm.to_vec(), imported));
                    };
                    types += group.types().len() as u32;
                }
            }
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    let Ok(import) = import else {
                        return Ok((wasm.to_vec(), imported));
                    };
                    match import.ty {
                        TypeRef::Func(_) => {
                            imported.push((import.module.to_string(), import.name.to_string()))
                        }
                        TypeRef::Memory(_) => memory = true,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => functions = r.count(),
            Payload::MemorySection(r) => memory |= r.count() > 0,
            _ => {}
        }
    }
    if functions == 0 || types == 0 {
        return Ok((wasm.to_vec(), imported));
    }
    let mut yields = Yields {
        imported: imported.len() as u32,
        yield_type: types,
        imports_written: false,
        memory_written: memory,
    };
    let mut module = Module::new();
    match yields.parse_core_module(&mut module, Parser::new(0), wasm) {
        Ok(()) => Ok((module.finish(), imported)),
        Err(e) => Err(format!("the yield points could not be added: {e:?}")),
    }
}

/// The reencoder that adds the yield import (last of the imported functions, so its index is
/// `imported`), its type (last of the types) and the calls.
struct Yields {
    imported: u32,
    yield_type: u32,
    imports_written: bool,
    /// Whether the module has a memory, or the one it lacked was written.
    memory_written: bool,
}

impl Yields {
    fn yield_import(&mut self, imports: &mut ImportSection) {
        imports.import(YIELD.0, YIELD.1, EntityType::Function(self.yield_type));
        self.imports_written = true;
    }
}

impl Reencode for Yields {
    type Error = Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, Error<Infallible>> {
        Ok(if func >= self.imported {
            func + 1
        } else {
            func
        })
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser263::TypeSectionReader<'_>,
    ) -> Result<(), Error<Infallible>> {
        utils::parse_type_section(self, types, section)?;
        types.ty().function([], []);
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser263::ImportSectionReader<'_>,
    ) -> Result<(), Error<Infallible>> {
        utils::parse_import_section(self, imports, section)?;
        self.yield_import(imports);
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), Error<Infallible>> {
        // A module without an import section gets one right after its type section.
        if after == Some(SectionId::Type)
            && before != Some(SectionId::Import)
            && !self.imports_written
        {
            let mut imports = ImportSection::new();
            self.yield_import(&mut imports);
            module.section(&imports);
        }
        // A module without a memory gets one where the memory section goes: before the first
        // of the sections that follow it.
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
        if follows_memory && !self.memory_written {
            let mut memories = MemorySection::new();
            memories.memory(MemoryType {
                minimum: 1,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
            module.section(&memories);
            self.memory_written = true;
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: wasmparser263::FunctionBody<'_>,
    ) -> Result<(), Error<Infallible>> {
        let call = Instruction::Call(self.imported);
        let mut f = self.new_function_with_parsed_locals(&func)?;
        f.instruction(&call);
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let is_loop = matches!(op, Operator::Loop { .. });
            f.instruction(&self.instruction(op)?);
            if is_loop {
                f.instruction(&call);
            }
        }
        code.function(&f);
        Ok(())
    }
}
