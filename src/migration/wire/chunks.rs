//! The chunked encodings of linear memory (wire flags `STATE_CHUNKED` and `STATE_DELTA`).
//!
//! Memory is cut into 4 KiB chunks (a WebAssembly page is 16 of them: finer chunks find more
//! zeros and smaller deltas). Each chunk is written as
//!
//! ```text
//! 00                       all zeros
//! 01 <bytes>               raw: the chunk's bytes (4096, or fewer for the last chunk)
//! 02 <varint n> <n bytes>  an LZ4 block (lz4_flex) that decompresses to exactly the chunk
//! ```
//!
//! A chunked state is `<varint memory length>` followed by every chunk in order. A delta is
//! `<32-byte SHA-256 of the base memory> <varint memory length> <varint count>` followed by
//! `count` pairs `<varint chunk index> <chunk>`, indices strictly increasing; chunks not listed
//! are the base's (zeros past its end). Every chunk past the end of the base must be listed, so
//! the decoded length is bounded by the input.

#[cfg(feature = "lz4")]
use super::chunk::LZ4;
use super::chunk::{base_chunk_equals, base_chunk_len, get_chunk, Reader, ZeroDigest, RAW, ZERO};
use super::memory::{chunk_digest, Commit, MemoryDigests, CHUNK_SIZE};
use crate::{sha256, DecodeError, DigestPrefix, LimitedField};
use alloc::vec::Vec;

/// Writes a postcard-style varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Scratch space for compressing one chunk, allocated once per encoding.
struct Packer {
    #[cfg(feature = "lz4")]
    scratch: Vec<u8>,
}

impl Packer {
    fn new() -> Self {
        Packer {
            #[cfg(feature = "lz4")]
            scratch: alloc::vec![0u8; lz4_flex::block::get_maximum_output_size(CHUNK_SIZE)],
        }
    }

    /// Encodes one chunk: zeros as a tag, else LZ4 if that is smaller, else raw.
    fn put_chunk(&mut self, out: &mut Vec<u8>, chunk: &[u8]) {
        if super::chunk::is_zero(chunk) {
            out.push(ZERO);
            return;
        }
        #[cfg(feature = "lz4")]
        if let Ok(n) = lz4_flex::block::compress_into(chunk, &mut self.scratch) {
            if n < chunk.len() {
                out.push(LZ4);
                put_varint(out, n as u64);
                out.extend_from_slice(&self.scratch[..n]);
                return;
            }
        }
        out.push(RAW);
        out.extend_from_slice(chunk);
    }
}

/// `len` zero bytes, or `TooLarge` if the allocator cannot give them: a length from the input
/// never aborts the process, whatever the limits.
pub(crate) fn zeroed(len: usize, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit,
            found: len,
        })?;
    // Block copies rather than `resize`, whose byte loop dominates unoptimized test builds.
    const ZEROS: [u8; CHUNK_SIZE] = [0; CHUNK_SIZE];
    while v.len() < len {
        let n = (len - v.len()).min(CHUNK_SIZE);
        v.extend_from_slice(&ZEROS[..n]);
    }
    Ok(v)
}

fn check_limit(len: usize, limit: usize) -> Result<(), DecodeError> {
    if len > limit {
        return Err(DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit,
            found: len,
        });
    }
    Ok(())
}

/// Encodes `memory` chunk by chunk.
pub(crate) fn encode_chunked(memory: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, memory.len() as u64);
    put_chunks(&mut out, memory);
    out
}

fn put_chunks(out: &mut Vec<u8>, memory: &[u8]) {
    let mut packer = Packer::new();
    for chunk in memory.chunks(CHUNK_SIZE) {
        packer.put_chunk(out, chunk);
    }
}

