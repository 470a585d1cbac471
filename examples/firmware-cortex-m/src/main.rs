//! The mielin-cells migration flow on a Cortex-M3, with or without an allocator.
//!
//! Builds the agent of `tests/vectors/case.rs` from a module in flash, checks its DNA digest,
//! walks it Created → Running → Migrating, picks a target node with its policy, captures and
//! serializes a snapshot, decodes and verifies it, restores it and checks the restored agent
//! equals the source. Then it checks that its bytes equal the vector x86_64 wrote
//! (`tests/vectors/v1-cross.bin`, embedded at build time) and that the vector restores here,
//! and the same for wire format version 2 (`tests/vectors/v2-cross.bin`).
//! It prints the snapshot as hex over semihosting and exits 0 on success, 1 on any failure or
//! panic.
//!
//! `cargo run --release` (no allocator) or `cargo run --release --features alloc`, in this folder.
#![no_std]
#![no_main]

#[path = "../../../tests/vectors/case.rs"]
mod case;

use core::fmt::Write;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hprintln};
use mielin_cells::migration::{MigrationManager, MigrationSnapshot};
use mielin_cells::{Agent, AgentState, CellError};
use panic_semihosting as _;

/// The snapshot x86_64 wrote for the same inputs.
static VECTOR: &[u8] = include_bytes!(env!("MIELIN_CROSS_VECTOR"));
/// The same snapshot in wire format version 2, addressed to the target at epoch 1.
static VECTOR_V2: &[u8] = include_bytes!("../../../tests/vectors/v2-cross.bin");
/// The same again in version 3, the container, with the agent's inbox section.
static VECTOR_V3: &[u8] = include_bytes!("../../../tests/vectors/v3-cross.bin");

/// Room for the serialized snapshot (2,239 bytes for the case's agent).
#[cfg(not(feature = "alloc"))]
const SNAPSHOT_CAPACITY: usize = 4096;

