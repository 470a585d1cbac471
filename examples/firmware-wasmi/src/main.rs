//! WebAssembly agents on a Cortex-M3 (QEMU's mps2-an385), handed to and from a host over a
//! serial link with the mesh protocol.
//!
//! The board runs the crate's `wasmi` runtime on an `embedded-alloc` heap and one
//! `mesh::Node`, the same state machine as the host's, driven by the bytes of the CMSDK UART 0
//! (link frames: `cells.rs`). It holds the two agents' DNA in flash, so snapshots may name it
//! by hash. Commands from the host say what to run; after running an agent it hands it back.
//!
//! Its journal (`mesh::FlashJournal`) and its agents (`mesh::cells::FlashKeeper`) are in NOR
//! flash (`flash.rs`: emulated in RAM and kept in a file on the host through semihosting), so
//! a reset in the middle of a hand-off keeps exactly one copy of the agent: at boot the node
//! restarts from the journal (`Node::restart`) and runs or asks about what it records.
//!
//! Not run on its own: `cargo run --release` here builds it and hands it to the host side
//! (`examples/mcu_roundtrip.rs`, through the runner `scripts/mcu-roundtrip`), which boots it
//! in qemu-system-arm with the UART on a socket. Semihosting prints the board's log.
#![no_std]
#![no_main]

extern crate alloc;

mod cells;
mod flash;
mod uart;

use alloc::format;
use alloc::vec::Vec;
use cells::{Cmd, Deframer, BOARD, HOST, KIND_CMD, KIND_MESH};
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprintln};
use embedded_alloc::LlffHeap as Heap;
use mielin_cells::mesh::cells::{FlashKeeper, Open, Refusal};
use mielin_cells::mesh::{Config, FlashJournal, Node};
use mielin_cells::migration::{DecodeLimits, DnaSlots};
use mielin_cells::runtime::Runtime;
use mielin_cells::LocalKey;
use panic_semihosting as _;

/// The heap: the board's 16 MiB PSRAM at 0x2100_0000 (SSRAM2/3 at 0x2000_0000 holds the
/// stack and statics). It holds the interpreter's compiled modules, the agents' instance
/// memories and, while a snapshot is received, more copies of one (see `MAX_MEMORY`).
const HEAP_START: usize = 0x2100_0000;
const HEAP_SIZE: usize = 16 * 1024 * 1024;
/// The largest agent memory accepted: 64 pages (4 MiB). Receiving an agent takes the decoded
/// memory, the instance's memory (and, when wasmi grows it, the old and the new buffer at
/// once), and the copy kept as the base of the delta back: up to four times its size. The
/// limit leaves that room with one more agent running.
const MAX_MEMORY: usize = 64 * 65_536;
/// The largest link frame accepted (encoded bytes).
const MAX_LINK_FRAME: usize = 512 * 1024;
/// The CPU clock of the mps2 FPGA images: 25 MHz.
const CPU_HZ: u32 = 25_000_000;
const TICKS_PER_MS: u32 = CPU_HZ / 1000;

static HEAP: Heap = Heap::empty();

/// The board's agents, kept in its flash.
type Cells =
    mielin_cells::mesh::cells::Cells<FlashKeeper<flash::Mirrored, DnaSlots<'static, 4>>, Open>;
/// The board's journal, in its flash.
type Journal = FlashJournal<flash::Mirrored, 8>;
/// Events after which an agent is saved whole: the flash keeps the events of each copy until
/// they are written over, so few.
const CHECKPOINT_EVERY: u32 = 16;

/// The heap, counting the bytes in use and their peak (reported with the costs).
struct Counted;

