//! The snapshot wire format (specified in `docs/wire-format.md`), bytes below meaning:
//!
//! - [`v1`]: `magic | version 1 | flags | postcard body | [signature block] | SHA-256 trailer`,
//!   read and written for compatibility;
//! - [`frame`]: version 2, a fixed envelope (agent, DNA hash, route, epoch, sizes, memory root)
//!   read through a checked [`Frame`] view before anything is hashed or allocated, and a trailer
//!   that commits to the binary and memory through their digests, so each byte is hashed once;
//! - [`chunks`]: the chunked and delta encodings of linear memory, and the memory's digests.
//!
//! Everything here works on bytes and on the fields they carry; the snapshot type is built from
//! a [`Parsed`] one layer up, and no codec here imports it.

pub(crate) mod chunk;
#[cfg(feature = "alloc")]
pub(crate) mod chunks;
pub(crate) mod frame;
pub(crate) mod memory;
pub(crate) mod tail;
pub(crate) mod tree;
pub(crate) mod v1;
pub(crate) mod v3;

use crate::globals::Globals;
use crate::{
    AgentId, CellError, DecodeError, DigestPrefix, Digested, LimitedField, NodeId, Policy,
};

pub use frame::{Frame, ENVELOPE_LEN, SIGNATURE_CONTEXT, V2_SIGNATURE_BLOCK_LEN};
pub use v3::{
    Container, FLAG_MEMORY_BY_MANIFEST, FLAG_SEALED, MAX_CALL_SECTION_LEN,
    MAX_IGNORABLE_SECTION_LEN, MAX_INBOX_SECTION_LEN, MAX_SECTIONS, SEAL_CONTEXT, SEAL_LEN,
    SECTION_BINARY, SECTION_CALL, SECTION_ENTRY_LEN, SECTION_IGNORABLE, SECTION_INBOX,
    SECTION_MEMORY, SECTION_MEMORY_DELTA, SECTION_TAIL, V3_HEADER_LEN, V3_SIGNATURE_CONTEXT,
};

/// The first four bytes of every serialized snapshot.
pub const MAGIC: [u8; 4] = *b"MCSN";
/// The format version written for a snapshot without a [`Route`](super::Route): version 1.
/// This build reads versions 1, 2 and 3.
pub const FORMAT_VERSION: u16 = 1;
/// The format version written for a snapshot with a [`Route`](super::Route): version 2, whose
/// signed bytes bind the target node and epoch, and which hashes each byte once.
pub const FORMAT_VERSION_2: u16 = 2;
/// The container format (`EncodeOptions::version`): a signed header and typed sections (the
/// agent's state, its inbox, and kinds later versions add) under one signature, memory
/// committed by a hash tree.
pub const FORMAT_VERSION_3: u16 = 3;
/// Magic, version and flags.
pub const HEADER_LEN: usize = 8;
/// The SHA-256 trailer.
pub const TRAILER_LEN: usize = 32;

/// Flag: the snapshot names its DNA by hash; `wasm_binary` is empty and the receiver looks the
/// binary up in a [`DnaStore`](super::DnaStore).
pub const FLAG_DNA_BY_REFERENCE: u16 = 0x0001;
/// Flag: `wasm_state` is chunked: zero chunks skipped, the rest LZ4-compressed or raw.
pub const FLAG_STATE_CHUNKED: u16 = 0x0002;
/// Flag: `wasm_state` is a delta against a base memory the receiver holds.
pub const FLAG_STATE_DELTA: u16 = 0x0004;
/// Flag: a signature block (key id, sequence number, Ed25519 signature) follows the body.
pub const FLAG_SIGNED: u16 = 0x0008;
pub(crate) const KNOWN_FLAGS: u16 =
    FLAG_DNA_BY_REFERENCE | FLAG_STATE_CHUNKED | FLAG_STATE_DELTA | FLAG_SIGNED;
/// The flags that mean `wasm_state` is encoded memory rather than raw memory.
pub(crate) const STATE_FLAGS: u16 = FLAG_STATE_CHUNKED | FLAG_STATE_DELTA;
/// Version 1's signature block: key id (8), sequence number (8, little-endian), signature (64).
pub const SIGNATURE_BLOCK_LEN: usize = 80;

