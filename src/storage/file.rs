//! One append-only file with group commit: the [`Log`] of a node on a server (feature `std`).

use super::slots::{check_header, newest, CommitSlot};
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
    /// Magic, version, and the file's id (16 random bytes drawn when the file is created):
    /// every MAC covers them, so no slot or record of one of the node's files verifies in
    /// another (its compacted copy, a new log).
    pub const PREFIX_LEN: usize = 4 + 4 + 16;
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
    /// A record's framing: its length (`u32` LE, below `u32::MAX`) before the bytes, its MAC
    /// (32) after them. The MAC covers the prefix, the record's offset and ticket (`u64` LE
    /// each), the previous record's MAC, the length and the bytes.
    pub const RECORD_OVERHEAD: usize = 4 + 32;
    /// The length field of a batch's end mark, which every sync writes after its records: then
    /// a MAC (32) over the prefix, the mark's offset, the batch's last ticket and the MAC of its
    /// last record. A batch is whole when its mark is.
    pub const END_MARK: u32 = u32::MAX;
    /// An end mark's bytes.
    pub const END_MARK_LEN: usize = 4 + 32;
    /// MAC domains, one per structure.
    pub const SLOT_DOMAIN: &str = "mielin-cells/log/slot/v1";
    /// See [`SLOT_DOMAIN`].
    pub const RECORD_DOMAIN: &str = "mielin-cells/log/record/v1";
    /// See [`SLOT_DOMAIN`].
    pub const END_DOMAIN: &str = "mielin-cells/log/batch-end/v1";
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
    fn encode(&self, index: usize, prefix: &[u8; PREFIX_LEN], key: &LocalKey) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..16].copy_from_slice(&self.committed.to_le_bytes());
        b[16..24].copy_from_slice(&self.lsn.to_le_bytes());
        b[24..40].copy_from_slice(self.node.as_bytes());
        b[40..72].copy_from_slice(&self.head);
        let mac = key.mac(SLOT_DOMAIN, &slot_mac_input(index, prefix, &b));
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

    fn valid(
        index: usize,
        prefix: &[u8; PREFIX_LEN],
        b: &[u8; SLOT_LEN],
        node: NodeId,
        key: &LocalKey,
    ) -> bool {
        key.verify(
            SLOT_DOMAIN,
            &slot_mac_input(index, prefix, b),
            &b[SLOT_FIELDS..],
        ) && Slot::decode(b).node == node
    }
}

impl CommitSlot for Slot {
    fn generation(&self) -> u64 {
        self.generation
    }
    fn commits(&self) -> (u64, u64) {
        (self.committed, self.lsn)
    }
}

/// What a slot's MAC covers: the file's prefix (with its id), the slot's index (a slot copied
/// into the other place does not verify) and its fields.
fn slot_mac_input<'a>(
    index: usize,
    prefix: &'a [u8; PREFIX_LEN],
    b: &'a [u8; SLOT_LEN],
) -> [&'a [u8]; 3] {
    const INDEX: [[u8; 1]; 2] = [[0], [1]];
    [prefix, &INDEX[index], &b[..SLOT_FIELDS]]
}

/// What a record's MAC covers, as [`record_mac`] and the scan both give it.
fn with_record_parts<T>(
    prefix: &[u8; PREFIX_LEN],
    offset: u64,
    lsn: u64,
    prev: &[u8; 32],
    record: &[u8],
    f: impl FnOnce(&[&[u8]]) -> T,
) -> T {
    f(&[
        prefix,
        &offset.to_le_bytes(),
        &lsn.to_le_bytes(),
        prev,
        &(record.len() as u32).to_le_bytes(),
        record,
    ])
}

fn record_mac(
    key: &LocalKey,
    prefix: &[u8; PREFIX_LEN],
    offset: u64,
    lsn: u64,
    prev: &[u8; 32],
    record: &[u8],
) -> [u8; 32] {
    with_record_parts(prefix, offset, lsn, prev, record, |p| {
        key.mac(RECORD_DOMAIN, p)
    })
}

/// What a batch's end mark's MAC covers.
fn end_parts<'a>(
    prefix: &'a [u8; PREFIX_LEN],
    offset: &'a [u8; 8],
    lsn: &'a [u8; 8],
    head: &'a [u8; 32],
) -> [&'a [u8]; 4] {
    [prefix, offset, lsn, head]
}

