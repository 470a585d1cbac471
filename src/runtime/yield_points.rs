//! Yield points the deploy-time transform inserts before Asyncify (feature `transform`), so
//! that a CPU-bound agent whose author wrote none can be preempted in the middle of a call.
//!
//! At every function entry and at the head of every loop (after the `loop` instruction, so it
//! runs on every iteration) the module gets a countdown:
//!
//! ```text
//! global.get $countdown  i32.const 1  i32.sub  global.set $countdown
//! global.get $countdown  i32.eqz
//! if  i32.const <interval>  global.set $countdown  call $yield  end
//! ```
//!
//! so the yield import, `() -> ()`, is called once every `interval` points, and the host decides
//! there whether to suspend (`midcall::fuel_below`). The countdown is a new mutable `i32`
//! global, last of the globals: it travels in every snapshot like any other. Every loop
//! iteration and every call passes a point, so between two calls of the import the guest runs at
//! most `interval` times the longest stretch without a loop head or a call (a function's
//! straight-line code, plus the rest of the callers' stretches it returns into).
//!
//! The import is added last of the imported functions, which shifts every defined function's
//! index by one: calls, `ref.func`, element segments, exports, the start function and the name
//! section are rewritten (wasm-encoder's reencoder). A module that imports the same name
//! already, with type `() -> ()`, keeps that import and gains no other. A `name` section that
//! does not read is dropped (the engine never reads it either). Other custom sections are
//! copied as they are: one that holds code offsets (DWARF, branch hints) no longer matches the
//! rewritten code, as after any rewrite by Binaryen.

use super::transform::{TransformError, UnwindingImport};
use alloc::vec::Vec;
use core::convert::Infallible;
use wasm_encoder::reencode::{utils, Error, Reencode};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, EntityType, GlobalSection, GlobalType, ImportSection,
    Instruction, Module, SectionId, ValType,
};
use wasmparser_reencode::{Operator, Parser, Payload, TypeRef};

/// Where the points go and how often they call the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YieldPoints {
    /// The import each point calls, `() -> ()`; listed among the unwinding imports.
    pub import: UnwindingImport,
    /// The import is called once every this many points (at least 1).
    pub interval: u32,
    /// Which loops get a point (every function entry gets one).
    pub placement: Placement,
}

/// Which loop heads get a yield point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every loop: the guest time between two points is bounded by straight-line code, at a
    /// cost in hot inner loops (`docs/benchmarks.md`: 2.5x on a tight xorshift loop).
    EveryLoop,
    /// Only loops not nested in another loop of the same function: cheap, but an inner loop
    /// runs to its end (or the call's fuel runs out) before the next point.
    OutermostLoops,
}

impl YieldPoints {
    /// Points calling `module`.`name` every `interval` passes, at every loop head.
    pub fn new(module: &str, name: &str, interval: u32) -> Self {
        YieldPoints {
            import: UnwindingImport::new(module, name),
            interval,
            placement: Placement::EveryLoop,
        }
    }
}

/// `module` with the yield points of `points`; the caller has validated it.
pub(crate) fn insert(module: &[u8], points: &YieldPoints) -> Result<Vec<u8>, TransformError> {
    let invalid = |_| TransformError::InvalidModule;
    if points.interval == 0 {
        return Err(TransformError::BadYieldPoints);
    }
    let mut types: Vec<Option<(usize, usize)>> = Vec::new();
    let mut has_types = false;
    let mut imported_functions = 0u32;
    let mut existing = None;
    let mut globals = 0u32;
    let mut has_globals = false;
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                has_types = true;
                for group in reader {
                    for sub in group.map_err(invalid)?.into_types() {
                        types.push(match &sub.composite_type.inner {
                            wasmparser_reencode::CompositeInnerType::Func(f) => {
                                Some((f.params().len(), f.results().len()))
                            }
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    match import.ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => {
                            if import.module == points.import.module
                                && import.name == points.import.name
                            {
                                if types.get(ty as usize) != Some(&Some((0, 0))) {
                                    return Err(TransformError::BadYieldPoints);
                                }
                                existing = Some(imported_functions);
                            }
                            imported_functions += 1;
                        }
                        TypeRef::Global(_) => globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::GlobalSection(reader) => {
                has_globals = true;
                globals += reader.count();
            }
            _ => {}
        }
    }
    let mut rewrite = Points {
        placement: points.placement,
        yield_function: existing.unwrap_or(imported_functions),
        add_import: existing.is_none(),
        imported_functions,
        yield_type: types.len() as u32,
        countdown: globals,
        interval: points.interval,
        import: points.import.clone(),
        has_types,
        types_written: false,
        imports_written: false,
        globals_written: false,
        has_globals,
    };
    let mut out = Module::new();
    rewrite
        .parse_core_module(&mut out, Parser::new(0), module)
        .map_err(|_| TransformError::InvalidModule)?;
    Ok(out.finish())
}

/// The reencoder that adds the import, its type, the countdown and the points.
struct Points {
    placement: Placement,
    /// The yield import's function index in the output.
    yield_function: u32,
    /// Whether the import is new (else the module's own is used and nothing shifts).
    add_import: bool,
    imported_functions: u32,
    /// The index of the type `() -> ()` added last.
    yield_type: u32,
    /// The countdown's global index (last of the globals).
    countdown: u32,
    interval: u32,
    import: UnwindingImport,
    /// Whether the module has a type section (perhaps empty).
    has_types: bool,
    types_written: bool,
    imports_written: bool,
    globals_written: bool,
    has_globals: bool,
}

impl Points {
    fn type_section_end(&mut self, types: &mut wasm_encoder::TypeSection) {
        types.ty().function([], []);
        self.types_written = true;
    }

    fn import_section_end(&mut self, imports: &mut ImportSection) {
        if self.add_import {
            imports.import(
                &self.import.module,
                &self.import.name,
                EntityType::Function(self.yield_type),
            );
        }
        self.imports_written = true;
    }

    fn global_section_end(&mut self, globals: &mut GlobalSection) {
        globals.global(
            GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i32_const(self.interval as i32),
        );
        self.globals_written = true;
    }

    /// The countdown and, every `interval` passes, the call.
    fn point(&self, f: &mut wasm_encoder::Function) {
        let c = self.countdown;
        f.instruction(&Instruction::GlobalGet(c))
            .instruction(&Instruction::I32Const(1))
            .instruction(&Instruction::I32Sub)
            .instruction(&Instruction::GlobalSet(c))
            .instruction(&Instruction::GlobalGet(c))
            .instruction(&Instruction::I32Eqz)
            .instruction(&Instruction::If(BlockType::Empty))
            .instruction(&Instruction::I32Const(self.interval as i32))
            .instruction(&Instruction::GlobalSet(c))
            .instruction(&Instruction::Call(self.yield_function))
            .instruction(&Instruction::End);
    }
}

/// Where a section goes in the binary format's order (custom sections aside).
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
        _ => 0,
    }
}

