//! Live migration of a wasmi agent with 1, 16 and 64 pages of linear memory: capture +
//! serialize + deserialize + restore (`into_agent`, no copy) + resume, and the one-copy path
//! (`snapshot_at` + serialize, `resume_bytes`), beside `memcpy` of the same memory; and the
//! downtime of a pre-copy migration against stop-and-copy, for 1, 16, 64 and 1024 pages with
//! 1% and 10% of the 4 KiB chunks dirtied between the rounds.
//!
//! `cargo bench --bench live --features wasmi`

#[path = "support/config.rs"]
mod config;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mielin_cells::migration::{
    DecodeLimits, DecodeOptions, EncodeOptions, MigrationSnapshot, Route, CHUNK_SIZE,
};
use mielin_cells::runtime::{LiveAgent, Runtime, Val, PAGE_SIZE};
use mielin_cells::{Agent, AgentId, AgentState, Dna, NodeId};
use std::hint::black_box;
use std::time::{Duration, Instant};

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
        // The one-copy path, in wire format version 2 (addressed, hashed once).
        let serialize_v2 = |source: &LiveAgent<()>| {
            let snapshot = source.snapshot_at(None, 0).unwrap().with_route(ROUTE);
            snapshot.serialize().unwrap()
        };
        g.bench_function(BenchmarkId::new("snapshot_at+serialize_v2", &label), |b| {
            b.iter(|| serialize_v2(&source))
        });
        let wire2 = serialize_v2(&source);
        g.bench_function(BenchmarkId::new("resume_bytes_v2", &label), |b| {
            b.iter(|| {
                rt.resume_bytes(black_box(&wire2), &DecodeOptions::default(), (), |_| Ok(()))
                    .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("full_cycle_one_copy_v2", &label), |b| {
            b.iter(|| {
                let wire = serialize_v2(&source);
                rt.resume_bytes(&wire, &DecodeOptions::default(), (), |_| Ok(()))
                    .unwrap()
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

/// The agent of `examples/agents/pages.wat` with `pages` pages, every chunk written.
fn pages_agent(rt: &Runtime, pages: i32) -> LiveAgent<()> {
    let wasm = wat::parse_str(include_str!("../examples/agents/pages.wat")).unwrap();
    let agent = Agent::with_id(AgentId::from_bytes([8; 16]), Dna::new(wasm).unwrap());
    let mut live = rt.start(agent, (), |_| Ok(())).unwrap();
    live.call("grow", &[Val::I32(pages - 1)]).unwrap();
    let chunks = pages * (PAGE_SIZE / CHUNK_SIZE) as i32;
    dirty(&mut live, chunks, chunks, 1);
    live
}

/// Writes one word in each of `count` of the `chunks` chunks, spread evenly.
fn dirty(live: &mut LiveAgent<()>, chunks: i32, count: i32, v: i32) {
    let stride = (chunks / count.max(1)).max(1);
    live.call(
        "dirty",
        &[Val::I32(0), Val::I32(count), Val::I32(stride), Val::I32(v)],
    )
    .unwrap();
}

const ROUTE: Route = Route {
    target: NodeId::from_bytes([2; 16]),
    epoch: 1,
};

/// Downtime: from the last call on the source to the first call on the target, serialization
/// and decoding included, transport excluded. Stop-and-copy sends the whole agent at the stop;
/// pre-copy sent it while the agent ran and sends only the chunks dirtied since.
fn downtime(c: &mut Criterion) {
    let rt = Runtime::new(u64::MAX);
    let opts = DecodeOptions {
        limits: DecodeLimits::UNLIMITED,
        ..Default::default()
    };
    let mut g = c.benchmark_group("downtime");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(1));
    g.warm_up_time(Duration::from_millis(200));
    for pages in [1i32, 16, 64, 1024] {
        let chunks = pages * (PAGE_SIZE / CHUNK_SIZE) as i32;
        let mut source = pages_agent(&rt, pages);
        g.bench_function(
            BenchmarkId::new("stop_and_copy", format!("{pages}_pages")),
            |b| {
                b.iter(|| {
                    let wire = source.snapshot_at(None, 0).unwrap().with_route(ROUTE);
                    let wire = wire.serialize().unwrap();
                    let (mut target, _) = rt.resume_bytes(&wire, &opts, (), |_| Ok(())).unwrap();
                    target.call("calls", &[]).unwrap()
                })
            },
        );
        for percent in [1i32, 10] {
            let count = (chunks * percent + 99) / 100;
            let id = BenchmarkId::new(format!("precopy_{percent}pct"), format!("{pages}_pages"));
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        // Untimed: the first round, while the agent runs, and the calls that
                        // dirty memory afterwards.
                        if source.agent().state() != AgentState::Running {
                            source.set_state(AgentState::Running).unwrap();
                        }
                        let (pre, first) = source
                            .precopy_begin(None, ROUTE, 0, &EncodeOptions::default())
                            .unwrap();
                        let (mut target, mut digests) =
                            rt.stage(&first, &opts, (), |_| Ok(())).unwrap();
                        dirty(&mut source, chunks, count, i as i32);
                        // Timed: the stop.
                        let t = Instant::now();
                        let delta = source
                            .precopy_finish(&pre, None, 0, &EncodeOptions::default())
                            .unwrap();
                        target.apply_delta(&delta, &opts, &mut digests).unwrap();
                        black_box(target.call("calls", &[]).unwrap());
                        total += t.elapsed();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = bench, downtime
}
criterion_main!(benches);
