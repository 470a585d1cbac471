//! A fleet of nodes over Zenoh (feature `fleet`): who is there, what state each is in, and
//! where agents run, carried by Zenoh's peers or router instead of a gossip of our own.
//!
//! Zenoh carries small, frequent facts; hand-offs stay on the QUIC path of [`crate::quic`].
//! Every fact a node takes from Zenoh is a **hint**: a status can make placement offer an agent
//! to a node, and a location can send a lookup to one, but the protocol's fences (epochs,
//! signed containers, pinned or trusted keys on the QUIC connection) decide what runs. What is
//! signed and what is not is in docs/fleet.md.
//!
//! The key space under a fleet's name `F` (one Zenoh key chunk, `[A-Za-z0-9_-]`, at most 64):
//!
//! | key | what | signed |
//! |---|---|---|
//! | `mielin/F/alive/<node>` | a liveliness token per node: joins and deaths | no (a hint) |
//! | `mielin/F/records/<node>/status` | the node's status record | yes ([`crate::mesh::fleet`]) |
//! | `mielin/F/records/<node>/location/<agent>` | the node runs the agent at an epoch | yes |
//!
//! `<node>` and `<agent>` are 32 lowercase hex digits. Each node publishes its records on its
//! keys and answers a queryable on `mielin/F/records/<node>/**` with the newest of each, which
//! a node that joins later asks for. A record is taken only if its signature verifies, its key
//! is a member's, the node in its key is the node its key speaks for (and the agent is the
//! record's), and its sequence number is above the last one seen from that node for that kind
//! (and agent); everything else is counted in [`FleetStats`] and changes nothing.
//!
//! Membership is a list of pinned keys of at most [`MAX_MEMBERS`] (the node's own key is always
//! one), changed at run time with [`Fleet::add_member`] and [`Fleet::remove_member`].

use crate::mesh::fleet::{
    self as records, Body, FleetError, FleetRecord, Freshness, Location, Locations, Status,
    MAX_RECORD_LEN,
};
use crate::quic::{Identity, PublicKey};
use crate::{AgentId, NodeId};
use std::boxed::Box;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::format;
use std::string::{String, ToString};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use std::vec::Vec;
use tokio::sync::{mpsc, oneshot};
use zenoh::sample::SampleKind;
use zenoh::Wait as _;

/// The most member keys a node trusts at once.
pub const MAX_MEMBERS: usize = 1024;
/// The most agents whose location a node keeps (when full, the lowest epoch makes room).
pub const MAX_TRACKED_AGENTS: usize = 1024;
/// Events a node holds for [`Fleet::next_event`]; beyond it, events are dropped and counted (the
/// views behind [`Fleet::alive`], [`Fleet::status`] and [`Fleet::locate`] stay current).
pub const EVENT_QUEUE: usize = 4096;
/// Queries for members' records waiting to be sent (one per join seen, one at the start).
pub const ASK_QUEUE: usize = 256;
/// Agents a node can publish its location of at once ([`Fleet::publish_location`]).
pub const MAX_OWN_LOCATIONS: usize = MAX_TRACKED_AGENTS;
/// The largest Zenoh message a fleet node takes (`transport/link/rx/max_message_size`): records
/// are 140 bytes at most; Zenoh's default is 1 GiB, which one outsider's put could fill.
const MAX_ZENOH_MESSAGE: usize = 64 * 1024;
/// Sequence numbers kept per (node, agent) for the freshness of locations; statuses have a
/// table of their own of [`MAX_MEMBERS`], so no churn of locations evicts a member's status.
const LOCATION_FRESHNESS: usize = 2 * MAX_TRACKED_AGENTS;

/// How a node takes part in Zenoh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A peer: it connects to the endpoints it is given and routes for itself (a LAN).
    Peer,
    /// A client of one router (larger fleets: every node connects to a `zenohd` or a
    /// [`Router`]).
    Client,
}

