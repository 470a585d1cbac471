//! The node driver: a [`mesh::Node`](crate::mesh::Node) over QUIC on the caller's tokio
//! runtime.

use super::identity::{Directory, Identity, PublicKey};
use super::tls::{self, Credentials, Transport};
use super::wire::{self, Record};
use super::{Event, EventSink, HandOffReport, Inbound, Role, PROGRESS_MIN_BYTES};
use crate::mesh::frame::{FrameKind, Repr};
use crate::mesh::{AgentHost, Config, Journal, MeshError, Node, Phase};
use crate::{AgentId, NodeId, NodeStatus, Policy};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// An [`AgentHost`] that is told the route of each hand-off before it captures the agent, so
/// that it can sign the snapshot for its target and epoch (wire format version 2).
pub trait RoutedHost: AgentHost {
    /// `agent` is being handed to `target` at `epoch`; captures until the next call are for
    /// this route.
    fn route(&mut self, agent: AgentId, target: NodeId, epoch: u64);
}

/// Settings of a [`Driver`].
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Where to listen (port 0: the OS picks one; see [`Driver::local_addr`]).
    pub listen: SocketAddr,
    /// QUIC settings (idle timeout, keep-alive, flow-control windows, stream limit).
    pub transport: Transport,
    /// The protocol's timers and limits.
    pub mesh: Config,
    /// The largest mesh frame sent or accepted (a snapshot plus 33 bytes). A peer's stream
    /// makes this node hold at most this many bytes per stream, and at most
    /// `transport.max_streams` streams per connection are open at once.
    pub max_frame_len: usize,
    /// First reconnection delay after a failed dial; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// How often [`Driver::wait`] returns [`Wake::Tick`] (for the embedder to run agents).
    pub tick: Duration,
    /// A peer's announced status is used by [`Driver::select`] for this long.
    pub status_ttl: Duration,
    /// Bytes of records one peer may have queued in this node, read and not yet handled.
    /// Beyond, its streams are not read further (it waits in QUIC's flow control). Raised to
    /// at least `max_frame_len` plus a record header, or a largest frame could never be
    /// queued.
    pub peer_inbox_bytes: usize,
    /// The same for all peers together; raised to at least `peer_inbox_bytes`.
    pub inbox_bytes: usize,
    /// Hand-offs followed per peer for [`Event::Phase`] and [`Event::HandOff`]; a hand-off
    /// beyond is not reported (counted in [`DriverStats::tracks_refused`]).
    pub max_tracks_per_peer: usize,
    /// A followed hand-off with no frame for this long is forgotten (an aborted one whose last
    /// frame was lost, or a peer's offer that went no further; counted in
    /// [`DriverStats::tracks_expired`]).
    pub track_ttl: Duration,
}

/// Room beside a largest frame in a peer's default inbound budget, for the small frames of other
/// hand-offs and messages.
const SMALL_FRAMES: usize = 2 << 20;

impl DriverConfig {
    /// Defaults, listening on `listen`: 10 s idle timeout, frames up to 80 MiB, backoff from
    /// 100 ms to 5 s, a tick every 10 ms.
    pub fn new(listen: SocketAddr) -> DriverConfig {
        DriverConfig {
            listen,
            transport: Transport::default(),
            mesh: Config::default(),
            max_frame_len: 80 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            tick: Duration::from_millis(10),
            status_ttl: Duration::from_secs(10),
            peer_inbox_bytes: (80 << 20) + SMALL_FRAMES,
            inbox_bytes: 2 * ((80 << 20) + SMALL_FRAMES),
            max_tracks_per_peer: 64,
            track_ttl: Duration::from_secs(60),
        }
    }

    /// The budgets as they apply: at least a largest record per peer, at least one peer's in
    /// all.
    fn budgets(&self) -> (usize, usize) {
        let peer = self
            .peer_inbox_bytes
            .max(self.max_frame_len.saturating_add(wire::RECORD_HEADER_LEN));
        (peer, self.inbox_bytes.max(peer))
    }
}

/// Records [`Driver::handle`] takes from the network in one turn, before the frames it queued
/// leave (one group commit of the host for all of them).
pub const MAX_BATCH: usize = 64;

/// Frames the driver's node queues between two sends (its `Q`; a board's node keeps the
/// default [`OUTBOX`](crate::mesh::OUTBOX), 32): room for a window of 64 messages per pair and
/// the answers of a batch. 11 KiB of the driver.
pub const DRIVER_OUTBOX: usize = 128;

/// What [`Driver::wait`] woke up for; hand it to [`Driver::handle`].
#[derive(Debug)]
pub enum Wake {
    /// Something from the network.
    Inbound(Inbound),
    /// A protocol timer is due.
    Timer,
    /// The embedder's tick ([`DriverConfig::tick`]).
    Tick,
}

