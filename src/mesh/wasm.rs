//! Host functions that let WebAssembly agents send and receive mesh messages (feature `wasmi`).
//!
//! [`link`] defines two imports on an [`Imports`] for any store data that
//! implements [`Mailbox`]:
//!
//! - `mesh.send(to_ptr: i32, ptr: i32, len: i32) -> i32`: sends `len` bytes at `ptr` to the
//!   agent whose 16-byte id is at `to_ptr`. Returns 0 when the message was queued, -1 when the
//!   sender's outbox is full (back-pressure: try again later), -2 for bad arguments (out of
//!   memory bounds, longer than [`MAX_MESSAGE_LEN`]).
//! - `mesh.recv(from_ptr: i32, ptr: i32, cap: i32) -> i32`: takes the oldest message of the
//!   agent's mailbox, writes its sender's id at `from_ptr` and its bytes at `ptr`, and returns
//!   the length; -1 when the mailbox is empty; -2 for bad arguments (the 16 bytes at `from_ptr`
//!   or the `cap` bytes at `ptr` outside the memory) or a message longer than `cap` (it stays in
//!   the mailbox).
//!
//! [`link_blocking`] adds `mesh.recv_wait` (a receive that suspends the call while the mailbox
//! is empty) and `mesh.yield` (a yield point for preemption), for modules transformed for
//! mid-call capture; [`Cells`](super::cells::Cells) links them for every agent.
//!
//! The agent's module must define a memory (agents started by `crate::runtime` have it
//! exported for them). What `Mailbox` does with a message —
//! numbering it and keeping it until the mesh acknowledges it ([`AgentHost::outgoing`]) — is
//! the embedder's; the functions only move bytes between the agent's memory and the mailbox.
//!
//! [`AgentHost::outgoing`]: super::AgentHost::outgoing

use super::frame::MAX_MESSAGE_LEN;
use crate::runtime::midcall::{self, MidCall, Suspendable};
use crate::runtime::Imports;
use crate::AgentId;
use wasmi::{Caller, Extern};

/// The agent's side of the mesh, as the host functions see it. Both methods copy, so a host
/// may keep the mailbox behind a `RefCell` or a lock.
pub trait Mailbox {
    /// Queues a message from this agent to `to`; `false` when the outbox is full.
    fn send(&mut self, to: AgentId, payload: &[u8]) -> bool;
    /// Moves the oldest message of this agent's mailbox into `out` and returns its sender and
    /// length; [`Received::TooLong`] (the message stays) when `out` is too small. `out` is the
    /// agent's own memory: write it only for a message taken.
    fn recv(&mut self, out: &mut [u8]) -> Received;
}

/// What [`Mailbox::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A message, now in the buffer.
    Message {
        /// Its sender.
        from: AgentId,
        /// Its length.
        len: usize,
    },
    /// The mailbox is empty.
    Empty,
    /// The oldest message does not fit the buffer; it stays in the mailbox.
    TooLong,
}

/// An agent's [`Inbox`](super::Inbox), shared between its live instance (as the store data the
/// host functions see) and its host (which delivers into it and reads its outbox), with the
/// limits the host allows the agent.
///
/// It also holds the agent's mid-call state ([`Suspendable`]), for [`link_blocking`]'s imports,
/// and the fuel below which `mesh.yield` suspends the call.
#[derive(Debug, Clone, Default)]
pub struct SharedInbox {
    inbox: alloc::rc::Rc<core::cell::RefCell<super::Inbox>>,
    limits: super::InboxLimits,
    mid: MidCall,
    preempt_below: u64,
}

impl SharedInbox {
    /// `inbox`, shared, within `limits`.
    pub fn new(inbox: super::Inbox, limits: super::InboxLimits) -> Self {
        SharedInbox {
            inbox: alloc::rc::Rc::new(core::cell::RefCell::new(inbox)),
            limits,
            mid: MidCall::default(),
            preempt_below: 0,
        }
    }

    /// `mesh.yield` suspends the call when less than `fuel` units of the call's fuel are left
    /// (0, the default: it never does).
    pub fn preempt_below(mut self, fuel: u64) -> Self {
        self.preempt_below = fuel;
        self
    }

    /// Whether the agent is suspended in `mesh.recv_wait` (as opposed to a yield point): it
    /// continues only once a message is in its mailbox. Meaningful while a call is suspended.
    pub fn waits_for_mail(&self) -> bool {
        self.mid.host_state() == WAIT_STATE
    }

