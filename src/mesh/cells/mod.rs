//! [`Cells`]: the one [`AgentHost`](super::AgentHost) for WebAssembly agents (feature `wasmi`,
//! `no_std` with `alloc`): the QUIC node, the examples and the board firmware run their agents
//! through it.
//!
//! It runs agents through the wasmi bridge ([`crate::runtime`]) with the mesh imports of
//! [`super::wasm`], owns each agent's [`Inbox`] (mailbox, outbox, the per-stream sequence numbers
//! that refuse duplicates), captures agents into version-3 containers with their inbox inside,
//! decodes arriving containers straight into a new instance, and keeps the memory an agent
//! arrived with as the base of a delta when it goes back (optional). What differs between
//! nodes is in two parts it is generic over:
//!
//! - a [`Keeper`]: where agents survive a restart (files sealed to the node on a server,
//!   [`MemKeeper`] in tests, [`NoKeeper`] on a board without durable storage);
//! - a [`Gate`]: how arriving containers are admitted and leaving ones signed ([`Open`] for
//!   trusted links; the QUIC node checks a trust list and signs with its key).
//!
//! **Copies.** An agent is in exactly one of three places: running (`live`), stopped for a
//! hand-off (still an instance, in state `Migrating`, with the container as sent cached for
//! retransmissions), or prepared (decoded into an instance that does not run, one per epoch,
//! until the hand-off commits or aborts). A keeper that keeps state holds the running copy and
//! the prepared ones durably as well; after a restart the host reloads from it what the node's
//! journal asks for.
//!
//! **Refusals** are typed ([`Refusal`]); the protocol sees
//! [`MeshError::HostRefused`] with its kind ([`HostRefusal`]), and
//! [`Cells::last_refusal`] keeps the typed value. Failures that have no caller to return to (a
//! save after an accepted message) are kept in a bounded list ([`Cells::take_problems`]).

mod event;
#[cfg(feature = "flash")]
mod flash;
mod host;
mod keeper;

pub use event::{Diverged, Event, MAX_CALL_ARGS, MAX_EVENT_LEN, MAX_EXPORT_LEN};
#[cfg(feature = "flash")]
pub use flash::{FlashKeeper, FlashKeeperStats, FLASH_SLOTS};
// The sealed copy, for the keepers outside this module (the board's flash, the node's files).
#[cfg_attr(not(any(feature = "flash", feature = "quic")), allow(unused_imports))]
pub(crate) use keeper::{open_copy, seal_copy};
pub use keeper::{Gate, KeepError, Keeper, MemKeeper, NoKeeper, Open, Saved};

use super::wasm::{self, SharedInbox};
use super::{Delivery, HostRefusal, Inbox, InboxLimits, Journal, MeshError, Node, Phase};
use crate::migration::{DecodeLimits, EncodeOptions, MemoryDigests, Route, StateEncoding};
use crate::runtime::midcall::{Completion, SuspendedCall};
use crate::runtime::{LiveAgent, Runtime, Val};
use crate::{Agent, AgentId, AgentState, CellError, ExecutionError, NodeId};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

/// Why [`Cells`] refused or failed an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The agent is not stopped here for a hand-off (and no saved copy of it was found).
    #[error("the agent is not stopped here")]
    NotStopped,
    /// A capture for a hand-off with no route: call [`Cells::route`] (or [`Cells::migrate`]).
    #[error("no route for the hand-off")]
    NoRoute,
    /// The container names another agent, epoch or target than the hand-off it came in.
    #[error("the container is not for this hand-off (agent, epoch or target)")]
    NotThisHandOff,
    /// The container carries a suspended call, which this host does not take over.
    #[error("a suspended call: this host runs agents between calls only")]
    SuspendedCall,
    /// The container has no inbox section.
    #[error("the container has no inbox section")]
    NoInbox,
    /// The container was refused: its format, limits, signature, DNA or memory.
    #[error("the container was refused: {0}")]
    Container(CellError),
    /// The container's inbox section was refused.
    #[error("the inbox section was refused: {0}")]
    Inbox(CellError),
    /// The keeper failed.
    #[error("keeping the agent failed: {0}")]
    Keep(KeepError),
    /// No copy of the agent at the epoch the node asked to run.
    #[error("no copy of the agent at epoch {epoch}")]
    NoCopy {
        /// The epoch asked for.
        epoch: u64,
    },
    /// The runtime refused: the agent could not be captured, started or resumed.
    #[error("the runtime refused: {0}")]
    Runtime(CellError),
    /// `capture`'s buffer is smaller than the container.
    #[error("the container does not fit the buffer")]
    BufferTooSmall,
    /// An event logged after the saved copy did not come out the same when applied again:
    /// the copy and its events do not belong together (or an export changed the agent without
    /// being recorded). The agent is not run.
    #[error("event {index} after the saved copy did not apply again: {why:?}")]
    Diverged {
        /// Its position among the events.
        index: usize,
        /// How it differed.
        why: Diverged,
    },
}

