//! What an on-path attacker without a trusted key can do, attack by attack (issue: "Close what
//! an on-path attacker can do without a key"). Each test replays a finding of the adversarial
//! review against today's receivers and asserts the refusal and the check that makes it.
//! `docs/security.md` lists them with the test names.
#![cfg(all(feature = "std", feature = "signatures"))]

mod common;

use common::{reseal_v2, sample_agent, v2_tail_start, SOURCE, TARGET};
use mielin_cells::migration::{
    DecodeOptions, Ed25519Signer, EncodeOptions, EpochJournal, EpochTable, FileEpochJournal,
    MigrationSnapshot, Route, TrustList, MAX_EPOCH, SIGNATURE_CONTEXT, TRAILER_LEN,
    V2_SIGNATURE_BLOCK_LEN,
};
use mielin_cells::{sha256, AgentId, CellError, LocalKey, NodeId, SignatureError};

const NOW: u64 = 1_790_000_000;
const T1: NodeId = NodeId::from_bytes([0x11; 16]);
const T2: NodeId = NodeId::from_bytes([0x22; 16]);

fn key(seed: u8) -> Ed25519Signer {
    Ed25519Signer::from_secret(&[seed; 32])
}

/// `from`'s key signs a hand-off of the sample agent from `from` to `to` at `epoch`.
fn handoff(signer: &Ed25519Signer, from: NodeId, to: NodeId, epoch: u64) -> Vec<u8> {
    handoff_at(signer, from, to, epoch, NOW)
}

fn handoff_at(signer: &Ed25519Signer, from: NodeId, to: NodeId, epoch: u64, at: u64) -> Vec<u8> {
    MigrationSnapshot::capture_at(&sample_agent(), Some(from), at)
        .with_route(Route { target: to, epoch })
        .serialize_with(&EncodeOptions {
            signer: Some((signer, epoch)),
            ..Default::default()
        })
        .unwrap()
}

/// A receiver `node` trusting each `(node, key)`.
fn receiver<J: EpochJournal>(
    node: NodeId,
    journal: J,
    peers: &[(NodeId, &Ed25519Signer)],
) -> TrustList<4, J> {
    let mut t = TrustList::new(node, journal);
    for (n, k) in peers {
        t.trust(*n, k.verifying_key()).unwrap();
    }
    t
}

fn accept<J: EpochJournal>(t: &mut TrustList<4, J>, bytes: &[u8]) -> Result<(), CellError> {
    t.deserialize(bytes, &DecodeOptions::default(), NOW)
        .map(|_| ())
}

fn refused(e: SignatureError) -> Result<(), CellError> {
    Err(CellError::SignatureRejected(e))
}

/// High: a snapshot S sent to T1 is refused by T2, which trusts S as much as T1 does.
#[test]
fn cross_receiver_replay_is_refused() {
    let s = key(1);
    let mut t1 = receiver(T1, EpochTable::<4>::new(), &[(SOURCE, &s)]);
    let mut t2 = receiver(T2, EpochTable::<4>::new(), &[(SOURCE, &s)]);
    let to_t1 = handoff(&s, SOURCE, T1, 1);
    accept(&mut t1, &to_t1).unwrap();
    assert_eq!(
        accept(&mut t2, &to_t1),
        refused(SignatureError::WrongTarget { target: T1 })
    );
    assert_eq!(t2.last_epoch(sample_agent().id()), None);
}

