//! Two WebAssembly agents exchange numbered messages through the mesh while one of them migrates
//! twice (node 1 → node 2 → node 0); the network between the three nodes drops and duplicates
//! frames. The totals at the end show that nothing was lost or delivered twice.
//!
//! `cargo run --example ping_pong --features wasmi`

use mielin_cells::mesh::cells::{Cells, MemKeeper, Open};
use mielin_cells::mesh::wasm::SharedInbox;
use mielin_cells::mesh::{Config, Inbox, InboxLimits, MemJournal, Node};
use mielin_cells::migration::DecodeLimits;
use mielin_cells::runtime::{LiveAgent, Runtime, Val};
use mielin_cells::{Agent, AgentId, NodeId};
use std::collections::VecDeque;

/// Each agent: `start(peer_byte)` remembers its peer; `tick()` answers every number n it
/// received with n + 1 (up to LIMIT) and counts what it received in a global; `kick()` sends 0.
const AGENT: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $received (mut i32) (i32.const 0))
  (global $last (mut i32) (i32.const -1))
  (global $out_of_order (mut i32) (i32.const 0))
  ;; peer id at 0..16, outgoing number at 16, sender id at 32, incoming number at 64
  (func (export "start") (param $peer i32)
    (memory.fill (i32.const 0) (local.get $peer) (i32.const 16)))
  (func $send_n (param $n i32) (result i32)
    (i32.store (i32.const 16) (local.get $n))
    (call $send (i32.const 0) (i32.const 16) (i32.const 4)))
  (func (export "kick") (result i32) (call $send_n (i32.const 0)))
  (func (export "tick") (param $limit i32) (result i32)
    (local $n i32)
    (block $done
      (loop $more
        (br_if $done (i32.ne (call $recv (i32.const 32) (i32.const 64) (i32.const 4)) (i32.const 4)))
        (local.set $n (i32.load (i32.const 64)))
        (global.set $received (i32.add (global.get $received) (i32.const 1)))
        (if (i32.ne (local.get $n) (i32.add (global.get $last) (i32.const 2)))
          (then (if (i32.ge_s (global.get $last) (i32.const 0))
            (then (global.set $out_of_order (i32.add (global.get $out_of_order) (i32.const 1)))))))
        (global.set $last (local.get $n))
        (if (i32.lt_s (local.get $n) (local.get $limit))
          (then (drop (call $send_n (i32.add (local.get $n) (i32.const 1))))))
        (br $more)))
    (global.get $received))
  (func (export "stats") (result i32 i32 i32)
    (global.get $received) (global.get $last) (global.get $out_of_order)))"#;

const LIMIT: i32 = 300;

/// Each agent's mailbox and outbox hold 4 messages.
const LIMITS: InboxLimits = InboxLimits {
    mailbox: 4,
    outbox: 8,
    senders: 8,
    senders_per_peer: 4,
};

/// A node's agents: the library's host, keeping them in memory.
type Host = Cells<MemKeeper, Open>;

fn host(node: NodeId) -> Host {
    let mut h = Cells::new(
        node,
        Runtime::new(10_000_000),
        MemKeeper::new(),
        Open,
        DecodeLimits::default(),
    );
    h.set_inbox_limits(LIMITS);
    h
}

fn stats(live: &mut LiveAgent<SharedInbox>) -> (i32, i32, i32) {
    match live.call("stats", &[]).unwrap()[..] {
        [Val::I32(r), Val::I32(l), Val::I32(o)] => (r, l, o),
        ref v => panic!("stats: {v:?}"),
    }
}

/// Every running agent's stats.
fn all_stats(host: &mut Host) -> Vec<(AgentId, (i32, i32, i32))> {
    let ids: Vec<AgentId> = host.running();
    ids.into_iter()
        .map(|a| (a, stats(host.live_mut(a).unwrap())))
        .collect()
}

