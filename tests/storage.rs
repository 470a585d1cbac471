//! The storage contract (docs/protocol.md, "Durability tickets"): tickets, group commit,
//! crashes that keep a prefix, poisoning, and frames held until what they depend on is durable.
//! For `MemLog` under injected faults and `FileLog` under cut files; the corruption suite of
//! `FileLog` is in tests/journal_faults.rs.
#![cfg(feature = "std")]

#[path = "common/durable.rs"]
mod durable;

use durable::Scratch;
use mielin_cells::storage::{FileLog, Held, Log, Lsn, MemLog};
use mielin_cells::{LocalKey, NodeId, StoreError};
use proptest::prelude::*;

const NODE: NodeId = NodeId::from_bytes([0xa1; 16]);

fn key() -> LocalKey {
    LocalKey::derive(&[7; 32], NODE)
}

fn replayed(log: &mut impl Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut expected = 1;
    log.replay(&mut |lsn, r| {
        assert_eq!(lsn, Lsn(expected));
        expected += 1;
        out.push(r.to_vec());
    })
    .unwrap();
    out
}

#[test]
fn tickets_count_from_one_and_sync_covers_them_all() {
    let dir = Scratch::new();
    let mut file = FileLog::create(&dir.file(), NODE, &key(), 100).unwrap();
    let mut mem = MemLog::new(100, 10_000);
    for log in [&mut file as &mut dyn Log, &mut mem] {
        assert_eq!((log.durable(), log.appended()), (Lsn::ZERO, Lsn::ZERO));
        assert_eq!(log.sync().unwrap(), Lsn::ZERO, "nothing to commit");
        assert_eq!(log.append(b"one").unwrap(), Lsn(1));
        assert_eq!(log.append(b"").unwrap(), Lsn(2));
        assert_eq!(log.append(b"three").unwrap(), Lsn(3));
        assert_eq!(
            log.durable(),
            Lsn::ZERO,
            "appending does not wait for the disk"
        );
        assert_eq!(log.sync().unwrap(), Lsn(3));
        assert_eq!(log.durable(), Lsn(3));
        assert_eq!(
            log.append(&[0; 101]),
            Err(StoreError::RecordTooLong { len: 101, max: 100 })
        );
        assert_eq!(
            log.append(b"four").unwrap(),
            Lsn(4),
            "a refusal uses no ticket"
        );
    }
    assert_eq!(file.syncs(), 1, "one group commit for three records");
    assert_eq!(mem.syncs(), 1);
    drop(file);
    let mut got = Vec::new();
    let mut file = FileLog::open(&dir.file(), NODE, &key(), 100, &mut |_, r| {
        got.push(r.to_vec())
    })
    .unwrap();
    assert_eq!(
        got,
        [&b"one"[..], b"", b"three"],
        "the unsynced fourth is gone"
    );
    assert_eq!(replayed(&mut file), got);
    assert_eq!(file.append(b"four again").unwrap(), Lsn(4));
    assert_eq!(file.sync().unwrap(), Lsn(4));
}

