//! WebAssembly agents use the mesh through `mesh.send` and `mesh.recv` (feature `wasmi`).
#![cfg(feature = "wasmi")]

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
    sent: usize,
}

impl Mailbox for Owned {
    fn send(&mut self, _: AgentId, _: &[u8]) -> bool {
        self.sent += 1;
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
    assert_eq!(live.host().sent, 0);
}