/// What a node needs to join a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The fleet's name: one key chunk of `[A-Za-z0-9_-]`, 1 to 64 characters.
    pub name: String,
    /// Peer or client.
    pub mode: Mode,
    /// Zenoh endpoints to listen on (`tcp/127.0.0.1:7447`); empty for a client.
    pub listen: Vec<String>,
    /// Zenoh endpoints to connect to: the router, or other peers.
    pub connect: Vec<String>,
    /// The keys of the other members (the node's own is added).
    pub members: Vec<PublicKey>,
    /// The sequence number of the node's first record. It must be above every sequence number
    /// the node published before (a restart) or its records are stale to the others until it
    /// passes them: a node passes the wall clock in microseconds, or a persisted counter.
    pub first_seq: u64,
    /// Zenoh's link lease: a node whose link goes silent (a crash behind a live socket, a cut
    /// cable) is seen dead within it. A node that closes, or whose process dies, is seen at
    /// once: its TCP connection closes.
    pub lease: Duration,
}

impl FleetConfig {
    /// A config for `name` with the given mode and endpoints, no other members, the first
    /// sequence number 1 and a lease of 3 s.
    pub fn new(name: &str, mode: Mode) -> FleetConfig {
        FleetConfig {
            name: name.to_string(),
            mode,
            listen: Vec::new(),
            connect: Vec::new(),
            members: Vec::new(),
            first_seq: 1,
            lease: Duration::from_secs(3),
        }
    }
}

/// Why a node could not join, or a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetStartError {
    /// The fleet's name is not one key chunk of `[A-Za-z0-9_-]`, 1 to 64 characters.
    #[error("a fleet name is 1 to 64 of [A-Za-z0-9_-], not {0:?}")]
    BadName(String),
    /// More members than [`MAX_MEMBERS`].
    #[error("a fleet node trusts at most {MAX_MEMBERS} member keys")]
    TooManyMembers,
    /// A lease of zero, or one too long to configure.
    #[error("the lease must be between 1 ms and 1 hour")]
    BadLease,
    /// Zenoh refused: a bad endpoint, a port in use, a closed session.
    #[error("zenoh: {0}")]
    Zenoh(String),
}

/// Why a record was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetPublishError {
    /// A field is out of its range (a battery over 100, an epoch above `MAX_EPOCH`...): the
    /// others would refuse the record.
    #[error("a field of the record is out of range")]
    OutOfRange,
    /// The sequence number reached `u64::MAX`.
    #[error("the record sequence numbers are exhausted")]
    SequenceExhausted,
    /// [`MAX_OWN_LOCATIONS`] locations are published; withdraw one first.
    #[error("at most {MAX_OWN_LOCATIONS} locations are published at once")]
    TooManyLocations,
    /// Zenoh could not send it (the session is closed).
    #[error("zenoh: {0}")]
    Zenoh(String),
}

fn zenoh_err(e: impl core::fmt::Display) -> FleetStartError {
    FleetStartError::Zenoh(e.to_string())
}

/// What a node has seen of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetEvent {
    /// A member's liveliness token appeared.
    Joined(NodeId),
    /// A member's liveliness token went: it closed, its process died, or its link's lease ran
    /// out. Its status is forgotten; the agents it ran stay located there (their durable
    /// copies are there, docs/fleet.md).
    Left(NodeId),
    /// A member published a (fresh, signed) status.
    Status(NodeId, Status),
    /// The node claiming the highest epoch for an agent changed or rose.
    Located {
        /// The agent.
        agent: AgentId,
        /// Where it runs, by the highest epoch claimed.
        node: NodeId,
        /// That epoch.
        epoch: u64,
    },
}

