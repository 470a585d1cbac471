//! `mielin node`'s settings: flags over a TOML file (docs/cli.md), and the fleet file that
//! `mielin keygen --fleet` writes and every node reads.

use crate::files::read_bounded;
use mielin::spec::{check_name, parse_peer, PeerSpec};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The largest config or fleet file read.
const MAX_CONFIG: u64 = 1 << 20;

/// `mielin node`'s flags. Each overrides the config file's field of the same name.
#[derive(clap::Args, Debug, Default)]
pub struct NodeArgs {
    /// A TOML config file (fields as the flags below; see docs/cli.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name, for commands and logs [default: its entry in the fleet file, else the
    /// key file's name without extension].
    #[arg(long)]
    pub name: Option<String>,
    /// The node's key file (created on first start; `mielin keygen` makes one ahead).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Where the journal, agents, DNA and the control socket are kept (mode 0700).
    #[arg(long, short = 'd', value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The UDP address to listen on [default: the fleet file's for this key, else
    /// 127.0.0.1:0, a port the OS picks (logged)].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A pinned peer, NAME=KEY@ADDR (KEY: 64 hex digits from `mielin keygen`). Repeatable.
    #[arg(long = "peer", value_name = "NAME=KEY@ADDR")]
    pub peers: Vec<String>,
    /// A fleet file (`[[peer]]` entries, written by `mielin keygen --fleet`): every entry but
    /// this node's own is pinned.
    #[arg(long, value_name = "FILE")]
    pub fleet: Option<PathBuf>,
    /// An agent to start here, NAME=FILE (.wasm or .wat); skipped when the journal knows it.
    /// Repeatable.
    #[arg(long = "agent", value_name = "NAME=FILE")]
    pub agents: Vec<String>,
    /// Where to serve Prometheus metrics (HTTP, GET /metrics) [default: 127.0.0.1:0, logged].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve no metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// The agents' `start(limit)` argument [default: 1000000].
    #[arg(long)]
    pub limit: Option<i32>,
    /// How often agents run, milliseconds [default: 10].
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// The protocol's retransmission timeout, milliseconds [default: 200].
    #[arg(long, value_name = "MS")]
    pub rto_ms: Option<u64>,
    /// Messages in flight per sender-addressee pair, and the room of each agent's mailbox and
    /// outbox, 1 to 64 [default: 8]. More lets a stream of messages go faster (64: about
    /// 20,000 durable 1 KiB messages/s between two nodes, docs/benchmarks.md) at the cost of
    /// memory (up to N messages of 4 KiB waiting per agent each way) and of latency.
    #[arg(long, value_name = "N")]
    pub window: Option<u8>,
    /// After a restart, run no agent until every pinned peer has said it has not seen the
    /// agent at a higher epoch (a journal restored from an older copy). Without it, an agent
    /// runs after 2 s even if some peers did not answer, and that is logged.
    #[arg(long)]
    pub strict_rollback: bool,
    /// Take no agent captured in the middle of a call from a peer (a module transformed by
    /// `mielin transform`, waiting in `mesh.recv_wait` or preempted at `mesh.yield`), and say
    /// so in this node's status, so that peers do not offer it one. Without it the node
    /// continues such agents where they stopped. (Agents deployed here, or arriving between
    /// calls, still run as their modules do.)
    #[arg(long)]
    pub between_calls_only: bool,
    /// Join a fleet on Zenoh through this endpoint (a `zenohd` router, or a node started with
    /// `--zenoh-router`; `tcp/HOST:PORT`): presence, signed statuses, and placement on them
    /// (docs/fleet.md). Repeatable.
    #[arg(long = "zenoh", value_name = "ENDPOINT")]
    pub zenoh: Vec<String>,
    /// Listen for Zenoh on this endpoint (`tcp/HOST:PORT`): a peer of the others, or with
    /// `--zenoh-router` the router itself. Repeatable.
    #[arg(long = "zenoh-listen", value_name = "ENDPOINT")]
    pub zenoh_listen: Vec<String>,
    /// Run a Zenoh router in this node, on the `--zenoh-listen` endpoints, for a fleet without
    /// `zenohd` (the other nodes join with `--zenoh` to it).
    #[arg(long)]
    pub zenoh_router: bool,
    /// The fleet's name on Zenoh (its keys are under `mielin/NAME/`) [default: mielin].
    #[arg(long, value_name = "NAME")]
    pub zenoh_fleet: Option<String>,
    /// Read console commands on standard input (`help` lists them). Off by default, so that a
    /// node started in the background of a shell is not stopped for reading the terminal.
    #[arg(long)]
    pub console: bool,
    /// On SIGTERM or Ctrl-C, how long hand-offs in flight may take to finish, seconds.
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub grace: u64,
    /// Demo and tests: where a remote agent runs at first, AGENT=PEER. Repeatable.
    #[arg(
        long = "at",
        value_name = "AGENT=PEER",
        help_heading = "Demo and tests"
    )]
    pub at: Vec<String>,
    /// Demo and tests: FROM (running here) sends 0 to TO once; a restart does not repeat it
    /// (DATA/kicked remembers it).
    #[arg(long, value_name = "FROM:TO", help_heading = "Demo and tests")]
    pub kick: Option<String>,
    /// Demo and tests: migrate AGENT to PEER after MS milliseconds. Repeatable.
    #[arg(
        long = "migrate",
        value_name = "AGENT=PEER:MS",
        help_heading = "Demo and tests"
    )]
    pub migrations: Vec<String>,
    /// Demo and tests: simulated battery, percent at start.
    #[arg(long, default_value_t = 100, help_heading = "Demo and tests")]
    pub battery: u8,
    /// Demo and tests: the battery drains this many percent per second.
    #[arg(long, default_value_t = 0.0, help_heading = "Demo and tests")]
    pub drain: f64,
    /// Demo and tests: below this battery, every agent here migrates to the peer the policy
    /// picks.
    #[arg(long, default_value_t = 20, help_heading = "Demo and tests")]
    pub min_battery: u8,
    /// Demo and tests: print a `stats` block every this many milliseconds (0: never).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        help_heading = "Demo and tests"
    )]
    pub stats_ms: u64,
}

