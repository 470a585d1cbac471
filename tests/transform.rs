//! The deploy-time Asyncify transform (feature `transform`): what it produces from real modules
//! (the rustc guest, WAT), the record it appends, and what it refuses. Needs `wasm-opt`
//! (Debian's `binaryen`, version 108 here); the tests that run it say so and pass without it
//! only where the refusal is the point.
#![cfg(feature = "transform")]

use mielin_cells::runtime::transform::{
    transform, wasm_opt_version, TransformError, TransformOptions, TransformRecord,
    UnwindingImport, YieldPoints, ASYNCIFY_EXPORTS, MAX_TOOL_MESSAGE, RECORD_SECTION,
};
use mielin_cells::sha256;
use std::path::Path;

mod common;
use common::read;

fn exports(module: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ExportSection(r) = payload.unwrap() {
            names.extend(r.into_iter().map(|e| e.unwrap().name.to_string()));
        }
    }
    names
}

const RECV: &str = r#"(module
  (import "mesh" "recv_wait" (func $recv (result i32)))
  (import "env" "log" (func $log (param i32)))
  (memory 1)
  (global $sum (mut i32) (i32.const 0))
  (func (export "run") (result i32)
    (local $m i32)
    (loop $l
      (local.set $m (call $recv))
      (call $log (local.get $m))
      (global.set $sum (i32.add (global.get $sum) (local.get $m)))
      (br_if $l (i32.ne (local.get $m) (i32.const 0))))
    (global.get $sum)))"#;

#[test]
fn the_rust_guests_are_transformed_or_refused() {
    // `tests/guest.wasm` imports nothing: nothing could unwind.
    assert_eq!(
        transform(
            &read("guest.wasm"),
            &TransformOptions::new(&[("env", "yield")])
        ),
        Err(TransformError::NoUnwindingImport)
    );
    // rustc's output (no `target_features` section, `memory.copy` in it) goes through.
    let guest = read("midcall-guest.wasm");
    let opts = TransformOptions::new(&[("mesh", "recv_wait"), ("mesh", "yield")]);
    let out = transform(&guest, &opts).unwrap();
    let record = TransformRecord::find(&out).unwrap();
    assert_eq!(record.original, sha256(&guest));
    assert_eq!(
        record.imports,
        [
            UnwindingImport::new("mesh", "recv_wait"),
            UnwindingImport::new("mesh", "yield")
        ]
    );
    let names = exports(&out);
    for name in ["serve", "tick", "deep", "crunch"]
        .into_iter()
        .chain(ASYNCIFY_EXPORTS)
    {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
}

#[test]
fn a_wat_module_gets_asyncify_exports_and_a_record() {
    let wasm = wat::parse_str(RECV).unwrap();
    let opts = TransformOptions::new(&[("mesh", "recv_wait"), ("env", "yield")]);
    let out = transform(&wasm, &opts).unwrap();
    let names = exports(&out);
    for name in ASYNCIFY_EXPORTS {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    let record = TransformRecord::find(&out).expect("a record");
    assert_eq!(record.original, sha256(&wasm));
    assert_eq!(record.transform, "asyncify");
    assert!(
        record.tool.starts_with("wasm-opt version"),
        "{}",
        record.tool
    );
    // Only the imports the module has are instrumented and recorded.
    assert_eq!(record.imports, [UnwindingImport::new("mesh", "recv_wait")]);
    // Deterministic: the same input gives the same DNA.
    assert_eq!(transform(&wasm, &opts).unwrap(), out);
    // The record survives a round trip, and anything after it is refused.
    let bytes = record.to_bytes().unwrap();
    assert_eq!(TransformRecord::from_bytes(&bytes), Some(record.clone()));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(TransformRecord::from_bytes(&longer), None);
    for cut in 0..bytes.len() {
        assert_eq!(
            TransformRecord::from_bytes(&bytes[..cut]),
            None,
            "cut {cut}"
        );
    }
    // Transforming the output again is refused.
    assert_eq!(
        transform(&out, &opts),
        Err(TransformError::AlreadyTransformed)
    );
    assert!(RECORD_SECTION.starts_with("mielin"));
}

#[test]
fn what_asyncify_cannot_handle_is_refused() {
    let opts = TransformOptions::new(&[("mesh", "recv_wait")]);
    let cases: [(&str, TransformError); 6] = [
        (
            r#"(module (import "mesh" "recv_wait" (func (result i32)))
                 (func (export "f") (local i32)))"#,
            TransformError::NoMemory,
        ),
        (
            r#"(module (import "mesh" "recv_wait" (func (result i32))) (memory 1)
                 (func (export "f") (local externref)))"#,
            TransformError::ReferenceTypedLocal { function: 1 },
        ),
        (
            r#"(module (import "mesh" "recv_wait" (func (result i32))) (memory 1)
                 (func (export "f") (param funcref)))"#,
            TransformError::ReferenceTypedLocal { function: 1 },
        ),
        (
            r#"(module (import "mesh" "recv_wait" (func (result i32))) (memory 1)
                 (func $g (result i32) (call 0))
                 (func (export "f") (result i32) (return_call $g)))"#,
            TransformError::TailCall,
        ),
        (
            r#"(module (import "mesh" "recv_wait" (func (result i32))) (memory 1)
                 (func (export "asyncify_get_state") (result i32) (i32.const 0)))"#,
            TransformError::AlreadyTransformed,
        ),
        (
            r#"(module (import "env" "other" (func (result i32))) (memory 1))"#,
            TransformError::NoUnwindingImport,
        ),
    ];
    for (text, why) in cases {
        let wasm = wat::parse_str(text).unwrap();
        assert_eq!(transform(&wasm, &opts), Err(why), "{text}");
    }
    assert_eq!(
        transform(b"\0asm\x01\0\0\0\x05", &opts),
        Err(TransformError::InvalidModule)
    );
    let wasm = wat::parse_str(RECV).unwrap();
    for bad in [
        ("me.sh", "recv_wait"),
        ("mesh", "recv,x"),
        ("mesh", ""),
        ("", "x"),
    ] {
        assert_eq!(
            transform(&wasm, &TransformOptions::new(&[bad])),
            Err(TransformError::BadImportName),
            "{bad:?}"
        );
    }
}