/// What a node refused or dropped, by reason. Each refusal changes nothing else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Records taken.
    pub records: u64,
    /// Records that are not records, or whose fields or signature fail
    /// ([`FleetRecord::verify`]).
    pub bad_records: u64,
    /// Records whose signer is not a member.
    pub not_member: u64,
    /// Records on a key that is not theirs: another node's, or another agent's.
    pub wrong_key: u64,
    /// Records whose sequence number is below the last one seen from their node (for their
    /// kind and agent): replays of older records.
    pub stale: u64,
    /// Records at the last sequence number seen: the same record again (a publication and a
    /// query's answer both bring it; or a replay of the newest, which says nothing new).
    pub duplicates: u64,
    /// Statuses of members whose token is not there: checked and not kept (the query on the
    /// member's join brings its newest status again).
    pub absent: u64,
    /// Liveliness tokens on a key that is no member's node.
    pub stray_tokens: u64,
    /// Events dropped because [`EVENT_QUEUE`] were waiting.
    pub events_dropped: u64,
    /// Queries for a joining member's records dropped because [`ASK_QUEUE`] were waiting (its
    /// next publication brings its status).
    pub asks_dropped: u64,
}

struct View {
    me: NodeId,
    members: HashMap<NodeId, [u8; 32]>,
    alive: HashSet<NodeId>,
    /// Each live member's newest status, and when it arrived.
    status: HashMap<NodeId, (Status, Instant)>,
    fresh_status: Box<Freshness<MAX_MEMBERS>>,
    fresh_location: Box<Freshness<LOCATION_FRESHNESS>>,
    locations: Box<Locations<MAX_TRACKED_AGENTS>>,
    stats: FleetStats,
}

struct Shared {
    prefix: String,
    view: Mutex<View>,
    events: mpsc::Sender<FleetEvent>,
    /// The newest record of each of this node's keys, by key suffix: what its queryable answers.
    mine: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Keys to ask the queryables on, for the task that holds the session ([`Fleet::join`]).
    /// Not the session itself: the callbacks hold this, and a session held by its own
    /// callbacks would never close on drop.
    asks: mpsc::Sender<Ask>,
}

/// A query the asker task sends.
enum Ask {
    /// The records on a key expression (queryables).
    Records(String),
    /// The liveliness tokens on a key expression (a member trusted after its token came).
    Tokens(String),
}

impl Shared {
    /// `mielin/F/alive/<node>`: the node's liveliness token.
    fn alive_key(&self, node: NodeId) -> String {
        format!("{}/alive/{}", self.prefix, hex(node.as_bytes()))
    }

    /// `mielin/F/records/<node>`: the root of the node's records (`/status`,
    /// `/location/<agent>` below it).
    fn records_key(&self, node: NodeId) -> String {
        format!("{}/records/{}", self.prefix, hex(node.as_bytes()))
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // A panic while the lock was held left a view that is still whole (each update is one
        // insert or remove); the fleet keeps going rather than poisoning every later call.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, view: &mut View, event: FleetEvent) {
        if self.events.try_send(event).is_err() {
            view.stats.events_dropped += 1;
        }
    }

    /// A liveliness token appeared (`Put`) or went (`Delete`) at `key`.
    fn on_token(&self, key: &str, kind: SampleKind) {
        let node = key
            .strip_prefix(&self.prefix)
            .and_then(|k| k.strip_prefix("/alive/"))
            .and_then(parse_id);
        let mut view = self.view();
        let Some(node) = node.filter(|n| view.members.contains_key(&NodeId::from_bytes(*n))) else {
            view.stats.stray_tokens += 1;
            return;
        };
        let node = NodeId::from_bytes(node);
        match kind {
            SampleKind::Put => {
                if view.alive.insert(node) {
                    self.emit(&mut view, FleetEvent::Joined(node));
                    // What it published before this node's subscription reached it was lost
                    // to this node (pub/sub keeps nothing): ask it. Its queryable is declared
                    // before its token, so it answers.
                    let key = format!("{}/**", self.records_key(node));
                    self.ask(&mut view, Ask::Records(key));
                }
            }
            SampleKind::Delete => {
                if view.alive.remove(&node) {
                    view.status.remove(&node);
                    self.emit(&mut view, FleetEvent::Left(node));
                }
            }
        }
    }

