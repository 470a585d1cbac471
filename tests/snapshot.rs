//! Snapshot round trips and the decoder's rejections, on a small real snapshot.
#![cfg(feature = "alloc")]

mod common;

use common::{reseal, sample_agent, SOURCE};
use mielin_cells::migration::{
    DecodeLimits, DecodeOptions, MigrationSnapshot, SnapshotView, FORMAT_VERSION, HEADER_LEN,
    MAGIC, TRAILER_LEN,
};
use mielin_cells::{
    sha256, AgentState, CellError, DecodeError, DigestPrefix, Digested, GlobalValue, LimitedField,
};

const T: u64 = 1_790_000_000;

fn sample_bytes() -> Vec<u8> {
    MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), T)
        .serialize()
        .unwrap()
}

#[test]
fn restore_gives_back_the_same_agent() {
    let mut source = sample_agent();
    source.set_state(AgentState::Migrating).unwrap();
    let snap = MigrationSnapshot::capture_at(&source, Some(SOURCE), T);
    let bytes = snap.serialize().unwrap();
    assert_eq!(bytes.len(), snap.size_bytes());

    let owned = MigrationSnapshot::deserialize(&bytes).unwrap();
    let view = MigrationSnapshot::view(&bytes).unwrap();
    assert_eq!(owned, snap);
    assert_eq!(view, snap);
    assert_eq!(view.timestamp(), T);
    assert_eq!(view.source_node(), Some(SOURCE));

    for restored in [
        owned.restore().unwrap(),
        view.to_owned_snapshot().into_agent().unwrap(),
    ] {
        assert_eq!(restored, source);
        assert_eq!(restored.id(), source.id());
        assert_eq!(restored.dna().hash(), source.dna().hash());
        assert_eq!(restored.wasm_state(), source.wasm_state());
        assert_eq!(restored.globals(), source.globals());
        assert_eq!(restored.state(), AgentState::Migrating);
    }
}

#[test]
fn view_borrows_the_input() {
    let bytes = sample_bytes();
    let view: SnapshotView<'_> = MigrationSnapshot::view(&bytes).unwrap();
    let range = bytes.as_ptr_range();
    assert!(range.contains(&view.wasm_binary().as_ptr()));
    assert!(range.contains(&view.wasm_state().as_ptr()));
    let agent = view.restore().unwrap();
    assert!(range.contains(&agent.wasm_state().as_ptr()));
}

#[test]
fn float_globals_are_bit_exact() {
    let view_bytes = sample_bytes();
    let view = MigrationSnapshot::view(&view_bytes).unwrap();
    assert_eq!(view.globals()[2], GlobalValue::F32(0x7fc0_0001));
    assert_eq!(view.globals()[3], GlobalValue::F64(0x8000_0000_0000_0000));
}

#[test]
fn serialize_into_matches_serialize_and_rejects_a_short_buffer() {
    let snap = MigrationSnapshot::capture_at(&sample_agent(), Some(SOURCE), T);
    let expected = snap.serialize().unwrap();
    let mut buf = vec![0xee; expected.len() + 7];
    assert_eq!(snap.serialize_into(&mut buf).unwrap(), expected.len());
    assert_eq!(&buf[..expected.len()], &expected[..]);
    assert!(buf[expected.len()..].iter().all(|&b| b == 0xee));

    let mut short = vec![0u8; expected.len() - 1];
    assert_eq!(
        snap.serialize_into(&mut short).unwrap_err(),
        CellError::BufferTooSmall {
            needed: expected.len(),
            available: expected.len() - 1
        }
    );
}

#[test]
fn header_layout() {
    let bytes = sample_bytes();
    assert_eq!(&bytes[..4], &MAGIC);
    assert_eq!(bytes[4..6], FORMAT_VERSION.to_le_bytes());
    assert_eq!(bytes[6..8], [0, 0]);
    let n = bytes.len() - TRAILER_LEN;
    assert_eq!(&bytes[n..], &sha256(&bytes[..n]));
}

