//! A mesh node you can run: the `mesh` protocol over QUIC with pinned peers, WebAssembly agents
//! from files, a file journal, and hand-offs printed with their phases, bytes and rate.
//! `docs/quic.md` walks an agent through three of them.
//!
//! ```text
//! cargo run --example node --features quic -- keygen a.key
//! cargo run --example node --features quic -- run --name a --key a.key --data a.d \
//!     --listen 127.0.0.1:4001 --peer b=KEY@127.0.0.1:4002 --agent pong=examples/agents/echo.wat
//! ```
//!
//! Commands on standard input: `migrate AGENT PEER`, `kick FROM TO` (FROM, running here,
//! sends 0 to TO), `at AGENT PEER` (where a remote agent runs), `peer NAME KEY@ADDR`, `stats`,
//! `battery PERCENT`, `quit`.
//!
//! Test hook: `MIELIN_HALT_AT=ROLE:PHASE` (e.g. `source:decided`, `target:received`) makes the
//! node print `halt ROLE:PHASE` and freeze at that phase of its first hand-off, for a test to
//! kill it with SIGKILL.

use clap::{Parser, Subcommand};
use mielin_cells::mesh::{Config, FileJournal, Journal};
use mielin_cells::quic::{
    to_hex, Directory, Driver, DriverConfig, Event, Identity, PublicKey, Role, Wake, WasmHost,
};
use mielin_cells::{AgentId, Arch, LocalKey, NodeId, NodeStatus, Policy};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "A mielin mesh node over QUIC")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates a key file (if missing) and prints its public key and node id.
    Keygen {
        /// The key file.
        key: PathBuf,
    },
    /// Runs a node.
    Run(Box<Run>),
}

#[derive(Parser)]
struct Run {
    /// This node's name (for `--at` and the output).
    #[arg(long)]
    name: String,
    /// The key file (created on first run).
    #[arg(long)]
    key: PathBuf,
    /// Where the journal, agents and DNA are kept.
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on (port 0: the OS picks; printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A pinned peer: NAME=KEY@ADDR (KEY: 64 hex digits, from `keygen`). Repeatable.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// An agent to start here: NAME=FILE (.wasm, or .wat text). Its id is derived from NAME.
    /// Skipped when the journal already knows it (a restart).
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// Where a remote agent runs at first: AGENT=PEER.
    #[arg(long = "at")]
    at: Vec<String>,
    /// Sends 0 from FROM (running here) to TO at start: FROM:TO.
    #[arg(long)]
    kick: Option<String>,
    /// The agents' `start(limit)` argument: the last number they answer.
    #[arg(long, default_value_t = 1_000_000)]
    limit: i32,
    /// Migrate AGENT to PEER after MS milliseconds: AGENT=PEER:MS. Repeatable.
    #[arg(long = "migrate")]
    migrations: Vec<String>,
    /// Simulated battery, percent at start.
    #[arg(long, default_value_t = 100)]
    battery: u8,
    /// The battery drains this many percent per second.
    #[arg(long, default_value_t = 0.0)]
    drain: f64,
    /// The policy's minimum battery: below it, every agent here migrates to the peer that
    /// `Policy::select` picks from the peers' announced status.
    #[arg(long, default_value_t = 20)]
    min_battery: u8,
    /// How often agents run, milliseconds.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// The protocol's retransmission timeout, milliseconds.
    #[arg(long, default_value_t = 200)]
    rto_ms: u64,
    /// Print a `stats` line for every agent here every this many milliseconds (0: never).
    #[arg(long, default_value_t = 0)]
    stats_ms: u64,
}

fn agent_id(name: &str) -> AgentId {
    let d = mielin_cells::sha256(name.as_bytes());
    AgentId::from_bytes(d[..16].try_into().expect("16 bytes"))
}

fn load_wasm(path: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| die(&format!("reading {path}: {e}")));
    if bytes.starts_with(b"\0asm") {
        bytes
    } else {
        wat::parse_bytes(&bytes)
            .unwrap_or_else(|e| die(&format!("{path}: {e}")))
            .into_owned()
    }
}

fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

fn out(line: String) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed();
    let mut o = std::io::stdout().lock();
    if std::env::var_os("MIELIN_NODE_TIMES").is_some() {
        let _ = write!(o, "[{:8.3}] ", t.as_secs_f64());
    }
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Names for ids, for the output.
#[derive(Default)]
struct Names {
    nodes: BTreeMap<NodeId, String>,
    agents: BTreeMap<AgentId, String>,
}

impl Names {
    fn node(&self, n: NodeId) -> String {
        self.nodes
            .get(&n)
            .cloned()
            .unwrap_or_else(|| to_hex(&n.as_bytes()[..4]))
    }
    fn agent(&self, a: AgentId) -> String {
        self.agents
            .get(&a)
            .cloned()
            .unwrap_or_else(|| to_hex(&a.as_bytes()[..4]))
    }
    fn node_named(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().find(|(_, v)| *v == name).map(|(k, _)| *k)
    }
    fn agent_named(&mut self, name: &str) -> AgentId {
        let id = agent_id(name);
        self.agents.insert(id, name.to_string());
        id
    }
}

fn parse_peer(s: &str) -> (String, PublicKey, SocketAddr) {
    let (name, rest) = s
        .split_once('=')
        .unwrap_or_else(|| die(&format!("peer `{s}`: expected NAME=KEY@ADDR")));
    let mut d = Directory::new();
    let id = d.insert_str(rest).unwrap_or_else(|e| die(&e));
    let p = *d.get(id).expect("just inserted");
    (name.to_string(), p.key, p.addr)
}

fn main() {
    let cli = Cli::parse();
    let run = match cli.cmd {
        Cmd::Keygen { key } => {
            let id = Identity::load_or_create(&key).unwrap_or_else(|e| die(&e.to_string()));
            out(format!(
                "key {} id {}",
                id.public_key(),
                to_hex(id.node_id().as_bytes())
            ));
            return;
        }
        Cmd::Run(r) => r,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&e.to_string()));
    rt.block_on(node(*run));
}

