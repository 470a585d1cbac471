//! Two WebAssembly agents exchange numbered messages through the mesh while one of them migrates
//! twice (node 1 → node 2 → node 0); the network between the three nodes drops and duplicates
//! frames. The totals at the end show that nothing was lost or delivered twice.
//!
//! `cargo run --example ping_pong --features wasmi`

use mielin_cells::mesh::wasm::{self, Mailbox, Received};
use mielin_cells::mesh::{AgentHost, AgentInfo, Config, Delivery, MemJournal, MeshError, Node};
use mielin_cells::migration::MigrationSnapshot;
use mielin_cells::runtime::{LiveAgent, Runtime, Val};
use mielin_cells::{Agent, AgentId, NodeId};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

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

/// An agent's messaging state; it travels with the agent, after its snapshot.
#[derive(Clone, Default)]
struct Inbox {
    next_seq: BTreeMap<AgentId, u64>,
    last_in: BTreeMap<AgentId, u64>,
    mailbox: VecDeque<(AgentId, Vec<u8>)>,
    outbox: Vec<(AgentId, u64, Vec<u8>)>,
}

fn id(b: &[u8]) -> AgentId {
    AgentId::from_bytes(b[..16].try_into().unwrap())
}

impl Inbox {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = |out: &mut Vec<u8>, x: usize| out.extend_from_slice(&(x as u32).to_le_bytes());
        for map in [&self.next_seq, &self.last_in] {
            n(out, map.len());
            for (a, s) in map {
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        n(out, self.mailbox.len());
        for (a, m) in &self.mailbox {
            out.extend_from_slice(a.as_bytes());
            n(out, m.len());
            out.extend_from_slice(m);
        }
        n(out, self.outbox.len());
        for (a, s, m) in &self.outbox {
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(&s.to_le_bytes());
            n(out, m.len());
            out.extend_from_slice(m);
        }
    }

    /// Decodes what `encode` wrote (the example trusts its own bytes after the snapshot check).
    fn decode(mut b: &[u8]) -> Option<Inbox> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (x, rest) = (b.get(..n)?, b.get(n..)?);
            *b = rest;
            Some(x)
        }
        fn num(b: &mut &[u8]) -> Option<usize> {
            Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
        }
        fn seq(b: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
        }
        let mut inbox = Inbox::default();
        for i in 0..2 {
            for _ in 0..num(&mut b)? {
                let a = id(take(&mut b, 16)?);
                let s = seq(&mut b)?;
                if i == 0 {
                    inbox.next_seq.insert(a, s)
                } else {
                    inbox.last_in.insert(a, s)
                };
            }
        }
        for _ in 0..num(&mut b)? {
            let a = id(take(&mut b, 16)?);
            let l = num(&mut b)?;
            inbox.mailbox.push_back((a, take(&mut b, l)?.to_vec()));
        }
        for _ in 0..num(&mut b)? {
            let a = id(take(&mut b, 16)?);
            let s = seq(&mut b)?;
            let l = num(&mut b)?;
            inbox.outbox.push((a, s, take(&mut b, l)?.to_vec()));
        }
        b.is_empty().then_some(inbox)
    }
}

/// The store data of a live agent: its inbox, shared with the node's host.
#[derive(Clone, Default)]
struct Mbox(Rc<RefCell<Inbox>>);

impl Mailbox for Mbox {
    fn send(&mut self, to: AgentId, payload: &[u8]) -> bool {
        let mut i = self.0.borrow_mut();
        if i.outbox.len() >= 8 {
            return false;
        }
        let s = i.next_seq.entry(to).or_insert(0);
        *s += 1;
        let s = *s;
        i.outbox.push((to, s, payload.to_vec()));
        true
    }
    fn recv(&mut self, out: &mut [u8]) -> Received {
        let mut i = self.0.borrow_mut();
        let Some((from, m)) = i.mailbox.front() else {
            return Received::Empty;
        };
        let Some(dst) = out.get_mut(..m.len()) else {
            return Received::TooLong;
        };
        dst.copy_from_slice(m);
        let r = Received::Message {
            from: *from,
            len: m.len(),
        };
        i.mailbox.pop_front();
        r
    }
}

