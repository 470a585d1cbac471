//! [`WasmHost`]: the library's agent host ([`Cells`]) for the QUIC node: agents kept on disk,
//! sealed to this node ([`NodeFiles`]), signed on the wire and checked by a trust list
//! ([`Signed`]).

use super::driver::RoutedHost;
use super::identity::{to_hex, Directory, Identity};
use crate::mesh::cells::{
    open_copy, seal_copy, Cells, Event, Gate, KeepError, Keeper, Saved, MAX_EVENT_LEN,
};
use crate::mesh::{
    FileJournal, Inbox, InboxLimits, Journal, LogJournal, SharedJournal, LOG_JOURNAL_RECORD,
};
use crate::migration::{
    Admitted, DecodeLimits, DecodeOptions, DnaMap, DnaStore, Ed25519Signer, EpochJournal,
    FileEpochJournal, MigrationSnapshot, SnapshotSigner, TrustList,
};
use crate::runtime::midcall::SuspendedCall;
use crate::runtime::{Runtime, Val};
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
    /// The call it was saved in the middle of, if it was waiting in one (`runtime::midcall`).
    pub call: Option<SuspendedCall>,
}

/// WebAssembly agents on disk, sealed to this node, signed on the wire: [`Cells`] with
/// [`NodeFiles`] and [`Signed`].
///
/// Agents import `mesh.send`/`mesh.recv` ([`crate::mesh::wasm`]) and may export `tick() -> i32`
/// (called by `tick("tick", &[])`; returns how many messages it handled, 0 when nothing
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
/// **On disk** (the protocol's assumption A2): see [`NodeFiles`]. A file is loaded as strictly
/// as bytes from a peer: a file from another node, an edited one, or one from another epoch
/// than the journal says is refused (`docs/security.md` states which attacker this stops and
/// which it does not).
pub type WasmHost = Cells<NodeFiles, Signed>;

/// Where the QUIC node keeps its agents: an agent's state is a version-3 container *sealed*
/// with the node's own key ([`LocalKey`], from its secret and id), addressed to this node at the
/// agent's epoch, in `DIR/agents/<id>.run` (temporary file, `fsync`, rename, directory `fsync`);
/// a prepared hand-off in `DIR/agents/<id>.<epoch>.prep`, renamed to `.run` when it commits;
/// DNA binaries in `DIR/dna/<sha256>.wasm` (named by their hash, which is checked when they are
/// used).
///
/// **Events** ([`Keeper::append`]): what happens to a running agent between two saves
/// (messages accepted, `tick` calls that handled some, acknowledgements) is appended to
/// `DIR/agents/<id>.<d>.log`, a [`FileLog`] sealed to the node whose first record names the
/// SHA-256 of the `.run` file it follows (`d` is its first 8 bytes in hex), and made durable by
/// [`Keeper::flush`], one group commit per log. A log that names another `.run` (left by a
/// crash between a save and the removal of the old log, or put there) is not applied: it is
/// removed. The host saves the agent whole every
/// [`checkpoint_every`](Cells::checkpoint_every) events, which starts a new log.
#[derive(Debug)]
pub struct NodeFiles {
    node: NodeId,
    dir: PathBuf,
    key: LocalKey,
    dna: DnaMap,
    limits: DecodeLimits,
    errors: Vec<String>,
    /// The event log of each running copy with one open, and the digest of the `.run` it
    /// follows.
    logs: BTreeMap<AgentId, ([u8; 32], FileLog)>,
    /// The digest of each `.run` this keeper wrote or read.
    checkpoints: BTreeMap<AgentId, [u8; 32]>,
    /// A write or sync of a log failed: nothing is durable any more until a restart.
    failed: bool,
    /// Event logs synced so far (each two `fdatasync`s).
    group_commits: u64,
    /// Which files of `DIR/agents` this keeper holds besides the `.run` files, read from the
    /// directory once when the node opens and kept up to date after: the prepared copies, and
    /// each agent's event log files. Pruning and saving consult it instead of listing the
    /// directory, which costs a scan of every agent's files per call (O(N²) for a restart of
    /// N agents).
    files: AgentFiles,
}

