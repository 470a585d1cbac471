//! [`WasmHost`]: an [`AgentHost`] for WebAssembly agents that keeps everything on disk and signs
//! what it sends.

use super::driver::RoutedHost;
use super::identity::{to_hex, Directory, Identity};
use crate::mesh::wasm::{self, Mailbox, Received};
use crate::mesh::{AgentHost, AgentInfo, Delivery, MeshError};
use crate::migration::{
    DecodeLimits, DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, FileEpochJournal,
    MigrationSnapshot, Route, StateEncoding, TrustList,
};
use crate::runtime::{LiveAgent, Runtime, Val};
use crate::{Agent, AgentId, Dna, NodeId};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};

/// Messages an agent may have unacknowledged; `mesh.send` answers -1 beyond.
const OUTBOX_CAP: usize = 8;
/// Messages an agent's mailbox holds; deliveries beyond are answered `Full`.
const MAILBOX_CAP: usize = 8;

/// An agent's messaging state; it travels with the agent, after its snapshot, and is saved with
/// it.
#[derive(Clone, Default, Debug)]
struct Inbox {
    next_seq: BTreeMap<AgentId, u64>,
    last_in: BTreeMap<AgentId, u64>,
    mailbox: VecDeque<(AgentId, Vec<u8>)>,
    outbox: Vec<(AgentId, u64, Vec<u8>)>,
}

fn id16(b: &[u8]) -> Option<AgentId> {
    Some(AgentId::from_bytes(b.get(..16)?.try_into().ok()?))
}

impl Inbox {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = |out: &mut Vec<u8>, x: usize| out.extend_from_slice(&(x as u32).to_le_bytes());
        for map in [&self.next_seq, &self.last_in] {
            n(out, map.len());
            for (a, s) in map {
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        n(out, self.mailbox.len());
        for (a, m) in &self.mailbox {
            out.extend_from_slice(a.as_bytes());
            n(out, m.len());
            out.extend_from_slice(m);
        }
        n(out, self.outbox.len());
        for (a, s, m) in &self.outbox {
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(&s.to_le_bytes());
            n(out, m.len());
            out.extend_from_slice(m);
        }
    }

    /// Decodes what `encode` wrote; bounded by the input (every count is checked against the
    /// bytes left before anything is stored).
    fn decode(mut b: &[u8]) -> Option<Inbox> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if n > b.len() {
                return None;
            }
            let (x, rest) = b.split_at(n);
            *b = rest;
            Some(x)
        }
        fn num(b: &mut &[u8]) -> Option<usize> {
            Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
        }
        fn seq(b: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
        }
        let mut inbox = Inbox::default();
        for i in 0..2 {
            for _ in 0..num(&mut b)? {
                let a = id16(take(&mut b, 16)?)?;
                let s = seq(&mut b)?;
                if i == 0 {
                    inbox.next_seq.insert(a, s)
                } else {
                    inbox.last_in.insert(a, s)
                };
            }
        }
        for _ in 0..num(&mut b)? {
            let a = id16(take(&mut b, 16)?)?;
            let l = num(&mut b)?;
            inbox.mailbox.push_back((a, take(&mut b, l)?.to_vec()));
        }
        for _ in 0..num(&mut b)? {
            let a = id16(take(&mut b, 16)?)?;
            let s = seq(&mut b)?;
            let l = num(&mut b)?;
            inbox.outbox.push((a, s, take(&mut b, l)?.to_vec()));
        }
        b.is_empty().then_some(inbox)
    }
}

/// The store data of a live agent: its inbox, shared with the host.
#[derive(Clone, Default)]
struct Mbox(Rc<RefCell<Inbox>>);

