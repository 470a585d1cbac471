//! `mielin inspect PATH`: a node's data directory, or one of its files, or a snapshot, read
//! with the library's own decoders and within stated bounds (nothing is written).

use crate::files::read_bounded;
use crate::names::Names;
use mielin_cells::mesh::cells::{Event, MAX_EVENT_LEN};
use mielin_cells::mesh::{FileJournal, Journal, LogJournal, Phase, LOG_JOURNAL_RECORD};
use mielin_cells::migration::{
    DecodeLimits, DecodeOptions, DnaMap, FileEpochJournal, MigrationSnapshot, MAGIC,
};
use mielin_cells::quic::{to_hex, Identity, WasmHost, JOURNAL_CAPACITY};
use mielin_cells::runtime::transform::TransformRecord;
use mielin_cells::storage::{FileLog, Log, MemLog};
use mielin_cells::{Dna, LocalKey, StoreError};
use std::fmt::Write;
use std::path::Path;

/// The older journal format (`FileJournal`, read whole): 42-byte records and 41-byte fence
/// entries for at most a few thousand agents.
const MAX_JOURNAL: u64 = 1 << 20;
/// The longest journal log read (`mesh::LogJournal`, one record per change; the node compacts
/// it when it opens it).
const MAX_LOG_JOURNAL: u64 = 64 << 20;
/// A module: the host's limit.
const MAX_DNA: u64 = 16 << 20;
/// Modules loaded to decode a snapshot that names its DNA by hash.
const MAX_MODULES: usize = 16;
/// What a saved agent or a snapshot may hold: the node's own limits (16 MiB of module, 128 MiB
/// of memory) and its messages.
pub const DEFAULT_MAX_BYTES: u64 = (16 << 20) + (128 << 20) + (1 << 20);
/// The limits a node decodes its own saved agents with.
const LIMITS: DecodeLimits = DecodeLimits {
    max_wasm_binary: 16 << 20,
    max_wasm_state: 128 << 20,
};

/// The node's files are sealed to it (`docs/security.md`): they are read, and checked, with its
/// key. Without one, inspect says so and reads nothing of them.
pub struct Sealing {
    node: mielin_cells::NodeId,
    key: LocalKey,
}

impl Sealing {
    /// The sealing of the node whose key file is `identity`'s.
    pub fn of(identity: &Identity) -> Sealing {
        Sealing {
            node: identity.node_id(),
            key: LocalKey::derive(identity.secret(), identity.node_id()),
        }
    }
}

/// Prints what `path` holds into `out`; `false` when something did not decode.
pub fn inspect(
    path: &Path,
    max_bytes: u64,
    sealing: Option<&Sealing>,
    out: &mut String,
) -> Result<bool, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        return data_dir(path, max_bytes, sealing, out);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names = Names::default();
    let dir = path.parent().and_then(Path::parent);
    Ok(if name == "journal" {
        journal(path, &names, sealing, out)
    } else if name == "epochs" {
        epochs(path, sealing, out)
    } else if name.ends_with(".run") || name.ends_with(".prep") {
        let modules = dir.map(|d| modules(&d.join("dna"))).unwrap_or_default();
        saved_agent(path, max_bytes, sealing, &modules, out)
    } else if name.ends_with(".log") {
        event_log(path, sealing, out)
    } else if name.ends_with(".wasm") {
        dna(path, out)
    } else {
        snapshot(path, max_bytes, out)?
    })
}

/// Without the node's key, a sealed file is not read.
fn no_key(what: &str, out: &mut String) -> bool {
    let _ = writeln!(
        out,
        "{what:<15} sealed to its node: give the node's key file (--key) to check and read it"
    );
    false
}

