//! The node's own files, sealed: a node-local key ([`LocalKey`]) that MACs them, and why a
//! sealed file is refused on load ([`StoreError`]).
//!
//! A node reads its journals back after a restart and trusts what they say (the epochs that
//! stop replays, the phase of every hand-off). Those bytes are checked as strictly as bytes
//! from the network: every structure in them carries an HMAC-SHA256 under a key only this node
//! can derive, bound to the node id, so a file edited by hand, corrupted on disk or copied from
//! another node is refused with an error that says what is wrong and where.
//!
//! ```
//! use mielin_cells::{LocalKey, NodeId};
//!
//! let node = NodeId::from_bytes([7; 16]);
//! let key = LocalKey::derive(&[42; 32], node); // the node's Ed25519 secret seed
//! let tag = key.mac("example/v1", &[b"header", &1u64.to_le_bytes()]);
//! assert!(key.verify("example/v1", &[b"header", &1u64.to_le_bytes()], &tag));
//! // Another domain, other bytes or another node's key: refused.
//! assert!(!key.verify("example/v2", &[b"header", &1u64.to_le_bytes()], &tag));
//! let other = LocalKey::derive(&[42; 32], NodeId::from_bytes([8; 16]));
//! assert!(!other.verify("example/v1", &[b"header", &1u64.to_le_bytes()], &tag));
//! ```

use crate::NodeId;
use core::fmt;
use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;

/// Bytes of a MAC: a whole HMAC-SHA256 output, not truncated.
pub const MAC_LEN: usize = 32;

/// The domain of the key derivation; [`LocalKey::derive`].
const DERIVE_DOMAIN: &str = "mielin-cells/local-key/v1";

/// A 32-byte key for MACs over this node's own files (feature-free, `no_std`, no allocation).
///
/// Derive it from the node's Ed25519 secret seed and node id with [`LocalKey::derive`]; the
/// same key serves every file of the node, each under its own domain string (see
/// [`LocalKey::mac`]). A device without a secret uses [`LocalKey::UNKEYED`], which detects
/// corruption only.
///
/// `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalKey([u8; 32]);

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unkeyed() {
            f.write_str("LocalKey(UNKEYED)")
        } else {
            f.write_str("LocalKey(..)")
        }
    }
}

impl LocalKey {
    /// The key of a device that has no secret: 32 public bytes (`"mielin-cells/unkeyed/v1"`
    /// padded with zeros).
    ///
    /// Files sealed with it still refuse corruption (a flipped bit, a cut, a torn write), and
    /// the node id in their headers still refuses a file copied by mistake from another node,
    /// but **not** a deliberate change: anyone can recompute a MAC under a public key, so an
    /// edited file, or another node's file with its node id rewritten, is accepted. Use a
    /// derived key wherever a secret exists.
    pub const UNKEYED: LocalKey = LocalKey(*b"mielin-cells/unkeyed/v1\0\0\0\0\0\0\0\0\0");

    /// The node-local key of the node with Ed25519 secret seed `secret_seed` and id `node`:
    /// `HMAC-SHA256(secret_seed, frame("mielin-cells/local-key/v1", node))`, framed as in
    /// [`LocalKey::mac`]. Domain-separated from every other use of the seed (Ed25519 hashes it
    /// with SHA-512, unkeyed), so the key reveals nothing about the seed and signs nothing.
    pub fn derive(secret_seed: &[u8; 32], node: NodeId) -> LocalKey {
        LocalKey(LocalKey(*secret_seed).mac(DERIVE_DOMAIN, &[node.as_bytes()]))
    }

    /// A key the embedder keeps itself (32 random bytes in protected storage, for example).
    pub const fn from_bytes(key: [u8; 32]) -> LocalKey {
        LocalKey(key)
    }

    /// Whether this is [`LocalKey::UNKEYED`].
    pub fn is_unkeyed(&self) -> bool {
        self.0 == Self::UNKEYED.0
    }

