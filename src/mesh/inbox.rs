//! An agent's messaging state — its mailbox, its outbox and the sequence numbers on both sides —
//! and its wire form, the inbox section of a version-3 container (`docs/wire-format.md`,
//! "Inbox section"). It travels with the agent under the same signature as its memory, so
//! nobody on the way can add, drop or reorder an agent's pending messages or rewind its dedup
//! state.
//!
//! **Streams.** A sender numbers its messages per addressee in a *stream* named by a 16-byte
//! token derived from a secret of the sender's own ([`Inbox::with_secret`]), which travels in its
//! state: only the sender's hosts, which hold that state, and the addressee's, which receive
//! the messages, ever see it. The addressee deduplicates per (sender, stream). So a peer that
//! names someone else's agent gets a stream of its own and cannot make the real sender's
//! messages look like duplicates, while a sender that moves to another node keeps its stream
//! and its numbers: what was delivered before the move stays delivered, exactly once.
//! `docs/security.md` states what a pinned peer can still do (inject messages under another
//! agent's name, in a stream of its own).

use super::frame::STREAM_LEN;
use super::Delivery;
use crate::migration::wire::chunk::Reader;
use crate::{AgentId, DecodeError, NodeId};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

/// The longest message an inbox holds, in bytes (the section format's bound; the mesh frame's
/// own limit is [`frame::MAX_MESSAGE_LEN`](super::frame::MAX_MESSAGE_LEN)).
pub const MAX_INBOX_MESSAGE_LEN: usize = 64 << 10;

/// The capacities of an inbox: what a host allows one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboxLimits {
    /// Messages waiting in the mailbox; a delivery beyond is answered `Full` (back-pressure).
    pub mailbox: usize,
    /// Messages sent and not yet acknowledged; `send` refuses beyond.
    pub outbox: usize,
    /// (sender, stream) pairs with dedup state; a new pair beyond is answered `Full`.
    pub senders: usize,
    /// The same, for the pairs first delivered by one peer node, so that one peer naming many
    /// agents or streams cannot take every slot.
    pub senders_per_peer: usize,
}

impl Default for InboxLimits {
    /// 8 messages each way, 64 senders, 16 per peer node.
    fn default() -> Self {
        InboxLimits {
            mailbox: 8,
            outbox: 8,
            senders: 64,
            senders_per_peer: 16,
        }
    }
}

/// An agent's mailbox, outbox and sequence numbers. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbox {
    /// The agent's own secret, from which its streams' tokens are derived.
    secret: [u8; 16],
    next_seq: BTreeMap<AgentId, u64>,
    /// Per (sender, stream): the last sequence accepted, and the peer that first delivered it
    /// (what the per-peer limit counts).
    last_in: BTreeMap<(AgentId, [u8; STREAM_LEN]), (u64, NodeId)>,
    mailbox: VecDeque<(AgentId, Vec<u8>)>,
    outbox: VecDeque<(AgentId, u64, Vec<u8>)>,
}

impl Inbox {
    /// An empty inbox whose streams derive from a secret of zeros: anyone who knows the sender
    /// and addressee ids can compute them. For tests and trusted links; give every agent a
    /// random secret with [`Inbox::with_secret`] where peers may lie.
    pub fn new() -> Self {
        Inbox::default()
    }

    /// An empty inbox for an agent with this secret (16 random bytes, from the platform's RNG
    /// when the agent is created; it moves with the agent).
    pub fn with_secret(secret: [u8; 16]) -> Self {
        Inbox {
            secret,
            ..Inbox::default()
        }
    }

    /// The token of this agent's stream to `to`: the first 16 bytes of
    /// `SHA-256("mielin-cells/stream/v1" || secret || to)`.
    pub fn stream(&self, to: AgentId) -> [u8; STREAM_LEN] {
        stream_token(&self.secret, to)
    }

    /// Queues `payload` for `to`, numbered one above the last message to it. `false` (nothing
    /// queued) when the outbox is full or the payload is longer than
    /// [`MAX_INBOX_MESSAGE_LEN`].
    pub fn send(&mut self, to: AgentId, payload: &[u8], limits: &InboxLimits) -> bool {
        if self.outbox.len() >= limits.outbox || payload.len() > MAX_INBOX_MESSAGE_LEN {
            return false;
        }
        let s = self.next_seq.entry(to).or_insert(0);
        // A stream that used every number takes no more (an inbox decoded from a peer's
        // bytes may say so); nothing wraps around to a number already used.
        let Some(seq) = s.checked_add(1) else {
            return false;
        };
        *s = seq;
        self.outbox.push_back((to, seq, payload.to_vec()));
        true
    }

    /// The oldest message in the mailbox: its sender and bytes.
    pub fn peek(&self) -> Option<(AgentId, &[u8])> {
        self.mailbox.front().map(|(a, m)| (*a, m.as_slice()))
    }

