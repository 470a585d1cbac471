//! Signed fleet records (feature `signatures`): what a node tells the fleet about itself, its
//! status and the agents it runs, in a form any node can check without trusting the carrier
//! (a pub/sub bus such as Zenoh relays them; docs/zenoh-probe.md). No allocation; every
//! decoder refuses before it trusts.
//!
//! A record is, in this order (all integers little-endian):
//!
//! | bytes | field |
//! |------:|-------|
//! | 2 | magic `MF` |
//! | 1 | version, 1 |
//! | 1 | kind: 1 status, 2 location |
//! | 32 | the signer's Ed25519 public key; the record speaks for the node whose id is the first 16 bytes of its SHA-256 (as `quic::PublicKey::node_id`), so no key can speak for another node |
//! | 8 | sequence number, raised by the node for every record of a kind (and agent) it publishes: freshness |
//! | 16 or 24 | the body: status or location (below) |
//! | 64 | Ed25519 signature (`verify_strict`) over `mielin-cells/fleet-record/v1` and every byte before it |
//!
//! Status body (16 bytes): architecture (u8, `Arch`), battery percent (u8, at most 100), load
//! percent (u8, at most 100), reserved (u8, 0), free memory in KiB (u32), agents running (u32),
//! capabilities (u16: bit 0 [`CAN_REWIND`], bit 1 [`DRAINING`], the others reserved and 0),
//! reserved (u16, 0).
//!
//! Location body (24 bytes): the agent (16) and the epoch at which this node runs it (u64, at
//! most [`MAX_EPOCH`]).
//!
//! What a record proves: that the holder of that key said it, at that sequence number. Whether
//! the key belongs to the fleet is the caller's question (a pinned key, or a fleet
//! certificate). A record is a **hint**: a location sends a hand-off's messages or a lookup to
//! a node, and the protocol's fences decide; no record can make a node run or drop an agent.
//! [`Freshness`] drops replays and reordering (a sequence number not above the last one seen
//! for that node, kind and agent); [`Locations`] resolves an agent to the node that claims the
//! highest epoch. Golden vectors in `tests/golden/fleet-*.bin`; fuzzed by
//! `fuzz/fuzz_targets/fleet_record.rs`.

use crate::{sha256, AgentId, Arch, NodeId, MAX_EPOCH};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// The first two bytes of every record.
pub const MAGIC: [u8; 2] = *b"MF";
/// The record format's version.
pub const VERSION: u8 = 1;
/// What the signature covers first: records are never valid as anything else.
pub const SIGNATURE_CONTEXT: &[u8] = b"mielin-cells/fleet-record/v1";
/// Capability bit: the node can resume an agent suspended in the middle of a call.
pub const CAN_REWIND: u16 = 1;
/// Status bit: the node drains (its operator wants it empty): it sends its agents away, and
/// placement sends it none.
pub const DRAINING: u16 = 2;
/// Every bit a status's capabilities may have; the others are reserved and refused.
pub const CAPABILITIES: u16 = CAN_REWIND | DRAINING;

const HEADER: usize = 2 + 1 + 1 + 32 + 8;
const STATUS_BODY: usize = 16;
const LOCATION_BODY: usize = 24;
/// A status record's length.
pub const STATUS_LEN: usize = HEADER + STATUS_BODY + 64;
/// A location record's length.
pub const LOCATION_LEN: usize = HEADER + LOCATION_BODY + 64;
/// The longest record: a buffer this long holds any.
pub const MAX_RECORD_LEN: usize = LOCATION_LEN;

const KIND_STATUS: u8 = 1;
const KIND_LOCATION: u8 = 2;

/// A node's status, as it publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// Its architecture.
    pub arch: Arch,
    /// Battery charge, 0 to 100 (mains: 100).
    pub battery_percent: u8,
    /// CPU load, 0 to 100.
    pub load_percent: u8,
    /// Free memory for agents, KiB.
    pub free_memory_kib: u32,
    /// Agents running there.
    pub agents: u32,
    /// What it can do beyond running agents between calls ([`CAN_REWIND`]), and whether it
    /// drains ([`DRAINING`]).
    pub capabilities: u16,
}

/// A node's claim that it runs `agent` at `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The agent.
    pub agent: AgentId,
    /// Its epoch there.
    pub epoch: u64,
}

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// The node's status.
    Status(Status),
    /// An agent it runs.
    Location(Location),
}

/// A record whose signature verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FleetRecord {
    /// The node it speaks for (derived from `key`).
    pub node: NodeId,
    /// The signer's public key.
    pub key: [u8; 32],
    /// Its sequence number.
    pub seq: u64,
    /// What it says.
    pub body: Body,
}

