//! Bytes on the wire for the reference agent of the README (1 MiB DNA, 1 MiB memory of which
//! 15% of the 4 KiB chunks are live), for each wire encoding, and how chunked encoding does on
//! three memory images.
//!
//! `cargo run --release --example wire_sizes --features lz4`

#[path = "../benches/support/images.rs"]
mod images;

use images::{heap_image, module, random_image, touch, MIB};
use mielin_cells::migration::{
    DecodeOptions, DnaMap, EncodeOptions, MigrationSnapshot, StateEncoding,
};
use mielin_cells::{Agent, AgentId, Dna};

fn main() {
    let dna = Dna::new(module(MIB)).unwrap();
    let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna.clone());
    let memory = heap_image(MIB, 15, 1);
    agent.set_wasm_state(memory.clone());
    let snap = MigrationSnapshot::capture_at(&agent, None, 0);

    let mut changed = memory.clone();
    touch(&mut changed, 1, 2);
    let mut next_agent = agent.clone();
    next_agent.set_wasm_state(changed);
    let next = MigrationSnapshot::capture_at(&next_agent, None, 1);

    let full = snap.serialize().unwrap().len();
    let rows: [(&str, usize); 6] = [
        ("full (version 1, no flags)", full),
        ("DNA by reference", size(&snap, true, StateEncoding::Raw)),
        (
            "chunked memory (sparse + LZ4)",
            size(&snap, false, StateEncoding::Chunked),
        ),
        (
            "DNA by reference + chunked memory",
            size(&snap, true, StateEncoding::Chunked),
        ),
        (
            "delta after 1% of chunks changed",
            size(&next, false, StateEncoding::Delta { base: &memory }),
        ),
        (
            "DNA by reference + delta after 1%",
            size(&next, true, StateEncoding::Delta { base: &memory }),
        ),
    ];
    println!("| encoding | bytes on the wire | of the full snapshot |");
    println!("|---|---|---|");
    for (name, n) in rows {
        println!("| {name} | {n} | {:.2}% |", 100.0 * n as f64 / full as f64);
    }

    // Every encoding decodes back to the same agent.
    let mut store = DnaMap::new();
    store.insert(&dna);
    for (by_ref, state, expected) in [
        (true, StateEncoding::Chunked, &snap),
        (true, StateEncoding::Delta { base: &memory }, &next),
    ] {
        let bytes = expected
            .serialize_with(&EncodeOptions {
                dna_by_reference: by_ref,
                state,
                ..Default::default()
            })
            .unwrap();
        let opts = DecodeOptions {
            dna_store: Some(&store),
            base_state: Some(&memory),
            ..Default::default()
        };
        assert!(MigrationSnapshot::deserialize_with(&bytes, &opts).unwrap() == *expected);
    }

    println!();
    println!("| memory image (1 MiB) | chunked state bytes | ratio |");
    println!("|---|---|---|");
    for (name, image) in [
        ("mostly zero (2% live chunks)", heap_image(MIB, 2, 3)),
        (
            "typical heap (pointers, integers, text; all chunks live)",
            heap_image(MIB, 100, 4),
        ),
        ("random", random_image(MIB, 5)),
    ] {
        let mut a = agent.clone();
        a.set_wasm_state(image);
        let s = MigrationSnapshot::capture_at(&a, None, 0);
        let bytes =
            size(&s, true, StateEncoding::Chunked) - size(&empty(&a), true, StateEncoding::Raw);
        println!("| {name} | {bytes} | {:.3} |", bytes as f64 / MIB as f64);
    }
}

fn size(s: &MigrationSnapshot<Vec<u8>>, by_ref: bool, state: StateEncoding<'_>) -> usize {
    s.serialize_with(&EncodeOptions {
        dna_by_reference: by_ref,
        state,
        ..Default::default()
    })
    .unwrap()
    .len()
}

/// The same agent with no memory: what a snapshot costs besides the memory.
fn empty(a: &Agent<Vec<u8>>) -> MigrationSnapshot<Vec<u8>> {
    let mut a = a.clone();
    a.set_wasm_state(Vec::new());
    MigrationSnapshot::capture_at(&a, None, 0)
}
