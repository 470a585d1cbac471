//! Raw bytes into both snapshot decoders. Most inputs stop at the header or the trailer digest;
//! `snapshot_body` reaches the body parser.
#![no_main]

mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::snapshot(data));
