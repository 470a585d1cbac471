//! Memory images for the wire-size report and the compression benches, generated
//! deterministically so every run measures the same bytes.
#![allow(dead_code)]

pub const MIB: usize = 1 << 20;
pub const CHUNK: usize = 4096;

struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// A heap-like chunk: 4-byte words that are pointers into a 1 MiB heap (aligned), small
/// integers, or runs of English-like text, the way a Rust or C heap looks.
fn heap_chunk(rng: &mut XorShift, out: &mut [u8]) {
    const WORDS: [&[u8]; 8] = [
        b"agent ",
        b"state ",
        b"sensor ",
        b"reading ",
        b"value=",
        b"ok ",
        b"node-7 ",
        b"temp ",
    ];
    let mut i = 0;
    while i + 4 <= out.len() {
        let r = rng.next();
        match r % 4 {
            0 | 1 => {
                let ptr = (0x0001_0000 + (r >> 8) % (MIB as u32)) & !7;
                out[i..i + 4].copy_from_slice(&ptr.to_le_bytes());
                i += 4;
            }
            2 => {
                out[i..i + 4].copy_from_slice(&(r >> 24).to_le_bytes());
                i += 4;
            }
            _ => {
                let w = WORDS[(r >> 5) as usize % WORDS.len()];
                let n = w.len().min(out.len() - i);
                out[i..i + n].copy_from_slice(&w[..n]);
                i += n;
            }
        }
    }
}

/// `len` bytes in which `live_percent` of the 4 KiB chunks (spread evenly) hold heap-like
/// data and the rest are zero.
pub fn heap_image(len: usize, live_percent: usize, seed: u32) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    let mut m = vec![0u8; len];
    let chunks = len / CHUNK;
    let live = chunks * live_percent / 100;
    for k in 0..live {
        let c = k * chunks / live.max(1);
        heap_chunk(&mut rng, &mut m[c * CHUNK..(c + 1) * CHUNK]);
    }
    m
}

/// `len` pseudo-random bytes.
pub fn random_image(len: usize, seed: u32) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Changes one word in `percent` of all 4 KiB chunks, choosing live (non-zero) chunks spread
/// evenly, as a running agent writes to its heap between two snapshots.
pub fn touch(memory: &mut [u8], percent: usize, seed: u32) {
    let live: Vec<usize> = (0..memory.len() / CHUNK)
        .filter(|c| memory[c * CHUNK..(c + 1) * CHUNK].iter().any(|&b| b != 0))
        .collect();
    let n = (memory.len() / CHUNK * percent)
        .div_ceil(100)
        .min(live.len());
    let mut rng = XorShift(seed | 1);
    for k in 0..n {
        let c = live[k * live.len() / n];
        let at = c * CHUNK + (rng.next() as usize % (CHUNK - 4));
        memory[at..at + 4].copy_from_slice(&rng.next().to_le_bytes());
    }
}

/// A valid module of `len` bytes: the header, a custom section, heap-like filler (binaries
/// compress about as well as code does; it is not compressed on the wire anyway).
pub fn module(len: usize) -> Vec<u8> {
    let mut out = b"\0asm\x01\0\0\0\0".to_vec();
    let size = (len - out.len() - 5) as u32;
    for i in 0..5 {
        let b = ((size >> (7 * i)) & 0x7f) as u8;
        out.push(if i < 4 { b | 0x80 } else { b });
    }
    out.extend_from_slice(&[3, b'p', b'a', b'd']);
    let mut rng = XorShift(99);
    while out.len() < len {
        out.push(rng.next() as u8);
    }
    out
}
