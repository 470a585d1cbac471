//! Wire flags: DNA by reference, chunked memory, deltas, signatures; every rejection path and
//! every combination's round trip.
#![cfg(feature = "alloc")]

mod common;

use common::{reseal, sample_agent, SOURCE};
use mielin_cells::migration::{
    DecodeOptions, DnaMap, DnaSlots, DnaStore, EncodeOptions, MigrationSnapshot, StateEncoding,
    CHUNK_SIZE, FLAG_DNA_BY_REFERENCE, HEADER_LEN,
};
use mielin_cells::{
    sha256, Agent, AgentId, CellError, DecodeError, DigestPrefix, Digested, Dna, LimitedField,
};
use proptest::prelude::*;

/// The snapshot with its DNA sent by reference.
fn by_ref(s: &MigrationSnapshot<Vec<u8>>) -> Vec<u8> {
    s.serialize_with(&EncodeOptions {
        dna_by_reference: true,
        ..Default::default()
    })
    .unwrap()
}

/// Memory of `chunks` 4 KiB chunks: zero, text-like, and pseudo-random ones in turn.
fn memory(chunks: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let mut m = vec![0u8; chunks * CHUNK_SIZE];
    for (i, chunk) in m.chunks_mut(CHUNK_SIZE).enumerate() {
        match i % 3 {
            0 => {}
            1 => chunk
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = b"agent state "[j % 12]),
            _ => chunk.iter_mut().for_each(|b| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }),
        }
    }
    m
}

fn agent_with(memory: Vec<u8>) -> Agent<Vec<u8>> {
    let mut a = sample_agent();
    a.set_wasm_state(memory);
    a
}

fn snap(agent: &Agent<Vec<u8>>) -> MigrationSnapshot<Vec<u8>> {
    MigrationSnapshot::capture_at(agent, Some(SOURCE), 1_790_000_000)
}

// --- DNA by reference -------------------------------------------------------------------

#[test]
fn by_reference_is_smaller_by_the_binary_and_restores_from_the_store() {
    let wasm = common::wasm_of_len(1 << 20);
    let dna = Dna::new(wasm).unwrap();
    let mut agent = Agent::with_id(AgentId::from_bytes([3; 16]), dna.clone());
    agent.set_wasm_state(memory(4, 1));
    let s = snap(&agent);
    let full = s.serialize().unwrap();
    let by_ref = by_ref(&s);
    assert!(
        full.len() - by_ref.len() >= 1 << 20,
        "{} vs {}",
        full.len(),
        by_ref.len()
    );

    let mut store = DnaMap::new();
    store.insert(&dna);
    let opts = DecodeOptions {
        dna_store: Some(&store),
        ..Default::default()
    };
    assert_eq!(
        MigrationSnapshot::deserialize_with(&by_ref, &opts).unwrap(),
        s
    );
    let view = MigrationSnapshot::view_with(&by_ref, &opts).unwrap();
    assert_eq!(view, s);
    assert_eq!(
        view.wasm_binary().as_ptr(),
        store.get(dna.hash()).unwrap().as_ptr()
    );
}

#[test]
fn missing_dna_names_the_hash() {
    let s = snap(&sample_agent());
    let by_ref = by_ref(&s);
    let expected = CellError::DnaNotFound {
        hash: DigestPrefix::of(s.dna_hash()),
    };
    assert_eq!(
        MigrationSnapshot::deserialize(&by_ref).unwrap_err(),
        expected
    );
    let empty = DnaMap::new();
    let opts = DecodeOptions {
        dna_store: Some(&empty),
        ..Default::default()
    };
    assert_eq!(
        MigrationSnapshot::view_with(&by_ref, &opts).unwrap_err(),
        expected
    );
    assert!(expected
        .to_string()
        .contains(&format!("{}", DigestPrefix::of(s.dna_hash()))));
}

#[test]
fn a_store_with_wrong_bytes_is_an_integrity_error() {
    struct Liar(Vec<u8>);
    impl DnaStore for Liar {
        fn get(&self, _: &[u8; 32]) -> Option<&[u8]> {
            Some(&self.0)
        }
    }
    let s = snap(&sample_agent());
    let by_ref = by_ref(&s);
    let liar = Liar(b"\0asm\x01\0\0\0".to_vec());
    let opts = DecodeOptions {
        dna_store: Some(&liar),
        ..Default::default()
    };
    assert!(matches!(
        MigrationSnapshot::deserialize_with(&by_ref, &opts).unwrap_err(),
        CellError::IntegrityMismatch {
            what: Digested::Dna,
            ..
        }
    ));
}