#[test]
fn a_missing_or_failing_wasm_opt_is_an_error() {
    let wasm = wat::parse_str(RECV).unwrap();
    let mut opts = TransformOptions::new(&[("mesh", "recv_wait")]);
    opts.wasm_opt = "/nonexistent/wasm-opt".into();
    assert_eq!(transform(&wasm, &opts), Err(TransformError::WasmOptMissing));
    assert_eq!(
        wasm_opt_version(Path::new("/nonexistent/wasm-opt")),
        Err(TransformError::WasmOptMissing)
    );
    // `false` starts and fails: its exit code is reported.
    opts.wasm_opt = "false".into();
    assert!(matches!(
        transform(&wasm, &opts),
        Err(TransformError::WasmOptFailed { .. })
    ));
}

#[test]
fn blocks_with_parameters_are_refused() {
    // The spec suite's `fac-ssa` (fac.wast), which loops until its fuel runs out after Binaryen
    // 108's Asyncify (tests/spec_transform.rs finds it if this check is removed), with the
    // unwinding import added; and the same parameters on a block and an `if`.
    let opts = TransformOptions::new(&[("mesh", "recv_wait")]);
    let head = r#"(import "mesh" "recv_wait" (func (result i32))) (memory 1)"#;
    let bodies = [
        r#"(func (export "fac-ssa") (param i64) (result i64)
             (i64.const 1) (local.get 0)
             (loop $l (param i64 i64) (result i64)
               (call $pick1) (call $pick1) (i64.mul)
               (call $pick1) (i64.const 1) (i64.sub)
               (call $pick0) (i64.const 0) (i64.gt_u)
               (br_if $l)
               (drop) (return)))
           (func $pick0 (param i64) (result i64 i64) (local.get 0) (local.get 0))
           (func $pick1 (param i64 i64) (result i64 i64 i64)
             (local.get 0) (local.get 1) (local.get 0))"#,
        r#"(func (export "f") (result i32)
             (i32.const 1) (block (param i32) (result i32) (drop (call 0))))"#,
        r#"(func (export "f") (result i32)
             (i32.const 1) (i32.const 1) (if (param i32) (result i32) (then) (else)))"#,
    ];
    for body in bodies {
        let text = format!("(module {head} {body})");
        let wasm = wat::parse_str(&text).unwrap();
        assert!(
            matches!(
                transform(&wasm, &opts),
                Err(TransformError::BlockParams { .. })
            ),
            "{text}"
        );
    }
    // A block with results only is no such block.
    let text = format!(
        r#"(module {head} (func (export "f") (result i32) (block (result i32) (call 0))))"#
    );
    assert!(transform(&wat::parse_str(&text).unwrap(), &opts).is_ok());
}

