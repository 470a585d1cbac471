//! The deploy-time transform for mid-call capture (feature `transform`, std only): Binaryen's
//! Asyncify pass, run by `wasm-opt` as a subprocess, so that an agent can unwind its whole call
//! stack into linear memory at chosen imports and rewind it later, on this node or another
//! (`runtime::midcall`, `docs/runtime.md`).
//!
//! [`transform`] takes a module and the imports that may suspend it (a blocking receive, a
//! yield point), checks what Asyncify cannot handle, runs
//! `wasm-opt --asyncify --pass-arg=asyncify-imports@<those imports> --optimize-level=2`, validates the output
//! with the runtime's engine, and appends a custom section, [`RECORD_SECTION`], that records
//! the input's SHA-256, the transform and the tool's version, and the unwinding imports
//! ([`TransformRecord`]). The output is the agent's DNA: it is addressed by its own hash. Nodes
//! run it without Binaryen.
//!
//! What it refuses, with a [`TransformError`] rather than an output that might be wrong: a
//! missing or failing `wasm-opt`, a module that is not valid for the runtime's engine, a module
//! without memory (the unwind buffer lives in it), a function with a reference-typed parameter
//! or local (Asyncify in Binaryen 108 cannot save one), tail calls (`return_call`, which
//! Asyncify 108 does not instrument), a block, loop or `if` that takes parameters (Binaryen
//! 108 miscompiles them: the spec suite's `fac-ssa` loops until its fuel runs out after the
//! pass, with or without optimization), a module that already has Asyncify's exports or a record
//! (transformed twice), an import name the pass argument cannot express, and none of the listed
//! imports in the module (nothing could unwind).

pub use super::yield_points::{Placement, YieldPoints};
use super::Runtime;
use crate::sha256;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use std::path::PathBuf;
use std::process::Command;
use wasmparser::{BlockType, Operator, Parser, Payload, TypeRef, ValType};

/// The name of the custom section the transform appends.
pub const RECORD_SECTION: &str = "mielin.transform";
/// The format of [`RECORD_SECTION`]'s payload this build writes and reads.
pub const RECORD_FORMAT: u8 = 1;
/// What the record names as the transform.
pub const TRANSFORM_NAME: &str = "asyncify";
/// The exports Asyncify adds; a module that has any of them is refused (transformed already).
pub const ASYNCIFY_EXPORTS: [&str; 5] = [
    "asyncify_start_unwind",
    "asyncify_stop_unwind",
    "asyncify_start_rewind",
    "asyncify_stop_rewind",
    "asyncify_get_state",
];
/// The WebAssembly features `wasm-opt` is told the input has: wasmi's defaults that Binaryen 108
/// knows (its default is the MVP, and a module without a `target_features` section, such as
/// rustc's, would be refused for its `memory.copy`). The output is validated by the runtime's
/// engine afterwards, so a feature wasmi lacks never reaches a node.
///
/// SIMD is not in the list: with it, Binaryen may use SIMD instructions in the code it writes
/// (it did in `examples/agents/echo.wat`), and the DNA would then need SIMD on every node.
/// [`transform`] adds `--enable-simd` only for a module that uses SIMD already.
pub const WASM_OPT_FEATURES: [&str; 7] = [
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-bulk-memory",
    "--enable-multivalue",
    "--enable-reference-types",
    "--enable-extended-const",
];

/// An import that may suspend the agent: `module`.`name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwindingImport {
    /// The import's module, e.g. `mesh`.
    pub module: String,
    /// The import's name, e.g. `recv_wait`.
    pub name: String,
}

impl UnwindingImport {
    /// `module`.`name`.
    pub fn new(module: &str, name: &str) -> Self {
        UnwindingImport {
            module: module.to_string(),
            name: name.to_string(),
        }
    }
}