    /// Removes the oldest message from the mailbox.
    pub fn pop(&mut self) -> Option<(AgentId, Vec<u8>)> {
        self.mailbox.pop_front()
    }

    /// Messages waiting in the mailbox.
    pub fn waiting(&self) -> usize {
        self.mailbox.len()
    }

    /// Offers message `seq` of `sender`'s `stream`, delivered by `peer`, to the mailbox (the
    /// rule of [`AgentHost::deliver`](super::AgentHost::deliver)): accepted only if it is the
    /// next one of that stream. A stream first heard starts at 1. A new stream beyond the
    /// limits (in all, or first delivered by `peer`) is answered `Full`, like a full mailbox.
    pub fn offer(
        &mut self,
        peer: NodeId,
        sender: AgentId,
        stream: [u8; STREAM_LEN],
        seq: u64,
        payload: &[u8],
        limits: &InboxLimits,
    ) -> Delivery {
        let key = (sender, stream);
        let (last, first_peer) = match self.last_in.get(&key) {
            Some(l) => *l,
            None => {
                let of_peer = self.last_in.values().filter(|v| v.1 == peer).count();
                if self.last_in.len() >= limits.senders || of_peer >= limits.senders_per_peer {
                    return Delivery::Full;
                }
                (0, peer)
            }
        };
        if seq <= last {
            Delivery::Duplicate
        } else if last.checked_add(1) != Some(seq) {
            Delivery::OutOfOrder
        } else if self.mailbox.len() >= limits.mailbox || payload.len() > MAX_INBOX_MESSAGE_LEN {
            Delivery::Full
        } else {
            self.last_in.insert(key, (seq, first_peer));
            self.mailbox.push_back((sender, payload.to_vec()));
            Delivery::Accepted
        }
    }

    /// Takes back the message [`offer`](Self::offer) just accepted (`seq` of `sender`'s
    /// `stream`, the newest in the mailbox), as if it had been answered `Full`: for a host that
    /// accepted it and then could not keep it. False, and nothing changed, if it is not the
    /// newest accepted message.
    pub fn withdraw(&mut self, sender: AgentId, stream: [u8; STREAM_LEN], seq: u64) -> bool {
        let key = (sender, stream);
        let newest = self.mailbox.back().is_some_and(|m| m.0 == sender);
        match self.last_in.get(&key).copied() {
            Some((last, peer)) if last == seq && newest => {
                self.mailbox.pop_back();
                match seq - 1 {
                    // The stream's first message: the stream was not known before it.
                    0 => self.last_in.remove(&key),
                    before => self.last_in.insert(key, (before, peer)),
                };
                true
            }
            _ => false,
        }
    }

    /// Puts a message from `from`, a sender outside the mesh (an operator's tool on this node),
    /// straight into the mailbox: no stream, no sequence, nothing to deduplicate (it does not
    /// cross the network). `Full` when the mailbox is, or the payload is longer than
    /// [`MAX_INBOX_MESSAGE_LEN`].
    pub fn post(&mut self, from: AgentId, payload: &[u8], limits: &InboxLimits) -> Delivery {
        if self.mailbox.len() >= limits.mailbox || payload.len() > MAX_INBOX_MESSAGE_LEN {
            return Delivery::Full;
        }
        self.mailbox.push_back((from, payload.to_vec()));
        Delivery::Accepted
    }

    /// Calls `f` with each unacknowledged message, oldest first.
    pub fn outgoing(&self, f: &mut dyn FnMut(super::Outgoing<'_>)) {
        for (to, seq, m) in &self.outbox {
            f(super::Outgoing {
                to: *to,
                stream: self.stream(*to),
                seq: *seq,
                payload: m,
            });
        }
    }

    /// Messages sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.outbox.len()
    }

    /// Message `seq` to `to` was accepted: forget it.
    pub fn acked(&mut self, to: AgentId, seq: u64) {
        self.outbox.retain(|o| !(o.0 == to && o.1 == seq));
    }