#[test]
fn by_reference_flag_with_a_binary_is_rejected() {
    let mut b = snap(&sample_agent()).serialize().unwrap();
    b[6] = FLAG_DNA_BY_REFERENCE as u8;
    reseal(&mut b);
    assert_eq!(
        MigrationSnapshot::deserialize(&b).unwrap_err(),
        DecodeError::BinaryWithReference.into()
    );
}

#[test]
fn fixed_capacity_store_without_alloc() {
    static MODULE: [u8; 8] = *b"\0asm\x01\0\0\0";
    let dna = Dna::new(&MODULE[..]).unwrap();
    let mut slots = DnaSlots::<1>::new();
    slots.insert(&dna).unwrap();
    slots.insert(&dna).unwrap(); // the same DNA again: no new entry
    let other = Dna::new(&b"\0asm\x01\0\0\0\0"[..]).unwrap();
    assert!(matches!(
        slots.insert(&other),
        Err(CellError::CapacityExceeded { capacity: 1, .. })
    ));
    let agent = Agent::with_id(AgentId::from_bytes([1; 16]), dna.clone());
    let bytes = MigrationSnapshot::capture_at(&agent, None, 0)
        .serialize_with(&EncodeOptions {
            dna_by_reference: true,
            ..Default::default()
        })
        .unwrap();
    let opts = DecodeOptions {
        dna_store: Some(&slots),
        ..Default::default()
    };
    let view = MigrationSnapshot::view_with(&bytes, &opts).unwrap();
    assert_eq!(view.wasm_binary().as_ptr(), MODULE.as_ptr());
}

// --- chunked memory -----------------------------------------------------------------------

