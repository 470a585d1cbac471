//! Deterministic simulation of the mesh hand-off protocol (FoundationDB / TigerBeetle style).
//!
//! Each seed builds a few nodes and agents, then runs a fault phase — random migrations over a
//! network that drops, duplicates, reorders, delays and partitions, with nodes crashing and
//! restarting from their journals — and a healing phase with no new faults. After every step the
//! invariants are checked:
//! - **at most one running copy** of each agent (hosts) and at most one owner record (journals);
//! - **no loss**: every agent has exactly one owner or committed in-doubt holder;
//! - **fencing**: the epoch an agent runs at and its state (a counter) never go back;
//! - after healing, **every hand-off ended**: no in-doubt or undecided record, each agent runs
//!   exactly once.
//!
//! `MIELIN_SIM_SEED=<n>` replays one seed verbosely; `MIELIN_SIM_SEEDS=<n>` sets how many seeds
//! run (default 300, what `cargo test` and CI run; the release run of docs/protocol.md runs 2000
//! and more); `MIELIN_SIM_FIRST=<n>` where they start.

use mielin_cells::mesh::frame::{MAX_DELIVER_LEN, MAX_MESSAGE_LEN};
use mielin_cells::mesh::{
    AgentHost, AgentInfo, Config, Delivery, HostRefusal, Journal, MemJournal, MeshError, Node,
    Notice, Outgoing, Phase, Stream,
};
#[cfg(feature = "alloc")]
use mielin_cells::{
    mesh::{LogJournal, LOG_JOURNAL_RECORD},
    storage::MemLog,
};
use mielin_cells::{AgentId, NodeId};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

const NODES: usize = 4;
const AGENTS: usize = 6;
const CAP: usize = 16;
const STEP_MS: u64 = 5;
/// Simulated time with faults; shorter under Miri, which runs about a thousand times slower.
const FAULT_MS: u64 = if cfg!(miri) { 300 } else { 3_000 };
const HEAL_MS: u64 = 60_000;
const DNA_LEN: usize = 64;

/// splitmix64: a tiny, good-enough PRNG with no dependency.
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
    /// True with probability `per_mille`/1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn node_id(i: usize) -> NodeId {
    NodeId::from_bytes([i as u8 + 1; 16])
}
fn agent_id(i: usize) -> AgentId {
    AgentId::from_bytes([0xa0 + i as u8; 16])
}
fn dna_hash(a: AgentId) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..16].copy_from_slice(a.as_bytes());
    h
}

/// An agent's state in the simulator: a counter that grows while it runs, plus its messaging
/// state, all of which travels in its (fake) snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
struct AgentSt {
    counter: u64,
    /// Per addressee: the last sequence number used.
    next_seq: BTreeMap<AgentId, u64>,
    /// Per sender: the last sequence number accepted.
    last_in: BTreeMap<AgentId, u64>,
    /// Accepted, not yet consumed: (sender, seq).
    mailbox: Vec<(AgentId, u64)>,
    /// Sent, not yet acknowledged: (addressee, seq), oldest first.
    outbox: Vec<(AgentId, u64)>,
}

const MAILBOX: usize = 3;
const OUTBOX_PER_AGENT: usize = 4;

fn put_id_seq(out: &mut Vec<u8>, list: impl Iterator<Item = (AgentId, u64)>) {
    let items: Vec<_> = list.collect();
    out.push(items.len() as u8);
    for (a, s) in items {
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(&s.to_le_bytes());
    }
}

fn get_id_seq(b: &mut &[u8]) -> Option<Vec<(AgentId, u64)>> {
    let (&n, rest) = b.split_first()?;
    *b = rest;
    let mut v = Vec::new();
    for _ in 0..n {
        if b.len() < 24 {
            return None;
        }
        let a = AgentId::from_bytes(b[..16].try_into().unwrap());
        let s = u64::from_le_bytes(b[16..24].try_into().unwrap());
        v.push((a, s));
        *b = &b[24..];
    }
    Some(v)
}

impl AgentSt {
    fn encode(&self, agent: AgentId) -> Vec<u8> {
        let mut out = agent.as_bytes().to_vec();
        out.extend_from_slice(&self.counter.to_le_bytes());
        put_id_seq(&mut out, self.next_seq.iter().map(|(a, s)| (*a, *s)));
        put_id_seq(&mut out, self.last_in.iter().map(|(a, s)| (*a, *s)));
        put_id_seq(&mut out, self.mailbox.iter().copied());
        put_id_seq(&mut out, self.outbox.iter().copied());
        out
    }
    fn decode(agent: AgentId, mut b: &[u8]) -> Option<AgentSt> {
        if b.len() < 24 || &b[..16] != agent.as_bytes() {
            return None;
        }
        let counter = u64::from_le_bytes(b[16..24].try_into().unwrap());
        b = &b[24..];
        let st = AgentSt {
            counter,
            next_seq: get_id_seq(&mut b)?.into_iter().collect(),
            last_in: get_id_seq(&mut b)?.into_iter().collect(),
            mailbox: get_id_seq(&mut b)?,
            outbox: get_id_seq(&mut b)?,
        };
        b.is_empty().then_some(st)
    }
}

