//! The mesh over QUIC on loopback, in one process (two drivers on one tokio thread):
//!
//! - `handoff/<size>`: a whole hand-off (offer, answer, signed snapshot, verification and
//!   durable prepare on the target, commit, done) of an agent whose linear memory holds `size`
//!   bytes of non-zero data, beside `raw/<size>`: one quinn stream carrying as many bytes as
//!   the hand-off's snapshot frame, on the same pinned mutual-TLS configuration and transport
//!   settings, from write to the peer's acknowledgement of the whole stream.
//! - a re-migration of a 16 MiB agent after 1 % of its memory changed, beside its first one:
//!   bytes and time.
//! - messages per second between two agents on the two nodes, and one message's latency
//!   (median, p99), with agents of a few bytes and of 10 MiB; and a stream of messages from one
//!   agent to the other (`examples/agents/stream.wat`), durable messages per second; and the
//!   latency of messages sent at a steady 1,000 per second (median, p99).
//!
//! - the same stream and steady latency with 1 KiB messages between two nodes on two OS
//!   threads, each with its own tokio runtime.
//!
//! `cargo bench --features quic --bench quic`; a summary with the ratios is printed at the end.
//! `MIELIN_QUIC_BENCH=messages` runs the message figures only, `threads` the two-thread ones,
//! `restart` the restart; `MIELIN_MESH_WINDOW` sets the window of the one-thread figures (the
//! two-thread ones run the defaults, then a window of 64 with mailboxes and outboxes of 64);
//! `MIELIN_BENCH_DEBUG=1` prints each two-thread node's counters.
//! Data directories are under the system's temporary directory (the files are fsynced).

use criterion::Criterion;
use mielin_cells::quic::{quinn_configs, Directory, Event, Identity, Role, Transport};
use mielin_cells::AgentId;
use std::cell::RefCell;
use std::time::{Duration, Instant};

#[path = "../tests/common_quic/pair.rs"]
mod pair;
use pair::{pair, pump, spawn, Pair};

