//! Version 2: a checked view over a snapshot's bytes, in the manner of smoltcp's packets.
//!
//! ```text
//! offset  size  field
//! 0       8     header: magic "MCSN", version 2, flags
//! 8       16    agent id
//! 24      32    DNA hash (SHA-256 of the binary)
//! 56      16    source node (all zeros: none)
//! 72      16    target node (never all zeros)
//! 88      8     epoch, u64 LE
//! 96      8     timestamp, u64 LE, Unix seconds
//! 104     8     memory length, u64 LE (decoded)
//! 112     32    memory root (see `memory`)
//! 144     8     binary length, u64 LE (bytes of the binary field)
//! 152     8     state length, u64 LE (bytes of the state field)
//! 160     b     binary
//! ...     s     state: raw, chunked or delta memory, by the flags
//! ...     t     tail: postcard globals and policy
//! ...     72    signature block, with FLAG_SIGNED: key id (8), Ed25519 signature (64)
//! ...     32    trailer
//! ```
//!
//! The trailer is the SHA-256 of every byte before it except the binary and state fields, which
//! it commits to through the DNA hash and the memory root. The signature signs
//! [`SIGNATURE_CONTEXT`] followed by the SHA-256 of the same bytes up to the key id, computed in
//! the same pass. So decoding hashes each byte once: the envelope and tail for the trailer, the
//! binary for the DNA check, the memory for its root.

use super::tail::{Tail, MAX_TAIL_LEN};
use super::{
    check_digest, header, header_bytes, within, DecodeLimits, Fields, Parsed, Route,
    SignatureBlock, Signed, SnapshotSigner, FLAG_DNA_BY_REFERENCE, FLAG_SIGNED, HEADER_LEN,
    STATE_FLAGS, TRAILER_LEN,
};
use crate::{AgentId, CellError, DecodeError, Digested, LimitedField, NodeId, MAX_ARCHITECTURES};
use sha2::{Digest, Sha256};

/// The fixed part of a version-2 snapshot, header included: everything a receiver reads before
/// deciding whether to hash or allocate anything.
pub const ENVELOPE_LEN: usize = 160;
/// Version 2's signature block: key id (8) and Ed25519 signature (64).
pub const V2_SIGNATURE_BLOCK_LEN: usize = 72;
/// What a version-2 signature signs before the 32-byte digest, so that a key used for anything
/// else cannot be made to sign a snapshot, nor a snapshot signature be taken for anything else.
pub const SIGNATURE_CONTEXT: &[u8; 34] = b"mielin-cells/snapshot-signature/v2";

pub(crate) const AGENT: usize = 8;
pub(crate) const DNA: usize = 24;
pub(crate) const SOURCE: usize = 56;
pub(crate) const TARGET: usize = 72;
pub(crate) const EPOCH: usize = 88;
pub(crate) const TIMESTAMP: usize = 96;
pub(crate) const MEMORY_LEN: usize = 104;
pub(crate) const MEMORY_ROOT: usize = 112;
const BINARY_LEN: usize = 144;
const STATE_LEN: usize = 152;

