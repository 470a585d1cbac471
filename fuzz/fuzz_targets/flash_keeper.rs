//! A board's flash (`mesh::cells::FlashKeeper`): an agent kept there through steps the input
//! chooses (messages, calls that take them, whole saves), then the flash damaged as the rest of
//! the input says (bytes changed, pages erased). Opening and loading must never panic, and an
//! agent that loads, with its logged events applied, must be one the board really had at some
//! step: damage is refused, or it is read as a write cut by a power failure (an earlier state;
//! docs/platforms.md states it), never as another agent.
#![no_main]

use mielin_cells::mesh::cells::{Cells, FlashKeeper, Open};
use mielin_cells::mesh::{AgentHost, Inbox};
use mielin_cells::migration::{DecodeLimits, DnaMap};
use mielin_cells::runtime::Runtime;
use mielin_cells::storage::RamFlash;
use mielin_cells::{Agent, AgentId, Dna, LocalKey, NodeId};

const PAGE: usize = 1024;
const PAGES: usize = 8;
const NODE: NodeId = NodeId::from_bytes([0xb; 16]);
const AGENT: AgentId = AgentId::from_bytes([7; 16]);

/// `take()` receives one message into memory and returns its first byte (-1: none).
const WAT: &str = r#"(module
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "take") (result i32)
    (if (result i32) (i32.lt_s (call $recv (i32.const 0) (i32.const 128) (i32.const 64)) (i32.const 1))
      (then (i32.const -1))
      (else (i32.load8_u (i32.const 128))))))"#;

type Board<'a> = Cells<FlashKeeper<RamFlash<'a, 4, PAGE>, DnaMap>, Open>;

fn board<'a>(mem: &'a mut [u8], dna: &Dna<Vec<u8>>) -> Option<Board<'a>> {
    let mut store = DnaMap::new();
    store.insert(dna);
    let len = mem.len() as u32;
    let keeper = FlashKeeper::open(
        RamFlash::new(mem),
        0..len,
        NODE,
        &LocalKey::from_bytes([5; 32]),
        store,
        DecodeLimits::default(),
    )
    .ok()?;
    Some(Cells::new(
        NODE,
        Runtime::new(100_000),
        keeper,
        Open,
        DecodeLimits::default(),
    ))
}

/// The agent's linear memory (its whole state here: it has no globals).
fn memory(b: &mut Board<'_>) -> Vec<u8> {
    let live = b.live_mut(AGENT).unwrap();
    live.snapshot_at(None, 0).unwrap().wasm_state().to_vec()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static DNA: std::sync::OnceLock<Dna<Vec<u8>>> = std::sync::OnceLock::new();
    let dna = DNA.get_or_init(|| Dna::new(wat::parse_str(WAT).unwrap()).unwrap());
    let mut input = data.iter().copied();
    let mut next = || input.next();
    let mut mem = vec![0xffu8; PAGES * PAGE];
    // Every state the agent had after a step: memory and the messages waiting.
    let mut states: Vec<(Vec<u8>, usize)> = Vec::new();
    {
        let Some(mut b) = board(&mut mem, dna) else {
            return;
        };
        b.checkpoint_every = 4;
        b.start(
            Agent::with_id(AGENT, dna.clone()),
            Inbox::with_secret([1; 16]),
        )
        .unwrap();
        let mut waiting = 0usize;
        states.push((memory(&mut b), waiting));
        let mut seq = 0u64;
        for _ in 0..next().unwrap_or(0) % 24 {
            match next().unwrap_or(0) % 3 {
                0 => {
                    seq += 1;
                    let len = usize::from(next().unwrap_or(0) % 48) + 1;
                    let fill = next().unwrap_or(1).max(1);
                    let d = b.deliver(
                        AGENT,
                        NODE,
                        AgentId::from_bytes([8; 16]),
                        [3; 16],
                        seq,
                        &vec![fill; len],
                    );
                    waiting += usize::from(d == mielin_cells::mesh::Delivery::Accepted);
                }
                1 => {
                    if b.tick("take", &[]) > 0 {
                        waiting -= 1;
                    }
                }
                _ => {
                    let _ = b.save(AGENT);
                }
            }
            if b.flush().is_err() || !b.take_problems().0.is_empty() {
                // The flash is full: what it holds is still one of the states.
                break;
            }
            states.push((memory(&mut b), waiting));
        }
    }
    // Damage: pairs of (position, xor), then maybe a page erased.
    for _ in 0..next().unwrap_or(0) % 6 {
        let at = usize::from(u16::from_le_bytes([
            next().unwrap_or(0),
            next().unwrap_or(0),
        ]));
        mem[at % (PAGES * PAGE)] ^= next().unwrap_or(0);
    }
    if next().unwrap_or(0) % 4 == 0 {
        let page = usize::from(next().unwrap_or(0)) % PAGES;
        mem[page * PAGE..(page + 1) * PAGE].fill(0xff);
    }
    let Some(mut b) = board(&mut mem, dna) else {
        return;
    };
    b.run(AGENT, 0);
    if !b.is_running(AGENT) {
        return;
    }
    let got = memory(&mut b);
    let mut waiting = 0;
    while b.tick("take", &[]) > 0 {
        waiting += 1;
    }
    assert!(
        states.iter().any(|(m, w)| *m == got && *w == waiting),
        "loaded an agent the board never had ({waiting} messages waiting)"
    );
});
