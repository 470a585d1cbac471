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
