//! `mielin node`: the `mesh` protocol over QUIC with pinned peers, WebAssembly agents kept on
//! disk, a file journal, a control socket for the other commands, a console on standard input,
//! Prometheus metrics, and a clean stop on SIGTERM or Ctrl-C.
//!
//! Console commands (standard input with `--console`, one a line): `migrate AGENT PEER`, `kick FROM TO` (FROM,
//! running here, sends 0 to TO), `at AGENT PEER` (where a remote agent runs), `peer NAME
//! KEY@ADDR` (or `peer NAME=KEY@ADDR`), `stats`, `battery PERCENT`, `drain [on|off]` (with
//! `--zenoh`), `help`, `quit`.
//!
//! Test hook: `MIELIN_HALT_AT=ROLE:PHASE` (e.g. `source:decided`, `target:received`) makes the
//! node log `halt ROLE:PHASE` and freeze at that phase of its first hand-off, for a test to kill
//! it with SIGKILL.

use crate::config::{NodeArgs, Settings};
use crate::control_server::{self, Command};
use crate::files::{private_dir, read_bounded, read_module, write_atomic};
use crate::fleet::FleetLink;
use crate::metrics::{self, Gauges, Metrics};
use crate::names::{operator_id, Names};
use crate::report::{handoff_summary, log_event};
use mielin::control::{Reply, Request};
use mielin::spec::{parse_peer, show_message};
use mielin_cells::fleet::{FleetEvent, FleetView};
use mielin_cells::mesh::fleet::{Location, Status as FleetStatus, CAN_REWIND, DRAINING};
use mielin_cells::mesh::planner::{Candidate, Hold, Planner, PlannerConfig, Reason};
use mielin_cells::mesh::{
    AgentHost, Config, Delivery, InboxLimits, Journal, MeshError, Notice, Phase, SharedJournal,
};
use mielin_cells::quic::{
    to_hex, wire, Directory, Driver, DriverConfig, Event, Identity, NodeJournal, Peer, PublicKey,
    Role, Wake, WasmHost,
};
use mielin_cells::{AgentId, Arch, NodeId, NodeStatus, Policy, PolicyViolation};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Agents (journal records and protocol timers) a node holds.
const CAPACITY: usize = 64;
/// Fuel per agent call.
const FUEL: u64 = 10_000_000;

/// A journal that counts the writes it made durable (for the metrics).
pub struct Counted<J> {
    inner: J,
    syncs: Arc<AtomicU64>,
}