    fn hmac(&self, domain: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
        // HMAC pads a key shorter than the hash's 64-byte block with zeros; padding it here
        // gives the same MAC through the infallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let mut mac = Hmac::<Sha256>::new(&block.into());
        // Every field is length-prefixed, so no two (domain, parts) lists frame to the same
        // bytes: moving a byte from one part to the next changes the MAC.
        mac.update(&(domain.len() as u64).to_le_bytes());
        mac.update(domain.as_bytes());
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac
    }

    /// The HMAC-SHA256 of `parts` under `domain`: the MAC input is the domain and then each
    /// part, each preceded by its length as a `u64` little-endian. Use one domain string per
    /// structure and version (`"mielin-cells/epoch-journal/record/v1"`, ...), so a MAC from
    /// one structure never verifies another.
    pub fn mac(&self, domain: &str, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        self.hmac(domain, parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `parts` under `domain`, compared in constant time (a tag of
    /// another length is refused).
    pub fn verify(&self, domain: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.hmac(domain, parts).verify_slice(tag).is_ok()
    }
}

/// A node's key seals its own version-3 containers (`FLAG_SEALED`: a stopped agent, a prepared
/// hand-off): the tag is [`LocalKey::mac`] under the domain `"mielin-cells/container-seal/v3"`
/// over the container's seal message.
impl crate::migration::SnapshotSealer for LocalKey {
    fn seal(&self, message: &[u8]) -> [u8; 32] {
        self.mac("mielin-cells/container-seal/v3", &[message])
    }
}

/// Which structure of a sealed file a [`StoreError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Part {
    /// The fixed header: magic, version, node id.
    Header,
    /// One of the two commit slots of an append-only journal.
    Slot,
    /// A record.
    Record,
    /// A sequence (epoch) entry of the mesh journal.
    Sequence,
    /// The MAC over a whole file.
    FileMac,
    /// A record of a log read through its records, not its bytes (`storage::FlashLog`,
    /// `mesh::LogJournal`): its offset is the record's ticket.
    LogRecord,
}

impl Part {
    /// Where the part is, for messages: "at byte N", or "with ticket N" for a
    /// [`Part::LogRecord`].
    fn at(self, offset: u64) -> impl fmt::Display {
        struct At(Part, u64);
        impl fmt::Display for At {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Part::LogRecord => write!(f, "with ticket {}", self.1),
                    _ => write!(f, "at byte {}", self.1),
                }
            }
        }
        At(self, offset)
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Slot => "commit slot",
            Part::Record => "record",
            Part::Sequence => "sequence entry",
            Part::FileMac => "file MAC",
            Part::LogRecord => "log record",
        })
    }
}

