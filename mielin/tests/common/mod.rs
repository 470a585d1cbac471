//! Starting `mielin node` processes and reading what they log (shared by the process tests).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `mielin` binary cargo built for these tests.
pub fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mielin"))
}

/// A log line without its timestamp and level (`2026-12-06T02:54:37.685191Z  INFO text`
/// gives `text`); other lines (the console's answers) as they are.
pub fn strip_log_prefix(l: &str) -> &str {
    let b = l.as_bytes();
    if b.len() > 20 && b[4] == b'-' && b[10] == b'T' {
        if let Some((_, rest)) = l.split_once(' ') {
            let rest = rest.trim_start();
            if let Some((level, msg)) = rest.split_once(' ') {
                if ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level) {
                    return msg;
                }
            }
        }
    }
    l
}

pub fn agent_file() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/agents/echo.wat").to_string()
}

/// A fresh scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mielin-quic-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running node process.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<String>>>,
    raw: Arc<Mutex<Vec<String>>>,
    pub addr: String,
    pub key: String,
    pub id: String,
}

impl Proc {
    /// Starts `mielin node` with `args` after the common ones, `env` added, in `netns` if given.
    pub fn start(
        name: &str,
        dir: &Path,
        listen: &str,
        args: &[String],
        env: &[(&str, &str)],
        netns: Option<&str>,
    ) -> Proc {
        let bin = node_bin();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("node")
            .arg("--console")
            .args(["--name", name, "--listen", listen])
            .arg("--key")
            .arg(dir.join(format!("{name}.key")))
            .arg("--data")
            .arg(dir.join(format!("{name}.d")))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (lines, raw) = (lines.clone(), raw.clone());
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines() {
                    let Ok(l) = l else { break };
                    if std::env::var_os("MIELIN_TEST_VERBOSE").is_some() {
                        eprintln!("{l}");
                    }
                    let stripped = strip_log_prefix(&l).to_string();
                    raw.lock().unwrap().push(l);
                    lines.lock().unwrap().push(stripped);
                }
            });
        }
        let mut p = Proc {
            name: name.to_string(),
            child,
            stdin,
            lines,
            raw,
            addr: String::new(),
            key: String::new(),
            id: String::new(),
        };
        let l = p.wait_line(0, |l| l.starts_with("listening "), Duration::from_secs(20));
        let w: Vec<&str> = l.split_whitespace().collect();
        p.addr = w[1].to_string();
        p.id = w[5].to_string();
        p.key = w[7].to_string();
        p
    }

    /// `NAME=KEY@ADDR` for other nodes' `--peer`.
    pub fn peer_spec(&self) -> String {
        format!("{}={}@{}", self.name, self.key, self.addr)
    }

    /// `NAME KEY@ADDR`, the console's `peer` form.
    pub fn peer_words(&self) -> String {
        format!("{} {}@{}", self.name, self.key, self.addr)
    }

    /// The lines as the node wrote them (with timestamps and levels).
    pub fn raw_log(&self) -> Vec<String> {
        self.raw.lock().unwrap().clone()
    }

    /// Sends SIGTERM (through kill(1): the tests use no unsafe code).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `INT`) through kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} {}", self.child.id());
    }

    /// The address of its metrics endpoint, from its log.
    pub fn metrics_addr(&self) -> String {
        let m = self.wait_line(
            0,
            |l| l.starts_with("metrics on http://"),
            Duration::from_secs(20),
        );
        m.trim_start_matches("metrics on http://")
            .trim_end_matches("/metrics")
            .to_string()
    }

    /// Waits for the process to exit; `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn send(&mut self, cmd: &str) {
        let _ = writeln!(self.stdin, "{cmd}");
        let _ = self.stdin.flush();
    }

    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first line at or after index `from` that matches; panics with the log after
    /// `timeout`.
    pub fn wait_line(&self, from: usize, f: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().skip(from).find(|l| f(l)) {
                return l.clone();
            }
            if start.elapsed() > timeout {
                panic!(
                    "node {}: no matching line within {timeout:?}; its output:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether some line at or after `from` matches (now).
    pub fn has_line(&self, from: usize, f: impl Fn(&str) -> bool) -> bool {
        self.lines.lock().unwrap().iter().skip(from).any(|l| f(l))
    }

    /// Asks for `stats` and returns the agents' lines: (agent, received, last, out_of_order).
    pub fn stats(&mut self) -> Vec<(String, i64, i64, i64)> {
        let from = self.len();
        self.send("stats");
        self.wait_line(from, |l| l == "stats-end", Duration::from_secs(20));
        let lines = self.lines.lock().unwrap();
        let mut out = Vec::new();
        for l in lines.iter().skip(from) {
            if l == "stats-end" {
                break;
            }
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() == Some(&"stats") && w.len() >= 10 {
                out.push((
                    w[1].to_string(),
                    w[5].parse().unwrap(),
                    w[7].parse().unwrap(),
                    w[9].parse().unwrap(),
                ));
            }
        }
        out
    }

    /// SIGKILL, and wait for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to quit and waits (SIGKILL after 5 s).
    pub fn quit(mut self) {
        self.send("quit");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins every node in every other one (after they printed their OS-assigned addresses).
pub fn pin_all(nodes: &mut [&mut Proc]) {
    // The console's documented form, `peer NAME KEY@ADDR`.
    let specs: Vec<String> = nodes.iter().map(|p| p.peer_words()).collect();
    for p in nodes.iter_mut() {
        for s in &specs {
            if !s.starts_with(&format!("{} ", p.name)) {
                let from = p.len();
                p.send(&format!("peer {s}"));
                p.wait_line(from, |l| l.starts_with("pinned "), Duration::from_secs(10));
            }
        }
    }
}

/// Waits until the ping-pong up to `limit` is over on `nodes`: the two agents' received
/// messages add up to `limit + 1`. Returns every agent line seen in the last round.
pub fn wait_exchange(
    nodes: &mut [&mut Proc],
    limit: i64,
    timeout: Duration,
) -> Vec<(String, String, i64, i64, i64)> {
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        for p in nodes.iter_mut() {
            for (a, r, l, o) in p.stats() {
                all.push((p.name.clone(), a, r, l, o));
            }
        }
        let total: i64 = all.iter().map(|s| s.2).sum();
        let last = all.iter().map(|s| s.3).max().unwrap_or(-1);
        if total > limit && last >= limit {
            return all;
        }
        if start.elapsed() > timeout {
            let logs: Vec<String> = nodes
                .iter()
                .map(|p| format!("--- {}\n{}", p.name, p.log()))
                .collect();
            panic!(
                "exchange not over after {timeout:?}: {all:?}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The checks after an exchange: exactly one copy of each agent, every number received once.
pub fn check_exchange(all: &[(String, String, i64, i64, i64)], limit: i64) {
    for agent in ["ping", "pong"] {
        let copies: Vec<_> = all.iter().filter(|s| s.1 == agent).collect();
        assert_eq!(
            copies.len(),
            1,
            "exactly one running copy of {agent}: {all:?}"
        );
        assert_eq!(
            copies[0].4, 0,
            "{agent} saw a lost or repeated number: {all:?}"
        );
    }
    let total: i64 = all.iter().map(|s| s.2).sum();
    assert_eq!(
        total,
        limit + 1,
        "numbers 0..={limit} each received once: {all:?}"
    );
}
