//! `mesh::cells::FlashKeeper` when the flash fills, is damaged, or loses power while an agent
//! leaves (from a review's attacks): a copy that does not fit is refused and harms nothing
//! else, aborted hand-offs do not fill the flash, a damaged event never mixes two histories,
//! and a copy left by a power cut in `release` goes at the next restart.

use mielin_cells::mesh::cells::{Cells, FlashKeeper, KeepError, Keeper, MemKeeper, Open, Refusal};
use mielin_cells::mesh::{
    AgentHost, Config, Delivery, Inbox, Journal, MemJournal, Node, Phase, Record,
};
use mielin_cells::migration::{DecodeLimits, DnaMap};
use mielin_cells::runtime::{Runtime, Val};
use mielin_cells::storage::{Landing, RamFlash};
use mielin_cells::{Agent, AgentId, Dna, LocalKey, NodeId};

const A: NodeId = NodeId::from_bytes([0xa; 16]);
const B: NodeId = NodeId::from_bytes([0xb; 16]);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);
const BIG: AgentId = AgentId::from_bytes([9; 16]);
const SENDER: AgentId = AgentId::from_bytes([8; 16]);
const PAGE: usize = 4096;

const WAT: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 2)
  (func (export "set") (param i32) (i32.store (i32.const 0) (local.get 0)))
  (func (export "get") (result i32) (i32.load (i32.const 0)))
  (func (export "fill") (param $n i32) (local $i i32) (local $x i32)
    (local.set $x (i32.const 0x12345678))
    (block (loop
      (br_if 1 (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
      (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
      (i32.store (i32.add (i32.const 1024) (local.get $i)) (local.get $x))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br 0))))
  (func (export "take") (result i32)
    (if (result i32) (i32.lt_s (call $recv (i32.const 64) (i32.const 128) (i32.const 64)) (i32.const 1))
      (then (i32.const -1))
      (else (i32.load8_u (i32.const 128))))))"#;

type Flash<'a> = RamFlash<'a, 4, PAGE>;
type Board<'a> = Cells<FlashKeeper<Flash<'a>, DnaMap>, Open>;

fn dna() -> Dna<Vec<u8>> {
    Dna::new(wat::parse_str(WAT).unwrap()).unwrap()
}

fn board<'a>(mem: &'a mut [u8], key: &LocalKey) -> Board<'a> {
    let len = mem.len() as u32;
    let flash = Flash::new(mem);
    let mut store = DnaMap::new();
    store.insert(&dna());
    let keeper = FlashKeeper::open(flash, 0..len, B, key, store, DecodeLimits::default()).unwrap();
    Cells::new(
        B,
        Runtime::new(100_000_000),
        keeper,
        Open,
        DecodeLimits::default(),
    )
}

/// A's container of `id` for B at `epoch`, with `fill` random bytes in memory.
fn container(id: AgentId, fill: i32, epoch: u64) -> Vec<u8> {
    let mut a = Cells::new(
        A,
        Runtime::new(100_000_000),
        MemKeeper::new(),
        Open,
        DecodeLimits::default(),
    );
    a.start(Agent::with_id(id, dna()), Inbox::with_secret([1; 16]))
        .unwrap();
    a.live_mut(id)
        .unwrap()
        .call("set", &[Val::I32(41)])
        .unwrap();
    a.live_mut(id)
        .unwrap()
        .call("fill", &[Val::I32(fill)])
        .unwrap();
    a.save(id).unwrap();
    a.route(id, B, epoch);
    a.stop(id);
    let mut buf = vec![0u8; a.transmit_room()];
    let n = a.capture(id, false, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn deliver(b: &mut Board<'_>, seq: u64) -> bool {
    b.deliver(AGENT, A, SENDER, [3; 16], seq, &[seq as u8; 8]) == Delivery::Accepted
        && b.flush().is_ok()
}

/// A copy too large for the free flash is refused as `NoRoom`, and nothing else suffers: the
/// agent already running goes on logging its messages, and the chunks written before the map
/// filled are removed (they had no head to name them).
#[test]
fn a_copy_that_does_not_fit_is_refused_and_harms_nothing() {
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 8 * PAGE];
    let small = container(AGENT, 0, 1);
    let big = container(BIG, 40_000, 1);
    {
        let mut b = board(&mut mem, &key);
        b.checkpoint_every = 16;
        b.prepare(AGENT, 1, false, &small).unwrap();
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT));
        assert!(deliver(&mut b, 1));
        assert!(b.prepare(BIG, 1, false, &big).is_err());
        assert_eq!(
            b.last_refusal(),
            Some(Refusal::Keep(KeepError::NoRoom)),
            "refused for want of room"
        );
        assert!(deliver(&mut b, 2), "{:?}", b.take_problems());
    }
    let mut b = board(&mut mem, &key);
    b.checkpoint_every = 16;
    assert!(b.keeper_mut().load(BIG).unwrap().is_none());
    assert_eq!(b.keeper().copies(), (1, 0));
    b.run(AGENT, 1);
    assert!(b.is_running(AGENT));
    for seq in 3..200 {
        assert!(
            deliver(&mut b, seq),
            "message {seq}: {:?}",
            b.take_problems()
        );
        assert!(b.tick("take", &[]) > 0);
        b.flush().unwrap();
    }
}

