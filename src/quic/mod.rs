//! The mesh protocol over QUIC between processes (feature `quic`, std only).
//!
//! [`Driver`] runs a [`mesh::Node`](crate::mesh::Node) on the caller's tokio runtime with
//! `quinn` (rustls, `ring` provider):
//!
//! - **Who may connect.** Every node has an Ed25519 key pair ([`Identity`], a key file created on
//!   first run); its node id is derived from the public key ([`PublicKey::node_id`]). The
//!   embedder fills a [`Directory`]: node id → address → pinned key, like SSH known hosts.
//!   Both sides of every connection present a self-signed certificate, and custom rustls
//!   verifiers accept only the pinned keys (and check the handshake signature, so the peer
//!   holds the key). The key pinned is the certificate's own `subjectPublicKeyInfo`, read by
//!   the parser rustls checks the signature with ([`PublicKey::from_certificates`]: exactly one
//!   certificate, an Ed25519 key, nothing after it). An unpinned peer cannot connect, hand an
//!   agent over or send a message; the refusal is reported as [`Event::Refused`] with its
//!   address, the id its key claims and a [`RefusalReason`].
//!   The authenticated peer is the `from` of [`Node::handle_frame`](crate::mesh::Node::handle_frame).
//! - **Snapshots stay signed** on top of TLS: [`WasmHost`] sends each agent as a signed
//!   version-3 container (wire format, with its inbox inside) bound to its target and epoch,
//!   signed with the node key, and verifies received ones with a
//!   [`TrustList`](crate::migration::TrustList) holding the pinned keys, so a relay or a
//!   compromised connection cannot forge an agent.
//! - **Mapping.** One connection per peer (whichever side dialled first; simultaneous dials may
//!   briefly make two, harmless since every frame is idempotent), used in both directions. Each
//!   batch of frames for a peer — what one [`Driver::handle`] queued, so a hand-off's snapshot
//!   has a stream of its own — is one unidirectional stream of length-prefixed records
//!   ([`wire`]). Lost streams are the protocol's lost frames: its timers re-send.
//! - **Flow control and bounds.** QUIC's windows ([`Transport`]); a peer's record is refused
//!   above [`DriverConfig::max_frame_len`] before its payload is read; at most
//!   `Transport::max_streams` streams per connection; inbound bytes held per peer and in total
//!   are budgeted, and so are the hand-offs tracked per peer and their lifetime (`docs/quic.md`,
//!   "Bounds").
//! - **Reconnects** with exponential backoff ([`DriverConfig::backoff_min`] to `backoff_max`);
//!   frames meant for a peer in backoff are dropped like lost packets. **Idle timeout** and
//!   keep-alive in [`Transport`]. **Clean shutdown**: [`Driver::shutdown`].
//! - **Placement.** Nodes announce their [`NodeStatus`]
//!   ([`Driver::announce`]); [`Driver::select`] runs [`Policy::select`](crate::Policy::select)
//!   over the live peers' last announcements.
//!
//! The loop is the embedder's: `wait` (async, cancel-safe), then `handle` (sync, with the
//! host), which returns [`Event`]s — hand-off phases, reports with bytes and times,
//! connections, refusals. The `mielin` command (its own package) is a node you can run
//! (`docs/cli.md`).

mod driver;
mod fleet_ca;
mod host;
mod identity;
mod tls;
/// The stream framing ([`crate::mesh::records`]).
pub use crate::mesh::records as wire;

pub use crate::mesh::certificate::CertificateError;
pub use driver::{Driver, DriverConfig, DriverStats, RoutedHost, Wake, DRIVER_OUTBOX, MAX_BATCH};
pub use fleet_ca::FleetCa;
pub use host::{
    AgentStats, NodeFiles, NodeJournal, SavedAgent, Signed, WasmHost, JOURNAL_CAPACITY,
};
pub use identity::{from_hex, to_hex, Directory, Identity, Peer, PublicKey};
pub use tls::{Transport, ALPN};

use crate::{AgentId, NodeId, NodeStatus};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;
use std::net::SocketAddr;

/// The quinn configurations the driver uses — pinned mutual TLS with `identity`'s key, the
/// same transport settings — for a server accepting the keys of `directory` and a client
/// dialling the node pinned to `peer` at `peer_addr`. For a raw quinn baseline (the
/// benchmark) or another protocol on the same trust. Refusals are not reported.
pub fn quinn_configs(
    identity: &Identity,
    directory: Directory,
    peer: PublicKey,
    peer_addr: SocketAddr,
    transport: &Transport,
) -> std::io::Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let events = EventSink(tx);
    let creds = tls::Credentials::new(identity)?;
    let dir = alloc::sync::Arc::new(std::sync::RwLock::new(directory));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok((
        tls::server_config(&creds, dir, any, events.clone(), transport)?,
        tls::client_config(&creds, peer, peer_addr, events, transport)?,
    ))
}

/// Which side of a hand-off this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It sends the agent.
    Source,
    /// It receives the agent.
    Target,
}

/// A finished hand-off, as this node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOffReport {
    /// The agent.
    pub agent: AgentId,
    /// The attempt's epoch.
    pub epoch: u64,
    /// The other node.
    pub peer: NodeId,
    /// This node's side.
    pub role: Role,
    /// Committed (the target runs it) or aborted.
    pub committed: bool,
    /// From the first frame of the attempt to the last.
    pub total: Duration,
    /// From the snapshot's sending to the target's Prepared (the source sees it); `None` on
    /// the target or when no snapshot was sent.
    pub transfer: Option<Duration>,
    /// The snapshot frame's bytes.
    pub bytes: usize,
    /// Each phase and when it happened after the start.
    pub phases: Vec<(&'static str, Duration)>,
}

