//! Fleet membership by certificate (issue 24): a fleet key issues node certificates and signs
//! the revocation list (`quic::FleetCa`); `FleetAnchor::verify` admits a node only with a
//! certificate of this fleet's key, in its validity, not revoked by a current list of the same
//! key. Each attack below must be refused for its reason, and no changed byte of a certificate
//! or a list may admit anyone.
//!
//! `MIELIN_WRITE_VECTORS=1 cargo test --features quic --test fleet_certificates` rewrites the
//! golden vectors `tests/certificates/fleet-{ca,node,crl}.der` (the fuzz seeds).
#![cfg(feature = "quic")]

use mielin_cells::mesh::fleet_certificate::{FleetAnchor, Member, MemberError};
use mielin_cells::quic::{FleetCa, Identity};
use mielin_cells::Arch;
use std::path::PathBuf;

/// "Now" for the tests: 2027-01-15.
const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn fleet() -> FleetCa {
    FleetCa::new(Identity::from_seed([0xf1; 32]), "lab")
}

fn node() -> Identity {
    Identity::from_seed([0x0a; 32])
}

/// The node's certificate, serial 7, valid 100 days around NOW.
fn cert(ca: &FleetCa) -> Vec<u8> {
    ca.issue(
        node().public_key(),
        "node-a",
        Arch::Aarch64,
        7,
        NOW - 50 * DAY,
        NOW + 50 * DAY,
    )
    .unwrap()
}

/// Revocation list number 1, revoking `revoked`, current from 10 days before NOW to 20 after.
fn crl(ca: &FleetCa, revoked: &[u64]) -> Vec<u8> {
    ca.revocation_list(1, NOW - 10 * DAY, NOW + 20 * DAY, revoked)
        .unwrap()
}

fn anchor(ca: &FleetCa) -> FleetAnchor {
    FleetAnchor::from_der(&ca.certificate().unwrap()).unwrap()
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/certificates")
}

#[test]
fn an_issued_certificate_names_its_node() {
    let ca = fleet();
    let a = anchor(&ca);
    assert_eq!(a.key(), Some(ca.public_key().0));
    let m = a.verify(&cert(&ca), &crl(&ca, &[3, 9]), NOW);
    assert_eq!(
        m,
        Ok(Member {
            key: node().public_key().0,
            name: "node-a".into(),
            arch: Arch::Aarch64,
        })
    );
}

/// The fleet certificate depends on the key and the fleet's name only: every copy is the same
/// bytes, and the golden vectors still verify (a dependency that changed the encoding, or a
/// change to the checks, shows here).
#[test]
fn golden_vectors() {
    let ca = fleet();
    let (ca_der, node_der, crl_der) = (ca.certificate().unwrap(), cert(&ca), crl(&ca, &[3]));
    assert_eq!(ca_der, ca.certificate().unwrap(), "deterministic");
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(vectors().join("fleet-ca.der"), &ca_der).unwrap();
        std::fs::write(vectors().join("fleet-node.der"), &node_der).unwrap();
        std::fs::write(vectors().join("fleet-crl.der"), &crl_der).unwrap();
    }
    let read = |n: &str| std::fs::read(vectors().join(n)).unwrap();
    assert_eq!(
        read("fleet-ca.der"),
        ca_der,
        "the fleet certificate's bytes"
    );
    assert_eq!(
        read("fleet-node.der"),
        node_der,
        "the node certificate's bytes"
    );
    assert_eq!(
        read("fleet-crl.der"),
        crl_der,
        "the revocation list's bytes"
    );
    let a = FleetAnchor::from_der(&read("fleet-ca.der")).unwrap();
    let m = a
        .verify(&read("fleet-node.der"), &read("fleet-crl.der"), NOW)
        .unwrap();
    assert_eq!(m.key, node().public_key().0);
}

#[test]
fn another_fleets_key_issues_nothing_here() {
    let ours = fleet();
    // The same fleet name and node name, another key.
    let theirs = FleetCa::new(Identity::from_seed([0xf2; 32]), "lab");
    let forged = cert(&theirs);
    assert_eq!(
        anchor(&ours).verify(&forged, &crl(&ours, &[]), NOW),
        Err(MemberError::NotIssued)
    );
}

#[test]
fn a_self_signed_or_fleet_certificate_is_no_member() {
    let ca = fleet();
    let list = crl(&ca, &[]);
    // A node's own TLS certificate (self-signed for its key, as a node makes it).
    let own = std::fs::read(vectors().join("rcgen-ed25519.der")).unwrap();
    assert_eq!(
        anchor(&ca).verify(&own, &list, NOW),
        Err(MemberError::NotIssued)
    );
    // The fleet certificate itself, presented as a node's: a CA is not an end entity.
    let ca_der = ca.certificate().unwrap();
    assert!(anchor(&ca).verify(&ca_der, &list, NOW).is_err());
}

#[test]
fn outside_its_validity_a_certificate_is_refused() {
    let ca = fleet();
    let a = anchor(&ca);
    let c = cert(&ca);
    // The list is current over [NOW - 10 d, NOW + 20 d]: one valid at both times.
    let early = ca
        .revocation_list(2, NOW - 60 * DAY, NOW + 60 * DAY, &[])
        .unwrap();
    assert_eq!(
        a.verify(&c, &early, NOW - 51 * DAY),
        Err(MemberError::Expired)
    );
    assert_eq!(
        a.verify(&c, &early, NOW + 51 * DAY),
        Err(MemberError::Expired)
    );
    assert!(a.verify(&c, &early, NOW - 49 * DAY).is_ok());
    assert!(a.verify(&c, &early, NOW + 49 * DAY).is_ok());
}