/// A version-2 snapshot whose lengths, magic, version, flags and declared sizes have been
/// checked: after [`Frame::new_checked`], no accessor can panic, and nothing has been hashed.
///
/// The sizes are compared with the receiver's [`DecodeLimits`] and with the input before any
/// byte is hashed or allocated, so an input that claims more than the limits costs nothing but
/// reading 160 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    binary_len: usize,
    state_len: usize,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks `buffer` as a version-2 snapshot's frame (see the type docs).
    pub fn new_checked(buffer: T, limits: &DecodeLimits) -> Result<Self, DecodeError> {
        let bytes = buffer.as_ref();
        let (version, flags) = header(bytes)?;
        if version != 2 {
            return Err(DecodeError::UnsupportedVersion {
                expected: 2,
                found: version,
            });
        }
        let sig_len = sig_len(flags);
        let needed = ENVELOPE_LEN + sig_len + TRAILER_LEN;
        if bytes.len() < needed {
            return Err(DecodeError::TooShort {
                needed,
                found: bytes.len(),
            });
        }
        let u64_at = |at: usize| read_u64(bytes, at);
        let binary_len = u64_at(BINARY_LEN);
        let state_len = u64_at(STATE_LEN);
        let memory_len = u64_at(MEMORY_LEN);
        within(LimitedField::WasmBinary, limits.max_wasm_binary, binary_len)?;
        within(LimitedField::WasmState, limits.max_wasm_state, memory_len)?;
        if flags & FLAG_DNA_BY_REFERENCE != 0 && binary_len != 0 {
            return Err(DecodeError::BinaryWithReference);
        }
        if flags & STATE_FLAGS == 0 && state_len != memory_len {
            return Err(DecodeError::StateLengthMismatch);
        }
        let available = (bytes.len() - needed) as u64;
        if binary_len.saturating_add(state_len) > available {
            return Err(DecodeError::UnexpectedEnd);
        }
        // Both fit in the input, so in usize.
        let binary_len = binary_len as usize;
        let state_len = state_len as usize;
        let tail_len = bytes.len() - needed - binary_len - state_len;
        if tail_len > MAX_TAIL_LEN {
            return Err(DecodeError::TrailingBytes {
                count: tail_len - MAX_TAIL_LEN,
            });
        }
        // Version 2 is written for routed snapshots only: one encoding per snapshot.
        if read_16(bytes, TARGET) == [0; 16] {
            return Err(DecodeError::MissingTarget);
        }
        Ok(Frame {
            buffer,
            binary_len,
            state_len,
        })
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The wire flags.
    pub fn flags(&self) -> u16 {
        u16::from_le_bytes([self.bytes()[6], self.bytes()[7]])
    }

    /// The agent's id.
    pub fn agent_id(&self) -> AgentId {
        AgentId::from_bytes(read_16(self.bytes(), AGENT))
    }

    /// The SHA-256 of the agent's binary.
    pub fn dna_hash(&self) -> [u8; 32] {
        read_32(self.bytes(), DNA)
    }

    /// The node the snapshot was captured on.
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

    /// The memory root the decoded memory must hash to.
    pub fn memory_root(&self) -> [u8; 32] {
        read_32(self.bytes(), MEMORY_ROOT)
    }

    /// The binary as carried (empty for DNA by reference).
    pub fn binary(&self) -> &[u8] {
        &self.bytes()[ENVELOPE_LEN..ENVELOPE_LEN + self.binary_len]
    }

    /// The state field as carried: raw, chunked or delta memory, by the flags.
    pub fn state(&self) -> &[u8] {
        let start = ENVELOPE_LEN + self.binary_len;
        &self.bytes()[start..start + self.state_len]
    }

    fn tail_range(&self) -> (usize, usize) {
        let start = ENVELOPE_LEN + self.binary_len + self.state_len;
        (start, self.sig_start())
    }

    fn sig_start(&self) -> usize {
        self.bytes().len() - TRAILER_LEN - sig_len(self.flags())
    }

    /// The signing key's id, for a signed snapshot.
    pub fn key_id(&self) -> Option<[u8; 8]> {
        let at = self.sig_start();
        (self.flags() & FLAG_SIGNED != 0).then(|| {
            let mut id = [0u8; 8];
            id.copy_from_slice(&self.bytes()[at..at + 8]);
            id
        })
    }

    /// Hashes the envelope, tail and signature block once, checks the trailer
    /// (`IntegrityMismatch` with `Digested::SnapshotTrailer`), and returns the digest the
    /// signature (if any) covers. Decoding runs this check itself; it is public for tools that
    /// report each check apart (`examples/inspect.rs`).
    pub fn check_trailer(&self) -> Result<[u8; 32], CellError> {
        let bytes = self.bytes();
        let (tail_start, sig_start) = self.tail_range();
        let mut h = Sha256::new();
        h.update(&bytes[..ENVELOPE_LEN]);
        h.update(&bytes[tail_start..sig_start]);
        let trailer_at = bytes.len() - TRAILER_LEN;
        let (signed_digest, found) = if self.flags() & FLAG_SIGNED != 0 {
            h.update(&bytes[sig_start..sig_start + 8]);
            let digest: [u8; 32] = h.clone().finalize().into();
            h.update(&bytes[sig_start + 8..trailer_at]);
            (digest, h.finalize().into())
        } else {
            let digest: [u8; 32] = h.finalize().into();
            (digest, digest)
        };
        check_digest(
            Digested::SnapshotTrailer,
            &read_32(bytes, trailer_at),
            &found,
        )?;
        Ok(signed_digest)
    }
}

