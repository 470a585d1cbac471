//! One append-only file with group commit: the [`Log`] of a node on a server (feature `std`).

use super::{Log, Lsn};
use crate::seal::{LocalKey, Part, StoreError};
use crate::NodeId;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::vec::Vec;

/// The format, in bytes (`docs/protocol.md`, "Durability tickets"). The numbers are the whole
/// of it.
pub(crate) mod format {
    /// The first four bytes.
    pub const MAGIC: [u8; 4] = *b"MZLG";
    /// The version after the magic (`u32` LE).
    pub const VERSION: u32 = 1;
    /// Magic and version.
    pub const PREFIX_LEN: usize = 8;
    /// A commit slot: generation (`u64` LE), committed length in bytes (`u64` LE), committed
    /// records (`u64` LE, the durable ticket), node id (16), head (the MAC of the last
    /// committed record, zeros before the first), the slot's MAC (32).
    pub const SLOT_LEN: usize = 8 + 8 + 8 + 16 + 32 + 32;
    /// The slot's fields before its MAC.
    pub const SLOT_FIELDS: usize = SLOT_LEN - 32;
    /// Where slot `i` starts.
    pub const fn slot_offset(i: usize) -> usize {
        PREFIX_LEN + i * SLOT_LEN
    }
    /// Prefix and two slots; the first record starts here.
    pub const HEADER_LEN: usize = PREFIX_LEN + 2 * SLOT_LEN;
    /// A record's framing: its length (`u32` LE) before the bytes, its MAC (32) after them.
    /// The MAC covers the record's offset and ticket (`u64` LE each), the previous record's
    /// MAC, the length and the bytes.
    pub const RECORD_OVERHEAD: usize = 4 + 32;
    /// MAC domains, one per structure.
    pub const SLOT_DOMAIN: &str = "mielin-cells/log/slot/v1";
    /// See [`SLOT_DOMAIN`].
    pub const RECORD_DOMAIN: &str = "mielin-cells/log/record/v1";
    /// Appended records are written to the file (not synced) once this many bytes wait.
    pub const WRITE_BEHIND: usize = 256 * 1024;
}

use format::*;

/// A commit slot as read.
#[derive(Debug, Clone, Copy)]
struct Slot {
    generation: u64,
    committed: u64,
    lsn: u64,
    node: NodeId,
    head: [u8; 32],
}

impl Slot {
    fn encode(&self, index: usize, key: &LocalKey) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..16].copy_from_slice(&self.committed.to_le_bytes());
        b[16..24].copy_from_slice(&self.lsn.to_le_bytes());
        b[24..40].copy_from_slice(self.node.as_bytes());
        b[40..72].copy_from_slice(&self.head);
        let mac = key.mac(SLOT_DOMAIN, &slot_mac_input(index, &b));
        b[SLOT_FIELDS..].copy_from_slice(&mac);
        b
    }

    fn decode(b: &[u8; SLOT_LEN]) -> Slot {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut node = [0u8; 16];
        node.copy_from_slice(&b[24..40]);
        let mut head = [0u8; 32];
        head.copy_from_slice(&b[40..72]);
        Slot {
            generation: u64_at(0),
            committed: u64_at(8),
            lsn: u64_at(16),
            node: NodeId::from_bytes(node),
            head,
        }
    }

    fn valid(index: usize, b: &[u8; SLOT_LEN], node: NodeId, key: &LocalKey) -> bool {
        key.verify(SLOT_DOMAIN, &slot_mac_input(index, b), &b[SLOT_FIELDS..])
            && Slot::decode(b).node == node
    }
}

/// What a slot's MAC covers: the format's prefix, the slot's index (a slot copied into the
/// other place does not verify) and its fields.
fn slot_mac_input(index: usize, b: &[u8; SLOT_LEN]) -> [&[u8]; 3] {
    const PREFIX: [u8; PREFIX_LEN] = prefix();
    const INDEX: [[u8; 1]; 2] = [[0], [1]];
    [&PREFIX, &INDEX[index], &b[..SLOT_FIELDS]]
}

const fn prefix() -> [u8; PREFIX_LEN] {
    let v = VERSION.to_le_bytes();
    [
        MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], v[2], v[3],
    ]
}

/// What a record's MAC covers, as [`record_mac`] and the scan both give it.
fn with_record_parts<T>(
    offset: u64,
    lsn: u64,
    prev: &[u8; 32],
    record: &[u8],
    f: impl FnOnce(&[&[u8]]) -> T,
) -> T {
    f(&[
        &offset.to_le_bytes(),
        &lsn.to_le_bytes(),
        prev,
        &(record.len() as u32).to_le_bytes(),
        record,
    ])
}

