//! Placement on live data: whether an agent should leave its node, and for which node, from the
//! statuses the nodes publish (a fleet's status records, docs/fleet.md). No I/O and no
//! allocation: the time is passed in, and the caller starts the hand-off and logs the decision
//! with its [`Reason`] (or the [`Hold`] that kept the agent where it is).
//!
//! Three rules keep an agent from moving back and forth:
//! - **It moves only when its node stops satisfying it**: the node breaks the agent's
//!   [`Policy`], or drains. A better node elsewhere is no reason to move.
//! - **Hysteresis**: a target must clear the policy's battery minimum by
//!   [`PlannerConfig::battery_margin`] points. An agent that left a node at the minimum does not
//!   go back until that node has charged well past it, so a battery hovering around the
//!   minimum moves it once, not on every reading.
//! - **Rate limits**: an agent moves at most once per [`PlannerConfig::min_interval_ms`] (the
//!   node it moved to calls [`Planner::arrived`], so the interval holds across nodes), and
//!   the node starts at most [`PlannerConfig::max_moves`] moves per
//!   [`PlannerConfig::window_ms`] (a drained node's agents leave a few at a time).

use crate::{AgentId, NodeId, NodeStatus, Policy, PolicyViolation};

/// The planner's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Points of battery a target must have above the policy's minimum (the sum capped at 100,
    /// unless the minimum itself is above 100: then no node is a target).
    pub battery_margin: u8,
    /// The least time between two moves of one agent, in milliseconds.
    pub min_interval_ms: u64,
    /// Moves started per window, at most (1 to [`MAX_MOVES_PER_WINDOW`]).
    pub max_moves: usize,
    /// The window of `max_moves`, in milliseconds.
    pub window_ms: u64,
}

impl Default for PlannerConfig {
    /// A margin of 10 points, 10 s between two moves of an agent, 4 moves a second.
    fn default() -> Self {
        PlannerConfig {
            battery_margin: 10,
            min_interval_ms: 10_000,
            max_moves: 4,
            window_ms: 1_000,
        }
    }
}

/// The most moves a window can allow ([`PlannerConfig::max_moves`] is capped at it).
pub const MAX_MOVES_PER_WINDOW: usize = 64;

/// A node as the planner sees it: its live status, and whether it drains (its operator wants
/// it empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Its status (battery, latency, architecture).
    pub status: NodeStatus,
    /// It drains: agents leave it, and none is sent to it.
    pub draining: bool,
}

/// Why an agent moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its node breaks its policy (battery below its minimum, latency over its maximum).
    Policy(PolicyViolation),
    /// Its node drains.
    Draining,
}

/// A decision to move an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The agent.
    pub agent: AgentId,
    /// Where to.
    pub to: NodeId,
    /// Why.
    pub reason: Reason,
}

/// Why an agent stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Its node satisfies its policy and does not drain.
    Satisfied,
    /// It should move, but moved less than `min_interval_ms` ago; not before `until_ms`.
    TooSoon {
        /// Why it should move.
        reason: Reason,
        /// The earliest time it may.
        until_ms: u64,
    },
    /// It should move, but `max_moves` moves started within the window.
    RateLimited {
        /// Why it should move.
        reason: Reason,
    },
    /// It should move, but no other node satisfies its policy with the margin.
    NoTarget {
        /// Why it should move.
        reason: Reason,
    },
}

/// The planner of one node, for its agents; `N` agents' last moves are remembered (when full,
/// the oldest move is forgotten, which only lets that agent move sooner).
#[derive(Debug, Clone)]
pub struct Planner<const N: usize> {
    config: PlannerConfig,
    last_move: heapless::LinearMap<AgentId, u64, N>,
    recent: heapless::Deque<u64, MAX_MOVES_PER_WINDOW>,
}

impl<const N: usize> Planner<N> {
    /// A planner with these limits.
    pub fn new(config: PlannerConfig) -> Self {
        Planner {
            config: PlannerConfig {
                max_moves: config.max_moves.clamp(1, MAX_MOVES_PER_WINDOW),
                ..config
            },
            last_move: heapless::LinearMap::new(),
            recent: heapless::Deque::new(),
        }
    }

    /// Decides, at `now_ms` (a clock that never goes back, the same for every call and for
    /// [`Planner::arrived`]), whether `agent` (with `policy`) leaves `here`, and for which of
    /// `others` (`here` among them is ignored). A [`Move`] is counted against the limits at
    /// once: the caller starts the hand-off (and if it fails, the agent stays and may be moved
    /// again after `min_interval_ms`).
    pub fn decide(
        &mut self,
        now_ms: u64,
        agent: AgentId,
        policy: &Policy,
        here: &Candidate,
        others: &[Candidate],
    ) -> Result<Move, Hold> {
        let reason = if here.draining {
            Reason::Draining
        } else if let Err(v) = policy.check(&here.status) {
            Reason::Policy(v)
        } else {
            return Err(Hold::Satisfied);
        };
        if let Some(&last) = self.last_move.get(&agent) {
            let until_ms = last.saturating_add(self.config.min_interval_ms);
            if now_ms < until_ms {
                return Err(Hold::TooSoon { reason, until_ms });
            }
        }
        while let Some(&t) = self.recent.front() {
            if now_ms.saturating_sub(t) >= self.config.window_ms {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.config.max_moves {
            return Err(Hold::RateLimited { reason });
        }
        let mut strict = policy.clone();
        // The margin is capped at 100%, and never below the policy's own minimum (one above
        // 100 is met by no node).
        strict.min_battery_percent = policy
            .min_battery_percent
            .saturating_add(self.config.battery_margin)
            .min(100)
            .max(policy.min_battery_percent);
        // The best target by the policy's own ranking, among the nodes that clear it with the
        // margin; ties go to the first in `others`, so the decision is deterministic.
        let to = others
            .iter()
            .filter(|c| c.node != here.node && !c.draining)
            .filter(|c| strict.check(&c.status).is_ok())
            .min_by_key(|c| strict.rank(&c.status))
            .map(|c| c.node)
            .ok_or(Hold::NoTarget { reason })?;
        self.note(agent, now_ms);
        if self.recent.is_full() {
            self.recent.pop_front();
        }
        let _ = self.recent.push_back(now_ms);
        Ok(Move { agent, to, reason })
    }

    /// Notes that `agent` arrived at `now_ms` (a hand-off to this node committed): it is not
    /// moved on before `min_interval_ms` has passed, so the interval holds across nodes.
    pub fn arrived(&mut self, agent: AgentId, now_ms: u64) {
        self.note(agent, now_ms);
    }

    fn note(&mut self, agent: AgentId, now_ms: u64) {
        if self.last_move.len() >= N && !self.last_move.contains_key(&agent) {
            if let Some(oldest) = self
                .last_move
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(a, _)| *a)
            {
                self.last_move.remove(&oldest);
            }
        }
        let _ = self.last_move.insert(agent, now_ms);
    }

    /// Forgets `agent` (it left this node or ended).
    pub fn forget(&mut self, agent: AgentId) {
        self.last_move.remove(&agent);
    }
}
