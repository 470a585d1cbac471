//! The frame codec: bytes below meaning.
//!
//! [`Frame`] is a checked view over bytes (magic, version, kind and lengths validated once by
//! [`Frame::new_checked`]; after that no accessor panics), and [`Repr`] is the typed frame parsed
//! from it, with [`Repr::buffer_len`] and [`Repr::emit`]. The codec knows nothing of nodes,
//! journals or hosts: it only turns bytes into frames and back.
//!
//! Layout (all integers little-endian), version 3:
//!
//! ```text
//! offset size field
//! 0      2    magic "MZ"
//! 2      1    version = 3
//! 3      1    kind (see FrameKind)
//! 4      16   agent id
//! 20     8    epoch (u64, at most MAX_EPOCH = 2^48 - 1)
//! 28     ..   body, by kind:
//!   Offer     32 DNA hash, 4 snapshot length (u32), 4 DNA length (u32)        = 40
//!   Refuse    1 reason                                                         = 1
//!   Transfer  1 flags (bit 0: DNA included, others 0), 4 length (u32), bytes   = 5 + n
//!   Moved     16 node id                                                       = 16
//!   Deliver   16 sender agent, 16 stream, 8 sequence (u64), 2 length (u16, at
//!             most MAX_MESSAGE_LEN), bytes; the header's agent is the
//!             addressee                                                       = 42 + n
//!   Delivered 16 sender agent, 8 sequence (u64), 1 status; the header's agent
//!             is the addressee and its epoch the addressee's epoch            = 25
//!   EpochQuery  8 the asker's generation, 8 its boot number (u64 each); the
//!             header's epoch is the epoch the asker holds                     = 16
//!   EpochAnswer 8 generation and 8 boot of the query, 8 the highest
//!             generation of the asker the answering node saw in another boot
//!             (u64 each), 1 what it holds at that epoch (SeenState); the header's epoch is the
//!             highest epoch the answering node has seen                        = 25
//!   HaveDna, NeedDna, Prepared, Commit, Abort, Done: empty
//! ```
//!
//! A frame is exactly as long as its kind says: trailing bytes are an error. The only
//! variable-length field is the Transfer payload, whose length must equal the bytes that remain,
//! so decoding never reads past the input and never allocates.

use super::MeshError;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"MZ";
/// The frame format version this codec reads and writes. Version 3 raised the longest message
/// from 256 bytes to [`MAX_MESSAGE_LEN`] (4 KiB; the layout did not change); version 2 added
/// the Deliver frame's stream token (which binds a message to its sender) and
/// `RefuseReason::Stale`. Other versions are refused: a version-2 node would refuse a longer
/// message, so a fleet upgrades every node together.
pub const VERSION: u8 = 3;
/// Bytes before the body: magic, version, kind, agent id, epoch.
pub const HEADER_LEN: usize = 28;
/// The largest frame without payload (an Offer).
pub const MAX_CONTROL_LEN: usize = HEADER_LEN + 40;
/// Bytes of a Transfer frame before its payload.
pub const TRANSFER_OVERHEAD: usize = HEADER_LEN + 5;
/// The longest message payload a Deliver frame carries (4 KiB, version 3; 256 bytes before).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The longest Deliver frame: its overhead and the longest message.
pub const MAX_DELIVER_LEN: usize = DELIVER_OVERHEAD + MAX_MESSAGE_LEN;
/// Bytes of a Deliver frame before its payload.
pub const DELIVER_OVERHEAD: usize = HEADER_LEN + DELIVER_FIXED;
/// The Deliver body before its payload: sender, stream, sequence, length.
const DELIVER_FIXED: usize = 16 + STREAM_LEN + 8 + 2;
/// Bytes of a message stream token ([`Body::Deliver`]).
pub const STREAM_LEN: usize = 16;

