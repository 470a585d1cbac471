//! An agent's messaging state — its mailbox, its outbox and the sequence numbers on both sides —
//! and its wire form, the inbox section of a version-3 container (`docs/wire-format.md`,
//! "Inbox section"). It travels with the agent under the same signature as its memory, so
//! nobody on the way can add, drop or reorder an agent's pending messages or rewind its dedup
//! state.
//!
//! Deduplication is keyed by the **peer node** that delivered a message and the sender agent it
//! names, so a peer that names someone else's agent gets its own sequence and cannot make the
//! real sender's messages look like duplicates. A sender agent first heard from a new node (it
//! moved there) continues from the highest sequence delivered for it from any node: what was
//! delivered before its move stays delivered. `docs/security.md` states what a pinned peer can
//! still do with this.

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
    /// (peer node, sender agent) pairs with dedup state; a new pair beyond is answered `Full`.
    pub senders: usize,
    /// The same, for the pairs of one peer node, so that one peer naming many agents cannot
    /// take every slot.
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
    next_seq: BTreeMap<AgentId, u64>,
    last_in: BTreeMap<(NodeId, AgentId), u64>,
    mailbox: VecDeque<(AgentId, Vec<u8>)>,
    outbox: VecDeque<(AgentId, u64, Vec<u8>)>,
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Inbox::default()
    }

    /// Queues `payload` for `to`, numbered one above the last message to it. `false` (nothing
    /// queued) when the outbox is full or the payload is longer than
    /// [`MAX_INBOX_MESSAGE_LEN`].
    pub fn send(&mut self, to: AgentId, payload: &[u8], limits: &InboxLimits) -> bool {
        if self.outbox.len() >= limits.outbox || payload.len() > MAX_INBOX_MESSAGE_LEN {
            return false;
        }
        let s = self.next_seq.entry(to).or_insert(0);
        *s += 1;
        let seq = *s;
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

    /// Offers message `seq` from `sender`, delivered by `peer`, to the mailbox (the rule of
    /// [`AgentHost::deliver`](super::AgentHost::deliver)): accepted only if it is the next one
    /// of that (peer, sender) pair. A pair first heard continues from the highest sequence
    /// delivered for `sender` from any node (it moved there). A new pair beyond the limits is
    /// answered `Full`, like a full mailbox.
    pub fn offer(
        &mut self,
        peer: NodeId,
        sender: AgentId,
        seq: u64,
        payload: &[u8],
        limits: &InboxLimits,
    ) -> Delivery {
        let key = (peer, sender);
        let last = match self.last_in.get(&key) {
            Some(l) => *l,
            None => {
                let of_peer = self.last_in.keys().filter(|k| k.0 == peer).count();
                if self.last_in.len() >= limits.senders || of_peer >= limits.senders_per_peer {
                    return Delivery::Full;
                }
                self.last_in
                    .iter()
                    .filter(|(k, _)| k.1 == sender)
                    .map(|(_, s)| *s)
                    .max()
                    .unwrap_or(0)
            }
        };
        if seq <= last {
            Delivery::Duplicate
        } else if seq > last + 1 {
            Delivery::OutOfOrder
        } else if self.mailbox.len() >= limits.mailbox || payload.len() > MAX_INBOX_MESSAGE_LEN {
            Delivery::Full
        } else {
            self.last_in.insert(key, seq);
            self.mailbox.push_back((sender, payload.to_vec()));
            Delivery::Accepted
        }
    }

    /// Calls `f(to, seq, payload)` for each unacknowledged message, oldest first.
    pub fn outgoing(&self, f: &mut dyn FnMut(AgentId, u64, &[u8])) {
        for (to, seq, m) in &self.outbox {
            f(*to, *seq, m);
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
        put_varint(out, self.next_seq.len());
        for (a, s) in &self.next_seq {
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(&s.to_le_bytes());
        }
        put_varint(out, self.last_in.len());
        for ((n, a), s) in &self.last_in {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(&s.to_le_bytes());
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
        let n = count(&mut r, 40)?;
        let mut prev: Option<(NodeId, AgentId)> = None;
        for _ in 0..n {
            let k = (node(&mut r)?, agent(&mut r)?);
            let s = seq(&mut r)?;
            if prev.is_some_and(|p| k <= p) {
                return Err(DecodeError::Malformed);
            }
            prev = Some(k);
            inbox.last_in.insert(k, s);
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

    const A: AgentId = AgentId::from_bytes([0xa; 16]);
    const B: AgentId = AgentId::from_bytes([0xb; 16]);
    const X: NodeId = NodeId::from_bytes([1; 16]);
    const Y: NodeId = NodeId::from_bytes([2; 16]);
    const M: NodeId = NodeId::from_bytes([9; 16]);

    #[test]
    fn round_trip_and_one_encoding() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        assert!(i.send(A, b"one", &l));
        assert!(i.send(A, b"two", &l));
        assert!(i.send(B, b"", &l));
        assert_eq!(i.offer(X, B, 1, b"hi", &l), Delivery::Accepted);
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
    fn a_peer_naming_another_agent_cannot_shadow_it() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        assert_eq!(i.offer(X, B, 1, b"real 1", &l), Delivery::Accepted);
        // M names B with the next number: its own sequence, not B's.
        assert_eq!(i.offer(M, B, 2, b"fake", &l), Delivery::Accepted);
        // B's real second message is not taken for a duplicate.
        assert_eq!(i.offer(X, B, 2, b"real 2", &l), Delivery::Accepted);
        assert_eq!(i.offer(X, B, 2, b"real 2", &l), Delivery::Duplicate);
    }

    #[test]
    fn a_sender_that_moved_continues_its_sequence() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        assert_eq!(i.offer(X, B, 1, b"1", &l), Delivery::Accepted);
        assert_eq!(i.offer(X, B, 2, b"2", &l), Delivery::Accepted);
        // B moved to Y; its unacknowledged 2 is sent again from there: already delivered.
        assert_eq!(i.offer(Y, B, 2, b"2", &l), Delivery::Duplicate);
        assert_eq!(i.offer(Y, B, 3, b"3", &l), Delivery::Accepted);
        assert_eq!(i.offer(Y, B, 5, b"5", &l), Delivery::OutOfOrder);
    }

    #[test]
    fn spoofed_senders_are_bounded_per_peer() {
        let l = InboxLimits::default();
        let mut i = Inbox::new();
        for n in 0..l.senders_per_peer {
            let spoofed = AgentId::from_bytes([n as u8 + 0x20; 16]);
            assert_eq!(i.offer(M, spoofed, 1, b"", &l), Delivery::Accepted);
            i.pop();
        }
        let one_more = AgentId::from_bytes([0xee; 16]);
        assert_eq!(i.offer(M, one_more, 1, b"", &l), Delivery::Full);
        // Another peer still gets through.
        assert_eq!(i.offer(X, B, 1, b"", &l), Delivery::Accepted);
    }

    #[test]
    fn hostile_sections_are_refused_without_allocating_their_claims() {
        // A count claiming 2^62 entries.
        let mut b = Vec::new();
        put_varint(&mut b, 1 << 62);
        assert_eq!(Inbox::decode(&b), Err(DecodeError::UnexpectedEnd));
        // Keys out of order.
        let mut b = Vec::new();
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
