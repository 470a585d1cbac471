//! [`WasmHost`]: an [`AgentHost`] for WebAssembly agents that keeps everything on disk, sealed
//! to this node, and signs what it sends.

use super::driver::RoutedHost;
use super::identity::{to_hex, Directory, Identity};
use crate::mesh::wasm::{self, Mailbox, SharedInbox};
use crate::mesh::{
    AgentHost, AgentInfo, Delivery, FileJournal, Inbox, InboxLimits, Journal, LogJournal,
    MeshError, Outgoing, SharedJournal, Stream, LOG_JOURNAL_RECORD,
};
use crate::migration::{
    Container, DecodeLimits, DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, EpochJournal,
    FileEpochJournal, MigrationSnapshot, Route, StateEncoding, TrustList, SECTION_CALL,
};
use crate::runtime::{LiveAgent, Runtime, Val};
use crate::storage::{write_durable, FileLog, Log};
use crate::{Agent, AgentId, Dna, LocalKey, NodeId, StoreError};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use std::io;
use std::path::{Path, PathBuf};

/// What an agent's `stats` export returns: messages received, the last number, numbers that
/// did not follow the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStats {
    /// Messages received.
    pub received: i32,
    /// The last number received.
    pub last: i32,
    /// Numbers that were not the previous one plus 2 (a lost or repeated message).
    pub out_of_order: i32,
}

/// What [`WasmHost::decode_saved`] reads from a file the host saved.
#[derive(Debug, Clone)]
pub struct SavedAgent {
    /// The agent.
    pub agent: Agent<Vec<u8>>,
    /// Its epoch when it was saved.
    pub epoch: u64,
    /// Messages waiting in its mailbox.
    pub waiting: usize,
    /// Messages it sent that were not acknowledged yet.
    pub unacked: usize,
}

/// A stopped agent (a hand-off in progress): its state and its messages.
struct Stopped {
    agent: Agent<Vec<u8>>,
    inbox: Inbox,
}

/// WebAssembly agents on disk, sealed to this node, signed on the wire.
///
/// Agents import `mesh.send`/`mesh.recv` ([`crate::mesh::wasm`]) and may export `tick() -> i32`
/// (called by [`WasmHost::tick`]; returns how many messages it handled, 0 when nothing
/// changed), `start(i32)` (called once when the agent is created) and `stats() -> (i32, i32,
/// i32)`.
///
/// **On the wire** an agent travels as one version-3 container (`docs/wire-format.md`): its
/// memory, globals, policy and inbox (mailbox, outbox, sequence numbers) under one Ed25519
/// signature of this node's key, bound to the target and the epoch; DNA by reference when the
/// target has it. Received containers are checked by a [`TrustList`] of the directory's keys,
/// which records the epochs it accepts and sends in the node's journal, `DIR/journal`: the same
/// sequence table that holds the node's fence ([`WasmHost::journal`] is what the node is given),
/// so a replay is refused by one table. The container's signed epoch must be the epoch of the
/// Transfer frame that carried it.
///
/// **On disk** (the protocol's assumption A2): an agent's state is a version-3 container
/// *sealed* with the node's own key ([`LocalKey`], from its secret and id), addressed to this
/// node at the agent's epoch, in `DIR/agents/<id>.run` (temporary file, `fsync`, rename,
/// directory `fsync`), written when it starts, stops for a hand-off, accepts a message, and
/// after a tick that handled messages; a prepared hand-off in `DIR/agents/<id>.<epoch>.prep`
/// before [`AgentHost::prepare`] returns; DNA binaries in `DIR/dna/<sha256>.wasm` (named by
/// their hash, which is checked when they are used). A file is loaded as strictly as bytes
/// from a peer: a file from another node, an edited one, or one from another epoch than the
/// journal says is refused (`docs/security.md` states which attacker this stops and which it
/// does not).
pub struct WasmHost {
    node: NodeId,
    dir: PathBuf,
    rt: Runtime,
    signer: Ed25519Signer,
    key: LocalKey,
    trust: TrustList<64, SharedJournal<NodeJournal>>,
    journal: SharedJournal<NodeJournal>,
    dna: DnaMap,
    limits: DecodeLimits,
    inbox_limits: InboxLimits,
    /// Agents running here, with their epoch.
    live: BTreeMap<AgentId, (LiveAgent<SharedInbox>, u64)>,
    stopped: BTreeMap<AgentId, Stopped>,
    routes: BTreeMap<AgentId, (NodeId, u64)>,
    /// Per addressee, the next trusted peer `locate` names.
    probes: BTreeMap<AgentId, usize>,
    captured: Option<(AgentId, u64, bool, Vec<u8>)>,
    /// Messages refused as duplicates (already accepted once).
    pub duplicates: u64,
    /// Errors while saving or loading (the operation that needed it failed).
    pub errors: Vec<String>,
}