/// Counters of the driver (the protocol's own are [`Node::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames sent (handed to a stream).
    pub frames_sent: u64,
    /// Frames received from authenticated peers.
    pub frames_received: u64,
    /// Frames dropped before sending: no connection (backoff), a full queue, or a snapshot of
    /// the same attempt still being sent.
    pub frames_dropped: u64,
    /// Streams refused for bad framing.
    pub streams_refused: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Hand-offs not followed for reports: their peer had `max_tracks_per_peer` already.
    pub tracks_refused: u64,
    /// Followed hand-offs forgotten after `track_ttl` without a frame.
    pub tracks_expired: u64,
    /// Transfer frames (snapshots) received, each attempt's copies and retransmissions
    /// counted: more than one per hand-off means a snapshot crossed the wire again.
    pub snapshots_received: u64,
}

type Batch = Vec<(Vec<u8>, Option<(AgentId, u64)>)>;

/// The inbound byte budgets: one semaphore of permits (bytes) per peer, one for all.
struct Budget {
    all: Arc<tokio::sync::Semaphore>,
    peers: Mutex<BTreeMap<NodeId, Arc<tokio::sync::Semaphore>>>,
    per_peer: usize,
}

impl Budget {
    fn of(&self, peer: NodeId) -> Option<Arc<tokio::sync::Semaphore>> {
        let mut peers = self.peers.lock().ok()?;
        Some(
            peers
                .entry(peer)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_peer)))
                .clone(),
        )
    }
}

struct Shared {
    endpoint: quinn::Endpoint,
    budget: Budget,
    creds: Credentials,
    directory: Arc<RwLock<Directory>>,
    conns: Mutex<BTreeMap<NodeId, quinn::Connection>>,
    /// Snapshots (agent, epoch, peer) still being written: a retransmission of one is skipped.
    sending: Mutex<BTreeSet<(NodeId, AgentId, u64)>>,
    inbound: mpsc::Sender<Inbound>,
    events: EventSink,
    cfg: DriverConfig,
}

impl Shared {
    fn conn(&self, peer: NodeId) -> Option<quinn::Connection> {
        let conns = self.conns.lock().ok()?;
        conns
            .get(&peer)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Makes `conn` the connection to `peer` and starts its reader. The newest wins: a peer
    /// that dials again has usually lost the old one (a restart), which would otherwise look
    /// alive until its idle timeout. The old one is still read until it closes.
    fn adopt(self: &Arc<Self>, peer: NodeId, conn: quinn::Connection, inbound: bool) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(peer, conn.clone());
        }
        self.events.emit(Event::Connected {
            peer,
            addr: conn.remote_address(),
            inbound,
        });
        tokio::spawn(read_connection(self.clone(), peer, conn));
    }

    fn forget(&self, peer: NodeId, conn: &quinn::Connection) {
        if let Ok(mut conns) = self.conns.lock() {
            if conns
                .get(&peer)
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                conns.remove(&peer);
            }
        }
        // Forgotten, it must not live on (its reader and keep-alives would hold it open).
        conn.close(0u32.into(), b"forgotten");
    }
}

/// Tracks one hand-off seen through its frames, for [`Event::Phase`] and
/// [`Event::HandOff`].
struct Track {
    role: Role,
    peer: NodeId,
    started: Instant,
    /// The last frame of the hand-off: it expires `track_ttl` after.
    last: Instant,
    transfer_at: Option<Instant>,
    transfer_took: Option<Duration>,
    bytes: usize,
    seen: Vec<&'static str>,
    phases: Vec<(&'static str, Duration)>,
}

/// How many finished hand-offs a driver remembers, so that late duplicates of their frames
/// report nothing.
pub const FINISHED_REMEMBERED: usize = 256;

/// A mesh node on QUIC. See the module documentation of [`crate::quic`].
pub struct Driver<J: Journal, const N: usize> {
    node: Node<J, N, DRIVER_OUTBOX>,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Inbound>,
    writers: BTreeMap<NodeId, mpsc::Sender<Batch>>,
    /// Each peer's last status, its capabilities, and when it came.
    statuses: BTreeMap<NodeId, (NodeStatus, u8, Instant)>,
    /// By agent, epoch and peer: a peer's frames (forged ones included) touch only its own.
    tracks: BTreeMap<(AgentId, u64, NodeId), Track>,
    /// How many of `tracks` each peer has.
    tracks_of: BTreeMap<NodeId, usize>,
    /// The hand-offs whose report went out lately (at most [`FINISHED_REMEMBERED`]): a late
    /// duplicate of their last frame (a Done answering a re-sent Commit) starts no new report.
    finished: alloc::collections::VecDeque<(AgentId, u64, NodeId)>,
    started: Instant,
    next_tick: Instant,
    buf: Vec<u8>,
    stats: Arc<Mutex<DriverStats>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl<J: Journal, const N: usize> core::fmt::Debug for Driver<J, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.node.id())
            .finish_non_exhaustive()
    }
}

