//! Version 3: one signed container for everything a receiver acts on — a fixed header, a table
//! of typed sections, the sections, an authentication block and a trailer.
//!
//! ```text
//! offset  size  field
//! 0       8     header: magic "MCSN", version 3, flags
//! 8       16    agent id
//! 24      32    DNA hash (SHA-256 of the binary)
//! 56      16    source node (all zeros: none)
//! 72      16    target node (never all zeros)
//! 88      8     epoch, u64 LE, at most MAX_EPOCH
//! 96      8     timestamp, u64 LE, Unix seconds
//! 104     8     memory length, u64 LE (decoded)
//! 112     32    memory root: the hash tree over the memory's 4 KiB chunks (`tree`)
//! 144     2     section count n, u16 LE, 1..=8
//! 146     2     reserved, zero
//! 148     12n   section table: kind u16 LE, reserved u16 (zero), length u64 LE; kinds increasing
//! ...           the sections, in table order
//! ...     72    FLAG_SIGNED: key id (8), Ed25519 signature (64)
//! ...     32    FLAG_SEALED: the node's keyed MAC (HMAC-SHA256) over the same digest
//! ...     32    trailer
//! ```
//!
//! What is hashed (`D`, the digest the signature or seal covers): the header and table, then
//! each section in order, except the bytes something else already commits to: the binary
//! (committed by the DNA hash) and the payload of each raw memory chunk (committed by the
//! memory root, through its chunk's leaf). Every other byte — section tables, tags, LZ4 blocks,
//! the inbox — is in `D`, so any change to any byte of a container is caught, and each byte of
//! the binary and of raw memory is still hashed once.

use super::chunk::{is_zero, read_chunk, Encoded, Reader};
use super::frame::{
    node, read_16, read_32, read_u64, AGENT, DNA, EPOCH, MEMORY_LEN, MEMORY_ROOT, SOURCE, TARGET,
    TIMESTAMP,
};
use super::memory::{Commit, CHUNK_SIZE};
use super::tail::{Tail, MAX_TAIL_LEN};
use super::{
    check_digest, header, within, DecodeLimits, Parsed, Route, SignatureBlock, Signed,
    FLAG_DNA_BY_REFERENCE, FLAG_SIGNED, FLAG_STATE_CHUNKED, FLAG_STATE_DELTA, TRAILER_LEN,
};
use crate::{AgentId, CellError, DecodeError, Digested, LimitedField, NodeId, MAX_EPOCH};
use sha2::{Digest, Sha256};

/// The fixed header of a version-3 container, before its section table.
pub const V3_HEADER_LEN: usize = 148;
/// One entry of the section table: kind (2), reserved (2), length (8).
pub const SECTION_ENTRY_LEN: usize = 12;
/// The most sections a container holds.
pub const MAX_SECTIONS: usize = 8;
/// A sealed container's authentication block: a 32-byte HMAC-SHA256 tag.
pub const SEAL_LEN: usize = 32;
/// What a version-3 signature signs before the 32-byte digest.
pub const V3_SIGNATURE_CONTEXT: &[u8; 34] = b"mielin-cells/snapshot-signature/v3";
/// What a seal (a node's MAC over its own files) covers before the 32-byte digest.
pub const SEAL_CONTEXT: &[u8; 26] = b"mielin-cells/local-seal/v3";

/// Version 3 flag: the memory is not in the container; its chunks follow in chunk frames and
/// are checked against the memory root (no memory section). (In versions 1 and 2 this bit is
/// `FLAG_STATE_CHUNKED`.)
pub const FLAG_MEMORY_BY_MANIFEST: u16 = 0x0002;
/// Version 3 flag: a seal (the node's own keyed MAC) instead of a signature: for files a node
/// writes for itself.
pub const FLAG_SEALED: u16 = 0x0010;
/// The flags version 3 knows.
pub(crate) const V3_FLAGS: u16 =
    FLAG_DNA_BY_REFERENCE | FLAG_MEMORY_BY_MANIFEST | FLAG_SIGNED | FLAG_SEALED;