impl Reencode for Points {
    type Error = Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, Error<Infallible>> {
        Ok(if self.add_import && func >= self.imported_functions {
            func + 1
        } else {
            func
        })
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser_reencode::TypeSectionReader<'_>,
    ) -> Result<(), Error<Infallible>> {
        utils::parse_type_section(self, types, section)?;
        self.type_section_end(types);
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser_reencode::ImportSectionReader<'_>,
    ) -> Result<(), Error<Infallible>> {
        utils::parse_import_section(self, imports, section)?;
        self.import_section_end(imports);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser_reencode::GlobalSectionReader<'_>,
    ) -> Result<(), Error<Infallible>> {
        utils::parse_global_section(self, globals, section)?;
        self.global_section_end(globals);
        Ok(())
    }

    /// The sections the module lacks, each where the format puts it: before the first section
    /// that follows it.
    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), Error<Infallible>> {
        let next = before.map_or(u8::MAX, rank);
        if next == 0 {
            return Ok(()); // a custom section: the next hook decides
        }
        if !self.has_types && !self.types_written && next > rank(SectionId::Type) {
            let mut types = wasm_encoder::TypeSection::new();
            self.type_section_end(&mut types);
            module.section(&types);
        }
        if !self.imports_written && next > rank(SectionId::Import) {
            let mut imports = ImportSection::new();
            self.import_section_end(&mut imports);
            module.section(&imports);
        }
        if !self.has_globals && !self.globals_written && next > rank(SectionId::Global) {
            let mut globals = GlobalSection::new();
            self.global_section_end(&mut globals);
            module.section(&globals);
        }
        Ok(())
    }

    /// A name section that does not read is dropped, not refused: names are for debuggers,
    /// and the runtime's engine never reads them (it accepted the module).
    fn parse_custom_section(
        &mut self,
        module: &mut Module,
        section: wasmparser_reencode::CustomSectionReader<'_>,
    ) -> Result<(), Error<Infallible>> {
        match section.as_known() {
            wasmparser_reencode::KnownCustom::Name(names) => {
                if let Ok(names) = self.custom_name_section(names) {
                    module.section(&names);
                }
                Ok(())
            }
            _ => utils::parse_custom_section(self, module, section),
        }
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: wasmparser_reencode::FunctionBody<'_>,
    ) -> Result<(), Error<Infallible>> {
        let mut f = self.new_function_with_parsed_locals(&func)?;
        self.point(&mut f);
        // Whether each open block, loop, if or try is a loop.
        let mut open: Vec<bool> = Vec::new();
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let point = match op {
                Operator::Loop { .. } => {
                    let outermost = !open.contains(&true);
                    open.push(true);
                    self.placement == Placement::EveryLoop || outermost
                }
                Operator::Block { .. }
                | Operator::If { .. }
                | Operator::Try { .. }
                | Operator::TryTable { .. } => {
                    open.push(false);
                    false
                }
                Operator::End => {
                    open.pop();
                    false
                }
                _ => false,
            };
            f.instruction(&self.instruction(op)?);
            if point {
                self.point(&mut f);
            }
        }
        code.function(&f);
        Ok(())
    }
}