impl<J: Journal, const N: usize> Driver<J, N> {
    /// Binds the endpoint and resumes what `journal` holds ([`Node::restart`]). Must be called
    /// inside a tokio runtime. Peers are the `directory`'s; only they can connect.
    pub fn new<H: RoutedHost>(
        identity: &Identity,
        directory: Directory,
        journal: J,
        cfg: DriverConfig,
        host: &mut H,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let events = EventSink(tx.clone());
        let creds = Credentials::new(identity)?;
        let directory = Arc::new(RwLock::new(directory));
        // The endpoint's default server config is replaced per connection (accept_with), so
        // that a refusal names the peer's address.
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let initial = tls::server_config(
            &creds,
            directory.clone(),
            any,
            events.clone(),
            &cfg.transport,
        )?;
        let endpoint = quinn::Endpoint::server(initial, cfg.listen)?;
        let stats = Arc::new(Mutex::new(DriverStats::default()));
        let (per_peer, all) = cfg.budgets();
        let shared = Arc::new(Shared {
            endpoint,
            budget: Budget {
                all: Arc::new(tokio::sync::Semaphore::new(all)),
                peers: Mutex::new(BTreeMap::new()),
                per_peer,
            },
            creds,
            directory: directory.clone(),
            conns: Mutex::new(BTreeMap::new()),
            sending: Mutex::new(BTreeSet::new()),
            inbound: tx,
            events,
            cfg: cfg.clone(),
        });
        let acceptor = tokio::spawn(accept(shared.clone()));
        let mut writers = BTreeMap::new();
        if let Ok(d) = directory.read() {
            for (id, peer) in d.iter() {
                let (wtx, wrx) = mpsc::channel(64);
                tokio::spawn(write_peer(shared.clone(), id, *peer, wrx, stats.clone()));
                writers.insert(id, wtx);
            }
        }
        // The rollback check asks every peer of the directory before an agent runs again.
        let peers: Vec<NodeId> = directory
            .read()
            .map(|d| d.iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        let boot = boot_number();
        let node = Node::restart_checked(
            identity.node_id(),
            journal,
            cfg.mesh,
            host,
            (0, boot),
            &peers,
        );
        let now = Instant::now();
        let mut d = Driver {
            node,
            shared,
            rx,
            writers,
            statuses: BTreeMap::new(),
            tracks: BTreeMap::new(),
            tracks_of: BTreeMap::new(),
            finished: alloc::collections::VecDeque::new(),
            started: now,
            next_tick: now,
            buf: alloc::vec![0u8; cfg.max_frame_len],
            stats,
            acceptor,
        };
        d.flush(host);
        Ok(d)
    }

    /// Pins a peer while running (see [`Directory::insert`]) and starts its sender. Returns
    /// its node id. A key already pinned at another address moves there.
    pub fn add_peer(&mut self, key: PublicKey, addr: SocketAddr) -> NodeId {
        let id = match self.shared.directory.write() {
            Ok(mut d) => d.insert(key, addr),
            Err(_) => key.node_id(),
        };
        let peer = super::identity::Peer { addr, key };
        let (wtx, wrx) = mpsc::channel(64);
        tokio::spawn(write_peer(
            self.shared.clone(),
            id,
            peer,
            wrx,
            self.stats.clone(),
        ));
        // The old sender (if any) ends when its channel is dropped.
        self.writers.insert(id, wtx);
        id
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.node.id()
    }

    /// The protocol state machine (journal, stats, locations).
    pub fn node(&self) -> &Node<J, N, DRIVER_OUTBOX> {
        &self.node
    }

    /// The protocol state machine, mutably (e.g. [`Node::set_location`]).
    pub fn node_mut(&mut self) -> &mut Node<J, N, DRIVER_OUTBOX> {
        &mut self.node
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Milliseconds since the driver started: the protocol's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Waits for the next thing to do. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn wait(&mut self) -> Wake {
        let timer = self
            .node
            .poll_timeout()
            .map(|ms| self.started + Duration::from_millis(ms));
        let tick = self.next_tick;
        let deadline = timer.map_or(tick, |t| t.min(tick));
        tokio::select! {
            m = self.rx.recv() => match m {
                Some(i) => Wake::Inbound(i),
                None => Wake::Tick,
            },
            _ = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= tick {
                    self.next_tick = Instant::now() + self.shared.cfg.tick;
                    Wake::Tick
                } else {
                    Wake::Timer
                }
            }
        }
    }

    /// Handles what [`Driver::wait`] returned, and whatever else the network already delivered
    /// (up to [`MAX_BATCH`] records), then sends what the protocol queued, and returns what
    /// happened. Taking the waiting records first lets one group commit of the host
    /// ([`AgentHost::flush`](crate::mesh::AgentHost::flush), before the frames leave) cover
    /// all of them.
    pub fn handle<H: RoutedHost>(&mut self, host: &mut H, wake: Wake) -> Vec<Event> {
        self.handle_with(host, wake, |_| false)
    }

