//! Wire format version 3, the signed container (`docs/wire-format.md`, "Version 3"): round
//! trips under every encoding, the order of the checks with one error each, what the signature
//! and the seal cover, and the section rules. Forged containers are built with an independent
//! reading of the text (`common/v3ref.rs`), so that each change reaches the check after the
//! trailer.
#![cfg(all(feature = "std", feature = "lz4", feature = "signatures"))]

mod common;

use common::v3ref::{self, Parts};
use common::{sample_agent, SOURCE, TARGET};
use mielin_cells::mesh::{Inbox, InboxLimits};
use mielin_cells::migration::{
    Container, DecodeLimits, DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, EpochTable,
    MigrationSnapshot, Route, SnapshotSealer, StateEncoding, TrustList, CHUNK_SIZE,
    MAX_CALL_SECTION_LEN, SECTION_BINARY, SECTION_CALL, SECTION_INBOX, SECTION_MEMORY,
    SECTION_MEMORY_DELTA, SECTION_TAIL, V3_HEADER_LEN,
};
use mielin_cells::{
    sha256, AgentId, CellError, DecodeError, Digested, LimitedField, SignatureError, MAX_EPOCH,
};

const NOW: u64 = 1_790_000_000;

/// Three chunks: zeros, repetitive text (LZ4 compresses it), pseudo-random bytes.
fn memory() -> Vec<u8> {
    let mut m = vec![0u8; 3 * CHUNK_SIZE];
    for (i, b) in m[CHUNK_SIZE..2 * CHUNK_SIZE].iter_mut().enumerate() {
        *b = b"heap object "[i % 12];
    }
    let mut x: u32 = 0x1234_5678;
    for b in &mut m[2 * CHUNK_SIZE..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    m
}

fn base() -> Vec<u8> {
    let mut b = memory();
    b[CHUNK_SIZE + 5] ^= 0x55;
    b[2 * CHUNK_SIZE + 7] ^= 0x55;
    b
}

fn inbox() -> Vec<u8> {
    let l = InboxLimits::default();
    let mut i = Inbox::new();
    let peer = AgentId::from_bytes([0x77; 16]);
    i.send(peer, b"pending", &l);
    i.offer(SOURCE, peer, [0x77; 16], 1, b"waiting", &l);
    i.to_bytes()
}

fn snapshot(with_inbox: bool) -> MigrationSnapshot<Vec<u8>> {
    let mut agent = sample_agent();
    agent.set_wasm_state(memory());
    let s = MigrationSnapshot::capture_at(&agent, Some(SOURCE), NOW).with_route(Route {
        target: TARGET,
        epoch: 1,
    });
    if with_inbox {
        s.with_inbox(inbox())
    } else {
        s
    }
}

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_secret(&[7; 32])
}

fn v3<'a>() -> EncodeOptions<'a> {
    EncodeOptions {
        version: Some(3),
        ..Default::default()
    }
}

/// A stand-in for the node's key (a keyed hash; the node uses HMAC-SHA256): what is tested
/// here is which bytes the seal covers and when it is checked.
struct TestSeal(u8);

impl SnapshotSealer for TestSeal {
    fn seal(&self, message: &[u8]) -> [u8; 32] {
        let mut m = vec![self.0; 32];
        m.extend_from_slice(message);
        sha256(&m)
    }
}

fn store() -> DnaMap {
    let mut s = DnaMap::new();
    s.insert(sample_agent().dna());
    s
}

fn decode(bytes: &[u8]) -> Result<MigrationSnapshot<Vec<u8>>, CellError> {
    let store = store();
    let base = base();
    MigrationSnapshot::deserialize_with(
        bytes,
        &DecodeOptions {
            dna_store: Some(&store),
            base_state: Some(&base),
            ..Default::default()
        },
    )
}

fn trust(bytes: &[u8]) -> Result<MigrationSnapshot<Vec<u8>>, CellError> {
    let store = store();
    let base = base();
    let mut t = TrustList::<4, _>::new(TARGET, EpochTable::<4>::new());
    t.trust(SOURCE, signer().verifying_key()).unwrap();
    t.deserialize(
        bytes,
        &DecodeOptions {
            dna_store: Some(&store),
            base_state: Some(&base),
            ..Default::default()
        },
        NOW,
    )
}

fn err(bytes: &[u8]) -> CellError {
    decode(bytes).expect_err("must be refused")
}