#[test]
fn a_revoked_certificate_is_refused() {
    let ca = fleet();
    let a = anchor(&ca);
    assert_eq!(
        a.verify(&cert(&ca), &crl(&ca, &[1, 7, 12]), NOW),
        Err(MemberError::Revoked)
    );
    // A later list without it admits it again (an operator's undo).
    let undone = ca
        .revocation_list(2, NOW - DAY, NOW + 20 * DAY, &[1, 12])
        .unwrap();
    assert!(a.verify(&cert(&ca), &undone, NOW).is_ok());
}

#[test]
fn a_list_of_another_key_or_out_of_date_is_refused() {
    let ca = fleet();
    let a = anchor(&ca);
    let theirs = FleetCa::new(Identity::from_seed([0xf2; 32]), "lab");
    // An attacker's list that revokes nothing does not replace the fleet's.
    assert_eq!(
        a.verify(&cert(&ca), &crl(&theirs, &[]), NOW),
        Err(MemberError::RevocationListNotCurrent)
    );
    // The fleet's own list, after its next update.
    assert_eq!(
        a.verify(&cert(&ca), &crl(&ca, &[]), NOW + 21 * DAY),
        Err(MemberError::RevocationListNotCurrent)
    );
    assert_eq!(
        a.verify(&cert(&ca), b"not a list", NOW),
        Err(MemberError::BadRevocationList)
    );
}

/// One byte changed anywhere in the certificate, or anywhere in a list that revokes it, or
/// either cut short: never a member (with the list, whose signature covers the revocation, an
/// attacker cannot take the serial off it).
#[test]
fn no_changed_byte_admits_anyone() {
    let ca = fleet();
    let a = anchor(&ca);
    let (c, ok_list, revoking) = (cert(&ca), crl(&ca, &[]), crl(&ca, &[7]));
    for i in 0..c.len() {
        for bit in [0x01, 0x80] {
            let mut v = c.clone();
            v[i] ^= bit;
            let r = a.verify(&v, &ok_list, NOW);
            assert!(r.is_err(), "certificate byte {i} ^ {bit:#x}: {r:?}");
        }
    }
    for n in 0..c.len() {
        assert!(
            a.verify(&c[..n], &ok_list, NOW).is_err(),
            "certificate cut at {n}"
        );
    }
    for i in 0..revoking.len() {
        for bit in [0x01, 0x80] {
            let mut v = revoking.clone();
            v[i] ^= bit;
            let r = a.verify(&c, &v, NOW);
            assert!(r.is_err(), "list byte {i} ^ {bit:#x}: {r:?}");
        }
    }
    for n in 0..revoking.len() {
        assert!(
            a.verify(&c, &revoking[..n], NOW).is_err(),
            "list cut at {n}"
        );
    }
}

#[test]
fn names_a_certificate_cannot_carry_are_refused_at_issue() {
    let ca = fleet();
    let key = node().public_key();
    for bad in ["", "Node", "a_b", "-a", "a-", "a.b", &"x".repeat(64)] {
        assert!(
            ca.issue(key, bad, Arch::X86_64, 1, NOW, NOW + DAY).is_err(),
            "{bad:?}"
        );
    }
    assert!(ca
        .issue(key, &"x".repeat(63), Arch::X86_64, 1, NOW, NOW + DAY)
        .is_ok());
    assert!(
        ca.issue(key, "a", Arch::X86_64, 1, NOW, NOW).is_err(),
        "empty validity"
    );
    assert!(
        ca.issue(key, "a", Arch::X86_64, 0, NOW, NOW + DAY).is_err(),
        "serial 0"
    );
    // A list is due after it is made.
    assert!(ca.revocation_list(1, NOW, NOW, &[]).is_err());
}

/// No serial a node certificate can have revokes the fleet certificate: a list of the first
/// serials and u64::MAX leaves another node's certificate (and the anchor) usable.
#[test]
fn no_node_serial_is_the_fleet_certificates() {
    let ca = fleet();
    let other = ca
        .issue(node().public_key(), "b", Arch::Arm, 8, NOW - DAY, NOW + DAY)
        .unwrap();
    let mut serials: Vec<u64> = (1..=7).collect();
    serials.push(u64::MAX);
    let list = ca
        .revocation_list(3, NOW - DAY, NOW + DAY, &serials)
        .unwrap();
    assert!(anchor(&ca).verify(&other, &list, NOW).is_ok());
    assert_eq!(
        anchor(&ca).verify(&cert(&ca), &list, NOW),
        Err(MemberError::Revoked)
    );
}

#[test]
fn a_node_certificate_is_no_anchor_for_another_fleet() {
    // A member's certificate used as an anchor: what it "issues" is nothing the fleet issued.
    let ca = fleet();
    let c = cert(&ca);
    match FleetAnchor::from_der(&c) {
        Ok(fake) => assert!(fake.verify(&c, &crl(&ca, &[]), NOW).is_err()),
        Err(e) => assert_eq!(e, MemberError::BadAnchor),
    }
    assert_eq!(
        FleetAnchor::from_der(b"junk").err(),
        Some(MemberError::BadAnchor)
    );
}