fn decode_err(bytes: &[u8]) -> CellError {
    MigrationSnapshot::view(bytes).unwrap_err()
}

#[test]
fn each_check_has_its_own_error_in_order() {
    let good = sample_bytes();

    assert_eq!(
        decode_err(&good[..HEADER_LEN + TRAILER_LEN - 1]),
        DecodeError::TooShort {
            needed: 40,
            found: 39
        }
        .into()
    );

    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(
        decode_err(&b),
        DecodeError::BadMagic {
            expected: MAGIC,
            found: *b"XCSN"
        }
        .into()
    );

    // Versions 1, 2 and 3 are read; the error names the newest.
    let mut b = good.clone();
    b[4] = 4;
    assert_eq!(
        decode_err(&b),
        DecodeError::UnsupportedVersion {
            expected: 3,
            found: 4
        }
        .into()
    );

    let mut b = good.clone();
    b[7] = 0x80;
    assert_eq!(
        decode_err(&b),
        DecodeError::UnsupportedFlags { found: 0x8000 }.into()
    );

    let mut b = good.clone();
    b[HEADER_LEN] ^= 1;
    assert!(matches!(
        decode_err(&b),
        CellError::IntegrityMismatch {
            what: Digested::SnapshotTrailer,
            ..
        }
    ));

    // A body cut short, resealed so the trailer passes.
    let mut b = good[..HEADER_LEN + 20].to_vec();
    b.extend_from_slice(&[0; TRAILER_LEN]);
    reseal(&mut b);
    assert_eq!(decode_err(&b), DecodeError::UnexpectedEnd.into());

    // An extra byte between body and trailer.
    let n = good.len() - TRAILER_LEN;
    let mut b = good[..n].to_vec();
    b.push(0);
    b.extend_from_slice(&[0; TRAILER_LEN]);
    reseal(&mut b);
    assert_eq!(
        decode_err(&b),
        DecodeError::TrailingBytes { count: 1 }.into()
    );
}

/// Body offsets of the sample snapshot: id (16) and DNA hash (32), then the binary's length.
const BINARY_LEN_AT: usize = HEADER_LEN + 16 + 32;

#[test]
fn dna_hash_must_match_the_binary_even_with_a_valid_trailer() {
    let mut b = sample_bytes();
    // Last byte of the binary (the `end` opcode of `add`).
    let at = BINARY_LEN_AT + 1 + common::ADD_WASM.len() - 1;
    assert_eq!(b[at], 0x0b);
    b[at] = 0x0f;
    reseal(&mut b);
    let mut changed = common::ADD_WASM.to_vec();
    *changed.last_mut().unwrap() = 0x0f;
    assert_eq!(
        decode_err(&b),
        CellError::IntegrityMismatch {
            what: Digested::Dna,
            expected: DigestPrefix::of(&sha256(common::ADD_WASM)),
            found: DigestPrefix::of(&sha256(&changed)),
        }
    );
}

#[test]
fn carried_binary_must_be_wasm() {
    let mut b = sample_bytes();
    b[BINARY_LEN_AT + 1] = b'X';
    reseal(&mut b);
    assert_eq!(decode_err(&b), CellError::NotWasm { found: *b"Xasm" });
}

#[test]
fn over_long_varint_is_rejected_as_non_canonical() {
    let good = sample_bytes();
    // Re-encode the binary's length (41, one byte) as the two-byte varint a9 00.
    assert_eq!(good[BINARY_LEN_AT], 41);
    let mut b = good[..BINARY_LEN_AT].to_vec();
    b.extend_from_slice(&[0x80 | 41, 0x00]);
    b.extend_from_slice(&good[BINARY_LEN_AT + 1..]);
    reseal(&mut b);
    let n = good.len() - HEADER_LEN - TRAILER_LEN;
    assert_eq!(
        decode_err(&b),
        DecodeError::NonCanonical {
            expected: n,
            found: n + 1
        }
        .into()
    );
}

