//! The two minimal sequences of issue 21 in which a stale duplicate frame ran an agent twice,
//! at the level of `mesh::Node`, with a host that has no trust list (it prepares whatever
//! snapshot it is given). Only the node's fence (the per-agent high-water epoch in its journal)
//! stands between those frames and a second running copy.
#![cfg(feature = "std")]

use mielin_cells::mesh::frame::{Body, Repr};
use mielin_cells::mesh::{Config, Journal, MemJournal, MeshError, Node, Phase, Record};
use mielin_cells::{AgentId, NodeId};

const AGENT: AgentId = AgentId::from_bytes([0xa9; 16]);

#[path = "common/plain_host.rs"]
mod plain_host;
use plain_host::PlainHost;

type TestNode = Node<MemJournal<8>, 8>;

/// A frame in flight: sender index, addressee index, bytes.
type Frame = (usize, usize, Vec<u8>);

struct World {
    ids: Vec<NodeId>,
    nodes: Vec<TestNode>,
    hosts: Vec<PlainHost>,
    now: u64,
}

const CONFIG: Config = Config {
    rto_ms: 100,
    max_attempts: 3,
    tombstone_ttl_ms: 1_000,
    max_in_doubt: 4,
    undelivered_ms: 10_000,
    rollback_check_ms: 2_000,
    strict_rollback: false,
    window: 8,
    transfer_ms_per_mib: 500,
};

impl World {
    fn new(n: usize) -> Self {
        let ids: Vec<NodeId> = (0..n)
            .map(|i| NodeId::from_bytes([i as u8 + 1; 16]))
            .collect();
        World {
            nodes: ids
                .iter()
                .map(|id| Node::new(*id, MemJournal::new(), CONFIG))
                .collect(),
            hosts: (0..n).map(|_| PlainHost::default()).collect(),
            ids,
            now: 0,
        }
    }

    fn index(&self, id: NodeId) -> usize {
        self.ids.iter().position(|i| *i == id).unwrap()
    }

    /// Every frame the nodes have queued.
    fn drain(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            let mut buf = vec![0u8; 4096];
            while let Some(t) = self.nodes[i]
                .poll_transmit(&mut self.hosts[i], &mut buf)
                .unwrap()
            {
                out.push((i, self.index(t.to), buf[..t.len].to_vec()));
            }
        }
        out
    }

    fn deliver(&mut self, (from, to, bytes): &Frame) {
        let from = self.ids[*from];
        let _ = self.nodes[*to].handle_frame(&mut self.hosts[*to], self.now, from, bytes);
        self.check();
    }

    /// Runs the network until quiet: `keep` says whether a frame is delivered; every frame is
    /// also copied into `seen` (what a network could deliver again later).
    fn run(&mut self, seen: &mut Vec<Frame>, keep: impl Fn(&Frame) -> bool) {
        for _ in 0..10_000 {
            let frames = self.drain();
            if frames.is_empty() {
                self.now += CONFIG.rto_ms;
                for i in 0..self.nodes.len() {
                    self.nodes[i].handle_timeout(&mut self.hosts[i], self.now);
                }
                self.check();
                if self.drain_is_empty_and_quiet() {
                    return;
                }
                continue;
            }
            for f in frames {
                seen.push(f.clone());
                if keep(&f) {
                    self.deliver(&f);
                }
            }
        }
        panic!("the network never went quiet");
    }

    fn drain_is_empty_and_quiet(&self) -> bool {
        self.nodes.iter().all(|n| n.is_quiet())
    }

    /// Never two running copies; never a copy running below the newest epoch any node decided.
    fn check(&self) {
        let running: Vec<(usize, u64)> = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.running.map(|e| (i, e)))
            .collect();
        assert!(running.len() <= 1, "two running copies: {running:?}");
        let newest = self
            .nodes
            .iter()
            .filter_map(|n| n.journal().sequence(AGENT))
            .max();
        for (i, e) in running {
            assert!(
                newest.is_none_or(|n| e >= n),
                "node {i} runs epoch {e}, below epoch {newest:?}"
            );
        }
    }

    fn record(&self, i: usize) -> Option<Record> {
        self.nodes[i].journal().get(AGENT)
    }
}

fn kind(f: &Frame) -> &'static str {
    match Repr::decode(&f.2).unwrap().body {
        Body::Offer { .. } => "offer",
        Body::Transfer { .. } => "transfer",
        Body::Prepared => "prepared",
        Body::Commit => "commit",
        Body::Abort => "abort",
        Body::Done => "done",
        Body::Refuse(_) => "refuse",
        _ => "other",
    }
}

