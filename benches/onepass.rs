//! Wire format version 2 against version 1 and raw SHA-256, measured in the same run:
//!
//! - `decode`: a 1 MiB binary and 1 MiB of memory, owned decode of each version, beside raw
//!   sha2 over the snapshot's bytes (the floor for any decoder that checks every byte);
//! - `encode`: the same agent (its DNA already hashed), beside raw sha2 over the bytes that are
//!   not the binary (what version 2 must hash: the memory and the envelope);
//! - `delta64`: 64 MiB of memory with 1% of its 4 KiB chunks changed: a full version-2 encode
//!   and decode, beside a delta encoded by a sender that kept the base's digests and applied
//!   in place by a receiver that kept them.
//!
//! `cargo bench --bench onepass`

#[path = "support/config.rs"]
mod config;
#[path = "support/images.rs"]
mod images;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use images::{heap_image, module, touch, MIB};
use mielin_cells::migration::{
    DecodeLimits, DecodeOptions, EncodeOptions, MemoryDigests, MigrationSnapshot, Route,
    StateEncoding,
};
use mielin_cells::{Agent, AgentId, Dna, NodeId};
use sha2::{Digest, Sha256};
use std::hint::black_box;

const ROUTE: Route = Route {
    target: NodeId::from_bytes([2; 16]),
    epoch: 1,
};

fn agent(binary: usize, memory: Vec<u8>) -> Agent<Vec<u8>> {
    let mut a = Agent::with_id(
        AgentId::from_bytes([1; 16]),
        Dna::new(module(binary)).unwrap(),
    );
    a.set_wasm_state(memory);
    a
}

fn one_pass(c: &mut Criterion) {
    let a = agent(MIB, heap_image(MIB, 100, 1));
    let v1 = MigrationSnapshot::capture_at(&a, None, 0);
    let v2 = v1.clone().with_route(ROUTE);
    let b1 = v1.serialize().unwrap();
    let b2 = v2.serialize().unwrap();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(b2.len() as u64));
    g.bench_function("v1", |b| {
        b.iter(|| MigrationSnapshot::deserialize(black_box(&b1)).unwrap())
    });
    g.bench_function("v2", |b| {
        b.iter(|| MigrationSnapshot::deserialize(black_box(&b2)).unwrap())
    });
    g.bench_function("v2_view", |b| {
        b.iter(|| MigrationSnapshot::view(black_box(&b2)).unwrap())
    });
    g.bench_function("raw_sha2_snapshot", |b| {
        b.iter(|| Sha256::digest(black_box(&b2)))
    });
    g.finish();

    let non_binary = b2.len() - MIB;
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(b2.len() as u64));
    g.bench_function("v1", |b| b.iter(|| black_box(&v1).serialize().unwrap()));
    g.bench_function("v2", |b| b.iter(|| black_box(&v2).serialize().unwrap()));
    g.bench_function("raw_sha2_non_binary", |b| {
        b.iter(|| Sha256::digest(black_box(&b2[..non_binary])))
    });
    g.finish();
}

fn delta64(c: &mut Criterion) {
    let size = 64 * MIB;
    let base = heap_image(size, 100, 2);
    let mut memory = base.clone();
    touch(&mut memory, 1, 3);
    let a = agent(4096, memory);
    let full = MigrationSnapshot::capture_at(&a, None, 0).with_route(ROUTE);
    let base_digests = MemoryDigests::of(&base);
    let full_bytes = full.serialize().unwrap();
    let delta_opts = EncodeOptions {
        state: StateEncoding::Delta { base: &base },
        base_digests: Some(&base_digests),
        ..Default::default()
    };
    let delta_bytes = full.serialize_with(&delta_opts).unwrap();
    let limits = DecodeOptions {
        limits: DecodeLimits::UNLIMITED,
        ..Default::default()
    };

    let mut g = c.benchmark_group("delta64");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function(BenchmarkId::new("encode", "full"), |b| {
        b.iter(|| black_box(&full).serialize().unwrap())
    });
    g.bench_function(BenchmarkId::new("encode", "delta_1pct_known_base"), |b| {
        b.iter(|| black_box(&full).serialize_with(&delta_opts).unwrap())
    });
    g.bench_function(BenchmarkId::new("decode", "full"), |b| {
        b.iter(|| MigrationSnapshot::deserialize_with(black_box(&full_bytes), &limits).unwrap())
    });
    // The receiver holds the base (from the full snapshot it received earlier) and applies the
    // delta in place; each iteration needs its own copy of the base, made outside the timing.
    g.bench_function(BenchmarkId::new("decode", "delta_1pct_onto_held"), |b| {
        b.iter_batched_ref(
            || base.clone(),
            |held| {
                MigrationSnapshot::deserialize_onto(
                    black_box(&delta_bytes),
                    &limits,
                    held,
                    &base_digests,
                )
                .unwrap()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("raw_sha2_64MiB", |b| {
        b.iter(|| Sha256::digest(black_box(&base)))
    });
    let mut dst = vec![0u8; size];
    g.bench_function("memcpy_64MiB", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&base)))
    });
    g.finish();
    println!(
        "delta64: full snapshot {} bytes, delta {} bytes",
        full_bytes.len(),
        delta_bytes.len()
    );
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = one_pass, delta64
}
criterion_main!(benches);
