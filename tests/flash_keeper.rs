//! `mesh::cells::FlashKeeper`: a board's agents in NOR flash. The power is cut at every write
//! and erase of a hand-off arriving, committing and taking messages, landing none, half or all
//! of it; after each reset the keeper must hold what it acknowledged, and only ever one whole
//! copy: never a torn one, a mixed one, or events applied to the wrong copy. Then: the map
//! collects its garbage under a long run, and a flash written under another key is refused.

use mielin_cells::mesh::cells::{Cells, FlashKeeper, KeepError, Keeper, MemKeeper, Open};
use mielin_cells::mesh::{AgentHost, Delivery, Inbox};
use mielin_cells::migration::{DecodeLimits, DnaMap};
use mielin_cells::runtime::{Runtime, Val};
use mielin_cells::storage::{Landing, RamFlash};
use mielin_cells::{Agent, AgentId, Dna, LocalKey, NodeId};

const A: NodeId = NodeId::from_bytes([0xa; 16]);
const B: NodeId = NodeId::from_bytes([0xb; 16]);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);
const SENDER: AgentId = AgentId::from_bytes([8; 16]);
const PAGE: usize = 4096;

/// `set(v)` stores v at 0, `get()` reads it; `take()` receives one message and returns its
/// first byte (-1 when there is none); `take_len()` receives one of up to 4 KiB and returns
/// its length, `at(i)` its byte i.
const WAT: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "set") (param i32) (i32.store (i32.const 0) (local.get 0)))
  (func (export "get") (result i32) (i32.load (i32.const 0)))
  (func (export "take_len") (result i32)
    (call $recv (i32.const 64) (i32.const 4096) (i32.const 4096)))
  (func (export "at") (param i32) (result i32)
    (i32.load8_u (i32.add (i32.const 4096) (local.get 0))))
  (func (export "take") (result i32)
    (if (result i32) (i32.lt_s (call $recv (i32.const 64) (i32.const 128) (i32.const 64)) (i32.const 1))
      (then (i32.const -1))
      (else (i32.load8_u (i32.const 128))))))"#;

type Flash<'a> = RamFlash<'a, 4, PAGE>;
type Board<'a> = Cells<FlashKeeper<Flash<'a>, DnaMap>, Open>;

fn dna() -> Dna<Vec<u8>> {
    Dna::new(wat::parse_str(WAT).unwrap()).unwrap()
}

/// Flash pages the tests give the keeper (256 KiB).
const PAGES: usize = 64;

fn board<'a>(mem: &'a mut [u8], key: &LocalKey) -> Result<Board<'a>, KeepError> {
    let len = mem.len() as u32;
    let flash = Flash::new(mem);
    let mut store = DnaMap::new();
    store.insert(&dna());
    let keeper = FlashKeeper::open(flash, 0..len, B, key, store, DecodeLimits::default())?;
    Ok(Cells::new(
        B,
        Runtime::new(1_000_000),
        keeper,
        Open,
        DecodeLimits::default(),
    ))
}

fn call<K: Keeper>(h: &mut Cells<K, Open>, export: &str) -> i32 {
    match h
        .live_mut(AGENT)
        .expect("running")
        .call(export, &[])
        .unwrap()[..]
    {
        [Val::I32(v)] => v,
        ref v => panic!("{v:?}"),
    }
}

/// Every message waiting, by first byte.
fn drain<K: Keeper>(h: &mut Cells<K, Open>) -> Vec<i32> {
    core::iter::from_fn(|| Some(call(h, "take")).filter(|v| *v >= 0)).collect()
}

