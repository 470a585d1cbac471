//! What the board and the host share, compiled into both (`no_std` + `alloc` here, `std` in
//! `examples/mcu_roundtrip.rs`): the serial link's framing, the commands beside the mesh
//! frames, the agents' host for the mesh protocol ([`Cells`]: the library's host, keeping
//! nothing across a reset, with the DNA in flash) and the workload.
//!
//! Link frame: `0x00 COBS(kind, body, CRC-32 of kind and body) 0x00`. Kind 1 carries one mesh frame
//! (`mielin_cells::mesh::frame`), kind 2 a command ([`Cmd`]). A frame whose COBS or CRC does not
//! check is dropped and counted, as a lost packet: the mesh protocol re-sends what matters.

// Each side uses a different part of this file.
#![allow(dead_code)]

use alloc::vec::Vec;
use mielin_cells::mesh::cells::{NoKeeper, Open};
use mielin_cells::migration::{DecodeLimits, DnaSlots};
use mielin_cells::runtime::{LiveAgent, Runtime, Val};
use mielin_cells::{AgentId, CellError, Dna, NodeId};

/// The host process's node.
pub const HOST: NodeId = NodeId::from_bytes(*b"host-process-001");
/// The board's node.
pub const BOARD: NodeId = NodeId::from_bytes(*b"mps2-an385-board");

/// Link frame kinds.
pub const KIND_MESH: u8 = 1;
/// A [`Cmd`].
pub const KIND_CMD: u8 = 2;

/// Fuel per call: far more than a step of either agent needs.
pub const FUEL_PER_CALL: u64 = 50_000_000;

/// The counter agent (`examples/agents/counter.wat`, compiled); the host checks that it equals
/// what `wat` makes of the source.
pub static COUNTER_WASM: &[u8] = include_bytes!("../agents/counter.wasm");
/// The rustc-compiled agent with a heap and a stack-pointer global (`examples/guest-rust`).
pub static RUST_GUEST_WASM: &[u8] = include_bytes!("../../../tests/guest.wasm");
/// The CPU-bound agent of `examples/agents/crunch.wat` after the deploy-time transform
/// (`agents/crunch.async.wasm`: the board cannot run wasm-opt; `tests/cells_midcall.rs` checks
/// that it is the transform of its source). It is preempted at its yield point and moves in
/// the middle of its loop.
pub static CRUNCH_WASM: &[u8] = include_bytes!("../agents/crunch.async.wasm");

/// `mesh.yield` suspends a call with less fuel than this left: a call of the crunch runs about
/// a million units of fuel (some 80 of its 1,000 outer iterations) before it is preempted, so
/// it takes a dozen ticks and can move between them. Only agents that import `mesh.yield`
/// notice.
pub const PREEMPT_BELOW: u64 = FUEL_PER_CALL - 1_000_000;

/// CRC-32 (IEEE 802.3, reflected), bit by bit: small, and fast enough for a serial link.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Appends one link frame to `out`: a 0 delimiter, the COBS-encoded bytes, a 0 delimiter.
/// (The leading delimiter ends whatever half frame a reset or a lost byte left on the line.)
pub fn encode_link(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    let mut raw = Vec::with_capacity(body.len() + 5);
    raw.push(kind);
    raw.extend_from_slice(body);
    let crc = crc32(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    out.push(0);
    let start = out.len();
    out.resize(start + cobs::max_encoding_length(raw.len()), 0);
    let n = cobs::encode(&raw, &mut out[start..]);
    out.truncate(start + n);
    out.push(0);
}

/// Why a link frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Longer than the receiver accepts (its bytes up to the next delimiter are skipped).
    TooLong,
    /// Not valid COBS.
    Cobs,
    /// Shorter than a kind and a CRC.
    Short,
    /// The CRC does not match: bytes were changed or lost.
    Crc,
}

