//! The wire flags: the first two input bytes are the flags word, the rest the body (plus a
//! signature block when flagged), behind a valid header and trailer. Decodes with a DNA store,
//! a base memory and a trust list; whatever decodes must re-encode to a snapshot that decodes
//! to the same thing.
#![no_main]

use mielin_cells::migration::{
    DecodeOptions, DnaMap, EncodeOptions, EpochTable, MigrationSnapshot, StateEncoding, TrustList,
    FLAG_DNA_BY_REFERENCE, FLAG_STATE_CHUNKED, FLAG_STATE_DELTA, FORMAT_VERSION, MAGIC,
};
use mielin_cells::{Dna, NodeId};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((flags, rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let mut data = Vec::with_capacity(8 + rest.len() + 32);
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    data.extend_from_slice(flags);
    data.extend_from_slice(rest);
    let digest = mielin_cells::sha256(&data);
    data.extend_from_slice(&digest);

    let mut store = DnaMap::new();
    store.insert(&Dna::new(b"\0asm\x01\0\0\0".to_vec()).unwrap());
    let base = vec![7u8; 5000];
    let opts = DecodeOptions {
        dna_store: Some(&store),
        base_state: Some(&base),
        ..Default::default()
    };
    let mut trust = TrustList::<1, _>::new(NodeId::from_bytes([1; 16]), EpochTable::<1>::new());
    let _ = trust.deserialize(&data, &opts, 0);
    let _ = MigrationSnapshot::view_with(&data, &opts);
    let Ok(snapshot) = MigrationSnapshot::deserialize_with(&data, &opts) else {
        return;
    };
    let flags = u16::from_le_bytes(*flags);
    let state = if flags & FLAG_STATE_CHUNKED != 0 {
        StateEncoding::Chunked
    } else if flags & FLAG_STATE_DELTA != 0 {
        StateEncoding::Delta { base: &base }
    } else {
        StateEncoding::Raw
    };
    let again = snapshot
        .serialize_with(&EncodeOptions {
            dna_by_reference: flags & FLAG_DNA_BY_REFERENCE != 0,
            state,
            ..Default::default()
        })
        .unwrap();
    let decoded = MigrationSnapshot::deserialize_with(&again, &opts).unwrap();
    assert!(
        decoded == snapshot,
        "re-encoded snapshot decodes differently"
    );
});