/// A copy that fits the flash once but not twice: the save after its commit finds no room,
/// and so does every checkpoint after it; the agent goes on taking messages as events until
/// those fill the flash too. Then a message is refused (`NoRoom`, the host poisoned: nothing
/// more leaves), and after a restart the agent runs with every message it acknowledged.
#[test]
fn a_copy_larger_than_half_the_flash_takes_messages_until_the_flash_is_full() {
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 8 * PAGE];
    let c = container(AGENT, 15_000, 1);
    {
        let mut b = board(&mut mem, &key);
        b.prepare(AGENT, 1, false, &c).unwrap();
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT));
    }
    let mut acked = 0u64;
    {
        let mut b = board(&mut mem, &key);
        b.checkpoint_every = 16;
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT), "{:?}", b.take_problems());
        let mut refused = None;
        for seq in 1..1_000 {
            if !deliver(&mut b, seq) {
                refused = Some(seq);
                break;
            }
            acked = seq;
            if b.tick("take", &[]) == 0 || b.flush().is_err() {
                break;
            }
        }
        // The message that did not fit (neither as an event nor in the agent saved whole) is
        // refused as if the mailbox were full; the host goes on (it poisoned itself before,
        // and the sender's next try poisoned it again after every reset).
        assert_eq!(refused, Some(acked + 1), "stopped by a refusal");
        assert!(!b.is_poisoned());
        assert!(b.flush().is_ok());
        assert_eq!(
            b.deliver(AGENT, A, SENDER, [3; 16], acked + 1, &[0; 8]),
            Delivery::Full,
            "and again"
        );
        // A call that changed the agent and does not fit still poisons it (it cannot be
        // undone): the stated limit, the flash must hold the events between two copies.
        let _ = b.tick("take", &[]);
    }
    assert!(acked >= 40, "only {acked} messages");
    let mut b = board(&mut mem, &key);
    let s = b.keeper_mut().load(AGENT).unwrap().unwrap();
    // Each message and the call that took it: every acknowledged message is there.
    assert!(
        s.events.len() as u64 >= 2 * acked - 1,
        "{} events for {acked} messages",
        s.events.len()
    );
    b.run(AGENT, 1);
    assert!(b.is_running(AGENT), "{:?}", b.take_problems());
}