impl core::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WasmHost")
            .field("node", &self.node)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn refused(reason: &'static str) -> MeshError {
    MeshError::HostRefused { reason }
}

/// Fence entries (and at most as many records) of the node's journal: a node knows at most this
/// many agents over its life, because an agent's fence entry is never removed. The trust list's
/// own epoch file had the same bound. The file grows with the entries written, not with this
/// bound (4,096 fence entries are 168 KB).
pub const JOURNAL_CAPACITY: usize = 4096;

/// The node's journal: the hand-off records and the fence table as records in one append-only
/// file (`DATA/journal`, a [`FileLog`] sealed to the node), one record and one group commit per
/// change.
pub type NodeJournal = LogJournal<FileLog>;

/// Opens the journal at `path`, or creates it (`create`). A journal in the format before the
/// log (a `FileJournal`, rewritten whole on every change, magic `MZJL`) is copied into a new
/// log first: written to `PATH.new`, synced, then renamed over the old file. A journal whose
/// log holds far more records than its tables (every change is a record) is compacted the same
/// way when opened.
fn open_journal(
    path: &Path,
    node: NodeId,
    key: &crate::LocalKey,
    create: bool,
) -> Result<NodeJournal, StoreError> {
    let open_log = |p: &Path| {
        LogJournal::open_with(JOURNAL_CAPACITY, |f| {
            FileLog::open(p, node, key, LOG_JOURNAL_RECORD, f)
        })
    };
    if create {
        let log = FileLog::create(path, node, key, LOG_JOURNAL_RECORD)?;
        return LogJournal::open(log, JOURNAL_CAPACITY);
    }
    let mut magic = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = io::Read::read(&mut f, &mut magic);
    }
    if magic == *b"MZJL" {
        let old = FileJournal::open(path, node, key, JOURNAL_CAPACITY)?;
        return replace_journal(path, node, key, |j| {
            let mut records = Vec::new();
            old.for_each(&mut |a, r| records.push((a, r)));
            for (a, r) in records {
                j.put(a, r).map_err(|_| StoreError::WriteFailed)?;
            }
            for (a, s, c) in old.sequences() {
                j.record_epoch(a, s, c)
                    .map_err(|_| StoreError::WriteFailed)?;
            }
            j.set_generation(old.generation())
                .map_err(|_| StoreError::WriteFailed)
        });
    }
    let journal = open_log(path)?;
    let live = journal.live_records();
    if journal.log().appended().0 > 4 * live as u64 + 1024 {
        // Compaction saves space, nothing more: if it fails (a full disk), the node goes on
        // with the journal at `path`, reopened — the old one, or the compacted one if the
        // failure came after the rename (the old handle would then write to a removed file).
        match replace_journal(path, node, key, |j| journal.rewrite_into(j.log_mut())) {
            Ok(compacted) => return Ok(compacted),
            Err(_) => {
                drop(journal);
                let _ = std::fs::remove_file(path.with_extension("new"));
                return open_log(path);
            }
        }
    }
    Ok(journal)
}

/// Writes a new journal at `PATH.new` with `fill`, then renames it over `path` (durably).
fn replace_journal(
    path: &Path,
    node: NodeId,
    key: &crate::LocalKey,
    fill: impl FnOnce(&mut NodeJournal) -> Result<(), StoreError>,
) -> Result<NodeJournal, StoreError> {
    let new = path.with_extension("new");
    // A copy left by a crash before its rename: the old file is still the journal.
    let _ = std::fs::remove_file(&new);
    let log = FileLog::create(&new, node, key, LOG_JOURNAL_RECORD)?;
    let mut j = LogJournal::open(log, JOURNAL_CAPACITY)?;
    fill(&mut j)?;
    drop(j);
    std::fs::rename(&new, path)?;
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(d)?.sync_all()?;
    }
    LogJournal::open_with(JOURNAL_CAPACITY, |f| {
        FileLog::open(path, node, key, LOG_JOURNAL_RECORD, f)
    })
}