/// The index [`NodeFiles`] keeps of `DIR/agents` (see its `files` field).
#[derive(Debug, Default)]
struct AgentFiles {
    prepared: alloc::collections::BTreeSet<(AgentId, u64)>,
    logs: BTreeMap<AgentId, Vec<PathBuf>>,
}

impl AgentFiles {
    /// Lists `agents` once. A `.prep` file that names no agent and epoch is not ours and is
    /// removed (as pruning always did); other files are left alone.
    fn scan(agents: &Path) -> io::Result<AgentFiles> {
        let mut files = AgentFiles::default();
        for e in std::fs::read_dir(agents)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let agent_of = |id: &str| -> Option<AgentId> {
                let id: [u8; 16] = super::identity::from_hex(id)?.try_into().ok()?;
                Some(AgentId::from_bytes(id))
            };
            if let Some(stem) = name.strip_suffix(".prep") {
                let parsed = stem
                    .split_once('.')
                    .and_then(|(id, epoch)| Some((agent_of(id)?, epoch.parse::<u64>().ok()?)));
                match parsed {
                    Some(p) => {
                        files.prepared.insert(p);
                    }
                    None => {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            } else if let Some(stem) = name.strip_suffix(".log") {
                if let Some(agent) = stem.split_once('.').and_then(|(id, _)| agent_of(id)) {
                    files.logs.entry(agent).or_default().push(e.path());
                }
            }
        }
        Ok(files)
    }
}

/// The first record of an event log: this byte, then the SHA-256 of the `.run` it follows.
const LOG_FOLLOWS: u8 = 0;

impl NodeFiles {
    /// Event logs synced so far by [`Keeper::flush`] (each sync is one group commit: two
    /// `fdatasync`s), for benches and metrics.
    pub fn group_commits(&self) -> u64 {
        self.group_commits
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

    fn log_path(&self, agent: AgentId, run: &[u8; 32]) -> PathBuf {
        self.dir.join("agents").join(format!(
            "{}.{}.log",
            to_hex(agent.as_bytes()),
            to_hex(&run[..8])
        ))
    }

    /// Removes the agent's event logs but `keep`.
    fn remove_logs(&mut self, agent: AgentId, keep: Option<&Path>) {
        let Some(paths) = self.files.logs.get_mut(&agent) else {
            return;
        };
        paths.retain(|p| {
            if Some(&**p) == keep {
                return true;
            }
            let _ = std::fs::remove_file(p);
            false
        });
        if paths.is_empty() {
            self.files.logs.remove(&agent);
        }
    }

    /// Reads the `.run` file and its event log (if any, and only if it follows this file).
    fn load_running(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        let path = self.run_path(agent);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failed("reading", &path, e, KeepError::Read)),
        };
        let mut saved = self.decode_local(&bytes)?;
        // A file named for one agent that holds another (copied or renamed) is not that agent.
        if saved.agent.id() != agent {
            return Err(KeepError::OtherAgent {
                found: saved.agent.id(),
            });
        }
        let run = crate::hash::sha256(&bytes);
        let log_path = self.log_path(agent, &run);
        self.remove_logs(agent, Some(&log_path));
        self.checkpoints.insert(agent, run);
        let mut records: Vec<Vec<u8>> = Vec::new();
        let log = match FileLog::open(
            &log_path,
            self.node,
            &self.key,
            MAX_EVENT_LEN,
            &mut |_, r| records.push(r.to_vec()),
        ) {
            Ok(l) => l,
            Err(StoreError::Missing) => return Ok(Some(saved)),
            Err(e) => {
                self.errors
                    .push(format!("reading {}: {e}", log_path.display()));
                return Err(KeepError::Read);
            }
        };
        if records.is_empty() {
            // Created, and nothing in it reached the disk before the node stopped: no events
            // (no frame left after them). It is made again at the next event.
            drop(log);
            let _ = std::fs::remove_file(&log_path);
            return Ok(Some(saved));
        }
        let mut it = records.iter();
        let follows = it.next().is_some_and(|r| r[..] == follows_record(&run)[..]);
        if !follows {
            self.errors.push(format!(
                "{}: does not follow {}",
                log_path.display(),
                path.display()
            ));
            return Err(KeepError::Refused(crate::CellError::from(
                crate::DecodeError::Malformed,
            )));
        }
        for r in it {
            saved
                .events
                .push(Event::decode(r).map_err(|e| KeepError::Refused(e.into()))?);
        }
        self.logs.insert(agent, (run, log));
        Ok(Some(saved))
    }