    /// Asks the queryables on `key` for their records; the answers go through
    /// [`Shared::on_record`] like publications. When [`ASK_QUEUE`] asks wait, the ask is
    /// dropped: the member's next publication brings its status.
    fn ask(&self, view: &mut View, ask: Ask) {
        if self.asks.try_send(ask).is_err() {
            view.stats.asks_dropped += 1;
        }
    }

    /// A record arrived on `key` (a publication or a query's answer): `payload`, which is
    /// copied only when it is no longer than a record.
    fn on_payload(&self, key: &str, payload: &zenoh::bytes::ZBytes) {
        if payload.len() > MAX_RECORD_LEN {
            self.view().stats.bad_records += 1;
            return;
        }
        self.on_record(key, &payload.to_bytes());
    }

    /// A record arrived on `key`. What needs no view (the format, the signature, the key) is
    /// checked before the view is locked, so a flood of bad records holds no reader up.
    fn on_record(&self, key: &str, bytes: &[u8]) {
        let checked = self.check(key, bytes);
        let mut view = self.view();
        let r = match checked.and_then(|r| admit(&mut view, r)) {
            Ok(r) => r,
            Err(refused) => {
                let s = &mut view.stats;
                *match refused {
                    Refused::Bad => &mut s.bad_records,
                    Refused::WrongKey => &mut s.wrong_key,
                    Refused::NotMember => &mut s.not_member,
                    Refused::Stale => &mut s.stale,
                    Refused::Duplicate => &mut s.duplicates,
                    Refused::Absent => &mut s.absent,
                } += 1;
                return;
            }
        };
        view.stats.records += 1;
        match r.body {
            Body::Status(s) => {
                view.status.insert(r.node, (s, Instant::now()));
                self.emit(&mut view, FleetEvent::Status(r.node, s));
            }
            Body::Location(l) => {
                let before = view.locations.resolve(l.agent);
                view.locations.note(&r);
                let after = view.locations.resolve(l.agent);
                if let Some((node, epoch)) = after.filter(|a| Some(*a) != before) {
                    self.emit(
                        &mut view,
                        FleetEvent::Located {
                            agent: l.agent,
                            node,
                            epoch,
                        },
                    );
                }
            }
        }
    }

    /// The checks that need no view: the record verifies, and the key it came on is its own.
    fn check(&self, key: &str, bytes: &[u8]) -> Result<FleetRecord, Refused> {
        let r = FleetRecord::verify(bytes).map_err(|_| Refused::Bad)?;
        let path = key
            .strip_prefix(&self.prefix)
            .and_then(|k| k.strip_prefix("/records/"))
            .ok_or(Refused::WrongKey)?;
        let (node, rest) = path.split_once('/').ok_or(Refused::WrongKey)?;
        if parse_id(node) != Some(*r.node.as_bytes()) {
            return Err(Refused::WrongKey);
        }
        match (rest, r.body) {
            ("status", Body::Status(_)) => Ok(r),
            (rest, Body::Location(l)) => {
                let agent = rest.strip_prefix("location/").and_then(parse_id);
                if agent == Some(*l.agent.as_bytes()) {
                    Ok(r)
                } else {
                    Err(Refused::WrongKey)
                }
            }
            _ => Err(Refused::WrongKey),
        }
    }
}

