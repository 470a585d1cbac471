//! `Dna::new` on arbitrary bytes: never panics, and accepts exactly the bytes with a
//! WebAssembly version-1 header, hashing them with SHA-256.
#![no_main]

use mielin_cells::{CellError, Dna};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match Dna::new(data) {
        Ok(dna) => {
            assert!(data.starts_with(b"\0asm\x01\0\0\0"));
            assert_eq!(dna.hash(), &mielin_cells::sha256(data));
            assert_eq!(dna.size(), data.len());
            dna.verify().unwrap();
        }
        Err(CellError::WasmTooShort { found }) => assert!(found == data.len() && found < 8),
        Err(CellError::NotWasm { found }) => assert_ne!(&found, b"\0asm"),
        Err(CellError::UnsupportedWasmVersion { found }) => {
            assert!(data.starts_with(b"\0asm") && found != 1)
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
});
