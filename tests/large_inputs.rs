//! Hostile sizes with the default options: every length field of a snapshot claiming sizes up
//! to `usize::MAX`, in inputs up to 64 MiB. Each must be an error (never an abort), and a
//! counting allocator proves the peak allocation while decoding stays within the default
//! limits (issue: "an input that aborts the process").
#![cfg(feature = "std")]

mod common;

use mielin_cells::migration::{
    DecodeLimits, EncodeOptions, MigrationSnapshot, Route, StateEncoding, HEADER_LEN, TRAILER_LEN,
};
use mielin_cells::{sha256, CellError, DecodeError, LimitedField};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Tracks the peak of bytes held by the thread that switched counting on.
struct Peak;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static NOW: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    if ON.with(Cell::get) {
        NOW.with(|c| c.set(c.get() + n));
        PEAK.with(|p| p.set(p.get().max(NOW.with(Cell::get))));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// thread-local `Cell`s with const initializers, so touching them never allocates.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// The peak bytes held while `f` runs, over what was held when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    NOW.with(|c| c.set(0));
    PEAK.with(|c| c.set(0));
    ON.with(|c| c.set(true));
    let out = f();
    ON.with(|c| c.set(false));
    (out, PEAK.with(Cell::get).max(0) as usize)
}

/// What the default limits allow a decoder to hold at once: the binary, the memory, and the
/// memory's chunk digests (32 bytes per 4 KiB).
fn default_bound() -> usize {
    let l = DecodeLimits::DEFAULT;
    l.max_wasm_binary + l.max_wasm_state + l.max_wasm_state / 128
}

/// Decodes with the defaults; must fail, within the bound.
fn refused(bytes: &[u8]) -> CellError {
    let (result, peak) = peak_of(|| MigrationSnapshot::deserialize(bytes));
    assert!(peak <= default_bound(), "peak {peak} over the bound");
    let (view, view_peak) = peak_of(|| MigrationSnapshot::view(bytes));
    assert_eq!(view_peak, 0, "the view allocated");
    assert!(view.is_err());
    result.expect_err("a hostile size was accepted")
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

fn v1_reseal(b: &mut [u8]) {
    let n = b.len() - TRAILER_LEN;
    let d = sha256(&b[..n]);
    b[n..].copy_from_slice(&d);
}

/// Claims, as varints: every power of two from 2^20 to 2^63, and u64::MAX.
fn claims() -> impl Iterator<Item = u64> {
    (20..64).map(|k| 1u64 << k).chain([u64::MAX])
}

/// The original report: 64 MiB of zero-chunk tags claiming 256 GiB of chunked memory aborted
/// the process ("memory allocation of 274877906944 bytes failed"). Now `TooLarge`, allocating
/// nothing.
#[test]
fn zero_chunk_flood_claiming_256_gib_is_too_large() {
    let good = MigrationSnapshot::capture_at(&common::sample_agent(), None, 0)
        .serialize_with(&EncodeOptions {
            state: StateEncoding::Chunked,
            ..Default::default()
        })
        .unwrap();
    let state_at = HEADER_LEN + 16 + 32 + 1 + common::ADD_WASM.len();
    // The old state field: a one-byte length (the sample memory is 64 bytes: < 128 encoded).
    let old_len = usize::from(good[state_at]);
    let claim = 256u64 << 30;
    let flood = 64 << 20;
    let mut blob = varint(claim);
    blob.resize(blob.len() + flood, 0); // every chunk "all zeros"
    let mut b = good[..state_at].to_vec();
    b.extend_from_slice(&varint(blob.len() as u64));
    b.extend_from_slice(&blob);
    b.extend_from_slice(&good[state_at + 1 + old_len..]);
    v1_reseal(&mut b);
    assert_eq!(
        refused(&b),
        DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit: DecodeLimits::DEFAULT.max_wasm_state,
            found: claim as usize,
        }
        .into()
    );
}

/// Version 1: the binary's and the state's length prefixes, and the chunked memory length,
/// each claiming every size, in inputs of 1 KiB, 1 MiB and 64 MiB.
#[test]
fn version_one_length_fields_claiming_anything_are_errors() {
    let good = MigrationSnapshot::capture_at(&common::sample_agent(), None, 0)
        .serialize()
        .unwrap();
    let binary_at = HEADER_LEN + 16 + 32;
    let state_at = binary_at + 1 + common::ADD_WASM.len();
    for pad in [1 << 10, 1 << 20, 64 << 20] {
        for claim in claims() {
            for at in [binary_at, state_at] {
                let mut b = good[..at].to_vec();
                b.extend_from_slice(&varint(claim));
                b.resize(b.len() + pad, 0xa5);
                b.extend_from_slice(&[0; TRAILER_LEN]);
                v1_reseal(&mut b);
                let e = refused(&b);
                assert!(
                    matches!(
                        e,
                        CellError::DeserializationFailed(
                            DecodeError::TooLarge { .. }
                                | DecodeError::UnexpectedEnd
                                | DecodeError::BadVarint
                        )
                    ),
                    "claim {claim} at {at}: {e:?}"
                );
            }
            if pad > 1 << 20 {
                break; // 64 MiB inputs: one claim per field is enough to time the hashing
            }
        }
    }
}

/// An input longer than anything the limits allow is refused before it is hashed.
#[test]
fn oversized_input_is_refused_before_hashing() {
    let mut b = vec![0u8; 96 << 20];
    b[..8].copy_from_slice(b"MCSN\x01\x00\x00\x00");
    let e = refused(&b);
    assert!(
        matches!(
            e,
            CellError::DeserializationFailed(DecodeError::TooLarge {
                field: LimitedField::Snapshot,
                ..
            })
        ),
        "{e:?}"
    );
}

/// Version 2: the envelope's binary, state and memory lengths, each claiming every size up to
/// u64::MAX, with the rest of a real snapshot and padding up to 64 MiB: refused from the
/// envelope alone, allocating nothing.
#[test]
fn version_two_size_fields_claiming_anything_are_errors() {
    let good = MigrationSnapshot::capture_at(&common::sample_agent(), None, 0)
        .with_route(Route {
            target: common::TARGET,
            epoch: 1,
        })
        .serialize()
        .unwrap();
    for pad in [0usize, 1 << 20, 64 << 20] {
        let mut base = good.clone();
        let at = base.len() - TRAILER_LEN;
        base.splice(at..at, std::iter::repeat_n(0u8, pad));
        for claim in claims().chain([0, 1, 63, 65]) {
            for field in [104usize, 144, 152] {
                let saved: [u8; 8] = base[field..field + 8].try_into().unwrap();
                base[field..field + 8].copy_from_slice(&claim.to_le_bytes());
                let e = refused(&base);
                base[field..field + 8].copy_from_slice(&saved);
                assert!(
                    matches!(
                        e,
                        CellError::DeserializationFailed(
                            DecodeError::TooLarge { .. }
                                | DecodeError::UnexpectedEnd
                                | DecodeError::StateLengthMismatch
                                | DecodeError::TrailingBytes { .. }
                        ) | CellError::IntegrityMismatch { .. }
                    ),
                    "claim {claim} in field {field}: {e:?}"
                );
            }
        }
    }
}
