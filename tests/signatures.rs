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

/// Signed fleet records (`mesh::fleet`): the golden vectors, every bit flip and length refused,
/// fields out of range refused even when validly signed, a key that speaks only for its own
/// node, stale sequence numbers, and locations resolved by the highest epoch.
/// `MIELIN_WRITE_VECTORS=1` rewrites the two vectors, only for a deliberate format change.
mod fleet_records {
    use mielin_cells::mesh::fleet::{
        node_of, sign, Body, FleetError, FleetRecord, Freshness, Location, Locations, Status,
        CAN_REWIND, LOCATION_LEN, MAX_RECORD_LEN, SIGNATURE_CONTEXT, STATUS_LEN,
    };
    use mielin_cells::migration::{Ed25519Signer, SnapshotSigner};
    use mielin_cells::{AgentId, Arch, MAX_EPOCH};
    use proptest::prelude::*;

    /// The published test key of tests/vectors/README.md.
    const SEED: [u8; 32] = [7; 32];
    const AGENT: AgentId = AgentId::from_bytes([0x11; 16]);

    fn status() -> Body {
        Body::Status(Status {
            arch: Arch::Aarch64,
            battery_percent: 87,
            load_percent: 12,
            free_memory_kib: 65_536,
            agents: 3,
            capabilities: CAN_REWIND,
        })
    }

    fn location(epoch: u64) -> Body {
        Body::Location(Location {
            agent: AGENT,
            epoch,
        })
    }

    fn signed(seed: &[u8; 32], seq: u64, body: &Body) -> Vec<u8> {
        let mut out = [0u8; MAX_RECORD_LEN];
        let n = sign(seed, seq, body, &mut out).unwrap();
        out[..n].to_vec()
    }

    /// Signs `bytes` again as they are (a forger with the key: the signature is valid, the
    /// fields are whatever the bytes say).
    fn resign(bytes: &mut [u8]) {
        let n = bytes.len() - 64;
        let mut m = SIGNATURE_CONTEXT.to_vec();
        m.push(0);
        m.extend_from_slice(&bytes[..n]);
        let sig = Ed25519Signer::from_secret(&SEED).sign(&m);
        bytes[n..].copy_from_slice(&sig);
    }

