//! A running WebAssembly agent moves from this process to a Cortex-M3 and back, over a serial
//! link, and ends equal to an agent that never moved.
//!
//! One command (builds the firmware, then this, and runs both):
//!
//! ```text
//! cd examples/firmware-wasmi && cargo run --release [-- --fault drop|reset|corrupt]
//! ```
//!
//! or, with a firmware already built, `cargo run --features lz4,signatures,simd --example mcu_roundtrip --
//! --firmware <elf>`. This process boots the firmware (`examples/firmware-wasmi`) in
//! `qemu-system-arm -machine mps2-an385 -icount shift=0`, its UART 0 on a Unix socket; both
//! sides run a `mesh::Node` and the same `AgentHost` (`examples/firmware-wasmi/src/cells.rs`),
//! with the protocol's frames in COBS-delimited, CRC-checked link frames.
//!
//! Per agent: N steps here, a hand-off to the board, M steps there, a hand-off back, K steps
//! here; then the result, the `digest()` of all its state, and its memory and globals must
//! equal those of an instance that ran N + M + K steps here without moving, and the board must
//! hold no copy. Agents: the counter (`examples/agents/counter.wat`, one page, a stack-pointer
//! global) and the rustc-compiled guest (`tests/guest.wasm`: 17 pages, heap and stack pointer),
//! each once with the DNA in the snapshot and no delta ("full"), and once with the DNA named by
//! hash (the board keeps both modules in flash) and the way back as a delta against the memory
//! that came ("by reference + delta"). Last, an agent whose memory (80 pages) is larger than the
//! board accepts: the board refuses it, and it runs on here.
//!
//! Faults (`--fault`), injected into the first hand-off to the board (then only the
//! by-reference counter runs):
//! - `drop`: 16 bytes of its first Transfer are lost on the line. The board drops the frame
//!   (CRC), the protocol re-sends it, and the round trip completes: exit 0.
//! - `reset`: the board is reset (QEMU monitor `system_reset`) in the middle of every Transfer.
//!   The hand-off aborts; the agent runs on, once, here; exit 1 with `FAIL round trip aborted`.
//! - `corrupt`: one byte of the snapshot in its Transfer is flipped above the link (the CRC
//!   holds). The board's decoder refuses the snapshot; exit 1 with `FAIL round trip aborted`.
//! - `reset-prepared`: the board is reset (QEMU monitor `system_reset`) as soon as it has
//!   answered `Prepared`: its flash holds the prepared copy and its journal the in-doubt
//!   hand-off, so after the reset it learns the decision and runs the agent; exit 0.
//! - `reset-committed`: the board is reset as soon as it has answered the commit (`Done`): it
//!   runs the agent again from its flash after the reset; exit 0.
//! - `cut-write=N`: the board's power fails in the middle of its agent flash's `N`-th write or
//!   erase (from 0) after the hand-off starts, while the arriving copy is written
//!   (`Cmd::CutPower`: half of the write lands, the board resets there); the source sends the
//!   Transfer again and the hand-off completes; exit 0.
//!
//! The board's flash is a file in a directory of its own, which QEMU runs in; it lives as long
//! as this process's link to the board, across resets.
//!
//! In every case the agent must exist exactly once (here, or on the board), or this exits 2.
//! Exit 0 only when every round trip ended equal to the unmoved run.

extern crate alloc;

#[path = "firmware-wasmi/src/cells.rs"]
mod cells;

use cells::{Cells, Cmd, Deframer, BOARD, HOST, KIND_CMD, KIND_MESH};
use mielin_cells::mesh::wasm::SharedInbox;
use mielin_cells::mesh::{Config, Inbox, Journal, MemJournal, Node, Phase, Record};
use mielin_cells::migration::DecodeLimits;
use mielin_cells::runtime::{LiveAgent, Val};
use mielin_cells::{Agent, AgentId, Dna};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

type HostNode = Node<MemJournal<8>, 8>;
/// Agents with their epochs, as the board reports them.
type Epochs = Vec<(AgentId, u64)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    Drop,
    Reset,
    Corrupt,
    ResetPrepared,
    ResetCommitted,
    /// The power fails at this write or erase of the board's agent flash (from the hand-off's
    /// start).
    CutWrite(u32),
    /// The board is reset as soon as it sends its Transfer back (it aborts the hand-off after
    /// the reset and runs the agent again).
    ResetOutgoing,
    /// The board is reset as soon as it sends the commit of the hand-off back.
    ResetMoved,
    /// The power fails at this write or erase of the board's agent flash from the steps' save
    /// on (the way back).
    CutBack(u32),
}

/// What went wrong, and whether the agent is still safe (exactly one copy).
enum Failure {
    /// The round trip did not complete, but the agent exists exactly once.
    Aborted(String),
    /// Anything else (a wrong result, a lost or doubled agent, a dead board).
    Broken(String),
    /// `--fault cut-write=N`: the hand-off wrote fewer than `N + 1` times to the board's flash,
    /// so the power never failed (exit 3: a caller sweeping `N` has passed the last write).
    NotCut,
}

type Res<T> = Result<T, Failure>;

fn broken<T>(what: impl Into<String>) -> Res<T> {
    Err(Failure::Broken(what.into()))
}