/// A [`Log`] in one file (feature `std`), sealed to its node: records appended under a header
/// of two commit slots, every structure MAC'd with the node's [`LocalKey`], one group commit
/// per [`sync`](Log::sync).
///
/// **Format** (`docs/protocol.md`, "Durability tickets"): the magic `MZLG`, version 1 and the
/// file's random id; two slots of 104 bytes (generation, committed length, committed records,
/// node id, the MAC of the last committed record, the slot's MAC); then records — a `u32` LE
/// length, the bytes, a MAC over the file's prefix, the record's offset, its ticket, the
/// previous record's MAC, the length and the bytes — and after each batch an end mark (the
/// length `u32::MAX` and a MAC over the prefix, its offset, the batch's last ticket and head).
/// Each record is chained to the one before and bound to its place and its file.
///
/// **Append** encodes the record into a buffer (written to the file, unsynced, once 256 KiB
/// wait). **Sync** writes what waits and the batch's end mark, `fdatasync`s, then writes the
/// *other* slot with the next generation, the new committed length, ticket and head, and
/// `fdatasync`s again: two syncs per batch, however many records it holds. `Ok` only after
/// both. Any failure poisons the log until it is reopened.
///
/// **Open**: the valid slot with the highest generation wins; every record it commits must
/// verify, end with an end mark, and end at its head and ticket; a file shorter than the
/// committed length is refused (`Truncated`: records lost from the end). What follows the
/// committed length is what a crash can leave there — at most one whole batch (written and
/// synced before its slot), or part of one — and is cut off, the cut synced, before `open`
/// returns; two or more whole batches there are refused (an older header over newer records,
/// not a crash). A slot that does not verify is accepted only as a crash explains it: exactly
/// one whole batch, chained to the other slot, follows its committed length and ends the file
/// (the batch was synced before the slot write began); the batch counts and the slot is
/// rewritten. Any other broken slot is refused (`BadMac`), never read as an older state.
/// Not detected: a whole older copy of the file, or its header restored over exactly one
/// newer batch (then the batch is cut, as after a crash before its slot was written): a
/// rollback, `docs/security.md`. [`read`](Self::read) checks a file the same way without
/// writing to it.
///
/// Memory: a 64 KiB read buffer and a record's bytes (at most `max_record`) while opening or
/// replaying, and the batch waiting for the next sync (at most 256 KiB plus one record).
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[derive(Debug)]
pub struct FileLog {
    file: File,
    key: LocalKey,
    node: NodeId,
    prefix: [u8; PREFIX_LEN],
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

/// What checking a file found.
struct Checked {
    prefix: [u8; PREFIX_LEN],
    active: usize,
    slot: Slot,
    /// Where the log ends (the committed length, or past a batch rolled forward), its last
    /// ticket and head.
    end: u64,
    appended: u64,
    head: [u8; 32],
    /// The broken slot must be rewritten to commit a batch rolled forward.
    roll_forward: bool,
}

/// The longest record a log can take: the length field's largest value is the end mark.
const LONGEST: usize = (END_MARK - 1) as usize;

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
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..4].copy_from_slice(&MAGIC);
        prefix[4..8].copy_from_slice(&VERSION.to_le_bytes());
        prefix[8..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let mut header = [0u8; HEADER_LEN];
        header[..PREFIX_LEN].copy_from_slice(&prefix);
        for i in 0..2 {
            let slot = Slot {
                generation: i as u64,
                committed: HEADER_LEN as u64,
                lsn: 0,
                node,
                head: [0; 32],
            };
            header[slot_offset(i)..slot_offset(i) + SLOT_LEN]
                .copy_from_slice(&slot.encode(i, &prefix, key));
        }
        super::write_durable(path, &header)?;
        Self::open(path, node, key, max_record, &mut |_, _| {})
    }

    /// Opens the log of node `node` at `path`, checking every byte against `key` (the type's
    /// documentation lists what is refused), and hands each record to `f` in order as it
    /// verifies. On an error, discard whatever `f` was given: the file was refused as a whole.
    /// A missing file is [`StoreError::Missing`]: a node that lost its log must not start as
    /// if it had none. Opening settles what a crash left: a torn batch is cut off, a batch
    /// whose slot write was cut is committed.
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
        let c = check(&mut file, len, node, key, max_record, f)?;
        let mut log = FileLog {
            file,
            key: key.clone(),
            node,
            prefix: c.prefix,
            max_record,
            active: c.active,
            slot: c.slot,
            end: c.end,
            appended: c.appended,
            head: c.head,
            pending: Vec::new(),
            poisoned: false,
            syncs: 0,
        };
        if c.roll_forward {
            log.write_slot()?;
        }
        if len > c.end {
            // What a crash left past the log: cut it off, durably, before anything is appended
            // after it.
            log.file.set_len(c.end)?;
            log.file.sync_data()?;
        }
        Ok(log)
    }

    /// Checks the log at `path` as [`open`](Self::open) does and hands each record to `f`,
    /// without writing to the file (it is opened read-only: an inspection of a running node's
    /// log, or a copy): what `open` would cut or commit is only left out or counted. The
    /// number of records.
    pub fn read(
        path: &Path,
        node: NodeId,
        key: &LocalKey,
        max_record: usize,
        f: &mut dyn FnMut(Lsn, &[u8]),
    ) -> Result<Lsn, StoreError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::Missing),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        check(&mut file, len, node, key, max_record, f).map(|c| Lsn(c.appended))
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
        self.file
            .write_all(&next.encode(index, &self.prefix, &self.key))?;
        self.file.sync_data()?;
        self.active = index;
        self.slot = next;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let at = self.end.to_le_bytes();
        let lsn = self.appended.to_le_bytes();
        let mac = self
            .key
            .mac(END_DOMAIN, &end_parts(&self.prefix, &at, &lsn, &self.head));
        self.pending.extend_from_slice(&END_MARK.to_le_bytes());
        self.pending.extend_from_slice(&mac);
        self.end += END_MARK_LEN as u64;
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
        self.max_record.min(LONGEST)
    }

    fn append(&mut self, record: &[u8]) -> Result<Lsn, StoreError> {
        super::admit(self.poisoned, record.len(), self.max_record())?;
        let lsn = self.appended + 1;
        let mac = record_mac(&self.key, &self.prefix, self.end, lsn, &self.head, record);
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
        let mut scan = Scan::new(&self.file, &self.key, &self.prefix, self.max_record())?;
        while scan.offset < self.end {
            scan.next(self.end, Some(&mut *f))?;
        }
        Ok(())
    }
}