/// High: along a chain S -> T1 (1), T1 -> T2 (2), T2 -> S (3), replaying either earlier
/// hand-off to T1 is refused: the one addressed to S by its target, and T1's own inbound one
/// because T1 recorded sending the agent on at epoch 2.
#[test]
fn chain_replay_is_refused() {
    let (s, k1, k2) = (key(1), key(2), key(3));
    let peers = [(SOURCE, &s), (T1, &k1), (T2, &k2)];
    let mut at_s = receiver(SOURCE, EpochTable::<4>::new(), &peers);
    let mut at_t1 = receiver(T1, EpochTable::<4>::new(), &peers);
    let mut at_t2 = receiver(T2, EpochTable::<4>::new(), &peers);
    let agent = sample_agent().id();

    let hop1 = handoff(&s, SOURCE, T1, 1);
    at_s.record_sent(agent, 1).unwrap();
    accept(&mut at_t1, &hop1).unwrap();
    let hop2 = handoff(&k1, T1, T2, 2);
    at_t1.record_sent(agent, 2).unwrap();
    accept(&mut at_t2, &hop2).unwrap();
    let hop3 = handoff(&k2, T2, SOURCE, 3);
    at_t2.record_sent(agent, 3).unwrap();
    accept(&mut at_s, &hop3).unwrap();

    assert_eq!(
        accept(&mut at_t1, &hop3),
        refused(SignatureError::WrongTarget { target: SOURCE })
    );
    assert_eq!(
        accept(&mut at_t1, &hop1),
        refused(SignatureError::Stale { last: 2, found: 1 })
    );
    assert_eq!(
        accept(&mut at_s, &hop3),
        refused(SignatureError::Stale { last: 3, found: 3 })
    );
}