/// A plain, unsigned container with an inbox, taken apart.
fn parts() -> Parts {
    let bytes = snapshot(true).serialize_with(&v3()).unwrap();
    v3ref::split(&bytes)
}

#[test]
fn every_encoding_round_trips_and_matches_the_text() {
    let signer = signer();
    let base = base();
    for with_inbox in [false, true] {
        let s = snapshot(with_inbox);
        for by_ref in [false, true] {
            for state in [
                StateEncoding::Raw,
                StateEncoding::Chunked,
                StateEncoding::Delta { base: &base },
            ] {
                for signed in [false, true] {
                    let opts = EncodeOptions {
                        dna_by_reference: by_ref,
                        state,
                        signer: signed.then_some((&signer as _, 1)),
                        ..v3()
                    };
                    let bytes = s.serialize_with(&opts).unwrap();
                    let what =
                        format!("inbox {with_inbox} by_ref {by_ref} {state:?} signed {signed}");
                    assert_eq!(bytes[4..6], [3, 0], "{what}");
                    assert_eq!(decode(&bytes).unwrap(), s, "{what}");
                    if signed {
                        assert_eq!(trust(&bytes).unwrap(), s, "{what}");
                    } else {
                        assert_eq!(
                            trust(&bytes).unwrap_err(),
                            CellError::SignatureRejected(SignatureError::Missing)
                        );
                    }
                    // The independent reading agrees on the trailer, the root and the parts.
                    let p = v3ref::split(&bytes);
                    assert_eq!(v3ref::join(&p), bytes, "{what}");
                    assert_eq!(p.header[112..144], v3ref::tree_root(&memory()), "{what}");
                    assert_eq!(v3ref::section(&p, SECTION_BINARY).is_some(), !by_ref);
                    let delta = matches!(state, StateEncoding::Delta { .. });
                    assert_eq!(v3ref::section(&p, SECTION_MEMORY_DELTA).is_some(), delta);
                    assert_eq!(v3ref::section(&p, SECTION_MEMORY).is_some(), !delta);
                    assert_eq!(
                        v3ref::section(&p, SECTION_INBOX).map(|i| i.as_slice()),
                        with_inbox.then(inbox).as_deref()
                    );
                }
            }
        }
    }
}

#[test]
fn the_zero_copy_writer_gives_the_same_bytes() {
    let s = snapshot(true);
    let owned = s.serialize_with(&v3()).unwrap();
    let mut buf = vec![0u8; owned.len() + 10];
    let n = s.serialize_into_with(&v3(), &mut buf).unwrap();
    assert_eq!(buf[..n], owned[..]);
    assert_eq!(
        s.serialize_into_with(&v3(), &mut buf[..n - 1]),
        Err(CellError::BufferTooSmall {
            needed: n,
            available: n - 1
        })
    );
    // And it decodes without an allocator, into a caller's buffer.
    let mut memory = vec![0u8; 3 * CHUNK_SIZE];
    let view =
        MigrationSnapshot::decode_into(&owned, &DecodeOptions::default(), &mut memory).unwrap();
    assert_eq!(view.wasm_state(), &self::memory()[..]);
    assert_eq!(view.inbox(), Some(&inbox()[..]));
}

/// The inbox, the dedup state and the memory ride inside the signature: an on-path attacker
/// who rewrites any of them, and recomputes every unkeyed check, is refused.
#[test]
fn everything_rides_inside_the_signature() {
    let signer = signer();
    let opts = EncodeOptions {
        signer: Some((&signer, 1)),
        state: StateEncoding::Chunked,
        ..v3()
    };
    let good = snapshot(true).serialize_with(&opts).unwrap();
    trust(&good).unwrap();
    let forged_inbox = {
        let mut p = v3ref::split(&good);
        let mut i = Inbox::decode(v3ref::section(&p, SECTION_INBOX).unwrap()).unwrap();
        i.send(
            AgentId::from_bytes([0x66; 16]),
            b"injected",
            &InboxLimits::default(),
        );
        *v3ref::section_mut(&mut p, SECTION_INBOX) = i.to_bytes();
        v3ref::join(&p)
    };
    let dropped_inbox = {
        let mut p = v3ref::split(&good);
        p.sections.retain(|s| s.0 != SECTION_INBOX);
        v3ref::join(&p)
    };
    let changed_tail = {
        let mut p = v3ref::split(&good);
        // The battery minimum of the policy.
        let tail = v3ref::section_mut(&mut p, SECTION_TAIL);
        // ... battery, latency 150 (2 bytes), 2 architectures (count and 2 tags).
        let at = tail.len() - 1 - 2 - 2 - 1;
        tail[at] ^= 1;
        v3ref::join(&p)
    };
    for (what, bytes) in [
        ("inbox rewritten", forged_inbox),
        ("inbox dropped", dropped_inbox),
        ("policy changed", changed_tail),
    ] {
        // The unkeyed checks pass: only the signature stands in the way.
        assert!(decode(&bytes).is_ok(), "{what}: the forgery is well-formed");
        assert_eq!(
            trust(&bytes).unwrap_err(),
            CellError::SignatureRejected(SignatureError::Invalid),
            "{what}"
        );
    }
}