/// What [`transform`] is asked to do.
#[derive(Debug, Clone)]
pub struct TransformOptions {
    /// The imports that may suspend the agent; only those the module imports are instrumented.
    pub imports: Vec<UnwindingImport>,
    /// The `wasm-opt` to run (default: `wasm-opt` on the `PATH`).
    pub wasm_opt: PathBuf,
    /// Let Asyncify optimize the code it instruments (`--optimize-level=2`; default: yes, its
    /// output is about twice the size without it: the rustc guest of `tests/` grows from
    /// 16,849 bytes to 22,578 with it and to 45,442 without).
    ///
    /// Binaryen's whole `-O` pipeline is not run: it also rewrites code Asyncify did not touch,
    /// and in the spec suite it removed unused imports (so a module that must fail to link
    /// linked) and turned a certain out-of-bounds `memory.init` into `unreachable` (another
    /// trap). The instrumented functions keep their traps (`tests/spec_transform.rs`).
    pub optimize: bool,
    /// Yield points to insert before Asyncify, for preemption without points written by the
    /// guest's author (default: none; see [`YieldPoints`]). Their import is unwinding.
    pub yield_points: Option<YieldPoints>,
}

impl TransformOptions {
    /// Unwinding at `imports`, `wasm-opt` from the `PATH`, optimized.
    pub fn new(imports: &[(&str, &str)]) -> Self {
        TransformOptions {
            imports: imports
                .iter()
                .map(|(m, n)| UnwindingImport::new(m, n))
                .collect(),
            wasm_opt: PathBuf::from("wasm-opt"),
            optimize: true,
            yield_points: None,
        }
    }
}

/// Why [`transform`] refused a module or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransformError {
    /// `wasm-opt` could not be started (not installed: Debian's package is `binaryen`).
    WasmOptMissing,
    /// `wasm-opt` ran and failed: Binaryen 108 cannot read some modules the runtime accepts
    /// (the table instructions of later proposals, several memories).
    WasmOptFailed {
        /// The exit code, if it had one.
        code: Option<i32>,
        /// What it said: the first line of its error output that is not empty, at most
        /// [`MAX_TOOL_MESSAGE`] bytes.
        message: String,
    },
    /// The temporary files `wasm-opt` reads and writes could not be written or read.
    Io,
    /// The input is not valid WebAssembly for the runtime's engine.
    InvalidModule,
    /// The output of `wasm-opt` is not valid for the runtime's engine, or lacks Asyncify's
    /// exports: refused rather than deployed.
    InvalidOutput,
    /// The module defines no memory: the unwind buffer lives in linear memory.
    NoMemory,
    /// A function has a parameter or local of a reference type, which Asyncify (Binaryen 108)
    /// cannot save.
    ReferenceTypedLocal {
        /// The function's index (imports counted).
        function: u32,
    },
    /// The module uses tail calls (`return_call`, `return_call_indirect`), which Asyncify
    /// (Binaryen 108) does not instrument.
    TailCall,
    /// A block, loop or `if` takes parameters (multi-value), which Binaryen 108 miscompiles
    /// through Asyncify.
    BlockParams {
        /// The function's index (imports counted).
        function: u32,
    },
    /// The module already exports Asyncify's functions or carries a transform record.
    AlreadyTransformed,
    /// An import name is empty or holds a character the pass argument cannot carry (`,`, `@`,
    /// whitespace, or a `.` in the module name).
    BadImportName,
    /// None of the listed imports is imported by the module: nothing could unwind.
    NoUnwindingImport,
    /// The yield points cannot be inserted: an interval of 0, or the module imports their
    /// import with a type other than `() -> ()`.
    BadYieldPoints,
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformError::WasmOptMissing => {
                f.write_str("wasm-opt could not be started (install Binaryen: package binaryen)")
            }
            TransformError::WasmOptFailed { code, message } => {
                write!(f, "wasm-opt failed ({code:?}): {message}")
            }
            TransformError::Io => f.write_str("the temporary files for wasm-opt failed"),
            TransformError::InvalidModule => f.write_str("the module is not valid WebAssembly"),
            TransformError::InvalidOutput => {
                f.write_str("wasm-opt's output is not valid for the runtime: refused")
            }
            TransformError::NoMemory => f.write_str("the module has no memory for the unwind"),
            TransformError::ReferenceTypedLocal { function } => write!(
                f,
                "function {function} has a reference-typed local, which Asyncify cannot save"
            ),
            TransformError::TailCall => f.write_str("tail calls are not instrumented by Asyncify"),
            TransformError::BlockParams { function } => write!(
                f,
                "function {function} has a block with parameters, which Binaryen 108 miscompiles"
            ),
            TransformError::AlreadyTransformed => f.write_str("the module is transformed already"),
            TransformError::BadImportName => {
                f.write_str("an import name cannot be passed to Asyncify")
            }
            TransformError::NoUnwindingImport => {
                f.write_str("the module imports none of the unwinding imports")
            }
            TransformError::BadYieldPoints => f.write_str(
                "the yield points' interval is 0, or the module imports their import with another type",
            ),
        }
    }
}