fn record_mac(key: &LocalKey, offset: u64, lsn: u64, prev: &[u8; 32], record: &[u8]) -> [u8; 32] {
    with_record_parts(offset, lsn, prev, record, |p| key.mac(RECORD_DOMAIN, p))
}

/// A [`Log`] in one file (feature `std`), sealed to its node: records appended under a header
/// of two commit slots, every structure MAC'd with the node's [`LocalKey`], one group commit
/// per [`sync`](Log::sync).
///
/// **Format** (`docs/protocol.md`, "Durability tickets"): the magic `MZLG` and version 1; two
/// slots of 104 bytes (generation, committed length, committed records, node id, the MAC of
/// the last committed record, the slot's MAC); then records: a `u32` LE length, the bytes, and
/// a MAC over the record's offset, its ticket, the previous record's MAC, the length and the
/// bytes. Each record is chained to the one before and bound to its place.
///
/// **Append** encodes the record into a buffer (written to the file, unsynced, once 256 KiB
/// wait). **Sync** writes what waits, `fdatasync`s, then writes the *other* slot with the
/// next generation, the new committed length, ticket and head, and `fdatasync`s again: two
/// syncs per batch, however many records it holds. `Ok` only after both. Any failure poisons
/// the log until it is reopened.
///
/// **Open** is the same rule as [`FileEpochJournal`](crate::migration::FileEpochJournal)'s:
/// the valid slot with the highest generation wins; every record it commits must verify and
/// end at its head and ticket; a file shorter than the committed length is refused
/// (`Truncated`: records lost from the end). Bytes past the committed length are a batch
/// torn by a crash: cut off, and the cut synced, before `open` returns. A slot that does not
/// verify is accepted only as a crash explains it — one or more whole records, chained to the
/// other slot, follow its committed length and end the file (the batch was synced before the
/// slot write began); they count and the slot is rewritten. Any other broken slot is refused
/// (`BadMac`), never read as an older state. Not detected: a whole older copy of the file (a
/// rollback of everything; `docs/security.md`).
///
/// Memory: a record's bytes (at most `max_record`) while opening or replaying, and the batch
/// waiting for the next sync (at most 256 KiB plus one record).
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug)]
pub struct FileLog {
    file: File,
    key: LocalKey,
    node: NodeId,
    max_record: usize,
    /// The active slot and its contents: what is durable.
    active: usize,
    slot: Slot,
    /// Where the next record goes, its ticket's predecessor and the MAC it chains to.
    end: u64,
    appended: u64,
    head: [u8; 32],
    /// Encoded records not yet written; they start at `end - pending.len()`.
    pending: Vec<u8>,
    poisoned: bool,
    syncs: u64,
}

impl FileLog {
    /// Creates the log of a new node at `path`, for node `node` sealed with `key`, taking
    /// records of at most `max_record` bytes. Refused with [`StoreError::Exists`] if a file is
    /// there: creating never erases a log. The header is written to `PATH.tmp`, synced and
    /// renamed into place (and the directory synced).
    pub fn create(
        path: &Path,
        node: NodeId,
        key: &LocalKey,
        max_record: usize,
    ) -> Result<FileLog, StoreError> {
        if path.symlink_metadata().is_ok() {
            return Err(StoreError::Exists);
        }
        let mut header = [0u8; HEADER_LEN];
        header[..PREFIX_LEN].copy_from_slice(&prefix());
        for i in 0..2 {
            let slot = Slot {
                generation: i as u64,
                committed: HEADER_LEN as u64,
                lsn: 0,
                node,
                head: [0; 32],
            };
            header[slot_offset(i)..slot_offset(i) + SLOT_LEN].copy_from_slice(&slot.encode(i, key));
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Self::open(path, node, key, max_record, &mut |_, _| {})
    }

    /// Opens the log of node `node` at `path`, checking every byte against `key` (the type's
    /// documentation lists what is refused), and hands each record to `f` in order as it
    /// verifies. On an error, discard whatever `f` was given: the file was refused as a whole.
    /// A missing file is [`StoreError::Missing`]: a node that lost its log must not start as
    /// if it had none.
    pub fn open(
        path: &Path,
        node: NodeId,
        key: &LocalKey,
        max_record: usize,
        f: &mut dyn FnMut(Lsn, &[u8]),
    ) -> Result<FileLog, StoreError> {
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::Missing),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let (active, slot, other_valid) = read_header(&mut file, len, node, key)?;
        if len < slot.committed {
            return Err(StoreError::Truncated {
                committed: slot.committed,
                found: len,
            });
        }
        let mut scan = Scan::new(&file, key, max_record)?;
        while scan.offset < slot.committed {
            scan.next(slot.committed, f)?;
        }
        if scan.head != slot.head || scan.lsn != slot.lsn {
            // Every record verified, yet the last is not the one the slot committed: the file
            // was spliced from two copies of itself.
            return Err(StoreError::Malformed {
                part: Part::Slot,
                offset: slot_offset(active) as u64,
                reason:
                    "its records do not end at the record it commits (spliced from another copy)",
            });
        }
        // A broken slot is explained by one thing only: a crash while it was being written,
        // to commit the batch that follows (synced before the slot write began), with nothing
        // after that batch. Then the batch counts. Anything else with a broken slot (damage,
        // or damage and a cut) is refused rather than read as an older state.
        let mut roll_forward = false;
        if !other_valid {
            let broken = StoreError::BadMac {
                part: Part::Slot,
                offset: slot_offset(1 - active) as u64,
            };
            if len == scan.offset {
                return Err(broken);
            }
            while scan.offset < len {
                scan.next(len, f).map_err(|_| broken)?;
            }
            roll_forward = true;
        }
        let (end, appended, head) = (scan.offset, scan.lsn, scan.head);
        drop(scan);
        let mut log = FileLog {
            file,
            key: key.clone(),
            node,
            max_record,
            active,
            slot,
            end,
            appended,
            head,
            pending: Vec::new(),
            poisoned: false,
            syncs: 0,
        };
        if roll_forward {
            log.write_slot()?;
        }
        if len > end {
            // A torn batch: cut it off, durably, before anything is appended after it.
            log.file.set_len(end)?;
            log.file.sync_data()?;
        }
        Ok(log)
    }

