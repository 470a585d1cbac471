//! Signed snapshots (feature `signatures`): Ed25519 over a context-separated digest that binds
//! the snapshot to its source, its target node and the agent's epoch. The threat model is in
//! `docs/security.md`.

use super::journal::EpochJournal;
use super::snapshot::into_view;
use super::wire::{self, frame::signing_message, Parsed, Signed, SnapshotSigner};
use super::{DecodeOptions, MigrationSnapshot};
use crate::{sha256, AgentId, Capacity, CellError, NodeId, SignatureError};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::MAX_EPOCH;

/// Clock skew a trust list allows by default between a snapshot's timestamp and its own clock.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;

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

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// The per-peer quota of a trust list whose quota was not set: half its journal's capacity
/// (at least one entry), so that no single peer can fill the journal and lock every other peer
/// (and this node) out of new agents. [`TrustList::set_peer_quota`] sets another.
pub fn default_peer_quota(journal_capacity: usize) -> usize {
    (journal_capacity / 2).max(1)
}

/// New agents a [`TrustList`] refused for want of room, by cause; read it with
/// [`TrustList::refusals`]. Counted since the list was made (not persisted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EpochRefusals {
    /// Snapshots of a new agent refused because the sending peer's entries reached its quota
    /// ([`Capacity::PeerEpochQuota`]).
    pub peer_quota: u64,
    /// New agents refused because the journal was full ([`Capacity::EpochJournal`]):
    /// snapshots from peers, and this node's own [`TrustList::record_sent`].
    pub journal_full: u64,
}

/// A trusted key and the one node it speaks for.
#[derive(Debug, Clone)]
struct Trusted {
    id: [u8; 8],
    key: VerifyingKey,
    node: NodeId,
}

/// What a receiver trusts: its own node id, the keys allowed to send it agents (each bound to
/// the node it signs for, at most `K`), and an [`EpochJournal`] of the highest epoch per agent
/// it has accepted or sent.
///
/// Every snapshot must be signed, in wire format version 2 or 3. Decoding through a trust list
/// checks, in order, after the frame and trailer and before the DNA is resolved or memory
/// decoded (each refusal its own [`SignatureError`]):
///
/// 1. a signature is present (`Missing`) and binds a route, i.e. version 2 or 3 (`Unbound`);
/// 2. its key is trusted (`UnknownKey`), its `s` is below the group order (`Malleable`), and it
///    verifies with `verify_strict` over [`SIGNATURE_CONTEXT`](super::SIGNATURE_CONTEXT) and
///    the digest (`Invalid`);
/// 3. the snapshot's `source_node` is the node the key is trusted for (`WrongSource`);
/// 4. it is addressed to this node (`WrongTarget`);
/// 5. its timestamp is at most the allowed skew ahead of `now` (`FromTheFuture`) and, if a
///    maximum age is set, not older (`TooOld`);
/// 6. its epoch is at most [`MAX_EPOCH`] (`EpochOutOfRange`) and above every epoch the journal
///    holds for the agent, received or sent (`Stale`), and the journal has room for it.
///
/// The epoch is recorded only once the whole snapshot decoded. Unsigned snapshots have no place
/// here: a receiver that takes them decodes without a trust list, knowing that nothing then
/// proves where they came from (see `docs/security.md` for why lenient lists were removed).
#[derive(Debug)]
pub struct TrustList<const K: usize, J: EpochJournal> {
    node: NodeId,
    keys: heapless::Vec<Trusted, K>,
    journal: J,
    max_skew_secs: u64,
    max_age_secs: Option<u64>,
    peer_quota: Option<usize>,
    refusals: EpochRefusals,
}

impl<const K: usize, J: EpochJournal> TrustList<K, J> {
    /// An empty list for the node `node`, remembering epochs in `journal`.
    pub fn new(node: NodeId, journal: J) -> Self {
        TrustList {
            node,
            keys: heapless::Vec::new(),
            journal,
            max_skew_secs: DEFAULT_MAX_SKEW_SECS,
            max_age_secs: None,
            peer_quota: None,
            refusals: EpochRefusals::default(),
        }
    }

