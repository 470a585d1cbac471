//! `mielin`: run a mesh node over QUIC, and deploy, message, move and inspect its WebAssembly
//! agents; transform modules for mid-call capture. `docs/cli.md` is the operator's guide.
#![forbid(unsafe_code)]

mod client;
mod config;
mod control_server;
mod files;
mod fleet;
mod inspect;
mod logging;
mod metrics;
mod names;
mod node;
mod report;
mod transform;

use clap::{Args, Parser, Subcommand};
use mielin::control::Request;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mielin",
    version,
    about = "Run a mielin mesh node over QUIC; deploy, message, move and inspect its WebAssembly agents.",
    after_help = "Three nodes on one machine: docs/cli.md. Logs: RUST_LOG=debug|info|warn (info by default)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which node a command talks to: its data directory holds its control socket.
#[derive(Args, Debug)]
struct Target {
    /// The node's data directory [default: $MIELIN_DATA, else the current directory].
    #[arg(long, short = 'd', value_name = "DIR")]
    data: Option<PathBuf>,
    /// How long to wait for a node that is starting, seconds.
    #[arg(long, value_name = "S", default_value_t = 5)]
    wait: u64,
}

impl Target {
    fn dir(&self) -> PathBuf {
        self.data
            .clone()
            .or_else(|| std::env::var_os("MIELIN_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates a key file (if missing) and prints its public key and node id.
    #[command(after_help = "Examples:\n  mielin keygen a.key\n  \
        mielin keygen a.key --fleet fleet.toml --addr 127.0.0.1:4001   # and add it to the fleet file")]
    Keygen {
        /// The key file (mode 0600; 64 hex digits of secret).
        key: PathBuf,
        /// Also add this node (name, key, address) to a fleet file every node reads.
        #[arg(long, value_name = "FILE", requires = "addr")]
        fleet: Option<PathBuf>,
        /// The node's name in the fleet file [default: the key file's name without extension].
        #[arg(long)]
        name: Option<String>,
        /// The node's address in the fleet file.
        #[arg(long, value_name = "ADDR")]
        addr: Option<std::net::SocketAddr>,
    },
    /// Creates a fleet key (if missing) and writes the fleet's certificate: the anchor every
    /// member is given, for certificates that `mielin issue` makes.
    #[command(after_help = "Example:\n  mielin fleet-key lab.key --fleet lab -o lab-fleet.der")]
    FleetKey {
        /// The fleet key file (mode 0600; 64 hex digits of secret). Keep it off the nodes.
        key: PathBuf,
        /// The fleet's name (in its certificate; `issue` and `revoke` must be given the same).
        #[arg(long, default_value = "mielin")]
        fleet: String,
        /// Where to write the fleet certificate (DER).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Issues a node certificate with the fleet key: the node's public key, name and
    /// architecture, valid for --days.
    #[command(
        after_help = "Example:\n  mielin issue lab.key --fleet lab --node a --public KEY --arch x86_64 --serial 1 -o a.der\n\n\
        KEY is what `mielin keygen` printed for the node. Keep the serial numbers: `mielin revoke` names them."
    )]
    Issue {
        /// The fleet key file (never created here).
        key: PathBuf,
        /// The fleet's name, as given to `fleet-key`.
        #[arg(long, default_value = "mielin")]
        fleet: String,
        /// The node's name (1 to 63 of a-z, 0-9 and inner hyphens).
        #[arg(long)]
        node: String,
        /// The node's public key (64 hex digits, as `mielin keygen` prints it).
        #[arg(long, value_name = "KEY")]
        public: String,
        /// The node's architecture (x86_64, aarch64, arm, riscv32, riscv64, x86, xtensa).
        #[arg(long)]
        arch: mielin_cells::Arch,
        /// The certificate's serial number (what a revocation names).
        #[arg(long)]
        serial: u64,
        /// Days it is valid from now (it is also valid from an hour ago, for clocks behind).
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Where to write the certificate (DER).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Writes the fleet's revocation list: the certificates with these serial numbers are no
    /// longer members. It replaces the last list; members refuse it after --days.
    #[command(
        after_help = "Example:\n  mielin revoke lab.key --fleet lab --number 2 --serial 4 --serial 9 -o lab.crl\n\n\
        Give every serial still revoked, and a --number above the last list's. Issue a new list before --days pass: \
        a member refuses a list past its next update, and then admits no one."
    )]
    Revoke {
        /// The fleet key file (never created here).
        key: PathBuf,
        /// The fleet's name, as given to `fleet-key`.
        #[arg(long, default_value = "mielin")]
        fleet: String,
        /// The list's number: above every earlier list's.
        #[arg(long)]
        number: u64,
        /// A revoked certificate's serial number; repeatable (none: an empty list).
        #[arg(long)]
        serial: Vec<u64>,
        /// Days until the next list is due.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Where to write the list (DER).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Runs a node until SIGTERM or Ctrl-C (or `quit` on its console).
    #[command(after_help = "Examples:\n  \
        mielin node --key a.key --data a.d --fleet fleet.toml\n  \
        mielin node --config a.toml\n  \
        mielin node --name a --key a.key --data a.d --listen 127.0.0.1:4001 --peer b=KEY@127.0.0.1:4002\n\n\
        Console (standard input): migrate AGENT PEER | peer NAME KEY@ADDR | stats | help | quit")]
    Node(Box<config::NodeArgs>),
    /// Shows a running node: its address, peers, agents with epoch and state, hand-offs.
    #[command(after_help = "Example:\n  mielin status -d a.d")]
    Status(Target),
    /// Lists a running node's agents with their epoch and state.
    #[command(after_help = "Example:\n  mielin agents -d a.d")]
    Agents(Target),
    /// Starts an agent on a running node from a WebAssembly module (.wasm or .wat).
    #[command(after_help = "Example:\n  mielin deploy echo.wat --name pong -d a.d")]
    Deploy {
        /// The module.
        file: PathBuf,
        /// The agent's name (its id is derived from it) [default: the file's name without
        /// extension].
        #[arg(long)]
        name: Option<String>,
        /// The argument of its `start(i32)` export.
        #[arg(long, default_value_t = 1_000_000, allow_negative_numbers = true)]
        arg: i32,
        #[command(flatten)]
        target: Target,
    },
    /// Puts a message from the operator into an agent's mailbox, on the node it runs on.
    #[command(
        after_help = "MSG is sent as a 32-bit little-endian integer when it is one, as its UTF-8 bytes otherwise (at most 256 bytes).\n\
        The agent sees the sender id of the operator; what it sends back is logged and counted by `mielin agents`.\n\n\
        Example:\n  mielin send pong 41 -d b.d"
    )]
    Send {
        /// The agent: its name or 32 hex digits of id.
        agent: String,
        /// The message.
        #[arg(allow_hyphen_values = true)]
        msg: String,
        #[command(flatten)]
        target: Target,
    },
    /// Hands an agent to another node and waits for the hand-off to end.
    #[command(after_help = "Example:\n  mielin migrate pong --to b -d a.d")]
    Migrate {
        /// The agent: its name or 32 hex digits of id.
        agent: String,
        /// The peer to hand it to (its name).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        target: Target,
    },
    /// Rewrites a module for mid-call capture (Binaryen's Asyncify, run by wasm-opt): the output
    /// is the agent's DNA; nodes need no Binaryen.
    #[command(
        after_help = "The output records the original's SHA-256, wasm-opt's version and the imports \
        that unwind (`mielin inspect OUT` shows it). Needs Binaryen's wasm-opt (Debian: apt-get install binaryen).\n\n\
        Examples:\n  mielin transform worker.wasm -o worker.async.wasm --unwind mesh.recv_wait --unwind mesh.yield\n  \
        mielin transform worker.wat -o worker.async.wasm --unwind mesh.yield --wasm-opt ~/binaryen/bin/wasm-opt\n  \
        mielin transform crunch.wasm -o crunch.async.wasm --yield-points mesh.yield --yield-every 1000"
    )]
    Transform {
        /// The module (.wasm or .wat).
        file: PathBuf,
        /// Where to write the transformed module (replaced atomically).
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
        /// An import that may suspend the agent, as MODULE.NAME (split at the first dot);
        /// repeatable. Only those the module imports are instrumented.
        #[arg(long, value_name = "MODULE.NAME", required_unless_present = "yield_points", value_parser = transform::parse_import)]
        unwind: Vec<(String, String)>,
        /// Insert yield points calling this import, `() -> ()`, at every function entry and loop
        /// head (before Asyncify; the import unwinds), for preemption without points of the
        /// author's.
        #[arg(long, value_name = "MODULE.NAME", value_parser = transform::parse_import)]
        yield_points: Option<(String, String)>,
        /// With --yield-points: call the import once every this many passes.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1000,
            requires = "yield_points"
        )]
        yield_every: u32,
        /// With --yield-points: only at the heads of loops not nested in another loop (cheaper;
        /// an inner loop runs to its end before the next point).
        #[arg(long, requires = "yield_points")]
        yield_outermost: bool,
        /// The wasm-opt to run [default: wasm-opt on the PATH].
        #[arg(long, value_name = "PATH")]
        wasm_opt: Option<PathBuf>,
        /// Do not let Asyncify clean up the code it instruments (the output is about twice as large).
        #[arg(long)]
        no_optimize: bool,
    },
    /// Reads a node's data directory, or one of its files, or a snapshot; changes nothing.
    #[command(
        after_help = "Examples:\n  mielin inspect a.d\n  mielin inspect a.d/journal\n  mielin inspect agent.snapshot"
    )]
    Inspect {
        /// A data directory, a journal, a saved agent (.run, .prep), a module (.wasm) or a
        /// snapshot.
        path: PathBuf,
        /// The largest file read.
        #[arg(long, value_name = "BYTES", default_value_t = inspect::DEFAULT_MAX_BYTES)]
        max_bytes: u64,
        /// The node's key file: its journals and saved agents are sealed with it and are read
        /// (and checked) only with it. Never created.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
}