fn data_dir(
    dir: &Path,
    max_bytes: u64,
    sealing: Option<&Sealing>,
    out: &mut String,
) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode()
        & 0o777;
    let _ = writeln!(
        out,
        "data directory {} (mode {mode:o}{})",
        dir.display(),
        if mode & 0o077 != 0 {
            "; the node sets 0700 when it starts"
        } else {
            ""
        }
    );
    if !dir.join("journal").exists() && !dir.join("agents").exists() {
        let _ = writeln!(
            out,
            "  no journal and no agents/: not a node's data directory (or a node that never ran)"
        );
        return Ok(false);
    }
    let names = Names::load(dir.join("names"));
    let mut ok = true;
    let sock = dir.join("control.sock");
    if sock.exists() {
        let mode = std::fs::metadata(&sock)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        let live = std::os::unix::net::UnixStream::connect(&sock).is_ok();
        let _ = writeln!(
            out,
            "control.sock    mode {mode:o}, {}",
            if live {
                "a node is running here"
            } else {
                "left by a node that stopped"
            }
        );
    } else {
        let _ = writeln!(out, "control.sock    absent: no node is running here");
    }
    let journal_path = dir.join("journal");
    if journal_path.exists() {
        ok &= journal(&journal_path, &names, sealing, out);
    } else {
        let _ = writeln!(
            out,
            "journal         absent (no agent was ever started here)"
        );
    }
    if let Ok(k) = read_bounded(&dir.join("kicked"), 1024) {
        let _ = writeln!(
            out,
            "kicked          {} (--kick is not repeated)",
            String::from_utf8_lossy(&k).trim()
        );
    }
    if dir.join("epochs").exists() {
        ok &= epochs(&dir.join("epochs"), sealing, out);
    }
    let modules = modules(&dir.join("dna"));
    for (sub, what) in [("agents", "saved agents"), ("dna", "modules")] {
        let mut files: Vec<_> = match std::fs::read_dir(dir.join(sub)) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => continue,
        };
        files.sort();
        let _ = writeln!(out, "{sub}/ ({what}: {})", files.len());
        for f in files {
            let mut s = String::new();
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ok &= if sub == "agents" {
                if name.ends_with(".tmp") {
                    let _ = writeln!(s, "{name}: an interrupted save (ignored by the node)");
                    true
                } else if name.ends_with(".log") {
                    event_log(&f, sealing, &mut s)
                } else {
                    saved_agent(&f, max_bytes, sealing, &modules, &mut s)
                }
            } else {
                dna(&f, &mut s)
            };
            for l in s.lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
    }
    Ok(ok)
}

/// The modules of a data directory's `dna/`, for saved agents that name their DNA by hash
/// (at most `MAX_MODULES`, each within `MAX_DNA`).
fn modules(dir: &Path) -> DnaMap {
    let mut m = DnaMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten().take(MAX_MODULES) {
            if let Ok(Ok(d)) = read_bounded(&e.path(), MAX_DNA).map(Dna::new) {
                m.insert(&d);
            }
        }
    }
    m
}

fn epochs(path: &Path, sealing: Option<&Sealing>, out: &mut String) -> bool {
    let Some(s) = sealing else {
        return no_key("epochs", out);
    };
    match FileEpochJournal::open(path, s.node, &s.key, usize::MAX) {
        Ok(j) => {
            let _ = writeln!(
                out,
                "epochs          {} agents (the trust list's last epoch of each: replays are refused)",
                j.len()
            );
            true
        }
        Err(e) => {
            let _ = writeln!(out, "epochs          FAILED: {e}");
            false
        }
    }
}

