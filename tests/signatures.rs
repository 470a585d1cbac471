//! Signed snapshots through a trust list: every rejection has its own error, epochs only move
//! forward, and a signature binds the source, the target and the epoch.
#![cfg(all(feature = "alloc", feature = "signatures"))]

mod common;

use common::{reseal, reseal_v2, sample_agent, SOURCE, TARGET};
use mielin_cells::migration::{
    key_id, DecodeLimits, DecodeOptions, Ed25519Signer, EncodeOptions, EpochTable,
    MigrationSnapshot, Route, StateEncoding, TrustList, TRAILER_LEN, V2_SIGNATURE_BLOCK_LEN,
};
use mielin_cells::{CellError, SignatureError};

/// Capture time of every snapshot here, and the receiver's clock.
pub const NOW: u64 = 1_790_000_000;

type Trust = TrustList<4, EpochTable<4>>;

fn signer(seed: u8) -> Ed25519Signer {
    Ed25519Signer::from_secret(&[seed; 32])
}

/// A trust list on `TARGET` that trusts `alice` for `SOURCE`.
fn trusting(alice: &Ed25519Signer) -> Trust {
    let mut trust = Trust::new(TARGET, EpochTable::new());
    trust.trust(SOURCE, alice.verifying_key()).unwrap();
    trust
}

fn signed(signer: &Ed25519Signer, epoch: u64) -> Vec<u8> {
    MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), NOW)
        .with_route(Route {
            target: TARGET,
            epoch,
        })
        .serialize_with(&EncodeOptions {
            signer: Some((signer, epoch)),
            ..Default::default()
        })
        .unwrap()
}

fn rejected(e: SignatureError) -> CellError {
    CellError::SignatureRejected(e)
}

fn open(trust: &mut Trust, bytes: &[u8]) -> Result<(), CellError> {
    trust
        .deserialize(bytes, &DecodeOptions::default(), NOW)
        .map(|_| ())
}

#[test]
fn signed_snapshot_is_accepted_once_per_epoch() {
    let alice = signer(1);
    let mut trust = trusting(&alice);
    let agent = sample_agent().id();

    open(&mut trust, &signed(&alice, 5)).unwrap();
    assert_eq!(trust.last_epoch(agent), Some(5));
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
    assert_eq!(trust.last_epoch(agent), Some(5));
    open(&mut trust, &signed(&alice, 6)).unwrap();
    assert_eq!(trust.last_epoch(agent), Some(6));

    // A signed snapshot also decodes without a trust list: the signature is then not checked.
    assert!(MigrationSnapshot::deserialize(&signed(&alice, 1)).is_ok());
}

#[test]
fn unsigned_unknown_and_forged_are_each_refused() {
    let alice = signer(1);
    let mallory = signer(2);
    let mut strict = trusting(&alice);

    let unsigned = MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), NOW)
        .with_route(Route {
            target: TARGET,
            epoch: 1,
        })
        .serialize()
        .unwrap();
    assert_eq!(
        open(&mut strict, &unsigned).unwrap_err(),
        rejected(SignatureError::Missing)
    );

    assert_eq!(
        open(&mut strict, &signed(&mallory, 1)).unwrap_err(),
        rejected(SignatureError::UnknownKey {
            key_id: key_id(&mallory.verifying_key())
        })
    );

    // One flipped bit in the signature's R, trailer recomputed: the signature fails.
    let mut forged = signed(&alice, 1);
    let sig_at = forged.len() - TRAILER_LEN - 64;
    forged[sig_at] ^= 1;
    reseal_v2(&mut forged);
    assert_eq!(
        open(&mut strict, &forged).unwrap_err(),
        rejected(SignatureError::Invalid)
    );

    // Mallory signs under Alice's key id: still invalid.
    let mut relabeled = signed(&mallory, 1);
    let block = relabeled.len() - TRAILER_LEN - V2_SIGNATURE_BLOCK_LEN;
    relabeled[block..block + 8].copy_from_slice(&key_id(&alice.verifying_key()));
    reseal_v2(&mut relabeled);
    assert_eq!(
        open(&mut strict, &relabeled).unwrap_err(),
        rejected(SignatureError::Invalid)
    );
    // Nothing was recorded by any refusal.
    assert_eq!(strict.last_epoch(sample_agent().id()), None);
}

#[test]
fn signature_covers_the_epoch_target_and_source() {
    let alice = signer(1);
    let mut trust = trusting(&alice);
    // Raise the epoch of a genuine snapshot by hand (to replay it as "newer").
    let mut bumped = signed(&alice, 1);
    bumped[88..96].copy_from_slice(&9u64.to_le_bytes());
    reseal_v2(&mut bumped);
    assert_eq!(
        open(&mut trust, &bumped).unwrap_err(),
        rejected(SignatureError::Invalid)
    );
    // Readdress a snapshot for another node to this one.
    let mut readdressed = MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), NOW)
        .with_route(Route {
            target: mielin_cells::NodeId::from_bytes([0x77; 16]),
            epoch: 1,
        })
        .serialize_with(&EncodeOptions {
            signer: Some((&alice, 1)),
            ..Default::default()
        })
        .unwrap();
    readdressed[72..88].copy_from_slice(TARGET.as_bytes());
    reseal_v2(&mut readdressed);
    assert_eq!(
        open(&mut trust, &readdressed).unwrap_err(),
        rejected(SignatureError::Invalid)
    );
    // Change the claimed source.
    let mut resourced = signed(&alice, 1);
    resourced[56..72].copy_from_slice(&[0x33; 16]);
    reseal_v2(&mut resourced);
    assert_eq!(
        open(&mut trust, &resourced).unwrap_err(),
        rejected(SignatureError::Invalid)
    );
}

