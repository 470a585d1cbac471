//! Stream framing (feature `alloc`): how a driver puts mesh frames and status announcements on
//! a byte stream, and a bounded decoder for what a peer wrote. The QUIC driver
//! (`crate::quic`, where it is re-exported as `quic::wire`) uses it; it builds without the QUIC
//! stack, so that any stream transport can use it and the fuzzer needs no network crates.
//!
//! In the QUIC driver a unidirectional stream carries records back to back: one long-lived
//! stream per connection every frame but snapshots, in order, and each snapshot a stream of
//! its own, ended after it. A record is a 1-byte kind, a 4-byte little-endian length and that
//! many bytes:
//!
//! | kind | record | payload |
//! |-----:|--------|---------|
//! | 1 | mesh frame | one `mesh::frame` (the protocol's own codec checks it) |
//! | 2 | status | battery percent u8, latency ms u32 LE, architecture u8, capabilities u8 (7 bytes; 6 without the capabilities from a node before them, read as none) |
//!
//! Capabilities: bit 0 [`CAN_REWIND`] (the node takes agents captured in the middle of a call,
//! `runtime::midcall`; the same bit as the fleet's status record); the other bits are reserved:
//! written 0, and ignored when read, as are bytes after the seventh, so that a later version can
//! say more without its statuses being refused. (Nodes from before the capabilities byte accept
//! exactly 6 bytes: they refuse this version's statuses, so a fleet upgrades together.)
//!
//! [`RecordDecoder`] never panics, refuses unknown kinds and lengths above its limit before
//! reading the payload, and grows its buffer only as bytes arrive: a peer makes it hold at most
//! `max_len` bytes (plus the vector's spare capacity) per stream. Fuzzed by
//! `fuzz/fuzz_targets/stream_records.rs`.

use crate::{Arch, NodeStatus};
use alloc::vec::Vec;

/// Record kind: a mesh frame.
pub const KIND_FRAME: u8 = 1;
/// Record kind: a node status announcement.
pub const KIND_STATUS: u8 = 2;
/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 5;
/// A status record's payload length.
pub const STATUS_LEN: usize = 7;
/// A status record's payload length from a node that sends no capabilities (read as none).
pub const STATUS_LEN_WITHOUT_CAPABILITIES: usize = 6;
/// Capability: the node takes agents captured in the middle of a call (its host continues
/// them). A node without it refuses them; placement does not offer it such an agent.
pub const CAN_REWIND: u8 = 1;

/// Why a peer's stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A record kind this version does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A record longer than the decoder's limit.
    #[error("record of {len} bytes, over the limit of {max}")]
    TooLong {
        /// The announced length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a record.
    #[error("stream ended inside a record")]
    Truncated,
    /// A status record that does not decode.
    #[error("malformed status record")]
    BadStatus,
}

/// A record read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A mesh frame (not yet decoded).
    Frame(Vec<u8>),
    /// A status announcement, and the node's capabilities ([`CAN_REWIND`]).
    Status(NodeStatus, u8),
}