/// What a frame is; the discriminant is the byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameKind {
    /// Source to target: take this agent at this epoch?
    Offer = 1,
    /// Target to source: yes, and I hold its DNA (send the snapshot by reference).
    HaveDna = 2,
    /// Target to source: yes, send the DNA with the snapshot.
    NeedDna = 3,
    /// Target to source: no.
    Refuse = 4,
    /// Source to target: the snapshot (opaque bytes).
    Transfer = 5,
    /// Target to source: I hold the snapshot durably and wait for the decision (also re-sent
    /// as the question "what did you decide?").
    Prepared = 6,
    /// Source to target: decided, run it at this epoch.
    Commit = 7,
    /// Source to target: decided, discard what you prepared.
    Abort = 8,
    /// Target to source: running at this epoch; the source may forget the hand-off.
    Done = 9,
    /// Any node: this agent moved to `node` at `epoch` (an answer from a tombstone).
    Moved = 10,
    /// Any node: a message for the agent in the header, from a sender agent with a sequence.
    Deliver = 11,
    /// The addressee's node: what became of a message.
    Delivered = 12,
    /// A restarting node to a peer: the highest epoch you have seen of this agent? (The
    /// rollback check, docs/protocol.md.)
    EpochQuery = 13,
    /// The peer's answer to an [`FrameKind::EpochQuery`].
    EpochAnswer = 14,
}

impl FrameKind {
    /// The kind with this tag, if any.
    pub const fn from_tag(tag: u8) -> Option<FrameKind> {
        Some(match tag {
            1 => FrameKind::Offer,
            2 => FrameKind::HaveDna,
            3 => FrameKind::NeedDna,
            4 => FrameKind::Refuse,
            5 => FrameKind::Transfer,
            6 => FrameKind::Prepared,
            7 => FrameKind::Commit,
            8 => FrameKind::Abort,
            9 => FrameKind::Done,
            10 => FrameKind::Moved,
            11 => FrameKind::Deliver,
            12 => FrameKind::Delivered,
            13 => FrameKind::EpochQuery,
            14 => FrameKind::EpochAnswer,
            _ => return None,
        })
    }

    /// Body length of this kind, `None` for Transfer (variable).
    const fn fixed_body_len(self) -> Option<usize> {
        Some(match self {
            FrameKind::Offer => 40,
            FrameKind::Refuse => 1,
            FrameKind::Moved => 16,
            FrameKind::Delivered => 25,
            FrameKind::EpochQuery => 16,
            FrameKind::EpochAnswer => 25,
            FrameKind::Transfer | FrameKind::Deliver => return None,
            _ => 0,
        })
    }
}

/// Why a target refused a hand-off. Unknown reasons from newer peers decode as
/// [`RefuseReason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The target's tables are full (in-doubt hand-offs or agents).
    Busy,
    /// The host refused the snapshot (verification failed, or it cannot run the agent).
    Invalid,
    /// The target knows the agent at this epoch or later, or runs it.
    Conflict,
    /// The target has seen the agent at this epoch or a later one: the offer is stale.
    Stale,
    /// A reason this version does not know; the byte is kept.
    Other(u8),
}

impl RefuseReason {
    /// The byte on the wire.
    pub const fn tag(self) -> u8 {
        match self {
            RefuseReason::Busy => 1,
            RefuseReason::Invalid => 2,
            RefuseReason::Conflict => 3,
            RefuseReason::Stale => 4,
            RefuseReason::Other(b) => b,
        }
    }
    /// The reason for this byte.
    pub const fn from_tag(tag: u8) -> RefuseReason {
        match tag {
            1 => RefuseReason::Busy,
            2 => RefuseReason::Invalid,
            3 => RefuseReason::Conflict,
            4 => RefuseReason::Stale,
            b => RefuseReason::Other(b),
        }
    }
}

