//! WebAssembly agents use the mesh through `mesh.send` and `mesh.recv` (feature `wasmi`).
#![cfg(feature = "wasmi")]

use mielin_cells::mesh::frame::MAX_MESSAGE_LEN;
use mielin_cells::mesh::wasm::{self, Mailbox, Received};
use mielin_cells::runtime::{Runtime, Val};
use mielin_cells::{Agent, AgentId};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

const PEER: AgentId = AgentId::from_bytes([0xbb; 16]);

const AGENT: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "\bb\bb\bb\bb\bb\bb\bb\bb\bb\bb\bb\bb\bb\bb\bb\bb")
  ;; Sends the number n (4 bytes) to the peer whose id is at 0.
  (func (export "ping") (param $n i32) (result i32)
    (i32.store (i32.const 16) (local.get $n))
    (call $send (i32.const 0) (i32.const 16) (i32.const 4)))
  ;; Takes one message: its number, -1 if none, -2 on error; the sender's id lands at 64.
  (func (export "take") (result i32)
    (local $r i32)
    (local.set $r (call $recv (i32.const 64) (i32.const 128) (i32.const 64)))
    (if (result i32) (i32.eq (local.get $r) (i32.const 4))
      (then (i32.load (i32.const 128)))
      (else (local.get $r))))
  ;; Receiving into a buffer that ends past the memory.
  (func (export "bad_recv") (result i32)
    (call $recv (i32.const 64) (i32.const 65500) (i32.const 64)))
  ;; Bad arguments: a pointer past the memory.
  (func (export "bad") (result i32)
    (call $send (i32.const 65530) (i32.const 16) (i32.const 4))))"#;

#[derive(Default)]
struct Inner {
    outbox: Vec<(AgentId, Vec<u8>)>,
}

/// Shared with the test: a started agent's host data is reachable only read-only
/// (`LiveAgent::host`), and the test wants to see what was sent.
#[derive(Clone, Default)]
struct Host(Rc<RefCell<Inner>>);

impl Mailbox for Host {
    fn send(&mut self, to: AgentId, payload: &[u8]) -> bool {
        let mut i = self.0.borrow_mut();
        if i.outbox.len() >= 2 {
            return false;
        }
        i.outbox.push((to, payload.to_vec()));
        true
    }
    fn recv(&mut self, _: &mut [u8]) -> Received {
        Received::Empty // this host only sends (the other test receives)
    }
}

/// A host that owns its mailbox directly.
#[derive(Default)]
struct Owned {
    mailbox: VecDeque<(AgentId, Vec<u8>)>,
    sent: Vec<(AgentId, Vec<u8>)>,
}

impl Mailbox for Owned {
    fn send(&mut self, to: AgentId, payload: &[u8]) -> bool {
        self.sent.push((to, payload.to_vec()));
        true
    }
    fn recv(&mut self, out: &mut [u8]) -> Received {
        let Some((from, m)) = self.mailbox.front() else {
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
        self.mailbox.pop_front();
        r
    }
}

fn i32_of(v: Vec<Val>) -> i32 {
    match v[..] {
        [Val::I32(x)] => x,
        _ => panic!("expected one i32, got {v:?}"),
    }
}

#[test]
fn an_agent_sends_with_back_pressure() {
    let host = Host::default();
    let rt = Runtime::new(1_000_000);
    let agent = Agent::new(wat::parse_str(AGENT).unwrap()).unwrap();
    let mut live = rt.start(agent, host.clone(), wasm::link).unwrap();
    assert_eq!(i32_of(live.call("ping", &[Val::I32(1)]).unwrap()), 0);
    assert_eq!(i32_of(live.call("ping", &[Val::I32(2)]).unwrap()), 0);
    assert_eq!(
        i32_of(live.call("ping", &[Val::I32(3)]).unwrap()),
        -1,
        "outbox full"
    );
    assert_eq!(i32_of(live.call("bad", &[]).unwrap()), -2);
    let out = host.0.borrow().outbox.clone();
    assert_eq!(
        out,
        [
            (PEER, 1i32.to_le_bytes().to_vec()),
            (PEER, 2i32.to_le_bytes().to_vec())
        ]
    );
    assert_eq!(i32_of(live.call("take", &[]).unwrap()), -1, "empty mailbox");
}

#[test]
fn an_agent_receives_in_order() {
    let mut host = Owned::default();
    for n in [7i32, 8] {
        host.mailbox.push_back((PEER, n.to_le_bytes().to_vec()));
    }
    host.mailbox.push_back((PEER, vec![0; 100])); // longer than the agent's buffer (64)
    let rt = Runtime::new(1_000_000);
    let agent = Agent::new(wat::parse_str(AGENT).unwrap()).unwrap();
    let mut live = rt.start(agent, host, wasm::link).unwrap();
    assert_eq!(i32_of(live.call("bad_recv", &[]).unwrap()), -2);
    assert_eq!(
        live.host().mailbox.len(),
        3,
        "a refused receive takes nothing"
    );
    assert_eq!(i32_of(live.call("take", &[]).unwrap()), 7);
    assert_eq!(i32_of(live.call("take", &[]).unwrap()), 8);
    assert_eq!(
        i32_of(live.call("take", &[]).unwrap()),
        -2,
        "too long: stays"
    );
    assert_eq!(live.host().mailbox.len(), 1);
    assert!(live.host().sent.is_empty());
}

/// `recv(f, p, c)` and `send(t, p, l)` with any arguments; `byte(i)` reads memory; `fill(v)`
/// sets the whole first page to v.
const RANGES: &str = r#"(module
  (import "mesh" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "mesh" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "recv") (param i32 i32 i32) (result i32)
    (call $recv (local.get 0) (local.get 1) (local.get 2)))
  (func (export "send") (param i32 i32 i32) (result i32)
    (call $send (local.get 0) (local.get 1) (local.get 2)))
  (func (export "fill") (param i32) (memory.fill (i32.const 0) (local.get 0) (i32.const 65536)))
  (func (export "byte") (param i32) (result i32) (i32.load8_u (local.get 0))))"#;