/// A crash at every point of an unsynced batch: the reopened log holds every durable record
/// and a prefix of the batch (whole records only), and appends after it get the next tickets.
#[test]
fn a_file_cut_anywhere_past_the_commit_keeps_a_prefix() {
    let dir = Scratch::new();
    let mut log = FileLog::create(&dir.file(), NODE, &key(), 64).unwrap();
    let durable: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; i as usize * 3]).collect();
    for r in &durable {
        log.append(r).unwrap();
    }
    log.sync().unwrap();
    let committed = log.committed_len() as usize;
    let batch: Vec<Vec<u8>> = (0..4u8).map(|i| vec![0x80 | i; 10 + i as usize]).collect();
    for r in &batch {
        log.append(r).unwrap();
    }
    // Replaying writes the waiting batch to the file (unsynced), as a full buffer would.
    assert_eq!(replayed(&mut log).len(), 9);
    drop(log);
    let image = std::fs::read(dir.file()).unwrap();
    assert!(image.len() > committed);
    for at in committed..=image.len() {
        let d = Scratch::with(Some(&image[..at]));
        let mut got = Vec::new();
        let mut log = FileLog::open(&d.file(), NODE, &key(), 64, &mut |_, r| {
            got.push(r.to_vec())
        })
        .unwrap_or_else(|e| panic!("cut at {at}: {e}"));
        assert!(
            got.len() >= durable.len(),
            "cut at {at}: a durable record lost"
        );
        let all: Vec<Vec<u8>> = durable.iter().chain(&batch).cloned().collect();
        assert_eq!(got[..], all[..got.len()], "cut at {at}: not a prefix");
        // An open makes what it found durable; the next record follows it.
        assert_eq!(log.durable(), Lsn(got.len() as u64));
        let next = log.append(b"after").unwrap();
        assert_eq!(next, Lsn(got.len() as u64 + 1));
        log.sync().unwrap();
        drop(log);
        let mut again = Vec::new();
        FileLog::open(&d.file(), NODE, &key(), 64, &mut |_, r| {
            again.push(r.to_vec())
        })
        .unwrap();
        assert_eq!(again.len(), got.len() + 1, "cut at {at}");
        assert_eq!(again.last().unwrap(), b"after");
    }
}

#[test]
fn a_length_beyond_the_largest_record_is_refused_before_it_is_read() {
    let dir = Scratch::new();
    let mut log = FileLog::create(&dir.file(), NODE, &key(), 1 << 20).unwrap();
    log.append(&[1; 100]).unwrap();
    log.sync().unwrap();
    drop(log);
    // The same file opened by a log that takes shorter records: the length is checked first.
    let err = FileLog::open(&dir.file(), NODE, &key(), 99, &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(err, StoreError::Malformed { reason, .. } if reason.contains("largest record")),
        "{err}"
    );
}

#[test]
fn a_failure_poisons_the_log_until_it_is_reopened() {
    let mut log = MemLog::new(16, 1_000);
    log.append(b"a").unwrap();
    log.sync().unwrap();
    log.append(b"b").unwrap();
    log.fail_next_sync();
    assert_eq!(log.sync(), Err(StoreError::WriteFailed));
    assert_eq!(log.durable(), Lsn(1), "the failed sync committed nothing");
    assert_eq!(log.append(b"c"), Err(StoreError::Poisoned));
    assert_eq!(
        log.sync(),
        Err(StoreError::Poisoned),
        "a retried sync is no proof"
    );
    // After the crash "b" may or may not be there; either way the log works again.
    assert_eq!(log.crash(1), Lsn(2));
    assert_eq!(log.append(b"c").unwrap(), Lsn(3));
    log.fail_next_append();
    assert_eq!(log.append(b"d"), Err(StoreError::WriteFailed));
    assert_eq!(log.sync(), Err(StoreError::Poisoned));
    assert_eq!(log.crash(0), Lsn(2), "c was never synced");
    let mut full = MemLog::new(16, 20);
    full.append(&[0; 16]).unwrap();
    assert_eq!(
        full.append(&[0; 5]),
        Err(StoreError::LogFull { capacity: 20 })
    );
    full.append(&[0; 4]).unwrap();
}

#[test]
fn held_items_leave_in_order_once_durable() {
    let mut held: Held<&str, 3> = Held::new();
    held.hold(Lsn(2), "prepared").unwrap();
    held.hold(Lsn(1), "delivered").unwrap(); // depends on an older record
    held.hold(Lsn(3), "commit").unwrap();
    assert_eq!(held.hold(Lsn(3), "more"), Err("more"), "full");
    assert_eq!(held.needs(), Some(Lsn(3)));
    assert_eq!(
        held.release(Lsn(1)),
        None,
        "the first waits for 2, the second behind it"
    );
    assert_eq!(held.release(Lsn(2)), Some("prepared"));
    assert_eq!(held.release(Lsn(2)), Some("delivered"));
    assert_eq!(held.release(Lsn(2)), None);
    assert_eq!(held.release(Lsn(3)), Some("commit"));
    assert!(held.is_empty() && held.needs().is_none());
}