/// Section: globals and policy, as version 2's tail. Required.
pub const SECTION_TAIL: u16 = 0x0001;
/// Section: the WebAssembly binary. Present exactly when the DNA is not sent by reference.
pub const SECTION_BINARY: u16 = 0x0002;
/// Section: the whole memory, every chunk in order (`00` zeros, `01` raw, `02` LZ4).
pub const SECTION_MEMORY: u16 = 0x0003;
/// Section: the memory as a delta against a base the receiver holds (named by its tree root).
pub const SECTION_MEMORY_DELTA: u16 = 0x0004;
/// Section: the agent's messaging state (mailbox, outbox, sequence numbers).
pub const SECTION_INBOX: u16 = 0x0005;
/// Section: a call suspended in the middle (`runtime::midcall::SuspendedCall`): the
/// interrupted export, where its unwound frames lie in memory, and the suspending import's own
/// state. Absent when the agent was captured between calls.
pub const SECTION_CALL: u16 = 0x0006;
/// Kinds with this bit set may be skipped by a receiver that does not know them; any other
/// unknown kind refuses the container.
pub const SECTION_IGNORABLE: u16 = 0x8000;

/// The longest inbox section accepted.
pub const MAX_INBOX_SECTION_LEN: usize = 4 << 20;
/// The longest call section accepted.
pub const MAX_CALL_SECTION_LEN: usize = 2048;
/// The longest section of an unknown, ignorable kind accepted.
pub const MAX_IGNORABLE_SECTION_LEN: usize = 64 << 10;

const SECTION_COUNT: usize = 144;
const RESERVED: usize = 146;

/// Where a section lies in the container.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    kind: u16,
    start: usize,
    len: usize,
}

/// A version-3 container whose header, section table and declared sizes have been checked:
/// after [`Container::new_checked`], no accessor can panic, and nothing has been hashed.
#[derive(Debug, Clone, Copy)]
pub struct Container<T: AsRef<[u8]>> {
    buffer: T,
    spans: [Span; MAX_SECTIONS],
    count: usize,
    auth_start: usize,
}

