//! `mesh::planner`: agents leave a node when it stops satisfying them, for a node that clears
//! their policy with the margin, at most once per interval and a few per window; and a seeded
//! simulation of batteries hovering around the agents' minimums, where the planner moves agents
//! a fraction of the times a planner without hysteresis does, never onto a node that breaks
//! their policy, and never twice within the interval.

use mielin_cells::mesh::planner::{Candidate, Hold, Move, Planner, PlannerConfig, Reason};
use mielin_cells::{AgentId, Arch, NodeId, NodeStatus, Policy, PolicyViolation};

fn node(n: u8, battery: u8) -> Candidate {
    Candidate {
        node: NodeId::from_bytes([n; 16]),
        status: NodeStatus {
            battery_percent: battery,
            latency_ms: 5,
            arch: Arch::X86_64,
        },
        draining: false,
    }
}

fn agent(n: u8) -> AgentId {
    AgentId::from_bytes([n; 16])
}

fn min_battery(p: u8) -> Policy {
    Policy::new(p, u32::MAX, &[]).unwrap()
}

#[test]
fn an_agent_stays_on_a_node_that_satisfies_it_however_good_the_others_are() {
    let mut p = Planner::<8>::new(PlannerConfig::default());
    let here = node(1, 31);
    let others = [node(2, 100), node(3, 100)];
    assert_eq!(
        p.decide(0, agent(1), &min_battery(30), &here, &others),
        Err(Hold::Satisfied)
    );
}

#[test]
fn a_low_battery_moves_the_agent_to_a_node_past_the_margin() {
    let mut p = Planner::<8>::new(PlannerConfig::default());
    let here = node(1, 29);
    // Node 2 satisfies the policy (35 >= 30) but not the margin (40); node 3 does.
    let others = [here, node(2, 35), node(3, 41)];
    assert_eq!(
        p.decide(0, agent(1), &min_battery(30), &here, &others),
        Ok(Move {
            agent: agent(1),
            to: NodeId::from_bytes([3; 16]),
            reason: Reason::Policy(PolicyViolation::BatteryTooLow {
                required: 30,
                found: 29
            }),
        })
    );
    // With only node 2, it stays, and says why.
    let mut p = Planner::<8>::new(PlannerConfig::default());
    assert!(matches!(
        p.decide(0, agent(1), &min_battery(30), &here, &[node(2, 35)]),
        Err(Hold::NoTarget { .. })
    ));
}

#[test]
fn a_minimum_above_100_is_met_by_no_target_and_the_node_itself_is_never_one() {
    let mut p = Planner::<8>::new(PlannerConfig::default());
    let here = node(1, 100);
    // Nothing meets 150%: the agent stays, however charged the others are.
    assert!(matches!(
        p.decide(0, agent(1), &min_battery(150), &here, &[node(2, 100)]),
        Err(Hold::NoTarget { .. })
    ));
    // A draining node that would pass the policy is not its own target.
    let mut draining = node(1, 100);
    draining.draining = true;
    assert!(matches!(
        p.decide(0, agent(2), &Policy::default(), &draining, &[draining]),
        Err(Hold::NoTarget {
            reason: Reason::Draining
        })
    ));
}

#[test]
fn a_draining_node_sends_its_agents_away_and_receives_none() {
    let mut p = Planner::<8>::new(PlannerConfig::default());
    let mut here = node(1, 100);
    here.draining = true;
    let mut drained = node(2, 100);
    drained.draining = true;
    let m = p
        .decide(
            0,
            agent(1),
            &Policy::default(),
            &here,
            &[drained, node(3, 50)],
        )
        .unwrap();
    assert_eq!(
        (m.to, m.reason),
        (NodeId::from_bytes([3; 16]), Reason::Draining)
    );
    assert!(matches!(
        p.decide(0, agent(2), &Policy::default(), &here, &[drained]),
        Err(Hold::NoTarget {
            reason: Reason::Draining
        })
    ));
}

