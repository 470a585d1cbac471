//! Group commit on the node's log (`storage::FileLog`), beside the disk's own rate measured in
//! the same run: a raw 1 KiB append + `fdatasync` on a plain file, which is what one durable
//! message cost if every message paid its own sync. `FileLog` pays two syncs per batch (the
//! records, then the commit slot), so a batch of one costs about two raw appends; the question
//! the bench answers is how many records a batch needs before the log outruns the raw one.
//!
//! `cargo bench --bench log`; the table in docs/benchmarks.md comes from this. The files go
//! to `MIELIN_BENCH_DIR` (default: the system's temporary directory) — set it to a directory on
//! the disk you mean to measure (`/tmp` is often `tmpfs`, where `fdatasync` is free).

#[path = "support/config.rs"]
mod config;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mielin_cells::storage::{FileLog, Log};
use mielin_cells::{LocalKey, NodeId};
use std::io::Write;
use std::path::PathBuf;

const RECORD: usize = 1024;

fn dir() -> PathBuf {
    let base = std::env::var_os("MIELIN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("mielin-bench-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn group_commit(c: &mut Criterion) {
    let d = dir();
    let node = NodeId::from_bytes([1; 16]);
    let key = LocalKey::derive(&[2; 32], node);
    let record = vec![0x5a; RECORD];
    let mut g = c.benchmark_group("log_1KiB");
    // The baseline: one append and one fdatasync per record, no framing, no MAC.
    {
        g.throughput(Throughput::Elements(1));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("raw"))
            .unwrap();
        g.bench_function("raw_append_fdatasync", |b| {
            b.iter(|| {
                f.write_all(&record).unwrap();
                f.sync_data().unwrap();
            })
        });
    }
    for batch in [1usize, 4, 16, 64, 256] {
        let path = d.join(format!("log-{batch}"));
        let mut log = FileLog::create(&path, node, &key, RECORD).unwrap();
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("FileLog", batch), &batch, |b, &n| {
            b.iter(|| {
                for _ in 0..n {
                    log.append(&record).unwrap();
                }
                log.sync().unwrap()
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&d);
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = group_commit
}
criterion_main!(benches);