    /// Appends the inbox section's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.secret);
        put_varint(out, self.next_seq.len());
        for (a, s) in &self.next_seq {
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(&s.to_le_bytes());
        }
        put_varint(out, self.last_in.len());
        for ((a, stream), (s, peer)) in &self.last_in {
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(stream);
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(peer.as_bytes());
        }
        put_varint(out, self.mailbox.len());
        for (a, m) in &self.mailbox {
            out.extend_from_slice(a.as_bytes());
            put_varint(out, m.len());
            out.extend_from_slice(m);
        }
        put_varint(out, self.outbox.len());
        for (a, s, m) in &self.outbox {
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(&s.to_le_bytes());
            put_varint(out, m.len());
            out.extend_from_slice(m);
        }
    }

    /// The section's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes an inbox section. Bounded by the input: every count is compared with the bytes
    /// left (at the smallest size of an entry) before anything is stored, every length with
    /// the bytes left and [`MAX_INBOX_MESSAGE_LEN`]. One encoding: keys strictly increasing,
    /// varints canonical, an outbox numbered upwards per addressee and below its next number,
    /// nothing after the last entry. Errors are `DecodeError`s, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Inbox, DecodeError> {
        let mut r = Reader(bytes);
        let mut inbox = Inbox::default();
        inbox.secret.copy_from_slice(r.take(16)?);
        let n = count(&mut r, 24)?;
        let mut prev: Option<AgentId> = None;
        for _ in 0..n {
            let a = agent(&mut r)?;
            let s = seq(&mut r)?;
            if prev.is_some_and(|p| a <= p) {
                return Err(DecodeError::Malformed);
            }
            prev = Some(a);
            inbox.next_seq.insert(a, s);
        }
        let n = count(&mut r, 56)?;
        let mut prev: Option<(AgentId, [u8; STREAM_LEN])> = None;
        for _ in 0..n {
            let a = agent(&mut r)?;
            let mut stream = [0u8; STREAM_LEN];
            stream.copy_from_slice(r.take(STREAM_LEN)?);
            let k = (a, stream);
            let s = seq(&mut r)?;
            let peer = node(&mut r)?;
            if prev.is_some_and(|p| k <= p) {
                return Err(DecodeError::Malformed);
            }
            prev = Some(k);
            inbox.last_in.insert(k, (s, peer));
        }
        let n = count(&mut r, 17)?;
        for _ in 0..n {
            let a = agent(&mut r)?;
            let m = message(&mut r)?;
            inbox.mailbox.push_back((a, m));
        }
        let n = count(&mut r, 25)?;
        let mut last_to: BTreeMap<AgentId, u64> = BTreeMap::new();
        for _ in 0..n {
            let a = agent(&mut r)?;
            let s = seq(&mut r)?;
            let m = message(&mut r)?;
            let below_next = inbox.next_seq.get(&a).is_some_and(|&next| s <= next);
            let increasing = last_to.get(&a).is_none_or(|&l| s > l);
            if !below_next || !increasing {
                return Err(DecodeError::Malformed);
            }
            last_to.insert(a, s);
            inbox.outbox.push_back((a, s, m));
        }
        if !r.0.is_empty() {
            return Err(DecodeError::TrailingBytes { count: r.0.len() });
        }
        Ok(inbox)
    }
}

fn stream_token(secret: &[u8; 16], to: AgentId) -> [u8; STREAM_LEN] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"mielin-cells/stream/v1");
    h.update(secret);
    h.update(to.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut t = [0u8; STREAM_LEN];
    t.copy_from_slice(&d[..STREAM_LEN]);
    t
}