/// A message's bytes: its sender, addressee and number, so a mix-up shows, then a pattern to a
/// length drawn from them: from 40 bytes to the longest a frame carries (one in eight), so
/// frames of every size up to the longest Deliver cross the simulated network.
fn payload(from: AgentId, to: AgentId, seq: u64) -> Vec<u8> {
    let mut p = from.as_bytes().to_vec();
    p.extend_from_slice(to.as_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    let mut r = Rng(seq ^ u64::from(from.as_bytes()[0]) << 8 ^ u64::from(to.as_bytes()[0]) << 16);
    let len = match r.below(8) {
        0 => MAX_MESSAGE_LEN,
        _ => 40 + r.below((MAX_MESSAGE_LEN - 40) as u64) as usize,
    };
    p.extend((p.len()..len).map(|i| (i as u64 ^ seq) as u8));
    p
}

/// What a host keeps durably (the rollback fault restores an older copy of it with the
/// journal's, as a VM snapshot or a restored backup would).
#[derive(Clone)]
struct Durable {
    owned: BTreeMap<AgentId, AgentSt>,
    prepared: BTreeMap<(AgentId, u64), AgentSt>,
    dna: BTreeSet<[u8; 32]>,
}

/// A fake host. Durable: owned and prepared copies, DNA held. Volatile (lost in a crash): which
/// agents run.
#[derive(Default)]
struct SimHost {
    owned: BTreeMap<AgentId, AgentSt>,
    prepared: BTreeMap<(AgentId, u64), AgentSt>,
    dna: BTreeSet<[u8; 32]>,
    running: BTreeMap<AgentId, u64>,
    /// The simulator's directory: who runs what (refreshed every step).
    directory: BTreeMap<AgentId, NodeId>,
    /// Set by the node's journal when the node crashed in the middle of a write: from then on,
    /// until the simulator takes the node down, nothing the host does is durable or visible
    /// (the process is gone).
    dead: Rc<Cell<bool>>,
}

impl SimHost {
    fn durable(&self) -> Durable {
        Durable {
            owned: self.owned.clone(),
            prepared: self.prepared.clone(),
            dna: self.dna.clone(),
        }
    }
}

impl AgentHost for SimHost {
    fn describe(&mut self, agent: AgentId) -> Option<AgentInfo> {
        self.owned.get(&agent).map(|st| AgentInfo {
            dna_hash: dna_hash(agent),
            snapshot_len: st.encode(agent).len() as u32,
            dna_len: DNA_LEN as u32,
        })
    }
    fn has_dna(&mut self, h: &[u8; 32]) -> bool {
        self.dna.contains(h)
    }
    fn stop(&mut self, agent: AgentId) {
        self.running.remove(&agent);
    }
    fn capture(
        &mut self,
        agent: AgentId,
        with_dna: bool,
        out: &mut [u8],
    ) -> Result<usize, MeshError> {
        let st = self.owned.get(&agent).ok_or(MeshError::HostRefused {
            reason: HostRefusal::UnknownAgent,
        })?;
        let mut bytes = st.encode(agent);
        if with_dna {
            bytes.extend_from_slice(&[0xd5; DNA_LEN]);
        }
        let dst = out
            .get_mut(..bytes.len())
            .ok_or(MeshError::BufferTooSmall {
                needed: bytes.len(),
                available: 0,
            })?;
        dst.copy_from_slice(&bytes);
        Ok(bytes.len())
    }
    fn prepare(
        &mut self,
        agent: AgentId,
        epoch: u64,
        with_dna: bool,
        s: &[u8],
    ) -> Result<(), MeshError> {
        if self.dead.get() {
            return Err(MeshError::JournalIo);
        }
        let bad = MeshError::HostRefused {
            reason: HostRefusal::Snapshot,
        };
        let body = if with_dna {
            let n = s.len().checked_sub(DNA_LEN).ok_or(bad)?;
            self.dna.insert(dna_hash(agent));
            &s[..n]
        } else if self.dna.contains(&dna_hash(agent)) {
            s
        } else {
            return Err(MeshError::HostRefused {
                reason: HostRefusal::Snapshot,
            });
        };
        let st = AgentSt::decode(agent, body).ok_or(bad)?;
        self.prepared.insert((agent, epoch), st);
        Ok(())
    }
    fn run(&mut self, agent: AgentId, epoch: u64) {
        if self.dead.get() {
            return;
        }
        if let Some(c) = self.prepared.remove(&(agent, epoch)) {
            self.owned.insert(agent, c);
        }
        self.prepared.retain(|(a, _), _| *a != agent);
        assert!(
            self.owned.contains_key(&agent),
            "run without a copy of {agent:?}"
        );
        self.running.insert(agent, epoch);
    }
    fn discard(&mut self, agent: AgentId, epoch: u64) {
        if self.dead.get() {
            return;
        }
        self.prepared.remove(&(agent, epoch));
    }
    // As `Cells` does: after a restart, the prepared copies the node does not name go.
    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool) {
        if self.dead.get() {
            return;
        }
        self.prepared.retain(|&(a, e), _| keep(a, e));
    }
    fn release(&mut self, agent: AgentId) {
        self.running.remove(&agent);
        if self.dead.get() {
            return;
        }
        self.owned.remove(&agent);
    }
    // Dedup per sender agent: the simulated network is honest, so which node delivered a
    // message does not matter here (the library's Inbox also keys by the peer).
    fn deliver(
        &mut self,
        to: AgentId,
        _: NodeId,
        from: AgentId,
        _: Stream,
        seq: u64,
        p: &[u8],
    ) -> Delivery {
        if self.dead.get() {
            return Delivery::Full;
        }
        assert!(
            self.running.contains_key(&to),
            "delivery to {to:?}, which does not run here"
        );
        assert_eq!(p, payload(from, to, seq), "payload mixed up");
        let st = self.owned.get_mut(&to).unwrap();
        let last = st.last_in.get(&from).copied().unwrap_or(0);
        if seq <= last {
            Delivery::Duplicate
        } else if seq > last + 1 {
            Delivery::OutOfOrder
        } else if st.mailbox.len() >= MAILBOX {
            Delivery::Full
        } else {
            st.last_in.insert(from, seq);
            st.mailbox.push((from, seq));
            Delivery::Accepted
        }
    }
    fn outgoing(&mut self, agent: AgentId, f: &mut dyn FnMut(Outgoing<'_>)) {
        if let Some(st) = self.owned.get(&agent) {
            for &(to, seq) in &st.outbox {
                f(Outgoing {
                    to,
                    stream: [0; 16],
                    seq,
                    payload: &payload(agent, to, seq),
                });
            }
        }
    }
    fn acked(&mut self, agent: AgentId, to: AgentId, seq: u64) {
        if self.dead.get() {
            return;
        }
        if let Some(st) = self.owned.get_mut(&agent) {
            st.outbox.retain(|&(t, s)| !(t == to && s == seq));
        }
    }
    fn locate(&mut self, agent: AgentId) -> Option<NodeId> {
        self.directory.get(&agent).copied()
    }
}

/// The storage under a node's journal: the in-memory table (`MemJournal`), or the journal kept
/// as records in the memory backend of the storage log (`LogJournal<MemLog>`, deferred: its
/// changes wait for the node's sync, and a crash keeps the synced ones and any prefix of the
/// rest), rebuilt from the log at every crash. Seeds alternate (odd seeds on the log) unless
/// `MIELIN_SIM_STORAGE=mem` or `log` says which. The log needs the library's `alloc` feature:
/// without it every seed runs on the table.
#[derive(Clone)]
enum Storage {
    Mem(Box<MemJournal<CAP>>),
    #[cfg(feature = "alloc")]
    Log(LogJournal<MemLog>),
}

impl Storage {
    fn for_seed(seed: u64) -> Storage {
        let log = match std::env::var("MIELIN_SIM_STORAGE").as_deref() {
            Ok("mem") => false,
            Ok("log") => true,
            Ok(other) => panic!("MIELIN_SIM_STORAGE: `mem` or `log`, not {other:?}"),
            Err(_) => seed % 2 == 1,
        };
        #[cfg(feature = "alloc")]
        if log {
            let log = MemLog::new(LOG_JOURNAL_RECORD, 1 << 24);
            return Storage::Log(LogJournal::open(log, CAP).unwrap().deferred());
        }
        #[cfg(not(feature = "alloc"))]
        assert!(
            !log || std::env::var_os("MIELIN_SIM_STORAGE").is_none(),
            "MIELIN_SIM_STORAGE=log needs the `alloc` feature"
        );
        Storage::Mem(Box::new(MemJournal::new()))
    }

    fn is_log(&self) -> bool {
        !matches!(self, Storage::Mem(_))
    }

    fn journal(&self) -> &dyn Journal {
        match self {
            Storage::Mem(j) => &**j,
            #[cfg(feature = "alloc")]
            Storage::Log(j) => j,
        }
    }

    fn journal_mut(&mut self) -> &mut dyn Journal {
        match self {
            Storage::Mem(j) => &mut **j,
            #[cfg(feature = "alloc")]
            Storage::Log(j) => j,
        }
    }

    /// Records appended and not synced (0 on the table, whose writes are durable at once).
    fn unsynced_records(&self) -> usize {
        #[cfg(feature = "alloc")]
        if let Storage::Log(j) = self {
            use mielin_cells::storage::Log;
            return (j.log().appended().0 - j.log().durable().0) as usize;
        }
        0
    }

    /// After a crash: the log keeps what was synced and `keep` of what was not, and the
    /// journal's tables are rebuilt from it (nothing of the old tables survives).
    fn crash(&mut self, keep: usize) {
        let _ = keep;
        #[cfg(feature = "alloc")]
        if let Storage::Log(j) = self {
            let mut log = j.clone().into_log();
            log.crash(keep);
            *j = LogJournal::open(log, CAP)
                .expect("a log the journal wrote reopens")
                .deferred();
        }
    }
}

impl Journal for Storage {
    fn get(&self, agent: AgentId) -> Option<mielin_cells::mesh::Record> {
        self.journal().get(agent)
    }
    fn put(&mut self, agent: AgentId, r: mielin_cells::mesh::Record) -> Result<(), MeshError> {
        self.journal_mut().put(agent, r)
    }
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
        self.journal_mut().remove(agent)
    }
    fn for_each(&self, f: &mut dyn FnMut(AgentId, mielin_cells::mesh::Record)) {
        self.journal().for_each(f)
    }
    fn sequence(&self, agent: AgentId) -> Option<u64> {
        self.journal().sequence(agent)
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        self.journal_mut().set_sequence(agent, seq)
    }
    fn generation(&self) -> u64 {
        self.journal().generation()
    }
    fn set_generation(&mut self, g: u64) -> Result<(), MeshError> {
        self.journal_mut().set_generation(g)
    }
    fn sync(&mut self) -> Result<(), MeshError> {
        self.journal_mut().sync()
    }
    fn unsynced(&self) -> bool {
        self.journal().unsynced()
    }
}