/// The checks against the view: a member's key, a fresh sequence number, and for a status, a
/// member whose token is there.
fn admit(view: &mut View, r: FleetRecord) -> Result<FleetRecord, Refused> {
    if view.members.get(&r.node) != Some(&r.key) {
        return Err(Refused::NotMember);
    }
    let fresh = match r.body {
        Body::Status(_) => view.fresh_status.admit(&r),
        Body::Location(_) => view.fresh_location.admit(&r),
    };
    match fresh {
        Ok(()) => {}
        // The newest status again, for a member whose status this node does not hold (it was
        // absent, or left and came back): the query on its join brought it, and it is taken.
        Err(FleetError::Stale { seq, last })
            if seq == last
                && matches!(r.body, Body::Status(_))
                && !view.status.contains_key(&r.node)
                && view.alive.contains(&r.node) => {}
        Err(FleetError::Stale { seq, last }) if seq == last => return Err(Refused::Duplicate),
        Err(_) => return Err(Refused::Stale),
    }
    if matches!(r.body, Body::Status(_)) && !view.alive.contains(&r.node) {
        return Err(Refused::Absent);
    }
    Ok(r)
}

enum Refused {
    Bad,
    WrongKey,
    NotMember,
    Stale,
    Duplicate,
    Absent,
}

/// A node or agent id from a key chunk: 32 lowercase hex digits, nothing else. One id has one
/// key: Zenoh keys are case-sensitive, and a second spelling of a member's token (upper case)
/// could otherwise be declared and undeclared beside the real one to report the member gone.
fn parse_id(chunk: &str) -> Option<[u8; 16]> {
    let id: [u8; 16] = crate::quic::from_hex(chunk)?.try_into().ok()?;
    (hex(&id) == chunk).then_some(id)
}

fn hex(b: &[u8]) -> String {
    crate::quic::to_hex(b)
}

/// `location/<agent>`: where a node's location record of `agent` sits below its records key.
fn location_suffix(agent: AgentId) -> String {
    format!("location/{}", hex(agent.as_bytes()))
}

fn check_name(name: &str) -> Result<(), FleetStartError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FleetStartError::BadName(name.to_string()))
    }
}

/// Zenoh's config for a fleet node or router: multicast scouting off (it is on by default, and
/// would join any fleet on the LAN to this one's Zenoh network), the endpoints given, the lease.
fn zenoh_config(
    mode: &str,
    listen: &[String],
    connect: &[String],
    lease: Duration,
) -> Result<zenoh::Config, FleetStartError> {
    let lease_ms = lease.as_millis();
    if lease_ms == 0 || lease_ms > 3_600_000 {
        return Err(FleetStartError::BadLease);
    }
    let list = |v: &[String]| {
        let quoted: Vec<String> = v.iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(","))
    };
    let mut c = zenoh::Config::default();
    for (key, value) in [
        ("mode", format!("{mode:?}")),
        ("scouting/multicast/enabled", "false".to_string()),
        ("listen/endpoints", list(listen)),
        ("connect/endpoints", list(connect)),
        ("transport/link/tx/lease", lease_ms.to_string()),
        (
            "transport/link/rx/max_message_size",
            MAX_ZENOH_MESSAGE.to_string(),
        ),
        // A router or peer that is not up yet (nodes start in any order, routers restart):
        // wait for it, trying every 250 ms at first, then every second.
        ("connect/exit_on_failure", "false".to_string()),
        ("connect/timeout_ms", "-1".to_string()),
        (
            "connect/retry",
            "{period_init_ms: 250, period_max_ms: 1000, period_increase_factor: 2}".to_string(),
        ),
    ] {
        c.insert_json5(key, &value).map_err(zenoh_err)?;
    }
    Ok(c)
}

/// The task that runs the queries of [`Shared::ask`] on its clone of the session, until `stop`
/// is dropped with the [`Fleet`]; then its clone goes, and the session closes with the last.
fn spawn_asker(
    session: zenoh::Session,
    shared: Weak<Shared>,
    mut asks: mpsc::Receiver<Ask>,
) -> oneshot::Sender<()> {
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let ask = tokio::select! {
                _ = &mut stopped => break,
                ask = asks.recv() => match ask {
                    Some(ask) => ask,
                    None => break,
                },
            };
            let shared = shared.clone();
            let _ = match ask {
                Ask::Records(key) => {
                    session
                        .get(key)
                        .timeout(Duration::from_secs(5))
                        .callback(move |reply| {
                            if let (Some(s), Ok(sample)) = (shared.upgrade(), reply.result()) {
                                s.on_payload(sample.key_expr().as_str(), sample.payload());
                            }
                        })
                        .await
                }
                Ask::Tokens(key) => {
                    session
                        .liveliness()
                        .get(key)
                        .timeout(Duration::from_secs(5))
                        .callback(move |reply| {
                            if let (Some(s), Ok(sample)) = (shared.upgrade(), reply.result()) {
                                s.on_token(sample.key_expr().as_str(), SampleKind::Put);
                            }
                        })
                        .await
                }
            };
        }
    });
    stop
}