/// High: a receiver restarted from its journal file refuses what it accepted before.
#[test]
fn replay_after_restart_is_refused() {
    let dir = std::env::temp_dir().join(format!("mielin-attacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("epochs.journal");
    let _ = std::fs::remove_file(&path);
    let s = key(1);
    let bytes = handoff(&s, SOURCE, TARGET, 7);
    let sealed = LocalKey::derive(&[0x7a; 32], TARGET);
    {
        let journal = FileEpochJournal::create(&path, TARGET, &sealed, 16).unwrap();
        let mut t = receiver(TARGET, journal, &[(SOURCE, &s)]);
        accept(&mut t, &bytes).unwrap();
    } // the process dies
    let journal = FileEpochJournal::open(&path, TARGET, &sealed, 16).unwrap();
    let mut t = receiver(TARGET, journal, &[(SOURCE, &s)]);
    assert_eq!(
        accept(&mut t, &bytes),
        refused(SignatureError::Stale { last: 7, found: 7 })
    );
    // A torn record at the end (a crash mid-write) is ignored; the whole ones still count.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, &[0xab; 10]).unwrap();
    let journal = FileEpochJournal::open(&path, TARGET, &sealed, 16).unwrap();
    assert_eq!(journal.last_epoch(sample_agent().id()), Some(7));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// High where lenient lists were deployed: stripping the signature (and recomputing the
/// trailer) or forging an unsigned snapshot gets nowhere, because trust lists take signed
/// snapshots only.
#[test]
fn downgrade_to_unsigned_is_refused() {
    let s = key(1);
    let mut t = receiver(TARGET, EpochTable::<4>::new(), &[(SOURCE, &s)]);
    accept(&mut t, &handoff(&s, SOURCE, TARGET, 1)).unwrap();
    accept(&mut t, &handoff(&s, SOURCE, TARGET, 2)).unwrap();

    // Strip epoch 1's signature block, clear the flag, reseal.
    let signed = handoff(&s, SOURCE, TARGET, 3);
    let cut = signed.len() - TRAILER_LEN - V2_SIGNATURE_BLOCK_LEN;
    let mut stripped = signed[..cut].to_vec();
    stripped.extend_from_slice(&[0; TRAILER_LEN]);
    stripped[6] &= !0x08;
    reseal_v2(&mut stripped);
    assert!(
        MigrationSnapshot::deserialize(&stripped).is_ok(),
        "well formed, unsigned"
    );
    assert_eq!(accept(&mut t, &stripped), refused(SignatureError::Missing));

    // A forged unsigned snapshot of the agent with other memory.
    let mut agent = sample_agent();
    agent.set_wasm_state(vec![0x66; 64]);
    let forged = MigrationSnapshot::capture_at(&agent, Some(SOURCE), NOW)
        .with_route(Route {
            target: TARGET,
            epoch: 9,
        })
        .serialize()
        .unwrap();
    assert_eq!(accept(&mut t, &forged), refused(SignatureError::Missing));
    // A version-1 signed snapshot binds no target: refused too.
    let v1 = MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), NOW)
        .serialize_with(&EncodeOptions {
            signer: Some((&s, 10)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(accept(&mut t, &v1), refused(SignatureError::Unbound));
    assert_eq!(t.last_epoch(sample_agent().id()), Some(2));
}

/// Medium (DoS): replays of other agents' snapshots, addressed elsewhere or stale, take no
/// slot; a legitimate new agent still gets one.
#[test]
fn sequence_table_cannot_be_filled_by_replays() {
    let s = key(1);
    let mut t = TrustList::<4, _>::new(TARGET, EpochTable::<2>::new());
    t.trust(SOURCE, s.verifying_key()).unwrap();
    for i in 0..100u8 {
        let other = mielin_cells::Agent::with_id(
            AgentId::from_bytes([i; 16]),
            sample_agent().dna().clone(),
        );
        let elsewhere = MigrationSnapshot::capture_at(&other, Some(SOURCE), NOW)
            .with_route(Route {
                target: T1,
                epoch: 1,
            })
            .serialize_with(&EncodeOptions {
                signer: Some((&s, 1)),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            accept(&mut t, &elsewhere),
            refused(SignatureError::WrongTarget { target: T1 })
        );
    }
    assert!(t.journal().is_empty());
    accept(&mut t, &handoff(&s, SOURCE, TARGET, 1)).unwrap();
    assert_eq!(t.journal().len(), 1);
}

/// Smaller: a timestamp beyond the allowed skew is refused, a maximum age holds, and the age
/// helper says "from the future" instead of 0.
#[test]
fn future_and_old_timestamps_are_refused() {
    let s = key(1);
    let mut t = receiver(TARGET, EpochTable::<4>::new(), &[(SOURCE, &s)]);
    let future = handoff_at(&s, SOURCE, TARGET, 1, NOW + 301);
    assert_eq!(
        accept(&mut t, &future),
        refused(SignatureError::FromTheFuture {
            timestamp: NOW + 301,
            now: NOW
        })
    );
    let snapshot = MigrationSnapshot::deserialize(&future).unwrap();
    assert_eq!(snapshot.age_seconds_at(NOW), None);
    assert_eq!(snapshot.age_seconds_at(NOW + 302), Some(1));
    // Within the skew: accepted.
    accept(&mut t, &handoff_at(&s, SOURCE, TARGET, 2, NOW + 300)).unwrap();

    t.set_max_age(Some(60));
    assert_eq!(
        accept(&mut t, &handoff_at(&s, SOURCE, TARGET, 3, NOW - 61)),
        refused(SignatureError::TooOld { age: 61, max: 60 })
    );
    accept(&mut t, &handoff_at(&s, SOURCE, TARGET, 3, NOW - 60)).unwrap();
}

/// Smaller: an epoch of u64::MAX (or anything above MAX_EPOCH) is refused, so no snapshot can
/// leave an agent without a higher epoch to move at.
#[test]
fn epoch_lockout_is_bounded() {
    let s = key(1);
    let mut t = receiver(TARGET, EpochTable::<4>::new(), &[(SOURCE, &s)]);
    for epoch in [u64::MAX, MAX_EPOCH + 1] {
        assert_eq!(
            accept(&mut t, &handoff(&s, SOURCE, TARGET, epoch)),
            refused(SignatureError::EpochOutOfRange { found: epoch })
        );
    }
    assert_eq!(t.last_epoch(sample_agent().id()), None);
    accept(&mut t, &handoff(&s, SOURCE, TARGET, MAX_EPOCH - 1)).unwrap();
    accept(&mut t, &handoff(&s, SOURCE, TARGET, MAX_EPOCH)).unwrap();
}

/// Smaller: a signature over the bare digest (what a key used for something else would sign)
/// does not verify as a snapshot signature: snapshots sign a context string first.
#[test]
fn signatures_are_domain_separated() {
    use ed25519_dalek::{Signer as _, SigningKey};
    let secret = [1u8; 32];
    let s = key(1);
    let mut t = receiver(TARGET, EpochTable::<4>::new(), &[(SOURCE, &s)]);
    let mut bytes = handoff(&s, SOURCE, TARGET, 1);
    // The digest the genuine signature covers, recomputed from the spec.
    let tail = v2_tail_start(&bytes);
    let sig_at = bytes.len() - TRAILER_LEN - 64;
    let mut covered = bytes[..160].to_vec();
    covered.extend_from_slice(&bytes[tail..sig_at]); // tail and key id
    let digest = sha256(&covered);
    let key = SigningKey::from_bytes(&secret);
    let mut message = SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(&digest);
    assert_eq!(
        &bytes[sig_at..sig_at + 64],
        &key.sign(&message).to_bytes()[..]
    );
    // The same key over the bare digest: refused.
    bytes[sig_at..sig_at + 64].copy_from_slice(&key.sign(&digest).to_bytes());
    reseal_v2(&mut bytes);
    assert_eq!(accept(&mut t, &bytes), refused(SignatureError::Invalid));
}

/// Smaller: a trusted key speaks for one node; it cannot claim another source.
#[test]
fn a_key_cannot_claim_another_source() {
    let (s, k1) = (key(1), key(2));
    let mut t = receiver(TARGET, EpochTable::<4>::new(), &[(SOURCE, &s), (T1, &k1)]);
    assert_eq!(
        accept(&mut t, &handoff(&k1, SOURCE, TARGET, 1)),
        refused(SignatureError::WrongSource {
            claimed: Some(SOURCE)
        })
    );
    accept(&mut t, &handoff(&s, SOURCE, TARGET, 1)).unwrap();
}

/// Smaller: weak keys and a key trusted for two nodes are refused by `trust()`.
#[test]
fn weak_keys_and_key_id_collisions_are_refused() {
    let mut t = TrustList::<4, _>::new(TARGET, EpochTable::<4>::new());
    // The identity point: small order, verifies forged signatures.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    assert_eq!(
        t.trust(SOURCE, weak),
        Err(CellError::SignatureRejected(SignatureError::WeakKey))
    );
    let s = key(1);
    t.trust(SOURCE, s.verifying_key()).unwrap();
    t.trust(SOURCE, s.verifying_key()).unwrap(); // the same binding again: nothing changes
    assert_eq!(
        t.trust(T1, s.verifying_key()),
        Err(CellError::SignatureRejected(
            SignatureError::KeyIdCollision {
                key_id: mielin_cells::migration::key_id(&s.verifying_key())
            }
        ))
    );
}

/// Smaller: a malleated signature (s + L) is refused whatever ed25519-dalek's features.
#[test]
fn malleated_signatures_are_refused() {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let s = key(1);
    let mut t = receiver(TARGET, EpochTable::<4>::new(), &[(SOURCE, &s)]);
    let mut bytes = handoff(&s, SOURCE, TARGET, 1);
    let at = bytes.len() - TRAILER_LEN - 32;
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(bytes[at + i]) + u16::from(L[i]) + carry;
        bytes[at + i] = sum as u8;
        carry = sum >> 8;
    }
    reseal_v2(&mut bytes);
    assert_eq!(accept(&mut t, &bytes), refused(SignatureError::Malleable));
}

/// The node's one journal (the mesh's file journal) keeps the trust list's epochs too: lent to
/// a trust list, it refuses a replay after a restart.
#[test]
fn replay_after_restart_is_refused_with_the_mesh_journal() {
    use mielin_cells::mesh::FileJournal;
    let dir = std::env::temp_dir().join(format!("mielin-attacks-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.journal");
    let _ = std::fs::remove_file(&path);
    let s = key(1);
    let bytes = handoff(&s, SOURCE, TARGET, 3);
    let sealed = LocalKey::derive(&[0x7a; 32], TARGET);
    {
        let mut journal = FileJournal::create(&path, TARGET, &sealed, 16).unwrap();
        let mut t = receiver(TARGET, &mut journal, &[(SOURCE, &s)]);
        accept(&mut t, &bytes).unwrap();
    }
    let mut journal = FileJournal::open(&path, TARGET, &sealed, 16).unwrap();
    let mut t = receiver(TARGET, &mut journal, &[(SOURCE, &s)]);
    assert_eq!(
        accept(&mut t, &bytes),
        refused(SignatureError::Stale { last: 3, found: 3 })
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