/// A checked view over the bytes of one frame.
///
/// Built with [`Frame::new_checked`], which validates magic, version, kind and length; every
/// accessor after that is infallible and cannot panic.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut w = [0u8; N];
    w.copy_from_slice(&b[at..at + N]);
    w
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps bytes without checking them; use [`Frame::check`] before any accessor.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps bytes and checks them: after `Ok`, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, MeshError> {
        let f = Frame::new_unchecked(buffer);
        f.check()?;
        Ok(f)
    }

    /// Checks magic, version, kind, the epoch (at most [`MAX_EPOCH`](crate::MAX_EPOCH)), flags
    /// and that the length is exactly what the kind says.
    pub fn check(&self) -> Result<(), MeshError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(MeshError::Truncated);
        }
        if b[0..2] != MAGIC {
            return Err(MeshError::BadMagic);
        }
        if b[2] != VERSION {
            return Err(MeshError::UnsupportedVersion { found: b[2] });
        }
        let kind = FrameKind::from_tag(b[3]).ok_or(MeshError::UnknownKind { found: b[3] })?;
        // One epoch range across the mesh and the snapshot formats: nothing above MAX_EPOCH.
        let epoch = le_u64(b, 20);
        if epoch > crate::MAX_EPOCH {
            return Err(MeshError::EpochOutOfRange { found: epoch });
        }
        let body = b.len() - HEADER_LEN;
        let expected = match kind.fixed_body_len() {
            Some(n) => n,
            None if kind == FrameKind::Deliver => {
                if body < DELIVER_FIXED {
                    return Err(MeshError::Truncated);
                }
                let at = HEADER_LEN + DELIVER_FIXED - 2;
                let n = usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
                if n > MAX_MESSAGE_LEN {
                    return Err(MeshError::PayloadTooLarge);
                }
                DELIVER_FIXED + n
            }
            None => {
                if body < 5 {
                    return Err(MeshError::Truncated);
                }
                if b[HEADER_LEN] & !1 != 0 {
                    return Err(MeshError::BadFlags);
                }
                5usize.saturating_add(le_u32(b, HEADER_LEN + 1) as usize)
            }
        };
        if body < expected {
            return Err(MeshError::Truncated);
        }
        if body > expected {
            return Err(MeshError::TrailingBytes);
        }
        // The length is exact now: the status byte is there.
        if kind == FrameKind::Delivered && DeliveryStatus::from_tag(b[HEADER_LEN + 24]).is_none() {
            return Err(MeshError::BadFlags);
        }
        if kind == FrameKind::EpochAnswer && SeenState::from_tag(b[HEADER_LEN + 24]).is_none() {
            return Err(MeshError::BadFlags);
        }
        Ok(())
    }

    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        // `check` refused unknown tags; Offer is never reached for a checked frame.
        FrameKind::from_tag(self.buffer.as_ref()[3]).unwrap_or(FrameKind::Offer)
    }

    /// The agent the frame is about.
    pub fn agent(&self) -> [u8; 16] {
        arr(self.buffer.as_ref(), 4)
    }

    /// The epoch the frame is about.
    pub fn epoch(&self) -> u64 {
        le_u64(self.buffer.as_ref(), 20)
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed frame: what it means, borrowing the payload from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// The agent concerned (16 bytes of its id).
    pub agent: [u8; 16],
    /// The hand-off's epoch: the epoch the agent runs at once the hand-off commits.
    pub epoch: u64,
    /// What the frame says.
    pub body: Body<'a>,
}