    /// [`Driver::handle`], with the agents run in the middle: after the waiting records were
    /// taken (messages now in their mailboxes) and before anything is sent, `run` runs the
    /// host's agents and says whether they changed (sent a message). If so, their outgoing
    /// messages are scanned at once. Then one group commit covers the deliveries, the agents'
    /// calls and what they sent, and the frames leave: an agent answers a message in the turn
    /// that brought it, not at the next tick.
    pub fn handle_with<H: RoutedHost>(
        &mut self,
        host: &mut H,
        wake: Wake,
        run: impl FnOnce(&mut H) -> bool,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let now = self.now_ms();
        let inbound = matches!(wake, Wake::Inbound(_));
        self.take(host, now, wake, &mut events);
        if inbound {
            for _ in 1..MAX_BATCH {
                // Room for this frame's answer (a full queue would drop it).
                if self.node.outbox_room() < 2 {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(i) => self.take(host, now, Wake::Inbound(i), &mut events),
                    Err(_) => break,
                }
            }
        }
        if run(host) {
            self.node.wake_messages(now);
            self.node.handle_timeout(host, now);
        }
        self.flush_into(host, &mut events);
        events
    }

    fn take<H: RoutedHost>(&mut self, host: &mut H, now: u64, wake: Wake, events: &mut Vec<Event>) {
        match wake {
            Wake::Inbound(Inbound::Record(peer, Record::Frame(bytes), _credit)) => {
                if let Ok(mut s) = self.stats.lock() {
                    s.frames_received += 1;
                }
                let what = Repr::decode(&bytes)
                    .ok()
                    .map(|r| (r.body.kind(), r.agent, r.epoch));
                if self.node.handle_frame(host, now, peer, &bytes).is_err() {
                    events.push(Event::Malformed { peer });
                } else if let Some((kind, agent, epoch)) = what {
                    if kind == FrameKind::Transfer {
                        if let Ok(mut s) = self.stats.lock() {
                            s.snapshots_received += 1;
                        }
                    }
                    let agent = AgentId::from_bytes(agent);
                    self.track(events, kind, agent, epoch, peer, bytes.len(), false);
                }
            }
            Wake::Inbound(Inbound::Record(peer, Record::Status(status, capabilities), _credit)) => {
                self.statuses
                    .insert(peer, (status, capabilities, Instant::now()));
                events.push(Event::Status { peer, status });
            }
            Wake::Inbound(Inbound::Event(e)) => {
                // A peer gone is no placement candidate, whatever its last status said.
                if let Event::Disconnected { peer, .. } = &e {
                    self.statuses.remove(peer);
                }
                events.push(e);
            }
            Wake::Timer | Wake::Tick => {
                self.node.handle_timeout(host, now);
                self.expire_tracks();
            }
        }
    }

    /// Starts owning `agent` (epoch 0) and runs it.
    pub fn start<H: RoutedHost>(&mut self, host: &mut H, agent: AgentId) -> Result<(), MeshError> {
        self.node.start(host, agent)
    }

    /// Starts handing `agent` to `target`; returns the attempt's epoch. Progress arrives as
    /// [`Event::Phase`] and ends with [`Event::HandOff`].
    pub fn migrate<H: RoutedHost>(
        &mut self,
        host: &mut H,
        agent: AgentId,
        target: NodeId,
    ) -> Result<(u64, Vec<Event>), MeshError> {
        if !self.writers.contains_key(&target) {
            return Err(MeshError::UnknownTarget);
        }
        let now = self.now_ms();
        let epoch = match self.node.journal().get(agent) {
            Some(r) if r.phase == Phase::Running => r.epoch.saturating_add(1),
            _ => return Err(MeshError::NotOwner),
        };
        // The host learns the route before anything can be captured.
        host.route(agent, target, epoch);
        self.node.migrate(host, now, agent, target)?;
        let mut events = Vec::new();
        self.flush_into(host, &mut events);
        Ok((epoch, events))
    }

    /// Tells every connected peer this node's status and capabilities (`wire::CAN_REWIND` if
    /// its host takes agents in the middle of a call): placement input for their
    /// [`Driver::select`].
    pub fn announce(&mut self, status: &NodeStatus, capabilities: u8) {
        let payload = wire::encode_status(status, capabilities);
        let mut rec = wire::header(wire::KIND_STATUS, payload.len()).to_vec();
        rec.extend_from_slice(&payload);
        for (peer, w) in &self.writers {
            if self.shared.conn(*peer).is_some() {
                let _ = w.try_send(alloc::vec![(rec.clone(), None)]);
            }
        }
    }

    /// The peers whose announced status is fresh, with it.
    pub fn live_peers(&self) -> Vec<(NodeId, NodeStatus)> {
        let ttl = self.shared.cfg.status_ttl;
        self.statuses
            .iter()
            .filter(|(_, (_, _, at))| at.elapsed() <= ttl)
            .map(|(p, (s, _, _))| (*p, *s))
            .collect()
    }

