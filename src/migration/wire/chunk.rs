//! Reading chunks, without an allocator: the cursor over untrusted bytes, one chunk's decoding,
//! and the version-2 decoders that write memory into a caller's buffer (`decode_into`), hashing
//! each chunk once into the memory root.

use super::memory::{chunk_digest, Commit, CHUNK_SIZE};
use crate::{DecodeError, DigestPrefix};

pub(crate) const ZERO: u8 = 0;
pub(crate) const RAW: u8 = 1;
pub(crate) const LZ4: u8 = 2;

/// A cursor over untrusted bytes; every read checks the length first.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A canonical LEB128 varint that fits `usize`.
    pub fn varint(&mut self) -> Result<usize, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::BadVarint); // over-long
                }
                return usize::try_from(value).map_err(|_| DecodeError::BadVarint);
            }
        }
        Err(DecodeError::BadVarint)
    }
}

/// One chunk as it is written, before decoding: the bytes after its tag.
#[derive(Clone, Copy)]
pub(crate) enum Encoded<'a> {
    /// `00`: all zeros.
    Zero,
    /// `01`: the chunk's bytes.
    Raw(&'a [u8]),
    /// `02 <varint n>`: an LZ4 block of `n` bytes; `varint` is the length's own bytes.
    Lz4 { varint: &'a [u8], block: &'a [u8] },
}

/// Reads one chunk of `len` bytes as written (tag, and for LZ4 its length), without decoding
/// it: the structure every chunked and delta encoding shares.
pub(crate) fn read_chunk<'a>(r: &mut Reader<'a>, len: usize) -> Result<Encoded<'a>, DecodeError> {
    match r.byte()? {
        ZERO => Ok(Encoded::Zero),
        RAW => Ok(Encoded::Raw(r.take(len)?)),
        LZ4 => {
            let before = r.0;
            let n = r.varint()?;
            let varint = &before[..before.len() - r.0.len()];
            if n >= len {
                return Err(DecodeError::BadChunk); // the encoder stores such chunks raw
            }
            Ok(Encoded::Lz4 {
                varint,
                block: r.take(n)?,
            })
        }
        _ => Err(DecodeError::BadChunk),
    }
}

/// Decodes one chunk into `out` (exactly the chunk's length, zeroed).
/// Returns whether the chunk was written as zeros.
pub(crate) fn get_chunk(r: &mut Reader<'_>, out: &mut [u8]) -> Result<bool, DecodeError> {
    match read_chunk(r, out.len())? {
        Encoded::Zero => Ok(true),
        Encoded::Raw(bytes) => {
            out.copy_from_slice(bytes);
            nonzero(out).map(|()| false)
        }
        Encoded::Lz4 { block, .. } => {
            lz4_into(block, out)?;
            nonzero(out).map(|()| false)
        }
    }
}

#[cfg(feature = "lz4")]
fn lz4_into(packed: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    match lz4_flex::block::decompress_into(packed, out) {
        Ok(n) if n == out.len() && last_match_nibble_is_zero(packed) => Ok(()),
        _ => Err(DecodeError::BadChunk),
    }
}

/// Whether the low four bits of the block's last token are zero. They give the length of a
/// match, and the last sequence of an LZ4 block has none: decoders never read those bits, so
/// without this check four different blocks (and, in version 2, whose trailer covers the memory
/// root rather than these bytes, four different snapshots) decode to the same chunk. Walks the
/// sequences (tokens and lengths, skipping literals and offsets) of a block that decoded, with
/// every index checked anyway.
#[cfg(feature = "lz4")]
fn last_match_nibble_is_zero(block: &[u8]) -> bool {
    // A length nibble of 15 continues in bytes that add up until one is below 255.
    fn length(block: &[u8], at: &mut usize, nibble: u8) -> Option<usize> {
        let mut n = usize::from(nibble);
        if nibble == 15 {
            loop {
                let b = *block.get(*at)?;
                *at += 1;
                n = n.checked_add(usize::from(b))?;
                if b != 255 {
                    break;
                }
            }
        }
        Some(n)
    }
    let mut at = 0usize;
    loop {
        let Some(&token) = block.get(at) else {
            return false;
        };
        at += 1;
        let Some(literals) = length(block, &mut at, token >> 4) else {
            return false;
        };
        let Some(end) = at.checked_add(literals) else {
            return false;
        };
        at = end;
        if at >= block.len() {
            // The last sequence: its literals end the block, and no match follows.
            return at == block.len() && token & 0x0f == 0;
        }
        at += 2; // the match offset
        if length(block, &mut at, token & 0x0f).is_none() {
            return false;
        }
    }
}

#[cfg(not(feature = "lz4"))]
fn lz4_into(_: &[u8], _: &mut [u8]) -> Result<(), DecodeError> {
    Err(DecodeError::Lz4Disabled)
}

/// Whether `bytes` are all zeros: compared with a zero block, a `memcmp` per 64 bytes (a byte
/// loop is a hundred times slower in the unoptimized test builds, which check every chunk of
/// every flipped vector).
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    const ZEROS: [u8; 64] = [0; 64];
    bytes.chunks(64).all(|b| b == &ZEROS[..b.len()])
}

