//! Copies of linear memory per side of a migration, counted with a counting allocator: the
//! bytes allocated while an agent with N bytes of memory is serialized straight from its
//! instance, and while the bytes are decoded straight into a new instance. Each side allocates
//! the memory's size once (the wire buffer; the instance's memory), plus what does not scale
//! with it: the binary, the chunk digests (32 bytes per 4 KiB), the instance's own tables.
#![cfg(feature = "wasmi")]

use mielin_cells::migration::{DecodeOptions, MigrationSnapshot, Route, CHUNK_SIZE};
use mielin_cells::runtime::{Runtime, Val, PAGE_SIZE};
use mielin_cells::{Agent, AgentId, Dna, NodeId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// thread-local `Cell`s with const initializers, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.with(Cell::get) {
            BYTES.with(|b| b.set(b.get() + layout.size()));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if ON.with(Cell::get) {
            BYTES.with(|b| b.set(b.get() + layout.size()));
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON.with(Cell::get) {
            BYTES.with(|b| b.set(b.get() + new_size));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    BYTES.with(|b| b.set(0));
    ON.with(|c| c.set(true));
    let out = f();
    ON.with(|c| c.set(false));
    (out, BYTES.with(Cell::get))
}

#[test]
fn each_side_copies_the_memory_once() {
    let wasm = wat::parse_str(include_str!("../examples/agents/pages.wat")).unwrap();
    let binary = wasm.len();
    let rt = Runtime::new(100_000_000);
    for pages in [16usize, 64] {
        let n = pages * PAGE_SIZE;
        let agent = Agent::with_id(
            AgentId::from_bytes([4; 16]),
            Dna::new(wasm.clone()).unwrap(),
        );
        let mut live = rt.start(agent, (), |_| Ok(())).unwrap();
        live.call("grow", &[Val::I32(pages as i32 - 1)]).unwrap();
        let route = Route {
            target: NodeId::from_bytes([2; 16]),
            epoch: 1,
        };
        // Sender: the wire buffer, one copy of the memory.
        let (wire, sent) = allocated_by(|| {
            live.snapshot_at(None, 0)
                .unwrap()
                .with_route(route)
                .serialize()
                .unwrap()
        });
        assert!(
            sent >= n,
            "{sent} bytes for {n} of memory: nothing was copied?"
        );
        assert!(
            sent <= n + binary + 4096,
            "sender allocated {sent} bytes for {n} of memory: more than one copy"
        );
        // Receiver: the instance's memory, once, plus digests and what the instance needs.
        let digests = n / CHUNK_SIZE * 32;
        let ((moved, _), received) = allocated_by(|| {
            rt.resume_bytes(&wire, &DecodeOptions::default(), (), |_| Ok(()))
                .unwrap()
        });
        assert!(
            received < 2 * n,
            "receiver allocated {received} bytes for {n} of memory: two copies"
        );
        println!(
            "{pages} pages ({n} bytes): sender {sent} bytes ({:.3} n), receiver {received} bytes \
             ({:.3} n; of which digests {digests})",
            sent as f64 / n as f64,
            received as f64 / n as f64
        );
        drop(moved);
        // The three-copy path it replaces, for comparison: capture, serialize, deserialize,
        // restore, resume.
        let ((), old) = allocated_by(|| {
            let agent = live.capture().unwrap();
            let bytes = MigrationSnapshot::capture_at(agent, None, 0)
                .serialize()
                .unwrap();
            let restored = MigrationSnapshot::deserialize(&bytes)
                .unwrap()
                .restore()
                .unwrap();
            drop(rt.resume(restored, (), |_| Ok(())).unwrap());
        });
        println!(
            "  capture + serialize + deserialize + restore + resume: {old} bytes ({:.3} n)",
            old as f64 / n as f64
        );
        assert!(old > 3 * n, "the old path is the baseline: {old}");
    }
}