/// A node's agents: running ones, stopped ones (during a hand-off) and prepared ones.
struct Host {
    node: NodeId,
    rt: Runtime,
    live: BTreeMap<AgentId, LiveAgent<Mbox>>,
    stopped: BTreeMap<AgentId, (Agent<Vec<u8>>, Inbox)>,
    prepared: BTreeMap<(AgentId, u64), Vec<u8>>,
    duplicates: u64,
}

impl Host {
    fn new(node: NodeId) -> Host {
        Host {
            node,
            rt: Runtime::new(10_000_000),
            live: BTreeMap::new(),
            stopped: BTreeMap::new(),
            prepared: BTreeMap::new(),
            duplicates: 0,
        }
    }
    fn inbox(&self, agent: AgentId) -> Option<Inbox> {
        match self.live.get(&agent) {
            Some(l) => Some(l.host().0.borrow().clone()),
            None => self.stopped.get(&agent).map(|s| s.1.clone()),
        }
    }
}

fn refused(reason: &'static str) -> MeshError {
    MeshError::HostRefused { reason }
}

impl AgentHost for Host {
    fn describe(&mut self, agent: AgentId) -> Option<AgentInfo> {
        let dna = match self.live.get(&agent) {
            Some(l) => l.agent().dna().clone(),
            None => self.stopped.get(&agent)?.0.dna().clone(),
        };
        Some(AgentInfo {
            dna_hash: *dna.hash(),
            snapshot_len: 0,
            dna_len: dna.size() as u32,
        })
    }
    fn has_dna(&mut self, _: &[u8; 32]) -> bool {
        false // snapshots here always carry their DNA
    }
    fn stop(&mut self, agent: AgentId) {
        if let Some(live) = self.live.remove(&agent) {
            let inbox = live.host().0.borrow().clone();
            let a = live.into_agent().expect("capture between calls");
            self.stopped.insert(agent, (a, inbox));
        }
    }
    fn capture(&mut self, agent: AgentId, _: bool, out: &mut [u8]) -> Result<usize, MeshError> {
        let (a, inbox) = self
            .stopped
            .get(&agent)
            .ok_or(refused("not stopped here"))?;
        let snap = MigrationSnapshot::capture_at(a, Some(self.node), 0)
            .serialize()
            .map_err(|_| refused("serialize"))?;
        let mut bytes = (snap.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&snap);
        inbox.encode(&mut bytes);
        let dst = out.get_mut(..bytes.len()).ok_or(refused("buffer"))?;
        dst.copy_from_slice(&bytes);
        Ok(bytes.len())
    }
    fn prepare(&mut self, agent: AgentId, epoch: u64, _: bool, s: &[u8]) -> Result<(), MeshError> {
        let n =
            u32::from_le_bytes(s.get(..4).ok_or(refused("short"))?.try_into().unwrap()) as usize;
        let snap = s.get(4..4 + n).ok_or(refused("short"))?;
        let checked =
            MigrationSnapshot::deserialize(snap).map_err(|_| refused("invalid snapshot"))?;
        if checked.agent_id() != agent || Inbox::decode(&s[4 + n..]).is_none() {
            return Err(refused("not this agent"));
        }
        self.prepared.insert((agent, epoch), s.to_vec());
        Ok(())
    }
    fn run(&mut self, agent: AgentId, epoch: u64) {
        let (a, inbox) = match self.prepared.remove(&(agent, epoch)) {
            Some(s) => {
                let n = u32::from_le_bytes(s[..4].try_into().unwrap()) as usize;
                let a = MigrationSnapshot::deserialize(&s[4..4 + n])
                    .unwrap()
                    .into_agent()
                    .unwrap();
                (a, Inbox::decode(&s[4 + n..]).unwrap())
            }
            None => match self.stopped.remove(&agent) {
                Some(x) => x,
                None => return, // already running
            },
        };
        self.prepared.retain(|(x, _), _| *x != agent);
        let live = self
            .rt
            .resume(a, Mbox(Rc::new(RefCell::new(inbox))), wasm::link)
            .unwrap();
        self.live.insert(agent, live);
    }
    fn discard(&mut self, agent: AgentId, epoch: u64) {
        self.prepared.remove(&(agent, epoch));
    }
    fn release(&mut self, agent: AgentId) {
        self.stopped.remove(&agent);
        self.live.remove(&agent);
    }
    fn deliver(&mut self, to: AgentId, from: AgentId, seq: u64, payload: &[u8]) -> Delivery {
        let Some(live) = self.live.get(&to) else {
            return Delivery::Full;
        };
        let mut i = live.host().0.borrow_mut();
        let last = i.last_in.get(&from).copied().unwrap_or(0);
        if seq <= last {
            self.duplicates += 1;
            Delivery::Duplicate
        } else if seq > last + 1 {
            Delivery::OutOfOrder
        } else if i.mailbox.len() >= 4 {
            Delivery::Full
        } else {
            i.last_in.insert(from, seq);
            i.mailbox.push_back((from, payload.to_vec()));
            Delivery::Accepted
        }
    }
    fn outgoing(&mut self, agent: AgentId, f: &mut dyn FnMut(AgentId, u64, &[u8])) {
        if let Some(inbox) = self.inbox(agent) {
            for (to, seq, m) in &inbox.outbox {
                f(*to, *seq, m);
            }
        }
    }
    fn acked(&mut self, agent: AgentId, to: AgentId, seq: u64) {
        if let Some(live) = self.live.get(&agent) {
            live.host()
                .0
                .borrow_mut()
                .outbox
                .retain(|o| !(o.0 == to && o.1 == seq));
        }
    }
}