fn auth_len(flags: u16) -> usize {
    if flags & FLAG_SIGNED != 0 {
        super::frame::V2_SIGNATURE_BLOCK_LEN
    } else if flags & FLAG_SEALED != 0 {
        SEAL_LEN
    } else {
        0
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// The most bytes a memory section of `chunks` chunks can take: every chunk raw.
fn max_memory_section(chunks: u64) -> u64 {
    chunks.saturating_mul(1 + CHUNK_SIZE as u64)
}

impl<T: AsRef<[u8]>> Container<T> {
    /// Checks `buffer` as a version-3 container, in the order of `docs/wire-format.md`:
    /// header, length, section table, sizes against `limits` and the input, which sections
    /// are present, the target and the epoch. Nothing is hashed or allocated.
    pub fn new_checked(buffer: T, limits: &DecodeLimits) -> Result<Self, DecodeError> {
        let bytes = buffer.as_ref();
        let (version, flags) = header(bytes)?;
        if version != 3 {
            return Err(DecodeError::UnsupportedVersion {
                expected: 3,
                found: version,
            });
        }
        let fixed = V3_HEADER_LEN + TRAILER_LEN;
        if bytes.len() < fixed {
            return Err(DecodeError::TooShort {
                needed: fixed,
                found: bytes.len(),
            });
        }
        let count = usize::from(u16_at(bytes, SECTION_COUNT));
        if count == 0 || count > MAX_SECTIONS || u16_at(bytes, RESERVED) != 0 {
            return Err(DecodeError::BadSectionTable);
        }
        let table_end = V3_HEADER_LEN + count * SECTION_ENTRY_LEN;
        let needed = table_end + auth_len(flags) + TRAILER_LEN;
        if bytes.len() < needed {
            return Err(DecodeError::TooShort {
                needed,
                found: bytes.len(),
            });
        }
        let memory_len = read_u64(bytes, MEMORY_LEN);
        within(LimitedField::WasmState, limits.max_wasm_state, memory_len)?;
        let chunks = memory_len.div_ceil(CHUNK_SIZE as u64);
        let available = (bytes.len() - needed) as u64;
        let mut spans = [Span::default(); MAX_SECTIONS];
        let mut total: u64 = 0;
        let mut previous: Option<u16> = None;
        for (i, span) in spans.iter_mut().take(count).enumerate() {
            let at = V3_HEADER_LEN + i * SECTION_ENTRY_LEN;
            let kind = u16_at(bytes, at);
            let len = read_u64(bytes, at + 4);
            if u16_at(bytes, at + 2) != 0 || previous.is_some_and(|p| kind <= p) {
                return Err(DecodeError::BadSectionTable);
            }
            previous = Some(kind);
            check_section_len(kind, len, chunks, limits)?;
            total = total.saturating_add(len);
            if total > available {
                return Err(DecodeError::UnexpectedEnd);
            }
            // Within the input, so within usize.
            *span = Span {
                kind,
                start: table_end + (total - len) as usize,
                len: len as usize,
            };
        }
        if total < available {
            return Err(DecodeError::TrailingBytes {
                count: (available - total) as usize,
            });
        }
        let c = Container {
            buffer,
            spans,
            count,
            auth_start: table_end + total as usize,
        };
        c.check_presence(flags)?;
        if read_16(c.bytes(), TARGET) == [0; 16] {
            return Err(DecodeError::MissingTarget);
        }
        let epoch = read_u64(c.bytes(), EPOCH);
        if epoch > MAX_EPOCH {
            return Err(DecodeError::EpochOutOfRange { found: epoch });
        }
        Ok(c)
    }

    /// Which sections must and must not be there, by the flags.
    fn check_presence(&self, flags: u16) -> Result<(), DecodeError> {
        let has = |kind| self.span(kind).is_some();
        if !has(SECTION_TAIL) {
            return Err(DecodeError::MissingSection { kind: SECTION_TAIL });
        }
        match (flags & FLAG_DNA_BY_REFERENCE != 0, has(SECTION_BINARY)) {
            (true, true) => return Err(DecodeError::BinaryWithReference),
            (false, false) => {
                return Err(DecodeError::MissingSection {
                    kind: SECTION_BINARY,
                })
            }
            _ => {}
        }
        let by_manifest = flags & FLAG_MEMORY_BY_MANIFEST != 0;
        match (has(SECTION_MEMORY), has(SECTION_MEMORY_DELTA)) {
            (false, false) if !by_manifest => Err(DecodeError::MissingSection {
                kind: SECTION_MEMORY,
            }),
            (true, true) => Err(DecodeError::UnexpectedSection {
                kind: SECTION_MEMORY_DELTA,
            }),
            (true, false) if by_manifest => Err(DecodeError::UnexpectedSection {
                kind: SECTION_MEMORY,
            }),
            (false, true) if by_manifest => Err(DecodeError::UnexpectedSection {
                kind: SECTION_MEMORY_DELTA,
            }),
            _ => Ok(()),
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn span(&self, kind: u16) -> Option<Span> {
        self.spans[..self.count]
            .iter()
            .copied()
            .find(|s| s.kind == kind)
    }

    /// The wire flags.
    pub fn flags(&self) -> u16 {
        u16_at(self.bytes(), 6)
    }

    /// The agent's id.
    pub fn agent_id(&self) -> AgentId {
        AgentId::from_bytes(read_16(self.bytes(), AGENT))
    }

    /// The SHA-256 of the agent's binary.
    pub fn dna_hash(&self) -> [u8; 32] {
        read_32(self.bytes(), DNA)
    }

    /// The node the container was written on.
    pub fn source_node(&self) -> Option<NodeId> {
        node(read_16(self.bytes(), SOURCE))
    }

    /// The node it is addressed to and the agent's epoch there.
    pub fn route(&self) -> Route {
        Route {
            target: NodeId::from_bytes(read_16(self.bytes(), TARGET)),
            epoch: read_u64(self.bytes(), EPOCH),
        }
    }

    /// Capture time, Unix seconds.
    pub fn timestamp(&self) -> u64 {
        read_u64(self.bytes(), TIMESTAMP)
    }

    /// The decoded memory's length (checked against the limits).
    pub fn memory_len(&self) -> usize {
        read_u64(self.bytes(), MEMORY_LEN) as usize
    }

    /// The memory's tree root.
    pub fn memory_root(&self) -> [u8; 32] {
        read_32(self.bytes(), MEMORY_ROOT)
    }

    /// The section of `kind`, if the container has one (bytes as carried, not checked yet).
    pub fn section(&self, kind: u16) -> Option<&[u8]> {
        self.span(kind)
            .map(|s| &self.bytes()[s.start..s.start + s.len])
    }

    /// The kinds of the sections, in order.
    pub fn section_kinds(&self) -> impl Iterator<Item = u16> + '_ {
        self.spans[..self.count].iter().map(|s| s.kind)
    }

    /// The signing key's id, for a signed container.
    pub fn key_id(&self) -> Option<[u8; 8]> {
        (self.flags() & FLAG_SIGNED != 0).then(|| {
            let mut id = [0u8; 8];
            id.copy_from_slice(&self.bytes()[self.auth_start..self.auth_start + 8]);
            id
        })
    }

    /// Hashes what `D` covers once (see the module docs), walking the memory section's chunks
    /// without decoding them, checks the trailer (`IntegrityMismatch` with
    /// `Digested::SnapshotTrailer`), and returns `D`. Structure errors in a memory section
    /// (`BadChunk`, `BadVarint`, `UnexpectedEnd`) come out here, before anything is decoded.
    pub fn check_trailer(&self) -> Result<[u8; 32], CellError> {
        let bytes = self.bytes();
        let mut h = Sha256::new();
        h.update(&bytes[..V3_HEADER_LEN + self.count * SECTION_ENTRY_LEN]);
        let chunks = self.memory_len().div_ceil(CHUNK_SIZE);
        for s in &self.spans[..self.count] {
            let section = &bytes[s.start..s.start + s.len];
            cover(s.kind, section, self.memory_len(), chunks, &mut h)?;
        }
        let trailer_at = bytes.len() - TRAILER_LEN;
        let auth = &bytes[self.auth_start..trailer_at];
        let digest: [u8; 32] = if self.flags() & FLAG_SIGNED != 0 {
            h.update(&auth[..8]);
            let d = h.clone().finalize().into();
            h.update(&auth[8..]);
            d
        } else {
            let d = h.clone().finalize().into();
            h.update(auth);
            d
        };
        let found: [u8; 32] = h.finalize().into();
        check_digest(
            Digested::SnapshotTrailer,
            &read_32(bytes, trailer_at),
            &found,
        )?;
        Ok(digest)
    }
}

/// The bound on each section's length: before anything is hashed, a length claim costs only
/// this comparison.
fn check_section_len(
    kind: u16,
    len: u64,
    chunks: u64,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    let too_large = |limit: u64| DecodeError::SectionTooLarge {
        kind,
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
        found: usize::try_from(len).unwrap_or(usize::MAX),
    };
    let max = match kind {
        SECTION_TAIL => MAX_TAIL_LEN as u64,
        SECTION_BINARY => {
            return within(LimitedField::WasmBinary, limits.max_wasm_binary, len);
        }
        SECTION_MEMORY => {
            // Each chunk takes at least its tag.
            if len < chunks {
                return Err(DecodeError::UnexpectedEnd);
            }
            max_memory_section(chunks)
        }
        SECTION_MEMORY_DELTA => {
            // The base's root and a count; at most every chunk, each with a 10-byte index.
            if len < 33 {
                return Err(DecodeError::UnexpectedEnd);
            }
            (32 + 10u64).saturating_add(chunks.saturating_mul(11 + CHUNK_SIZE as u64))
        }
        SECTION_INBOX => MAX_INBOX_SECTION_LEN as u64,
        SECTION_CALL => MAX_CALL_SECTION_LEN as u64,
        k if k & SECTION_IGNORABLE != 0 => MAX_IGNORABLE_SECTION_LEN as u64,
        _ => return Err(DecodeError::UnknownSection { kind }),
    };
    if len > max {
        return Err(too_large(max));
    }
    Ok(())
}

/// Feeds the part of a section that `D` covers into `h`: everything but the binary and the
/// payloads of raw memory chunks. Walks memory chunks without decoding them.
pub(crate) fn cover(
    kind: u16,
    section: &[u8],
    memory_len: usize,
    chunks: usize,
    h: &mut Sha256,
) -> Result<(), DecodeError> {
    let chunk_len = |i: usize| (memory_len - i * CHUNK_SIZE).min(CHUNK_SIZE);
    let mut r = Reader(section);
    match kind {
        SECTION_BINARY => return Ok(()),
        SECTION_MEMORY => {
            for i in 0..chunks {
                cover_chunk(&mut r, chunk_len(i), h)?;
            }
        }
        SECTION_MEMORY_DELTA => {
            h.update(r.take(32)?);
            let count = covered_varint(&mut r, h)?;
            // Each entry takes at least two bytes (index and tag).
            if count > r.0.len() / 2 || count > chunks {
                return Err(DecodeError::UnexpectedEnd);
            }
            let mut next = 0usize;
            for _ in 0..count {
                let i = covered_varint(&mut r, h)?;
                if i < next || i >= chunks {
                    return Err(DecodeError::BadChunk);
                }
                cover_chunk(&mut r, chunk_len(i), h)?;
                next = i + 1;
            }
        }
        _ => {
            h.update(section);
            return Ok(());
        }
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadChunk);
    }
    Ok(())
}

fn covered_varint(r: &mut Reader<'_>, h: &mut Sha256) -> Result<usize, DecodeError> {
    let before = r.0;
    let v = r.varint()?;
    h.update(&before[..before.len() - r.0.len()]);
    Ok(v)
}

fn cover_chunk(r: &mut Reader<'_>, len: usize, h: &mut Sha256) -> Result<(), DecodeError> {
    match read_chunk(r, len)? {
        Encoded::Zero => h.update([super::chunk::ZERO]),
        // The payload is committed by the chunk's leaf in the memory root.
        Encoded::Raw(_) => h.update([super::chunk::RAW]),
        Encoded::Lz4 { varint, block } => {
            h.update([super::chunk::LZ4]);
            h.update(varint);
            h.update(block);
        }
    }
    Ok(())
}

impl<'a> Container<&'a [u8]> {
    /// The trailer, then the tail section: globals and policy, canonical. A container whose
    /// memory comes by manifest is refused here (`MemoryByManifest`): its memory is not in
    /// these bytes.
    pub(crate) fn parse(self) -> Result<Parsed<'a>, CellError> {
        let flags = self.flags();
        if flags & FLAG_MEMORY_BY_MANIFEST != 0 {
            return Err(DecodeError::MemoryByManifest.into());
        }
        let digest = self.check_trailer()?;
        let bytes: &'a [u8] = self.buffer;
        let section = |kind: u16| -> Option<&'a [u8]> {
            self.span(kind).map(|s| &bytes[s.start..s.start + s.len])
        };
        let tail_bytes = section(SECTION_TAIL).unwrap_or(&[]);
        let (t, left) =
            postcard::take_from_bytes::<Tail>(tail_bytes).map_err(DecodeError::from_postcard)?;
        if !left.is_empty() {
            return Err(DecodeError::TrailingBytes { count: left.len() }.into());
        }
        if t.len() != tail_bytes.len() {
            return Err(DecodeError::NonCanonical {
                expected: t.len(),
                found: tail_bytes.len(),
            }
            .into());
        }
        let policy = t.policy()?;
        let auth = &bytes[self.auth_start..bytes.len() - TRAILER_LEN];
        let signature = (flags & FLAG_SIGNED != 0).then(|| {
            let mut key_id = [0u8; 8];
            key_id.copy_from_slice(&auth[..8]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&auth[8..72]);
            SignatureBlock {
                key_id,
                signature,
                signed: Signed::Bound {
                    digest,
                    context: V3_SIGNATURE_CONTEXT,
                },
            }
        });
        let seal = (flags & FLAG_SEALED != 0).then(|| {
            let mut tag = [0u8; SEAL_LEN];
            tag.copy_from_slice(auth);
            (tag, digest)
        });
        // Version 3's sections, told to the layer above in version 2's flag words.
        let (state, state_flag) = match (section(SECTION_MEMORY), section(SECTION_MEMORY_DELTA)) {
            (Some(m), _) => (m, FLAG_STATE_CHUNKED),
            (None, Some(d)) => (d, FLAG_STATE_DELTA),
            (None, None) => (&[][..], 0),
        };
        Ok(Parsed {
            flags: (flags & (FLAG_DNA_BY_REFERENCE | FLAG_SIGNED)) | state_flag,
            agent_id: self.agent_id(),
            dna_hash: self.dna_hash(),
            binary: section(SECTION_BINARY).unwrap_or(&[]),
            state,
            memory: Some((read_u64(bytes, MEMORY_LEN), self.memory_root())),
            commit: Commit::Tree,
            globals: t.globals.0,
            policy,
            timestamp: self.timestamp(),
            source_node: self.source_node(),
            route: Some(self.route()),
            signature,
            seal,
            inbox: section(SECTION_INBOX),
            call: section(SECTION_CALL),
        })
    }
}