static USED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count(add: usize, sub: usize) {
    let used = USED.load(Ordering::Relaxed) + add - sub;
    USED.store(used, Ordering::Relaxed);
    if used > PEAK.load(Ordering::Relaxed) {
        PEAK.store(used, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the heap, which is a GlobalAlloc; the counters only observe.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = HEAP.alloc(layout);
        if !p.is_null() {
            count(layout.size(), 0);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.dealloc(ptr, layout);
        count(0, layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = HEAP.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size, layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counted = Counted;

static MILLIS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

/// Milliseconds since boot.
fn now_ms() -> u64 {
    u64::from(MILLIS.load(Ordering::Relaxed))
}

/// Nanoseconds since boot, to one SysTick tick (40 ns). With `-icount shift=0` QEMU advances
/// its clock 1 ns per instruction, so this counts instructions.
fn now_ns() -> u64 {
    loop {
        let ms = MILLIS.load(Ordering::Relaxed);
        let val = cortex_m::peripheral::SYST::get_current();
        if MILLIS.load(Ordering::Relaxed) == ms {
            let ticks = u64::from(TICKS_PER_MS - 1 - val);
            return u64::from(ms) * 1_000_000 + ticks * 1_000_000_000 / u64::from(CPU_HZ);
        }
    }
}

fn init_heap() {
    // SAFETY: called once, first thing in `main`, before anything allocates; the PSRAM is
    // RAM on every mps2 image, outside the linker's regions, used by nothing else.
    unsafe { HEAP.init(HEAP_START, HEAP_SIZE) }
}

struct Board {
    node: Node<Journal, 8>,
    cells: Cells,
    out: Vec<u8>,
    busy_ns: u64,
    link_errors: u32,
}

impl Board {
    fn send(&mut self, kind: u8, body: &[u8]) {
        self.out.clear();
        cells::encode_link(kind, body, &mut self.out);
        uart::write(&self.out);
    }

    fn cmd(&mut self, c: &Cmd) {
        self.send(KIND_CMD, &c.encode());
    }

    fn log(&mut self, text: &str) {
        hprintln!("board: {}", text);
        self.cmd(&Cmd::Log(text.as_bytes().to_vec()));
    }

    /// Sends what the node has queued.
    fn drain(&mut self) {
        loop {
            let t0 = now_ns();
            let mut buf = alloc::vec![0u8; self.cells.transmit_room()];
            let polled = self.node.poll_transmit(&mut self.cells, &mut buf);
            let mut frame = Vec::new();
            let done = match polled {
                Ok(Some(t)) => {
                    cells::encode_link(KIND_MESH, &buf[..t.len], &mut frame);
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    drop(buf);
                    self.busy_ns += now_ns() - t0;
                    self.log(&format!("a frame was dropped: {e}"));
                    continue;
                }
            };
            drop(buf);
            self.busy_ns += now_ns() - t0;
            if done {
                return;
            }
            uart::write(&frame);
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Work { agent, from, count } => self.work(agent, from, count),
            Cmd::Tick { agent, count } => self.tick(agent, count),
            Cmd::Mode { claim_dna, delta } => {
                self.cells.claim_dna = claim_dna;
                self.cells.send_delta = delta;
            }
            Cmd::CostQuery => {
                let c = Cmd::Cost {
                    insns: self.busy_ns,
                    link_errors: self.link_errors,
                    heap_peak: PEAK.load(Ordering::Relaxed) as u32,
                    heap_used: USED.load(Ordering::Relaxed) as u32,
                };
                self.busy_ns = 0;
                self.link_errors = 0;
                PEAK.store(USED.load(Ordering::Relaxed), Ordering::Relaxed);
                self.cmd(&c);
            }
            Cmd::CutPower { after } => {
                self.cells
                    .keeper_mut()
                    .flash_mut()
                    .cut_after(u64::from(after));
                self.log(&format!(
                    "the power fails at flash operation {after} from now"
                ));
            }
            Cmd::StatusQuery => {
                let running = self
                    .cells
                    .running()
                    .into_iter()
                    .map(|a| (a, self.epoch(a)))
                    .collect();
                let prepared = self.cells.prepared();
                self.cmd(&Cmd::Status { running, prepared });
            }
            other => self.log(&format!("unexpected command {other:?}")),
        }
    }

    fn epoch(&self, agent: mielin_cells::AgentId) -> u64 {
        use mielin_cells::mesh::Journal;
        self.node.journal().get(agent).map_or(0, |r| r.epoch)
    }

    /// Runs `count` steps of `agent`, reports, and hands it back to the host.
    fn work(&mut self, agent: mielin_cells::AgentId, from: u32, count: u32) {
        let Some(live) = self.cells.live_mut(agent) else {
            self.log("work: the agent does not run here");
            return;
        };
        let t0 = now_ns();
        let mut value = 0;
        for i in from..from + count {
            match cells::step(live, i) {
                Ok(v) => value = v,
                Err(e) => {
                    let text = format!("work: step {i} failed: {e}");
                    self.log(&text);
                    return;
                }
            }
        }
        let insns = now_ns() - t0;
        // The steps were direct calls, not logged events: saved before anyone hears of them,
        // so a reset after this point keeps them.
        if let Err(e) = self.cells.save(agent) {
            self.log(&format!("work: saving the agent failed: {e}"));
            return;
        }
        self.worked_and_back(agent, value, insns);
    }

    /// Reports the work done on `agent` and hands it back to the host.
    fn worked_and_back(&mut self, agent: mielin_cells::AgentId, value: i64, insns: u64) {
        self.cmd(&Cmd::Worked {
            agent,
            value,
            insns,
        });
        let t0 = now_ns();
        let r = self.cells.migrate(&mut self.node, now_ms(), agent, HOST);
        self.busy_ns += now_ns() - t0;
        if let Err(e) = r {
            self.log(&format!("hand-off back failed to start: {e}"));
        }
    }

    /// Ticks the agents `count` times (a suspended call is continued), reports `agent`'s
    /// `result` global, and hands it back to the host: in the middle of its call if it is
    /// still in one.
    fn tick(&mut self, agent: mielin_cells::AgentId, count: u32) {
        let t0 = now_ns();
        for _ in 0..count {
            self.cells.tick("tick", &[]);
        }
        let insns = now_ns() - t0;
        let Some(live) = self.cells.live_mut(agent) else {
            self.log("tick: the agent does not run here");
            return;
        };
        let value = match live.global("result") {
            Some(mielin_cells::runtime::Val::I64(v)) => v,
            _ => 0,
        };
        let suspended = live.is_suspended_in_call();
        let (problems, _) = self.cells.take_problems();
        for p in problems {
            self.log(&format!("tick: {p}"));
        }
        self.log(&format!(
            "ticked {count} times; waiting in the middle of a call: {suspended}"
        ));
        self.worked_and_back(agent, value, insns);
    }
}

#[entry]
fn main() -> ! {
    init_heap();
    let mut cp = cortex_m::Peripherals::take().unwrap();
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(TICKS_PER_MS - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();
    uart::init();

    let limits = DecodeLimits {
        max_wasm_binary: 256 * 1024,
        max_wasm_state: MAX_MEMORY,
    };
    let fail = |what: &str| -> ! {
        hprintln!("FAIL {}", what);
        debug::exit(debug::EXIT_FAILURE);
        halt()
    };
    let slots = match cells::dna_slots(&[
        cells::COUNTER_WASM,
        cells::RUST_GUEST_WASM,
        cells::CRUNCH_WASM,
    ]) {
        Ok(s) => s,
        Err(e) => fail(&format!("DNA in flash: {e}")),
    };
    let Some((journal_flash, keeper_flash)) = flash::load() else {
        fail("the flash file cannot be opened through semihosting")
    };
    // No secret on this board: the items carry checksums, not MACs (docs/platforms.md).
    let key = LocalKey::UNKEYED;
    let journal_len = (flash::JOURNAL_PAGES * flash::PAGE) as u32;
    let journal = match FlashJournal::open(journal_flash, 0..journal_len, &key) {
        Ok(j) => j,
        Err(e) => fail(&format!("the journal in flash: {e}")),
    };
    let keeper_len = (flash::KEEPER_PAGES * flash::PAGE) as u32;
    let keeper = match FlashKeeper::open(keeper_flash, 0..keeper_len, BOARD, &key, slots, limits) {
        Ok(k) => k,
        Err(e) => fail(&format!("the agents in flash: {e}")),
    };
    let mut cells = Cells::new(
        BOARD,
        Runtime::new(cells::FUEL_PER_CALL),
        keeper,
        Open,
        limits,
    );
    cells.claim_dna = true;
    cells.send_delta = true;
    cells.checkpoint_every = CHECKPOINT_EVERY;
    cells.preempt_below = cells::PREEMPT_BELOW;
    let config = Config {
        rto_ms: 300,
        ..Config::default()
    };
    // Resumes what the journal records: agents that ran here run again, in-doubt hand-offs
    // ask their source.
    let node = Node::restart(BOARD, journal, config, &mut cells, now_ms());
    let (kept, kept_prepared) = cells.keeper().copies();
    let mut board = Board {
        node,
        cells,
        out: Vec::new(),
        busy_ns: 0,
        link_errors: 0,
    };
    hprintln!(
        "board: its flash holds {} running and {} prepared copies; {} agent(s) running",
        kept,
        kept_prepared,
        board.cells.running().len()
    );
    hprintln!(
        "board: mps2-an385 up, heap {} KiB, agent memory up to {} KiB",
        HEAP_SIZE / 1024,
        MAX_MEMORY / 1024
    );
    board.cmd(&Cmd::Ready {
        heap: HEAP_SIZE as u32,
        max_memory: MAX_MEMORY as u32,
    });

    let mut deframer = Deframer::new(MAX_LINK_FRAME);
    loop {
        while let Some(byte) = uart::read() {
            let t0 = now_ns();
            let Some(frame) = deframer.push(byte) else {
                continue;
            };
            match frame {
                Ok((KIND_MESH, body)) => {
                    board.cells.take_problems();
                    let r = board
                        .node
                        .handle_frame(&mut board.cells, now_ms(), HOST, &body);
                    drop(body);
                    board.busy_ns += now_ns() - t0;
                    if let Err(e) = r {
                        board.log(&format!("mesh frame refused: {e}"));
                    }
                    for p in board.cells.take_problems().0 {
                        let why = match p.refusal {
                            Refusal::Container(e) => format!("{e}"),
                            other => format!("{other}"),
                        };
                        board.log(&format!(
                            "snapshot refused: {why} (heap: {} bytes used, {} free)",
                            USED.load(Ordering::Relaxed),
                            HEAP_SIZE - USED.load(Ordering::Relaxed)
                        ));
                    }
                    board.drain();
                }
                Ok((KIND_CMD, body)) => match Cmd::decode(&body) {
                    Some(cmd) => {
                        board.on_cmd(cmd);
                        board.drain();
                    }
                    None => board.log("undecodable command"),
                },
                Ok((kind, _)) => board.log(&format!("unknown link frame kind {kind}")),
                Err(e) => {
                    board.link_errors += 1;
                    board.busy_ns += now_ns() - t0;
                    board.log(&format!("link frame dropped: {e:?}"));
                }
            }
        }
        // A failed write of the flash (not a power cut: that resets at once) poisons the host
        // or the journal: nobody knows what landed, so the board restarts from the flash.
        if board.cells.is_poisoned() || board.node.journal().is_poisoned() {
            hprintln!("board: a flash write failed: restarting from the flash");
            cortex_m::peripheral::SCB::sys_reset();
        }
        let now = now_ms();
        if board.node.poll_timeout().is_some_and(|t| t <= now) {
            let t0 = now_ns();
            board.node.handle_timeout(&mut board.cells, now);
            board.busy_ns += now_ns() - t0;
            board.drain();
        }
    }
}

/// Where semihosting cannot end the program (a board without a debugger), sleep forever.
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    hprintln!("FAIL hard fault");
    debug::exit(debug::EXIT_FAILURE);
    halt()
}