/// One event item damaged (a bit of its value): the events after it, of the same generation,
/// must never come back after a new one written in its place. The board loses the damaged
/// event and those after it (the map reads a damaged newest item as its older value), saves
/// the agent whole at its next event, and runs one history.
#[test]
fn a_damaged_event_never_mixes_two_histories() {
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 64 * PAGE];
    let c = container(AGENT, 0, 1);
    {
        let mut b = board(&mut mem, &key);
        b.prepare(AGENT, 1, false, &c).unwrap();
        b.run(AGENT, 1);
        for seq in 1..=4 {
            assert!(deliver(&mut b, seq));
        }
        assert_eq!(b.keeper_mut().load(AGENT).unwrap().unwrap().events.len(), 4);
    }
    // Damage event 1's item (one bit of its value).
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&[7; 16]);
    k[16] = 2;
    k[17] = 1;
    let at = mem.windows(20).rposition(|w| w == k).unwrap();
    mem[at + 30] ^= 0x10;
    {
        let mut b = board(&mut mem, &key);
        assert_eq!(b.keeper_mut().load(AGENT).unwrap().unwrap().events.len(), 1);
        b.run(AGENT, 1);
        assert!(b.is_running(AGENT));
        // A new message on another stream.
        assert_eq!(
            b.deliver(AGENT, A, SENDER, [4; 16], 1, &[0x77; 8]),
            Delivery::Accepted
        );
        b.flush().unwrap();
    }
    let mut b = board(&mut mem, &key);
    b.run(AGENT, 1);
    assert!(b.is_running(AGENT), "{:?}", b.take_problems());
    let mut got = vec![];
    loop {
        let v = match b.live_mut(AGENT).unwrap().call("take", &[]).unwrap()[..] {
            [Val::I32(v)] => v,
            _ => panic!(),
        };
        if v < 0 {
            break;
        }
        got.push(v);
    }
    // Message 1, then the new one: never 3 or 4 after it.
    assert_eq!(got, vec![1, 0x77]);
}

/// The journal holds `Moved`: the agent left. A power cut in `release` left its running copy in
/// the flash; the next restart releases it again, and the flash holds nothing of it.
#[test]
fn a_copy_left_by_a_cut_in_release_goes_at_the_next_restart() {
    let key = LocalKey::from_bytes([5; 32]);
    let c = container(AGENT, 3000, 1);
    let mut left = 0;
    for cut in 0..40 {
        let mut mem = vec![0xffu8; 16 * PAGE];
        {
            let mut b = board(&mut mem, &key);
            b.prepare(AGENT, 1, false, &c).unwrap();
            b.run(AGENT, 1);
            b.route(AGENT, A, 2);
            b.stop(AGENT);
            let mut buf = vec![0u8; b.transmit_room()];
            b.capture(AGENT, false, &mut buf).unwrap();
            b.keeper_mut().flash_mut().cut_after(cut, Landing::Half);
            b.release(AGENT);
        }
        let mut b = board(&mut mem, &key);
        left += usize::from(b.keeper().copies() != (0, 0));
        let mut journal: MemJournal<8> = MemJournal::new();
        journal.set_sequence(AGENT, 2).unwrap();
        journal
            .put(
                AGENT,
                Record {
                    epoch: 2,
                    phase: Phase::Moved {
                        target: A,
                        acked: true,
                    },
                },
            )
            .unwrap();
        let _node = Node::<_, 8>::restart(B, journal, Config::default(), &mut b, 0);
        assert_eq!(b.keeper().copies(), (0, 0), "cut {cut}");
        assert!(!b.is_running(AGENT));
    }
    assert!(left > 0, "no cut left a copy behind: the test cut nothing");
}

/// Hand-offs in that abort (discard, then prune): each agent left with no copy is forgotten
/// whole, so eight of them pass through 64 KiB one after the other.
#[test]
fn aborted_hand_offs_do_not_fill_the_flash() {
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 16 * PAGE];
    for i in 0..8u8 {
        let id = AgentId::from_bytes([0x40 + i; 16]);
        let c = container(id, 8000, 1);
        let mut b = board(&mut mem, &key);
        b.prepare(id, 1, false, &c)
            .unwrap_or_else(|e| panic!("aborted hand-off {i}: {e}"));
        b.discard(id, 1);
        assert_eq!(b.keeper().copies(), (0, 0));
    }
}

fn copies_after_reopen(mem: &mut [u8], key: &LocalKey) -> (usize, usize) {
    let b = board(mem, key);
    b.keeper().copies()
}