impl<J: Journal> Journal for Counted<J> {
    fn get(&self, agent: AgentId) -> Option<mielin_cells::mesh::Record> {
        self.inner.get(agent)
    }
    fn put(&mut self, agent: AgentId, record: mielin_cells::mesh::Record) -> Result<(), MeshError> {
        let r = self.inner.put(agent, record);
        self.count(&r);
        r
    }
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
        let r = self.inner.remove(agent);
        self.count(&r);
        r
    }
    fn for_each(&self, f: &mut dyn FnMut(AgentId, mielin_cells::mesh::Record)) {
        self.inner.for_each(f)
    }
    fn sequence(&self, agent: AgentId) -> Option<u64> {
        self.inner.sequence(agent)
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        let r = self.inner.set_sequence(agent, seq);
        self.count(&r);
        r
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
    fn set_generation(&mut self, generation: u64) -> Result<(), MeshError> {
        let r = self.inner.set_generation(generation);
        self.count(&r);
        r
    }
    fn sync(&mut self) -> Result<(), MeshError> {
        let pending = self.inner.unsynced();
        let r = self.inner.sync();
        if pending && r.is_ok() {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    fn unsynced(&self) -> bool {
        self.inner.unsynced()
    }
}

impl<J: Journal> Counted<J> {
    /// A write counts when it was made durable as it returned (a journal that defers counts
    /// its syncs instead).
    fn count(&self, r: &Result<(), MeshError>) {
        if r.is_ok() && !self.inner.unsynced() {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Drv = Driver<Counted<SharedJournal<NodeJournal>>, CAPACITY>;

/// A `mielin migrate` waiting for its hand-off to end.
struct Waiter {
    agent: AgentId,
    epoch: u64,
    /// The target: only its hand-off report answers (another peer's frames for the same agent
    /// and epoch, forged or late, report on their own).
    target: NodeId,
    reply: mpsc::Sender<Reply>,
}

struct State {
    name: String,
    data: PathBuf,
    listen: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    key: PublicKey,
    driver: Drv,
    host: WasmHost,
    names: Names,
    metrics: Arc<Metrics>,
    peers: BTreeMap<NodeId, SocketAddr>,
    connected: BTreeSet<NodeId>,
    waiting: Vec<Waiter>,
    /// Per agent: replies to the operator, and the last one.
    replies: BTreeMap<AgentId, (u64, Vec<u8>)>,
    battery: f64,
    /// The battery last set (at start, or by the console's `battery`) and when: it drains
    /// from there.
    battery_set: (f64, Instant),
    started: Instant,
    /// The fleet on Zenoh (`--zenoh`), and the placement on its statuses: the planner and, per
    /// agent, the kind of the last reason it stayed (logged once).
    fleet: Option<FleetLink>,
    /// The console's `drain`: agents leave, the status says so, and placement sends none here.
    draining: bool,
    planner: Planner<CAPACITY>,
    holds: BTreeMap<AgentId, &'static str>,
}

impl State {
    /// The fleet's view, once the node joined its fleet (`--zenoh`).
    fn fleet_view(&self) -> Option<&FleetView> {
        self.fleet.as_ref().and_then(FleetLink::view)
    }
}

/// Runs a node until SIGTERM, Ctrl-C or `quit`.
pub fn run(args: NodeArgs) -> Result<(), String> {
    let settings = Settings::from_args(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(node(settings))
}

fn in_flight(driver: &Drv) -> usize {
    let mut n = 0;
    driver.node().journal().for_each(&mut |_, r| {
        if matches!(
            r.phase,
            Phase::Outgoing { .. } | Phase::Prepared { .. } | Phase::Moved { acked: false, .. }
        ) {
            n += 1;
        }
    });
    n
}

async fn node(mut s: Settings) -> Result<(), String> {
    let args = std::mem::take(&mut s.args);
    let identity = Identity::load_or_create(&s.key).map_err(|e| {
        format!(
            "key file {}: {e} (a key file holds 64 hex digits; `mielin keygen FILE` writes one)",
            s.key.display()
        )
    })?;
    let (name, listen) = s.resolve_self(&identity.public_key().to_hex())?;
    if let Some(old) = private_dir(&s.data)? {
        tracing::warn!(
            "data directory {} had mode {old:o}; now 0700 (it holds the journal and the control socket)",
            s.data.display()
        );
    }
    let mut names = Names::load(s.data.join("names"));
    names.nodes.insert(identity.node_id(), name.clone());
    let mut directory = Directory::new();
    let mut peers = BTreeMap::new();
    for p in &s.peers {
        let key = PublicKey::from_hex(&p.key)
            .ok_or_else(|| format!("peer {}: not a public key", p.name))?;
        let id = directory.insert(key, p.addr);
        names.nodes.insert(id, p.name.clone());
        peers.insert(id, p.addr);
    }
    // A new node (an empty data directory) creates its journal; any other must find it,
    // sealed with its key: a node that lost it would forget where its agents went and accept
    // replays. The host opens it and shares it with its trust list: one table of epochs.
    let mut host = WasmHost::open(&identity, &directory, &s.data, FUEL).map_err(|e| {
        format!(
            "data directory {}: {e} (`mielin inspect {} --key KEYFILE` shows what is there)",
            s.data.display(),
            s.data.display()
        )
    })?;
    host.set_inbox_limits(InboxLimits {
        mailbox: usize::from(s.window),
        outbox: usize::from(s.window),
        ..InboxLimits::default()
    });
    // Agents captured in the middle of a call: continued here unless told otherwise (and the
    // status says which, so that peers offer such agents only where they continue).
    host.mid_call = !s.between_calls_only;
    let journal_path = s.data.join("journal");
    let metrics = Arc::new(Metrics::default());
    let journal = Counted {
        inner: host.journal(),
        syncs: metrics.journal_syncs.clone(),
    };
    let mut cfg = DriverConfig::new(listen);
    cfg.mesh = Config {
        rto_ms: s.rto_ms,
        strict_rollback: s.strict_rollback,
        window: s.window,
        ..Config::default()
    };
    cfg.tick = Duration::from_millis(s.tick_ms.max(1));
    let control = control_server::bind(&s.data)?;
    let driver: Drv = Driver::new(&identity, directory, journal, cfg, &mut host).map_err(|e| {
        format!("listening on {listen}: {e} (is another node using it? pick another with --listen)")
    })?;
    let addr = driver.local_addr().map_err(|e| e.to_string())?;
    let metrics_addr = match s.metrics {
        Some(a) => {
            let l = metrics::bind(a).await?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            if !bound.ip().is_loopback() {
                tracing::warn!("metrics served on {bound}, not a loopback address: anyone who reaches it reads them");
            }
            tokio::spawn(metrics::serve(l, metrics.clone()));
            Some(bound)
        }
        None => None,
    };
    tracing::info!(
        "listening {addr} name {name} id {} key {}",
        to_hex(identity.node_id().as_bytes()),
        identity.public_key()
    );
    tracing::info!(
        "control socket {} (mielin status -d {})",
        control_server::socket_path(&s.data).display(),
        s.data.display()
    );
    if let Some(m) = metrics_addr {
        tracing::info!("metrics on http://{m}/metrics");
    }
    let mut st = State {
        name,
        data: s.data.clone(),
        listen: addr,
        metrics_addr,
        key: identity.public_key(),
        driver,
        host,
        names,
        metrics,
        peers,
        connected: BTreeSet::new(),
        waiting: Vec::new(),
        replies: BTreeMap::new(),
        battery: f64::from(args.battery),
        battery_set: (f64::from(args.battery), Instant::now()),
        started: Instant::now(),
        fleet: None,
        draining: false,
        planner: Planner::new(PlannerConfig::default()),
        holds: BTreeMap::new(),
    };
    if let Some(z) = &s.zenoh {
        let members = s
            .peers
            .iter()
            .filter_map(|p| PublicKey::from_hex(&p.key))
            .collect();
        let link = crate::fleet::start(identity.clone(), z, members)?;
        // The node's lookups of an addressee ask the fleet's location records first (a hint:
        // the same answer is used at every other lookup, the peers probed in between).
        let view = link.view_cell();
        st.host.set_locator(Some(Box::new(move |agent| {
            view.get()
                .and_then(|v| v.locate(agent))
                .map(|(node, _)| node)
        })));
        st.fleet = Some(link);
    }
    for a in st.host.running() {
        tracing::info!("running {} (restarted from the journal)", st.names.agent(a));
    }
    for (name, file) in &s.agents {
        let id = st.names.agent_named(name)?;
        if st.driver.node().journal().get(id).is_some() {
            continue; // known from the journal (a restart)
        }
        let wasm = read_module(file)?;
        st.host
            .create(id, wasm, s.limit)
            .map_err(|e| format!("agent {name} ({}): {e}", file.display()))?;
        st.driver
            .start(&mut st.host, id)
            .map_err(|e| format!("agent {name}: {e}"))?;
        tracing::info!("running {name}");
    }
    for spec in &args.at {
        let (agent, peer) = spec
            .split_once('=')
            .ok_or_else(|| format!("--at `{spec}`: expected AGENT=PEER"))?;
        let a = st.names.agent_named(agent)?;
        let n = st
            .names
            .node_named(peer)
            .ok_or_else(|| format!("--at `{spec}`: no peer named {peer}"))?;
        st.driver.node_mut().set_location(a, n, 0);
    }
    if let Some(k) = &args.kick {
        kick_once(&mut st, k)?;
    }
    let mut scheduled = Vec::new();
    for m in &args.migrations {
        let bad = || format!("--migrate `{m}`: expected AGENT=PEER:MS");
        let (agent, rest) = m.split_once('=').ok_or_else(bad)?;
        let (peer, ms) = rest.split_once(':').ok_or_else(bad)?;
        let ms: u64 = ms.parse().map_err(|_| bad())?;
        scheduled.push((
            Instant::now() + Duration::from_millis(ms),
            st.names.agent_named(agent)?,
            peer.to_string(),
        ));
    }

    // Standard input, line by line, from a thread (with --console).
    let (tx, mut lines) = mpsc::unbounded_channel::<String>();
    let mut stdin_open = args.console;
    let read_stdin = args.console;
    std::thread::spawn(move || {
        if !read_stdin {
            return;
        }
        for l in std::io::stdin().lock().lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Command>(16);
    tokio::spawn(control_server::serve(control, ctl_tx, st.metrics.clone()));
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;

    // Battery placement: whether the battery is below the policy's minimum (logged once per
    // drop), when agents are placed next (every PLACEMENT_EVERY while it is), and the agents
    // said to stay during this drop (logged once each).
    let mut below = false;
    let mut next_placement = Instant::now();
    let mut stayed: BTreeSet<AgentId> = BTreeSet::new();
    let mut last_announce = Instant::now() - Duration::from_secs(1);
    let mut last_stats = Instant::now();
    let policy = Policy {
        min_battery_percent: args.min_battery,
        ..Policy::default()
    };
    let stop = loop {
        let mut events = Vec::new();
        let mut command = None;
        tokio::select! {
            w = st.driver.wait() => {
                let tick = matches!(w, Wake::Tick);
                // The agents run in the turn that brought their messages: one group commit
                // covers the deliveries and what the agents did with them. Only when frames
                // came in (a tick runs every agent); the periodic tick runs them too.
                let inbound = matches!(w, Wake::Inbound(_));
                events = st.driver.handle_with(&mut st.host, w, |host| {
                    inbound && host.tick("tick", &[]) > 0
                });
                if tick {
                    on_tick(&mut st);
                    // (It used to drain from the start's value on every tick, which undid the
                    // console's `battery` within a tick.)
                    st.battery = (st.battery_set.0 - args.drain * st.battery_set.1.elapsed().as_secs_f64()).max(0.0);
                    if last_announce.elapsed() >= Duration::from_millis(500) {
                        last_announce = Instant::now();
                        let caps = if st.host.mid_call { wire::CAN_REWIND } else { 0 };
                        st.driver.announce(&NodeStatus {
                            battery_percent: st.battery as u8,
                            latency_ms: 1,
                            arch: Arch::X86_64,
                        }, caps);
                        if let Some(f) = &st.fleet {
                            f.publish(FleetStatus {
                                arch: Arch::X86_64,
                                battery_percent: st.battery as u8,
                                load_percent: 0,
                                free_memory_kib: 0,
                                agents: st.host.running().len() as u32,
                                capabilities: if st.host.mid_call { CAN_REWIND } else { 0 }
                                    | if st.draining { DRAINING } else { 0 },
                            });
                            // Where its agents run, at their epochs (the thread publishes what
                            // changed; a list it could not take goes again in half a second).
                            let journal = st.driver.node().journal();
                            let running = st.host.running().into_iter().filter_map(|agent| {
                                journal.get(agent).map(|r| Location { agent, epoch: r.epoch })
                            });
                            f.publish_locations(running.collect());
                        }
                    }
                    if args.stats_ms > 0 && last_stats.elapsed() >= Duration::from_millis(args.stats_ms) {
                        last_stats = Instant::now();
                        command = Some("stats".to_string());
                    }
                }
            }
            l = lines.recv(), if stdin_open => match l {
                Some(l) => command = Some(l),
                None => stdin_open = false,
            },
            c = ctl_rx.recv() => if let Some(c) = c {
                handle_request(&mut st, c);
            },
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "Ctrl-C",
        }
        for e in events {
            on_event(&mut st, &e);
        }
        if let Some(f) = &st.fleet {
            let me = st.key.node_id();
            for e in f.events() {
                match e {
                    FleetEvent::Joined(n) if n != me => {
                        tracing::info!("fleet: {} joined", st.names.node(n))
                    }
                    FleetEvent::Left(n) if n != me => {
                        tracing::info!("fleet: {} left", st.names.node(n))
                    }
                    _ => {}
                }
            }
        }
        for e in st.host.take_errors() {
            tracing::error!("host-error {e}");
        }
        if st.host.journal().lock().is_poisoned() {
            // After a failed write or sync nobody knows what reached the disk: the journal
            // refuses every later write, and only a restart (which reopens it and reads what is
            // there) can go on. Exit non-zero for the supervisor to restart the node.
            return Err(format!(
                "journal {}: a write or sync failed; it refuses further writes. Restart the node: it reopens the journal and resumes from what reached the disk",
                journal_path.display()
            ));
        }
        if st.host.is_poisoned() {
            // The same for the agents' files: a change could not be made durable, and the
            // host lets nothing leave that depends on it.
            return Err(format!(
                "{}: an agent's change could not be made durable (a failed save or sync of its files); the host sends nothing more. Restart the node: it resumes each agent from what reached the disk",
                st.data.join("agents").display()
            ));
        }
        let now = Instant::now();
        let due: Vec<_> = scheduled.iter().filter(|m| m.0 <= now).cloned().collect();
        scheduled.retain(|m| m.0 > now);
        for (_, agent, peer) in due {
            let _ = migrate(&mut st, agent, &peer, None);
        }
        if st.fleet_view().is_some() {
            // On the fleet's live statuses, every half second (until the join is done, on the
            // QUIC peers' statuses, below).
            if Instant::now() >= next_placement {
                next_placement = Instant::now() + FLEET_PLACEMENT_EVERY;
                fleet_placement(&mut st, &policy);
            }
        } else if st.battery >= f64::from(args.min_battery) {
            below = false;
            stayed.clear();
        } else if !below || Instant::now() >= next_placement {
            if !below {
                below = true;
                tracing::info!(
                    "battery {:.0}% below the policy's {}%",
                    st.battery,
                    args.min_battery
                );
            }
            // Again while the battery stays low: an agent that found no peer, whose hand-off
            // was refused, or that arrived since, is placed once a peer fits.
            next_placement = Instant::now() + PLACEMENT_EVERY;
            for a in st.host.running() {
                // An agent in the middle of a call goes only to a peer that continues it.
                let mid_call = st.host.waits_in_call(a);
                match st.driver.select_for(&policy, mid_call) {
                    Some(target) => {
                        let name = st.names.node(target);
                        let _ = migrate(&mut st, a, &name, None);
                    }
                    None if !stayed.insert(a) => {}
                    None if mid_call => tracing::info!(
                        "no live peer fits the policy and continues a call in the middle; {} stays",
                        st.names.agent(a)
                    ),
                    None => {
                        tracing::info!("no live peer fits the policy; {} stays", st.names.agent(a))
                    }
                }
            }
        }
        if let Some(c) = command {
            if !console(&mut st, &c) {
                break "quit";
            }
        }
    };
    shutdown(st, stop, Duration::from_secs(args.grace)).await;
    Ok(())
}

/// `--kick FROM:TO`, once per data directory: `DATA/kicked` remembers it.
fn kick_once(st: &mut State, spec: &str) -> Result<(), String> {
    let (from, to) = spec
        .split_once(':')
        .ok_or_else(|| format!("--kick `{spec}`: expected FROM:TO"))?;
    let marker = st.data.join("kicked");
    if let Ok(done) = read_bounded(&marker, 1024) {
        tracing::info!(
            "kick {spec}: already sent by an earlier start ({} says `{}`); not repeated",
            marker.display(),
            String::from_utf8_lossy(&done).trim()
        );
        return Ok(());
    }
    let (f, t) = (st.names.agent_named(from)?, st.names.agent_named(to)?);
    if !st.host.send_as(f, t, &0i32.to_le_bytes()) {
        return Err(format!(
            "--kick {spec}: {from} does not run here (or its outbox is full)"
        ));
    }
    // The agent (with the message in its outbox) is saved; then the marker.
    write_atomic(&marker, format!("{spec}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", marker.display()))?;
    let now = st.driver.now_ms();
    st.driver.node_mut().wake_messages(now);
    tracing::info!("kick {spec}: {from} sent 0 to {to}");
    Ok(())
}

fn running_here(st: &State) -> String {
    st.host
        .running()
        .into_iter()
        .map(|a| st.names.agent(a))
        .collect::<Vec<_>>()
        .join(",")
}

/// After each tick: agents ran; messages to the operator are taken out of their outboxes, and
/// the gauges are refreshed.
fn on_tick(st: &mut State) {
    // A `mielin migrate` that gave up waiting.
    st.waiting.retain(|w| !w.reply.is_closed());
    if st.host.tick("tick", &[]) > 0 {
        let now = st.driver.now_ms();
        st.driver.node_mut().wake_messages(now);
    }
    let op = operator_id();
    // What the operator is about to see (a reply) must survive a crash like what a peer
    // sees: the events behind it are made durable first.
    if let Err(e) = AgentHost::flush(&mut st.host) {
        // Shown only once durable: the node stops at the end of this turn (poisoned host).
        tracing::error!("host-error the agents' events could not be made durable: {e}");
        return;
    }
    for a in st.host.running() {
        let mut got = Vec::new();
        st.host.outgoing(a, &mut |m| {
            if m.to == op {
                got.push((m.seq, m.payload.to_vec()));
            }
        });
        for (seq, m) in got {
            st.host.acked(a, op, seq);
            tracing::info!(
                "reply {} -> operator: {}",
                st.names.agent(a),
                show_message(&m)
            );
            st.metrics.operator_reply();
            let e = st.replies.entry(a).or_default();
            e.0 += 1;
            e.1 = m;
        }
    }
    while let Some(n) = st.driver.node_mut().poll_notice() {
        log_notice(&st.names, n);
    }
    let d = st.driver.stats();
    let n = st.driver.node().stats();
    st.metrics.set_gauges(Gauges {
        agents_running: st.host.running().len() as u64,
        peers_connected: st.connected.len() as u64,
        frames_sent: d.frames_sent,
        frames_received: d.frames_received,
        frames_dropped: d.frames_dropped,
        messages_accepted: n.messages_accepted,
        messages_full: n.messages_full,
        retransmits: n.retransmits,
        messages_undelivered: n.undelivered,
        rollback_refused: n.rolled_back,
        rollback_unchecked: n.rollback_unchecked,
        journal_rollbacks: n.journal_rollbacks,
    });
}

/// What the node reports that an operator must see.
fn log_notice(names: &Names, n: Notice) {
    match n {
        Notice::Undelivered(m) => tracing::warn!(
            "message {} -> {} #{} not delivered after {} ms (last sent to {}); still trying",
            names.agent(m.sender),
            names.agent(m.to),
            m.seq,
            m.waited_ms,
            m.sent_to
                .map_or_else(|| "no node: none known".to_string(), |n| names.node(n)),
        ),
        Notice::RolledBack {
            agent,
            epoch,
            seen,
            by,
        } => tracing::error!(
            "rollback: {} is at epoch {epoch} in this node's journal but {} has seen epoch {seen}; the journal is an older copy, the agent is not run here",
            names.agent(agent),
            names.node(by)
        ),
        Notice::Unchecked {
            agent,
            epoch,
            answered,
            asked,
        } => tracing::warn!(
            "rollback not checked: {} runs at epoch {epoch} with {answered} of {asked} peers answering (--strict-rollback waits for all)",
            names.agent(agent)
        ),
        Notice::JournalRolledBack {
            generation,
            seen,
            by,
        } => tracing::error!(
            "rollback: this restart is generation {generation} but {} saw generation {seen}: the journal is an older copy",
            names.node(by)
        ),
        _ => tracing::warn!("{n:?}"),
    }
}

fn on_event(st: &mut State, e: &Event) {
    let running = running_here(st);
    log_event(&st.names, e, &running);
    match e {
        Event::Connected { peer, .. } => {
            st.connected.insert(*peer);
        }
        Event::Disconnected { peer, .. } => {
            st.connected.remove(peer);
        }
        Event::Refused { .. } => st.metrics.refusal("unpinned"),
        Event::StreamRefused { .. } => st.metrics.refusal("stream"),
        Event::Malformed { .. } => st.metrics.refusal("malformed"),
        Event::Phase {
            role: Role::Source,
            phase: "refused",
            ..
        } => st.metrics.refusal("offer"),
        Event::HandOff(r) => {
            let role = if r.role == Role::Source {
                "source"
            } else {
                "target"
            };
            st.metrics
                .handoff(role, r.committed, r.bytes as u64, r.total, r.transfer);
            if r.committed && r.role == Role::Target {
                // It moves on no sooner than the planner's interval after it arrived.
                let now_ms = st.started.elapsed().as_millis() as u64;
                st.planner.arrived(r.agent, now_ms);
            }
            if r.role == Role::Source {
                let line = handoff_summary(&st.names, r, &running);
                let (agent, to) = (st.names.agent(r.agent), st.names.node(r.peer));
                st.waiting.retain(|w| {
                    if w.agent != r.agent || w.epoch != r.epoch || w.target != r.peer {
                        return true;
                    }
                    let reply = if r.committed {
                        Reply::Ok(line.clone())
                    } else {
                        Reply::Err(format!(
                            "{line}\nthe hand-off was aborted and {agent} runs here again: check that {to} is up and pins this node's key (`mielin status` on {to}), then try again"
                        ))
                    };
                    let _ = w.reply.try_send(reply);
                    false
                });
            }
        }
        Event::Progress {
            agent,
            epoch,
            sent,
            total,
            ..
        } => {
            for w in st
                .waiting
                .iter()
                .filter(|w| w.agent == *agent && w.epoch == *epoch)
            {
                let _ = w.reply.try_send(Reply::Progress {
                    sent: *sent,
                    total: *total,
                });
            }
        }
        _ => {}
    }
    halt_if_asked(e);
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
        tracing::info!("halt {h}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Starts a hand-off of `agent` to the peer called `peer`; its end is answered on `reply`.
fn migrate(
    st: &mut State,
    agent: AgentId,
    peer: &str,
    reply: Option<mpsc::Sender<Reply>>,
) -> Result<(), String> {
    let name = st.names.agent(agent);
    let Some(target) = st
        .names
        .node_named(peer)
        .filter(|t| st.peers.contains_key(t))
    else {
        let known: Vec<String> = st.peers.keys().map(|p| st.names.node(*p)).collect();
        let e = format!(
            "migrate {name}: no peer named {peer} (pinned peers: {}); pin it in the fleet file or with `peer NAME KEY@ADDR`",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        );
        tracing::warn!("{e}");
        return Err(e);
    };
    if st.host.waits_in_call(agent) && st.driver.peer_can_rewind(target) == Some(false) {
        let e = format!(
            "migrate {name}: {peer} takes no agent in the middle of a call (its status says so), and {name} waits in the middle of a call; pick a node that continues it"
        );
        tracing::warn!("{e}");
        return Err(e);
    }
    let bytes = st.host.memory_len(agent).unwrap_or(0);
    match st.driver.migrate(&mut st.host, agent, target) {
        Ok((epoch, events)) => {
            tracing::info!("migrate {name} -> {peer} epoch {epoch} (memory {bytes} bytes)");
            if let Some(reply) = reply {
                st.waiting.push(Waiter {
                    agent,
                    epoch,
                    target,
                    reply,
                });
            }
            for e in events {
                on_event(st, &e);
            }
            Ok(())
        }
        Err(e) => {
            let why = match e {
                MeshError::NotOwner => format!(
                    "{name} does not run here ({}): `mielin agents` on each node shows where it is",
                    describe(st, agent)
                ),
                e => format!("{e}"),
            };
            let e = format!("migrate {name}: {why}");
            tracing::warn!("{e}");
            Err(e)
        }
    }
}

/// While the battery is below the policy's minimum, how often the agents still here are placed.
const PLACEMENT_EVERY: Duration = Duration::from_secs(2);
/// How often agents are placed on the fleet's statuses (which arrive every half second).
const FLEET_PLACEMENT_EVERY: Duration = Duration::from_millis(500);
/// A member's status older than this is not used for placement (they come every 0.5 s).
const STATUS_STALE: Duration = Duration::from_secs(2);

/// Placement on the fleet's live statuses (with `--zenoh`): an agent whose node no longer
/// satisfies the policy leaves for the live member the planner picks (past the policy's battery
/// minimum by its margin, at most once per 10 s per agent, 4 a second); every move is logged with
/// its reason, and each reason to stay once.
fn fleet_placement(st: &mut State, policy: &Policy) {
    let Some(view) = st.fleet_view().cloned() else {
        return; // not joined yet
    };
    let me = st.key.node_id();
    let now_ms = st.started.elapsed().as_millis() as u64;
    let here = Candidate {
        node: me,
        status: NodeStatus {
            battery_percent: st.battery as u8,
            latency_ms: 1,
            arch: Arch::X86_64,
        },
        draining: st.draining,
    };
    // Live members this node can reach (pinned), with their statuses.
    let members: Vec<(Candidate, u16)> = view
        .alive()
        .into_iter()
        .filter(|n| *n != me && st.peers.contains_key(n))
        .filter_map(|n| {
            // A status that stopped coming (its node's loop is held up, or it is stopping) is
            // not live: statuses come every 0.5 s.
            let s = view.status_age(n).filter(|(_, age)| *age < STATUS_STALE)?.0;
            let status = NodeStatus {
                battery_percent: s.battery_percent,
                latency_ms: 1,
                arch: s.arch,
            };
            Some((
                Candidate {
                    node: n,
                    status,
                    draining: s.capabilities & DRAINING != 0,
                },
                s.capabilities,
            ))
        })
        .collect();
    let running = st.host.running();
    st.holds.retain(|a, _| running.contains(a));
    for a in running {
        // An agent in the middle of a call goes only to a member that continues it.
        let mid_call = st.host.waits_in_call(a);
        let others: Vec<Candidate> = members
            .iter()
            .filter(|(_, caps)| !mid_call || caps & CAN_REWIND != 0)
            .map(|(c, _)| *c)
            .collect();
        let agent = st.names.agent(a);
        match st.planner.decide(now_ms, a, policy, &here, &others) {
            Ok(m) => {
                st.holds.remove(&a);
                let to = st.names.node(m.to);
                tracing::info!(
                    "placement: {agent} leaves for {to}: {}",
                    reason_text(&m.reason)
                );
                let _ = migrate(st, a, &to, None);
            }
            Err(Hold::Satisfied) => {
                st.holds.remove(&a);
            }
            Err(h) => {
                // Logged once per kind of reason (the battery in it changes every second).
                let kind = match h {
                    Hold::TooSoon { .. } => "too soon",
                    Hold::RateLimited { .. } => "rate limited",
                    Hold::NoTarget { .. } => "no target",
                    Hold::Satisfied => "satisfied",
                };
                let why = match h {
                    Hold::TooSoon { reason, .. } => {
                        format!("{}, but it moved less than 10 s ago", reason_text(&reason))
                    }
                    Hold::RateLimited { reason } => {
                        format!(
                            "{}; it waits its turn (4 moves a second)",
                            reason_text(&reason)
                        )
                    }
                    Hold::NoTarget { reason } => format!(
                        "{}, and no live member clears its policy by 10 points{}",
                        reason_text(&reason),
                        if mid_call {
                            " and continues a call in the middle"
                        } else {
                            ""
                        }
                    ),
                    Hold::Satisfied => unreachable!("handled above"),
                };
                if st.holds.get(&a) != Some(&kind) {
                    tracing::info!("placement: {agent} stays: {why}");
                    st.holds.insert(a, kind);
                }
            }
        }
    }
}

fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Policy(PolicyViolation::BatteryTooLow { required, found }) => {
            format!("battery {found}% below its minimum {required}%")
        }
        Reason::Policy(v) => v.to_string(),
        Reason::Draining => "this node drains".into(),
    }
}

/// Where the journal says an agent is.
fn describe(st: &State, agent: AgentId) -> String {
    let Some(r) = st.driver.node().journal().get(agent) else {
        return match st.fleet_view().and_then(|v| v.locate(agent)) {
            Some((node, epoch)) => format!(
                "not known here; the fleet's records place it on {} at epoch {epoch}",
                st.names.node(node)
            ),
            None => "not known here".into(),
        };
    };
    let n = |id: NodeId| st.names.node(id);
    match r.phase {
        Phase::Running if st.host.is_running(agent) => "running here".into(),
        Phase::Running => "owned here, not loaded (see the log's host-error lines)".into(),
        Phase::Outgoing { target } => format!("being handed to {}", n(target)),
        Phase::Prepared { source } => {
            format!("prepared here, waiting for {}'s decision", n(source))
        }
        Phase::Moved {
            target,
            acked: true,
        } => format!("moved to {}", n(target)),
        Phase::Moved { target, .. } => {
            format!("moved to {} (not yet confirmed)", n(target))
        }
        _ => "in an unknown phase".into(),
    }
}

fn agents_text(st: &mut State) -> String {
    let mut ids = Vec::new();
    st.driver
        .node()
        .journal()
        .for_each(&mut |a, r| ids.push((a, r.epoch)));
    if ids.is_empty() {
        return "no agents (deploy one: mielin deploy FILE.wasm -d DATA)\n".into();
    }
    ids.sort_by_key(|(a, _)| st.names.agent(*a));
    let mut out = String::new();
    for (a, epoch) in ids {
        let mut line = format!(
            "{:<12} {}  epoch {epoch}  {}",
            st.names.agent(a),
            to_hex(a.as_bytes()),
            describe(st, a)
        );
        if let Some(s) = st.host.stats(a) {
            line += &format!(
                "  received {} last {} out-of-order {}",
                s.received, s.last, s.out_of_order
            );
        }
        if let Some((n, last)) = st.replies.get(&a) {
            line += &format!("  replies {n} (last {})", show_message(last));
        }
        out += &line;
        out.push('\n');
    }
    out
}

fn status_text(st: &mut State) -> String {
    let mut o = format!(
        "node {}  id {}  key {}\nlistening {} (QUIC)  up {} s  data {}\n",
        st.name,
        to_hex(st.driver.id().as_bytes()),
        st.key,
        st.listen,
        st.started.elapsed().as_secs(),
        st.data.display()
    );
    match st.metrics_addr {
        Some(m) => o += &format!("metrics http://{m}/metrics\n"),
        None => o += "metrics off\n",
    }
    o += "peers\n";
    if st.peers.is_empty() {
        o += "  none pinned (add them to a fleet file: mielin keygen --fleet)\n";
    }
    let statuses: BTreeMap<NodeId, NodeStatus> = st.driver.live_peers().into_iter().collect();
    for (id, addr) in &st.peers {
        // What its last fresh status said: placement's input.
        let status = match (statuses.get(id), st.driver.peer_can_rewind(*id)) {
            (Some(s), Some(rewind)) => format!(
                "  battery {}%  mid-call {}",
                s.battery_percent,
                if rewind { "yes" } else { "no" }
            ),
            _ => String::new(),
        };
        o += &format!(
            "  {:<12} {addr}  {:<13}{status}\n",
            st.names.node(*id),
            if st.connected.contains(id) {
                "connected"
            } else {
                "not connected"
            }
        );
    }
    o += "agents\n";
    for l in agents_text(st).lines() {
        o += &format!("  {l}\n");
    }
    let s = st.driver.node().stats();
    o += &format!(
        "hand-offs committed {} aborted {} adopted {} retransmits {}\n",
        s.committed, s.aborted, s.adopted, s.retransmits
    );
    // How the node found addressees it knew no node for.
    o += &format!(
        "lookups {}, {} answered by the fleet's location records\n",
        s.lookups,
        st.host.hinted_lookups()
    );
    o
}

fn handle_request(st: &mut State, c: Command) {
    let answer = |r: Reply| {
        let _ = c.reply.try_send(r);
    };
    match c.request {
        Request::Status => answer(Reply::Ok(status_text(st))),
        Request::Agents => answer(Reply::Ok(agents_text(st))),
        Request::Deploy { name, module, arg } => {
            let r = (|| {
                let id = st.names.agent_named(&name)?;
                if st.driver.node().journal().get(id).is_some() {
                    return Err(format!(
                        "an agent named {name} is already known here ({}): deploy it under another --name",
                        describe(st, id)
                    ));
                }
                st.host
                    .create(id, module, arg)
                    .map_err(|e| format!("{name}: {e}"))?;
                st.driver
                    .start(&mut st.host, id)
                    .map_err(|e| format!("{name}: {e}"))?;
                tracing::info!("running {name} (deployed)");
                Ok(format!(
                    "deployed {name} (id {}) on {}, epoch 0",
                    to_hex(id.as_bytes()),
                    st.name
                ))
            })();
            answer(r.map_or_else(Reply::Err, Reply::Ok));
        }
        Request::Send { agent, message } => {
            let r = (|| {
                let id = st.names.agent_named(&agent)?;
                if !st.host.is_running(id) {
                    return Err(format!(
                        "{agent} does not run on {} ({}): send to the node it runs on (its data directory: -d DIR)",
                        st.name,
                        describe(st, id)
                    ));
                }
                match st.host.post(id, operator_id(), &message) {
                    Delivery::Accepted => {
                        st.metrics.operator_message();
                        tracing::info!("message operator -> {agent}: {}", show_message(&message));
                        Ok(format!(
                            "{agent} on {} accepted {}",
                            st.name,
                            show_message(&message)
                        ))
                    }
                    Delivery::Full => Err(format!(
                        "{agent}'s mailbox is full: try again once it has run"
                    )),
                    d => Err(format!("{agent} refused the message ({d:?})")),
                }
            })();
            answer(r.map_or_else(Reply::Err, Reply::Ok));
        }
        Request::Migrate { agent, to } => {
            let r = st
                .names
                .agent_named(&agent)
                .and_then(|id| migrate(st, id, &to, Some(c.reply.clone())));
            if let Err(e) = r {
                answer(Reply::Err(e));
            }
        }
    }
}

/// A console line; `false` to stop.
fn console(st: &mut State, line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let say = |s: String| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    match words[..] {
        ["quit"] => return false,
        ["migrate", agent, peer] => {
            if let Ok(a) = st.names.agent_named(agent) {
                let _ = migrate(st, a, peer, None);
            }
        }
        ["kick", from, to] => match (st.names.agent_named(from), st.names.agent_named(to)) {
            (Ok(f), Ok(t)) if st.host.send_as(f, t, &0i32.to_le_bytes()) => {
                let now = st.driver.now_ms();
                st.driver.node_mut().wake_messages(now);
            }
            _ => say(format!("kick: {from} does not run here")),
        },
        ["at", agent, peer] => match (st.names.agent_named(agent), st.names.node_named(peer)) {
            (Ok(a), Some(n)) => st.driver.node_mut().set_location(a, n, 0),
            _ => say(format!("at: unknown peer {peer}")),
        },
        ["peer", ..] => match parse_peer(line.trim_start().trim_start_matches("peer")) {
            Ok(p) => match PublicKey::from_hex(&p.key) {
                Some(key) => {
                    if let Some(f) = &st.fleet {
                        f.add_member(key);
                    }
                    let id = st.driver.add_peer(key, p.addr);
                    if let Err(e) = st.host.trust_peer(&Peer { addr: p.addr, key }) {
                        tracing::warn!("peer {}: {e}", p.name);
                    }
                    st.names.nodes.insert(id, p.name.clone());
                    st.peers.insert(id, p.addr);
                    tracing::info!("pinned {} {}", p.name, p.addr);
                }
                None => say(format!("peer {}: not a public key", p.name)),
            },
            Err(e) => say(e),
        },
        ["battery", p] => {
            if let Ok(p) = p.parse::<f64>() {
                st.battery = p;
                st.battery_set = (p, Instant::now());
            }
        }
        ["drain"] | ["drain", "on" | "off"] => {
            if st.fleet_view().is_none() {
                say("drain: only in a fleet (--zenoh), once it joined".into());
                return true;
            }
            st.draining = line.split_whitespace().nth(1) != Some("off");
            if st.draining {
                tracing::info!("draining: agents leave for live members; none is sent here");
            } else {
                tracing::info!("draining off");
            }
        }
        ["stats"] => {
            for a in st.host.running() {
                let epoch = st.driver.node().journal().get(a).map_or(0, |r| r.epoch);
                match st.host.stats(a) {
                    Some(s) => say(format!(
                        "stats {} epoch {epoch} received {} last {} out_of_order {}",
                        st.names.agent(a),
                        s.received,
                        s.last,
                        s.out_of_order
                    )),
                    None => say(format!("stats {} epoch {epoch}", st.names.agent(a))),
                }
            }
            let d = st.driver.stats();
            say(format!(
                "stats-node sent {} received {} dropped {} duplicates {} errors {} snapshots {}",
                d.frames_sent,
                d.frames_received,
                d.frames_dropped,
                st.host.duplicates(),
                st.host.problems_seen(),
                d.snapshots_received
            ));
            say("stats-end".to_string());
        }
        ["help"] => say(
            "commands: migrate AGENT PEER | kick FROM TO | at AGENT PEER | peer NAME KEY@ADDR | stats | battery PERCENT | drain [on|off] | quit".into(),
        ),
        [] => {}
        _ => say(format!("unknown command: {line} (try `help`)")),
    }
    true
}

/// The clean stop: no new work; hand-offs in flight get `grace` to end (the protocol keeps
/// running, agents do not); then the connections close. Whatever is still in flight is in the
/// journal, which every step already made durable: the next start resumes or aborts it.
async fn shutdown(mut st: State, why: &str, grace: Duration) {
    if let Some(f) = st.fleet.take() {
        // First: the others stop counting on this node (no agent is sent to a stopping node).
        f.leave(Duration::from_secs(2));
    }
    let n = in_flight(&st.driver);
    tracing::info!(
        "stopping ({why}): {n} hand-off{} in flight, waiting up to {} s",
        if n == 1 { "" } else { "s" },
        grace.as_secs()
    );
    let deadline = tokio::time::Instant::now() + grace;
    while in_flight(&st.driver) > 0 {
        tokio::select! {
            w = st.driver.wait() => {
                let events = st.driver.handle(&mut st.host, w);
                for e in events {
                    on_event(&mut st, &e);
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let left = in_flight(&st.driver);
    if left > 0 {
        tracing::warn!(
            "{left} hand-off(s) still in flight: the journal keeps them; the next start resumes or aborts each"
        );
    }
    for w in st.waiting.drain(..) {
        let _ = w.reply.try_send(Reply::Err(format!(
            "the node stopped ({why}) before the hand-off ended: start it again and check `mielin agents`"
        )));
    }
    // The events since the last frame left (ticks, acknowledgements): durable before the
    // node stops, so a clean stop loses nothing a restart would run again.
    if let Err(e) = AgentHost::flush(&mut st.host) {
        tracing::error!("host-error the agents' events could not be made durable: {e}");
    }
    // And the journal's changes no frame has waited for (a tombstone forgotten).
    if st.driver.node_mut().journal_mut().sync().is_err() {
        tracing::error!(
            "journal {}: the last changes could not be made durable",
            st.data.join("journal").display()
        );
    }
    let stats = st.driver.node().stats();
    let syncs = st.metrics.journal_syncs.load(Ordering::Relaxed);
    st.driver.shutdown(Duration::from_secs(1)).await;
    let sock = control_server::socket_path(&st.data);
    let _ = std::fs::remove_file(&sock);
    tracing::info!(
        "shutdown: committed {} aborted {} adopted {} retransmits {} journal-syncs {syncs}; stopped cleanly",
        stats.committed,
        stats.aborted,
        stats.adopted,
        stats.retransmits
    );
}