/// The journal the simulator gives each node, on either [`Storage`], with the write faults
/// (their switch is `MIELIN_SIM_WRITES=0`):
/// - a write that fails: on the table, nothing changes and the node sees `JournalIo`; on the
///   log, the append (of a deferred change) or the sync fails, which poisons the journal, so
///   the node crashes there (it must restart from the log) and the records no sync covered
///   land or not, as the log's crash decides;
/// - a crash at a chosen write, inside a frame's handling, a timer or a restart alike (the
///   write in flight lands or not; the node is taken down once the event returns, and until
///   then nothing it writes or does in the host lasts).
struct SimJournal {
    inner: Storage,
    rng: Rng,
    /// Writes that fail, per mille.
    fail: u64,
    /// Writes to go before the crash, if one is armed.
    crash_in: Option<u32>,
    dead: Rc<Cell<bool>>,
    failed: u64,
}

impl SimJournal {
    fn write(
        &mut self,
        f: impl FnOnce(&mut Storage) -> Result<(), MeshError>,
    ) -> Result<(), MeshError> {
        if self.dead.get() {
            return Err(MeshError::JournalIo);
        }
        if let Some(n) = self.crash_in.as_mut() {
            if *n == 0 {
                self.crash_in = None;
                self.dead.set(true);
                if self.rng.chance(500) {
                    let _ = f(&mut self.inner);
                }
                return Err(MeshError::JournalIo);
            }
            *n -= 1;
        }
        if self.fail > 0 && self.rng.chance(self.fail) {
            self.failed += 1;
            #[cfg(feature = "alloc")]
            if let Storage::Log(j) = &mut self.inner {
                j.log_mut().fail_next_append();
                j.log_mut().fail_next_sync();
                let r = f(&mut self.inner);
                if r != Err(MeshError::JournalFull) {
                    assert_eq!(r, Err(MeshError::JournalIo), "a failed sync is an error");
                    self.dead.set(true);
                }
                return Err(MeshError::JournalIo);
            }
            return Err(MeshError::JournalIo);
        }
        f(&mut self.inner)
    }
}