/// Merges the trust list's epochs of a directory from before the journal was shared into the
/// journal (each agent's highest epoch, with the peer that created it), then renames the file
/// `epochs.merged` once the journal has them durably.
fn merge_epochs(
    journal: &mut NodeJournal,
    legacy: &Path,
    node: NodeId,
    key: &crate::LocalKey,
) -> io::Result<()> {
    let epochs = FileEpochJournal::open(legacy, node, key, 4096).map_err(|e| e.at(legacy))?;
    for (agent, epoch, created_by) in epochs.entries() {
        if journal.last_epoch(agent).is_some_and(|e| e >= epoch) {
            continue;
        }
        journal
            .record_epoch(agent, epoch, created_by)
            .map_err(|e| {
                io::Error::other(format!(
                    "{}: merging into the journal (capacity {JOURNAL_CAPACITY}): {e}",
                    legacy.display()
                ))
            })?;
    }
    std::fs::rename(legacy, legacy.with_extension("merged"))
}

/// The agent a saved file holds.
struct Saved {
    agent: Agent<Vec<u8>>,
    inbox: Inbox,
    epoch: u64,
}

impl WasmHost {
    /// A host keeping its files in `dir` (created if missing), trusting snapshots signed by the
    /// keys of `directory`, with `fuel` per agent call.
    ///
    /// A missing or empty `dir` is a new node: its journal `dir/journal` (a [`NodeJournal`] of
    /// [`JOURNAL_CAPACITY`] records and fence entries) is created; a journal of the older
    /// format (`FileJournal`) is copied into one. Otherwise
    /// it must be there and verify under the node's key (derived from `identity`); a missing,
    /// damaged or copied journal is an error naming the file. A directory from before the
    /// journal was shared keeps the trust list's epochs in `dir/epochs`: they are merged into
    /// the journal and the file is renamed `epochs.merged`. The journal is created from them
    /// only if `dir/agents` is empty; with agents there, a missing journal is an error.
    ///
    /// Give [`WasmHost::journal`] to the node ([`Driver::new`](super::Driver::new)): the fence
    /// and the trust list then share one table.
    pub fn open(
        identity: &Identity,
        directory: &Directory,
        dir: &Path,
        fuel: u64,
    ) -> io::Result<WasmHost> {
        let node = identity.node_id();
        // A new node (its directory missing or empty) creates its epoch journal; any other
        // must find it, sealed with its key: a node that lost it would accept replays.
        let fresh = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        std::fs::create_dir_all(dir)?;
        let key = crate::LocalKey::derive(identity.secret(), node);
        let path = dir.join("journal");
        let legacy = dir.join("epochs");
        // A directory from before the journal was shared, with no journal of the node's own:
        // its journal is created from the epochs. Not when it holds agents: then a journal
        // was lost (the `mielin` node kept one there), and starting empty would forget where
        // they are.
        let holds_agents = std::fs::read_dir(dir.join("agents"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let only_legacy = !fresh && !path.exists() && legacy.exists() && !holds_agents;
        let mut journal =
            open_journal(&path, node, &key, fresh || only_legacy).map_err(|e| e.at(&path))?;
        if legacy.exists() {
            merge_epochs(&mut journal, &legacy, node, &key)?;
        }
        std::fs::create_dir_all(dir.join("agents"))?;
        std::fs::create_dir_all(dir.join("dna"))?;
        let journal = SharedJournal::new(journal);
        let mut trust = TrustList::new(node, journal.clone());
        for (id, peer) in directory.iter() {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&peer.key.0)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad peer key"))?;
            trust
                .trust(id, key)
                .map_err(|e| io::Error::other(format!("trust list: {e}")))?;
        }
        let mut dna = DnaMap::new();
        for e in std::fs::read_dir(dir.join("dna"))? {
            let bin = std::fs::read(e?.path())?;
            if let Ok(d) = Dna::new(bin) {
                dna.insert(&d);
            }
        }
        Ok(WasmHost {
            node,
            dir: dir.to_path_buf(),
            rt: Runtime::new(fuel),
            signer: Ed25519Signer::from_secret(identity.secret()),
            key,
            trust,
            journal,
            dna,
            limits: DecodeLimits {
                max_wasm_binary: 16 << 20,
                max_wasm_state: 128 << 20,
            },
            inbox_limits: InboxLimits::default(),
            live: BTreeMap::new(),
            stopped: BTreeMap::new(),
            routes: BTreeMap::new(),
            probes: BTreeMap::new(),
            captured: None,
            duplicates: 0,
            errors: Vec::new(),
        })
    }

    /// The node's journal, shared with this host's trust list: give it to the node.
    pub fn journal(&self) -> SharedJournal<NodeJournal> {
        self.journal.clone()
    }

    /// Trusts snapshots signed by `peer`'s key for its node (a peer pinned while running).
    pub fn trust_peer(&mut self, peer: &super::Peer) -> Result<(), String> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&peer.key.0)
            .map_err(|_| String::from("bad peer key"))?;
        self.trust
            .trust(peer.key.node_id(), key)
            .map_err(|e| format!("trust list: {e}"))
    }

    fn run_path(&self, agent: AgentId) -> PathBuf {
        self.dir
            .join("agents")
            .join(format!("{}.run", to_hex(agent.as_bytes())))
    }

    fn prep_path(&self, agent: AgentId, epoch: u64) -> PathBuf {
        self.dir
            .join("agents")
            .join(format!("{}.{epoch}.prep", to_hex(agent.as_bytes())))
    }

    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) {
        if crate::migration::DnaStore::get(&self.dna, dna.hash()).is_none() {
            let path = self
                .dir
                .join("dna")
                .join(format!("{}.wasm", to_hex(dna.hash())));
            if let Err(e) = write_durable(&path, dna.binary()) {
                self.errors.push(format!("saving DNA: {e}"));
            }
            self.dna.insert(dna);
        }
    }

    /// The bytes kept on disk for an agent: a version-3 container addressed to this node at
    /// `epoch`, its DNA by reference (in `DIR/dna`), its inbox inside, sealed with the node's
    /// key.
    fn encode_local(
        &self,
        agent: &Agent<Vec<u8>>,
        inbox: &Inbox,
        epoch: u64,
    ) -> Result<Vec<u8>, MeshError> {
        MigrationSnapshot::capture_at(agent, Some(self.node), crate::unix_now())
            .with_route(Route {
                target: self.node,
                epoch,
            })
            .with_inbox(inbox.to_bytes())
            .serialize_with(&EncodeOptions {
                version: Some(3),
                dna_by_reference: true,
                state: StateEncoding::Chunked,
                sealer: Some(&self.key),
                ..Default::default()
            })
            .map_err(|_| refused("serialize"))
    }

    /// Decodes a file this host saved, as strictly as bytes from a peer: sealed with this
    /// node's key, addressed to this node, every check of the container, the inbox's too.
    fn decode_local(&self, bytes: &[u8]) -> Result<Saved, MeshError> {
        let opts = DecodeOptions {
            limits: self.limits,
            dna_store: Some(&self.dna),
            ..Default::default()
        };
        let s = MigrationSnapshot::deserialize_sealed(bytes, &opts, &self.key)
            .map_err(|_| refused("saved agent refused (seal, format or DNA)"))?;
        let route = s.route().ok_or(refused("saved agent has no route"))?;
        if route.target != self.node {
            return Err(refused("saved agent is addressed to another node"));
        }
        let inbox = Inbox::decode(s.inbox().unwrap_or_default())
            .map_err(|_| refused("saved agent's inbox refused"))?;
        let agent = s.into_agent().map_err(|_| refused("restore"))?;
        Ok(Saved {
            agent,
            inbox,
            epoch: route.epoch,
        })
    }

    /// Decodes a file a host saved, `DIR/agents/<id>.run` or `<id>.<epoch>.prep`, for an
    /// operator's tool (`mielin inspect`): checked with the node's `key` (refused if another
    /// node wrote it, or it was edited) within `limits`, with the DNA from `dna` if it holds
    /// it. Returns the agent, its epoch, and how many messages wait in its mailbox and outbox.
    pub fn decode_saved(
        bytes: &[u8],
        key: &LocalKey,
        limits: DecodeLimits,
        dna: &DnaMap,
    ) -> Result<SavedAgent, crate::CellError> {
        let opts = DecodeOptions {
            limits,
            dna_store: Some(dna),
            ..Default::default()
        };
        let s = MigrationSnapshot::deserialize_sealed(bytes, &opts, key)?;
        let epoch = s.route().map_or(0, |r| r.epoch);
        let inbox = Inbox::decode(s.inbox().unwrap_or_default())?;
        Ok(SavedAgent {
            agent: s.into_agent()?,
            epoch,
            waiting: inbox.waiting(),
            unacked: inbox.unacked(),
        })
    }

    fn save_live(&mut self, agent: AgentId) {
        let Some((live, epoch)) = self.live.get_mut(&agent) else {
            return;
        };
        let epoch = *epoch;
        let inbox = live.host().get().clone();
        let bytes = match live.capture() {
            Ok(a) => {
                let a = a.clone();
                self.encode_local(&a, &inbox, epoch)
            }
            Err(_) => Err(refused("capture")),
        };
        match bytes {
            Ok(b) => {
                if let Err(e) = write_durable(&self.run_path(agent), &b) {
                    self.errors.push(format!("saving agent: {e}"));
                }
            }
            Err(e) => self.errors.push(format!("saving agent: {e}")),
        }
    }

    fn go_live(&mut self, agent: Agent<Vec<u8>>, inbox: Inbox, epoch: u64) -> Result<(), String> {
        let id = agent.id();
        let live = self
            .rt
            .resume(
                agent,
                SharedInbox::new(inbox, self.inbox_limits),
                wasm::link,
            )
            .map_err(|e| format!("resume: {e}"))?;
        self.live.insert(id, (live, epoch));
        Ok(())
    }

    /// Creates an agent from a WebAssembly binary, calls its `start(arg)` export if it has one,
    /// and saves it. Then hand it to [`Driver::start`](super::Driver::start). The agent's
    /// message streams derive from a fresh random secret.
    pub fn create(&mut self, agent: AgentId, wasm: Vec<u8>, arg: i32) -> Result<(), String> {
        let dna = Dna::new(wasm).map_err(|e| format!("DNA: {e}"))?;
        self.keep_dna(&dna);
        let secret = uuid::Uuid::new_v4().into_bytes();
        let inbox = SharedInbox::new(Inbox::with_secret(secret), self.inbox_limits);
        let mut live = self
            .rt
            .start(Agent::with_id(agent, dna), inbox, wasm::link)
            .map_err(|e| format!("start: {e}"))?;
        if live.call("start", &[Val::I32(arg)]).is_err() {
            // No `start` export: nothing to initialise.
        }
        self.live.insert(agent, (live, 0));
        self.save_live(agent);
        Ok(())
    }

    /// Changes the linear memory of an agent running here (`f` gets a copy to edit), and saves
    /// it. For benchmarks and tests of re-migration.
    pub fn modify_memory(
        &mut self,
        agent: AgentId,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), String> {
        let (live, epoch) = self.live.remove(&agent).ok_or("not running here")?;
        let inbox = live.host().get().clone();
        let mut a = live.into_agent().map_err(|e| format!("capture: {e}"))?;
        let mut mem = a.wasm_state().to_vec();
        f(&mut mem);
        a.set_wasm_state(mem);
        a.set_state(crate::AgentState::Suspended)
            .map_err(|e| format!("modify: {e}"))?;
        self.go_live(a, inbox, epoch)?;
        self.save_live(agent);
        Ok(())
    }

    /// Queues a message from `from` (an agent running here) to `to`, as if the agent had
    /// sent it, and saves the agent. `false` when the agent does not run here or its outbox is
    /// full.
    pub fn send_as(&mut self, from: AgentId, to: AgentId, payload: &[u8]) -> bool {
        let ok = match self.live.get(&from) {
            Some((l, _)) => l.host().clone().send(to, payload),
            None => false,
        };
        if ok {
            self.save_live(from);
        }
        ok
    }

    /// Puts a message from `from`, a sender outside the mesh (an operator's tool), into the
    /// mailbox of `to`, an agent running here, in the operator's own stream; saves the agent
    /// when it is accepted. [`Delivery::Full`] when `to` does not run here or its mailbox is
    /// full.
    pub fn post(&mut self, to: AgentId, from: AgentId, payload: &[u8]) -> Delivery {
        let Some((live, _)) = self.live.get(&to) else {
            return Delivery::Full;
        };
        let d = live
            .host()
            .get_mut()
            .post(from, payload, &self.inbox_limits);
        if d == Delivery::Accepted {
            self.save_live(to);
        }
        d
    }

    /// Calls every running agent's `tick` export; saves those that handled messages. Returns
    /// how many messages were handled.
    pub fn tick(&mut self) -> u64 {
        let ids: Vec<AgentId> = self.live.keys().copied().collect();
        let mut total = 0;
        for id in ids {
            let n = match self.live.get_mut(&id).map(|(l, _)| l.call("tick", &[])) {
                Some(Ok(v)) => match v.first() {
                    Some(Val::I32(n)) => *n,
                    _ => 0,
                },
                _ => 0,
            };
            if n > 0 {
                total += n as u64;
                self.save_live(id);
            }
        }
        total
    }

    /// The agents running here.
    pub fn running(&self) -> Vec<AgentId> {
        self.live.keys().copied().collect()
    }

    /// An agent's `stats` export, if it runs here and has one.
    pub fn stats(&mut self, agent: AgentId) -> Option<AgentStats> {
        let v = self.live.get_mut(&agent)?.0.call("stats", &[]).ok()?;
        match v[..] {
            [Val::I32(received), Val::I32(last), Val::I32(out_of_order)] => Some(AgentStats {
                received,
                last,
                out_of_order,
            }),
            _ => None,
        }
    }

    /// The memory size of an agent running here.
    pub fn memory_len(&mut self, agent: AgentId) -> Option<usize> {
        let (live, _) = self.live.get_mut(&agent)?;
        live.capture().ok().map(|a| a.wasm_state().len())
    }

    /// The agent's state for a hand-off: the stopped copy, or after a restart the saved one.
    fn stopped_copy(&mut self, agent: AgentId) -> Result<&Stopped, MeshError> {
        if !self.stopped.contains_key(&agent) {
            let bytes =
                std::fs::read(self.run_path(agent)).map_err(|_| refused("not stopped here"))?;
            let s = self.decode_local(&bytes)?;
            self.stopped.insert(
                agent,
                Stopped {
                    agent: s.agent,
                    inbox: s.inbox,
                },
            );
        }
        self.stopped.get(&agent).ok_or(refused("not stopped here"))
    }
}