fn chunked(s: &MigrationSnapshot<Vec<u8>>) -> Vec<u8> {
    s.serialize_with(&EncodeOptions {
        state: StateEncoding::Chunked,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn chunked_memory_round_trips_and_skips_zeros() {
    let s = snap(&agent_with(memory(30, 7)));
    let bytes = chunked(&s);
    assert_eq!(MigrationSnapshot::deserialize(&bytes).unwrap(), s);
    // A third of the chunks are zero, a third compress (with lz4) or not: smaller either way.
    assert!(
        bytes.len() < s.size_bytes() * 3 / 4,
        "{} vs {}",
        bytes.len(),
        s.size_bytes()
    );
    // An odd length: the last chunk is short.
    let mut odd = memory(3, 9);
    odd.truncate(2 * CHUNK_SIZE + 100);
    let s = snap(&agent_with(odd));
    assert_eq!(MigrationSnapshot::deserialize(&chunked(&s)).unwrap(), s);
    // An empty memory.
    let s = snap(&agent_with(Vec::new()));
    assert_eq!(MigrationSnapshot::deserialize(&chunked(&s)).unwrap(), s);
}

#[test]
fn the_view_refuses_chunked_state() {
    let bytes = chunked(&snap(&agent_with(memory(2, 1))));
    assert_eq!(
        MigrationSnapshot::view(&bytes).unwrap_err(),
        DecodeError::StateNeedsAlloc.into()
    );
}

/// Builds a snapshot whose chunked state blob is `blob`, resealed.
fn with_state_blob(blob: &[u8]) -> Vec<u8> {
    let s = snap(&agent_with(vec![1u8; 1]));
    let good = chunked(&s);
    // Body: id 16, hash 32, binary (1-byte length + 41), then the state blob's length and bytes.
    let at = HEADER_LEN + 16 + 32 + 1 + common::ADD_WASM.len();
    let old_len = good[at] as usize; // small enough for one varint byte
    let mut b = good[..at].to_vec();
    let mut n = blob.len() as u64;
    while n >= 0x80 {
        b.push(n as u8 | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
    b.extend_from_slice(blob);
    b.extend_from_slice(&good[at + 1 + old_len..]);
    reseal(&mut b);
    b
}

#[test]
fn malformed_chunks_are_rejected() {
    // The well-formed blob for 1 byte [1]: length 1, a raw chunk.
    assert!(MigrationSnapshot::deserialize(&with_state_blob(&[1, 1, 1])).is_ok());
    let cases: [(&[u8], DecodeError); 6] = [
        (&[1, 1, 0], DecodeError::BadChunk),    // a zero chunk stored raw
        (&[1, 9, 1], DecodeError::BadChunk),    // unknown chunk tag
        (&[1, 1], DecodeError::UnexpectedEnd),  // missing chunk
        (&[1, 1, 1, 7], DecodeError::BadChunk), // bytes after the last chunk
        (&[2, 1, 1], DecodeError::UnexpectedEnd), // raw chunk cut short
        (&[0x81, 0x00, 0], DecodeError::BadVarint), // over-long length
    ];
    for (blob, err) in cases {
        assert_eq!(
            MigrationSnapshot::deserialize(&with_state_blob(blob)).unwrap_err(),
            err.into(),
            "{blob:?}"
        );
    }
}

#[test]
fn chunked_length_is_bounded_before_allocating() {
    // 2^40 bytes declared in a few bytes: refused by the default limit (64 MiB) and, without
    // limits, because the input cannot hold that many chunks; allocating nothing either way
    // (tests/alloc_bound.rs counts).
    let huge = with_state_blob(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0]);
    assert_eq!(
        MigrationSnapshot::deserialize(&huge).unwrap_err(),
        DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit: 64 << 20,
            found: 1 << 40
        }
        .into()
    );
    let unlimited = DecodeOptions {
        limits: mielin_cells::migration::DecodeLimits::UNLIMITED,
        ..Default::default()
    };
    assert_eq!(
        MigrationSnapshot::deserialize_with(&huge, &unlimited).unwrap_err(),
        DecodeError::UnexpectedEnd.into()
    );
    let s = snap(&agent_with(memory(4, 3)));
    let opts = DecodeOptions {
        limits: mielin_cells::migration::DecodeLimits {
            max_wasm_binary: usize::MAX,
            max_wasm_state: 4 * CHUNK_SIZE - 1,
        },
        ..Default::default()
    };
    assert_eq!(
        MigrationSnapshot::deserialize_with(&chunked(&s), &opts).unwrap_err(),
        DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit: 4 * CHUNK_SIZE - 1,
            found: 4 * CHUNK_SIZE
        }
        .into()
    );
}

#[cfg(not(feature = "lz4"))]
#[test]
fn lz4_chunks_need_the_feature() {
    assert_eq!(
        MigrationSnapshot::deserialize(&with_state_blob(&[8, 2, 5, 0x40, b'a', b'b', b'c', b'd']))
            .unwrap_err(),
        DecodeError::Lz4Disabled.into()
    );
}

#[cfg(feature = "lz4")]
#[test]
fn compressible_chunks_are_compressed() {
    let text: Vec<u8> = (0..16 * CHUNK_SIZE)
        .map(|i| b"heap object "[i % 12])
        .collect();
    let s = snap(&agent_with(text));
    let bytes = chunked(&s);
    // 64 KiB of repetitive text: LZ4 takes each 4 KiB chunk to a few dozen bytes.
    assert!(bytes.len() < 2 * 1024, "{} bytes", bytes.len());
    assert_eq!(MigrationSnapshot::deserialize(&bytes).unwrap(), s);
}

#[cfg(feature = "lz4")]
#[test]
fn lz4_chunk_must_be_smaller_and_decompress_exactly() {
    // An LZ4 chunk "no smaller" than its 1-byte chunk.
    assert_eq!(
        MigrationSnapshot::deserialize(&with_state_blob(&[1, 2, 1, 0x10])).unwrap_err(),
        DecodeError::BadChunk.into()
    );
    // 8 bytes declared, LZ4 data for 4 ("abcd").
    assert_eq!(
        MigrationSnapshot::deserialize(&with_state_blob(&[8, 2, 5, 0x40, b'a', b'b', b'c', b'd']))
            .unwrap_err(),
        DecodeError::BadChunk.into()
    );
}

// --- deltas ------------------------------------------------------------------------------

fn delta(s: &MigrationSnapshot<Vec<u8>>, base: &[u8]) -> Vec<u8> {
    s.serialize_with(&EncodeOptions {
        state: StateEncoding::Delta { base },
        ..Default::default()
    })
    .unwrap()
}

fn apply(bytes: &[u8], base: &[u8]) -> Result<MigrationSnapshot<Vec<u8>>, CellError> {
    MigrationSnapshot::deserialize_with(
        bytes,
        &DecodeOptions {
            base_state: Some(base),
            ..Default::default()
        },
    )
}

#[test]
fn delta_carries_only_changed_chunks() {
    let base = memory(100, 5);
    let mut next = base.clone();
    next[17 * CHUNK_SIZE + 3] ^= 0xff; // one byte in one chunk
    let s = snap(&agent_with(next));
    let d = delta(&s, &base);
    assert!(d.len() < snap(&agent_with(Vec::new())).size_bytes() + 32 + 16 + CHUNK_SIZE);
    assert_eq!(apply(&d, &base).unwrap(), s);
}

#[test]
fn delta_on_the_wrong_base_applies_nothing() {
    let base = memory(4, 5);
    let mut next = base.clone();
    next[0] = 1;
    let d = delta(&snap(&agent_with(next)), &base);
    let mut other = base.clone();
    other[CHUNK_SIZE * 3] ^= 1;
    assert_eq!(
        apply(&d, &other).unwrap_err(),
        DecodeError::WrongDeltaBase {
            expected: DigestPrefix::of(&sha256(&base)),
            found: DigestPrefix::of(&sha256(&other)),
        }
        .into()
    );
    assert_eq!(
        MigrationSnapshot::deserialize(&d).unwrap_err(),
        DecodeError::DeltaWithoutBase.into()
    );
}

#[test]
fn delta_handles_grown_memory() {
    let base = memory(3, 5);
    let mut grown = base.clone();
    grown.extend_from_slice(&memory(5, 8)[3 * CHUNK_SIZE..]);
    let s = snap(&agent_with(grown));
    assert_eq!(apply(&delta(&s, &base), &base).unwrap(), s);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 48 }))]

    /// A chain of deltas ends in the same state as a full snapshot of the last version.
    #[test]
    fn delta_chains_restore_the_full_state(
        edits in prop::collection::vec(
            prop::collection::vec((0usize..12 * CHUNK_SIZE, any::<u8>()), 0..20),
            1..6,
        ),
        grow in prop::collection::vec(0usize..2, 1..6),
    ) {
        let mut sender = memory(8, 11);
        let mut receiver = sender.clone();
        for (round, changes) in edits.iter().enumerate() {
            if grow.get(round) == Some(&1) {
                sender.extend_from_slice(&[0u8; CHUNK_SIZE]);
            }
            for &(at, v) in changes {
                if at < sender.len() {
                    sender[at] = v;
                }
            }
            let s = snap(&agent_with(sender.clone()));
            let d = delta(&s, &receiver);
            let got = apply(&d, &receiver).unwrap();
            prop_assert_eq!(&got, &s);
            receiver = got.wasm_state().to_vec();
        }
        let full = snap(&agent_with(sender.clone())).serialize().unwrap();
        let restored = MigrationSnapshot::deserialize(&full).unwrap();
        prop_assert_eq!(restored.wasm_state(), &receiver[..]);
    }

    #[test]
    fn chunked_round_trips(zero_runs in prop::collection::vec((0usize..3, 1usize..5000), 0..8)) {
        let mut m = Vec::new();
        for (i, &(kind, len)) in zero_runs.iter().enumerate() {
            m.extend((0..len).map(|j| if kind == 0 { 0 } else { (i * 31 + j * kind) as u8 }));
        }
        let s = snap(&agent_with(m));
        prop_assert_eq!(MigrationSnapshot::deserialize(&chunked(&s)).unwrap(), s);
    }
}