    /// Whether `peer`'s fresh status says it takes agents in the middle of a call; `None`
    /// without a fresh status.
    pub fn peer_can_rewind(&self, peer: NodeId) -> Option<bool> {
        let ttl = self.shared.cfg.status_ttl;
        self.statuses
            .get(&peer)
            .filter(|(_, _, at)| at.elapsed() <= ttl)
            .map(|(_, caps, _)| caps & wire::CAN_REWIND != 0)
    }

    /// The peer [`Policy::select`] prefers among the live peers' last announced statuses.
    pub fn select(&self, policy: &Policy) -> Option<NodeId> {
        self.select_for(policy, false)
    }

    /// [`select`](Self::select) for an agent that may be in the middle of a call: with
    /// `mid_call`, only among peers whose status says they take such agents.
    pub fn select_for(&self, policy: &Policy, mid_call: bool) -> Option<NodeId> {
        let live: Vec<(NodeId, NodeStatus)> = self
            .live_peers()
            .into_iter()
            .filter(|(p, _)| !mid_call || self.peer_can_rewind(*p) == Some(true))
            .collect();
        let statuses: Vec<NodeStatus> = live.iter().map(|p| p.1).collect();
        policy.select(&statuses).map(|i| live[i].0)
    }

    /// Sends what the protocol queued (also done by [`Driver::handle`] and
    /// [`Driver::migrate`]); returns the phases it started.
    pub fn flush<H: RoutedHost>(&mut self, host: &mut H) -> Vec<Event> {
        let mut events = Vec::new();
        self.flush_into(host, &mut events);
        events
    }