impl Mailbox for Mbox {
    fn send(&mut self, to: AgentId, payload: &[u8]) -> bool {
        let mut i = self.0.borrow_mut();
        if i.outbox.len() >= OUTBOX_CAP {
            return false;
        }
        let s = i.next_seq.entry(to).or_insert(0);
        *s += 1;
        let s = *s;
        i.outbox.push((to, s, payload.to_vec()));
        true
    }
    fn recv(&mut self, out: &mut [u8]) -> Received {
        let mut i = self.0.borrow_mut();
        let Some((from, m)) = i.mailbox.front() else {
            return Received::Empty;
        };
        let Some(dst) = out.get_mut(..m.len()) else {
            return Received::TooLong;
        };
        dst.copy_from_slice(m);
        let r = Received::Message {
            from: *from,
            len: m.len(),
        };
        i.mailbox.pop_front();
        r
    }
}

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

/// WebAssembly agents on disk, signed on the wire.
///
/// Agents import `mesh.send`/`mesh.recv` ([`crate::mesh::wasm`]) and may export `tick() -> i32`
/// (called by [`WasmHost::tick`]; returns how many messages it handled, 0 when nothing
/// changed), `start(i32)` (called once when the agent is created) and `stats() -> (i32, i32,
/// i32)`.
///
/// Durability (the protocol's assumption A2): an agent's memory, globals, mailbox, outbox and
/// sequence numbers are written to `DIR/agents/<id>.run` (temporary file, `fsync`, rename,
/// directory `fsync`) when it starts, stops for a hand-off, accepts a message, and after a tick
/// that handled messages; a prepared snapshot is written to `DIR/agents/<id>.<epoch>.prep`
/// before [`AgentHost::prepare`] returns; DNA binaries to `DIR/dna/<sha256>.wasm`.
///
/// Snapshots sent are version 2, bound to the route's target and epoch, signed with the node's
/// key; DNA by reference when the target has it, memory chunked (zero chunks skipped). Received
/// ones are checked by a [`TrustList`] of the directory's keys with its epochs in
/// `DIR/epochs` (a replayed snapshot is refused).
pub struct WasmHost {
    node: NodeId,
    dir: PathBuf,
    rt: Runtime,
    signer: Ed25519Signer,
    trust: TrustList<64, FileEpochJournal>,
    dna: DnaMap,
    limits: DecodeLimits,
    live: BTreeMap<AgentId, LiveAgent<Mbox>>,
    stopped: BTreeMap<AgentId, (Agent<Vec<u8>>, Inbox)>,
    routes: BTreeMap<AgentId, (NodeId, u64)>,
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

/// Writes `bytes` to `path` atomically and durably.
fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

impl WasmHost {
    /// A host keeping its files in `dir` (created if missing), trusting snapshots signed by the
    /// keys of `directory`, with `fuel` per agent call.
    pub fn open(
        identity: &Identity,
        directory: &Directory,
        dir: &Path,
        fuel: u64,
    ) -> io::Result<WasmHost> {
        std::fs::create_dir_all(dir.join("agents"))?;
        std::fs::create_dir_all(dir.join("dna"))?;
        let node = identity.node_id();
        let epochs = FileEpochJournal::open(&dir.join("epochs"), 4096)?;
        let mut trust = TrustList::new(node, epochs);
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
            trust,
            dna,
            limits: DecodeLimits {
                max_wasm_binary: 16 << 20,
                max_wasm_state: 128 << 20,
            },
            live: BTreeMap::new(),
            stopped: BTreeMap::new(),
            routes: BTreeMap::new(),
            captured: None,
            duplicates: 0,
            errors: Vec::new(),
        })
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

    /// The bytes kept on disk for an agent: its version-1 snapshot (with DNA), then its inbox.
    fn encode_local(&self, agent: &Agent<Vec<u8>>, inbox: &Inbox) -> Result<Vec<u8>, MeshError> {
        let snap = MigrationSnapshot::capture_at(agent, Some(self.node), crate::unix_now())
            .serialize()
            .map_err(|_| refused("serialize"))?;
        let mut bytes = (snap.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&snap);
        inbox.encode(&mut bytes);
        Ok(bytes)
    }

