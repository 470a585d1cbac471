//! The QUIC driver in one process: what a large hand-off reports while it is written.
#![cfg(feature = "quic")]

#[path = "common_quic/pair.rs"]
mod pair;

use mielin_cells::quic::{wire, Event, Role, PROGRESS_MIN_BYTES};
use pair::{pair, pump, spawn};

/// A 3 MiB agent: its snapshot is written in tenths, each reported with a growing count that
/// ends at the record's length, all before its hand-off ends; a small agent reports none.
#[test]
fn a_large_snapshot_reports_its_progress() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut p = pair("progress");
        let big = spawn(&mut p.a, 1, 3 << 20);
        let small = spawn(&mut p.a, 2, 1024);
        let target = p.b.driver.id();
        let mut progress = Vec::new();
        let mut ended = 0;
        for agent in [big, small] {
            p.a.driver.migrate(&mut p.a.host, agent, target).unwrap();
        }
        pump(&mut p, |_, evs| {
            for e in evs {
                match e {
                    Event::Progress {
                        agent,
                        sent,
                        total,
                        peer,
                        ..
                    } => {
                        assert_eq!(*peer, target);
                        progress.push((*agent, *sent, *total));
                    }
                    Event::HandOff(r) if r.role == Role::Source => {
                        assert!(r.committed, "hand-off aborted");
                        if r.agent == big {
                            // Every progress line came before the end of its hand-off.
                            assert_eq!(progress.len(), 10, "{progress:?}");
                        }
                        ended += 1;
                    }
                    _ => {}
                }
            }
            ended == 2
        })
        .await;
        assert!(progress.iter().all(|(a, ..)| *a == big), "{progress:?}");
        assert_eq!(progress.len(), 10, "{progress:?}");
        let total = progress[0].2;
        assert!(
            total as usize >= PROGRESS_MIN_BYTES.max(3 << 20) / 2,
            "{total}"
        );
        assert!(progress
            .windows(2)
            .all(|w| w[0].1 < w[1].1 && w[0].2 == w[1].2));
        assert_eq!(progress.last().unwrap().1, total);
    });
}

/// Found by review: the status announcements share the ordered stream with the frames, so a
/// status the peer could not decode (an Xtensa node's, which the decoder did not know; a
/// battery over 100) stopped the stream, lost every frame behind it and cost each hand-off a
/// retransmission and a new connection (4.1 s each instead of 40 ms). Every architecture
/// decodes now, a charge over 100 goes as 100, and a record that does not decode is skipped
/// without stopping its stream.
#[test]
fn status_announcements_never_hold_up_the_frames_behind_them() {
    use mielin_cells::{Arch, NodeStatus};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut p = pair("status");
        let agents: Vec<_> = (1..=3).map(|i| spawn(&mut p.a, i, 1024)).collect();
        let target = p.b.driver.id();
        let mut refused = 0;
        let mut statuses = Vec::new();
        for agent in agents {
            p.a.driver.announce(
                &NodeStatus {
                    battery_percent: 150,
                    latency_ms: 1,
                    arch: Arch::Xtensa,
                },
                wire::CAN_REWIND,
            );
            p.a.driver.migrate(&mut p.a.host, agent, target).unwrap();
            pump(&mut p, |_, evs| {
                for e in evs {
                    match e {
                        Event::StreamRefused { .. } => refused += 1,
                        Event::Status { status, .. } => statuses.push(*status),
                        _ => {}
                    }
                }
                evs.iter().any(|e| {
                    matches!(e, Event::HandOff(r) if r.role == Role::Source && r.agent == agent)
                })
            })
            .await;
        }
        assert_eq!(refused, 0);
        assert_eq!(p.a.driver.node().stats().retransmits, 0, "a frame was lost");
        assert!(!statuses.is_empty());
        assert!(statuses
            .iter()
            .all(|s| s.arch == Arch::Xtensa && s.battery_percent == 100));
        // Its capability came with it: b may offer a waiting agent to a.
        let a = p.a.driver.id();
        assert_eq!(p.b.driver.peer_can_rewind(a), Some(true));
        assert_eq!(p.b.driver.peer_can_rewind(p.b.driver.id()), None);
    });
}
