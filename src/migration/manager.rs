//! [`MigrationManager`]: the migrations a node has started and not yet finished.

use super::MigrationSnapshot;
use crate::{Agent, AgentId, AgentState, Capacity, CellError, MigrationFailure, NodeId};

/// A migration that has been initiated and neither completed, cancelled nor expired.
///
/// ```
/// use mielin_cells::migration::MigrationManager;
/// use mielin_cells::{Agent, AgentId, AgentState, CellError, Dna, NodeId};
///
/// fn main() -> Result<(), CellError> {
///     let dna = Dna::new(&b"\0asm\x01\0\0\0"[..])?;
///     let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna);
///     agent.set_state(AgentState::Running)?;
///     let mut manager = MigrationManager::new(NodeId::from_bytes([1; 16]));
///     let _snapshot = manager.initiate_migration_at(&mut agent, NodeId::from_bytes([2; 16]), 500)?;
///
///     let pending = manager.pending()[0];
///     assert_eq!(pending.agent, agent.id());
///     assert_eq!(pending.previous_state, AgentState::Running);
///     assert_eq!(pending.started_at, 500);
///     assert_eq!(manager.cancel_migration(&mut agent)?, pending);
///     assert_eq!(agent.state(), AgentState::Running);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingMigration {
    /// The agent being moved.
    pub agent: AgentId,
    /// Where it is going.
    pub target: NodeId,
    /// The state it was in before, which cancelling or expiring returns it to.
    pub previous_state: AgentState,
    /// When the migration was initiated, in Unix seconds.
    pub started_at: u64,
}

/// Tracks the migrations started on one node (the source), at most `N` at once.
///
/// The manager does not own agents: each call takes the agent it is about. Every refusal is an
/// error that changes nothing, never a silent no-op. Storage is fixed (`N` entries, no
/// allocation), with or without `alloc`: a bound on pending migrations also bounds what a
/// misbehaving peer can make a node hold.
///
/// ```
/// use mielin_cells::migration::MigrationManager;
/// use mielin_cells::{Agent, AgentId, AgentState, CellError, Dna, NodeId};
///
/// fn main() -> Result<(), CellError> {
///     let (source, target) = (NodeId::from_bytes([1; 16]), NodeId::from_bytes([2; 16]));
///     let dna = Dna::new(&b"\0asm\x01\0\0\0"[..])?;
///     let mut agent = Agent::with_id(AgentId::derive(dna.hash(), 0), dna);
///     agent.set_state(AgentState::Running)?;
///
///     let mut manager = MigrationManager::new(source);
///     let snapshot = manager.initiate_migration_at(&mut agent, target, 1_790_000_000)?;
///     assert_eq!(agent.state(), AgentState::Migrating); // the manager moved it
///     assert_eq!(snapshot.source_node(), Some(source));
///
///     // ... send the snapshot; once the target confirms:
///     manager.complete_migration(&mut agent)?;
///     assert_eq!(agent.state(), AgentState::Terminated);
///     assert_eq!(manager.pending_count(), 0);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct MigrationManager<const N: usize = 16> {
    node: NodeId,
    pending: heapless::Vec<PendingMigration, N>,
}

impl MigrationManager {
    /// How many migrations a manager from [`new`](Self::new) can hold pending at once.
    pub const DEFAULT_CAPACITY: usize = 16;

    /// A manager for the node `node`, with nothing pending and room for
    /// [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) (16) pending migrations. No type annotation is needed; for
    /// another capacity use [`with_capacity`](Self::with_capacity).
    ///
    /// ```
    /// use mielin_cells::migration::MigrationManager;
    /// use mielin_cells::NodeId;
    ///
    /// let manager = MigrationManager::new(NodeId::from_bytes([1; 16]));
    /// assert_eq!(manager.capacity(), 16);
    /// assert_eq!(manager.pending_count(), 0);
    /// ```
    pub const fn new(node: NodeId) -> Self {
        MigrationManager::with_capacity(node)
    }

    /// A manager for the node `node` with room for `N` pending migrations, nothing pending.
    /// `const`, so it can initialise a `static`; the storage is `N` entries inline, no
    /// allocation.
    ///
    /// ```
    /// use mielin_cells::migration::MigrationManager;
    /// use mielin_cells::NodeId;
    ///
    /// let manager = MigrationManager::with_capacity::<4>(NodeId::from_bytes([1; 16]));
    /// assert_eq!(manager.capacity(), 4);
    /// ```
    pub const fn with_capacity<const N: usize>(node: NodeId) -> MigrationManager<N> {
        MigrationManager {
            node,
            pending: heapless::Vec::new(),
        }
    }
}

