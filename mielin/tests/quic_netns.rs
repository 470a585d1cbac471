//! Two node processes on a lossy link: an agent goes a → b → a while it exchanges numbered
//! messages, through 10 % loss, 10–30 ms of delay and the reordering that jitter causes.
//!
//! The link is a veth pair between two network namespaces the test creates, impaired with
//! `tc netem` (loss 10 %, delay 20 ms ± 10 ms, reordering 25 %); only the namespaces' own
//! addresses (10.77.0.0/24) are used. Where namespaces cannot be created (not root, no `ip`),
//! or the kernel has no `netem` queueing discipline, the test says so on stderr and runs the
//! same scenario over 127.0.0.1 through a userspace relay in this process that drops 10 % of
//! the datagrams and delays each by 10–30 ms (so they overtake each other).

mod common;

use common::*;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by a veth pair with netem on both ends; deleted on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let id = std::process::id() % 100_000;
        let n = Netns {
            a: format!("mielin-a-{id}"),
            b: format!("mielin-b-{id}"),
        };
        let (va, vb) = (format!("mla{id}"), format!("mlb{id}"));
        ip(&["netns", "add", &n.a])?;
        ip(&["netns", "add", &n.b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &n.a])?;
        ip(&["link", "set", &vb, "netns", &n.b])?;
        for (ns, dev, addr) in [(&n.a, &va, "10.77.0.1/24"), (&n.b, &vb, "10.77.0.2/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let out = Command::new("ip")
                .args([
                    "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                ])
                .args([
                    "netem", "loss", "10%", "delay", "20ms", "10ms", "reorder", "25%", "50%",
                ])
                .output()
                .map_err(|e| format!("tc: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "tc qdisc add ... netem: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(n)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// A lossy UDP relay between two fixed endpoints: `to_b` is b as a sees it, `to_a` is a as b
/// sees it. Each datagram is dropped with probability 1/10, else sent after 10–30 ms.
struct Relay {
    to_b: SocketAddr,
    to_a: SocketAddr,
    stop: Arc<AtomicBool>,
    dropped: Arc<Mutex<(u64, u64)>>,
}

type Queue = Arc<(
    Mutex<BinaryHeap<std::cmp::Reverse<(Instant, u64, usize, Vec<u8>)>>>,
    Condvar,
)>;

impl Relay {
    fn start(a: SocketAddr, b: SocketAddr) -> Relay {
        let s_b = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap()); // a sends here for b
        let s_a = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap()); // b sends here for a
        for s in [&s_a, &s_b] {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(Mutex::new((0u64, 0u64)));
        let queue: Queue = Arc::new((Mutex::new(BinaryHeap::new()), Condvar::new()));
        // Receivers: from a (on s_b) towards b, sent from s_a; from b (on s_a) towards a, from s_b.
        for (i, (rx, seed)) in [
            (s_b.clone(), 0x9e37_79b9_7f4a_7c15u64),
            (s_a.clone(), 0x2545_f491_4f6c_dd1d),
        ]
        .into_iter()
        .enumerate()
        {
            let (stop, queue, dropped) = (stop.clone(), queue.clone(), dropped.clone());
            std::thread::spawn(move || {
                let mut x = seed;
                let mut seq = 0u64;
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = rx.recv_from(&mut buf) else {
                        continue;
                    };
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let mut d = dropped.lock().unwrap();
                    d.1 += 1;
                    if x % 10 == 0 {
                        d.0 += 1;
                        continue;
                    }
                    drop(d);
                    let delay = Duration::from_millis(10 + (x >> 8) % 21);
                    seq += 1;
                    let (m, cv) = &*queue;
                    m.lock().unwrap().push(std::cmp::Reverse((
                        Instant::now() + delay,
                        seq * 2 + i as u64,
                        i,
                        buf[..n].to_vec(),
                    )));
                    cv.notify_one();
                }
            });
        }
        {
            let (stop, queue) = (stop.clone(), queue.clone());
            let (s_a, s_b) = (s_a.clone(), s_b.clone());
            std::thread::spawn(move || {
                let (m, cv) = &*queue;
                let mut q = m.lock().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    match q.peek() {
                        Some(std::cmp::Reverse((at, ..))) if *at <= now => {
                            let std::cmp::Reverse((_, _, dir, bytes)) = q.pop().unwrap();
                            if dir == 0 {
                                let _ = s_a.send_to(&bytes, b);
                            } else {
                                let _ = s_b.send_to(&bytes, a);
                            }
                        }
                        Some(std::cmp::Reverse((at, ..))) => {
                            let wait = *at - now;
                            q = cv.wait_timeout(q, wait).unwrap().0;
                        }
                        None => q = cv.wait_timeout(q, Duration::from_millis(50)).unwrap().0,
                    }
                }
            });
        }
        Relay {
            to_b: s_b.local_addr().unwrap(),
            to_a: s_a.local_addr().unwrap(),
            stop,
            dropped,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn handoffs_and_messages_over_a_lossy_link() {
    let dir = scratch("lossy");
    let limit = 40;
    let w = agent_file();
    let args = |agent: &str| -> Vec<String> {
        vec![
            "--limit".into(),
            limit.to_string(),
            "--agent".into(),
            format!("{agent}={w}"),
        ]
    };
    let netns = match Netns::create() {
        Ok(n) => Some(n),
        Err(why) => {
            eprintln!(
                "NOTE quic_netns: network namespaces with tc netem unavailable ({why}); \
                 running over 127.0.0.1 through a userspace relay with 10% loss and 10-30 ms \
                 delay instead"
            );
            None
        }
    };
    let (mut a, mut b, _relay) = match &netns {
        Some(n) => {
            let a = Proc::start("a", &dir, "10.77.0.1:0", &args("pong"), &[], Some(&n.a));
            let b = Proc::start("b", &dir, "10.77.0.2:0", &args("ping"), &[], Some(&n.b));
            let (sa, sb) = (a.peer_spec(), b.peer_spec());
            (a, b, None).pipe(|(mut a, mut b, r)| {
                pin(&mut a, &sb);
                pin(&mut b, &sa);
                (a, b, r)
            })
        }
        None => {
            let a = Proc::start("a", &dir, "127.0.0.1:0", &args("pong"), &[], None);
            let b = Proc::start("b", &dir, "127.0.0.1:0", &args("ping"), &[], None);
            let relay = Relay::start(a.addr.parse().unwrap(), b.addr.parse().unwrap());
            let (mut a, mut b) = (a, b);
            pin(&mut a, &format!("b={}@{}", b.key, relay.to_b));
            pin(&mut b, &format!("a={}@{}", a.key, relay.to_a));
            (a, b, Some(relay))
        }
    };
    a.send("at ping b");
    b.send("at pong a");
    b.send("kick ping pong");
    let start = Instant::now();
    while !b.stats().iter().any(|x| x.0 == "ping" && x.1 >= 3) {
        assert!(start.elapsed() < T, "no messages: {}\n{}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    a.send("migrate pong b");
    let committed = |from: &str| {
        let f = format!(" source to {from} committed ");
        move |l: &str| l.starts_with("handoff pong ") && l.contains(&f)
    };
    let l1 = a.wait_line(0, committed("b"), T);
    b.send("migrate pong a");
    let l2 = b.wait_line(0, committed("a"), T);
    let all = wait_exchange(&mut [&mut a, &mut b], limit, T);
    check_exchange(&all, limit);
    if let Some(r) = &_relay {
        let (d, n) = *r.dropped.lock().unwrap();
        eprintln!("relay: {d} of {n} datagrams dropped");
        assert!(d > 0, "the relay dropped nothing");
    }
    eprintln!("{l1}\n{l2}");
    a.quit();
    b.quit();
}

fn pin(p: &mut Proc, spec: &str) {
    let from = p.len();
    p.send(&format!("peer {spec}"));
    p.wait_line(from, |l| l.starts_with("pinned "), T);
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}
