//! Hand-offs between two nodes with real snapshots (`MigrationSnapshot`'s public API) and the
//! file journal: the happy path both ways, a snapshot that fails verification, and a crash of the
//! source before its decision, restarted from the journal file.
#![cfg(feature = "std")]

mod common;

use common::sample_agent;
use mielin_cells::mesh::{
    AgentHost, AgentInfo, Config, FileJournal, HostRefusal, Journal, MemJournal, MeshError, Node,
    Phase, Record,
};
use mielin_cells::migration::MigrationSnapshot;
use mielin_cells::{Agent, AgentId, AgentState, LocalKey, NodeId};
use std::collections::BTreeMap;

const A: NodeId = NodeId::from_bytes([0xa1; 16]);
const B: NodeId = NodeId::from_bytes([0xb2; 16]);

/// A host over the crate's own snapshots. Snapshots always carry the DNA here (the by-reference
/// encoding belongs to the snapshot format, which the protocol does not look into).
struct SnapshotHost {
    node: NodeId,
    agents: BTreeMap<AgentId, Agent<Vec<u8>>>,
    prepared: BTreeMap<(AgentId, u64), Vec<u8>>,
    running: BTreeMap<AgentId, u64>,
    corrupt_next_capture: bool,
}

impl SnapshotHost {
    fn new(node: NodeId) -> Self {
        SnapshotHost {
            node,
            agents: BTreeMap::new(),
            prepared: BTreeMap::new(),
            running: BTreeMap::new(),
            corrupt_next_capture: false,
        }
    }
}

impl AgentHost for SnapshotHost {
    fn describe(&mut self, agent: AgentId) -> Option<AgentInfo> {
        let a = self.agents.get(&agent)?;
        Some(AgentInfo {
            dna_hash: *a.dna().hash(),
            snapshot_len: MigrationSnapshot::capture_at(a, Some(self.node), 0).size_bytes() as u32,
            dna_len: a.dna().size() as u32,
        })
    }
    fn has_dna(&mut self, h: &[u8; 32]) -> bool {
        self.agents.values().any(|a| a.dna().hash() == h)
    }
    fn stop(&mut self, agent: AgentId) {
        self.running.remove(&agent);
        if let Some(a) = self.agents.get_mut(&agent) {
            let _ = a.set_state(AgentState::Migrating);
        }
    }
    fn capture(
        &mut self,
        agent: AgentId,
        _with_dna: bool,
        out: &mut [u8],
    ) -> Result<usize, MeshError> {
        let a = self.agents.get(&agent).ok_or(MeshError::HostRefused {
            reason: HostRefusal::UnknownAgent,
        })?;
        let mut bytes = MigrationSnapshot::capture_at(a, Some(self.node), 1_790_000_000)
            .serialize()
            .map_err(|_| MeshError::HostRefused {
                reason: HostRefusal::Runtime,
            })?;
        if std::mem::take(&mut self.corrupt_next_capture) {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 1;
        }
        let dst = out
            .get_mut(..bytes.len())
            .ok_or(MeshError::BufferTooSmall {
                needed: bytes.len(),
                available: 0,
            })?;
        dst.copy_from_slice(&bytes);
        Ok(bytes.len())
    }
    fn prepare(&mut self, agent: AgentId, epoch: u64, _: bool, s: &[u8]) -> Result<(), MeshError> {
        let snap = MigrationSnapshot::deserialize(s).map_err(|_| MeshError::HostRefused {
            reason: HostRefusal::Snapshot,
        })?;
        if snap.agent_id() != agent {
            return Err(MeshError::HostRefused {
                reason: HostRefusal::NotThisHandOff,
            });
        }
        self.prepared.insert((agent, epoch), s.to_vec());
        Ok(())
    }
    fn run(&mut self, agent: AgentId, epoch: u64) {
        if let Some(bytes) = self.prepared.remove(&(agent, epoch)) {
            let a = MigrationSnapshot::deserialize(&bytes)
                .unwrap()
                .into_agent()
                .unwrap();
            self.agents.insert(agent, a);
        }
        let a = self.agents.get_mut(&agent).expect("a copy to run");
        if a.state() != AgentState::Running {
            a.set_state(AgentState::Running).unwrap();
        }
        self.running.insert(agent, epoch);
    }
    fn discard(&mut self, agent: AgentId, epoch: u64) {
        self.prepared.remove(&(agent, epoch));
    }
    fn release(&mut self, agent: AgentId) {
        self.running.remove(&agent);
        self.agents.remove(&agent);
    }
}