    /// The open event log of the agent's running copy, created if there is none yet.
    fn log_for(&mut self, agent: AgentId) -> Result<&mut FileLog, KeepError> {
        if !self.logs.contains_key(&agent) {
            let run = match self.checkpoints.get(&agent) {
                Some(d) => *d,
                None => {
                    let path = self.run_path(agent);
                    let bytes = std::fs::read(&path)
                        .map_err(|e| self.failed("reading", &path, e, KeepError::Read))?;
                    crate::hash::sha256(&bytes)
                }
            };
            let path = self.log_path(agent, &run);
            // A log of this copy that was not read is not appended to: its events are not in
            // the agent the host runs.
            let mut log =
                FileLog::create(&path, self.node, &self.key, MAX_EVENT_LEN).map_err(|e| {
                    self.errors
                        .push(format!("creating {}: {e}", path.display()));
                    KeepError::Write
                })?;
            let known = self.files.logs.entry(agent).or_default();
            if !known.contains(&path) {
                known.push(path.clone());
            }
            log.append(&follows_record(&run)).map_err(|e| {
                self.errors.push(format!("writing {}: {e}", path.display()));
                KeepError::Write
            })?;
            self.checkpoints.insert(agent, run);
            self.logs.insert(agent, (run, log));
        }
        self.logs
            .get_mut(&agent)
            .map(|(_, l)| l)
            .ok_or(KeepError::Write)
    }

    /// The agent's saved copy changed (saved again, committed, removed): its log is obsolete.
    fn forget_log(&mut self, agent: AgentId) {
        self.logs.remove(&agent);
        self.checkpoints.remove(&agent);
        self.remove_logs(agent, None);
    }

    /// Keeps the text of an I/O error (the caller gets [`KeepError::Write`] or `Read`).
    fn failed(&mut self, what: &str, path: &Path, e: io::Error, kind: KeepError) -> KeepError {
        self.errors.push(format!("{what} {}: {e}", path.display()));
        kind
    }

    /// The bytes kept on disk for an agent: a version-3 container addressed to this node at
    /// `epoch`, its DNA by reference (in `DIR/dna`), its inbox inside, sealed with the node's
    /// key.
    fn encode_local(
        &self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<Vec<u8>, KeepError> {
        seal_copy(self.node, &self.key, epoch, agent, inbox)
    }

    /// Decodes a file this host saved, as strictly as bytes from a peer: sealed with this
    /// node's key, addressed to this node, every check of the container, the inbox's too.
    fn decode_local(&self, bytes: &[u8]) -> Result<Saved, KeepError> {
        open_copy(self.node, &self.key, self.limits, &self.dna, bytes)
    }

    fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<(), KeepError> {
        write_durable(path, bytes).map_err(|e| self.failed("writing", path, e, KeepError::Write))
    }

    fn read(&mut self, path: &Path) -> Result<Option<Saved>, KeepError> {
        match std::fs::read(path) {
            Ok(b) => self.decode_local(&b).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.failed("reading", path, e, KeepError::Read)),
        }
    }
}

impl Keeper for NodeFiles {
    fn dna(&self) -> &dyn DnaStore {
        &self.dna
    }

