//! The choice between a file's two commit slots, shared by every file with two of them
//! ([`FileLog`](super::FileLog), `FileEpochJournal`).

use crate::seal::{Part, StoreError};
use crate::NodeId;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// Reads the first `H` bytes of a file of `len` bytes, its header, after the checks every such
/// file shares: not empty, the format's magic, long enough for the header, the version (the
/// `u32` LE after the magic).
pub(crate) fn check_header<const H: usize>(
    file: &mut File,
    len: u64,
    magic: [u8; 4],
    version: u32,
) -> Result<[u8; H], StoreError> {
    if len == 0 {
        return Err(StoreError::Empty);
    }
    let mut header = [0u8; H];
    let have = (len.min(H as u64)) as usize;
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut header[..have])?;
    if have >= 4 && header[..4] != magic {
        return Err(StoreError::BadMagic {
            expected: magic,
            found: [header[0], header[1], header[2], header[3]],
        });
    }
    if have < H {
        return Err(StoreError::TooShort {
            part: Part::Header,
            offset: 0,
            needed: H as u64,
            found: len,
        });
    }
    let found = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if found != version {
        return Err(StoreError::UnsupportedVersion {
            found,
            supported: version,
        });
    }
    Ok(header)
}

/// What the choice needs of a slot whose MAC verified.
pub(crate) trait CommitSlot: Copy {
    /// Its generation: the newer slot has the higher one.
    fn generation(&self) -> u64;
    /// What it commits (bytes, records): a newer slot never commits less of either.
    fn commits(&self) -> (u64, u64);
}

/// Of the two slots as read (`None`: the MAC did not verify), the active one — the valid slot
/// with the highest generation — and its index. `other_node` is the node a slot that did not
/// verify names, if not this one: with no valid slot, that is a file of another node. Refused:
/// no valid slot, two of one generation, a newer slot that commits less than the older.
pub(crate) fn newest<S: CommitSlot>(
    slots: [Option<S>; 2],
    node: NodeId,
    other_node: Option<NodeId>,
    slot_offset: impl Fn(usize) -> usize,
) -> Result<(usize, S), StoreError> {
    match slots {
        [None, None] => Err(match other_node {
            Some(found) => StoreError::WrongNode {
                expected: node,
                found,
            },
            None => StoreError::BadMac {
                part: Part::Slot,
                offset: slot_offset(0) as u64,
            },
        }),
        [Some(s), None] => Ok((0, s)),
        [None, Some(s)] => Ok((1, s)),
        [Some(a), Some(b)] => {
            if a.generation() == b.generation() {
                return Err(StoreError::Malformed {
                    part: Part::Slot,
                    offset: slot_offset(1) as u64,
                    reason: "both commit slots have the same generation",
                });
            }
            let (i, newer, older) = if a.generation() > b.generation() {
                (0, a, b)
            } else {
                (1, b, a)
            };
            let (n, o) = (newer.commits(), older.commits());
            if n.0 < o.0 || n.1 < o.1 {
                return Err(StoreError::Malformed {
                    part: Part::Slot,
                    offset: slot_offset(i) as u64,
                    reason: "the newer commit slot commits less than the older",
                });
            }
            Ok((i, newer))
        }
    }
}