/// The log's layout (docs/protocol.md): prefix (magic, version, file id), two 104-byte slots.
const PREFIX: usize = 24;
const SLOT: usize = 104;
const HEADER: usize = PREFIX + 2 * SLOT;

fn slot(i: usize) -> std::ops::Range<usize> {
    PREFIX + i * SLOT..PREFIX + (i + 1) * SLOT
}

fn open_records(image: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let d = Scratch::with(Some(image));
    let mut got = Vec::new();
    FileLog::open(&d.file(), NODE, &key(), 64, &mut |_, r| {
        got.push(r.to_vec())
    })
    .map(|_| got)
    .map_err(|e| e.to_string())
}

/// Found by review: a damaged newest slot and a cut between two records of the batch it
/// commits opened to a state never committed (the records were whole and chained). Each batch
/// now ends with a mark, and only a whole batch is rolled forward.
#[test]
fn a_broken_slot_and_a_cut_inside_its_batch_are_refused() {
    let d = Scratch::new();
    let mut log = FileLog::create(&d.file(), NODE, &key(), 64).unwrap();
    log.append(b"batch1").unwrap();
    log.sync().unwrap(); // slot 0
    let c1 = log.committed_len() as usize;
    for r in [&b"r2"[..], b"r3", b"r4"] {
        log.append(r).unwrap();
    }
    log.sync().unwrap(); // slot 1, ticket 4 durable
    drop(log);
    let image = std::fs::read(d.file()).unwrap();
    assert_eq!(open_records(&image).unwrap().len(), 4);
    for cut in [c1 + 4 + 2 + 32, c1 + 2 * (4 + 2 + 32), image.len() - 1] {
        let mut bad = image[..cut].to_vec();
        bad[slot(1).start + 3] ^= 0xff;
        assert!(open_records(&bad).is_err(), "cut at {cut} opened");
    }
    // The crash the rule is for: the slot torn, the whole batch there: rolled forward.
    let mut torn = image.clone();
    torn[slot(1).start + 3] ^= 0xff;
    assert_eq!(open_records(&torn).unwrap().len(), 4);
}

/// Found by review: an older copy of the log's header pasted over its newer records made it
/// open short and cut the rest. Two or more whole batches past the slot are now refused (a
/// crash leaves at most one). Every MAC covers the file's random id, so no two logs share a
/// header. Not detected (docs/protocol.md): the header of another of the node's logs whose
/// slots commit nothing of these records (they then read as a torn batch and are cut).
#[test]
fn an_older_or_foreign_header_over_newer_records_is_refused() {
    let d = Scratch::new();
    let mut log = FileLog::create(&d.file(), NODE, &key(), 64).unwrap();
    let mut copies = vec![std::fs::read(d.file()).unwrap()];
    for i in 0..4u8 {
        log.append(&[i; 5]).unwrap();
        log.sync().unwrap();
        copies.push(std::fs::read(d.file()).unwrap());
    }
    drop(log);
    let now = copies[4].clone();
    let with_header = |from: &[u8]| {
        let mut image = now.clone();
        image[..HEADER].copy_from_slice(&from[..HEADER]);
        open_records(&image)
    };
    assert!(with_header(&copies[0]).is_err(), "its own creation header");
    assert!(with_header(&copies[2]).is_err(), "two batches newer");
    // One batch newer: indistinguishable from a crash before that batch's slot was written;
    // cut, as docs/protocol.md says (a rollback by one batch, like a whole older copy).
    assert_eq!(with_header(&copies[3]).unwrap().len(), 3);
    let other = d.0.join("other");
    FileLog::create(&other, NODE, &key(), 64).unwrap();
    let fresh = std::fs::read(&other).unwrap();
    assert_ne!(
        fresh[..PREFIX],
        copies[0][..PREFIX],
        "each log has its own id"
    );
}

