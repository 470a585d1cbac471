//! The board's log (`storage::FlashLog` over `sequential-storage`) on an emulated NOR flash
//! (`storage::RamFlash`) under the board's fault model (docs/protocol.md, "Durability tickets"):
//! a write cut part-way, an erase cut part-way, and bits that can only be cleared. After any
//! power cut the log reopens to a prefix of what was appended that holds every acknowledged
//! record; after any cleared bit it is refused or loses at most its last record.
#![cfg(feature = "flash")]

use mielin_cells::storage::{FlashLog, Landing, Log, Lsn, RamFlash};
use mielin_cells::{LocalKey, NodeId};

/// Words of 4 bytes, pages of 1 KiB, 8 pages.
type Flash<'a> = RamFlash<'a, 4, 1024>;
const SIZE: usize = 8 * 1024;
/// Records of up to 88 bytes.
type Board<'a> = FlashLog<Flash<'a>, 128>;

fn key() -> LocalKey {
    LocalKey::derive(&[5; 32], NodeId::from_bytes([6; 16]))
}

fn open<'a>(
    mem: &'a mut [u8],
    cut: Option<(u64, Landing)>,
) -> Result<(Board<'a>, Vec<Vec<u8>>), String> {
    let mut flash = Flash::new(mem);
    if let Some((n, landing)) = cut {
        flash.cut_after(n, landing);
    }
    let mut got = Vec::new();
    let mut expected = 1;
    let log = FlashLog::open(flash, 0..SIZE as u32, &key(), &mut |lsn, r| {
        assert_eq!(lsn, Lsn(expected));
        expected += 1;
        got.push(r.to_vec());
    })
    .map_err(|e| e.to_string())?;
    Ok((log, got))
}

/// 30 records of 0 to 87 bytes: enough to fill more than two pages.
fn records() -> Vec<Vec<u8>> {
    (0..30u8).map(|i| vec![i; (i as usize * 29) % 88]).collect()
}

#[test]
fn records_survive_a_reset_and_appends_continue() {
    let mut mem = vec![0xffu8; SIZE];
    let (mut log, got) = open(&mut mem, None).unwrap();
    assert!(got.is_empty(), "erased flash is an empty log");
    for (i, r) in records().iter().enumerate() {
        assert_eq!(log.append(r).unwrap(), Lsn(i as u64 + 1));
        assert_eq!(
            log.durable(),
            log.appended(),
            "a NOR write is durable when it returns"
        );
    }
    assert_eq!(log.sync().unwrap(), Lsn(30));
    assert!(
        log.append(&[0; 89]).is_err(),
        "longer than the buffer takes"
    );
    let _ = log.into_flash();
    let (mut log, got) = open(&mut mem, None).unwrap();
    assert_eq!(got, records());
    assert_eq!(log.append(b"after").unwrap(), Lsn(31));
    let mut again = Vec::new();
    log.replay(&mut |_, r| again.push(r.to_vec())).unwrap();
    assert_eq!(again.len(), 31);
}