    fn keep_dna(&mut self, dna: &Dna<Vec<u8>>) -> Result<(), KeepError> {
        if self.dna.get(dna.hash()).is_some() {
            return Ok(());
        }
        let path = self
            .dir
            .join("dna")
            .join(format!("{}.wasm", to_hex(dna.hash())));
        self.write(&path, dna.binary())?;
        self.dna.insert(dna);
        Ok(())
    }

    fn save(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let id = agent.agent_id();
        let bytes = self.encode_local(epoch, agent, inbox)?;
        self.write(&self.run_path(id), &bytes)?;
        // The new copy holds every event of the old log: that log goes (a crash before it is
        // removed leaves a log that names the old copy, which is never applied).
        self.forget_log(id);
        self.checkpoints.insert(id, crate::hash::sha256(&bytes));
        Ok(())
    }

    fn load(&mut self, agent: AgentId) -> Result<Option<Saved>, KeepError> {
        // An open log's pending events reach the file first.
        if let Some((_, mut log)) = self.logs.remove(&agent) {
            log.sync().map_err(|_| KeepError::Write)?;
        }
        self.load_running(agent)
    }

    fn save_prepared(
        &mut self,
        epoch: u64,
        agent: &MigrationSnapshot<&[u8]>,
        inbox: &Inbox,
    ) -> Result<(), KeepError> {
        let bytes = self.encode_local(epoch, agent, inbox)?;
        self.write(&self.prep_path(agent.agent_id(), epoch), &bytes)?;
        self.files.prepared.insert((agent.agent_id(), epoch));
        Ok(())
    }

    fn load_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<Option<Saved>, KeepError> {
        let saved = self.read(&self.prep_path(agent, epoch))?;
        match saved {
            Some(s) if s.agent.id() != agent => Err(KeepError::OtherAgent {
                found: s.agent.id(),
            }),
            other => Ok(other),
        }
    }

    fn commit_prepared(&mut self, agent: AgentId, epoch: u64) -> Result<(), KeepError> {
        // The prepared copy becomes the agent's saved state: an atomic rename, then the
        // directory synced (the file was synced when it was prepared).
        let prep = self.prep_path(agent, epoch);
        if !prep.exists() {
            self.files.prepared.remove(&(agent, epoch));
            return Ok(());
        }
        let run = self.run_path(agent);
        std::fs::rename(&prep, &run)
            .and_then(|()| std::fs::File::open(self.dir.join("agents"))?.sync_all())
            .map_err(|e| self.failed("committing", &prep, e, KeepError::Write))?;
        self.files.prepared.remove(&(agent, epoch));
        self.forget_log(agent);
        Ok(())
    }

    fn prune(&mut self, keep: &dyn Fn(AgentId, u64) -> bool) {
        let gone: Vec<(AgentId, u64)> = self
            .files
            .prepared
            .iter()
            .copied()
            .filter(|&(a, e)| !keep(a, e))
            .collect();
        for (agent, epoch) in gone {
            let _ = std::fs::remove_file(self.prep_path(agent, epoch));
            self.files.prepared.remove(&(agent, epoch));
        }
    }

    fn remove(&mut self, agent: AgentId) {
        let _ = std::fs::remove_file(self.run_path(agent));
        self.forget_log(agent);
    }

    fn logs_events(&self) -> bool {
        true
    }

    fn append(&mut self, agent: AgentId, event: &Event) -> Result<bool, KeepError> {
        if self.failed {
            return Err(KeepError::Write);
        }
        let mut bytes = Vec::new();
        event.encode(&mut bytes);
        let r = self
            .log_for(agent)
            .and_then(|log| log.append(&bytes).map_err(|_| KeepError::Write));
        self.failed |= r.is_err();
        r.map(|_| true)
    }

    fn flush(&mut self) -> Result<(), KeepError> {
        if self.failed {
            return Err(KeepError::Write);
        }
        for (agent, (_, log)) in self.logs.iter_mut() {
            if log.durable() < log.appended() {
                self.group_commits += 1;
                if let Err(e) = log.sync() {
                    self.errors
                        .push(format!("syncing the event log of {agent:?}: {e}"));
                    self.failed = true;
                    return Err(KeepError::Write);
                }
            }
        }
        Ok(())
    }
}

