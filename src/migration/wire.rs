//! The version-1 wire format (specified in `docs/wire-format.md`):
//!
//! ```text
//! magic "MCSN" | version u16 LE | flags u16 LE | postcard body | SHA-256 of all before it
//! ```

#[cfg(feature = "alloc")]
use super::{chunks, DecodeOptions};
use super::{DnaStore, MigrationSnapshot};
use crate::globals::Globals;
use crate::{
    sha256, AgentId, Arch, CellError, DecodeError, DigestPrefix, Digested, Dna, GlobalValue,
    LimitedField, NodeId, Policy, MAX_ARCHITECTURES,
};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The first four bytes of every serialized snapshot.
pub const MAGIC: [u8; 4] = *b"MCSN";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Magic, version and flags.
pub const HEADER_LEN: usize = 8;
/// The SHA-256 trailer.
pub const TRAILER_LEN: usize = 32;

/// Flag: the snapshot names its DNA by hash; `wasm_binary` is empty and the receiver looks the
/// binary up in a [`DnaStore`].
pub const FLAG_DNA_BY_REFERENCE: u16 = 0x0001;
/// Flag: `wasm_state` is chunked: zero chunks skipped, the rest LZ4-compressed or raw.
pub const FLAG_STATE_CHUNKED: u16 = 0x0002;
/// Flag: `wasm_state` is a delta against a base memory the receiver holds.
pub const FLAG_STATE_DELTA: u16 = 0x0004;
/// Flag: a signature block (key id, sequence number, Ed25519 signature) follows the body.
pub const FLAG_SIGNED: u16 = 0x0008;
const KNOWN_FLAGS: u16 =
    FLAG_DNA_BY_REFERENCE | FLAG_STATE_CHUNKED | FLAG_STATE_DELTA | FLAG_SIGNED;
/// The flags that mean `wasm_state` is encoded memory rather than raw memory.
const STATE_FLAGS: u16 = FLAG_STATE_CHUNKED | FLAG_STATE_DELTA;
/// Key id (8), sequence number (8, little-endian), signature (64).
pub const SIGNATURE_BLOCK_LEN: usize = 80;

/// What a receiver accepts: the largest binary and linear memory a decoded snapshot may carry.
///
/// Checked as soon as the body is parsed, before the DNA is hashed and before anything is
/// allocated. The default accepts any size the input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodeLimits {
    /// The largest WebAssembly binary accepted, in bytes.
    pub max_wasm_binary: usize,
    /// The largest linear memory accepted, in bytes.
    pub max_wasm_state: usize,
}

impl DecodeLimits {
    /// No limit beyond the input's own length.
    pub const UNLIMITED: DecodeLimits = DecodeLimits {
        max_wasm_binary: usize::MAX,
        max_wasm_state: usize::MAX,
    };
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::UNLIMITED
    }
}

fn within(field: LimitedField, limit: usize, bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            field,
            limit,
            found: bytes.len(),
        });
    }
    Ok(())
}

/// The body, field by field in wire order. Byte fields borrow; decoding it allocates nothing.
#[derive(Serialize, Deserialize)]
struct Body<'a> {
    agent_id: [u8; 16],
    dna_hash: [u8; 32],
    #[serde(serialize_with = "bytes")]
    wasm_binary: &'a [u8],
    #[serde(serialize_with = "bytes")]
    wasm_state: &'a [u8],
    globals: WireGlobals,
    min_battery_percent: u8,
    max_latency_ms: u32,
    #[serde(serialize_with = "bytes")]
    preferred_architectures: &'a [u8],
    timestamp: u64,
    source_node: Option<[u8; 16]>,
}

/// Byte fields go out as one length-prefixed run, not element by element (serde's default for
/// slices), which would be about 50 times slower. Decoding `&[u8]` already borrows the run.
fn bytes<S: Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