/// Found by review: a compaction is one batch; a damaged slot and a cut inside it opened the
/// node's journal with its fence table empty.
#[test]
fn a_compacted_journal_damaged_and_cut_is_refused() {
    use mielin_cells::mesh::{Journal, LogJournal, Phase, Record, LOG_JOURNAL_RECORD};
    use mielin_cells::migration::EpochJournal;
    use mielin_cells::AgentId;
    let d = Scratch::new();
    let old = d.0.join("old");
    let log = FileLog::create(&old, NODE, &key(), LOG_JOURNAL_RECORD).unwrap();
    let mut j = LogJournal::open(log, 16).unwrap();
    j.set_generation(5).unwrap();
    let a = AgentId::from_bytes([1; 16]);
    let running = Record {
        epoch: 3,
        phase: Phase::Running,
    };
    j.put(a, running).unwrap();
    j.record_epoch(a, 3, None).unwrap();
    j.record_epoch(AgentId::from_bytes([2; 16]), 9, None)
        .unwrap();
    let mut fresh = FileLog::create(&d.file(), NODE, &key(), LOG_JOURNAL_RECORD).unwrap();
    j.rewrite_into(&mut fresh).unwrap();
    drop(fresh);
    let image = std::fs::read(d.file()).unwrap();
    // The generation's record (4 + 9 + 32) and the hand-off record's (4 + 43 + 32).
    let mut bad = image[..HEADER + 45 + 79].to_vec();
    bad[slot(0).start] ^= 1;
    let dd = Scratch::with(Some(&bad));
    let log = FileLog::open(&dd.file(), NODE, &key(), LOG_JOURNAL_RECORD, &mut |_, _| {});
    assert!(log.is_err(), "opened without its fences");
}

/// `read` checks a log without writing to it: a torn tail stays, a broken slot is not
/// rewritten (found by review: `mielin inspect` opened the running node's journal read-write
/// and cut its uncommitted batch).
#[test]
fn reading_a_log_writes_nothing() {
    let d = Scratch::new();
    let mut log = FileLog::create(&d.file(), NODE, &key(), 64).unwrap();
    log.append(b"one").unwrap();
    log.sync().unwrap();
    log.append(b"two").unwrap();
    log.sync().unwrap();
    drop(log);
    let mut image = std::fs::read(d.file()).unwrap();
    image[slot(1).start] ^= 1; // the newest slot torn: the last batch would be rolled forward
    image.extend_from_slice(&[0xab; 20]); // and nothing may follow a rolled-forward batch
    std::fs::write(d.file(), &image).unwrap();
    assert!(FileLog::read(&d.file(), NODE, &key(), 64, &mut |_, _| {}).is_err());
    assert_eq!(std::fs::read(d.file()).unwrap(), image, "unchanged");
    image.truncate(image.len() - 20);
    std::fs::write(d.file(), &image).unwrap();
    let mut got = Vec::new();
    let n = FileLog::read(&d.file(), NODE, &key(), 64, &mut |_, r| {
        got.push(r.to_vec())
    })
    .unwrap();
    assert_eq!((n, got.len()), (Lsn(2), 2));
    assert_eq!(
        std::fs::read(d.file()).unwrap(),
        image,
        "the slot was not rewritten"
    );
    let mut perms = std::fs::metadata(d.file()).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(d.file(), perms).unwrap();
    assert_eq!(
        FileLog::read(&d.file(), NODE, &key(), 64, &mut |_, _| {}).unwrap(),
        Lsn(2)
    );
}

#[derive(Debug, Clone)]
enum Step {
    /// Append a record and hold an acknowledgement for it.
    Append(u8),
    /// Group commit, then send every acknowledgement it released.
    Sync,
    /// Send what the durable ticket releases, without syncing (the driver's other wakeups).
    Flush,
    FailSync,
    FailAppend,
    /// A crash keeping this many of the unsynced records.
    Crash(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<u8>().prop_map(Step::Append),
        3 => Just(Step::Sync),
        3 => Just(Step::Flush),
        1 => Just(Step::FailSync),
        1 => Just(Step::FailAppend),
        1 => (0usize..4).prop_map(Step::Crash),
    ]
}