/// Decodes a chunked state. Allocates the memory only after checking its length against
/// `limit` and against the input: every chunk takes at least one byte, so the output is at most
/// 4096 times the blob.
pub(crate) fn decode_chunked(blob: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader(blob);
    let len = r.varint()?;
    check_limit(len, limit)?;
    if len.div_ceil(CHUNK_SIZE) > r.0.len() {
        return Err(DecodeError::UnexpectedEnd);
    }
    let mut memory = zeroed(len, limit)?;
    for chunk in memory.chunks_mut(CHUNK_SIZE) {
        get_chunk(&mut r, chunk)?;
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadChunk);
    }
    Ok(memory)
}

/// The chunks of `memory` that differ from `base` (zeros past the base's end), and every chunk
/// past the base's end.
pub(crate) fn encode_delta(base: &[u8], memory: &[u8]) -> Vec<u8> {
    let base_chunks = base.len().div_ceil(CHUNK_SIZE);
    let mut entries = Vec::new();
    let mut packer = Packer::new();
    let mut count = 0u64;
    for (i, chunk) in memory.chunks(CHUNK_SIZE).enumerate() {
        if i < base_chunks && base_chunk_equals(base, i, chunk) {
            continue;
        }
        put_varint(&mut entries, i as u64);
        packer.put_chunk(&mut entries, chunk);
        count += 1;
    }
    let mut out = Vec::with_capacity(32 + 20 + entries.len());
    out.extend_from_slice(&sha256(base));
    put_varint(&mut out, memory.len() as u64);
    put_varint(&mut out, count);
    out.extend_from_slice(&entries);
    out
}

/// Applies a delta to `base`. The base must be the memory the delta names (its SHA-256), or
/// nothing is done.
pub(crate) fn decode_delta(blob: &[u8], base: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader(blob);
    let named: [u8; 32] = r
        .take(32)?
        .try_into()
        .map_err(|_| DecodeError::UnexpectedEnd)?;
    let actual = sha256(base);
    if named != actual {
        return Err(DecodeError::WrongDeltaBase {
            expected: DigestPrefix::of(&named),
            found: DigestPrefix::of(&actual),
        });
    }
    let len = r.varint()?;
    let count = r.varint()?;
    check_limit(len, limit)?;
    let chunks = len.div_ceil(CHUNK_SIZE);
    let base_chunks = base.len().div_ceil(CHUNK_SIZE);
    // Chunks past the base must be listed, and each listed chunk takes at least two bytes.
    if count > r.0.len() / 2 || chunks > base_chunks.saturating_add(count) {
        return Err(DecodeError::UnexpectedEnd);
    }
    let mut memory = zeroed(len, limit)?;
    let keep = base.len().min(len);
    memory[..keep].copy_from_slice(&base[..keep]);
    let mut next = 0usize;
    for _ in 0..count {
        let i = r.varint()?;
        if i < next || i >= chunks {
            return Err(DecodeError::BadChunk);
        }
        // Chunks between the previous listed one and this one, past the base, were not listed.
        if i > next && i > base_chunks {
            return Err(DecodeError::BadChunk);
        }
        let start = i * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(len);
        let mut fresh = [0u8; CHUNK_SIZE];
        let fresh = &mut fresh[..end - start];
        get_chunk(&mut r, fresh)?;
        // The encoder lists only chunks that changed (and every chunk past the base).
        if i < base_chunks && base_chunk_equals(base, i, fresh) {
            return Err(DecodeError::BadChunk);
        }
        memory[start..end].copy_from_slice(fresh);
        next = i + 1;
    }
    // Chunks after the last listed one must all lie within the base.
    if next < chunks && chunks > base_chunks {
        return Err(DecodeError::BadChunk);
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadChunk);
    }
    Ok(memory)
}

// Version 2: the memory's length is in the envelope, and the memory is committed to by its root
// (`memory`), so decoding hashes each decoded chunk once and a delta against a base whose
// digests are kept hashes only the chunks it carries.

/// Version 2's chunked state: every chunk in order, nothing before them.
pub(crate) fn encode_chunked_v2(memory: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_chunks(&mut out, memory);
    out
}