#[test]
fn imports_the_module_does_not_call_are_kept() {
    // Binaryen's -O removes them, so a module that must fail to link for want of an import
    // would link; the transform does not run -O.
    let text = r#"(module
        (import "mesh" "recv_wait" (func (result i32)))
        (import "env" "never_called" (func (param i32)))
        (memory 1)
        (func (export "f") (result i32) (call 0)))"#;
    let opts = TransformOptions::new(&[("mesh", "recv_wait")]);
    let out = transform(&wat::parse_str(text).unwrap(), &opts).unwrap();
    let mut imports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&out) {
        if let wasmparser::Payload::ImportSection(r) = payload.unwrap() {
            imports.extend(r.into_iter().map(|i| i.unwrap().name.to_string()));
        }
    }
    assert_eq!(imports, ["recv_wait", "never_called"]);
}

/// With the `simd` feature the engine accepts SIMD, but a module without SIMD must not come out
/// of the transform with some (Binaryen, told SIMD is there, used it for `echo.wat`): boards
/// run wasmi without SIMD.
#[cfg(feature = "simd")]
#[test]
fn a_module_without_simd_comes_out_without_simd() {
    let echo =
        wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agents/echo.wat"))
            .unwrap();
    let out = transform(&echo, &TransformOptions::new(&[("mesh", "recv")])).unwrap();
    let mut config = mielin_cells::runtime::Runtime::config();
    config.wasm_simd(false).wasm_relaxed_simd(false);
    let engine = wasmi::Engine::new(&config);
    wasmi::Module::validate(&engine, &echo).unwrap();
    wasmi::Module::validate(&engine, &out).unwrap();
}