#[test]
fn a_seal_binds_the_container_to_its_node() {
    let mine = TestSeal(1);
    let other = TestSeal(2);
    let s = snapshot(true);
    let sealed = s
        .serialize_with(&EncodeOptions {
            sealer: Some(&mine),
            ..v3()
        })
        .unwrap();
    let opts = DecodeOptions::default();
    assert_eq!(
        MigrationSnapshot::deserialize_sealed(&sealed, &opts, &mine).unwrap(),
        s
    );
    // Another node's file.
    assert_eq!(
        MigrationSnapshot::deserialize_sealed(&sealed, &opts, &other).unwrap_err(),
        DecodeError::BadSeal.into()
    );
    // Edited (a message put in the inbox), with every unkeyed check recomputed.
    let mut p = v3ref::split(&sealed);
    let mut i = Inbox::decode(v3ref::section(&p, SECTION_INBOX).unwrap()).unwrap();
    i.send(
        AgentId::from_bytes([0x66; 16]),
        b"injected",
        &InboxLimits::default(),
    );
    *v3ref::section_mut(&mut p, SECTION_INBOX) = i.to_bytes();
    let edited = v3ref::join(&p);
    assert!(decode(&edited).is_ok(), "the edit is well-formed");
    assert!(matches!(
        MigrationSnapshot::deserialize_sealed(&edited, &opts, &mine).unwrap_err(),
        CellError::DeserializationFailed(DecodeError::BadSeal)
    ));
    // Not sealed at all, or signed instead.
    let plain = s.serialize_with(&v3()).unwrap();
    assert_eq!(
        MigrationSnapshot::deserialize_sealed(&plain, &opts, &mine).unwrap_err(),
        DecodeError::NotSealed.into()
    );
    let signer = signer();
    let signed = s
        .serialize_with(&EncodeOptions {
            signer: Some((&signer, 1)),
            ..v3()
        })
        .unwrap();
    assert_eq!(
        MigrationSnapshot::deserialize_sealed(&signed, &opts, &mine).unwrap_err(),
        DecodeError::NotSealed.into()
    );
    // A container is signed or sealed, never both.
    assert!(s
        .serialize_with(&EncodeOptions {
            signer: Some((&signer, 1)),
            sealer: Some(&mine),
            ..v3()
        })
        .is_err());
}