impl Journal for SimJournal {
    fn get(&self, agent: AgentId) -> Option<mielin_cells::mesh::Record> {
        self.inner.get(agent)
    }
    fn put(&mut self, agent: AgentId, r: mielin_cells::mesh::Record) -> Result<(), MeshError> {
        self.write(|j| j.put(agent, r))
    }
    fn remove(&mut self, agent: AgentId) -> Result<(), MeshError> {
        self.write(|j| j.remove(agent))
    }
    fn for_each(&self, f: &mut dyn FnMut(AgentId, mielin_cells::mesh::Record)) {
        self.inner.for_each(f)
    }
    fn sequence(&self, agent: AgentId) -> Option<u64> {
        self.inner.sequence(agent)
    }
    fn set_sequence(&mut self, agent: AgentId, seq: u64) -> Result<(), MeshError> {
        self.write(|j| j.set_sequence(agent, seq))
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
    fn set_generation(&mut self, g: u64) -> Result<(), MeshError> {
        self.write(|j| j.set_generation(g))
    }
    /// A sync with changes waiting is a durable write (the crash and the failure faults
    /// strike it as any other); one with none touches nothing.
    fn sync(&mut self) -> Result<(), MeshError> {
        if !self.inner.unsynced() {
            return Ok(());
        }
        self.write(|j| j.sync())
    }
    fn unsynced(&self) -> bool {
        self.inner.unsynced()
    }
}

type SimNode = Node<SimJournal, CAP>;

struct Slot {
    node: Option<SimNode>,
    /// The journal while the node is down.
    saved: Option<SimJournal>,
    host: SimHost,
    down_until: u64,
    /// An older copy of the journal and the host's durable state, for the rollback fault.
    old: Option<(Storage, Durable)>,
    /// Agents this node's rollback checks found stale (from its notices).
    stale: BTreeSet<AgentId>,
}

impl Slot {
    fn journal(&self) -> &Storage {
        match &self.node {
            Some(n) => &n.journal().inner,
            None => &self.saved.as_ref().unwrap().inner,
        }
    }
    /// The node's notices: the agents its rollback checks found stale.
    fn drain_notices(&mut self, stale: &mut BTreeSet<AgentId>) {
        if let Some(n) = self.node.as_mut() {
            while let Some(notice) = n.poll_notice() {
                if std::env::var_os("MIELIN_SIM_SEED").is_some() {
                    println!("  notice {:?}: {notice:?}", n.id());
                }
                if let Notice::RolledBack { agent, .. } = notice {
                    stale.insert(agent);
                }
            }
        }
    }
    fn journal_mut(&mut self) -> &mut SimJournal {
        match &mut self.node {
            Some(n) => n.journal_mut(),
            None => self.saved.as_mut().unwrap(),
        }
    }
}

struct Packet {
    at: u64,
    order: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

#[derive(Default, Debug, Clone, Copy)]
struct Figures {
    steps: u64,
    migrations_started: u64,
    committed: u64,
    aborted: u64,
    packets: u64,
    dropped: u64,
    duplicated: u64,
    delayed: u64,
    /// Old frames delivered again long after they were sent (the stale-duplicate fault).
    replayed: u64,
    /// Journal writes that failed (the write faults).
    failed_writes: u64,
    /// Nodes restored from an older copy of their journal and host files (the rollback
    /// fault), the agents whose newer epoch a peer had seen (what the check must find), and
    /// those the checks found.
    rollbacks: u64,
    rollback_losses: u64,
    rollback_detected: u64,
    /// Agents run after a restart without every peer's answer.
    unchecked: u64,
    /// Crashes in the middle of a journal write, and how many of those were inside a restart.
    write_crashes: u64,
    restart_crashes: u64,
    partitions: u64,
    crashes: u64,
    retransmits: u64,
    fenced: u64,
    messages_sent: u64,
    messages_consumed: u64,
    mailbox_full: u64,
    moved_answers: u64,
    /// Deliver frames carrying the longest message (`MAX_MESSAGE_LEN`) put on the network.
    longest_messages: u64,
    /// Seeds whose journals were kept in the storage log (`Storage::Log`).
    log_seeds: u64,
}

impl std::ops::AddAssign for Figures {
    fn add_assign(&mut self, o: Figures) {
        self.steps += o.steps;
        self.migrations_started += o.migrations_started;
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.packets += o.packets;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.delayed += o.delayed;
        self.replayed += o.replayed;
        self.failed_writes += o.failed_writes;
        self.rollbacks += o.rollbacks;
        self.rollback_losses += o.rollback_losses;
        self.rollback_detected += o.rollback_detected;
        self.unchecked += o.unchecked;
        self.write_crashes += o.write_crashes;
        self.restart_crashes += o.restart_crashes;
        self.partitions += o.partitions;
        self.crashes += o.crashes;
        self.retransmits += o.retransmits;
        self.fenced += o.fenced;
        self.messages_sent += o.messages_sent;
        self.messages_consumed += o.messages_consumed;
        self.mailbox_full += o.mailbox_full;
        self.moved_answers += o.moved_answers;
        self.longest_messages += o.longest_messages;
        self.log_seeds += o.log_seeds;
    }
}

struct Sim {
    rng: Rng,
    now: u64,
    slots: Vec<Slot>,
    net: Vec<Packet>,
    order: u64,
    /// Cut links (unordered pairs) until a time.
    cuts: BTreeMap<(usize, usize), u64>,
    config: Config,
    max_epoch: BTreeMap<AgentId, u64>,
    max_counter: BTreeMap<AgentId, u64>,
    /// The oracle: per (sender, addressee), messages sent and consumed.
    sent: BTreeMap<(AgentId, AgentId), u64>,
    consumed: BTreeMap<(AgentId, AgentId), u64>,
    fig: Figures,
    verbose: bool,
    faults: bool,
    /// Frames sent so far (a bounded sample), for the stale-duplicate fault: an old frame
    /// delivered again long after, after aborts, tombstone expiry and further hand-offs.
    history: Vec<(usize, usize, Vec<u8>)>,
    /// The stale-duplicate fault's switch (`MIELIN_SIM_STALE=0` turns it off).
    stale: bool,
    /// The write faults' switch (`MIELIN_SIM_WRITES=0` turns them off).
    writes: bool,
    /// Whether this seed has the rollback fault (`MIELIN_SIM_ROLLBACK=0`: no seed has): then
    /// every node checks strictly, and once a node was rolled back only the safety properties
    /// are checked (at most one running copy, no stale epoch running), plus that every agent
    /// whose newer epoch a peer had seen is found stale.
    rollback: bool,
    /// A node was rolled back, and the agents whose loss its check must find.
    rolled: Option<(usize, BTreeSet<AgentId>)>,
}

/// Journal writes that fail while faults are on, per mille.
const FAILED_WRITES: u64 = 20;

/// How many sent frames the stale-duplicate fault keeps to choose from.
const HISTORY: usize = 4096;

impl Sim {
    fn new(seed: u64, verbose: bool) -> Sim {
        let mut rng = Rng(seed);
        let rto_ms = 20 + rng.below(60);
        let rollback = env_u64("MIELIN_SIM_ROLLBACK") != Some(0) && seed % 4 == 3;
        let config = Config {
            rto_ms,
            max_attempts: 2 + rng.below(6) as u8,
            tombstone_ttl_ms: 200 + rng.below(2_000),
            max_in_doubt: 2 + rng.below(4) as usize,
            undelivered_ms: 2_000,
            rollback_check_ms: rto_ms * (2 + rng.below(10)),
            strict_rollback: rollback,
            // 1 to 8 messages in flight per pair, from the seed (not the generator, so that
            // every other draw of a seed is what it was before the window came in).
            window: 1 + ((seed >> 2) % 8) as u8,
            ..Config::default()
        };
        let mut slots: Vec<Slot> = (0..NODES)
            .map(|i| {
                let dead = Rc::new(Cell::new(false));
                let journal = SimJournal {
                    inner: Storage::for_seed(seed),
                    rng: Rng(seed ^ (0x5157_0000 + i as u64)),
                    fail: 0,
                    crash_in: None,
                    dead: dead.clone(),
                    failed: 0,
                };
                Slot {
                    node: Some(Node::new(node_id(i), journal, config)),
                    saved: None,
                    host: SimHost {
                        dead,
                        ..SimHost::default()
                    },
                    down_until: 0,
                    old: None,
                    stale: BTreeSet::new(),
                }
            })
            .collect();
        let writes = env_u64("MIELIN_SIM_WRITES") != Some(0);
        for a in 0..AGENTS {
            let n = rng.below(NODES as u64) as usize;
            let agent = agent_id(a);
            let slot = &mut slots[n];
            slot.host.owned.insert(agent, AgentSt::default());
            slot.host.dna.insert(dna_hash(agent));
            // Some other nodes hold the DNA already (by-reference transfers).
            for (j, other) in slots.iter_mut().enumerate() {
                if j != n && rng.chance(300) {
                    other.host.dna.insert(dna_hash(agent));
                }
            }
            let slot = &mut slots[n];
            slot.node
                .as_mut()
                .unwrap()
                .start(&mut slot.host, agent)
                .unwrap();
        }
        if writes {
            for s in &mut slots {
                s.journal_mut().fail = FAILED_WRITES;
            }
        }
        Sim {
            rng,
            now: 0,
            slots,
            net: Vec::new(),
            order: 0,
            cuts: BTreeMap::new(),
            config,
            max_epoch: BTreeMap::new(),
            max_counter: BTreeMap::new(),
            sent: BTreeMap::new(),
            consumed: BTreeMap::new(),
            fig: Figures::default(),
            verbose,
            faults: true,
            history: Vec::new(),
            stale: env_u64("MIELIN_SIM_STALE") != Some(0),
            writes,
            rollback,
            rolled: None,
        }
    }