fn put_varint(out: &mut Vec<u8>, v: usize) {
    let mut v = v as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A count of entries of at least `min` bytes each, checked against the bytes left.
fn count(r: &mut Reader<'_>, min: usize) -> Result<usize, DecodeError> {
    let n = r.varint()?;
    if n > r.0.len() / min {
        return Err(DecodeError::UnexpectedEnd);
    }
    Ok(n)
}

fn agent(r: &mut Reader<'_>) -> Result<AgentId, DecodeError> {
    let mut id = [0u8; 16];
    id.copy_from_slice(r.take(16)?);
    Ok(AgentId::from_bytes(id))
}

fn node(r: &mut Reader<'_>) -> Result<NodeId, DecodeError> {
    let mut id = [0u8; 16];
    id.copy_from_slice(r.take(16)?);
    Ok(NodeId::from_bytes(id))
}

fn seq(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let mut b = [0u8; 8];
    b.copy_from_slice(r.take(8)?);
    Ok(u64::from_le_bytes(b))
}

fn message(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = r.varint()?;
    if len > MAX_INBOX_MESSAGE_LEN {
        return Err(DecodeError::Malformed);
    }
    Ok(r.take(len)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const A: AgentId = AgentId::from_bytes([0xa; 16]);
    const B: AgentId = AgentId::from_bytes([0xb; 16]);
    const X: NodeId = NodeId::from_bytes([1; 16]);
    const Y: NodeId = NodeId::from_bytes([2; 16]);
    const M: NodeId = NodeId::from_bytes([9; 16]);

    /// B's stream to the inbox's owner, as B's host computes it.
    fn b_stream() -> [u8; STREAM_LEN] {
        Inbox::with_secret([0xbb; 16]).stream(A)
    }

    #[test]
    fn round_trip_and_one_encoding() {
        let l = InboxLimits::default();
        let mut i = Inbox::with_secret([3; 16]);
        assert!(i.send(A, b"one", &l));
        assert!(i.send(A, b"two", &l));
        assert!(i.send(B, b"", &l));
        assert_eq!(i.offer(X, B, b_stream(), 1, b"hi", &l), Delivery::Accepted);
        let bytes = i.to_bytes();
        assert_eq!(Inbox::decode(&bytes), Ok(i.clone()));
        for cut in 0..bytes.len() {
            assert!(Inbox::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Inbox::decode(&longer).is_err());
    }

    #[test]
    fn streams_depend_on_the_secret_and_the_addressee() {
        let i = Inbox::with_secret([1; 16]);
        assert_ne!(i.stream(A), i.stream(B));
        assert_ne!(i.stream(A), Inbox::with_secret([2; 16]).stream(A));
        let mut sent = Vec::new();
        let mut j = i.clone();
        j.send(A, b"x", &InboxLimits::default());
        j.outgoing(&mut |m| sent.push((m.to, m.stream, m.seq)));
        assert_eq!(sent, [(A, i.stream(A), 1)]);
    }

    #[test]
    fn a_peer_naming_another_agent_cannot_shadow_it() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        assert_eq!(
            i.offer(X, B, b_stream(), 1, b"real 1", &l),
            Delivery::Accepted
        );
        // M names B, with a stream of its own making (it does not know B's secret).
        assert_eq!(i.offer(M, B, [0; 16], 2, b"fake", &l), Delivery::OutOfOrder);
        assert_eq!(i.offer(M, B, [0; 16], 1, b"fake", &l), Delivery::Accepted);
        // B's real second message is not taken for a duplicate.
        assert_eq!(
            i.offer(X, B, b_stream(), 2, b"real 2", &l),
            Delivery::Accepted
        );
        assert_eq!(
            i.offer(X, B, b_stream(), 2, b"real 2", &l),
            Delivery::Duplicate
        );
    }

    #[test]
    fn a_sender_that_moved_continues_its_stream() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        assert_eq!(i.offer(X, B, b_stream(), 1, b"1", &l), Delivery::Accepted);
        assert_eq!(i.offer(X, B, b_stream(), 2, b"2", &l), Delivery::Accepted);
        // B moved to Y; its unacknowledged 2 is sent again from there: already delivered.
        assert_eq!(i.offer(Y, B, b_stream(), 2, b"2", &l), Delivery::Duplicate);
        assert_eq!(i.offer(Y, B, b_stream(), 3, b"3", &l), Delivery::Accepted);
        // A copy of 2 from X, delayed on the way, is still a duplicate.
        assert_eq!(i.offer(X, B, b_stream(), 2, b"2", &l), Delivery::Duplicate);
        assert_eq!(i.offer(Y, B, b_stream(), 5, b"5", &l), Delivery::OutOfOrder);
    }

    #[test]
    fn spoofed_streams_are_bounded_per_peer() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        for n in 0..l.senders_per_peer {
            assert_eq!(i.offer(M, B, [n as u8; 16], 1, b"", &l), Delivery::Accepted);
            i.pop();
        }
        assert_eq!(i.offer(M, B, [0xee; 16], 1, b"", &l), Delivery::Full);
        // Another peer still gets through.
        assert_eq!(i.offer(X, B, b_stream(), 1, b"", &l), Delivery::Accepted);
    }

    /// Found by the `inbox` fuzz target: an inbox whose numbers are at their end (which a
    /// peer's bytes may claim) took one more and overflowed.
    #[test]
    fn numbers_at_their_end_do_not_wrap() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        i.next_seq.insert(A, u64::MAX);
        assert!(!i.send(A, b"x", &l));
        i.last_in.insert((B, b_stream()), (u64::MAX, X));
        assert_eq!(
            i.offer(X, B, b_stream(), u64::MAX, b"", &l),
            Delivery::Duplicate
        );
        assert_eq!(Inbox::decode(&i.to_bytes()), Ok(i));
    }

    #[test]
    fn hostile_sections_are_refused_without_allocating_their_claims() {
        // A count claiming 2^62 entries.
        let mut b = vec![0u8; 16];
        put_varint(&mut b, 1 << 62);
        assert_eq!(Inbox::decode(&b), Err(DecodeError::UnexpectedEnd));
        // Keys out of order.
        let mut b = vec![0u8; 16];
        put_varint(&mut b, 2);
        for a in [B, A] {
            b.extend_from_slice(a.as_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        b.extend_from_slice(&[0, 0, 0]);
        assert_eq!(Inbox::decode(&b), Err(DecodeError::Malformed));
        // An outbox message numbered above its addressee's next number.
        let mut i = Inbox::new();
        i.send(A, b"x", &InboxLimits::default());
        let mut bytes = i.to_bytes();
        let at = bytes.len() - 1 - 1 - 8; // the outbox entry's sequence
        bytes[at] = 7;
        assert_eq!(Inbox::decode(&bytes), Err(DecodeError::Malformed));
    }
}