#[test]
fn each_check_has_its_own_error_in_order() {
    let good = v3ref::join(&parts());
    decode(&good).unwrap();
    let with = |f: &dyn Fn(&mut Parts)| {
        let mut p = parts();
        f(&mut p);
        v3ref::join(&p)
    };
    let header = |at: usize, bytes: &[u8]| {
        let bytes = bytes.to_vec();
        with(&move |p: &mut Parts| p.header[at..at + bytes.len()].copy_from_slice(&bytes))
    };
    let cases: Vec<(&str, Vec<u8>, CellError)> = vec![
        (
            "too short for the header and trailer",
            good[..179].to_vec(),
            DecodeError::TooShort {
                needed: 180,
                found: 179,
            }
            .into(),
        ),
        (
            "too short for the table it declares (4 sections)",
            good[..V3_HEADER_LEN + 4 * 12 + 31].to_vec(),
            DecodeError::TooShort {
                needed: V3_HEADER_LEN + 4 * 12 + 32,
                found: V3_HEADER_LEN + 4 * 12 + 31,
            }
            .into(),
        ),
        (
            "unknown flag",
            header(6, &[0x20, 0]),
            DecodeError::UnsupportedFlags { found: 0x20 }.into(),
        ),
        (
            "signed and sealed",
            header(6, &[0x18, 0]),
            DecodeError::UnsupportedFlags { found: 0x18 }.into(),
        ),
        (
            "version-2 state flags mean something else in version 3: 0x0004",
            header(6, &[0x04, 0]),
            DecodeError::UnsupportedFlags { found: 0x04 }.into(),
        ),
        (
            "reserved header word",
            header(146, &[1, 0]),
            DecodeError::BadSectionTable.into(),
        ),
        (
            "kinds out of order",
            with(&|p| p.sections.swap(0, 1)),
            DecodeError::BadSectionTable.into(),
        ),
        (
            "a kind twice",
            with(&|p| {
                let t = p.sections[0].clone();
                p.sections.insert(0, t)
            }),
            DecodeError::BadSectionTable.into(),
        ),
        (
            "nine sections",
            with(&|p| {
                for k in 0..5 {
                    p.sections.push((0x8000 + k, vec![]));
                }
            }),
            DecodeError::BadSectionTable.into(),
        ),
        (
            "memory over the limit (checked before hashing)",
            header(104, &(65u64 << 20).to_le_bytes()),
            DecodeError::TooLarge {
                field: LimitedField::WasmState,
                limit: 64 << 20,
                found: 65 << 20,
            }
            .into(),
        ),
        (
            "a tail longer than the longest tail",
            with(&|p| v3ref::section_mut(p, SECTION_TAIL).resize(369, 0)),
            DecodeError::SectionTooLarge {
                kind: SECTION_TAIL,
                limit: 368,
                found: 369,
            }
            .into(),
        ),
        (
            "an unknown kind that may not be skipped",
            with(&|p| p.sections.push((0x0007, vec![1, 2, 3]))),
            DecodeError::UnknownSection { kind: 7 }.into(),
        ),
        (
            "a call section longer than its bound",
            with(&|p| {
                p.sections
                    .push((SECTION_CALL, vec![0; MAX_CALL_SECTION_LEN + 1]))
            }),
            DecodeError::SectionTooLarge {
                kind: SECTION_CALL,
                limit: MAX_CALL_SECTION_LEN,
                found: MAX_CALL_SECTION_LEN + 1,
            }
            .into(),
        ),
        (
            "no tail",
            with(&|p| p.sections.retain(|s| s.0 != SECTION_TAIL)),
            DecodeError::MissingSection { kind: SECTION_TAIL }.into(),
        ),
        (
            "no binary, not by reference",
            with(&|p| p.sections.retain(|s| s.0 != SECTION_BINARY)),
            DecodeError::MissingSection {
                kind: SECTION_BINARY,
            }
            .into(),
        ),
        (
            "a binary, by reference",
            header(6, &[0x01, 0]),
            DecodeError::BinaryWithReference.into(),
        ),
        (
            "no memory",
            with(&|p| p.sections.retain(|s| s.0 != SECTION_MEMORY)),
            DecodeError::MissingSection {
                kind: SECTION_MEMORY,
            }
            .into(),
        ),
        (
            "memory and a delta",
            with(&|p| p.sections.insert(3, (SECTION_MEMORY_DELTA, vec![0; 33]))),
            DecodeError::UnexpectedSection {
                kind: SECTION_MEMORY_DELTA,
            }
            .into(),
        ),
        (
            "memory although it comes by manifest",
            header(6, &[0x02, 0]),
            DecodeError::UnexpectedSection {
                kind: SECTION_MEMORY,
            }
            .into(),
        ),
        (
            "no target",
            header(72, &[0; 16]),
            DecodeError::MissingTarget.into(),
        ),
        (
            "an epoch above MAX_EPOCH",
            header(88, &(MAX_EPOCH + 1).to_le_bytes()),
            DecodeError::EpochOutOfRange {
                found: MAX_EPOCH + 1,
            }
            .into(),
        ),
        (
            "a memory chunk with an unknown tag (before the trailer is compared)",
            with(&|p| v3ref::section_mut(p, SECTION_MEMORY)[0] = 7),
            DecodeError::BadChunk.into(),
        ),
        (
            "a changed header byte (the timestamp), trailer not recomputed",
            {
                let mut b = good.clone();
                b[96] ^= 1;
                b
            },
            CellError::IntegrityMismatch {
                what: Digested::SnapshotTrailer,
                expected: mielin_cells::DigestPrefix::of(&[0; 32]),
                found: mielin_cells::DigestPrefix::of(&[0; 32]),
            },
        ),
        (
            "a tail that is not canonical",
            with(&|p| {
                let t = v3ref::section_mut(p, SECTION_TAIL);
                // The globals' count, 4, written over-long: 84 00.
                assert_eq!(t[0], 4);
                t[0] = 0x84;
                t.insert(1, 0);
            }),
            DecodeError::NonCanonical {
                expected: 0,
                found: 0,
            }
            .into(),
        ),
        (
            "a binary that is not the DNA",
            with(&|p| *v3ref::section_mut(p, SECTION_BINARY).last_mut().unwrap() ^= 1),
            CellError::IntegrityMismatch {
                what: Digested::Dna,
                expected: mielin_cells::DigestPrefix::of(&[0; 32]),
                found: mielin_cells::DigestPrefix::of(&[0; 32]),
            },
        ),
        (
            "raw memory that is not the memory root's",
            with(&|p| *v3ref::section_mut(p, SECTION_MEMORY).last_mut().unwrap() ^= 1),
            CellError::IntegrityMismatch {
                what: Digested::Memory,
                expected: mielin_cells::DigestPrefix::of(&[0; 32]),
                found: mielin_cells::DigestPrefix::of(&[0; 32]),
            },
        ),
        (
            "an inbox section that is not an inbox",
            with(&|p| v3ref::section_mut(p, SECTION_INBOX).push(0)),
            // The container is sound; the host decodes the inbox (mesh::Inbox::decode).
            CellError::DeserializationFailed(DecodeError::UnexpectedEnd),
        ),
    ];
    for (what, bytes, expected) in cases {
        if what.starts_with("an inbox section") {
            let s = decode(&bytes).unwrap();
            assert!(Inbox::decode(s.inbox().unwrap()).is_err(), "{what}");
            continue;
        }
        let found = err(&bytes);
        let same = match (&found, &expected) {
            // Digests differ per case: compare what was checked.
            (
                CellError::IntegrityMismatch { what: a, .. },
                CellError::IntegrityMismatch { what: b, .. },
            ) => a == b,
            (
                CellError::DeserializationFailed(DecodeError::NonCanonical { .. }),
                CellError::DeserializationFailed(DecodeError::NonCanonical { .. }),
            ) => true,
            _ => found == expected,
        };
        assert!(same, "{what}: expected {expected:?}, found {found:?}");
    }
}