/// A container's memory, as the encoder writes it.
#[derive(Clone, Copy)]
pub(crate) enum MemorySection<'a> {
    /// Chunks already encoded (`SECTION_MEMORY`), e.g. with LZ4.
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    Chunked(&'a [u8]),
    /// A delta (`SECTION_MEMORY_DELTA`).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    Delta(&'a [u8]),
    /// The memory itself, written as zero and raw chunks (`SECTION_MEMORY`): no compression,
    /// no allocator, the same bytes whatever the build's features.
    Plain(&'a [u8]),
}

impl MemorySection<'_> {
    fn kind(&self) -> u16 {
        match self {
            MemorySection::Delta(_) => SECTION_MEMORY_DELTA,
            _ => SECTION_MEMORY,
        }
    }

    fn len(&self) -> usize {
        match self {
            MemorySection::Chunked(b) | MemorySection::Delta(b) => b.len(),
            MemorySection::Plain(m) => m
                .chunks(CHUNK_SIZE)
                .map(|c| if is_zero(c) { 1 } else { 1 + c.len() })
                .sum(),
        }
    }

    /// Writes the section into `out`, exactly [`len`](Self::len) bytes.
    fn write(&self, out: &mut [u8]) {
        match self {
            MemorySection::Chunked(b) | MemorySection::Delta(b) => out.copy_from_slice(b),
            MemorySection::Plain(m) => {
                let mut at = 0;
                for c in m.chunks(CHUNK_SIZE) {
                    if is_zero(c) {
                        out[at] = super::chunk::ZERO;
                        at += 1;
                    } else {
                        out[at] = super::chunk::RAW;
                        out[at + 1..at + 1 + c.len()].copy_from_slice(c);
                        at += 1 + c.len();
                    }
                }
            }
        }
    }
}

