//! What happens to a running agent between two saves of it, as records a [`Keeper`] may log
//! instead of saving the whole agent each time: the agent is its last saved copy plus these,
//! re-applied in order ([`Event::apply`]).
//!
//! [`Keeper`]: super::Keeper

use crate::mesh::frame::STREAM_LEN;
use crate::mesh::wasm::SharedInbox;
use crate::mesh::{Delivery, Stream};
use crate::runtime::{LiveAgent, Val};
use crate::{AgentId, DecodeError, NodeId};
use alloc::string::String;
use alloc::vec::Vec;

/// The longest export name an [`Event::Called`] records.
pub const MAX_EXPORT_LEN: usize = 64;
/// The most arguments an [`Event::Called`] records.
pub const MAX_CALL_ARGS: usize = 8;
/// The longest encoded event: a `Delivered` of the longest message an inbox takes, or a
/// `Called` with the longest name and the most arguments.
pub const MAX_EVENT_LEN: usize =
    1 + 16 + 16 + STREAM_LEN + 8 + 4 + crate::mesh::MAX_INBOX_MESSAGE_LEN;

const DELIVERED: u8 = 1;
const CALLED: u8 = 2;
const ACKED: u8 = 3;

/// One change to a running agent.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message accepted into its mailbox ([`AgentHost::deliver`](crate::mesh::AgentHost)).
    Delivered {
        /// The node that delivered it.
        peer: NodeId,
        /// Its sender.
        from: AgentId,
        /// The sender's stream.
        stream: Stream,
        /// Its sequence number.
        seq: u64,
        /// Its bytes.
        payload: Vec<u8>,
    },
    /// An export called, and the `i32` it returned (0 when it returned none).
    Called {
        /// The export.
        export: String,
        /// Its arguments.
        args: Vec<Val>,
        /// Its first result, if an `i32`, else 0.
        result: i32,
    },
    /// A message of its outbox acknowledged.
    Acked {
        /// The addressee.
        to: AgentId,
        /// The message's number.
        seq: u64,
    },
}

/// Equal when their bytes are (arguments compare by their bits).
impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        self.encode(&mut a);
        other.encode(&mut b);
        a == b
    }
}

/// Why an event could not be applied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diverged {
    /// The message was not accepted again.
    Delivery(Delivery),
    /// The call returned another value than it did the first time (or failed).
    Result {
        /// What it returned the first time.
        logged: i32,
        /// What it returned now (`None`: it failed).
        now: Option<i32>,
    },
}