fn epoch(f: &Frame) -> u64 {
    Repr::decode(&f.2).unwrap().epoch
}

/// Hands the agent from `from` to `to` on a healthy network (stale copies kept in `seen`).
fn hand_off(w: &mut World, from: usize, to: usize, seen: &mut Vec<Frame>) {
    let now = w.now;
    let target = w.ids[to];
    w.nodes[from]
        .migrate(&mut w.hosts[from], now, AGENT, target)
        .unwrap();
    w.run(seen, |_| true);
    assert!(w.hosts[to].running.is_some());
}

/// Sequence (b): two nodes, no crash or partition. n1 hands the agent to n0 (epoch 1), n0 hands
/// it back (epoch 2), n1 offers it to n0 again (epoch 3) and hears no answer, so it aborts; n0's
/// abort handling deletes its record. Delayed duplicates of the epoch-1 Transfer and Commit then
/// reach n0. Before the fence, n0 prepared and ran the epoch-1 copy beside n1's epoch 3.
#[test]
fn stale_duplicates_after_an_abort_never_run() {
    let mut w = World::new(2);
    let mut seen = Vec::new();
    w.hosts[1].owned = Some(0);
    w.nodes[1].start(&mut w.hosts[1], AGENT).unwrap();
    hand_off(&mut w, 1, 0, &mut seen);
    hand_off(&mut w, 0, 1, &mut seen);
    // Epoch 3: n0 prepares it (replacing its tombstone) but its Prepared answers are lost, so n1
    // gives up and runs the agent at epoch 3.
    let now = w.now;
    let n0 = w.ids[0];
    w.nodes[1].migrate(&mut w.hosts[1], now, AGENT, n0).unwrap();
    w.run(&mut seen, |f| !(f.0 == 0 && kind(f) == "prepared"));
    assert_eq!(w.hosts[1].running, Some(3));
    assert_eq!(w.record(0), None, "n0's abort handling removed its record");
    // The delayed duplicates, in order.
    let stale: Vec<Frame> = seen
        .iter()
        .filter(|f| f.0 == 1 && epoch(f) == 1 && matches!(kind(f), "transfer" | "commit"))
        .cloned()
        .collect();
    assert_eq!(stale.len(), 2);
    let before = w.nodes[0].stats().fenced;
    for f in &stale {
        w.deliver(f);
    }
    w.run(&mut seen, |_| true);
    assert_eq!(w.hosts[0].running, None, "n0 runs the stale epoch-1 copy");
    assert_eq!(w.hosts[1].running, Some(3));
    assert!(
        w.nodes[0].stats().fenced > before,
        "the duplicates were fenced"
    );
    assert!(
        w.hosts[0].prepared.is_empty(),
        "nothing stale stays prepared"
    );
}