/// Checks a whole file (the type's rules) and hands every record of the log to `f`.
fn check(
    file: &mut File,
    len: u64,
    node: NodeId,
    key: &LocalKey,
    max_record: usize,
    f: &mut dyn FnMut(Lsn, &[u8]),
) -> Result<Checked, StoreError> {
    let (prefix, active, slot, other_valid) = read_header(file, len, node, key)?;
    if len < slot.committed {
        return Err(StoreError::Truncated {
            committed: slot.committed,
            found: len,
        });
    }
    let max_record = max_record.min(LONGEST);
    let mut scan = Scan::new(file, key, &prefix, max_record)?;
    let mut batch_ended = true;
    while scan.offset < slot.committed {
        batch_ended = scan.next(slot.committed, Some(&mut *f))?;
    }
    if !batch_ended || scan.head != slot.head || scan.lsn != slot.lsn {
        // Every record verified, yet they do not end where the slot says: the file was spliced
        // from two copies of itself.
        return Err(StoreError::Malformed {
            part: Part::Slot,
            offset: slot_offset(active) as u64,
            reason: "its records do not end at the batch it commits (spliced from another copy)",
        });
    }
    // What follows the committed length: whole batches (each ending with its mark) and then
    // whatever part of one. Counted without handing anything to `f`.
    let (committed, lsn, head) = (scan.offset, scan.lsn, scan.head);
    let mut whole = 0;
    let mut first_end = None;
    while scan.offset < len && whole < 2 {
        match scan.next(len, None) {
            Ok(true) => {
                whole += 1;
                first_end.get_or_insert((scan.offset, scan.lsn, scan.head));
            }
            Ok(false) => {}
            Err(_) => break,
        }
    }
    drop(scan);
    let mut c = Checked {
        prefix,
        active,
        slot,
        end: committed,
        appended: lsn,
        head,
        roll_forward: false,
    };
    if other_valid {
        // A crash leaves at most one whole batch past the slot (the next batch is written
        // only after this one's slot): it was never acknowledged and is cut with the rest.
        if whole >= 2 {
            return Err(StoreError::Malformed {
                part: Part::Slot,
                offset: slot_offset(active) as u64,
                reason: "two or more whole batches past the committed length: an older header over newer records",
            });
        }
        return Ok(c);
    }
    // A broken slot is explained by one thing only: a crash while it was being written, to
    // commit the batch that follows (synced before the slot write began), with nothing after
    // that batch. Then the batch counts. Anything else with a broken slot (damage, or damage
    // and a cut anywhere, even between two records of that batch) is refused rather than read
    // as an older state.
    let broken = StoreError::BadMac {
        part: Part::Slot,
        offset: slot_offset(1 - active) as u64,
    };
    match first_end {
        Some((end, end_lsn, end_head)) if whole == 1 && end == len => {
            let mut scan = Scan::new(file, key, &prefix, max_record)?;
            scan.resume(committed, lsn, head)?;
            while scan.offset < end {
                scan.next(end, Some(&mut *f))?;
            }
            c.end = end;
            c.appended = end_lsn;
            c.head = end_head;
            c.roll_forward = true;
            Ok(c)
        }
        _ => Err(broken),
    }
}

/// What is given each record as it verifies.
type Visit<'f> = dyn FnMut(Lsn, &[u8]) + 'f;

