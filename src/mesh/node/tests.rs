//! A hand-off and a message between two nodes with no allocator: fixed-size journals,
//! nodes and a host that keeps one agent as a counter.
use super::*;
use crate::mesh::HostRefusal;
use crate::mesh::MemJournal;

#[derive(Default)]
struct Host {
    owned: Option<u64>,
    prepared: Option<(u64, u64)>,
    running: Option<u64>,
    inbox_last: u64,
    outbox: Option<(AgentId, u64)>,
    /// Messages after the outbox's first (numbered on from it).
    more: u64,
}

const A: AgentId = AgentId::from_bytes([0xa; 16]);
const B: AgentId = AgentId::from_bytes([0xb; 16]);
const N1: NodeId = NodeId::from_bytes([1; 16]);
const N2: NodeId = NodeId::from_bytes([2; 16]);

impl AgentHost for Host {
    fn describe(&mut self, _: AgentId) -> Option<AgentInfo> {
        self.owned.map(|_| AgentInfo {
            dna_hash: [7; 32],
            snapshot_len: 8,
            dna_len: 0,
        })
    }
    fn has_dna(&mut self, _: &[u8; 32]) -> bool {
        true
    }
    fn stop(&mut self, _: AgentId) {
        self.running = None;
    }
    fn capture(&mut self, _: AgentId, _: bool, out: &mut [u8]) -> Result<usize, MeshError> {
        let v = self.owned.ok_or(MeshError::HostRefused {
            reason: HostRefusal::UnknownAgent,
        })?;
        out.get_mut(..8)
            .ok_or(MeshError::PayloadTooLarge)?
            .copy_from_slice(&v.to_le_bytes());
        Ok(8)
    }
    fn prepare(&mut self, _: AgentId, e: u64, _: bool, s: &[u8]) -> Result<(), MeshError> {
        let b: [u8; 8] = s.try_into().map_err(|_| MeshError::Truncated)?;
        self.prepared = Some((e, u64::from_le_bytes(b)));
        Ok(())
    }
    fn run(&mut self, _: AgentId, epoch: u64) {
        if let Some((e, v)) = self.prepared.take() {
            if e == epoch {
                self.owned = Some(v);
            }
        }
        self.running = Some(epoch);
    }
    fn discard(&mut self, _: AgentId, _: u64) {
        self.prepared = None;
    }
    fn release(&mut self, _: AgentId) {
        self.owned = None;
        self.running = None;
    }
    fn deliver(
        &mut self,
        _: AgentId,
        _: NodeId,
        _: AgentId,
        _: Stream,
        seq: u64,
        _: &[u8],
    ) -> Delivery {
        if seq <= self.inbox_last {
            Delivery::Duplicate
        } else if seq == self.inbox_last + 1 {
            self.inbox_last = seq;
            Delivery::Accepted
        } else {
            Delivery::OutOfOrder
        }
    }
    fn outgoing(&mut self, _: AgentId, f: &mut dyn FnMut(Outgoing<'_>)) {
        if let Some((to, first)) = self.outbox {
            for seq in first..=first + self.more {
                f(Outgoing {
                    to,
                    stream: [0; 16],
                    seq,
                    payload: b"hi",
                });
            }
        }
    }
    fn acked(&mut self, _: AgentId, _: AgentId, seq: u64) {
        if self.outbox.is_some_and(|o| o.1 == seq) {
            self.outbox = None;
        }
    }
}

type TestNode = Node<MemJournal<4>, 4>;

fn pump(a: &mut TestNode, ha: &mut Host, b: &mut TestNode, hb: &mut Host, now: &mut u64) {
    let mut buf = [0u8; 128];
    for _ in 0..50 {
        while let Ok(Some(t)) = a.poll_transmit(ha, &mut buf) {
            assert_eq!(t.to, N2);
            b.handle_frame(hb, *now, N1, &buf[..t.len]).unwrap();
        }
        while let Ok(Some(t)) = b.poll_transmit(hb, &mut buf) {
            assert_eq!(t.to, N1);
            a.handle_frame(ha, *now, N2, &buf[..t.len]).unwrap();
        }
        *now += 100;
        a.handle_timeout(ha, *now);
        b.handle_timeout(hb, *now);
    }
}

#[test]
fn hand_off_then_message_without_alloc() {
    let mut h1 = Host {
        owned: Some(41),
        ..Host::default()
    };
    let mut h2 = Host::default();
    let mut n1: TestNode = Node::new(N1, MemJournal::new(), Config::default());
    let mut n2: TestNode = Node::new(N2, MemJournal::new(), Config::default());
    n1.start(&mut h1, A).unwrap();
    assert_eq!(n1.start(&mut h1, A), Err(MeshError::AlreadyKnown));
    let mut now = 0;
    n1.migrate(&mut h1, now, A, N2).unwrap();
    assert_eq!(n1.migrate(&mut h1, now, A, N2), Err(MeshError::NotOwner));
    pump(&mut n1, &mut h1, &mut n2, &mut h2, &mut now);
    assert_eq!((h1.running, h1.owned), (None, None));
    assert_eq!((h2.running, h2.owned), (Some(1), Some(41)));
    assert_eq!(n1.stats().committed, 1);
    assert_eq!(n2.stats().adopted, 1);

    // B, started on node 1, sends to A: node 1's tombstone for A points to node 2.
    n1.start(&mut h1, B).unwrap();
    h1.outbox = Some((A, 1));
    n1.wake_messages(now);
    pump(&mut n1, &mut h1, &mut n2, &mut h2, &mut now);
    assert_eq!(h1.outbox, None, "acknowledged");
    assert_eq!(h2.inbox_last, 1, "delivered once");
    assert_eq!(n1.location(A), Some(N2));
    // Trust-list sequence numbers live in the same journal.
    n1.journal_mut().set_sequence(A, 9).unwrap();
    assert_eq!(n1.journal().sequence(A), Some(9));
}

#[test]
fn garbage_changes_nothing() {
    let mut h = Host {
        owned: Some(1),
        ..Host::default()
    };
    let mut n: TestNode = Node::new(N1, MemJournal::new(), Config::default());
    n.start(&mut h, A).unwrap();
    assert!(n.handle_frame(&mut h, 0, N2, b"MZ").is_err());
    assert_eq!(n.stats().malformed, 1);
    assert_eq!(n.journal().get(A).map(|r| r.phase), Some(Phase::Running));
    assert_eq!(h.running, Some(0));
}

/// Frames node `n` lets out now: (to, kind, seq of a Deliver).
fn sent(n: &mut TestNode, h: &mut Host) -> heapless::Vec<(NodeId, u64), 8> {
    let mut buf = [0u8; 128];
    let mut out = heapless::Vec::new();
    while let Ok(Some(t)) = n.poll_transmit(h, &mut buf) {
        if let Ok(Repr {
            body: Body::Deliver { seq, .. },
            ..
        }) = Repr::decode(&buf[..t.len])
        {
            out.push((t.to, seq)).unwrap();
        }
    }
    out
}

/// Node N2 answers `status` for message `seq` of B to A.
fn answer(n: &mut TestNode, h: &mut Host, now: u64, seq: u64, status: DeliveryStatus) {
    let mut f = [0u8; 64];
    let len = Repr {
        agent: *A.as_bytes(),
        epoch: 0,
        body: Body::Delivered {
            sender: *B.as_bytes(),
            seq,
            status,
        },
    }
    .emit(&mut f)
    .unwrap();
    n.handle_frame(h, now, N2, &f[..len]).unwrap();
}

/// A message in flight is sent once per round trip: scans woken again and again (as a driver
/// does after every agent call) do not send it again; one retransmission timeout later, a
/// refusal from the addressee's node, or a new location for the addressee does.
#[test]
fn a_message_in_flight_is_not_sent_again_by_every_scan() {
    const N3: NodeId = NodeId::from_bytes([3; 16]);
    let mut h = Host {
        owned: Some(1),
        outbox: Some((A, 1)),
        ..Host::default()
    };
    let cfg = Config::default();
    let mut n: TestNode = Node::new(N1, MemJournal::new(), cfg);
    n.start(&mut h, B).unwrap();
    n.set_location(A, N2, 0);
    let mut now = 1_000;
    let scan = |n: &mut TestNode, h: &mut Host, now: u64| {
        n.wake_messages(now);
        n.handle_timeout(h, now);
        sent(n, h)
    };
    assert_eq!(scan(&mut n, &mut h, now)[..], [(N2, 1)]);
    for _ in 0..20 {
        now += 1;
        assert!(scan(&mut n, &mut h, now).is_empty(), "sent again at {now}");
    }
    // One timeout after the first send: again.
    now = 1_000 + cfg.rto_ms;
    assert_eq!(scan(&mut n, &mut h, now)[..], [(N2, 1)]);
    assert!(scan(&mut n, &mut h, now + 1).is_empty());
    // The addressee's node answers "full": the next scan sends it again.
    answer(&mut n, &mut h, now + 2, 1, DeliveryStatus::Full);
    assert_eq!(scan(&mut n, &mut h, now + 3)[..], [(N2, 1)]);
    assert!(scan(&mut n, &mut h, now + 4).is_empty());
    // The addressee moved: sent to its new node at once.
    n.set_location(A, N3, 1);
    assert_eq!(scan(&mut n, &mut h, now + 5)[..], [(N3, 1)]);
    assert!(scan(&mut n, &mut h, now + 6).is_empty());
}

/// A refusal of message k (out of order: an earlier one is still on its way) sends k and
/// those after it again at the next scan, not the ones before it.
#[test]
fn a_refused_message_and_those_after_it_go_again_not_those_before() {
    let mut h = Host {
        owned: Some(1),
        outbox: Some((A, 1)),
        more: 3,
        ..Host::default()
    };
    let mut n: TestNode = Node::new(N1, MemJournal::new(), Config::default());
    n.start(&mut h, B).unwrap();
    n.set_location(A, N2, 0);
    let scan = |n: &mut TestNode, h: &mut Host, now: u64| {
        n.wake_messages(now);
        n.handle_timeout(h, now);
        sent(n, h)
    };
    assert_eq!(
        scan(&mut n, &mut h, 10)[..],
        [(N2, 1), (N2, 2), (N2, 3), (N2, 4)]
    );
    assert!(scan(&mut n, &mut h, 11).is_empty());
    answer(&mut n, &mut h, 12, 3, DeliveryStatus::OutOfOrder);
    assert_eq!(scan(&mut n, &mut h, 13)[..], [(N2, 3), (N2, 4)]);
    assert!(scan(&mut n, &mut h, 14).is_empty());
}

/// A message counted in flight that did not leave — the embedder's buffer too small for it,
/// or the transport dropped the frames for that node — goes again at the next scan, not one
/// retransmission timeout later.
#[test]
fn a_message_that_did_not_leave_goes_at_the_next_scan() {
    let mut h = Host {
        owned: Some(1),
        outbox: Some((A, 1)),
        ..Host::default()
    };
    let mut n: TestNode = Node::new(N1, MemJournal::new(), Config::default());
    n.start(&mut h, B).unwrap();
    n.set_location(A, N2, 0);
    n.wake_messages(10);
    n.handle_timeout(&mut h, 10);
    let mut small = [0u8; 40];
    assert!(matches!(
        n.poll_transmit(&mut h, &mut small),
        Err(MeshError::BufferTooSmall { .. })
    ));
    let scan = |n: &mut TestNode, h: &mut Host, now: u64| {
        n.wake_messages(now);
        n.handle_timeout(h, now);
        sent(n, h)
    };
    assert_eq!(scan(&mut n, &mut h, 11)[..], [(N2, 1)]);
    assert!(scan(&mut n, &mut h, 12).is_empty());
    n.not_delivered_to(N3_OTHER);
    assert!(scan(&mut n, &mut h, 13).is_empty(), "another node's drop");
    n.not_delivered_to(N2);
    assert_eq!(scan(&mut n, &mut h, 14)[..], [(N2, 1)]);
}

const N3_OTHER: NodeId = NodeId::from_bytes([9; 16]);