/// Bytes of mesh frames, and of link frames carrying them (COBS, CRC, delimiter), each way.
#[derive(Default, Clone, Copy)]
struct Bytes {
    mesh_out: u64,
    link_out: u64,
    mesh_in: u64,
    link_in: u64,
    frames_out: u32,
    frames_in: u32,
}

struct Link {
    stream: UnixStream,
    monitor: Option<UnixStream>,
    qemu: Child,
    deframer: Deframer,
    outq: Vec<u8>,
    bytes: Bytes,
    link_errors: u32,
    cmds: Vec<Cmd>,
    fault: Fault,
    /// Transfers to the board seen so far (fault injection).
    transfers: u32,
    /// Snapshot bytes in the last Transfer from the board.
    last_transfer_in: usize,
    /// Snapshot bytes in the last Transfer to the board.
    last_transfer_out: usize,
    /// Resets of the board this process caused (or armed) whose `Ready` it has not seen.
    resets_pending: u32,
    /// The reset of a `Reset*` fault happened (once per run).
    reset_done: bool,
    /// The directory QEMU runs in, with the board's flash file.
    flash_dir: PathBuf,
    started: Instant,
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        let _ = std::fs::remove_dir_all(&self.flash_dir);
    }
}

struct Side {
    node: HostNode,
    cells: Cells,
}

impl Link {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn send_cmd(&mut self, c: &Cmd) {
        cells::encode_link(KIND_CMD, &c.encode(), &mut self.outq);
    }

