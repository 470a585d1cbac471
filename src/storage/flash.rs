//! The [`Log`] of a board: records in NOR flash through `sequential-storage` (feature
//! `flash`, no allocator), and [`RamFlash`], a NOR flash in RAM whose power can be cut at any
//! write or erase, for tests and for boards (QEMU's mps2) without a flash model.

use super::{Log, Lsn};
use crate::seal::{LocalKey, Part, StoreError};
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::queue::{QueueConfig, QueueStorage};

/// What a record's MAC is under.
const DOMAIN: &str = "mielin-cells/flash-log/record/v1";
/// A record's framing in its flash item: its ticket (`u64` LE) before the bytes, a MAC (32)
/// after them over the ticket, the previous record's MAC and the bytes.
pub const FLASH_RECORD_OVERHEAD: usize = 8 + 32;

/// Drives a future to completion by polling it in a loop. The flash futures of a RAM flash or
/// of a blocking driver are ready at the first poll; an interrupt-driven driver's are polled
/// until ready (a busy wait: the log's calls are synchronous on purpose, so the protocol's
/// state machine needs no executor).
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        core::hint::spin_loop();
    }
}

type Queue<S> = QueueStorage<S, Cache<Uncached, Uncached, Uncached>>;

/// A [`Log`] in NOR flash (feature `flash`): each record one item of a `sequential-storage`
/// queue, framed with its ticket and a MAC chained to the record before it under the node's
/// [`LocalKey`] ([`LocalKey::UNKEYED`] on a board without a secret: then the MAC is a checksum
/// chain, which finds damage and gaps but not a forger). No allocation: records pass through
/// a buffer of `B` bytes, so a record holds at most `B - 40` bytes (and must fit a flash page
/// with the queue's item header).
///
/// **Durability.** A NOR write is durable when it returns, so every `append` is durable when
/// it returns `Ok`: `sync` has nothing left to do. **Faults** (`docs/protocol.md`, "Durability
/// tickets"): a power cut during a write leaves the item torn, and the queue ignores it (its
/// CRC fails): the log ends before it, as if the append had not begun. A record that does not
/// verify, or a ticket that skips one (the queue ignored a damaged item in the middle), makes
/// [`open`](Self::open) refuse the log rather than read a log with a hole. Not detected: damage
/// to the records at the *end* of the log after they were acknowledged (the last one, or the
/// last several): the queue skips each like a write cut by a power failure, and the log loses
/// them. Erased flash opens as an empty log: a new board cannot be told from an erased one.
pub struct FlashLog<S: NorFlash, const B: usize> {
    queue: Queue<S>,
    key: LocalKey,
    appended: u64,
    head: [u8; 32],
    poisoned: bool,
    buf: [u8; B],
}