    /// Lets each peer's snapshots create at most `max` entries in the journal (default:
    /// [`default_peer_quota`] of the journal's capacity). Entries are never removed, so a
    /// peer's count only grows; a peer at its quota can still move agents it already has
    /// entries for, but new agents from it are refused with
    /// [`CellError::CapacityExceeded`] ([`Capacity::PeerEpochQuota`]) and counted in
    /// [`refusals`](Self::refusals). For a fair share, set the journal's capacity divided by
    /// the number of peers (and leave room for this node's own [`record_sent`](Self::record_sent)).
    pub fn set_peer_quota(&mut self, max: usize) {
        self.peer_quota = Some(max);
    }

    /// The quota each peer has: the one set, or [`default_peer_quota`] of the journal's
    /// capacity.
    pub fn peer_quota(&self) -> usize {
        self.peer_quota
            .unwrap_or_else(|| default_peer_quota(self.journal.capacity()))
    }

    /// New agents refused so far because a peer's quota or the journal was full.
    pub fn refusals(&self) -> EpochRefusals {
        self.refusals
    }

    /// The node this list receives for.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The nodes whose keys are trusted, in the order they were added.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.keys.iter().map(|t| t.node)
    }

    /// Trusts `key` to send agents from `node`. Refused: a weak (small-order) key
    /// ([`SignatureError::WeakKey`]), a key whose id another trusted key already has or that is
    /// already trusted for another node ([`SignatureError::KeyIdCollision`]), or a full list.
    /// Trusting the same key for the same node again changes nothing.
    pub fn trust(&mut self, node: NodeId, key: VerifyingKey) -> Result<(), CellError> {
        if key.is_weak() {
            return Err(CellError::SignatureRejected(SignatureError::WeakKey));
        }
        let id = key_id(&key);
        if let Some(t) = self.keys.iter().find(|t| t.id == id) {
            if t.key == key && t.node == node {
                return Ok(());
            }
            return Err(CellError::SignatureRejected(
                SignatureError::KeyIdCollision { key_id: id },
            ));
        }
        self.keys
            .push(Trusted { id, key, node })
            .map_err(|_| CellError::CapacityExceeded {
                what: Capacity::TrustList,
                capacity: K,
                requested: K + 1,
            })
    }

    /// Allows timestamps up to `secs` ahead of the receiver's clock (default
    /// [`DEFAULT_MAX_SKEW_SECS`]).
    pub fn set_max_skew(&mut self, secs: u64) {
        self.max_skew_secs = secs;
    }

    /// Refuses snapshots older than `secs` (`None`, the default: no maximum age).
    pub fn set_max_age(&mut self, secs: Option<u64>) {
        self.max_age_secs = secs;
    }

    /// The highest epoch accepted or sent for `agent`.
    pub fn last_epoch(&self, agent: AgentId) -> Option<u64> {
        self.journal.last_epoch(agent)
    }

    /// Records that this node sent `agent` away at `epoch`: from now on it refuses every
    /// snapshot of the agent at that epoch or below, so a replay of an earlier hand-off to this
    /// node cannot bring back a copy of an agent that has moved on. An epoch at or below the
    /// recorded one changes nothing.
    ///
    /// This node's own decision: a new entry is charged to no peer's quota, only to the
    /// journal's capacity (a full journal refuses it, counted in
    /// [`EpochRefusals::journal_full`]).
    pub fn record_sent(&mut self, agent: AgentId, epoch: u64) -> Result<(), CellError> {
        match self.journal.last_epoch(agent) {
            Some(last) if epoch <= last => return Ok(()),
            Some(_) => {}
            None => {
                if let Err(e) = self.journal.check_room(agent) {
                    self.refusals.journal_full += 1;
                    return Err(e);
                }
            }
        }
        self.journal.record_epoch(agent, epoch, None)
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// The checks above without decoding: for a receiver that decodes the container itself
    /// (straight into an instance, `runtime::Runtime::stage`). Nothing is recorded yet: give the
    /// [`Admitted`] to [`record`](Self::record) once the container decoded, so that a container
    /// that fails to decode does not use up its epoch.
    pub fn admit(
        &mut self,
        bytes: &[u8],
        limits: &super::DecodeLimits,
        now_unix_secs: u64,
    ) -> Result<Admitted, CellError> {
        let parsed = wire::parse(bytes, limits)?;
        let (epoch, peer) = self.check(&parsed, now_unix_secs)?;
        Ok(Admitted {
            agent: parsed.agent_id,
            epoch,
            peer,
        })
    }

    /// Records the epoch of a container [`admit`](Self::admit) checked and the caller
    /// decoded: from now on it and every earlier epoch of the agent are refused. Refused
    /// ([`SignatureError::Stale`]) if the journal has reached that epoch since (another
    /// container of the agent was recorded in between): an epoch is never lowered.
    pub fn record(&mut self, admitted: Admitted) -> Result<(), CellError> {
        if let Some(last) = self.journal.last_epoch(admitted.agent) {
            if admitted.epoch <= last {
                return Err(CellError::SignatureRejected(SignatureError::Stale {
                    last,
                    found: admitted.epoch,
                }));
            }
        }
        self.journal
            .record_epoch(admitted.agent, admitted.epoch, Some(admitted.peer))
    }

    /// [`MigrationSnapshot::view_with`] behind the checks above, at time `now_unix_secs`.
    pub fn view<'a>(
        &mut self,
        bytes: &'a [u8],
        opts: &DecodeOptions<'a>,
        now_unix_secs: u64,
    ) -> Result<MigrationSnapshot<&'a [u8]>, CellError> {
        let parsed = wire::parse(bytes, &opts.limits)?;
        let (epoch, peer) = self.check(&parsed, now_unix_secs)?;
        let snapshot = into_view(parsed, opts.dna_store)?;
        self.journal
            .record_epoch(snapshot.agent_id(), epoch, Some(peer))?;
        Ok(snapshot)
    }

    /// [`MigrationSnapshot::deserialize_with`] behind the checks above, at time
    /// `now_unix_secs`.
    #[cfg(feature = "alloc")]
    pub fn deserialize(
        &mut self,
        bytes: &[u8],
        opts: &DecodeOptions<'_>,
        now_unix_secs: u64,
    ) -> Result<MigrationSnapshot<alloc::vec::Vec<u8>>, CellError> {
        let parsed = wire::parse(bytes, &opts.limits)?;
        let (epoch, peer) = self.check(&parsed, now_unix_secs)?;
        let (snapshot, _) = super::snapshot::into_owned(parsed, opts)?;
        self.journal
            .record_epoch(snapshot.agent_id(), epoch, Some(peer))?;
        Ok(snapshot)
    }

    /// The checks; the epoch to record and the peer a new entry is charged to.
    fn check(&mut self, parsed: &Parsed<'_>, now: u64) -> Result<(u64, NodeId), CellError> {
        let reject = |e| Err(CellError::SignatureRejected(e));
        let Some(block) = parsed.signature else {
            return reject(SignatureError::Missing);
        };
        let (Signed::Bound { digest, context }, Some(route)) = (block.signed, parsed.route) else {
            return reject(SignatureError::Unbound);
        };
        let Some(trusted) = self.keys.iter().find(|t| t.id == block.key_id) else {
            return reject(SignatureError::UnknownKey {
                key_id: block.key_id,
            });
        };
        if !s_is_canonical(&block.signature) {
            return reject(SignatureError::Malleable);
        }
        let signature = Signature::from_bytes(&block.signature);
        if trusted
            .key
            .verify_strict(&signing_message(context, &digest), &signature)
            .is_err()
        {
            return reject(SignatureError::Invalid);
        }
        if parsed.source_node != Some(trusted.node) {
            return reject(SignatureError::WrongSource {
                claimed: parsed.source_node,
            });
        }
        if route.target != self.node {
            return reject(SignatureError::WrongTarget {
                target: route.target,
            });
        }
        if parsed.timestamp > now.saturating_add(self.max_skew_secs) {
            return reject(SignatureError::FromTheFuture {
                timestamp: parsed.timestamp,
                now,
            });
        }
        if let Some(max) = self.max_age_secs {
            let age = now.saturating_sub(parsed.timestamp);
            if age > max {
                return reject(SignatureError::TooOld { age, max });
            }
        }
        if route.epoch > MAX_EPOCH {
            return reject(SignatureError::EpochOutOfRange { found: route.epoch });
        }
        let peer = trusted.node;
        match self.journal.last_epoch(parsed.agent_id) {
            Some(last) if route.epoch <= last => reject(SignatureError::Stale {
                last,
                found: route.epoch,
            }),
            Some(_) => Ok((route.epoch, peer)),
            // Only a snapshot that passed every check above can take a slot, so an attacker
            // without a trusted key cannot fill the journal; and a trusted peer can fill only
            // its quota of it, since entries are never freed.
            None => {
                let quota = self.peer_quota();
                let charged = self.journal.created_by(peer);
                if charged >= quota {
                    self.refusals.peer_quota += 1;
                    return Err(CellError::CapacityExceeded {
                        what: Capacity::PeerEpochQuota,
                        capacity: quota,
                        requested: charged.saturating_add(1),
                    });
                }
                if let Err(e) = self.journal.check_room(parsed.agent_id) {
                    self.refusals.journal_full += 1;
                    return Err(e);
                }
                Ok((route.epoch, peer))
            }
        }
    }
}