#[test]
fn lengths_are_checked_before_anything_is_hashed() {
    let good = v3ref::join(&parts());
    let table = |i: usize, len: u64| {
        let mut b = good.clone();
        let at = 148 + i * 12 + 4;
        b[at..at + 8].copy_from_slice(&len.to_le_bytes());
        b
    };
    // The tail (first entry) claiming more than the input.
    assert_eq!(
        err(&table(0, 300)),
        DecodeError::UnexpectedEnd.into(),
        "a section past the end"
    );
    assert_eq!(
        err(&table(0, u64::MAX)),
        DecodeError::SectionTooLarge {
            kind: SECTION_TAIL,
            limit: 368,
            found: usize::MAX
        }
        .into()
    );
    // The binary claiming 2^63: over the limit, whatever the input.
    assert_eq!(
        err(&table(1, 1 << 63)),
        DecodeError::TooLarge {
            field: LimitedField::WasmBinary,
            limit: 16 << 20,
            found: usize::try_from(1u64 << 63).unwrap_or(usize::MAX)
        }
        .into()
    );
    // Bytes after the last section.
    let mut longer = good.clone();
    longer.insert(longer.len() - 32, 0);
    assert_eq!(err(&longer), DecodeError::TrailingBytes { count: 1 }.into());
    // A reader with smaller limits refuses the memory before hashing it.
    let small = DecodeLimits {
        max_wasm_binary: 1 << 20,
        max_wasm_state: CHUNK_SIZE,
    };
    assert!(matches!(
        Container::new_checked(&good[..], &small),
        Err(DecodeError::TooLarge {
            field: LimitedField::WasmState,
            ..
        })
    ));
}