impl RoutedHost for WasmHost {
    fn route(&mut self, agent: AgentId, target: NodeId, epoch: u64) {
        self.routes.insert(agent, (target, epoch));
    }
}

impl AgentHost for WasmHost {
    fn describe(&mut self, agent: AgentId) -> Option<AgentInfo> {
        let dna = match self.live.get(&agent) {
            Some((l, _)) => l.agent().dna().clone(),
            None => self.stopped_copy(agent).ok()?.agent.dna().clone(),
        };
        Some(AgentInfo {
            dna_hash: *dna.hash(),
            snapshot_len: 0,
            dna_len: dna.size() as u32,
        })
    }

    fn has_dna(&mut self, dna_hash: &[u8; 32]) -> bool {
        crate::migration::DnaStore::get(&self.dna, dna_hash).is_some()
    }

    fn stop(&mut self, agent: AgentId) {
        self.save_live(agent);
        if let Some((live, _)) = self.live.remove(&agent) {
            let inbox = live.host().get().clone();
            match live.into_agent() {
                Ok(mut a) => {
                    // Stopped for the hand-off; `run` resumes it if the hand-off aborts.
                    if let Err(e) = a.set_state(crate::AgentState::Suspended) {
                        self.errors.push(format!("stop: {e}"));
                    }
                    self.stopped.insert(agent, Stopped { agent: a, inbox });
                }
                Err(e) => self.errors.push(format!("stop: {e}")),
            }
        }
    }