/// A's container of the agent (41 in memory, message 0x2a waiting) for B at epoch 1.
fn container() -> Vec<u8> {
    let mut a = Cells::new(
        A,
        Runtime::new(1_000_000),
        MemKeeper::new(),
        Open,
        DecodeLimits::default(),
    );
    a.start(Agent::with_id(AGENT, dna()), Inbox::with_secret([1; 16]))
        .unwrap();
    a.live_mut(AGENT)
        .unwrap()
        .call("set", &[Val::I32(41)])
        .unwrap();
    a.save(AGENT).unwrap();
    assert_eq!(
        a.deliver(AGENT, A, SENDER, [3; 16], 1, b"\x2a"),
        Delivery::Accepted
    );
    a.route(AGENT, B, 1);
    a.stop(AGENT);
    let mut buf = vec![0u8; a.transmit_room()];
    let n = a.capture(AGENT, true, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// What the board acknowledged before the power failed (each step returned success and a
/// flush covered it).
#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    prepared: bool,
    committed: bool,
    /// Messages delivered after the commit (2, 3, 4 in order).
    delivered: usize,
    /// Messages taken by a logged call.
    took: usize,
}

/// The hand-off arrives (prepare), commits (run), three messages arrive and one call takes
/// a message: what the board acknowledged before anything failed.
fn scenario(b: &mut Board<'_>, bytes: &[u8]) -> Acked {
    let mut acked = Acked::default();
    if b.prepare(AGENT, 1, true, bytes).is_err() {
        return acked;
    }
    acked.prepared = true;
    b.run(AGENT, 1);
    if !b.is_running(AGENT) || !b.take_problems().0.is_empty() || b.flush().is_err() {
        return acked;
    }
    acked.committed = true;
    for seq in 2..=4u64 {
        let d = b.deliver(AGENT, A, SENDER, [3; 16], seq, &[seq as u8]);
        if d != Delivery::Accepted || b.flush().is_err() {
            return acked;
        }
        acked.delivered += 1;
    }
    if b.tick("take", &[]) != 0x2a || b.flush().is_err() {
        return acked;
    }
    acked.took = 1;
    acked
}

#[test]
fn a_power_cut_at_every_write_keeps_what_was_acknowledged_and_one_whole_copy() {
    let bytes = container();
    let key = LocalKey::from_bytes([5; 32]);
    // The operations of the whole scenario without a cut.
    let ops = {
        let mut mem = vec![0xffu8; PAGES * PAGE];
        let mut b = board(&mut mem, &key).unwrap();
        let acked = scenario(&mut b, &bytes);
        assert_eq!(acked.took, 1, "{acked:?}");
        b.keeper_mut().flash_mut().operations()
    };
    assert!(ops > 20, "{ops} operations");
    let mut cases = 0;
    for n in 0..ops {
        for landing in [Landing::Nothing, Landing::Half, Landing::All] {
            let mut mem = vec![0xffu8; PAGES * PAGE];
            let acked = {
                let mut b = board(&mut mem, &key).unwrap();
                b.keeper_mut().flash_mut().cut_after(n, landing);
                scenario(&mut b, &bytes)
            };
            check_after_reset(&mut mem, &key, acked, n, landing);
            cases += 1;
        }
    }
    println!("{cases} power cuts over {ops} flash operations");
}

fn check_after_reset(mem: &mut [u8], key: &LocalKey, acked: Acked, n: u64, landing: Landing) {
    let at = format!("cut at operation {n} landing {landing:?}, acknowledged {acked:?}");
    let mut b = board(mem, key).unwrap_or_else(|e| panic!("{at}: open: {e}"));
    let prepared = b
        .keeper_mut()
        .load_prepared(AGENT, 1)
        .unwrap_or_else(|e| panic!("{at}: load_prepared: {e}"));
    let running = b
        .keeper_mut()
        .load(AGENT)
        .unwrap_or_else(|e| panic!("{at}: load: {e}"));
    if acked.prepared {
        assert!(prepared.is_some() || running.is_some(), "{at}: lost");
    }
    if acked.committed {
        assert!(running.is_some(), "{at}: the commit was lost");
    }
    for s in prepared.iter().chain(running.iter()) {
        assert_eq!(s.agent.id(), AGENT, "{at}");
        assert_eq!(s.epoch, 1, "{at}");
    }
    let expected = [0x2a, 2, 3, 4];
    if let Some(s) = running {
        let found = s.events.len();
        // Three deliveries and one call at most; at least what was acknowledged.
        assert!(
            found >= acked.delivered + acked.took && found <= 4,
            "{at}: {found} events"
        );
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT), "{at}: {:?}", b.take_problems());
        assert_eq!(call(&mut b, "get"), 41, "{at}");
        let waiting = drain(&mut b);
        // The messages that arrived, in order, minus the one a logged call took.
        let took = usize::from(waiting.first() != Some(&0x2a));
        assert!(took >= acked.took, "{at}: a taken message came back");
        let delivered = waiting.len() + took - 1;
        assert!(delivered >= acked.delivered, "{at}: {waiting:?}");
        assert_eq!(waiting[..], expected[took..=delivered], "{at}");
    } else if prepared.is_some() {
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT), "{at}: {:?}", b.take_problems());
        assert_eq!(call(&mut b, "get"), 41, "{at}");
        assert_eq!(drain(&mut b), vec![0x2a], "{at}");
    }
}