impl<const N: usize> MigrationManager<N> {
    /// How many migrations can be pending at once: `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The node this manager runs on: the source of its migrations.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Starts moving `agent` to `target` at time `now_unix_secs`: the agent (Running or
    /// Suspended) moves to `Migrating`, and the returned snapshot, with this node as its
    /// `source_node`, is what to send.
    ///
    /// Refused, with nothing changed, if the agent cannot move to `Migrating`
    /// ([`CellError::InvalidState`]), already has a pending migration, `target` is this node, or
    /// `N` migrations are pending ([`CellError::CapacityExceeded`]).
    #[must_use = "on error the agent did not move to Migrating and nothing is pending"]
    pub fn initiate_migration_at<B: AsRef<[u8]> + Clone>(
        &mut self,
        agent: &mut Agent<B>,
        target: NodeId,
        now_unix_secs: u64,
    ) -> Result<MigrationSnapshot<B>, CellError> {
        let id = agent.id();
        if self.position(id).is_some() {
            return Err(failed(id, MigrationFailure::AlreadyPending));
        }
        if target == self.node {
            return Err(failed(id, MigrationFailure::TargetIsSource));
        }
        let previous_state = agent.state();
        if !previous_state.can_transition_to(AgentState::Migrating) {
            return Err(CellError::InvalidState {
                from: previous_state,
                to: AgentState::Migrating,
            });
        }
        let entry = PendingMigration {
            agent: id,
            target,
            previous_state,
            started_at: now_unix_secs,
        };
        self.pending
            .push(entry)
            .map_err(|_| CellError::CapacityExceeded {
                what: Capacity::PendingMigrations,
                capacity: N,
                requested: N + 1,
            })?;
        agent.set_state(AgentState::Migrating)?;
        Ok(MigrationSnapshot::capture_at(
            agent,
            Some(self.node),
            now_unix_secs,
        ))
    }

    /// [`initiate_migration_at`](Self::initiate_migration_at) with the system clock.
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    #[must_use = "on error the agent did not move to Migrating and nothing is pending"]
    pub fn initiate_migration<B: AsRef<[u8]> + Clone>(
        &mut self,
        agent: &mut Agent<B>,
        target: NodeId,
    ) -> Result<MigrationSnapshot<B>, CellError> {
        self.initiate_migration_at(agent, target, crate::unix_now())
    }

    /// The target has the agent: the source copy moves to `Terminated` and the entry is removed.
    ///
    /// Refused, with nothing changed, if the agent has no pending migration here or is no longer
    /// `Migrating`.
    #[must_use = "on error the agent was not terminated and the migration is still pending (or never was)"]
    pub fn complete_migration<B: AsRef<[u8]>>(
        &mut self,
        agent: &mut Agent<B>,
    ) -> Result<PendingMigration, CellError> {
        self.finish(agent, |_| AgentState::Terminated)
    }

    /// The migration is abandoned: the agent returns to the state it had before initiation, and
    /// the entry is removed.
    ///
    /// Refused, with nothing changed, if the agent has no pending migration here or is no longer
    /// `Migrating`.
    #[must_use = "on error the agent did not return to its previous state"]
    pub fn cancel_migration<B: AsRef<[u8]>>(
        &mut self,
        agent: &mut Agent<B>,
    ) -> Result<PendingMigration, CellError> {
        self.finish(agent, |p| p.previous_state)
    }

    fn finish<B: AsRef<[u8]>>(
        &mut self,
        agent: &mut Agent<B>,
        next: impl FnOnce(&PendingMigration) -> AgentState,
    ) -> Result<PendingMigration, CellError> {
        let id = agent.id();
        let index = self
            .position(id)
            .ok_or(failed(id, MigrationFailure::NotPending))?;
        if agent.state() != AgentState::Migrating {
            let found = agent.state();
            return Err(failed(id, MigrationFailure::NotMigrating { found }));
        }
        agent.set_state(next(&self.pending[index]))?;
        Ok(self.pending.swap_remove(index))
    }

    /// How many migrations are pending.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The pending migrations, in no particular order.
    pub fn pending(&self) -> &[PendingMigration] {
        &self.pending
    }

    /// Whether `agent` has a pending migration here.
    pub fn is_pending(&self, agent: AgentId) -> bool {
        self.position(agent).is_some()
    }

    /// Removes every migration started more than `max_age_secs` before `now_unix_secs` and
    /// returns them.
    ///
    /// The manager does not hold the agents, so the caller returns each one to
    /// [`PendingMigration::previous_state`] (`agent.set_state(p.previous_state)`), exactly what
    /// [`cancel_migration`](Self::cancel_migration) would have done.
    #[must_use = "the caller must return each expired agent to its previous state"]
    pub fn expire(
        &mut self,
        now_unix_secs: u64,
        max_age_secs: u64,
    ) -> heapless::Vec<PendingMigration, N> {
        let mut expired = heapless::Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let p = self.pending[i];
            if now_unix_secs.saturating_sub(p.started_at) > max_age_secs {
                // Cannot fail: `expired` has the same capacity as `pending`.
                let _ = expired.push(self.pending.swap_remove(i));
            } else {
                i += 1;
            }
        }
        expired
    }

    fn position(&self, agent: AgentId) -> Option<usize> {
        self.pending.iter().position(|p| p.agent == agent)
    }
}

fn failed(agent: AgentId, reason: MigrationFailure) -> CellError {
    CellError::MigrationFailed { agent, reason }
}