    /// Decodes a file the host saved, `DIR/agents/<id>.run` or `<id>.<epoch>.prep`, within
    /// `limits` (for an operator's tool: `mielin inspect`): the agent, and how many messages
    /// wait in its mailbox and in its outbox. `None` when the bytes are not such a file.
    pub fn decode_saved(
        bytes: &[u8],
        limits: DecodeLimits,
    ) -> Option<(Agent<Vec<u8>>, usize, usize)> {
        let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let snap = bytes.get(4..4usize.checked_add(n)?)?;
        let opts = DecodeOptions {
            limits,
            ..Default::default()
        };
        let a = MigrationSnapshot::deserialize_with(snap, &opts)
            .ok()?
            .into_agent()
            .ok()?;
        let inbox = Inbox::decode(&bytes[4 + n..])?;
        Some((a, inbox.mailbox.len(), inbox.outbox.len()))
    }

    fn decode_local(&self, s: &[u8]) -> Option<(Agent<Vec<u8>>, Inbox)> {
        let n = u32::from_le_bytes(s.get(..4)?.try_into().ok()?) as usize;
        let snap = s.get(4..4usize.checked_add(n)?)?;
        let opts = DecodeOptions {
            limits: self.limits,
            ..Default::default()
        };
        let a = MigrationSnapshot::deserialize_with(snap, &opts)
            .ok()?
            .into_agent()
            .ok()?;
        Some((a, Inbox::decode(&s[4 + n..])?))
    }