impl Event {
    /// The event's bytes: a kind byte, then its fields little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Event::Delivered {
                peer,
                from,
                stream,
                seq,
                payload,
            } => {
                out.push(DELIVERED);
                out.extend_from_slice(peer.as_bytes());
                out.extend_from_slice(from.as_bytes());
                out.extend_from_slice(stream);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
            }
            Event::Called {
                export,
                args,
                result,
            } => {
                out.push(CALLED);
                out.push(export.len() as u8);
                out.extend_from_slice(export.as_bytes());
                out.push(args.len() as u8);
                for a in args {
                    let (tag, bits) = match a {
                        Val::I32(v) => (0u8, *v as u32 as u64),
                        Val::I64(v) => (1, *v as u64),
                        Val::F32(v) => (2, u64::from(v.to_bits())),
                        Val::F64(v) => (3, v.to_bits()),
                        // Not recorded: `Event::called` refuses other values.
                        _ => (0xff, 0),
                    };
                    out.push(tag);
                    out.extend_from_slice(&bits.to_le_bytes());
                }
                out.extend_from_slice(&result.to_le_bytes());
            }
            Event::Acked { to, seq } => {
                out.push(ACKED);
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
            }
        }
    }

    /// The length of [`encode`](Self::encode)'s bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Event::Delivered { payload, .. } => 1 + 16 + 16 + STREAM_LEN + 8 + 4 + payload.len(),
            Event::Called { export, args, .. } => 1 + 1 + export.len() + 1 + 9 * args.len() + 4,
            Event::Acked { .. } => 1 + 16 + 8,
        }
    }

    /// A `Called` event, if its name and arguments can be recorded (at most
    /// [`MAX_EXPORT_LEN`] bytes, [`MAX_CALL_ARGS`] numbers).
    pub fn called(export: &str, args: &[Val], result: i32) -> Option<Event> {
        let numbers = args
            .iter()
            .all(|a| matches!(a, Val::I32(_) | Val::I64(_) | Val::F32(_) | Val::F64(_)));
        (export.len() <= MAX_EXPORT_LEN && args.len() <= MAX_CALL_ARGS && numbers).then(|| {
            Event::Called {
                export: String::from(export),
                args: args.to_vec(),
                result,
            }
        })
    }

    /// Reads what [`encode`](Self::encode) wrote; every byte must be used.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader(bytes);
        let e = match r.u8()? {
            DELIVERED => {
                let peer = NodeId::from_bytes(r.array()?);
                let from = AgentId::from_bytes(r.array()?);
                let stream = r.array()?;
                let seq = r.u64()?;
                let len = u32::from_le_bytes(r.array()?) as usize;
                if len > crate::mesh::MAX_INBOX_MESSAGE_LEN {
                    return Err(DecodeError::Malformed);
                }
                Event::Delivered {
                    peer,
                    from,
                    stream,
                    seq,
                    payload: r.take(len)?.to_vec(),
                }
            }
            CALLED => {
                let len = r.u8()? as usize;
                if len > MAX_EXPORT_LEN {
                    return Err(DecodeError::Malformed);
                }
                let export =
                    core::str::from_utf8(r.take(len)?).map_err(|_| DecodeError::Malformed)?;
                let n = r.u8()? as usize;
                if n > MAX_CALL_ARGS {
                    return Err(DecodeError::Malformed);
                }
                let mut args = Vec::with_capacity(n);
                for _ in 0..n {
                    let tag = r.u8()?;
                    let bits = r.u64()?;
                    // One encoding: a 32-bit value's upper bits are zero.
                    if matches!(tag, 0 | 2) && bits >> 32 != 0 {
                        return Err(DecodeError::Malformed);
                    }
                    args.push(match tag {
                        0 => Val::I32(bits as u32 as i32),
                        1 => Val::I64(bits as i64),
                        2 => Val::F32(f32::from_bits(bits as u32).into()),
                        3 => Val::F64(f64::from_bits(bits).into()),
                        _ => return Err(DecodeError::Malformed),
                    });
                }
                let result = i32::from_le_bytes(r.array()?);
                Event::Called {
                    export: String::from(export),
                    args,
                    result,
                }
            }
            ACKED => Event::Acked {
                to: AgentId::from_bytes(r.array()?),
                seq: r.u64()?,
            },
            _ => return Err(DecodeError::Malformed),
        };
        match r.0.is_empty() {
            true => Ok(e),
            false => Err(DecodeError::Malformed),
        }
    }

    /// Applies the event again to `live`, as the host applied it the first time; an event
    /// that does not come out the same is an error (the saved copy and its events do not
    /// belong together, or an export changed the agent without being recorded).
    pub fn apply(&self, live: &mut LiveAgent<SharedInbox>) -> Result<(), Diverged> {
        match self {
            Event::Delivered {
                peer,
                from,
                stream,
                seq,
                payload,
            } => match live.host().offer(*peer, *from, *stream, *seq, payload) {
                Delivery::Accepted => Ok(()),
                other => Err(Diverged::Delivery(other)),
            },
            Event::Called {
                export,
                args,
                result,
            } => {
                let now = live.call(export, args).ok().map(|v| first_i32(&v));
                match now == Some(*result) {
                    true => Ok(()),
                    false => Err(Diverged::Result {
                        logged: *result,
                        now,
                    }),
                }
            }
            Event::Acked { to, seq } => {
                live.host().get_mut().acked(*to, *seq);
                Ok(())
            }
        }
    }
}

/// A call's first result if it is an `i32`, else 0.
pub(crate) fn first_i32(v: &[Val]) -> i32 {
    match v.first() {
        Some(Val::I32(n)) => *n,
        _ => 0,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}
