//! The commands' side of the control socket, and the progress bar of long transfers.

use crate::control_server::socket_path;
use mielin::control::{frame_len, Reply, Request, MAX_REPLY};
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one reply may take (a hand-off of a large agent sends progress before that).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

fn connect(data: &Path, wait: Duration) -> Result<UnixStream, String> {
    let path = socket_path(data);
    let start = Instant::now();
    loop {
        match UnixStream::connect(&path) {
            Ok(s) => return Ok(s),
            // The node may be starting: its socket appears once it listens.
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                    && start.elapsed() < wait =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(match e.kind() {
                    ErrorKind::NotFound => format!(
                        "no node is running on {}: {} does not exist. Start one with \
                         `mielin node --data {} ...`, or point at another with -d DIR",
                        data.display(),
                        path.display(),
                        data.display()
                    ),
                    ErrorKind::ConnectionRefused => format!(
                        "{} is left over from a node that stopped: start the node again",
                        path.display()
                    ),
                    ErrorKind::PermissionDenied => format!(
                        "{}: permission denied; the control socket belongs to the user who \
                         started the node: run this command as that user",
                        path.display()
                    ),
                    _ => format!("{}: {e}", path.display()),
                })
            }
        }
    }
}

fn read_reply(s: &mut UnixStream) -> Result<Reply, String> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).map_err(|e| {
        format!("the node closed the connection without an answer ({e}): see its log")
    })?;
    let len = frame_len(prefix, MAX_REPLY).map_err(|e| format!("the node's answer: {e}"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .map_err(|e| format!("reading the node's answer: {e}"))?;
    Reply::decode(&body).map_err(|e| format!("the node's answer: {e}"))
}

/// Sends `req` to the node of `data` and returns its final answer; progress replies go to
/// `progress`.
pub fn request(
    data: &Path,
    req: &Request,
    wait: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<String, String> {
    let mut s = connect(data, wait)?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(&req.encode())
        .map_err(|e| format!("sending the request: {e}"))?;
    loop {
        match read_reply(&mut s)? {
            Reply::Ok(t) => return Ok(t),
            Reply::Err(t) => return Err(t),
            Reply::Progress { sent, total } => progress(sent, total),
        }
    }
}

/// A one-line progress bar on standard error, drawn only when it is a terminal.
pub struct Bar {
    label: String,
    tty: bool,
    start: Instant,
    drawn: bool,
}

impl Bar {
    pub fn new(label: String) -> Bar {
        Bar {
            label,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            drawn: false,
        }
    }

    pub fn update(&mut self, sent: u64, total: u64) {
        if !self.tty {
            return;
        }
        const W: u64 = 30;
        let done = (sent.min(total) * W).checked_div(total).unwrap_or(W);
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let mib = |b: u64| b as f64 / 1_048_576.0;
        eprint!(
            "\r{} [{}{}] {:>3}% {:.1}/{:.1} MiB {:.1} MiB/s ",
            self.label,
            "#".repeat(done as usize),
            " ".repeat((W - done) as usize),
            (sent * 100).checked_div(total).unwrap_or(100),
            mib(sent),
            mib(total),
            mib(sent) / secs
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