async fn node(run: Run) {
    let identity = Identity::load_or_create(&run.key).unwrap_or_else(|e| die(&e.to_string()));
    let mut names = Names::default();
    names.nodes.insert(identity.node_id(), run.name.clone());
    let mut directory = Directory::new();
    for p in &run.peers {
        let (name, key, addr) = parse_peer(p);
        let id = directory.insert(key, addr);
        names.nodes.insert(id, name);
    }
    // A new node (no data directory, or an empty one) creates its journals; any other must
    // find them, sealed with its key (a node that lost its journal must not start empty).
    let fresh = std::fs::read_dir(&run.data).map_or(true, |mut d| d.next().is_none());
    std::fs::create_dir_all(&run.data).unwrap_or_else(|e| die(&e.to_string()));
    let mut host = WasmHost::open(&identity, &directory, &run.data, 10_000_000)
        .unwrap_or_else(|e| die(&e.to_string()));
    let key = LocalKey::derive(identity.secret(), identity.node_id());
    let path = run.data.join("journal");
    let journal = if fresh {
        FileJournal::create(&path, identity.node_id(), &key, 64)
    } else {
        FileJournal::open(&path, identity.node_id(), &key, 64)
    }
    .unwrap_or_else(|e| die(&e.at(&path).to_string()));
    let mut cfg = DriverConfig::new(run.listen);
    cfg.mesh = Config {
        rto_ms: run.rto_ms,
        ..Config::default()
    };
    cfg.tick = Duration::from_millis(run.tick_ms);
    let mut driver: Driver<FileJournal, 64> =
        Driver::new(&identity, directory, journal, cfg, &mut host)
            .unwrap_or_else(|e| die(&e.to_string()));
    let addr = driver.local_addr().unwrap_or_else(|e| die(&e.to_string()));
    out(format!(
        "listening {addr} name {} id {} key {}",
        run.name,
        to_hex(identity.node_id().as_bytes()),
        identity.public_key()
    ));
    for a in host.running() {
        out(format!(
            "running {} (restarted from the journal)",
            names.agent(a)
        ));
    }

    for spec in &run.agents {
        let (name, file) = spec
            .split_once('=')
            .unwrap_or_else(|| die(&format!("agent `{spec}`: expected NAME=FILE")));
        let id = names.agent_named(name);
        if driver.node().journal().get(id).is_some() {
            continue; // known from the journal (a restart)
        }
        host.create(id, load_wasm(file), run.limit)
            .unwrap_or_else(|e| die(&e));
        driver
            .start(&mut host, id)
            .unwrap_or_else(|e| die(&e.to_string()));
        out(format!("running {name}"));
    }
    for spec in &run.at {
        let (agent, peer) = spec
            .split_once('=')
            .unwrap_or_else(|| die(&format!("at `{spec}`: expected AGENT=PEER")));
        let a = names.agent_named(agent);
        let n = names
            .node_named(peer)
            .unwrap_or_else(|| die(&format!("at `{spec}`: unknown peer")));
        driver.node_mut().set_location(a, n, 0);
    }
    if let Some(k) = &run.kick {
        let (from, to) = k
            .split_once(':')
            .unwrap_or_else(|| die("kick: expected FROM:TO"));
        let (f, t) = (names.agent_named(from), names.agent_named(to));
        if host.send_as(f, t, &0i32.to_le_bytes()) {
            let now = driver.now_ms();
            driver.node_mut().wake_messages(now);
        }
    }
    let mut scheduled: Vec<(Instant, AgentId, String)> = run
        .migrations
        .iter()
        .map(|m| {
            let (agent, rest) = m
                .split_once('=')
                .unwrap_or_else(|| die("migrate: expected AGENT=PEER:MS"));
            let (peer, ms) = rest
                .split_once(':')
                .unwrap_or_else(|| die("migrate: expected AGENT=PEER:MS"));
            let ms: u64 = ms.parse().unwrap_or_else(|_| die("migrate: bad MS"));
            (
                Instant::now() + Duration::from_millis(ms),
                names.agent_named(agent),
                peer.to_string(),
            )
        })
        .collect();

    // Standard input, line by line, from a thread.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });

    let started = Instant::now();
    let mut battery = f64::from(run.battery);
    let mut low_battery_done = false;
    let mut last_announce = Instant::now() - Duration::from_secs(1);
    let mut last_stats = Instant::now();
    let policy = Policy {
        min_battery_percent: run.min_battery,
        ..Policy::default()
    };
    let mut stdin_open = true;
    loop {
        let mut events = Vec::new();
        let mut command = None;
        tokio::select! {
            w = driver.wait() => {
                let tick = matches!(w, Wake::Tick);
                events = driver.handle(&mut host, w);
                if tick {
                    if host.tick() > 0 {
                        let now = driver.now_ms();
                        driver.node_mut().wake_messages(now);
                    }
                    battery = (f64::from(run.battery) - run.drain * started.elapsed().as_secs_f64()).max(0.0);
                    if last_announce.elapsed() >= Duration::from_millis(500) {
                        last_announce = Instant::now();
                        driver.announce(&NodeStatus {
                            battery_percent: battery as u8,
                            latency_ms: 1,
                            arch: Arch::X86_64,
                        });
                    }
                    if run.stats_ms > 0 && last_stats.elapsed() >= Duration::from_millis(run.stats_ms) {
                        last_stats = Instant::now();
                        command = Some("stats".to_string());
                    }
                }
            }
            l = lines.recv(), if stdin_open => match l {
                Some(l) => command = Some(l),
                None => stdin_open = false,
            },
        }
        for e in events {
            report(&names, &e, &host_running(&mut host, &names));
        }
        for e in host.errors.drain(..) {
            out(format!("host-error {e}"));
        }
        // Scheduled migrations and the battery.
        let due: Vec<_> = scheduled
            .iter()
            .filter(|m| m.0 <= Instant::now())
            .cloned()
            .collect();
        scheduled.retain(|m| m.0 > Instant::now());
        for (_, agent, peer) in due {
            migrate(&mut driver, &mut host, &names, agent, &peer);
        }
        if !low_battery_done && battery < f64::from(run.min_battery) {
            low_battery_done = true;
            out(format!(
                "battery {:.0}% below the policy's {}%",
                battery, run.min_battery
            ));
            match driver.select(&policy) {
                Some(target) => {
                    let name = names.node(target);
                    for a in host.running() {
                        migrate(&mut driver, &mut host, &names, a, &name);
                    }
                }
                None => out("no live peer fits the policy; agents stay".to_string()),
            }
        }
        if let Some(c) = command {
            if !handle_command(&c, &mut driver, &mut host, &mut names, &mut battery) {
                break;
            }
        }
    }
    let stats = driver.node().stats();
    out(format!(
        "shutdown: committed {} aborted {} adopted {} retransmits {}",
        stats.committed, stats.aborted, stats.adopted, stats.retransmits
    ));
    driver.shutdown(Duration::from_secs(1)).await;
}

