//! Two QUIC drivers in one process on loopback, each with a `WasmHost`: shared by
//! `benches/quic.rs` and `tests/quic_driver.rs`.
#![allow(dead_code)]

use mielin_cells::mesh::{Config, MemJournal};
use mielin_cells::quic::{Directory, Driver, DriverConfig, Event, Identity, WasmHost};
use mielin_cells::AgentId;
use std::path::PathBuf;
use std::time::Duration;

pub type D = Driver<MemJournal<16>, 16>;

pub struct Side {
    pub driver: D,
    pub host: WasmHost,
}

pub struct Pair {
    pub a: Side,
    pub b: Side,
    _dir: PathBuf,
}

pub fn cfg() -> DriverConfig {
    let mut c = DriverConfig::new("127.0.0.1:0".parse().unwrap());
    c.mesh = Config {
        rto_ms: 2_000,
        // MIELIN_MESH_WINDOW: messages in flight per pair (the benches compare windows).
        window: std::env::var("MIELIN_MESH_WINDOW")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(Config::default().window),
        ..Config::default()
    };
    c.tick = Duration::from_millis(1);
    c.max_frame_len = 80 << 20;
    c
}

pub fn pair(name: &str) -> Pair {
    let dir = std::env::temp_dir().join(format!("mielin-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ia = Identity::from_seed([1; 32]);
    let ib = Identity::from_seed([2; 32]);
    // Ports are known only once bound: each side pins the other after both exist.
    let mut ha = WasmHost::open(&ia, &Directory::new(), &dir.join("a"), u64::MAX).unwrap();
    let mut hb = WasmHost::open(&ib, &Directory::new(), &dir.join("b"), u64::MAX).unwrap();
    let mut da = D::new(&ia, Directory::new(), MemJournal::new(), cfg(), &mut ha).unwrap();
    let mut db = D::new(&ib, Directory::new(), MemJournal::new(), cfg(), &mut hb).unwrap();
    let (aa, ab) = (da.local_addr().unwrap(), db.local_addr().unwrap());
    da.add_peer(ib.public_key(), ab);
    db.add_peer(ia.public_key(), aa);
    ha.trust_peer(&mielin_cells::quic::Peer {
        addr: ab,
        key: ib.public_key(),
    })
    .unwrap();
    hb.trust_peer(&mielin_cells::quic::Peer {
        addr: aa,
        key: ia.public_key(),
    })
    .unwrap();
    Pair {
        a: Side {
            driver: da,
            host: ha,
        },
        b: Side {
            driver: db,
            host: hb,
        },
        _dir: dir,
    }
}

/// Runs both drivers until `done` says so (checked after every event); returns the events.
pub async fn pump(p: &mut Pair, mut done: impl FnMut(&mut Pair, &[Event]) -> bool) {
    loop {
        let evs = tokio::select! {
            // The agents run in the turn that brought their messages.
            w = p.a.driver.wait() => {
                p.a.driver.handle_with(&mut p.a.host, w, |h| h.tick("tick", &[]) > 0)
            }
            // The agents run in the turn that brought their messages.
            w = p.b.driver.wait() => {
                p.b.driver.handle_with(&mut p.b.host, w, |h| h.tick("tick", &[]) > 0)
            }
        };
        if done(p, &evs) {
            return;
        }
    }
}

const ECHO: &str = include_str!("../../examples/agents/echo.wat");

/// Starts an echo agent on `side` whose memory holds `size` bytes of pseudo-random non-zero
/// data (at least one 64 KiB page; the rest of the last page zero).
pub fn spawn(side: &mut Side, id: u8, size: usize) -> AgentId {
    let wasm = wat::parse_str(ECHO).unwrap();
    let agent = AgentId::from_bytes([id; 16]);
    side.host.create(agent, wasm, 1_000_000).unwrap();
    side.host
        .modify_memory(agent, |m| {
            let pages = size.div_ceil(65536).max(1);
            m.clear();
            m.resize(pages * 65536, 0);
            let mut x: u32 = 0x1234_5678;
            for b in m[..size].iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = (x as u8) | 1;
            }
        })
        .unwrap();
    side.driver.start(&mut side.host, agent).unwrap();
    agent
}
