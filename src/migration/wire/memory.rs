//! How version 2 commits to linear memory: a digest per 4 KiB chunk, and a root over them.
//!
//! ```text
//! root = SHA-256( u64-LE memory length || SHA-256(chunk 0) || SHA-256(chunk 1) || ... )
//! ```
//!
//! Chunks are 4096 bytes, the last one shorter if the length is not a multiple. A receiver that
//! keeps the chunk digests of a memory can check a delta against it by hashing only the chunks
//! that changed, and a sender can build one the same way.

use crate::sha256;
use sha2::{Digest, Sha256};

/// Bytes in a chunk of memory, for the chunked and delta encodings and the memory root.
pub const CHUNK_SIZE: usize = 4096;

/// The digest of one chunk.
pub(crate) fn chunk_digest(chunk: &[u8]) -> [u8; 32] {
    sha256(chunk)
}

/// Builds a memory root from chunk digests given in order.
pub(crate) struct RootBuilder(Sha256);

impl RootBuilder {
    pub fn new(memory_len: u64) -> Self {
        let mut h = Sha256::new();
        h.update(memory_len.to_le_bytes());
        RootBuilder(h)
    }

    pub fn push(&mut self, chunk_digest: &[u8; 32]) {
        self.0.update(chunk_digest);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// How a snapshot commits to its memory: version 2's flat root over the chunk digests, or
/// version 3's hash tree (`tree`). Both are built from the same per-chunk digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Version 2: `SHA-256(length || digest 0 || digest 1 || ...)`.
    Flat,
    /// Version 3: the hash tree of `tree`.
    Tree,
}

/// A root being built from chunk digests in order, by either commitment. (The tree's stack of
/// subtree hashes makes one variant large; it lives on the stack for one decode, and there may
/// be no allocator to box it.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Roots {
    Flat(RootBuilder),
    Tree(super::tree::TreeBuilder),
}

impl Roots {
    pub fn push(&mut self, chunk_digest: &[u8; 32]) {
        match self {
            Roots::Flat(b) => b.push(chunk_digest),
            Roots::Tree(b) => b.push(chunk_digest),
        }
    }

    pub fn finish(self) -> [u8; 32] {
        match self {
            Roots::Flat(b) => b.finish(),
            Roots::Tree(b) => b.finish(),
        }
    }
}

impl Commit {
    /// A builder for a memory of `memory_len` bytes.
    pub fn builder(self, memory_len: u64) -> Roots {
        match self {
            Commit::Flat => Roots::Flat(RootBuilder::new(memory_len)),
            Commit::Tree => Roots::Tree(super::tree::TreeBuilder::new(memory_len)),
        }
    }

    /// The root of `memory`, hashing each byte once. Allocates nothing.
    pub fn root(self, memory: &[u8]) -> [u8; 32] {
        let mut root = self.builder(memory.len() as u64);
        for chunk in memory.chunks(CHUNK_SIZE) {
            root.push(&chunk_digest(chunk));
        }
        root.finish()
    }
}

/// The root of `memory`, hashing each byte once. Allocates nothing.
pub(crate) fn memory_root(memory: &[u8]) -> [u8; 32] {
    let mut root = RootBuilder::new(memory.len() as u64);
    for chunk in memory.chunks(CHUNK_SIZE) {
        root.push(&chunk_digest(chunk));
    }
    root.finish()
}

/// The digests of a memory's chunks, kept by a sender or receiver so that the next delta costs
/// only the chunks that changed.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryDigests {
    len: usize,
    chunks: alloc::vec::Vec<[u8; 32]>,
}

#[cfg(feature = "alloc")]
impl MemoryDigests {
    /// Hashes `memory` chunk by chunk.
    pub fn of(memory: &[u8]) -> Self {
        MemoryDigests {
            len: memory.len(),
            chunks: memory.chunks(CHUNK_SIZE).map(chunk_digest).collect(),
        }
    }

    pub(crate) fn from_parts(len: usize, chunks: alloc::vec::Vec<[u8; 32]>) -> Self {
        MemoryDigests { len, chunks }
    }

    /// The length of the memory these digests describe.
    pub fn memory_len(&self) -> usize {
        self.len
    }

    /// The digest of each chunk, in order.
    pub fn chunks(&self) -> &[[u8; 32]] {
        &self.chunks
    }

    /// The version-2 memory root (see the module docs), from the digests alone.
    pub fn root(&self) -> [u8; 32] {
        self.root_by(Commit::Flat)
    }

    /// The version-3 memory root, the hash tree's (`docs/wire-format.md`), from the digests
    /// alone.
    pub fn tree_root(&self) -> [u8; 32] {
        self.root_by(Commit::Tree)
    }

    pub(crate) fn root_by(&self, commit: Commit) -> [u8; 32] {
        let mut root = commit.builder(self.len as u64);
        for d in &self.chunks {
            root.push(d);
        }
        root.finish()
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_specified_hash() {
        let memory: alloc::vec::Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut spec = alloc::vec::Vec::new();
        spec.extend_from_slice(&10_000u64.to_le_bytes());
        for chunk in memory.chunks(4096) {
            spec.extend_from_slice(&sha256(chunk));
        }
        assert_eq!(memory_root(&memory), sha256(&spec));
        assert_eq!(MemoryDigests::of(&memory).root(), sha256(&spec));
        assert_eq!(memory_root(&[]), sha256(&0u64.to_le_bytes()));
    }
}