impl std::error::Error for TransformError {}

/// The record the transform appends as the custom section [`RECORD_SECTION`].
///
/// Its payload, in this order (lengths are single bytes, so every field is bounded):
///
/// ```text
/// 1     format, 1
/// 32    SHA-256 of the module before the transform
/// 1+n   the transform's name ("asyncify")
/// 1+n   the tool's version (the first line of `wasm-opt --version`)
/// 1     count of unwinding imports, then each: 1+n module, 1+n name
/// ```
///
/// Nothing may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformRecord {
    /// SHA-256 of the module before the transform.
    pub original: [u8; 32],
    /// The transform's name.
    pub transform: String,
    /// The tool's version, as it reported it.
    pub tool: String,
    /// The imports instrumented to unwind.
    pub imports: Vec<UnwindingImport>,
}

impl TransformRecord {
    /// The record's payload (the custom section's contents after its name), or `None` if a
    /// string is longer than 255 bytes or there are more than 255 imports.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        out.push(RECORD_FORMAT);
        out.extend_from_slice(&self.original);
        let put = |out: &mut Vec<u8>, s: &str| -> Option<()> {
            out.push(u8::try_from(s.len()).ok()?);
            out.extend_from_slice(s.as_bytes());
            Some(())
        };
        put(&mut out, &self.transform)?;
        put(&mut out, &self.tool)?;
        out.push(u8::try_from(self.imports.len()).ok()?);
        for i in &self.imports {
            put(&mut out, &i.module)?;
            put(&mut out, &i.name)?;
        }
        Some(out)
    }

    /// Reads a payload written by [`to_bytes`](Self::to_bytes); `None` if it is malformed
    /// (another format, a length past the end, text that is not UTF-8, trailing bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&format, rest) = bytes.split_first()?;
        if format != RECORD_FORMAT || rest.len() < 32 {
            return None;
        }
        let (hash, mut rest) = rest.split_at(32);
        let mut original = [0u8; 32];
        original.copy_from_slice(hash);
        let text = |rest: &mut &[u8]| -> Option<String> {
            let (&n, tail) = rest.split_first()?;
            let n = usize::from(n);
            if tail.len() < n {
                return None;
            }
            let (s, tail) = tail.split_at(n);
            *rest = tail;
            core::str::from_utf8(s).ok().map(ToString::to_string)
        };
        let transform = text(&mut rest)?;
        let tool = text(&mut rest)?;
        let (&count, tail) = rest.split_first()?;
        rest = tail;
        let mut imports = Vec::new();
        for _ in 0..count {
            let module = text(&mut rest)?;
            let name = text(&mut rest)?;
            imports.push(UnwindingImport { module, name });
        }
        if !rest.is_empty() {
            return None;
        }
        Some(TransformRecord {
            original,
            transform,
            tool,
            imports,
        })
    }

    /// The record in `module`'s [`RECORD_SECTION`], if it has one that reads.
    pub fn find(module: &[u8]) -> Option<Self> {
        for payload in Parser::new(0).parse_all(module) {
            if let Payload::CustomSection(c) = payload.ok()? {
                if c.name() == RECORD_SECTION {
                    return Self::from_bytes(c.data());
                }
            }
        }
        None
    }
}

/// What the checks before `wasm-opt` learned of the module.
struct Scan {
    /// The listed imports that the module has (functions).
    present: Vec<UnwindingImport>,
}