/// Why a node's own file was refused, or could not be written. `Copy`, allocation-free.
///
/// Offsets are byte offsets in the file. Each refusal means the file is not what this node
/// last committed: restore it from a backup or retire the node's data; never delete it to get
/// past the error (a node that forgets its epochs accepts replays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// There is no file (or image). Only creating a node makes one: a missing journal of an
    /// existing node is a lost journal, not an empty one.
    #[error("missing: no file where the node's journal should be (only a new node creates one)")]
    Missing,
    /// Creating, and a file is already there: creating would erase it.
    #[error("already exists: creating a journal would erase the one already there")]
    Exists,
    /// The file has zero bytes: a wiped or truncated journal, not an empty one.
    #[error("empty: the file has zero bytes (a journal always has a header)")]
    Empty,
    /// The file is longer than any file the journal writes with its capacity; refused before
    /// it is read, so a huge file costs no memory.
    #[error("too long: a journal of this capacity is at most {limit} bytes, the file has {found}")]
    TooLong {
        /// The longest file of this capacity.
        limit: u64,
        /// The file's length.
        found: u64,
    },
    /// The file ends inside a structure.
    #[error(
        "too short: the {part} at byte {offset} needs {needed} bytes, the file ends at {found}"
    )]
    TooShort {
        /// The structure cut.
        part: Part,
        /// Where it starts.
        offset: u64,
        /// The bytes it needs from there.
        needed: u64,
        /// The file's length.
        found: u64,
    },
    /// The file does not start with the format's magic.
    #[error("not a journal of this kind: expected magic {expected:02x?}, found {found:02x?}")]
    BadMagic {
        /// The magic of the format.
        expected: [u8; 4],
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version this build does not read.
    #[error("unsupported version {found}: this build reads version {supported}")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The header names another node: a file copied from another node's data directory.
    #[error("written by another node: the file names node {found}, this is node {expected}")]
    WrongNode {
        /// This node.
        expected: NodeId,
        /// The node the file names.
        found: NodeId,
    },
    /// A MAC does not verify under this node's key: the bytes were changed (edited or
    /// corrupted) or sealed by another node.
    #[error("MAC mismatch in the {part} {}: changed on disk, or sealed with another node's key", .part.at(*.offset))]
    BadMac {
        /// The structure whose MAC failed.
        part: Part,
        /// Where it starts (a byte offset; for a [`Part::LogRecord`], its ticket).
        offset: u64,
    },
    /// The file is shorter than the length its header commits: its tail was cut off (a
    /// rollback of the last records).
    #[error("truncated: the header commits {committed} bytes, the file has {found} (records lost from the end)")]
    Truncated {
        /// Bytes the newest valid commit slot vouches for.
        committed: u64,
        /// The file's length.
        found: u64,
    },
    /// A structure whose MAC verified but whose contents break a rule of the format (only
    /// this crate writes these files, so this is a bug or a spliced file).
    #[error("malformed {part} {}: {reason}", .part.at(*.offset))]
    Malformed {
        /// The structure.
        part: Part,
        /// Where it starts (a byte offset; for a [`Part::LogRecord`], its ticket).
        offset: u64,
        /// The rule broken.
        reason: &'static str,
    },
    /// A record longer than the log takes ([`Log::max_record`](crate::storage::Log::max_record)).
    #[error("record too long: {len} bytes, this log takes at most {max}")]
    RecordTooLong {
        /// The record's length.
        len: u64,
        /// The longest record the log takes.
        max: u64,
    },
    /// The log's medium has no room for the record.
    #[error("log full: its medium holds {capacity} bytes of records")]
    LogFull {
        /// What the medium holds.
        capacity: u64,
    },
    /// Writing or syncing failed on a medium without `std::io` errors (flash, or a fault a
    /// test injected). The log is poisoned from then on.
    #[error("write failed: the medium refused a write or a sync")]
    WriteFailed,
    /// A write or sync failed earlier: the journal refuses further writes until reopened
    /// (its file may hold a partial commit that only a reopen sorts out).
    #[error("poisoned: an earlier write or sync failed; reopen the journal")]
    Poisoned,
    /// Reading, writing or syncing failed (feature `std`).
    #[cfg(feature = "std")]
    #[error("I/O error: {0}")]
    Io(std::io::ErrorKind),
}

#[cfg(feature = "std")]
impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.kind())
    }
}

#[cfg(feature = "std")]
impl StoreError {
    /// The `io::ErrorKind` it maps to: `NotFound` for [`StoreError::Missing`],
    /// `AlreadyExists` for [`StoreError::Exists`], the kind of an I/O error, and `InvalidData`
    /// for a refused file.
    pub fn kind(self) -> std::io::ErrorKind {
        use std::io::ErrorKind;
        match self {
            StoreError::Missing => ErrorKind::NotFound,
            StoreError::Exists => ErrorKind::AlreadyExists,
            StoreError::Io(kind) => kind,
            _ => ErrorKind::InvalidData,
        }
    }

    /// The error as an `io::Error` of its [`kind`](Self::kind) whose message names `path`.
    pub fn at(self, path: &std::path::Path) -> std::io::Error {
        std::io::Error::new(self.kind(), std::format!("{}: {self}", path.display()))
    }
}