/// Sequence (a): S hands the agent to T while T's answers to S are lost after its Prepared
/// (asymmetric partition: S keeps re-sending its Commit); T hands it on to U; T's tombstone
/// expires; a late duplicate of S's Transfer reaches T, then S's Commit. Before the fence, T
/// prepared the stale copy and the Commit ran it beside the real one on U.
#[test]
fn a_stale_transfer_after_tombstone_expiry_never_runs() {
    let (s, t, u) = (0, 1, 2);
    let mut w = World::new(3);
    let mut seen = Vec::new();
    w.hosts[s].owned = Some(0);
    w.nodes[s].start(&mut w.hosts[s], AGENT).unwrap();
    // S → T at epoch 1; after T's Prepared, nothing from T reaches S.
    let now = w.now;
    let target = w.ids[t];
    w.nodes[s]
        .migrate(&mut w.hosts[s], now, AGENT, target)
        .unwrap();
    let mut prepared_seen = false;
    for _ in 0..20 {
        let frames = w.drain();
        for f in frames {
            seen.push(f.clone());
            let lost = f.0 == t && f.1 == s && prepared_seen;
            if f.0 == t && kind(&f) == "prepared" {
                prepared_seen = true;
            }
            if !lost {
                w.deliver(&f);
            }
        }
        if w.hosts[t].running.is_some() {
            break;
        }
    }
    assert_eq!(w.hosts[t].running, Some(1));
    // S has decided (its tombstone is unconfirmed) and keeps the Commit coming.
    assert!(matches!(
        w.record(s),
        Some(Record {
            phase: Phase::Moved { acked: false, .. },
            ..
        })
    ));
    // T → U at epoch 2, with S's retransmissions to T lost meanwhile; then T's tombstone
    // expires.
    let now = w.now;
    let u_id = w.ids[u];
    w.nodes[t]
        .migrate(&mut w.hosts[t], now, AGENT, u_id)
        .unwrap();
    for _ in 0..200 {
        let frames = w.drain();
        for f in frames {
            seen.push(f.clone());
            if f.0 != s && !(f.0 == t && f.1 == s) {
                w.deliver(&f);
            }
        }
        w.now += CONFIG.rto_ms;
        for i in [t, u] {
            w.nodes[i].handle_timeout(&mut w.hosts[i], w.now);
        }
        w.check();
        if w.record(t).is_none() {
            break;
        }
    }
    assert_eq!(w.record(t), None, "T's tombstone expired");
    assert_eq!(w.hosts[u].running, Some(2));
    // The late duplicate of S's Transfer, then S's Commit retransmissions; the partition heals.
    let transfer = seen
        .iter()
        .find(|f| f.0 == s && kind(f) == "transfer" && epoch(f) == 1)
        .cloned()
        .unwrap();
    w.deliver(&transfer);
    w.run(&mut seen, |_| true);
    assert_eq!(w.hosts[t].running, None, "T runs the stale epoch-1 copy");
    assert_eq!(w.hosts[u].running, Some(2));
    assert!(
        w.hosts[t].prepared.is_empty(),
        "nothing stale stays prepared"
    );
    // S heard Done in the end: nothing retransmits forever.
    assert!(matches!(
        w.record(s),
        Some(Record {
            phase: Phase::Moved { acked: true, .. },
            ..
        }) | None
    ));
}

/// A journal whose next `fail` writes fail (as a full or failing disk would).
struct Flaky {
    inner: MemJournal<8>,
    fail: u32,
}

impl Journal for Flaky {
    fn get(&self, agent: AgentId) -> Option<Record> {
        self.inner.get(agent)
    }
    fn put(&mut self, agent: AgentId, record: Record) -> Result<(), MeshError> {
        if self.fail > 0 {
            self.fail -= 1;
            return Err(MeshError::JournalIo);
        }
        self.inner.put(agent, record)
    }
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
        self.inner.remove(agent)
    }
    fn for_each(&self, f: &mut dyn FnMut(AgentId, Record)) {
        self.inner.for_each(f)
    }
    fn sequence(&self, agent: AgentId) -> Option<u64> {
        self.inner.sequence(agent)
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
    fn set_generation(&mut self, g: u64) -> Result<(), MeshError> {
        self.inner.set_generation(g)
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        self.inner.set_sequence(agent, seq)
    }
    fn sync(&mut self) -> Result<(), MeshError> {
        self.inner.sync()
    }
    fn unsynced(&self) -> bool {
        self.inner.unsynced()
    }
}

/// A source that crashed with a hand-off open restarts and aborts it; when that journal write
/// fails, a timer tries again until the agent runs (before, it stayed stopped for good).
#[test]
fn restart_retries_a_failed_abort() {
    let target = NodeId::from_bytes([2; 16]);
    let mut host = PlainHost {
        owned: Some(0),
        ..PlainHost::default()
    };
    let mut node: Node<Flaky, 8> = Node::new(
        NodeId::from_bytes([1; 16]),
        Flaky {
            inner: MemJournal::new(),
            fail: 0,
        },
        CONFIG,
    );
    node.start(&mut host, AGENT).unwrap();
    node.migrate(&mut host, 0, AGENT, target).unwrap();
    // Crash; the restart's abort fails twice.
    let mut journal = node.into_journal();
    journal.fail = 2;
    let mut host = PlainHost {
        owned: Some(0),
        ..PlainHost::default()
    };
    let mut node: Node<Flaky, 8> =
        Node::restart(NodeId::from_bytes([1; 16]), journal, CONFIG, &mut host, 0);
    assert_eq!(host.running, None);
    let mut now = 0;
    for _ in 0..10 {
        now = node.poll_timeout().unwrap().max(now + 1);
        node.handle_timeout(&mut host, now);
    }
    assert_eq!(
        host.running,
        Some(1),
        "the agent runs again after the retries"
    );
    assert_eq!(
        node.journal().get(AGENT),
        Some(Record {
            epoch: 1,
            phase: Phase::Running
        })
    );
}