/// Decodes version 2's chunked state of `len` bytes (already checked against the limit) and
/// hashes each chunk once.
pub(crate) fn decode_chunked_v2(
    blob: &[u8],
    len: usize,
    limit: usize,
) -> Result<(Vec<u8>, MemoryDigests), DecodeError> {
    let mut r = Reader(blob);
    if len.div_ceil(CHUNK_SIZE) > r.0.len() {
        return Err(DecodeError::UnexpectedEnd);
    }
    let mut memory = zeroed(len, limit)?;
    let mut digests = digest_vec(len, limit)?;
    let zero = ZeroDigest::new();
    for chunk in memory.chunks_mut(CHUNK_SIZE) {
        let was_zero = get_chunk(&mut r, chunk)?;
        digests.push(if was_zero {
            zero.of(chunk.len())
        } else {
            chunk_digest(chunk)
        });
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadChunk);
    }
    Ok((memory, MemoryDigests::from_parts(len, digests)))
}

pub(crate) fn digest_vec(len: usize, limit: usize) -> Result<Vec<[u8; 32]>, DecodeError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len.div_ceil(CHUNK_SIZE))
        .map_err(|_| DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit,
            found: len,
        })?;
    Ok(v)
}

/// The digests of `base`: the ones given (they must describe `base`), or computed.
fn base_digests(base: &[u8], given: Option<&MemoryDigests>) -> Result<MemoryDigests, DecodeError> {
    match given {
        Some(d) if d.memory_len() == base.len() => Ok(d.clone()),
        Some(_) => Err(DecodeError::BaseDigestsMismatch),
        None => Ok(MemoryDigests::of(base)),
    }
}

/// Version 2's delta: `<32-byte root of the base> <varint count>` then `count` entries
/// `<varint chunk index> <chunk>`, indices strictly increasing. Lists exactly the chunks of
/// `memory` that differ from the base read with zeros past its end. Hashes only those chunks
/// when `known` holds the base's digests; returns the new memory's digests.
pub(crate) fn encode_delta_v2(
    base: &[u8],
    known: Option<&MemoryDigests>,
    memory: &[u8],
    commit: Commit,
) -> Result<(Vec<u8>, MemoryDigests), DecodeError> {
    let base_d = base_digests(base, known)?;
    let base_chunks = base.len().div_ceil(CHUNK_SIZE);
    let mut entries = Vec::new();
    let mut digests = Vec::with_capacity(memory.len().div_ceil(CHUNK_SIZE));
    let mut packer = Packer::new();
    let zero = ZeroDigest::new();
    let mut count = 0u64;
    for (i, chunk) in memory.chunks(CHUNK_SIZE).enumerate() {
        if base_chunk_equals(base, i, chunk) {
            let same_len = i < base_chunks && base_chunk_len(base.len(), i) == chunk.len();
            digests.push(if same_len {
                base_d.chunks()[i]
            } else if i >= base_chunks {
                zero.of(chunk.len())
            } else {
                chunk_digest(chunk)
            });
            continue;
        }
        put_varint(&mut entries, i as u64);
        packer.put_chunk(&mut entries, chunk);
        digests.push(chunk_digest(chunk));
        count += 1;
    }
    let mut out = Vec::with_capacity(32 + 10 + entries.len());
    out.extend_from_slice(&base_d.root_by(commit));
    put_varint(&mut out, count);
    out.extend_from_slice(&entries);
    Ok((out, MemoryDigests::from_parts(memory.len(), digests)))
}

