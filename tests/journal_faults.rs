//! The node's own journals under attack and damage (issue 20): the corruption suite of
//! `tests/common/durable.rs` for `FileEpochJournal` and the mesh `FileJournal`, and one test
//! per finding of the adversarial review, each of which the journals before the fix failed.
#![cfg(feature = "std")]

#[path = "common/durable.rs"]
mod durable;

use durable::{Durable, Keys, Scratch, Suite};
use mielin_cells::mesh::{FileJournal, Journal, LogJournal, Phase, Record, LOG_JOURNAL_RECORD};
use mielin_cells::migration::{EpochJournal, FileEpochJournal};
use mielin_cells::storage::{FileLog, Log, Lsn};
use mielin_cells::{AgentId, LocalKey, NodeId, Part, StoreError};
use std::path::Path;

const A: NodeId = NodeId::from_bytes([0xa1; 16]);
const B: NodeId = NodeId::from_bytes([0xb2; 16]);
const P1: NodeId = NodeId::from_bytes([0x01; 16]);
const P2: NodeId = NodeId::from_bytes([0x02; 16]);

/// The epoch journal's layout, as `docs/protocol.md` gives it.
const EPOCH_HEADER: usize = 8 + 2 * 96;
const EPOCH_RECORD: usize = 73;
const SLOT: [usize; 2] = [8, 8 + 96];
/// The node log's header: prefix (magic, version, file id) and two 104-byte slots.
const LOG_HEADER: usize = 24 + 2 * 104;

fn keys(node: NodeId, seed: u8) -> Keys {
    Keys {
        node,
        key: LocalKey::derive(&[seed; 32], node),
    }
}

fn agent(i: u8) -> AgentId {
    AgentId::from_bytes([i; 16])
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

// ---------------------------------------------------------------------------------------------
// The backends.

struct Epochs;

struct EpochStore {
    journal: FileEpochJournal,
    dir: Scratch,
}

type EpochOp = (AgentId, u64, Option<NodeId>);

impl Durable for Epochs {
    type Store = EpochStore;
    type Op = EpochOp;
    type State = Vec<EpochOp>;

    fn name(&self) -> &'static str {
        "FileEpochJournal"
    }
    fn header_len(&self) -> usize {
        EPOCH_HEADER
    }
    fn recovers_torn_tail(&self) -> bool {
        true
    }
    fn create(&self, k: &Keys) -> Result<EpochStore, String> {
        let dir = Scratch::new();
        let journal =
            FileEpochJournal::create(&dir.file(), k.node, &k.key, 64).map_err(|e| e.to_string())?;
        Ok(EpochStore { journal, dir })
    }
    fn open(&self, k: &Keys, image: Option<&[u8]>) -> Result<EpochStore, String> {
        let dir = Scratch::with(image);
        let journal =
            FileEpochJournal::open(&dir.file(), k.node, &k.key, 64).map_err(|e| e.to_string())?;
        Ok(EpochStore { journal, dir })
    }
    fn apply(&self, s: &mut EpochStore, op: &EpochOp) -> Result<(), String> {
        s.journal
            .record_epoch(op.0, op.1, op.2)
            .map_err(|e| e.to_string())
    }
    fn image(&self, s: &EpochStore) -> Option<Vec<u8>> {
        read(&s.dir.file())
    }
    fn committed(&self, s: &EpochStore) -> usize {
        read(&s.dir.file()).map_or(0, |b| b.len())
    }
    fn state(&self, s: &EpochStore) -> Vec<EpochOp> {
        s.journal.entries().collect()
    }
    fn edit(&self, op: &EpochOp) -> EpochOp {
        (op.0, op.1 - 1, op.2) // an epoch rolled back by one: a replay window reopened
    }
}

struct Mesh;

struct MeshStore {
    journal: FileJournal,
    dir: Scratch,
}

#[derive(Clone, Debug)]
enum MeshOp {
    Put(AgentId, Record),
    Remove(AgentId),
    Epoch(AgentId, u64, Option<NodeId>),
    Generation(u64),
}

/// Records, sequence numbers of the agents the operations use, entries charged to P1 and P2,
/// the generation.
type MeshState = (Vec<(AgentId, Record)>, Vec<Option<u64>>, [usize; 2], u64);

/// One mesh operation on any journal that keeps the fence table too.
fn mesh_apply<J: Journal + EpochJournal>(j: &mut J, op: &MeshOp) -> Result<(), String> {
    match op {
        MeshOp::Put(a, r) => j.put(*a, *r).map_err(|e| e.to_string()),
        MeshOp::Remove(a) => j.remove(*a).map_err(|e| e.to_string()),
        MeshOp::Epoch(a, e, c) => j.record_epoch(*a, *e, *c).map_err(|e| e.to_string()),
        MeshOp::Generation(g) => j.set_generation(*g).map_err(|e| e.to_string()),
    }
}

fn mesh_state<J: Journal + EpochJournal>(j: &J) -> MeshState {
    let mut records = Vec::new();
    j.for_each(&mut |a, r| records.push((a, r)));
    records.sort_by_key(|(a, _)| *a);
    let sequences = (0..8).map(|i| j.sequence(agent(i))).collect();
    (
        records,
        sequences,
        [j.created_by(P1), j.created_by(P2)],
        j.generation(),
    )
}

impl Durable for Mesh {
    type Store = MeshStore;
    type Op = MeshOp;
    type State = MeshState;