const SIZE: i32 = 65536;

/// `mesh.send` / `mesh.recv` read and write the agent's memory in place (wasmi's
/// `data_and_store_mut`; from a review): ranges at the very end of memory, past it, overflowing
/// `i32` sums, a capacity beyond the longest message, and a sender id that overlaps the
/// payload. None may panic or touch bytes outside the ranges; `recv` takes nothing when it
/// returns an error.
#[test]
fn in_place_ranges_at_and_past_the_end_of_memory() {
    let mut mb = Owned::default();
    for _ in 0..8 {
        mb.mailbox.push_back((PEER, vec![0x5a; MAX_MESSAGE_LEN]));
    }
    let rt = Runtime::new(10_000_000);
    let agent = Agent::new(wat::parse_str(RANGES).unwrap()).unwrap();
    let mut live = rt.start(agent, mb, wasm::link).unwrap();
    let recv = |live: &mut mielin_cells::runtime::LiveAgent<Owned>, f: i32, p: i32, c: i32| {
        i32_of(
            live.call("recv", &[Val::I32(f), Val::I32(p), Val::I32(c)])
                .unwrap(),
        )
    };
    let m = MAX_MESSAGE_LEN as i32;
    // Past the end, overflowing, negative: refused, nothing taken.
    for (f, p, c) in [
        (SIZE - 15, 0, m),
        (0, SIZE - m + 1, m),
        (0, i32::MAX, m),
        (i32::MAX - 8, 0, m),
        (-1, 0, m),
        (0, -16, m),
        (0, 0, -1),
        (0, 16, i32::MAX),
        (0, SIZE - 16, m), // room for less than the message
    ] {
        let r = recv(&mut live, f, p, c);
        assert!(r < 0, "({f}, {p}, {c}) -> {r}");
        assert_eq!(live.host().mailbox.len(), 8, "({f}, {p}, {c}) took one");
    }
    // Exactly at the end: taken.
    assert_eq!(recv(&mut live, SIZE - 16, SIZE - 16 - m, m), m);
    // A capacity beyond the longest message, the buffer still inside memory.
    assert_eq!(recv(&mut live, 0, 16, SIZE - 16), m);
    // The sender's id overlapping the payload: which wins is visible to the agent.
    live.call("fill", &[Val::I32(0)]).unwrap();
    assert_eq!(recv(&mut live, 100, 100, m), m);
    let b = i32_of(live.call("byte", &[Val::I32(100)]).unwrap());
    // The message over the id, as when both were copied (id first, then the message): a
    // copy re-applying a logged call must see the same bytes as the call did.
    assert_eq!(b, 0x5a, "byte 100 after recv");
    let b = i32_of(live.call("byte", &[Val::I32(99)]).unwrap());
    assert_eq!(b, 0, "before the id: untouched");
    // Sends at the end and past it.
    let send = |live: &mut mielin_cells::runtime::LiveAgent<Owned>, t: i32, p: i32, l: i32| {
        i32_of(
            live.call("send", &[Val::I32(t), Val::I32(p), Val::I32(l)])
                .unwrap(),
        )
    };
    assert_eq!(send(&mut live, SIZE - 16, SIZE - m, m), 0);
    assert_eq!(send(&mut live, 0, 0, m + 1), -2);
    assert_eq!(send(&mut live, SIZE - 15, 0, 4), -2);
    assert_eq!(send(&mut live, 0, SIZE - m + 1, m), -2);
    assert_eq!(send(&mut live, i32::MAX, 0, 4), -2);
    assert_eq!(send(&mut live, 0, i32::MAX, 4), -2);
    // The id and the message the same bytes.
    assert_eq!(send(&mut live, 0, 0, 16), 0);
    assert_eq!(live.host().sent.len(), 2);
}
