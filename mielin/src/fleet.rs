//! The node's side of a fleet on Zenoh (`--zenoh`, `--zenoh-listen`, `--zenoh-router`;
//! docs/fleet.md). Zenoh needs a multi-threaded runtime and the node runs on a single-threaded
//! one, so a thread of its own joins the fleet, publishes the statuses the node hands it, and
//! passes joins and leaves back. The node reads the fleet's view (`FleetView`) directly and
//! places its agents with `mesh::planner` on the statuses in it. A router that is not up yet
//! holds up the join, not the node: it runs without the fleet until the join is done.

use crate::config::ZenohSettings;
use mielin_cells::fleet::{Fleet, FleetConfig, FleetEvent, FleetView, Mode, Router};
use mielin_cells::mesh::fleet::{Location, Status};
use mielin_cells::quic::{Identity, PublicKey};
use mielin_cells::AgentId;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Events the fleet thread holds for the node.
const EVENTS: usize = 1024;

/// How often every location record is published again, changed or not: a record lost on the
/// way (with 50 clients starting at once, Zenoh logged messages it could not route, "Unknown
/// wire expr") is back within this time, not only at the next change or a query. Statuses
/// come every half second anyway.
const LOCATIONS_AGAIN: Duration = Duration::from_secs(10);

/// The node's handle on its fleet thread.
pub struct FleetLink {
    view: Arc<OnceLock<FleetView>>,
    statuses: mpsc::Sender<Status>,
    locations: mpsc::Sender<Vec<Location>>,
    members: mpsc::UnboundedSender<PublicKey>,
    events: std::sync::mpsc::Receiver<FleetEvent>,
    thread: std::thread::JoinHandle<()>,
}

impl FleetLink {
    /// What the node sees of the fleet, once it joined.
    pub fn view(&self) -> Option<&FleetView> {
        self.view.get()
    }

    /// The view as it will be once the node joined: for the host's lookups, which outlive a
    /// borrow of the link.
    pub fn view_cell(&self) -> Arc<OnceLock<FleetView>> {
        self.view.clone()
    }

    /// Trusts a newly pinned peer as a member (applied when the join is done, if it is not).
    pub fn add_member(&self, key: PublicKey) {
        let _ = self.members.send(key);
    }

    /// Hands a status to the thread to sign and publish (dropped if the last one is still
    /// waiting: the next one follows in half a second).
    pub fn publish(&self, status: Status) {
        let _ = self.statuses.try_send(status);
    }

    /// Hands the thread the agents this node runs now, at their epochs: it publishes a signed
    /// location record for each new one (or new epoch) and withdraws those that left. False if
    /// the last list is still waiting (the caller sends the list again later).
    pub fn publish_locations(&self, running: Vec<Location>) -> bool {
        self.locations.try_send(running).is_ok()
    }

    /// The joins and leaves seen since the last call.
    pub fn events(&self) -> Vec<FleetEvent> {
        self.events.try_iter().collect()
    }