impl<'a> Body<'a> {
    /// The body of `snap`; `tags` holds the architecture bytes it borrows.
    fn of<B: AsRef<[u8]>>(
        snap: &'a MigrationSnapshot<B>,
        tags: &'a mut [u8; MAX_ARCHITECTURES],
    ) -> Self {
        let archs = &snap.policy.preferred_architectures;
        for (tag, arch) in tags.iter_mut().zip(archs) {
            *tag = arch.tag();
        }
        Body {
            agent_id: *snap.agent_id.as_bytes(),
            dna_hash: *snap.dna.hash(),
            wasm_binary: snap.dna.binary(),
            wasm_state: snap.wasm_state.as_ref(),
            globals: WireGlobals(snap.globals.clone()),
            min_battery_percent: snap.policy.min_battery_percent,
            max_latency_ms: snap.policy.max_latency_ms,
            preferred_architectures: &tags[..archs.len()],
            timestamp: snap.timestamp,
            source_node: snap.source_node.map(|n| *n.as_bytes()),
        }
    }

    /// The length of this body's canonical postcard encoding, computed field by field.
    fn len(&self) -> usize {
        let bytes = |b: &[u8]| varint_len(b.len() as u64) + b.len();
        16 + 32
            + bytes(self.wasm_binary)
            + bytes(self.wasm_state)
            + varint_len(self.globals.0.len() as u64)
            + self.globals.0.iter().map(global_len).sum::<usize>()
            + 1
            + varint_len(self.max_latency_ms.into())
            + bytes(self.preferred_architectures)
            + varint_len(self.timestamp)
            + if self.source_node.is_some() { 17 } else { 1 }
    }
}

/// Bytes in the LEB128 varint postcard writes for `v`.
fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn global_len(g: &GlobalValue) -> usize {
    // One byte of variant tag (there are four), then the value as postcard writes it.
    1 + match *g {
        GlobalValue::I32(v) => varint_len(zigzag(v.into())),
        GlobalValue::I64(v) => varint_len(zigzag(v)),
        GlobalValue::F32(bits) => varint_len(bits.into()),
        GlobalValue::F64(bits) => varint_len(bits),
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// A global on the wire: postcard writes the variant index as a varint, then the value
/// (signed integers zigzag-encoded, floats as their bit patterns).
#[derive(Serialize, Deserialize)]
enum WireGlobal {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

struct WireGlobals(Globals);

impl Serialize for WireGlobals {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|g| match *g {
            GlobalValue::I32(v) => WireGlobal::I32(v),
            GlobalValue::I64(v) => WireGlobal::I64(v),
            GlobalValue::F32(v) => WireGlobal::F32(v),
            GlobalValue::F64(v) => WireGlobal::F64(v),
        }))
    }
}

impl<'de> Deserialize<'de> for WireGlobals {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(GlobalsVisitor)
    }
}

struct GlobalsVisitor;

impl<'de> Visitor<'de> for GlobalsVisitor {
    type Value = WireGlobals;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "at most {} globals", crate::MAX_GLOBALS)
    }

    // Stops at the first global past capacity, so a huge count costs nothing.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireGlobals, A::Error> {
        let mut globals = Globals::new();
        while let Some(g) = seq.next_element::<WireGlobal>()? {
            let g = match g {
                WireGlobal::I32(v) => GlobalValue::I32(v),
                WireGlobal::I64(v) => GlobalValue::I64(v),
                WireGlobal::F32(v) => GlobalValue::F32(v),
                WireGlobal::F64(v) => GlobalValue::F64(v),
            };
            globals
                .push(g)
                .map_err(|_| de::Error::invalid_length(globals.len() + 1, &self))?;
        }
        Ok(WireGlobals(globals))
    }
}

fn header(flags: u16) -> [u8; HEADER_LEN] {
    let [m0, m1, m2, m3] = MAGIC;
    let [v0, v1] = FORMAT_VERSION.to_le_bytes();
    let [f0, f1] = flags.to_le_bytes();
    [m0, m1, m2, m3, v0, v1, f0, f1]
}

pub(super) fn encoded_len<B: AsRef<[u8]>>(snap: &MigrationSnapshot<B>) -> usize {
    let mut tags = [0u8; MAX_ARCHITECTURES];
    HEADER_LEN + Body::of(snap, &mut tags).len() + TRAILER_LEN
}

pub(super) fn encode_into<B: AsRef<[u8]>>(
    snap: &MigrationSnapshot<B>,
    buf: &mut [u8],
) -> Result<usize, CellError> {
    let mut tags = [0u8; MAX_ARCHITECTURES];
    let body = Body::of(snap, &mut tags);
    let needed = HEADER_LEN + body.len() + TRAILER_LEN;
    let available = buf.len();
    let out = buf
        .get_mut(..needed)
        .ok_or(CellError::BufferTooSmall { needed, available })?;
    write(&body, 0, None, out)?;
    Ok(needed)
}