/// Checks what Asyncify cannot handle, in the order of [`TransformError`]'s list.
fn scan(module: &[u8], wanted: &[UnwindingImport]) -> Result<Scan, TransformError> {
    let invalid = |_| TransformError::InvalidModule;
    let mut present = Vec::new();
    let mut memory = false;
    let mut imported_functions = 0u32;
    let mut function = 0u32;
    let mut types: Vec<Option<Vec<ValType>>> = Vec::new();
    let mut function_types: Vec<u32> = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for group in reader.into_iter() {
                    for sub in group.map_err(invalid)?.into_types() {
                        types.push(match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => Some(f.params().to_vec()),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(invalid)?;
                    match import.ty {
                        TypeRef::Func(_) => {
                            imported_functions += 1;
                            if wanted
                                .iter()
                                .any(|w| w.module == import.module && w.name == import.name)
                                && !present.iter().any(|p: &UnwindingImport| {
                                    p.module == import.module && p.name == import.name
                                })
                            {
                                present.push(UnwindingImport::new(import.module, import.name));
                            }
                        }
                        TypeRef::Memory(_) => memory = true,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    function_types.push(ty.map_err(invalid)?);
                }
            }
            Payload::MemorySection(reader) => memory |= reader.count() > 0,
            Payload::ExportSection(reader) => {
                for export in reader {
                    if ASYNCIFY_EXPORTS.contains(&export.map_err(invalid)?.name) {
                        return Err(TransformError::AlreadyTransformed);
                    }
                }
            }
            Payload::CustomSection(c) if c.name() == RECORD_SECTION => {
                return Err(TransformError::AlreadyTransformed);
            }
            Payload::CodeSectionEntry(body) => {
                let index = imported_functions + function;
                let reference = TransformError::ReferenceTypedLocal { function: index };
                let params = function_types
                    .get(function as usize)
                    .and_then(|t| types.get(*t as usize))
                    .and_then(Option::as_ref)
                    .ok_or(TransformError::InvalidModule)?;
                if params.iter().any(ValType::is_reference_type) {
                    return Err(reference);
                }
                for local in body.get_locals_reader().map_err(invalid)? {
                    if local.map_err(invalid)?.1.is_reference_type() {
                        return Err(reference);
                    }
                }
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                while !ops.eof() {
                    match ops.read().map_err(invalid)? {
                        Operator::ReturnCall { .. } | Operator::ReturnCallIndirect { .. } => {
                            return Err(TransformError::TailCall);
                        }
                        Operator::Block { blockty }
                        | Operator::Loop { blockty }
                        | Operator::If { blockty } => {
                            if let BlockType::FuncType(t) = blockty {
                                let params = types
                                    .get(t as usize)
                                    .and_then(Option::as_ref)
                                    .ok_or(TransformError::InvalidModule)?;
                                if !params.is_empty() {
                                    return Err(TransformError::BlockParams { function: index });
                                }
                            }
                        }
                        _ => {}
                    }
                }
                function += 1;
            }
            _ => {}
        }
    }
    if !memory {
        return Err(TransformError::NoMemory);
    }
    Ok(Scan { present })
}

/// Whether `module`, valid for the runtime's engine, needs SIMD (the engine refuses it without).
fn uses_simd(module: &[u8]) -> bool {
    #[cfg(feature = "simd")]
    {
        let mut config = Runtime::config();
        config.wasm_simd(false).wasm_relaxed_simd(false);
        wasmi::Module::validate(&wasmi::Engine::new(&config), module).is_err()
    }
    // Without the feature the engine has refused SIMD already.
    #[cfg(not(feature = "simd"))]
    {
        let _ = module;
        false
    }
}

/// The longest message of a failed `wasm-opt` that [`TransformError::WasmOptFailed`] keeps.
pub const MAX_TOOL_MESSAGE: usize = 200;

/// The first line of `output` that names an error (`wasm-opt` warns first, on the same
/// stream), else its first line that is not empty; without control characters, cut at
/// [`MAX_TOOL_MESSAGE`] bytes (on a character boundary).
fn first_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines
        .clone()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("exception") || l.contains("fatal")
        })
        .or_else(|| lines.next())
        .unwrap_or("");
    let mut out = String::new();
    for c in line.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_TOOL_MESSAGE {
            break;
        }
        out.push(c);
    }
    out
}

fn valid_name(s: &str, is_module: bool) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c == ',' || c == '@' || c.is_whitespace() || (is_module && c == '.'))
}

