//! `WasmHost` against forged, copied, edited and stale inputs (issue 20): what it receives is
//! one signed container whose epoch must be the hand-off's, and what it reads back from its
//! own disk is checked as strictly (sealed to the node, addressed to it, at the journal's
//! epoch). Each test drives the host through `AgentHost`, as the node does.
#![cfg(feature = "quic")]

#[path = "common/v3ref.rs"]
mod v3ref;

use mielin_cells::mesh::{
    AgentHost, HostRefusal, Inbox, InboxLimits, Journal, MemJournal, MeshError, Node, Phase, Record,
};
use mielin_cells::migration::{
    Ed25519Signer, EncodeOptions, MigrationSnapshot, StateEncoding, SECTION_INBOX,
};
use mielin_cells::quic::{Directory, Identity, Peer, WasmHost};
use mielin_cells::AgentId;
use std::path::{Path, PathBuf};

const COUNTER: &str = r#"(module
  (memory 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "start") (param i32) (global.set $n (local.get 0)))
  (func (export "stats") (result i32 i32 i32) (global.get $n) (i32.const 0) (i32.const 0)))"#;

const AGENT: AgentId = AgentId::from_bytes([0xa9; 16]);

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mielin-host-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

struct Two {
    ia: Identity,
    ib: Identity,
    a: WasmHost,
    b: WasmHost,
    dir: PathBuf,
}

/// Two hosts that trust each other; AGENT created on A with the number 7.
fn two(name: &str) -> Two {
    let dir = scratch(name);
    let ia = Identity::from_seed([1; 32]);
    let ib = Identity::from_seed([2; 32]);
    let mut a = WasmHost::open(&ia, &Directory::new(), &dir.join("a"), 1_000_000).unwrap();
    let mut b = WasmHost::open(&ib, &Directory::new(), &dir.join("b"), 1_000_000).unwrap();
    let addr = "127.0.0.1:1".parse().unwrap();
    a.trust_peer(&Peer {
        addr,
        key: ib.public_key(),
    })
    .unwrap();
    b.trust_peer(&Peer {
        addr,
        key: ia.public_key(),
    })
    .unwrap();
    a.create(AGENT, wat::parse_str(COUNTER).unwrap(), 7)
        .unwrap();
    Two { ia, ib, a, b, dir }
}