#[test]
fn an_agent_moves_at_most_once_per_interval_and_a_node_a_few_per_window() {
    let config = PlannerConfig {
        battery_margin: 0,
        min_interval_ms: 5_000,
        max_moves: 2,
        window_ms: 1_000,
    };
    let mut p = Planner::<8>::new(config);
    let (low, high) = (node(1, 10), node(2, 90));
    let policy = min_battery(50);
    assert!(p.decide(0, agent(1), &policy, &low, &[high]).is_ok());
    assert!(matches!(
        p.decide(4_999, agent(1), &policy, &low, &[high]),
        Err(Hold::TooSoon {
            until_ms: 5_000,
            ..
        })
    ));
    assert!(p.decide(5_000, agent(1), &policy, &low, &[high]).is_ok());
    // Two moves in the window starting at 5,000 (agent 1's and agent 2's); the third waits.
    assert!(p.decide(5_100, agent(2), &policy, &low, &[high]).is_ok());
    assert!(matches!(
        p.decide(5_200, agent(3), &policy, &low, &[high]),
        Err(Hold::RateLimited { .. })
    ));
    assert!(p.decide(6_000, agent(3), &policy, &low, &[high]).is_ok());
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Outcome {
    moves: usize,
    /// Moves back to the node the agent left last, within a minute of leaving it: ping-pong.
    returns: usize,
}

/// Five nodes whose batteries walk by up to ±3 points a second, pulled back towards 40 (so
/// they hover around the minimums); twenty agents with
/// minimums of 25–50; each node's planner decides every second for 30 minutes of simulated
/// time. Checks every move against the rules; the number of moves.
fn simulate(seed: u64, config: PlannerConfig) -> Outcome {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut batteries: Vec<u8> = (0..5).map(|_| 20 + rng.below(41) as u8).collect();
    let policies: Vec<Policy> = (0..20)
        .map(|_| min_battery(25 + rng.below(26) as u8))
        .collect();
    let mut on: Vec<usize> = (0..20).map(|i| i % 5).collect();
    let mut planners: Vec<Planner<32>> = (0..5).map(|_| Planner::new(config)).collect();
    let mut last_move: Vec<Option<u64>> = vec![None; 20];
    let mut left: Vec<Option<usize>> = vec![None; 20];
    let (mut moves, mut returns) = (0, 0);
    for second in 0..1_800u64 {
        let now = second * 1_000;
        for b in batteries.iter_mut() {
            let step = rng.below(7) as i32 - 3 + (40 - i32::from(*b)) / 10;
            *b = (i32::from(*b) + step).clamp(0, 100) as u8;
        }
        let nodes: Vec<Candidate> = batteries
            .iter()
            .enumerate()
            .map(|(i, &b)| node(i as u8, b))
            .collect();
        let mut started = [0usize; 5];
        for a in 0..20 {
            let from = on[a];
            if let Ok(m) =
                planners[from].decide(now, agent(a as u8), &policies[a], &nodes[from], &nodes)
            {
                let to = nodes.iter().position(|c| c.node == m.to).unwrap();
                assert_ne!(to, from);
                // The target clears the policy with the margin; the source broke it.
                let need = policies[a]
                    .min_battery_percent
                    .saturating_add(config.battery_margin)
                    .min(100);
                assert!(
                    batteries[to] >= need,
                    "seed {seed}: moved onto {} < {need}",
                    batteries[to]
                );
                assert!(batteries[from] < policies[a].min_battery_percent);
                if let Some(t) = last_move[a] {
                    if left[a] == Some(to) && now - t <= 60_000 {
                        returns += 1;
                    }
                    assert!(
                        now - t >= config.min_interval_ms,
                        "seed {seed}: agent {a} moved twice within the interval"
                    );
                }
                started[from] += 1;
                assert!(started[from] <= config.max_moves);
                planners[from].forget(agent(a as u8));
                planners[to].arrived(agent(a as u8), now);
                last_move[a] = Some(now);
                left[a] = Some(from);
                on[a] = to;
                moves += 1;
            }
        }
    }
    Outcome { moves, returns }
}

#[test]
fn batteries_hovering_around_the_minimums_move_agents_a_fraction_as_often() {
    let seeds: u64 = std::env::var("MIELIN_PLANNER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let naive = PlannerConfig {
        battery_margin: 0,
        min_interval_ms: 0,
        max_moves: 64,
        window_ms: 1,
    };
    let (mut with, mut without) = ((0, 0), (0, 0));
    for seed in 0..seeds {
        let (w, n) = (
            simulate(seed, PlannerConfig::default()),
            simulate(seed, naive),
        );
        with = (with.0 + w.moves, with.1 + w.returns);
        without = (without.0 + n.moves, without.1 + n.returns);
    }
    println!(
        "{seeds} seeds: {} moves, {} back within a minute, with the default limits; \
         {} moves, {} back, with none",
        with.0, with.1, without.0, without.1
    );
    assert!(with.0 > 0 && without.1 > 0, "the simulation tests nothing");
    assert!(
        with.0 * 2 < without.0,
        "moves: {with:?} with the limits, {without:?} without"
    );
    assert!(
        with.1 * 10 < without.1,
        "ping-pong: {with:?} with the limits, {without:?} without"
    );
}