    /// Leaves the fleet (the others see this node go at once) and waits up to `limit` for the
    /// thread to end: at the start of a stop, so that no member sends an agent to a node that
    /// is stopping.
    pub fn leave(self, limit: Duration) {
        drop(self.statuses); // the thread's signal to leave
        let start = std::time::Instant::now();
        while !self.thread.is_finished() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::warn!(
                "fleet: leaving took over {} ms; not waited for",
                limit.as_millis()
            );
        }
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
    // A node that runs the router is its first client (and connects to the other routers
    // given, if any).
    config.connect = if z.router {
        z.listen.iter().chain(&z.connect).cloned().collect()
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
    // Bounded: the node takes them every turn; while it is held up, later ones are dropped
    // (its view stays current; the events only feed its log).
    let (event_tx, events) = std::sync::mpsc::sync_channel(EVENTS);
    let (statuses, mut status_rx) = mpsc::channel::<Status>(1);
    let (locations, mut location_rx) = mpsc::channel::<Vec<Location>>(1);
    let (members_tx, mut members_rx) = mpsc::unbounded_channel::<PublicKey>();
    let view = Arc::new(OnceLock::new());
    let joined = view.clone();
    let how = describe(z);
    let fleet_name = z.fleet.clone();
    let thread = std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    fail(&ready_tx, format!("the fleet's runtime: {e}"));
                    return;
                }
            };
            rt.block_on(async move {
                let _router = match router_on {
                    Some(listen) => match Router::start(&listen).await {
                        Ok(r) => Some(r),
                        Err(e) => {
                            fail(&ready_tx, format!("--zenoh-router: {e}"));
                            return;
                        }
                    },
                    None => None,
                };
                let mut fleet = match Fleet::join(identity, config).await {
                    Ok(f) => f,
                    Err(e) => {
                        fail(&ready_tx, format!("joining the fleet: {e}"));
                        return;
                    }
                };
                let _ = joined.set(fleet.view());
                tracing::info!("fleet {fleet_name} on zenoh: {how}");
                let _ = ready_tx.send(Ok(()));
                let mut published = Published::default();
                loop {
                    tokio::select! {
                        Some(key) = members_rx.recv() => {
                            fleet.add_member(key);
                        }
                        Some(running) = location_rx.recv() => {
                            published.update(&mut fleet, running);
                        }
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
                            // The node logs joins and leaves; statuses and locations it reads
                            // from the view (with their ages).
                            Some(FleetEvent::Status(..) | FleetEvent::Located { .. }) => {}
                            Some(e) => {
                                if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) =
                                    event_tx.try_send(e)
                                {
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
    // A bad endpoint or a port in use fails at once; a router that is not up yet makes the
    // join wait, in the background.
    match ready_rx.recv_timeout(Duration::from_secs(2)) {
        Ok(r) => r?,
        Err(_) => tracing::info!(
            "fleet {}: waiting for {} (Zenoh retries every second); until it joined, agents are placed on the QUIC peers' statuses",
            z.fleet,
            if z.router { z.listen.join(" ") } else { z.connect.join(" ") }
        ),
    }
    Ok(FleetLink {
        view,
        statuses,
        locations,
        members: members_tx,
        events,
        thread,
    })
}

/// The location records this node published, and whether it said that it could not publish
/// more (said once).
#[derive(Default)]
struct Published {
    /// Per agent, the epoch published (`None`: a publication failed; tried again, and withdrawn
    /// when the agent leaves, since the fleet may hold the record a failed put left behind).
    at: BTreeMap<AgentId, Option<u64>>,
    warned: bool,
    /// When every record was last published again.
    again: Option<std::time::Instant>,
}

impl Published {
    /// Publishes what is new in `running` and withdraws what left; every [`LOCATIONS_AGAIN`],
    /// all of `running` again. A record that could not be published is tried again with the
    /// next list.
    fn update(&mut self, fleet: &mut Fleet, running: Vec<Location>) {
        let now: BTreeMap<AgentId, u64> = running.iter().map(|l| (l.agent, l.epoch)).collect();
        self.at.retain(|agent, _| {
            let stays = now.contains_key(agent);
            if !stays {
                fleet.withdraw_location(*agent);
            }
            stays
        });
        if self.again.is_none_or(|t| t.elapsed() >= LOCATIONS_AGAIN) {
            self.again = Some(std::time::Instant::now());
            // Every record below is published again (the agents stay known, for withdrawal).
            self.at.values_mut().for_each(|e| *e = None);
        }
        for (agent, epoch) in now {
            if self.at.get(&agent) == Some(&Some(epoch)) {
                continue;
            }
            match fleet.publish_location(Location { agent, epoch }) {
                Ok(()) => {
                    self.at.insert(agent, Some(epoch));
                }
                Err(e) => {
                    self.at.insert(agent, None);
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!("fleet: publishing where agents run: {e} (said once)");
                    }
                }
            }
        }
    }
}

/// Reports a failure to `start`, or logs it when `start` no longer waits (the join took longer
/// than its 2 s and the node runs on without the fleet).
fn fail(ready: &std::sync::mpsc::Sender<Result<(), String>>, e: String) {
    if let Err(std::sync::mpsc::SendError(Err(e))) = ready.send(Err(e)) {
        tracing::error!("{e}; the node runs without the fleet");
    }
}

fn describe(z: &ZenohSettings) -> String {
    if z.router {
        format!("router on {}", z.listen.join(" "))
    } else if z.listen.is_empty() {
        format!("client of {}", z.connect.join(" "))
    } else {
        format!(
            "peer on {}, connected to {}",
            z.listen.join(" "),
            z.connect.join(" ")
        )
    }
}