/// Applies a version-2 delta to `base`, giving `len` bytes (already checked against the limit).
/// The base must be the one the delta names by its root, or nothing is done. With the base's
/// digests known, only the chunks the delta carries are hashed.
pub(crate) fn decode_delta_v2(
    blob: &[u8],
    base: &[u8],
    known: Option<&MemoryDigests>,
    len: usize,
    limit: usize,
    commit: Commit,
) -> Result<(Vec<u8>, MemoryDigests), DecodeError> {
    let mut r = Reader(blob);
    let named: [u8; 32] = r
        .take(32)?
        .try_into()
        .map_err(|_| DecodeError::UnexpectedEnd)?;
    let base_d = base_digests(base, known)?;
    let actual = base_d.root_by(commit);
    if named != actual {
        return Err(DecodeError::WrongDeltaBase {
            expected: DigestPrefix::of(&named),
            found: DigestPrefix::of(&actual),
        });
    }
    let count = r.varint()?;
    let chunks = len.div_ceil(CHUNK_SIZE);
    // Each listed chunk takes at least two bytes.
    if count > r.0.len() / 2 || count > chunks {
        return Err(DecodeError::UnexpectedEnd);
    }
    let mut memory = zeroed(len, limit)?;
    let keep = base.len().min(len);
    memory[..keep].copy_from_slice(&base[..keep]);
    let base_chunks = base.len().div_ceil(CHUNK_SIZE);
    let zero = ZeroDigest::new();
    // Unlisted chunks: the base's digest where the chunk is the base's whole chunk, else hashed
    // (a base chunk cut short or extended, or zeros past the base).
    let mut digests = digest_vec(len, limit)?;
    for i in 0..chunks {
        let clen = base_chunk_len(len, i);
        digests.push(
            if i < base_chunks && base_chunk_len(base.len(), i) == clen {
                base_d.chunks()[i]
            } else if i * CHUNK_SIZE >= base.len() {
                zero.of(clen)
            } else {
                chunk_digest(&memory[i * CHUNK_SIZE..i * CHUNK_SIZE + clen])
            },
        );
    }
    let mut next = 0usize;
    for _ in 0..count {
        let i = r.varint()?;
        if i < next || i >= chunks {
            return Err(DecodeError::BadChunk);
        }
        let start = i * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(len);
        let mut fresh = [0u8; CHUNK_SIZE];
        let fresh = &mut fresh[..end - start];
        get_chunk(&mut r, fresh)?;
        // Only chunks that changed are listed.
        if base_chunk_equals(base, i, fresh) {
            return Err(DecodeError::BadChunk);
        }
        memory[start..end].copy_from_slice(fresh);
        digests[i] = chunk_digest(fresh);
        next = i + 1;
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadChunk);
    }
    Ok((memory, MemoryDigests::from_parts(len, digests)))
}

/// A version-2 delta checked against a base: the chunks it changes, decoded, and the digests
/// of the memory it gives. Nothing has been written anywhere yet.
pub(crate) struct CheckedDelta {
    pub len: usize,
    pub chunks: Vec<(usize, [u8; CHUNK_SIZE])>,
    pub digests: MemoryDigests,
}

impl CheckedDelta {
    /// Writes the changed chunks into `memory`, which must hold the base with its length
    /// already set to `len` (zeros past the base's end).
    pub fn write_into(&self, memory: &mut [u8]) {
        for (i, chunk) in &self.chunks {
            let start = i * CHUNK_SIZE;
            let clen = base_chunk_len(self.len, *i);
            memory[start..start + clen].copy_from_slice(&chunk[..clen]);
        }
    }
}

