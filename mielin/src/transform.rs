//! `mielin transform FILE -o OUT --unwind MODULE.NAME`: the library's deploy-time Asyncify
//! transform (`mielin_cells::runtime::transform`), with its refusals said as what to do.

use crate::files::{read_module, write_atomic};
use mielin_cells::quic::to_hex;
use mielin_cells::runtime::transform::{
    transform, Placement, TransformError, TransformOptions, TransformRecord, YieldPoints,
};
use mielin_cells::sha256;
use std::path::{Path, PathBuf};

/// `--unwind MODULE.NAME`, split at the first dot (a module name has none; the library refuses
/// what Asyncify cannot take).
pub fn parse_import(s: &str) -> Result<(String, String), String> {
    s.split_once('.')
        .map(|(m, n)| (m.to_string(), n.to_string()))
        .ok_or_else(|| format!("`{s}` is not MODULE.NAME (e.g. env.yield)"))
}

/// Transforms `file` into `output`: the line to print, or the error and its exit code (2 for a
/// bad `--unwind`, 1 otherwise).
pub fn run(
    file: &Path,
    output: &Path,
    unwind: &[(String, String)],
    yield_points: Option<(String, String, u32, bool)>,
    wasm_opt: Option<PathBuf>,
    optimize: bool,
) -> Result<String, (String, u8)> {
    let module = read_module(file).map_err(|e| (e, 1))?;
    let imports: Vec<(&str, &str)> = unwind
        .iter()
        .map(|(m, n)| (m.as_str(), n.as_str()))
        .collect();
    let mut options = TransformOptions::new(&imports);
    if let Some(w) = wasm_opt {
        options.wasm_opt = w;
    }
    options.optimize = optimize;
    options.yield_points = yield_points
        .as_ref()
        .map(|(m, n, every, outermost)| YieldPoints {
            placement: if *outermost {
                Placement::OutermostLoops
            } else {
                Placement::EveryLoop
            },
            ..YieldPoints::new(m, n, *every)
        });
    let out = transform(&module, &options).map_err(|e| explain(e, file, &options, unwind))?;
    write_atomic(output, &out).map_err(|e| (format!("writing {}: {e}", output.display()), 1))?;
    let found = TransformRecord::find(&out)
        .map(|r| {
            r.imports
                .iter()
                .map(|i| format!("{}.{}", i.module, i.name))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Ok(format!(
        "transformed {}: {} -> {} bytes ({:.2}x), dna sha256 {}, unwinding {found}",
        output.display(),
        module.len(),
        out.len(),
        out.len() as f64 / module.len().max(1) as f64,
        &to_hex(&sha256(&out))[..16],
    ))
}

/// Each refusal as one line that says what to do.
fn explain(
    e: TransformError,
    file: &Path,
    options: &TransformOptions,
    unwind: &[(String, String)],
) -> (String, u8) {
    let f = file.display();
    let tool = options.wasm_opt.display();
    let msg = match e {
        TransformError::WasmOptMissing => format!(
            "wasm-opt not found ({tool}): install Binaryen (Debian: apt-get install binaryen) or pass --wasm-opt PATH"
        ),
        TransformError::WasmOptFailed { code, message } => format!(
            "wasm-opt ({tool}) failed ({}{}{message}): Binaryen 108 cannot read some modules (later table instructions, several memories); check that it is Binaryen's wasm-opt (`{tool} --version`; version 108 is tested), or pass another with --wasm-opt PATH",
            code.map_or("killed by a signal".into(), |c| format!("exit code {c}")),
            if message.is_empty() { "" } else { ": " },
        ),
        TransformError::Io => "the temporary files for wasm-opt could not be written or read: check that the temporary directory ($TMPDIR, else /tmp) is writable and has room".into(),
        TransformError::InvalidModule => format!(
            "{f}: not valid WebAssembly for the runtime (wasmi with its default features): check how it was built"
        ),
        TransformError::InvalidOutput if options.yield_points.is_some() => format!(
            "{f}: the output (the yield points' rewrite, or wasm-opt's ({tool}) output) is not valid for the runtime or lacks Asyncify's exports, so it was not written: try without --yield-points to tell which, and report it"
        ),
        TransformError::InvalidOutput => format!(
            "wasm-opt's ({tool}) output is not valid for the runtime or lacks Asyncify's exports, so it was not written: use Binaryen's wasm-opt (version 108 is tested)"
        ),
        TransformError::NoMemory => format!(
            "{f} defines no memory: Asyncify's unwind buffer lives in linear memory; give the module one (e.g. `(memory 1)`)"
        ),
        TransformError::ReferenceTypedLocal { function } => format!(
            "{f}: function {function} has a parameter or local of a reference type (externref, funcref), which Asyncify cannot save: remove it from the module"
        ),
        TransformError::TailCall => format!(
            "{f} uses tail calls (return_call), which Asyncify does not instrument: build it without the tail-call feature"
        ),
        TransformError::AlreadyTransformed => format!(
            "{f} is transformed already (it has Asyncify's exports or a transform record): deploy it as it is, or transform the original"
        ),
        TransformError::BadImportName => {
            return (
                format!(
                    "an --unwind or --yield-points import cannot be passed to Asyncify ({}): MODULE.NAME, neither part empty, without `,`, `@` or spaces",
                    list(unwind)
                        .split(", ")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .chain(options.yield_points.iter().map(|p| format!(
                            "{}.{}",
                            p.import.module, p.import.name
                        )))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                2,
            )
        }
        TransformError::BadYieldPoints => {
            return (
                format!(
                    "{f}: cannot insert yield points: --yield-every must be at least 1, and the module may import the --yield-points import only as a function without parameters or results"
                ),
                2,
            )
        }
        TransformError::NoUnwindingImport => format!(
            "{f} imports none of {}: give --unwind for an import the module has (the ones that may suspend it)",
            list(unwind)
        ),
        e => format!("{f}: {e}"),
    };
    (msg, 1)
}

fn list(unwind: &[(String, String)]) -> String {
    unwind
        .iter()
        .map(|(m, n)| format!("{m}.{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