#[test]
fn trust_list_capacity_is_enforced() {
    let mut trust = TrustList::<1, EpochTable<1>>::new(TARGET, EpochTable::new());
    trust.trust(SOURCE, signer(1).verifying_key()).unwrap();
    trust.trust(SOURCE, signer(1).verifying_key()).unwrap(); // again: no new entry
    assert!(matches!(
        trust.trust(SOURCE, signer(2).verifying_key()),
        Err(CellError::CapacityExceeded { capacity: 1, .. })
    ));
    let alice = signer(1);
    trust
        .deserialize(&signed(&alice, 1), &DecodeOptions::default(), NOW)
        .unwrap();
    // A second agent does not fit: refused before anything is accepted.
    let other = mielin_cells::Agent::with_id(
        mielin_cells::AgentId::from_bytes([9; 16]),
        sample_agent().dna().clone(),
    );
    let bytes = MigrationSnapshot::capture_at(&other, Some(SOURCE), NOW)
        .with_route(Route {
            target: TARGET,
            epoch: 1,
        })
        .serialize_with(&EncodeOptions {
            signer: Some((&alice, 1)),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(
        trust.deserialize(&bytes, &DecodeOptions::default(), NOW),
        Err(CellError::CapacityExceeded { capacity: 1, .. })
    ));
    assert_eq!(trust.last_epoch(other.id()), None);
}

#[test]
fn view_through_a_trust_list() {
    let alice = signer(1);
    let mut trust = trusting(&alice);
    let bytes = signed(&alice, 3);
    let view = trust.view(&bytes, &DecodeOptions::default(), NOW).unwrap();
    assert_eq!(view.agent_id(), sample_agent().id());
    assert_eq!(
        view.route(),
        Some(Route {
            target: TARGET,
            epoch: 3
        })
    );
    let chunked = MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), NOW)
        .with_route(Route {
            target: TARGET,
            epoch: 4,
        })
        .serialize_with(&EncodeOptions {
            signer: Some((&alice, 4)),
            state: StateEncoding::Chunked,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        trust
            .view(&chunked, &DecodeOptions::default(), NOW)
            .unwrap_err(),
        mielin_cells::DecodeError::StateNeedsAlloc.into()
    );
    // The refused view recorded nothing: the owned decode still takes epoch 4.
    assert_eq!(trust.last_epoch(sample_agent().id()), Some(3));
    trust
        .deserialize(&chunked, &DecodeOptions::default(), NOW)
        .unwrap();
    assert_eq!(trust.last_epoch(sample_agent().id()), Some(4));
}

#[test]
fn version_one_flipped_signature_bit_still_fails_the_trailer() {
    // The version-1 reseal helper still serves version 1: a changed byte without a reseal is
    // an integrity failure, not a signature one.
    let alice = signer(1);
    let mut bytes = MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), NOW)
        .serialize_with(&EncodeOptions {
            signer: Some((&alice, 1)),
            ..Default::default()
        })
        .unwrap();
    let n = bytes.len() - TRAILER_LEN - 1;
    bytes[n] ^= 1;
    assert!(matches!(
        MigrationSnapshot::deserialize(&bytes),
        Err(CellError::IntegrityMismatch { .. })
    ));
    reseal(&mut bytes);
    assert!(MigrationSnapshot::deserialize(&bytes).is_ok());
}

/// `admit` checks without recording; `record` records, and never lowers an epoch: two
/// containers admitted and recorded out of order leave the higher epoch, and a replay of it is
/// refused.
#[test]
fn admit_then_record_never_lowers_an_epoch() {
    let alice = signer(1);
    let mut trust = trusting(&alice);
    let limits = DecodeLimits::default();
    let (e3, e7) = (signed(&alice, 3), signed(&alice, 7));
    let a3 = trust.admit(&e3, &limits, NOW).unwrap();
    assert_eq!(a3.epoch(), 3);
    assert_eq!(trust.last_epoch(a3.agent()), None, "admit records nothing");
    let a7 = trust.admit(&e7, &limits, NOW).unwrap();
    trust.record(a7).unwrap();
    assert_eq!(
        trust.record(a3),
        Err(rejected(SignatureError::Stale { last: 7, found: 3 }))
    );
    let agent = trust
        .admit(&signed(&alice, 8), &limits, NOW)
        .unwrap()
        .agent();
    assert_eq!(trust.last_epoch(agent), Some(7));
    assert!(trust.admit(&e7, &limits, NOW).is_err(), "a replay of 7");
    assert!(trust.admit(&e3, &limits, NOW).is_err());
}