/// Checks a version-2 delta against `base` (whose digests are `known`) without changing
/// anything: the entries are decoded (into scratch space proportional to the delta), the new
/// digests computed from `known` and the carried chunks only, and their root compared with
/// `expected_root`.
pub(crate) fn check_delta(
    blob: &[u8],
    base: &[u8],
    known: &MemoryDigests,
    len: usize,
    limit: usize,
    expected_root: &[u8; 32],
    commit: Commit,
) -> Result<CheckedDelta, crate::CellError> {
    if known.memory_len() != base.len() {
        return Err(DecodeError::BaseDigestsMismatch.into());
    }
    let mut r = Reader(blob);
    let named: [u8; 32] = r
        .take(32)?
        .try_into()
        .map_err(|_| DecodeError::UnexpectedEnd)?;
    let actual = known.root_by(commit);
    if named != actual {
        return Err(DecodeError::WrongDeltaBase {
            expected: DigestPrefix::of(&named),
            found: DigestPrefix::of(&actual),
        }
        .into());
    }
    let count = r.varint()?;
    let chunks = len.div_ceil(CHUNK_SIZE);
    if count > r.0.len() / 2 || count > chunks {
        return Err(DecodeError::UnexpectedEnd.into());
    }
    let mut fresh: Vec<(usize, [u8; CHUNK_SIZE])> = Vec::new();
    fresh
        .try_reserve_exact(count)
        .map_err(|_| DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit,
            found: len,
        })?;
    let mut next = 0usize;
    for _ in 0..count {
        let i = r.varint()?;
        if i < next || i >= chunks {
            return Err(DecodeError::BadChunk.into());
        }
        let clen = base_chunk_len(len, i);
        let mut chunk = [0u8; CHUNK_SIZE];
        get_chunk(&mut r, &mut chunk[..clen])?;
        if base_chunk_equals(base, i, &chunk[..clen]) {
            return Err(DecodeError::BadChunk.into());
        }
        fresh.push((i, chunk));
        next = i + 1;
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadChunk.into());
    }
    // The new digests: the base's where a chunk is unchanged and whole, else computed.
    let base_chunks = base.len().div_ceil(CHUNK_SIZE);
    let zero = ZeroDigest::new();
    let mut digests = digest_vec(len, limit)?;
    let mut listed = fresh.iter().peekable();
    for i in 0..chunks {
        let clen = base_chunk_len(len, i);
        let d = match listed.peek() {
            Some((j, chunk)) if *j == i => {
                let d = chunk_digest(&chunk[..clen]);
                listed.next();
                d
            }
            _ if i < base_chunks && base_chunk_len(base.len(), i) == clen => known.chunks()[i],
            _ if i * CHUNK_SIZE >= base.len() => zero.of(clen),
            _ => {
                // A base chunk cut short or extended with zeros.
                let mut c = [0u8; CHUNK_SIZE];
                let start = i * CHUNK_SIZE;
                let have = &base[start..base.len().min(start + clen)];
                c[..have.len()].copy_from_slice(have);
                chunk_digest(&c[..clen])
            }
        };
        digests.push(d);
    }
    let digests = MemoryDigests::from_parts(len, digests);
    super::check_digest(
        crate::Digested::Memory,
        expected_root,
        &digests.root_by(commit),
    )?;
    Ok(CheckedDelta {
        len,
        chunks: fresh,
        digests,
    })
}

/// Applies a version-2 delta to `held`, the base memory, in place: checked first
/// ([`check_delta`]), so `held` changes only once everything checked out. Returns the new
/// memory's digests.
pub(crate) fn delta_onto(
    blob: &[u8],
    held: &mut Vec<u8>,
    known: &MemoryDigests,
    len: usize,
    limit: usize,
    expected_root: &[u8; 32],
    commit: Commit,
) -> Result<MemoryDigests, crate::CellError> {
    let checked = check_delta(blob, held, known, len, limit, expected_root, commit)?;
    if len > held.len() {
        held.try_reserve_exact(len - held.len())
            .map_err(|_| DecodeError::TooLarge {
                field: LimitedField::WasmState,
                limit,
                found: len,
            })?;
    }
    held.resize(len, 0);
    checked.write_into(held);
    Ok(checked.digests)
}

/// Copies raw memory out of the input and hashes each chunk from the copy while it is still
/// in cache: one read of the input for both.
pub(crate) fn copy_with_digests(
    state: &[u8],
    limit: usize,
) -> Result<(Vec<u8>, MemoryDigests), DecodeError> {
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(state.len())
        .map_err(|_| DecodeError::TooLarge {
            field: LimitedField::WasmState,
            limit,
            found: state.len(),
        })?;
    let mut digests = digest_vec(state.len(), limit)?;
    for chunk in state.chunks(CHUNK_SIZE) {
        let at = memory.len();
        memory.extend_from_slice(chunk);
        digests.push(chunk_digest(&memory[at..]));
    }
    Ok((memory, MemoryDigests::from_parts(state.len(), digests)))
}
