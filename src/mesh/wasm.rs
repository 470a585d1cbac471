//! Host functions that let WebAssembly agents send and receive mesh messages (feature `wasmi`).
//!
//! [`link`] defines two imports on a [`Linker`](crate::runtime::Linker) for any store data that
//! implements [`Mailbox`]:
//!
//! - `mesh.send(to_ptr: i32, ptr: i32, len: i32) -> i32`: sends `len` bytes at `ptr` to the
//!   agent whose 16-byte id is at `to_ptr`. Returns 0 when the message was queued, -1 when the
//!   sender's outbox is full (back-pressure: try again later), -2 for bad arguments (out of
//!   memory bounds, longer than [`MAX_MESSAGE_LEN`]).
//! - `mesh.recv(from_ptr: i32, ptr: i32, cap: i32) -> i32`: takes the oldest message of the
//!   agent's mailbox, writes its sender's id at `from_ptr` and its bytes at `ptr`, and returns
//!   the length; -1 when the mailbox is empty; -2 for bad arguments or a message longer than
//!   `cap` (it stays in the mailbox).
//!
//! The agent's module must export its memory as `memory`. What `Mailbox` does with a message —
//! numbering it and keeping it until the mesh acknowledges it ([`AgentHost::outgoing`]) — is
//! the embedder's; the functions only move bytes between the agent's memory and the mailbox.
//!
//! [`AgentHost::outgoing`]: super::AgentHost::outgoing

use super::frame::MAX_MESSAGE_LEN;
use crate::AgentId;
use wasmi::{Caller, Extern, Linker};

/// The agent's side of the mesh, as the host functions see it.
pub trait Mailbox {
    /// Queues a message from this agent to `to`; `false` when the outbox is full.
    fn send(&mut self, to: AgentId, payload: &[u8]) -> bool;
    /// The oldest message in this agent's mailbox (sender and length), without taking it.
    fn peek(&self) -> Option<(AgentId, &[u8])>;
    /// Takes the oldest message out of the mailbox.
    fn pop(&mut self);
}

fn memory<T>(caller: &Caller<'_, T>) -> Option<wasmi::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

fn range(ptr: i32, len: i32) -> Option<(usize, usize)> {
    let p = usize::try_from(ptr).ok()?;
    let l = usize::try_from(len).ok()?;
    Some((p, l))
}

/// Defines `mesh.send` and `mesh.recv` on `linker` (see the module documentation).
pub fn link<T: Mailbox + 'static>(linker: &mut Linker<T>) -> Result<(), wasmi::Error> {
    linker.func_wrap(
        "mesh",
        "send",
        |mut caller: Caller<'_, T>, to_ptr: i32, ptr: i32, len: i32| -> i32 {
            let Some(mem) = memory(&caller) else {
                return -2;
            };
            let (Some((tp, _)), Some((p, l))) = (range(to_ptr, 16), range(ptr, len)) else {
                return -2;
            };
            if l > MAX_MESSAGE_LEN {
                return -2;
            }
            let mut to = [0u8; 16];
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            if mem.read(&caller, tp, &mut to).is_err()
                || mem.read(&caller, p, &mut buf[..l]).is_err()
            {
                return -2;
            }
            if caller.data_mut().send(AgentId::from_bytes(to), &buf[..l]) {
                0
            } else {
                -1
            }
        },
    )?;
    linker.func_wrap(
        "mesh",
        "recv",
        |mut caller: Caller<'_, T>, from_ptr: i32, ptr: i32, cap: i32| -> i32 {
            let Some(mem) = memory(&caller) else {
                return -2;
            };
            let (Some((fp, _)), Some((p, c))) = (range(from_ptr, 16), range(ptr, cap)) else {
                return -2;
            };
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let (from, n) = match caller.data().peek() {
                None => return -1,
                Some((_, m)) if m.len() > c || m.len() > MAX_MESSAGE_LEN => return -2,
                Some((from, m)) => {
                    buf[..m.len()].copy_from_slice(m);
                    (from, m.len())
                }
            };
            if mem.write(&mut caller, fp, from.as_bytes()).is_err()
                || mem.write(&mut caller, p, &buf[..n]).is_err()
            {
                return -2;
            }
            caller.data_mut().pop();
            n as i32
        },
    )?;
    Ok(())
}