/// The kind-specific part of a [`Repr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body<'a> {
    /// See [`FrameKind::Offer`].
    Offer {
        /// SHA-256 of the agent's DNA.
        dna_hash: [u8; 32],
        /// Snapshot bytes without DNA.
        snapshot_len: u32,
        /// DNA bytes.
        dna_len: u32,
    },
    /// See [`FrameKind::HaveDna`].
    HaveDna,
    /// See [`FrameKind::NeedDna`].
    NeedDna,
    /// See [`FrameKind::Refuse`].
    Refuse(RefuseReason),
    /// See [`FrameKind::Transfer`].
    Transfer {
        /// Whether the payload carries the DNA.
        with_dna: bool,
        /// The snapshot, opaque to the protocol.
        payload: &'a [u8],
    },
    /// See [`FrameKind::Prepared`].
    Prepared,
    /// See [`FrameKind::Commit`].
    Commit,
    /// See [`FrameKind::Abort`].
    Abort,
    /// See [`FrameKind::Done`].
    Done,
    /// See [`FrameKind::Moved`].
    Moved {
        /// The node the agent moved to.
        node: [u8; 16],
    },
    /// See [`FrameKind::Deliver`].
    Deliver {
        /// The sending agent.
        sender: [u8; 16],
        /// The sender's stream to this addressee: a token only the sender's hosts (who hold
        /// its state) and the addressee's know, so that a peer naming the sender gets a
        /// sequence of its own and cannot take the real sender's (`mesh::Inbox`).
        stream: [u8; STREAM_LEN],
        /// The sender's sequence number in this stream (1, 2, ...).
        seq: u64,
        /// The message, at most [`MAX_MESSAGE_LEN`] bytes.
        payload: &'a [u8],
    },
    /// See [`FrameKind::Delivered`].
    Delivered {
        /// The sending agent.
        sender: [u8; 16],
        /// The message's sequence number.
        seq: u64,
        /// What became of it.
        status: DeliveryStatus,
    },
    /// See [`FrameKind::EpochQuery`].
    EpochQuery {
        /// The asker's generation (its journal's restart count), echoed in the answer.
        generation: u64,
        /// A number the asker chose for this boot, echoed in the answer: two boots with one
        /// generation (a journal rolled back by one restart) differ in it.
        boot: u64,
    },
    /// See [`FrameKind::EpochAnswer`].
    EpochAnswer {
        /// The generation of the query answered.
        generation: u64,
        /// The boot of the query answered.
        boot: u64,
        /// The highest generation of the asker the answering node saw in another boot
        /// (0: none).
        seen_generation: u64,
        /// What the answering node holds of the agent at the epoch it reports.
        state: SeenState,
    },
}

/// What a node holds of an agent at the epoch it reports in an [`Body::EpochAnswer`]; the
/// discriminant is the byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SeenState {
    /// No record at that epoch (only its fence, or nothing).
    Nothing = 0,
    /// A prepared copy, in doubt.
    Prepared = 1,
    /// A decision: it runs the agent, offers it, or handed it on at that epoch to a node
    /// other than the asker.
    Decided = 2,
}

impl SeenState {
    /// The state for this byte.
    pub const fn from_tag(tag: u8) -> Option<SeenState> {
        Some(match tag {
            0 => SeenState::Nothing,
            1 => SeenState::Prepared,
            2 => SeenState::Decided,
            _ => return None,
        })
    }
}

/// What became of a message, as its addressee's node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// In the agent's mailbox (now, or already before: a duplicate). The sender may forget it.
    Accepted,
    /// The mailbox is full: back-pressure; the sender keeps it and tries again later.
    Full,
    /// An earlier message from this sender is still missing; tried again later.
    OutOfOrder,
    /// The agent is being handed off here; tried again later.
    Busy,
    /// The agent is unknown here; the sender should find it elsewhere.
    Unknown,
}

impl DeliveryStatus {
    /// The byte on the wire.
    pub const fn tag(self) -> u8 {
        match self {
            DeliveryStatus::Accepted => 1,
            DeliveryStatus::Full => 2,
            DeliveryStatus::OutOfOrder => 3,
            DeliveryStatus::Busy => 4,
            DeliveryStatus::Unknown => 5,
        }
    }
    /// The status for this byte.
    pub const fn from_tag(tag: u8) -> Option<DeliveryStatus> {
        Some(match tag {
            1 => DeliveryStatus::Accepted,
            2 => DeliveryStatus::Full,
            3 => DeliveryStatus::OutOfOrder,
            4 => DeliveryStatus::Busy,
            5 => DeliveryStatus::Unknown,
            _ => return None,
        })
    }
}