impl Refusal {
    /// Its kind, for [`MeshError::HostRefused`] (the refusal itself, with its details, stays
    /// with the host: [`Cells::take_problems`], [`Cells::last_refusal`]).
    pub fn kind(&self) -> HostRefusal {
        match self {
            Refusal::NotStopped => HostRefusal::NotStopped,
            Refusal::NoRoute => HostRefusal::NoRoute,
            Refusal::NotThisHandOff => HostRefusal::NotThisHandOff,
            Refusal::SuspendedCall => HostRefusal::SuspendedCall,
            Refusal::NoInbox | Refusal::Inbox(_) => HostRefusal::Inbox,
            Refusal::Container(_) => HostRefusal::Snapshot,
            Refusal::Keep(_) => HostRefusal::Keep,
            Refusal::NoCopy { .. } => HostRefusal::NoCopy,
            Refusal::Runtime(_) => HostRefusal::Runtime,
            // `capture` maps it to `MeshError::PayloadTooLarge`; as a kind, the runtime's.
            Refusal::BufferTooSmall => HostRefusal::Runtime,
            Refusal::Diverged { .. } => HostRefusal::Diverged,
        }
    }
}

/// A failure of [`Cells`] that had no caller to return to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("agent {agent:?}: {refusal}")]
pub struct Problem {
    /// The agent.
    pub agent: AgentId,
    /// What went wrong.
    pub refusal: Refusal,
}

/// Problems [`Cells`] keeps until [`Cells::take_problems`]; older ones are dropped (and
/// counted) beyond this.
pub const MAX_PROBLEMS: usize = 64;

/// Addressees whose lookup cursor [`Cells`] keeps for [`AgentHost::locate`](super::AgentHost).
const MAX_PROBES: usize = 1024;

/// A directory [`Cells`] asks where an addressee runs before it probes its peers one by one
/// ([`Cells::set_locator`]): a fleet's signed location records, for example
/// (`fleet::FleetView::locate`). Its answer is a hint: the node it names answers a message for
/// an agent it does not run as any peer does.
pub type Locator = Box<dyn FnMut(AgentId) -> Option<NodeId> + Send>;

/// An agent running here, the epoch it runs at, the events logged since it was saved and
/// their bytes, and the bytes of its memory when it was last saved.
pub(crate) struct Running {
    pub(crate) live: LiveAgent<SharedInbox>,
    pub(crate) epoch: u64,
    pub(crate) events: u32,
    pub(crate) event_bytes: u64,
    pub(crate) saved_len: u64,
}

/// Events after which [`Cells`] saves an agent whole by default ([`Cells::checkpoint_every`]).
pub const CHECKPOINT_EVERY: u32 = 1024;

/// With [`Cells::checkpoint_by_size`], an agent is saved whole after this many times
/// [`Cells::checkpoint_every`] events at the latest, however light they are (a logged call is
/// a few bytes but runs the export again at a restart).
pub const BY_SIZE_CAP: u32 = 64;

/// An agent stopped for a hand-off: its instance (state `Migrating`), and the containers
/// captured from it, re-sent as they are.
struct Stopped {
    live: LiveAgent<SharedInbox>,
    /// Reloaded from the keeper after a restart: the epoch it was saved at.
    saved_epoch: Option<u64>,
    by_reference: Option<(Route, Vec<u8>)>,
    with_dna: Option<(Route, Vec<u8>)>,
}

/// A copy decoded for a hand-off, not running, and the memory it came with (the base of a
/// delta when it goes back).
struct Prepared {
    live: LiveAgent<SharedInbox>,
    base: Option<Base>,
}

/// Memory of an agent as it crossed, with its digests: the base of a delta.
struct Base {
    memory: Vec<u8>,
    digests: MemoryDigests,
}