/// A message's first byte, never 0 (a call that returns 0 changed nothing) and never 0x2a
/// (the first message's) for the first 200.
fn byte(seq: u64) -> u8 {
    (seq % 200 + 50) as u8
}

/// The message with first byte `b` (seq 1 is 0x2a).
fn seq_of(b: i32) -> u64 {
    match b {
        0x2a => 1,
        b => (b - 50) as u64,
    }
}

/// Rounds of one message delivered, then one taken by a logged call, each flushed; the highest
/// delivery and the number of takes acknowledged. Stops at the first failure.
fn rounds(b: &mut Board<'_>, n: u64) -> (u64, u64) {
    let (mut delivered, mut taken) = (1, 0);
    for seq in 2..2 + n {
        let d = b.deliver(AGENT, A, SENDER, [3; 16], seq, &[byte(seq); 64]);
        if d != Delivery::Accepted || b.flush().is_err() {
            break;
        }
        delivered = seq;
        if b.tick("take", &[]) == 0 || b.flush().is_err() {
            break;
        }
        taken += 1;
    }
    (delivered, taken)
}

#[test]
fn a_power_cut_while_the_map_collects_garbage_keeps_the_acknowledged_messages() {
    let bytes = container();
    let key = LocalKey::from_bytes([5; 32]);
    let n = 150;
    let started = |mem: &mut Vec<u8>| {
        mem.clear();
        mem.resize(8 * PAGE, 0xff);
    };
    let mut mem = Vec::new();
    started(&mut mem);
    let ops = {
        let mut b = board(&mut mem, &key).unwrap();
        b.checkpoint_every = 16;
        b.prepare(AGENT, 1, true, &bytes).unwrap();
        b.run(AGENT, 1);
        let before = b.keeper_mut().flash_mut().operations();
        assert_eq!(rounds(&mut b, n), (1 + n, n));
        b.keeper_mut().flash_mut().operations() - before
    };
    let mut cases = 0;
    for cut in (0..ops).step_by(5) {
        let landing = [Landing::Nothing, Landing::Half, Landing::All][(cut / 5 % 3) as usize];
        started(&mut mem);
        let (delivered, taken) = {
            let mut b = board(&mut mem, &key).unwrap();
            b.checkpoint_every = 16;
            b.prepare(AGENT, 1, true, &bytes).unwrap();
            b.run(AGENT, 1);
            b.keeper_mut().flash_mut().cut_after(cut, landing);
            rounds(&mut b, n)
        };
        let at = format!("cut at {cut} of {ops} ({landing:?}), acknowledged {delivered} delivered, {taken} taken");
        let mut b = board(&mut mem, &key).unwrap_or_else(|e| panic!("{at}: {e}"));
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT), "{at}: {:?}", b.take_problems());
        let seqs: Vec<u64> = drain(&mut b).into_iter().map(seq_of).collect();
        let (first, last) = (seqs[0], *seqs.last().unwrap());
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "{at}");
        assert!(last == delivered || last == delivered + 1, "{at}: {seqs:?}");
        assert!(first == taken + 1 || first == taken + 2, "{at}: {seqs:?}");
        cases += 1;
    }
    println!("{cases} power cuts over {ops} flash operations of {n} rounds in 32 KiB");
}

