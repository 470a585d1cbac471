//! The node's side of a fleet on Zenoh (`--zenoh`, `--zenoh-listen`, `--zenoh-router`;
//! docs/fleet.md). Zenoh needs a multi-threaded runtime and the node runs on a single-threaded
//! one, so a thread of its own joins the fleet, publishes the statuses the node hands it, and
//! passes joins and leaves back. The node reads the fleet's view (`FleetView`) directly and
//! places its agents with `mesh::planner` on the statuses in it.

use crate::config::ZenohSettings;
use mielin_cells::fleet::{Fleet, FleetConfig, FleetEvent, FleetView, Mode, Router};
use mielin_cells::mesh::fleet::Status;
use mielin_cells::quic::{Identity, PublicKey};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The node's handle on its fleet thread.
pub struct FleetLink {
    /// What the node sees of the fleet.
    pub view: FleetView,
    statuses: mpsc::Sender<Status>,
    events: std::sync::mpsc::Receiver<FleetEvent>,
}

impl FleetLink {
    /// Hands a status to the thread to sign and publish (dropped if the last one is still
    /// waiting: the next one follows in half a second).
    pub fn publish(&self, status: Status) {
        let _ = self.statuses.try_send(status);
    }

    /// The joins, leaves and statuses seen since the last call.
    pub fn events(&self) -> Vec<FleetEvent> {
        self.events.try_iter().collect()
    }
}

/// Starts the fleet thread and waits until it joined (or failed to).
pub fn start(
    identity: Identity,
    z: &ZenohSettings,
    members: Vec<PublicKey>,
) -> Result<FleetLink, String> {
    let mode = if z.router || z.listen.is_empty() {
        Mode::Client
    } else {
        Mode::Peer
    };
    let mut config = FleetConfig::new(&z.fleet, mode);
    config.listen = if z.router {
        Vec::new()
    } else {
        z.listen.clone()
    };
    // A node that runs the router is its first client.
    config.connect = if z.router {
        z.listen.clone()
    } else {
        z.connect.clone()
    };
    config.members = members;
    // Above every sequence number an earlier run of this node published: the wall clock, in
    // microseconds.
    config.first_seq = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let router_on = z.router.then(|| z.listen.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (event_tx, events) = std::sync::mpsc::channel();
    let (statuses, mut status_rx) = mpsc::channel::<Status>(1);
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("the fleet's runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let _router = match router_on {
                    Some(listen) => match Router::start(&listen).await {
                        Ok(r) => Some(r),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("--zenoh-router: {e}")));
                            return;
                        }
                    },
                    None => None,
                };
                let mut fleet = match Fleet::join(identity, config).await {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("joining the fleet: {e}")));
                        return;
                    }
                };
                if ready_tx.send(Ok(fleet.view())).is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        s = status_rx.recv() => match s {
                            Some(s) => {
                                if let Err(e) = fleet.publish_status(s) {
                                    tracing::warn!("fleet: publishing the status: {e}");
                                }
                            }
                            // The node stopped: leave, so the others see it at once.
                            None => break,
                        },
                        e = fleet.next_event() => match e {
                            Some(e) => {
                                if event_tx.send(e).is_err() {
                                    break;
                                }
                            }
                            None => break,
                        },
                    }
                }
                let _ = fleet.leave().await;
            });
        })
        .map_err(|e| format!("the fleet's thread: {e}"))?;
    let view = ready_rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "joining the fleet: no answer within 20 s".to_string())??;
    Ok(FleetLink {
        view,
        statuses,
        events,
    })
}