proptest! {
    /// The property the node's acknowledgements rest on: an acknowledgement released by the
    /// held queue names a record that every later crash keeps; tickets stay consecutive; and
    /// what a crash keeps is the durable records and a prefix of the rest.
    #[test]
    fn released_acknowledgements_survive_every_crash(steps in prop::collection::vec(step(), 1..80)) {
        let mut log = MemLog::new(8, 1 << 20);
        let mut held: Held<u8, 64> = Held::new();
        let mut model: Vec<u8> = Vec::new(); // every record appended and not lost
        let mut acked: Vec<u8> = Vec::new(); // acknowledgements sent
        for s in steps {
            match s {
                Step::Append(v) => match log.append(&[v]) {
                    Ok(t) => {
                        model.push(v);
                        prop_assert_eq!(t, Lsn(model.len() as u64));
                        if held.hold(t, v).is_err() {
                            // A full queue: the node syncs before it produces more.
                            if let Ok(d) = log.sync() {
                                while let Some(a) = held.release(d) { acked.push(a); }
                            }
                        }
                    }
                    Err(e) => prop_assert!(matches!(e, StoreError::Poisoned | StoreError::WriteFailed)),
                },
                Step::Sync => {
                    if let Ok(d) = log.sync() {
                        prop_assert_eq!(d, log.appended());
                        while let Some(a) = held.release(d) { acked.push(a); }
                    }
                }
                Step::Flush => {
                    while let Some(a) = held.release(log.durable()) { acked.push(a); }
                }
                Step::FailSync => log.fail_next_sync(),
                Step::FailAppend => log.fail_next_append(),
                Step::Crash(keep) => {
                    let durable = log.durable().0 as usize;
                    let after = log.crash(keep).0 as usize;
                    prop_assert!(after >= durable);
                    prop_assert_eq!(after, (durable + keep).min(model.len()));
                    model.truncate(after);
                    held.clear();
                    // Every acknowledgement sent names a record still there.
                    prop_assert!(acked.len() <= model.len());
                    prop_assert_eq!(&acked[..], &model[..acked.len()]);
                    // The node re-sends what it must from the log; here the log itself says it.
                    let got: Vec<u8> = replayed(&mut log).into_iter().map(|r| r[0]).collect();
                    prop_assert_eq!(&got, &model);
                    acked = got;
                }
            }
        }
    }
}

mod log_journal {
    use super::*;
    use mielin_cells::mesh::{Journal, LogJournal, MeshError, Phase, Record, LOG_JOURNAL_RECORD};
    use mielin_cells::migration::EpochJournal;
    use mielin_cells::AgentId;

    const PEER: NodeId = NodeId::from_bytes([0xb2; 16]);

    fn agent(i: u8) -> AgentId {
        AgentId::from_bytes([i; 16])
    }

    fn running(epoch: u64) -> Record {
        Record {
            epoch,
            phase: Phase::Running,
        }
    }

    type Tables = (Vec<(AgentId, Record)>, Vec<Option<u64>>, usize, u64);

    fn tables<L: Log>(j: &LogJournal<L>) -> Tables {
        let mut records = Vec::new();
        j.for_each(&mut |a, r| records.push((a, r)));
        let sequences = (0..4).map(|i| j.sequence(agent(i))).collect();
        (records, sequences, j.created_by(PEER), j.generation())
    }

    fn reopened(j: &LogJournal<MemLog>) -> LogJournal<MemLog> {
        LogJournal::open(j.log().clone(), 4).unwrap()
    }

    #[test]
    fn every_change_is_one_synced_record_and_reopens_the_same() {
        let mut j = LogJournal::open(MemLog::new(LOG_JOURNAL_RECORD, 1 << 16), 4).unwrap();
        j.put(agent(1), running(1)).unwrap();
        j.record_epoch(agent(2), 7, Some(PEER)).unwrap();
        j.set_sequence(agent(2), 9).unwrap(); // keeps its creator
        j.put(
            agent(2),
            Record {
                epoch: 9,
                phase: Phase::Prepared { source: PEER },
            },
        )
        .unwrap();
        j.set_generation(3).unwrap();
        j.remove(agent(1)).unwrap();
        j.remove(agent(3)).unwrap(); // absent: nothing written
        assert_eq!(j.log().appended(), Lsn(6));
        assert_eq!(j.log().syncs(), 6, "Ok means durable: one sync per change");
        assert_eq!(j.created_by(PEER), 1);
        assert_eq!(tables(&reopened(&j)), tables(&j));
        // Compaction: the tables in a fresh log, three records instead of six.
        let mut fresh = MemLog::new(LOG_JOURNAL_RECORD, 1 << 16);
        j.rewrite_into(&mut fresh).unwrap();
        assert_eq!(fresh.durable(), Lsn(3));
        assert_eq!(tables(&LogJournal::open(fresh, 4).unwrap()), tables(&j));
    }

