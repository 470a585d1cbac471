//! What a pinned peer that misbehaves can make a QUIC node hold (issue 20, "memory grows per
//! hostile Offer"): 100,000 Offers for ever new agents from one peer, fed to the driver as its
//! network tasks would, leave the heap within 8 MiB of where it was; the hand-offs followed for
//! reports stay within `max_tracks_per_peer` and expire after `track_ttl`. Measured with a
//! global allocator that counts live bytes (allocations minus frees, all threads).
#![cfg(feature = "quic")]

use mielin_cells::mesh::frame::{Body, Repr};
use mielin_cells::mesh::{Config, MemJournal};
use mielin_cells::quic::{
    wire::Record, Credit, Directory, Driver, DriverConfig, Identity, Inbound, Wake, WasmHost,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter sees every thread: the tests of this file run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn offer(i: u64) -> Vec<u8> {
    let mut agent = [0u8; 16];
    agent[..8].copy_from_slice(&i.to_le_bytes());
    let r = Repr {
        agent,
        epoch: 1 + i % 1000,
        body: Body::Offer {
            dna_hash: [0xdd; 32],
            snapshot_len: 1 << 20,
            dna_len: 1 << 10,
        },
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b).unwrap();
    b
}

#[test]
fn a_hundred_thousand_hostile_offers_cost_under_8_mib() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let dir = std::env::temp_dir().join(format!("mielin-bounds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let me = Identity::from_seed([1; 32]);
    let hostile = Identity::from_seed([2; 32]);
    let mut directory = Directory::new();
    directory.insert(hostile.public_key(), "127.0.0.1:9".parse().unwrap());
    let mut host = WasmHost::open(&me, &directory, &dir, 1_000_000).unwrap();
    let mut cfg = DriverConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.mesh = Config::default();
    cfg.max_frame_len = 1 << 20; // the start-up buffer is not what is measured here
    let mut driver: Driver<MemJournal<16>, 16> =
        Driver::new(&me, directory, MemJournal::new(), cfg.clone(), &mut host).unwrap();
    let peer = hostile.node_id();
    let feed = |driver: &mut Driver<MemJournal<16>, 16>, host: &mut WasmHost, from, to| {
        for i in from..to {
            let wake = Wake::Inbound(Inbound::Record(
                peer,
                Record::Frame(offer(i)),
                Credit::default(),
            ));
            let _ = driver.handle(host, wake);
        }
    };
    // Warm up: tables, the writer's queue, the allocator's own structures.
    feed(&mut driver, &mut host, 0, 2_000);
    let before = LIVE.load(Ordering::Relaxed);
    assert!(before > 0, "the allocator counts");
    feed(&mut driver, &mut host, 2_000, 102_000);
    let grew = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "100,000 hostile offers: heap grew {grew} bytes (live {before} before); {} hand-offs \
         followed, {} not",
        driver.tracked(),
        driver.stats().tracks_refused
    );
    assert!(grew < 8 << 20, "heap grew {grew} bytes");
    assert!(driver.tracked() <= cfg.max_tracks_per_peer);
    assert!(driver.stats().tracks_refused >= 100_000 - cfg.max_tracks_per_peer as u64);
    // The followed ones expire after track_ttl: a driver with a short one forgets them at its
    // next tick.
    drop(driver);
    let mut short = cfg.clone();
    short.track_ttl = Duration::from_millis(1);
    let mut driver: Driver<MemJournal<16>, 16> =
        Driver::new(&me, Directory::new(), MemJournal::new(), short, &mut host).unwrap();
    feed(&mut driver, &mut host, 0, 10);
    assert_eq!(driver.tracked(), 10);
    std::thread::sleep(Duration::from_millis(5));
    let _ = driver.handle(&mut host, Wake::Tick);
    assert_eq!(driver.tracked(), 0);
    assert_eq!(driver.stats().tracks_expired, 10);
    // The measurement sees the leak the bound closes: without the per-peer cap (as before
    // it), the same offers keep a record each.
    drop(driver);
    let mut unbounded = cfg.clone();
    unbounded.max_tracks_per_peer = usize::MAX;
    let mut driver: Driver<MemJournal<16>, 16> = Driver::new(
        &me,
        Directory::new(),
        MemJournal::new(),
        unbounded,
        &mut host,
    )
    .unwrap();
    feed(&mut driver, &mut host, 0, 2_000);
    let before = LIVE.load(Ordering::Relaxed);
    feed(&mut driver, &mut host, 2_000, 102_000);
    let grew = LIVE.load(Ordering::Relaxed) - before;
    println!("without the cap: heap grew {grew} bytes");
    assert!(
        grew > 8 << 20,
        "the measurement must see unbounded growth: {grew}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer that floods a node with large frames faster than it handles them is held to its
/// inbound byte budget: its streams stop being read (QUIC's flow control stalls it) instead of
/// the node queueing them. Before, every record went into a queue of 1,024 records of up to
/// `max_frame_len` each. And nothing deadlocks: once the node handles again, every frame is
/// read.
#[test]
fn a_flooding_peer_waits_within_its_byte_budget() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use mielin_cells::mesh::records;
    use mielin_cells::quic::{quinn_configs, Transport};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("mielin-flood-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let me = Identity::from_seed([3; 32]);
        let hostile = Identity::from_seed([4; 32]);
        let mut directory = Directory::new();
        directory.insert(hostile.public_key(), "127.0.0.1:9".parse().unwrap());
        let mut host = WasmHost::open(&me, &directory, &dir, 1_000_000).unwrap();
        let mut cfg = DriverConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.max_frame_len = 4 << 20;
        cfg.peer_inbox_bytes = 6 << 20;
        cfg.inbox_bytes = 12 << 20;
        let mut victim: Driver<MemJournal<16>, 16> =
            Driver::new(&me, directory, MemJournal::new(), cfg, &mut host).unwrap();
        let addr = victim.local_addr().unwrap();
        let t = Transport::default();
        let (_, client_cfg) =
            quinn_configs(&hostile, Directory::new(), me.public_key(), addr, &t).unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client
            .connect_with(client_cfg, addr, "mielin")
            .unwrap()
            .await
            .unwrap();
        // 8 streams of 5 Transfer frames of 3 MiB each: 120 MiB, more than the node's
        // connection window (32 MiB), one record per stream and the peer's budget together.
        let frame = {
            let payload = vec![0x5a; 3 << 20];
            let r = Repr {
                agent: [7; 16],
                epoch: 1,
                body: Body::Transfer {
                    with_dna: true,
                    payload: &payload,
                },
            };
            let mut b = records::header(records::KIND_FRAME, r.buffer_len()).to_vec();
            let at = b.len();
            b.resize(at + r.buffer_len(), 0);
            r.emit(&mut b[at..]).unwrap();
            b
        };
        let mut writers = Vec::new();
        for _ in 0..8 {
            let conn = conn.clone();
            let frame = frame.clone();
            writers.push(tokio::spawn(async move {
                let mut s = conn.open_uni().await.unwrap();
                for _ in 0..5 {
                    if s.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                let _ = s.finish();
            }));
        }
        // The node handles nothing for a while: what waits is bounded.
        let mut peak = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(victim.inbox_waiting());
        }
        println!("waiting while not handled: at most {peak} bytes");
        assert!(peak > 0, "the flood arrived");
        assert!(
            peak <= 6 << 20,
            "{peak} bytes waiting, over the peer's budget"
        );
        assert!(
            writers.iter().any(|w| !w.is_finished()),
            "the peer is held back"
        );
        // Handling resumes: the budget comes back and the rest is read.
        let mut frames = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while frames < 40 && tokio::time::Instant::now() < deadline {
            let wake = victim.wait().await;
            let _ = victim.handle(&mut host, wake);
            frames = victim.stats().frames_received;
        }
        assert_eq!(frames, 40, "every frame was read in the end");
        let _ = std::fs::remove_dir_all(&dir);
    });
}