/// A Zenoh router in this process, for a fleet on one machine or in a test (production fleets
/// run `zenohd`): every [`Mode::Client`] node connects to it.
pub struct Router {
    session: zenoh::Session,
}

impl Router {
    /// Starts a router listening on `listen` (Zenoh endpoints, `tcp/127.0.0.1:7447`).
    pub async fn start(listen: &[String]) -> Result<Router, FleetStartError> {
        let config = zenoh_config("router", listen, &[], Duration::from_secs(3))?;
        let session = zenoh::open(config).await.map_err(zenoh_err)?;
        Ok(Router { session })
    }

    /// Stops it: its clients lose their connection.
    pub async fn close(self) -> Result<(), FleetStartError> {
        self.session.close().await.map_err(zenoh_err)
    }
}

/// What a node sees of its fleet ([`Fleet::view`]): cheap to clone, and read without the
/// [`Fleet`] (which stays with the task that publishes).
#[derive(Clone)]
pub struct FleetView {
    shared: Arc<Shared>,
}

impl FleetView {
    /// The members whose token is there (this node included, once its own token is seen).
    pub fn alive(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.shared.view().alive.iter().copied().collect();
        v.sort();
        v
    }

    /// A live member's newest status.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.status_age(node).map(|(s, _)| s)
    }

    /// A live member's newest status and how long ago it arrived: a member whose statuses
    /// stopped coming while its token stays (its loop is held up) is told apart by the age.
    pub fn status_age(&self, node: NodeId) -> Option<(Status, Duration)> {
        let view = self.shared.view();
        view.status.get(&node).map(|(s, t)| (*s, t.elapsed()))
    }

    /// The node that claims the highest epoch for `agent`, and the epoch: a hint.
    pub fn locate(&self, agent: AgentId) -> Option<(NodeId, u64)> {
        self.shared.view().locations.resolve(agent)
    }

    /// What was refused or dropped so far.
    pub fn stats(&self) -> FleetStats {
        self.shared.view().stats
    }
    /// Trusts `key` from now on (and asks for its token, which may have come before). False
    /// when [`MAX_MEMBERS`] are trusted already.
    pub fn add_member(&self, key: PublicKey) -> bool {
        let node = key.node_id();
        let mut view = self.shared.view();
        if view.members.len() >= MAX_MEMBERS && !view.members.contains_key(&node) {
            return false;
        }
        if view.members.insert(node, key.0).is_none() {
            // Its token may have come while it was no member (ignored then): ask for it.
            let key = self.shared.alive_key(node);
            self.shared.ask(&mut view, Ask::Tokens(key));
        }
        true
    }

    /// No longer trusts `node` (not this node itself): its records are refused from now on, and
    /// its status, presence and location claims are forgotten. Its token, if present, is not seen again until it
    /// is trusted again and re-declares it.
    pub fn remove_member(&self, node: NodeId) {
        let mut view = self.shared.view();
        if node == view.me {
            return;
        }
        view.members.remove(&node);
        view.status.remove(&node);
        view.locations.forget_node(node);
        if view.alive.remove(&node) {
            self.shared.emit(&mut view, FleetEvent::Left(node));
        }
    }
}