/// Why a record was refused. Every refusal is counted by its caller; none changes any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// Not a record of this format: the magic, the version or the kind.
    #[error("not a fleet record (magic, version or kind)")]
    NotARecord,
    /// Longer or shorter than its kind.
    #[error("a {kind} record is {expected} bytes, not {found}")]
    Length {
        /// The kind byte.
        kind: u8,
        /// Its length.
        expected: usize,
        /// What came.
        found: usize,
    },
    /// A field out of its range: an unknown architecture, a percentage over 100, a reserved
    /// bit or byte set, an epoch above `MAX_EPOCH`.
    #[error("a field is out of range: {0}")]
    OutOfRange(&'static str),
    /// The key is not an Ed25519 point, or the signature does not verify under it.
    #[error("the signature does not verify")]
    BadSignature,
    /// Well-formed, but the sequence number is not above the last one seen ([`Freshness`]).
    #[error("stale: sequence {seq} is not above {last}")]
    Stale {
        /// The record's.
        seq: u64,
        /// The last one seen.
        last: u64,
    },
}

/// The node id a key speaks for: the first 16 bytes of the SHA-256 of the key.
pub fn node_of(key: &[u8; 32]) -> NodeId {
    let d = sha256(key);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    NodeId::from_bytes(id)
}

/// Writes the record for `body` at `seq`, signed with the 32-byte secret `seed`, into `out`;
/// its length. `None` when `out` is too short, or a field is out of range (the record would be
/// refused).
pub fn sign(seed: &[u8; 32], seq: u64, body: &Body, out: &mut [u8]) -> Option<usize> {
    let key = SigningKey::from_bytes(seed);
    let (kind, len) = match body {
        Body::Status(_) => (KIND_STATUS, STATUS_LEN),
        Body::Location(_) => (KIND_LOCATION, LOCATION_LEN),
    };
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = kind;
    out[4..36].copy_from_slice(key.verifying_key().as_bytes());
    out[36..44].copy_from_slice(&seq.to_le_bytes());
    let b = &mut out[HEADER..len - 64];
    match body {
        Body::Status(s) => {
            b[0] = s.arch.tag();
            b[1] = s.battery_percent;
            b[2] = s.load_percent;
            b[4..8].copy_from_slice(&s.free_memory_kib.to_le_bytes());
            b[8..12].copy_from_slice(&s.agents.to_le_bytes());
            b[12..14].copy_from_slice(&s.capabilities.to_le_bytes());
        }
        Body::Location(l) => {
            b[..16].copy_from_slice(l.agent.as_bytes());
            b[16..24].copy_from_slice(&l.epoch.to_le_bytes());
        }
    }
    check_body(kind, &out[HEADER..len - 64]).ok()?;
    let sig = key.sign(&signed_message(&out[..len - 64]));
    out[len - 64..].copy_from_slice(&sig.to_bytes());
    Some(len)
}

/// The message the signature is over: the context, a zero byte, and the record's bytes before
/// the signature (at most 80 of them).
fn signed_message(unsigned: &[u8]) -> heapless::Vec<u8, 128> {
    let mut m = heapless::Vec::new();
    let _ = m.extend_from_slice(SIGNATURE_CONTEXT);
    let _ = m.push(0);
    let _ = m.extend_from_slice(unsigned);
    m
}

fn check_body(kind: u8, b: &[u8]) -> Result<Body, FleetError> {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    match kind {
        KIND_STATUS => {
            let arch = Arch::from_tag(b[0]).ok_or(FleetError::OutOfRange("architecture"))?;
            if b[1] > 100 {
                return Err(FleetError::OutOfRange("battery percent"));
            }
            if b[2] > 100 {
                return Err(FleetError::OutOfRange("load percent"));
            }
            let capabilities = u16_at(12);
            if b[3] != 0 || u16_at(14) != 0 || capabilities & !CAPABILITIES != 0 {
                return Err(FleetError::OutOfRange("reserved bits"));
            }
            Ok(Body::Status(Status {
                arch,
                battery_percent: b[1],
                load_percent: b[2],
                free_memory_kib: u32_at(4),
                agents: u32_at(8),
                capabilities,
            }))
        }
        _ => {
            let mut agent = [0u8; 16];
            agent.copy_from_slice(&b[..16]);
            let mut e = [0u8; 8];
            e.copy_from_slice(&b[16..24]);
            let epoch = u64::from_le_bytes(e);
            if epoch > MAX_EPOCH {
                return Err(FleetError::OutOfRange("epoch"));
            }
            Ok(Body::Location(Location {
                agent: AgentId::from_bytes(agent),
                epoch,
            }))
        }
    }
}