    fn capture(
        &mut self,
        agent: AgentId,
        with_dna: bool,
        out: &mut [u8],
    ) -> Result<usize, MeshError> {
        let &(target, epoch) = self.routes.get(&agent).ok_or(refused("no route"))?;
        let cached = matches!(&self.captured, Some((a, e, d, _)) if *a == agent && *e == epoch && *d == with_dna);
        if !cached {
            let node = self.node;
            let s = self.stopped_copy(agent)?;
            // The agent and its messages under one signature, bound to the target and epoch.
            let bytes = MigrationSnapshot::capture_at(&s.agent, Some(node), crate::unix_now())
                .with_route(Route { target, epoch })
                .with_inbox(s.inbox.to_bytes())
                .serialize_with(&EncodeOptions {
                    version: Some(3),
                    dna_by_reference: !with_dna,
                    state: StateEncoding::Chunked,
                    signer: Some((&self.signer, epoch)),
                    ..Default::default()
                })
                .map_err(|_| refused("serialize"))?;
            self.captured = Some((agent, epoch, with_dna, bytes));
        }
        let bytes = &self.captured.as_ref().ok_or(refused("capture"))?.3;
        let dst = out
            .get_mut(..bytes.len())
            .ok_or(MeshError::PayloadTooLarge)?;
        dst.copy_from_slice(bytes);
        Ok(bytes.len())
    }