    fn vector(name: &str, bytes: &[u8]) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(name);
        if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
            std::fs::write(&path, bytes).unwrap();
        }
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn the_golden_vectors_decode_to_what_was_signed() {
        let key = Ed25519Signer::from_secret(&SEED).verifying_key().to_bytes();
        for (name, seq, body, len) in [
            ("fleet-status.bin", 5, status(), STATUS_LEN),
            ("fleet-location.bin", 9, location(7), LOCATION_LEN),
        ] {
            let bytes = signed(&SEED, seq, &body);
            assert_eq!(bytes.len(), len);
            assert_eq!(vector(name, &bytes), bytes, "{name}: the format changed");
            let r = FleetRecord::verify(&bytes).unwrap();
            assert_eq!((r.seq, r.body, r.key), (seq, body, key), "{name}");
            assert_eq!(r.node, node_of(&key));
        }
    }

    #[test]
    fn every_bit_flip_and_every_other_length_is_refused() {
        for bytes in [signed(&SEED, 5, &status()), signed(&SEED, 9, &location(7))] {
            for i in 0..bytes.len() * 8 {
                let mut b = bytes.clone();
                b[i / 8] ^= 1 << (i % 8);
                assert!(FleetRecord::verify(&b).is_err(), "bit {i} flipped");
            }
            for n in 0..bytes.len() {
                assert!(FleetRecord::verify(&bytes[..n]).is_err(), "cut at {n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                FleetRecord::verify(&longer),
                Err(FleetError::Length { .. })
            ));
        }
    }

    #[test]
    fn fields_out_of_range_are_refused_even_when_validly_signed() {
        let base = signed(&SEED, 5, &status());
        // Offsets in the status body, which starts at 44.
        for (at, v, what) in [
            (44, 7, "architecture"),
            (45, 101, "battery percent"),
            (46, 101, "load percent"),
            (47, 1, "reserved bits"),
            (56, 4, "reserved bits"),
            (58, 1, "reserved bits"),
        ] {
            let mut b = base.clone();
            b[at] = v;
            resign(&mut b);
            assert_eq!(
                FleetRecord::verify(&b),
                Err(FleetError::OutOfRange(what)),
                "byte {at} = {v}"
            );
        }
        let mut b = signed(&SEED, 9, &location(7));
        b[60..68].copy_from_slice(&(MAX_EPOCH + 1).to_le_bytes());
        resign(&mut b);
        assert_eq!(
            FleetRecord::verify(&b),
            Err(FleetError::OutOfRange("epoch"))
        );
        // And the signer refuses to write them.
        let mut out = [0u8; MAX_RECORD_LEN];
        assert_eq!(sign(&SEED, 1, &location(MAX_EPOCH + 1), &mut out), None);
        assert_eq!(sign(&SEED, 1, &status(), &mut out[..STATUS_LEN - 1]), None);
    }

    #[test]
    fn a_key_speaks_only_for_its_own_node() {
        // Another key's record with this key put in: the signature no longer verifies.
        let mine = signed(&SEED, 5, &status());
        let mut theirs = signed(&[9; 32], 5, &status());
        theirs[4..36].copy_from_slice(&mine[4..36]);
        assert_eq!(FleetRecord::verify(&theirs), Err(FleetError::BadSignature));
        // A record is for the node its key hashes to; there is no field to claim another.
        let a = FleetRecord::verify(&mine).unwrap();
        let b = FleetRecord::verify(&signed(&[9; 32], 5, &status())).unwrap();
        assert_ne!(a.node, b.node);
    }

    #[test]
    fn stale_records_are_refused_and_locations_take_the_highest_epoch() {
        let mut fresh: Freshness<8> = Freshness::default();
        let r = |seed: u8, seq, body: Body| {
            FleetRecord::verify(&signed(&[seed; 32], seq, &body)).unwrap()
        };
        fresh.admit(&r(7, 5, status())).unwrap();
        assert_eq!(
            fresh.admit(&r(7, 5, status())),
            Err(FleetError::Stale { seq: 5, last: 5 })
        );
        assert!(fresh.admit(&r(7, 4, status())).is_err());
        fresh.admit(&r(7, 6, status())).unwrap();
        // Sequences are per node, kind and agent: a location at 1 is not stale.
        fresh.admit(&r(7, 1, location(3))).unwrap();
        fresh.admit(&r(9, 1, status())).unwrap();

        let mut at: Locations<4> = Locations::default();
        let (a, b) = (r(7, 1, location(3)), r(9, 1, location(5)));
        at.note(&a);
        at.note(&b);
        // A lower epoch claimed later changes nothing.
        at.note(&r(7, 2, location(4)));
        assert_eq!(at.resolve(AGENT), Some((b.node, 5)));
        assert_eq!(at.resolve(AgentId::from_bytes([2; 16])), None);
    }

    proptest! {
        // Each case signs and verifies twice (and CI runs these under qemu too).
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_status_and_location_round_trip(
            arch in 0u8..7, battery in 0u8..=100, load in 0u8..=100, free: u32, agents: u32,
            caps in 0u16..4, seq: u64, epoch in 0..=MAX_EPOCH, agent: [u8; 16],
        ) {
            let arch = Arch::from_tag(arch).unwrap();
            // Every combination of CAN_REWIND and DRAINING (bits 0 and 1).
            let s = Body::Status(Status {
                arch, battery_percent: battery, load_percent: load, free_memory_kib: free,
                agents, capabilities: caps,
            });
            let l = Body::Location(Location { agent: AgentId::from_bytes(agent), epoch });
            for body in [s, l] {
                let r = FleetRecord::verify(&signed(&SEED, seq, &body)).unwrap();
                prop_assert_eq!((r.seq, r.body), (seq, body));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FleetRecord::verify(&bytes);
        }
    }
}