/// Moves frames between the two nodes (no loss) until both are quiet, advancing time.
fn pump<JA: Journal, JB: Journal>(
    a: &mut Node<JA, 8>,
    ha: &mut SnapshotHost,
    b: &mut Node<JB, 8>,
    hb: &mut SnapshotHost,
    now: &mut u64,
) -> usize {
    pump_recording(a, ha, b, hb, now, &mut Vec::new())
}

/// [`pump`], keeping a copy of every frame: (sent by A, bytes).
fn pump_recording<JA: Journal, JB: Journal>(
    a: &mut Node<JA, 8>,
    ha: &mut SnapshotHost,
    b: &mut Node<JB, 8>,
    hb: &mut SnapshotHost,
    now: &mut u64,
    log: &mut Vec<(bool, Vec<u8>)>,
) -> usize {
    // Room for the 2 MiB agent of the allowance test.
    let mut buf = vec![0u8; 3 << 20];
    let mut frames = 0;
    for _ in 0..100 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(ha, &mut buf).unwrap() {
            assert_eq!(t.to, B);
            log.push((true, buf[..t.len].to_vec()));
            b.handle_frame(hb, *now, A, &buf[..t.len]).unwrap();
            moved = true;
            frames += 1;
        }
        while let Some(t) = b.poll_transmit(hb, &mut buf).unwrap() {
            assert_eq!(t.to, A);
            log.push((false, buf[..t.len].to_vec()));
            a.handle_frame(ha, *now, B, &buf[..t.len]).unwrap();
            moved = true;
            frames += 1;
        }
        if !moved {
            if a.is_quiet() && b.is_quiet() {
                return frames;
            }
            *now += 100;
            a.handle_timeout(ha, *now);
            b.handle_timeout(hb, *now);
        }
    }
    panic!("did not settle");
}

fn setup() -> (AgentId, SnapshotHost, SnapshotHost) {
    let agent = sample_agent();
    let id = agent.id();
    let mut ha = SnapshotHost::new(A);
    ha.agents.insert(id, agent);
    (id, ha, SnapshotHost::new(B))
}

#[test]
fn there_and_back_with_real_snapshots() {
    let (id, mut ha, mut hb) = setup();
    let mut a: Node<MemJournal<8>, 8> = Node::new(A, MemJournal::new(), Config::default());
    let mut b: Node<MemJournal<8>, 8> = Node::new(B, MemJournal::new(), Config::default());
    a.start(&mut ha, id).unwrap();
    let mut now = 0;
    a.migrate(&mut ha, now, id, B).unwrap();
    assert!(
        ha.running.is_empty(),
        "the source stops the agent when it offers it"
    );
    // Offer, NeedDna, Transfer, Prepared, Commit, Done.
    assert_eq!(pump(&mut a, &mut ha, &mut b, &mut hb, &mut now), 6);
    assert_eq!(hb.running.get(&id), Some(&1));
    assert!(ha.running.is_empty() && ha.agents.is_empty());
    assert_eq!(hb.agents[&id].wasm_state(), sample_agent().wasm_state());
    assert_eq!(
        a.journal().get(id),
        Some(Record {
            epoch: 1,
            phase: Phase::Moved {
                target: B,
                acked: true
            }
        })
    );
    assert_eq!(
        b.journal().get(id),
        Some(Record {
            epoch: 1,
            phase: Phase::Running
        })
    );
    // And back: epoch 2; A's tombstone is replaced.
    b.migrate(&mut hb, now, id, A).unwrap();
    pump(&mut a, &mut ha, &mut b, &mut hb, &mut now);
    assert_eq!(ha.running.get(&id), Some(&2));
    assert!(hb.running.is_empty());
    assert_eq!(
        a.journal().get(id),
        Some(Record {
            epoch: 2,
            phase: Phase::Running
        })
    );
    // Not the owner any more: B cannot migrate it.
    assert_eq!(b.migrate(&mut hb, now, id, A), Err(MeshError::NotOwner));
    assert_eq!(a.migrate(&mut ha, now, id, A), Err(MeshError::SelfTarget));
}