impl<'a> Frame<&'a [u8]> {
    /// The trailer, then the tail: globals and policy, in canonical form.
    pub(crate) fn parse(self) -> Result<Parsed<'a>, CellError> {
        let digest = self.check_trailer()?;
        let bytes: &'a [u8] = self.buffer;
        let (tail_start, sig_start) = self.tail_range();
        let tail_bytes = &bytes[tail_start..sig_start];
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
        let signature = (self.flags() & FLAG_SIGNED != 0).then(|| {
            let mut key_id = [0u8; 8];
            key_id.copy_from_slice(&bytes[sig_start..sig_start + 8]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&bytes[sig_start + 8..sig_start + 72]);
            SignatureBlock {
                key_id,
                signature,
                signed: Signed::Bound {
                    digest,
                    context: SIGNATURE_CONTEXT,
                },
            }
        });
        Ok(Parsed {
            flags: self.flags(),
            agent_id: self.agent_id(),
            dna_hash: self.dna_hash(),
            binary: &bytes[ENVELOPE_LEN..ENVELOPE_LEN + self.binary_len],
            state: &bytes[ENVELOPE_LEN + self.binary_len..tail_start],
            memory: Some((read_u64(bytes, MEMORY_LEN), self.memory_root())),
            globals: t.globals.0,
            policy,
            timestamp: self.timestamp(),
            source_node: self.source_node(),
            route: Some(self.route()),
            signature,
            commit: super::memory::Commit::Flat,
            seal: None,
            inbox: None,
            call: None,
        })
    }
}

fn sig_len(flags: u16) -> usize {
    if flags & FLAG_SIGNED != 0 {
        V2_SIGNATURE_BLOCK_LEN
    } else {
        0
    }
}

pub(crate) fn node(bytes: [u8; 16]) -> Option<NodeId> {
    (bytes != [0; 16]).then(|| NodeId::from_bytes(bytes))
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

pub(crate) fn read_16(bytes: &[u8], at: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[at..at + 16]);
    b
}

pub(crate) fn read_32(bytes: &[u8], at: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    b.copy_from_slice(&bytes[at..at + 32]);
    b
}

/// The encoded length of a version-2 snapshot with `binary` and `state` on the wire.
pub(crate) fn encoded_len(f: &Fields<'_>, binary: &[u8], state: &[u8], signed: bool) -> usize {
    let mut tags = [0u8; MAX_ARCHITECTURES];
    let tail = Tail::of(f.globals, f.policy, &mut tags);
    let sig = if signed { V2_SIGNATURE_BLOCK_LEN } else { 0 };
    ENVELOPE_LEN + binary.len() + state.len() + tail.len() + sig + TRAILER_LEN
}

/// The memory a version-2 snapshot describes: its decoded length and root.
pub(crate) struct MemoryCommitment {
    pub len: u64,
    pub root: [u8; 32],
}