/// Cuts the byte stream into link frames at the 0 delimiters and checks them.
pub struct Deframer {
    buf: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl Deframer {
    /// Accepts frames of at most `max` encoded bytes.
    pub fn new(max: usize) -> Deframer {
        Deframer {
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// Takes one byte; at a delimiter, gives the frame that ended: `(kind, body)`.
    pub fn push(&mut self, byte: u8) -> Option<Result<(u8, Vec<u8>), LinkError>> {
        if byte != 0 {
            if self.skipping {
                return None;
            }
            if self.buf.len() >= self.max {
                self.buf = Vec::new();
                self.skipping = true;
                return Some(Err(LinkError::TooLong));
            }
            self.buf.push(byte);
            return None;
        }
        if self.skipping {
            self.skipping = false;
            return None;
        }
        if self.buf.is_empty() {
            return None;
        }
        let mut frame = core::mem::take(&mut self.buf);
        let n = match cobs::decode_in_place(&mut frame) {
            Ok(n) => n,
            Err(_) => return Some(Err(LinkError::Cobs)),
        };
        frame.truncate(n);
        if n < 5 {
            return Some(Err(LinkError::Short));
        }
        let crc = u32::from_le_bytes([frame[n - 4], frame[n - 3], frame[n - 2], frame[n - 1]]);
        frame.truncate(n - 4);
        if crc32(&frame) != crc {
            return Some(Err(LinkError::Crc));
        }
        let kind = frame.remove(0);
        Some(Ok((kind, frame)))
    }
}

/// Commands beside the mesh frames. They steer the demonstration (what to run, what to
/// report); no agent state travels in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Board → host, at boot: the heap's size and the largest agent memory it accepts.
    Ready { heap: u32, max_memory: u32 },
    /// Host → board: run `count` steps of `agent` from input `from`, then hand it back.
    Work {
        agent: AgentId,
        from: u32,
        count: u32,
    },
    /// Board → host: the steps ran; the last result and the instructions they took.
    Worked {
        agent: AgentId,
        value: i64,
        insns: u64,
    },
    /// Host → board: whether the board says it holds DNA it has in flash, and whether it sends
    /// agents back as a delta against the memory they came with.
    Mode { claim_dna: bool, delta: bool },
    /// Host → board: report and reset the cost counters.
    CostQuery,
    /// Board → host: instructions spent handling mesh frames and timers (not waiting on the
    /// UART) since the last query, link frames dropped, and the heap's peak since the last
    /// query and its use now.
    Cost {
        insns: u64,
        link_errors: u32,
        heap_peak: u32,
        heap_used: u32,
    },
    /// Host → board: which agents do you hold?
    StatusQuery,
    /// Board → host: agents running, and copies prepared (in doubt), with their epochs.
    Status {
        running: Vec<(AgentId, u64)>,
        prepared: Vec<(AgentId, u64)>,
    },
    /// Board → host: a line for the log.
    Log(Vec<u8>),
    /// Host → board: cut the power at the `after`-th write or erase of the agents' flash from
    /// now (0: the next one), half of it landing; the board resets there.
    CutPower { after: u32 },
    /// Host → board: tick the agents `count` times (each tick continues a suspended call:
    /// `Cells::tick`), report `agent`'s `result` global as a [`Cmd::Worked`], and hand it back.
    Tick { agent: AgentId, count: u32 },
}

fn put_id(out: &mut Vec<u8>, a: AgentId) {
    out.extend_from_slice(a.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn id(&mut self) -> Option<AgentId> {
        Some(AgentId::from_bytes(self.take(16)?.try_into().ok()?))
    }
    fn list(&mut self) -> Option<Vec<(AgentId, u64)>> {
        let n = self.u8()?;
        (0..n).map(|_| Some((self.id()?, self.u64()?))).collect()
    }
}

impl Cmd {
    /// The command's bytes (a link frame's body).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Cmd::Ready { heap, max_memory } => {
                o.push(1);
                o.extend_from_slice(&heap.to_le_bytes());
                o.extend_from_slice(&max_memory.to_le_bytes());
            }
            Cmd::Work { agent, from, count } => {
                o.push(2);
                put_id(&mut o, *agent);
                o.extend_from_slice(&from.to_le_bytes());
                o.extend_from_slice(&count.to_le_bytes());
            }
            Cmd::Worked {
                agent,
                value,
                insns,
            } => {
                o.push(3);
                put_id(&mut o, *agent);
                o.extend_from_slice(&value.to_le_bytes());
                o.extend_from_slice(&insns.to_le_bytes());
            }
            Cmd::Mode { claim_dna, delta } => {
                o.push(4);
                o.push(u8::from(*claim_dna) | u8::from(*delta) << 1);
            }
            Cmd::CostQuery => o.push(5),
            Cmd::Cost {
                insns,
                link_errors,
                heap_peak,
                heap_used,
            } => {
                o.push(6);
                o.extend_from_slice(&insns.to_le_bytes());
                o.extend_from_slice(&link_errors.to_le_bytes());
                o.extend_from_slice(&heap_peak.to_le_bytes());
                o.extend_from_slice(&heap_used.to_le_bytes());
            }
            Cmd::StatusQuery => o.push(7),
            Cmd::Status { running, prepared } => {
                o.push(8);
                for list in [running, prepared] {
                    o.push(list.len() as u8);
                    for (a, e) in list {
                        put_id(&mut o, *a);
                        o.extend_from_slice(&e.to_le_bytes());
                    }
                }
            }
            Cmd::Log(text) => {
                o.push(9);
                o.extend_from_slice(text);
            }
            Cmd::CutPower { after } => {
                o.push(10);
                o.extend_from_slice(&after.to_le_bytes());
            }
            Cmd::Tick { agent, count } => {
                o.push(11);
                put_id(&mut o, *agent);
                o.extend_from_slice(&count.to_le_bytes());
            }
        }
        o
    }