/// What a receiver accepts: the largest binary and linear memory a decoded snapshot may carry.
///
/// Checked before anything is hashed or allocated: version 2 declares both sizes in its fixed
/// envelope; for version 1 the input's length is compared with what the limits allow before the
/// trailer is computed, and the fields once the body is parsed. The default is finite
/// ([`DecodeLimits::DEFAULT`]: 16 MiB of binary, 64 MiB of memory), so no input, however it
/// lies about sizes, makes a default decoder allocate more than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodeLimits {
    /// The largest WebAssembly binary accepted, in bytes.
    pub max_wasm_binary: usize,
    /// The largest linear memory accepted, in bytes.
    pub max_wasm_state: usize,
}

impl DecodeLimits {
    /// 16 MiB of binary and 64 MiB (1024 WebAssembly pages) of linear memory.
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        max_wasm_binary: 16 << 20,
        max_wasm_state: 64 << 20,
    };

    /// No limit beyond the input's own length and what the allocator grants: an allocation that
    /// fails is [`DecodeError::TooLarge`], never an abort, but the decoder may try to allocate
    /// up to 4096 times the input for chunked memory. For trusted inputs only.
    pub const UNLIMITED: DecodeLimits = DecodeLimits {
        max_wasm_binary: usize::MAX,
        max_wasm_state: usize::MAX,
    };

    /// The longest version-1 input these limits can accept: checked before the trailer is
    /// hashed, so an oversized input costs nothing.
    pub(crate) fn max_v1_input(&self) -> usize {
        // Header, trailer, signature block, ids and hash, the other fields at their largest
        // (32 globals of 11 bytes, 8 architecture tags, varints), and per-chunk tags.
        const FIXED: usize = HEADER_LEN + TRAILER_LEN + SIGNATURE_BLOCK_LEN + 1024;
        let chunk_overhead = self.max_wasm_state / 4096 * 8 + 64;
        self.max_wasm_binary
            .saturating_add(self.max_wasm_state)
            .saturating_add(chunk_overhead)
            .saturating_add(FIXED)
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::DEFAULT
    }
}