    #[test]
    fn capacity_is_kept_when_writing_and_when_opening() {
        let mut j = LogJournal::open(MemLog::new(LOG_JOURNAL_RECORD, 1 << 16), 2).unwrap();
        j.put(agent(1), running(1)).unwrap();
        j.put(agent(2), running(1)).unwrap();
        assert_eq!(j.put(agent(3), running(1)), Err(MeshError::JournalFull));
        j.put(agent(2), running(2)).unwrap(); // an existing agent
        j.record_epoch(agent(1), 1, None).unwrap();
        j.record_epoch(agent(2), 1, None).unwrap();
        assert!(j.check_room(agent(3)).is_err());
        assert!(j.record_epoch(agent(3), 1, None).is_err());
        // The same log opened with room for one agent is refused, not cut down.
        let err = LogJournal::open(j.log().clone(), 1).unwrap_err();
        assert!(
            matches!(err, StoreError::Malformed { offset: 2, .. }),
            "{err}"
        );
    }

    /// A failed sync may still land: the journal refuses every later write (the node restarts
    /// from the log), and what the reopened log holds is the old value or the new one.
    #[test]
    fn a_failed_write_poisons_and_the_reopened_log_decides() {
        for keep in [0, 1] {
            let mut j = LogJournal::open(MemLog::new(LOG_JOURNAL_RECORD, 1 << 16), 4).unwrap();
            j.put(agent(1), running(1)).unwrap();
            let mut log = j.into_log();
            log.fail_next_sync();
            let mut j = LogJournal::open(log, 4).unwrap();
            let moved = Record {
                epoch: 2,
                phase: Phase::Moved {
                    target: PEER,
                    acked: false,
                },
            };
            assert_eq!(j.put(agent(1), moved), Err(MeshError::JournalIo));
            assert!(j.is_poisoned());
            assert_eq!(
                j.get(agent(1)),
                Some(running(1)),
                "reads keep the old tables"
            );
            assert_eq!(j.set_generation(1), Err(MeshError::JournalIo), "poisoned");
            let mut log = j.into_log();
            log.crash(keep);
            let j = LogJournal::open(log, 4).unwrap();
            let expected = if keep == 1 { moved } else { running(1) };
            assert_eq!(j.get(agent(1)), Some(expected));
            assert_eq!(j.generation(), 0);
        }
    }

    #[test]
    fn a_record_it_does_not_write_is_refused_with_its_ticket() {
        let mut log = MemLog::new(LOG_JOURNAL_RECORD, 1 << 16);
        let mut j = LogJournal::open(&mut log, 4).unwrap();
        j.set_generation(1).unwrap();
        drop(j);
        for bad in [&[9u8, 0, 0][..], &[4, 1, 2], &[], &[3; 42]] {
            let mut l = log.clone();
            l.append(bad).unwrap();
            l.sync().unwrap();
            let err = LogJournal::open(l, 4).unwrap_err();
            assert!(
                matches!(err, StoreError::Malformed { offset: 2, .. }),
                "{bad:?}: {err}"
            );
        }
        let short = MemLog::new(LOG_JOURNAL_RECORD - 1, 1 << 16);
        assert!(matches!(
            LogJournal::open(short, 4),
            Err(StoreError::RecordTooLong { .. })
        ));
    }
}

/// The node's journal deferred (`LogJournal::deferred`): its changes wait for the group commit
/// the node makes before frames leave, so the offers of a drain share one sync, and a crash
/// before it leaves no peer believing in a record that is gone.
use deferred_journal as deferred_journal_support;