impl FleetRecord {
    /// Checks `bytes` (from anyone): the format, every field's range, then the signature under
    /// the key the record carries. Whether that key is a member of the fleet is the caller's
    /// to check ([`FleetRecord::key`], [`FleetRecord::node`]). Never panics, allocates nothing.
    pub fn verify(bytes: &[u8]) -> Result<FleetRecord, FleetError> {
        if bytes.len() < 4 || bytes[..2] != MAGIC || bytes[2] != VERSION {
            return Err(FleetError::NotARecord);
        }
        let kind = bytes[3];
        let expected = match kind {
            KIND_STATUS => STATUS_LEN,
            KIND_LOCATION => LOCATION_LEN,
            _ => return Err(FleetError::NotARecord),
        };
        if bytes.len() != expected {
            return Err(FleetError::Length {
                kind,
                expected,
                found: bytes.len(),
            });
        }
        let body = check_body(kind, &bytes[HEADER..expected - 64])?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[4..36]);
        let vk = VerifyingKey::from_bytes(&key).map_err(|_| FleetError::BadSignature)?;
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[expected - 64..]);
        vk.verify_strict(
            &signed_message(&bytes[..expected - 64]),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| FleetError::BadSignature)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[36..44]);
        Ok(FleetRecord {
            node: node_of(&key),
            key,
            seq: u64::from_le_bytes(seq),
            body,
        })
    }

    /// What [`Freshness`] keys the record's sequence by: its node, kind, and agent.
    fn stream(&self) -> (NodeId, Option<AgentId>) {
        match self.body {
            Body::Status(_) => (self.node, None),
            Body::Location(l) => (self.node, Some(l.agent)),
        }
    }
}

/// The last sequence number seen per node (status) and per node and agent (locations), for `N`
/// of them: a record at or below it is [`FleetError::Stale`] (a replay, or one overtaken on
/// the way). When the table is full, the entry seen longest ago makes room; a replay of a
/// record older than every entry kept is then taken as new, which costs a hint, not safety.
#[derive(Debug, Clone)]
pub struct Freshness<const N: usize> {
    last: heapless::LinearMap<(NodeId, Option<AgentId>), (u64, u64), N>,
    tick: u64,
}

impl<const N: usize> Default for Freshness<N> {
    fn default() -> Self {
        Freshness {
            last: heapless::LinearMap::new(),
            tick: 0,
        }
    }
}

impl<const N: usize> Freshness<N> {
    /// Takes `r` if its sequence number is above the last one seen for its node, kind and
    /// agent, and remembers it; refuses it as stale otherwise (nothing changes).
    pub fn admit(&mut self, r: &FleetRecord) -> Result<(), FleetError> {
        let k = r.stream();
        self.tick += 1;
        if let Some((last, seen)) = self.last.get_mut(&k) {
            if r.seq <= *last {
                return Err(FleetError::Stale {
                    seq: r.seq,
                    last: *last,
                });
            }
            *last = r.seq;
            *seen = self.tick;
            return Ok(());
        }
        if self.last.len() >= N {
            if let Some(old) = self.last.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| *k) {
                self.last.remove(&old);
            }
        }
        let _ = self.last.insert(k, (r.seq, self.tick));
        Ok(())
    }
}

/// Where agents run, by the highest epoch a verified, fresh location record claims, for `N`
/// agents (when full, the lowest epoch makes room). A hint for lookups
/// (`AgentHost::locate`): the node it names is asked, and the protocol's fences answer.
#[derive(Debug, Clone, Default)]
pub struct Locations<const N: usize> {
    at: heapless::LinearMap<AgentId, (u64, NodeId), N>,
}

impl<const N: usize> Locations<N> {
    /// Notes a location record (other bodies are ignored): it wins if its epoch is higher than
    /// the one known for the agent.
    pub fn note(&mut self, r: &FleetRecord) {
        let Body::Location(l) = r.body else {
            return;
        };
        if let Some(cur) = self.at.get_mut(&l.agent) {
            if l.epoch > cur.0 {
                *cur = (l.epoch, r.node);
            }
            return;
        }
        if self.at.len() >= N {
            match self
                .at
                .iter()
                .min_by_key(|(_, v)| v.0)
                .map(|(a, v)| (*a, v.0))
            {
                Some((a, e)) if e < l.epoch => {
                    self.at.remove(&a);
                }
                _ => return,
            }
        }
        let _ = self.at.insert(l.agent, (l.epoch, r.node));
    }

    /// Forgets every claim of `node` (it is no longer trusted): its agents resolve to nothing
    /// until another node claims them.
    pub fn forget_node(&mut self, node: NodeId) {
        self.at.retain(|_, v| v.1 != node);
    }

    /// The node that claims the highest epoch for `agent`, and that epoch.
    pub fn resolve(&self, agent: AgentId) -> Option<(NodeId, u64)> {
        self.at.get(&agent).map(|(e, n)| (*n, *e))
    }
}