impl<S: NorFlash, const B: usize> core::fmt::Debug for FlashLog<S, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlashLog")
            .field("appended", &self.appended)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<S: NorFlash, const B: usize> FlashLog<S, B> {
    /// Opens the log kept in `range` of `flash` (page-aligned; erased flash is an empty log),
    /// checking every record against `key` and handing each to `f` in order. Refused when a
    /// record does not verify ([`StoreError::BadMac`], `offset` its ticket), when tickets skip
    /// one ([`StoreError::Malformed`]), when the range is not whole pages, or when the queue
    /// reports corruption it could not repair.
    pub fn open(
        flash: S,
        range: core::ops::Range<u32>,
        key: &LocalKey,
        f: &mut dyn FnMut(Lsn, &[u8]),
    ) -> Result<Self, StoreError> {
        const {
            assert!(
                B >= FLASH_RECORD_OVERHEAD,
                "the buffer must hold a record's framing"
            )
        };
        let config = QueueConfig::try_new(range).map_err(|_| StoreError::Malformed {
            part: Part::Header,
            offset: 0,
            reason: "the flash range is not whole pages (at least two)",
        })?;
        let mut log = FlashLog {
            queue: QueueStorage::new(flash, config, Cache::new_uncached()),
            key: key.clone(),
            appended: 0,
            head: [0; 32],
            poisoned: false,
            buf: [0; B],
        };
        let (n, head) = log.scan(f)?;
        log.appended = n;
        log.head = head;
        Ok(log)
    }

    /// Erases `range` of `flash` and opens the new, empty log there: for a new board, or for a
    /// flash that [`open`](Self::open) refuses (an erase cut by a power failure leaves one).
    /// Everything the range held is gone.
    pub fn format(
        flash: S,
        range: core::ops::Range<u32>,
        key: &LocalKey,
    ) -> Result<Self, StoreError> {
        let config = QueueConfig::try_new(range.clone()).map_err(|_| StoreError::Malformed {
            part: Part::Header,
            offset: 0,
            reason: "the flash range is not whole pages (at least two)",
        })?;
        let mut queue: Queue<S> = QueueStorage::new(flash, config, Cache::new_uncached());
        block_on(queue.erase_all()).map_err(|_| StoreError::WriteFailed)?;
        Self::open(queue.destroy().0, range, key, &mut |_, _| {})
    }

    /// The flash, back (its contents are the log).
    pub fn into_flash(self) -> S {
        self.queue.destroy().0
    }

    /// Reads every record in order, verifying the chain; their count and the last MAC.
    fn scan(&mut self, f: &mut dyn FnMut(Lsn, &[u8])) -> Result<(u64, [u8; 32]), StoreError> {
        let key = &self.key;
        let buf = &mut self.buf;
        let queue = &mut self.queue;
        block_on(async {
            let mut it = queue.iter().await.map_err(corrupted)?;
            let mut n = 0u64;
            let mut head = [0u8; 32];
            while let Some(entry) = it.next(&mut buf[..]).await.map_err(corrupted)? {
                let item: &[u8] = &entry;
                let lsn = n + 1;
                if item.len() < FLASH_RECORD_OVERHEAD {
                    return Err(StoreError::Malformed {
                        part: Part::LogRecord,
                        offset: lsn,
                        reason: "shorter than a record's framing",
                    });
                }
                let (ticket, rest) = item.split_at(8);
                let (record, mac) = rest.split_at(rest.len() - 32);
                let mut t = [0u8; 8];
                t.copy_from_slice(ticket);
                if !key.verify(DOMAIN, &[ticket, &head, record], mac) {
                    return Err(StoreError::BadMac {
                        part: Part::LogRecord,
                        offset: lsn,
                    });
                }
                if u64::from_le_bytes(t) != lsn {
                    return Err(StoreError::Malformed {
                        part: Part::LogRecord,
                        offset: lsn,
                        reason: "a record is missing before this one",
                    });
                }
                f(Lsn(lsn), record);
                head.copy_from_slice(mac);
                n = lsn;
            }
            Ok((n, head))
        })
    }
}

fn corrupted<E>(_: sequential_storage::Error<E>) -> StoreError {
    StoreError::Malformed {
        part: Part::Header,
        offset: 0,
        reason: "the flash queue is corrupted beyond its own repair",
    }
}

impl<S: NorFlash, const B: usize> Log for FlashLog<S, B> {
    fn max_record(&self) -> usize {
        B.saturating_sub(FLASH_RECORD_OVERHEAD)
    }

    fn append(&mut self, record: &[u8]) -> Result<Lsn, StoreError> {
        super::admit(self.poisoned, record.len(), self.max_record())?;
        let lsn = self.appended + 1;
        let ticket = lsn.to_le_bytes();
        let mac = self.key.mac(DOMAIN, &[&ticket, &self.head, record]);
        let len = FLASH_RECORD_OVERHEAD + record.len();
        self.buf[..8].copy_from_slice(&ticket);
        self.buf[8..8 + record.len()].copy_from_slice(record);
        self.buf[8 + record.len()..len].copy_from_slice(&mac);
        match block_on(self.queue.push(&self.buf[..len], false)) {
            Ok(()) => {
                self.appended = lsn;
                self.head = mac;
                Ok(Lsn(lsn))
            }
            Err(sequential_storage::Error::FullStorage) => Err(StoreError::LogFull {
                capacity: self.queue.flash_range().len() as u64,
            }),
            Err(sequential_storage::Error::ItemTooBig) => Err(StoreError::RecordTooLong {
                len: record.len() as u64,
                max: self.max_record() as u64,
            }),
            Err(_) => {
                // The item may or may not be on the flash: only a reopen can tell.
                self.poisoned = true;
                Err(StoreError::WriteFailed)
            }
        }
    }

    fn sync(&mut self) -> Result<Lsn, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        Ok(self.durable())
    }

    fn durable(&self) -> Lsn {
        Lsn(self.appended)
    }

    fn appended(&self) -> Lsn {
        Lsn(self.appended)
    }

    fn replay(&mut self, f: &mut dyn FnMut(Lsn, &[u8])) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        self.scan(f).map(|_| ())
    }
}

/// How much of the operation the power fails in lands ([`RamFlash::cut_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// Nothing of it.
    Nothing,
    /// The first half of a write's words; the first half of an erase's first page.
    Half,
    /// All of it, and the power fails before the flash could report success.
    All,
}