/// Reads and verifies records and end marks from the first one on.
struct Scan<'a> {
    reader: std::io::BufReader<&'a File>,
    key: &'a LocalKey,
    prefix: &'a [u8; PREFIX_LEN],
    max_record: usize,
    offset: u64,
    lsn: u64,
    head: [u8; 32],
    buf: Vec<u8>,
}

impl<'a> Scan<'a> {
    fn new(
        file: &'a File,
        key: &'a LocalKey,
        prefix: &'a [u8; PREFIX_LEN],
        max_record: usize,
    ) -> Result<Self, StoreError> {
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
        reader.seek(SeekFrom::Start(HEADER_LEN as u64))?;
        Ok(Scan {
            reader,
            key,
            prefix,
            max_record,
            offset: HEADER_LEN as u64,
            lsn: 0,
            head: [0; 32],
            buf: Vec::new(),
        })
    }

    /// Continues from `offset`, after the record with ticket `lsn` and MAC `head`.
    fn resume(&mut self, offset: u64, lsn: u64, head: [u8; 32]) -> Result<(), StoreError> {
        self.reader.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        self.lsn = lsn;
        self.head = head;
        Ok(())
    }

    /// Reads the record or end mark at `offset`, which must end by `limit`, and verifies it; a
    /// record goes to `f`. Whether it was an end mark.
    fn next(&mut self, limit: u64, f: Option<&mut Visit<'_>>) -> Result<bool, StoreError> {
        let at = self.offset;
        let room = limit.saturating_sub(at);
        let short = |needed: u64| StoreError::TooShort {
            part: Part::Record,
            offset: at,
            needed,
            found: limit,
        };
        if room < END_MARK_LEN as u64 {
            return Err(short(END_MARK_LEN as u64));
        }
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        let mut mac = [0u8; 32];
        if len == END_MARK {
            self.reader.read_exact(&mut mac)?;
            let (offset, lsn) = (at.to_le_bytes(), self.lsn.to_le_bytes());
            let parts = end_parts(self.prefix, &offset, &lsn, &self.head);
            if !self.key.verify(END_DOMAIN, &parts, &mac) {
                return Err(StoreError::BadMac {
                    part: Part::Record,
                    offset: at,
                });
            }
            self.offset += END_MARK_LEN as u64;
            return Ok(true);
        }
        // The length is not authenticated yet: bound it before reading (or allocating) that much.
        if len as usize > self.max_record {
            return Err(StoreError::Malformed {
                part: Part::Record,
                offset: at,
                reason: "longer than the log's largest record",
            });
        }
        let total = u64::from(len) + RECORD_OVERHEAD as u64;
        if room < total {
            return Err(short(total));
        }
        self.buf.resize(len as usize, 0);
        self.reader.read_exact(&mut self.buf)?;
        self.reader.read_exact(&mut mac)?;
        let lsn = self.lsn + 1;
        let key = self.key;
        if !with_record_parts(self.prefix, at, lsn, &self.head, &self.buf, |p| {
            key.verify(RECORD_DOMAIN, p, &mac)
        }) {
            return Err(StoreError::BadMac {
                part: Part::Record,
                offset: at,
            });
        }
        if let Some(f) = f {
            f(Lsn(lsn), &self.buf);
        }
        self.offset += total;
        self.lsn = lsn;
        self.head = mac;
        Ok(false)
    }
}

/// Reads the prefix and both slots: the prefix, the active slot (the valid one with the
/// highest generation), whether the other one is valid too.
fn read_header(
    file: &mut File,
    len: u64,
    node: NodeId,
    key: &LocalKey,
) -> Result<([u8; PREFIX_LEN], usize, Slot, bool), StoreError> {
    let header: [u8; HEADER_LEN] = check_header(file, len, MAGIC, VERSION)?;
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&header[..PREFIX_LEN]);
    let mut slots = [None, None];
    let mut other_node = None;
    for (i, slot) in slots.iter_mut().enumerate() {
        let mut b = [0u8; SLOT_LEN];
        b.copy_from_slice(&header[slot_offset(i)..slot_offset(i) + SLOT_LEN]);
        if Slot::valid(i, &prefix, &b, node, key) {
            *slot = Some(Slot::decode(&b));
        } else if Slot::decode(&b).node != node {
            other_node = Some(Slot::decode(&b).node);
        }
    }
    let (active, slot) = newest(slots, node, other_node, slot_offset)?;
    if slot.committed < HEADER_LEN as u64 {
        return Err(StoreError::Malformed {
            part: Part::Slot,
            offset: slot_offset(active) as u64,
            reason: "committed length inside the header",
        });
    }
    Ok((prefix, active, slot, slots[1 - active].is_some()))
}
