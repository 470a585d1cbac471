//! Issue 24's goal: a fleet of `mielin node` processes on this machine, one of them its Zenoh
//! router, ping-pong pairs of agents spread over it; a fifth of the members drain and another
//! fifth are killed (SIGKILL) and restarted, in a seeded order, while the pairs exchange their
//! numbers. At the end every agent runs on exactly one node and on no drained node, and every
//! number of every exchange arrived exactly once.
//!
//! `MIELIN_FLEET_NODES` (default 12, at least 6), `MIELIN_FLEET_SEEDS` (default 1) and
//! `MIELIN_FLEET_FIRST` (default 1) set the size and the seeds; `MIELIN_FLEET_LIMIT` (default
//! 200) the numbers each pair exchanges. The release run (docs/fleet.md) is 50 nodes, drain 10,
//! restart 10, over several seeds.
//!
//! Processes, not threads: a kill is a real SIGKILL of a node with agents and hand-offs in
//! flight, and a restart reads only what reached its disk.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number")))
        .unwrap_or(default)
}

fn mielin(args: &[&str]) -> Output {
    Command::new(node_bin())
        .args(args)
        .output()
        .expect("run mielin")
}

fn agent_prefix(name: &str) -> String {
    let d = mielin_cells::sha256(name.as_bytes());
    mielin_cells::quic::to_hex(&d[..4])
}

/// `n` distinct free UDP ports on loopback (QUIC), and a TCP one (Zenoh): the OS's choices,
/// all held until every one is chosen, then released for the nodes to bind.
fn free_ports(n: usize) -> (Vec<u16>, u16) {
    let udp: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = |a: std::io::Result<std::net::SocketAddr>| a.unwrap().port();
    (
        udp.iter().map(|s| port(s.local_addr())).collect(),
        port(tcp.local_addr()),
    )
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Drain(usize),
    Restart(usize),
}

#[test]
fn a_fleet_drains_and_restarts_members_and_every_agent_runs_once() {
    let n = env("MIELIN_FLEET_NODES", 12).max(6) as usize;
    let first = env("MIELIN_FLEET_FIRST", 1);
    for seed in first..first + env("MIELIN_FLEET_SEEDS", 1) {
        run(n, seed);
    }
}