fn journal(path: &Path, names: &Names, sealing: Option<&Sealing>, out: &mut String) -> bool {
    let Some(s) = sealing else {
        return no_key("journal", out);
    };
    // The journal's size is checked first: the older format (`FileJournal`) is read whole,
    // the log record by record (its tables bounded by the node's capacity).
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            let _ = writeln!(out, "journal         {e}");
            return false;
        }
    };
    let mut magic = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = std::io::Read::read(&mut f, &mut magic);
    }
    let log = magic == *b"MZLG";
    let limit = if log { MAX_LOG_JOURNAL } else { MAX_JOURNAL };
    if len > limit {
        let _ = writeln!(
            out,
            "journal         {len} bytes: over the {limit}-byte limit for a journal; not read"
        );
        return false;
    }
    let opened: Result<Box<dyn Journal>, StoreError> = if log {
        // Read-only: a running node's journal is not touched (a torn batch is left out, not
        // cut). The records are copied into a log in memory and the tables built from it.
        let mut copy = MemLog::new(LOG_JOURNAL_RECORD, MAX_LOG_JOURNAL as usize);
        let mut full = false;
        FileLog::read(path, s.node, &s.key, LOG_JOURNAL_RECORD, &mut |_, r| {
            full |= copy.append(r).is_err();
        })
        .and_then(|_| match full {
            true => Err(StoreError::LogFull {
                capacity: MAX_LOG_JOURNAL,
            }),
            false => copy.sync().map(|_| ()),
        })
        .and_then(|()| LogJournal::open(copy, JOURNAL_CAPACITY))
        .map(|j| Box::new(j) as Box<dyn Journal>)
    } else {
        FileJournal::open(path, s.node, &s.key, usize::MAX).map(|j| Box::new(j) as Box<dyn Journal>)
    };
    let j = match opened {
        Ok(j) => j,
        Err(e) => {
            let _ = writeln!(out, "journal         {len} bytes: FAILED: {e}");
            return false;
        }
    };
    let mut recs = Vec::new();
    j.for_each(&mut |a, r| recs.push((a, r)));
    recs.sort_by_key(|(a, _)| names.agent(*a));
    let _ = writeln!(out, "journal         {len} bytes, {} records", recs.len());
    for (a, r) in recs {
        let n = |id: mielin_cells::NodeId| to_hex(&id.as_bytes()[..4]);
        let phase = match r.phase {
            Phase::Running => "running here".to_string(),
            Phase::Outgoing { target } => format!("offered to node {}, undecided", n(target)),
            Phase::Prepared { source } => {
                format!("prepared, waiting for node {}'s decision", n(source))
            }
            Phase::Moved { target, acked } => format!(
                "moved to node {}{}",
                n(target),
                if acked { "" } else { " (not yet confirmed)" }
            ),
            _ => "unknown phase".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<12} {}  epoch {}  {phase}",
            names.agent(a),
            to_hex(a.as_bytes()),
            r.epoch
        );
    }
    true
}

/// An agent's event log (`<id>.<d>.log`: what happened to it after its `.run` was saved),
/// read without writing to it: its records verified under the node's key, counted by kind.
fn event_log(path: &Path, sealing: Option<&Sealing>, out: &mut String) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(sealing) = sealing else {
        return no_key(&name, out);
    };
    let (mut follows, mut events, mut bad) = (None, [0usize; 3], 0usize);
    let read = FileLog::read(
        path,
        sealing.node,
        &sealing.key,
        MAX_EVENT_LEN,
        &mut |lsn, r| {
            if lsn.0 == 1 {
                follows = (r.len() == 33 && r[0] == 0).then(|| to_hex(&r[1..9]));
                return;
            }
            match Event::decode(r) {
                Ok(Event::Delivered { .. }) => events[0] += 1,
                Ok(Event::Called { .. }) => events[1] += 1,
                Ok(Event::Acked { .. }) => events[2] += 1,
                Err(_) => bad += 1,
            }
        },
    );
    match (read, follows) {
        (Ok(n), None) if n.0 == 0 => {
            let _ = writeln!(
                out,
                "{name}: an event log with nothing synced yet (the node ignores it)"
            );
            true
        }
        (Ok(_), Some(run)) if bad == 0 => {
            let _ = writeln!(
                out,
                "{name}: events after the saved copy with digest {run}...: {} messages accepted, {} calls, {} acknowledgements",
                events[0], events[1], events[2]
            );
            true
        }
        (Ok(_), _) => {
            let _ = writeln!(
                out,
                "{name}: FAILED: not an event log (its first record names no saved copy, or {bad} records are not events)"
            );
            false
        }
        (Err(e), _) => {
            let _ = writeln!(out, "{name}: FAILED: {e}");
            false
        }
    }
}

fn saved_agent(
    path: &Path,
    max_bytes: u64,
    sealing: Option<&Sealing>,
    modules: &DnaMap,
    out: &mut String,
) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(sealing) = sealing else {
        return no_key(&name, out);
    };
    let bytes = match read_bounded(path, max_bytes) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(out, "{name}: FAILED: {e} (raise it with --max-bytes)");
            return false;
        }
    };
    match WasmHost::decode_saved(&bytes, &sealing.key, LIMITS, modules) {
        Ok(saved) => {
            let a = &saved.agent;
            let _ = writeln!(
                out,
                "{name}: {} bytes, agent {}, epoch {}, {:?}, dna sha256 {}, memory {} bytes, {} globals, mailbox {}, outbox {}",
                bytes.len(),
                to_hex(a.id().as_bytes()),
                saved.epoch,
                a.state(),
                to_hex(&a.dna().hash()[..8]),
                a.wasm_state().len(),
                a.globals().len(),
                saved.waiting,
                saved.unacked
            );
            if let Some(call) = &saved.call {
                let _ = writeln!(
                    out,
                    "  waiting in the middle of a call to {} (unwound frames {} bytes at {})",
                    call.export, call.buffer.len, call.buffer.start
                );
            }
            transformed(a.dna().binary(), out);
            true
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "{name}: {} bytes: FAILED: {e} (not a file this node sealed, or damaged)",
                bytes.len()
            );
            false
        }
    }
}