    fn flush_into<H: RoutedHost>(&mut self, host: &mut H, events: &mut Vec<Event>) {
        let mut batches: BTreeMap<NodeId, Batch> = BTreeMap::new();
        loop {
            let t = match self.node.poll_transmit(host, &mut self.buf) {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(_) => continue, // that frame is dropped; a timer re-sends
            };
            let bytes = &self.buf[..t.len];
            let Ok(r) = Repr::decode(bytes) else { continue };
            let (kind, agent, epoch) = (r.body.kind(), AgentId::from_bytes(r.agent), r.epoch);
            let mut rec = wire::header(wire::KIND_FRAME, t.len).to_vec();
            rec.extend_from_slice(bytes);
            let snapshot = (kind == FrameKind::Transfer).then_some((agent, epoch));
            batches.entry(t.to).or_default().push((rec, snapshot));
            self.track(events, kind, agent, epoch, t.to, t.len, true);
        }
        for (peer, batch) in batches {
            let n = batch.len() as u64;
            let sent = match self.writers.get(&peer) {
                Some(w) => w.try_send(batch).is_ok(),
                None => false,
            };
            if !sent {
                // Dropped like lost packets; messages among them go at the next scan.
                self.node.not_delivered_to(peer);
            }
            if let Ok(mut s) = self.stats.lock() {
                if sent {
                    s.frames_sent += n;
                } else {
                    s.frames_dropped += n;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        events: &mut Vec<Event>,
        kind: FrameKind,
        agent: AgentId,
        epoch: u64,
        peer: NodeId,
        len: usize,
        sent: bool,
    ) {
        use FrameKind as K;
        let (role, phase) = match (kind, sent) {
            (K::Offer, true) => (Role::Source, "offer"),
            (K::HaveDna, false) => (Role::Source, "have-dna"),
            (K::NeedDna, false) => (Role::Source, "need-dna"),
            (K::Transfer, true) => (Role::Source, "transfer"),
            (K::Prepared, false) => (Role::Source, "decided"),
            (K::Commit, true) => (Role::Source, "commit"),
            (K::Done, false) => (Role::Source, "done"),
            (K::Refuse, false) => (Role::Source, "refused"),
            (K::Abort, true) => (Role::Source, "abort"),
            (K::Offer, false) => (Role::Target, "offered"),
            (K::Transfer, false) => (Role::Target, "received"),
            (K::Prepared, true) => (Role::Target, "prepared"),
            (K::Commit, false) => (Role::Target, "committed"),
            (K::Done, true) => (Role::Target, "done"),
            (K::Abort, false) => (Role::Target, "aborted"),
            (K::Refuse, true) => (Role::Target, "refused"),
            _ => return,
        };
        let now = Instant::now();
        if self.finished.contains(&(agent, epoch, peer)) {
            return;
        }
        if !self.tracks.contains_key(&(agent, epoch, peer)) {
            // Follow at most so many hand-offs per peer: a peer offering ever new agents
            // gets its answers, but no more of this node's memory.
            let of_peer = self.tracks_of.entry(peer).or_insert(0);
            if *of_peer >= self.shared.cfg.max_tracks_per_peer {
                if let Ok(mut s) = self.stats.lock() {
                    s.tracks_refused += 1;
                }
                return;
            }
            *of_peer += 1;
        }
        let t = self
            .tracks
            .entry((agent, epoch, peer))
            .or_insert_with(|| Track {
                role,
                peer,
                started: now,
                last: now,
                transfer_at: None,
                transfer_took: None,
                bytes: 0,
                seen: Vec::new(),
                phases: Vec::new(),
            });
        t.last = now;
        if t.role != role || t.seen.contains(&phase) {
            return;
        }
        t.seen.push(phase);
        let elapsed = now - t.started;
        t.phases.push((phase, elapsed));
        if kind == K::Transfer {
            t.bytes = len;
            t.transfer_at = Some(now);
        }
        if (kind, sent) == (K::Prepared, false) && t.transfer_took.is_none() {
            t.transfer_took = t.transfer_at.map(|s| now - s);
        }
        events.push(Event::Phase {
            agent,
            epoch,
            peer,
            role,
            phase,
            elapsed,
            bytes: len,
        });
        let outcome = match (role, phase) {
            (Role::Source, "done") | (Role::Target, "done") => Some(true),
            (Role::Source, "refused")
            | (Role::Source, "abort")
            | (Role::Target, "aborted")
            | (Role::Target, "refused") => Some(false),
            _ => None,
        };
        if let Some(committed) = outcome {
            if self.finished.len() >= FINISHED_REMEMBERED {
                self.finished.pop_front();
            }
            self.finished.push_back((agent, epoch, peer));
            if let Some(t) = self.untrack(agent, epoch, peer) {
                events.push(Event::HandOff(HandOffReport {
                    agent,
                    epoch,
                    peer: t.peer,
                    role: t.role,
                    committed,
                    total: elapsed,
                    transfer: t.transfer_took,
                    bytes: t.bytes,
                    phases: t.phases,
                }));
            }
        }
    }

    /// Forgets followed hand-offs that had no frame for `track_ttl`.
    fn expire_tracks(&mut self) {
        let ttl = self.shared.cfg.track_ttl;
        let stale: Vec<(AgentId, u64, NodeId)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.last.elapsed() >= ttl)
            .map(|(k, _)| *k)
            .collect();
        for (agent, epoch, peer) in &stale {
            self.untrack(*agent, *epoch, *peer);
        }
        let expired = stale.len() as u64;
        if expired > 0 {
            if let Ok(mut s) = self.stats.lock() {
                s.tracks_expired += expired;
            }
        }
    }

    fn untrack(&mut self, agent: AgentId, epoch: u64, peer: NodeId) -> Option<Track> {
        let t = self.tracks.remove(&(agent, epoch, peer))?;
        if let Some(n) = self.tracks_of.get_mut(&t.peer) {
            *n -= 1;
            if *n == 0 {
                self.tracks_of.remove(&t.peer);
            }
        }
        Some(t)
    }

    /// Bytes read from peers' streams and not yet handled (bounded by `inbox_bytes`, and by
    /// `peer_inbox_bytes` per peer).
    pub fn inbox_waiting(&self) -> usize {
        self.shared.cfg.budgets().1 - self.shared.budget.all.available_permits()
    }

    /// Hand-offs followed for reports now (bounded by `max_tracks_per_peer` per peer).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// Closes every connection and the endpoint, and waits (at most `grace`) for the peers to
    /// hear it. The journal is already durable; nothing else needs saving.
    pub async fn shutdown(self, grace: Duration) {
        self.acceptor.abort();
        self.shared.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(grace, self.shared.endpoint.wait_idle()).await;
    }
}

/// Accepts connections; each gets a server configuration naming its address.
async fn accept(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let addr = incoming.remote_address();
        let cfg = match tls::server_config(
            &shared.creds,
            shared.directory.clone(),
            addr,
            shared.events.clone(),
            &shared.cfg.transport,
        ) {
            Ok(c) => c,
            Err(_) => {
                incoming.refuse();
                continue;
            }
        };
        let connecting = match incoming.accept_with(Arc::new(cfg)) {
            Ok(c) => c,
            Err(_) => continue,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // A refused handshake was reported by the verifier.
            let Ok(conn) = connecting.await else { return };
            // The verifier accepted this key; read again from the same certificates, so the
            // connection is adopted as the node the verifier checked.
            let peer = tls::peer_key(&conn)
                .ok()
                .and_then(|k| shared.directory.read().ok().and_then(|d| d.node_of(&k)));
            match peer {
                Some(peer) => shared.adopt(peer, conn, true),
                None => conn.close(1u32.into(), b"not pinned"),
            }
        });
    }
}

/// Reads every stream a peer opens on `conn`.
async fn read_connection(shared: Arc<Shared>, peer: NodeId, conn: quinn::Connection) {
    loop {
        match conn.accept_uni().await {
            Ok(recv) => {
                tokio::spawn(read_stream(shared.clone(), peer, recv));
            }
            Err(e) => {
                shared.forget(peer, &conn);
                shared.events.emit(Event::Disconnected {
                    peer,
                    reason: e.to_string(),
                });
                return;
            }
        }
    }
}