/// The first line of `wasm-opt --version`, e.g. `wasm-opt version 108`.
pub fn wasm_opt_version(wasm_opt: &std::path::Path) -> Result<String, TransformError> {
    let out = Command::new(wasm_opt)
        .arg("--version")
        .output()
        .map_err(|_| TransformError::WasmOptMissing)?;
    if !out.status.success() {
        return Err(TransformError::WasmOptFailed {
            code: out.status.code(),
            message: first_line(&out.stderr),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or("").trim();
    // Bounded for the record's one-byte length.
    Ok(line.chars().take(200).collect())
}

/// Transforms `module` for mid-call capture (see the [module](self) documentation): the
/// output, with its [`TransformRecord`], is the agent's DNA.
pub fn transform(module: &[u8], options: &TransformOptions) -> Result<Vec<u8>, TransformError> {
    let engine = wasmi::Engine::new(&Runtime::config());
    wasmi::Module::validate(&engine, module).map_err(|_| TransformError::InvalidModule)?;
    let mut wanted = options.imports.clone();
    wanted.extend(options.yield_points.iter().map(|p| p.import.clone()));
    if wanted
        .iter()
        .any(|i| !valid_name(&i.module, true) || !valid_name(&i.name, false))
    {
        return Err(TransformError::BadImportName);
    }
    let original = module;
    // The refusals name functions as the caller numbers them: checked before the yield
    // points shift the indices (they add nothing that would be refused, and their import is
    // the one unwinding import they add: last, as it is in the module).
    let mut scan = scan(original, &wanted)?;
    let with_points;
    let module = match &options.yield_points {
        Some(points) => {
            with_points = super::yield_points::insert(module, points)?;
            // Our own rewrite: if the engine refused it, that would be this crate's bug.
            wasmi::Module::validate(&engine, &with_points)
                .map_err(|_| TransformError::InvalidOutput)?;
            &with_points[..]
        }
        None => module,
    };
    if let Some(points) = &options.yield_points {
        if !scan.present.contains(&points.import) {
            scan.present.push(points.import.clone());
        }
    }
    if scan.present.is_empty() {
        return Err(TransformError::NoUnwindingImport);
    }
    let tool = wasm_opt_version(&options.wasm_opt)?;

    let list: Vec<String> = scan
        .present
        .iter()
        .map(|i| alloc::format!("{}.{}", i.module, i.name))
        .collect();
    let dir = tempdir()?;
    let input = dir.0.join("in.wasm");
    let output = dir.0.join("out.wasm");
    std::fs::write(&input, module).map_err(|_| TransformError::Io)?;
    let mut command = Command::new(&options.wasm_opt);
    if uses_simd(module) {
        command.arg("--enable-simd");
    }
    command
        .args(WASM_OPT_FEATURES)
        .arg("--asyncify")
        .arg(alloc::format!(
            "--pass-arg=asyncify-imports@{}",
            list.join(",")
        ));
    if options.optimize {
        // The level Asyncify's own clean-up of the functions it instruments runs at; unlike
        // `-O`, it adds no pass over the rest of the module (see `TransformOptions::optimize`).
        command.arg("--optimize-level=2");
    }
    let run = command
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|_| TransformError::WasmOptMissing)?;
    if !run.status.success() {
        return Err(TransformError::WasmOptFailed {
            code: run.status.code(),
            message: first_line(&run.stderr),
        });
    }
    let mut out = std::fs::read(&output).map_err(|_| TransformError::Io)?;
    drop(dir);

    wasmi::Module::validate(&engine, &out).map_err(|_| TransformError::InvalidOutput)?;
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(&out) {
        if let Payload::ExportSection(reader) =
            payload.map_err(|_| TransformError::InvalidOutput)?
        {
            for e in reader {
                exports.push(
                    e.map_err(|_| TransformError::InvalidOutput)?
                        .name
                        .to_string(),
                );
            }
        }
    }
    if !ASYNCIFY_EXPORTS
        .iter()
        .all(|name| exports.iter().any(|e| e == name))
    {
        return Err(TransformError::InvalidOutput);
    }

    let record = TransformRecord {
        original: sha256(original),
        transform: TRANSFORM_NAME.to_string(),
        tool,
        imports: scan.present,
    }
    .to_bytes()
    .ok_or(TransformError::BadImportName)?;
    append_custom_section(&mut out, RECORD_SECTION, &record);
    Ok(out)
}

/// Appends a custom section (id 0) named `name` holding `payload`.
fn append_custom_section(module: &mut Vec<u8>, name: &str, payload: &[u8]) {
    let mut body = Vec::new();
    leb(&mut body, name.len() as u64);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    module.push(0);
    leb(module, body.len() as u64);
    module.extend_from_slice(&body);
}

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A private temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir, TransformError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = std::env::temp_dir().join(alloc::format!(
        "mielin-transform-{}-{n}-{nanos}",
        std::process::id()
    ));
    // `create_dir` fails if it exists: no other process's directory is reused.
    std::fs::create_dir(&path).map_err(|_| TransformError::Io)?;
    Ok(TempDir(path))
}