/// A node's membership of a fleet: its Zenoh session, its liveliness token, its records, and
/// what it has seen of the others. Needs a tokio runtime with several threads (Zenoh's own
/// tasks run on it).
pub struct Fleet {
    shared: Arc<Shared>,
    session: zenoh::Session,
    identity: Identity,
    next_seq: u64,
    events: mpsc::Receiver<FleetEvent>,
    _stop_asker: oneshot::Sender<()>,
    // Held for their lifetime: dropping one undeclares it.
    _token: zenoh::liveliness::LivelinessToken,
    _presence: zenoh::pubsub::Subscriber<()>,
    _records: zenoh::pubsub::Subscriber<()>,
    _queryable: zenoh::query::Queryable<()>,
}

impl Fleet {
    /// Joins the fleet `config.name` as `identity`: opens the Zenoh session, listens for the
    /// members' tokens and records, declares its own token, and asks the members that are
    /// there for their newest records (their answers arrive as events). While no endpoint in
    /// `connect` answers, the join waits and tries again (every 250 ms, then every second;
    /// Zenoh logs a warning each time), so nodes and routers start in any order; a caller
    /// that must not wait runs it in a task of its own.
    pub async fn join(identity: Identity, config: FleetConfig) -> Result<Fleet, FleetStartError> {
        check_name(&config.name)?;
        let me = identity.node_id();
        let mut members = HashMap::new();
        for key in config.members.iter().chain([&identity.public_key()]) {
            members.insert(key.node_id(), key.0);
        }
        if members.len() > MAX_MEMBERS {
            return Err(FleetStartError::TooManyMembers);
        }
        let mode = match config.mode {
            Mode::Peer => "peer",
            Mode::Client => "client",
        };
        let zc = zenoh_config(mode, &config.listen, &config.connect, config.lease)?;
        let prefix = format!("mielin/{}", config.name);
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let (ask_tx, ask_rx) = mpsc::channel(ASK_QUEUE);
        let shared = Arc::new(Shared {
            prefix: prefix.clone(),
            view: Mutex::new(View {
                me,
                members,
                alive: HashSet::new(),
                status: HashMap::new(),
                fresh_status: Box::default(),
                fresh_location: Box::default(),
                locations: Box::default(),
                stats: FleetStats::default(),
            }),
            events: tx,
            mine: Mutex::new(BTreeMap::new()),
            asks: ask_tx,
        });
        let session = zenoh::open(zc).await.map_err(zenoh_err)?;
        let stop = spawn_asker(session.clone(), Arc::downgrade(&shared), ask_rx);
        let s = shared.clone();
        let presence = session
            .liveliness()
            .declare_subscriber(format!("{prefix}/alive/*"))
            .history(true)
            .callback(move |sample| s.on_token(sample.key_expr().as_str(), sample.kind()))
            .await
            .map_err(zenoh_err)?;
        let s = shared.clone();
        let subscriber = session
            .declare_subscriber(format!("{prefix}/records/**"))
            .callback(move |sample| {
                if sample.kind() == SampleKind::Put {
                    s.on_payload(sample.key_expr().as_str(), sample.payload());
                }
            })
            .await
            .map_err(zenoh_err)?;
        let s = shared.clone();
        let own = shared.records_key(me);
        let queryable = session
            .declare_queryable(format!("{own}/**"))
            .callback(move |query| {
                // Only the keys the query asks for: a query for one key costs one answer.
                let asked = query.key_expr().clone();
                let answers: Vec<(String, Vec<u8>)> = s
                    .mine
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(suffix, bytes)| (format!("{own}/{suffix}"), bytes.clone()))
                    .filter(|(key, _)| {
                        zenoh::key_expr::KeyExpr::try_from(key.as_str())
                            .is_ok_and(|k| asked.intersects(&k))
                    })
                    .collect();
                for (key, bytes) in answers {
                    // An answer that cannot go (the asker left) is the asker's loss only.
                    let _ = query.reply(key, bytes).wait();
                }
            })
            .await
            .map_err(zenoh_err)?;
        let token = session
            .liveliness()
            .declare_token(shared.alive_key(me))
            .await
            .map_err(zenoh_err)?;
        shared.ask(
            &mut shared.view(),
            Ask::Records(format!("{prefix}/records/**")),
        );
        Ok(Fleet {
            shared,
            session,
            identity,
            next_seq: config.first_seq,
            events: rx,
            _stop_asker: stop,
            _token: token,
            _presence: presence,
            _records: subscriber,
            _queryable: queryable,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    fn publish(&mut self, suffix: String, body: Body) -> Result<(), FleetPublishError> {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let seq = self.next_seq;
        let next = seq
            .checked_add(1)
            .ok_or(FleetPublishError::SequenceExhausted)?;
        let len = records::sign(self.identity.secret(), seq, &body, &mut buf)
            .ok_or(FleetPublishError::OutOfRange)?;
        let record = buf[..len].to_vec();
        {
            let mut mine = self.shared.mine.lock().unwrap_or_else(|p| p.into_inner());
            // The status, and at most MAX_OWN_LOCATIONS locations.
            if !mine.contains_key(&suffix) && mine.len() > MAX_OWN_LOCATIONS {
                return Err(FleetPublishError::TooManyLocations);
            }
            mine.insert(suffix.clone(), record.clone());
        }
        self.next_seq = next;
        let key = format!("{}/{suffix}", self.shared.records_key(self.node_id()));
        self.session
            .put(key, record)
            .wait()
            .map_err(|e| FleetPublishError::Zenoh(e.to_string()))
    }

    /// Signs and publishes this node's status (and answers queries with it from now on).
    pub fn publish_status(&mut self, status: Status) -> Result<(), FleetPublishError> {
        self.publish("status".to_string(), Body::Status(status))
    }

    /// Signs and publishes that this node runs `location.agent` at `location.epoch`.
    pub fn publish_location(&mut self, location: Location) -> Result<(), FleetPublishError> {
        self.publish(location_suffix(location.agent), Body::Location(location))
    }

    /// Stops answering queries with this node's location of `agent` (it left). Nodes that
    /// already know it keep it until a higher epoch elsewhere is published.
    pub fn withdraw_location(&mut self, agent: AgentId) {
        let suffix = location_suffix(agent);
        self.shared
            .mine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&suffix);
    }

    /// The next event, waiting for one; `None` once the fleet is closed.
    pub async fn next_event(&mut self) -> Option<FleetEvent> {
        self.events.recv().await
    }

    /// An event if one waits.
    pub fn try_event(&mut self) -> Option<FleetEvent> {
        self.events.try_recv().ok()
    }

    /// The members whose token is there (this node included, once its own token is seen).
    pub fn alive(&self) -> Vec<NodeId> {
        self.view().alive()
    }

    /// A live member's newest status.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.view().status(node)
    }

    /// The node that claims the highest epoch for `agent`, and the epoch: a hint.
    pub fn locate(&self, agent: AgentId) -> Option<(NodeId, u64)> {
        self.view().locate(agent)
    }

    /// What was refused or dropped so far.
    pub fn stats(&self) -> FleetStats {
        self.view().stats()
    }

    /// A handle on what this node sees of the fleet, for another task or thread (the view
    /// stays current while the [`Fleet`] lives).
    pub fn view(&self) -> FleetView {
        FleetView {
            shared: self.shared.clone(),
        }
    }

    /// Trusts `key` from now on ([`FleetView::add_member`]).
    pub fn add_member(&self, key: PublicKey) -> bool {
        self.view().add_member(key)
    }

    /// No longer trusts `node` ([`FleetView::remove_member`]).
    pub fn remove_member(&self, node: NodeId) {
        self.view().remove_member(node)
    }

    /// Leaves the fleet: the token goes (the others see [`FleetEvent::Left`] at once) and the
    /// session closes.
    pub async fn leave(self) -> Result<(), FleetStartError> {
        self.session.close().await.map_err(zenoh_err)
    }
}