/// How a container is authenticated.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    None,
    Sign(&'a dyn super::SnapshotSigner),
    Seal(&'a dyn super::SnapshotSealer),
}

impl Auth<'_> {
    fn flag(&self) -> u16 {
        match self {
            Auth::None => 0,
            Auth::Sign(_) => FLAG_SIGNED,
            Auth::Seal(_) => FLAG_SEALED,
        }
    }
}

/// What goes into a container beside its header: the tail, the binary (`None`: by reference),
/// the memory, and other sections (kind and bytes, e.g. the inbox).
pub(crate) struct Contents<'a> {
    pub binary: Option<&'a [u8]>,
    pub memory: MemorySection<'a>,
    pub extra: &'a [(u16, &'a [u8])],
}

/// The sections in table order: kind, length, and the bytes when they are a slice (the
/// memory section is written by its `MemorySection`).
type Layout<'a> = heapless::Vec<(u16, usize, Option<&'a [u8]>), MAX_SECTIONS>;

fn layout<'a>(tail_len: usize, c: &Contents<'a>) -> Result<Layout<'a>, CellError> {
    let bad = || CellError::SerializationFailed {
        reason: "sections must be of distinct kinds, at most MAX_SECTIONS",
    };
    let mut l: Layout<'a> = heapless::Vec::new();
    l.push((SECTION_TAIL, tail_len, None)).map_err(|_| bad())?;
    if let Some(b) = c.binary {
        l.push((SECTION_BINARY, b.len(), Some(b)))
            .map_err(|_| bad())?;
    }
    l.push((c.memory.kind(), c.memory.len(), None))
        .map_err(|_| bad())?;
    for (kind, bytes) in c.extra {
        l.push((*kind, bytes.len(), Some(*bytes)))
            .map_err(|_| bad())?;
    }
    l.sort_unstable_by_key(|s| s.0);
    if !l.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(bad());
    }
    Ok(l)
}