#[test]
fn a_long_run_fits_a_small_flash_and_reloads() {
    let bytes = container();
    let key = LocalKey::from_bytes([5; 32]);
    // 32 KiB: the run writes far more than that, so the map must collect its garbage.
    let mut mem = vec![0xffu8; 8 * PAGE];
    let rounds = 1_000u64;
    let (written, flash_bytes, events) = {
        let mut b = board(&mut mem, &key).unwrap();
        b.checkpoint_every = 16;
        b.prepare(AGENT, 1, true, &bytes).unwrap();
        b.run(AGENT, 1);
        for seq in 2..2 + rounds {
            assert_eq!(
                b.deliver(AGENT, A, SENDER, [3; 16], seq, &[byte(seq); 64]),
                Delivery::Accepted,
                "message {seq}"
            );
            let t = b.tick("take", &[]);
            assert!(t > 0, "round {seq}: {t} {:?}", b.take_problems());
            b.flush().unwrap();
        }
        assert!(b.take_problems().0.is_empty());
        let stats = b.keeper().stats();
        let flash_bytes = b.keeper_mut().flash_mut().bytes_written();
        (
            stats.copy_bytes + stats.event_bytes,
            flash_bytes,
            stats.events,
        )
    };
    let mut b = board(&mut mem, &key).unwrap();
    b.run(AGENT, 1);
    assert!(b.is_running(AGENT), "{:?}", b.take_problems());
    assert_eq!(drain(&mut b), vec![i32::from(byte(1 + rounds))]);
    println!(
        "{rounds} messages of 64 bytes through 32 KiB of flash: {written} bytes of items ({} per message), {events} events; {flash_bytes} bytes written to the flash ({} per message, with the map's framing and garbage collection)",
        written / rounds,
        flash_bytes / rounds
    );
}

#[test]
fn a_flash_written_under_another_key_is_refused() {
    let bytes = container();
    let mut mem = vec![0xffu8; PAGES * PAGE];
    {
        let mut b = board(&mut mem, &LocalKey::from_bytes([5; 32])).unwrap();
        b.prepare(AGENT, 1, true, &bytes).unwrap();
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT));
    }
    let mut b = board(&mut mem, &LocalKey::from_bytes([6; 32])).unwrap();
    assert!(matches!(
        b.keeper_mut().load(AGENT),
        Err(KeepError::Refused(_))
    ));
    b.run(AGENT, 1);
    assert!(!b.is_running(AGENT));
}

#[test]
fn events_of_one_copy_never_apply_to_the_copy_committed_after_it() {
    let bytes = container();
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; PAGES * PAGE];
    let mut b = board(&mut mem, &key).unwrap();
    // Running here at epoch 0 with two logged messages.
    b.start(Agent::with_id(AGENT, dna()), Inbox::with_secret([2; 16]))
        .unwrap();
    for seq in 1..=2 {
        assert_eq!(
            b.deliver(AGENT, A, SENDER, [9; 16], seq, b"\x01"),
            Delivery::Accepted
        );
    }
    b.flush().unwrap();
    assert_eq!(b.keeper_mut().load(AGENT).unwrap().unwrap().events.len(), 2);
    // A copy prepared at epoch 1 commits: the logged events were the old copy's.
    b.prepare(AGENT, 1, true, &bytes).unwrap();
    b.keeper_mut().commit_prepared(AGENT, 1).unwrap();
    let s = b.keeper_mut().load(AGENT).unwrap().unwrap();
    assert_eq!((s.epoch, s.events.len()), (1, 0));
}

#[test]
fn after_a_power_cut_at_any_write_the_hand_off_done_again_completes() {
    let bytes = container();
    let key = LocalKey::from_bytes([5; 32]);
    let ops = {
        let mut mem = vec![0xffu8; PAGES * PAGE];
        let mut b = board(&mut mem, &key).unwrap();
        scenario(&mut b, &bytes);
        b.keeper_mut().flash_mut().operations()
    };
    for n in 0..ops {
        for landing in [Landing::Nothing, Landing::Half, Landing::All] {
            let at = format!("cut at {n} ({landing:?})");
            let mut mem = vec![0xffu8; PAGES * PAGE];
            let acked = {
                let mut b = board(&mut mem, &key).unwrap();
                b.keeper_mut().flash_mut().cut_after(n, landing);
                scenario(&mut b, &bytes)
            };
            // After the reset the node resumes what it acknowledged; what it had not, the
            // source sends again: the hand-off (if it did not commit), then the messages.
            let mut b = board(&mut mem, &key).unwrap_or_else(|e| panic!("{at}: {e}"));
            if !acked.committed && !acked.prepared {
                b.prepare(AGENT, 1, true, &bytes)
                    .unwrap_or_else(|e| panic!("{at}: prepare again: {e}"));
            }
            b.run(AGENT, 1);
            assert!(
                b.is_running(AGENT),
                "{at} {acked:?}: {:?}",
                b.take_problems()
            );
            assert_eq!(call(&mut b, "get"), 41, "{at}");
        }
    }
}

