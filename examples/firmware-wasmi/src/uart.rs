//! UART 0 of the mps2 FPGA images: an ARM CMSDK APB UART at 0x4000_4000, polled. QEMU
//! connects it to the first `-serial`. Its receiver holds one byte; QEMU offers the next only
//! once that one is read, so no byte is lost while the board is busy.

const BASE: usize = 0x4000_4000;
const DATA: *mut u32 = BASE as *mut u32;
const STATE: *mut u32 = (BASE + 0x4) as *mut u32;
const CTRL: *mut u32 = (BASE + 0x8) as *mut u32;
const BAUDDIV: *mut u32 = (BASE + 0x10) as *mut u32;

const TX_FULL: u32 = 1 << 0;
const RX_FULL: u32 = 1 << 1;
const TX_EN: u32 = 1 << 0;
const RX_EN: u32 = 1 << 1;

/// Enables the transmitter and receiver (the divisor is the smallest the UART allows; QEMU
/// does not model the line's speed).
pub fn init() {
    // SAFETY: the UART's registers, at the address the mps2 images map them; nothing else
    // touches them.
    unsafe {
        BAUDDIV.write_volatile(16);
        CTRL.write_volatile(TX_EN | RX_EN);
    }
}

/// The received byte, if there is one.
pub fn read() -> Option<u8> {
    // SAFETY: as in `init`.
    unsafe {
        if STATE.read_volatile() & RX_FULL != 0 {
            Some(DATA.read_volatile() as u8)
        } else {
            None
        }
    }
}

/// Sends `bytes`, waiting for the transmitter between bytes.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: as in `init`.
        unsafe {
            while STATE.read_volatile() & TX_FULL != 0 {}
            DATA.write_volatile(u32::from(b));
        }
    }
}
