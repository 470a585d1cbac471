//! Live migration of a wasmi agent with 1, 16 and 64 pages of linear memory: capture +
//! serialize + deserialize + restore (`into_agent`, no copy) + resume, beside `memcpy` of the
//! same memory.
//!
//! `cargo bench --bench live --features wasmi`

#[path = "support/config.rs"]
mod config;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mielin_cells::migration::MigrationSnapshot;
use mielin_cells::runtime::{LiveAgent, Runtime, Val, PAGE_SIZE};
use mielin_cells::{Agent, AgentId, Dna};
use std::hint::black_box;

/// A module with `pages` pages of memory, a stack-pointer global, and a `fill` export that
/// writes a pattern over all of memory, so the captured bytes are not zeros.
fn wasm(pages: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory {pages})
            (global $sp (mut i32) (i32.const {top}))
            (func (export "fill")
              (local $p i32)
              (block $done (loop $next
                (br_if $done (i32.ge_u (local.get $p) (i32.const {top})))
                (i32.store (local.get $p) (i32.mul (local.get $p) (i32.const 2654435761)))
                (local.set $p (i32.add (local.get $p) (i32.const 4)))
                (br $next)))
              (global.set $sp (i32.const 1024))))"#,
        top = pages as usize * PAGE_SIZE
    ))
    .unwrap()
}

fn live(rt: &Runtime, pages: u32) -> LiveAgent<()> {
    let dna = Dna::new(wasm(pages)).unwrap();
    let agent = Agent::with_id(AgentId::from_bytes([7; 16]), dna);
    let mut live = rt.start(agent, (), |_| Ok(())).unwrap();
    live.call("fill", &[] as &[Val]).unwrap();
    live
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new(u64::MAX);
    let mut g = c.benchmark_group("live_migration");
    for pages in [1u32, 16, 64] {
        let bytes = pages as usize * PAGE_SIZE;
        let label = format!("{pages}_pages");
        g.throughput(Throughput::Bytes(bytes as u64));
        let mut source = live(&rt, pages);

        g.bench_function(BenchmarkId::new("capture+serialize", &label), |b| {
            b.iter(|| {
                let agent = source.capture().unwrap().as_borrowed();
                MigrationSnapshot::capture_at(&agent, None, 0)
                    .serialize()
                    .unwrap()
            })
        });
        let wire = MigrationSnapshot::capture_at(source.capture().unwrap(), None, 0)
            .serialize()
            .unwrap();
        g.bench_function(
            BenchmarkId::new("deserialize+restore+resume", &label),
            |b| {
                b.iter(|| {
                    let agent = MigrationSnapshot::deserialize(black_box(&wire))
                        .unwrap()
                        .into_agent()
                        .unwrap();
                    rt.resume(agent, (), |_| Ok(())).unwrap()
                })
            },
        );
        g.bench_function(BenchmarkId::new("full_cycle", &label), |b| {
            b.iter(|| {
                let agent = source.capture().unwrap().as_borrowed();
                let wire = MigrationSnapshot::capture_at(&agent, None, 0)
                    .serialize()
                    .unwrap();
                let agent = MigrationSnapshot::deserialize(&wire)
                    .unwrap()
                    .into_agent()
                    .unwrap();
                rt.resume(agent, (), |_| Ok(())).unwrap()
            })
        });
        let src = vec![1u8; bytes];
        let mut dst = vec![0u8; bytes];
        g.bench_function(BenchmarkId::new("memcpy", &label), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&src)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = bench
}
criterion_main!(benches);