/// A message of the mesh's longest kind (4 KiB) makes an event longer than a flash item holds
/// (a page, 4 KiB here): the board refuses it as if the mailbox were full — nothing kept,
/// nothing poisoned, the mailbox and the stream as before — instead of saving the agent whole
/// for it (a copy rewritten per message, and one that carries several may not fit beside the
/// old one: a peer could poison the board after every reset). The longest message the board
/// takes is stated by this test; the next messages of the stream still arrive.
#[test]
fn a_message_longer_than_a_flash_item_is_refused_and_nothing_else_changes() {
    let bytes = container();
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 16 * PAGE];
    let long: Vec<u8> = (0..mielin_cells::mesh::frame::MAX_MESSAGE_LEN)
        .map(|i| (i * 7) as u8)
        .collect();
    {
        let mut b = board(&mut mem, &key).unwrap();
        b.prepare(AGENT, 1, true, &bytes).unwrap();
        b.run(AGENT, 1);
        b.flush().unwrap();
        let (events, copies) = (b.keeper().stats().events, b.keeper().stats().copies);
        for _ in 0..3 {
            assert_eq!(
                b.deliver(AGENT, A, SENDER, [3; 16], 2, &long),
                Delivery::Full
            );
            b.flush().unwrap();
        }
        assert!(!b.is_poisoned());
        assert_eq!(b.keeper().stats().events, events, "nothing logged");
        assert_eq!(b.keeper().stats().copies, copies, "nothing saved");
        // The longest message it takes: the same stream goes on (2 is still the next).
        let takes = |n: usize| {
            let mut probe = board_probe(&bytes, &key);
            probe.deliver(AGENT, A, SENDER, [3; 16], 2, &long[..n]) == Delivery::Accepted
        };
        // Binary search: 1 byte is taken, 4 KiB is not.
        let (mut ok, mut no) = (1usize, long.len());
        while no - ok > 1 {
            let mid = (ok + no) / 2;
            if takes(mid) {
                ok = mid;
            } else {
                no = mid;
            }
        }
        let longest = ok;
        println!("the longest message a board with 4 KiB flash pages takes: {longest} bytes");
        assert!(longest >= 3_900, "{longest}");
        assert_eq!(
            b.deliver(AGENT, A, SENDER, [3; 16], 2, &long[..longest]),
            Delivery::Accepted
        );
        assert_eq!(
            b.deliver(AGENT, A, SENDER, [3; 16], 3, b"\x05"),
            Delivery::Accepted
        );
        b.flush().unwrap();
    }
    let mut b = board(&mut mem, &key).unwrap();
    b.run(AGENT, 1);
    assert!(b.is_running(AGENT), "{:?}", b.take_problems());
    assert_eq!(
        call(&mut b, "take"),
        0x2a,
        "the message the container carried"
    );
    let n = call(&mut b, "take_len") as usize;
    assert!(n >= 3_900);
    for i in [0usize, 1, 2047, n - 1] {
        let at = b
            .live_mut(AGENT)
            .unwrap()
            .call("at", &[Val::I32(i as i32)])
            .unwrap();
        assert!(
            matches!(at[..], [Val::I32(v)] if v == i32::from(long[i])),
            "byte {i}: {at:?}"
        );
    }
    assert_eq!(call(&mut b, "take"), 5);
}

/// A fresh board holding the agent of `bytes`, on flash of its own (to probe what it takes).
fn board_probe(bytes: &[u8], key: &LocalKey) -> Board<'static> {
    let mem: &'static mut [u8] = Box::leak(vec![0xffu8; 16 * PAGE].into_boxed_slice());
    let mut b = board(mem, key).unwrap();
    b.prepare(AGENT, 1, true, bytes).unwrap();
    b.run(AGENT, 1);
    b
}