    fn name(&self) -> &'static str {
        "mesh FileJournal"
    }
    fn header_len(&self) -> usize {
        4 + 4 + 16 + 8
    }
    fn recovers_torn_tail(&self) -> bool {
        false // rewritten whole and renamed: a tail is never a crash, always damage
    }
    fn create(&self, k: &Keys) -> Result<MeshStore, String> {
        let dir = Scratch::new();
        let journal =
            FileJournal::create(dir.file(), k.node, &k.key, 16).map_err(|e| e.to_string())?;
        Ok(MeshStore { journal, dir })
    }
    fn open(&self, k: &Keys, image: Option<&[u8]>) -> Result<MeshStore, String> {
        let dir = Scratch::with(image);
        let journal =
            FileJournal::open(dir.file(), k.node, &k.key, 16).map_err(|e| e.to_string())?;
        Ok(MeshStore { journal, dir })
    }
    fn apply(&self, s: &mut MeshStore, op: &MeshOp) -> Result<(), String> {
        mesh_apply(&mut s.journal, op)
    }
    fn image(&self, s: &MeshStore) -> Option<Vec<u8>> {
        read(&s.dir.file())
    }
    fn committed(&self, s: &MeshStore) -> usize {
        read(&s.dir.file()).map_or(0, |b| b.len())
    }
    fn state(&self, s: &MeshStore) -> MeshState {
        mesh_state(&s.journal)
    }
    fn edit(&self, op: &MeshOp) -> MeshOp {
        match *op {
            MeshOp::Put(a, r) => MeshOp::Put(
                a,
                Record {
                    epoch: r.epoch,
                    phase: Phase::Running,
                },
            ),
            MeshOp::Remove(a) => MeshOp::Put(
                a,
                Record {
                    epoch: 1,
                    phase: Phase::Running,
                },
            ),
            MeshOp::Epoch(a, e, c) => MeshOp::Epoch(a, e - 1, c),
            MeshOp::Generation(g) => MeshOp::Generation(g - 1),
        }
    }
}

/// The mesh journal kept as records in the node's log (`LogJournal<FileLog>`): the same
/// operations as the `FileJournal`'s, each one record and one group commit.
struct LogMesh;

struct LogMeshStore {
    journal: LogJournal<FileLog>,
    dir: Scratch,
}

impl Durable for LogMesh {
    type Store = LogMeshStore;
    type Op = MeshOp;
    type State = MeshState;

    fn name(&self) -> &'static str {
        "mesh LogJournal<FileLog>"
    }
    fn header_len(&self) -> usize {
        LOG_HEADER
    }
    fn recovers_torn_tail(&self) -> bool {
        true
    }
    fn create(&self, k: &Keys) -> Result<LogMeshStore, String> {
        let dir = Scratch::new();
        let log = FileLog::create(&dir.file(), k.node, &k.key, LOG_JOURNAL_RECORD)
            .map_err(|e| e.to_string())?;
        let journal = LogJournal::open(log, 16).map_err(|e| e.to_string())?;
        Ok(LogMeshStore { journal, dir })
    }
    fn open(&self, k: &Keys, image: Option<&[u8]>) -> Result<LogMeshStore, String> {
        let dir = Scratch::with(image);
        let log = FileLog::open(
            &dir.file(),
            k.node,
            &k.key,
            LOG_JOURNAL_RECORD,
            &mut |_, _| {},
        )
        .map_err(|e| e.to_string())?;
        let journal = LogJournal::open(log, 16).map_err(|e| e.to_string())?;
        Ok(LogMeshStore { journal, dir })
    }
    fn apply(&self, s: &mut LogMeshStore, op: &MeshOp) -> Result<(), String> {
        mesh_apply(&mut s.journal, op)
    }
    fn image(&self, s: &LogMeshStore) -> Option<Vec<u8>> {
        read(&s.dir.file())
    }
    fn committed(&self, s: &LogMeshStore) -> usize {
        s.journal.log().committed_len() as usize
    }
    fn state(&self, s: &LogMeshStore) -> MeshState {
        mesh_state(&s.journal)
    }
    fn edit(&self, op: &MeshOp) -> MeshOp {
        Mesh.edit(op)
    }
}

/// The node's log (`storage::FileLog`): one operation is a batch of records and one group
/// commit; the state is every record, in order.
struct Logs;

struct LogStore {
    log: FileLog,
    records: Vec<Vec<u8>>,
    dir: Scratch,
}

/// The largest record these tests write.
const LOG_MAX_RECORD: usize = 64;

impl Durable for Logs {
    type Store = LogStore;
    type Op = Vec<Vec<u8>>;
    type State = Vec<Vec<u8>>;

