//! Group commit on the node's log (`storage::FileLog`), beside the disk's own rate measured in
//! the same run: a raw 1 KiB append + `fdatasync` on a plain file, which is what one durable
//! message cost if every message paid its own sync. `FileLog` pays two syncs per batch (the
//! records, then the commit slot), so a batch of one costs about two raw appends; the question
//! the bench answers is how many records a batch needs before the log outruns the raw one.
//!
//! A second group times one change of the mesh journal, rewritten file against log.
//!
//! `cargo bench --bench log`; the tables in docs/benchmarks.md come from this. The files go
//! to `MIELIN_BENCH_DIR` (default: the system's temporary directory) — set it to a directory on
//! the disk you mean to measure (`/tmp` is often `tmpfs`, where `fdatasync` is free).

#[path = "support/config.rs"]
mod config;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mielin_cells::mesh::{FileJournal, Journal, LogJournal, Phase, Record, LOG_JOURNAL_RECORD};
use mielin_cells::storage::{FileLog, Log};
use mielin_cells::{AgentId, LocalKey, NodeId};
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

/// One change of the mesh journal (an agent's record replaced) in a node that knows 1,000
/// agents: the `FileJournal` the QUIC node kept until now (the whole file rewritten, synced and
/// renamed, the directory synced) against `LogJournal<FileLog>` (one record appended and
/// committed).
fn journal_put(c: &mut Criterion) {
    let d = dir();
    let node = NodeId::from_bytes([1; 16]);
    let key = LocalKey::derive(&[2; 32], node);
    let agents: Vec<AgentId> = (0..1_000u32)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_le_bytes());
            AgentId::from_bytes(b)
        })
        .collect();
    let record = |epoch| Record {
        epoch,
        phase: Phase::Running,
    };
    let mut file = FileJournal::create(d.join("file-journal"), node, &key, 4_096).unwrap();
    let log = FileLog::create(&d.join("log-journal"), node, &key, LOG_JOURNAL_RECORD).unwrap();
    let mut logj = LogJournal::open(log, 4_096).unwrap();
    for (i, a) in agents.iter().enumerate() {
        for j in [&mut file as &mut dyn Journal, &mut logj] {
            j.put(*a, record(i as u64)).unwrap();
            j.set_sequence(*a, i as u64).unwrap();
        }
    }
    let mut g = c.benchmark_group("journal_put_1000_agents");
    g.throughput(Throughput::Elements(1));
    let mut epoch = 1_000;
    g.bench_function("FileJournal", |b| {
        b.iter(|| {
            epoch += 1;
            file.put(agents[7], record(epoch)).unwrap()
        })
    });
    g.bench_function("LogJournal<FileLog>", |b| {
        b.iter(|| {
            epoch += 1;
            logj.put(agents[7], record(epoch)).unwrap()
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&d);
}

criterion_group! {
    name = benches;
    config = config::config();
    targets = group_commit, journal_put
}
criterion_main!(benches);
