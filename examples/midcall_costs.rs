//! What mid-call capture costs on the modules at hand: the transform's code size, the time to
//! unwind and rewind by stack depth and the buffer bytes per frame, and a CPU-bound guest's
//! slowdown with its yield point. Needs `wasm-opt` (Binaryen).
//!
//! ```sh
//! cargo run --release --example midcall_costs --features transform
//! ```

use mielin_cells::runtime::midcall::Completion;
use mielin_cells::runtime::transform::{
    transform, Placement, TransformOptions, YieldPoints, WASM_OPT_FEATURES,
};
use mielin_cells::runtime::{Runtime, Val};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../tests/common/midcall_host.rs"]
mod midcall_host;
use midcall_host::{crunch_without_yield, start, Host};

/// `wasm-opt -O` alone, with the transform's feature flags: what the optimizer does without
/// Asyncify, to tell the two apart.
fn optimized_only(wasm: &[u8]) -> usize {
    let dir = std::env::temp_dir().join(format!("midcall-costs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.wasm"), dir.join("out.wasm"));
    std::fs::write(&input, wasm).unwrap();
    let ok = Command::new("wasm-opt")
        .args(WASM_OPT_FEATURES)
        .arg("-O")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let n = std::fs::read(&output).unwrap().len();
    std::fs::remove_dir_all(&dir).unwrap();
    n
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

const RECV_WAT: &str = r#"(module
  (import "mesh" "recv_wait" (func $recv (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $down (param $d i32) (result i64)
    (if (result i64) (i32.eqz (local.get $d))
      (then (i64.extend_i32_u (call $recv (i32.const 0) (i32.const 64) (i32.const 8))))
      (else (i64.add (call $down (i32.sub (local.get $d) (i32.const 1)))
                     (i64.extend_i32_u (local.get $d))))))
  (func (export "deep") (param i32) (result i64) (call $down (local.get 0))))"#;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let opts = TransformOptions::new(&[("mesh", "recv_wait"), ("mesh", "yield"), ("mesh", "recv")]);

    println!("## Code size (bytes)\n");
    println!("| module | original | wasm-opt -O only | transformed (Asyncify, --optimize-level=2, record) | transformed / original |");
    println!("|---|---|---|---|---|");
    let guest = std::fs::read(root.join("tests/midcall-guest.wasm")).unwrap();
    let echo = wat::parse_file(root.join("examples/agents/echo.wat")).unwrap();
    let recv = wat::parse_str(RECV_WAT).unwrap();
    for (name, wasm) in [
        ("tests/midcall-guest.wasm (rustc)", &guest),
        ("examples/agents/echo.wat (mesh.recv)", &echo),
        ("deep (WAT, recv_wait)", &recv),
    ] {
        let out = transform(wasm, &opts).unwrap();
        println!(
            "| {name} | {} | {} | {} | {:.2}x |",
            wasm.len(),
            optimized_only(wasm),
            out.len(),
            out.len() as f64 / wasm.len() as f64
        );
    }

    println!("\n## Unwind and rewind by stack depth (median of 21 runs, µs)\n");
    println!("`plain`: the same transformed call with a message waiting (no suspension); `to suspended`: the call until the import suspended it and the bridge stopped the unwind; `resume`: resume_call until the export returned.\n");
    println!("| guest | frames | plain | to suspended | resume | buffer bytes used | per frame |");
    println!("|---|---|---|---|---|---|---|");
    let rt = Runtime::new(100_000_000);
    for (name, original) in [("rustc deep", &guest), ("WAT deep", &recv)] {
        let wasm = transform(original, &opts).unwrap();
        for depth in [0, 10, 100, 500, 900] {
            let mut plain = Vec::new();
            let mut unwind = Vec::new();
            let mut rewind = Vec::new();
            let mut used = 0;
            for _ in 0..21 {
                let host = Host {
                    bare: true,
                    ..Host::default()
                };
                let mut live = start(&rt, &wasm, host);
                // Warm-up: wasmi compiles functions on first use, and the first suspension
                // grows memory for the buffer; neither is measured.
                live.run("deep", &[Val::I32(depth)]).unwrap();
                live.host_mut().mailbox.push_back(vec![1]);
                live.resume_call().unwrap();
                live.host_mut().mailbox.push_back(vec![1]);
                let t = Instant::now();
                live.call("deep", &[Val::I32(depth)]).unwrap();
                plain.push(t.elapsed());

                let t = Instant::now();
                let c = live.run("deep", &[Val::I32(depth)]).unwrap();
                unwind.push(t.elapsed());
                assert!(matches!(c, Completion::Suspended));
                let (agent, call) = live.capture_with_call().unwrap();
                let call = call.unwrap();
                let memory = agent.wasm_state();
                let at = call.buffer.start as usize;
                let current = u32::from_le_bytes(memory[at..at + 4].try_into().unwrap());
                used = current - call.buffer.start - 8;
                live.host_mut().mailbox.push_back(vec![1]);
                let t = Instant::now();
                let c = live.resume_call().unwrap();
                rewind.push(t.elapsed());
                assert!(matches!(c, Completion::Returned(_)));
            }
            println!(
                "| {name} | {depth} | {:.1} | {:.1} | {:.1} | {used} | {:.1} |",
                median(plain),
                median(unwind),
                median(rewind),
                f64::from(used) / f64::from(depth.max(1) + 1)
            );
        }
    }

    let steps = 1_000_000i64;
    let transformed = transform(&guest, &opts).unwrap();
    let big = Runtime::new(u64::MAX / 2);
    let (every_1m, every_100k) = (Runtime::new(1_000_000), Runtime::new(100_000));
    cpu_table(
        "CPU-bound guest: crunch(10^6), yield point every 1,000 steps",
        steps,
        &[
            ("original, no preemption", &guest, &big, 0),
            ("transformed, no preemption", &transformed, &big, 0),
            (
                "transformed, preempted every ~1M fuel",
                &transformed,
                &every_1m,
                60_000,
            ),
            (
                "transformed, preempted every ~100k fuel",
                &transformed,
                &every_100k,
                60_000,
            ),
        ],
    );

    // The same loop in WAT without a yield point of its author's: the transform inserts them
    // (a countdown at every function entry and loop head, calling mesh.yield every N passes).
    let bare = wat::parse_str(crunch_without_yield()).unwrap();
    let with_points = |interval, placement| {
        let mut options = TransformOptions::new(&[]);
        options.yield_points = Some(YieldPoints {
            placement,
            ..YieldPoints::new("mesh", "yield", interval)
        });
        transform(&bare, &options).unwrap()
    };
    let every_10 = with_points(10, Placement::EveryLoop);
    let every_1000 = with_points(1000, Placement::EveryLoop);
    let outer = with_points(1, Placement::OutermostLoops);
    cpu_table(
        "CPU-bound WAT loop, crunch(10^6), yield points inserted by the transform",
        steps,
        &[
            ("original (no yield point)", &bare, &big, 0),
            ("points every 10 passes, no preemption", &every_10, &big, 0),
            (
                "points every 1,000 passes, no preemption",
                &every_1000,
                &big,
                0,
            ),
            (
                "points every 1,000 passes, preempted every ~1M fuel",
                &every_1000,
                &every_1m,
                60_000,
            ),
            (
                "points every 1,000 passes, preempted every ~100k fuel",
                &every_1000,
                &every_100k,
                60_000,
            ),
            (
                "outermost loops only, every pass, no preemption",
                &outer,
                &big,
                0,
            ),
            (
                "outermost loops only, every pass, preempted every ~100k fuel",
                &outer,
                &every_100k,
                60_000,
            ),
        ],
    );
}

/// Runs `crunch(steps)` in every configuration (name, module, runtime with its fuel per call,
/// the host's reserve), in 21 interleaved rounds so that the machine's drift falls on all of them
/// alike, resuming every suspension in place; prints medians and ratios to the first, and checks
/// that every configuration computed the same.
fn cpu_table(title: &str, steps: i64, configs: &[(&str, &Vec<u8>, &Runtime, u64)]) {
    const ROUNDS: usize = 21;
    println!("\n## {title} (median of {ROUNDS} interleaved rounds, ms)\n");
    println!("| run | time | / first | suspensions |");
    println!("|---|---|---|---|");
    let mut times = vec![Vec::new(); configs.len()];
    let mut suspensions = vec![0; configs.len()];
    let mut rows = vec![None; configs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, wasm, rt, reserve)) in configs.iter().enumerate() {
            let host = Host {
                reserve: *reserve,
                bare: true,
                ..Host::default()
            };
            let mut live = start(rt, wasm, host);
            suspensions[i] = 0;
            let t = Instant::now();
            let mut c = live.run("crunch", &[Val::I64(steps)]).unwrap();
            while let Completion::Suspended = c {
                suspensions[i] += 1;
                c = live.resume_call().unwrap();
            }
            times[i].push(t.elapsed());
            let Completion::Returned(v) = c else {
                unreachable!()
            };
            rows[i] = Some(format!("{v:?}"));
        }
    }
    let first = median(times[0].clone());
    for (i, (name, ..)) in configs.iter().enumerate() {
        let m = median(times[i].clone());
        println!(
            "| {name} | {:.1} | {:.2}x | {} |",
            m / 1000.0,
            m / first,
            suspensions[i]
        );
    }
    assert!(
        rows.windows(2).all(|w| w[0] == w[1]),
        "results differ: {rows:?}"
    );
}