/// One hand-off of `agent` from `from` (true: a) to the other; returns (time, snapshot bytes).
async fn handoff(p: &mut Pair, agent: AgentId, from_a: bool) -> (Duration, usize) {
    let start = Instant::now();
    let (src, dst) = if from_a {
        (&mut p.a, p.b.driver.id())
    } else {
        (&mut p.b, p.a.driver.id())
    };
    src.driver.migrate(&mut src.host, agent, dst).unwrap();
    let mut bytes = 0;
    let mut committed = false;
    pump(p, |_, evs| {
        for e in evs {
            if let Event::HandOff(r) = e {
                if r.agent == agent && r.role == Role::Source {
                    bytes = r.bytes;
                    committed = r.committed;
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert!(committed, "hand-off aborted");
    (start.elapsed(), bytes)
}

/// A raw quinn connection with the driver's TLS and transport settings.
struct Raw {
    conn: quinn::Connection,
    _client: quinn::Endpoint,
    _server: quinn::Endpoint,
}

async fn raw() -> Raw {
    let ia = Identity::from_seed([3; 32]);
    let ib = Identity::from_seed([4; 32]);
    let mut dir_b = Directory::new();
    dir_b.insert(ia.public_key(), "127.0.0.1:1".parse().unwrap());
    let t = Transport::default();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (server_cfg, _) = quinn_configs(&ib, dir_b, ia.public_key(), any, &t).unwrap();
    let server = quinn::Endpoint::server(server_cfg, any).unwrap();
    let saddr = server.local_addr().unwrap();
    let (_, client_cfg) = quinn_configs(&ia, Directory::new(), ib.public_key(), saddr, &t).unwrap();
    let client = quinn::Endpoint::client(any).unwrap();
    let server2 = server.clone();
    tokio::spawn(async move {
        let conn = server2.accept().await.unwrap().await.unwrap();
        while let Ok(mut s) = conn.accept_uni().await {
            tokio::spawn(
                async move { while let Ok(Some(_)) = s.read_chunk(1 << 20, true).await {} },
            );
        }
    });
    let conn = client
        .connect_with(client_cfg, saddr, "mielin")
        .unwrap()
        .await
        .unwrap();
    Raw {
        conn,
        _client: client,
        _server: server,
    }
}

async fn raw_send(r: &Raw, buf: &[u8]) -> Duration {
    let start = Instant::now();
    let mut s = r.conn.open_uni().await.unwrap();
    s.write_all(buf).await.unwrap();
    s.finish().unwrap();
    let _ = s.stopped().await;
    start.elapsed()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Endpoints and their tasks are created inside the runtime.
    let _guard = rt.enter();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let summary = RefCell::new(Vec::<String>::new());
    // MIELIN_QUIC_BENCH=messages runs the message figures only.
    let only = std::env::var("MIELIN_QUIC_BENCH").ok();
    let only_messages = only.as_deref() == Some("messages");
    let only_restart = only.as_deref() == Some("restart");
    // MIELIN_QUIC_BENCH=threads: the two-thread message figures only.
    if only.as_deref() == Some("threads") {
        two_threads(&summary);
        for l in summary.borrow().iter() {
            println!("{l}");
        }
        return;
    }

    // Hand-offs beside raw quinn.
    for (label, size) in [
        ("1KiB", 1usize << 10),
        ("1MiB", 1 << 20),
        ("16MiB", 16 << 20),
        ("64MiB", 64 << 20),
    ]
    .into_iter()
    .filter(|_| only.is_none())
    {
        let mut p = pair(label);
        let id = spawn(&mut p.a, 9, size);
        let mut at_a = true;
        let mut frame_len = 0;
        let times = RefCell::new(Vec::new());
        let mut g = c.benchmark_group(format!("quic/{label}"));
        g.bench_function("handoff", |bch| {
            bch.iter_custom(|n| {
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    let (t, bytes) = rt.block_on(handoff(&mut p, id, at_a));
                    at_a = !at_a;
                    frame_len = bytes;
                    times.borrow_mut().push(t);
                    total += t;
                }
                total
            })
        });
        let raw_conn = rt.block_on(raw());
        // The snapshot frame's bytes plus the record header, as the driver writes them.
        let buf = vec![0x5au8; frame_len + 5];
        let raw_times = RefCell::new(Vec::new());
        g.bench_function("raw_quinn_same_bytes", |bch| {
            bch.iter_custom(|n| {
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    let t = rt.block_on(raw_send(&raw_conn, &buf));
                    raw_times.borrow_mut().push(t);
                    total += t;
                }
                total
            })
        });
        g.finish();
        let h = median(&mut times.borrow_mut());
        let r = median(&mut raw_times.borrow_mut());
        summary.borrow_mut().push(format!(
            "handoff {label}: snapshot frame {} bytes; hand-off median {:.2} ms, raw quinn median {:.2} ms, ratio {:.2}x ({} and {} samples)",
            frame_len,
            h.as_secs_f64() * 1e3,
            r.as_secs_f64() * 1e3,
            h.as_secs_f64() / r.as_secs_f64(),
            times.borrow().len(),
            raw_times.borrow().len()
        ));
    }

    // Re-migration after 1 % of memory changed.
    if only.is_none() {
        let mut p = pair("remig");
        let size = 16 << 20;
        let id = spawn(&mut p.a, 10, size);
        let (t1, b1) = rt.block_on(handoff(&mut p, id, true));
        let (t2, b2) = rt.block_on(handoff(&mut p, id, false));
        // 1 % of the 4 KiB chunks, spread over the memory, changed on a.
        p.a.host
            .modify_memory(id, |m| {
                let chunks = m.len() / 4096;
                for i in (0..chunks).step_by(100) {
                    m[i * 4096] ^= 0xff;
                }
            })
            .unwrap();
        let (t3, b3) = rt.block_on(handoff(&mut p, id, true));
        summary.borrow_mut().push(format!(
            "re-migration 16MiB: first a->b {b1} bytes {:.2} ms (DNA sent); back b->a {b2} bytes {:.2} ms (DNA by reference); after 1% changed a->b {b3} bytes {:.2} ms (DNA by reference, memory chunked, no delta: see docs)",
            t1.as_secs_f64() * 1e3,
            t2.as_secs_f64() * 1e3,
            t3.as_secs_f64() * 1e3
        ));
    }

    // Messages: ping on a, pong on b, numbers back and forth; agents of a few bytes, then of
    // 10 MiB (the "within 1.2x of the small-agent rate").
    for (label, size) in [("small agents", 0usize), ("10 MiB agents", 10 << 20)]
        .into_iter()
        .filter(|_| !only_restart)
    {
        let mut p = pair("msgs");
        let ip = spawn(&mut p.a, 11, size);
        let io = spawn(&mut p.b, 12, size);
        let (na, nb) = (p.a.driver.id(), p.b.driver.id());
        p.a.driver.node_mut().set_location(io, nb, 0);
        p.b.driver.node_mut().set_location(ip, na, 0);
        assert!(p.a.host.send_as(ip, io, &0i32.to_le_bytes()));
        let now = p.a.driver.now_ms();
        p.a.driver.node_mut().wake_messages(now);
        let mut seen_a = 0;
        let mut seen_b = 0;
        let mut last = Instant::now();
        let mut gaps: Vec<Duration> = Vec::new();
        let start = Instant::now();
        let mut warm = true;
        rt.block_on(pump(&mut p, |p, _| {
            let ra = p.a.host.stats(ip).map_or(0, |s| s.received);
            let rb = p.b.host.stats(io).map_or(0, |s| s.received);
            let now = Instant::now();
            if ra != seen_a || rb != seen_b {
                let n = (ra - seen_a + rb - seen_b) as u32;
                if !warm {
                    for _ in 0..n {
                        gaps.push((now - last) / n);
                    }
                }
                if warm && ra + rb > 20 {
                    warm = false;
                }
                seen_a = ra;
                seen_b = rb;
                last = now;
            }
            start.elapsed() > Duration::from_secs(5)
        }));
        let total: Duration = gaps.iter().sum();
        let rate = gaps.len() as f64 / total.as_secs_f64();
        let med = median(&mut gaps);
        let p99 = pct(&mut gaps, 0.99);
        summary.borrow_mut().push(format!(
            "messages, {label}: {} messages in {:.2} s = {:.0} messages/s (one at a time, each answered); one message (send to delivery in the addressee's tick): median {:.2} ms, p99 {:.2} ms",
            gaps.len(),
            total.as_secs_f64(),
            rate,
            med.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ));
    }
    // A stream: the agent on a sends 256-byte messages (the mesh's longest) as fast as its
    // outbox (8) and the pair's window (8 in flight) let it; the one on b counts them. Every
    // message is durable on b (its event synced) before b acknowledges it.
    if !only_restart {
        let mut p = pair("stream");
        let wasm = wat::parse_str(include_str!("../examples/agents/stream.wat")).unwrap();
        let (from, to) = (AgentId::from_bytes([21; 16]), AgentId::from_bytes([22; 16]));
        p.b.host.create(to, wasm.clone(), 0).unwrap();
        p.b.driver.start(&mut p.b.host, to).unwrap();
        p.a.host.create(from, wasm, 22).unwrap();
        p.a.driver.start(&mut p.a.host, from).unwrap();
        let (na, nb) = (p.a.driver.id(), p.b.driver.id());
        p.a.driver.node_mut().set_location(to, nb, 0);
        p.b.driver.node_mut().set_location(from, na, 0);
        let received = |p: &mut Pair| p.b.host.stats(to).map_or(0, |s| s.received);
        let commits =
            |p: &Pair| p.a.host.keeper().group_commits() + p.b.host.keeper().group_commits();
        // Warm up to 100 messages, then count for 5 s.
        rt.block_on(pump(&mut p, |p, _| received(p) >= 100));
        let (n0, c0, t0) = (received(&mut p), commits(&p), Instant::now());
        rt.block_on(pump(&mut p, |_, _| t0.elapsed() > Duration::from_secs(5)));
        let n = received(&mut p) - n0;
        let c = commits(&p) - c0;
        let secs = t0.elapsed().as_secs_f64();
        let raw = fdatasyncs_per_second();
        summary.borrow_mut().push(format!(
            "messages, streamed (256 bytes, window {}): {n} messages in {secs:.2} s = {:.0} durable messages/s; {c} group commits on both nodes ({:.1} messages per commit, two fdatasyncs each); the disk, same run: {raw:.0} fdatasyncs/s of 1 KiB appends",
            pair::cfg().mesh.window,
            f64::from(n) / secs,
            f64::from(n) / c.max(1) as f64
        ));
    }
    // Latency at a steady 1,000 messages/s: the agent on a queues one 256-byte message (its
    // `send1` export, a logged call) each millisecond; a message's latency runs from that call
    // to the tick on b whose agent took it (b's count rises). Made durable on both sides on the
    // way (a's call event before the frame leaves, b's delivery before its acknowledgement).
    if !only_restart {
        let mut p = pair("latency");
        let wasm = wat::parse_str(include_str!("../examples/agents/stream.wat")).unwrap();
        let (from, to) = (AgentId::from_bytes([23; 16]), AgentId::from_bytes([24; 16]));
        p.b.host.create(to, wasm.clone(), 0).unwrap();
        p.b.driver.start(&mut p.b.host, to).unwrap();
        // Bit 8: sends only when `send1` is called.
        p.a.host.create(from, wasm, 0x100 | 24).unwrap();
        p.a.driver.start(&mut p.a.host, from).unwrap();
        let (na, nb) = (p.a.driver.id(), p.b.driver.id());
        p.a.driver.node_mut().set_location(to, nb, 0);
        p.b.driver.node_mut().set_location(from, na, 0);
        let (warm, total) = (200usize, 5_200usize);
        let mut sent_at: Vec<Instant> = Vec::with_capacity(total);
        let mut lat: Vec<Duration> = Vec::with_capacity(total);
        // Also from when each send was due: a send that waited for room in the outbox counts
        // its wait (no coordinated omission).
        let mut late: Vec<Duration> = Vec::with_capacity(total);
        let (mut seen, mut full) = (0usize, 0u32);
        let t0 = Instant::now();
        rt.block_on(pump(&mut p, |p, _| {
            // Every send that is due by now (one per millisecond since t0).
            while sent_at.len() < total
                && t0 + Duration::from_millis(sent_at.len() as u64) <= Instant::now()
            {
                let at = Instant::now();
                if p.a.host.tick("send1", &[]) != 1 {
                    full += 1; // the outbox is full: tried again at the next turn
                    break;
                }
                sent_at.push(at);
                let now = p.a.driver.now_ms();
                p.a.driver.node_mut().wake_messages(now);
            }
            let r = p.b.host.stats(to).map_or(0, |s| s.received) as usize;
            let now = Instant::now();
            while seen < r.min(sent_at.len()) {
                if seen >= warm {
                    lat.push(now - sent_at[seen]);
                    late.push(now - (t0 + Duration::from_millis(seen as u64)));
                }
                seen += 1;
            }
            seen >= total
        }));
        let secs = t0.elapsed().as_secs_f64();
        let med = median(&mut lat);
        let p99 = pct(&mut lat, 0.99);
        let max = *lat.iter().max().unwrap();
        let late_p99 = pct(&mut late, 0.99);
        summary.borrow_mut().push(format!(
            "messages at 1,000/s (256 bytes): {total} sent in {secs:.2} s ({:.0}/s, outbox full {full} times); latency of the last {} (send call on a to the tick on b that took it): median {:.2} ms, p99 {:.2} ms, max {:.2} ms; from when each send was due: p99 {:.2} ms",
            total as f64 / secs,
            lat.len(),
            med.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            late_p99.as_secs_f64() * 1e3
        ));
    }
    // A restart of a node holding 1,000 agents with 100 messages each logged after their saved
    // copies (100,000 events, plus the ticks that took them): the host and its journal opened
    // again, and `Node::restart` running every agent the journal names.
    if !only_messages {
        let dir = std::env::temp_dir().join(format!("mielin-bench-{}-restart", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let id = Identity::from_seed([3; 32]);
        let wasm = wat::parse_str(include_str!("../examples/agents/stream.wat")).unwrap();
        let agents: Vec<AgentId> = (0..1000u32)
            .map(|i| {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&i.to_le_bytes());
                b[15] = 0xee;
                AgentId::from_bytes(b)
            })
            .collect();
        let from = AgentId::from_bytes([0x5e; 16]);
        let mut events = 0u64;
        {
            let mut h = mielin_cells::quic::WasmHost::open(&id, &Directory::new(), &dir, 1_000_000)
                .unwrap();
            for &a in &agents {
                h.create(a, wasm.clone(), 0).unwrap();
            }
            // 100 messages each, 8 at a time (a mailbox holds 8), each round taken by one tick
            // of every agent (a logged call).
            for first in (1..=100u64).step_by(8) {
                for &a in &agents {
                    for seq in first..(first + 8).min(101) {
                        let d = mielin_cells::mesh::AgentHost::deliver(
                            &mut h,
                            a,
                            id.node_id(),
                            from,
                            [1; 16],
                            seq,
                            &[seq as u8; 16],
                        );
                        assert_eq!(d, mielin_cells::mesh::Delivery::Accepted);
                        events += 1;
                    }
                }
                h.tick("tick", &[]);
                mielin_cells::mesh::AgentHost::flush(&mut h).unwrap();
            }
            // What the node's journal says of them: each runs here at epoch 0 (as
            // `Driver::start` records it).
            use mielin_cells::mesh::{Journal, Phase, Record};
            let mut j = h.journal();
            for &a in &agents {
                j.set_sequence(a, 0).unwrap();
                j.put(
                    a,
                    Record {
                        epoch: 0,
                        phase: Phase::Running,
                    },
                )
                .unwrap();
            }
        }
        let t0 = Instant::now();
        let mut h =
            mielin_cells::quic::WasmHost::open(&id, &Directory::new(), &dir, 1_000_000).unwrap();
        let opened = t0.elapsed();
        // The node restarts from its journal (1,000 records) and runs every agent it names.
        let journal = h.journal();
        let _node: mielin_cells::mesh::Node<_, 1024> = mielin_cells::mesh::Node::restart(
            id.node_id(),
            journal,
            mielin_cells::mesh::Config::default(),
            &mut h,
            0,
        );
        let total = t0.elapsed();
        let running = agents.iter().filter(|a| h.is_running(**a)).count();
        let received: i64 = agents
            .iter()
            .filter_map(|a| h.stats(*a))
            .map(|s| i64::from(s.received))
            .sum();
        assert_eq!(running, 1000, "{:?}", h.take_errors());
        summary.borrow_mut().push(format!(
            "restart: 1,000 agents, {events} messages logged after their saved copies (and the ticks that took them): host and journal opened in {:.3} s, every agent running after Node::restart in {:.3} s; {received} messages counted by the agents after it",
            opened.as_secs_f64(),
            total.as_secs_f64()
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !only_restart {
        two_threads(&summary);
    }
    c.final_summary();
    println!("\n== summary (same run)");
    for l in summary.borrow().iter() {
        println!("{l}");
    }
}

/// What one node thread of [`threaded`] shares with the bench.
#[derive(Default)]
struct Shared {
    stop: std::sync::atomic::AtomicBool,
    /// Messages the receiving agent took (its count), and its node's group commits.
    received: std::sync::atomic::AtomicU64,
    commits: [std::sync::atomic::AtomicU64; 2],
    /// Steady mode: when each message was sent, and when the receiver's count passed it.
    sent_at: std::sync::Mutex<Vec<Instant>>,
    taken_at: std::sync::Mutex<Vec<Instant>>,
    outbox_full: std::sync::atomic::AtomicU64,
}

/// Two nodes, each on its own OS thread with its own tokio runtime, on loopback: the agent on
/// node 0 sends `len`-byte messages to the one on node 1, as fast as its outbox and the window
/// let it, or (`steady`) one per millisecond through its `send1` export. Each thread runs its
/// driver and, after every wake, its agent's `tick` (so a message is taken when it arrives, not
/// at the next timer). Returns when `until` says so; the threads are stopped and joined.
fn threaded(
    name: &str,
    len: u32,
    steady: bool,
    (window, mailbox): (u8, usize),
    big: bool,
    until: impl FnOnce(&Shared),
) -> std::sync::Arc<Shared> {
    use mielin_cells::mesh::InboxLimits;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{mpsc, Arc};
    let dir = std::env::temp_dir().join(format!("mielin-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shared = Arc::new(Shared::default());
    let agents = [AgentId::from_bytes([31; 16]), AgentId::from_bytes([32; 16])];
    let (tx0, rx1) = mpsc::channel();
    let (tx1, rx0) = mpsc::channel();
    let threads: Vec<_> = [(0usize, tx0, rx0), (1, tx1, rx1)]
        .into_iter()
        .map(|(i, tx, rx)| {
            let (shared, dir) = (shared.clone(), dir.join(format!("n{i}")));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let _guard = rt.enter();
                let id = Identity::from_seed([40 + i as u8; 32]);
                let mut host =
                    mielin_cells::quic::WasmHost::open(&id, &Directory::new(), &dir, u64::MAX)
                        .unwrap();
                host.set_inbox_limits(InboxLimits {
                    mailbox,
                    outbox: mailbox,
                    ..InboxLimits::default()
                });
                let mut cfg = pair::cfg();
                cfg.mesh.window = window;
                let mut driver =
                    pair::D::new(&id, Directory::new(), Default::default(), cfg, &mut host)
                        .unwrap();
                tx.send((id.public_key(), driver.local_addr().unwrap()))
                    .unwrap();
                let (key, addr) = rx.recv().unwrap();
                let peer = driver.add_peer(key, addr);
                host.trust_peer(&mielin_cells::quic::Peer { addr, key })
                    .unwrap();
                let wasm = wat::parse_str(include_str!("../examples/agents/stream.wat")).unwrap();
                let (me, other) = (agents[i], agents[1 - i]);
                // The sender's start argument: addressee, message length, send1 mode.
                let arg = match i {
                    0 => 32 | (len as i32) << 16 | if steady { 0x100 } else { 0 },
                    _ => 0,
                };
                host.create(me, wasm, arg).unwrap();
                if big {
                    // 10 MiB of memory that does not compress (its checkpoints are whole).
                    host.modify_memory(me, |m| {
                        let mut x: u32 = 0x1234_5678;
                        let data = m.len();
                        m.resize(160 * 65536, 0);
                        for b in m[data..].iter_mut() {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            *b = x as u8;
                        }
                    })
                    .unwrap();
                }
                driver.start(&mut host, me).unwrap();
                driver.node_mut().set_location(other, peer, 0);
                let t0 = Instant::now();
                rt.block_on(async {
                    while !shared.stop.load(Relaxed) {
                        let wake = tokio::select! {
                            w = driver.wait() => Some(w),
                            _ = tokio::time::sleep(Duration::from_millis(5)) => None,
                        };
                        // The agent runs in the turn that brought its messages (or acks).
                        let steady_sender = i == 0 && steady;
                        let w = wake.unwrap_or(mielin_cells::quic::Wake::Timer);
                        driver.handle_with(&mut host, w, |host| {
                            let mut changed = host.tick("tick", &[]) > 0;
                            if steady_sender {
                                let mut sent = shared.sent_at.lock().unwrap();
                                while t0 + Duration::from_millis(sent.len() as u64)
                                    <= Instant::now()
                                {
                                    let at = Instant::now();
                                    if host.tick("send1", &[]) != 1 {
                                        shared.outbox_full.fetch_add(1, Relaxed);
                                        break;
                                    }
                                    sent.push(at);
                                    changed = true;
                                }
                            }
                            changed
                        });
                        if i == 1 {
                            let r = host.stats(me).map_or(0, |s| s.received) as u64;
                            if steady {
                                let mut taken = shared.taken_at.lock().unwrap();
                                let now = Instant::now();
                                while (taken.len() as u64) < r {
                                    taken.push(now);
                                }
                            }
                            shared.received.store(r, Relaxed);
                        }
                        shared.commits[i].store(host.keeper().group_commits(), Relaxed);
                    }
                });
                if std::env::var_os("MIELIN_BENCH_DEBUG").is_some() {
                    eprintln!("node {i}: {:?} {:?}", driver.node().stats(), driver.stats());
                }
            })
        })
        .collect();
    until(&shared);
    shared.stop.store(true, Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    shared
}

/// The disk's own rate in the same run: 1 KiB appended and fdatasynced, for 2 s.
fn fdatasyncs_per_second() -> f64 {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("mielin-fdatasync-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    let (mut k, t) = (0u32, Instant::now());
    while t.elapsed() < Duration::from_secs(2) {
        f.write_all(&[7u8; 1024]).unwrap();
        f.sync_data().unwrap();
        k += 1;
    }
    let _ = std::fs::remove_file(&path);
    f64::from(k) / t.elapsed().as_secs_f64()
}

/// The two-thread figures: streams of 256 B, 1 KiB and 4 KiB messages (durable messages per
/// second, messages per group commit, beside the disk's fdatasync rate), and the latency of
/// 1 KiB messages sent at a steady 1,000 per second.
fn two_threads(summary: &RefCell<Vec<String>>) {
    use std::sync::atomic::Ordering::Relaxed;
    let default = (
        mielin_cells::mesh::Config::default().window,
        mielin_cells::mesh::InboxLimits::default().mailbox,
    );
    // A window of 64 needs mailboxes and outboxes of 64 (a sender never has more in flight
    // than its outbox holds).
    let tuned = (64u8, 64usize);
    let raw = fdatasyncs_per_second();
    let cases = [
        (256u32, default, false),
        (1024, default, false),
        (4096, default, false),
        (256, tuned, false),
        (1024, tuned, false),
        (4096, tuned, false),
        (1024, tuned, true),
    ];
    for (len, (window, mailbox), big) in cases {
        let mut got = (0u64, 0u64, 0f64);
        threaded("threads-stream", len, false, (window, mailbox), big, |s| {
            while s.received.load(Relaxed) < 100 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let commits = || s.commits[0].load(Relaxed) + s.commits[1].load(Relaxed);
            let (n0, c0, t0) = (s.received.load(Relaxed), commits(), Instant::now());
            std::thread::sleep(Duration::from_secs(5));
            got = (
                s.received.load(Relaxed) - n0,
                commits() - c0,
                t0.elapsed().as_secs_f64(),
            );
        });
        let (n, c, secs) = got;
        let agents = if big {
            "10 MiB agents"
        } else {
            "one-page agents"
        };
        summary.borrow_mut().push(format!(
            "two threads, streamed ({len} bytes, {agents}, window {window}, mailbox and outbox {mailbox}): {n} messages in {secs:.2} s = {:.0} durable messages/s; {c} group commits on both nodes ({:.1} messages per commit, two fdatasyncs each); the disk, same run: {raw:.0} fdatasyncs/s of 1 KiB appends",
            n as f64 / secs,
            n as f64 / c.max(1) as f64
        ));
    }
    for (window, mailbox) in [default, tuned] {
        let (warm, total) = (200usize, 5_200usize);
        let s = threaded(
            "threads-steady",
            1024,
            true,
            (window, mailbox),
            false,
            |s| {
                while s.taken_at.lock().unwrap().len() < total {
                    std::thread::sleep(Duration::from_millis(5));
                }
            },
        );
        let (sent, taken) = (s.sent_at.lock().unwrap(), s.taken_at.lock().unwrap());
        let t0 = sent[0];
        let mut lat: Vec<Duration> = (warm..total).map(|k| taken[k] - sent[k]).collect();
        let mut late: Vec<Duration> = (warm..total)
            .map(|k| taken[k] - (t0 + Duration::from_millis(k as u64)))
            .collect();
        let secs = (sent[total - 1] - t0).as_secs_f64();
        summary.borrow_mut().push(format!(
            "two threads, 1 KiB messages at 1,000/s (window {window}, mailbox and outbox {mailbox}): {total} sent in {secs:.2} s (outbox full {} times); latency of the last {} (send1 on node 0 to the tick on node 1 that took it): median {:.2} ms, p99 {:.2} ms, max {:.2} ms; from when each send was due: p99 {:.2} ms",
            s.outbox_full.load(Relaxed),
            lat.len(),
            median(&mut lat).as_secs_f64() * 1e3,
            pct(&mut lat, 0.99).as_secs_f64() * 1e3,
            lat.iter().max().unwrap().as_secs_f64() * 1e3,
            pct(&mut late, 0.99).as_secs_f64() * 1e3
        ));
    }
}