    fn name(&self) -> &'static str {
        "storage FileLog"
    }
    fn header_len(&self) -> usize {
        LOG_HEADER
    }
    fn recovers_torn_tail(&self) -> bool {
        true
    }
    fn create(&self, k: &Keys) -> Result<LogStore, String> {
        let dir = Scratch::new();
        let log = FileLog::create(&dir.file(), k.node, &k.key, LOG_MAX_RECORD)
            .map_err(|e| e.to_string())?;
        Ok(LogStore {
            log,
            records: Vec::new(),
            dir,
        })
    }
    fn open(&self, k: &Keys, image: Option<&[u8]>) -> Result<LogStore, String> {
        let dir = Scratch::with(image);
        let mut records = Vec::new();
        let mut expected = 1;
        let log = FileLog::open(
            &dir.file(),
            k.node,
            &k.key,
            LOG_MAX_RECORD,
            &mut |lsn, r| {
                assert_eq!(lsn, Lsn(expected), "tickets count from 1 without a gap");
                expected += 1;
                records.push(r.to_vec());
            },
        )
        .map_err(|e| e.to_string())?;
        assert_eq!(log.durable(), Lsn(records.len() as u64));
        assert_eq!(log.appended(), log.durable());
        Ok(LogStore { log, records, dir })
    }
    fn apply(&self, s: &mut LogStore, batch: &Vec<Vec<u8>>) -> Result<(), String> {
        for r in batch {
            s.log.append(r).map_err(|e| e.to_string())?;
            s.records.push(r.clone());
        }
        let durable = s.log.sync().map_err(|e| e.to_string())?;
        assert_eq!(durable, Lsn(s.records.len() as u64));
        Ok(())
    }
    fn image(&self, s: &LogStore) -> Option<Vec<u8>> {
        read(&s.dir.file())
    }
    fn committed(&self, s: &LogStore) -> usize {
        s.log.committed_len() as usize
    }
    fn state(&self, s: &LogStore) -> Vec<Vec<u8>> {
        s.records.clone()
    }
    fn edit(&self, batch: &Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut b = batch.clone();
        b[0][0] ^= 1; // one bit of one message
        b
    }
}

/// Batches of 1 to 4 records of 0 to 40 bytes (an empty record included).
fn log_ops(n: usize) -> Vec<Vec<Vec<u8>>> {
    (0..n)
        .map(|i| {
            (0..1 + i % 4)
                .map(|j| vec![(i * 7 + j) as u8; (i * 13 + j * 5) % 41])
                .collect()
        })
        .collect()
}

fn epoch_ops(n: usize) -> Vec<EpochOp> {
    (0..n)
        .map(|i| {
            let creator = [None, Some(P1), Some(P2)][i % 3];
            (agent((i % 7) as u8), 1 + i as u64, creator)
        })
        .collect()
}

fn mesh_ops() -> Vec<MeshOp> {
    let rec = |epoch, phase| Record { epoch, phase };
    vec![
        MeshOp::Put(agent(1), rec(0, Phase::Running)),
        MeshOp::Generation(1),
        MeshOp::Epoch(agent(1), 3, Some(P1)),
        MeshOp::Put(agent(2), rec(4, Phase::Prepared { source: P1 })),
        MeshOp::Put(agent(1), rec(1, Phase::Outgoing { target: P2 })),
        MeshOp::Epoch(agent(2), 4, Some(P2)),
        MeshOp::Put(
            agent(1),
            rec(
                1,
                Phase::Moved {
                    target: P2,
                    acked: false,
                },
            ),
        ),
        MeshOp::Epoch(agent(1), 5, None),
        MeshOp::Generation(2),
        MeshOp::Remove(agent(2)),
    ]
}

