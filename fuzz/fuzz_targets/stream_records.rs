//! The stream framing of the QUIC driver (`mesh::records`) on arbitrary bytes, split at an
//! arbitrary point: the decoder never panics, never holds a record over its limit, and gives
//! the same records and the same verdict however the bytes are split; a status that decodes
//! re-encodes to the same status and capabilities.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mielin_cells::mesh::records::{
    decode_status, encode_status, record, Record, RecordDecoder, KIND_STATUS,
};

fn decode(parts: &[&[u8]], max: usize) -> (Vec<Record>, Result<(), ()>) {
    let mut d = RecordDecoder::new(max);
    let mut out = Vec::new();
    for p in parts {
        if d.push(p, &mut |r| out.push(r)).is_err() {
            return (out, Err(()));
        }
    }
    let r = d.finish().map_err(|_| ());
    (out, r)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let max = 64;
    let at = (cut as usize).min(rest.len());
    // The driver's own path: a status payload of any bytes (`record`, as `read_stream` calls
    // it after `parse_header`).
    if let Ok(Record::Status(s, caps)) = record(KIND_STATUS, rest.to_vec()) {
        assert_eq!(decode_status(&encode_status(&s, caps)), Ok((s, caps)));
    }
    let whole = decode(&[rest], max);
    let split = decode(&[&rest[..at], &rest[at..]], max);
    assert_eq!(whole, split);
    for r in &whole.0 {
        match r {
            Record::Frame(f) => assert!(f.len() <= max),
            // A status that decoded re-encodes to one that decodes the same (a 6-byte one from
            // an older node as 7 bytes without capabilities).
            Record::Status(s, caps) => {
                assert_eq!(decode_status(&encode_status(s, *caps)), Ok((*s, *caps)));
            }
        }
    }
});