    /// The node this log belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// How many syncs committed records (each cost two `fdatasync`s).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The committed length of the file in bytes (what the active slot vouches for).
    pub fn committed_len(&self) -> u64 {
        self.slot.committed
    }

    /// Writes the records waiting in the buffer at their place (not synced).
    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.end - self.pending.len() as u64;
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Writes the other slot committing everything appended, synced; it becomes the active one.
    fn write_slot(&mut self) -> Result<(), StoreError> {
        let next = Slot {
            generation: self.slot.generation.wrapping_add(1),
            committed: self.end,
            lsn: self.appended,
            node: self.node,
            head: self.head,
        };
        let index = 1 - self.active;
        self.file.seek(SeekFrom::Start(slot_offset(index) as u64))?;
        self.file.write_all(&next.encode(index, &self.key))?;
        self.file.sync_data()?;
        self.active = index;
        self.slot = next;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        self.file.sync_data()?;
        self.write_slot()
    }

    /// Runs `op`; a failure poisons the log (after a failed write or sync the file's state is
    /// unknown until a reopen sorts it out).
    fn guarded<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let r = op(self);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }
}

impl Log for FileLog {
    fn max_record(&self) -> usize {
        self.max_record
    }

    fn append(&mut self, record: &[u8]) -> Result<Lsn, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if record.len() > self.max_record || record.len() > u32::MAX as usize {
            return Err(StoreError::RecordTooLong {
                len: record.len() as u64,
                max: self.max_record.min(u32::MAX as usize) as u64,
            });
        }
        let lsn = self.appended + 1;
        let mac = record_mac(&self.key, self.end, lsn, &self.head, record);
        self.pending
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.pending.extend_from_slice(record);
        self.pending.extend_from_slice(&mac);
        self.end += (record.len() + RECORD_OVERHEAD) as u64;
        self.appended = lsn;
        self.head = mac;
        if self.pending.len() >= WRITE_BEHIND {
            self.guarded(|l| l.write_pending())?;
        }
        Ok(Lsn(lsn))
    }

    fn sync(&mut self) -> Result<Lsn, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.appended == self.slot.lsn {
            return Ok(self.durable());
        }
        self.guarded(|l| l.commit())?;
        self.syncs += 1;
        Ok(self.durable())
    }

    fn durable(&self) -> Lsn {
        Lsn(self.slot.lsn)
    }

    fn appended(&self) -> Lsn {
        Lsn(self.appended)
    }

    fn replay(&mut self, f: &mut dyn FnMut(Lsn, &[u8])) -> Result<(), StoreError> {
        self.guarded(|l| l.write_pending())?;
        let mut scan = Scan::new(&self.file, &self.key, self.max_record)?;
        while scan.offset < self.end {
            scan.next(self.end, f)?;
        }
        Ok(())
    }
}

/// Reads and verifies records from the first one on.
struct Scan<'a> {
    reader: std::io::BufReader<&'a File>,
    key: &'a LocalKey,
    max_record: usize,
    offset: u64,
    lsn: u64,
    head: [u8; 32],
    buf: Vec<u8>,
}