/// Encodes into a `Vec` of exactly the right length, building the body once.
#[cfg(feature = "alloc")]
pub(super) fn encode_vec<B: AsRef<[u8]>>(
    snap: &MigrationSnapshot<B>,
) -> Result<alloc::vec::Vec<u8>, CellError> {
    let mut tags = [0u8; MAX_ARCHITECTURES];
    let body = Body::of(snap, &mut tags);
    let mut out = alloc::vec![0u8; HEADER_LEN + body.len() + TRAILER_LEN];
    write(&body, 0, None, &mut out)?;
    Ok(out)
}

/// Encodes with the options' flags: DNA by reference, chunked or delta state, a signature.
#[cfg(feature = "alloc")]
pub(super) fn encode_with<B: AsRef<[u8]>>(
    snap: &MigrationSnapshot<B>,
    opts: &super::EncodeOptions<'_>,
) -> Result<alloc::vec::Vec<u8>, CellError> {
    let mut tags = [0u8; MAX_ARCHITECTURES];
    let mut body = Body::of(snap, &mut tags);
    let mut flags = 0;
    if opts.dna_by_reference {
        flags |= FLAG_DNA_BY_REFERENCE;
        body.wasm_binary = &[];
    }
    let blob = match opts.state {
        super::StateEncoding::Raw => None,
        super::StateEncoding::Chunked => {
            flags |= FLAG_STATE_CHUNKED;
            Some(chunks::encode_chunked(snap.wasm_state.as_ref()))
        }
        super::StateEncoding::Delta { base } => {
            flags |= FLAG_STATE_DELTA;
            Some(chunks::encode_delta(base, snap.wasm_state.as_ref()))
        }
    };
    if let Some(blob) = &blob {
        body.wasm_state = blob;
    }
    let signature = opts.signer;
    let sig_len = match signature {
        Some(_) => {
            flags |= FLAG_SIGNED;
            SIGNATURE_BLOCK_LEN
        }
        None => 0,
    };
    let mut out = alloc::vec![0u8; HEADER_LEN + body.len() + sig_len + TRAILER_LEN];
    write(&body, flags, signature, &mut out)?;
    Ok(out)
}

/// Writes header, body, the signature block if a signer is given, and the trailer into `out`,
/// which is exactly the encoded length.
fn write(
    body: &Body<'_>,
    flags: u16,
    signer: Option<(&dyn SnapshotSigner, u64)>,
    out: &mut [u8],
) -> Result<(), CellError> {
    let (covered, trailer) = out.split_at_mut(out.len() - TRAILER_LEN);
    let sig_len = if signer.is_some() {
        SIGNATURE_BLOCK_LEN
    } else {
        0
    };
    let body_end = covered.len() - sig_len;
    let (head, rest) = covered.split_at_mut(HEADER_LEN);
    let body_out = &mut rest[..body_end - HEADER_LEN];
    head.copy_from_slice(&header(flags));
    let written = postcard::to_slice(body, body_out)
        .map_err(|_| CellError::SerializationFailed {
            reason: "postcard could not encode the body",
        })?
        .len();
    if written != body_out.len() {
        return Err(CellError::SerializationFailed {
            reason: "encoded body length differs from the computed length",
        });
    }
    if let Some((signer, sequence)) = signer {
        let block = &mut covered[body_end..];
        block[..8].copy_from_slice(&signer.key_id());
        block[8..16].copy_from_slice(&sequence.to_le_bytes());
        let digest = sha256(&covered[..body_end + 16]);
        covered[body_end + 16..].copy_from_slice(&signer.sign(&digest));
    }
    trailer.copy_from_slice(&sha256(covered));
    Ok(())
}

/// Signs snapshots: Ed25519 with the `signatures` feature, or any scheme with 64-byte signatures.
pub trait SnapshotSigner {
    /// Names the key: the receiver finds the verifying key by it.
    fn key_id(&self) -> [u8; 8];
    /// Signs the 32-byte digest of everything before the signature.
    fn sign(&self, digest: &[u8; 32]) -> [u8; 64];
}

/// A signature block as read from a snapshot.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
pub(crate) struct SignatureBlock<'a> {
    pub key_id: [u8; 8],
    pub sequence: u64,
    pub signature: [u8; 64],
    /// Everything the signature covers; hashed only by a receiver that checks signatures.
    pub signed: &'a [u8],
}