/// What the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer's certificate did not name a pinned key (or not the one pinned for the node
    /// dialled), or named no key at all: the handshake was refused.
    Refused {
        /// The peer's address.
        addr: SocketAddr,
        /// The node id its key claims (`None`: its certificates named no Ed25519 key).
        claimed: Option<NodeId>,
        /// The key of its certificate (the key its handshake signature is checked with).
        key: Option<PublicKey>,
        /// It dialled us (`true`) or we dialled it.
        inbound: bool,
        /// Why.
        reason: RefusalReason,
    },
    /// A connection to a pinned peer is up.
    Connected {
        /// The peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// It dialled us.
        inbound: bool,
    },
    /// A connection closed.
    Disconnected {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// A dial failed; the next one waits `retry_in`.
    DialFailed {
        /// The peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: String,
        /// The backoff.
        retry_in: Duration,
    },
    /// A peer's stream broke the framing and was refused.
    StreamRefused {
        /// The peer.
        peer: NodeId,
        /// How.
        error: wire::WireError,
    },
    /// A frame from a peer did not decode.
    Malformed {
        /// The peer.
        peer: NodeId,
    },
    /// A peer announced its status.
    Status {
        /// The peer.
        peer: NodeId,
        /// Its status.
        status: NodeStatus,
    },
    /// A hand-off reached a phase (first time only). Source phases: `offer`, `have-dna` or
    /// `need-dna`, `transfer`, `decided` (the target prepared; the decision is journaled),
    /// `commit`, `done`, or `refused`/`abort`. Target phases: `offered`, `received` (verified
    /// and journaled as prepared), `prepared`, `committed` (running here), `done`, or
    /// `aborted`.
    Phase {
        /// The agent.
        agent: AgentId,
        /// The attempt's epoch.
        epoch: u64,
        /// The other node.
        peer: NodeId,
        /// This node's side.
        role: Role,
        /// The phase.
        phase: &'static str,
        /// Since the attempt's first frame.
        elapsed: Duration,
        /// The frame's bytes.
        bytes: usize,
    },
    /// A hand-off ended.
    HandOff(HandOffReport),
    /// A large snapshot (at least [`PROGRESS_MIN_BYTES`]) is being written to a peer: emitted
    /// each time another tenth of it was accepted into the stream's send buffer, the last at
    /// its end. QUIC accepts bytes only up to the flow-control window ([`Transport`]'s stream
    /// window, 16 MiB by default) ahead of what the peer has read: a snapshot within the window
    /// reports as fast as it is copied, a larger one as the peer reads. Receipt is the target's
    /// `prepared` phase.
    Progress {
        /// The agent.
        agent: AgentId,
        /// The attempt's epoch.
        epoch: u64,
        /// The target.
        peer: NodeId,
        /// Bytes written so far.
        sent: u64,
        /// The snapshot frame's length.
        total: u64,
        /// Since the stream was opened.
        elapsed: Duration,
    },
}

/// Why a peer was refused ([`Event::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RefusalReason {
    /// It dialled us with a certificate for an Ed25519 key that no node in the directory is
    /// pinned to.
    #[error("not pinned")]
    NotPinned,
    /// We dialled a node and the certificate's key is not the one pinned for that node (it
    /// may be another node's, or nobody's).
    #[error("not the key pinned for the node dialled")]
    NotTheNodeDialled,
    /// Its certificates do not name exactly one Ed25519 key
    /// ([`mesh::certificate`](crate::mesh::certificate)).
    #[error("certificate refused: {0}")]
    Certificate(#[from] CertificateError),
}

/// Snapshots from this size on report their progress ([`Event::Progress`]).
pub const PROGRESS_MIN_BYTES: usize = 1 << 20;

/// Something from the network for the driver's loop.
#[derive(Debug)]
pub enum Inbound {
    /// A record from an authenticated peer, with the inbox bytes it holds (given back when it
    /// is dropped, once handled).
    Record(NodeId, wire::Record, Credit),
    /// An event from a network task.
    Event(Event),
}

/// Bytes of the driver's inbound budgets (per peer and in all, [`DriverConfig`]) that a record
/// holds while it waits to be handled; they are given back when it is dropped. A network task
/// takes them before it reads more of a peer's stream, so a peer that sends faster than the
/// node handles waits in QUIC's flow control instead of growing the node's memory.
/// `Credit::default()` holds nothing (a record made by hand, e.g. in a test).
#[derive(Debug, Default)]
pub struct Credit {
    held: Vec<(alloc::sync::Arc<tokio::sync::Semaphore>, usize)>,
}

impl Credit {
    pub(crate) fn new(held: Vec<(alloc::sync::Arc<tokio::sync::Semaphore>, usize)>) -> Credit {
        Credit { held }
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        for (sem, n) in self.held.drain(..) {
            sem.add_permits(n);
        }
    }
}

/// Where network tasks and verifiers report events; a full queue drops them.
#[derive(Debug, Clone)]
pub(crate) struct EventSink(tokio::sync::mpsc::Sender<Inbound>);

impl EventSink {
    pub(crate) fn emit(&self, e: Event) {
        let _ = self.0.try_send(Inbound::Event(e));
    }
}