/// The agents of one node, for the mesh protocol. See the [module](self) documentation.
pub struct Cells<K: Keeper, G: Gate = Open> {
    node: NodeId,
    rt: Runtime,
    keeper: K,
    gate: G,
    limits: DecodeLimits,
    inbox_limits: InboxLimits,
    pub(crate) live: BTreeMap<AgentId, Running>,
    stopped: BTreeMap<AgentId, Stopped>,
    prepared: BTreeMap<(AgentId, u64), Prepared>,
    bases: BTreeMap<AgentId, Base>,
    routes: BTreeMap<AgentId, Route>,
    probes: BTreeMap<AgentId, usize>,
    locator: Option<Locator>,
    /// Per addressee, the node the locator named at its last lookup, and whether it was asked
    /// then (its answer alternates with the probes).
    hinted: BTreeMap<AgentId, (NodeId, bool)>,
    hinted_lookups: u64,
    /// Whether `has_dna` says yes for DNA the keeper holds (no: every hand-off to this node
    /// carries the DNA). Default yes.
    pub claim_dna: bool,
    /// Whether an agent goes back to the node it came from as a delta against the memory it
    /// came with (kept while it runs here). Default no.
    pub send_delta: bool,
    /// Whether to keep the memory of an agent handed off, as the base of a delta when it comes
    /// back. Default no.
    pub keep_sent_base: bool,
    /// With a keeper that logs events: how many an agent gathers before it is saved whole
    /// again (bounding what a restart re-applies). Default [`CHECKPOINT_EVERY`].
    pub checkpoint_every: u32,
    /// With [`checkpoint_every`](Self::checkpoint_every) reached, an agent whose memory (its
    /// length, zero pages included) is larger than the bytes of its events so far also waits
    /// until they weigh as much, or until [`BY_SIZE_CAP`] times as many events: a 10 MiB agent
    /// is not rewritten every 1,024 small messages. A restart then re-applies up to
    /// `BY_SIZE_CAP` × `checkpoint_every` events (65,536 by default) instead of
    /// `checkpoint_every`. The QUIC node's host sets it; default off (a board's flash holds
    /// its copies and the events between them: the count bounds them).
    pub checkpoint_by_size: bool,
    /// Whether this host takes agents captured in the middle of a call (a container with a
    /// call section: `runtime::midcall`), and continues them where they stopped. Default yes.
    /// A host that says no refuses them with [`Refusal::SuspendedCall`] before its gate
    /// records the epoch, so the source can offer the agent elsewhere.
    pub mid_call: bool,
    /// `mesh.yield` suspends a call when less fuel than this is left (see
    /// [`wasm::link_blocking`]); default a tenth of the runtime's fuel per call. Agents started
    /// or resumed from now on.
    pub preempt_below: u64,
    duplicates: u64,
    problems: VecDeque<Problem>,
    dropped_problems: u64,
    problems_seen: u64,
    poisoned: bool,
    last_refusal: Option<Refusal>,
}

