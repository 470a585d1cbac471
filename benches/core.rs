//! Throughput of the core operations, each beside a baseline measured in the same run: raw
//! `sha2` over the same bytes for hashing, `memcpy` of the same bytes (and `memcpy` + raw `sha2`,
//! the floor for a format with a digest trailer) for serialization.
//!
//! `cargo bench --bench core`; the README's table comes from this.

#[path = "support/config.rs"]
mod config;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mielin_cells::migration::MigrationSnapshot;
use mielin_cells::{Agent, AgentId, AgentState, Dna, GlobalValue, NodeId};
use sha2::{Digest, Sha256};
use std::hint::black_box;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// A valid module of `len` bytes: the header, then filler.
fn wasm(len: usize) -> Vec<u8> {
    let mut w = b"\0asm\x01\0\0\0".to_vec();
    w.extend((8..len).map(|i| (i * 31 % 251) as u8));
    w
}

fn label(n: usize) -> String {
    if n >= MIB {
        format!("{}MiB", n / MIB)
    } else {
        format!("{}KiB", n / KIB)
    }
}

fn agent(binary: usize, memory: usize) -> Agent<Vec<u8>> {
    let dna = Dna::new(wasm(binary)).unwrap();
    let mut a = Agent::with_id(AgentId::from_bytes([7; 16]), dna);
    a.set_state(AgentState::Running).unwrap();
    a.set_wasm_state((0..memory).map(|i| (i % 253) as u8).collect());
    a.set_globals(&[GlobalValue::I32(1 << 16)]).unwrap();
    a
}

fn dna_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("dna_hash");
    for n in [KIB, 64 * KIB, MIB] {
        let bytes = wasm(n);
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::new("Dna::new", label(n)), &bytes, |b, w| {
            b.iter(|| Dna::new(black_box(&w[..])).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("raw_sha2", label(n)), &bytes, |b, w| {
            b.iter(|| Sha256::digest(black_box(&w[..])))
        });
    }
    g.finish();
}

/// (binary, memory) sizes from the issue: small agent, medium, large.
const SHAPES: [(usize, usize); 3] = [(KIB, 0), (64 * KIB, 64 * KIB), (MIB, MIB)];

fn shape_label(bin: usize, mem: usize) -> String {
    format!(
        "{}+{}",
        label(bin),
        if mem == 0 { "0".into() } else { label(mem) }
    )
}

fn serialize(c: &mut Criterion) {
    let mut g = c.benchmark_group("serialize");
    for (bin, mem) in SHAPES {
        let snap =
            MigrationSnapshot::capture_at(&agent(bin, mem), Some(NodeId::from_bytes([1; 16])), 0);
        let n = snap.size_bytes();
        let src = snap.serialize().unwrap();
        let mut buf = vec![0u8; n];
        let id = shape_label(bin, mem);
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(BenchmarkId::new("serialize_into", &id), |b| {
            b.iter(|| snap.serialize_into(black_box(&mut buf)).unwrap())
        });
        g.bench_function(BenchmarkId::new("serialize_vec", &id), |b| {
            b.iter(|| snap.serialize().unwrap())
        });
        g.bench_function(BenchmarkId::new("memcpy", &id), |b| {
            b.iter(|| buf.copy_from_slice(black_box(&src)))
        });
        g.bench_function(BenchmarkId::new("memcpy+sha2", &id), |b| {
            b.iter(|| {
                buf.copy_from_slice(black_box(&src));
                Sha256::digest(&buf[..])
            })
        });
    }
    g.finish();
}

fn deserialize(c: &mut Criterion) {
    let mut g = c.benchmark_group("deserialize");
    for (bin, mem) in SHAPES {
        let snap =
            MigrationSnapshot::capture_at(&agent(bin, mem), Some(NodeId::from_bytes([1; 16])), 0);
        let bytes = snap.serialize().unwrap();
        let mut buf = vec![0u8; bytes.len()];
        let id = shape_label(bin, mem);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(BenchmarkId::new("view_zero_copy", &id), |b| {
            b.iter(|| {
                MigrationSnapshot::view(black_box(&bytes))
                    .unwrap()
                    .timestamp()
            })
        });
        g.bench_function(BenchmarkId::new("deserialize_owned", &id), |b| {
            b.iter(|| MigrationSnapshot::deserialize(black_box(&bytes)).unwrap())
        });
        g.bench_function(BenchmarkId::new("memcpy", &id), |b| {
            b.iter(|| buf.copy_from_slice(black_box(&bytes)))
        });
        g.bench_function(BenchmarkId::new("raw_sha2", &id), |b| {
            b.iter(|| Sha256::digest(black_box(&bytes[..])))
        });
    }
    g.finish();
}

fn lifecycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("agent");
    let small = wasm(KIB);
    g.throughput(Throughput::Bytes(KIB as u64));
    g.bench_function("Agent::new/1KiB", |b| {
        b.iter(|| Agent::new(black_box(small.clone())).unwrap())
    });
    let big = agent(MIB, MIB);
    g.throughput(Throughput::Bytes(2 * MIB as u64));
    g.bench_function("capture/1MiB+1MiB", |b| {
        b.iter(|| MigrationSnapshot::capture_at(black_box(&big), None, 0))
    });
    let snap = MigrationSnapshot::capture_at(&big, None, 0);
    g.bench_function("restore/1MiB+1MiB", |b| b.iter(|| snap.restore().unwrap()));
    let mut buf = vec![0u8; 2 * MIB];
    let src = vec![1u8; 2 * MIB];
    g.bench_function("memcpy/2MiB", |b| {
        b.iter(|| buf.copy_from_slice(black_box(&src)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = dna_hash, serialize, deserialize, lifecycle
}
criterion_main!(benches);
