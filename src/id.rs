//! Identities: [`AgentId`] and [`NodeId`], both 16-byte UUIDs.

use core::fmt;
use sha2::{Digest, Sha256};
use uuid::{Builder, Uuid};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// The id with exactly these bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(bytes)
            }

            /// The 16 bytes, as they go on the wire.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// A random (version 4) UUID made from 16 bytes the caller drew from its own RNG;
            /// the version and variant bits are overwritten, leaving 122 random bits.
            pub const fn from_random_bytes(random: [u8; 16]) -> Self {
                $name(*Builder::from_random_bytes(random).as_uuid().as_bytes())
            }

            /// A random (version 4) id from the operating system's RNG.
            ///
            /// # Panics
            /// If the OS has no RNG to read, as `uuid::Uuid::new_v4` does.
            #[cfg(feature = "std")]
            #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
            pub fn new_v4() -> Self {
                $name(*Uuid::new_v4().as_bytes())
            }
        }

        impl From<[u8; 16]> for $name {
            fn from(bytes: [u8; 16]) -> Self {
                $name(bytes)
            }
        }

        /// Hyphenated lower-case UUID, e.g. `67e55044-10b1-426f-9247-bb680e5fe0c8`.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&Uuid::from_bytes(self.0).hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

uuid_id!(
    /// An agent's identity: a 16-byte UUID that stays the same across migrations.
    ///
    /// ```
    /// use mielin_cells::{sha256, AgentId};
    ///
    /// // Without an RNG: derived from the DNA hash and an instance number, the same everywhere.
    /// let dna_hash = sha256(b"\0asm\x01\0\0\0");
    /// let id = AgentId::derive(&dna_hash, 0);
    /// assert_eq!(id, AgentId::derive(&dna_hash, 0));
    /// assert_ne!(id, AgentId::derive(&dna_hash, 1));
    ///
    /// // From 16 random bytes the caller drew (version and variant bits are set).
    /// let random = AgentId::from_random_bytes([0xab; 16]);
    /// assert_eq!(random.to_string(), "abababab-abab-4bab-abab-abababababab");
    /// assert_eq!(AgentId::from_bytes(*random.as_bytes()), random);
    /// ```
    AgentId
);
uuid_id!(
    /// A node's identity: a 16-byte UUID naming the machine an agent runs on.
    ///
    /// ```
    /// use mielin_cells::NodeId;
    ///
    /// let node = NodeId::from_bytes([0x11; 16]);
    /// assert_eq!(node.to_string(), "11111111-1111-1111-1111-111111111111");
    /// assert_eq!(NodeId::from([0x11; 16]), node);
    /// ```
    NodeId
);

/// Domain separation for [`AgentId::derive`], so these ids never collide with other uses of
/// SHA-256 over the same bytes.
const DERIVE_CONTEXT: &[u8] = b"mielin-cells/agent-id/v1";

impl AgentId {
    /// A deterministic id for devices without an RNG: instance `instance` of the agent whose DNA
    /// hash is `dna_hash`.
    ///
    /// The id is the first 16 bytes of
    /// `SHA-256("mielin-cells/agent-id/v1" || dna_hash || instance as u64 little-endian)`, with the
    /// UUID version set to 8 (custom) and the RFC 9562 variant bits set. The same inputs give the
    /// same id on every architecture; distinct instance numbers give distinct ids.
    pub fn derive(dna_hash: &[u8; 32], instance: u64) -> Self {
        let mut h = Sha256::new();
        h.update(DERIVE_CONTEXT);
        h.update(dna_hash);
        h.update(instance.to_le_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut custom = [0u8; 16];
        custom.copy_from_slice(&digest[..16]);
        AgentId(*Builder::from_custom_bytes(custom).as_uuid().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_become_a_v4_uuid() {
        let id = AgentId::from_random_bytes([0xff; 16]);
        let u = Uuid::from_bytes(*id.as_bytes());
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn derived_ids_are_v8_deterministic_and_distinct() {
        let h = crate::sha256(b"dna");
        let a = AgentId::derive(&h, 0);
        assert_eq!(a, AgentId::derive(&h, 0));
        assert_ne!(a, AgentId::derive(&h, 1));
        assert_ne!(a, AgentId::derive(&crate::sha256(b"other"), 0));
        let u = Uuid::from_bytes(*a.as_bytes());
        assert_eq!(u.get_version_num(), 8);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }

    // Pins the derivation so that a firmware and a server agree on it forever.
    #[test]
    fn derived_id_known_answer() {
        let id = AgentId::derive(&[0u8; 32], 7);
        let mut s = heapless::String::<36>::new();
        core::fmt::write(&mut s, format_args!("{id}")).unwrap();
        assert_eq!(s, DERIVED_ZERO_7);
    }
    // Computed independently with Python's hashlib and the RFC 9562 bit layout.
    const DERIVED_ZERO_7: &str = "ed19fdb0-c10a-850e-b66e-50048c456ef8";

    #[test]
    fn display_is_hyphenated_uuid() {
        let id = NodeId::from_bytes([
            0x67, 0xe5, 0x50, 0x44, 0x10, 0xb1, 0x42, 0x6f, 0x92, 0x47, 0xbb, 0x68, 0x0e, 0x5f,
            0xe0, 0xc8,
        ]);
        let mut s = heapless::String::<96>::new();
        core::fmt::write(&mut s, format_args!("{id} {id:?}")).unwrap();
        assert_eq!(
            s,
            "67e55044-10b1-426f-9247-bb680e5fe0c8 NodeId(67e55044-10b1-426f-9247-bb680e5fe0c8)"
        );
    }
}