impl<K: Keeper, G: Gate> core::fmt::Debug for Cells<K, G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cells")
            .field("node", &self.node)
            .field("running", &self.live.len())
            .field("stopped", &self.stopped.len())
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl<K: Keeper, G: Gate> Cells<K, G> {
    /// No agents yet; runs them on `rt`, keeps them in `keeper`, admits and signs through
    /// `gate`, accepts containers within `limits`, gives each agent's inbox the default
    /// [`InboxLimits`].
    pub fn new(node: NodeId, rt: Runtime, keeper: K, gate: G, limits: DecodeLimits) -> Self {
        let preempt_below = rt.fuel_per_call() / 10;
        Cells {
            node,
            rt,
            keeper,
            gate,
            limits,
            inbox_limits: InboxLimits::default(),
            live: BTreeMap::new(),
            stopped: BTreeMap::new(),
            prepared: BTreeMap::new(),
            bases: BTreeMap::new(),
            routes: BTreeMap::new(),
            probes: BTreeMap::new(),
            locator: None,
            hinted: BTreeMap::new(),
            hinted_lookups: 0,
            claim_dna: true,
            send_delta: false,
            keep_sent_base: false,
            checkpoint_every: CHECKPOINT_EVERY,
            checkpoint_by_size: false,
            mid_call: true,
            preempt_below,
            duplicates: 0,
            problems: VecDeque::new(),
            dropped_problems: 0,
            problems_seen: 0,
            poisoned: false,
            last_refusal: None,
        }
    }

    /// Asks `locator` first when the node looks an addressee up
    /// ([`AgentHost::locate`](super::AgentHost::locate)): its answer is used if it is one of
    /// the gate's peers, at once when it is new, and at every other lookup when it is the answer it gave before (a
    /// lookup again means its node did not answer, or did not have the agent); the lookups in
    /// between probe the peers one by one, as without a locator. `None` removes it.
    pub fn set_locator(&mut self, locator: Option<Locator>) {
        self.locator = locator;
        self.hinted.clear();
    }

    /// Lookups the locator answered ([`set_locator`](Self::set_locator)).
    pub fn hinted_lookups(&self) -> u64 {
        self.hinted_lookups
    }

    /// The limits of the inboxes of agents started or resumed from now on.
    pub fn set_inbox_limits(&mut self, limits: InboxLimits) {
        self.inbox_limits = limits;
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The keeper.
    pub fn keeper(&self) -> &K {
        &self.keeper
    }

    /// The keeper, to change.
    pub fn keeper_mut(&mut self) -> &mut K {
        &mut self.keeper
    }

    /// The gate.
    pub fn gate(&self) -> &G {
        &self.gate
    }

    /// The gate, to change.
    pub fn gate_mut(&mut self) -> &mut G {
        &mut self.gate
    }

    /// The limits arriving containers are decoded within.
    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// Starts a new agent at epoch 0 with `inbox` (give it a fresh random secret,
    /// [`Inbox::with_secret`]), keeps its DNA and saves it. Give it to
    /// [`Node::start`](super::Node::start) next.
    pub fn start(
        &mut self,
        agent: Agent<alloc::vec::Vec<u8>>,
        inbox: Inbox,
    ) -> Result<(), Refusal> {
        let id = agent.id();
        let r = self.start_inner(agent, inbox);
        self.refused(id, r)
    }

    fn start_inner(&mut self, agent: Agent<Vec<u8>>, inbox: Inbox) -> Result<(), Refusal> {
        let id = agent.id();
        self.keeper.keep_dna(agent.dna()).map_err(Refusal::Keep)?;
        let live = self
            .rt
            .start(agent, self.shared(inbox), wasm::link_blocking)
            .map_err(Refusal::Runtime)?;
        self.live.insert(
            id,
            Running {
                live,
                epoch: 0,
                events: 0,
                event_bytes: 0,
                saved_len: 0,
            },
        );
        self.save_running(id)
    }

    /// Saves the running copy of `agent` (after the embedder called it and it changed). A
    /// failure is returned and kept as a [`Problem`].
    pub fn save(&mut self, agent: AgentId) -> Result<(), Refusal> {
        let r = self.save_running(agent);
        self.refused(agent, r)
    }

    fn save_running(&mut self, agent: AgentId) -> Result<(), Refusal> {
        if !self.keeper.keeps_state() {
            return Ok(());
        }
        if !self.live.contains_key(&agent) {
            return Ok(());
        }
        let r = self.save_whole(agent);
        if r.is_err() && self.keeper.logs_events() {
            // The change is in the agent and neither in its saved copy nor in its events:
            // nothing may leave any more that depends on it (a restart resumes from the disk).
            self.poisoned = true;
        }
        r
    }

    fn save_whole(&mut self, agent: AgentId) -> Result<(), Refusal> {
        // Events already logged (of any agent) are made durable first: this save may record
        // their consequence (an acknowledged local delivery), which must not outlive them.
        if self.keeper.logs_events() {
            self.flush_events()?;
        }
        let Some(r) = self.live.get_mut(&agent) else {
            return Ok(());
        };
        r.events = 0;
        r.event_bytes = 0;
        let call = r.live.call_bytes().map_err(Refusal::Runtime)?;
        let snapshot = r
            .live
            .snapshot_with_call_at(Some(self.node), self.gate.now(), call.as_deref())
            .map_err(Refusal::Runtime)?;
        r.saved_len = snapshot.wasm_state().len() as u64;
        let inbox = r.live.host().get();
        self.keeper
            .save(r.epoch, &snapshot, &inbox)
            .map_err(Refusal::Keep)
    }

    /// The keeper's flush; a failure poisons this host (see [`is_poisoned`](Self::is_poisoned)).
    pub(crate) fn flush_events(&mut self) -> Result<(), Refusal> {
        if self.poisoned {
            return Err(Refusal::Keep(KeepError::Write));
        }
        let r = self.keeper.flush().map_err(Refusal::Keep);
        self.poisoned |= r.is_err();
        r
    }

    /// Whether a change could not be made durable (a failed flush, or a failed save while the
    /// keeper logs events): from then on the host's flush fails, so the node lets no frame
    /// out. Restart the node: it resumes from what reached the keeper's storage.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Keeps a change to a running agent: as an event in the keeper's log if it logs them
    /// (the agent is saved whole every [`checkpoint_every`](Self::checkpoint_every) events),
    /// else by saving the agent whole when `save_otherwise`.
    fn note(&mut self, agent: AgentId, event: Option<Event>, save_otherwise: bool) {
        let _ = self.note_or_refuse(agent, event, save_otherwise, false);
    }

    /// [`note`](Self::note); with `refusable` (a delivery, which can still be answered
    /// `Full`), a change the keeper cannot keep — an event longer than one record of its log
    /// (a 4 KiB message on a board whose flash items hold less), or no room for the event nor
    /// for the agent saved whole — is not kept and poisons nothing: false, and the caller
    /// undoes it. Without it such a change is saved whole, and a save that fails poisons.
    pub(crate) fn note_or_refuse(
        &mut self,
        agent: AgentId,
        event: Option<Event>,
        save_otherwise: bool,
        refusable: bool,
    ) -> bool {
        let logged = match &event {
            Some(e) if self.keeper.keeps_state() => self.keeper.append(agent, e),
            _ => Ok(false),
        };
        let r = match logged {
            Ok(true) => {
                let bytes = event.as_ref().map_or(0, |e| e.encoded_len() as u64);
                let by_size = self.checkpoint_by_size;
                let full = self.live.get_mut(&agent).is_some_and(|r| {
                    r.events += 1;
                    r.event_bytes += bytes;
                    r.events >= self.checkpoint_every
                        && (!by_size
                            || r.event_bytes >= r.saved_len
                            || r.events >= self.checkpoint_every.saturating_mul(BY_SIZE_CAP))
                });
                match full {
                    // Everything is in the logged events already: a checkpoint that found no
                    // room changed nothing and loses nothing (it is tried again after as many
                    // events). Any other failure may have landed in part (a file renamed into
                    // place, its directory not synced): the host stops, as for any save.
                    true => match self.save_whole(agent) {
                        Err(Refusal::Keep(KeepError::NoRoom)) => {
                            Err(Refusal::Keep(KeepError::NoRoom))
                        }
                        r => {
                            self.poisoned |= r.is_err();
                            r
                        }
                    },
                    false => Ok(()),
                }
            }
            // A delivery longer than one record can hold is refused: saving the agent whole
            // for it would rewrite the whole copy for every such message, and a copy that
            // carries several may no longer fit beside the old one.
            Err(KeepError::TooLong) if refusable => return false,
            // No room for the event: the agent saved whole holds the change as well; a
            // delivery that does not fit that way either is refused.
            Err(KeepError::NoRoom) if refusable => match self.save_whole(agent) {
                Err(Refusal::Keep(KeepError::NoRoom | KeepError::TooLong)) => return false,
                r => {
                    self.poisoned |= r.is_err();
                    r
                }
            },
            // Nothing was written; the agent saved whole holds the change as well (a failed
            // save poisons the host).
            Err(KeepError::NoRoom | KeepError::TooLong) => self.save_running(agent),
            Ok(false) if save_otherwise || event.is_none() => self.save_running(agent),
            Ok(false) => Ok(()),
            Err(e) => {
                self.poisoned = true;
                Err(Refusal::Keep(e))
            }
        };
        let _ = self.refused(agent, r);
        true
    }

    /// The live instance of an agent running here, to call its exports. Call
    /// [`save`](Self::save) after a call that changed it.
    pub fn live_mut(&mut self, agent: AgentId) -> Option<&mut LiveAgent<SharedInbox>> {
        self.live.get_mut(&agent).map(|r| &mut r.live)
    }

    /// The agents running here.
    pub fn running(&self) -> Vec<AgentId> {
        self.live.keys().copied().collect()
    }

    /// Whether `agent` runs here.
    pub fn is_running(&self, agent: AgentId) -> bool {
        self.live.contains_key(&agent)
    }

    /// Whether `agent` runs here in the middle of a call (suspended in `mesh.recv_wait` or at
    /// `mesh.yield`): it goes only to a host that continues such agents.
    pub fn waits_in_call(&self, agent: AgentId) -> bool {
        self.live
            .get(&agent)
            .is_some_and(|r| r.live.is_suspended_in_call())
    }

    /// The epoch `agent` runs at here.
    pub fn epoch(&self, agent: AgentId) -> Option<u64> {
        self.live.get(&agent).map(|r| r.epoch)
    }

    /// Whether `agent` is stopped here for a hand-off.
    pub fn is_stopped(&self, agent: AgentId) -> bool {
        self.stopped.contains_key(&agent)
    }

    /// Copies prepared here (in doubt), with their epochs.
    pub fn prepared(&self) -> Vec<(AgentId, u64)> {
        self.prepared.keys().copied().collect()
    }

    /// Messages refused as duplicates (accepted once already).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The last refusal, typed (the protocol saw its [`Refusal::kind`]).
    pub fn last_refusal(&self) -> Option<Refusal> {
        self.last_refusal
    }

    /// The problems kept since the last call (at most [`MAX_PROBLEMS`], the newest), and how
    /// many older ones were dropped.
    pub fn take_problems(&mut self) -> (Vec<Problem>, u64) {
        let dropped = core::mem::take(&mut self.dropped_problems);
        (self.problems.drain(..).collect(), dropped)
    }

    /// Problems since the host started, taken or not.
    pub fn problems_seen(&self) -> u64 {
        self.problems_seen
    }

    /// Calls `export` with `args` on every running agent; keeps those whose first result is an
    /// `i32` above 0 (the convention of a `tick` export: how many messages it handled; 0 means
    /// the call changed nothing, and it is not kept): as a `Called` event when the keeper logs
    /// events, else by saving the agent. Returns the sum of those results. An agent whose call
    /// fails is left as it is.
    ///
    /// With a keeper that logs events, a restart calls the export again with the same
    /// arguments and checks that it returns the same value ([`Refusal::Diverged`] otherwise):
    /// the export must be a function of the agent's state and mailbox (the `mesh` imports
    /// are), and a call that returns 0 must not change the agent.
    ///
    /// **Mid-call.** An agent whose module went through the deploy-time transform may suspend
    /// its call in `mesh.recv_wait` or `mesh.yield` ([`wasm::link_blocking`]): then `export`
    /// is not called again; each tick continues the suspended call instead (at once after a
    /// yield point, after `mesh.recv_wait` only once a message is waiting), and counts 1 for it.
    /// So a `tick` export may be the agent's whole life, `loop { recv_wait(); handle() }`. A
    /// call that suspends or is continued is saved whole with its call (the container's call
    /// section), never logged as an event: a restart continues the saved call.
    pub fn tick(&mut self, export: &str, args: &[Val]) -> u64 {
        let ids: Vec<AgentId> = self.live.keys().copied().collect();
        let mut total = 0;
        for id in ids {
            let Some(r) = self.live.get_mut(&id) else {
                continue;
            };
            if r.live.is_suspended_in_call() {
                // Continued, not called again: at once after a yield point, and after
                // `mesh.recv_wait` once a message is waiting.
                if r.live.host().waits_for_mail() && r.live.host().get().peek().is_none() {
                    continue;
                }
                let resumed = r.live.resume_call();
                // Saved whole, returned, suspended again or failed: a resumed call is not an
                // event a restart could apply again (it continues frames, not an export).
                let _ = self.save(id);
                total += u64::from(resumed.is_ok());
                continue;
            }
            let n = match r.live.run(export, args) {
                Ok(Completion::Returned(v)) => event::first_i32(&v),
                // Suspended in the middle: the agent changed (it may have received, and its
                // frames are in its memory); saved whole, with its call.
                Ok(Completion::Suspended) => {
                    let _ = self.save(id);
                    total += 1;
                    continue;
                }
                // Refused before any of the agent's code ran: nothing changed.
                Err(CellError::ExecutionFailed(
                    ExecutionError::MissingExport
                    | ExecutionError::WrongArguments
                    | ExecutionError::NotRunning { .. },
                )) => continue,
                Err(_) => {
                    // A trap or the fuel running out may come after the call changed the
                    // agent (sent, received): what it left is saved whole, not replayed.
                    let _ = self.save(id);
                    continue;
                }
            };
            if n > 0 {
                total += n as u64;
                // Re-applied after a restart: a call that changed nothing (0) is not logged.
                self.note(id, Event::called(export, args, n), true);
            }
        }
        total
    }

    /// Puts a message from `from`, a sender outside the mesh (an operator's tool), into the
    /// mailbox of `to`, running here, in that sender's own stream; saves `to` when accepted.
    /// [`Delivery::Full`] when `to` does not run here or its mailbox is full.
    pub fn post(&mut self, to: AgentId, from: AgentId, payload: &[u8]) -> Delivery {
        let Some(r) = self.live.get(&to) else {
            return Delivery::Full;
        };
        let d = r
            .live
            .host()
            .get_mut()
            .post(from, payload, &self.inbox_limits);
        if d == Delivery::Accepted {
            let _ = self.save(to);
        }
        d
    }

    /// Queues a message from `from`, running here, to `to`, as if the agent had sent it, and
    /// saves `from`. `false` when `from` does not run here or its outbox is full.
    pub fn send_as(&mut self, from: AgentId, to: AgentId, payload: &[u8]) -> bool {
        let ok = match self.live.get(&from) {
            Some(r) => r
                .live
                .host()
                .get_mut()
                .send(to, payload, &self.inbox_limits),
            None => false,
        };
        if ok {
            let _ = self.save(from);
        }
        ok
    }

    /// Sets where `agent` goes in its next hand-off and at which epoch (the container is
    /// bound to both). [`migrate`](Self::migrate) does it for a [`Node`].
    pub fn route(&mut self, agent: AgentId, target: NodeId, epoch: u64) {
        self.routes.insert(agent, Route { target, epoch });
    }

    /// Hands `agent` off to `target` through `node`, routed at the next epoch.
    pub fn migrate<J: Journal, const N: usize, const Q: usize>(
        &mut self,
        node: &mut Node<J, N, Q>,
        now: u64,
        agent: AgentId,
        target: NodeId,
    ) -> Result<(), MeshError> {
        let epoch = node
            .journal()
            .get(agent)
            .filter(|r| r.phase == Phase::Running)
            .ok_or(MeshError::NotOwner)?
            .epoch
            .checked_add(1)
            .ok_or(MeshError::EpochExhausted)?;
        self.route(agent, target, epoch);
        node.migrate(self, now, agent, target)
    }

    /// Room `poll_transmit` needs for the largest frame this node may send now: a container's
    /// size once captured, a bound before (memory, DNA, per-chunk tags, inbox and fields).
    pub fn transmit_room(&self) -> usize {
        // Any control frame or message (a message of the longest kind did not fit before
        // this started from the longest Deliver).
        let mut room = super::frame::MAX_DELIVER_LEN.max(super::frame::MAX_CONTROL_LEN);
        for s in self.stopped.values() {
            let need = match (&s.by_reference, &s.with_dna) {
                (None, None) => {
                    let memory = s.live.memory_bytes().len();
                    let inbox = s.live.host().get().to_bytes().len();
                    memory + memory / 4096 * 16 + s.live.agent().dna().size() + inbox + 4096
                }
                (a, b) => a.iter().chain(b).map(|c| c.1.len()).max().unwrap_or(0) + 64,
            };
            room = room.max(need);
        }
        room
    }

    /// The size of the linear memory of an agent running here.
    pub fn memory_len(&self, agent: AgentId) -> Option<usize> {
        let r = self.live.get(&agent)?;
        Some(r.live.memory_bytes().len())
    }

    /// Takes an agent running here out of its instance, lets `f` change it (its memory, for a
    /// test or a benchmark), resumes it at the same epoch and saves it.
    pub fn replace_live(
        &mut self,
        agent: AgentId,
        f: impl FnOnce(&mut Agent<Vec<u8>>),
    ) -> Result<(), Refusal> {
        let Running { live, epoch, .. } = self
            .live
            .remove(&agent)
            .ok_or(Refusal::NoCopy { epoch: 0 })?;
        let inbox = live.host().get().clone();
        let (mut a, call) = live.into_agent_with_call().map_err(Refusal::Runtime)?;
        f(&mut a);
        a.set_state(AgentState::Suspended)
            .map_err(Refusal::Runtime)?;
        let mut live = self.resume(a, inbox)?;
        // A call it was suspended in goes on over the changed memory.
        if let Some(call) = call {
            live.restore_call(call).map_err(Refusal::Runtime)?;
        }
        self.live.insert(
            agent,
            Running {
                live,
                epoch,
                events: 0,
                event_bytes: 0,
                saved_len: 0,
            },
        );
        let r = self.save_running(agent);
        self.refused(agent, r)
    }

    /// Keeps `r`'s refusal as the last one and as a problem; returns `r`.
    fn refused<T>(&mut self, agent: AgentId, r: Result<T, Refusal>) -> Result<T, Refusal> {
        if let Err(refusal) = r {
            self.last_refusal = Some(refusal);
            if self.problems.len() >= MAX_PROBLEMS {
                self.problems.pop_front();
                self.dropped_problems += 1;
            }
            self.problems.push_back(Problem { agent, refusal });
            self.problems_seen += 1;
        }
        r
    }

    /// The agent's stopped copy: in memory, or after a restart the keeper's running copy.
    fn stopped_copy(&mut self, agent: AgentId) -> Result<&mut Stopped, Refusal> {
        if !self.stopped.contains_key(&agent) {
            let saved = self
                .keeper
                .load(agent)
                .map_err(Refusal::Keep)?
                .ok_or(Refusal::NotStopped)?;
            let saved = Self::of_agent(agent, saved)?;
            let saved_epoch = saved.epoch;
            let mut live = self.resume_saved(saved)?;
            live.set_state(AgentState::Migrating)
                .map_err(Refusal::Runtime)?;
            self.stopped.insert(
                agent,
                Stopped {
                    live,
                    saved_epoch: Some(saved_epoch),
                    by_reference: None,
                    with_dna: None,
                },
            );
        }
        self.stopped.get_mut(&agent).ok_or(Refusal::NotStopped)
    }

    /// A copy the keeper gave back for `agent`, checked to be that agent's.
    pub(crate) fn of_agent(agent: AgentId, saved: Saved) -> Result<Saved, Refusal> {
        match saved.agent.id() == agent {
            true => Ok(saved),
            false => Err(Refusal::Keep(KeepError::OtherAgent {
                found: saved.agent.id(),
            })),
        }
    }

    /// A copy the keeper gave back, resumed, with the events logged after it applied again.
    pub(crate) fn resume_saved(&self, saved: Saved) -> Result<LiveAgent<SharedInbox>, Refusal> {
        let mut live = self.resume(saved.agent, saved.inbox)?;
        if let Some(call) = saved.call {
            // The call it was saved in: taken over before the events after it (deliveries and
            // acknowledgements: a call suspended is continued by the host, and saved whole).
            let call = SuspendedCall::from_bytes(&call)
                .map_err(|e| Refusal::Runtime(CellError::ExecutionFailed(e)))?;
            live.restore_call(call).map_err(Refusal::Runtime)?;
        }
        for (index, e) in saved.events.iter().enumerate() {
            e.apply(&mut live)
                .map_err(|why| Refusal::Diverged { index, why })?;
        }
        Ok(live)
    }

    fn resume(
        &self,
        agent: Agent<Vec<u8>>,
        inbox: Inbox,
    ) -> Result<LiveAgent<SharedInbox>, Refusal> {
        self.rt
            .resume(agent, self.shared(inbox), wasm::link_blocking)
            .map_err(Refusal::Runtime)
    }

    /// The store data of an agent of this host: its inbox within the host's limits, and the
    /// host's preemption reserve.
    pub(crate) fn shared(&self, inbox: Inbox) -> SharedInbox {
        SharedInbox::new(inbox, self.inbox_limits).preempt_below(self.preempt_below)
    }

    /// The container of a stopped agent for its route, captured once per route and variant.
    fn encode(&mut self, agent: AgentId, with_dna: bool) -> Result<&[u8], Refusal> {
        let route = *self.routes.get(&agent).ok_or(Refusal::NoRoute)?;
        let node = self.node;
        let now = self.gate.now();
        let send_delta = self.send_delta;
        let saved_epoch = self.stopped_copy(agent)?.saved_epoch;
        // A copy reloaded from the keeper leaves at the epoch after the one it was saved at
        // (or the one after that: a hand-off aborted before the agent was saved again);
        // another is a rolled-back copy.
        if let Some(saved) = saved_epoch {
            if route
                .epoch
                .checked_sub(saved)
                .is_none_or(|d| d == 0 || d > 2)
            {
                return Err(Refusal::Keep(KeepError::WrongEpoch { found: saved }));
            }
        }
        let s = self.stopped.get_mut(&agent).ok_or(Refusal::NotStopped)?;
        let cached = match with_dna {
            true => &s.with_dna,
            false => &s.by_reference,
        };
        if !matches!(cached, Some((r, _)) if *r == route) {
            let base = self.bases.get(&agent).filter(|_| send_delta);
            let inbox = s.live.host().get().to_bytes();
            let call = s.live.call_bytes().map_err(Refusal::Runtime)?;
            let snapshot = s
                .live
                .snapshot_with_call_at(Some(node), now, call.as_deref())
                .map_err(Refusal::Runtime)?
                .with_route(route)
                .with_inbox(&inbox[..]);
            let bytes = snapshot
                .serialize_with(&EncodeOptions {
                    version: Some(3),
                    dna_by_reference: !with_dna,
                    state: match base {
                        Some(b) => StateEncoding::Delta { base: &b.memory },
                        None => StateEncoding::Chunked,
                    },
                    signer: self.gate.signer().map(|s| (s, route.epoch)),
                    base_digests: base.map(|b| &b.digests),
                    ..Default::default()
                })
                .map_err(Refusal::Container)?;
            let s = self.stopped.get_mut(&agent).ok_or(Refusal::NotStopped)?;
            match with_dna {
                true => s.with_dna = Some((route, bytes)),
                false => s.by_reference = Some((route, bytes)),
            }
        }
        let s = self.stopped.get(&agent).ok_or(Refusal::NotStopped)?;
        let cached = match with_dna {
            true => &s.with_dna,
            false => &s.by_reference,
        };
        cached.as_ref().map(|c| &c.1[..]).ok_or(Refusal::NotStopped)
    }

    fn memory_of(live: &LiveAgent<SharedInbox>) -> Result<Base, Refusal> {
        let memory = live.memory_bytes().to_vec();
        let digests = MemoryDigests::of(&memory);
        Ok(Base { memory, digests })
    }
}