impl<'a> Scan<'a> {
    fn new(file: &'a File, key: &'a LocalKey, max_record: usize) -> Result<Self, StoreError> {
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
        reader.seek(SeekFrom::Start(HEADER_LEN as u64))?;
        Ok(Scan {
            reader,
            key,
            max_record,
            offset: HEADER_LEN as u64,
            lsn: 0,
            head: [0; 32],
            buf: Vec::new(),
        })
    }

    /// Reads the record at `offset`, which must end by `limit`, verifies it and hands it to `f`.
    fn next(&mut self, limit: u64, f: &mut dyn FnMut(Lsn, &[u8])) -> Result<(), StoreError> {
        let at = self.offset;
        let short = |needed: u64| StoreError::TooShort {
            part: Part::Record,
            offset: at,
            needed,
            found: limit,
        };
        if limit - at < RECORD_OVERHEAD as u64 {
            return Err(short(RECORD_OVERHEAD as u64));
        }
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        // The length is not authenticated yet: bound it before reading (or allocating) that much.
        if len > self.max_record {
            return Err(StoreError::Malformed {
                part: Part::Record,
                offset: at,
                reason: "longer than the log's largest record",
            });
        }
        let total = (len + RECORD_OVERHEAD) as u64;
        if limit - at < total {
            return Err(short(total));
        }
        self.buf.resize(len, 0);
        self.reader.read_exact(&mut self.buf)?;
        let mut mac = [0u8; 32];
        self.reader.read_exact(&mut mac)?;
        let lsn = self.lsn + 1;
        let key = self.key;
        if !with_record_parts(at, lsn, &self.head, &self.buf, |p| {
            key.verify(RECORD_DOMAIN, p, &mac)
        }) {
            return Err(StoreError::BadMac {
                part: Part::Record,
                offset: at,
            });
        }
        f(Lsn(lsn), &self.buf);
        self.offset += total;
        self.lsn = lsn;
        self.head = mac;
        Ok(())
    }
}

/// Reads the prefix and both slots: the active slot (the valid one with the highest
/// generation), whether the other one is valid too.
fn read_header(
    file: &mut File,
    len: u64,
    node: NodeId,
    key: &LocalKey,
) -> Result<(usize, Slot, bool), StoreError> {
    if len == 0 {
        return Err(StoreError::Empty);
    }
    let mut header = [0u8; HEADER_LEN];
    let have = (len.min(HEADER_LEN as u64)) as usize;
    file.read_exact(&mut header[..have])?;
    if have >= 4 && header[..4] != MAGIC {
        return Err(StoreError::BadMagic {
            expected: MAGIC,
            found: [header[0], header[1], header[2], header[3]],
        });
    }
    if have < HEADER_LEN {
        return Err(StoreError::TooShort {
            part: Part::Header,
            offset: 0,
            needed: HEADER_LEN as u64,
            found: len,
        });
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if version != VERSION {
        return Err(StoreError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let mut slots = [None, None];
    let mut other_node = None;
    for (i, slot) in slots.iter_mut().enumerate() {
        let mut b = [0u8; SLOT_LEN];
        b.copy_from_slice(&header[slot_offset(i)..slot_offset(i) + SLOT_LEN]);
        if Slot::valid(i, &b, node, key) {
            *slot = Some(Slot::decode(&b));
        } else if Slot::decode(&b).node != node {
            other_node = Some(Slot::decode(&b).node);
        }
    }
    let (active, slot) = match slots {
        [None, None] => {
            return Err(match other_node {
                Some(found) => StoreError::WrongNode {
                    expected: node,
                    found,
                },
                None => StoreError::BadMac {
                    part: Part::Slot,
                    offset: slot_offset(0) as u64,
                },
            })
        }
        [Some(s), None] => (0, s),
        [None, Some(s)] => (1, s),
        [Some(a), Some(b)] => {
            if a.generation == b.generation {
                return Err(StoreError::Malformed {
                    part: Part::Slot,
                    offset: slot_offset(1) as u64,
                    reason: "both commit slots have the same generation",
                });
            }
            let (i, newer, older) = if a.generation > b.generation {
                (0, a, b)
            } else {
                (1, b, a)
            };
            if newer.committed < older.committed || newer.lsn < older.lsn {
                return Err(StoreError::Malformed {
                    part: Part::Slot,
                    offset: slot_offset(i) as u64,
                    reason: "the newer commit slot commits less than the older",
                });
            }
            (i, newer)
        }
    };
    if slot.committed < HEADER_LEN as u64 {
        return Err(StoreError::Malformed {
            part: Part::Slot,
            offset: slot_offset(active) as u64,
            reason: "committed length inside the header",
        });
    }
    Ok((active, slot, slots[1 - active].is_some()))
}
