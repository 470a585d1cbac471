//! Choosing a node for an agent from what the nodes report.
//!
//! `cargo run --example policy_select`

use mielin_cells::{Arch, CellError, NodeStatus, Policy};

fn main() -> Result<(), CellError> {
    let policy = Policy::new(30, 50, &[Arch::Aarch64, Arch::X86_64])?;
    let nodes = [
        (
            "sensor-7 (cortex-m)",
            NodeStatus {
                battery_percent: 80,
                latency_ms: 3,
                arch: Arch::Arm,
            },
        ),
        (
            "gateway-2 (pi)",
            NodeStatus {
                battery_percent: 20,
                latency_ms: 8,
                arch: Arch::Aarch64,
            },
        ),
        (
            "edge-1 (pi)",
            NodeStatus {
                battery_percent: 100,
                latency_ms: 12,
                arch: Arch::Aarch64,
            },
        ),
        (
            "edge-4 (jetson)",
            NodeStatus {
                battery_percent: 100,
                latency_ms: 9,
                arch: Arch::Aarch64,
            },
        ),
        (
            "cloud-eu",
            NodeStatus {
                battery_percent: 100,
                latency_ms: 45,
                arch: Arch::X86_64,
            },
        ),
        (
            "cloud-us",
            NodeStatus {
                battery_percent: 100,
                latency_ms: 140,
                arch: Arch::X86_64,
            },
        ),
    ];

    println!("policy: battery >= 30%, latency <= 50 ms, prefer aarch64 then x86_64");
    for (name, node) in &nodes {
        match policy.check(node) {
            Ok(()) => println!("  {name:<22} eligible"),
            Err(rule) => println!("  {name:<22} {rule}"),
        }
    }
    let statuses: Vec<NodeStatus> = nodes.iter().map(|(_, n)| *n).collect();
    match policy.select(&statuses) {
        Some(i) => println!("selected: {}", nodes[i].0),
        None => println!("no node satisfies the policy"),
    }
    Ok(())
}