pub(crate) fn within(field: LimitedField, limit: usize, found: u64) -> Result<(), DecodeError> {
    if found > limit as u64 {
        return Err(DecodeError::TooLarge {
            field,
            limit,
            found: usize::try_from(found).unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

/// Seals a node's own files (version 3, `FLAG_SEALED`): a keyed MAC, 32 bytes, over
/// [`SEAL_CONTEXT`] followed by the container's digest. The key is the node's own, so a file
/// sealed by another node, or edited, is refused when opened.
pub trait SnapshotSealer {
    /// The 32-byte tag of `message`.
    fn seal(&self, message: &[u8]) -> [u8; 32];
}

/// Signs snapshots: Ed25519 with the `signatures` feature, or any scheme with 64-byte signatures.
pub trait SnapshotSigner {
    /// Names the key: the receiver finds the verifying key by it.
    fn key_id(&self) -> [u8; 8];
    /// Signs `message`: in version 2, [`SIGNATURE_CONTEXT`] followed by the 32-byte digest of
    /// everything the signature covers; in version 1, the bare 32-byte digest.
    fn sign(&self, message: &[u8]) -> [u8; 64];
}

/// The route a version-2 snapshot is bound to: which node it is for, and the agent's epoch
/// (how many times it has moved). Both are inside the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The node this snapshot is addressed to; a trust list on any other node refuses it.
    pub target: NodeId,
    /// The agent's epoch on the target: it must grow with every hand-off of the agent.
    pub epoch: u64,
}

/// A signature block as read from a snapshot.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
pub(crate) struct SignatureBlock<'a> {
    pub key_id: [u8; 8],
    pub signature: [u8; 64],
    /// What was signed: version 2's digest (computed in the same pass as the trailer); version
    /// 1's signed prefix, hashed only by whoever checks it.
    pub signed: Signed<'a>,
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
pub(crate) enum Signed<'a> {
    /// Version 1: SHA-256 of these bytes, and the sequence number in the block.
    V1 { prefix: &'a [u8], sequence: u64 },
    /// Versions 2 and 3: the digest the signature covers, signed after the version's context.
    Bound {
        digest: [u8; 32],
        context: &'static [u8; 34],
    },
}

/// A snapshot whose header, trailer and fields have been checked, before its DNA is resolved and
/// its memory decoded.
#[cfg_attr(not(feature = "signatures"), allow(dead_code))]
pub(crate) struct Parsed<'a> {
    pub flags: u16,
    pub agent_id: AgentId,
    pub dna_hash: [u8; 32],
    pub binary: &'a [u8],
    /// Raw memory, or the chunked or delta blob, by the flags.
    pub state: &'a [u8],
    /// Version 2: the decoded memory's length and digest; version 1 commits to the memory
    /// through the trailer instead.
    pub memory: Option<(u64, [u8; 32])>,
    pub globals: Globals,
    pub policy: Policy,
    pub timestamp: u64,
    pub source_node: Option<NodeId>,
    pub route: Option<Route>,
    pub signature: Option<SignatureBlock<'a>>,
    /// How `memory`'s root is computed: version 2's flat root or version 3's tree.
    pub commit: memory::Commit,
    /// Version 3, sealed: the tag and the digest it covers.
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    pub seal: Option<([u8; v3::SEAL_LEN], [u8; 32])>,
    /// Version 3: the inbox section, as carried.
    pub inbox: Option<&'a [u8]>,
    /// Version 3: the call section (a call suspended in the middle), as carried.
    pub call: Option<&'a [u8]>,
}

/// Checks length, magic, version and flags, then the version's own checks: trailer, fields,
/// canonical form, limits and policy. Nothing is hashed before the sizes are known to be within
/// `limits`.
pub(crate) fn parse<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Parsed<'a>, CellError> {
    let (version, flags) = header(bytes)?;
    match version {
        1 => v1::parse(bytes, flags, limits),
        2 => Frame::new_checked(bytes, limits)?.parse(),
        _ => Container::new_checked(bytes, limits)?.parse(),
    }
}

/// Length, magic, version and flags: the checks both versions share.
pub(crate) fn header(bytes: &[u8]) -> Result<(u16, u16), DecodeError> {
    let too_short = DecodeError::TooShort {
        needed: HEADER_LEN + TRAILER_LEN,
        found: bytes.len(),
    };
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(too_short);
    }
    let head: &[u8; HEADER_LEN] = bytes
        .first_chunk::<HEADER_LEN>()
        .ok_or(DecodeError::UnexpectedEnd)?;
    let [m0, m1, m2, m3, v0, v1, f0, f1] = *head;
    let magic = [m0, m1, m2, m3];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            expected: MAGIC,
            found: magic,
        });
    }
    let version = u16::from_le_bytes([v0, v1]);
    if !(1..=3).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            expected: FORMAT_VERSION_3,
            found: version,
        });
    }
    let flags = u16::from_le_bytes([f0, f1]);
    let unsupported = if version == 3 {
        flags & !v3::V3_FLAGS != 0
            || flags & (FLAG_SIGNED | FLAG_SEALED) == FLAG_SIGNED | FLAG_SEALED
    } else {
        flags & !KNOWN_FLAGS != 0 || flags & STATE_FLAGS == STATE_FLAGS
    };
    if unsupported {
        return Err(DecodeError::UnsupportedFlags { found: flags });
    }
    Ok((version, flags))
}

pub(crate) fn header_bytes(version: u16, flags: u16) -> [u8; HEADER_LEN] {
    let [m0, m1, m2, m3] = MAGIC;
    let [v0, v1] = version.to_le_bytes();
    let [f0, f1] = flags.to_le_bytes();
    [m0, m1, m2, m3, v0, v1, f0, f1]
}

pub(crate) fn check_digest(
    what: Digested,
    expected: &[u8; 32],
    found: &[u8; 32],
) -> Result<(), CellError> {
    if found != expected {
        return Err(CellError::IntegrityMismatch {
            what,
            expected: DigestPrefix::of(expected),
            found: DigestPrefix::of(found),
        });
    }
    Ok(())
}

/// The fields of a snapshot the codecs write, borrowed from whatever holds them; the binary and
/// the memory are passed beside them, as they go on the wire.
pub(crate) struct Fields<'a> {
    pub agent_id: AgentId,
    pub dna_hash: &'a [u8; 32],
    pub globals: &'a Globals,
    pub policy: &'a Policy,
    pub timestamp: u64,
    pub source_node: Option<NodeId>,
    pub route: Option<Route>,
}