#[test]
fn huge_length_prefix_is_an_error_not_an_allocation() {
    let good = sample_bytes();
    let mut b = good[..BINARY_LEN_AT].to_vec();
    // A binary length of 2^63: far more than the input holds.
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    b.extend_from_slice(&good[BINARY_LEN_AT + 1..]);
    reseal(&mut b);
    let err = MigrationSnapshot::deserialize(&b).unwrap_err();
    assert!(
        matches!(
            err,
            CellError::DeserializationFailed(DecodeError::UnexpectedEnd | DecodeError::BadVarint)
        ),
        "{err:?}"
    );
}

#[test]
fn limits_refuse_large_fields() {
    let bytes = sample_bytes();
    let exact = DecodeLimits {
        max_wasm_binary: common::ADD_WASM.len(),
        max_wasm_state: 64,
    };
    let with = |limits: DecodeLimits| DecodeOptions {
        limits,
        ..DecodeOptions::default()
    };
    assert!(MigrationSnapshot::view_with(&bytes, &with(exact)).is_ok());
    assert!(MigrationSnapshot::deserialize_with(&bytes, &with(exact)).is_ok());

    let small_binary = DecodeLimits {
        max_wasm_binary: 40,
        ..exact
    };
    assert_eq!(
        MigrationSnapshot::deserialize_with(&bytes, &with(small_binary)).unwrap_err(),
        DecodeError::TooLarge {
            field: LimitedField::WasmBinary,
            limit: 40,
            found: 41
        }
        .into()
    );
    let small_state = DecodeLimits {
        max_wasm_state: 63,
        ..exact
    };
    assert_eq!(
        MigrationSnapshot::view_with(&bytes, &with(small_state)).unwrap_err(),
        DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit: 63,
            found: 64
        }
        .into()
    );
    // The default is finite: 16 MiB of binary, 64 MiB of memory.
    assert_eq!(DecodeLimits::default(), DecodeLimits::DEFAULT);
    assert_eq!(DecodeLimits::DEFAULT.max_wasm_binary, 16 << 20);
    assert_eq!(DecodeLimits::DEFAULT.max_wasm_state, 64 << 20);
}

#[test]
#[cfg_attr(miri, ignore = "exhaustive: thousands of SHA-256 runs")]
fn every_single_byte_insertion_is_rejected() {
    let good = sample_bytes();
    for at in 0..=good.len() {
        for value in 0..=u8::MAX {
            let mut b = Vec::with_capacity(good.len() + 1);
            b.extend_from_slice(&good[..at]);
            b.push(value);
            b.extend_from_slice(&good[at..]);
            assert!(
                MigrationSnapshot::view(&b).is_err(),
                "inserting {value:#04x} at {at} accepted"
            );
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "exhaustive: thousands of SHA-256 runs")]
fn every_single_bit_flip_is_rejected() {
    let good = sample_bytes();
    for bit in 0..good.len() * 8 {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(MigrationSnapshot::view(&b).is_err(), "bit {bit} accepted");
        assert!(
            MigrationSnapshot::deserialize(&b).is_err(),
            "bit {bit} accepted"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "exhaustive: thousands of SHA-256 runs")]
fn every_truncation_and_every_appended_byte_is_rejected() {
    let good = sample_bytes();
    for len in 0..good.len() {
        assert!(
            MigrationSnapshot::view(&good[..len]).is_err(),
            "length {len} accepted"
        );
    }
    for extra in 0..=u8::MAX {
        let mut b = good.clone();
        b.push(extra);
        assert!(
            MigrationSnapshot::view(&b).is_err(),
            "appended {extra:#04x} accepted"
        );
    }
}

#[test]
fn error_messages_say_expected_and_found() {
    let mut b = sample_bytes();
    b[4] = 9;
    assert_eq!(
        decode_err(&b).to_string(),
        "deserialization failed: unsupported format version: expected 3, found 9"
    );
    let mut b = sample_bytes();
    b[HEADER_LEN] ^= 1;
    let msg = decode_err(&b).to_string();
    assert!(
        msg.starts_with("integrity check failed for the snapshot trailer: expected SHA-256 "),
        "{msg}"
    );
    assert!(msg.contains(", computed "), "{msg}");
}