#[derive(Debug)]
enum Failure {
    Cell(CellError),
    Check(&'static str),
}

impl From<CellError> for Failure {
    fn from(e: CellError) -> Self {
        Failure::Cell(e)
    }
}

fn check(ok: bool, what: &'static str) -> Result<(), Failure> {
    if ok {
        hprintln!("ok   {}", what);
        Ok(())
    } else {
        Err(Failure::Check(what))
    }
}

#[entry]
fn main() -> ! {
    // CI builds this once with `_panic` to show that a panic exits non-zero instead of hanging.
    if cfg!(feature = "_panic") {
        panic!("deliberate panic (feature _panic)");
    }
    hprintln!(
        "mielin-cells on a Cortex-M3, {}",
        if cfg!(feature = "alloc") {
            "with alloc (embedded-alloc heap)"
        } else {
            "no allocator"
        }
    );
    match run() {
        Ok(()) => {
            hprintln!("PASS");
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(Failure::Cell(e)) => {
            hprintln!("FAIL {}", e);
            debug::exit(debug::EXIT_FAILURE);
        }
        Err(Failure::Check(what)) => {
            hprintln!("FAIL {}", what);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    halt()
}

/// Where semihosting cannot end the program (a board without a debugger), sleep forever.
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[cfg(not(feature = "alloc"))]
fn run() -> Result<(), Failure> {
    let memory = cortex_m::singleton!(: [u8; case::MEMORY_LEN] = [0; case::MEMORY_LEN])
        .ok_or(Failure::Check("memory buffer taken once"))?;
    case::fill_memory(memory);
    let mut agent = case::agent(&case::WASM[..], &memory[..])?;
    let snapshot = migrate(&mut agent)?;

    let buf = cortex_m::singleton!(: [u8; SNAPSHOT_CAPACITY] = [0; SNAPSHOT_CAPACITY])
        .ok_or(Failure::Check("snapshot buffer taken once"))?;
    let n = snapshot.serialize_into(buf)?;
    let bytes = &buf[..n];
    print_hex(bytes);

    let buf2 = cortex_m::singleton!(: [u8; SNAPSHOT_CAPACITY] = [0; SNAPSHOT_CAPACITY])
        .ok_or(Failure::Check("version-2 buffer taken once"))?;
    let n2 = snapshot
        .clone()
        .with_route(case::route())
        .serialize_into(buf2)?;
    check_v2(&agent, &buf2[..n2])?;
    // The container, written without an allocator into the same buffer.
    let n3 = snapshot
        .clone()
        .with_route(case::route())
        .with_inbox(&case::INBOX[..])
        .serialize_into_with(&case::v3_options(), buf2)?;
    let memory3 = cortex_m::singleton!(: [u8; case::MEMORY_LEN] = [0; case::MEMORY_LEN])
        .ok_or(Failure::Check("version-3 memory buffer taken once"))?;
    check_v3(&agent, &buf2[..n3], memory3)?;

    // Zero-copy: the view borrows `bytes`.
    let received = MigrationSnapshot::view(bytes)?;
    check(
        received.wasm_state().as_ptr_range().start >= bytes.as_ptr_range().start
            && received.wasm_state().as_ptr_range().end <= bytes.as_ptr_range().end,
        "decoded view borrows the serialized bytes (zero-copy)",
    )?;
    finish(&mut agent, &received, bytes)
}

#[cfg(feature = "alloc")]
fn run() -> Result<(), Failure> {
    extern crate alloc;
    use alloc::vec::Vec;
    init_heap();

    let mut memory = alloc::vec![0u8; case::MEMORY_LEN];
    case::fill_memory(&mut memory);
    let mut agent: Agent<Vec<u8>> = case::agent(case::WASM.to_vec(), memory)?;
    let snapshot = migrate(&mut agent)?;
    let bytes = snapshot.serialize()?;
    print_hex(&bytes);
    let v2 = snapshot.clone().with_route(case::route()).serialize()?;
    check_v2(&agent, &v2)?;
    let v3 = snapshot
        .clone()
        .with_route(case::route())
        .with_inbox(case::INBOX.to_vec())
        .serialize_with(&case::v3_options())?;
    let mut memory3 = alloc::vec![0u8; case::MEMORY_LEN];
    check_v3(&agent, &v3, &mut memory3)?;
    let received = MigrationSnapshot::deserialize(&bytes)?;
    finish(&mut agent, &received, &bytes)
}

#[cfg(feature = "alloc")]
fn init_heap() {
    use core::mem::MaybeUninit;
    use embedded_alloc::LlffHeap as Heap;

    const HEAP_SIZE: usize = 32 * 1024;
    #[global_allocator]
    static HEAP: Heap = Heap::empty();
    static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
    // SAFETY: called once, first thing in `run`, before anything allocates; HEAP_MEM is used
    // by nothing else.
    unsafe { HEAP.init(&raw mut HEAP_MEM as usize, HEAP_SIZE) }
}

/// Created → Running (done by `case::agent`) → Migrating, to the node the policy picks.
fn migrate<B: AsRef<[u8]> + Clone>(agent: &mut Agent<B>) -> Result<MigrationSnapshot<B>, Failure> {
    check(
        agent.dna().hash() == &case::WASM_SHA256,
        "DNA hash equals the module's SHA-256",
    )?;
    check(
        agent.state() == AgentState::Running,
        "agent Created -> Running",
    )?;
    let mut manager = MigrationManager::with_capacity::<4>(case::SOURCE);
    let snapshot = case::migrate(agent, &mut manager)?
        .ok_or(Failure::Check("policy picks the expected target node"))?;
    hprintln!("ok   policy picks node {}", case::EXPECTED_TARGET);
    check(
        agent.state() == AgentState::Migrating,
        "agent Running -> Migrating",
    )?;
    check(manager.pending_count() == 1, "one migration pending")?;
    Ok(snapshot)
}

/// Verifies what was received against the source agent, then against the x86_64 vector.
fn finish<B: AsRef<[u8]>, C: AsRef<[u8]> + Clone>(
    agent: &mut Agent<B>,
    received: &MigrationSnapshot<C>,
    bytes: &[u8],
) -> Result<(), Failure> {
    received.dna().verify()?;
    let restored = received.restore()?;
    check(
        restored == *agent,
        "restored agent equals the source (id, DNA, memory, globals, policy)",
    )?;
    check(bytes == VECTOR, "snapshot bytes equal the x86_64 vector")?;
    let from_host = MigrationSnapshot::view(VECTOR)?.restore()?;
    check(
        from_host == *agent,
        "the x86_64 vector restores to the same agent here",
    )?;
    agent.set_state(AgentState::Terminated)?;
    Ok(())
}

/// Version 2 of the same snapshot: the bytes written here equal the x86_64 vector, which names
/// the route and restores to the same agent (the view checks the memory root, hashing each
/// byte once).
fn check_v2<B: AsRef<[u8]>>(agent: &Agent<B>, bytes: &[u8]) -> Result<(), Failure> {
    check(
        bytes == VECTOR_V2,
        "version-2 snapshot bytes equal the x86_64 vector",
    )?;
    let view = MigrationSnapshot::view(VECTOR_V2)?;
    check(
        view.route() == Some(case::route()),
        "the version-2 vector names the target and epoch",
    )?;
    check(
        view.restore()? == *agent,
        "the version-2 vector restores to the same agent here",
    )?;
    Ok(())
}

/// Version 3: the bytes written here equal the x86_64 vector, which decodes here without an
/// allocator (its zero and raw chunks into `memory`, the tree root checked) to the same agent
/// and the same inbox bytes.
fn check_v3<B: AsRef<[u8]>>(
    agent: &Agent<B>,
    bytes: &[u8],
    memory: &mut [u8],
) -> Result<(), Failure> {
    check(
        bytes == VECTOR_V3,
        "version-3 container bytes equal the x86_64 vector",
    )?;
    let view = MigrationSnapshot::decode_into(VECTOR_V3, &Default::default(), memory)?;
    check(
        view.route() == Some(case::route()) && view.inbox() == Some(&case::INBOX[..]),
        "the version-3 vector names the route and carries the inbox",
    )?;
    check(
        view.restore()? == *agent,
        "the version-3 vector restores to the same agent here",
    )?;
    Ok(())
}

/// The snapshot as hex, 32 bytes a line, between markers CI can cut out.
fn print_hex(bytes: &[u8]) {
    hprintln!("snapshot {} bytes", bytes.len());
    hprintln!("BEGIN SNAPSHOT HEX");
    for chunk in bytes.chunks(32) {
        let mut line = heapless::String::<64>::new();
        for b in chunk {
            // 32 bytes are exactly 64 hex digits: cannot overflow.
            let _ = write!(line, "{b:02x}");
        }
        hprintln!("{}", line);
    }
    hprintln!("END SNAPSHOT HEX");
}

#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    hprintln!("FAIL hard fault");
    debug::exit(debug::EXIT_FAILURE);
    halt()
}