/// A peer entry of a config or fleet file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct PeerEntry {
    name: String,
    key: String,
    addr: SocketAddr,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    name: String,
    file: PathBuf,
}

/// The config file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    key: Option<PathBuf>,
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    fleet: Option<PathBuf>,
    /// An address, or "off".
    metrics: Option<String>,
    limit: Option<i32>,
    tick_ms: Option<u64>,
    rto_ms: Option<u64>,
    window: Option<u8>,
    strict_rollback: Option<bool>,
    between_calls_only: Option<bool>,
    #[serde(default)]
    zenoh: Vec<String>,
    #[serde(default)]
    zenoh_listen: Vec<String>,
    zenoh_router: Option<bool>,
    zenoh_fleet: Option<String>,
    #[serde(default)]
    peer: Vec<PeerEntry>,
    #[serde(default)]
    agent: Vec<AgentEntry>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    peer: Vec<PeerEntry>,
}

/// What the node runs with.
#[derive(Debug)]
pub struct Settings {
    /// The name, once known (see [`Settings::resolve_name`]).
    pub name: Option<String>,
    pub key: PathBuf,
    pub data: PathBuf,
    pub listen: Option<SocketAddr>,
    /// Pinned peers: the config's, the fleet's, the flags'.
    pub peers: Vec<PeerSpec>,
    pub agents: Vec<(String, PathBuf)>,
    pub metrics: Option<SocketAddr>,
    pub limit: i32,
    pub tick_ms: u64,
    pub rto_ms: u64,
    /// Messages in flight per pair, and each agent's mailbox and outbox (1..=[`MAX_WINDOW`]).
    pub window: u8,
    pub strict_rollback: bool,
    /// Refuse agents captured in the middle of a call (`--between-calls-only`).
    pub between_calls_only: bool,
    /// The fleet on Zenoh, if the node joins one.
    pub zenoh: Option<ZenohSettings>,
    pub args: NodeArgs,
}

