//! A pinned peer that misbehaves (issue 20): the trust list's epoch table is never freed, so
//! each peer may create at most its quota of entries; one peer cannot lock another (or this
//! node) out of new agents, the refusal is counted, and the quota survives a restart.
#![cfg(all(feature = "std", feature = "signatures"))]

mod common;

use common::{sample_agent, TARGET};
use mielin_cells::mesh::FileJournal;
use mielin_cells::migration::{
    default_peer_quota, DecodeOptions, Ed25519Signer, EncodeOptions, EpochJournal, EpochRefusals,
    EpochTable, FileEpochJournal, MigrationSnapshot, Route, TrustList,
};
use mielin_cells::{Agent, AgentId, Capacity, CellError, LocalKey, NodeId};

const NOW: u64 = 1_790_000_000;
const P1: NodeId = NodeId::from_bytes([0x01; 16]);
const P2: NodeId = NodeId::from_bytes([0x02; 16]);

fn signer(seed: u8) -> Ed25519Signer {
    Ed25519Signer::from_secret(&[seed; 32])
}

/// `from` (signing with `key`) hands agent `i` to the target at `epoch`.
fn handoff(key: &Ed25519Signer, from: NodeId, i: u8, epoch: u64) -> Vec<u8> {
    let agent = Agent::with_id(AgentId::from_bytes([i; 16]), sample_agent().dna().clone());
    MigrationSnapshot::capture_at(&agent, Some(from), NOW)
        .with_route(Route {
            target: TARGET,
            epoch,
        })
        .serialize_with(&EncodeOptions {
            signer: Some((key, epoch)),
            ..Default::default()
        })
        .unwrap()
}

fn list<J: EpochJournal>(journal: J) -> TrustList<4, J> {
    let mut t = TrustList::new(TARGET, journal);
    t.trust(P1, signer(1).verifying_key()).unwrap();
    t.trust(P2, signer(2).verifying_key()).unwrap();
    t
}

fn accept<J: EpochJournal>(t: &mut TrustList<4, J>, bytes: &[u8]) -> Result<(), CellError> {
    t.deserialize(bytes, &DecodeOptions::default(), NOW)
        .map(|_| ())
}

fn over_quota(quota: usize) -> Result<(), CellError> {
    Err(CellError::CapacityExceeded {
        what: Capacity::PeerEpochQuota,
        capacity: quota,
        requested: quota + 1,
    })
}

#[test]
fn one_peer_cannot_exhaust_the_table_for_another() {
    let (k1, k2) = (signer(1), signer(2));
    let mut t = list(EpochTable::<4>::new());
    assert_eq!(t.peer_quota(), 2, "half the table by default");
    accept(&mut t, &handoff(&k1, P1, 1, 1)).unwrap();
    accept(&mut t, &handoff(&k1, P1, 2, 1)).unwrap();
    // P1 is pinned and trusted, and now sends new agents without end: refused, counted.
    for i in 3..10 {
        assert_eq!(accept(&mut t, &handoff(&k1, P1, i, 1)), over_quota(2));
    }
    assert_eq!(t.refusals().peer_quota, 7);
    // Its own agents still move.
    accept(&mut t, &handoff(&k1, P1, 1, 2)).unwrap();
    // P2 still gets its share.
    accept(&mut t, &handoff(&k2, P2, 10, 1)).unwrap();
    accept(&mut t, &handoff(&k2, P2, 11, 1)).unwrap();
    assert_eq!(accept(&mut t, &handoff(&k2, P2, 12, 1)), over_quota(2));
    let r: EpochRefusals = t.refusals();
    assert_eq!((r.peer_quota, r.journal_full), (8, 0));
    // The table is full: this node's own decision is charged to no peer, but needs room.
    assert_eq!(
        t.record_sent(AgentId::from_bytes([20; 16]), 1),
        Err(CellError::CapacityExceeded {
            what: Capacity::EpochJournal,
            capacity: 4,
            requested: 5
        })
    );
    assert_eq!(t.refusals().journal_full, 1);
    assert_eq!(
        (t.journal().created_by(P1), t.journal().created_by(P2)),
        (2, 2)
    );
}

#[test]
fn record_sent_is_charged_to_no_peer() {
    let k1 = signer(1);
    let mut t = list(EpochTable::<4>::new());
    t.record_sent(AgentId::from_bytes([30; 16]), 1).unwrap();
    t.record_sent(AgentId::from_bytes([31; 16]), 1).unwrap();
    assert_eq!(t.journal().created_by(P1), 0);
    accept(&mut t, &handoff(&k1, P1, 1, 1)).unwrap();
    accept(&mut t, &handoff(&k1, P1, 2, 1)).unwrap();
    assert_eq!(accept(&mut t, &handoff(&k1, P1, 3, 1)), over_quota(2));
}

#[test]
fn the_quota_is_configurable() {
    let k1 = signer(1);
    let mut t = list(EpochTable::<8>::new());
    assert_eq!(t.peer_quota(), default_peer_quota(8));
    t.set_peer_quota(1);
    accept(&mut t, &handoff(&k1, P1, 1, 1)).unwrap();
    assert_eq!(accept(&mut t, &handoff(&k1, P1, 2, 1)), over_quota(1));
    t.set_peer_quota(3);
    accept(&mut t, &handoff(&k1, P1, 2, 1)).unwrap();
    // A quota above the table's room: the table refuses, and says so.
    t.set_peer_quota(100);
    for i in 3..9 {
        accept(&mut t, &handoff(&k1, P1, i, 1)).unwrap();
    }
    assert!(matches!(
        accept(&mut t, &handoff(&k1, P1, 9, 1)),
        Err(CellError::CapacityExceeded {
            what: Capacity::EpochJournal,
            ..
        })
    ));
    assert_eq!(t.refusals().journal_full, 1);
    assert_eq!(
        default_peer_quota(1),
        1,
        "a table of one still takes one agent"
    );
}

/// The journal remembers which peer created each entry, so a restart does not hand a peer a
/// fresh quota (with either file journal).
#[test]
fn the_quota_survives_a_restart() {
    let (k1, k2) = (signer(1), signer(2));
    let dir = std::env::temp_dir().join(format!("mielin-epoch-quota-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = LocalKey::derive(&[0x33; 32], TARGET);
    let epochs = dir.join("epochs");
    {
        let mut t = list(FileEpochJournal::create(&epochs, TARGET, &key, 4).unwrap());
        accept(&mut t, &handoff(&k1, P1, 1, 1)).unwrap();
        accept(&mut t, &handoff(&k1, P1, 2, 1)).unwrap();
    } // restart
    let mut t = list(FileEpochJournal::open(&epochs, TARGET, &key, 4).unwrap());
    assert_eq!(accept(&mut t, &handoff(&k1, P1, 3, 1)), over_quota(2));
    accept(&mut t, &handoff(&k2, P2, 10, 1)).unwrap();

    let mesh = dir.join("journal");
    {
        let mut journal = FileJournal::create(&mesh, TARGET, &key, 4).unwrap();
        let mut t = list(&mut journal);
        accept(&mut t, &handoff(&k1, P1, 1, 1)).unwrap();
        accept(&mut t, &handoff(&k1, P1, 2, 1)).unwrap();
    }
    let mut journal = FileJournal::open(&mesh, TARGET, &key, 4).unwrap();
    let mut t = list(&mut journal);
    assert_eq!(accept(&mut t, &handoff(&k1, P1, 3, 1)), over_quota(2));
    accept(&mut t, &handoff(&k2, P2, 10, 1)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