fn run(n: usize, seed: u64) {
    let start = Instant::now();
    let limit = env("MIELIN_FLEET_LIMIT", 200) as i64;
    let mut rng = Rng(seed);
    let dir = scratch(&format!("fleet-{n}-{seed}"));
    let fleet = dir.join("fleet.toml");
    let fleet_s = fleet.to_str().unwrap().to_string();
    let names: Vec<String> = (0..n).map(|i| format!("n{i:02}")).collect();
    let (ports, zenoh_port) = free_ports(n);
    let mut addrs = Vec::new();
    for (name, port) in names.iter().zip(ports) {
        let addr = format!("127.0.0.1:{port}");
        let key = dir.join(format!("{name}.key"));
        let o = mielin(&[
            "keygen",
            key.to_str().unwrap(),
            "--fleet",
            &fleet_s,
            "--addr",
            &addr,
            "--name",
            name,
        ]);
        assert!(o.status.success(), "{o:?}");
        addrs.push(addr);
    }
    let ep = format!("tcp/127.0.0.1:{zenoh_port}");
    let args = |i: usize| -> Vec<String> {
        let mut a = vec!["--fleet".to_string(), fleet_s.clone()];
        if i == 0 {
            a.extend(["--zenoh-router", "--zenoh-listen", &ep].map(String::from));
        } else {
            a.extend(["--zenoh", &ep].map(String::from));
        }
        a
    };
    let launch = |i: usize| Proc::start(&names[i], &dir, &addrs[i], &args(i), &[], None);
    let mut nodes: Vec<Proc> = (0..n).map(launch).collect();
    for name in &names[1..] {
        nodes[0].wait_line(0, |l| l == format!("fleet: {name} joined"), T);
    }
    let joined = start.elapsed();

    // Pairs: ping K on one node, pong K on another; placed at random, none on the router.
    let pairs = n / 2;
    let mut home = Vec::new();
    for k in 0..pairs {
        let p = 1 + rng.below(n as u64 - 1) as usize;
        let mut q = 1 + rng.below(n as u64 - 2) as usize;
        if q >= p {
            q += 1;
        }
        for (agent, at) in [(format!("ping{k}"), p), (format!("pong{k}"), q)] {
            let o = mielin(&[
                "deploy",
                &agent_file(),
                "--name",
                &agent,
                "--arg",
                &limit.to_string(),
                "-d",
                &data(&dir, &names[at]),
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        home.push(p);
    }
    // A fifth drain, another fifth restart, in a seeded order; the router does neither.
    let k = n / 5;
    let mut members: Vec<usize> = (1..n).collect();
    rng.shuffle(&mut members);
    let drained: Vec<usize> = members[..k].to_vec();
    let restarted: Vec<usize> = members[k..2 * k].to_vec();
    let mut faults: Vec<Fault> = drained
        .iter()
        .map(|&i| Fault::Drain(i))
        .chain(restarted.iter().map(|&i| Fault::Restart(i)))
        .collect();
    rng.shuffle(&mut faults);
    for (k, &p) in home.iter().enumerate() {
        nodes[p].send(&format!("kick ping{k} pong{k}"));
    }
    for f in &faults {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        match *f {
            Fault::Drain(i) => {
                let from = nodes[i].len();
                nodes[i].send("drain");
                nodes[i].wait_line(from, |l| l.starts_with("draining: "), T);
            }
            Fault::Restart(i) => {
                nodes[i].kill9();
                std::thread::sleep(Duration::from_millis(rng.below(1000)));
                nodes[i] = launch(i);
            }
        }
    }
    let faulted = start.elapsed();

    // Until every exchange is over and the drained nodes are empty.
    let prefix: Vec<(String, String)> = (0..pairs)
        .flat_map(|k| [format!("ping{k}"), format!("pong{k}")])
        .map(|a| (agent_prefix(&a), a))
        .collect();
    let name_of = |shown: &str| -> String {
        prefix
            .iter()
            .find(|(p, a)| shown == a || shown == p)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| shown.to_string())
    };
    let deadline = Duration::from_secs(60 + 6 * n as u64);
    let all = loop {
        let mut all = Vec::new(); // (node, agent, received, last, out of order)
        for (i, p) in nodes.iter_mut().enumerate() {
            for (a, r, l, o) in p.stats() {
                all.push((i, name_of(&a), r, l, o));
            }
        }
        let over = (0..pairs).all(|k| received(&all, k) > limit);
        let drained_empty = all.iter().all(|s| !drained.contains(&s.0));
        if over && drained_empty {
            break all;
        }
        if start.elapsed() > deadline {
            let logs: Vec<String> = nodes
                .iter()
                .filter(|p| all.iter().any(|s| names[s.0] == p.name))
                .map(|p| format!("--- {}\n{}", p.name, p.log()))
                .collect();
            panic!(
                "seed {seed}: not over after {deadline:?} (drained {drained:?}, restarted {restarted:?}): {all:?}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut moved = 0;
    for (_, a) in &prefix {
        let copies: Vec<_> = all.iter().filter(|s| &s.1 == a).collect();
        assert_eq!(
            copies.len(),
            1,
            "seed {seed}: one running copy of {a}: {all:?}"
        );
        let (at, _, _, _, ooo) = *copies[0];
        assert_eq!(
            ooo, 0,
            "seed {seed}: {a} saw a lost or repeated number: {all:?}"
        );
        assert!(
            !drained.contains(&at),
            "seed {seed}: {a} on drained {}",
            names[at]
        );
        let k: usize = a[4..].parse().unwrap();
        if a.starts_with("ping") && at != home[k] {
            moved += 1;
        }
    }
    for k in 0..pairs {
        let got = received(&all, k);
        assert_eq!(
            got,
            limit + 1,
            "seed {seed}: pair {k}: 0..={limit} each once: {all:?}"
        );
    }
    println!(
        "seed {seed}: {n} nodes joined in {joined:?}; {} agents; drained {:?}, restarted {:?} by {faulted:?}; every exchange over by {:?}; {moved} pings moved",
        2 * pairs,
        drained.iter().map(|&i| &names[i]).collect::<Vec<_>>(),
        restarted.iter().map(|&i| &names[i]).collect::<Vec<_>>(),
        start.elapsed()
    );
    for p in nodes {
        p.quit();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Numbers pair `k` received, over every copy of its agents seen.
fn received(all: &[(usize, String, i64, i64, i64)], k: usize) -> i64 {
    let (ping, pong) = (format!("ping{k}"), format!("pong{k}"));
    all.iter()
        .filter(|s| s.1 == ping || s.1 == pong)
        .map(|s| s.2)
        .sum()
}

fn data(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.d")).to_str().unwrap().to_string()
}