impl Body<'_> {
    /// The kind of frame this body makes.
    pub fn kind(&self) -> FrameKind {
        match self {
            Body::Offer { .. } => FrameKind::Offer,
            Body::HaveDna => FrameKind::HaveDna,
            Body::NeedDna => FrameKind::NeedDna,
            Body::Refuse(_) => FrameKind::Refuse,
            Body::Transfer { .. } => FrameKind::Transfer,
            Body::Prepared => FrameKind::Prepared,
            Body::Commit => FrameKind::Commit,
            Body::Abort => FrameKind::Abort,
            Body::Done => FrameKind::Done,
            Body::Moved { .. } => FrameKind::Moved,
            Body::Deliver { .. } => FrameKind::Deliver,
            Body::Delivered { .. } => FrameKind::Delivered,
            Body::EpochQuery { .. } => FrameKind::EpochQuery,
            Body::EpochAnswer { .. } => FrameKind::EpochAnswer,
        }
    }
}

impl<'a> Repr<'a> {
    /// Parses a checked frame, borrowing the payload from its bytes.
    pub fn parse(frame: &Frame<&'a [u8]>) -> Repr<'a> {
        let bytes: &'a [u8] = frame.buffer;
        let b = &bytes[HEADER_LEN..];
        let body = match frame.kind() {
            FrameKind::Offer => Body::Offer {
                dna_hash: arr(b, 0),
                snapshot_len: le_u32(b, 32),
                dna_len: le_u32(b, 36),
            },
            FrameKind::HaveDna => Body::HaveDna,
            FrameKind::NeedDna => Body::NeedDna,
            FrameKind::Refuse => Body::Refuse(RefuseReason::from_tag(b[0])),
            FrameKind::Transfer => Body::Transfer {
                with_dna: b[0] & 1 == 1,
                payload: &b[5..],
            },
            FrameKind::Prepared => Body::Prepared,
            FrameKind::Commit => Body::Commit,
            FrameKind::Abort => Body::Abort,
            FrameKind::Done => Body::Done,
            FrameKind::Moved => Body::Moved { node: arr(b, 0) },
            FrameKind::Deliver => Body::Deliver {
                sender: arr(b, 0),
                stream: arr(b, 16),
                seq: le_u64(b, 32),
                payload: &b[DELIVER_FIXED..],
            },
            FrameKind::Delivered => Body::Delivered {
                sender: arr(b, 0),
                seq: le_u64(b, 16),
                status: DeliveryStatus::from_tag(b[24]).unwrap_or(DeliveryStatus::Unknown),
            },
            FrameKind::EpochQuery => Body::EpochQuery {
                generation: le_u64(b, 0),
                boot: le_u64(b, 8),
            },
            FrameKind::EpochAnswer => Body::EpochAnswer {
                generation: le_u64(b, 0),
                boot: le_u64(b, 8),
                seen_generation: le_u64(b, 16),
                state: SeenState::from_tag(b[24]).unwrap_or(SeenState::Nothing),
            },
        };
        Repr {
            agent: frame.agent(),
            epoch: frame.epoch(),
            body,
        }
    }

    /// Checks and parses bytes in one go.
    pub fn decode(bytes: &'a [u8]) -> Result<Repr<'a>, MeshError> {
        Ok(Repr::parse(&Frame::new_checked(bytes)?))
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self.body {
                Body::Transfer { payload, .. } => 5 + payload.len(),
                Body::Deliver { payload, .. } => DELIVER_FIXED + payload.len(),
                other => other.kind().fixed_body_len().unwrap_or(0),
            }
    }

    /// Writes the frame into `buf` and returns its length. Fails with
    /// [`MeshError::BufferTooSmall`] (nothing useful written) if it does not fit, and with
    /// [`MeshError::PayloadTooLarge`] if a payload does not fit the u32 length field.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, MeshError> {
        if let Body::Transfer { payload, .. } = self.body {
            if u32::try_from(payload.len()).is_err() {
                return Err(MeshError::PayloadTooLarge);
            }
        }
        if let Body::Deliver { payload, .. } = self.body {
            if payload.len() > MAX_MESSAGE_LEN {
                return Err(MeshError::PayloadTooLarge);
            }
        }
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(MeshError::BufferTooSmall {
                needed: len,
                available: buf.len(),
            });
        }
        let header = emit_header(buf, self.body.kind(), &self.agent, self.epoch)?;
        let b = &mut buf[header..len];
        match self.body {
            Body::Offer {
                dna_hash,
                snapshot_len,
                dna_len,
            } => {
                b[..32].copy_from_slice(&dna_hash);
                b[32..36].copy_from_slice(&snapshot_len.to_le_bytes());
                b[36..40].copy_from_slice(&dna_len.to_le_bytes());
            }
            Body::Refuse(r) => b[0] = r.tag(),
            Body::Transfer { with_dna, payload } => {
                b[0] = u8::from(with_dna);
                b[1..5].copy_from_slice(&(payload.len() as u32).to_le_bytes());
                b[5..].copy_from_slice(payload);
            }
            Body::Moved { node } => b.copy_from_slice(&node),
            Body::Deliver {
                sender,
                stream,
                seq,
                payload,
            } => {
                b[..16].copy_from_slice(&sender);
                b[16..32].copy_from_slice(&stream);
                b[32..40].copy_from_slice(&seq.to_le_bytes());
                b[40..42].copy_from_slice(&(payload.len() as u16).to_le_bytes());
                b[DELIVER_FIXED..].copy_from_slice(payload);
            }
            Body::Delivered {
                sender,
                seq,
                status,
            } => {
                b[..16].copy_from_slice(&sender);
                b[16..24].copy_from_slice(&seq.to_le_bytes());
                b[24] = status.tag();
            }
            Body::EpochQuery { generation, boot } => {
                b[..8].copy_from_slice(&generation.to_le_bytes());
                b[8..].copy_from_slice(&boot.to_le_bytes());
            }
            Body::EpochAnswer {
                generation,
                boot,
                seen_generation,
                state,
            } => {
                b[..8].copy_from_slice(&generation.to_le_bytes());
                b[8..16].copy_from_slice(&boot.to_le_bytes());
                b[16..24].copy_from_slice(&seen_generation.to_le_bytes());
                b[24] = state as u8;
            }
            _ => {}
        }
        Ok(len)
    }
}