    fn prepare(
        &mut self,
        agent: AgentId,
        epoch: u64,
        _: bool,
        bytes: &[u8],
    ) -> Result<(), MeshError> {
        // The frame's agent and epoch are what the protocol acts on; the container's are what
        // the source signed. They must be one — checked before the trust list, which journals
        // the epoch it accepts: a container sent under another frame's epoch must not burn it.
        let c = Container::new_checked(bytes, &self.limits)
            .map_err(|_| refused("not a version-3 container within the limits"))?;
        if c.agent_id() != agent {
            return Err(refused("not this agent"));
        }
        if c.route().epoch != epoch {
            return Err(refused("the signed epoch is not the hand-off's"));
        }
        // This host runs agents between calls only: a suspended call (runtime::midcall) cannot
        // be taken over here. Refused before the trust list, so the epoch is not burnt and the
        // source may offer the agent elsewhere.
        if c.section(SECTION_CALL).is_some() {
            return Err(refused(
                "a suspended call: this node runs agents between calls only",
            ));
        }
        let opts = DecodeOptions {
            limits: self.limits,
            dna_store: Some(&self.dna),
            ..Default::default()
        };
        let checked = self
            .trust
            .deserialize(bytes, &opts, crate::unix_now())
            .map_err(|_| refused("snapshot refused (signature, route, epoch or format)"))?;
        let inbox = Inbox::decode(checked.inbox().ok_or(refused("no inbox section"))?)
            .map_err(|_| refused("bad inbox"))?;
        let a = checked.into_agent().map_err(|_| refused("restore"))?;
        self.keep_dna(a.dna());
        let local = self.encode_local(&a, &inbox, epoch)?;
        write_durable(&self.prep_path(agent, epoch), &local).map_err(|_| MeshError::JournalIo)?;
        Ok(())
    }