/// A chunk written as raw or LZ4 must not be all zeros: the encoder writes those as `00`.
fn nonzero(chunk: &[u8]) -> Result<(), DecodeError> {
    if is_zero(chunk) {
        return Err(DecodeError::BadChunk);
    }
    Ok(())
}

/// Whether chunk `i` of `memory` equals chunk `i` of `base` read with zeros past its end.
pub(crate) fn base_chunk_equals(base: &[u8], i: usize, chunk: &[u8]) -> bool {
    let start = i * CHUNK_SIZE;
    let have = base.get(start..).unwrap_or(&[]);
    let common = have.len().min(chunk.len());
    have[..common] == chunk[..common] && is_zero(&chunk[common..])
}

/// The digest of a full zero chunk, computed once per decode.
/// Computed on first use: a decode without zero chunks never pays for it.
pub(crate) struct ZeroDigest(core::cell::OnceCell<[u8; 32]>);

impl ZeroDigest {
    pub fn new() -> Self {
        ZeroDigest(core::cell::OnceCell::new())
    }

    pub fn of(&self, len: usize) -> [u8; 32] {
        if len == CHUNK_SIZE {
            *self.0.get_or_init(|| zeros_digest(CHUNK_SIZE))
        } else {
            zeros_digest(len)
        }
    }
}

/// The SHA-256 of `len` zero bytes, hashed from a 64-byte block rather than a 4 KiB one: a
/// 4 KiB array of zeros would sit in a microcontroller's flash.
fn zeros_digest(len: usize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let block = [0u8; 64];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        h.update(&block[..n]);
        left -= n;
    }
    h.finalize().into()
}

/// Chunk `i` of `memory` (of `len` bytes) read from `base` with zeros past its end.
#[cfg(feature = "alloc")]
pub(crate) fn base_chunk_len(len: usize, i: usize) -> usize {
    (len - i * CHUNK_SIZE).min(CHUNK_SIZE)
}

/// Decodes version 2's chunked state into `out` (exactly the memory's length) and returns the
/// memory root. Allocates nothing.
pub(crate) fn chunked_into(
    blob: &[u8],
    out: &mut [u8],
    commit: Commit,
) -> Result<[u8; 32], DecodeError> {
    let mut r = Reader(blob);
    let mut root = commit.builder(out.len() as u64);
    let zero = ZeroDigest::new();
    for chunk in out.chunks_mut(CHUNK_SIZE) {
        chunk.fill(0);
        let was_zero = get_chunk(&mut r, chunk)?;
        root.push(&if was_zero {
            zero.of(chunk.len())
        } else {
            chunk_digest(chunk)
        });
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadChunk);
    }
    Ok(root.finish())
}

/// Applies a version-2 delta to `base`, writing the new memory into `out` (exactly its length),
/// and returns its root. The base's root is computed (no digests are kept without an
/// allocator), so this hashes the base once and the new memory once. Allocates nothing.
pub(crate) fn delta_into(
    blob: &[u8],
    base: &[u8],
    out: &mut [u8],
    commit: Commit,
) -> Result<[u8; 32], DecodeError> {
    let mut r = Reader(blob);
    let named: [u8; 32] = r
        .take(32)?
        .try_into()
        .map_err(|_| DecodeError::UnexpectedEnd)?;
    let actual = commit.root(base);
    if named != actual {
        return Err(DecodeError::WrongDeltaBase {
            expected: DigestPrefix::of(&named),
            found: DigestPrefix::of(&actual),
        });
    }
    let len = out.len();
    let chunks = len.div_ceil(CHUNK_SIZE);
    let count = r.varint()?;
    if count > r.0.len() / 2 || count > chunks {
        return Err(DecodeError::UnexpectedEnd);
    }
    let mut listed = count;
    let mut next_listed = if listed > 0 { Some(r.varint()?) } else { None };
    let mut root = commit.builder(len as u64);
    for (i, chunk) in out.chunks_mut(CHUNK_SIZE).enumerate() {
        let start = i * CHUNK_SIZE;
        // The base's chunk, zeros past its end.
        chunk.fill(0);
        if start < base.len() {
            let have = &base[start..base.len().min(start + chunk.len())];
            chunk[..have.len()].copy_from_slice(have);
        }
        match next_listed {
            Some(j) if j < i || j >= chunks => return Err(DecodeError::BadChunk),
            Some(j) if j == i => {
                chunk.fill(0);
                get_chunk(&mut r, chunk)?;
                if base_chunk_equals(base, i, chunk) {
                    return Err(DecodeError::BadChunk);
                }
                listed -= 1;
                next_listed = if listed > 0 { Some(r.varint()?) } else { None };
            }
            _ => {}
        }
        root.push(&chunk_digest(chunk));
    }
    if next_listed.is_some() || !r.0.is_empty() {
        return Err(DecodeError::BadChunk);
    }
    Ok(root.finish())
}
