//! An agent written as the natural loop `loop { let m = recv_wait(); handle(m) }`, and a
//! CPU-bound one with a yield point, both compiled by rustc for `wasm32-unknown-unknown`, with
//! the imports a mesh node gives (`mesh::wasm::link_blocking`). They only run after the
//! deploy-time transform (`runtime::transform`): `recv_wait` and `yield` may suspend the agent in
//! the middle of a call, and `tests/midcall.rs` captures it there, moves it, and resumes it;
//! `mielin/tests/midcall.rs` runs `tick` on two nodes. `build.sh` rebuilds
//! `tests/midcall-guest.wasm`.

use std::cell::RefCell;
use std::collections::BTreeMap;

#[link(wasm_import_module = "mesh")]
extern "C" {
    /// Blocks until a message arrives, writes its sender's 16-byte id at `from` and at most `cap`
    /// bytes of it at `ptr`, returns its length (-2 for one longer than `cap`). The host suspends
    /// the agent while the mailbox is empty.
    fn recv_wait(from: *mut u8, ptr: *mut u8, cap: i32) -> i32;
    /// Sends `len` bytes at `ptr` to the agent whose id is at `to`; 0 when queued.
    fn send(to: *const u8, ptr: *const u8, len: i32) -> i32;
    /// A yield point: the host may suspend the agent here (preemption).
    #[link_name = "yield"]
    fn yield_now();
}

/// One message: its sender and its bytes.
fn receive(buffer: &mut [u8]) -> ([u8; 16], &[u8]) {
    let mut from = [0u8; 16];
    let n = unsafe { recv_wait(from.as_mut_ptr(), buffer.as_mut_ptr(), buffer.len() as i32) };
    (from, &buffer[..(n.max(0) as usize).min(buffer.len())])
}

struct State {
    words: BTreeMap<Vec<u8>, u32>,
    seen: Vec<u32>,
}

thread_local! {
    static STATE: RefCell<State> = const {
        RefCell::new(State { words: BTreeMap::new(), seen: Vec::new() })
    };
}

fn handle(message: &[u8]) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        for word in message.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
            *s.words.entry(word.to_vec()).or_insert(0) += 1;
        }
        let n = message.len() as u32;
        s.seen.push(n);
    })
}

fn digest() -> i64 {
    STATE.with(|s| {
        let s = s.borrow();
        let mut h: i64 = 17;
        for (k, v) in &s.words {
            for b in k {
                h = h.wrapping_mul(31).wrapping_add(i64::from(*b));
            }
            h = h.rotate_left(7) ^ i64::from(*v);
        }
        for n in &s.seen {
            h = h.wrapping_mul(1_000_003).wrapping_add(i64::from(*n));
        }
        h
    })
}

/// `loop { let m = recv_wait(); handle(m) }` until the message `stop`; returns a digest of
/// everything handled.
#[no_mangle]
pub extern "C" fn serve() -> i64 {
    let mut buffer = vec![0u8; 256];
    loop {
        let (_, message) = receive(&mut buffer);
        if message == b"stop" {
            return digest();
        }
        handle(message);
    }
}

/// The node's entry (`mielin node` calls `tick`): the same loop for ever, answering each
/// message with the low 32 bits of the digest so far (4 bytes, little-endian).
#[no_mangle]
pub extern "C" fn tick() -> i32 {
    let mut buffer = vec![0u8; 256];
    loop {
        let (from, message) = receive(&mut buffer);
        handle(message);
        let reply = (digest() as i32).to_le_bytes();
        unsafe { send(from.as_ptr(), reply.as_ptr(), 4) };
    }
}

/// Recurses `depth` frames, then receives one message at the bottom: a suspended call under
/// `depth` frames (for measuring unwind and rewind by stack depth).
#[no_mangle]
pub extern "C" fn deep(depth: i32) -> i64 {
    #[inline(never)]
    fn down(depth: i32, acc: i64) -> i64 {
        if depth <= 0 {
            let mut b = [0u8; 8];
            let mut from = [0u8; 16];
            let n = unsafe { recv_wait(from.as_mut_ptr(), b.as_mut_ptr(), 8) };
            return acc.wrapping_add(i64::from(n)).wrapping_add(i64::from(b[0]));
        }
        let next = acc.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i64::from(depth));
        // `black_box` keeps LLVM from turning the recursion into a loop: the frames are real.
        std::hint::black_box(down(depth - 1, next)).wrapping_add(i64::from(depth) ^ acc)
    }
    down(depth, 1)
}

/// A CPU-bound loop: `steps` steps of a xorshift generator folded into a histogram on the heap,
/// with a yield point at the header of the outer loop (every 1,000 steps).
#[no_mangle]
pub extern "C" fn crunch(steps: i64) -> i64 {
    let mut counts = vec![0u32; 64];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut done = 0i64;
    while done < steps {
        unsafe { yield_now() };
        let inner = (steps - done).min(1_000);
        for _ in 0..inner {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            counts[(x % 64) as usize] += 1;
        }
        done += inner;
    }
    let mut h: i64 = 0;
    for (i, c) in counts.iter().enumerate() {
        h = h.wrapping_mul(31).wrapping_add(i as i64 * i64::from(*c));
    }
    h ^ x as i64
}