/// The group order L of Ed25519, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Whether the signature's `s` (its last 32 bytes, little-endian) is below L, checked here
/// whatever features ed25519-dalek was built with (`legacy_compatibility` accepts s >= L).
fn s_is_canonical(signature: &[u8; 64]) -> bool {
    let s = &signature[32..];
    for i in (0..32).rev() {
        if s[i] != GROUP_ORDER[i] {
            return s[i] < GROUP_ORDER[i];
        }
    }
    false // s == L
}

/// Checks a version-1 signature block (bare SHA-256 digest, no context), for tools that read
/// the version-1 vectors; trust lists refuse version 1.
#[doc(hidden)]
pub fn verify_v1(bytes: &[u8], key: &VerifyingKey) -> Result<u64, CellError> {
    let parsed = wire::parse(bytes, &wire::DecodeLimits::UNLIMITED)?;
    let Some(block) = parsed.signature else {
        return Err(CellError::SignatureRejected(SignatureError::Missing));
    };
    let Signed::V1 { prefix, sequence } = block.signed else {
        return Err(CellError::SignatureRejected(SignatureError::Unbound));
    };
    if !s_is_canonical(&block.signature) {
        return Err(CellError::SignatureRejected(SignatureError::Malleable));
    }
    key.verify_strict(&sha256(prefix), &Signature::from_bytes(&block.signature))
        .map_err(|_| CellError::SignatureRejected(SignatureError::Invalid))?;
    Ok(sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_order_bound() {
        let mut sig = [0u8; 64];
        sig[32..].copy_from_slice(&GROUP_ORDER);
        assert!(!s_is_canonical(&sig), "s = L");
        sig[32] -= 1;
        assert!(s_is_canonical(&sig), "s = L - 1");
        sig[63] = 0xff;
        assert!(!s_is_canonical(&sig), "s > L");
        assert!(s_is_canonical(&[0u8; 64]), "s = 0");
    }
}

/// A container that passed a [`TrustList`]'s checks and is not recorded yet
/// ([`TrustList::admit`], then [`TrustList::record`]).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "record the epoch once the container decoded"]
pub struct Admitted {
    agent: AgentId,
    epoch: u64,
    peer: NodeId,
}

impl Admitted {
    /// The agent.
    pub fn agent(&self) -> AgentId {
        self.agent
    }
    /// Its signed epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// The trusted node that signed it.
    pub fn peer(&self) -> NodeId {
        self.peer
    }
}
