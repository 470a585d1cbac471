//! What the node logs about the driver's events, and the one-line hand-off summary.

use crate::names::Names;
use mielin_cells::quic::{to_hex, Event, HandOffReport, Role};

fn role(r: Role) -> &'static str {
    match r {
        Role::Source => "source",
        Role::Target => "target",
    }
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1_048_576.0
}

/// The one-line summary of a finished hand-off: agent, epoch, role, peer, outcome, snapshot
/// size, total time, transfer rate, full or delta memory, whether the DNA travelled or was named
/// by its hash, the phases with their times, and what runs here now. `WasmHost` always sends the
/// memory whole (chunked, zero chunks skipped): "memory full" until the report says otherwise.
pub fn handoff_summary(names: &Names, r: &HandOffReport, running_here: &str) -> String {
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(p, t)| format!("{p}@{:.1}ms", t.as_secs_f64() * 1e3))
        .collect();
    let rate = r
        .transfer
        .filter(|t| !t.is_zero())
        .map(|t| format!("{:.1} MiB/s", mib_per_s(r.bytes as u64, t.as_secs_f64())))
        .unwrap_or_else(|| "-".into());
    let dna = if r.phases.iter().any(|(p, _)| *p == "have-dna") {
        "by-reference"
    } else if r.phases.iter().any(|(p, _)| *p == "need-dna") {
        "carried"
    } else {
        "-"
    };
    format!(
        "handoff {} epoch {} {} {} {} {} bytes {} total {:.1} ms rate {rate} memory full dna {dna} phases {} running-here [{running_here}]",
        names.agent(r.agent),
        r.epoch,
        role(r.role),
        if r.role == Role::Source { "to" } else { "from" },
        names.node(r.peer),
        if r.committed { "committed" } else { "aborted" },
        r.bytes,
        r.total.as_secs_f64() * 1e3,
        phases.join(",")
    )
}

/// Logs an event at its level.
pub fn log_event(names: &Names, e: &Event, running_here: &str) {
    match e {
        Event::Refused {
            addr,
            claimed,
            key,
            inbound,
            reason,
        } => tracing::warn!(
            "refused {addr} claimed-id {} key {} ({}): {reason}; if it is yours, add it to the fleet file or `peer NAME KEY@ADDR`",
            claimed.map_or("none".into(), |c| to_hex(c.as_bytes())),
            key.map_or("none".into(), |k| k.to_hex()),
            if *inbound {
                "it dialled us"
            } else {
                "we dialled it"
            }
        ),
        Event::Connected {
            peer,
            addr,
            inbound,
        } => tracing::info!(
            "connected {} {addr}{}",
            names.node(*peer),
            if *inbound { " (inbound)" } else { "" }
        ),
        Event::Disconnected { peer, reason } => {
            tracing::info!("disconnected {}: {reason}", names.node(*peer))
        }
        Event::DialFailed {
            peer,
            reason,
            retry_in,
            ..
        } => tracing::info!(
            "dial {} failed: {reason}; retry in {} ms",
            names.node(*peer),
            retry_in.as_millis()
        ),
        Event::Phase {
            agent,
            epoch,
            peer,
            role: r,
            phase,
            elapsed,
            bytes,
        } => tracing::debug!(
            "phase {} epoch {epoch} {} {phase} {} {:.1} ms {bytes} bytes",
            names.agent(*agent),
            role(*r),
            if *r == Role::Source {
                format!("-> {}", names.node(*peer))
            } else {
                format!("<- {}", names.node(*peer))
            },
            elapsed.as_secs_f64() * 1e3,
        ),
        Event::HandOff(r) => tracing::info!("{}", handoff_summary(names, r, running_here)),
        Event::StreamRefused { peer, error } => tracing::warn!(
            "stream from {} refused: {error}",
            names.node(*peer)
        ),
        Event::Malformed { peer } => {
            tracing::warn!("malformed frame from {}", names.node(*peer))
        }
        Event::Progress {
            agent,
            epoch,
            peer,
            sent,
            total,
            elapsed,
        } => tracing::info!(
            "progress {} epoch {epoch} -> {} {sent}/{total} bytes ({}%) {:.1} ms {:.1} MiB/s",
            names.agent(*agent),
            names.node(*peer),
            sent * 100 / (*total).max(1),
            elapsed.as_secs_f64() * 1e3,
            mib_per_s(*sent, elapsed.as_secs_f64())
        ),
        _ => {}
    }
}