    /// The inbox, to read.
    pub fn get(&self) -> core::cell::Ref<'_, super::Inbox> {
        self.inbox.borrow()
    }

    /// The inbox, to change.
    pub fn get_mut(&self) -> core::cell::RefMut<'_, super::Inbox> {
        self.inbox.borrow_mut()
    }

    /// The limits.
    pub fn limits(&self) -> &super::InboxLimits {
        &self.limits
    }

    /// [`Inbox::offer`](super::Inbox::offer) within this inbox's limits.
    pub fn offer(
        &self,
        peer: crate::NodeId,
        sender: AgentId,
        stream: super::Stream,
        seq: u64,
        payload: &[u8],
    ) -> super::Delivery {
        self.inbox
            .borrow_mut()
            .offer(peer, sender, stream, seq, payload, &self.limits)
    }

    /// [`Inbox::withdraw`](super::Inbox::withdraw) on the shared inbox.
    pub fn withdraw(&self, sender: AgentId, stream: super::Stream, seq: u64) -> bool {
        self.inbox.borrow_mut().withdraw(sender, stream, seq)
    }
}

impl Suspendable for SharedInbox {
    fn mid_call(&mut self) -> &mut MidCall {
        &mut self.mid
    }
}

/// What `mesh.recv_wait` keeps with a call it suspended (the import's host-side state): a
/// yield point keeps [`YIELD_STATE`].
pub const WAIT_STATE: &[u8] = b"recv_wait";
/// What `mesh.yield` keeps with a call it suspended.
pub const YIELD_STATE: &[u8] = b"yield";

/// The store data [`link_blocking`]'s imports need: a [`Mailbox`] that can suspend a call.
pub trait Blocking: Mailbox + Suspendable {
    /// Fuel below which `mesh.yield` suspends the call (0: never).
    fn preempt_below(&self) -> u64;
    /// [`Mailbox::recv`] that takes the oldest message even when it is longer than `out`:
    /// writes its first `out.len()` bytes and returns its whole length.
    fn recv_cut(&mut self, out: &mut [u8]) -> Received;
}

impl Blocking for SharedInbox {
    fn preempt_below(&self) -> u64 {
        self.preempt_below
    }

    fn recv_cut(&mut self, out: &mut [u8]) -> Received {
        let mut i = self.inbox.borrow_mut();
        let Some((from, m)) = i.peek() else {
            return Received::Empty;
        };
        let n = m.len().min(out.len());
        out[..n].copy_from_slice(&m[..n]);
        let len = m.len();
        i.pop();
        Received::Message { from, len }
    }
}

impl Mailbox for SharedInbox {
    fn send(&mut self, to: AgentId, payload: &[u8]) -> bool {
        self.inbox.borrow_mut().send(to, payload, &self.limits)
    }

    fn recv(&mut self, out: &mut [u8]) -> Received {
        // A message longer than `out` stays; any other is taken as `recv_cut` takes it.
        if self
            .inbox
            .borrow()
            .peek()
            .is_some_and(|(_, m)| m.len() > out.len())
        {
            return Received::TooLong;
        }
        self.recv_cut(out)
    }
}

/// The memory: the export `crate::runtime` adds to every module that defines one, else an
/// export named `memory`.
fn memory<T>(caller: &Caller<'_, T>) -> Option<wasmi::Memory> {
    ["__mielin_memory", "memory"]
        .iter()
        .find_map(|name| caller.get_export(name).and_then(Extern::into_memory))
}

fn range(ptr: i32, len: i32) -> Option<(usize, usize)> {
    let p = usize::try_from(ptr).ok()?;
    let l = usize::try_from(len).ok()?;
    Some((p, l))
}

/// Defines `mesh.send` and `mesh.recv` on `linker` (see the module documentation).
pub fn link<T: Mailbox + 'static>(linker: &mut Imports<'_, T>) -> Result<(), wasmi::Error> {
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
            // The message is read where it lies in the agent's memory: no copy.
            let (data, mailbox) = mem.data_and_store_mut(&mut caller);
            let to = tp.checked_add(16).and_then(|e| data.get(tp..e));
            let message = p.checked_add(l).and_then(|e| data.get(p..e));
            let (Some(to), Some(message)) = (to, message) else {
                return -2;
            };
            let mut id = [0u8; 16];
            id.copy_from_slice(to);
            if mailbox.send(AgentId::from_bytes(id), message) {
                0
            } else {
                -1
            }
        },
    )?;
    linker.func_wrap(
        "mesh",
        "recv",
        |mut caller: Caller<'_, T>, from_ptr: i32, ptr: i32, cap: i32| {
            recv(&mut caller, from_ptr, ptr, cap, |m, out| {
                match m.recv(out) {
                    // Longer than the buffer: it stays in the mailbox.
                    Received::Message { len, .. } if len > out.len() => Received::TooLong,
                    r => r,
                }
            })
        },
    )?;
    Ok(())
}

