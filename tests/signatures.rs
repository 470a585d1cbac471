//! Signed snapshots through a trust list: every rejection has its own error, and sequence
//! numbers only move forward.
#![cfg(all(feature = "alloc", feature = "signatures"))]

mod common;

use common::{reseal, sample_agent, SOURCE};
use mielin_cells::migration::{
    key_id, DecodeOptions, Ed25519Signer, EncodeOptions, MigrationSnapshot, StateEncoding,
    TrustList, SIGNATURE_BLOCK_LEN, TRAILER_LEN,
};
use mielin_cells::{CellError, SignatureError};

fn signer(seed: u8) -> Ed25519Signer {
    Ed25519Signer::from_secret(&[seed; 32])
}

fn signed(signer: &Ed25519Signer, sequence: u64) -> Vec<u8> {
    MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), 1_790_000_000)
        .serialize_with(&EncodeOptions {
            signer: Some((signer, sequence)),
            ..Default::default()
        })
        .unwrap()
}

fn rejected(e: SignatureError) -> CellError {
    CellError::SignatureRejected(e)
}

fn open(trust: &mut TrustList<4, 4>, bytes: &[u8]) -> Result<(), CellError> {
    trust
        .deserialize(bytes, &DecodeOptions::default())
        .map(|_| ())
}

#[test]
fn signed_snapshot_is_accepted_once_per_sequence_number() {
    let alice = signer(1);
    let mut trust = TrustList::<4, 4>::new(true);
    trust.trust(alice.verifying_key()).unwrap();
    let agent = sample_agent().id();

    open(&mut trust, &signed(&alice, 5)).unwrap();
    assert_eq!(trust.last_sequence(agent), Some(5));
    // Replaying it, or an older one, is refused and changes nothing.
    for old in [5, 4, 0] {
        assert_eq!(
            open(&mut trust, &signed(&alice, old)).unwrap_err(),
            rejected(SignatureError::Stale {
                last: 5,
                found: old
            })
        );
    }
    assert_eq!(trust.last_sequence(agent), Some(5));
    open(&mut trust, &signed(&alice, 6)).unwrap();
    assert_eq!(trust.last_sequence(agent), Some(6));

    // A signed snapshot also decodes without a trust list: the signature is then not checked.
    assert!(MigrationSnapshot::deserialize(&signed(&alice, 1)).is_ok());
}

#[test]
fn unsigned_unknown_and_forged_are_each_refused() {
    let alice = signer(1);
    let mallory = signer(2);
    let mut strict = TrustList::<4, 4>::new(true);
    strict.trust(alice.verifying_key()).unwrap();

    let unsigned = MigrationSnapshot::capture_at(&sample_agent(), None, 0)
        .serialize()
        .unwrap();
    assert_eq!(
        open(&mut strict, &unsigned).unwrap_err(),
        rejected(SignatureError::Missing)
    );
    let mut lenient = TrustList::<4, 4>::new(false);
    lenient.trust(alice.verifying_key()).unwrap();
    open(&mut lenient, &unsigned).unwrap();

    assert_eq!(
        open(&mut strict, &signed(&mallory, 1)).unwrap_err(),
        rejected(SignatureError::UnknownKey {
            key_id: key_id(&mallory.verifying_key())
        })
    );

    // One flipped bit in the signature, trailer recomputed: the signature fails.
    let mut forged = signed(&alice, 1);
    let sig_at = forged.len() - TRAILER_LEN - 64;
    forged[sig_at] ^= 1;
    reseal(&mut forged);
    assert_eq!(
        open(&mut strict, &forged).unwrap_err(),
        rejected(SignatureError::Invalid)
    );

    // Mallory re-signs Alice's snapshot under Alice's key id: still invalid.
    let mut relabeled = signed(&mallory, 1);
    let block = relabeled.len() - TRAILER_LEN - SIGNATURE_BLOCK_LEN;
    relabeled[block..block + 8].copy_from_slice(&key_id(&alice.verifying_key()));
    reseal(&mut relabeled);
    assert_eq!(
        open(&mut strict, &relabeled).unwrap_err(),
        rejected(SignatureError::Invalid)
    );
    // Nothing was recorded by any refusal.
    assert_eq!(strict.last_sequence(sample_agent().id()), None);
}

#[test]
fn signature_covers_the_sequence_number() {
    let alice = signer(1);
    let mut trust = TrustList::<4, 4>::new(true);
    trust.trust(alice.verifying_key()).unwrap();
    // Raise the sequence number of a genuine snapshot by hand (to replay it as "newer").
    let mut bumped = signed(&alice, 1);
    let seq_at = bumped.len() - TRAILER_LEN - 64 - 8;
    bumped[seq_at..seq_at + 8].copy_from_slice(&9u64.to_le_bytes());
    reseal(&mut bumped);
    assert_eq!(
        open(&mut trust, &bumped).unwrap_err(),
        rejected(SignatureError::Invalid)
    );
}

#[test]
fn trust_list_capacity_is_enforced() {
    let mut trust = TrustList::<1, 1>::new(true);
    trust.trust(signer(1).verifying_key()).unwrap();
    trust.trust(signer(1).verifying_key()).unwrap(); // again: no new entry
    assert!(matches!(
        trust.trust(signer(2).verifying_key()),
        Err(CellError::CapacityExceeded { capacity: 1, .. })
    ));
    let alice = signer(1);
    trust
        .deserialize(&signed(&alice, 1), &DecodeOptions::default())
        .unwrap();
    // A second agent does not fit: refused before anything is accepted.
    let mut other = sample_agent();
    other.set_globals(&[]).unwrap();
    let other = mielin_cells::Agent::with_id(
        mielin_cells::AgentId::from_bytes([9; 16]),
        other.dna().clone(),
    );
    let bytes = MigrationSnapshot::capture_at(&other, None, 0)
        .serialize_with(&EncodeOptions {
            signer: Some((&alice, 1)),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(
        trust.deserialize(&bytes, &DecodeOptions::default()),
        Err(CellError::CapacityExceeded { capacity: 1, .. })
    ));
}

#[test]
fn view_through_a_trust_list() {
    let alice = signer(1);
    let mut trust = TrustList::<4, 4>::new(true);
    trust.trust(alice.verifying_key()).unwrap();
    let bytes = signed(&alice, 3);
    let view = trust.view(&bytes, &DecodeOptions::default()).unwrap();
    assert_eq!(view.agent_id(), sample_agent().id());
    let chunked = MigrationSnapshot::capture_at(&sample_agent(), None, 0)
        .serialize_with(&EncodeOptions {
            signer: Some((&alice, 4)),
            state: StateEncoding::Chunked,
            ..Default::default()
        })
        .unwrap();
    assert!(trust.view(&chunked, &DecodeOptions::default()).is_err());
    assert!(trust
        .deserialize(&chunked, &DecodeOptions::default())
        .is_ok());
}