/// A snapshot whose header, trailer and body have been checked, before its DNA is resolved and
/// its state decoded.
#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
pub(crate) struct Parsed<'a> {
    pub flags: u16,
    pub agent_id: AgentId,
    pub dna_hash: [u8; 32],
    pub binary: &'a [u8],
    /// Raw memory, or the chunked or delta blob, by the flags.
    pub state: &'a [u8],
    pub globals: Globals,
    pub policy: Policy,
    pub timestamp: u64,
    pub source_node: Option<NodeId>,
    pub signature: Option<SignatureBlock<'a>>,
}

/// Checks length, magic, version, flags, trailer, the signature block's place, body, canonical
/// form, limits and policy.
pub(crate) fn parse<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Parsed<'a>, CellError> {
    let too_short = DecodeError::TooShort {
        needed: HEADER_LEN + TRAILER_LEN,
        found: bytes.len(),
    };
    let (covered, trailer) = bytes.split_last_chunk::<TRAILER_LEN>().ok_or(too_short)?;
    let (head, rest) = covered.split_first_chunk::<HEADER_LEN>().ok_or(too_short)?;
    let [m0, m1, m2, m3, v0, v1, f0, f1] = head;
    let magic = [*m0, *m1, *m2, *m3];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            expected: MAGIC,
            found: magic,
        }
        .into());
    }
    let version = u16::from_le_bytes([*v0, *v1]);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            expected: FORMAT_VERSION,
            found: version,
        }
        .into());
    }
    let flags = u16::from_le_bytes([*f0, *f1]);
    if flags & !KNOWN_FLAGS != 0 || flags & STATE_FLAGS == STATE_FLAGS {
        return Err(DecodeError::UnsupportedFlags { found: flags }.into());
    }
    check_trailer(covered, trailer)?;

    let (body, signature) = if flags & FLAG_SIGNED != 0 {
        let (body, block) = rest
            .split_last_chunk::<SIGNATURE_BLOCK_LEN>()
            .ok_or(DecodeError::UnexpectedEnd)?;
        let (key_id, block) = block
            .split_first_chunk::<8>()
            .ok_or(DecodeError::UnexpectedEnd)?;
        let (sequence, signature) = block
            .split_first_chunk::<8>()
            .ok_or(DecodeError::UnexpectedEnd)?;
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| DecodeError::UnexpectedEnd)?;
        let signed_len = covered.len() - 64;
        let block = SignatureBlock {
            key_id: *key_id,
            sequence: u64::from_le_bytes(*sequence),
            signature,
            signed: &covered[..signed_len],
        };
        (body, Some(block))
    } else {
        (rest, None)
    };

    let (b, left) = postcard::take_from_bytes::<Body>(body).map_err(DecodeError::from_postcard)?;
    if !left.is_empty() {
        return Err(DecodeError::TrailingBytes { count: left.len() }.into());
    }
    if b.len() != body.len() {
        return Err(DecodeError::NonCanonical {
            expected: b.len(),
            found: body.len(),
        }
        .into());
    }
    within(
        LimitedField::WasmBinary,
        limits.max_wasm_binary,
        b.wasm_binary,
    )?;
    if flags & STATE_FLAGS == 0 {
        within(LimitedField::WasmState, limits.max_wasm_state, b.wasm_state)?;
    }
    if flags & FLAG_DNA_BY_REFERENCE != 0 && !b.wasm_binary.is_empty() {
        return Err(DecodeError::BinaryWithReference.into());
    }
    let policy = decode_policy(&b)?;
    Ok(Parsed {
        flags,
        agent_id: AgentId::from_bytes(b.agent_id),
        dna_hash: b.dna_hash,
        binary: b.wasm_binary,
        state: b.wasm_state,
        globals: b.globals.0,
        policy,
        timestamp: b.timestamp,
        source_node: b.source_node.map(NodeId::from_bytes),
        signature,
    })
}