#[test]
fn an_invalid_snapshot_aborts_and_the_source_runs_on() {
    let (id, mut ha, mut hb) = setup();
    let mut a: Node<MemJournal<8>, 8> = Node::new(A, MemJournal::new(), Config::default());
    let mut b: Node<MemJournal<8>, 8> = Node::new(B, MemJournal::new(), Config::default());
    a.start(&mut ha, id).unwrap();
    ha.corrupt_next_capture = true;
    let mut now = 0;
    a.migrate(&mut ha, now, id, B).unwrap();
    pump(&mut a, &mut ha, &mut b, &mut hb, &mut now);
    assert_eq!(
        ha.running.get(&id),
        Some(&1),
        "aborted: runs at the attempt's epoch"
    );
    assert!(hb.running.is_empty() && hb.prepared.is_empty());
    assert_eq!(a.stats().aborted, 1);
    assert_eq!(b.journal().get(id), None);
}

#[test]
fn source_crash_before_deciding_restarts_from_the_file_journal() {
    let dir = std::env::temp_dir().join(format!("mielin-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.journal");
    let _ = std::fs::remove_file(&path);
    let (id, mut ha, mut hb) = setup();
    let sealed = LocalKey::derive(&[0x7a; 32], A);
    let mut a: Node<FileJournal, 8> = Node::new(
        A,
        FileJournal::create(&path, A, &sealed, 8).unwrap(),
        Config::default(),
    );
    let mut b: Node<MemJournal<8>, 8> = Node::new(B, MemJournal::new(), Config::default());
    a.start(&mut ha, id).unwrap();
    let mut now = 0;
    a.migrate(&mut ha, now, id, B).unwrap();
    // Offer reaches B; B's answer is lost; A crashes with its decision not taken.
    let mut buf = vec![0u8; 4096];
    let t = a.poll_transmit(&mut ha, &mut buf).unwrap().unwrap();
    b.handle_frame(&mut hb, now, A, &buf[..t.len]).unwrap();
    while b.poll_transmit(&mut hb, &mut buf).unwrap().is_some() {}
    drop(a);
    ha.running.clear();
    let journal = FileJournal::open(&path, A, &sealed, 8).unwrap();
    assert_eq!(
        journal.get(id),
        Some(Record {
            epoch: 1,
            phase: Phase::Outgoing { target: B }
        })
    );
    let mut a: Node<FileJournal, 8> = Node::restart(A, journal, Config::default(), &mut ha, now);
    assert_eq!(
        ha.running.get(&id),
        Some(&1),
        "restart aborts the undecided hand-off"
    );
    pump(&mut a, &mut ha, &mut b, &mut hb, &mut now);
    assert!(hb.running.is_empty());
    // The file says so too, after another reopen.
    drop(a);
    let journal = FileJournal::open(&path, A, &sealed, 8).unwrap();
    assert_eq!(
        journal.get(id),
        Some(Record {
            epoch: 1,
            phase: Phase::Running
        })
    );
    // Sequence numbers survive as well (what a trust list needs).
    let mut journal = journal;
    journal.set_sequence(id, 42).unwrap();
    assert_eq!(
        FileJournal::open(&path, A, &sealed, 8)
            .unwrap()
            .sequence(id),
        Some(42)
    );
    // A file that is not a journal is an error, not a panic or an empty journal.
    std::fs::write(&path, b"garbage").unwrap();
    assert!(FileJournal::open(&path, A, &sealed, 8).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn journal_capacity_is_a_refusal() {
    let mut j: MemJournal<1> = MemJournal::new();
    let r = Record {
        epoch: 0,
        phase: Phase::Running,
    };
    j.put(AgentId::from_bytes([1; 16]), r).unwrap();
    assert_eq!(
        j.put(AgentId::from_bytes([2; 16]), r),
        Err(MeshError::JournalFull)
    );
    assert_eq!(j.len(), 1);
}

/// Every frame of two hand-offs (A → B at epoch 1, B → A at epoch 2), replayed afterwards to its
/// receiver, forwards and backwards, and each answer delivered too: the agent still runs exactly
/// once, on A at epoch 2, and nothing changed state.
#[test]
fn replayed_frames_change_nothing() {
    let (id, mut ha, mut hb) = setup();
    let mut a: Node<MemJournal<8>, 8> = Node::new(A, MemJournal::new(), Config::default());
    let mut b: Node<MemJournal<8>, 8> = Node::new(B, MemJournal::new(), Config::default());
    a.start(&mut ha, id).unwrap();
    let mut now = 0;
    let mut log = Vec::new();
    a.migrate(&mut ha, now, id, B).unwrap();
    pump_recording(&mut a, &mut ha, &mut b, &mut hb, &mut now, &mut log);
    b.migrate(&mut hb, now, id, A).unwrap();
    pump_recording(&mut a, &mut ha, &mut b, &mut hb, &mut now, &mut log);
    assert_eq!(log.len(), 12);
    let settled = (a.journal().get(id), b.journal().get(id));
    let check = |a: &Node<MemJournal<8>, 8>,
                 b: &Node<MemJournal<8>, 8>,
                 ha: &SnapshotHost,
                 hb: &SnapshotHost| {
        assert_eq!((a.journal().get(id), b.journal().get(id)), settled);
        assert_eq!(ha.running.get(&id), Some(&2));
        assert!(hb.running.is_empty() && hb.agents.is_empty());
    };
    for order in [false, true] {
        let frames: Vec<_> = if order {
            log.iter().rev().collect()
        } else {
            log.iter().collect()
        };
        for (from_a, bytes) in frames {
            if *from_a {
                b.handle_frame(&mut hb, now, A, bytes).unwrap();
            } else {
                a.handle_frame(&mut ha, now, B, bytes).unwrap();
            }
            check(&a, &b, &ha, &hb);
            pump(&mut a, &mut ha, &mut b, &mut hb, &mut now);
            check(&a, &b, &ha, &hb);
        }
    }
}

/// A large snapshot is not sent again while the target is still at work: the Transfer's
/// retransmission waits `rto` plus its size at `transfer_ms_per_mib` (500 ms a MiB) or twice
/// the rate measured on earlier transfers (issue 23: a 10 MiB agent crossed the wire twice
/// because the 200 ms timer fired while the target verified and synced it).
#[test]
fn a_large_transfer_waits_for_its_size_and_the_rate_measured() {
    let (id, mut ha, mut hb) = setup_with_memory(2 << 20);
    let config = Config::default();
    let mut a: Node<MemJournal<8>, 8> = Node::new(A, MemJournal::new(), config);
    let mut b: Node<MemJournal<8>, 8> = Node::new(B, MemJournal::new(), config);
    a.start(&mut ha, id).unwrap();
    a.migrate(&mut ha, 0, id, B).unwrap();
    let mut buf = vec![0u8; 3 << 20];
    let mut small = vec![0u8; 4096];
    // Offer; B answers NeedDna; A queues the Transfer at 10 ms.
    let need_dna = offer_answered(&mut a, &mut ha, &mut b, &mut hb, 0);
    a.handle_frame(&mut ha, 10, B, &need_dna).unwrap();
    // The Transfer leaves; B holds it (still checking, say) while A's timers run.
    let mut transfer = Vec::new();
    while let Some(t) = a.poll_transmit(&mut ha, &mut buf).unwrap() {
        transfer = buf[..t.len].to_vec();
    }
    let len = transfer.len();
    assert!(len > 2 << 20, "{len}");
    let allowance = a.transfer_allowance(len, B);
    assert_eq!(allowance, (len as u64 * 500) >> 20);
    // A duplicate of B's answer (to a re-sent Offer, say) does not send the snapshot again.
    a.handle_frame(&mut ha, 20, B, &need_dna).unwrap();
    assert_eq!(a.poll_transmit(&mut ha, &mut buf).unwrap(), None);
    // An rto later (and up to just before the allowance ends): nothing is sent again.
    a.handle_timeout(&mut ha, 10 + config.rto_ms + 1);
    a.handle_timeout(&mut ha, 10 + config.rto_ms + allowance - 1);
    assert_eq!(a.poll_transmit(&mut ha, &mut buf).unwrap(), None);
    assert_eq!(a.stats().retransmits, 0);
    // B's Prepared comes 1.5 s after the Transfer was queued: 1,500 ms for about 2 MiB.
    b.handle_frame(&mut hb, 1_510, A, &transfer).unwrap();
    let t = b.poll_transmit(&mut hb, &mut small).unwrap().unwrap();
    let prepared = small[..t.len].to_vec();
    a.handle_frame(&mut ha, 1_510, B, &prepared).unwrap();
    assert_eq!(a.stats().committed, 1);
    // Measured: 1,500 ms / (len / 1 MiB) a MiB; the next transfer to B is given twice that,
    // one to another target the configured rate.
    let measured = (1_500u64 << 20) / len as u64;
    assert_eq!(a.transfer_allowance(1 << 20, B), 2 * measured);
    let c = NodeId::from_bytes([0xc3; 16]);
    assert_eq!(a.transfer_allowance(1 << 20, c), 500);
    // Without an answer, the Transfer does go again once its allowance is over.
    let (id2, mut ha2, mut hb2) = setup();
    let mut a2: Node<MemJournal<8>, 8> = Node::new(A, MemJournal::new(), config);
    let mut b2: Node<MemJournal<8>, 8> = Node::new(B, MemJournal::new(), config);
    a2.start(&mut ha2, id2).unwrap();
    a2.migrate(&mut ha2, 0, id2, B).unwrap();
    let need_dna = offer_answered(&mut a2, &mut ha2, &mut b2, &mut hb2, 0);
    a2.handle_frame(&mut ha2, 10, B, &need_dna).unwrap();
    let first = a2.poll_transmit(&mut ha2, &mut buf).unwrap().unwrap().len;
    let due = 10 + config.rto_ms + a2.transfer_allowance(first, B);
    a2.handle_timeout(&mut ha2, due - 1);
    assert_eq!(a2.stats().retransmits, 0);
    a2.handle_timeout(&mut ha2, due);
    assert_eq!(a2.stats().retransmits, 1);
    assert_eq!(
        a2.poll_transmit(&mut ha2, &mut buf).unwrap().map(|t| t.len),
        Some(first)
    );
    // And again one rto plus the allowance later (no backoff: a silent target costs
    // `max_attempts` of them, not minutes).
    let again = due + config.rto_ms + a2.transfer_allowance(first, B);
    a2.handle_timeout(&mut ha2, again - 1);
    assert_eq!(a2.stats().retransmits, 1);
    a2.handle_timeout(&mut ha2, again);
    assert_eq!(a2.stats().retransmits, 2);
}

/// [`setup`], with `len` bytes of agent memory that do not compress (xorshift).
fn setup_with_memory(len: usize) -> (AgentId, SnapshotHost, SnapshotHost) {
    let (id, mut ha, hb) = setup();
    let mut x = 0x9e37_79b9_u32;
    let state: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    ha.agents.get_mut(&id).unwrap().set_wasm_state(state);
    (id, ha, hb)
}

/// Takes A's Offer to B at `now` and returns B's answer.
fn offer_answered(
    a: &mut Node<MemJournal<8>, 8>,
    ha: &mut SnapshotHost,
    b: &mut Node<MemJournal<8>, 8>,
    hb: &mut SnapshotHost,
    now: u64,
) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    while let Some(t) = a.poll_transmit(ha, &mut buf).unwrap() {
        b.handle_frame(hb, now, A, &buf[..t.len]).unwrap();
    }
    let t = b.poll_transmit(hb, &mut buf).unwrap().unwrap();
    buf[..t.len].to_vec()
}

/// Found by review: a target that answers each Transfer just before its deadline raised the
/// measured rate a quarter each time (the allowance is twice the average), until a lost
/// Transfer to any target waited ten minutes an attempt. Twelve such answers here. The rate is now per target and each
/// sample and the average count for at most `MAX_MEASURED_FACTOR` times the configured rate.
#[test]
fn a_slow_answerer_cannot_ratchet_the_allowance_up() {
    use mielin_cells::mesh::MAX_MEASURED_FACTOR;
    let config = Config::default();
    let mut a: Node<MemJournal<8>, 8> = Node::new(A, MemJournal::new(), config);
    let mut b: Node<MemJournal<8>, 8> = Node::new(B, MemJournal::new(), config);
    // Just over the 1 MiB a transfer needs to be measured.
    let (id, mut ha, mut hb) = setup_with_memory((1 << 20) + (64 << 10));
    a.start(&mut ha, id).unwrap();
    let mut buf = vec![0u8; 3 << 20];
    let mut small = vec![0u8; 4096];
    let mut now = 0;
    for _ in 0..12 {
        a.migrate(&mut ha, now, id, B).unwrap();
        let answer = offer_answered(&mut a, &mut ha, &mut b, &mut hb, now);
        a.handle_frame(&mut ha, now, B, &answer).unwrap();
        let t = a.poll_transmit(&mut ha, &mut buf).unwrap().unwrap();
        let len = t.len;
        let transfer = buf[..len].to_vec();
        // B answers one millisecond before the Transfer would go again.
        now += config.rto_ms + a.transfer_allowance(len, B) - 1;
        b.handle_frame(&mut hb, now, A, &transfer).unwrap();
        let t = b.poll_transmit(&mut hb, &mut small).unwrap().unwrap();
        let prepared = small[..t.len].to_vec();
        a.handle_frame(&mut ha, now, B, &prepared).unwrap();
        // Commit, Done; then B hands it back so A can offer it again.
        let mut t_now = now;
        pump(&mut a, &mut ha, &mut b, &mut hb, &mut t_now);
        b.migrate(&mut hb, t_now, id, A).unwrap();
        pump(&mut a, &mut ha, &mut b, &mut hb, &mut t_now);
        now = t_now;
    }
    // Twice the average, the average at most 8 x 500 ms a MiB: 8 s a MiB at the most.
    assert_eq!(MAX_MEASURED_FACTOR, 8);
    let cap = 8_000;
    assert!(
        a.transfer_allowance(1 << 20, B) <= cap,
        "{}",
        a.transfer_allowance(1 << 20, B)
    );
    // Another target is untouched by B's answers.
    assert_eq!(
        a.transfer_allowance(1 << 20, NodeId::from_bytes([0xc3; 16])),
        config.transfer_ms_per_mib
    );
}
