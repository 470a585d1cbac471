//! Version 1 (specified in `docs/wire-format.md`), kept for compatibility:
//!
//! ```text
//! magic "MCSN" | version u16 LE | flags u16 LE | postcard body | [signature] | SHA-256 of all before it
//! ```
//!
//! Its trailer hashes every byte, and the DNA check hashes the binary again; version 2 hashes
//! each byte once.

use super::tail::{self, bytes, bytes_len, globals_len, varint_len, WireGlobals};
use super::{
    check_digest, header_bytes, within, DecodeLimits, Fields, Parsed, SignatureBlock, Signed,
    SnapshotSigner, FLAG_DNA_BY_REFERENCE, FLAG_SIGNED, HEADER_LEN, SIGNATURE_BLOCK_LEN,
    STATE_FLAGS, TRAILER_LEN,
};
use crate::{
    sha256, AgentId, CellError, DecodeError, Digested, LimitedField, NodeId, MAX_ARCHITECTURES,
};
use serde::{Deserialize, Serialize};

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

impl<'a> Body<'a> {
    /// The body of `f`, with `binary` and `state` as they go on the wire; `tags` holds the
    /// architecture bytes it borrows.
    fn of(
        f: &Fields<'a>,
        binary: &'a [u8],
        state: &'a [u8],
        tags: &'a mut [u8; MAX_ARCHITECTURES],
    ) -> Self {
        Body {
            agent_id: *f.agent_id.as_bytes(),
            dna_hash: *f.dna_hash,
            wasm_binary: binary,
            wasm_state: state,
            globals: WireGlobals(f.globals.clone()),
            min_battery_percent: f.policy.min_battery_percent,
            max_latency_ms: f.policy.max_latency_ms,
            preferred_architectures: tail::arch_tags(f.policy, tags),
            timestamp: f.timestamp,
            source_node: f.source_node.map(|n| *n.as_bytes()),
        }
    }

    /// The length of this body's canonical postcard encoding, computed field by field.
    fn len(&self) -> usize {
        16 + 32
            + bytes_len(self.wasm_binary)
            + bytes_len(self.wasm_state)
            + globals_len(&self.globals.0)
            + 1
            + varint_len(self.max_latency_ms.into())
            + bytes_len(self.preferred_architectures)
            + varint_len(self.timestamp)
            + if self.source_node.is_some() { 17 } else { 1 }
    }
}

/// The encoded length of `f` with `binary` and `state` on the wire, and a signature block if
/// `signed`.
pub(crate) fn encoded_len(f: &Fields<'_>, binary: &[u8], state: &[u8], signed: bool) -> usize {
    let mut tags = [0u8; MAX_ARCHITECTURES];
    let sig = if signed { SIGNATURE_BLOCK_LEN } else { 0 };
    HEADER_LEN + Body::of(f, binary, state, &mut tags).len() + sig + TRAILER_LEN
}

/// Writes header, body, the signature block if a signer is given, and the trailer into `out`,
/// which must be exactly [`encoded_len`] long.
pub(crate) fn write(
    f: &Fields<'_>,
    flags: u16,
    binary: &[u8],
    state: &[u8],
    signer: Option<(&dyn SnapshotSigner, u64)>,
    out: &mut [u8],
) -> Result<(), CellError> {
    let mut tags = [0u8; MAX_ARCHITECTURES];
    let body = Body::of(f, binary, state, &mut tags);
    let sig_len = if signer.is_some() {
        SIGNATURE_BLOCK_LEN
    } else {
        0
    };
    let needed = HEADER_LEN + body.len() + sig_len + TRAILER_LEN;
    if out.len() != needed {
        return Err(CellError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    let (covered, trailer) = out.split_at_mut(needed - TRAILER_LEN);
    let body_end = covered.len() - sig_len;
    let (head, rest) = covered.split_at_mut(HEADER_LEN);
    let body_out = &mut rest[..body_end - HEADER_LEN];
    head.copy_from_slice(&header_bytes(1, flags));
    let written = postcard::to_slice(&body, body_out)
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

/// Version 1's checks after the header: the input's length against the limits, the trailer,
/// the signature block's place, body, canonical form, limits and policy.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    flags: u16,
    limits: &DecodeLimits,
) -> Result<Parsed<'a>, CellError> {
    // Before hashing anything: an input longer than any snapshot the limits allow is refused
    // outright, so an oversized input costs no SHA-256 pass.
    within(
        LimitedField::Snapshot,
        limits.max_v1_input(),
        bytes.len() as u64,
    )?;
    let (covered, trailer) = bytes
        .split_last_chunk::<TRAILER_LEN>()
        .ok_or(DecodeError::UnexpectedEnd)?;
    let rest = &covered[HEADER_LEN..];
    check_digest(Digested::SnapshotTrailer, trailer, &sha256(covered))?;

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
        let block = SignatureBlock {
            key_id: *key_id,
            signature,
            signed: Signed::V1 {
                prefix: &covered[..covered.len() - 64],
                sequence: u64::from_le_bytes(*sequence),
            },
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
        b.wasm_binary.len() as u64,
    )?;
    if flags & STATE_FLAGS == 0 {
        within(
            LimitedField::WasmState,
            limits.max_wasm_state,
            b.wasm_state.len() as u64,
        )?;
    }
    if flags & FLAG_DNA_BY_REFERENCE != 0 && !b.wasm_binary.is_empty() {
        return Err(DecodeError::BinaryWithReference.into());
    }
    let policy = tail::decode_policy(
        b.min_battery_percent,
        b.max_latency_ms,
        b.preferred_architectures,
    )?;
    Ok(Parsed {
        flags,
        agent_id: AgentId::from_bytes(b.agent_id),
        dna_hash: b.dna_hash,
        binary: b.wasm_binary,
        state: b.wasm_state,
        memory: None,
        globals: b.globals.0,
        policy,
        timestamp: b.timestamp,
        source_node: b.source_node.map(NodeId::from_bytes),
        route: None,
        signature,
        commit: super::memory::Commit::Flat,
        seal: None,
        inbox: None,
        call: None,
    })
}
