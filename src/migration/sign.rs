//! Signed snapshots (feature `signatures`): Ed25519 over the snapshot digest, a key id, and a
//! per-agent sequence number that receivers require to grow. The threat model is in
//! `docs/security.md`.

use super::wire::{self, Parsed, SnapshotSigner};
use super::{DecodeOptions, MigrationSnapshot};
use crate::{sha256, AgentId, Capacity, CellError, SignatureError};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// A key's id on the wire: the first 8 bytes of the SHA-256 of its 32-byte public key.
pub fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let digest = sha256(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// Signs snapshots with an Ed25519 key.
pub struct Ed25519Signer {
    key: SigningKey,
    id: [u8; 8],
}

impl Ed25519Signer {
    /// A signer from a 32-byte secret key (generate it with the platform's RNG and keep it
    /// secret; this crate does not generate keys).
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(secret);
        let id = key_id(&key.verifying_key());
        Ed25519Signer { key, id }
    }

    /// The public key receivers put on their [`TrustList`].
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

impl SnapshotSigner for Ed25519Signer {
    fn key_id(&self) -> [u8; 8] {
        self.id
    }

    fn sign(&self, digest: &[u8; 32]) -> [u8; 64] {
        self.key.sign(digest).to_bytes()
    }
}

/// What a receiver trusts: the keys allowed to send it agents, whether unsigned snapshots are
/// refused, and the last sequence number accepted for each agent (at most `K` keys and `A`
/// agents; no allocation).
///
/// Decoding through a trust list checks, in order, before the DNA is resolved or memory
/// decoded: a signature is present if required ([`SignatureError::Missing`]), its key is trusted
/// ([`SignatureError::UnknownKey`]), it verifies ([`SignatureError::Invalid`]), and its sequence
/// number is above the last one accepted for the agent ([`SignatureError::Stale`]). The
/// sequence number is recorded only when the whole snapshot decoded.
#[derive(Debug, Clone)]
pub struct TrustList<const K: usize, const A: usize> {
    keys: heapless::Vec<([u8; 8], VerifyingKey), K>,
    last: heapless::Vec<(AgentId, u64), A>,
    require_signatures: bool,
}

impl<const K: usize, const A: usize> TrustList<K, A> {
    /// An empty list; with `require_signatures`, unsigned snapshots are refused.
    pub fn new(require_signatures: bool) -> Self {
        TrustList {
            keys: heapless::Vec::new(),
            last: heapless::Vec::new(),
            require_signatures,
        }
    }

    /// Trusts `key` to send agents.
    pub fn trust(&mut self, key: VerifyingKey) -> Result<(), CellError> {
        let id = key_id(&key);
        if self.keys.iter().any(|(k, _)| *k == id) {
            return Ok(());
        }
        self.keys.push((id, key)).map_err(|_| full(K))
    }

    /// The last sequence number accepted for `agent`.
    pub fn last_sequence(&self, agent: AgentId) -> Option<u64> {
        self.last.iter().find(|(a, _)| *a == agent).map(|(_, s)| *s)
    }

    /// [`MigrationSnapshot::view_with`] behind the checks above.
    pub fn view<'a>(
        &mut self,
        bytes: &'a [u8],
        opts: &DecodeOptions<'a>,
    ) -> Result<MigrationSnapshot<&'a [u8]>, CellError> {
        let parsed = wire::parse(bytes, &opts.limits)?;
        let sequence = self.check(&parsed)?;
        let snapshot = parsed.into_view(opts.dna_store)?;
        self.record(snapshot.agent_id(), sequence);
        Ok(snapshot)
    }

    /// [`MigrationSnapshot::deserialize_with`] behind the checks above.
    #[cfg(feature = "alloc")]
    pub fn deserialize(
        &mut self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
    ) -> Result<MigrationSnapshot<alloc::vec::Vec<u8>>, CellError> {
        let parsed = wire::parse(bytes, &opts.limits)?;
        let sequence = self.check(&parsed)?;
        let snapshot = parsed.into_owned(opts)?;
        self.record(snapshot.agent_id(), sequence);
        Ok(snapshot)
    }

    /// The signature checks; the sequence number to record, if signed.
    fn check(&self, parsed: &Parsed<'_>) -> Result<Option<u64>, CellError> {
        let reject = |e| Err(CellError::SignatureRejected(e));
        let Some(block) = parsed.signature else {
            return if self.require_signatures {
                reject(SignatureError::Missing)
            } else {
                Ok(None)
            };
        };
        let Some((_, key)) = self.keys.iter().find(|(id, _)| *id == block.key_id) else {
            return reject(SignatureError::UnknownKey {
                key_id: block.key_id,
            });
        };
        let signature = Signature::from_bytes(&block.signature);
        if key
            .verify_strict(&sha256(block.signed), &signature)
            .is_err()
        {
            return reject(SignatureError::Invalid);
        }
        match self.last_sequence(parsed.agent_id) {
            Some(last) if block.sequence <= last => reject(SignatureError::Stale {
                last,
                found: block.sequence,
            }),
            // A new agent needs a free slot, or its sequence number could not be remembered.
            None if self.last.is_full() => Err(full(A)),
            _ => Ok(Some(block.sequence)),
        }
    }

    fn record(&mut self, agent: AgentId, sequence: Option<u64>) {
        let Some(sequence) = sequence else { return };
        match self.last.iter_mut().find(|(a, _)| *a == agent) {
            Some(entry) => entry.1 = sequence,
            // Cannot fail: `check` made sure there is room.
            None => {
                let _ = self.last.push((agent, sequence));
            }
        }
    }
}

fn full(capacity: usize) -> CellError {
    CellError::CapacityExceeded {
        what: Capacity::TrustList,
        capacity,
        requested: capacity + 1,
    }
}
