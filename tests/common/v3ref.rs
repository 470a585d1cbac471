//! An independent reading of the version-3 container, written from `docs/wire-format.md` alone
//! ("Version 3"), not from the library: it splits a container into its parts, joins parts back
//! with the table and trailer recomputed, and computes the memory's tree root. Tests use it to
//! forge containers (a change, then the unkeyed checks recomputed, so that the change reaches
//! the checks after the trailer) and to check the library against the text.
#![allow(dead_code)]

use mielin_cells::sha256;

pub const HEADER: usize = 148;
pub const ENTRY: usize = 12;
pub const TRAILER: usize = 32;
pub const CHUNK: usize = 4096;

/// A container taken apart.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The 148-byte header (its section count is rewritten by `join`).
    pub header: Vec<u8>,
    /// Each section: kind and bytes, in table order.
    pub sections: Vec<(u16, Vec<u8>)>,
    /// The authentication block: key id and signature, a seal, or nothing.
    pub auth: Vec<u8>,
}

pub fn flags(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes[6], bytes[7]])
}

fn auth_len(flags: u16) -> usize {
    if flags & 0x0008 != 0 {
        72
    } else if flags & 0x0010 != 0 {
        32
    } else {
        0
    }
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Splits a well-formed container (panics on anything else: for tests only).
pub fn split(bytes: &[u8]) -> Parts {
    let count = u16::from_le_bytes([bytes[144], bytes[145]]) as usize;
    let mut at = HEADER + count * ENTRY;
    let mut sections = Vec::new();
    for i in 0..count {
        let e = HEADER + i * ENTRY;
        let kind = u16::from_le_bytes([bytes[e], bytes[e + 1]]);
        let len = u64_at(bytes, e + 4) as usize;
        sections.push((kind, bytes[at..at + len].to_vec()));
        at += len;
    }
    let auth = bytes[at..bytes.len() - TRAILER].to_vec();
    assert_eq!(auth.len(), auth_len(flags(bytes)));
    Parts {
        header: bytes[..HEADER].to_vec(),
        sections,
        auth,
    }
}

fn varint(b: &[u8], at: &mut usize) -> Option<usize> {
    let mut v = 0usize;
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= ((byte & 0x7f) as usize).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

/// One chunk of `len` bytes from `b` at `at`: the bytes `D` covers (the tag, and for LZ4 its
/// length and block; not a raw chunk's payload). `None` where the chunk is malformed.
fn covered_chunk(b: &[u8], at: &mut usize, len: usize, out: &mut Vec<u8>) -> Option<()> {
    let tag = *b.get(*at)?;
    out.push(tag);
    *at += 1;
    match tag {
        0 => {}
        1 => *at += len,
        2 => {
            let start = *at;
            let n = varint(b, at)?;
            *at += n;
            out.extend_from_slice(b.get(start..*at)?);
        }
        _ => return None,
    }
    Some(())
}

/// What `D` covers of a section. A malformed memory section is covered up to where it breaks
/// (the decoder refuses it before comparing the trailer).
fn covered_section(kind: u16, s: &[u8], memory_len: usize, out: &mut Vec<u8>) -> Option<()> {
    let chunk_len = |i: usize| (memory_len.saturating_sub(i * CHUNK)).min(CHUNK);
    let chunks = memory_len.div_ceil(CHUNK);
    let mut at = 0;
    match kind {
        2 => {}
        3 => {
            for i in 0..chunks {
                covered_chunk(s, &mut at, chunk_len(i), out)?;
            }
        }
        4 => {
            out.extend_from_slice(s.get(..32)?);
            at = 32;
            let start = at;
            let count = varint(s, &mut at)?;
            out.extend_from_slice(&s[start..at]);
            for _ in 0..count {
                let start = at;
                let i = varint(s, &mut at)?;
                out.extend_from_slice(&s[start..at]);
                covered_chunk(s, &mut at, chunk_len(i), out)?;
            }
        }
        _ => out.extend_from_slice(s),
    }
    Some(())
}

/// Everything `D` covers: header, table, then the sections as covered.
pub fn covered(p: &Parts) -> Vec<u8> {
    let mut out = p.header.clone();
    out[144..146].copy_from_slice(&(p.sections.len() as u16).to_le_bytes());
    for (kind, s) in &p.sections {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    let memory_len = u64_at(&p.header, 104) as usize;
    for (kind, s) in &p.sections {
        let _ = covered_section(*kind, s, memory_len, &mut out);
    }
    out
}

/// The digest a signature or seal covers: `SHA-256(covered || key id)` signed, else
/// `SHA-256(covered)`.
pub fn digest(p: &Parts) -> [u8; 32] {
    let mut c = covered(p);
    if flags(&p.header) & 0x0008 != 0 {
        c.extend_from_slice(&p.auth[..8]);
    }
    sha256(&c)
}

/// Joins parts into a container: the table from the sections, the trailer
/// `SHA-256(covered || auth block)` recomputed (the authentication block is kept as given).
pub fn join(p: &Parts) -> Vec<u8> {
    let mut out = p.header.clone();
    out[144..146].copy_from_slice(&(p.sections.len() as u16).to_le_bytes());
    for (kind, s) in &p.sections {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    for (_, s) in &p.sections {
        out.extend_from_slice(s);
    }
    out.extend_from_slice(&p.auth);
    let mut c = covered(p);
    c.extend_from_slice(&p.auth);
    out.extend_from_slice(&sha256(&c));
    out
}

/// The tree hash of leaves, recursively, as the text defines it.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => sha256(b""),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let mut m = vec![1u8];
            m.extend_from_slice(&mth(&leaves[..k]));
            m.extend_from_slice(&mth(&leaves[k..]));
            sha256(&m)
        }
    }
}

/// The memory root of version 3.
pub fn tree_root(memory: &[u8]) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = memory.chunks(CHUNK).map(sha256).collect();
    let mut m = vec![2u8];
    m.extend_from_slice(&(memory.len() as u64).to_le_bytes());
    m.extend_from_slice(&mth(&leaves));
    sha256(&m)
}

/// The section of `kind`.
pub fn section(p: &Parts, kind: u16) -> Option<&Vec<u8>> {
    p.sections.iter().find(|s| s.0 == kind).map(|s| &s.1)
}

pub fn section_mut(p: &mut Parts, kind: u16) -> &mut Vec<u8> {
    &mut p.sections.iter_mut().find(|s| s.0 == kind).unwrap().1
}