/// The exact length of the container `write` gives.
pub(crate) fn encoded_len(
    f: &super::Fields<'_>,
    c: &Contents<'_>,
    auth: Auth<'_>,
) -> Result<usize, CellError> {
    let mut tags = [0u8; crate::MAX_ARCHITECTURES];
    let tail = Tail::of(f.globals, f.policy, &mut tags);
    let l = layout(tail.len(), c)?;
    let body: usize = l.iter().map(|s| s.1).sum();
    Ok(V3_HEADER_LEN + l.len() * SECTION_ENTRY_LEN + body + auth_len(auth.flag()) + TRAILER_LEN)
}

/// Writes a version-3 container into `out`, which must be exactly [`encoded_len`] long.
/// `commitment` is the memory's length and tree root. Allocates nothing; hashes the header,
/// the sections as `D` covers them, and the authentication block once.
pub(crate) fn write(
    f: &super::Fields<'_>,
    c: &Contents<'_>,
    commitment: &super::frame::MemoryCommitment,
    auth: Auth<'_>,
    out: &mut [u8],
) -> Result<(), CellError> {
    let Some(route) = f.route else {
        return Err(CellError::SerializationFailed {
            reason: "a version-3 container names its target and epoch (a Route)",
        });
    };
    let nil = |n: Option<NodeId>| n.is_some_and(|n| *n.as_bytes() == [0; 16]);
    if nil(f.source_node) || *route.target.as_bytes() == [0; 16] {
        return Err(CellError::SerializationFailed {
            reason: "the nil node id means \"none\" on the wire: it cannot name a node",
        });
    }
    if route.epoch > MAX_EPOCH {
        return Err(CellError::SerializationFailed {
            reason: "the epoch is above MAX_EPOCH",
        });
    }
    let needed = encoded_len(f, c, auth)?;
    if out.len() != needed {
        return Err(CellError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    let mut tags = [0u8; crate::MAX_ARCHITECTURES];
    let tail = Tail::of(f.globals, f.policy, &mut tags);
    let l = layout(tail.len(), c)?;
    let mut flags = auth.flag();
    if c.binary.is_none() {
        flags |= FLAG_DNA_BY_REFERENCE;
    }
    let (head, rest) = out.split_at_mut(V3_HEADER_LEN);
    head[..8].copy_from_slice(&super::header_bytes(3, flags));
    head[AGENT..AGENT + 16].copy_from_slice(f.agent_id.as_bytes());
    head[DNA..DNA + 32].copy_from_slice(f.dna_hash);
    head[SOURCE..SOURCE + 16]
        .copy_from_slice(f.source_node.as_ref().map_or(&[0u8; 16], |n| n.as_bytes()));
    head[TARGET..TARGET + 16].copy_from_slice(route.target.as_bytes());
    head[EPOCH..EPOCH + 8].copy_from_slice(&route.epoch.to_le_bytes());
    head[TIMESTAMP..TIMESTAMP + 8].copy_from_slice(&f.timestamp.to_le_bytes());
    head[MEMORY_LEN..MEMORY_LEN + 8].copy_from_slice(&commitment.len.to_le_bytes());
    head[MEMORY_ROOT..MEMORY_ROOT + 32].copy_from_slice(&commitment.root);
    head[SECTION_COUNT..SECTION_COUNT + 2].copy_from_slice(&(l.len() as u16).to_le_bytes());
    head[RESERVED..RESERVED + 2].copy_from_slice(&[0, 0]);
    let (table, mut rest) = rest.split_at_mut(l.len() * SECTION_ENTRY_LEN);
    for (entry, (kind, len, _)) in table.chunks_exact_mut(SECTION_ENTRY_LEN).zip(&l) {
        entry[..2].copy_from_slice(&kind.to_le_bytes());
        entry[2..4].copy_from_slice(&[0, 0]);
        entry[4..].copy_from_slice(&(*len as u64).to_le_bytes());
    }
    let mut h = Sha256::new();
    h.update(&*head);
    h.update(&*table);
    let memory_len =
        usize::try_from(commitment.len).map_err(|_| CellError::SerializationFailed {
            reason: "memory longer than this platform's address space",
        })?;
    for (kind, len, bytes) in &l {
        let (section, after) = core::mem::take(&mut rest).split_at_mut(*len);
        rest = after;
        match (*kind, bytes) {
            (SECTION_TAIL, _) => {
                let n = postcard::to_slice(&tail, section)
                    .map_err(|_| CellError::SerializationFailed {
                        reason: "postcard could not encode the tail",
                    })?
                    .len();
                if n != section.len() {
                    return Err(CellError::SerializationFailed {
                        reason: "encoded tail length differs from the computed length",
                    });
                }
            }
            (_, Some(b)) => section.copy_from_slice(b),
            (_, None) => c.memory.write(section),
        }
        cover(
            *kind,
            section,
            memory_len,
            memory_len.div_ceil(CHUNK_SIZE),
            &mut h,
        )?;
    }
    let (auth_out, trailer) = rest.split_at_mut(rest.len() - TRAILER_LEN);
    match auth {
        Auth::None => {}
        Auth::Sign(signer) => {
            let key_id = signer.key_id();
            h.update(key_id);
            let digest: [u8; 32] = h.clone().finalize().into();
            let signature = signer.sign(&super::frame::signing_message(
                V3_SIGNATURE_CONTEXT,
                &digest,
            ));
            auth_out[..8].copy_from_slice(&key_id);
            auth_out[8..].copy_from_slice(&signature);
            h.update(signature);
        }
        Auth::Seal(sealer) => {
            let digest: [u8; 32] = h.clone().finalize().into();
            let tag = sealer.seal(&seal_message(&digest));
            auth_out.copy_from_slice(&tag);
            h.update(tag);
        }
    }
    trailer.copy_from_slice(&h.finalize());
    Ok(())
}

/// What a seal covers: the context, then the digest.
pub(crate) fn seal_message(digest: &[u8; 32]) -> [u8; 58] {
    let mut m = [0u8; 58];
    m[..26].copy_from_slice(SEAL_CONTEXT);
    m[26..].copy_from_slice(digest);
    m
}

/// Checks a seal in constant time: the tag the sealer computes for the digest must equal the
/// one carried.
#[cfg(feature = "alloc")]
pub(crate) fn check_seal(
    sealer: &dyn super::SnapshotSealer,
    tag: &[u8; SEAL_LEN],
    digest: &[u8; 32],
) -> bool {
    let expected = sealer.seal(&seal_message(digest));
    expected
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_have_their_stated_lengths() {
        assert_eq!(V3_SIGNATURE_CONTEXT.len(), 34);
        assert_eq!(SEAL_CONTEXT.len(), 26);
        assert_eq!(
            V3_HEADER_LEN,
            RESERVED + 2,
            "the section table follows the reserved word"
        );
    }
}