fn host_running(host: &mut WasmHost, names: &Names) -> String {
    host.running()
        .into_iter()
        .map(|a| names.agent(a))
        .collect::<Vec<_>>()
        .join(",")
}

fn migrate(
    driver: &mut Driver<FileJournal, 64>,
    host: &mut WasmHost,
    names: &Names,
    agent: AgentId,
    peer: &str,
) {
    let Some(target) = names.node_named(peer) else {
        out(format!("migrate: unknown peer {peer}"));
        return;
    };
    let bytes = host.memory_len(agent).unwrap_or(0);
    match driver.migrate(host, agent, target) {
        Ok((epoch, events)) => {
            out(format!(
                "migrate {} -> {peer} epoch {epoch} (memory {bytes} bytes)",
                names.agent(agent)
            ));
            for e in events {
                report(names, &e, "");
            }
        }
        Err(e) => out(format!("migrate {}: {e}", names.agent(agent))),
    }
}

/// Handles a command line; `false` to stop.
fn handle_command(
    line: &str,
    driver: &mut Driver<FileJournal, 64>,
    host: &mut WasmHost,
    names: &mut Names,
    battery: &mut f64,
) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        ["quit"] => return false,
        ["migrate", agent, peer] => {
            let a = names.agent_named(agent);
            migrate(driver, host, names, a, peer);
        }
        ["kick", from, to] => {
            let (f, t) = (names.agent_named(from), names.agent_named(to));
            if host.send_as(f, t, &0i32.to_le_bytes()) {
                let now = driver.now_ms();
                driver.node_mut().wake_messages(now);
            } else {
                out(format!("kick: {from} does not run here"));
            }
        }
        ["at", agent, peer] => {
            let a = names.agent_named(agent);
            match names.node_named(peer) {
                Some(n) => driver.node_mut().set_location(a, n, 0),
                None => out(format!("at: unknown peer {peer}")),
            }
        }
        ["peer", spec] => {
            let (name, key, addr) = parse_peer(spec);
            let id = driver.add_peer(key, addr);
            if let Err(e) = host.trust_peer(&mielin_cells::quic::Peer { addr, key }) {
                out(format!("peer {name}: {e}"));
            }
            names.nodes.insert(id, name.clone());
            out(format!("pinned {name} {addr}"));
        }
        ["battery", p] => {
            if let Ok(p) = p.parse::<f64>() {
                *battery = p;
            }
        }
        ["stats"] => {
            for a in host.running() {
                let epoch = driver.node().journal().get(a).map_or(0, |r| r.epoch);
                match host.stats(a) {
                    Some(s) => out(format!(
                        "stats {} epoch {epoch} received {} last {} out_of_order {}",
                        names.agent(a),
                        s.received,
                        s.last,
                        s.out_of_order
                    )),
                    None => out(format!("stats {} epoch {epoch}", names.agent(a))),
                }
            }
            let d = driver.stats();
            out(format!(
                "stats-node sent {} received {} dropped {} duplicates {} errors {}",
                d.frames_sent,
                d.frames_received,
                d.frames_dropped,
                host.duplicates,
                host.errors.len()
            ));
            out("stats-end".to_string());
        }
        [] => {}
        _ => out(format!("unknown command: {line}")),
    }
    true
}

