//! How version 3 commits to linear memory: a binary hash tree over the 4 KiB chunks.
//!
//! ```text
//! leaf(i)     = SHA-256(chunk i)                      (the chunk digests version 2 keeps too)
//! MTH([])     = SHA-256("")                           (no chunks)
//! MTH([d])    = d
//! MTH(D[0:n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k: the largest power of two < n
//! root        = SHA-256(0x02 || memory length as u64 LE || MTH(all leaves))
//! ```
//!
//! The shape is RFC 6962's (Certificate Transparency): the left subtree of every node is a
//! perfect tree. The length under the root fixes the shape, so every position is known to be a
//! leaf or an inner node; the prefixes keep inner nodes and the root apart from leaves anyway.
//!
//! Why a tree and not version 2's flat list of digests: a receiver can check any one chunk
//! against the root with the `log2(n)` digests on its path, so a stream of chunks can be checked
//! as it arrives (the manifest of a streamed hand-off) without either side holding every
//! digest, and two memories that differ in a few chunks differ in a few subtrees.
//!
//! [`TreeBuilder`] computes the root from the leaves in order with a stack of at most one
//! digest per level (64 levels), no allocation.

use sha2::{Digest, Sha256};

/// The prefix of an inner node's hash input.
pub(crate) const NODE_PREFIX: u8 = 0x01;
/// The prefix of the root's hash input.
pub(crate) const ROOT_PREFIX: u8 = 0x02;

/// The hash of an inner node.
pub(crate) fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root over the tree hash of a memory of `memory_len` bytes.
pub(crate) fn root_of(memory_len: u64, tree: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([ROOT_PREFIX]);
    h.update(memory_len.to_le_bytes());
    h.update(tree);
    h.finalize().into()
}

/// Builds the root from leaf digests given in order: a stack of complete subtrees, one per set
/// bit of the number of leaves so far (largest at the bottom), merged as a binary counter
/// carries.
pub(crate) struct TreeBuilder {
    memory_len: u64,
    leaves: u64,
    /// The hashes of the complete subtrees, largest first.
    stack: heapless::Vec<[u8; 32], MAX_LEVELS>,
}

/// Levels a tree of 4 KiB chunks can have in a 64-bit address space: 2^64 / 2^12 leaves.
const MAX_LEVELS: usize = 52;

impl TreeBuilder {
    pub fn new(memory_len: u64) -> Self {
        TreeBuilder {
            memory_len,
            leaves: 0,
            stack: heapless::Vec::new(),
        }
    }

    /// Adds the next leaf.
    pub fn push(&mut self, leaf: &[u8; 32]) {
        let mut hash = *leaf;
        // Each trailing one bit of the count is a subtree of the new leaf's size: merge.
        let mut n = self.leaves;
        while n & 1 == 1 {
            if let Some(left) = self.stack.pop() {
                hash = node(&left, &hash);
            }
            n >>= 1;
        }
        // At most one entry per bit of the count, and memory is addressed by a usize, so the
        // count of 4 KiB chunks has at most MAX_LEVELS bits: the push cannot fail.
        let _ = self.stack.push(hash);
        self.leaves += 1;
    }

    /// The root: the remaining subtrees merged from the right, which gives RFC 6962's shape
    /// (the left subtree of every node is the largest perfect tree that fits).
    pub fn finish(mut self) -> [u8; 32] {
        let tree = match self.stack.pop() {
            None => Sha256::digest(b"").into(),
            Some(mut right) => {
                while let Some(left) = self.stack.pop() {
                    right = node(&left, &right);
                }
                right
            }
        };
        root_of(self.memory_len, &tree)
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::super::memory::{chunk_digest, CHUNK_SIZE};
    use super::*;
    use alloc::vec::Vec;

    /// The version-3 root of `memory`, hashing each byte once. Allocates nothing.
    fn tree_root(memory: &[u8]) -> [u8; 32] {
        let mut t = TreeBuilder::new(memory.len() as u64);
        for chunk in memory.chunks(CHUNK_SIZE) {
            t.push(&chunk_digest(chunk));
        }
        t.finish()
    }

    /// The version-3 root from chunk digests given in order.
    fn tree_root_of_digests(memory_len: u64, leaves: &[[u8; 32]]) -> [u8; 32] {
        let mut t = TreeBuilder::new(memory_len);
        for leaf in leaves {
            t.push(leaf);
        }
        t.finish()
    }

    /// The recursive definition, written as the module docs state it.
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn builder_matches_the_recursive_definition() {
        // Every shape up to 70 leaves natively. Miri interprets SHA-256 slowly (this loop took
        // most of CI's Miri minutes): there, the sizes around each power of two, which give
        // every shape of split the builder takes.
        let sizes: Vec<usize> = if cfg!(miri) {
            [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17].to_vec()
        } else {
            (0..70).collect()
        };
        for n in sizes {
            let leaves: Vec<[u8; 32]> = (0..n)
                .map(|i| sha2::Sha256::digest([i as u8]).into())
                .collect();
            let len = (n * CHUNK_SIZE) as u64;
            assert_eq!(
                tree_root_of_digests(len, &leaves),
                root_of(len, &mth(&leaves)),
                "{n} leaves"
            );
        }
    }

    #[test]
    fn root_commits_to_the_length_and_every_chunk() {
        let memory: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let root = tree_root(&memory);
        // Three chunks: node(node(l0, l1), l2).
        let l: Vec<[u8; 32]> = memory.chunks(CHUNK_SIZE).map(chunk_digest).collect();
        let expected = root_of(10_000, &node(&node(&l[0], &l[1]), &l[2]));
        assert_eq!(root, expected);
        let mut longer = memory.clone();
        longer.push(0);
        assert_ne!(tree_root(&longer), root);
        assert_eq!(tree_root(&[]), root_of(0, &Sha256::digest(b"").into()));
    }
}
