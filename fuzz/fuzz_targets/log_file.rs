//! The node's log file (`storage::FileLog::open`): a log of records the input chooses, built
//! and synced batch by batch, then damaged as the rest of the input says (bytes changed, the
//! file cut or extended). Opening must never panic and, when it opens, must hand back exactly
//! the records of every committed batch, in order: damage is refused or it did not matter,
//! never read as another log. The files live in `/dev/shm` when there is one (syncs are free).
#![no_main]

use mielin_cells::storage::{FileLog, Log};
use mielin_cells::{LocalKey, NodeId};
use std::path::PathBuf;

const MAX_RECORD: usize = 64;

fn path() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("mielin-fuzz-log-{}", std::process::id()))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let node = NodeId::from_bytes([1; 16]);
    let key = LocalKey::derive(&[2; 32], node);
    let path = path();
    let _ = std::fs::remove_file(&path);
    let mut input = data.iter().copied();
    let mut next = || input.next();
    // Up to 6 batches of up to 4 records of up to 40 bytes.
    let mut log = FileLog::create(&path, node, &key, MAX_RECORD).unwrap();
    let mut records: Vec<Vec<u8>> = Vec::new();
    let batches = next().unwrap_or(0) % 7;
    for _ in 0..batches {
        let count = next().unwrap_or(0) % 5;
        for _ in 0..count {
            let len = usize::from(next().unwrap_or(0) % 41);
            let fill = next().unwrap_or(0);
            let r = vec![fill; len];
            log.append(&r).unwrap();
            records.push(r);
        }
        log.sync().unwrap();
    }
    drop(log);
    // Damage: pairs of (position, xor), then a cut or an extension.
    let mut image = std::fs::read(&path).unwrap();
    let damage = usize::from(next().unwrap_or(0) % 8);
    for _ in 0..damage {
        let at = u16::from_le_bytes([next().unwrap_or(0), next().unwrap_or(0)]);
        let x = next().unwrap_or(0);
        if !image.is_empty() {
            let at = usize::from(at) % image.len();
            image[at] ^= x;
        }
    }
    match next().unwrap_or(0) % 3 {
        1 => {
            let at = u16::from_le_bytes([next().unwrap_or(0), next().unwrap_or(0)]);
            image.truncate(usize::from(at) % (image.len() + 1));
        }
        2 => image.extend(std::iter::from_fn(|| next()).take(200)),
        _ => {}
    }
    std::fs::write(&path, &image).unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    if let Ok(mut log) = FileLog::open(&path, node, &key, MAX_RECORD, &mut |_, r| {
        got.push(r.to_vec())
    }) {
        assert_eq!(got, records, "opened to another log");
        assert_eq!(log.durable().0, records.len() as u64);
        // It keeps working: one more record, synced, reopens.
        log.append(b"after").unwrap();
        log.sync().unwrap();
        drop(log);
        let mut again = 0usize;
        FileLog::open(&path, node, &key, MAX_RECORD, &mut |_, _| again += 1).unwrap();
        assert_eq!(again, records.len() + 1);
    }
    let _ = std::fs::remove_file(&path);
});