/// Writes a version-2 snapshot into `out`, which must be exactly [`encoded_len`] long. Hashes
/// the envelope and tail once; the binary and state are copied, not hashed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    f: &Fields<'_>,
    flags: u16,
    binary: &[u8],
    state: &[u8],
    memory: &MemoryCommitment,
    signer: Option<&dyn SnapshotSigner>,
    out: &mut [u8],
) -> Result<(), CellError> {
    let needed = encoded_len(f, binary, state, signer.is_some());
    if out.len() != needed {
        return Err(CellError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    let nil = |n: Option<NodeId>| n.is_some_and(|n| *n.as_bytes() == [0; 16]);
    let route_target = f.route.map(|r| r.target);
    if nil(f.source_node) || nil(route_target) {
        return Err(CellError::SerializationFailed {
            reason: "the nil node id means \"none\" on the wire: it cannot name a node",
        });
    }
    if f.route.is_none() {
        return Err(CellError::SerializationFailed {
            reason: "a version-2 snapshot names its target and epoch (a Route)",
        });
    }
    let flags = flags | if signer.is_some() { FLAG_SIGNED } else { 0 };
    let (env, rest) = out.split_at_mut(ENVELOPE_LEN);
    env[..HEADER_LEN].copy_from_slice(&header_bytes(2, flags));
    env[AGENT..AGENT + 16].copy_from_slice(f.agent_id.as_bytes());
    env[DNA..DNA + 32].copy_from_slice(f.dna_hash);
    let zero = [0u8; 16];
    env[SOURCE..SOURCE + 16]
        .copy_from_slice(f.source_node.as_ref().map_or(&zero, |n| n.as_bytes()));
    env[TARGET..TARGET + 16].copy_from_slice(route_target.as_ref().map_or(&zero, |n| n.as_bytes()));
    let epoch = f.route.map_or(0, |r| r.epoch);
    env[EPOCH..EPOCH + 8].copy_from_slice(&epoch.to_le_bytes());
    env[TIMESTAMP..TIMESTAMP + 8].copy_from_slice(&f.timestamp.to_le_bytes());
    env[MEMORY_LEN..MEMORY_LEN + 8].copy_from_slice(&memory.len.to_le_bytes());
    env[MEMORY_ROOT..MEMORY_ROOT + 32].copy_from_slice(&memory.root);
    env[BINARY_LEN..BINARY_LEN + 8].copy_from_slice(&(binary.len() as u64).to_le_bytes());
    env[STATE_LEN..STATE_LEN + 8].copy_from_slice(&(state.len() as u64).to_le_bytes());

    let (bin_out, rest) = rest.split_at_mut(binary.len());
    bin_out.copy_from_slice(binary);
    let (state_out, rest) = rest.split_at_mut(state.len());
    state_out.copy_from_slice(state);
    let (tail_out, rest) = rest.split_at_mut(rest.len() - TRAILER_LEN - sig_len(flags));
    let mut tags = [0u8; MAX_ARCHITECTURES];
    let tail = Tail::of(f.globals, f.policy, &mut tags);
    let written = postcard::to_slice(&tail, tail_out)
        .map_err(|_| CellError::SerializationFailed {
            reason: "postcard could not encode the tail",
        })?
        .len();
    if written != tail_out.len() {
        return Err(CellError::SerializationFailed {
            reason: "encoded tail length differs from the computed length",
        });
    }
    let (sig_out, trailer) = rest.split_at_mut(sig_len(flags));
    let mut h = Sha256::new();
    h.update(&*env);
    h.update(&*tail_out);
    if let Some(signer) = signer {
        let key_id = signer.key_id();
        sig_out[..8].copy_from_slice(&key_id);
        h.update(key_id);
        let digest: [u8; 32] = h.clone().finalize().into();
        let signature = signer.sign(&signing_message(SIGNATURE_CONTEXT, &digest));
        sig_out[8..].copy_from_slice(&signature);
        h.update(signature);
    }
    trailer.copy_from_slice(&h.finalize());
    Ok(())
}

/// What a version-2 or version-3 signature signs: the version's context, then the digest.
pub(crate) fn signing_message(context: &[u8; 34], digest: &[u8; 32]) -> [u8; 66] {
    let mut m = [0u8; 66];
    m[..34].copy_from_slice(context);
    m[34..].copy_from_slice(digest);
    m
}
