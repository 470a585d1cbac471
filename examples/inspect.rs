//! Prints a snapshot file: what an operator opens when a hand-off was refused.
//!
//! ```text
//! cargo run --example inspect --features signatures -- SNAPSHOT [--dna FILE.wasm]
//!     [--base FILE] [--key HEX] [--now UNIX_SECS]
//! ```
//!
//! It prints the header and flags, the ids, sizes, memory root and signing key id as the bytes
//! say, then runs each check a receiver runs, one at a time, and prints its result:
//!
//! 1. frame: magic, version, and (version 2) flags and every length within the default limits
//!    ([`DecodeLimits::DEFAULT`]) and the input;
//! 2. trailer: the SHA-256 of every byte before it;
//! 3. decode: the DNA (carried, or from `--dna` when named by reference) against its hash, the
//!    memory (a delta applies to `--base`) against its root, the globals and the policy;
//! 4. signature, with `--key` (the signer's Ed25519 public key, hex): what a node that trusts that
//!    key for the snapshot's source runs on receipt, as the snapshot's target, at `--now` (default:
//!    the system clock). Its epoch table starts empty, so a replay is not detected here.
//!
//! Then the globals and the policy, when the decode succeeded. Exits 0 when every check that
//! ran passed, 1 when one failed, 2 on a usage error.

use std::fmt::Write;
use std::process::ExitCode;

use ed25519_dalek::VerifyingKey;
use mielin_cells::migration::{
    DecodeLimits, DecodeOptions, DnaMap, EpochTable, Frame, MigrationSnapshot, TrustList,
    FLAG_DNA_BY_REFERENCE, FLAG_SIGNED, FLAG_STATE_CHUNKED, FLAG_STATE_DELTA, FORMAT_VERSION,
    FORMAT_VERSION_2, HEADER_LEN, MAGIC, TRAILER_LEN,
};
use mielin_cells::{CellError, DecodeError, Dna};
use sha2::{Digest, Sha256};

/// Appends one line to `out` (a `String`: writing to it cannot fail).
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

struct Args {
    snapshot: String,
    dna: Option<String>,
    base: Option<String>,
    key: Option<[u8; 32]>,
    now: Option<u64>,
}

const USAGE: &str =
    "usage: inspect SNAPSHOT [--dna FILE.wasm] [--base FILE] [--key HEX] [--now UNIX_SECS]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        snapshot: String::new(),
        dna: None,
        base: None,
        key: None,
        now: None,
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--dna" => args.dna = Some(value()?),
            "--base" => args.base = Some(value()?),
            "--key" => args.key = Some(hex32(&value()?)?),
            "--now" => args.now = Some(value()?.parse().map_err(|e| format!("--now: {e}"))?),
            "-h" | "--help" => return Err(String::new()),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ if args.snapshot.is_empty() => args.snapshot = arg,
            _ => return Err(format!("one snapshot at a time ({arg})")),
        }
    }
    if args.snapshot.is_empty() {
        return Err("no snapshot file given".into());
    }
    Ok(args)
}

fn hex32(s: &str) -> Result<[u8; 32], String> {
    let bad = || format!("--key wants 64 hex digits, got {s:?}");
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn flag_names(flags: u16) -> String {
    let names: Vec<&str> = [
        (FLAG_DNA_BY_REFERENCE, "dna-by-reference"),
        (FLAG_STATE_CHUNKED, "chunked"),
        (FLAG_STATE_DELTA, "delta"),
        (FLAG_SIGNED, "signed"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// One check's line; returns whether it passed.
fn report(out: &mut String, name: &str, result: Result<String, String>) -> bool {
    match result {
        Ok(detail) => {
            say!(out, "  {name:<10} ok{}", pad(&detail));
            true
        }
        Err(e) => {
            say!(out, "  {name:<10} FAILED: {e}");
            false
        }
    }
}

fn pad(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

fn main() -> ExitCode {
    let mut out = String::new();
    let code = run(std::env::args().skip(1), &mut out);
    print!("{out}");
    ExitCode::from(code)
}

/// The whole program on `args` (without the program name): its output in `out`, its exit code
/// returned. `tests/inspect.rs` calls it.
pub fn run(args: impl Iterator<Item = String>, out: &mut String) -> u8 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                say!(out, "inspect: {e}");
            }
            say!(out, "{USAGE}");
            return 2;
        }
    };
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    let (bytes, dna, base) = match (
        read(&args.snapshot),
        args.dna.as_deref().map(read).transpose(),
        args.base.as_deref().map(read).transpose(),
    ) {
        (Ok(b), Ok(d), Ok(m)) => (b, d, m),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            say!(out, "inspect: {e}");
            return 2;
        }
    };
    if inspect(out, &args, &bytes, dna.as_deref(), base.as_deref()) {
        0
    } else {
        1
    }
}