fn dna(path: &Path, out: &mut String) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = match read_bounded(path, MAX_DNA) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(out, "{name}: FAILED: {e}");
            return false;
        }
    };
    let len = bytes.len();
    match Dna::new(bytes) {
        Ok(d) => {
            let hash = to_hex(d.hash());
            // The node names each module by its SHA-256.
            let mismatch = name
                .strip_suffix(".wasm")
                .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .is_some_and(|n| n != hash);
            let _ = writeln!(
                out,
                "{name}: {len} bytes, sha256 {}{}",
                &hash[..16],
                if mismatch {
                    ": FAILED: does not match its file name"
                } else {
                    ""
                }
            );
            transformed(d.binary(), out);
            !mismatch
        }
        Err(e) => {
            let _ = writeln!(out, "{name}: {len} bytes: FAILED: {e}");
            false
        }
    }
}

/// The record `mielin transform` leaves in a module, as one indented line, if it has one.
fn transformed(module: &[u8], out: &mut String) {
    if let Some(r) = TransformRecord::find(module) {
        let imports: Vec<String> = r
            .imports
            .iter()
            .map(|i| format!("{}.{}", i.module, i.name))
            .collect();
        let _ = writeln!(
            out,
            "  transform {} ({}) of sha256 {}, unwinding {}",
            r.transform,
            r.tool,
            &to_hex(&r.original)[..16],
            imports.join(",")
        );
    }
}

fn snapshot(path: &Path, max_bytes: u64, out: &mut String) -> Result<bool, String> {
    let bytes =
        read_bounded(path, max_bytes).map_err(|e| format!("{e} (raise it with --max-bytes)"))?;
    if bytes.len() < 8 || bytes[..4] != MAGIC {
        return Err(format!(
            "{}: not a snapshot (no MCSN magic), a journal, a saved agent (.run, .prep) or a module (.wasm): nothing mielin reads",
            path.display()
        ));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let _ = writeln!(
        out,
        "snapshot {} ({} bytes, version {version})",
        path.display(),
        bytes.len()
    );
    // A snapshot naming its DNA by hash decodes against the modules beside it (a data
    // directory's dna/), if any: at most MAX_MODULES of them, each within MAX_DNA.
    let store = path
        .parent()
        .map(|p| modules(&p.join("../dna")))
        .unwrap_or_default();
    let opts = DecodeOptions {
        limits: LIMITS,
        dna_store: Some(&store),
        ..DecodeOptions::default()
    };
    match MigrationSnapshot::deserialize_with(&bytes, &opts) {
        Ok(s) => {
            let _ = writeln!(
                out,
                "  agent {}  dna sha256 {}  memory {} bytes  {} globals  source {}",
                to_hex(s.agent_id().as_bytes()),
                to_hex(&s.dna_hash()[..8]),
                s.wasm_state().len(),
                s.globals().len(),
                s.source_node()
                    .map_or("none".into(), |n| to_hex(&n.as_bytes()[..4]))
            );
            transformed(s.dna().binary(), out);
            if let Some(r) = s.route() {
                let _ = writeln!(
                    out,
                    "  route: target {}, epoch {}",
                    to_hex(&r.target.as_bytes()[..4]),
                    r.epoch
                );
            }
            let _ = writeln!(out, "  decode ok (DNA, memory root and trailer verified; the signature is not checked here: `cargo run --example inspect --features signatures -- FILE --key HEX` does)");
            Ok(true)
        }
        Err(e) => {
            let _ = writeln!(out, "  decode FAILED: {e}");
            Ok(false)
        }
    }
}
