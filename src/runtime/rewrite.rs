//! Makes a module's state reachable from outside, as Wizer does: a deterministic rewrite that
//! exports its memory and every mutable global under reserved names, and turns its start
//! function into an export so that a restored instance does not run it a second time.
//!
//! Every node derives the same rewritten module from the same DNA; the DNA and its hash stay
//! those of the original binary.

use crate::{ExecutionError, Refusal};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef, ValType};

/// The rewritten module's export of memory 0.
pub(crate) const MEMORY_EXPORT: &str = "__mielin_memory";
/// The rewritten module's export of the original start function, if there was one.
pub(crate) const START_EXPORT: &str = "__mielin_start";
/// Prefix of the exports of mutable globals: `__mielin_global_<global index>`.
const GLOBAL_EXPORT_PREFIX: &str = "__mielin_global_";
/// Every reserved name starts with this; a module may not export such names itself.
const RESERVED_PREFIX: &str = "__mielin_";

/// The rewritten binary and what it exports.
pub(crate) struct Rewritten {
    pub binary: Vec<u8>,
    /// Whether the module defines a memory (exported as [`MEMORY_EXPORT`]).
    pub has_memory: bool,
    /// Names of the exported mutable globals, in global-index order: the order of
    /// `Agent::globals`.
    pub globals: Vec<String>,
    /// Whether the module had a start function (exported as [`START_EXPORT`]).
    pub has_start: bool,
}

/// Section ids and the order the binary format requires them in (custom sections aside).
fn rank(id: u8) -> u8 {
    match id {
        1 => 1,   // type
        2 => 2,   // import
        3 => 3,   // function
        4 => 4,   // table
        5 => 5,   // memory
        13 => 6,  // tag
        6 => 7,   // global
        7 => 8,   // export
        8 => 9,   // start
        9 => 10,  // element
        12 => 11, // data count
        10 => 12, // code
        11 => 13, // data
        _ => 0,   // custom
    }
}
const EXPORT_RANK: u8 = 8;

/// Rewrites `binary`, which the caller has validated with the engine's feature set (so the
/// rewritten module is valid exactly when the original is), or says why it is not carried.
pub(crate) fn rewrite(binary: &[u8]) -> Result<Rewritten, ExecutionError> {
    let invalid = |_| ExecutionError::InvalidModule;
    let refuse = |why| Err(ExecutionError::Refused(why));
    let mut sections: Vec<(u8, Range<usize>)> = Vec::new();
    let mut exports: Vec<(String, ExportKind, u32)> = Vec::new();
    let mut imported_globals = 0u32;
    let mut mutable_globals: Vec<u32> = Vec::new();
    let mut memories = 0u32;
    let mut start = None;

    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(invalid)?;
        match &payload {
            Payload::ImportSection(reader) => {
                for import in reader.clone() {
                    match import.map_err(invalid)?.ty {
                        TypeRef::Memory(_) => return refuse(Refusal::ImportedMemory),
                        TypeRef::Table(_) => return refuse(Refusal::ImportedTable),
                        TypeRef::Global(g) if g.mutable => {
                            return refuse(Refusal::ImportedMutableGlobal)
                        }
                        TypeRef::Global(_) => imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader.clone() {
                    let memory = memory.map_err(invalid)?;
                    if memory.memory64 {
                        return refuse(Refusal::Memory64);
                    }
                    if memory.shared {
                        return refuse(Refusal::SharedMemory);
                    }
                    memories += 1;
                }
                if memories > 1 {
                    return refuse(Refusal::MultipleMemories);
                }
            }
            Payload::GlobalSection(reader) => {
                for (i, global) in reader.clone().into_iter().enumerate() {
                    let ty = global.map_err(invalid)?.ty;
                    if !ty.mutable {
                        continue;
                    }
                    // Capture carries numbers only (`GlobalValue`): refused here, at start,
                    // rather than by every capture later.
                    match ty.content_type {
                        ValType::Ref(_) => return refuse(Refusal::MutableReferenceGlobal),
                        ValType::V128 => return refuse(Refusal::MutableV128Global),
                        _ => mutable_globals.push(imported_globals + i as u32),
                    }
                }
                if mutable_globals.len() > crate::MAX_GLOBALS {
                    return refuse(Refusal::TooManyMutableGlobals {
                        found: mutable_globals.len(),
                    });
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader.clone() {
                    let export = export.map_err(invalid)?;
                    if export.name.starts_with(RESERVED_PREFIX) {
                        return refuse(Refusal::ReservedExport);
                    }
                    exports.push((String::from(export.name), kind(export.kind), export.index));
                }
            }
            Payload::StartSection { func, .. } => start = Some(*func),
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                while !ops.eof() {
                    refuse_uncarried(&ops.read().map_err(invalid)?)?;
                }
            }
            _ => {}
        }
        if let Some(section) = payload.as_section() {
            sections.push(section);
        }
    }

    let globals: Vec<String> = mutable_globals
        .iter()
        .map(|i| format!("{GLOBAL_EXPORT_PREFIX}{i}"))
        .collect();
    let mut export_section = ExportSection::new();
    for (name, kind, index) in &exports {
        export_section.export(name, *kind, *index);
    }
    if memories == 1 {
        export_section.export(MEMORY_EXPORT, ExportKind::Memory, 0);
    }
    for (name, index) in globals.iter().zip(&mutable_globals) {
        export_section.export(name, ExportKind::Global, *index);
    }
    if let Some(func) = start {
        export_section.export(START_EXPORT, ExportKind::Func, func);
    }

    let mut out = Module::new();
    let mut exported = false;
    for (id, range) in sections {
        let r = rank(id);
        if !exported && r > EXPORT_RANK {
            out.section(&export_section);
            exported = true;
        }
        match id {
            7 => {
                out.section(&export_section);
                exported = true;
            }
            8 => {} // the start section: now an export
            _ => {
                out.section(&RawSection {
                    id,
                    data: &binary[range],
                });
            }
        }
    }
    if !exported {
        out.section(&export_section);
    }
    Ok(Rewritten {
        binary: out.finish(),
        has_memory: memories == 1,
        globals,
        has_start: start.is_some(),
    })
}

fn kind(k: ExternalKind) -> ExportKind {
    match k {
        ExternalKind::Func => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
    }
}

/// Instructions whose effect lives outside memory and globals, so a snapshot could not carry it.
fn refuse_uncarried(op: &Operator<'_>) -> Result<(), ExecutionError> {
    match op {
        Operator::TableSet { .. }
        | Operator::TableGrow { .. }
        | Operator::TableFill { .. }
        | Operator::TableCopy { .. }
        | Operator::TableInit { .. } => Err(ExecutionError::Refused(Refusal::TableMutation)),
        Operator::DataDrop { .. } | Operator::ElemDrop { .. } => {
            Err(ExecutionError::Refused(Refusal::SegmentDrop))
        }
        _ => Ok(()),
    }
}