fn inspect(
    out: &mut String,
    args: &Args,
    bytes: &[u8],
    dna: Option<&[u8]>,
    base: Option<&[u8]>,
) -> bool {
    say!(out, "file       {} ({} bytes)", args.snapshot, bytes.len());
    if bytes.len() < HEADER_LEN {
        say!(out, "checks");
        return report(
            out,
            "frame",
            Err(format!(
                "{} bytes: shorter than the 8-byte header",
                bytes.len()
            )),
        );
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
    let magic = if bytes[..4] == MAGIC {
        "MCSN"
    } else {
        "not MCSN"
    };
    say!(
        out,
        "header     magic {magic}, version {version}, flags {flags:#06x} ({})",
        flag_names(flags)
    );
    if version == FORMAT_VERSION_2 {
        // The envelope's fields as the bytes say, before anything is checked: what a refusal
        // is about.
        if let Ok(frame) = Frame::new_checked(bytes, &DecodeLimits::UNLIMITED) {
            let route = frame.route();
            say!(out, "agent      {}", frame.agent_id());
            say!(out, "dna        sha256 {}", hex(&frame.dna_hash()));
            match frame.source_node() {
                Some(node) => say!(out, "source     {node}"),
                None => say!(out, "source     none"),
            }
            say!(out, "target     {}, epoch {}", route.target, route.epoch);
            say!(out, "timestamp  {} (unix seconds)", frame.timestamp());
            say!(out, "binary     {} bytes carried", frame.binary().len());
            say!(
                out,
                "memory     {} bytes, {} carried, root {}",
                frame.memory_len(),
                frame.state().len(),
                hex(&frame.memory_root())
            );
            match frame.key_id() {
                Some(id) => say!(out, "signature  key id {}", hex(&id)),
                None => say!(out, "signature  none"),
            }
        }
    }

    say!(out, "checks");
    let mut passed = report(out, "frame", frame_check(bytes, version));
    passed &= report(out, "trailer", trailer_check(bytes, version));

    let dna = match dna.map(|d| Dna::new(d.to_vec())).transpose() {
        Ok(d) => d,
        Err(e) => {
            report(out, "decode", Err(format!("--dna: {e}")));
            return false;
        }
    };
    let mut store = DnaMap::new();
    if let Some(d) = &dna {
        store.insert(d);
    }
    let opts = DecodeOptions {
        dna_store: Some(&store),
        base_state: base,
        ..DecodeOptions::default()
    };
    let decoded = MigrationSnapshot::deserialize_with(bytes, &opts);
    passed &= report(
        out,
        "decode",
        decoded
            .as_ref()
            .map(|s| match s.route() {
                Some(_) => format!(
                    "version 2, DNA and memory root verified, {} bytes of memory",
                    s.wasm_state().len()
                ),
                None => format!(
                    "version 1, DNA verified, {} bytes of memory",
                    s.wasm_state().len()
                ),
            })
            .map_err(explain),
    );
    passed &= match (args.key, decoded.as_ref()) {
        (None, _) => {
            say!(
                out,
                "  signature  not checked (give the signer's public key with --key HEX)"
            );
            true
        }
        (Some(key), Ok(snapshot)) => report(
            out,
            "signature",
            signature_check(bytes, &opts, snapshot, key, args.now),
        ),
        (Some(_), Err(_)) => {
            say!(out, "  signature  not checked: the snapshot did not decode");
            true
        }
    };
    if let Ok(s) = &decoded {
        if version != FORMAT_VERSION_2 {
            // Version 1 has no envelope to print before the checks: its fields, decoded.
            say!(out, "agent      {}", s.agent_id());
            say!(out, "dna        sha256 {}", hex(s.dna_hash()));
            match s.source_node() {
                Some(node) => say!(out, "source     {node}"),
                None => say!(out, "source     none"),
            }
            say!(out, "timestamp  {} (unix seconds)", s.timestamp());
            say!(out, "memory     {} bytes", s.wasm_state().len());
        }
        say!(out, "globals    {:?}", s.globals());
        let p = s.policy();
        say!(
            out,
            "policy     battery >= {}%, latency <= {} ms, architectures {:?}",
            p.min_battery_percent,
            p.max_latency_ms,
            p.preferred_architectures
        );
    }
    passed
}

fn frame_check(bytes: &[u8], version: u16) -> Result<String, String> {
    if bytes[..4] != MAGIC {
        return Err(format!("magic {:02x?}, expected \"MCSN\"", &bytes[..4]));
    }
    match version {
        FORMAT_VERSION_2 => Frame::new_checked(bytes, &DecodeLimits::DEFAULT)
            .map(|_| "sizes within the default limits".into())
            .map_err(|e| e.to_string()),
        // Version 1 has no envelope: its flags and lengths are checked by the decode below.
        FORMAT_VERSION => Ok("version 1: flags and lengths are checked by the decode".into()),
        v => Err(format!("unsupported version {v} (1 and 2 exist)")),
    }
}

fn trailer_check(bytes: &[u8], version: u16) -> Result<String, String> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err("too short for the 32-byte trailer".into());
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    if version == FORMAT_VERSION_2 {
        // Version 2's trailer covers the envelope, tail and signature block (the DNA hash and
        // memory root in the envelope commit to the rest), so it needs the frame's offsets.
        let frame =
            Frame::new_checked(bytes, &DecodeLimits::UNLIMITED).map_err(|e| e.to_string())?;
        return frame
            .check_trailer()
            .map(|_| format!("sha256 {}", hex(trailer)))
            .map_err(|e| e.to_string());
    }
    // Version 1's covers every byte before it.
    let computed = Sha256::digest(body);
    if computed[..] == trailer[..] {
        Ok(format!("sha256 {}", hex(trailer)))
    } else {
        Err(format!(
            "the file says {}, its bytes hash to {}",
            hex(trailer),
            hex(&computed)
        ))
    }
}