fn main() {
    let nodes_ids: Vec<NodeId> = (0..3).map(|i| NodeId::from_bytes([i + 1; 16])).collect();
    let mut nodes: Vec<Node<MemJournal<8>, 8>> = nodes_ids
        .iter()
        .map(|&n| {
            Node::new(
                n,
                MemJournal::new(),
                Config {
                    rto_ms: 30,
                    ..Config::default()
                },
            )
        })
        .collect();
    let mut hosts: Vec<Host> = nodes_ids.iter().map(|&n| host(n)).collect();
    let wasm = wat::parse_str(AGENT).unwrap();
    let ping = AgentId::from_bytes([0x01; 16]);
    let pong = AgentId::from_bytes([0x02; 16]);
    for (n, me, peer) in [(0, ping, 0x02), (1, pong, 0x01)] {
        let agent = Agent::with_id(me, mielin_cells::Dna::new(wasm.clone()).unwrap());
        // A fixed secret per agent: the example's network is its own.
        hosts[n]
            .start(agent, Inbox::with_secret([n as u8 + 1; 16]))
            .unwrap();
        let live = hosts[n].live_mut(me).unwrap();
        live.call("start", &[Val::I32(peer)]).unwrap();
        nodes[n].start(&mut hosts[n], me).unwrap();
    }
    for node in &mut nodes {
        node.set_location(ping, nodes_ids[0], 0);
        node.set_location(pong, nodes_ids[1], 0);
    }
    hosts[0].live_mut(ping).unwrap().call("kick", &[]).unwrap();

    // A network that drops 1 frame in 10 and duplicates 1 in 20 (a fixed pseudo-random pattern).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 100
    };
    let (mut sent, mut dropped, mut duplicated) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    let mut now = 0;
    let mut moves = 0;
    let mut wire: VecDeque<(usize, usize, Vec<u8>)> = VecDeque::new();
    for step in 0..20_000u64 {
        now += 5;
        for (n, host) in hosts.iter_mut().enumerate() {
            host.tick("tick", &[Val::I32(LIMIT)]);
            nodes[n].wake_messages(now);
            nodes[n].handle_timeout(host, now);
            while let Some(t) = nodes[n].poll_transmit(host, &mut buf).unwrap() {
                let to = nodes_ids.iter().position(|&i| i == t.to).unwrap();
                sent += 1;
                let r = rnd();
                if r < 10 {
                    dropped += 1;
                    continue;
                }
                if r >= 95 {
                    duplicated += 1;
                    wire.push_back((n, to, buf[..t.len].to_vec()));
                }
                wire.push_back((n, to, buf[..t.len].to_vec()));
            }
        }
        while let Some((from, to, bytes)) = wire.pop_front() {
            nodes[to]
                .handle_frame(&mut hosts[to], now, nodes_ids[from], &bytes)
                .unwrap();
        }
        // pong moves twice: 1 → 2 at step 60, 2 → 0 at step 150.
        for (at, from, to) in [(60, 1, 2), (150, 2, 0)] {
            if step == at {
                hosts[from]
                    .migrate(&mut nodes[from], now, pong, nodes_ids[to])
                    .unwrap();
                println!("step {step}: pong migrates node {from} -> node {to}");
                moves += 1;
            }
        }
        let done = hosts
            .iter_mut()
            .flat_map(all_stats)
            .filter(|(_, s)| s.1 >= LIMIT - 1)
            .count();
        if done == 2 && wire.is_empty() {
            break;
        }
    }
    let mut total = 0;
    for (n, host) in hosts.iter_mut().enumerate() {
        for (a, (received, last, out_of_order)) in all_stats(host) {
            let name = if a == ping { "ping" } else { "pong" };
            println!(
                "{name} on node {n}: received {received} messages, last number {last}, out of order {out_of_order}"
            );
            assert_eq!(out_of_order, 0);
            total += received;
        }
    }
    let duplicates: u64 = hosts.iter().map(|h| h.duplicates()).sum();
    println!(
        "{moves} migrations; {sent} frames sent, {dropped} dropped, {duplicated} duplicated; \
         {duplicates} duplicate deliveries refused by sequence numbers"
    );
    println!(
        "numbers 0..={LIMIT} exchanged: {total} received, expected {}",
        LIMIT + 1
    );
    assert_eq!(moves, 2, "pong migrated twice before the exchange ended");
    assert_eq!(total, LIMIT + 1, "every number received exactly once");
}