/// Power cuts inside `forget` (after the empty head landed, while its other keys are removed):
/// the next open removes what is left, so a dozen such cuts and the flash still has room for
/// a fresh 8 KB agent (before, each left its chunks for good, and 7 filled 64 KiB).
#[test]
fn cuts_while_an_agent_is_forgotten_leave_nothing_behind() {
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 16 * PAGE];
    let mut rounds = 0;
    for i in 0..12u8 {
        let id = AgentId::from_bytes([0x40 + i; 16]);
        let c = container(id, 8000, 1);
        // Find the first cut in discard after which the agent has no head (the empty head
        // landed), on a copy of the flash.
        let mut chosen = None;
        for k in 0..200u64 {
            let mut trial = mem.clone();
            let ops;
            {
                let mut b = board(&mut trial, &key);
                if b.prepare(id, 1, false, &c).is_err() {
                    break;
                }
                b.keeper_mut().flash_mut().cut_after(k, Landing::Half);
                b.discard(id, 1);
                ops = b.keeper_mut().flash_mut().is_down();
            }
            if !ops {
                break; // discard finished before the cut
            }
            if copies_after_reopen(&mut trial, &key) == (0, 0) {
                chosen = Some(k);
                break;
            }
        }
        let Some(k) = chosen else {
            eprintln!("round {i}: no cut point / prepare failed");
            break;
        };
        let mut b = board(&mut mem, &key);
        match b.prepare(id, 1, false, &c) {
            Ok(()) => {}
            Err(e) => {
                eprintln!(
                    "round {i}: prepare of a fresh agent refused: {e} ({:?})",
                    b.last_refusal()
                );
                break;
            }
        }
        b.keeper_mut().flash_mut().cut_after(k, Landing::Half);
        b.discard(id, 1);
        drop(b);
        assert_eq!(copies_after_reopen(&mut mem, &key), (0, 0));
        rounds += 1;
        eprintln!("round {i}: cut at op {k}");
    }
    // No agent is kept: a fresh agent should fit as in aborted_hand_offs_do_not_fill_the_flash.
    let id = AgentId::from_bytes([0x77; 16]);
    let c = container(id, 8000, 1);
    let mut b = board(&mut mem, &key);
    assert_eq!(b.keeper().copies(), (0, 0));
    let r = b.prepare(id, 1, false, &c);
    assert!(
        r.is_ok(),
        "after {rounds} cut forgets, an empty keeper has no room for one 8 KB agent: {r:?} {:?}",
        b.last_refusal()
    );
}

/// Agents passing through (prepared, then discarded) leave nothing behind, not even an empty
/// head: 3,000 distinct ones pass through 24 KiB (before, 712 filled it).
#[test]
fn thousands_of_distinct_agents_pass_through_a_small_flash() {
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 6 * PAGE];
    let mut b = board(&mut mem, &key);
    let mut n = 0u32;
    for i in 0..3000u32 {
        let mut idb = [0x55u8; 16];
        idb[..4].copy_from_slice(&i.to_le_bytes());
        let id = AgentId::from_bytes(idb);
        let c = container(id, 0, 1);
        if let Err(e) = b.prepare(id, 1, false, &c) {
            eprintln!("agent {i}: refused {e} {:?}", b.last_refusal());
            break;
        }
        b.discard(id, 1);
        assert_eq!(b.keeper().copies(), (0, 0));
        n = i + 1;
    }
    assert_eq!(
        n, 3000,
        "only {n} distinct agents passed through an empty 24 KiB keeper"
    );
}

/// `restart_checked` with a journal older than the keeper (its last writes lost): it says
/// Moved at 2, the keeper runs the agent at 3. The restart must not release the copy before
/// the rollback check, which exists for exactly this journal.
#[test]
fn a_checked_restart_does_not_release_before_its_check() {
    let key = LocalKey::from_bytes([5; 32]);
    let mut mem = vec![0xffu8; 16 * PAGE];
    let c = container(AGENT, 0, 3);
    {
        let mut b = board(&mut mem, &key);
        b.prepare(AGENT, 3, false, &c).unwrap();
        b.run(AGENT, 3);
        assert!(b.is_running(AGENT));
    }
    let mut b = board(&mut mem, &key);
    assert_eq!(b.keeper().copies(), (1, 0));
    let mut journal: MemJournal<8> = MemJournal::new();
    journal.set_sequence(AGENT, 2).unwrap();
    journal
        .put(
            AGENT,
            Record {
                epoch: 2,
                phase: Phase::Moved {
                    target: A,
                    acked: true,
                },
            },
        )
        .unwrap();
    let _node = Node::<_, 8>::restart_checked(B, journal, Config::default(), &mut b, (0, 1), &[A]);
    assert_eq!(
        b.keeper().copies(),
        (1, 0),
        "the copy at epoch 3 was deleted before any peer answered"
    );
}