#[test]
fn ignorable_sections_are_skipped_but_still_signed() {
    let signer = signer();
    let opts = EncodeOptions {
        signer: Some((&signer, 1)),
        ..v3()
    };
    let good = snapshot(false).serialize_with(&opts).unwrap();
    let mut p = v3ref::split(&good);
    p.sections.push((0x8001, b"from a later version".to_vec()));
    // Re-signing is the sender's job: here the signature no longer covers the bytes.
    let with_unsigned_extra = v3ref::join(&p);
    assert_eq!(decode(&with_unsigned_extra).unwrap(), snapshot(false));
    assert_eq!(
        trust(&with_unsigned_extra).unwrap_err(),
        CellError::SignatureRejected(SignatureError::Invalid)
    );
    let c = Container::new_checked(&with_unsigned_extra[..], &DecodeLimits::DEFAULT).unwrap();
    assert_eq!(
        c.section_kinds().collect::<Vec<_>>(),
        [SECTION_TAIL, SECTION_BINARY, SECTION_MEMORY, 0x8001]
    );
    assert_eq!(c.section(0x8001), Some(&b"from a later version"[..]));
}

#[test]
fn memory_by_manifest_is_not_decoded_as_inline_memory() {
    let mut p = parts();
    p.sections.retain(|s| s.0 != SECTION_MEMORY);
    p.header[6] |= 0x02;
    let bytes = v3ref::join(&p);
    let c = Container::new_checked(&bytes[..], &DecodeLimits::DEFAULT).unwrap();
    assert_eq!(c.memory_root(), v3ref::tree_root(&memory()));
    assert_eq!(c.memory_len(), 3 * CHUNK_SIZE);
    assert_eq!(c.check_trailer().map(|_| ()), Ok(()));
    assert_eq!(err(&bytes), DecodeError::MemoryByManifest.into());
}

#[test]
fn a_delta_names_its_base_by_tree_root() {
    let base = base();
    let bytes = snapshot(false)
        .serialize_with(&EncodeOptions {
            state: StateEncoding::Delta { base: &base },
            ..v3()
        })
        .unwrap();
    let p = v3ref::split(&bytes);
    assert_eq!(
        v3ref::section(&p, SECTION_MEMORY_DELTA).unwrap()[..32],
        v3ref::tree_root(&base)
    );
    let other = memory();
    assert!(matches!(
        MigrationSnapshot::deserialize_with(
            &bytes,
            &DecodeOptions {
                base_state: Some(&other),
                ..Default::default()
            }
        ),
        Err(CellError::DeserializationFailed(
            DecodeError::WrongDeltaBase { .. }
        ))
    ));
}

#[test]
fn every_truncation_and_appended_byte_is_refused() {
    let signer = signer();
    let good = snapshot(true)
        .serialize_with(&EncodeOptions {
            signer: Some((&signer, 1)),
            state: StateEncoding::Chunked,
            ..v3()
        })
        .unwrap();
    for len in 0..good.len() {
        assert!(decode(&good[..len]).is_err(), "length {len} accepted");
    }
    for extra in 0..=u8::MAX {
        let mut b = good.clone();
        b.push(extra);
        assert!(decode(&b).is_err(), "appended {extra:#04x} accepted");
    }
}

/// A refusal journals nothing (`docs/wire-format.md`, "Decoding", when the epoch is
/// journaled): a container refused for its DNA (not in the receiver's store), its memory or its
/// inbox decodes later, once the receiver can, at the same epoch.
#[test]
fn a_refusal_burns_no_epoch() {
    let signer = signer();
    let bytes = snapshot(true)
        .serialize_with(&EncodeOptions {
            dna_by_reference: true,
            signer: Some((&signer, 1)),
            ..v3()
        })
        .unwrap();
    let mut t = TrustList::<4, _>::new(TARGET, EpochTable::<4>::new());
    t.trust(SOURCE, signer.verifying_key()).unwrap();
    let empty = DnaMap::new();
    let without = DecodeOptions {
        dna_store: Some(&empty),
        ..Default::default()
    };
    assert!(matches!(
        t.deserialize(&bytes, &without, NOW),
        Err(CellError::DnaNotFound { .. })
    ));
    assert_eq!(t.last_epoch(snapshot(true).agent_id()), None);
    let store = store();
    let with = DecodeOptions {
        dna_store: Some(&store),
        ..Default::default()
    };
    assert_eq!(t.deserialize(&bytes, &with, NOW).unwrap(), snapshot(true));
    assert_eq!(t.last_epoch(snapshot(true).agent_id()), Some(1));
}
