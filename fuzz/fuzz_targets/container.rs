//! Version-3 containers behind a valid header and trailer, so inputs reach the section table's
//! checks, the sections' size bounds, the memory walk, the tail, the DNA and the memory root.
//! The first byte is a mode: its low three bits pick a section table entry whose length the
//! next 8 bytes overwrite with a claim (7: none), so every length a peer could declare is tried
//! against the default limits; bit 3 seals nothing, it sets the by-manifest flag. The trailer
//! is then recomputed (unsigned) as `docs/wire-format.md` defines it, where the walk of the
//! memory sections allows. libFuzzer's malloc limit turns any allocation past the limits into
//! a crash.
#![no_main]

mod check;

use mielin_cells::migration::{Container, DecodeLimits, MAGIC, TRAILER_LEN, V3_HEADER_LEN};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    if data.len() < V3_HEADER_LEN + TRAILER_LEN {
        return;
    }
    data[..4].copy_from_slice(&MAGIC);
    data[4..6].copy_from_slice(&3u16.to_le_bytes());
    // Unsigned and unsealed, so that the recomputed trailer is all the authentication.
    data[6] &= !0x18;
    if mode & 8 != 0 {
        data[6] |= 0x02;
    }
    let entry = usize::from(mode & 7);
    if entry < 7 {
        let at = V3_HEADER_LEN + entry * 12 + 4;
        if let (Some(claim), true) = (input.get(1..9), at + 8 <= data.len()) {
            data[at..at + 8].copy_from_slice(claim);
        }
    }
    reseal(&mut data);
    // The checked view never panics, whatever it refuses.
    if let Ok(c) = Container::new_checked(&data[..], &DecodeLimits::DEFAULT) {
        let _ = c.check_trailer();
        for kind in c.section_kinds() {
            let _ = c.section(kind);
        }
    }
    check::snapshot(&data);
});

/// Recomputes the unsigned trailer (SHA-256 of everything the digest covers), where the table
/// fits the input; a memory section that does not walk is covered as far as it does (the
/// decoder refuses it before comparing the trailer anyway).
fn reseal(data: &mut [u8]) {
    let u16_at = |d: &[u8], at: usize| usize::from(u16::from_le_bytes([d[at], d[at + 1]]));
    let count = u16_at(data, 144).min(8);
    let table_end = V3_HEADER_LEN + count * 12;
    let end = data.len() - TRAILER_LEN;
    if table_end > end {
        return;
    }
    let memory_len = u64::from_le_bytes(data[104..112].try_into().unwrap());
    let mut covered = data[..table_end].to_vec();
    let mut at = table_end;
    for i in 0..count {
        let e = V3_HEADER_LEN + i * 12;
        let kind = u16_at(data, e) as u16;
        let len = u64::from_le_bytes(data[e + 4..e + 12].try_into().unwrap());
        let Some(stop) = usize::try_from(len).ok().and_then(|l| at.checked_add(l)) else {
            return;
        };
        if stop > end {
            return;
        }
        cover(kind, &data[at..stop], memory_len, &mut covered);
        at = stop;
    }
    covered.extend_from_slice(&data[at..end]);
    let digest = mielin_cells::sha256(&covered);
    data[end..].copy_from_slice(&digest);
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn cover(kind: u16, s: &[u8], memory_len: u64, out: &mut Vec<u8>) {
    const CHUNK: u64 = 4096;
    let chunk_len = |i: u64| {
        memory_len
            .saturating_sub(i.saturating_mul(CHUNK))
            .min(CHUNK) as usize
    };
    let chunk = |at: &mut usize, len: usize, out: &mut Vec<u8>| -> Option<()> {
        let tag = *s.get(*at)?;
        out.push(tag);
        *at += 1;
        match tag {
            0 => {}
            1 => *at = at.checked_add(len)?,
            2 => {
                let start = *at;
                let n = varint(s, at)? as usize;
                *at = at.checked_add(n)?;
                out.extend_from_slice(s.get(start..*at)?);
            }
            _ => return None,
        }
        Some(())
    };
    let mut at = 0;
    match kind {
        2 => {}
        3 => {
            for i in 0..memory_len.div_ceil(CHUNK).min(1 << 16) {
                if chunk(&mut at, chunk_len(i), out).is_none() {
                    return;
                }
            }
        }
        4 => {
            let Some(root) = s.get(..32) else { return };
            out.extend_from_slice(root);
            at = 32;
            let start = at;
            let Some(count) = varint(s, &mut at) else {
                return;
            };
            out.extend_from_slice(&s[start..at]);
            for _ in 0..count.min(1 << 16) {
                let start = at;
                let Some(i) = varint(s, &mut at) else { return };
                out.extend_from_slice(&s[start..at]);
                if chunk(&mut at, chunk_len(i), out).is_none() {
                    return;
                }
            }
        }
        _ => out.extend_from_slice(s),
    }
}