fn print(name: &str, r: &durable::Report) {
    println!("{name}: {} cases", r.cases.values().sum::<usize>());
    for (kind, n) in &r.cases {
        println!("  {kind}: {n}");
    }
    println!(
        "  refused {}, opened intact {}, rollbacks opened (not detectable locally) {}",
        r.refused, r.opened_intact, r.rollbacks_opened
    );
    for (kind, msg) in &r.messages {
        println!("  e.g. {kind}: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// The suite.

#[test]
fn epoch_journal_corruption_suite() {
    let suite = Suite::from_env();
    let r = durable::run(&Epochs, &suite, &keys(A, 1), &keys(B, 2), &epoch_ops(10));
    print("FileEpochJournal, 10 records", &r);
    assert!(r.refused > 0 && r.cases["torn tail"] > 10 * EPOCH_RECORD);
}

/// A larger image (200 records, 14,800 bytes): a seeded sample of offsets per kind
/// (`MIELIN_FAULT_SAMPLES`, `all` for every offset).
#[test]
fn epoch_journal_corruption_suite_large() {
    let suite = Suite::from_env();
    let r = durable::run(&Epochs, &suite, &keys(A, 1), &keys(B, 2), &epoch_ops(200));
    print("FileEpochJournal, 200 records", &r);
}

#[test]
fn mesh_journal_corruption_suite() {
    let suite = Suite::from_env();
    let r = durable::run(&Mesh, &suite, &keys(A, 1), &keys(B, 2), &mesh_ops());
    print("mesh FileJournal", &r);
    // A whole-file MAC: every damaged image is refused, none opens.
    assert_eq!(r.opened_intact, 0);
}

#[test]
fn log_journal_corruption_suite() {
    let suite = Suite::from_env();
    let r = durable::run(&LogMesh, &suite, &keys(A, 1), &keys(B, 2), &mesh_ops());
    print("mesh LogJournal<FileLog>", &r);
    assert!(r.refused > 0 && r.cases["torn tail"] > 100);
}

#[test]
fn log_corruption_suite() {
    let suite = Suite::from_env();
    let r = durable::run(&Logs, &suite, &keys(A, 1), &keys(B, 2), &log_ops(8));
    print("storage FileLog, 8 batches", &r);
    assert!(r.refused > 0 && r.cases["torn tail"] > 100);
}

/// 120 batches (about 14 KiB): a seeded sample of offsets per kind.
#[test]
fn log_corruption_suite_large() {
    let suite = Suite::from_env();
    let r = durable::run(&Logs, &suite, &keys(A, 1), &keys(B, 2), &log_ops(120));
    print("storage FileLog, 120 batches", &r);
}

// ---------------------------------------------------------------------------------------------
// The findings, one by one (each failed on the journals before the fix).

fn epoch_create(dir: &Scratch) -> FileEpochJournal {
    FileEpochJournal::create(&dir.file(), A, &keys(A, 1).key, 16).unwrap()
}

fn epoch_open(dir: &Scratch) -> Result<FileEpochJournal, StoreError> {
    FileEpochJournal::open(&dir.file(), A, &keys(A, 1).key, 16)
}

/// Finding 1: a torn tail was skipped when read but left in the file; the next append was
/// misaligned, and after a restart the acknowledged epoch was gone (a replay accepted).
#[test]
fn torn_tail_then_append_then_restart_keeps_every_epoch() {
    let dir = Scratch::new();
    let mut j = epoch_create(&dir);
    j.record_epoch(agent(1), 5, None).unwrap();
    drop(j);
    let committed = std::fs::metadata(dir.file()).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.file())
        .unwrap();
    std::io::Write::write_all(&mut f, &[0xab; 10]).unwrap(); // a crash mid-append
    let mut j = epoch_open(&dir).unwrap();
    assert_eq!(
        std::fs::metadata(dir.file()).unwrap().len(),
        committed,
        "the torn tail is cut off on open"
    );
    j.record_epoch(agent(2), 7, Some(P1)).unwrap();
    drop(j);
    let j = epoch_open(&dir).unwrap();
    assert_eq!(j.last_epoch(agent(1)), Some(5));
    assert_eq!(j.last_epoch(agent(2)), Some(7), "acknowledged, so durable");
    assert_eq!(j.created_by(P1), 1);
}

/// Finding 1: a file truncated to zero, or deleted, opened as an empty journal.
#[test]
fn zero_length_or_deleted_epoch_journal_is_refused() {
    let dir = Scratch::new();
    assert_eq!(epoch_open(&dir).unwrap_err(), StoreError::Missing);
    std::fs::write(dir.file(), b"").unwrap();
    assert_eq!(epoch_open(&dir).unwrap_err(), StoreError::Empty);
    // Only creating makes an empty journal, and creating never erases one.
    std::fs::remove_file(dir.file()).unwrap();
    drop(epoch_create(&dir));
    assert_eq!(
        FileEpochJournal::create(&dir.file(), A, &keys(A, 1).key, 16).unwrap_err(),
        StoreError::Exists
    );
    assert!(epoch_open(&dir).unwrap().is_empty());
}

/// Finding 2: the mesh journal opened a deleted file as empty.
#[test]
fn deleted_or_empty_mesh_journal_is_refused() {
    let dir = Scratch::new();
    let k = keys(A, 1);
    assert_eq!(
        FileJournal::open(dir.file(), A, &k.key, 16).unwrap_err(),
        StoreError::Missing
    );
    std::fs::write(dir.file(), b"").unwrap();
    assert_eq!(
        FileJournal::open(dir.file(), A, &k.key, 16).unwrap_err(),
        StoreError::Empty
    );
    assert_eq!(
        FileJournal::create(dir.file(), A, &k.key, 16).unwrap_err(),
        StoreError::Exists
    );
}

/// Finding 2: an edited mesh journal (a sequence number lowered, which reopens replays) was
/// accepted: it had no checksum, let alone a keyed one.
#[test]
fn edited_mesh_journal_is_refused() {
    let dir = Scratch::new();
    let k = keys(A, 1);
    let mut j = FileJournal::create(dir.file(), A, &k.key, 16).unwrap();
    j.set_sequence(agent(1), 9).unwrap();
    drop(j);
    let mut bytes = std::fs::read(dir.file()).unwrap();
    let n = bytes.len();
    // The last sequence entry's number: its creator (17 bytes) and the MAC (32) follow.
    let at = n - 32 - 17 - 8;
    assert_eq!(bytes[at], 9);
    bytes[at] = 1;
    std::fs::write(dir.file(), &bytes).unwrap();
    assert_eq!(
        FileJournal::open(dir.file(), A, &k.key, 16).unwrap_err(),
        StoreError::BadMac {
            part: Part::FileMac,
            offset: (n - 32) as u64
        }
    );
}

/// Finding 3: a journal copied from another node's data directory was accepted. Now its node
/// id refuses it; with the node id rewritten, the MACs (another node's key) refuse it.
#[test]
fn journals_copied_from_another_node_are_refused() {
    let (here, there) = (keys(A, 1), keys(B, 2));
    let d = Scratch::new();
    let mesh = d.0.join("b-journal");
    let epochs = d.0.join("b-epochs");
    let mut j = FileJournal::create(&mesh, B, &there.key, 16).unwrap();
    j.set_sequence(agent(1), 1).unwrap();
    let mut e = FileEpochJournal::create(&epochs, B, &there.key, 16).unwrap();
    e.record_epoch(agent(1), 1, None).unwrap();
    assert_eq!(
        FileJournal::open(&mesh, A, &here.key, 16).unwrap_err(),
        StoreError::WrongNode {
            expected: A,
            found: B
        }
    );
    assert_eq!(
        FileEpochJournal::open(&epochs, A, &here.key, 16).unwrap_err(),
        StoreError::WrongNode {
            expected: A,
            found: B
        }
    );
    // The node ids rewritten to this node's: the MACs still name the other key.
    let mut bytes = std::fs::read(&mesh).unwrap();
    bytes[8..24].copy_from_slice(A.as_bytes());
    std::fs::write(&mesh, &bytes).unwrap();
    assert!(matches!(
        FileJournal::open(&mesh, A, &here.key, 16),
        Err(StoreError::BadMac {
            part: Part::FileMac,
            ..
        })
    ));
    let mut bytes = std::fs::read(&epochs).unwrap();
    for s in SLOT {
        bytes[s + 16..s + 32].copy_from_slice(A.as_bytes());
    }
    std::fs::write(&epochs, &bytes).unwrap();
    assert_eq!(
        FileEpochJournal::open(&epochs, A, &here.key, 16).unwrap_err(),
        StoreError::BadMac {
            part: Part::Slot,
            offset: SLOT[0] as u64
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Each refusal names what and where.

/// A journal of 3 records, its bytes.
fn three_records() -> (Scratch, Vec<u8>) {
    let dir = Scratch::new();
    let mut j = epoch_create(&dir);
    for i in 1..=3 {
        j.record_epoch(agent(i), u64::from(i), Some(P1)).unwrap();
    }
    drop(j);
    let bytes = std::fs::read(dir.file()).unwrap();
    assert_eq!(bytes.len(), EPOCH_HEADER + 3 * EPOCH_RECORD, "the layout");
    (dir, bytes)
}

#[test]
fn epoch_journal_refusals_name_what_and_where() {
    let (dir, good) = three_records();
    let open_with = |bytes: &[u8]| {
        std::fs::write(dir.file(), bytes).unwrap();
        epoch_open(&dir)
    };
    // A record flipped inside the committed length: that record, at its offset.
    let mut b = good.clone();
    b[EPOCH_HEADER + EPOCH_RECORD + 20] ^= 1;
    assert_eq!(
        open_with(&b).unwrap_err(),
        StoreError::BadMac {
            part: Part::Record,
            offset: (EPOCH_HEADER + EPOCH_RECORD) as u64
        }
    );
    // Cut at a record boundary: a valid-looking shorter file, a rollback of the tail.
    let cut = EPOCH_HEADER + 2 * EPOCH_RECORD;
    assert_eq!(
        open_with(&good[..cut]).unwrap_err(),
        StoreError::Truncated {
            committed: good.len() as u64,
            found: cut as u64
        }
    );
    // A short header.
    assert_eq!(
        open_with(&good[..100]).unwrap_err(),
        StoreError::TooShort {
            part: Part::Header,
            offset: 0,
            needed: EPOCH_HEADER as u64,
            found: 100
        }
    );
    // Magic, version.
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(open_with(&b), Err(StoreError::BadMagic { .. })));
    let mut b = good.clone();
    b[4] = 2;
    assert_eq!(
        open_with(&b).unwrap_err(),
        StoreError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    // The unsealed format before this one (bare 24-byte records): not a journal of this kind.
    let mut old = agent(1).as_bytes().to_vec();
    old.extend_from_slice(&5u64.to_le_bytes());
    assert!(matches!(open_with(&old), Err(StoreError::BadMagic { .. })));
    // Both slots damaged.
    let mut b = good.clone();
    b[SLOT[0] + 70] ^= 1;
    b[SLOT[1] + 70] ^= 1;
    assert_eq!(
        open_with(&b).unwrap_err(),
        StoreError::BadMac {
            part: Part::Slot,
            offset: SLOT[0] as u64
        }
    );
    // The error as an io::Error names the file.
    let e = StoreError::Missing.at(&dir.file());
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("journal") && e.to_string().contains("missing"));
    // And the original still opens.
    assert_eq!(open_with(&good).unwrap().len(), 3);
}

/// A crash while the commit slot is being written, at every byte of it: the record was synced
/// first, so the journal opens with it (its slot rewritten) or, before the slot's first byte
/// changed, without it and with the record cut off. Never anything else.
#[test]
fn a_torn_slot_write_opens_to_one_of_the_two_commits() {
    let dir = Scratch::new();
    let mut j = epoch_create(&dir);
    for i in 1..=2 {
        j.record_epoch(agent(i), u64::from(i), None).unwrap();
    }
    let before = std::fs::read(dir.file()).unwrap();
    let state_before: Vec<_> = j.entries().collect();
    j.record_epoch(agent(3), 3, Some(P2)).unwrap();
    let after = std::fs::read(dir.file()).unwrap();
    let state_after: Vec<_> = j.entries().collect();
    drop(j);
    // The slot commit 3 wrote: the one whose bytes differ.
    let slot = SLOT
        .into_iter()
        .find(|&s| before[s..s + 96] != after[s..s + 96])
        .unwrap();
    let (mut with_record, mut without_record) = (0, 0);
    for written in 0..=96 {
        let mut crash = after.clone(); // the record is there, synced
        crash[slot + written..slot + 96].copy_from_slice(&before[slot + written..slot + 96]);
        std::fs::write(dir.file(), &crash).unwrap();
        let j = epoch_open(&dir).unwrap();
        let state: Vec<_> = j.entries().collect();
        let image = std::fs::read(dir.file()).unwrap();
        if state == state_after {
            assert_eq!(image, after, "slot rewritten, {written} bytes written");
            with_record += 1;
        } else {
            assert_eq!(state, state_before, "{written} bytes of the slot written");
            assert_eq!(image, before, "record cut off, {written} bytes written");
            without_record += 1;
        }
    }
    // Untouched slot: both valid, the record past the committed length is a tail. Any byte
    // of the slot written: it fails its MAC, and the record (synced before) counts.
    println!("slot torn at 97 points: {with_record} with the record, {without_record} without");
    assert!(without_record >= 1 && with_record >= 1);
}

/// A device without a secret: the unkeyed key still refuses corruption and an honest copy
/// from another node (by its node id), but not a deliberate edit, whose MACs anyone can
/// recompute. `docs/security.md` says so; this pins it.
#[test]
fn the_unkeyed_key_detects_corruption_not_edits() {
    let unkeyed = Keys {
        node: A,
        key: LocalKey::UNKEYED,
    };
    let honest = epoch_ops(4);
    let mut edited = honest.clone();
    edited[3].1 -= 1;
    let open_image = |ops: &[EpochOp]| {
        let mut s = Epochs.create(&unkeyed).unwrap();
        for op in ops {
            Epochs.apply(&mut s, op).unwrap();
        }
        Epochs.image(&s).unwrap()
    };
    let (good, forged) = (open_image(&honest), open_image(&edited));
    let mut flipped = good.clone();
    flipped[EPOCH_HEADER + 3] ^= 1;
    assert!(Epochs.open(&unkeyed, Some(&flipped)).is_err());
    let s = Epochs.open(&unkeyed, Some(&forged)).unwrap();
    assert_eq!(
        s.journal.last_epoch(edited[3].0),
        Some(edited[3].1),
        "accepted: the limit of a device without a secret"
    );
    // The same forgery against a keyed node: refused.
    assert!(Epochs.open(&keys(A, 1), Some(&forged)).is_err());
}

/// The creator of each entry survives a restart, so a trust list's per-peer quota does too.
#[test]
fn entries_remember_their_creator_across_restarts() {
    let dir = Scratch::new();
    let mut j = epoch_create(&dir);
    j.record_epoch(agent(1), 1, Some(P1)).unwrap();
    j.record_epoch(agent(2), 1, Some(P1)).unwrap();
    j.record_epoch(agent(3), 1, None).unwrap();
    j.record_epoch(agent(1), 2, Some(P2)).unwrap(); // an existing entry keeps its creator
    drop(j);
    let j = epoch_open(&dir).unwrap();
    assert_eq!((j.created_by(P1), j.created_by(P2)), (2, 0));
    assert_eq!(j.last_epoch(agent(1)), Some(2));

    let k = keys(A, 1);
    let mut m = FileJournal::create(dir.0.join("mesh"), A, &k.key, 16).unwrap();
    m.record_epoch(agent(1), 1, Some(P1)).unwrap();
    m.record_epoch(agent(1), 2, Some(P2)).unwrap();
    m.record_epoch(agent(2), 1, Some(P2)).unwrap();
    drop(m);
    let m = FileJournal::open(dir.0.join("mesh"), A, &k.key, 16).unwrap();
    assert_eq!((m.created_by(P1), m.created_by(P2)), (1, 1));
}

/// A mesh journal longer than its capacity allows is refused before it is read.
#[test]
fn an_oversized_mesh_journal_is_refused_unread() {
    let dir = Scratch::new();
    let k = keys(A, 1);
    drop(FileJournal::create(dir.file(), A, &k.key, 2).unwrap());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.file())
        .unwrap();
    f.set_len(1 << 30).unwrap(); // sparse: a GiB claimed, nothing allocated
    assert!(matches!(
        FileJournal::open(dir.file(), A, &k.key, 2),
        Err(StoreError::TooLong { found, .. }) if found == 1 << 30
    ));
    // The unsealed format before version 2.
    std::fs::write(dir.file(), b"MZJ1\0\0\0\0").unwrap();
    assert_eq!(
        FileJournal::open(dir.file(), A, &k.key, 2).unwrap_err(),
        StoreError::UnsupportedVersion {
            found: 1,
            supported: 3
        }
    );
}

/// A version-2 mesh journal (before the generation) is read as generation 0 and written
/// back as version 3; the generation survives a restart; an edited version byte is refused.
#[test]
fn a_version_2_mesh_journal_opens_as_generation_0() {
    let dir = Scratch::new();
    let k = keys(A, 1);
    // Version 2, by hand: magic, version, node, one record, no sequence numbers, MAC.
    let rec = Record {
        epoch: 4,
        phase: Phase::Running,
    };
    let mut v2 = b"MZJL".to_vec();
    v2.extend_from_slice(&2u32.to_le_bytes());
    v2.extend_from_slice(A.as_bytes());
    v2.extend_from_slice(&1u32.to_le_bytes());
    v2.extend_from_slice(&rec.encode(agent(1)));
    v2.extend_from_slice(&0u32.to_le_bytes());
    let mac = k.key.mac("mielin-cells/mesh-journal/v2", &[&v2]);
    v2.extend_from_slice(&mac);
    std::fs::write(dir.file(), &v2).unwrap();
    let mut j = FileJournal::open(dir.file(), A, &k.key, 4).unwrap();
    assert_eq!((j.get(agent(1)), j.generation()), (Some(rec), 0));
    j.set_generation(7).unwrap();
    let bytes = std::fs::read(dir.file()).unwrap();
    assert_eq!(
        &bytes[4..8],
        &3u32.to_le_bytes(),
        "written back as version 3"
    );
    assert_eq!(
        &bytes[24..32],
        &7u64.to_le_bytes(),
        "the generation after the node id"
    );
    let j = FileJournal::open(dir.file(), A, &k.key, 4).unwrap();
    assert_eq!((j.get(agent(1)), j.generation()), (Some(rec), 7));
    // The version is under the MAC: a version-3 file relabelled 2 does not verify.
    let mut relabelled = bytes.clone();
    relabelled[4] = 2;
    std::fs::write(dir.file(), &relabelled).unwrap();
    assert!(matches!(
        FileJournal::open(dir.file(), A, &k.key, 4),
        Err(StoreError::BadMac { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Random damage: several changes at once, beyond the suite's single faults.

mod random {
    use super::*;
    use proptest::prelude::*;

    /// A valid image of each journal and its state: the epoch journal's, the mesh journal's.
    type Images = (Vec<u8>, Vec<EpochOp>, Vec<u8>, MeshState);

    fn images() -> &'static Images {
        static IMAGES: std::sync::OnceLock<Images> = std::sync::OnceLock::new();
        IMAGES.get_or_init(|| {
            let k = keys(A, 1);
            let mut e = Epochs.create(&k).unwrap();
            for op in epoch_ops(6) {
                Epochs.apply(&mut e, &op).unwrap();
            }
            let mut m = Mesh.create(&k).unwrap();
            for op in mesh_ops() {
                Mesh.apply(&mut m, &op).unwrap();
            }
            (
                Epochs.image(&e).unwrap(),
                Epochs.state(&e),
                Mesh.image(&m).unwrap(),
                Mesh.state(&m),
            )
        })
    }

    #[derive(Debug, Clone)]
    enum Change {
        Set(usize, u8),
        Insert(usize, u8),
        Delete(usize),
        Truncate(usize),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Change::Set(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Change::Insert(i, b)),
            any::<usize>().prop_map(Change::Delete),
            any::<usize>().prop_map(Change::Truncate),
        ]
    }

    fn damage(mut image: Vec<u8>, changes: &[Change]) -> Vec<u8> {
        for c in changes {
            let n = image.len().max(1);
            match *c {
                Change::Set(i, b) if !image.is_empty() => image[i % n] = b,
                Change::Insert(i, b) => image.insert(i % (image.len() + 1), b),
                Change::Delete(i) if !image.is_empty() => {
                    image.remove(i % n);
                }
                Change::Truncate(i) => image.truncate(i % n),
                _ => {}
            }
        }
        image
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Refused, or (when the changes undo themselves or touch only what does not count)
        /// exactly the committed state; never a panic.
        #[test]
        fn damaged_journals_open_to_the_committed_state_or_not_at_all(
            changes in proptest::collection::vec(change(), 1..6)
        ) {
            let (epochs, epoch_state, mesh, mesh_state) = images();
            let k = keys(A, 1);
            let damaged = damage(epochs.clone(), &changes);
            if let Ok(s) = Epochs.open(&k, Some(&damaged)) {
                prop_assert_eq!(&Epochs.state(&s), epoch_state);
            }
            let damaged = damage(mesh.clone(), &changes);
            if let Ok(s) = Mesh.open(&k, Some(&damaged)) {
                prop_assert_eq!(&Mesh.state(&s), mesh_state);
            }
        }
    }
}

/// The QUIC host creates its journal (the node's, shared with its trust list) only in a new
/// data directory; a restart finds it; a node whose journal was deleted, or that was handed
/// another node's data directory, does not start.
#[cfg(feature = "quic")]
#[test]
fn the_quic_host_creates_only_in_a_new_directory() {
    use mielin_cells::quic::{Directory, Identity, WasmHost};
    let scratch = Scratch::new();
    let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
    let (dir_a, dir_b) = (scratch.0.join("a"), scratch.0.join("b"));
    drop(WasmHost::open(&a, &Directory::new(), &dir_a, 1).unwrap()); // new: created
    drop(WasmHost::open(&a, &Directory::new(), &dir_a, 1).unwrap()); // a restart
    drop(WasmHost::open(&b, &Directory::new(), &dir_b, 1).unwrap());
    // b's directory handed to a.
    let e = WasmHost::open(&a, &Directory::new(), &dir_b, 1).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("written by another node"), "{e}");
    // a's journal deleted: the directory is not new, so it is not made again.
    std::fs::remove_file(dir_a.join("journal")).unwrap();
    let e = WasmHost::open(&a, &Directory::new(), &dir_a, 1).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("journal"), "{e}");
    assert!(!dir_a.join("epochs").exists(), "no second table");
}

/// A data directory from before the journal was shared: the trust list's epochs file is merged
/// into the journal (each agent's highest epoch and the peer that created it) and renamed; the
/// trust list and the node's fence then read one table.
#[cfg(feature = "quic")]
#[test]
fn the_quic_host_merges_an_old_epochs_file_into_the_journal() {
    use mielin_cells::quic::{Directory, Identity, WasmHost};
    let scratch = Scratch::new();
    let id = Identity::from_seed([7; 32]);
    let node = id.node_id();
    let key = LocalKey::derive(id.secret(), node);
    for with_journal in [false, true] {
        let dir = scratch.0.join(format!("old-{with_journal}"));
        std::fs::create_dir_all(&dir).unwrap();
        if with_journal {
            let mut j = FileJournal::create(dir.join("journal"), node, &key, 64).unwrap();
            j.record_epoch(agent(1), 9, None).unwrap(); // higher than the file's: kept
        }
        let mut e = FileEpochJournal::create(&dir.join("epochs"), node, &key, 4096).unwrap();
        e.record_epoch(agent(1), 4, Some(P1)).unwrap();
        e.record_epoch(agent(2), 6, Some(P2)).unwrap();
        drop(e);
        let host = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap();
        let shared = host.journal();
        let j = shared.lock();
        let first = if with_journal { 9 } else { 4 };
        assert_eq!(j.sequence(agent(1)), Some(first));
        assert_eq!(j.sequence(agent(2)), Some(6));
        assert_eq!(j.created_by(P2), 1);
        assert!(!dir.join("epochs").exists() && dir.join("epochs.merged").exists());
        drop(j);
        drop(host);
        // And it stays merged across a restart.
        let host = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap();
        assert_eq!(host.journal().lock().sequence(agent(2)), Some(6));
    }
    // An old directory that holds agents but lost its journal is refused, not started empty:
    // the journal said where those agents are.
    let dir = scratch.0.join("old-lost-journal");
    std::fs::create_dir_all(dir.join("agents")).unwrap();
    std::fs::write(dir.join("agents").join("x.run"), b"sealed state").unwrap();
    FileEpochJournal::create(&dir.join("epochs"), node, &key, 4096).unwrap();
    let err = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    assert!(!dir.join("journal").exists());
}

/// A journal in the format before the log (`FileJournal`, rewritten whole on every change) is
/// copied into the node's log when the host opens it: every record, fence entry with its
/// creator, and the generation; the old file is replaced. A log that grew far beyond its tables
/// is compacted when opened, to the same tables.
#[cfg(feature = "quic")]
#[test]
fn the_quic_host_moves_an_old_journal_into_its_log_and_compacts_it() {
    use mielin_cells::quic::{Directory, Identity, WasmHost};
    let scratch = Scratch::new();
    let id = Identity::from_seed([8; 32]);
    let node = id.node_id();
    let key = LocalKey::derive(id.secret(), node);
    let dir = scratch.0.join("old-format");
    std::fs::create_dir_all(&dir).unwrap();
    let moved = Record {
        epoch: 3,
        phase: Phase::Moved {
            target: P1,
            acked: false,
        },
    };
    {
        let mut j = FileJournal::create(dir.join("journal"), node, &key, 64).unwrap();
        j.put(agent(1), moved).unwrap();
        j.record_epoch(agent(1), 3, None).unwrap();
        j.record_epoch(agent(2), 7, Some(P2)).unwrap();
        j.set_generation(5).unwrap();
    }
    let state = |host: &WasmHost| {
        let j = host.journal();
        let j = j.lock();
        (
            j.get(agent(1)),
            j.sequence(agent(1)),
            j.sequence(agent(2)),
            j.created_by(P2),
            j.generation(),
        )
    };
    let expected = (Some(moved), Some(3), Some(7), 1, 5);
    let host = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap();
    assert_eq!(state(&host), expected);
    drop(host);
    let image = std::fs::read(dir.join("journal")).unwrap();
    assert_eq!(&image[..4], b"MZLG", "the old file was replaced by the log");
    assert!(!dir.join("journal.new").exists());
    // Many changes (the generation, written again and again): opening compacts the log.
    {
        let host = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap();
        let j = host.journal();
        let mut j = j.lock();
        for g in 6..2_000 {
            j.set_generation(g).unwrap();
        }
        // The host's journal is deferred: its changes are durable at the sync (a node makes
        // it before a frame leaves).
        j.sync().unwrap();
    }
    let before = std::fs::metadata(dir.join("journal")).unwrap().len();
    let host = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap();
    assert_eq!(state(&host), (Some(moved), Some(3), Some(7), 1, 1_999));
    let after = std::fs::metadata(dir.join("journal")).unwrap().len();
    assert!(
        after * 20 < before,
        "compacted: {before} bytes before, {after} after"
    );
}

/// Found by review: compaction at open is optional, yet its failure (here `journal.new`
/// cannot be created; a full disk does the same) stopped the node from starting although its
/// journal opened fine. The node now starts on the journal as it is.
#[cfg(feature = "quic")]
#[test]
fn a_failed_compaction_leaves_the_journal_as_it_was() {
    use mielin_cells::quic::{Directory, Identity, WasmHost};
    let scratch = Scratch::new();
    let id = Identity::from_seed([9; 32]);
    let dir = scratch.0.join("node");
    {
        let host = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap();
        let j = host.journal();
        let mut j = j.lock();
        for g in 1..1_100 {
            j.set_generation(g).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("journal.new").join("x")).unwrap();
    let before = std::fs::read(dir.join("journal")).unwrap();
    let host = WasmHost::open(&id, &Directory::new(), &dir, 1).unwrap();
    assert_eq!(host.journal().lock().generation(), 1_099);
    assert_eq!(std::fs::read(dir.join("journal")).unwrap(), before);
}