/// A version-2 delta applied in place: a changed byte in a carried chunk fails the memory root,
/// and the held memory is left exactly as it was; the wrong base is refused by its root.
#[test]
fn delta_onto_held_memory_checks_everything_before_writing() {
    use mielin_cells::migration::{MemoryDigests, Route};
    let base = memory(3, 7);
    let mut next = base.clone();
    next[CHUNK_SIZE + 10] ^= 0xff;
    let s = snap(&agent_with(next.clone())).with_route(Route {
        target: SOURCE,
        epoch: 2,
    });
    let bytes = s
        .serialize_with(&EncodeOptions {
            state: StateEncoding::Delta { base: &base },
            ..Default::default()
        })
        .unwrap();
    let digests = MemoryDigests::of(&base);

    // The state field ends where the tail starts: its last byte belongs to the carried chunk.
    let state_end = common::v2_tail_start(&bytes);
    let mut corrupt = bytes.clone();
    corrupt[state_end - 1] ^= 1;
    let mut held = base.clone();
    let err = MigrationSnapshot::deserialize_onto(
        &corrupt,
        &DecodeOptions::default(),
        &mut held,
        &digests,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CellError::IntegrityMismatch {
                what: mielin_cells::Digested::Memory,
                ..
            }
        ) || err == DecodeError::BadChunk.into(),
        "{err:?}"
    );
    assert_eq!(held, base, "a refused delta changed the held memory");

    let mut wrong = memory(3, 8);
    let wrong_digests = MemoryDigests::of(&wrong);
    assert!(matches!(
        MigrationSnapshot::deserialize_onto(
            &bytes,
            &DecodeOptions::default(),
            &mut wrong,
            &wrong_digests
        ),
        Err(CellError::DeserializationFailed(
            DecodeError::WrongDeltaBase { .. }
        ))
    ));
    assert_eq!(wrong, memory(3, 8));

    let (decoded, d) =
        MigrationSnapshot::deserialize_onto(&bytes, &DecodeOptions::default(), &mut held, &digests)
            .unwrap();
    assert_eq!(decoded.wasm_state(), &next[..]);
    assert_eq!(d, MemoryDigests::of(&next));
}
