//! The fleet over Zenoh (feature `fleet`), in one process on loopback: an in-process router
//! and client nodes, or peers. Presence (joins, leaves, a silent link seen dead within the
//! lease), signed records (status, locations, the highest epoch, a late joiner's query), and an
//! outsider on the same Zenoh network who forges, replays and misplaces records: every one is
//! refused, counted, and changes nothing.
//!
//! The times each test measured are printed (`--nocapture`); docs/fleet.md quotes them.

use mielin_cells::fleet::{Fleet, FleetConfig, FleetEvent, FleetStats, Mode, Router};
use mielin_cells::mesh::fleet::{self as records, Body, Location, Status};
use mielin_cells::quic::{to_hex, Identity, PublicKey};
use mielin_cells::{AgentId, Arch, NodeId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLEET: &str = "test-fleet";

fn free_endpoint() -> (String, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (format!("tcp/127.0.0.1:{port}"), port)
}

fn identity(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

fn status(battery: u8) -> Status {
    Status {
        arch: Arch::X86_64,
        battery_percent: battery,
        load_percent: 10,
        free_memory_kib: 1 << 20,
        agents: 0,
        capabilities: records::CAN_REWIND,
    }
}

fn config(mode: Mode, connect: &str, members: &[Identity]) -> FleetConfig {
    let mut c = FleetConfig::new(FLEET, mode);
    c.connect = vec![connect.to_string()];
    c.members = members.iter().map(Identity::public_key).collect();
    c
}

/// Waits up to `limit` for `cond`, polling; the time it took, or a panic naming `what`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// A router on a free loopback port, its endpoint, and the identities of `seeds`.
async fn router_and_ids(seeds: std::ops::RangeInclusive<u8>) -> (Router, String, Vec<Identity>) {
    let (ep, _) = free_endpoint();
    let router = Router::start(std::slice::from_ref(&ep)).await.unwrap();
    (router, ep, seeds.map(identity).collect())
}

/// `id` joined as a client of the router at `ep`, trusting `ids`.
async fn client(id: &Identity, ep: &str, ids: &[Identity]) -> Fleet {
    Fleet::join(id.clone(), config(Mode::Client, ep, ids))
        .await
        .unwrap()
}

fn drain(f: &mut Fleet) -> Vec<FleetEvent> {
    std::iter::from_fn(|| f.try_event()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_see_each_other_join_publish_and_leave() {
    let (router, ep, ids) = router_and_ids(1..=5).await;
    let start = Instant::now();
    let mut nodes = Vec::new();
    for id in &ids {
        nodes.push(client(id, &ep, &ids).await);
    }
    let all: Vec<NodeId> = {
        let mut v: Vec<NodeId> = ids.iter().map(Identity::node_id).collect();
        v.sort();
        v
    };
    for n in &nodes {
        until("every member seen", Duration::from_secs(10), || {
            n.alive() == all
        })
        .await;
    }
    println!(
        "5 clients of a router joined and saw each other in {:?}",
        start.elapsed()
    );

    for (i, n) in nodes.iter_mut().enumerate() {
        n.publish_status(status(50 + i as u8)).unwrap();
    }
    for n in &nodes {
        until("every status seen", Duration::from_secs(10), || {
            ids.iter().enumerate().all(|(i, id)| {
                n.status(id.node_id()).map(|s| s.battery_percent) == Some(50 + i as u8)
            })
        })
        .await;
    }

    // The view says how old each status is (placement ignores a stale one): it grows until
    // the next one comes, and a new one starts it again.
    let n1 = ids[1].node_id();
    let first = nodes[0].view().status_age(n1).unwrap().1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = nodes[0].view().status_age(n1).unwrap().1;
    assert!(
        later >= first + Duration::from_millis(200),
        "{first:?}, then {later:?}"
    );
    nodes[1].publish_status(status(77)).unwrap();
    until("a newer status", Duration::from_secs(10), || {
        nodes[0].status(n1).map(|s| s.battery_percent) == Some(77)
    })
    .await;
    assert!(nodes[0].view().status_age(n1).unwrap().1 < later);

    // Node 4 leaves: the others see it at once (its connection closes), and forget its status.
    let gone = nodes.pop().unwrap();
    let gone_id = gone.node_id();
    let t = Instant::now();
    gone.leave().await.unwrap();
    for n in &nodes {
        until("the leave seen", Duration::from_secs(5), || {
            !n.alive().contains(&gone_id)
        })
        .await;
        assert_eq!(n.status(gone_id), None);
    }
    println!(
        "a node's leave was seen by the other 4 in {:?}",
        t.elapsed()
    );
    for n in &mut nodes {
        assert!(drain(n).contains(&FleetEvent::Left(gone_id)));
    }

    // It comes back with a higher first sequence number: seen again, and its status is fresh.
    let mut c = config(Mode::Client, &ep, &ids);
    c.first_seq = 1_000;
    let mut back = Fleet::join(ids[4].clone(), c).await.unwrap();
    back.publish_status(status(7)).unwrap();
    for n in &nodes {
        until("the return seen", Duration::from_secs(10), || {
            n.status(gone_id).map(|s| s.battery_percent) == Some(7)
        })
        .await;
    }
    for n in &mut nodes {
        let events = drain(n);
        assert!(events.contains(&FleetEvent::Joined(gone_id)), "{events:?}");
        // Each took the 7 statuses once (5, node 1's second, the returned node's). A status that a publication and an answer to its
        // join query both brought is a duplicate, one that came before its node's token is
        // absent (and taken from the answer): neither is a refusal.
        let stats = n.stats();
        assert_eq!(
            stats,
            FleetStats {
                records: 7,
                duplicates: stats.duplicates,
                absent: stats.absent,
                ..FleetStats::default()
            }
        );
    }
    for n in nodes {
        n.leave().await.unwrap();
    }
    back.leave().await.unwrap();
    router.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_with_explicit_endpoints_form_a_fleet_without_a_router() {
    let ids: Vec<Identity> = (11..=13).map(identity).collect();
    let (ep0, _) = free_endpoint();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut c = FleetConfig::new(FLEET, Mode::Peer);
        c.members = ids.iter().map(Identity::public_key).collect();
        if i == 0 {
            c.listen = vec![ep0.clone()];
        } else {
            c.listen = vec![free_endpoint().0];
            c.connect = vec![ep0.clone()];
        }
        nodes.push(Fleet::join(id.clone(), c).await.unwrap());
    }
    nodes[2].publish_status(status(33)).unwrap();
    let far = ids[2].node_id();
    for n in &nodes {
        until("three peers", Duration::from_secs(10), || {
            n.alive().len() == 3
        })
        .await;
        until("the status", Duration::from_secs(10), || {
            n.status(far).map(|s| s.battery_percent) == Some(33)
        })
        .await;
    }
    for n in nodes {
        n.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_location_resolves_to_the_highest_epoch_and_a_late_joiner_asks_for_it() {
    let (router, ep, ids) = router_and_ids(21..=23).await;
    let mut a = client(&ids[0], &ep, &ids).await;
    let mut b = client(&ids[1], &ep, &ids).await;
    let agent = AgentId::from_bytes([0xa9; 16]);
    until("a and b", Duration::from_secs(10), || b.alive().len() == 2).await;
    b.publish_location(Location { agent, epoch: 5 }).unwrap();
    a.publish_location(Location { agent, epoch: 3 }).unwrap();
    a.publish_status(status(80)).unwrap();
    for n in [&a, &b] {
        until("b at epoch 5", Duration::from_secs(10), || {
            n.locate(agent) == Some((ids[1].node_id(), 5))
        })
        .await;
    }

    // c joins after all of it was published: it learns the records from a's and b's answers.
    let t = Instant::now();
    let c = client(&ids[2], &ep, &ids).await;
    until("c learns the location", Duration::from_secs(10), || {
        c.locate(agent) == Some((ids[1].node_id(), 5)) && c.status(ids[0].node_id()).is_some()
    })
    .await;
    println!("a late joiner had the others' records in {:?}", t.elapsed());
    // b withdraws; the agent moves to a at epoch 6, which wins everywhere.
    b.withdraw_location(agent);
    a.publish_location(Location { agent, epoch: 6 }).unwrap();
    for n in [&a, &b, &c] {
        until("a at epoch 6", Duration::from_secs(10), || {
            n.locate(agent) == Some((ids[0].node_id(), 6))
        })
        .await;
    }
    for n in [a, b, c] {
        n.leave().await.unwrap();
    }
    router.close().await.unwrap();
}

/// A signed record of `who`, with its key on the fleet's key space.
fn record(who: &Identity, seq: u64, body: Body) -> (String, Vec<u8>) {
    let mut buf = [0u8; records::MAX_RECORD_LEN];
    let len = records::sign(who.secret(), seq, &body, &mut buf).unwrap();
    let node = to_hex(who.node_id().as_bytes());
    let suffix = match body {
        Body::Status(_) => "status".to_string(),
        Body::Location(l) => format!("location/{}", to_hex(l.agent.as_bytes())),
    };
    (
        format!("mielin/{FLEET}/records/{node}/{suffix}"),
        buf[..len].to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outsider_cannot_forge_replay_or_misplace_a_record() {
    let (router, ep, ids) = router_and_ids(31..=32).await;
    let (alice, bob) = (&ids[0], &ids[1]);
    let mut a = client(alice, &ep, &ids).await;
    let observer = client(bob, &ep, &ids).await;
    // The outsider: a plain Zenoh client of the same router, with its own key (not a member).
    let mut oc = zenoh::Config::default();
    oc.insert_json5("mode", "\"client\"").unwrap();
    oc.insert_json5("scouting/multicast/enabled", "false")
        .unwrap();
    oc.insert_json5("connect/endpoints", &format!("[\"{ep}\"]"))
        .unwrap();
    let outsider = zenoh::open(oc).await.unwrap();
    let mallory = identity(99);

    // Alice's real statuses at sequence 1 and 2, seen by the observer.
    a.publish_status(status(89)).unwrap();
    a.publish_status(status(90)).unwrap();
    until("alice's status", Duration::from_secs(10), || {
        observer.status(alice.node_id()).map(|s| s.battery_percent) == Some(90)
    })
    .await;

    let agent = AgentId::from_bytes([0x42; 16]);
    let (alice_status_key, alice_status_1) = record(alice, 1, Body::Status(status(89)));
    let alice_status_2 = record(alice, 2, Body::Status(status(90))).1;
    // Not a record at all, on alice's key, until the observer has counted one: the outsider's
    // Zenoh session then knows the route to the subscribers (a put before that goes nowhere).
    let mut probes = 0;
    while observer.stats().bad_records == 0 {
        outsider
            .put(alice_status_key.as_str(), b"battery=0".to_vec())
            .await
            .unwrap();
        probes += 1;
        assert!(
            probes < 1000,
            "the outsider's puts never reached the observer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = observer.stats();
    assert_eq!(base.records, 2);
    let mut attacks: Vec<(&str, String, Vec<u8>)> = Vec::new();
    // A record cut short, on alice's key.
    attacks.push((
        "cut",
        alice_status_key.clone(),
        alice_status_1[..50].to_vec(),
    ));
    // Alice's record with one bit flipped (battery 90 -> 91 without re-signing).
    let mut flipped = record(alice, 2, Body::Status(status(90))).1;
    flipped[45] ^= 1;
    attacks.push(("flipped", alice_status_key.clone(), flipped));
    // Mallory signs a status of her own: a valid record, but not a member's.
    let (k, v) = record(&mallory, 5, Body::Status(status(0)));
    attacks.push(("not a member", k, v));
    // Mallory's record put on alice's key: the key speaks for another node.
    let (_, v) = record(&mallory, 6, Body::Status(status(0)));
    attacks.push(("mallory on alice's key", alice_status_key.clone(), v));
    // Bob's genuine record (a member) replayed on alice's key.
    let (_, v) = record(bob, 7, Body::Status(status(0)));
    attacks.push(("bob on alice's key", alice_status_key.clone(), v));
    // Alice's genuine location of one agent, put on another agent's key.
    let (k, v) = record(alice, 8, Body::Location(Location { agent, epoch: 9 }));
    let other = k.replace(&to_hex(agent.as_bytes()), &to_hex(&[0x43; 16]));
    attacks.push(("location on another agent's key", other, v));
    // Alice's genuine statuses, replayed: the older one is stale, the newest a duplicate.
    attacks.push(("replay", alice_status_key.clone(), alice_status_1));
    attacks.push((
        "replay of the newest",
        alice_status_key.clone(),
        alice_status_2,
    ));
    for (_, key, bytes) in &attacks {
        outsider.put(key.as_str(), bytes.clone()).await.unwrap();
    }
    // A token for a node that is no member.
    let stray = format!(
        "mielin/{FLEET}/alive/{}",
        to_hex(mallory.node_id().as_bytes())
    );
    let _token = outsider.liveliness().declare_token(stray).await.unwrap();
    // Alice's own id in upper case: another Zenoh key for the same node. Undeclaring it must
    // not report alice gone.
    let upper = format!(
        "mielin/{FLEET}/alive/{}",
        to_hex(alice.node_id().as_bytes()).to_uppercase()
    );
    let shadow = outsider.liveliness().declare_token(upper).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    shadow.undeclare().await.unwrap();

    let expect = FleetStats {
        records: 2,
        bad_records: base.bad_records + 2,
        not_member: 1,
        wrong_key: 3,
        stale: 1,
        duplicates: base.duplicates + 1,
        absent: 0,
        // Mallory's token, and the upper-case spelling of alice's, declared and undeclared.
        stray_tokens: 3,
        events_dropped: 0,
        asks_dropped: 0,
    };
    let counted = until("every attack counted", Duration::from_secs(20), || {
        observer.stats() == expect
    });
    if tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .is_err()
    {
        panic!("{:?} != {expect:?}", observer.stats());
    }
    assert_eq!(
        observer.status(alice.node_id()).unwrap().battery_percent,
        90
    );
    assert_eq!(observer.locate(agent), None);
    assert!(!observer.alive().contains(&mallory.node_id()));
    assert_eq!(observer.alive().len(), 2);
    assert!(observer.alive().contains(&alice.node_id()));

    // A fresh record of alice's still gets through after all of it.
    a.publish_status(status(60)).unwrap();
    until("alice's next status", Duration::from_secs(10), || {
        observer.status(alice.node_id()).map(|s| s.battery_percent) == Some(60)
    })
    .await;
    outsider.close().await.unwrap();
    a.leave().await.unwrap();
    observer.leave().await.unwrap();
    router.close().await.unwrap();
}

/// A TCP relay that can go silent: it keeps both connections open but stops passing bytes,
/// as a hung process or a cut link behind a live socket would.
async fn silent_relay(to: u16) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicBool::new(true));
    let flag = open.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(("127.0.0.1", to))
                .await
                .unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut r, mut w) in [(ri, wo), (ro, wi)] {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 || !flag.load(Ordering::SeqCst) {
                            // Silent: hold the sockets, pass nothing.
                            std::future::pending::<()>().await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (format!("tcp/127.0.0.1:{port}"), open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_a_silent_link_is_seen_dead_within_the_lease() {
    let (ep, port) = free_endpoint();
    let router = Router::start(std::slice::from_ref(&ep)).await.unwrap();
    let ids: Vec<Identity> = (41..=42).map(identity).collect();
    let observer = client(&ids[0], &ep, &ids).await;
    let (relay, open) = silent_relay(port).await;
    let mut c = config(Mode::Client, &relay, &ids);
    let lease = Duration::from_secs(1);
    c.lease = lease;
    let hung = Fleet::join(ids[1].clone(), c).await.unwrap();
    let hung_id = hung.node_id();
    until("joined", Duration::from_secs(10), || {
        observer.alive().contains(&hung_id)
    })
    .await;
    open.store(false, Ordering::SeqCst);
    let took = until("the silent node seen dead", Duration::from_secs(10), || {
        !observer.alive().contains(&hung_id)
    })
    .await;
    println!("a node behind a silent link (lease {lease:?}) was seen dead in {took:?}");
    // The router holds the lease it was given (3 s) for its side; the node's 1 s lease makes
    // it close its end, which the router sees only by its own lease through the silent relay.
    assert!(
        took <= Duration::from_secs(3) + Duration::from_millis(1500),
        "{took:?}"
    );
    drop(hung);
    observer.leave().await.unwrap();
    router.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_name_or_too_many_members_is_refused_before_zenoh_starts() {
    for name in ["", "a/b", "*", "x".repeat(65).as_str(), "é"] {
        let c = FleetConfig::new(name, Mode::Client);
        assert!(Fleet::join(identity(1), c).await.is_err(), "{name:?}");
    }
    let mut c = FleetConfig::new(FLEET, Mode::Client);
    c.members = (0..1024u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            PublicKey(k)
        })
        .collect();
    assert!(matches!(
        Fleet::join(identity(1), c).await,
        Err(mielin_cells::fleet::FleetStartError::TooManyMembers)
    ));
    let mut c = FleetConfig::new(FLEET, Mode::Client);
    c.lease = Duration::ZERO;
    assert!(matches!(
        Fleet::join(identity(1), c).await,
        Err(mielin_cells::fleet::FleetStartError::BadLease)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_node_is_seen_gone_and_a_removed_member_is_forgotten() {
    let (router, ep, ids) = router_and_ids(51..=53).await;
    let mut nodes = Vec::new();
    for id in &ids {
        nodes.push(client(id, &ep, &ids).await);
    }
    let agent = AgentId::from_bytes([0x51; 16]);
    nodes[1].publish_status(status(70)).unwrap();
    nodes[1]
        .publish_location(Location { agent, epoch: 4 })
        .unwrap();
    let (n1, n2) = (ids[1].node_id(), ids[2].node_id());
    until("n1's records", Duration::from_secs(10), || {
        nodes[0].locate(agent) == Some((n1, 4)) && nodes[0].status(n1).is_some()
    })
    .await;
    let events = drain(&mut nodes[0]);
    assert!(
        events.contains(&FleetEvent::Status(n1, status(70))),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, FleetEvent::Located { .. }))
            .collect::<Vec<_>>(),
        [&FleetEvent::Located {
            agent,
            node: n1,
            epoch: 4
        }]
    );

    // Dropped without leave(): its session closes with it, and the others see it go.
    let dropped = nodes.pop().unwrap();
    drop(dropped);
    until("the dropped node gone", Duration::from_secs(5), || {
        !nodes[0].alive().contains(&n2)
    })
    .await;

    // n1 is no longer trusted by n0: gone from its view, its claims forgotten, its records refused.
    nodes[0].remove_member(n1);
    assert!(!nodes[0].alive().contains(&n1));
    assert_eq!((nodes[0].status(n1), nodes[0].locate(agent)), (None, None));
    let before = nodes[0].stats();
    nodes[1].publish_status(status(71)).unwrap();
    nodes[1]
        .publish_location(Location { agent, epoch: 5 })
        .unwrap();
    until("refused as not a member", Duration::from_secs(10), || {
        nodes[0].stats().not_member == before.not_member + 2
    })
    .await;
    assert_eq!((nodes[0].status(n1), nodes[0].locate(agent)), (None, None));
    // Trusted again: its token (declared long ago) is asked for, it is present again with its
    // newest status, and its next records are taken.
    assert!(nodes[0].add_member(ids[1].public_key()));
    until("n1 present again", Duration::from_secs(10), || {
        nodes[0].alive().contains(&n1) && nodes[0].status(n1).map(|s| s.battery_percent) == Some(71)
    })
    .await;
    nodes[1]
        .publish_location(Location { agent, epoch: 6 })
        .unwrap();
    until("taken again", Duration::from_secs(10), || {
        nodes[0].locate(agent) == Some((n1, 6))
    })
    .await;
    for n in nodes {
        n.leave().await.unwrap();
    }
    router.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_come_back_after_the_router_restarts() {
    let (router, ep, ids) = router_and_ids(61..=62).await;
    let a = client(&ids[0], &ep, &ids).await;
    let mut b = client(&ids[1], &ep, &ids).await;
    b.publish_status(status(44)).unwrap();
    let nb = ids[1].node_id();
    until("b's status", Duration::from_secs(10), || {
        a.status(nb).is_some()
    })
    .await;
    router.close().await.unwrap();
    until("b gone with the router", Duration::from_secs(10), || {
        !a.alive().contains(&nb)
    })
    .await;
    assert_eq!(a.status(nb), None);
    let t = Instant::now();
    let router = Router::start(std::slice::from_ref(&ep)).await.unwrap();
    // b publishes nothing new: a gets b's newest status by asking when b's token is back.
    until("b's status back", Duration::from_secs(20), || {
        a.status(nb).map(|s| s.battery_percent) == Some(44)
    })
    .await;
    println!(
        "after the router restarted, a had b's status again in {:?}",
        t.elapsed()
    );
    a.leave().await.unwrap();
    b.leave().await.unwrap();
    router.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undrained_event_queue_drops_events_and_keeps_the_view() {
    let (router, ep, ids) = router_and_ids(71..=72).await;
    let mut observer = client(&ids[0], &ep, &ids).await;
    let mut talker = client(&ids[1], &ep, &ids).await;
    let nt = ids[1].node_id();
    until("joined", Duration::from_secs(10), || {
        observer.alive().contains(&nt)
    })
    .await;
    let n = mielin_cells::fleet::EVENT_QUEUE + 100;
    for i in 0..n {
        talker.publish_status(status((i % 100) as u8)).unwrap();
    }
    let last = ((n - 1) % 100) as u8;
    until("the last status", Duration::from_secs(30), || {
        observer.status(nt).map(|s| s.battery_percent) == Some(last)
    })
    .await;
    let stats = observer.stats();
    assert!(stats.events_dropped > 0, "{stats:?}");
    assert_eq!(drain(&mut observer).len(), mielin_cells::fleet::EVENT_QUEUE);
    observer.leave().await.unwrap();
    talker.leave().await.unwrap();
    router.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_before_its_router_joins_when_the_router_comes() {
    let (ep, _) = free_endpoint();
    let ids: Vec<Identity> = (81..=82).map(identity).collect();
    let early = tokio::spawn(Fleet::join(ids[0].clone(), config(Mode::Client, &ep, &ids)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !early.is_finished(),
        "joined with no router to join through"
    );
    let router = Router::start(std::slice::from_ref(&ep)).await.unwrap();
    let t = Instant::now();
    let early = tokio::time::timeout(Duration::from_secs(10), early)
        .await
        .expect("the join waited past the router's start")
        .unwrap()
        .unwrap();
    println!(
        "a node waiting for its router joined {:?} after the router started",
        t.elapsed()
    );
    let late = client(&ids[1], &ep, &ids).await;
    until("each sees the other", Duration::from_secs(10), || {
        early.alive().len() == 2 && late.alive().len() == 2
    })
    .await;
    early.leave().await.unwrap();
    late.leave().await.unwrap();
    router.close().await.unwrap();
}
