//! The board's mesh journal (`mesh::FlashJournal`, a `sequential-storage` map on NOR flash)
//! under the board's fault model: a power cut at every write and erase of a run of changes,
//! landing none, half or all of it. After each reset the journal must read back as the tables
//! after the last acknowledged change, or after the one cut (if it landed): never anything
//! else. Then: thousands of changes fit four pages, and a flash under another key is refused.
#![cfg(feature = "flash")]

use mielin_cells::mesh::{FlashJournal, Journal, Phase, Record};
use mielin_cells::storage::{Landing, RamFlash};
use mielin_cells::{AgentId, LocalKey, NodeId, StoreError};

type Flash<'a> = RamFlash<'a, 4, 1024>;
type Board<'a> = FlashJournal<Flash<'a>, 8>;
const PAGES: usize = 4;

fn key() -> LocalKey {
    LocalKey::derive(&[5; 32], NodeId::from_bytes([6; 16]))
}

fn open<'a>(mem: &'a mut [u8], key: &LocalKey) -> Result<Board<'a>, StoreError> {
    let len = mem.len() as u32;
    FlashJournal::open(Flash::new(mem), 0..len, key)
}

/// What a journal says, in a form to compare.
type Tables = (Vec<(AgentId, Record)>, Vec<(AgentId, Option<u64>)>, u64);

fn tables(j: &Board<'_>) -> Tables {
    let mut records = Vec::new();
    j.for_each(&mut |a, r| records.push((a, r)));
    records.sort_by_key(|(a, _)| *a.as_bytes());
    let seqs = (0..4u8)
        .map(|i| AgentId::from_bytes([i; 16]))
        .map(|a| (a, j.sequence(a)))
        .collect();
    (records, seqs, j.generation())
}

/// Agent `i`.
fn a(i: u8) -> AgentId {
    AgentId::from_bytes([i; 16])
}

/// One change to a journal.
type Change = Box<dyn Fn(&mut Board<'_>) -> Result<(), mielin_cells::mesh::MeshError>>;

/// The changes of a hand-off in and out and a restart, on agents 1..=3.
fn changes(j: &mut Board<'_>, mut done: impl FnMut(&Board<'_>)) -> Result<(), ()> {
    let peer = NodeId::from_bytes([9; 16]);
    let steps: Vec<Change> = vec![
        Box::new(|j| j.set_generation(1)),
        Box::new(|j| j.set_sequence(a(1), 1)),
        Box::new(move |j| {
            j.put(
                a(1),
                Record {
                    epoch: 1,
                    phase: Phase::Prepared { source: peer },
                },
            )
        }),
        Box::new(|j| {
            j.put(
                a(1),
                Record {
                    epoch: 1,
                    phase: Phase::Running,
                },
            )
        }),
        Box::new(|j| j.set_sequence(a(2), 4)),
        Box::new(|j| {
            j.put(
                a(2),
                Record {
                    epoch: 4,
                    phase: Phase::Running,
                },
            )
        }),
        Box::new(|j| j.set_sequence(a(1), 2)),
        Box::new(move |j| {
            j.put(
                a(1),
                Record {
                    epoch: 2,
                    phase: Phase::Outgoing { target: peer },
                },
            )
        }),
        Box::new(move |j| {
            j.put(
                a(1),
                Record {
                    epoch: 2,
                    phase: Phase::Moved {
                        target: peer,
                        acked: false,
                    },
                },
            )
        }),
        Box::new(|j| j.remove(a(1))),
        Box::new(|j| j.set_generation(2)),
        Box::new(|j| j.set_sequence(a(3), 7)),
    ];
    for step in steps {
        step(j).map_err(|_| ())?;
        done(j);
    }
    Ok(())
}

#[test]
fn a_power_cut_at_every_write_reads_back_as_before_or_after_the_cut_change() {
    let key = key();
    // The tables after each change, and the flash operations of the whole run.
    let mut mem = vec![0xffu8; PAGES * 1024];
    let mut history = Vec::new();
    let ops = {
        let mut j = open(&mut mem, &key).unwrap();
        history.push(tables(&j));
        changes(&mut j, |j| history.push(tables(j))).unwrap();
        j.flash_mut().operations()
    };
    assert_eq!(
        tables(&open(&mut mem, &key).unwrap()),
        *history.last().unwrap()
    );
    let mut cases = 0;
    for n in 0..ops {
        for landing in [Landing::Nothing, Landing::Half, Landing::All] {
            let mut mem = vec![0xffu8; PAGES * 1024];
            let acked = {
                let mut j = open(&mut mem, &key).unwrap();
                j.flash_mut().cut_after(n, landing);
                let mut acked = 0;
                let _ = changes(&mut j, |_| acked += 1);
                assert!(j.is_poisoned(), "cut at {n}: a write failed");
                acked
            };
            let got = tables(
                &open(&mut mem, &key).unwrap_or_else(|e| panic!("cut at {n} {landing:?}: {e}")),
            );
            let before = &history[acked];
            let after = history.get(acked + 1);
            assert!(
                got == *before || Some(&got) == after,
                "cut at {n} ({landing:?}) after {acked} changes: {got:?}"
            );
            cases += 1;
        }
    }
    println!("{cases} power cuts over {ops} flash operations");
}

#[test]
fn thousands_of_changes_fit_four_pages() {
    let key = key();
    let mut mem = vec![0xffu8; PAGES * 1024];
    {
        let mut j = open(&mut mem, &key).unwrap();
        for e in 1..=3_000u64 {
            let a = AgentId::from_bytes([(e % 4) as u8; 16]);
            j.set_sequence(a, e).unwrap();
            j.put(
                a,
                Record {
                    epoch: e,
                    phase: Phase::Running,
                },
            )
            .unwrap();
        }
    }
    let j = open(&mut mem, &key).unwrap();
    assert_eq!(j.sequence(AgentId::from_bytes([0; 16])), Some(3_000));
    assert_eq!(j.get(AgentId::from_bytes([3; 16])).unwrap().epoch, 2_999);
}

#[test]
fn a_journal_written_under_another_key_is_refused() {
    let mut mem = vec![0xffu8; PAGES * 1024];
    {
        let mut j = open(&mut mem, &key()).unwrap();
        j.set_generation(3).unwrap();
    }
    let other = LocalKey::derive(&[7; 32], NodeId::from_bytes([6; 16]));
    assert!(matches!(
        open(&mut mem, &other),
        Err(StoreError::BadMac { .. })
    ));
}

#[test]
fn a_full_table_refuses_without_writing() {
    let key = key();
    let mut mem = vec![0xffu8; PAGES * 1024];
    let mut j = open(&mut mem, &key).unwrap();
    for i in 0..8u8 {
        j.set_sequence(AgentId::from_bytes([i + 10; 16]), 1)
            .unwrap();
    }
    let before = j.flash_mut().operations();
    assert!(j.set_sequence(AgentId::from_bytes([99; 16]), 1).is_err());
    assert_eq!(j.flash_mut().operations(), before);
    assert!(!j.is_poisoned());
}