/// The first record of an agent's event log: it follows the `.run` file with digest `run`.
fn follows_record(run: &[u8; 32]) -> [u8; 33] {
    let mut r = [LOG_FOLLOWS; 33];
    r[1..].copy_from_slice(run);
    r
}

/// The QUIC node's [`Gate`]: containers it sends are signed with its Ed25519 key; containers
/// it receives must be signed by a key of its [`TrustList`], whose epochs live in the node's
/// journal.
pub struct Signed {
    signer: Ed25519Signer,
    trust: TrustList<64, SharedJournal<NodeJournal>>,
    journal: SharedJournal<NodeJournal>,
    admitted: Option<Admitted>,
}

impl core::fmt::Debug for Signed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Signed").finish_non_exhaustive()
    }
}

impl Gate for Signed {
    fn signer(&self) -> Option<&dyn SnapshotSigner> {
        Some(&self.signer)
    }

    fn now(&self) -> u64 {
        crate::unix_now()
    }

    fn check(&mut self, bytes: &[u8], limits: &DecodeLimits) -> Result<(), crate::CellError> {
        // Whatever an earlier container left (it passed but did not decode) is not recorded.
        self.admitted = None;
        self.admitted = Some(self.trust.admit(bytes, limits, crate::unix_now())?);
        Ok(())
    }

    fn admitted(&mut self, _: &[u8], _: &DecodeLimits) -> Result<(), crate::CellError> {
        match self.admitted.take() {
            Some(a) => self.trust.record(a),
            None => Err(crate::CellError::SignatureRejected(
                crate::SignatureError::Missing,
            )),
        }
    }

    fn sent(&mut self, agent: AgentId, epoch: u64) -> Result<(), crate::CellError> {
        self.trust.record_sent(agent, epoch)
    }

    fn peers(&self, f: &mut dyn FnMut(NodeId)) {
        self.trust.nodes().for_each(f);
    }
}

/// Fence entries (and at most as many records) of the node's journal: a node knows at most this
/// many agents over its life, because an agent's fence entry is never removed. The trust list's
/// own epoch file had the same bound. The file grows with the entries written, not with this
/// bound (4,096 fence entries are 168 KB).
pub const JOURNAL_CAPACITY: usize = 4096;