mod deferred_journal {
    use mielin_cells::mesh::{
        AgentHost, AgentInfo, Config, Journal, LogJournal, MeshError, Node, Phase, Record,
        LOG_JOURNAL_RECORD,
    };
    use mielin_cells::migration::EpochJournal;
    use mielin_cells::storage::{Log, MemLog};
    use mielin_cells::{AgentId, NodeId};
    use std::collections::BTreeMap;

    pub const HERE: NodeId = NodeId::from_bytes([1; 16]);
    pub const THERE: NodeId = NodeId::from_bytes([2; 16]);

    /// Agents as numbers; counts what it was asked to run, release and discard.
    #[derive(Default)]
    pub struct Host {
        pub owned: BTreeMap<AgentId, u64>,
        pub runs: usize,
    }

    impl AgentHost for Host {
        fn describe(&mut self, a: AgentId) -> Option<AgentInfo> {
            self.owned.get(&a).map(|_| AgentInfo {
                dna_hash: [7; 32],
                snapshot_len: 8,
                dna_len: 0,
            })
        }
        fn has_dna(&mut self, _: &[u8; 32]) -> bool {
            true
        }
        fn stop(&mut self, _: AgentId) {}
        fn capture(&mut self, a: AgentId, _: bool, out: &mut [u8]) -> Result<usize, MeshError> {
            let v = self.owned.get(&a).ok_or(MeshError::Truncated)?;
            out[..8].copy_from_slice(&v.to_le_bytes());
            Ok(8)
        }
        fn prepare(&mut self, _: AgentId, _: u64, _: bool, _: &[u8]) -> Result<(), MeshError> {
            Ok(())
        }
        fn run(&mut self, a: AgentId, _: u64) {
            self.owned.entry(a).or_insert(0);
            self.runs += 1;
        }
        fn discard(&mut self, _: AgentId, _: u64) {}
        fn release(&mut self, a: AgentId) {
            self.owned.remove(&a);
        }
    }

    pub fn agent(i: u8) -> AgentId {
        AgentId::from_bytes([i; 16])
    }

    pub fn journal() -> LogJournal<MemLog> {
        LogJournal::open(MemLog::new(LOG_JOURNAL_RECORD, 1 << 20), 64)
            .unwrap()
            .deferred()
    }

    #[test]
    fn a_drain_of_ten_agents_offers_them_under_one_sync() {
        let mut host = Host::default();
        let mut node: Node<LogJournal<MemLog>, 16> = Node::new(HERE, journal(), Config::default());
        for i in 1..=10 {
            // Starting runs the agent: its record is durable first, one sync each.
            node.start(&mut host, agent(i)).unwrap();
            assert!(!node.journal().unsynced());
        }
        let before = node.journal().log().syncs();
        assert_eq!(before, 10);
        for i in 1..=10 {
            node.migrate(&mut host, 0, agent(i), THERE).unwrap();
        }
        // Twenty changes (a fence and an Outgoing record per agent), none durable yet.
        assert!(node.journal().unsynced());
        assert_eq!(
            node.journal().log().appended().0 - node.journal().log().durable().0,
            20
        );
        let mut buf = [0u8; 256];
        let mut offers = 0;
        while let Some(t) = node.poll_transmit(&mut host, &mut buf).unwrap() {
            assert_eq!(t.to, THERE);
            offers += 1;
        }
        assert_eq!(offers, 10);
        assert_eq!(
            node.journal().log().syncs(),
            before + 1,
            "one group commit for the ten"
        );
        assert!(!node.journal().unsynced());
    }

