//! The `mielin` command as an operator meets it, with faults: one test per complaint of
//! issue 26 that a process can show (`--kick` repeated on restart, SIGTERM, log lines without
//! time or level, no metrics, the control socket, `inspect` on a data directory, config
//! errors), plus deploy, send and migrate through the control socket.

mod common;

use common::*;
use mielin_cells::mesh::{Journal, LogJournal, Phase, LOG_JOURNAL_RECORD};
use mielin_cells::quic::{NodeJournal, JOURNAL_CAPACITY};
use mielin_cells::storage::FileLog;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn mielin(args: &[&str]) -> Output {
    Command::new(node_bin())
        .args(args)
        .output()
        .expect("run mielin")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn data(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.d")).to_str().unwrap().to_string()
}

fn agent_of(name: &str) -> mielin_cells::AgentId {
    let d = mielin_cells::sha256(name.as_bytes());
    mielin_cells::AgentId::from_bytes(d[..16].try_into().unwrap())
}

/// Issue 26: "`--kick` re-runs on every restart". The node that kicked is killed mid-exchange
/// and restarted with the same arguments: it says the kick was done, and the exchange ends with
/// every number received once (a second kick would send 0 again: a repeated number and one
/// message too many).
#[test]
fn kick_is_not_repeated_after_a_restart() {
    let dir = scratch("kick");
    let limit = 40;
    let w = agent_file();
    let mut a = Proc::start(
        "a",
        &dir,
        "127.0.0.1:0",
        &[
            "--limit".into(),
            limit.to_string(),
            "--agent".into(),
            format!("pong={w}"),
        ],
        &[],
        None,
    );
    let b_args = |a: &Proc| -> Vec<String> {
        vec![
            "--limit".into(),
            limit.to_string(),
            "--agent".into(),
            format!("ping={w}"),
            "--peer".into(),
            a.peer_spec(),
            "--at".into(),
            "pong=a".into(),
            "--kick".into(),
            "ping:pong".into(),
            // Slow enough that the exchange is still going when b is killed.
            "--tick-ms".into(),
            "50".into(),
        ]
    };
    let mut b = Proc::start("b", &dir, "127.0.0.1:0", &b_args(&a), &[], None);
    let from = a.len();
    a.send(&format!("peer {}", b.peer_words()));
    a.wait_line(from, |l| l.starts_with("pinned b"), T);
    a.send("at ping b");
    b.wait_line(0, |l| l.starts_with("kick ping:pong: ping sent 0"), T);
    let start = Instant::now();
    while !b.stats().iter().any(|x| x.0 == "ping" && x.1 >= 2) {
        assert!(start.elapsed() < T, "no messages: {}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill9();
    let addr = b.addr.clone();
    let mut b = Proc::start("b", &dir, &addr, &b_args(&a), &[], None);
    let all = wait_exchange(&mut [&mut a, &mut b], limit, T);
    check_exchange(&all, limit);
    assert!(
        b.has_line(0, |l| l
            .starts_with("kick ping:pong: already sent by an earlier start")),
        "{}",
        b.log()
    );
    a.quit();
    b.quit();
}

/// Issue 26: "SIGTERM does not shut down cleanly". An idle node stops at once with status 0,
/// removes its socket and keeps its journal; a node whose hand-off is in flight (the target is
/// frozen after the offer) waits its grace period, stops with status 0, says what is left, and
/// the next start aborts that hand-off from the journal: the agent runs there again.
#[test]
fn sigterm_stops_cleanly_with_the_journal_intact() {
    let dir = scratch("sigterm");
    let w = agent_file();
    let mut a = Proc::start(
        "a",
        &dir,
        "127.0.0.1:0",
        &[
            "--agent".into(),
            format!("pong={w}"),
            "--grace".into(),
            "1".into(),
            // The source gives up after 8 attempts: 8 s, well after the grace.
            "--rto-ms".into(),
            "1000".into(),
        ],
        &[],
        None,
    );
    let mut b = Proc::start(
        "b",
        &dir,
        "127.0.0.1:0",
        &[],
        &[("MIELIN_HALT_AT", "target:offered")],
        None,
    );
    pin_all(&mut [&mut a, &mut b]);
    a.send("migrate pong b");
    b.wait_line(0, |l| l == "halt target:offered", T);
    let started = Instant::now();
    a.sigterm();
    let status = a
        .wait_exit(Duration::from_secs(10))
        .expect("a exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", a.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a grace of 1 s took {:?}",
        started.elapsed()
    );
    a.wait_line(
        0,
        |l| l.starts_with("stopping (SIGTERM): 1 hand-off in flight"),
        T,
    );
    a.wait_line(0, |l| l.starts_with("1 hand-off(s) still in flight"), T);
    a.wait_line(0, |l| l.ends_with("stopped cleanly"), T);
    let ad = dir.join("a.d");
    assert!(!ad.join("control.sock").exists(), "the socket is removed");
    let j = open_journal(&dir, "a").expect("the journal opens");
    let r = j.get(agent_of("pong")).expect("pong is in a's journal");
    assert_eq!(r.epoch, 1);
    assert!(matches!(r.phase, Phase::Outgoing { .. }), "{r:?}");
    b.kill9();
    // The next start aborts the undecided hand-off: pong runs on a again.
    let mut a = Proc::start("a", &dir, "127.0.0.1:0", &[], &[], None);
    assert!(
        a.stats().iter().any(|s| s.0 == "pong"),
        "pong runs on a again:\n{}",
        a.log()
    );
    // An idle node stops at once, on Ctrl-C (SIGINT) too.
    a.signal("INT");
    let status = a.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
    a.wait_line(
        0,
        |l| l.starts_with("stopping (Ctrl-C): 0 hand-offs in flight"),
        T,
    );
    let j = open_journal(&dir, "a").unwrap();
    let r = j.get(agent_of("pong")).unwrap();
    assert_eq!((r.epoch, r.phase), (1, Phase::Running));
}

/// Node `name`'s journal, opened with its key (the journal is sealed to its node).
fn open_journal(dir: &Path, name: &str) -> std::io::Result<NodeJournal> {
    let id = mielin_cells::quic::Identity::load(&dir.join(format!("{name}.key")))?;
    let key = mielin_cells::LocalKey::derive(id.secret(), id.node_id());
    let path = dir.join(format!("{name}.d")).join("journal");
    FileLog::open(
        &path,
        id.node_id(),
        &key,
        LOG_JOURNAL_RECORD,
        &mut |_, _| {},
    )
    .and_then(|log| LogJournal::open(log, JOURNAL_CAPACITY))
    .map_err(|e| e.at(&path))
}

/// Issue 26: "log lines have no timestamps or levels" and RUST_LOG.
#[test]
fn log_lines_have_a_timestamp_and_a_level() {
    let dir = scratch("logs");
    let a = Proc::start(
        "a",
        &dir,
        "127.0.0.1:0",
        &[],
        &[("RUST_LOG", "debug")],
        None,
    );
    let raw = a.raw_log();
    let l = raw
        .iter()
        .find(|l| l.contains(" listening "))
        .expect("a listening line");
    // 2026-12-06T02:54:37.685191Z  INFO listening 127.0.0.1:4101 name a ...
    let (ts, rest) = l.split_once(' ').unwrap();
    assert_eq!(ts.len(), 27, "RFC 3339 with microseconds: {l}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{l}");
    assert!(ts[..4].parse::<u32>().unwrap() >= 2024, "{l}");
    assert!(rest.trim_start().starts_with("INFO listening "), "{l}");
    a.quit();
    // A RUST_LOG that does not parse is said, and info is kept.
    let b = Proc::start("b", &dir, "127.0.0.1:0", &[], &[("RUST_LOG", "=[")], None);
    b.wait_line(0, |l| l.starts_with("RUST_LOG=\"=[\" not understood"), T);
    assert!(b.raw_log().iter().any(|l| l.contains(" WARN RUST_LOG=")));
    b.quit();
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Issue 26: "there are no metrics"; and the control socket: mode 0600 in a 0700 directory
/// (tightened from 0755, with a warning), an oversized request refused from its length prefix
/// and counted, a malformed one refused, the node still answering after both.
#[test]
fn metrics_answer_and_the_control_socket_is_private_and_bounded() {
    let dir = scratch("control");
    let ad = dir.join("a.d");
    std::fs::create_dir_all(&ad).unwrap();
    std::fs::set_permissions(&ad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let w = agent_file();
    let a = Proc::start(
        "a",
        &dir,
        "127.0.0.1:0",
        &[
            "--agent".into(),
            format!("pong={w}"),
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ],
        &[],
        None,
    );
    a.wait_line(0, |l| l.contains("had mode 755; now 0700"), T);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ad), 0o700);
    let sock = ad.join("control.sock");
    a.wait_line(0, |l| l.starts_with("control socket "), T);
    assert_eq!(mode(&sock), 0o600, "the control socket is the owner's only");

    let addr = a.metrics_addr();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "localhost by default: {addr}"
    );
    let start = Instant::now();
    loop {
        let body = http_get(&addr, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("content-type: text/plain; version=0.0.4"));
        for family in [
            "# TYPE mielin_handoffs_total counter",
            "mielin_handoffs_total{role=\"source\",outcome=\"committed\"} 0",
            "# TYPE mielin_handoff_duration_seconds histogram",
            "mielin_handoff_duration_seconds_bucket{role=\"source\",le=\"+Inf\"} 0",
            "mielin_refusals_total{reason=\"unpinned\"} 0",
            "# TYPE mielin_journal_syncs_total counter",
            "mielin_operator_messages_total 0",
            "# TYPE mielin_messages_undelivered_total counter",
            "mielin_rollback_refused_total 0",
            "mielin_rollback_unchecked_total 0",
            "mielin_journal_rollbacks_total 0",
        ] {
            assert!(body.contains(family), "{family} in\n{body}");
        }
        if body.contains("mielin_agents_running 1") {
            break;
        }
        assert!(start.elapsed() < T, "{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http_get(&addr, "/other").starts_with("HTTP/1.1 404"));

    // A length prefix over the bound: refused before any body is read.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let too_long = (mielin::control::MAX_REQUEST as u32 + 1).to_le_bytes();
    s.write_all(&too_long).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let r = mielin::control::Reply::decode(&reply[4..]).unwrap();
    match r {
        mielin::control::Reply::Err(e) => {
            assert!(e.contains("over the limit of"), "{e}")
        }
        r => panic!("{r:?}"),
    }
    // A body that is not a request.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[3, 0, 0, 0, 1, 99, 0]).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    match mielin::control::Reply::decode(&reply[4..]).unwrap() {
        mielin::control::Reply::Err(e) => assert!(e.contains("unknown kind 99"), "{e}"),
        r => panic!("{r:?}"),
    }
    // Still answering; the refusals are counted.
    let o = mielin(&["status", "-d", ad.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("pong"), "{}", text(&o));
    let body = http_get(&addr, "/metrics");
    assert!(body.contains("mielin_refusals_total{reason=\"control_oversized\"} 1"));
    assert!(body.contains("mielin_refusals_total{reason=\"control_malformed\"} 1"));
    a.quit();
}

/// deploy, migrate, send, agents and status through the control socket, and what they say
/// when they cannot.
#[test]
fn deploy_migrate_send_and_status() {
    let dir = scratch("commands");
    let (ad, bd) = (data(&dir, "a"), data(&dir, "b"));
    let mut a = Proc::start("a", &dir, "127.0.0.1:0", &[], &[], None);
    let mut b = Proc::start("b", &dir, "127.0.0.1:0", &[], &[], None);
    pin_all(&mut [&mut a, &mut b]);
    let w = agent_file();
    let o = mielin(&["deploy", &w, "--name", "pong", "-d", &ad]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).starts_with("deployed pong (id "), "{}", text(&o));
    let o = mielin(&["deploy", &w, "--name", "pong", "-d", &ad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("already known here (running here)"),
        "{}",
        text(&o)
    );

    let o = mielin(&["migrate", "pong", "--to", "nowhere", "-d", &ad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no peer named nowhere (pinned peers: b)"),
        "{}",
        text(&o)
    );
    let o = mielin(&["migrate", "pong", "--to", "b", "-d", &ad]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.starts_with("handoff pong epoch 1 source to b committed bytes "),
        "{t}"
    );
    for part in [
        " total ",
        " rate ",
        " memory full ",
        " dna carried ",
        "done@",
    ] {
        assert!(t.contains(part), "{part} in {t}");
    }

    let o = mielin(&["send", "pong", "41", "-d", &ad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("does not run on a (moved to b)"),
        "{}",
        text(&o)
    );
    for n in [41, 99] {
        let o = mielin(&["send", "pong", &n.to_string(), "-d", &bd]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(text(&o).trim(), format!("pong on b accepted {n}"));
        // One at a time: the agent answers each before the next.
        let start = Instant::now();
        while !text(&mielin(&["agents", "-d", &bd])).contains(&format!("(last {})", n + 1)) {
            assert!(start.elapsed() < T, "{}", b.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let t = text(&mielin(&["agents", "-d", &bd]));
    assert!(
        t.contains("epoch 1  running here  received 2 last 99"),
        "{t}"
    );
    assert!(t.contains("replies 2 (last 100)"), "{t}");
    let t = text(&mielin(&["status", "-d", &ad]));
    assert!(t.starts_with("node a  id "), "{t}");
    assert!(t.contains("epoch 1  moved to b"), "{t}");
    assert!(t.contains("connected"), "{t}");
    b.wait_line(0, |l| l == "reply pong -> operator: 100", T);
    // The metrics count what happened: one hand-off each side, two operator messages and
    // their replies on b.
    let ma = http_get(&a.metrics_addr(), "/metrics");
    let mb = http_get(&b.metrics_addr(), "/metrics");
    for (body, line) in [
        (
            &ma,
            "mielin_handoffs_total{role=\"source\",outcome=\"committed\"} 1",
        ),
        (
            &ma,
            "mielin_handoff_duration_seconds_count{role=\"source\"} 1",
        ),
        (&ma, "mielin_handoff_transfer_seconds_count 1"),
        (
            &mb,
            "mielin_handoffs_total{role=\"target\",outcome=\"committed\"} 1",
        ),
        (&mb, "mielin_operator_messages_total 2"),
        (&mb, "mielin_operator_replies_total 2"),
        (&mb, "mielin_agents_running 1"),
        (&mb, "mielin_peers_connected 1"),
    ] {
        assert!(body.contains(line), "{line} in\n{body}");
    }
    assert!(
        !ma.contains("mielin_handoff_bytes_total{role=\"source\"} 0\n"),
        "{ma}"
    );

    let o = mielin(&[
        "status",
        "-d",
        dir.join("nothing").to_str().unwrap(),
        "--wait",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no node is running on"), "{}", text(&o));
    a.quit();
    b.quit();
}

/// Issue 26: "`inspect` cannot read the node's own data files". A stopped node's directory,
/// its journal, a saved agent; then a journal over the bound, a truncated agent, a bound
/// below a file's size, and a file that is nothing mielin knows: a clear failure, never a
/// panic.
#[test]
fn inspect_reads_a_data_dir_within_bounds() {
    let dir = scratch("inspect");
    let w = agent_file();
    let a = Proc::start(
        "a",
        &dir,
        "127.0.0.1:0",
        &["--agent".into(), format!("pong={w}")],
        &[],
        None,
    );
    let ad = dir.join("a.d");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    // One message, answered: its tick is an event in the agent's log.
    let o = self::mielin(&["send", "pong", "41", "-d", &p(&ad)]);
    assert!(o.status.success(), "{}", text(&o));
    let start = Instant::now();
    while !text(&self::mielin(&["agents", "-d", &p(&ad)])).contains("(last 42)") {
        assert!(start.elapsed() < T, "{}", a.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    a.quit();
    let key = p(&dir.join("a.key"));
    let mielin = |args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--key", key.as_str()]);
        mielin(&v)
    };
    // Without the node's key its sealed files are not read, and inspect says so.
    let o = self::mielin(&["inspect", &p(&ad)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("sealed to its node: give the node's key file"));
    let o = mielin(&["inspect", &p(&ad)]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let id = mielin_cells::quic::to_hex(agent_of("pong").as_bytes());
    assert!(
        t.contains(&format!("pong         {id}  epoch 0  running here")),
        "{t}"
    );
    assert!(
        t.contains("control.sock    absent: no node is running here"),
        "{t}"
    );
    assert!(t.contains(&format!("{id}.run: ")), "{t}");
    assert!(t.contains("memory 65536 bytes"), "{t}");
    assert!(
        t.contains(".log: events after the saved copy with digest ") && t.contains(" calls, "),
        "{t}"
    );
    assert!(t.contains("dna/ (modules: 1)"), "{t}");
    let o = mielin(&["inspect", &p(&ad.join("journal"))]);
    assert!(
        o.status.success() && text(&o).contains("1 records"),
        "{}",
        text(&o)
    );

    let run = ad.join("agents").join(format!("{id}.run"));
    let o = mielin(&["inspect", &p(&run), "--max-bytes", "100"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("over the 100-byte limit"), "{}", text(&o));
    let bytes = std::fs::read(&run).unwrap();
    std::fs::write(&run, &bytes[..bytes.len() / 2]).unwrap();
    let o = mielin(&["inspect", &p(&ad)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not a file this node sealed, or damaged"),
        "{}",
        text(&o)
    );
    std::fs::write(ad.join("journal"), vec![0u8; 2 << 20]).unwrap();
    let o = mielin(&["inspect", &p(&ad)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("over the 1048576-byte limit for a journal"),
        "{}",
        text(&o)
    );
    // A journal of the format before sealing, and one that is not a journal at all.
    std::fs::write(ad.join("journal"), b"MZJ1\xff\xff\xff\xff").unwrap();
    let o = mielin(&["inspect", &p(&ad.join("journal"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("FAILED: unsupported version 1"),
        "{}",
        text(&o)
    );
    std::fs::write(ad.join("journal"), b"junk and more junk").unwrap();
    let o = mielin(&["inspect", &p(&ad.join("journal"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("journal         18 bytes: FAILED"),
        "{}",
        text(&o)
    );
    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"hello").unwrap();
    let o = mielin(&["inspect", &p(&junk)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("nothing mielin reads"), "{}", text(&o));
    for snapshot in ["v1-basic.bin", "v1-cross.bin"] {
        let v = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/vectors")
            .join(snapshot);
        if v.exists() {
            let o = mielin(&["inspect", &p(&v)]);
            assert!(text(&o).contains("snapshot "), "{}", text(&o));
        }
    }
}

/// A config file instead of flags, and config mistakes that say where and what to do.
#[test]
fn config_file_and_its_errors() {
    let dir = scratch("config");
    let o = mielin(&["keygen", dir.join("b.key").to_str().unwrap()]);
    assert!(o.status.success());
    let bkey = text(&o).split_whitespace().nth(1).unwrap().to_string();
    let cfg = dir.join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"alpha\"\nkey = \"a.key\"\ndata = \"a.d\"\nlisten = \"127.0.0.1:0\"\nmetrics = \"off\"\n\n[[peer]]\nname = \"b\"\nkey = \"{bkey}\"\naddr = \"127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(node_bin())
        .args(["node", "--config", cfg.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Paths in the file are relative to it.
    let ad = dir.join("a.d");
    let o = mielin(&["status", "-d", ad.to_str().unwrap(), "--wait", "20"]);
    let _ = child.kill();
    let _ = child.wait();
    let t = text(&o);
    assert!(t.starts_with("node alpha "), "{t}");
    assert!(t.contains("metrics off"), "{t}");
    assert!(t.contains("b            127.0.0.1:9  not connected"), "{t}");
    assert!(dir.join("a.key").exists());

    std::fs::write(
        &cfg,
        "name = \"a\"\nkey = \"a.key\"\ndata = \"a.d\"\nlisten_on = 4\n",
    )
    .unwrap();
    let o = mielin(&["node", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("a.toml") && t.contains("unknown field `listen_on`"),
        "{t}"
    );
    assert!(t.contains("docs/cli.md"), "{t}");
    let o = mielin(&["node", "--data", dir.join("x.d").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("`mielin keygen FILE` creates one"),
        "{}",
        text(&o)
    );
    let o = mielin(&[
        "node",
        "--key",
        dir.join("b.key").to_str().unwrap(),
        "--data",
        dir.join("x.d").to_str().unwrap(),
        "--peer",
        "b 1234@127.0.0.1:1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("the key must be 64 hex digits"),
        "{}",
        text(&o)
    );
    // A window the driver's queue has no room for, or none at all.
    for w in ["0", "65"] {
        let o = mielin(&[
            "node",
            "--key",
            dir.join("b.key").to_str().unwrap(),
            "--data",
            dir.join("x.d").to_str().unwrap(),
            "--window",
            w,
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("--window {w}: between 1 and 64")),
            "{}",
            text(&o)
        );
    }
    // Fleet settings that cannot work: each refused at start, with the reason.
    for (args, says) in [
        (
            &["--zenoh-router"][..],
            "give the endpoint it listens on with --zenoh-listen",
        ),
        (
            &["--zenoh-router", "--zenoh-listen", "tcp/127.0.0.1:0"][..],
            "--zenoh-listen needs a fixed port",
        ),
        (
            &["--zenoh", "nonsense"][..],
            "Endpoints must be of the form",
        ),
        (
            &["--zenoh", "tcp/127.0.0.1:9", "--zenoh-fleet", "a/b"][..],
            "a fleet name is 1 to 64 of [A-Za-z0-9_-]",
        ),
    ] {
        let (key, data) = (dir.join("b.key"), dir.join("x.d"));
        let mut v = vec![
            "node",
            "--key",
            key.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        v.extend_from_slice(args);
        let o = mielin(&v);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
}

/// A loop that calls the yield point `env.yield_now`, with a memory for Asyncify's buffer.
const YIELD_LOOP: &str = r#"(module
  (import "env" "yield_now" (func $yield))
  (memory 1)
  (func (export "run") (param $n i32) (result i32)
    (local $i i32)
    (loop $l
      (call $yield)
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i)))"#;

/// `mielin transform` writes DNA that carries the transform's record: the original's SHA-256
/// and the unwinding imports found (an `--unwind` the module lacks is not among them), and
/// `mielin inspect` shows it. Needs `wasm-opt` (Binaryen), as `tests/transform.rs` does.
#[test]
fn transform_writes_dna_that_carries_its_record() {
    use mielin_cells::quic::to_hex;
    use mielin_cells::runtime::transform::{
        transform, TransformError, TransformOptions, TransformRecord, UnwindingImport,
    };
    let dir = scratch("transform");
    let wat = dir.join("yield.wat");
    std::fs::write(&wat, YIELD_LOOP).unwrap();
    let original = wat::parse_str(YIELD_LOOP).unwrap();
    let out = dir.join("yield.async.wasm");
    let out_s = out.to_str().unwrap();
    let o = mielin(&[
        "transform",
        wat.to_str().unwrap(),
        "-o",
        out_s,
        "--unwind",
        "env.yield_now",
        "--unwind",
        "mesh.recv_wait",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let dna = std::fs::read(&out).unwrap();
    let hash = to_hex(&mielin_cells::sha256(&dna));
    assert_eq!(
        t,
        format!(
            "transformed {out_s}: {} -> {} bytes ({:.2}x), dna sha256 {}, unwinding env.yield_now\n",
            original.len(),
            dna.len(),
            dna.len() as f64 / original.len() as f64,
            &hash[..16]
        )
    );
    assert_eq!(
        mielin_cells::Dna::new(&dna[..]).unwrap().hash(),
        &mielin_cells::sha256(&dna)
    );
    let record = TransformRecord::find(&dna).expect("the output carries a record");
    assert_eq!(record.original, mielin_cells::sha256(&original));
    assert_eq!(record.transform, "asyncify");
    assert_eq!(record.imports, [UnwindingImport::new("env", "yield_now")]);
    // The library validates a module with the runtime's engine before anything else: the output
    // is valid, and refused only as transformed already.
    assert_eq!(
        transform(&dna, &TransformOptions::new(&[("env", "yield_now")])),
        Err(TransformError::AlreadyTransformed)
    );
    let o = mielin(&["inspect", out_s]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "\n  transform asyncify ({}) of sha256 {}, unwinding env.yield_now\n",
            record.tool,
            &to_hex(&record.original)[..16]
        )),
        "{t}"
    );
    // Without --no-optimize the output is smaller than with it.
    let plain = dir.join("yield.plain.wasm");
    let o = mielin(&[
        "transform",
        wat.to_str().unwrap(),
        "-o",
        plain.to_str().unwrap(),
        "--unwind",
        "env.yield_now",
        "--no-optimize",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(&plain).unwrap().len() > dna.len());
}

/// What `mielin transform` refuses, each with one line that names the cause and exit code 1
/// (none of these runs wasm-opt): a wasm-opt that is not there, a module without the unwinding
/// import, a module without memory, a file that is not WebAssembly (text or binary); a bad
/// `--unwind` is bad usage (2). Nothing is written.
#[test]
fn transform_refusals_are_one_line_errors() {
    let dir = scratch("transform-refusals");
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = file("yield.wat", YIELD_LOOP.as_bytes());
    let no_memory = file(
        "no-memory.wat",
        br#"(module (import "env" "yield_now" (func $y)) (func (export "run") (call $y)))"#,
    );
    let out = dir.join("out.wasm");
    let out_s = out.to_str().unwrap();
    for (args, cause) in [
        (
            vec![good.as_str(), "--unwind", "env.yield_now", "--wasm-opt", "/nonexistent"],
            "wasm-opt not found (/nonexistent): install Binaryen",
        ),
        (
            vec![good.as_str(), "--unwind", "env.other"],
            "imports none of env.other",
        ),
        (
            vec![no_memory.as_str(), "--unwind", "env.yield_now"],
            "defines no memory",
        ),
        (
            vec![&file("hello.txt", b"hello, not wasm\n"), "--unwind", "env.yield_now"],
            "hello.txt: neither a WebAssembly binary nor valid text: expected `(` at line 1, column 1",
        ),
        (
            vec![&file("junk.wasm", b"\0asm\x01\0\0\0junk"), "--unwind", "env.yield_now"],
            "junk.wasm: not valid WebAssembly",
        ),
    ] {
        let mut v = vec!["transform", "-o", out_s];
        v.extend(args);
        let o = mielin(&v);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{v:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{v:?}: {}", text(&o));
        assert_eq!(err.lines().count(), 1, "{v:?}: one line: {err}");
        assert!(err.starts_with("error: ") && err.contains(cause), "{v:?}: {err}");
        assert!(!out.exists(), "{v:?} wrote {out_s}");
    }
    for unwind in ["yield_now", ".yield_now"] {
        let o = mielin(&["transform", &good, "-o", out_s, "--unwind", unwind]);
        assert_eq!(o.status.code(), Some(2), "{unwind}: {}", text(&o));
        assert!(text(&o).contains("MODULE.NAME"), "{unwind}: {}", text(&o));
    }
    let o = mielin(&["transform", &good, "-o", out_s]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--unwind <MODULE.NAME>"), "{}", text(&o));
}

/// `mielin transform --yield-points`: a loop without any import gets yield points calling
/// `env.yield`, which the record lists as its unwinding import; `--yield-every 0` is bad usage.
#[test]
fn transform_inserts_yield_points() {
    use mielin_cells::runtime::transform::{TransformRecord, UnwindingImport};
    let dir = scratch("transform-yield");
    let wat = dir.join("loop.wat");
    std::fs::write(
        &wat,
        r#"(module (memory 1)
             (func (export "run") (param i32) (result i32)
               (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
                        (br_if $l (local.get 0)))
               (local.get 0)))"#,
    )
    .unwrap();
    let out = dir.join("loop.async.wasm");
    let (wat_s, out_s) = (wat.to_str().unwrap(), out.to_str().unwrap());
    let o = mielin(&[
        "transform",
        wat_s,
        "-o",
        out_s,
        "--yield-points",
        "env.yield",
        "--yield-every",
        "100",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.ends_with("unwinding env.yield\n"), "{t}");
    let every_loop = std::fs::read(&out).unwrap();
    let record = TransformRecord::find(&every_loop).unwrap();
    assert_eq!(record.imports, [UnwindingImport::new("env", "yield")]);
    std::fs::remove_file(&out).unwrap();
    // With --yield-outermost the one loop (outermost) still gets its point: the same module.
    let o = mielin(&[
        "transform",
        wat_s,
        "-o",
        out_s,
        "--yield-points",
        "env.yield",
        "--yield-every",
        "100",
        "--yield-outermost",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&out).unwrap(), every_loop);
    std::fs::remove_file(&out).unwrap();
    let o = mielin(&[
        "transform",
        wat_s,
        "-o",
        out_s,
        "--yield-points",
        "env.yield",
        "--yield-every",
        "0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--yield-every must be at least 1"), "{err}");
    assert!(!out.exists());
}

/// Found by review: `mielin inspect` opened a journal read-write, so on a running node it cut
/// the batch the node was committing (whose sync then returned `Ok`), and the node's next start
/// was refused. It reads the journal read-only now.
#[test]
fn inspect_leaves_a_running_nodes_journal_alone() {
    use mielin_cells::quic::{to_hex, Identity};
    use mielin_cells::storage::Log;
    let dir = scratch("inspect-live");
    let seed = [9u8; 32];
    let id = Identity::from_seed(seed);
    std::fs::write(dir.join("n.key"), to_hex(&seed)).unwrap();
    let key = mielin_cells::LocalKey::derive(id.secret(), id.node_id());
    let path = dir.join("journal");
    let mut log = FileLog::create(&path, id.node_id(), &key, LOG_JOURNAL_RECORD).unwrap();
    let mut generation = [0u8; 9]; // the journal's record of a generation: kind 4, u64 LE
    generation[0] = 4;
    generation[1] = 1;
    log.append(&generation).unwrap();
    log.sync().unwrap();
    // The node's next change, written but not yet committed (inside its sync).
    generation[1] = 2;
    log.append(&generation).unwrap();
    log.replay(&mut |_, _| {}).unwrap(); // writes the waiting record to the file
    let before = std::fs::read(&path).unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let o = mielin(&["inspect", &p(&path), "--key", &p(&dir.join("n.key"))]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("journal "), "{}", text(&o));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "inspect wrote to the journal"
    );
    assert_eq!(log.sync().unwrap().0, 2);
    drop(log);
    let mut n = 0;
    FileLog::open(
        &path,
        id.node_id(),
        &key,
        LOG_JOURNAL_RECORD,
        &mut |_, _| n += 1,
    )
    .unwrap();
    assert_eq!(n, 2, "the node's commit survived");
}

/// The Rust guest of `examples/guest-midcall` through `mielin transform` (unwinding at the
/// node's `mesh.recv_wait` and `mesh.yield`), written in `dir`; its path.
fn transformed_guest(dir: &Path) -> String {
    let guest = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/midcall-guest.wasm");
    let dna = dir.join("guest.async.wasm").to_str().unwrap().to_string();
    let o = mielin(&[
        "transform",
        guest,
        "-o",
        &dna,
        "--unwind",
        "mesh.recv_wait",
        "--unwind",
        "mesh.yield",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    dna
}

/// Issue 25: an agent moves in the middle of a call between two node processes. The Rust guest
/// of `examples/guest-midcall`, transformed by `mielin transform`, runs its `tick` as
/// `loop { recv_wait(); handle(); reply(digest) }`: `guest` waits in that call on a, moves to
/// b while waiting (its saved copy there says so), is killed with b and restarted, and answers
/// every message as `still`, the same module deployed on a and never moved, answers it.
#[test]
fn a_transformed_agent_moves_in_the_middle_of_its_call() {
    let dir = scratch("midcall");
    let (ad, bd) = (data(&dir, "a"), data(&dir, "b"));
    let dna_s = transformed_guest(&dir);
    let dna_s = dna_s.as_str();
    let mut a = Proc::start("a", &dir, "127.0.0.1:0", &[], &[], None);
    let mut b = Proc::start("b", &dir, "127.0.0.1:0", &[], &[], None);
    pin_all(&mut [&mut a, &mut b]);
    for name in ["guest", "still"] {
        let o = mielin(&["deploy", dna_s, "--name", name, "-d", &ad]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Sends `m` to `name` on the node at `d` and returns its answer from the node's log.
    let ask = |p: &Proc, d: &str, name: &str, m: &str| -> String {
        let from = p.len();
        let o = mielin(&["send", name, m, "-d", d]);
        assert!(o.status.success(), "{}", text(&o));
        let prefix = format!("reply {name} -> operator: ");
        let l = p.wait_line(from, |l| l.starts_with(&prefix), T);
        l[prefix.len()..].to_string()
    };
    let words = |i: usize| format!("w{} shared w{} {}", i % 4, i % 3, "x".repeat(i));
    let mut answers = Vec::new();
    for i in 0..3 {
        let (g, s) = (
            ask(&a, &ad, "guest", &words(i)),
            ask(&a, &ad, "still", &words(i)),
        );
        assert_eq!(g, s, "message {i}");
        answers.push(g);
    }
    let o = mielin(&["migrate", "guest", "--to", "b", "-d", &ad]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(" committed "), "{}", text(&o));
    // b saved it waiting in its call.
    let saved = std::path::Path::new(&bd).join(format!(
        "agents/{}.run",
        mielin_cells::quic::to_hex(agent_of("guest").as_bytes())
    ));
    let key = dir.join("b.key");
    let o = mielin(&[
        "inspect",
        saved.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        text(&o).contains("waiting in the middle of a call to tick"),
        "{}",
        text(&o)
    );
    for i in 3..6 {
        let (g, s) = (
            ask(&b, &bd, "guest", &words(i)),
            ask(&a, &ad, "still", &words(i)),
        );
        assert_eq!(g, s, "message {i}, after the move");
        answers.push(g);
    }
    b.kill9();
    let addr = b.addr.clone();
    let b = Proc::start("b", &dir, &addr, &[], &[], None);
    for i in 6..8 {
        let (g, s) = (
            ask(&b, &bd, "guest", &words(i)),
            ask(&a, &ad, "still", &words(i)),
        );
        assert_eq!(g, s, "message {i}, after b was killed and restarted");
        answers.push(g);
    }
    answers.dedup();
    assert_eq!(answers.len(), 8, "every answer differs from the one before");
    a.quit();
    b.quit();
}

/// Issue 25: a node that cannot rewind says so in its status, placement does not offer it an
/// agent waiting in the middle of a call, and it refuses one with its reason if offered. `b`
/// runs with `--between-calls-only`; `a` holds `guest` (the Rust guest, transformed, waiting in
/// its call) and `pong` (between calls). Asked to move `guest` to b, a refuses at once with the
/// reason; when a's battery drops below its policy, `pong` goes to b (the policy's pick: more
/// battery than c) and `guest` to c, which continues it; an agent deployed on a while its
/// battery stays low is placed too. (A node learns a peer's status on a connection it has:
/// `spare` opens the one to c.)
#[test]
fn placement_offers_a_waiting_agent_only_to_a_node_that_continues_it() {
    let dir = scratch("rewind");
    let (ad, cd) = (data(&dir, "a"), data(&dir, "c"));
    let dna_s = transformed_guest(&dir);
    let dna_s = dna_s.as_str();
    let mut a = Proc::start("a", &dir, "127.0.0.1:0", &[], &[], None);
    let args = |between: bool, battery: &str| -> Vec<String> {
        let mut v = vec!["--battery".into(), battery.into()];
        if between {
            v.push("--between-calls-only".into());
        }
        v
    };
    let mut b = Proc::start("b", &dir, "127.0.0.1:0", &args(true, "100"), &[], None);
    let mut c = Proc::start("c", &dir, "127.0.0.1:0", &args(false, "90"), &[], None);
    pin_all(&mut [&mut a, &mut b, &mut c]);
    for (file, name) in [
        (dna_s.to_string(), "guest"),
        (agent_file(), "pong"),
        (agent_file(), "spare"),
    ] {
        let o = mielin(&["deploy", &file, "--name", name, "-d", &ad]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Statuses travel on the connections a node has: one to c (b's comes with the refusals).
    let o = mielin(&["migrate", "spare", "--to", "c", "-d", &ad]);
    assert!(text(&o).contains(" committed "), "{}", text(&o));
    // The guest waits in its call once it ran; b's status reaches a within a second.
    let start = Instant::now();
    let refusal = loop {
        let o = mielin(&["migrate", "guest", "--to", "b", "-d", &ad]);
        let t = text(&o);
        if t.contains("takes no agent in the middle of a call") {
            assert_eq!(o.status.code(), Some(1), "{t}");
            break t;
        }
        // Before a heard b's status the hand-off is offered, and b refuses it.
        assert!(!o.status.success() || !t.contains(" committed "), "{t}");
        assert!(start.elapsed() < T, "{t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        refusal.contains("guest waits in the middle of a call"),
        "{refusal}"
    );
    // a has both statuses before its battery drops (`mielin status` shows them).
    let start = Instant::now();
    loop {
        let t = text(&mielin(&["status", "-d", &ad]));
        let peer = |n: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(n))
                .unwrap_or("")
                .to_string()
        };
        if peer("b ").contains("mid-call no") && peer("c ").contains("mid-call yes") {
            break;
        }
        assert!(start.elapsed() < T, "{t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let from = a.len();
    a.send("battery 10");
    a.wait_line(
        from,
        |l| l.starts_with("battery 10% below the policy's 20%"),
        T,
    );
    runs_on(&c, &cd, "guest");
    runs_on(&b, &data(&dir, "b"), "pong");
    // While a's battery stays low it keeps placing: an agent deployed now leaves too.
    let o = mielin(&["deploy", &agent_file(), "--name", "late", "-d", &ad]);
    assert!(o.status.success(), "{}", text(&o));
    runs_on(&b, &data(&dir, "b"), "late");
    // c continues the call: the guest answers there.
    let from = c.len();
    let o = mielin(&["send", "guest", "hello there", "-d", &cd]);
    assert!(o.status.success(), "{}", text(&o));
    c.wait_line(
        from,
        |l| l.starts_with("reply ") && l.contains(" -> operator: "),
        T,
    );
    // b never took it (b never heard its name: its log shows the id's first 8 hex digits).
    let id = mielin_cells::quic::to_hex(agent_of("guest").as_bytes());
    assert!(b.has_line(0, |l| l.contains(&id[..8])), "{}", b.log());
    assert!(
        !b.has_line(0, |l| l.contains(&id[..8]) && l.contains(" committed ")),
        "{}",
        b.log()
    );
    a.quit();
    b.quit();
    c.quit();
}

/// Waits until `mielin agents -d D` says the agent `name` runs there (a node that never heard
/// an agent's name shows the first 8 hex digits of its id), or fails with `p`'s log after `T`.
fn runs_on(p: &Proc, d: &str, name: &str) {
    let start = Instant::now();
    let id = mielin_cells::quic::to_hex(agent_of(name).as_bytes());
    while !text(&mielin(&["agents", "-d", d]))
        .lines()
        .any(|l| (l.starts_with(name) || l.starts_with(&id[..8])) && l.contains("running here"))
    {
        assert!(start.elapsed() < T, "{name} not on {}: {}", p.name, p.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 24: "a node's battery drops below an agent's policy; the agent moves within 2 s; the
/// log says why". Three nodes in a fleet on Zenoh (a runs the router, b and c are its clients);
/// a places its agent on the members' live, signed statuses: to b (battery 90), never to c
/// (battery 25: above the minimum of 20, but not by the planner's margin of 10), and b does not
/// send it back.
#[test]
fn fleet_placement_moves_an_agent_within_two_seconds_of_a_battery_drop() {
    let dir = scratch("fleet");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let node = |name: &str, zenoh: &[&str], battery: &str| {
        let mut args: Vec<String> = zenoh.iter().map(|s| s.to_string()).collect();
        args.extend(["--battery".to_string(), battery.to_string()]);
        Proc::start(name, &dir, "127.0.0.1:0", &args, &[], None)
    };
    let mut a = node("a", &["--zenoh-router", "--zenoh-listen", &ep], "100");
    let mut b = node("b", &["--zenoh", &ep], "90");
    let mut c = node("c", &["--zenoh", &ep], "25");
    pin_all(&mut [&mut a, &mut b, &mut c]);
    let ad = data(&dir, "a");
    let o = mielin(&["deploy", &agent_file(), "--name", "pong", "-d", &ad]);
    assert!(o.status.success(), "{}", text(&o));
    // Members once pinned: a sees both join, then their statuses (published every 0.5 s).
    for n in ["b", "c"] {
        a.wait_line(0, |l| l == format!("fleet: {n} joined"), T);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let from = a.len();
    let start = Instant::now();
    a.send("battery 10");
    a.wait_line(
        from,
        |l| l == "placement: pong leaves for b: battery 10% below its minimum 20%",
        T,
    );
    runs_on(&b, &data(&dir, "b"), "pong");
    let took = start.elapsed();
    let id = mielin_cells::quic::to_hex(agent_of("pong").as_bytes());
    println!("battery drop to running on b: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}: {}", a.log());
    // b's battery satisfies pong: it stays there; c never took part.
    std::thread::sleep(Duration::from_secs(2));
    // (b names the agent by its id: it never heard the name.)
    let b_leaves = format!("placement: {} leaves", &id[..8]);
    assert!(!b.log().contains(&b_leaves), "{}", b.log());
    assert!(!a.log().contains("leaves for c"), "{}", a.log());

    // b drains: pong leaves b for c once c has charged (not for a, at 10%), and no sooner than
    // 10 s after it arrived on b (the planner's interval holds across nodes).
    c.send("battery 100");
    let from = b.len();
    b.send("drain");
    b.wait_line(from, |l| l.starts_with("draining: "), T);
    let leaves = format!("placement: {} leaves for c: this node drains", &id[..8]);
    b.wait_line(from, |l| l == leaves, T);
    runs_on(&c, &data(&dir, "c"), "pong");
    let moved = start.elapsed();
    // (took: when pong was seen running on b, some polling after it arrived there; without the
    // interval it would leave within a second, once c's status says 100%.)
    assert!(
        moved - took >= Duration::from_secs(9),
        "pong arrived on b by {took:?} and was on c by {moved:?}"
    );
    println!("drained from b to c {moved:?} after the battery drop on a");

    // c's battery drops too. b (90%) drains and a (25%) does not clear the minimum of 20 by
    // the margin of 10: neither is a target, and pong stays on c, saying why (once its 10 s
    // since it arrived are over).
    a.send("battery 25");
    let from = c.len();
    c.send("battery 10");
    let stays = format!(
        "placement: {} stays: battery 10% below its minimum 20%, and no live member clears its policy by 10 points",
        &id[..8]
    );
    c.wait_line(from, |l| l == stays, T);
    assert!(
        !c.log().contains(&format!("placement: {} leaves", &id[..8])),
        "{}",
        c.log()
    );
}

/// Issue 24: "The node's `locate` uses these records". Four nodes in a fleet, ping on a, pong
/// on d, and no node told where the other agent runs: a names pong's node from d's signed
/// location record, each lookup of an addressee is answered by the records (probing would try
/// the peers one by one), and every number of the exchange arrives once.
#[test]
fn fleet_location_records_answer_the_lookups() {
    let dir = scratch("locate");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let limit = 20;
    let node = |name: &str, zenoh: &[&str], agent: Option<&str>| {
        let mut args: Vec<String> = zenoh.iter().map(|s| s.to_string()).collect();
        args.extend(["--limit".to_string(), limit.to_string()]);
        if let Some(a) = agent {
            args.extend(["--agent".to_string(), format!("{a}={}", agent_file())]);
        }
        Proc::start(name, &dir, "127.0.0.1:0", &args, &[], None)
    };
    let mut a = node(
        "a",
        &["--zenoh-router", "--zenoh-listen", &ep],
        Some("ping"),
    );
    let mut b = node("b", &["--zenoh", &ep], None);
    let mut c = node("c", &["--zenoh", &ep], None);
    let mut d = node("d", &["--zenoh", &ep], Some("pong"));
    pin_all(&mut [&mut a, &mut b, &mut c, &mut d]);
    let (ad, dd) = (data(&dir, "a"), data(&dir, "d"));
    // a's journal knows nothing of pong, d's nothing of ping; the fleet's records say where
    // each runs.
    for (agent, data, node) in [("pong", &ad, "d"), ("ping", &dd, "a")] {
        let start = Instant::now();
        let says = format!("not known here; the fleet's records place it on {node} at epoch ");
        loop {
            let t = text(&mielin(&["send", agent, "1", "-d", data]));
            if t.contains(&says) {
                println!("{}", t.trim());
                break;
            }
            assert!(start.elapsed() < T, "{t}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    a.send("kick ping pong");
    let all = wait_exchange(&mut [&mut a, &mut b, &mut c, &mut d], limit, T);
    check_exchange(&all, limit);
    let mut answered = 0;
    for (p, data) in [(&a, &ad), (&d, &dd)] {
        let t = text(&mielin(&["status", "-d", data]));
        let line = t.lines().find(|l| l.starts_with("lookups ")).unwrap_or("");
        let n: Vec<u64> = line
            .split(|ch: char| !ch.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        println!("{}: {line}", p.name);
        assert_eq!(n.len(), 2, "{line}");
        // Every other lookup at least was answered by the records (all of them here, unless a
        // node was slow to answer and a probe came between); without them, none.
        assert!(n[0] <= 2 * n[1], "{}: {line}\n{}", p.name, p.log());
        answered += n[1];
        if p.name == "a" {
            assert!(n[1] >= 1, "a looked pong up through the records: {line}");
        }
    }
    assert!(answered >= 1);
}

/// Issue 24: "commands to create a fleet key, issue and revoke a node". The certificate and
/// the lists they write are checked by the library's verifier (`FleetAnchor::verify`): the
/// node is a member, then not once its serial is on a list, and a list of another fleet key
/// or a certificate issued under another fleet name is refused.
#[test]
fn fleet_key_issue_and_revoke() {
    use mielin_cells::mesh::fleet_certificate::{FleetAnchor, MemberError};
    let dir = scratch("fleet-ca");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let o = mielin(&[
        "fleet-key",
        &p("lab.key"),
        "--fleet",
        "lab",
        "-o",
        &p("lab.der"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = mielin(&["keygen", &p("a.key")]);
    let public = text(&o).split_whitespace().nth(1).unwrap().to_string();
    let issue = |fleet: &str, out: &str| {
        mielin(&[
            "issue",
            &p("lab.key"),
            "--fleet",
            fleet,
            "--node",
            "a",
            "--public",
            &public,
            "--arch",
            "aarch64",
            "--serial",
            "7",
            "--days",
            "30",
            "-o",
            &p(out),
        ])
    };
    let o = issue("lab", "a.der");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("node a (aarch64) serial 7 valid 30 days"),
        "{}",
        text(&o)
    );
    let revoke = |key: &str, serials: &[&str], out: &str| {
        let mut args = vec!["revoke", key, "--fleet", "lab", "--number", "1", "-o", out];
        for s in serials {
            args.extend(["--serial", s]);
        }
        let o = mielin(&args);
        assert!(o.status.success(), "{}", text(&o));
    };
    revoke(&p("lab.key"), &[], &p("empty.crl"));
    revoke(&p("lab.key"), &["3", "7"], &p("revoked.crl"));
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let anchor = FleetAnchor::from_der(&read("lab.der")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let m = anchor
        .verify(&read("a.der"), &read("empty.crl"), now)
        .unwrap();
    assert_eq!(
        (m.name.as_str(), m.arch),
        ("a", mielin_cells::Arch::Aarch64)
    );
    assert_eq!(mielin_cells::quic::to_hex(&m.key), public);
    assert_eq!(
        anchor.verify(&read("a.der"), &read("revoked.crl"), now),
        Err(MemberError::Revoked)
    );
    // Another fleet key's list; a certificate issued under another fleet name.
    let o = mielin(&["keygen", &p("other.key")]);
    assert!(o.status.success());
    revoke(&p("other.key"), &[], &p("other.crl"));
    assert_eq!(
        anchor.verify(&read("a.der"), &read("other.crl"), now),
        Err(MemberError::RevocationListNotCurrent)
    );
    assert!(issue("zoo", "zoo.der").status.success());
    assert_eq!(
        anchor.verify(&read("zoo.der"), &read("empty.crl"), now),
        Err(MemberError::NotIssued)
    );
    // Refusals: a bad key, a name a certificate cannot carry, no fleet key.
    let bad = mielin(&[
        "issue",
        &p("lab.key"),
        "--node",
        "a",
        "--public",
        "12",
        "--arch",
        "arm",
        "--serial",
        "1",
        "-o",
        &p("x.der"),
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let bad = mielin(&[
        "issue",
        &p("lab.key"),
        "--node",
        "A_b",
        "--public",
        &public,
        "--arch",
        "arm",
        "--serial",
        "1",
        "-o",
        &p("x.der"),
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("a node name in a certificate"),
        "{}",
        text(&bad)
    );
    let bad = mielin(&["revoke", &p("none.key"), "--number", "1", "-o", &p("x.crl")]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        !dir.join("none.key").exists(),
        "revoke never creates a fleet key"
    );
}