fn explain(e: &CellError) -> String {
    let hint = match e {
        CellError::DnaNotFound { .. } => {
            " (the DNA is named by reference: give it with --dna FILE.wasm)"
        }
        CellError::DeserializationFailed(DecodeError::DeltaWithoutBase) => {
            " (a delta: give the memory it applies to with --base FILE)"
        }
        _ => "",
    };
    format!("{e}{hint}")
}

fn signature_check(
    bytes: &[u8],
    opts: &DecodeOptions<'_>,
    snapshot: &MigrationSnapshot<Vec<u8>>,
    key: [u8; 32],
    now: Option<u64>,
) -> Result<String, String> {
    let key = VerifyingKey::from_bytes(&key).map_err(|e| format!("--key: {e}"))?;
    let Some(source) = snapshot.source_node() else {
        return Err("the snapshot names no source node to trust the key for".into());
    };
    // Checked as its own target would check it: a node that trusts `key` for `source`.
    let target = snapshot.route().map_or(source, |r| r.target);
    let mut list = TrustList::<1, _>::new(target, EpochTable::<1>::new());
    list.trust(source, key).map_err(|e| format!("--key: {e}"))?;
    let now = now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    list.deserialize(bytes, opts, now)
        .map(|_| format!("valid for source {source}, target {target}, at {now}"))
        .map_err(|e| e.to_string())
}