impl<'a> Parsed<'a> {
    /// The DNA: the carried binary, or the store's for a by-reference snapshot; either way its
    /// SHA-256 must be the hash the snapshot names.
    pub fn dna(&self, store: Option<&'a dyn DnaStore>) -> Result<Dna<&'a [u8]>, CellError> {
        let binary = if self.flags & FLAG_DNA_BY_REFERENCE != 0 {
            store
                .and_then(|s| s.get(&self.dna_hash))
                .ok_or(CellError::DnaNotFound {
                    hash: DigestPrefix::of(&self.dna_hash),
                })?
        } else {
            self.binary
        };
        Dna::with_expected_hash(binary, &self.dna_hash)
    }

    /// The snapshot with `dna` and `state` as resolved and decoded.
    fn into_snapshot<B>(self, dna: Dna<B>, state: B) -> MigrationSnapshot<B> {
        MigrationSnapshot {
            agent_id: self.agent_id,
            dna,
            wasm_state: state,
            globals: self.globals,
            policy: self.policy,
            timestamp: self.timestamp,
            source_node: self.source_node,
        }
    }

    /// The zero-copy snapshot: raw memory only (`StateNeedsAlloc` otherwise), DNA from the
    /// input or `store`.
    pub fn into_view(
        self,
        store: Option<&'a dyn DnaStore>,
    ) -> Result<MigrationSnapshot<&'a [u8]>, CellError> {
        if self.flags & STATE_FLAGS != 0 {
            return Err(DecodeError::StateNeedsAlloc.into());
        }
        let dna = self.dna(store)?;
        let state = self.state;
        Ok(self.into_snapshot(dna, state))
    }

    /// The owned snapshot: any flags. The DNA is verified first, the memory decoded next
    /// (chunked and delta memory allocate here, within the limits), and the binary copied last,
    /// so a snapshot refused for its memory never copied its binary.
    #[cfg(feature = "alloc")]
    pub fn into_owned(
        self,
        opts: &DecodeOptions<'_>,
    ) -> Result<MigrationSnapshot<alloc::vec::Vec<u8>>, CellError> {
        let dna = self.dna(opts.dna_store)?;
        let state = self.owned_state(&opts.limits, opts.base_state)?;
        let dna = dna.to_owned_dna();
        Ok(self.into_snapshot(dna, state))
    }

    /// The memory, decoding chunked or delta state (which allocates, within `limits`).
    #[cfg(feature = "alloc")]
    fn owned_state(
        &self,
        limits: &DecodeLimits,
        base: Option<&[u8]>,
    ) -> Result<alloc::vec::Vec<u8>, CellError> {
        Ok(if self.flags & FLAG_STATE_CHUNKED != 0 {
            chunks::decode_chunked(self.state, limits.max_wasm_state)?
        } else if self.flags & FLAG_STATE_DELTA != 0 {
            let base = base.ok_or(DecodeError::DeltaWithoutBase)?;
            chunks::decode_delta(self.state, base, limits.max_wasm_state)?
        } else {
            self.state.to_vec()
        })
    }
}

fn check_trailer(signed: &[u8], trailer: &[u8; TRAILER_LEN]) -> Result<(), CellError> {
    let found = sha256(signed);
    if found != *trailer {
        return Err(CellError::IntegrityMismatch {
            what: Digested::SnapshotTrailer,
            expected: DigestPrefix::of(trailer),
            found: DigestPrefix::of(&found),
        });
    }
    Ok(())
}

fn decode_policy(b: &Body<'_>) -> Result<Policy, DecodeError> {
    let tags = b.preferred_architectures;
    if tags.len() > MAX_ARCHITECTURES {
        return Err(DecodeError::TooManyArchitectures {
            capacity: MAX_ARCHITECTURES,
            found: tags.len(),
        });
    }
    let mut preferred_architectures = heapless::Vec::new();
    for &tag in tags {
        let arch = Arch::from_tag(tag).ok_or(DecodeError::UnknownArchitecture { tag })?;
        // Cannot fail: the length was checked above.
        let _ = preferred_architectures.push(arch);
    }
    Ok(Policy {
        min_battery_percent: b.min_battery_percent,
        max_latency_ms: b.max_latency_ms,
        preferred_architectures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_postcard() {
        let mut buf = [0u8; 16];
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX.into(), u64::MAX] {
            let n = postcard::to_slice(&v, &mut buf).unwrap().len();
            assert_eq!(varint_len(v), n, "{v}");
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let n = postcard::to_slice(&v, &mut buf).unwrap().len();
            assert_eq!(varint_len(zigzag(v)), n, "{v}");
        }
    }
}