/// `--zenoh`, `--zenoh-listen`, `--zenoh-router`, `--zenoh-fleet`.
#[derive(Debug, Clone)]
pub struct ZenohSettings {
    pub fleet: String,
    pub connect: Vec<String>,
    pub listen: Vec<String>,
    pub router: bool,
}

/// The largest `--window`: the driver's node queues 128 frames, room for a window of 64
/// messages and their answers.
pub const MAX_WINDOW: u8 = 64;

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = read_bounded(path, MAX_CONFIG)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        format!(
            "{}: {}(the fields are listed in docs/cli.md and `mielin node --help`)",
            path.display(),
            e.to_string().trim_end().to_string() + "\n"
        )
    })
}

fn entry_spec(e: &PeerEntry, file: &Path) -> Result<PeerSpec, String> {
    parse_peer(&format!("{}={}@{}", e.name, e.key, e.addr))
        .map_err(|err| format!("{}: {err}", file.display()))
}

/// The fleet file's peers.
pub fn read_fleet(path: &Path) -> Result<Vec<PeerSpec>, String> {
    let f: FleetFile = parse_toml(path)?;
    f.peer.iter().map(|e| entry_spec(e, path)).collect()
}

/// Adds (or replaces, by name) a fleet file's entry, atomically.
pub fn write_fleet_entry(path: &Path, spec: &PeerSpec) -> Result<(), String> {
    let mut peers = if path.exists() {
        read_fleet(path)?
    } else {
        Vec::new()
    };
    peers.retain(|p| p.name != spec.name && p.key != spec.key);
    peers.push(spec.clone());
    let mut text = String::from(
        "# The mielin fleet: every node's name, public key and address (`mielin keygen --fleet`).\n",
    );
    for p in &peers {
        // Names are [A-Za-z0-9._-] and keys hex: nothing to escape.
        text.push_str(&format!(
            "\n[[peer]]\nname = \"{}\"\nkey = \"{}\"\naddr = \"{}\"\n",
            p.name, p.key, p.addr
        ));
    }
    crate::files::write_atomic(path, text.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn relative_to(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    }
}

impl Settings {
    /// Reads the config file (if any) and lays the flags over it.
    pub fn from_args(args: NodeArgs) -> Result<Settings, String> {
        let (file, base) = match &args.config {
            Some(p) => (
                parse_toml::<FileConfig>(p)?,
                Some(p.parent().unwrap_or(Path::new(".")).to_path_buf()),
            ),
            None => (FileConfig::default(), None),
        };
        let base = base.as_deref();
        let from = args
            .config
            .as_ref()
            .map_or("the flags".to_string(), |p| p.display().to_string());
        let key = args
            .key
            .clone()
            .or_else(|| file.key.clone().map(|k| relative_to(base, k)))
            .ok_or_else(|| {
                "no key file: give --key FILE (or `key = \"FILE\"` in the config); \
                 `mielin keygen FILE` creates one"
                    .to_string()
            })?;
        let data = args
            .data
            .clone()
            .or_else(|| file.data.clone().map(|d| relative_to(base, d)))
            .ok_or_else(|| {
                "no data directory: give --data DIR (or `data = \"DIR\"` in the config); \
                 it is created if missing"
                    .to_string()
            })?;
        let mut peers = Vec::new();
        for e in &file.peer {
            peers.push(entry_spec(e, Path::new(&from))?);
        }
        let fleet = args
            .fleet
            .clone()
            .or_else(|| file.fleet.clone().map(|f| relative_to(base, f)));
        if let Some(f) = &fleet {
            peers.extend(read_fleet(f)?);
        }
        for p in &args.peers {
            peers.push(parse_peer(p)?);
        }
        let mut agents = Vec::new();
        for a in &file.agent {
            check_name(&a.name).map_err(|e| format!("{from}: agent: {e}"))?;
            agents.push((a.name.clone(), relative_to(base, a.file.clone())));
        }
        for a in &args.agents {
            let (name, path) = a
                .split_once('=')
                .ok_or_else(|| format!("--agent `{a}`: expected NAME=FILE"))?;
            check_name(name).map_err(|e| format!("--agent `{a}`: {e}"))?;
            agents.push((name.to_string(), PathBuf::from(path)));
        }
        let metrics = if args.no_metrics {
            None
        } else if let Some(m) = args.metrics {
            Some(m)
        } else {
            match file.metrics.as_deref() {
                Some("off") => None,
                Some(m) => Some(m.parse().map_err(|e| {
                    format!("{from}: metrics = \"{m}\": {e} (an IP:PORT, or \"off\")")
                })?),
                None => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            }
        };
        if let Some(n) = args.name.as_ref().or(file.name.as_ref()) {
            check_name(n).map_err(|e| format!("node {e}"))?;
        }
        let window = args.window.or(file.window).unwrap_or(8);
        if !(1..=MAX_WINDOW).contains(&window) {
            return Err(format!(
                "--window {window}: between 1 and {MAX_WINDOW} (messages in flight per pair, and each agent's mailbox and outbox)"
            ));
        }
        // The flags' endpoints, else the file's.
        let pick = |flag: &Vec<String>, file: &Vec<String>| {
            if flag.is_empty() {
                file.clone()
            } else {
                flag.clone()
            }
        };
        let connect = pick(&args.zenoh, &file.zenoh);
        let listen_z = pick(&args.zenoh_listen, &file.zenoh_listen);
        let router = args.zenoh_router || file.zenoh_router.unwrap_or(false);
        if router && listen_z.is_empty() {
            return Err(
                "--zenoh-router: give the endpoint it listens on with --zenoh-listen tcp/HOST:PORT"
                    .into(),
            );
        }
        if router && listen_z.iter().any(|e| e.ends_with(":0")) {
            // The node joins through its own router, so it must know the port.
            return Err(
                "--zenoh-router: --zenoh-listen needs a fixed port (the others connect to it), not :0"
                    .into(),
            );
        }
        let zenoh = (!connect.is_empty() || !listen_z.is_empty()).then(|| ZenohSettings {
            fleet: args
                .zenoh_fleet
                .clone()
                .or(file.zenoh_fleet.clone())
                .unwrap_or_else(|| "mielin".into()),
            connect,
            listen: listen_z,
            router,
        });
        Ok(Settings {
            name: args.name.clone().or(file.name),
            key,
            data,
            listen: args.listen.or(file.listen),
            peers,
            agents,
            metrics,
            limit: args.limit.or(file.limit).unwrap_or(1_000_000),
            tick_ms: args.tick_ms.or(file.tick_ms).unwrap_or(10),
            rto_ms: args.rto_ms.or(file.rto_ms).unwrap_or(200),
            window,
            strict_rollback: args.strict_rollback || file.strict_rollback.unwrap_or(false),
            between_calls_only: args.between_calls_only || file.between_calls_only.unwrap_or(false),
            zenoh,
            args,
        })
    }

    /// This node's name, listen address and the peers to pin once its key is known: a fleet
    /// entry with this key is this node (its name and address), not a peer.
    pub fn resolve_self(&mut self, key_hex: &str) -> Result<(String, SocketAddr), String> {
        let own = self.peers.iter().position(|p| p.key == key_hex);
        let own = own.map(|i| self.peers.remove(i));
        self.peers.retain(|p| p.key != key_hex);
        let name = match (&self.name, &own) {
            (Some(n), _) => n.clone(),
            (None, Some(o)) => o.name.clone(),
            (None, None) => {
                let stem = self
                    .key
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                check_name(&stem).map_err(|e| {
                    format!("no node name: give --name NAME (the key file's name gives {e})")
                })?;
                stem
            }
        };
        let listen = self
            .listen
            .or(own.map(|o| o.addr))
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        // A later entry of the same name replaces an earlier one: flags over the fleet over
        // the config.
        let mut peers: Vec<PeerSpec> = Vec::new();
        for p in self.peers.drain(..) {
            peers.retain(|q| q.name != p.name);
            peers.push(p);
        }
        if let Some(p) = peers.iter().find(|p| p.name == name) {
            return Err(format!(
                "peer `{}` has this node's name but another key: rename one of them",
                p.name
            ));
        }
        self.peers = peers;
        Ok((name, listen))
    }
}
