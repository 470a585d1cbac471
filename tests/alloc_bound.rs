//! Allocation bounds on untrusted bytes, measured with a counting global allocator.
//!
//! The bound (documented in the README's "Robustness" section): `MigrationSnapshot::view`
//! allocates nothing, on any input; `MigrationSnapshot::deserialize` allocates nothing on input
//! it rejects, and on input it accepts at most the binary's and the memory's lengths, which
//! together are less than the input's length.
#![cfg(feature = "std")]

mod common;

use mielin_cells::migration::{
    EncodeOptions, MigrationSnapshot, StateEncoding, HEADER_LEN, TRAILER_LEN,
};
use mielin_cells::{GlobalValue, MAX_GLOBALS};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the bytes allocated by the thread that switched counting on (the test harness's
/// other threads allocate too, and must not be counted).
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// thread-local `Cell`s with const initializers, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATED.with(|a| a.set(a.get() + new_size));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated by this thread while `f` runs.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATED.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATED.with(Cell::get))
}

fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    common::reseal(&mut bytes);
    bytes
}

/// Checks the bound on one input and returns whether it decoded.
fn check_bound(input: &[u8]) -> bool {
    let (view, by_view) = allocated_by(|| MigrationSnapshot::view(input).is_ok());
    assert_eq!(by_view, 0, "view allocated {by_view} bytes");
    let (owned, by_owned) = allocated_by(|| MigrationSnapshot::deserialize(input));
    match owned {
        Ok(s) => {
            assert!(view);
            let payload = s.wasm_binary().len() + s.wasm_state().len();
            assert!(
                by_owned <= payload,
                "{by_owned} bytes for a {payload}-byte payload"
            );
            assert!(by_owned < input.len());
            true
        }
        Err(_) => {
            assert!(!view);
            assert_eq!(by_owned, 0, "a rejected input cost {by_owned} bytes");
            false
        }
    }
}

