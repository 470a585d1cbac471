//! Encode and decode times of the wire encodings for the README's reference agent (1 MiB DNA,
//! 1 MiB memory with 15% live chunks), and chunked encoding on three memory images, beside
//! `memcpy` and raw `sha2` of the same bytes.
//!
//! `cargo bench --bench flags --features lz4`

#[path = "support/config.rs"]
mod config;
#[path = "support/images.rs"]
mod images;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use images::{heap_image, module, random_image, touch, MIB};
use mielin_cells::migration::{
    DecodeOptions, DnaMap, EncodeOptions, MigrationSnapshot, StateEncoding,
};
use mielin_cells::{Agent, AgentId, Dna};
use sha2::{Digest, Sha256};
use std::hint::black_box;

fn encodings(c: &mut Criterion) {
    let dna = Dna::new(module(MIB)).unwrap();
    let mut agent = Agent::with_id(AgentId::from_bytes([1; 16]), dna.clone());
    let base = heap_image(MIB, 15, 1);
    let mut memory = base.clone();
    touch(&mut memory, 1, 2);
    agent.set_wasm_state(memory);
    let snap = MigrationSnapshot::capture_at(&agent, None, 0);
    let mut store = DnaMap::new();
    store.insert(&dna);
    let opts = DecodeOptions {
        dna_store: Some(&store),
        base_state: Some(&base),
        ..Default::default()
    };

    let mut g = c.benchmark_group("encodings");
    // Throughput counts the agent's 2 MiB (binary + memory) for every encoding.
    g.throughput(Throughput::Bytes(2 * MIB as u64));
    let cases: [(&str, EncodeOptions<'_>); 4] = [
        ("full", EncodeOptions::default()),
        (
            "by_ref",
            EncodeOptions {
                dna_by_reference: true,
                ..Default::default()
            },
        ),
        (
            "by_ref+chunked",
            EncodeOptions {
                dna_by_reference: true,
                state: StateEncoding::Chunked,
                ..Default::default()
            },
        ),
        (
            "by_ref+delta_1pct",
            EncodeOptions {
                dna_by_reference: true,
                state: StateEncoding::Delta { base: &base },
                ..Default::default()
            },
        ),
    ];
    for (name, encode) in cases {
        let bytes = snap.serialize_with(&encode).unwrap();
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| snap.serialize_with(black_box(&encode)).unwrap())
        });
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| MigrationSnapshot::deserialize_with(black_box(&bytes), &opts).unwrap())
        });
    }
    let src = vec![1u8; 2 * MIB];
    let mut dst = vec![0u8; 2 * MIB];
    g.bench_function("memcpy/2MiB", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.bench_function("raw_sha2/2MiB", |b| {
        b.iter(|| Sha256::digest(black_box(&src)))
    });
    g.finish();
}

fn images(c: &mut Criterion) {
    let dna = Dna::new(module(4096)).unwrap();
    let mut g = c.benchmark_group("chunked_images");
    g.throughput(Throughput::Bytes(MIB as u64));
    for (name, image) in [
        ("mostly_zero", heap_image(MIB, 2, 3)),
        ("heap", heap_image(MIB, 100, 4)),
        ("random", random_image(MIB, 5)),
    ] {
        let mut agent = Agent::with_id(AgentId::from_bytes([2; 16]), dna.clone());
        agent.set_wasm_state(image);
        let snap = MigrationSnapshot::capture_at(&agent, None, 0);
        let encode = EncodeOptions {
            state: StateEncoding::Chunked,
            ..Default::default()
        };
        let bytes = snap.serialize_with(&encode).unwrap();
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| snap.serialize_with(black_box(&encode)).unwrap())
        });
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| MigrationSnapshot::deserialize(black_box(&bytes)).unwrap())
        });
    }
    let src = vec![1u8; MIB];
    let mut dst = vec![0u8; MIB];
    g.bench_function("memcpy/1MiB", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.bench_function("raw_sha2/1MiB", |b| {
        b.iter(|| Sha256::digest(black_box(&src)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = encodings, images
}
criterion_main!(benches);