    #[test]
    fn a_crash_before_the_sync_sends_nothing_and_the_agents_run_again() {
        let mut host = Host::default();
        let mut node: Node<LogJournal<MemLog>, 16> = Node::new(HERE, journal(), Config::default());
        for i in 1..=3 {
            node.start(&mut host, agent(i)).unwrap();
        }
        for i in 1..=3 {
            node.migrate(&mut host, 0, agent(i), THERE).unwrap();
        }
        // The crash comes before any frame left: some of the deferred records landed.
        for keep in 0..=6 {
            let mut log = node.journal().log().clone();
            log.crash(keep);
            let j = LogJournal::open(log, 64).unwrap().deferred();
            let mut h = Host::default();
            let restarted: Node<LogJournal<MemLog>, 16> =
                Node::restart(HERE, j, Config::default(), &mut h, 0);
            for i in 1..=3 {
                // Running, or offered and aborted by the restart: never lost, never moved.
                assert!(
                    matches!(
                        restarted.journal().get(agent(i)),
                        Some(Record {
                            phase: Phase::Running,
                            ..
                        })
                    ),
                    "keep {keep}: agent {i}: {:?}",
                    restarted.journal().get(agent(i))
                );
            }
            assert_eq!(h.runs, 3, "keep {keep}: each agent runs again");
        }
    }

    #[test]
    fn a_trust_lists_epoch_is_durable_when_it_returns_even_deferred() {
        let mut j = journal();
        j.put(
            agent(1),
            Record {
                epoch: 1,
                phase: Phase::Running,
            },
        )
        .unwrap();
        assert!(j.unsynced());
        j.record_epoch(agent(2), 5, None).unwrap();
        assert!(
            !j.unsynced(),
            "the epoch's sync covers the change before it too"
        );
        let mut log = j.into_log();
        log.crash(0);
        let j = LogJournal::open(log, 64).unwrap();
        assert_eq!(j.sequence(agent(2)), Some(5));
        assert!(j.get(agent(1)).is_some());
    }

    #[test]
    fn a_failed_group_commit_poisons_and_lets_no_frame_out() {
        let mut host = Host::default();
        let mut node: Node<LogJournal<MemLog>, 16> = Node::new(HERE, journal(), Config::default());
        node.start(&mut host, agent(1)).unwrap();
        node.migrate(&mut host, 0, agent(1), THERE).unwrap();
        node.journal_mut().log_mut().fail_next_sync();
        let mut buf = [0u8; 256];
        assert_eq!(
            node.poll_transmit(&mut host, &mut buf),
            Err(MeshError::JournalIo)
        );
        assert!(node.journal().is_poisoned());
        assert_eq!(
            node.poll_transmit(&mut host, &mut buf),
            Ok(None),
            "the offer was dropped"
        );
        assert!(
            node.journal_mut().sync().is_err(),
            "poisoned until reopened"
        );
    }
}

/// Found by review: a journal poisoned by a failed group commit still shows the change in its
/// tables (it reached memory, maybe not the medium). A node restarted on that journal object
/// must not act on it: nothing runs, nothing is released.
mod poisoned_restart {
    use super::deferred_journal_support::*;
    use mielin_cells::mesh::{Config, Journal, Node, Phase, Record};

    #[test]
    fn a_poisoned_journal_is_not_resumed() {
        let mut j = journal();
        let running = Record {
            epoch: 0,
            phase: Phase::Running,
        };
        j.put(agent(1), running).unwrap();
        j.sync().unwrap();
        j.log_mut().fail_next_sync();
        let moved = Record {
            epoch: 1,
            phase: Phase::Moved {
                target: THERE,
                acked: false,
            },
        };
        j.put(agent(1), moved).unwrap();
        assert!(j.sync().is_err());
        assert_eq!(
            j.get(agent(1)),
            Some(moved),
            "in the tables, not on the medium"
        );
        let mut h = Host::default();
        h.owned.insert(agent(1), 5);
        let n: Node<_, 16> = Node::restart(HERE, j, Config::default(), &mut h, 0);
        assert_eq!(h.runs, 0, "nothing runs");
        assert!(h.owned.contains_key(&agent(1)), "nothing is released");
        assert!(n.stats().journal_errors >= 1);
        // Reopened, the journal says what the medium holds: the agent runs again.
        let mut log = n.into_journal().into_log();
        log.crash(0);
        let j = mielin_cells::mesh::LogJournal::open(log, 64)
            .unwrap()
            .deferred();
        assert_eq!(j.get(agent(1)), Some(running));
        let _n: Node<_, 16> = Node::restart(HERE, j, Config::default(), &mut h, 0);
        assert_eq!(h.runs, 1);
    }
}