/// A NOR flash in RAM (feature `flash`) over a caller's buffer: writes only clear bits, erases
/// set whole pages of `E` bytes to `0xff`, writes and reads are in words of `W` bytes, and a
/// **power cut** can be armed at any write or erase. The cut operation lands as armed
/// ([`Landing`]), then it and every later operation fail until [`restore`](Self::restore),
/// which is the reset after the power comes back. The buffer is the medium: keep it across a reset (in RAM
/// that survives it, or in a file through semihosting under QEMU) and the log is there after.
#[derive(Debug)]
pub struct RamFlash<'a, const W: usize, const E: usize> {
    mem: &'a mut [u8],
    /// Operations to let through before the cut, and what of it lands, if one is armed.
    cut_in: Option<(u64, Landing)>,
    down: bool,
    ops: u64,
    written: u64,
}

impl<'a, const W: usize, const E: usize> RamFlash<'a, W, E> {
    /// A flash over `mem` as it is (fill it with `0xff` for an erased flash).
    ///
    /// # Panics
    /// If `mem` is not whole pages of `E` bytes (`E` must be whole words of `W`, checked when
    /// the type is used): a flash of another shape is a programming error, not a fault.
    pub fn new(mem: &'a mut [u8]) -> Self {
        const { assert!(W > 0 && E.is_multiple_of(W), "pages of whole words") };
        assert!(mem.len().is_multiple_of(E), "a flash of whole pages");
        RamFlash {
            mem,
            cut_in: None,
            down: false,
            ops: 0,
            written: 0,
        }
    }

    /// Cuts the power during the write or erase after the next `n` (0: the very next one),
    /// landing `landing` of it.
    pub fn cut_after(&mut self, n: u64, landing: Landing) {
        self.cut_in = Some((n, landing));
    }

    /// The power is back (a reset): operations work again; no cut is armed.
    pub fn restore(&mut self) {
        self.down = false;
        self.cut_in = None;
    }

    /// Writes and erases so far (the cut one included).
    pub fn operations(&self) -> u64 {
        self.ops
    }

    /// Bytes written so far (erases not counted).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The medium as it is now: what a harness mirrors to keep it across a reset (a file
    /// through semihosting under QEMU).
    pub fn contents(&self) -> &[u8] {
        self.mem
    }

    /// Whether an armed power cut has happened (every operation fails until
    /// [`restore`](Self::restore)).
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// What of this operation lands if the power fails in it (`None`: it does not); fails if
    /// the power is off.
    fn begin(&mut self) -> Result<Option<Landing>, NorFlashErrorKind> {
        if self.down {
            return Err(NorFlashErrorKind::Other);
        }
        self.ops += 1;
        match self.cut_in.as_mut() {
            Some((0, landing)) => {
                let landing = *landing;
                self.cut_in = None;
                self.down = true;
                Ok(Some(landing))
            }
            Some((n, _)) => {
                *n -= 1;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(), NorFlashErrorKind> {
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.mem.len())
        {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        Ok(())
    }
}

impl<const W: usize, const E: usize> ErrorType for RamFlash<'_, W, E> {
    type Error = NorFlashErrorKind;
}

impl<const W: usize, const E: usize> ReadNorFlash for RamFlash<'_, W, E> {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if self.down {
            return Err(NorFlashErrorKind::Other);
        }
        self.check(offset, bytes.len(), 1)?;
        let start = offset as usize;
        bytes.copy_from_slice(&self.mem[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const W: usize, const E: usize> NorFlash for RamFlash<'_, W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if to < from {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        self.check(from, (to - from) as usize, E)?;
        let cut = self.begin()?;
        let (from, to) = (from as usize, to as usize);
        let end = match cut {
            None | Some(Landing::All) => to,
            Some(Landing::Half) => (from + E / 2).min(to),
            Some(Landing::Nothing) => from,
        };
        self.mem[from..end].fill(0xff);
        match cut {
            Some(_) => Err(NorFlashErrorKind::Other),
            None => Ok(()),
        }
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len(), W)?;
        let cut = self.begin()?;
        let len = match cut {
            None | Some(Landing::All) => bytes.len(),
            Some(Landing::Half) => bytes.len() / W / 2 * W,
            Some(Landing::Nothing) => 0,
        };
        let start = offset as usize;
        for (m, b) in self.mem[start..start + len].iter_mut().zip(bytes) {
            *m &= *b; // NOR: a write only clears bits
        }
        self.written += len as u64;
        match cut {
            Some(_) => Err(NorFlashErrorKind::Other),
            None => Ok(()),
        }
    }
}

/// A word of a [`RamFlash`] may be written again: a write only clears bits, as NOR flash does.
impl<const W: usize, const E: usize> MultiwriteNorFlash for RamFlash<'_, W, E> {}
