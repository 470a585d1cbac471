//! Fuzz input as a snapshot body behind a valid header and a correct trailer digest, so every
//! input reaches the postcard body parser and the checks after it (a fuzzer cannot find inputs
//! that match a SHA-256 trailer by itself).
#![no_main]

mod check;

use mielin_cells::migration::{FORMAT_VERSION, MAGIC};

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let mut data = Vec::with_capacity(8 + body.len() + 32);
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(body);
    let digest = mielin_cells::sha256(&data);
    data.extend_from_slice(&digest);
    check::snapshot(&data);
});