    /// Reads what [`Cmd::encode`] wrote; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<Cmd> {
        let mut r = Reader(b);
        let cmd = match r.u8()? {
            1 => Cmd::Ready {
                heap: r.u32()?,
                max_memory: r.u32()?,
            },
            2 => Cmd::Work {
                agent: r.id()?,
                from: r.u32()?,
                count: r.u32()?,
            },
            3 => Cmd::Worked {
                agent: r.id()?,
                value: r.u64()? as i64,
                insns: r.u64()?,
            },
            4 => {
                let f = r.u8()?;
                Cmd::Mode {
                    claim_dna: f & 1 != 0,
                    delta: f & 2 != 0,
                }
            }
            5 => Cmd::CostQuery,
            6 => Cmd::Cost {
                insns: r.u64()?,
                link_errors: r.u32()?,
                heap_peak: r.u32()?,
                heap_used: r.u32()?,
            },
            7 => Cmd::StatusQuery,
            8 => Cmd::Status {
                running: r.list()?,
                prepared: r.list()?,
            },
            9 => return Some(Cmd::Log(r.0.to_vec())),
            10 => Cmd::CutPower { after: r.u32()? },
            11 => Cmd::Tick {
                agent: r.id()?,
                count: r.u32()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(cmd)
    }
}

/// The input of step `i`, the same on every node.
pub fn input(i: u32) -> i32 {
    (i.wrapping_mul(2_654_435_761) >> 8) as i32
}

/// One step of either agent (both export `step(i32) -> i64`).
pub fn step<T>(live: &mut LiveAgent<T>, i: u32) -> Result<i64, CellError> {
    one_i64(live.call("step", &[Val::I32(input(i))])?)
}

/// The agent's `digest()`: everything it holds, folded.
pub fn digest<T>(live: &mut LiveAgent<T>) -> Result<i64, CellError> {
    one_i64(live.call("digest", &[])?)
}

fn one_i64(v: Vec<Val>) -> Result<i64, CellError> {
    match v.as_slice() {
        [Val::I64(x)] => Ok(*x),
        _ => Err(CellError::SerializationFailed {
            reason: "the agent's export did not return one i64",
        }),
    }
}

/// One side's agents, for the mesh protocol: the library's host with the DNA in flash
/// (`DnaSlots`, borrowed), keeping nothing across a reset. The same code on the board and on
/// the host.
pub type Cells = mielin_cells::mesh::cells::Cells<NoKeeper<DnaSlots<'static, 4>>, Open>;

/// The DNA a node holds in flash, for snapshots that name it by hash.
pub fn dna_slots(dnas: &[&'static [u8]]) -> Result<DnaSlots<'static, 4>, CellError> {
    let mut slots = DnaSlots::new();
    for bin in dnas {
        slots.insert(&Dna::new(*bin)?)?;
    }
    Ok(slots)
}

/// No agents; holds `dnas` (by-reference DNA); accepts memories up to `limits`. Claims the DNA
/// it holds and sends agents back as a delta against the memory they came with; keeps no
/// base of an agent it sent (the host side turns that on).
pub fn new_cells(
    node: NodeId,
    dnas: &[&'static [u8]],
    limits: DecodeLimits,
) -> Result<Cells, CellError> {
    let mut cells = Cells::new(
        node,
        Runtime::new(FUEL_PER_CALL),
        NoKeeper::new(dna_slots(dnas)?),
        Open,
        limits,
    );
    cells.claim_dna = true;
    cells.send_delta = true;
    cells.preempt_below = PREEMPT_BELOW;
    Ok(cells)
}
