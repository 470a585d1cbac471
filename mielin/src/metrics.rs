//! Prometheus text metrics (format 0.0.4) over a minimal HTTP server, localhost by default.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bucket bounds of the duration histograms, seconds.
const SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; SECONDS.len()];
        }
        for (i, b) in SECONDS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in SECONDS.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Values read from the node's loop at each tick (the driver and protocol counters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub agents_running: u64,
    pub peers_connected: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_dropped: u64,
    pub messages_accepted: u64,
    pub messages_full: u64,
    pub retransmits: u64,
    pub messages_undelivered: u64,
    pub rollback_refused: u64,
    pub rollback_unchecked: u64,
    pub journal_rollbacks: u64,
}

#[derive(Debug, Default)]
struct Data {
    /// (role, outcome) → count.
    handoffs: BTreeMap<(&'static str, &'static str), u64>,
    /// role → snapshot bytes.
    handoff_bytes: BTreeMap<&'static str, u64>,
    /// reason → count.
    refusals: BTreeMap<&'static str, u64>,
    handoff_seconds: BTreeMap<&'static str, Histogram>,
    transfer_seconds: Histogram,
    operator_messages: u64,
    operator_replies: u64,
    control_requests: u64,
    gauges: Gauges,
}

/// The node's metrics, shared by its loop, its control socket and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    data: Mutex<Data>,
    /// Journal writes made durable (each an fsync and a rename): counted by the journal.
    pub journal_syncs: Arc<AtomicU64>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Data)) {
        if let Ok(mut d) = self.data.lock() {
            f(&mut d);
        }
    }

    /// A finished hand-off.
    pub fn handoff(
        &self,
        role: &'static str,
        committed: bool,
        bytes: u64,
        total: Duration,
        transfer: Option<Duration>,
    ) {
        self.with(|d| {
            let outcome = if committed { "committed" } else { "aborted" };
            *d.handoffs.entry((role, outcome)).or_default() += 1;
            *d.handoff_bytes.entry(role).or_default() += bytes;
            d.handoff_seconds
                .entry(role)
                .or_default()
                .observe(total.as_secs_f64());
            if let Some(t) = transfer {
                d.transfer_seconds.observe(t.as_secs_f64());
            }
        });
    }

    /// Something refused, by reason.
    pub fn refusal(&self, reason: &'static str) {
        self.with(|d| *d.refusals.entry(reason).or_default() += 1);
    }

    pub fn operator_message(&self) {
        self.with(|d| d.operator_messages += 1);
    }

    pub fn operator_reply(&self) {
        self.with(|d| d.operator_replies += 1);
    }

    pub fn control_request(&self) {
        self.with(|d| d.control_requests += 1);
    }

    pub fn set_gauges(&self, g: Gauges) {
        self.with(|d| d.gauges = g);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let d = match self.data.lock() {
            Ok(d) => d,
            Err(_) => return o,
        };
        let family = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut o,
            "mielin_handoffs_total",
            "counter",
            "Hand-offs that ended here, by this node's role and the outcome.",
        );
        for role in ["source", "target"] {
            for outcome in ["committed", "aborted"] {
                let n = d.handoffs.get(&(role, outcome)).copied().unwrap_or(0);
                let _ = writeln!(
                    o,
                    "mielin_handoffs_total{{role=\"{role}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        family(
            &mut o,
            "mielin_handoff_bytes_total",
            "counter",
            "Snapshot bytes of the hand-offs that ended here, by role.",
        );
        for role in ["source", "target"] {
            let n = d.handoff_bytes.get(role).copied().unwrap_or(0);
            let _ = writeln!(o, "mielin_handoff_bytes_total{{role=\"{role}\"}} {n}");
        }
        family(
            &mut o,
            "mielin_refusals_total",
            "counter",
            "Things refused, by reason: unpinned (a peer's key), stream (framing), malformed \
             (a frame), offer (the target refused a hand-off), control_oversized and \
             control_malformed (control socket requests).",
        );
        for reason in [
            "unpinned",
            "stream",
            "malformed",
            "offer",
            "control_oversized",
            "control_malformed",
        ] {
            let n = d.refusals.get(reason).copied().unwrap_or(0);
            let _ = writeln!(o, "mielin_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        family(
            &mut o,
            "mielin_handoff_duration_seconds",
            "histogram",
            "From a hand-off's first frame to its last, by role.",
        );
        for role in ["source", "target"] {
            d.handoff_seconds
                .get(role)
                .cloned()
                .unwrap_or_default()
                .render(
                    &mut o,
                    "mielin_handoff_duration_seconds",
                    &format!("role=\"{role}\""),
                );
        }
        family(
            &mut o,
            "mielin_handoff_transfer_seconds",
            "histogram",
            "From the snapshot's sending to the target's Prepared (source side).",
        );
        d.transfer_seconds
            .render(&mut o, "mielin_handoff_transfer_seconds", "");
        let g = d.gauges;
        let counters: [(&str, &str, u64); 14] = [
            (
                "mielin_frames_sent_total",
                "Protocol frames sent to peers.",
                g.frames_sent,
            ),
            (
                "mielin_frames_received_total",
                "Protocol frames received from peers.",
                g.frames_received,
            ),
            (
                "mielin_frames_dropped_total",
                "Frames dropped (peer unreachable or in backoff).",
                g.frames_dropped,
            ),
            (
                "mielin_retransmits_total",
                "Frames re-sent by a protocol timer.",
                g.retransmits,
            ),
            (
                "mielin_messages_accepted_total",
                "Agent messages put in a local agent's mailbox by the mesh.",
                g.messages_accepted,
            ),
            (
                "mielin_messages_undelivered_total",
                "Agent messages reported as not acknowledged within the node's undelivered time.",
                g.messages_undelivered,
            ),
            (
                "mielin_rollback_refused_total",
                "Agents not run after a restart because a peer saw them at a later epoch (the journal is an older copy).",
                g.rollback_refused,
            ),
            (
                "mielin_rollback_unchecked_total",
                "Agents run after a restart before every peer answered the rollback check.",
                g.rollback_unchecked,
            ),
            (
                "mielin_journal_rollbacks_total",
                "Peers that saw a later restart generation than this journal's.",
                g.journal_rollbacks,
            ),
            (
                "mielin_messages_full_total",
                "Agent message deliveries answered Full (back-pressure).",
                g.messages_full,
            ),
            (
                "mielin_operator_messages_total",
                "Messages from `mielin send` accepted by an agent here.",
                d.operator_messages,
            ),
            (
                "mielin_operator_replies_total",
                "Messages agents here sent to the operator.",
                d.operator_replies,
            ),
            (
                "mielin_control_requests_total",
                "Control socket requests decoded.",
                d.control_requests,
            ),
            (
                "mielin_journal_syncs_total",
                "Hand-off journal writes made durable (fsync, rename).",
                self.journal_syncs.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            family(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
        for (name, help, v) in [
            (
                "mielin_agents_running",
                "Agents running on this node.",
                g.agents_running,
            ),
            (
                "mielin_peers_connected",
                "Pinned peers with a connection up.",
                g.peers_connected,
            ),
        ] {
            family(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        }
        o
    }
}

/// Serves `GET /metrics` on `listener`, one connection at a time, each bounded to 4 KiB of
/// request and 2 s.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics ") || head.starts_with("GET / ")
            {
                ("200 OK", m.render())
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        })
        .await;
    }
}

/// Binds the metrics listener; a non-loopback address is allowed but warned about.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!(
            "metrics on {addr}: {e} (pick another address with --metrics ADDR, or --no-metrics)"
        )
    })
}
