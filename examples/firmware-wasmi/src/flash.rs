//! The board's NOR flash: QEMU's mps2 has no flash model, so it is a `RamFlash` (the crate's
//! NOR flash in RAM: writes only clear bits, erases set pages) kept in a file on the host through
//! semihosting. Every write and erase is mirrored to the file as it lands, so the flash is there
//! after a reset, QEMU's or the board's own.
//!
//! A power cut can be armed (`Cmd::CutPower`): at the chosen operation, half of it lands, the
//! half is mirrored, and the board resets at once, as if the power had failed there.

use alloc::boxed::Box;
use alloc::vec;
use cortex_m_semihosting::{hprintln, syscall};
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use mielin_cells::storage::{Landing, RamFlash};

/// Words of 4 bytes, pages of 4 KiB.
pub const PAGE: usize = 4096;
/// The journal's pages.
pub const JOURNAL_PAGES: usize = 4;
/// The agents' pages (the keeper's map).
pub const KEEPER_PAGES: usize = 64;
/// The file in QEMU's working directory that holds the flash.
const FILE: &str = "mielin-board-flash.bin\0";

type Ram = RamFlash<'static, 4, PAGE>;

/// A region of the flash, mirrored to the file at `base`.
pub struct Mirrored {
    ram: Ram,
    fd: usize,
    base: usize,
}

impl Mirrored {
    /// Writes `from..to` of the region to the file.
    fn mirror(&mut self, from: usize, to: usize) {
        let bytes = &self.ram.contents()[from..to];
        // SAFETY: semihosting calls with a file handle QEMU gave and a buffer that lives
        // through the call; they only read it.
        unsafe {
            syscall!(SEEK, self.fd, self.base + from);
            syscall!(WRITE, self.fd, bytes.as_ptr(), bytes.len());
        }
    }

    /// After an operation on `from..to`: mirrored; and if the power was cut in it, the board
    /// resets now (nothing after the cut runs).
    fn landed<T>(
        &mut self,
        r: Result<T, NorFlashErrorKind>,
        from: usize,
        to: usize,
    ) -> Result<T, NorFlashErrorKind> {
        let to = to.min(self.ram.contents().len());
        if from < to {
            self.mirror(from, to);
        }
        if self.ram.is_down() {
            hprintln!(
                "board: power cut in a flash operation at {:#x}",
                self.base + from
            );
            cortex_m::peripheral::SCB::sys_reset();
        }
        r
    }

    /// Cuts the power at the `n`-th write or erase from now (0: the next), landing half of it.
    pub fn cut_after(&mut self, n: u64) {
        self.ram.cut_after(n, Landing::Half);
    }
}

impl ErrorType for Mirrored {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Mirrored {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.ram.read(offset, bytes).await
    }

    fn capacity(&self) -> usize {
        self.ram.capacity()
    }
}

impl NorFlash for Mirrored {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let r = self.ram.erase(from, to).await;
        self.landed(r, from as usize, to as usize)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let r = self.ram.write(offset, bytes).await;
        self.landed(r, offset as usize, offset as usize + bytes.len())
    }
}

impl MultiwriteNorFlash for Mirrored {}

/// Opens the flash file (made, erased, if there is none) and reads it: the journal's region
/// and the keeper's. `None` when semihosting cannot open it.
pub fn load() -> Option<(Mirrored, Mirrored)> {
    let journal_len = JOURNAL_PAGES * PAGE;
    let keeper_len = KEEPER_PAGES * PAGE;
    let total = journal_len + keeper_len;
    let mem: &'static mut [u8] = Box::leak(vec![0xffu8; total].into_boxed_slice());
    // SAFETY: semihosting calls with a NUL-terminated name and buffers that live through them.
    let fd = unsafe {
        let name = FILE.as_bytes();
        let fd = syscall!(
            OPEN,
            name.as_ptr(),
            cortex_m_semihosting::nr::open::RW_BINARY,
            name.len() - 1
        );
        let fd = match fd as isize {
            -1 => {
                // No file yet: a new, erased flash.
                let fd = syscall!(
                    OPEN,
                    name.as_ptr(),
                    cortex_m_semihosting::nr::open::RW_TRUNC_BINARY,
                    name.len() - 1
                );
                if fd as isize == -1 {
                    return None;
                }
                syscall!(WRITE, fd, mem.as_ptr(), total);
                fd
            }
            _ => fd,
        };
        syscall!(SEEK, fd, 0);
        let missing = syscall!(READ, fd, mem.as_mut_ptr(), total);
        if missing != 0 {
            // A shorter file: the rest is erased flash.
            let read = total - missing;
            mem[read..].fill(0xff);
        }
        fd
    };
    let (j, k) = mem.split_at_mut(journal_len);
    Some((
        Mirrored {
            ram: RamFlash::new(j),
            fd,
            base: 0,
        },
        Mirrored {
            ram: RamFlash::new(k),
            fd,
            base: journal_len,
        },
    ))
}