/// Reads one stream's records (each at most `max_frame_len`) into the node's inbox, within the
/// peer's and the node's inbound byte budgets: once a record is read, its bytes are taken from
/// both before it is queued, and come back when the driver has handled it. While a budget is
/// spent the stream is not read further, and the peer waits in QUIC's flow control.
///
/// A record is read whole before it waits for budget, never halfway: a stream waiting in the
/// middle of a record, for budget that other streams' queued records hold, could keep those
/// streams' bytes in QUIC's connection window while its own could not arrive (a deadlock the
/// flood test found). So a peer makes the node hold at most its connection window (in QUIC),
/// one record per open stream, and its budget of queued records (`docs/quic.md`, "Bounds").
async fn read_stream(shared: Arc<Shared>, peer: NodeId, mut recv: quinn::RecvStream) {
    let Some(mine) = shared.budget.of(peer) else {
        return;
    };
    let all = shared.budget.all.clone();
    let refuse = |recv: &mut quinn::RecvStream, error| {
        let _ = recv.stop(1u32.into());
        shared.events.emit(Event::StreamRefused { peer, error });
    };
    loop {
        let mut head = [0u8; wire::RECORD_HEADER_LEN];
        match recv.read_exact(&mut head).await {
            Ok(()) => {}
            // The stream ended between records: done.
            Err(quinn::ReadExactError::FinishedEarly(0)) => return,
            Err(quinn::ReadExactError::FinishedEarly(_)) => {
                return refuse(&mut recv, wire::WireError::Truncated)
            }
            Err(_) => return, // the connection's reader reports it
        }
        let (kind, len) = match wire::parse_header(&head, shared.cfg.max_frame_len) {
            Ok(h) => h,
            Err(e) => return refuse(&mut recv, e),
        };
        let mut body = alloc::vec![0u8; len];
        match recv.read_exact(&mut body).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(_)) => {
                return refuse(&mut recv, wire::WireError::Truncated)
            }
            Err(_) => return,
        }
        let record = match wire::record(kind, body) {
            Ok(r) => r,
            // Framed right, but its payload does not decode (a status from a newer or
            // mistaken peer): that record is skipped and counted, the stream goes on. The
            // frames behind it on the same ordered stream must not be lost with it.
            Err(e) => {
                shared.events.emit(Event::StreamRefused { peer, error: e });
                continue;
            }
        };
        // Waits while the peer (or everyone) has too much queued here.
        let need = wire::RECORD_HEADER_LEN + len;
        let (Ok(a), Ok(b)) = (
            mine.acquire_many(need as u32).await,
            all.acquire_many(need as u32).await,
        ) else {
            return;
        };
        a.forget();
        b.forget();
        let credit = super::Credit::new(alloc::vec![(mine.clone(), need), (all.clone(), need)]);
        if shared
            .inbound
            .send(Inbound::Record(peer, record, credit))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends the batches for one peer: dials (with backoff) when there is no connection, then
/// writes every frame but snapshots on the connection's ordered stream, and each snapshot on a
/// stream of its own.
async fn write_peer(
    shared: Arc<Shared>,
    id: NodeId,
    peer: super::identity::Peer,
    mut rx: mpsc::Receiver<Batch>,
    stats: Arc<Mutex<DriverStats>>,
) {
    let mut backoff = shared.cfg.backoff_min;
    let mut retry_at = Instant::now();
    let mut dialed_at: Option<Instant> = None;
    // Every frame but a snapshot goes on one stream per connection, in the order the node
    // queued them: a window of messages whose batches went on streams of their own arrived
    // out of order and was refused (`OutOfOrder`) and sent again. Snapshots keep a stream each,
    // so a large one holds nothing else up.
    let mut ordered: Option<(usize, quinn::SendStream)> = None;
    let drop_batch = |n: usize| {
        if let Ok(mut s) = stats.lock() {
            s.frames_dropped += n as u64;
        }
    };
    while let Some(mut batch) = rx.recv().await {
        let conn = match shared.conn(id) {
            Some(c) => c,
            None => {
                if Instant::now() < retry_at {
                    drop_batch(batch.len());
                    continue;
                }
                // A connection that died young (e.g. the peer refused our key after the
                // handshake) counts as a failed dial: the backoff keeps growing.
                match dialed_at {
                    Some(t) if t.elapsed() < Duration::from_secs(2) => {
                        backoff = (backoff * 2).min(shared.cfg.backoff_max);
                    }
                    Some(_) => backoff = shared.cfg.backoff_min,
                    None => {}
                }
                match dial(&shared, peer.key, peer.addr).await {
                    Ok(c) => {
                        dialed_at = Some(Instant::now());
                        retry_at = Instant::now() + backoff;
                        shared.adopt(id, c.clone(), false);
                        c
                    }
                    Err(e) => {
                        if let Ok(mut s) = stats.lock() {
                            s.dial_failures += 1;
                        }
                        shared.events.emit(Event::DialFailed {
                            peer: id,
                            addr: peer.addr,
                            reason: e.to_string(),
                            retry_in: backoff,
                        });
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(shared.cfg.backoff_max);
                        drop_batch(batch.len());
                        continue;
                    }
                }
            }
        };
        // A snapshot still being written for the same attempt is not sent twice.
        let mut claimed = Vec::new();
        if let Ok(mut sending) = shared.sending.lock() {
            batch.retain(|(_, snap)| match snap {
                Some((agent, epoch)) => {
                    let fresh = sending.insert((id, *agent, *epoch));
                    if fresh {
                        claimed.push((id, *agent, *epoch));
                    }
                    fresh
                }
                None => true,
            });
        }
        if batch.is_empty() {
            continue;
        }
        let (snapshots, rest): (Batch, Batch) = batch.into_iter().partition(|(_, s)| s.is_some());
        if !rest.is_empty() && send_ordered(&conn, &mut ordered, &rest).await.is_err() {
            // Whatever of it QUIC did not take is lost with the stream: timers send it again.
            // The next batch opens a new stream; the connection is forgotten only if it is
            // closed (a peer that stopped the stream left it open).
            ordered = None;
            if conn.close_reason().is_some() {
                shared.forget(id, &conn);
            }
            drop_batch(rest.len());
        }
        if snapshots.is_empty() {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            // A stream the peer stopped (a snapshot it refused) leaves the connection up.
            if send_batch(&conn, &snapshots, id, &shared.events)
                .await
                .is_err()
                && conn.close_reason().is_some()
            {
                shared.forget(id, &conn);
            }
            if let Ok(mut sending) = shared.sending.lock() {
                for c in claimed {
                    sending.remove(&c);
                }
            }
        });
    }
}

