//! Version-2 frames behind a valid header and trailer, so inputs reach the envelope's size
//! checks, the tail, the DNA and the memory root. The first byte is a mode: its low two bits
//! pick an envelope size field (memory, binary, state length; 3: none) that the next 8 bytes
//! overwrite with a claim, so every size a peer could declare is tried against the default
//! limits. libFuzzer's malloc limit (2 GiB by default) turns any allocation past the limits
//! into a crash.
#![no_main]

mod check;

use mielin_cells::migration::{ENVELOPE_LEN, MAGIC, TRAILER_LEN};

const SIZE_FIELDS: [usize; 3] = [104, 144, 152];

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    if data.len() < ENVELOPE_LEN + TRAILER_LEN {
        return;
    }
    data[..4].copy_from_slice(&MAGIC);
    data[4..6].copy_from_slice(&2u16.to_le_bytes());
    if let Some(&field) = SIZE_FIELDS.get(usize::from(mode & 3)) {
        if let Some(claim) = input.get(1..9) {
            data[field..field + 8].copy_from_slice(claim);
        }
    }
    reseal(&mut data);
    check::snapshot(&data);
});

/// Recomputes the version-2 trailer where the declared sizes fit the input (else the frame
/// check refuses it before the trailer, and the trailer does not matter).
fn reseal(data: &mut [u8]) {
    let len = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
    let flags = u16::from_le_bytes([data[6], data[7]]);
    let sig = if flags & 0x8 != 0 { 72 } else { 0 };
    let Some(tail) = (ENVELOPE_LEN as u64)
        .checked_add(len(144))
        .and_then(|t| t.checked_add(len(152)))
    else {
        return;
    };
    let end = data.len() - TRAILER_LEN;
    if tail > (end.saturating_sub(sig)) as u64 {
        return;
    }
    let mut covered = data[..ENVELOPE_LEN].to_vec();
    covered.extend_from_slice(&data[tail as usize..end]);
    let digest = mielin_cells::sha256(&covered);
    data[end..].copy_from_slice(&digest);
}