/// Writes a record header for `kind` and a payload of `len` bytes.
pub fn header(kind: u8, len: usize) -> [u8; RECORD_HEADER_LEN] {
    let l = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// The payload of a status record: the status and the node's capabilities (reserved bits are
/// written 0).
pub fn encode_status(s: &NodeStatus, capabilities: u8) -> [u8; STATUS_LEN] {
    let l = s.latency_ms.to_le_bytes();
    // A charge over 100 (a caller's mistake) goes as 100: the decoder refuses more.
    [
        s.battery_percent.min(100),
        l[0],
        l[1],
        l[2],
        l[3],
        s.arch.tag(),
        capabilities & CAN_REWIND,
    ]
}

/// Decodes a status payload: the status and the capabilities this version knows (none from a
/// 6-byte payload, a node from before them; reserved bits and bytes after the seventh are
/// ignored). Fewer than 6 bytes, a charge over 100 or an unknown architecture is
/// [`WireError::BadStatus`].
pub fn decode_status(b: &[u8]) -> Result<(NodeStatus, u8), WireError> {
    let capabilities = b.get(6).map_or(0, |c| c & CAN_REWIND);
    let b = b
        .get(..STATUS_LEN_WITHOUT_CAPABILITIES)
        .ok_or(WireError::BadStatus)?;
    let arch = Arch::from_tag(b[5]).ok_or(WireError::BadStatus)?;
    if b[0] > 100 {
        return Err(WireError::BadStatus);
    }
    let status = NodeStatus {
        battery_percent: b[0],
        latency_ms: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
        arch,
    };
    Ok((status, capabilities))
}

/// Reads a record header: its kind and payload length, refusing an unknown kind or a length
/// above `max_len` (before anything of the payload is read).
pub fn parse_header(h: &[u8; RECORD_HEADER_LEN], max_len: usize) -> Result<(u8, usize), WireError> {
    let kind = h[0];
    let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
    if kind != KIND_FRAME && kind != KIND_STATUS {
        return Err(WireError::UnknownKind(kind));
    }
    if len as usize > max_len {
        return Err(WireError::TooLong { len, max: max_len });
    }
    Ok((kind, len as usize))
}

/// The record of `kind` (from [`parse_header`]) with payload `body`.
pub fn record(kind: u8, body: Vec<u8>) -> Result<Record, WireError> {
    Ok(match kind {
        KIND_STATUS => {
            let (status, capabilities) = decode_status(&body)?;
            Record::Status(status, capabilities)
        }
        _ => Record::Frame(body),
    })
}

/// Incremental decoder of one stream's records.
#[derive(Debug)]
pub struct RecordDecoder {
    max_len: usize,
    header: [u8; RECORD_HEADER_LEN],
    have: usize,
    body: Vec<u8>,
    want: usize,
}

impl RecordDecoder {
    /// A decoder refusing records longer than `max_len` bytes.
    pub fn new(max_len: usize) -> RecordDecoder {
        RecordDecoder {
            max_len,
            header: [0; RECORD_HEADER_LEN],
            have: 0,
            body: Vec::new(),
            want: 0,
        }
    }

    /// Feeds bytes; `f` gets each complete record. After an error the decoder is spent (the
    /// stream is refused).
    pub fn push(&mut self, mut bytes: &[u8], f: &mut dyn FnMut(Record)) -> Result<(), WireError> {
        while !bytes.is_empty() {
            if self.have < RECORD_HEADER_LEN {
                let n = (RECORD_HEADER_LEN - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have < RECORD_HEADER_LEN {
                    return Ok(());
                }
                let (_, len) = parse_header(&self.header, self.max_len)?;
                self.want = len;
                self.body = Vec::new();
            }
            let n = (self.want - self.body.len()).min(bytes.len());
            self.body.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.body.len() == self.want {
                self.have = 0;
                let body = core::mem::take(&mut self.body);
                f(record(self.header[0], body)?);
            }
        }
        Ok(())
    }

    /// The stream ended: an error if it ended inside a record.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.have == 0 {
            Ok(())
        } else {
            Err(WireError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_every_split() {
        let s = NodeStatus {
            battery_percent: 42,
            latency_ms: 7,
            arch: Arch::Aarch64,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&header(KIND_FRAME, 3));
        bytes.extend_from_slice(b"abc");
        bytes.extend_from_slice(&header(KIND_STATUS, STATUS_LEN));
        bytes.extend_from_slice(&encode_status(&s, CAN_REWIND));
        bytes.extend_from_slice(&header(KIND_FRAME, 0));
        for split in 0..=bytes.len() {
            let mut d = RecordDecoder::new(16);
            let mut got = Vec::new();
            d.push(&bytes[..split], &mut |r| got.push(r)).unwrap();
            d.push(&bytes[split..], &mut |r| got.push(r)).unwrap();
            d.finish().unwrap();
            assert_eq!(
                got,
                [
                    Record::Frame(b"abc".to_vec()),
                    Record::Status(s, CAN_REWIND),
                    Record::Frame(Vec::new())
                ]
            );
        }
    }

    #[test]
    fn refusals() {
        let mut d = RecordDecoder::new(4);
        let e = d.push(&header(KIND_FRAME, 5), &mut |_| {});
        assert_eq!(e, Err(WireError::TooLong { len: 5, max: 4 }));
        let mut d = RecordDecoder::new(4);
        assert_eq!(
            d.push(&[9, 0, 0, 0, 0], &mut |_| {}),
            Err(WireError::UnknownKind(9))
        );
        let mut d = RecordDecoder::new(4);
        d.push(&header(KIND_FRAME, 2)[..3], &mut |_| {}).unwrap();
        assert_eq!(d.finish(), Err(WireError::Truncated));
        let mut d = RecordDecoder::new(8);
        let mut b = header(KIND_STATUS, 6).to_vec();
        b.extend_from_slice(&[101, 0, 0, 0, 0, 0]);
        assert_eq!(d.push(&b, &mut |_| {}), Err(WireError::BadStatus));
    }

    /// The status payload's bytes, field by field; the 6 bytes of a node from before the
    /// capabilities read as none; reserved bits and later bytes are ignored; fewer bytes, a
    /// charge over 100 and an unknown architecture are refused.
    #[test]
    fn status_bytes() {
        let s = NodeStatus {
            battery_percent: 42,
            latency_ms: 0x0102_0304,
            arch: Arch::Aarch64,
        };
        let tag = Arch::Aarch64.tag();
        assert_eq!(
            encode_status(&s, CAN_REWIND),
            [42, 4, 3, 2, 1, tag, 1],
            "battery, latency LE, architecture, capabilities"
        );
        assert_eq!(
            encode_status(&s, 0xff)[6],
            CAN_REWIND,
            "reserved bits go as 0"
        );
        assert_eq!(
            decode_status(&[42, 4, 3, 2, 1, tag, 1]),
            Ok((s, CAN_REWIND))
        );
        assert_eq!(decode_status(&[42, 4, 3, 2, 1, tag, 0]), Ok((s, 0)));
        assert_eq!(decode_status(&[42, 4, 3, 2, 1, tag]), Ok((s, 0)));
        // What a later version may add.
        assert_eq!(
            decode_status(&[42, 4, 3, 2, 1, tag, 0x81]),
            Ok((s, CAN_REWIND))
        );
        assert_eq!(decode_status(&[42, 4, 3, 2, 1, tag, 2]), Ok((s, 0)));
        assert_eq!(
            decode_status(&[42, 4, 3, 2, 1, tag, 1, 9, 9]),
            Ok((s, CAN_REWIND))
        );
        for bad in [
            &[][..],
            &[42, 4, 3, 2, 1],
            &[101, 4, 3, 2, 1, tag, 1],
            &[42, 4, 3, 2, 1, 0xee, 1],
        ] {
            assert_eq!(decode_status(bad), Err(WireError::BadStatus), "{bad:?}");
        }
    }
}