    fn save_live(&mut self, agent: AgentId) {
        let Some(live) = self.live.get_mut(&agent) else {
            return;
        };
        let inbox = live.host().0.borrow().clone();
        let bytes = match live.capture() {
            Ok(a) => {
                let a = a.clone();
                self.encode_local(&a, &inbox)
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

    fn go_live(&mut self, agent: Agent<Vec<u8>>, inbox: Inbox) -> Result<(), String> {
        let id = agent.id();
        let live = self
            .rt
            .resume(agent, Mbox(Rc::new(RefCell::new(inbox))), wasm::link)
            .map_err(|e| format!("resume: {e}"))?;
        self.live.insert(id, live);
        Ok(())
    }

    /// Creates an agent from a WebAssembly binary, calls its `start(arg)` export if it has one,
    /// and saves it. Then hand it to [`Driver::start`](super::Driver::start).
    pub fn create(&mut self, agent: AgentId, wasm: Vec<u8>, arg: i32) -> Result<(), String> {
        let dna = Dna::new(wasm).map_err(|e| format!("DNA: {e}"))?;
        self.keep_dna(&dna);
        let mut live = self
            .rt
            .start(Agent::with_id(agent, dna), Mbox::default(), wasm::link)
            .map_err(|e| format!("start: {e}"))?;
        if live.call("start", &[Val::I32(arg)]).is_err() {
            // No `start` export: nothing to initialise.
        }
        self.live.insert(agent, live);
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
        let live = self.live.remove(&agent).ok_or("not running here")?;
        let inbox = live.host().0.borrow().clone();
        let mut a = live.into_agent().map_err(|e| format!("capture: {e}"))?;
        let mut mem = a.wasm_state().to_vec();
        f(&mut mem);
        a.set_wasm_state(mem);
        a.set_state(crate::AgentState::Suspended)
            .map_err(|e| format!("modify: {e}"))?;
        self.go_live(a, inbox)?;
        self.save_live(agent);
        Ok(())
    }

    /// Queues a message from `from` (an agent running here) to `to`, as if the agent had
    /// sent it, and saves the agent. `false` when the agent does not run here or its outbox is
    /// full.
    pub fn send_as(&mut self, from: AgentId, to: AgentId, payload: &[u8]) -> bool {
        let ok = match self.live.get(&from) {
            Some(l) => l.host().clone().send(to, payload),
            None => false,
        };
        if ok {
            self.save_live(from);
        }
        ok
    }

    /// Puts a message from `from`, a sender outside the mesh (an operator's tool), into the
    /// mailbox of `to`, an agent running here, with the next sequence number from that sender
    /// (kept in the agent's inbox, so it travels with the agent); saves the agent when it is
    /// accepted. [`Delivery::Full`] when `to` does not run here or its mailbox is full.
    pub fn post(&mut self, to: AgentId, from: AgentId, payload: &[u8]) -> Delivery {
        let Some(live) = self.live.get(&to) else {
            return Delivery::Full;
        };
        let seq = live
            .host()
            .0
            .borrow()
            .last_in
            .get(&from)
            .map_or(1, |s| s + 1);
        self.deliver(to, from, seq, payload)
    }

    /// Calls every running agent's `tick` export; saves those that handled messages. Returns
    /// how many messages were handled.
    pub fn tick(&mut self) -> u64 {
        let ids: Vec<AgentId> = self.live.keys().copied().collect();
        let mut total = 0;
        for id in ids {
            let n = match self.live.get_mut(&id).map(|l| l.call("tick", &[])) {
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
        let v = self.live.get_mut(&agent)?.call("stats", &[]).ok()?;
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
        let live = self.live.get_mut(&agent)?;
        live.capture().ok().map(|a| a.wasm_state().len())
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
            Some(l) => l.agent().dna().clone(),
            None => self.stopped.get(&agent)?.0.dna().clone(),
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
        if let Some(live) = self.live.remove(&agent) {
            let inbox = live.host().0.borrow().clone();
            match live.into_agent() {
                Ok(mut a) => {
                    // Stopped for the hand-off; `run` resumes it if the hand-off aborts.
                    if let Err(e) = a.set_state(crate::AgentState::Suspended) {
                        self.errors.push(format!("stop: {e}"));
                    }
                    self.stopped.insert(agent, (a, inbox));
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
            if !self.stopped.contains_key(&agent) {
                // After a restart the stopped copy is on disk.
                let bytes =
                    std::fs::read(self.run_path(agent)).map_err(|_| refused("not stopped here"))?;
                let s = self
                    .decode_local(&bytes)
                    .ok_or(refused("bad saved agent"))?;
                self.stopped.insert(agent, s);
            }
            let (a, inbox) = self
                .stopped
                .get(&agent)
                .ok_or(refused("not stopped here"))?;
            let snap = MigrationSnapshot::capture_at(a, Some(self.node), crate::unix_now())
                .with_route(Route { target, epoch });
            let signed = snap
                .serialize_with(&EncodeOptions {
                    dna_by_reference: !with_dna,
                    state: StateEncoding::Chunked,
                    signer: Some((&self.signer, epoch)),
                    ..Default::default()
                })
                .map_err(|_| refused("serialize"))?;
            let mut bytes = (signed.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&signed);
            inbox.encode(&mut bytes);
            self.captured = Some((agent, epoch, with_dna, bytes));
        }
        let bytes = &self.captured.as_ref().ok_or(refused("capture"))?.3;
        let dst = out
            .get_mut(..bytes.len())
            .ok_or(MeshError::PayloadTooLarge)?;
        dst.copy_from_slice(bytes);
        Ok(bytes.len())
    }

    fn prepare(&mut self, agent: AgentId, epoch: u64, _: bool, s: &[u8]) -> Result<(), MeshError> {
        let n = u32::from_le_bytes(
            s.get(..4)
                .ok_or(refused("short"))?
                .try_into()
                .map_err(|_| refused("short"))?,
        ) as usize;
        let end = 4usize.checked_add(n).ok_or(refused("short"))?;
        let snap = s.get(4..end).ok_or(refused("short"))?;
        let inbox = Inbox::decode(&s[end..]).ok_or(refused("bad inbox"))?;
        let opts = DecodeOptions {
            limits: self.limits,
            dna_store: Some(&self.dna),
            ..Default::default()
        };
        let checked = self
            .trust
            .deserialize(snap, &opts, crate::unix_now())
            .map_err(|_| refused("snapshot refused (signature, route, epoch or format)"))?;
        if checked.agent_id() != agent {
            return Err(refused("not this agent"));
        }
        let a = checked.into_agent().map_err(|_| refused("restore"))?;
        self.keep_dna(a.dna());
        let local = self.encode_local(&a, &inbox)?;
        write_durable(&self.prep_path(agent, epoch), &local).map_err(|_| MeshError::JournalIo)?;
        Ok(())
    }

    fn run(&mut self, agent: AgentId, epoch: u64) {
        if self.live.contains_key(&agent) {
            return;
        }
        let prep = self.prep_path(agent, epoch);
        let source = match std::fs::read(&prep) {
            Ok(b) => {
                // Committed here: the prepared copy becomes the agent's saved state (an atomic
                // rename, then the directory synced; the file was synced by `prepare`).
                let run = self.run_path(agent);
                let renamed = std::fs::rename(&prep, &run)
                    .and_then(|()| std::fs::File::open(self.dir.join("agents"))?.sync_all());
                if let Err(e) = renamed {
                    self.errors.push(format!("saving agent: {e}"));
                }
                self.decode_local(&b)
            }
            Err(_) => match self.stopped.remove(&agent) {
                Some(s) => Some(s),
                None => std::fs::read(self.run_path(agent))
                    .ok()
                    .and_then(|b| self.decode_local(&b)),
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
            Some((a, inbox)) => {
                self.keep_dna(a.dna());
                if let Err(e) = self.go_live(a, inbox) {
                    self.errors.push(e);
                }
            }
            None => self.errors.push(format!("run: no saved copy of {agent:?}")),
        }
    }

    fn discard(&mut self, agent: AgentId, epoch: u64) {
        let _ = std::fs::remove_file(self.prep_path(agent, epoch));
    }

    fn release(&mut self, agent: AgentId) {
        self.stopped.remove(&agent);
        self.live.remove(&agent);
        self.routes.remove(&agent);
        if matches!(&self.captured, Some((a, ..)) if *a == agent) {
            self.captured = None;
        }
        let _ = std::fs::remove_file(self.run_path(agent));
    }

    fn deliver(&mut self, to: AgentId, from: AgentId, seq: u64, payload: &[u8]) -> Delivery {
        let Some(live) = self.live.get(&to) else {
            return Delivery::Full;
        };
        let d = {
            let mut i = live.host().0.borrow_mut();
            let last = i.last_in.get(&from).copied().unwrap_or(0);
            if seq <= last {
                Delivery::Duplicate
            } else if seq > last + 1 {
                Delivery::OutOfOrder
            } else if i.mailbox.len() >= MAILBOX_CAP {
                Delivery::Full
            } else {
                i.last_in.insert(from, seq);
                i.mailbox.push_back((from, payload.to_vec()));
                Delivery::Accepted
            }
        };
        match d {
            Delivery::Accepted => self.save_live(to),
            Delivery::Duplicate => self.duplicates += 1,
            _ => {}
        }
        d
    }

    fn outgoing(&mut self, agent: AgentId, f: &mut dyn FnMut(AgentId, u64, &[u8])) {
        let inbox = match self.live.get(&agent) {
            Some(l) => l.host().0.borrow().clone(),
            None => match self.stopped.get(&agent) {
                Some(s) => s.1.clone(),
                None => return,
            },
        };
        for (to, seq, m) in &inbox.outbox {
            f(*to, *seq, m);
        }
    }

    fn acked(&mut self, agent: AgentId, to: AgentId, seq: u64) {
        if let Some(live) = self.live.get(&agent) {
            live.host()
                .0
                .borrow_mut()
                .outbox
                .retain(|o| !(o.0 == to && o.1 == seq));
        }
    }
}