/// The fleet key in `key` (never created), for fleet `name`.
fn fleet_ca(key: &std::path::Path, name: &str) -> Result<mielin_cells::quic::FleetCa, String> {
    mielin_cells::quic::Identity::load(key)
        .map(|id| mielin_cells::quic::FleetCa::new(id, name))
        .map_err(|e| format!("fleet key {}: {e}", key.display()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes what a fleet command made to `path` (replaced atomically).
fn write_out(path: &std::path::Path, what: std::io::Result<Vec<u8>>, name: &str) -> ExitCode {
    match what.and_then(|bytes| files::write_atomic(path, &bytes)) {
        Ok(()) => {
            println!("wrote {name} {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{name} {}: {e}", path.display()), 1),
    }
}

/// An error for the operator: what went wrong and what to do; exit code 1 (2: bad usage).
fn fail(msg: &str, code: u8) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(code)
}

fn ask(t: &Target, req: Request) -> ExitCode {
    match client::request(&t.dir(), &req, Duration::from_secs(t.wait), |_, _| {}) {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, 1),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Keygen {
            key,
            fleet,
            name,
            addr,
        } => {
            let id = match mielin_cells::quic::Identity::load_or_create(&key) {
                Ok(id) => id,
                Err(e) => {
                    return fail(
                        &format!(
                        "{}: {e} (a key file holds 64 hex digits; give a new path to create one)",
                        key.display()
                    ),
                        1,
                    )
                }
            };
            println!(
                "key {} id {}",
                id.public_key(),
                mielin_cells::quic::to_hex(id.node_id().as_bytes())
            );
            if let (Some(fleet), Some(addr)) = (fleet, addr) {
                let name = name.unwrap_or_else(|| {
                    key.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                let spec = mielin::spec::PeerSpec {
                    name: name.clone(),
                    key: id.public_key().to_hex(),
                    addr,
                };
                if let Err(e) = mielin::spec::check_name(&name)
                    .map_err(|e| format!("{e} (give --name)"))
                    .and_then(|()| config::write_fleet_entry(&fleet, &spec))
                {
                    return fail(&e, 1);
                }
                println!("fleet {}: {name} at {addr}", fleet.display());
            }
            ExitCode::SUCCESS
        }
        Cmd::FleetKey { key, fleet, output } => {
            let ca = match mielin_cells::quic::Identity::load_or_create(&key) {
                Ok(id) => mielin_cells::quic::FleetCa::new(id, &fleet),
                Err(e) => return fail(&format!("{}: {e}", key.display()), 1),
            };
            println!("fleet {fleet} key {}", ca.public_key());
            write_out(&output, ca.certificate(), "fleet certificate")
        }
        Cmd::Issue {
            key,
            fleet,
            node,
            public,
            arch,
            serial,
            days,
            output,
        } => {
            let Some(public) = mielin_cells::quic::PublicKey::from_hex(&public) else {
                return fail("--public: not a public key (64 hex digits)", 2);
            };
            let ca = match fleet_ca(&key, &fleet) {
                Ok(ca) => ca,
                Err(e) => return fail(&e, 1),
            };
            let now = unix_now();
            let cert = ca.issue(
                public,
                &node,
                arch,
                serial,
                now.saturating_sub(3600),
                now.saturating_add(days.saturating_mul(86_400)),
            );
            if cert.is_ok() {
                println!("node {node} ({arch}) serial {serial} valid {days} days");
            }
            write_out(&output, cert, "node certificate")
        }
        Cmd::Revoke {
            key,
            fleet,
            number,
            serial,
            days,
            output,
        } => {
            let ca = match fleet_ca(&key, &fleet) {
                Ok(ca) => ca,
                Err(e) => return fail(&e, 1),
            };
            let now = unix_now();
            let list = ca.revocation_list(
                number,
                now,
                now.saturating_add(days.saturating_mul(86_400)),
                &serial,
            );
            if list.is_ok() {
                println!(
                    "revocation list {number}: {} revoked, next due in {days} days",
                    serial.len()
                );
            }
            write_out(&output, list, "revocation list")
        }
        Cmd::Node(args) => {
            logging::init();
            match node::run(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Status(t) => ask(&t, Request::Status),
        Cmd::Agents(t) => ask(&t, Request::Agents),
        Cmd::Deploy {
            file,
            name,
            arg,
            target,
        } => {
            let name = name.unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            if let Err(e) = mielin::spec::check_name(&name) {
                return fail(&format!("agent {e} (give --name)"), 2);
            }
            let module = match files::read_module(&file) {
                Ok(m) => m,
                Err(e) => return fail(&e, 1),
            };
            if module.len() > mielin::control::MAX_MODULE {
                return fail(
                    &format!(
                        "{}: {} bytes, over the node's {}-byte limit for a module",
                        file.display(),
                        module.len(),
                        mielin::control::MAX_MODULE
                    ),
                    1,
                );
            }
            ask(&target, Request::Deploy { name, module, arg })
        }
        Cmd::Send { agent, msg, target } => {
            let message = mielin::spec::message_bytes(&msg);
            if message.len() > mielin::control::MAX_MESSAGE {
                return fail(
                    &format!(
                        "the message is {} bytes; agents take at most {}",
                        message.len(),
                        mielin::control::MAX_MESSAGE
                    ),
                    2,
                );
            }
            ask(&target, Request::Send { agent, message })
        }
        Cmd::Migrate { agent, to, target } => {
            let mut bar = client::Bar::new(format!("{agent} -> {to}"));
            let r = client::request(
                &target.dir(),
                &Request::Migrate {
                    agent,
                    to: to.clone(),
                },
                Duration::from_secs(target.wait),
                |sent, total| bar.update(sent, total),
            );
            bar.finish();
            match r {
                Ok(text) => {
                    println!("{}", text.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, 1),
            }
        }
        Cmd::Transform {
            file,
            output,
            unwind,
            yield_points,
            yield_every,
            yield_outermost,
            wasm_opt,
            no_optimize,
        } => match transform::run(
            &file,
            &output,
            &unwind,
            yield_points.map(|(m, n)| (m, n, yield_every, yield_outermost)),
            wasm_opt,
            !no_optimize,
        ) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err((e, code)) => fail(&e, code),
        },
        Cmd::Inspect {
            path,
            max_bytes,
            key,
        } => {
            let sealing =
                match key.map(|k| mielin_cells::quic::Identity::load(&k).map_err(|e| (k, e))) {
                    None => None,
                    Some(Ok(id)) => Some(inspect::Sealing::of(&id)),
                    Some(Err((k, e))) => return fail(&format!("key file {}: {e}", k.display()), 1),
                };
            let mut out = String::new();
            let r = inspect::inspect(&path, max_bytes, sealing.as_ref(), &mut out);
            print!("{out}");
            match r {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => fail(&e, 1),
            }
        }
    }
}