    /// One turn: read what came, feed the node, send what it queued. Returns whether anything
    /// moved.
    fn pump(&mut self, side: &mut Side) -> Res<bool> {
        let mut moved = false;
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return broken("the board closed the link (QEMU exited)"),
                Ok(n) => {
                    moved = true;
                    for &b in &buf[..n] {
                        self.take(side, b)?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return broken(format!("link read: {e}")),
            }
        }
        let now = self.now();
        if side.node.poll_timeout().is_some_and(|t| t <= now) {
            side.node.handle_timeout(&mut side.cells, now);
        }
        let mut frame = vec![0u8; side.cells.transmit_room()];
        while let Some(t) = side
            .node
            .poll_transmit(&mut side.cells, &mut frame)
            .map_err(|e| Failure::Broken(format!("poll_transmit: {e}")))?
        {
            moved = true;
            self.queue_mesh(&mut frame[..t.len])?;
            frame = vec![0u8; side.cells.transmit_room()];
        }
        while !self.outq.is_empty() {
            match self.stream.write(&self.outq) {
                Ok(n) => {
                    self.outq.drain(..n);
                    moved = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return broken(format!("link write: {e}")),
            }
        }
        if let Ok(Some(status)) = self.qemu.try_wait() {
            return broken(format!("QEMU exited: {status}"));
        }
        Ok(moved)
    }

    fn queue_mesh(&mut self, frame: &mut [u8]) -> Res<()> {
        let is_transfer = frame.len() > 28 && frame[3] == 5;
        let mut encoded = Vec::new();
        if is_transfer {
            self.transfers += 1;
            self.last_transfer_out = frame.len() - 33;
        }
        if is_transfer && self.fault == Fault::Corrupt && self.transfers == 1 {
            // Above the link: the CRC is computed over the changed byte.
            let at = 33 + (frame.len() - 33) / 2;
            frame[at] ^= 0x01;
            println!(
                "fault: flipped the byte at {at} of a {}-byte Transfer",
                frame.len()
            );
        }
        cells::encode_link(KIND_MESH, frame, &mut encoded);
        self.bytes.mesh_out += frame.len() as u64;
        self.bytes.frames_out += 1;
        self.bytes.link_out += encoded.len() as u64;
        if is_transfer && self.fault == Fault::Drop && self.transfers == 1 {
            let mid = encoded.len() / 2;
            encoded.drain(mid..mid + 16);
            println!(
                "fault: dropped 16 bytes of a {}-byte link frame",
                encoded.len() + 16
            );
        }
        if is_transfer && self.fault == Fault::Reset {
            encoded.truncate(encoded.len() / 2);
            self.outq.extend_from_slice(&encoded);
            self.flush()?;
            std::thread::sleep(Duration::from_millis(20));
            let mon = self.monitor.as_mut().expect("a monitor with --fault reset");
            mon.write_all(b"system_reset\n")
                .map_err(|e| Failure::Broken(format!("monitor: {e}")))?;
            println!(
                "fault: board reset after {} of {} bytes of Transfer {}",
                encoded.len(),
                encoded.len() * 2,
                self.transfers
            );
            return Ok(());
        }
        self.outq.extend_from_slice(&encoded);
        Ok(())
    }

    /// Resets the board through QEMU's monitor (once per fault: `transfers` moves on).
    fn reset_board(&mut self, after: &str) -> Res<()> {
        let mon = self.monitor.as_mut().expect("a monitor");
        mon.write_all(b"system_reset\n")
            .map_err(|e| Failure::Broken(format!("monitor: {e}")))?;
        self.resets_pending += 1;
        println!("fault: board reset right after it {after}");
        Ok(())
    }

    /// After a reset: waits for the board to say it is up again.
    fn after_resets(&mut self, side: &mut Side) -> Res<()> {
        while self.resets_pending > 0 {
            let up = self.until(
                side,
                Duration::from_secs(10),
                "the board after its reset",
                |_, c| {
                    let i = c.iter().position(|c| matches!(c, Cmd::Ready { .. }))?;
                    c.remove(i);
                    Some(())
                },
            );
            if up.is_err() && matches!(self.fault, Fault::CutWrite(_) | Fault::CutBack(_)) {
                return Err(Failure::NotCut);
            }
            up?;
            self.resets_pending -= 1;
            println!("board up again after its reset");
        }
        Ok(())
    }

    fn flush(&mut self) -> Res<()> {
        self.stream.set_nonblocking(false).ok();
        let r = self.stream.write_all(&self.outq);
        self.stream.set_nonblocking(true).ok();
        self.outq.clear();
        r.map_err(|e| Failure::Broken(format!("link write: {e}")))
    }

    fn take(&mut self, side: &mut Side, byte: u8) -> Res<()> {
        let Some(frame) = self.deframer.push(byte) else {
            return Ok(());
        };
        match frame {
            Ok((KIND_MESH, body)) => {
                self.bytes.mesh_in += body.len() as u64;
                let mut encoded = Vec::new();
                cells::encode_link(KIND_MESH, &body, &mut encoded);
                self.bytes.link_in += encoded.len() as u64;
                self.bytes.frames_in += 1;
                if body.len() > 33 && body[3] == 5 {
                    self.last_transfer_in = body.len() - 33;
                }
                // Prepared (6) or Done (9) from the board: it has written them to its flash.
                // Transfer (5) or Commit (7) from the board: the hand-off back.
                let reset_on = match self.fault {
                    Fault::ResetPrepared => Some(6),
                    Fault::ResetCommitted => Some(9),
                    Fault::ResetOutgoing => Some(5),
                    Fault::ResetMoved => Some(7),
                    _ => None,
                };
                if body.len() > 3 && Some(body[3]) == reset_on && !self.reset_done {
                    self.reset_done = true;
                    let what = match body[3] {
                        5 => "sent its Transfer",
                        6 => "answered Prepared",
                        7 => "sent its Commit",
                        _ => "answered Done",
                    };
                    self.reset_board(what)?;
                }
                let now = self.now();
                side.cells.take_problems();
                if let Err(e) = side.node.handle_frame(&mut side.cells, now, BOARD, &body) {
                    println!("host: mesh frame refused: {e}");
                }
                for p in side.cells.take_problems().0 {
                    println!("host: {p}");
                }
            }
            Ok((KIND_CMD, body)) => match Cmd::decode(&body) {
                // The board prints its log lines over semihosting too.
                Some(Cmd::Log(_)) => {}
                Some(c) => self.cmds.push(c),
                None => println!("host: undecodable command from the board"),
            },
            Ok((k, _)) => println!("host: unknown link frame kind {k}"),
            Err(e) => {
                self.link_errors += 1;
                println!("host: link frame dropped: {e:?}");
            }
        }
        Ok(())
    }

    /// Pumps until `done` says so, or fails after `limit`.
    fn until<T>(
        &mut self,
        side: &mut Side,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&mut Side, &mut Vec<Cmd>) -> Option<T>,
    ) -> Res<T> {
        let t0 = Instant::now();
        loop {
            let moved = self.pump(side)?;
            if let Some(v) = done(side, &mut self.cmds) {
                return Ok(v);
            }
            if t0.elapsed() > limit {
                return broken(format!("timed out after {limit:?} waiting for {what}"));
            }
            if !moved {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    fn ask<T>(
        &mut self,
        side: &mut Side,
        q: Cmd,
        what: &str,
        mut pick: impl FnMut(&Cmd) -> Option<T>,
    ) -> Res<T> {
        self.send_cmd(&q);
        self.until(side, Duration::from_secs(30), what, |_, cmds| {
            let i = cmds.iter().position(|c| pick(c).is_some())?;
            let c = cmds.remove(i);
            pick(&c)
        })
    }

    /// The board's instructions, link errors and heap peak since the last query.
    fn cost(&mut self, side: &mut Side) -> Res<(u64, u32, u32)> {
        self.ask(
            side,
            Cmd::CostQuery,
            "the board's cost counters",
            |c| match c {
                Cmd::Cost {
                    insns,
                    link_errors,
                    heap_peak,
                    ..
                } => Some((*insns, *link_errors, *heap_peak)),
                _ => None,
            },
        )
    }

    fn status(&mut self, side: &mut Side) -> Res<(Epochs, Epochs)> {
        self.ask(side, Cmd::StatusQuery, "the board's status", |c| match c {
            Cmd::Status { running, prepared } => Some((running.clone(), prepared.clone())),
            _ => None,
        })
    }
}

struct Case {
    name: &'static str,
    dna: &'static [u8],
    by_reference: bool,
    n: u32,
    m: u32,
    k: u32,
}

/// Figures of one round trip.
struct Figures {
    name: &'static str,
    snapshot_to_board: usize,
    snapshot_to_host: usize,
    to_board: Bytes,
    to_host: Bytes,
    insns_receive: u64,
    insns_send: u64,
    insns_steps: u64,
    heap_receive: u32,
    heap_send: u32,
    wall_to_board: Duration,
    wall_to_host: Duration,
    retransmits: u64,
}

fn record(side: &Side, agent: AgentId) -> Option<Record> {
    side.node.journal().get(agent)
}

fn start(side: &mut Side, dna: &'static [u8], seed: u64) -> Res<(AgentId, LiveAgent<()>)> {
    let dna = Dna::new(dna.to_vec()).map_err(|e| Failure::Broken(format!("DNA: {e}")))?;
    let id = AgentId::derive(dna.hash(), seed);
    let fail = |e| Failure::Broken(format!("start: {e}"));
    let still = side
        .cells
        .runtime()
        .start(Agent::with_id(id, dna.clone()), (), |_| Ok(()))
        .map_err(fail)?;
    side.cells
        .start(Agent::with_id(id, dna), Inbox::new())
        .map_err(|e| Failure::Broken(format!("start: {e}")))?;
    side.node
        .start(&mut side.cells, id)
        .map_err(|e| Failure::Broken(format!("node start: {e}")))?;
    Ok((id, still))
}

fn steps<T>(live: &mut LiveAgent<T>, range: core::ops::Range<u32>) -> Res<i64> {
    let mut v = 0;
    for i in range {
        v = cells::step(live, i).map_err(|e| Failure::Broken(format!("step {i}: {e}")))?;
    }
    Ok(v)
}

/// Exactly one copy: running here and not on the board, or the reverse.
fn check_once(link: &mut Link, side: &mut Side, agent: AgentId, on_board: bool) -> Res<()> {
    let (running, prepared) = link.status(side)?;
    let board_runs = running.iter().filter(|(a, _)| *a == agent).count();
    let board_holds = prepared.iter().any(|(a, _)| *a == agent);
    let here = side.cells.is_running(agent)
        && matches!(
            record(side, agent),
            Some(Record {
                phase: Phase::Running,
                ..
            })
        );
    let ok = match on_board {
        true => board_runs == 1 && !here,
        false => board_runs == 0 && !board_holds && here,
    };
    if !ok {
        return broken(format!(
            "EXACTLY-ONCE VIOLATED: agent runs here: {here}, on the board: {board_runs}, \
             prepared on the board: {board_holds}"
        ));
    }
    Ok(())
}

fn same_state<T, U>(a: &LiveAgent<T>, b: &LiveAgent<U>) -> Res<bool> {
    let fail = |e| Failure::Broken(format!("snapshot: {e}"));
    let (x, y) = (
        a.snapshot_at(None, 0).map_err(fail)?,
        b.snapshot_at(None, 0).map_err(fail)?,
    );
    Ok(x.wasm_state() == y.wasm_state() && x.globals() == y.globals())
}

fn round_trip(link: &mut Link, side: &mut Side, case: &Case, seed: u64) -> Res<Figures> {
    println!("-- {}", case.name);
    side.cells.claim_dna = case.by_reference;
    side.cells.send_delta = case.by_reference;
    link.send_cmd(&Cmd::Mode {
        claim_dna: case.by_reference,
        delta: case.by_reference,
    });
    let (agent, mut still) = start(side, case.dna, seed)?;
    let (n, m, k) = (case.n, case.m, case.k);
    let expected_on_board = steps(&mut still, 0..n + m)?;
    let expected = steps(&mut still, n + m..n + m + k)?;
    let live = side.cells.live_mut(agent).expect("just started");
    steps(live, 0..n)?;
    link.cost(side)?;
    let retransmits0 = side.node.stats().retransmits;

    // Here → board.
    if let (Fault::CutWrite(after), 0) = (link.fault, link.transfers) {
        // The next writes of the board's agent flash are the arriving copy's.
        link.send_cmd(&Cmd::CutPower { after });
        link.resets_pending += 1;
    }
    link.bytes = Bytes::default();
    let t0 = Instant::now();
    let committed = to_board(link, side, agent, "the hand-off to the board")?;
    let wall_to_board = t0.elapsed();
    link.after_resets(side)?;
    let snapshot_to_board = link.last_transfer_out;
    let to_board = link.bytes;
    let (insns_receive, errors, heap_receive) = link.cost(side)?;
    if !committed {
        let stats = side.node.stats();
        check_once(link, side, agent, false)?;
        let live = side.cells.live_mut(agent).expect("checked");
        let got = steps(live, n..n + m + k)?;
        let equal = got == expected && same_state(live, &still)?;
        return Err(Failure::Aborted(format!(
            "the hand-off to the board aborted ({} retransmissions, {errors} link frames \
             dropped by the board); the agent runs once, here{}",
            stats.retransmits - retransmits0,
            if equal {
                ", and its N+M+K steps equal the unmoved run"
            } else {
                ", BUT ITS RESULT DIFFERS"
            }
        )));
    }
    check_once(link, side, agent, true)?;

    // M steps on the board, then board → here.
    link.bytes = Bytes::default();
    let (board_value, insns_steps, wall_to_host) = work_and_hand_back(link, side, agent, n, m)?;
    let to_host = link.bytes;
    let (insns_send, _, heap_send) = link.cost(side)?;
    let snapshot_to_host = link.last_transfer_in;
    check_once(link, side, agent, false)?;

    let live = side.cells.live_mut(agent).expect("checked");
    let got = steps(live, n + m..n + m + k)?;
    let d_moved = cells::digest(live).map_err(|e| Failure::Broken(format!("digest: {e}")))?;
    let d_still = cells::digest(&mut still).map_err(|e| Failure::Broken(format!("digest: {e}")))?;
    let equal_state = same_state(live, &still)?;
    println!(
        "result after {n} + {m} (board: {board_value}) + {k} steps: {got}, unmoved: {expected}; \
         digest {d_moved:#x} vs {d_still:#x}; memory and globals equal: {equal_state}"
    );
    if board_value != expected_on_board {
        return broken(format!(
            "{}: the board's step {} gave {board_value}, the unmoved run {expected_on_board}",
            case.name,
            n + m - 1
        ));
    }
    if got != expected || d_moved != d_still || !equal_state {
        return broken(format!(
            "{}: the moved agent differs from the unmoved one",
            case.name
        ));
    }
    Ok(Figures {
        name: case.name,
        snapshot_to_board,
        snapshot_to_host,
        to_board,
        to_host,
        insns_receive,
        insns_send,
        insns_steps,
        heap_receive,
        heap_send,
        wall_to_board,
        wall_to_host,
        retransmits: side.node.stats().retransmits - retransmits0,
    })
}

/// Hands `agent` to the board and waits for the hand-off's end (`what` names it in a
/// timeout): whether it committed.
fn to_board(link: &mut Link, side: &mut Side, agent: AgentId, what: &str) -> Res<bool> {
    let now = link.now();
    side.cells
        .migrate(&mut side.node, now, agent, BOARD)
        .map_err(|e| Failure::Broken(format!("migrate: {e}")))?;
    link.until(side, Duration::from_secs(60), what, |s, _| {
        match record(s, agent)?.phase {
            Phase::Moved { acked: true, .. } => Some(true),
            Phase::Running => Some(false),
            _ => None,
        }
    })
}

/// Has the board run steps `n..n + m` of `agent` and hand it back: its last value, the
/// instructions the steps took, and the time of the hand-off back. A reset of the board on
/// the way (a fault) is ridden out as an operator would: when the board comes back before it
/// reported the steps, they are asked for again (it saves an agent before reporting them);
/// when it comes back still running the agent, it is asked to hand it back (no steps).
fn work_and_hand_back(
    link: &mut Link,
    side: &mut Side,
    agent: AgentId,
    n: u32,
    m: u32,
) -> Res<(i64, u64, Duration)> {
    if let (Fault::CutBack(after), 0) = (link.fault, link.resets_pending) {
        link.send_cmd(&Cmd::CutPower { after });
        link.resets_pending += 1;
    }
    let ready = |c: &Cmd| matches!(c, Cmd::Ready { .. });
    let mut worked = None;
    let mut t1 = Instant::now();
    let mut ask = true;
    let t0 = Instant::now();
    loop {
        if ask {
            let count = if worked.is_some() { 0 } else { m };
            link.send_cmd(&Cmd::Work {
                agent,
                from: n + if worked.is_some() { m } else { 0 },
                count,
            });
            ask = false;
        }
        let done = link.until(
            side,
            Duration::from_secs(120),
            "the board's steps and the hand-off back",
            |s, cmds| {
                if let Some(i) = cmds.iter().position(|c| matches!(c, Cmd::Worked { .. })) {
                    if let Cmd::Worked { value, insns, .. } = cmds.remove(i) {
                        return Some(Step::Worked(value, insns));
                    }
                }
                if let Some(i) = cmds.iter().position(ready) {
                    cmds.remove(i);
                    return Some(Step::Reset);
                }
                (s.cells.is_running(agent) && s.node.is_quiet()).then_some(Step::Back)
            },
        )?;
        match done {
            Step::Worked(value, insns) => {
                // The first report only: a repeated hand-off reports no steps.
                if worked.is_none() {
                    worked = Some((value, insns));
                    t1 = Instant::now();
                }
            }
            Step::Back => break,
            Step::Reset => {
                link.resets_pending = link.resets_pending.saturating_sub(1);
                println!("board up again after its reset");
                // Let the restarted node settle (its in-doubt questions, re-sent commits)
                // before deciding whether the agent still runs there.
                link.until(
                    side,
                    Duration::from_secs(5),
                    "the board's restart to settle",
                    |s, _| s.node.is_quiet().then_some(()),
                )?;
                let (running, _) = link.status(side)?;
                if running.iter().any(|(a, _)| *a == agent) {
                    ask = true;
                }
            }
        }
        if t0.elapsed() > Duration::from_secs(180) {
            return broken("the board's steps and the hand-off back did not finish");
        }
    }
    // A reset whose board has not said it is up yet (after a commit the host heard first);
    // a power cut that never fired ends as `NotCut` there.
    link.after_resets(side)?;
    let (value, insns) =
        worked.ok_or_else(|| Failure::Broken("the board never reported its steps".into()))?;
    Ok((value, insns, t1.elapsed()))
}

/// What the board's side of a round trip did next.
enum Step {
    Worked(i64, u64),
    Reset,
    Back,
}

/// The `result` and `done` globals of the crunch agent running on `cells`.
fn crunch_globals(cells: &mut Cells, agent: AgentId) -> Res<(i64, bool)> {
    let live = cells
        .live_mut(agent)
        .ok_or_else(|| Failure::Broken("the crunch does not run here".into()))?;
    match (live.global("result"), live.global("done")) {
        (Some(Val::I64(r)), Some(Val::I32(d))) => Ok((r, d != 0)),
        other => broken(format!("the crunch's globals: {other:?}")),
    }
}

/// Ticks `agent` on `cells` until it is done; the ticks it took.
fn tick_to_the_end(cells: &mut Cells, agent: AgentId) -> Res<u32> {
    let mut ticks = 0;
    while !crunch_globals(cells, agent)?.1 {
        cells.tick("tick", &[]);
        ticks += 1;
        if ticks > 1_000 {
            return broken("the crunch did not finish in 1,000 ticks");
        }
    }
    Ok(ticks)
}

/// Mid-call capture (issue 25): the crunch (`examples/agents/crunch.wat`, transformed), 10^6
/// steps preempted at its yield point, starts here, moves to the board in the middle of its
/// loop, is continued there for a few ticks, comes back in the middle of it and finishes here:
/// its result and its total of ticks must be the unmoved run's.
fn mid_call(link: &mut Link, side: &mut Side) -> Res<()> {
    println!("-- crunch (10^6 steps), preempted and moved in the middle of its call both ways");
    let fail = |e: mielin_cells::mesh::cells::Refusal| Failure::Broken(format!("start: {e}"));
    let dna =
        Dna::new(cells::CRUNCH_WASM.to_vec()).map_err(|e| Failure::Broken(format!("DNA: {e}")))?;
    let agent = AgentId::derive(dna.hash(), 25);
    // The unmoved run, on a host of its own preempted the same way.
    let mut still = cells::new_cells(HOST, &[], DecodeLimits::DEFAULT)
        .map_err(|e| Failure::Broken(format!("cells: {e}")))?;
    still
        .start(Agent::with_id(agent, dna.clone()), Inbox::new())
        .map_err(fail)?;
    let unmoved_ticks = tick_to_the_end(&mut still, agent)?;
    let (expected, _) = crunch_globals(&mut still, agent)?;

    side.cells.claim_dna = false;
    side.cells.send_delta = false;
    link.send_cmd(&Cmd::Mode {
        claim_dna: false,
        delta: false,
    });
    side.cells
        .start(Agent::with_id(agent, dna), Inbox::new())
        .map_err(fail)?;
    side.node
        .start(&mut side.cells, agent)
        .map_err(|e| Failure::Broken(format!("node start: {e}")))?;
    let (here, there) = (2, 3);
    for _ in 0..here {
        side.cells.tick("tick", &[]);
    }
    let suspended = |s: &mut Side| {
        s.cells
            .live_mut(agent)
            .is_some_and(|l| l.is_suspended_in_call())
    };
    if !suspended(side) || crunch_globals(&mut side.cells, agent)?.1 {
        return broken("the crunch is not in the middle of its call after two ticks");
    }
    if !to_board(link, side, agent, "the crunch's hand-off to the board")? {
        return broken("the crunch's hand-off to the board aborted");
    }
    check_once(link, side, agent, true)?;
    let snapshot_to_board = link.last_transfer_out;
    link.send_cmd(&Cmd::Tick {
        agent,
        count: there,
    });
    let mut board_value = None;
    link.until(
        side,
        Duration::from_secs(120),
        "the board's ticks and the crunch's hand-off back",
        |s, cmds| {
            if let Some(i) = cmds.iter().position(|c| matches!(c, Cmd::Worked { .. })) {
                if let Cmd::Worked { value, .. } = cmds.remove(i) {
                    board_value = Some(value);
                }
            }
            (board_value.is_some() && s.cells.is_running(agent) && s.node.is_quiet()).then_some(())
        },
    )?;
    check_once(link, side, agent, false)?;
    if !suspended(side) {
        return broken("the crunch came back, but not in the middle of its call");
    }
    let rest = tick_to_the_end(&mut side.cells, agent)?;
    let (got, _) = crunch_globals(&mut side.cells, agent)?;
    println!(
        "crunch: {here} ticks here, {there} on the board (its result global then: {}), {rest} \
         here: result {got:#x}, unmoved {expected:#x} in {unmoved_ticks} ticks; snapshot to \
         the board {snapshot_to_board} bytes, back {} bytes",
        board_value.unwrap_or_default(),
        link.last_transfer_in
    );
    if got != expected || here + there + rest != unmoved_ticks || board_value != Some(0) {
        return broken("the crunch moved in the middle of its call differs from the unmoved run");
    }
    Ok(())
}

/// An agent whose memory is larger than the board accepts: refused, it runs on here.
fn too_big(link: &mut Link, side: &mut Side, max_memory: u32) -> Res<()> {
    println!("-- an agent with 80 pages (5 MiB) of memory, over the board's limit");
    let wasm = wat::parse_str(include_str!("agents/pages.wat"))
        .map_err(|e| Failure::Broken(format!("pages.wat: {e}")))?;
    let wasm: &'static [u8] = Box::leak(wasm.into_boxed_slice());
    let (agent, _) = start(side, wasm, 99)?;
    let live = side.cells.live_mut(agent).expect("just started");
    let call = |live: &mut LiveAgent<SharedInbox>, f: &str, args: &[Val]| {
        live.call(f, args)
            .map_err(|e| Failure::Broken(format!("{f}: {e}")))
    };
    call(live, "grow", &[Val::I32(79)])?;
    call(
        live,
        "dirty",
        &[Val::I32(0), Val::I32(512), Val::I32(1), Val::I32(7)],
    )?;
    let now = link.now();
    side.cells
        .migrate(&mut side.node, now, agent, BOARD)
        .map_err(|e| Failure::Broken(format!("migrate: {e}")))?;
    let committed = link.until(
        side,
        Duration::from_secs(60),
        "the refused hand-off",
        |s, _| match record(s, agent)?.phase {
            Phase::Moved { acked: true, .. } => Some(true),
            Phase::Running => Some(false),
            _ => None,
        },
    )?;
    if committed {
        return broken(format!(
            "the board took an agent of 5 MiB of memory, over its limit of {max_memory} bytes"
        ));
    }
    check_once(link, side, agent, false)?;
    let live = side.cells.live_mut(agent).expect("checked");
    let peek = call(live, "peek", &[Val::I32((511 << 12) + 8)])?;
    println!(
        "refused by the board (its log above gives the error); the agent runs on here, once \
         (peek: {peek:?})"
    );
    Ok(())
}

fn build_firmware(dir: &Path) -> Res<PathBuf> {
    let ok = Command::new("cargo")
        .args(["build", "--release", "-q"])
        .current_dir(dir)
        .status()
        .map_err(|e| Failure::Broken(format!("cargo: {e}")))?
        .success();
    if !ok {
        return broken("the firmware did not build");
    }
    Ok(dir.join("target/thumbv7m-none-eabi/release/firmware-wasmi"))
}

fn boot(elf: &Path, fault: Fault) -> Res<Link> {
    let dir = std::env::temp_dir().join(format!("mielin-mcu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Failure::Broken(format!("{e}")))?;
    let (sock, mon) = (dir.join("uart"), dir.join("monitor"));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&mon);
    let fail = |e: std::io::Error| Failure::Broken(format!("socket: {e}"));
    let listener = UnixListener::bind(&sock).map_err(fail)?;
    let mon_listener = UnixListener::bind(&mon).map_err(fail)?;
    // QEMU runs in a directory of its own: the board's flash file is made there.
    let flash_dir = std::env::temp_dir().join(format!("mielin-mcu-flash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&flash_dir);
    std::fs::create_dir_all(&flash_dir).map_err(fail)?;
    let elf = std::fs::canonicalize(elf).map_err(fail)?;
    let mut cmd = Command::new("qemu-system-arm");
    cmd.current_dir(&flash_dir);
    cmd.args([
        "-machine",
        "mps2-an385",
        "-cpu",
        "cortex-m3",
        "-display",
        "none",
    ])
    .args(["-icount", "shift=0"])
    .args(["-semihosting-config", "enable=on,target=native"])
    .args([
        "-chardev",
        &format!("socket,id=link,path={}", sock.display()),
    ])
    .args(["-serial", "chardev:link"])
    .args(["-chardev", &format!("socket,id=mon,path={}", mon.display())])
    .args(["-mon", "chardev=mon,mode=readline"])
    .arg("-kernel")
    .arg(elf);
    let qemu = cmd
        .spawn()
        .map_err(|e| Failure::Broken(format!("qemu-system-arm: {e}")))?;
    let (stream, _) = listener.accept().map_err(fail)?;
    let (monitor, _) = mon_listener.accept().map_err(fail)?;
    stream.set_nonblocking(true).map_err(fail)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Link {
        stream,
        monitor: Some(monitor),
        qemu,
        deframer: Deframer::new(8 << 20),
        outq: Vec::new(),
        bytes: Bytes::default(),
        link_errors: 0,
        cmds: Vec::new(),
        fault,
        transfers: 0,
        last_transfer_in: 0,
        last_transfer_out: 0,
        resets_pending: 0,
        reset_done: false,
        flash_dir,
        started: Instant::now(),
    })
}

fn run(elf: &Path, fault: Fault) -> Res<Vec<Figures>> {
    let counter = wat::parse_str(include_str!("agents/counter.wat"))
        .map_err(|e| Failure::Broken(format!("counter.wat: {e}")))?;
    if counter != cells::COUNTER_WASM {
        return broken(
            "examples/firmware-wasmi/agents/counter.wasm is not examples/agents/counter.wat \
             compiled: rebuild it",
        );
    }
    let mut link = boot(elf, fault)?;
    let limits = DecodeLimits::DEFAULT;
    let cells = cells::new_cells(HOST, &[cells::COUNTER_WASM, cells::RUST_GUEST_WASM], limits)
        .map_err(|e| Failure::Broken(format!("cells: {e}")))?;
    let mut side = Side {
        node: Node::new(
            HOST,
            MemJournal::new(),
            // The link moves about 18 KB a second (QEMU hands the UART one byte per turn of its
            // main loop): a 27 KB Transfer takes 1.5 s. Three attempts, 3 s apart; 1 s apart
            // with a fault, where only the counter (1 KB Transfers) runs.
            Config {
                rto_ms: if fault == Fault::None { 3000 } else { 1000 },
                max_attempts: 3,
                ..Config::default()
            },
        ),
        cells,
    };
    side.cells.keep_sent_base = true;
    let (heap, max_memory) =
        link.until(&mut side, Duration::from_secs(30), "the board", |_, c| {
            let i = c.iter().position(|c| matches!(c, Cmd::Ready { .. }))?;
            match c.remove(i) {
                Cmd::Ready { heap, max_memory } => Some((heap, max_memory)),
                _ => None,
            }
        })?;
    println!("board ready: heap {heap} bytes, agent memory up to {max_memory} bytes");
    let cases = [
        Case {
            name: "counter (1 page), full: DNA in the snapshot, no delta",
            dna: cells::COUNTER_WASM,
            by_reference: false,
            n: 100,
            m: 100,
            k: 100,
        },
        Case {
            name: "counter (1 page), DNA by reference, delta back",
            dna: cells::COUNTER_WASM,
            by_reference: true,
            n: 100,
            m: 100,
            k: 100,
        },
        Case {
            name: "rustc guest (17 pages), full: DNA in the snapshot, no delta",
            dna: cells::RUST_GUEST_WASM,
            by_reference: false,
            n: 50,
            m: 50,
            k: 50,
        },
        Case {
            name: "rustc guest (17 pages), DNA by reference, delta back",
            dna: cells::RUST_GUEST_WASM,
            by_reference: true,
            n: 50,
            m: 50,
            k: 50,
        },
    ];
    // With a fault, only the by-reference counter (the fault hits its first Transfer).
    let order: &[usize] = match fault {
        Fault::None => &[0, 1, 2, 3],
        _ => &[1],
    };
    let mut figures = Vec::new();
    for (seed, &i) in order.iter().enumerate() {
        figures.push(round_trip(&mut link, &mut side, &cases[i], seed as u64)?);
    }
    if fault == Fault::None {
        too_big(&mut link, &mut side, max_memory)?;
        mid_call(&mut link, &mut side)?;
    }
    Ok(figures)
}

fn print_figures(figures: &[Figures]) {
    println!();
    println!(
        "| agent | way | snapshot bytes | mesh bytes (frames) | link bytes | board instructions | host wall |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for f in figures {
        let b = &f.to_board;
        println!(
            "| {} | host → board | {} | {} → , {} ← ({} + {}) | {} → , {} ← | {} (receive) | {:.0} ms |",
            f.name,
            f.snapshot_to_board,
            b.mesh_out,
            b.mesh_in,
            b.frames_out,
            b.frames_in,
            b.link_out,
            b.link_in,
            f.insns_receive,
            f.wall_to_board.as_secs_f64() * 1e3
        );
        let b = &f.to_host;
        println!(
            "| {} | board → host | {} | {} ← , {} → ({} + {}) | {} ← , {} → | {} (send) | {:.0} ms |",
            f.name,
            f.snapshot_to_host,
            b.mesh_in,
            b.mesh_out,
            b.frames_in,
            b.frames_out,
            b.link_in,
            b.link_out,
            f.insns_send,
            f.wall_to_host.as_secs_f64() * 1e3
        );
    }
    println!();
    for f in figures {
        println!(
            "{}: the board's steps took {} instructions; heap peak on the board {} bytes \
             receiving, {} sending back; {} retransmissions",
            f.name, f.insns_steps, f.heap_receive, f.heap_send, f.retransmits
        );
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut elf = None;
    let mut fault = Fault::None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--firmware" => elf = args.next().map(PathBuf::from),
            "--fault" => {
                fault = match args.next().as_deref() {
                    Some("drop") => Fault::Drop,
                    Some("reset") => Fault::Reset,
                    Some("corrupt") => Fault::Corrupt,
                    Some("reset-prepared") => Fault::ResetPrepared,
                    Some("reset-committed") => Fault::ResetCommitted,
                    Some("reset-outgoing") => Fault::ResetOutgoing,
                    Some("reset-moved") => Fault::ResetMoved,
                    Some(f) if f.starts_with("cut-back=") => match f["cut-back=".len()..].parse() {
                        Ok(n) => Fault::CutBack(n),
                        Err(_) => {
                            eprintln!("--fault cut-back=N, not {f}");
                            return ExitCode::from(2);
                        }
                    },
                    Some(f) if f.starts_with("cut-write") => {
                        match f
                            .strip_prefix("cut-write")
                            .unwrap_or("")
                            .trim_start_matches('=')
                        {
                            "" => Fault::CutWrite(1),
                            n => match n.parse() {
                                Ok(n) => Fault::CutWrite(n),
                                Err(_) => {
                                    eprintln!("--fault cut-write=N, not {f}");
                                    return ExitCode::from(2);
                                }
                            },
                        }
                    }
                    other => {
                        eprintln!("--fault drop|reset|corrupt|reset-prepared|reset-committed|cut-write=N|reset-outgoing|reset-moved|cut-back=N, not {other:?}");
                        return ExitCode::from(2);
                    }
                }
            }
            other => {
                eprintln!("usage: mcu_roundtrip [--firmware ELF] [--fault drop|reset|corrupt|reset-prepared|reset-committed|cut-write=N|reset-outgoing|reset-moved|cut-back=N]; not {other}");
                return ExitCode::from(2);
            }
        }
    }
    let t0 = Instant::now();
    let result = (|| {
        let elf = match elf {
            Some(e) => e,
            None => build_firmware(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/firmware-wasmi"),
            )?,
        };
        run(&elf, fault)
    })();
    match result {
        Ok(figures) => {
            print_figures(&figures);
            println!(
                "PASS every round trip equals the unmoved run ({:.1} s)",
                t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(Failure::Aborted(why)) => {
            println!("FAIL round trip aborted: {why}");
            ExitCode::from(1)
        }
        Err(Failure::Broken(why)) => {
            println!("FAIL {why}");
            ExitCode::from(2)
        }
        Err(Failure::NotCut) => {
            println!("NOT CUT: the hand-off made fewer flash writes than the cut's number");
            ExitCode::from(3)
        }
    }
}