/// The test hook: freezes the node at `MIELIN_HALT_AT=ROLE:PHASE` (see the module docs).
fn halt_if_asked(e: &Event) {
    let Event::Phase { role, phase, .. } = e else {
        return;
    };
    let Ok(h) = std::env::var("MIELIN_HALT_AT") else {
        return;
    };
    let r = if *role == Role::Source {
        "source"
    } else {
        "target"
    };
    if h == format!("{r}:{phase}") {
        out(format!("halt {h}"));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn report(names: &Names, e: &Event, running: &str) {
    report_line(names, e, running);
    halt_if_asked(e);
}

fn report_line(names: &Names, e: &Event, running: &str) {
    match e {
        Event::Refused {
            addr,
            claimed,
            key,
            inbound,
            reason,
        } => out(format!(
            "refused {addr} claimed-id {} key {} ({}): {reason}",
            claimed.map_or("none".into(), |c| to_hex(c.as_bytes())),
            key.map_or("none".into(), |k| k.to_hex()),
            if *inbound {
                "it dialled us"
            } else {
                "we dialled it"
            }
        )),
        Event::Connected {
            peer,
            addr,
            inbound,
        } => out(format!(
            "connected {} {addr}{}",
            names.node(*peer),
            if *inbound { " (inbound)" } else { "" }
        )),
        Event::Disconnected { peer, reason } => {
            out(format!("disconnected {}: {reason}", names.node(*peer)))
        }
        Event::DialFailed {
            peer,
            reason,
            retry_in,
            ..
        } => out(format!(
            "dial {} failed: {reason}; retry in {} ms",
            names.node(*peer),
            retry_in.as_millis()
        )),
        Event::Phase {
            agent,
            epoch,
            peer,
            role,
            phase,
            elapsed,
            bytes,
        } => out(format!(
            "phase {} epoch {epoch} {} {phase} {} {:.1} ms {bytes} bytes",
            names.agent(*agent),
            if *role == Role::Source {
                "source"
            } else {
                "target"
            },
            if *role == Role::Source {
                format!("-> {}", names.node(*peer))
            } else {
                format!("<- {}", names.node(*peer))
            },
            elapsed.as_secs_f64() * 1e3,
        )),
        Event::HandOff(r) => {
            let phases: Vec<String> = r
                .phases
                .iter()
                .map(|(p, t)| format!("{p}@{:.1}ms", t.as_secs_f64() * 1e3))
                .collect();
            let rate = r
                .transfer
                .filter(|t| !t.is_zero())
                .map(|t| format!("{:.1} MiB/s", r.bytes as f64 / t.as_secs_f64() / 1048576.0))
                .unwrap_or_else(|| "-".into());
            out(format!(
                "handoff {} epoch {} {} {} {} {} bytes {} total {:.1} ms rate {rate} phases {} running-here [{running}]",
                names.agent(r.agent),
                r.epoch,
                if r.role == Role::Source { "source" } else { "target" },
                if r.role == Role::Source { "to" } else { "from" },
                names.node(r.peer),
                if r.committed { "committed" } else { "aborted" },
                r.bytes,
                r.total.as_secs_f64() * 1e3,
                phases.join(",")
            ))
        }
        Event::Status { .. } => {}
        Event::StreamRefused { peer, error } => out(format!(
            "stream from {} refused: {error}",
            names.node(*peer)
        )),
        Event::Malformed { peer } => out(format!("malformed frame from {}", names.node(*peer))),
        Event::Progress {
            agent,
            epoch,
            peer,
            sent,
            total,
            elapsed,
        } => out(format!(
            "progress {} epoch {epoch} -> {} {sent}/{total} bytes ({}%) {:.1} ms {:.1} MiB/s",
            names.agent(*agent),
            names.node(*peer),
            sent * 100 / (*total).max(1),
            elapsed.as_secs_f64() * 1e3,
            *sent as f64 / elapsed.as_secs_f64().max(1e-9) / 1048576.0
        )),
        _ => {}
    }
}