/// The node's journal: the hand-off records and the fence table as records in one append-only
/// file (`DATA/journal`, a [`FileLog`] sealed to the node), one record per change. The host
/// hands it out [`deferred`](LogJournal::deferred): the changes of one turn of the node share
/// one group commit, made before a frame leaves or the host acts on them.
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
        let journal = SharedJournal::new(journal.deferred());
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
        let limits = DecodeLimits {
            max_wasm_binary: 16 << 20,
            max_wasm_state: 128 << 20,
        };
        let files = NodeFiles {
            node,
            dir: dir.to_path_buf(),
            key,
            dna,
            limits,
            errors: Vec::new(),
            logs: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            failed: false,
            group_commits: 0,
            files: AgentFiles::scan(&dir.join("agents"))?,
        };
        let gate = Signed {
            signer: Ed25519Signer::from_secret(identity.secret()),
            trust,
            journal,
            admitted: None,
        };
        let mut host = Cells::new(node, Runtime::new(fuel), files, gate, limits);
        host.set_inbox_limits(InboxLimits::default());
        // Large agents are saved whole only once their events weigh as much (disk is cheap,
        // rewriting 128 MiB every 1,024 messages is not).
        host.checkpoint_by_size = true;
        Ok(host)
    }

    /// The node's journal, shared with this host's trust list: give it to the node. It is
    /// [deferred](LogJournal::deferred): a change written here outside the node is durable
    /// only after [`Journal::sync`] (the node syncs before its frames leave), and a wrapper
    /// around it must pass `sync` on.
    pub fn journal(&self) -> SharedJournal<NodeJournal> {
        self.gate().journal.clone()
    }

    /// Trusts snapshots signed by `peer`'s key for its node (a peer pinned while running).
    pub fn trust_peer(&mut self, peer: &super::Peer) -> Result<(), String> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&peer.key.0)
            .map_err(|_| String::from("bad peer key"))?;
        self.gate_mut()
            .trust
            .trust(peer.key.node_id(), key)
            .map_err(|e| format!("trust list: {e}"))
    }

    /// Errors since the last call: what the host refused or failed with no caller to return
    /// to, and the I/O errors behind them, as text for the log.
    pub fn take_errors(&mut self) -> Vec<String> {
        let mut out: Vec<String> = self.keeper_mut().errors.drain(..).collect();
        let (problems, dropped) = self.take_problems();
        out.extend(problems.iter().map(|p| format!("{p}")));
        if dropped > 0 {
            out.push(format!("{dropped} older problems were dropped"));
        }
        out
    }

    /// Creates an agent from a WebAssembly binary, calls its `start(arg)` export if it has one,
    /// and saves it. Then hand it to [`Driver::start`](super::Driver::start). The agent's
    /// message streams derive from a fresh random secret.
    pub fn create(&mut self, agent: AgentId, wasm: Vec<u8>, arg: i32) -> Result<(), String> {
        let dna = Dna::new(wasm).map_err(|e| format!("DNA: {e}"))?;
        let secret = uuid::Uuid::new_v4().into_bytes();
        self.start(Agent::with_id(agent, dna), Inbox::with_secret(secret))
            .map_err(|e| format!("start: {e}"))?;
        if let Some(live) = self.live_mut(agent) {
            // No `start` export: nothing to initialise.
            let _ = live.call("start", &[Val::I32(arg)]);
        }
        self.save(agent).map_err(|e| format!("save: {e}"))
    }

    /// Changes the linear memory of an agent running here (`f` gets a copy to edit), and saves
    /// it. For benchmarks and tests of re-migration.
    pub fn modify_memory(
        &mut self,
        agent: AgentId,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), String> {
        self.replace_live(agent, |a| {
            let mut mem = a.wasm_state().to_vec();
            f(&mut mem);
            a.set_wasm_state(mem);
        })
        .map_err(|e| format!("modify: {e}"))?;
        self.save(agent).map_err(|e| format!("save: {e}"))
    }

    /// An agent's `stats` export, if it runs here and has one. An agent waiting in the middle
    /// of a call takes no other call: its stats are then its exported `i32` globals
    /// `received`, `last` and `out_of_order`, if it has them.
    pub fn stats(&mut self, agent: AgentId) -> Option<AgentStats> {
        let live = self.live_mut(agent)?;
        if live.is_suspended_in_call() {
            let g = |name| match live.global(name) {
                Some(Val::I32(v)) => Some(v),
                _ => None,
            };
            return Some(AgentStats {
                received: g("received")?,
                last: g("last")?,
                out_of_order: g("out_of_order")?,
            });
        }
        let v = live.call("stats", &[]).ok()?;
        match v[..] {
            [Val::I32(received), Val::I32(last), Val::I32(out_of_order)] => Some(AgentStats {
                received,
                last,
                out_of_order,
            }),
            _ => None,
        }
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
        let (agent, call) = s.into_agent_with_call()?;
        let call = call
            .map(|c| SuspendedCall::from_bytes(&c))
            .transpose()
            .map_err(crate::CellError::ExecutionFailed)?;
        Ok(SavedAgent {
            agent,
            epoch,
            waiting: inbox.waiting(),
            unacked: inbox.unacked(),
            call,
        })
    }
}

impl<K: Keeper, G: Gate> RoutedHost for Cells<K, G> {
    fn route(&mut self, agent: AgentId, target: NodeId, epoch: u64) {
        Cells::route(self, agent, target, epoch);
    }
}