/// A power cut at every flash operation of the scenario, landing nothing, half, or all of the
/// operation (then the flash failed to report it), then a reset: the log holds a prefix of the
/// records with every acknowledged one (and the one in flight, when it landed whole), and the
/// next append follows it. Every operation of the scenario is a write inside an append: the
/// log never erases in use (it is not compacted yet).
#[test]
fn a_power_cut_at_every_flash_operation_keeps_every_acknowledged_record() {
    // How many operations the whole scenario takes.
    let total = {
        let mut mem = vec![0xffu8; SIZE];
        let (mut log, _) = open(&mut mem, None).unwrap();
        for r in records() {
            log.append(&r).unwrap();
        }
        log.into_flash().operations()
    };
    assert!(total > 60, "{total} operations");
    let all = records();
    for landing in [Landing::Nothing, Landing::Half, Landing::All] {
        let (mut kept_in_flight, mut lost_in_flight) = (0, 0);
        for cut in 0..total {
            let mut mem = vec![0xffu8; SIZE];
            let acked = {
                let (mut log, _) = open(&mut mem, Some((cut, landing))).unwrap();
                let mut acked = 0;
                for r in &all {
                    match log.append(r) {
                        Ok(_) => acked += 1,
                        Err(_) => {
                            assert!(log.append(b"x").is_err(), "poisoned after a failed write");
                            break;
                        }
                    }
                }
                acked
            };
            assert!(acked < all.len(), "cut {cut} never came");
            // The reset: power back, the same flash.
            let case = format!("cut at {cut}, {landing:?} landed");
            let (mut log, got) =
                open(&mut mem, None).unwrap_or_else(|e| panic!("{case}: refused: {e}"));
            assert!(got.len() >= acked, "{case}: acknowledged records lost");
            assert!(got.len() <= acked + 1, "{case}: more than was written");
            assert_eq!(got[..], all[..got.len()], "{case}: not a prefix");
            if got.len() == acked {
                lost_in_flight += 1;
            } else {
                kept_in_flight += 1;
            }
            let next = log.append(b"after the reset").unwrap();
            assert_eq!(next, Lsn(got.len() as u64 + 1), "{case}");
            let _ = log.into_flash();
            let (_, again) = open(&mut mem, None).unwrap();
            assert_eq!(again.len(), got.len() + 1, "{case}");
        }
        println!(
            "{landing:?}: {total} cuts; the record in flight kept in {kept_in_flight}, lost in {lost_in_flight}"
        );
        if landing == Landing::All {
            assert!(
                kept_in_flight > 0,
                "a whole write that failed to report is kept"
            );
        }
    }
}

/// An erase cut by a power failure while formatting leaves a flash the log may refuse; formatting
/// again (which needs no open log) gives an empty log that works.
#[test]
fn a_power_cut_while_formatting_then_formatting_again_works() {
    let mut filled = vec![0xffu8; SIZE];
    {
        let (mut log, _) = open(&mut filled, None).unwrap();
        for r in records() {
            log.append(&r).unwrap();
        }
    }
    let (mut refused, mut opened) = (0, 0);
    for landing in [Landing::Nothing, Landing::Half, Landing::All] {
        let mut mem = filled.clone();
        {
            let mut flash = Flash::new(&mut mem);
            flash.cut_after(0, landing); // formatting is one erase of the whole range
            assert!(FlashLog::<_, 128>::format(flash, 0..SIZE as u32, &key()).is_err());
        }
        match open(&mut mem, None) {
            Err(_) => refused += 1,
            Ok((_, got)) => {
                opened += 1;
                assert!(
                    got.is_empty() || got == records(),
                    "{landing:?}: {} records",
                    got.len()
                );
            }
        }
        let mut log: Board =
            FlashLog::format(Flash::new(&mut mem), 0..SIZE as u32, &key()).unwrap();
        log.append(b"new").unwrap();
        let _ = log.into_flash();
        assert_eq!(open(&mut mem, None).unwrap().1, [b"new".to_vec()]);
    }
    println!("after a cut erase: refused {refused}, opened {opened}");
}

/// Bits cleared one at a time over every byte the log wrote: refused, the whole log, or the
/// whole log but its last record (damage to it looks like a write cut by a power failure;
/// damage to several records at the end costs them all, `FlashLog`'s documentation says).
#[test]
fn a_cleared_bit_is_refused_or_costs_at_most_the_last_record() {
    let mut clean = vec![0xffu8; SIZE];
    {
        let (mut log, _) = open(&mut clean, None).unwrap();
        for r in records() {
            log.append(&r).unwrap();
        }
    }
    let all = records();
    let (mut refused, mut whole, mut last_lost) = (0, 0, 0);
    for at in (0..SIZE).filter(|&i| clean[i] != 0xff || i % 64 == 0) {
        for bit in [0u8, 3, 7] {
            if clean[at] & (1 << bit) == 0 {
                continue; // already clear: nothing to damage
            }
            let mut mem = clean.clone();
            mem[at] &= !(1 << bit);
            match open(&mut mem, None) {
                Err(_) => refused += 1,
                Ok((_, got)) if got == all => whole += 1,
                Ok((_, got)) if got[..] == all[..all.len() - 1] => last_lost += 1,
                Ok((_, got)) => panic!(
                    "bit {bit} of byte {at} cleared: opened with {} records, not a state the log had",
                    got.len()
                ),
            }
        }
    }
    println!("cleared bits: refused {refused}, whole log {whole}, last record lost {last_lost}");
    assert!(refused > 0);
}