#[cfg(feature = "std")]
impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        std::io::Error::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> heapless::String<128> {
        let mut s = heapless::String::new();
        for b in bytes {
            core::fmt::write(&mut s, format_args!("{b:02x}")).unwrap();
        }
        s
    }

    fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    // RFC 4231, test cases 1, 2, 4 and 6 (HMAC-SHA256): the primitive under our framing.
    #[test]
    fn rfc4231_known_answers() {
        assert_eq!(
            hex(&hmac(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let key: [u8; 25] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(
            hex(&hmac(&key, &[0xcd; 50])),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"
        );
        assert_eq!(
            hex(&hmac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    // The framing, pinned: HMAC-SHA256 over u64-LE-length-prefixed fields. A change to the
    // framing or the derivation makes every sealed file unreadable, so it must show here.
    #[test]
    fn framing_and_derivation_known_answers() {
        let mut framed = [0u8; 8 + 3 + 8 + 2 + 8];
        framed[..8].copy_from_slice(&3u64.to_le_bytes());
        framed[8..11].copy_from_slice(b"dom");
        framed[11..19].copy_from_slice(&2u64.to_le_bytes());
        framed[19..21].copy_from_slice(b"ab");
        framed[21..29].copy_from_slice(&0u64.to_le_bytes());
        let key = LocalKey::from_bytes([0x0b; 32]);
        assert_eq!(key.mac("dom", &[b"ab", b""]), hmac(&[0x0b; 32], &framed));
        // The parts' boundaries count: "ab" + "" is not "a" + "b".
        assert_ne!(key.mac("dom", &[b"ab", b""]), key.mac("dom", &[b"a", b"b"]));

        let node = NodeId::from_bytes([0x11; 16]);
        let derived = LocalKey::derive(&[0x22; 32], node);
        let mut msg = heapless::Vec::<u8, 64>::new();
        msg.extend_from_slice(&(DERIVE_DOMAIN.len() as u64).to_le_bytes())
            .unwrap();
        msg.extend_from_slice(DERIVE_DOMAIN.as_bytes()).unwrap();
        msg.extend_from_slice(&16u64.to_le_bytes()).unwrap();
        msg.extend_from_slice(&[0x11; 16]).unwrap();
        assert_eq!(derived.0, hmac(&[0x22; 32], &msg));
        // The same value from Python's hmac module, computed independently of this crate.
        assert_eq!(
            hex(&derived.0),
            "387379c46b755597b9f3836d64bf4d10049ad50f27aa7913e91cad38cc974254"
        );
    }

    #[test]
    fn keys_differ_by_seed_and_by_node() {
        let (n1, n2) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
        let a = LocalKey::derive(&[9; 32], n1);
        assert_ne!(a, LocalKey::derive(&[9; 32], n2));
        assert_ne!(a, LocalKey::derive(&[8; 32], n1));
        assert_ne!(a, LocalKey::UNKEYED);
        assert!(LocalKey::UNKEYED.is_unkeyed() && !a.is_unkeyed());
        let mut debug = heapless::String::<32>::new();
        core::fmt::write(&mut debug, format_args!("{a:?}")).unwrap();
        assert_eq!(debug, "LocalKey(..)");
    }

    #[test]
    fn verify_refuses_every_change() {
        let key = LocalKey::derive(&[3; 32], NodeId::from_bytes([4; 16]));
        let tag = key.mac("d", &[b"payload"]);
        assert!(key.verify("d", &[b"payload"], &tag));
        // Every bit natively; under Miri, which interprets HMAC slowly, every bit of the first,
        // a middle and the last byte.
        let bytes: &[usize] = if cfg!(miri) {
            &[0, MAC_LEN / 2, MAC_LEN - 1]
        } else {
            &[]
        };
        for i in (0..MAC_LEN).filter(|i| bytes.is_empty() || bytes.contains(i)) {
            for bit in 0..8 {
                let mut t = tag;
                t[i] ^= 1 << bit;
                assert!(!key.verify("d", &[b"payload"], &t));
            }
        }
        assert!(
            !key.verify("d", &[b"payload"], &tag[..31]),
            "a truncated tag"
        );
        assert!(!key.verify("d", &[b"payloaD"], &tag));
        assert!(!key.verify("e", &[b"payload"], &tag));
    }
}
