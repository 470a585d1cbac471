//! Node identity: an Ed25519 key pair in a key file, the node id derived from the public key,
//! and the [`Directory`] of pinned peers.

use crate::mesh::certificate::{self, CertificateError};
use crate::NodeId;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 public key: what a peer is pinned by.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The node id this key speaks for: the first 16 bytes of the SHA-256 of the key, so a
    /// node cannot claim an id without holding the key.
    pub fn node_id(&self) -> NodeId {
        crate::mesh::fleet::node_of(&self.0)
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(s: &str) -> Option<PublicKey> {
        let v = from_hex(s)?;
        Some(PublicKey(v.try_into().ok()?))
    }

    /// The key in hexadecimal.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The key of the certificate `der` (DER, nothing after it), as the TLS handshake verifies
    /// it: the certificate's own `subjectPublicKeyInfo`, parsed by rustls' parser, which must
    /// be an Ed25519 key. [`PublicKey::from_certificates`] for one.
    pub fn from_certificate(der: &[u8]) -> Result<PublicKey, CertificateError> {
        PublicKey::from_certificates([der])
    }

    /// The key of the certificates a peer presented (end-entity first): there must be exactly
    /// one. The verifiers of both sides and the driver, after the handshake, read a peer's key
    /// with this; the checks and their order are [`mesh::certificate`](crate::mesh::certificate)'s.
    pub fn from_certificates<'a>(
        chain: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<PublicKey, CertificateError> {
        certificate::ed25519_key(chain).map(PublicKey)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lowercase hexadecimal.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses hexadecimal (even length, either case).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

/// A node's key pair. The secret is the 32-byte Ed25519 seed; it signs TLS handshakes and
/// snapshots (one key, two uses: a peer pinned for one is pinned for the other).
#[derive(Clone)]
pub struct Identity {
    seed: [u8; 32],
    public: PublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity of a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        Identity {
            seed,
            public: PublicKey(public),
        }
    }

    /// A new random identity (the operating system's RNG, through ring).
    pub fn generate() -> io::Result<Identity> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(io::Error::other)?;
        // ring writes PKCS#8 v2 for Ed25519: the seed follows the same 16-byte prefix as v1
        // except for the lengths and version; it is the OCTET STRING at offset 16.
        let der = kp.serialize_der();
        let seed: [u8; 32] = der
            .get(16..48)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| io::Error::other("unexpected Ed25519 PKCS#8 layout"))?;
        let id = Identity::from_seed(seed);
        // The seed must give back the key ring generated.
        if !der.windows(32).any(|w| w == id.public.0) {
            return Err(io::Error::other("unexpected Ed25519 PKCS#8 layout"));
        }
        Ok(id)
    }

    /// Reads the key file at `path` (64 hexadecimal digits of seed); never creates one.
    pub fn load(path: &Path) -> io::Result<Identity> {
        let s = std::fs::read_to_string(path)?;
        let seed = from_hex(s.trim())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a mielin key file"))?;
        Ok(Identity::from_seed(seed))
    }

    /// Reads the key file at `path` (64 hexadecimal digits of seed), or creates it with a new
    /// random key (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> io::Result<Identity> {
        match Identity::load(path) {
            Ok(id) => Ok(id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Identity::generate()?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(path)?;
                io::Write::write_all(&mut f, format!("{}\n", to_hex(&id.seed)).as_bytes())?;
                f.sync_all()?;
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The node id ([`PublicKey::node_id`]).
    pub fn node_id(&self) -> NodeId {
        self.public.node_id()
    }

    /// The 32-byte secret seed (for [`crate::migration::Ed25519Signer::from_secret`]).
    pub fn secret(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The private key as PKCS#8 v1 DER.
    pub(crate) fn pkcs8(&self) -> Vec<u8> {
        let mut v = ED25519_PKCS8_PREFIX.to_vec();
        v.extend_from_slice(&self.seed);
        v
    }

    /// A self-signed certificate for this key (DER). Peers pin the key, not the certificate,
    /// so a new certificate on every start changes nothing.
    pub(crate) fn certificate(&self) -> io::Result<Vec<u8>> {
        let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(self.pkcs8());
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(io::Error::other)?;
        let name = format!("{}.mielin", to_hex(self.node_id().as_bytes()));
        let params = rcgen::CertificateParams::new(alloc::vec![name]).map_err(io::Error::other)?;
        let cert = params.self_signed(&kp).map_err(io::Error::other)?;
        Ok(cert.der().to_vec())
    }
}

/// A pinned peer: where it listens and the key it must present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its pinned public key.
    pub key: PublicKey,
}

/// The peers a node talks to, given by the embedder (like SSH's known hosts): node id →
/// address → pinned key. The id is the key's ([`PublicKey::node_id`]), so an entry cannot
/// pin one node's id to another's key. Only these peers can connect, hand over or message.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    peers: BTreeMap<NodeId, Peer>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Pins `key` at `addr`; returns the peer's node id.
    pub fn insert(&mut self, key: PublicKey, addr: SocketAddr) -> NodeId {
        let id = key.node_id();
        self.peers.insert(id, Peer { addr, key });
        id
    }

    /// Parses `KEY@ADDR` (64 hexadecimal digits, `@`, a socket address) and pins it.
    pub fn insert_str(&mut self, s: &str) -> Result<NodeId, String> {
        let (k, a) = s
            .split_once('@')
            .ok_or_else(|| format!("peer `{s}`: expected KEY@ADDR"))?;
        let key = PublicKey::from_hex(k)
            .ok_or_else(|| format!("peer `{s}`: the key must be 64 hexadecimal digits"))?;
        let addr = a
            .parse()
            .map_err(|e| format!("peer `{s}`: bad address: {e}"))?;
        Ok(self.insert(key, addr))
    }

    /// The peer with node id `id`.
    pub fn get(&self, id: NodeId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// The node id pinned to `key`, if any.
    pub fn node_of(&self, key: &PublicKey) -> Option<NodeId> {
        let id = key.node_id();
        self.peers.get(&id).filter(|p| p.key == *key).map(|_| id)
    }

    /// Every pinned peer.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &Peer)> {
        self.peers.iter().map(|(i, p)| (*i, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_pinned_key() {
        let id = Identity::from_seed([7; 32]);
        let cert = id.certificate().unwrap();
        assert_eq!(PublicKey::from_certificate(&cert), Ok(id.public_key()));
        assert_eq!(
            PublicKey::from_certificate(&cert[..20]),
            Err(CertificateError::Malformed)
        );
        // Every prefix of our own certificate is refused (the old scan accepted any prefix
        // that still held the key), and so is anything after it.
        for n in 0..cert.len() {
            assert!(
                PublicKey::from_certificate(&cert[..n]).is_err(),
                "{n} bytes"
            );
        }
        let mut longer = cert.clone();
        longer.push(0);
        assert_eq!(
            PublicKey::from_certificate(&longer),
            Err(CertificateError::TrailingBytes)
        );
        assert_eq!(
            PublicKey::from_certificates([&cert[..], &cert[..]]),
            Err(CertificateError::MoreThanOne)
        );
        assert_eq!(id.node_id(), id.public_key().node_id());
    }

    #[test]
    fn key_file_round_trip_and_generation() {
        let dir = std::env::temp_dir().join(format!("mielin-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), Identity::generate().unwrap().public_key());
        std::fs::write(&path, "not hex").unwrap();
        assert!(Identity::load_or_create(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn directory_pins_ids_to_keys() {
        let k = Identity::from_seed([1; 32]).public_key();
        let other = Identity::from_seed([2; 32]).public_key();
        let mut d = Directory::new();
        let id = d
            .insert_str(&format!("{}@127.0.0.1:4001", k.to_hex()))
            .unwrap();
        assert_eq!(id, k.node_id());
        assert_eq!(d.node_of(&k), Some(id));
        assert_eq!(d.node_of(&other), None);
        assert!(d.insert_str("zz@127.0.0.1:1").is_err());
        assert!(d.insert_str(&k.to_hex()).is_err());
        assert!(d.insert_str(&format!("{}@nowhere", k.to_hex())).is_err());
    }
}