    fn log(&self, msg: impl FnOnce() -> String) {
        if self.verbose {
            println!("[{:>6}] {}", self.now, msg());
        }
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        let k = (a.min(b), a.max(b));
        self.cuts.get(&k).is_some_and(|&until| until > self.now)
    }

    /// Sends what every up node has queued.
    fn drain(&mut self) {
        let mut buf = vec![0u8; MAX_DELIVER_LEN.max(2048)];
        for i in 0..NODES {
            loop {
                let slot = &mut self.slots[i];
                let Some(node) = slot.node.as_mut() else {
                    break;
                };
                let t = match node.poll_transmit(&mut slot.host, &mut buf) {
                    Ok(Some(t)) => t,
                    Ok(None) => break,
                    // The journal's group commit before the frames leave failed or crashed
                    // (a write fault): none of them leaves, and the node goes down.
                    Err(MeshError::JournalIo) if slot.host.dead.get() => {
                        self.reap(i, false);
                        break;
                    }
                    Err(e) => panic!("poll_transmit failed: {e:?}"),
                };
                let to = (0..NODES)
                    .find(|&j| node_id(j) == t.to)
                    .expect("known node");
                let bytes = buf[..t.len].to_vec();
                self.fig.packets += 1;
                self.fig.longest_messages += u64::from(t.len == MAX_DELIVER_LEN);
                if self.faults && self.stale {
                    if self.history.len() < HISTORY {
                        self.history.push((i, to, bytes.clone()));
                    } else {
                        let k = self.rng.below(HISTORY as u64) as usize;
                        self.history[k] = (i, to, bytes.clone());
                    }
                }
                let copies = if self.faults && self.rng.chance(50) {
                    self.fig.duplicated += 1;
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if self.faults && self.rng.chance(100) {
                        self.fig.dropped += 1;
                        continue;
                    }
                    let delay = if self.faults && self.rng.chance(200) {
                        self.fig.delayed += 1;
                        1 + self.rng.below(400)
                    } else {
                        1 + self.rng.below(10)
                    };
                    self.order += 1;
                    self.net.push(Packet {
                        at: self.now + delay,
                        order: self.order,
                        from: i,
                        to,
                        bytes: bytes.clone(),
                    });
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        let mut due: Vec<Packet> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|p| (p.at, p.order));
        for p in due {
            if self.cut(p.from, p.to) {
                self.fig.dropped += 1;
                continue;
            }
            let slot = &mut self.slots[p.to];
            let Some(node) = slot.node.as_mut() else {
                continue; // down: lost
            };
            if self.verbose {
                if let Ok(r) = mielin_cells::mesh::frame::Repr::decode(&p.bytes) {
                    let a = AgentId::from_bytes(r.agent);
                    let before = node.journal().get(a);
                    println!(
                        "[{:>6}]   {} -> {}: {:?} {:?}@{} (record {:?})",
                        now,
                        p.from,
                        p.to,
                        a,
                        r.body.kind(),
                        r.epoch,
                        before
                    );
                }
            }
            node.handle_frame(&mut slot.host, now, node_id(p.from), &p.bytes)
                .expect("frames from honest peers decode");
            self.reap(p.to, false);
            self.check(|| format!("after a frame {} -> {}", p.from, p.to));
        }
    }

    /// Takes node `i` down if it crashed in the middle of a journal write (inside a restart if
    /// `restarting`).
    fn reap(&mut self, i: usize, restarting: bool) {
        if self.slots[i].node.is_some() && self.slots[i].host.dead.get() {
            self.fig.write_crashes += 1;
            if restarting {
                self.fig.restart_crashes += 1;
            }
            self.log(|| format!("node {i} crashed at a journal write"));
            self.crash(i);
        }
    }

    fn crash(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let mut stale = std::mem::take(&mut slot.stale);
        slot.drain_notices(&mut stale);
        slot.stale = stale;
        let mut node = slot.node.take().unwrap();
        let j = node.journal_mut();
        j.dead.set(false);
        j.crash_in = None;
        let st = node.stats();
        self.fig.retransmits += st.retransmits;
        self.fig.fenced += st.fenced;
        self.fig.committed += st.committed;
        self.fig.aborted += st.aborted;
        self.fig.mailbox_full += st.messages_full;
        self.fig.moved_answers += st.moved_answers;
        self.fig.unchecked += st.rollback_unchecked;
        let mut j = node.into_journal();
        self.fig.failed_writes += std::mem::take(&mut j.failed);
        // Any prefix of the records no sync covered lands (none, some or all of them).
        let unsynced = j.inner.unsynced_records() as u64;
        j.inner.crash(self.rng.below(unsynced + 1) as usize);
        slot.saved = Some(j);
        slot.host.running.clear();
        slot.down_until = self.now + 50 + self.rng.below(1_000);
        self.fig.crashes += 1;
        self.log(|| format!("crash node {i}"));
    }

    /// The rollback fault: node `i` (down) comes back with the older copy of its journal and
    /// host files. Once per seed. The oracle forgets epochs only that node knew (nothing can
    /// find them again), and notes the agents whose newer epoch a peer has seen.
    fn roll_back(&mut self, i: usize) {
        let Some((journal, durable)) = self.slots[i].old.take() else {
            return;
        };
        let slot = &mut self.slots[i];
        slot.saved.as_mut().unwrap().inner = journal.clone();
        slot.host.owned = durable.owned;
        slot.host.prepared = durable.prepared;
        slot.host.dna = durable.dna;
        let mut losses = BTreeSet::new();
        for a in (0..AGENTS).map(agent_id) {
            let seen_elsewhere = (0..NODES)
                .filter(|&j| j != i)
                .filter_map(|j| {
                    let jr = self.slots[j].journal();
                    let fence = jr.sequence(a);
                    let rec = jr.get(a).map(|r| r.epoch);
                    fence.max(rec)
                })
                .max();
            if let Some(r) = journal.get(a) {
                let would_run = matches!(r.phase, Phase::Running | Phase::Outgoing { .. });
                if would_run && seen_elsewhere.is_some_and(|s| s > r.epoch) {
                    losses.insert(a);
                }
            }
            // What the oracle may still call stale: epochs some journal's record still holds
            // (each ran, or runs once its hand-off ends). A fence can be above every run
            // (raised for a hand-off whose record was never written), so fences do not count.
            let known = (0..NODES)
                .filter_map(|j| self.slots[j].journal().get(a).map(|r| r.epoch))
                .max();
            match (known, self.max_epoch.get(&a).copied()) {
                (Some(k), Some(m)) => {
                    self.max_epoch.insert(a, k.min(m));
                }
                _ => {
                    self.max_epoch.remove(&a);
                }
            }
        }
        self.fig.rollbacks += 1;
        self.fig.rollback_losses += losses.len() as u64;
        self.log(|| {
            let mut recs = Vec::new();
            journal.for_each(&mut |a, r| recs.push((a, r, journal.sequence(a))));
            format!(
                "roll back node {i}; losses {losses:?}; restored {recs:?}; oracle {:?}",
                self.max_epoch
            )
        });
        self.rolled = Some((i, losses));
    }

    fn recover(&mut self, i: usize) {
        let now = self.now;
        let config = self.config;
        let boot = self.rng.next();
        let peers: Vec<NodeId> = (0..NODES).filter(|&j| j != i).map(node_id).collect();
        let slot = &mut self.slots[i];
        let journal = slot.saved.take().unwrap();
        slot.node = Some(Node::restart_checked(
            node_id(i),
            journal,
            config,
            &mut slot.host,
            (now, boot),
            &peers,
        ));
        self.log(|| {
            let j = self.slots[i].node.as_ref().unwrap().journal();
            format!(
                "restart node {i} generation {} boot {boot:x}",
                j.generation()
            )
        });
        self.reap(i, true);
    }

    fn step(&mut self) {
        self.now += STEP_MS;
        self.fig.steps += 1;
        // Agents make progress: count, send messages (not after healing began), consume them.
        let mut woke = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let running: Vec<AgentId> = s.host.running.keys().copied().collect();
            for a in running {
                let st = s.host.owned.get_mut(&a).unwrap();
                st.counter += 1;
                if self.faults && st.outbox.len() < OUTBOX_PER_AGENT && self.rng.chance(40) {
                    let to = agent_id(self.rng.below(AGENTS as u64) as usize);
                    if to != a {
                        let seq = st.next_seq.get(&to).copied().unwrap_or(0) + 1;
                        st.next_seq.insert(to, seq);
                        st.outbox.push((to, seq));
                        let n = self.sent.entry((a, to)).or_insert(0);
                        *n += 1;
                        if self.rolled.is_none() {
                            assert_eq!(*n, seq, "sequence numbers of {a:?} went back");
                        }
                        self.fig.messages_sent += 1;
                        woke.push(i);
                    }
                }
                if !st.mailbox.is_empty() && self.rng.chance(200) {
                    let (from, seq) = st.mailbox.remove(0);
                    let c = self.consumed.entry((from, a)).or_insert(0);
                    if self.rolled.is_none() {
                        assert_eq!(
                            seq,
                            *c + 1,
                            "{a:?} consumed message {seq} from {from:?} after {c}"
                        );
                    }
                    *c = seq;
                    self.fig.messages_consumed += 1;
                }
            }
        }
        let now = self.now;
        for i in woke {
            if let Some(n) = self.slots[i].node.as_mut() {
                n.wake_messages(now);
            }
        }
        // The directory the hosts consult: who owns what now.
        let mut dir = BTreeMap::new();
        for (i, s) in self.slots.iter().enumerate() {
            s.journal().for_each(&mut |a, r| {
                if r.phase == Phase::Running {
                    dir.insert(a, node_id(i));
                }
            });
        }
        for s in &mut self.slots {
            s.host.directory = dir.clone();
        }
        // Faults.
        if self.faults {
            if self.rng.chance(8) {
                let a = self.rng.below(NODES as u64) as usize;
                let b = self.rng.below(NODES as u64) as usize;
                if a != b {
                    let until = self.now + 50 + self.rng.below(1_500);
                    self.cuts.insert((a.min(b), a.max(b)), until);
                    self.fig.partitions += 1;
                }
            }
            if self.stale && !self.history.is_empty() && self.rng.chance(100) {
                let k = self.rng.below(self.history.len() as u64) as usize;
                let (from, to, bytes) = self.history[k].clone();
                self.order += 1;
                self.net.push(Packet {
                    at: self.now + 1,
                    order: self.order,
                    from,
                    to,
                    bytes,
                });
                self.fig.replayed += 1;
            }
            if self.rollback && self.rolled.is_none() {
                // Keep an older copy now and then; a crash may come back with it.
                for s in &mut self.slots {
                    if s.node.is_some() && self.rng.chance(20) {
                        s.old = Some((s.journal().clone(), s.host.durable()));
                    }
                }
            }
            if self.rng.chance(4) {
                let i = self.rng.below(NODES as u64) as usize;
                if self.slots[i].node.is_some() {
                    self.crash(i);
                    if self.rollback && self.rolled.is_none() && self.rng.chance(300) {
                        self.roll_back(i);
                    }
                    self.check(|| format!("after crashing {i}"));
                }
            }
            // A crash at one of a node's next few journal writes, up or down (then inside its
            // restart).
            if self.writes && self.rng.chance(6) {
                let i = self.rng.below(NODES as u64) as usize;
                let n = self.rng.below(4) as u32;
                self.slots[i].journal_mut().crash_in = Some(n);
            }
        }
        for i in 0..NODES {
            if self.slots[i].node.is_none()
                && (self.slots[i].down_until <= self.now || !self.faults)
            {
                self.recover(i);
                self.check(|| format!("after restarting {i}"));
            }
        }
        // Workload: migrations.
        if self.faults && self.rng.chance(150) {
            let a = agent_id(self.rng.below(AGENTS as u64) as usize);
            let t = self.rng.below(NODES as u64) as usize;
            let now = self.now;
            for i in 0..NODES {
                let slot = &mut self.slots[i];
                let Some(node) = slot.node.as_mut() else {
                    continue;
                };
                if matches!(node.journal().get(a), Some(r) if r.phase == Phase::Running) && i != t {
                    match node.migrate(&mut slot.host, now, a, node_id(t)) {
                        Ok(()) => {
                            self.fig.migrations_started += 1;
                            self.log(|| format!("migrate {a:?} {i} -> {t}"));
                        }
                        // A failed journal write (the write faults), or an agent the
                        // rollback check holds: nothing started.
                        Err(MeshError::JournalIo | MeshError::Busy) => {}
                        Err(e) => panic!("migrate {a:?} {i} -> {t}: {e:?}"),
                    }
                    self.reap(i, false);
                }
            }
        }
        // Timers, then the network.
        let now = self.now;
        for i in 0..NODES {
            let slot = &mut self.slots[i];
            if let Some(node) = slot.node.as_mut() {
                node.handle_timeout(&mut slot.host, now);
            }
            self.reap(i, false);
        }
        self.check(|| "after timers".into());
        for s in &mut self.slots {
            let mut stale = std::mem::take(&mut s.stale);
            s.drain_notices(&mut stale);
            s.stale = stale;
        }
        self.drain();
        self.deliver_due();
        self.drain();
    }

    /// The invariants, after every event.
    fn check(&mut self, when: impl Fn() -> String) {
        for a in (0..AGENTS).map(agent_id) {
            // Hosts: at most one running copy, at a non-decreasing epoch and state.
            let running: Vec<(usize, u64)> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.host.running.get(&a).map(|&e| (i, e)))
                .collect();
            assert!(running.len() <= 1, "{a:?} runs on {running:?} {}", when());
            if let Some(&(i, e)) = running.first() {
                let max = self.max_epoch.entry(a).or_insert(e);
                assert!(
                    e >= *max,
                    "{a:?} runs at epoch {e} on {i}, below {max} {}",
                    when()
                );
                *max = e;
                let c = self.slots[i].host.owned[&a].counter;
                let mc = self.max_counter.entry(a).or_insert(c);
                if self.rolled.is_some() {
                    // A rollback may lose the agent's progress; only its epoch is checked.
                    *mc = c;
                }
                assert!(
                    c >= *mc,
                    "{a:?} state went back from {mc} to {c} on {i} {}",
                    when()
                );
                *mc = c;
            }
            // Journals: exactly one owner (Running/Outgoing) or committed in-doubt holder.
            let mut owners = Vec::new();
            for (i, s) in self.slots.iter().enumerate() {
                let Some(r) = s.journal().get(a) else {
                    continue;
                };
                match r.phase {
                    Phase::Running | Phase::Outgoing { .. } => owners.push(i),
                    Phase::Prepared { source } => {
                        let src = (0..NODES).find(|&j| node_id(j) == source).unwrap();
                        let committed = matches!(
                            self.slots[src].journal().get(a),
                            Some(sr) if sr.epoch == r.epoch
                                && matches!(sr.phase, Phase::Moved { target, .. } if target == node_id(i))
                        );
                        if committed {
                            owners.push(i);
                        }
                    }
                    Phase::Moved { .. } => {}
                    _ => {}
                }
            }
            // After a rollback the restored node may hold an out-of-date owner record, never
            // run (checked above); and a lost only copy has no owner.
            if self.rolled.is_none() {
                assert!(owners.len() == 1, "{a:?} has owners {owners:?} {}", when());
            }
        }
    }