#[test]
fn decoding_allocates_within_the_bound() {
    // The counter itself works.
    let (_, n) = allocated_by(|| vec![0u8; 1000]);
    assert!(n >= 1000);

    // Golden vectors and a large snapshot decode within the bound.
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    for name in ["v1-minimal.bin", "v1-full.bin", "v1-cross.bin"] {
        assert!(check_bound(&std::fs::read(vectors.join(name)).unwrap()));
    }
    let mut agent = common::sample_agent();
    agent.set_wasm_state(vec![3u8; 1 << 20]);
    agent
        .set_globals(&[GlobalValue::F64(u64::MAX); MAX_GLOBALS])
        .unwrap();
    let big = MigrationSnapshot::capture_at(&agent, None, 0)
        .serialize()
        .unwrap();
    assert!(check_bound(&big));

    // Hostile length prefixes, resealed so they reach the body parser: binary and memory lengths
    // of up to 2^63 in a snapshot of a few hundred bytes.
    let good = MigrationSnapshot::capture_at(&common::sample_agent(), None, 0)
        .serialize()
        .unwrap();
    let binary_len_at = HEADER_LEN + 16 + 32;
    let state_len_at = binary_len_at + 1 + common::ADD_WASM.len();
    for at in [binary_len_at, state_len_at] {
        for prefix in [
            &[0xff, 0xff, 0xff, 0xff, 0x0f][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ] {
            let mut b = good[..at].to_vec();
            b.extend_from_slice(prefix);
            b.extend_from_slice(&good[at + 1..]);
            assert!(!check_bound(&resealed(b)));
        }
    }

    // A globals count of 2^32 - 1 followed by tiny fields: rejected at the 33rd global.
    let globals_at = state_len_at + 1 + 64;
    let mut b = good[..globals_at].to_vec();
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    b.extend(std::iter::repeat_n([0u8, 0u8], 10_000).flatten());
    b.extend_from_slice(&[0; TRAILER_LEN]);
    assert!(!check_bound(&resealed(b)));

    // Chunked memory: a 1 MiB memory, mostly zero, decodes allocating the memory and the
    // binary; a 2^40-byte length claimed in a few bytes is refused before allocating.
    let mut agent = common::sample_agent();
    let mut memory = vec![0u8; 1 << 20];
    memory[5000..6000].fill(0xab);
    agent.set_wasm_state(memory);
    let chunked = MigrationSnapshot::capture_at(&agent, None, 0)
        .serialize_with(&EncodeOptions {
            state: StateEncoding::Chunked,
            ..Default::default()
        })
        .unwrap();
    assert!(chunked.len() < 8000, "{} bytes", chunked.len());
    let (decoded, n) = allocated_by(|| MigrationSnapshot::deserialize(&chunked));
    let decoded = decoded.unwrap();
    let payload = decoded.wasm_binary().len() + decoded.wasm_state().len();
    assert!(n <= payload, "{n} bytes for a {payload}-byte payload");
    // Replace the state field (a varint length, then the blob) with a 7-byte blob that claims
    // 2^40 bytes of memory.
    let state_at = binary_len_at + 1 + common::ADD_WASM.len();
    let (mut old_len, mut i) = (0usize, state_at);
    loop {
        let byte = chunked[i];
        old_len |= usize::from(byte & 0x7f) << (7 * (i - state_at));
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut b = chunked[..state_at].to_vec();
    b.extend_from_slice(&[7, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0]);
    b.extend_from_slice(&chunked[i + old_len..]);
    let b = resealed(b);
    // The default limits (64 MiB of memory) refuse the claim before anything else.
    let (result, n) = allocated_by(|| MigrationSnapshot::deserialize(&b));
    assert_eq!(
        result.unwrap_err(),
        mielin_cells::DecodeError::TooLarge {
            field: mielin_cells::LimitedField::WasmState,
            limit: 64 << 20,
            found: 1 << 40,
        }
        .into()
    );
    assert_eq!(n, 0, "a refused chunked length cost {n} bytes");
    // Without limits, the input cannot hold 2^40 bytes of chunks: refused, still unallocated.
    let unlimited = mielin_cells::migration::DecodeOptions {
        limits: mielin_cells::migration::DecodeLimits::UNLIMITED,
        ..Default::default()
    };
    let (result, n) = allocated_by(|| MigrationSnapshot::deserialize_with(&b, &unlimited));
    assert_eq!(
        result.unwrap_err(),
        mielin_cells::DecodeError::UnexpectedEnd.into()
    );
    assert_eq!(n, 0, "a refused chunked length cost {n} bytes");

    // Random bodies behind a valid header and trailer, from a fixed seed.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut decoded = 0;
    for round in 0..2000 {
        let len = round % 300;
        let mut b = good[..HEADER_LEN].to_vec();
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push(x as u8);
        }
        b.extend_from_slice(&[0; TRAILER_LEN]);
        decoded += usize::from(check_bound(&resealed(b)));
    }
    assert_eq!(decoded, 0, "random bodies should not decode");
}

/// Version 2: the view and `decode_into` (chunked and delta memory into a caller's buffer)
/// allocate nothing; the owned decoder allocates the payload and the memory's chunk digests
/// (32 bytes per 4 KiB), and for a delta decoded without them, the base's digests.
#[cfg(feature = "lz4")]
#[test]
fn version_two_decoding_allocates_within_the_bound() {
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut agent = common::sample_agent();
    agent.set_wasm_state(vec![0; 3 * 4096]);
    let dna = agent.dna().clone();
    let mut store = mielin_cells::migration::DnaMap::new();
    store.insert(&dna);
    // The flag vectors' delta base (tests/golden_flags.rs): their memory with two bytes changed.
    let mut memory = vec![0u8; 3 * 4096];
    for (i, b) in memory[4096..8192].iter_mut().enumerate() {
        *b = b"heap object "[i % 12];
    }
    let mut x: u32 = 0x1234_5678;
    for b in &mut memory[8192..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let mut base = memory.clone();
    base[4096 + 5] ^= 0x55;
    base[8192 + 7] ^= 0x55;
    let opts = mielin_cells::migration::DecodeOptions {
        dna_store: Some(&store),
        base_state: Some(&base),
        ..Default::default()
    };
    for flags in [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd] {
        let bytes = std::fs::read(vectors.join(format!("v2-flags-{flags:04x}.bin"))).unwrap();
        let mut buf = vec![0u8; memory.len()];
        let (view, n) = allocated_by(|| {
            MigrationSnapshot::decode_into(&bytes, &opts, &mut buf)
                .map(|s| s.wasm_state() == memory)
        });
        assert!(view.unwrap(), "{flags:#x}");
        assert_eq!(n, 0, "decode_into allocated {n} bytes for {flags:#x}");
        let (owned, n) = allocated_by(|| MigrationSnapshot::deserialize_with(&bytes, &opts));
        let owned = owned.unwrap();
        let payload = owned.wasm_binary().len() + owned.wasm_state().len();
        // A delta without the base's digests also computes those (another 32 bytes a chunk).
        let digests = if flags & 0x4 != 0 { 2 * 3 * 32 } else { 3 * 32 };
        assert!(n <= payload + digests, "{n} bytes for {flags:#x}");
    }
}