/// A's signed container of AGENT for B at `epoch`.
fn hand_off(t: &mut Two, epoch: u64) -> Vec<u8> {
    t.a.route(AGENT, t.ib.node_id(), epoch);
    t.a.stop(AGENT);
    let mut buf = vec![0u8; 1 << 20];
    let n = t.a.capture(AGENT, true, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn run_file(dir: &Path) -> PathBuf {
    let hex: String = AGENT
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join("agents").join(format!("{hex}.run"))
}

fn number(h: &mut WasmHost) -> Option<i32> {
    h.stats(AGENT).map(|s| s.received)
}

#[test]
fn a_hand_off_lands_with_its_state() {
    let mut t = two("ok");
    let bytes = hand_off(&mut t, 1);
    t.b.prepare(AGENT, 1, true, &bytes).unwrap();
    t.b.run(AGENT, 1);
    assert_eq!(number(&mut t.b), Some(7));
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// Medium: the Transfer frame's epoch was not compared with the epoch inside the signed
/// snapshot: a pinned peer (or a relay) could replay a container signed for epoch 1 as the
/// hand-off of epoch 2. Now the host refuses it.
#[test]
fn the_signed_epoch_must_be_the_hand_offs() {
    let mut t = two("epoch");
    let bytes = hand_off(&mut t, 1);
    assert!(t.b.prepare(AGENT, 2, true, &bytes).is_err());
    t.b.prepare(AGENT, 1, true, &bytes).unwrap();
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// High: the inbox rode outside the signature (`len || signed snapshot || inbox`): an on-path
/// attacker rewrote an agent's pending messages. Now it is a section under the signature.
#[test]
fn a_rewritten_inbox_is_refused() {
    let mut t = two("inbox");
    let good = hand_off(&mut t, 1);
    let mut p = v3ref::split(&good);
    let mut inbox = Inbox::decode(v3ref::section(&p, SECTION_INBOX).unwrap()).unwrap();
    inbox.send(
        AgentId::from_bytes([6; 16]),
        b"injected",
        &InboxLimits::default(),
    );
    *v3ref::section_mut(&mut p, SECTION_INBOX) = inbox.to_bytes();
    let forged = v3ref::join(&p);
    assert!(t.b.prepare(AGENT, 1, true, &forged).is_err());
    // The untouched container still goes through (the refusal was the forgery's).
    t.b.prepare(AGENT, 1, true, &good).unwrap();
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// Issue 25: a container that carries a suspended call (the call section, `runtime::midcall`)
/// is taken over only if the call fits the agent, and otherwise refused rather than restored as
/// an agent between calls (which would restart the export with the unwound frames in memory);
/// a host set to run agents between calls only (`mid_call` off) refuses every such container
/// with its reason. Both refusals come before the trust list journals the epoch, so the same
/// hand-off without the call still goes through.
#[test]
fn a_suspended_call_is_refused_and_does_not_burn_the_epoch() {
    let mut t = two("call");
    let good = hand_off(&mut t, 1);
    let snapshot = MigrationSnapshot::deserialize(&good).unwrap();
    assert!(snapshot.inbox().is_some());
    let with_call = snapshot
        .with_call(vec![0u8; 16])
        .serialize_with(&EncodeOptions {
            version: Some(3),
            state: StateEncoding::Chunked,
            signer: Some((&Ed25519Signer::from_secret(t.ia.secret()), 1)),
            ..Default::default()
        })
        .unwrap();
    // Signed, but its call is not one (and the agent is not transformed).
    assert_eq!(
        t.b.prepare(AGENT, 1, true, &with_call).unwrap_err(),
        MeshError::HostRefused {
            reason: HostRefusal::Snapshot
        }
    );
    t.b.mid_call = false;
    let err = t.b.prepare(AGENT, 1, true, &with_call).unwrap_err();
    assert_eq!(
        err,
        MeshError::HostRefused {
            reason: HostRefusal::SuspendedCall
        }
    );
    assert!(err.to_string().contains("between calls"), "{err}");
    t.b.prepare(AGENT, 1, true, &good).unwrap();
    t.b.run(AGENT, 1);
    assert_eq!(number(&mut t.b), Some(7));
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// Risky design: the node's `.run` files were unauthenticated snapshots; a file copied from
/// another node was run. Now it is sealed to its node and refused elsewhere.
#[test]
fn a_file_copied_from_another_node_is_refused() {
    let mut t = two("copied");
    let a_dir = t.dir.join("a");
    let b_dir = t.dir.join("b");
    std::fs::copy(run_file(&a_dir), run_file(&b_dir)).unwrap();
    // B is told (as a journal would after a restart) that it runs AGENT at epoch 0.
    t.b.run(AGENT, 0);
    assert_eq!(number(&mut t.b), None, "not run");
    let errors = t.b.take_errors();
    assert!(errors.iter().any(|e| e.contains("refused")), "{errors:?}");
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// An edited file, with every unkeyed check recomputed: refused by the seal.
#[test]
fn an_edited_file_is_refused() {
    let t = two("edited");
    let a_dir = t.dir.join("a");
    drop(t.a);
    let bytes = std::fs::read(run_file(&a_dir)).unwrap();
    let mut p = v3ref::split(&bytes);
    let mut inbox = Inbox::decode(v3ref::section(&p, SECTION_INBOX).unwrap()).unwrap();
    inbox.send(
        AgentId::from_bytes([6; 16]),
        b"injected",
        &InboxLimits::default(),
    );
    *v3ref::section_mut(&mut p, SECTION_INBOX) = inbox.to_bytes();
    std::fs::write(run_file(&a_dir), v3ref::join(&p)).unwrap();
    let mut a = WasmHost::open(&t.ia, &Directory::new(), &a_dir, 1_000_000).unwrap();
    a.run(AGENT, 0);
    assert_eq!(number(&mut a), None, "not run");
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// A file restored from an older copy: its epoch is not the journal's, so it is refused
/// (within one epoch an older copy cannot be told apart locally: docs/security.md).
#[test]
fn a_file_of_another_epoch_is_refused() {
    let t = two("stale");
    let a_dir = t.dir.join("a");
    drop(t.a);
    let mut a = WasmHost::open(&t.ia, &Directory::new(), &a_dir, 1_000_000).unwrap();
    // Saved at epoch 0; the journal says 2: refused.
    a.run(AGENT, 2);
    assert_eq!(number(&mut a), None);
    // The journal says 1: a hand-off aborted here before the agent was saved again. It runs,
    // and is saved at epoch 1 now.
    a.run(AGENT, 1);
    assert_eq!(number(&mut a), Some(7));
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// Risky design: an aborted or crashed hand-off's prepared copy never expired. A restart now
/// keeps only the copies the journal holds in doubt.
#[test]
fn a_restart_prunes_prepared_copies_the_journal_does_not_hold() {
    let mut t = two("prune");
    let bytes = hand_off(&mut t, 1);
    t.b.prepare(AGENT, 1, true, &bytes).unwrap();
    let agents = t.dir.join("b").join("agents");
    let preps = || {
        std::fs::read_dir(&agents)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".prep")
            })
            .count()
    };
    assert_eq!(preps(), 1);
    // The node crashed before journaling Prepared: the journal has no record.
    let b_node = t.ib.node_id();
    let _ = Node::<MemJournal<4>, 4>::restart(
        b_node,
        MemJournal::new(),
        Default::default(),
        &mut t.b,
        0,
    );
    assert_eq!(preps(), 0, "the orphan is gone");
    // A copy the journal holds in doubt is kept.
    let again = hand_off_again(&mut t, 2);
    t.b.prepare(AGENT, 2, true, &again).unwrap();
    let mut j = MemJournal::<4>::new();
    j.put(
        AGENT,
        Record {
            epoch: 2,
            phase: Phase::Prepared {
                source: t.ia.node_id(),
            },
        },
    )
    .unwrap();
    let _ = Node::<MemJournal<4>, 4>::restart(b_node, j, Default::default(), &mut t.b, 0);
    assert_eq!(preps(), 1, "the in-doubt copy stays");
    let _ = std::fs::remove_dir_all(&t.dir);
}

fn hand_off_again(t: &mut Two, epoch: u64) -> Vec<u8> {
    t.a.route(AGENT, t.ib.node_id(), epoch);
    let mut buf = vec![0u8; 1 << 20];
    let n = t.a.capture(AGENT, true, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Takes every message (its first byte added to $n) in `tick`, returning how many.
const SUMMER: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "tick") (result i32) (local $k i32)
    (block $done (loop $more
      (br_if $done (i32.lt_s (call $recv (i32.const 64) (i32.const 128) (i32.const 64)) (i32.const 1)))
      (global.set $n (i32.add (global.get $n) (i32.load8_u (i32.const 128))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $more)))
    (local.get $k))
  (func (export "stats") (result i32 i32 i32) (global.get $n) (i32.const 0) (i32.const 0)))"#;

/// The agent's event logs in `dir`.
fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("agents"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// A host with SUMMER created as AGENT, which took messages 1..=n (flushed).
fn summer(dir: &Path, n: u64) -> WasmHost {
    let id = Identity::from_seed([1; 32]);
    let mut a = WasmHost::open(&id, &Directory::new(), dir, 1_000_000).unwrap();
    a.create(AGENT, wat::parse_str(SUMMER).unwrap(), 0).unwrap();
    for seq in 1..=n {
        let from = AgentId::from_bytes([5; 16]);
        let d = a.deliver(AGENT, id.node_id(), from, [1; 16], seq, &[seq as u8]);
        assert_eq!(d, mielin_cells::mesh::Delivery::Accepted);
        if seq % 2 == 0 {
            a.tick("tick", &[]);
        }
    }
    a.tick("tick", &[]);
    AgentHost::flush(&mut a).unwrap();
    a
}

/// Messages and ticks are events in the agent's log, not saves of the whole agent: the `.run`
/// file is the one written at creation, and a restart applies the log to it.
#[test]
fn messages_are_logged_and_applied_again_after_a_restart() {
    let dir = scratch("events");
    let run0 = {
        let id = Identity::from_seed([1; 32]);
        let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
        a.create(AGENT, wat::parse_str(SUMMER).unwrap(), 0).unwrap();
        std::fs::read(run_file(&dir)).unwrap()
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut a = summer(&dir, 40);
    assert_eq!(number(&mut a), Some((1..=40).sum()));
    // The same agent at creation (the file's timestamp aside): not rewritten per message.
    assert_eq!(
        std::fs::read(run_file(&dir)).unwrap().len(),
        run0.len(),
        "the .run file is the one from creation"
    );
    assert_eq!(logs(&dir).len(), 1);
    drop(a);
    let id = Identity::from_seed([1; 32]);
    let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
    a.run(AGENT, 0);
    assert_eq!(
        number(&mut a),
        Some((1..=40).sum()),
        "{:?}",
        a.take_errors()
    );
    // A save (the agent stops for a hand-off) starts over: the old log is gone.
    a.stop(AGENT);
    assert!(logs(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log put beside a `.run` it does not follow — renamed to the current file's name, or left
/// under its own — is never applied to it: the first is refused (its first record names
/// another file), the second ignored and removed.
#[test]
fn a_log_of_another_saved_copy_is_not_applied() {
    let dir = scratch("events-swap");
    let mut a = summer(&dir, 6);
    let old_log = logs(&dir).pop().unwrap();
    let old_bytes = std::fs::read(&old_log).unwrap();
    a.stop(AGENT); // saved whole: a new .run, the old log removed
    a.run(AGENT, 1); // aborted: runs again, saved at epoch 1
    drop(a);
    let run = std::fs::read(run_file(&dir)).unwrap();
    let digest: String =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&run))[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    let name = old_log.file_name().unwrap().to_string_lossy().into_owned();
    let current =
        old_log.with_file_name(format!("{}.{digest}.log", name.split('.').next().unwrap()));
    let id = Identity::from_seed([1; 32]);

    // Under its own name: ignored, removed; the agent runs as saved.
    std::fs::write(&old_log, &old_bytes).unwrap();
    let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
    a.run(AGENT, 1);
    assert_eq!(number(&mut a), Some((1..=6).sum()));
    assert!(!old_log.exists());
    drop(a);

    // Renamed to follow the current file: refused, not run.
    std::fs::write(&current, &old_bytes).unwrap();
    let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
    a.run(AGENT, 1);
    assert_eq!(number(&mut a), None, "not run");
    let errors = a.take_errors();
    assert!(
        errors.iter().any(|e| e.contains("does not follow")),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A commit the keeper cannot complete (the rename of the prepared file fails) still runs
/// the agent: the node has recorded it as running and the source lets go of it. It is saved
/// whole once it runs, and the prepared file stays until then.
#[test]
fn a_failed_commit_still_runs_the_agent_and_saves_it() {
    let mut t = two("commit-fails");
    let bytes = hand_off(&mut t, 1);
    t.b.prepare(AGENT, 1, true, &bytes).unwrap();
    let run = run_file(&t.dir.join("b"));
    std::fs::create_dir(&run).unwrap(); // rename(prep, run) fails: a directory is in the way
    t.b.run(AGENT, 1);
    assert!(t.b.is_running(AGENT));
    assert_eq!(number(&mut t.b), Some(7));
    let errors = t.b.take_errors();
    assert!(
        errors.iter().any(|e| e.contains("committing")),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// A container that carries its DNA keeps it on disk whatever the frame's flag says: the
/// saved copy names it by hash, so a restart finds it.
#[test]
fn dna_that_came_in_the_container_is_kept_whatever_the_frame_says() {
    let mut t = two("dna-flag");
    let bytes = hand_off(&mut t, 1); // with its DNA
    t.b.prepare(AGENT, 1, false, &bytes).unwrap();
    t.b.run(AGENT, 1);
    drop(t.b);
    let mut b = WasmHost::open(&t.ib, &Directory::new(), &t.dir.join("b"), 1_000_000).unwrap();
    b.run(AGENT, 1);
    assert_eq!(number(&mut b), Some(7), "{:?}", b.take_errors());
    let _ = std::fs::remove_dir_all(&t.dir);
}

// Found by a review of the event logs (each failed before its fix).

fn hex(a: AgentId) -> String {
    a.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A disk attacker copies agent X's `.run` and its event log over agent Y's names: refused
/// (the id inside the file is not the one in its name), not Y running X's code and memory.
#[test]
fn a_run_and_log_copied_to_another_agents_name_are_refused() {
    let dir = scratch("review-swap");
    let other = AgentId::from_bytes([0x77; 16]);
    {
        let mut a = summer(&dir, 6); // AGENT: SUMMER, sum 21, events in its log
        a.create(other, wat::parse_str(COUNTER).unwrap(), 99)
            .unwrap(); // epoch 0 too
        AgentHost::flush(&mut a).unwrap();
    }
    let agents = dir.join("agents");
    let log = logs(&dir).pop().unwrap();
    let lname = log.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::copy(run_file(&dir), agents.join(format!("{}.run", hex(other)))).unwrap();
    std::fs::copy(&log, agents.join(lname.replace(&hex(AGENT), &hex(other)))).unwrap();
    let id = Identity::from_seed([1; 32]);
    let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
    a.run(other, 0);
    let errors = a.take_errors();
    assert_eq!(a.stats(other).map(|s| s.received), None, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("another agent")),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A save that fails (disk full) after `post` leaves the change in memory only: the host is
/// poisoned, its flush fails, so nothing that depends on the change leaves (the node sends no
/// frame); a restart resumes from the disk, where the agent is whole and runs.
#[test]
fn a_failed_save_poisons_the_host() {
    let dir = scratch("review-failed-save");
    let id = Identity::from_seed([1; 32]);
    {
        let mut a = summer(&dir, 0);
        let tmp = dir.join("agents").join(format!("{}.tmp", hex(AGENT)));
        std::fs::create_dir(&tmp).unwrap(); // write_durable(.run) fails
        let op = AgentId::from_bytes([9; 16]);
        assert_eq!(
            a.post(AGENT, op, &[5]),
            mielin_cells::mesh::Delivery::Accepted
        );
        std::fs::remove_dir(&tmp).unwrap();
        let d = a.deliver(
            AGENT,
            id.node_id(),
            AgentId::from_bytes([5; 16]),
            [1; 16],
            1,
            &[1],
        );
        assert_eq!(d, mielin_cells::mesh::Delivery::Accepted);
        assert_eq!(a.tick("tick", &[]), 2);
        assert!(a.is_poisoned());
        assert!(AgentHost::flush(&mut a).is_err(), "no Delivered may leave");
    }
    let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
    a.run(AGENT, 0);
    assert_eq!(number(&mut a), Some(0), "as saved: {:?}", a.take_errors());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tick` that sends a message and then traps: the call changed the outbox, and what it left
/// is saved whole (a failed call is not replayed), so after a restart the message is still in
/// the outbox with its number.
const SEND_THEN_TRAP: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "\07\07\07\07\07\07\07\07\07\07\07\07\07\07\07\07")
  (func (export "tick") (result i32)
    (drop (call $send (i32.const 0) (i32.const 0) (i32.const 4)))
    unreachable))"#;

#[test]
fn a_tick_that_traps_after_sending_is_saved_whole() {
    let dir = scratch("review-trap");
    let id = Identity::from_seed([1; 32]);
    let count = |a: &mut WasmHost| {
        let mut v = Vec::new();
        a.outgoing(AGENT, &mut |m| v.push(m.seq));
        v
    };
    {
        let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
        a.create(AGENT, wat::parse_str(SEND_THEN_TRAP).unwrap(), 0)
            .unwrap();
        let d = a.deliver(
            AGENT,
            id.node_id(),
            AgentId::from_bytes([5; 16]),
            [1; 16],
            1,
            &[1],
        );
        assert_eq!(d, mielin_cells::mesh::Delivery::Accepted);
        assert_eq!(a.tick("tick", &[]), 0);
        assert_eq!(count(&mut a), vec![1], "sent seq 1 before the trap");
        AgentHost::flush(&mut a).unwrap();
    }
    let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
    a.run(AGENT, 0);
    assert!(a.is_running(AGENT), "{:?}", a.take_errors());
    assert_eq!(
        count(&mut a),
        vec![1],
        "the sent message is still there after a restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends one message to TARGET on its first tick.
const SEND_ONCE: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $done (mut i32) (i32.const 0))
  (data (i32.const 0) "\a9\a9\a9\a9\a9\a9\a9\a9\a9\a9\a9\a9\a9\a9\a9\a9\2a")
  (func (export "tick") (result i32)
    (if (global.get $done) (then (return (i32.const 0))))
    (global.set $done (i32.const 1))
    (drop (call $send (i32.const 0) (i32.const 16) (i32.const 1)))
    (i32.const 1)))"#;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Local delivery (two agents on one node): the target's `Delivered` is only appended, and the
/// sender's `Acked` brings the sender to a save, durable at once. The save flushes the events
/// first, so a crash right after it keeps the message at the target (the node also
/// acknowledges a local delivery only after a flush).
#[test]
fn a_save_after_a_local_delivery_keeps_the_delivery() {
    let dir = scratch("review-local");
    let id = Identity::from_seed([1; 32]);
    let sender = AgentId::from_bytes([0x55; 16]);
    {
        let mut a = WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
        // A save at the second event, whatever the agents weigh.
        a.checkpoint_every = 2;
        a.checkpoint_by_size = false;
        a.create(AGENT, wat::parse_str(SUMMER).unwrap(), 0).unwrap(); // the target
        a.create(sender, wat::parse_str(SEND_ONCE).unwrap(), 0)
            .unwrap();
        AgentHost::flush(&mut a).unwrap();
        assert_eq!(a.tick("tick", &[]), 1); // sender: Called (1 event)
        AgentHost::flush(&mut a).unwrap();
        let mut out = Vec::new();
        a.outgoing(sender, &mut |m| {
            out.push((m.stream, m.seq, m.payload.to_vec()))
        });
        let (stream, seq, payload) = out.pop().unwrap();
        let d = a.deliver(AGENT, id.node_id(), sender, stream, seq, &payload);
        assert_eq!(d, mielin_cells::mesh::Delivery::Accepted);
        a.acked(sender, AGENT, seq); // sender's 2nd event: saved whole
        copy_dir(&dir, &dir.with_extension("crash")); // power cut here
    }
    let crash = dir.with_extension("crash");
    let mut a = WasmHost::open(&id, &Directory::new(), &crash, 1_000_000).unwrap();
    a.run(AGENT, 0);
    a.run(sender, 0);
    let mut unacked = 0;
    a.outgoing(sender, &mut |_| unacked += 1);
    assert_eq!(unacked, 0, "the sender let go of it");
    assert_eq!(
        a.tick("tick", &[]),
        1,
        "and the target has it: {:?}",
        a.take_errors()
    );
    assert_eq!(number(&mut a), Some(0x2a));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&crash);
}
