//! The version-1 wire format (specified in `docs/wire-format.md`):
//!
//! ```text
//! magic "MCSN" | version u16 LE | flags u16 LE | postcard body | SHA-256 of all before it
//! ```

use super::MigrationSnapshot;
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

fn header() -> [u8; HEADER_LEN] {
    let [m0, m1, m2, m3] = MAGIC;
    let [v0, v1] = FORMAT_VERSION.to_le_bytes();
    [m0, m1, m2, m3, v0, v1, 0, 0]
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
    write(&body, out)?;
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
    write(&body, &mut out)?;
    Ok(out)
}

/// Writes header, body and trailer into `out`, which is exactly the encoded length.
fn write(body: &Body<'_>, out: &mut [u8]) -> Result<(), CellError> {
    let (signed, trailer) = out.split_at_mut(out.len() - TRAILER_LEN);
    let (head, body_out) = signed.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&header());
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
    trailer.copy_from_slice(&sha256(signed));
    Ok(())
}

pub(super) fn decode<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<MigrationSnapshot<&'a [u8]>, CellError> {
    let too_short = DecodeError::TooShort {
        needed: HEADER_LEN + TRAILER_LEN,
        found: bytes.len(),
    };
    let (signed, trailer) = bytes.split_last_chunk::<TRAILER_LEN>().ok_or(too_short)?;
    let (head, body) = signed.split_first_chunk::<HEADER_LEN>().ok_or(too_short)?;
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
    if flags != 0 {
        return Err(DecodeError::UnsupportedFlags { found: flags }.into());
    }
    check_trailer(signed, trailer)?;

    let (b, rest) = postcard::take_from_bytes::<Body>(body).map_err(DecodeError::from_postcard)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() }.into());
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
    within(LimitedField::WasmState, limits.max_wasm_state, b.wasm_state)?;
    let policy = decode_policy(&b)?;
    Ok(MigrationSnapshot {
        agent_id: AgentId::from_bytes(b.agent_id),
        dna: Dna::with_expected_hash(b.wasm_binary, &b.dna_hash)?,
        wasm_state: b.wasm_state,
        globals: b.globals.0,
        policy,
        timestamp: b.timestamp,
        source_node: b.source_node.map(NodeId::from_bytes),
    })
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