    fn quiet(&self) -> bool {
        self.net.is_empty()
            && self.slots.iter().all(|s| {
                s.host.running.keys().all(|a| {
                    let st = &s.host.owned[a];
                    st.outbox.is_empty() && st.mailbox.is_empty()
                })
            })
            && self
                .slots
                .iter()
                .all(|s| s.node.as_ref().is_some_and(|n| n.is_quiet()))
    }

    fn run(&mut self) {
        while self.now < FAULT_MS {
            self.step();
        }
        if self.rolled.is_some() {
            return self.heal_after_rollback();
        }
        // Heal: no new faults, links restored, every node up.
        self.faults = false;
        self.cuts.clear();
        for s in &mut self.slots {
            let j = s.journal_mut();
            j.fail = 0;
            j.crash_in = None;
        }
        self.log(|| "heal".into());
        let deadline = self.now + HEAL_MS;
        while !self.quiet() {
            if self.now >= deadline {
                let mut dump = String::new();
                for (i, s) in self.slots.iter().enumerate() {
                    let n = s.node.as_ref().unwrap();
                    n.journal().for_each(&mut |a, r| {
                        dump += &format!("\n  node {i}: {a:?} {r:?}");
                    });
                    dump += &format!(
                        "\n  node {i}: quiet {} next timer {:?}",
                        n.is_quiet(),
                        n.poll_timeout()
                    );
                }
                panic!(
                    "hand-offs did not end within {HEAL_MS} ms of healing (net {}):{dump}",
                    self.net.len()
                );
            }
            self.step();
        }
        // Every hand-off ended; every agent runs exactly once.
        for a in (0..AGENTS).map(agent_id) {
            let mut runs = 0;
            for (i, s) in self.slots.iter().enumerate() {
                let r = s.journal().get(a);
                match r.map(|r| r.phase) {
                    Some(Phase::Running) => {
                        runs += 1;
                        assert_eq!(
                            s.host.running.get(&a),
                            r.map(|r| r.epoch).as_ref(),
                            "{a:?} on {i}"
                        );
                    }
                    Some(Phase::Moved { acked: true, .. }) | None => {}
                    other => panic!("{a:?} left in {other:?} on node {i} after healing"),
                }
            }
            assert_eq!(runs, 1, "{a:?} runs on {runs} nodes after healing");
        }
        for s in &self.slots {
            self.fig.failed_writes += s.node.as_ref().unwrap().journal().failed;
            self.fig.unchecked += s.node.as_ref().unwrap().stats().rollback_unchecked;
            let st = s.node.as_ref().unwrap().stats();
            self.fig.retransmits += st.retransmits;
            self.fig.fenced += st.fenced;
            self.fig.committed += st.committed;
            self.fig.aborted += st.aborted;
            self.fig.mailbox_full += st.messages_full;
            self.fig.moved_answers += st.moved_answers;
        }
        // Every message sent was consumed exactly once (checked in order as it was consumed).
        for ((from, to), &sent) in &self.sent {
            let got = self.consumed.get(&(*from, *to)).copied().unwrap_or(0);
            assert_eq!(got, sent, "{from:?} -> {to:?}: {sent} sent, {got} consumed");
        }
    }
}

impl Sim {
    /// Healing after the rollback fault: no liveness is promised (a node may have lost what it
    /// acknowledged, or the only copy of an agent's newest epoch), so a fixed time with the
    /// safety checks of every step, then: every agent whose newer epoch a peer had seen was
    /// found stale by the restored node's check.
    fn heal_after_rollback(&mut self) {
        self.faults = false;
        self.cuts.clear();
        for s in &mut self.slots {
            let j = s.journal_mut();
            j.fail = 0;
            j.crash_in = None;
        }
        let end = self.now + 10_000;
        while self.now < end {
            self.step();
        }
        let (i, losses) = self.rolled.clone().unwrap();
        let mut stale = std::mem::take(&mut self.slots[i].stale);
        self.slots[i].drain_notices(&mut stale);
        for a in &losses {
            assert!(
                stale.contains(a),
                "node {i} was rolled back and a peer had seen {a:?} at a higher epoch, but its check did not find it (found {stale:?})"
            );
        }
        self.fig.rollback_detected += losses.len() as u64;
        for s in &self.slots {
            if let Some(n) = s.node.as_ref() {
                self.fig.unchecked += n.stats().rollback_unchecked;
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a number"))
}

fn run_seed(seed: u64, verbose: bool) -> Result<Figures, String> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, verbose);
        sim.fig.log_seeds = u64::from(sim.slots[0].journal().is_log());
        sim.run();
        sim.fig
    }));
    r.map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn handoffs_survive_faults() {
    if let Some(seed) = env_u64("MIELIN_SIM_SEED") {
        match run_seed(seed, true) {
            Ok(f) => println!("seed {seed}: {f:?}"),
            Err(e) => panic!("seed {seed} failed: {e}"),
        }
        return;
    }
    let seeds = env_u64("MIELIN_SIM_SEEDS").unwrap_or(if cfg!(miri) { 1 } else { 300 });
    let first = env_u64("MIELIN_SIM_FIRST").unwrap_or(0);
    let start = std::time::Instant::now();
    let mut total = Figures::default();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // MIELIN_SIM_KEEP_GOING=1: run every seed and count the failing ones (to measure how often
    // a deliberately broken protocol is caught).
    let keep_going = std::env::var_os("MIELIN_SIM_KEEP_GOING").is_some();
    // Seeds are independent: split them over threads (MIELIN_SIM_THREADS, default 2); each
    // seed's run stays deterministic.
    let threads = env_u64("MIELIN_SIM_THREADS").unwrap_or(2).max(1);
    let results: Vec<(Figures, Vec<(u64, String)>)> = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                sc.spawn(move || {
                    let mut total = Figures::default();
                    let mut failed = Vec::new();
                    for seed in (first + t..first + seeds).step_by(threads as usize) {
                        match run_seed(seed, false) {
                            Ok(f) => total += f,
                            Err(e) => {
                                failed.push((seed, e));
                                if !keep_going {
                                    break;
                                }
                            }
                        }
                    }
                    (total, failed)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut failed: Vec<(u64, String)> = Vec::new();
    for (f, errs) in results {
        total += f;
        failed.extend(errs);
    }
    failed.sort_by_key(|f| f.0);
    if !keep_going {
        if let Some((seed, e)) = failed.first() {
            std::panic::set_hook(hook);
            panic!("seed {seed} failed: {e}\nreplay: MIELIN_SIM_SEED={seed} cargo test --test sim");
        }
    }
    let failed: Vec<u64> = failed.into_iter().map(|f| f.0).collect();
    std::panic::set_hook(hook);
    if keep_going && !failed.is_empty() {
        panic!(
            "{} of {seeds} seeds failed; first {:?}",
            failed.len(),
            &failed[..failed.len().min(10)]
        );
    }
    println!(
        "sim: {seeds} seeds (from {first}) in {:.1?}: {total:?}",
        start.elapsed()
    );
    // The fault mix really happened (a run of a few seeds may miss some).
    if seeds >= 100 {
        assert!(total.committed > 0 && total.aborted > 0 && total.crashes > 0);
        assert!(total.partitions > 0 && total.duplicated > 0 && total.fenced > 0);
        assert!(total.replayed > 0 || std::env::var("MIELIN_SIM_STALE").as_deref() == Ok("0"));
        if std::env::var("MIELIN_SIM_ROLLBACK").as_deref() != Ok("0") {
            assert!(total.rollbacks > 0 && total.rollback_losses > 0);
        }
        if std::env::var("MIELIN_SIM_WRITES").as_deref() != Ok("0") {
            assert!(total.failed_writes > 0 && total.write_crashes > 0);
            assert!(total.restart_crashes > 0);
        }
        assert!(total.messages_consumed > 0 && total.mailbox_full > 0 && total.moved_answers > 0);
        assert!(total.longest_messages > 0);
        if cfg!(feature = "alloc") && std::env::var("MIELIN_SIM_STORAGE").as_deref() != Ok("mem") {
            assert!(total.log_seeds > 0);
        }
    }
}
