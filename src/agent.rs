//! [`Agent`]: identity, DNA, lifecycle state, policy and the instance state that migrates.

use crate::globals::{self, Globals};
use crate::{AgentId, AgentState, CellError, Dna, GlobalValue, Policy};

/// An agent: an id, its [`Dna`], a lifecycle [`AgentState`], a [`Policy`], and the state of its
/// WebAssembly instance at the last quiescent point (linear memory and mutable globals).
///
/// `B` is the byte storage for the DNA and the linear memory: `Vec<u8>` for an owned agent,
/// `&[u8]` for one that borrows flash or a received snapshot without copying.
///
/// ```
/// use mielin_cells::{Agent, AgentId, AgentState, CellError, Dna, GlobalValue};
///
/// fn main() -> Result<(), CellError> {
///     // Borrowed storage works without an allocator: the module could sit in flash.
///     let module: &[u8] = b"\0asm\x01\0\0\0";
///     let dna = Dna::new(module)?;
///     let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna);
///     assert_eq!(agent.state(), AgentState::Created);
///
///     agent.set_state(AgentState::Running)?;
///     // An illegal move is an error and changes nothing.
///     assert!(agent.set_state(AgentState::Created).is_err());
///     assert_eq!(agent.state(), AgentState::Running);
///
///     // What a runtime hands over at a quiescent point.
///     let memory = [0u8; 64];
///     agent.set_wasm_state(&memory[..]);
///     agent.set_globals(&[GlobalValue::I32(48)])?;
///     assert_eq!(agent.wasm_state().len(), 64);
///     assert_eq!(agent.globals(), &[GlobalValue::I32(48)]);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Agent<B> {
    id: AgentId,
    state: AgentState,
    dna: Dna<B>,
    policy: Policy,
    wasm_state: B,
    globals: Globals,
}

#[cfg(feature = "std")]
impl Agent<alloc::vec::Vec<u8>> {
    /// A new agent in state `Created` with a random (v4) id from the OS RNG, the default
    /// (permissive) policy, and empty memory and globals.
    ///
    /// Fails if `wasm` is not a WebAssembly module (see [`Dna::new`]).
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    pub fn new(wasm: alloc::vec::Vec<u8>) -> Result<Self, CellError> {
        Ok(Agent::with_id(AgentId::new_v4(), Dna::new(wasm)?))
    }
}

#[cfg(feature = "wasmi")]
impl Agent<alloc::vec::Vec<u8>> {
    pub(crate) fn wasm_state_vec_mut(&mut self) -> &mut alloc::vec::Vec<u8> {
        &mut self.wasm_state
    }
}

impl<B: AsRef<[u8]> + Default> Agent<B> {
    /// A new agent with the given id, in state `Created`, with the default (permissive) policy
    /// and empty memory and globals. Works everywhere; see [`AgentId::derive`] for devices
    /// without an RNG.
    pub fn with_id(id: AgentId, dna: Dna<B>) -> Self {
        Agent {
            id,
            state: AgentState::Created,
            dna,
            policy: Policy::default(),
            wasm_state: B::default(),
            globals: Globals::new(),
        }
    }
}

impl<B: AsRef<[u8]>> Agent<B> {
    /// Puts an agent together from all its parts, as a restored snapshot does.
    pub(crate) fn from_parts(
        id: AgentId,
        state: AgentState,
        dna: Dna<B>,
        policy: Policy,
        wasm_state: B,
        globals: Globals,
    ) -> Self {
        Agent {
            id,
            state,
            dna,
            policy,
            wasm_state,
            globals,
        }
    }

    /// The agent's id; it stays the same across migrations.
    pub fn id(&self) -> AgentId {
        self.id
    }

    /// The lifecycle state.
    pub fn state(&self) -> AgentState {
        self.state
    }

    /// Moves to `next` if the state machine allows it ([`AgentState::can_transition_to`]).
    ///
    /// An illegal move is [`CellError::InvalidState`] naming both states, and changes nothing.
    #[must_use = "an illegal move is refused with an error and leaves the state unchanged"]
    pub fn set_state(&mut self, next: AgentState) -> Result<(), CellError> {
        if !self.state.can_transition_to(next) {
            return Err(CellError::InvalidState {
                from: self.state,
                to: next,
            });
        }
        self.state = next;
        Ok(())
    }

    /// The agent's DNA.
    pub fn dna(&self) -> &Dna<B> {
        &self.dna
    }

    /// The execution policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the execution policy.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The linear memory a WebAssembly runtime handed over at the last quiescent point; empty
    /// until set.
    pub fn wasm_state(&self) -> &[u8] {
        self.wasm_state.as_ref()
    }