fn stats(live: &mut LiveAgent<Mbox>) -> (i32, i32, i32) {
    match live.call("stats", &[]).unwrap()[..] {
        [Val::I32(r), Val::I32(l), Val::I32(o)] => (r, l, o),
        ref v => panic!("stats: {v:?}"),
    }
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
    let mut hosts: Vec<Host> = nodes_ids.iter().map(|&n| Host::new(n)).collect();
    let wasm = wat::parse_str(AGENT).unwrap();
    let ping = AgentId::from_bytes([0x01; 16]);
    let pong = AgentId::from_bytes([0x02; 16]);
    for (n, me, peer) in [(0, ping, 0x02), (1, pong, 0x01)] {
        let agent = Agent::with_id(me, mielin_cells::Dna::new(wasm.clone()).unwrap());
        let mut live = hosts[n]
            .rt
            .start(agent, Mbox::default(), wasm::link)
            .unwrap();
        live.call("start", &[Val::I32(peer)]).unwrap();
        hosts[n].live.insert(me, live);
        nodes[n].start(&mut hosts[n], me).unwrap();
    }
    for node in &mut nodes {
        node.set_location(ping, nodes_ids[0], 0);
        node.set_location(pong, nodes_ids[1], 0);
    }
    hosts[0]
        .live
        .get_mut(&ping)
        .unwrap()
        .call("kick", &[])
        .unwrap();

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
            for live in host.live.values_mut() {
                live.call("tick", &[Val::I32(LIMIT)]).unwrap();
            }
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
                nodes[from]
                    .migrate(&mut hosts[from], now, pong, nodes_ids[to])
                    .unwrap();
                println!("step {step}: pong migrates node {from} -> node {to}");
                moves += 1;
            }
        }
        let done = hosts
            .iter_mut()
            .flat_map(|h| h.live.values_mut())
            .map(stats)
            .filter(|s| s.1 >= LIMIT - 1)
            .count();
        if done == 2 && wire.is_empty() {
            break;
        }
    }
    let mut total = 0;
    for (n, host) in hosts.iter_mut().enumerate() {
        for (a, live) in host.live.iter_mut() {
            let (received, last, out_of_order) = stats(live);
            let name = if *a == ping { "ping" } else { "pong" };
            println!(
                "{name} on node {n}: received {received} messages, last number {last}, out of order {out_of_order}"
            );
            assert_eq!(out_of_order, 0);
            total += received;
        }
    }
    let duplicates: u64 = hosts.iter().map(|h| h.duplicates).sum();
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