    fn run(&mut self, agent: AgentId, epoch: u64) {
        if self.live.contains_key(&agent) {
            return;
        }
        if matches!(&self.captured, Some((a, ..)) if *a == agent) {
            self.captured = None; // an aborted hand-off's capture
        }
        let prep = self.prep_path(agent, epoch);
        let source = match std::fs::read(&prep) {
            Ok(b) => {
                // Committed here: the prepared copy becomes the agent's saved state (an atomic
                // rename, then the directory synced; the file was synced by `prepare`).
                let saved = self.decode_local(&b).and_then(|s| {
                    if s.epoch == epoch {
                        Ok((s.agent, s.inbox))
                    } else {
                        Err(refused("prepared file of another epoch"))
                    }
                });
                if saved.is_ok() {
                    let run = self.run_path(agent);
                    let renamed = std::fs::rename(&prep, &run)
                        .and_then(|()| std::fs::File::open(self.dir.join("agents"))?.sync_all());
                    if let Err(e) = renamed {
                        self.errors.push(format!("saving agent: {e}"));
                    }
                }
                saved
            }
            Err(_) => match self.stopped.remove(&agent) {
                Some(s) => Ok((s.agent, s.inbox)),
                None => std::fs::read(self.run_path(agent))
                    .map_err(|_| refused("no saved copy"))
                    .and_then(|b| self.decode_local(&b))
                    .and_then(|s| {
                        // The journal's epoch, or the one before it: a hand-off aborted here
                        // and the node stopped before the agent was saved at the new epoch.
                        // Anything else is another epoch's copy (a rolled-back file).
                        if s.epoch == epoch || s.epoch.checked_add(1) == Some(epoch) {
                            Ok((s.agent, s.inbox))
                        } else {
                            Err(refused("saved agent of another epoch"))
                        }
                    }),
            },
        };
        // Other prepared copies of this agent are obsolete.
        if let Ok(rd) = std::fs::read_dir(self.dir.join("agents")) {
            let prefix = format!("{}.", to_hex(agent.as_bytes()));
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name.ends_with(".prep") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        match source {
            Ok((a, inbox)) => {
                self.keep_dna(a.dna());
                match self.go_live(a, inbox, epoch) {
                    // Saved at its epoch now (after an abort, one more than before).
                    Ok(()) => self.save_live(agent),
                    Err(e) => self.errors.push(e),
                }
            }
            Err(e) => self.errors.push(format!("run {agent:?}: {e}")),
        }
    }

    fn discard(&mut self, agent: AgentId, epoch: u64) {
        let _ = std::fs::remove_file(self.prep_path(agent, epoch));
    }

    fn prune(&mut self, prepared: &dyn Fn(AgentId, u64) -> bool) {
        let Ok(rd) = std::fs::read_dir(self.dir.join("agents")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".prep") else {
                continue;
            };
            let parsed = stem.split_once('.').and_then(|(id, epoch)| {
                let id: [u8; 16] = super::identity::from_hex(id)?.try_into().ok()?;
                Some((AgentId::from_bytes(id), epoch.parse::<u64>().ok()?))
            });
            // A prepared copy the journal does not hold in doubt can never be committed (a
            // commit follows only a Prepared answer, sent after the journal write): a crash
            // between the two left it behind, or it is not ours.
            if parsed.is_none_or(|(a, epoch)| !prepared(a, epoch)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn release(&mut self, agent: AgentId) {
        self.stopped.remove(&agent);
        self.live.remove(&agent);
        // This node sent the agent away at the route's epoch: a replay of an earlier hand-off
        // of it to this node is refused from now on.
        if let Some((_, epoch)) = self.routes.remove(&agent) {
            if let Err(e) = self.trust.record_sent(agent, epoch) {
                self.errors
                    .push(format!("recording the hand-off's epoch: {e}"));
            }
        }
        if matches!(&self.captured, Some((a, ..)) if *a == agent) {
            self.captured = None;
        }
        let _ = std::fs::remove_file(self.run_path(agent));
    }

    fn deliver(
        &mut self,
        to: AgentId,
        peer: NodeId,
        from: AgentId,
        stream: Stream,
        seq: u64,
        payload: &[u8],
    ) -> Delivery {
        let Some((live, _)) = self.live.get(&to) else {
            return Delivery::Full;
        };
        let d = live.host().offer(peer, from, stream, seq, payload);
        match d {
            Delivery::Accepted => self.save_live(to),
            Delivery::Duplicate => self.duplicates += 1,
            _ => {}
        }
        d
    }

    fn outgoing(&mut self, agent: AgentId, f: &mut dyn FnMut(Outgoing<'_>)) {
        match self.live.get(&agent) {
            Some((l, _)) => l.host().get().outgoing(f),
            None => {
                if let Some(s) = self.stopped.get(&agent) {
                    s.inbox.outgoing(f);
                }
            }
        }
    }

    fn acked(&mut self, agent: AgentId, to: AgentId, seq: u64) {
        if let Some((live, _)) = self.live.get(&agent) {
            live.host().get_mut().acked(to, seq);
        }
    }

    /// The directory of a node that keeps none: where this node last handed the agent, else
    /// each trusted peer in turn, one per lookup. The node backs off between lookups answered
    /// `Unknown` (doubling from one retransmission timeout to
    /// [`MAX_LOOKUP_BACKOFF`](crate::mesh::MAX_LOOKUP_BACKOFF) of them), so an agent running on
    /// one of `P` peers is found within `P` lookups.
    fn locate(&mut self, agent: AgentId) -> Option<NodeId> {
        if let Some((n, _)) = self.routes.get(&agent) {
            return Some(*n);
        }
        let peers: Vec<NodeId> = self.trust.nodes().filter(|n| *n != self.node).collect();
        if peers.is_empty() {
            return None;
        }
        if self.probes.len() >= MAX_PROBES && !self.probes.contains_key(&agent) {
            self.probes.clear(); // a cursor lost only restarts that agent's round
        }
        let k = self.probes.entry(agent).or_insert(0);
        let node = peers[*k % peers.len()];
        *k = k.wrapping_add(1);
        Some(node)
    }
}

/// Addressees whose lookup cursor [`WasmHost`] keeps.
const MAX_PROBES: usize = 1024;