    /// Replaces the linear memory, returning the old one.
    pub fn set_wasm_state(&mut self, memory: B) -> B {
        core::mem::replace(&mut self.wasm_state, memory)
    }

    /// The instance's mutable globals, in the runtime's order.
    pub fn globals(&self) -> &[GlobalValue] {
        &self.globals
    }

    /// Replaces the globals. More than [`MAX_GLOBALS`](crate::MAX_GLOBALS) is
    /// [`CellError::CapacityExceeded`], and changes nothing.
    #[must_use = "too many globals is refused with an error and leaves the globals unchanged"]
    pub fn set_globals(&mut self, values: &[GlobalValue]) -> Result<(), CellError> {
        self.globals = globals::collect(values)?;
        Ok(())
    }

    /// The same agent in other storage; `convert` must keep the bytes (the DNA is not rehashed).
    #[cfg(feature = "wasmi")]
    pub(crate) fn convert<C>(self, convert: impl Fn(B) -> C) -> Agent<C> {
        Agent {
            id: self.id,
            state: self.state,
            dna: self.dna.convert(&convert),
            policy: self.policy,
            wasm_state: convert(self.wasm_state),
            globals: self.globals,
        }
    }

    /// A copy of this agent that borrows its binary and memory instead of owning them: capturing
    /// a snapshot from it copies no bytes.
    pub fn as_borrowed(&self) -> Agent<&[u8]> {
        Agent {
            id: self.id,
            state: self.state,
            dna: self.dna.as_borrowed(),
            policy: self.policy.clone(),
            wasm_state: self.wasm_state.as_ref(),
            globals: self.globals.clone(),
        }
    }

    pub(crate) fn globals_list(&self) -> &Globals {
        &self.globals
    }

    pub(crate) fn wasm_state_storage(&self) -> &B {
        &self.wasm_state
    }
}

/// Agents are equal when every part is: id, state, DNA hash, policy, memory and globals,
/// whatever their storage.
impl<B: AsRef<[u8]>, C: AsRef<[u8]>> PartialEq<Agent<C>> for Agent<B> {
    fn eq(&self, other: &Agent<C>) -> bool {
        self.id == other.id
            && self.state == other.state
            && self.dna == other.dna
            && self.policy == other.policy
            && self.wasm_state.as_ref() == other.wasm_state.as_ref()
            && self.globals == other.globals
    }
}

impl<B: AsRef<[u8]>> Eq for Agent<B> {}

/// Shows the memory's size, not its bytes.
impl<B: AsRef<[u8]>> core::fmt::Debug for Agent<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("dna", &self.dna)
            .field("policy", &self.policy)
            .field("wasm_state_len", &self.wasm_state().len())
            .field("globals", &self.globals())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent<&'static [u8]> {
        let dna = Dna::new(&b"\0asm\x01\0\0\0"[..]).unwrap();
        Agent::with_id(AgentId::derive(dna.hash(), 0), dna)
    }

    #[test]
    fn starts_created_and_empty() {
        let a = agent();
        assert_eq!(a.state(), AgentState::Created);
        assert!(a.wasm_state().is_empty());
        assert!(a.globals().is_empty());
        assert_eq!(a.policy(), &Policy::default());
    }

    #[test]
    fn illegal_move_names_both_states_and_changes_nothing() {
        let mut a = agent();
        assert_eq!(
            a.set_state(AgentState::Suspended),
            Err(CellError::InvalidState {
                from: AgentState::Created,
                to: AgentState::Suspended
            })
        );
        assert_eq!(a.state(), AgentState::Created);
        a.set_state(AgentState::Running).unwrap();
        a.set_state(AgentState::Terminated).unwrap();
        for s in AgentState::ALL {
            assert!(a.set_state(s).is_err());
            assert_eq!(a.state(), AgentState::Terminated);
        }
    }

    #[test]
    fn borrowed_copy_is_equal_and_shares_the_bytes() {
        let mut a = agent();
        a.set_wasm_state(&b"memory"[..]);
        let b = a.as_borrowed();
        assert_eq!(b, a);
        assert_eq!(b.wasm_state().as_ptr(), a.wasm_state().as_ptr());
        assert_eq!(b.dna().binary().as_ptr(), a.dna().binary().as_ptr());
    }

    #[test]
    fn too_many_globals_changes_nothing() {
        let mut a = agent();
        a.set_globals(&[GlobalValue::I32(1)]).unwrap();
        let many = [GlobalValue::I64(0); crate::MAX_GLOBALS + 1];
        assert!(matches!(
            a.set_globals(&many),
            Err(CellError::CapacityExceeded { requested: 33, .. })
        ));
        assert_eq!(a.globals(), &[GlobalValue::I32(1)]);
    }
}