/// Writes `batch` on the connection's ordered stream (opened on first use, and again on a new
/// connection).
async fn send_ordered(
    conn: &quinn::Connection,
    ordered: &mut Option<(usize, quinn::SendStream)>,
    batch: &Batch,
) -> Result<(), io::Error> {
    if ordered.as_ref().map(|o| o.0) != Some(conn.stable_id()) {
        let s = conn.open_uni().await.map_err(io::Error::other)?;
        *ordered = Some((conn.stable_id(), s));
    }
    let Some((_, s)) = ordered.as_mut() else {
        return Err(io::Error::other("no ordered stream"));
    };
    for (rec, _) in batch {
        s.write_all(rec).await.map_err(io::Error::other)?;
    }
    Ok(())
}

async fn dial(
    shared: &Shared,
    key: PublicKey,
    addr: SocketAddr,
) -> Result<quinn::Connection, io::Error> {
    let cfg = tls::client_config(
        &shared.creds,
        key,
        addr,
        shared.events.clone(),
        &shared.cfg.transport,
    )?;
    let connecting = shared
        .endpoint
        .connect_with(cfg, addr, "mielin")
        .map_err(io::Error::other)?;
    let timeout = shared.cfg.transport.idle_timeout;
    match tokio::time::timeout(timeout, connecting).await {
        // The verifier accepted only `key`; checked again on the finished handshake's
        // certificates, so nothing else can be adopted as the node dialled.
        Ok(Ok(c)) if tls::peer_key(&c) == Ok(key) => Ok(c),
        Ok(Ok(c)) => {
            c.close(1u32.into(), b"not the node dialled");
            Err(io::Error::other("the peer's key is not the one pinned"))
        }
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake timed out",
        )),
    }
}

async fn send_batch(
    conn: &quinn::Connection,
    batch: &Batch,
    peer: NodeId,
    events: &EventSink,
) -> Result<(), io::Error> {
    let mut s = conn.open_uni().await.map_err(io::Error::other)?;
    let opened = Instant::now();
    for (rec, snapshot) in batch {
        let Some((agent, epoch)) = snapshot.filter(|_| rec.len() >= PROGRESS_MIN_BYTES) else {
            s.write_all(rec).await.map_err(io::Error::other)?;
            continue;
        };
        // A large snapshot in tenths, each reported once QUIC took it.
        let total = rec.len();
        let step = total.div_ceil(10);
        let mut sent = 0;
        while sent < total {
            let end = (sent + step).min(total);
            s.write_all(&rec[sent..end])
                .await
                .map_err(io::Error::other)?;
            sent = end;
            events.emit(Event::Progress {
                agent,
                epoch,
                peer,
                sent: sent as u64,
                total: total as u64,
                elapsed: opened.elapsed(),
            });
        }
    }
    s.finish().map_err(io::Error::other)?;
    // Waits until the peer has read everything (or the stream failed).
    let _ = s.stopped().await;
    Ok(())
}

/// A number for this boot of the node (the rollback check's; it must differ between boots):
/// the wall clock in nanoseconds mixed with the process id.
fn boot_number() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}