#[test]
fn flash_bytes_per_journal_record() {
    let mut mem = vec![0xffu8; SIZE];
    let (mut log, _) = open(&mut mem, None).unwrap();
    for _ in 0..40 {
        log.append(&[7; 43]).unwrap(); // the mesh journal's longest record
    }
    let flash = log.into_flash();
    println!(
        "40 records of 43 bytes: {} bytes written ({} per record), {} operations",
        flash.bytes_written(),
        flash.bytes_written() / 40,
        flash.operations()
    );
}

/// An image of a log under `key` holding `records`.
fn image(key: &LocalKey, records: &[Vec<u8>]) -> Vec<u8> {
    let mut mem = vec![0xffu8; SIZE];
    let mut log =
        FlashLog::<Flash<'_>, 128>::open(Flash::new(&mut mem), 0..SIZE as u32, key, &mut |_, _| {})
            .unwrap();
    for r in records {
        log.append(r).unwrap();
    }
    let _ = log.into_flash();
    mem
}

/// Opens `mem` under the board's key: the records, or `None` when refused.
fn read(mem: &mut [u8]) -> Option<Vec<Vec<u8>>> {
    open(mem, None).ok().map(|(_, got)| got)
}

/// An attacker who holds the flash but not the board's key: a log another board wrote (its
/// own key), or one the attacker wrote with a key of its choice, is refused at its first
/// record, however well its queue checksums.
#[test]
fn a_log_written_under_another_key_is_refused() {
    let other = LocalKey::derive(&[9; 32], NodeId::from_bytes([6; 16]));
    let mut mem = image(&other, &records());
    let e = open(&mut mem, None).map(|_| ()).unwrap_err();
    assert!(e.contains("MAC") || e.contains("mac"), "{e}");
    // The unkeyed chain (a board without a secret) is a checksum, not a key: it refuses too.
    let mut mem = image(&LocalKey::UNKEYED, &records());
    assert!(read(&mut mem).is_none());
}

/// Pages spliced from two images of the same board (same key) with different histories — an
/// attacker who kept an older image and mixes it in, page by page, or copies a page of the log
/// over another: every result is refused or reads as a prefix of one of the two histories,
/// never a mixture (the MAC chain binds each record to the one before it).
#[test]
fn pages_spliced_from_two_histories_never_read_as_a_mixture() {
    let x_records = records();
    let mut y_records = records();
    for r in &mut y_records[10..] {
        r.iter_mut().for_each(|b| *b = b.wrapping_add(100));
        r.push(0xee); // so that an empty record differs too
    }
    let x = image(&key(), &x_records);
    let y = image(&key(), &y_records);
    let prefix_of = |got: &[Vec<u8>], h: &[Vec<u8>]| got.len() <= h.len() && got == &h[..got.len()];
    let (mut refused, mut prefixes, mut shortened) = (0, 0, 0);
    let pages = SIZE / 1024;
    let mut check = |mem: &mut Vec<u8>, what: &str| match read(mem) {
        None => refused += 1,
        Some(got) if prefix_of(&got, &x_records) || prefix_of(&got, &y_records) => {
            prefixes += 1;
            // Fewer records than either history: pages cut off the end, which the log cannot
            // tell from writes a power cut stopped (its documentation says so).
            shortened += usize::from(got.len() < x_records.len());
        }
        Some(got) => panic!(
            "{what}: read {} records, a mixture of two histories",
            got.len()
        ),
    };
    for p in 0..pages {
        let page = p * 1024..(p + 1) * 1024;
        // Page p of y in x, and of x in y.
        let mut mem = x.clone();
        mem[page.clone()].copy_from_slice(&y[page.clone()]);
        check(&mut mem, &format!("page {p} of y in x"));
        let mut mem = y.clone();
        mem[page.clone()].copy_from_slice(&x[page.clone()]);
        check(&mut mem, &format!("page {p} of x in y"));
        // Page q of x copied over page p of x.
        for q in (0..pages).filter(|&q| q != p) {
            let mut mem = x.clone();
            mem.copy_within(q * 1024..(q + 1) * 1024, p * 1024);
            check(&mut mem, &format!("page {q} of x over page {p}"));
        }
    }
    println!(
        "spliced images: refused {refused}, read as a prefix of one history {prefixes} \
         ({shortened} of them shorter than the history)"
    );
    assert!(refused > 0);
}
