//! [`AgentState`]: the lifecycle state machine.

use core::fmt;

/// Where an agent is in its life.
///
/// The legal moves (anything else is refused):
///
/// | from \ to  | Created | Running | Suspended | Migrating | Terminated |
/// |------------|---------|---------|-----------|-----------|------------|
/// | Created    |         | yes     |           |           | yes        |
/// | Running    |         |         | yes       | yes       | yes        |
/// | Suspended  |         | yes     |           | yes       | yes        |
/// | Migrating  |         | yes     | yes       |           | yes        |
/// | Terminated |         |         |           |           |            |
///
/// Nothing leaves `Terminated`, nothing returns to `Created`, and no state moves to itself.
///
/// ```
/// use mielin_cells::AgentState;
///
/// assert!(AgentState::Running.can_transition_to(AgentState::Migrating));
/// assert!(!AgentState::Migrating.can_transition_to(AgentState::Migrating));
/// assert!(!AgentState::Terminated.can_transition_to(AgentState::Running));
///
/// let legal = AgentState::ALL
///     .iter()
///     .flat_map(|&from| AgentState::ALL.map(move |to| (from, to)))
///     .filter(|&(from, to)| from.can_transition_to(to))
///     .count();
/// assert_eq!(legal, 11);
/// assert_eq!(AgentState::Suspended.to_string(), "Suspended");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgentState {
    /// Built, not yet started.
    Created,
    /// Executing.
    Running,
    /// Paused; its state is kept.
    Suspended,
    /// Being moved to another node; it does not run here meanwhile.
    Migrating,
    /// Finished for good.
    Terminated,
}

impl AgentState {
    /// Every state, in declaration order.
    pub const ALL: [AgentState; 5] = [
        AgentState::Created,
        AgentState::Running,
        AgentState::Suspended,
        AgentState::Migrating,
        AgentState::Terminated,
    ];

    /// Whether the state machine allows moving from `self` to `next`.
    pub const fn can_transition_to(self, next: AgentState) -> bool {
        use AgentState::*;
        matches!(
            (self, next),
            (Created, Running | Terminated)
                | (Running, Suspended | Migrating | Terminated)
                | (Suspended, Running | Migrating | Terminated)
                | (Migrating, Running | Suspended | Terminated)
        )
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::AgentState::{self, *};

    /// The whole table, written out independently of the `matches!` above.
    const LEGAL: [(AgentState, AgentState); 11] = [
        (Created, Running),
        (Created, Terminated),
        (Running, Suspended),
        (Running, Migrating),
        (Running, Terminated),
        (Suspended, Running),
        (Suspended, Migrating),
        (Suspended, Terminated),
        (Migrating, Running),
        (Migrating, Suspended),
        (Migrating, Terminated),
    ];

    #[test]
    fn all_25_pairs() {
        let mut legal = 0;
        for from in AgentState::ALL {
            for to in AgentState::ALL {
                let expected = LEGAL.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                legal += usize::from(expected);
            }
        }
        assert_eq!(legal, 11);
    }
}