#[test]
fn a_failing_wasm_opt_says_why_in_one_bounded_line() {
    // Binaryen 108 cannot read two memories (wasmi can): refused with what wasm-opt said.
    let two = wat::parse_str(
        r#"(module (import "mesh" "recv_wait" (func (result i32)))
             (memory 1) (memory 1) (func (export "f") (result i32) (call 0)))"#,
    )
    .unwrap();
    let opts = TransformOptions::new(&[("mesh", "recv_wait")]);
    match transform(&two, &opts) {
        Err(TransformError::WasmOptFailed { code, message }) => {
            assert_eq!(code, Some(1));
            assert!(message.contains("memory"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A tool that warns first and then fails: the error line is kept, not the warning, and a
    // long one is cut.
    let dir = std::env::temp_dir().join(format!("mielin-fake-wasm-opt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tool = dir.join("wasm-opt");
    let long = "x".repeat(1000);
    std::fs::write(
        &tool,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'wasm-opt version 108'; exit 0; fi\n\
             echo 'warning: unknown name subsection' >&2\necho '[parse exception: {long}]' >&2\n\
             echo 'Fatal: error parsing wasm' >&2\nexit 3\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut opts = TransformOptions::new(&[("mesh", "recv_wait")]);
    opts.wasm_opt = tool;
    let result = transform(&wat::parse_str(RECV).unwrap(), &opts);
    std::fs::remove_dir_all(&dir).unwrap();
    match result {
        Err(TransformError::WasmOptFailed { code, message }) => {
            assert_eq!(code, Some(3));
            assert!(message.starts_with("[parse exception: xxx"), "{message}");
            assert_eq!(message.len(), MAX_TOOL_MESSAGE);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn yield_points_are_inserted_or_refused() {
    let bare = r#"(module (memory 1)
        (func $f (export "f") (param i32) (result i32)
          (loop $l (br_if $l (i32.eqz (local.get 0)))) (local.get 0))
        (table 1 funcref) (elem (i32.const 0) $f) (start $start) (func $start))"#;
    let wasm = wat::parse_str(bare).unwrap();
    let points = |interval| {
        let mut options = TransformOptions::new(&[]);
        options.yield_points = Some(YieldPoints::new("env", "yield", interval));
        options
    };
    assert_eq!(
        transform(&wasm, &points(0)),
        Err(TransformError::BadYieldPoints)
    );
    let out = transform(&wasm, &points(10)).unwrap();
    let imports = |module: &[u8]| {
        let mut names = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(module) {
            if let wasmparser::Payload::ImportSection(r) = payload.unwrap() {
                names.extend(r.into_iter().map(|i| {
                    let i = i.unwrap();
                    format!("{}.{}", i.module, i.name)
                }));
            }
        }
        names
    };
    assert_eq!(imports(&out), ["env.yield"]);
    assert_eq!(
        TransformRecord::find(&out).unwrap().imports,
        [UnwindingImport::new("env", "yield")]
    );
    // A module that imports the name already, as `() -> ()`, keeps its import (no second).
    let own = r#"(module (import "env" "yield" (func)) (memory 1)
        (func (export "f") (loop $l (call 0) (br $l))))"#;
    let out = transform(&wat::parse_str(own).unwrap(), &points(10)).unwrap();
    assert_eq!(imports(&out), ["env.yield"]);
    // With another type, refused.
    let other = r#"(module (import "env" "yield" (func (param i32))) (memory 1))"#;
    assert_eq!(
        transform(&wat::parse_str(other).unwrap(), &points(10)),
        Err(TransformError::BadYieldPoints)
    );
}

#[test]
fn yield_points_go_into_empty_and_missing_sections_alike() {
    let mut options = TransformOptions::new(&[]);
    options.yield_points = Some(YieldPoints::new("env", "yield", 1));
    // Empty type, import, function and global sections, a memory, and an empty code section;
    // then the same without any of the empty ones.
    let empty = b"\0asm\x01\0\0\0\x01\x01\x00\x02\x01\x00\x03\x01\x00\x05\x03\x01\x00\x01\x06\x01\x00\x0a\x01\x00";
    let missing = b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01";
    for module in [&empty[..], &missing[..]] {
        let out = transform(module, &options).unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
    }
}

#[test]
fn with_yield_points_refusals_name_functions_as_the_caller_numbers_them() {
    // The yield import shifts the defined functions by one; the refusal must not.
    let text = r#"(module (import "env" "other" (func)) (memory 1)
        (func $a)
        (func $b (result i32) (i32.const 1) (block (param i32) (result i32))))"#;
    let mut options = TransformOptions::new(&[]);
    options.yield_points = Some(YieldPoints::new("env", "yield", 10));
    assert_eq!(
        transform(&wat::parse_str(text).unwrap(), &options),
        Err(TransformError::BlockParams { function: 2 })
    );
}

#[test]
fn a_name_section_that_does_not_read_is_dropped_not_refused() {
    // wasmi accepts the module (it never reads names); the reencoder would refuse the section.
    let mut wasm = wat::parse_str(
        r#"(module (memory 1) (func (export "f") (loop $l (br_if $l (i32.const 0)))))"#,
    )
    .unwrap();
    // "name", subsection 1 (functions): one entry, function 0, a one-byte name that is not UTF-8.
    let payload = [4, b'n', b'a', b'm', b'e', 1, 4, 1, 0, 1, 0xff];
    wasm.push(0);
    wasm.push(payload.len() as u8);
    wasm.extend_from_slice(&payload);
    let engine = wasmi::Engine::new(&mielin_cells::runtime::Runtime::config());
    wasmi::Module::validate(&engine, &wasm).unwrap();
    let mut options = TransformOptions::new(&[]);
    options.yield_points = Some(YieldPoints::new("env", "yield", 10));
    let out = transform(&wasm, &options).unwrap();
    wasmi::Module::validate(&engine, &out).unwrap();
}