/// `mesh.recv` and `mesh.recv_wait`: checks the ranges, lets `take` move the oldest message
/// into the buffer (at most its room: a longer length means the rest was cut off), and writes
/// the sender; -1 when the mailbox is empty, -2 for bad arguments or a message `take` left.
fn recv<T>(
    caller: &mut Caller<'_, T>,
    from_ptr: i32,
    ptr: i32,
    cap: i32,
    take: impl FnOnce(&mut T, &mut [u8]) -> Received,
) -> i32 {
    let Some(mem) = memory(caller) else {
        return -2;
    };
    let (Some((fp, _)), Some((p, c))) = (range(from_ptr, 16), range(ptr, cap)) else {
        return -2;
    };
    // The whole buffer must lie in the agent's memory before a message is taken: a write
    // that failed afterwards would lose it.
    let size = mem.data_size(&*caller);
    if fp.checked_add(16).is_none_or(|e| e > size) || p.checked_add(c).is_none_or(|e| e > size) {
        return -2;
    }
    // Taken straight into the agent's memory (both ranges were checked above).
    let room = c.min(MAX_MESSAGE_LEN);
    let (data, mailbox) = mem.data_and_store_mut(&mut *caller);
    let (from, n) = match take(mailbox, &mut data[p..p + room]) {
        Received::Empty => return -1,
        Received::TooLong => return -2,
        Received::Message { from, len } => (from, len),
    };
    // The sender's id, then the message over it where the two overlap (the order the
    // agent has always seen: a copy re-applying a logged call must read the same).
    let written = n.min(room);
    for (i, b) in from.as_bytes().iter().enumerate() {
        if !(p..p + written).contains(&(fp + i)) {
            data[fp + i] = *b;
        }
    }
    // At most MAX_MESSAGE_LEN.
    n as i32
}

/// [`link`]'s imports and two more that suspend the call in the middle, for modules that went
/// through the deploy-time transform (`runtime::transform`, with these imports as its
/// unwinding ones; `runtime::midcall`):
///
/// - `mesh.recv_wait(from_ptr: i32, ptr: i32, cap: i32) -> i32`: `mesh.recv` that never
///   returns -1: while the mailbox is empty it suspends the call, which the host continues
///   (`LiveAgent::resume_call`) once a message has arrived, here or on another node. A message
///   longer than `cap` is taken all the same, cut to `cap` bytes, and its whole length
///   returned (more than `cap`: the agent sees it was cut): a waiting loop cannot stop on a
///   message it can never take, as it would if the message stayed at the head of the mailbox.
/// - `mesh.yield()`: a yield point; suspends the call when less than
///   [`Blocking::preempt_below`] units of its fuel are left, so that a long computation is
///   continued by the next call of the host instead of failing with `OutOfFuel` (and can be
///   moved in the middle).
///
/// In a module that was not transformed, both fail the call (a trap) instead of suspending.
pub fn link_blocking<T: Blocking + 'static>(
    linker: &mut Imports<'_, T>,
) -> Result<(), wasmi::Error> {
    link(linker)?;
    linker.func_wrap(
        "mesh",
        "recv_wait",
        |mut caller: Caller<'_, T>,
         from_ptr: i32,
         ptr: i32,
         cap: i32|
         -> Result<i32, wasmi::Error> {
            // A rewind that ends here takes the message it waited for, as a first call would.
            midcall::enter(&mut caller)?;
            match recv(&mut caller, from_ptr, ptr, cap, T::recv_cut) {
                -1 => {
                    midcall::suspend(&mut caller, WAIT_STATE)?;
                    Ok(0) // never seen: the call unwinds
                }
                n => Ok(n),
            }
        },
    )?;
    linker.func_wrap(
        "mesh",
        "yield",
        |mut caller: Caller<'_, T>| -> Result<(), wasmi::Error> {
            if midcall::enter(&mut caller)?.is_some() {
                return Ok(()); // resumed here: go on
            }
            let reserve = caller.data().preempt_below();
            if reserve > 0 && midcall::fuel_below(&caller, reserve) {
                midcall::suspend(&mut caller, YIELD_STATE)?;
            }
            Ok(())
        },
    )?;
    Ok(())
}