/// Writes a frame header into `buf`, returning [`HEADER_LEN`].
pub fn emit_header(
    buf: &mut [u8],
    kind: FrameKind,
    agent: &[u8; 16],
    epoch: u64,
) -> Result<usize, MeshError> {
    let h = buf.get_mut(..HEADER_LEN).ok_or(MeshError::BufferTooSmall {
        needed: HEADER_LEN,
        available: 0,
    })?;
    h[0..2].copy_from_slice(&MAGIC);
    h[2] = VERSION;
    h[3] = kind as u8;
    h[4..20].copy_from_slice(agent);
    h[20..28].copy_from_slice(&epoch.to_le_bytes());
    Ok(HEADER_LEN)
}

/// Writes a Transfer frame whose payload the caller writes in place: `fill` gets the space after
/// the 33-byte prefix and returns how many bytes it wrote (or an error). Returns the frame length.
/// This is how a node puts a snapshot on the wire without a second buffer.
pub fn emit_transfer_with(
    buf: &mut [u8],
    agent: &[u8; 16],
    epoch: u64,
    with_dna: bool,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, MeshError>,
) -> Result<usize, MeshError> {
    if buf.len() < TRANSFER_OVERHEAD {
        return Err(MeshError::BufferTooSmall {
            needed: TRANSFER_OVERHEAD,
            available: buf.len(),
        });
    }
    emit_header(buf, FrameKind::Transfer, agent, epoch)?;
    let (prefix, rest) = buf.split_at_mut(TRANSFER_OVERHEAD);
    let room = rest.len().min(u32::MAX as usize);
    let n = fill(&mut rest[..room])?;
    if n > room {
        return Err(MeshError::PayloadTooLarge);
    }
    prefix[HEADER_LEN] = u8::from(with_dna);
    prefix[HEADER_LEN + 1..TRANSFER_OVERHEAD].copy_from_slice(&(n as u32).to_le_bytes());
    Ok(TRANSFER_OVERHEAD + n)
}
