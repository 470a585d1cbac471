//! The control socket's wire format: what `mielin status`, `deploy`, `send`, `migrate` and
//! `agents` ask a running node, and what it answers.
//!
//! The socket is a Unix domain socket, `DATA/control.sock`, mode 0600 in a data directory of
//! mode 0700: only the node's owner reaches it. Both directions are frames:
//!
//! ```text
//! length: u32 LE (of what follows)   version: u8 = 1   kind: u8   fields...
//! ```
//!
//! Fields are `str` (u16 LE length, UTF-8), `bytes` (u32 LE length), `i32`/`u64` (LE). A
//! decoder checks every length against the bytes left before it copies anything, refuses
//! trailing bytes, and refuses any field above its bound: [`MAX_NAME`], [`MAX_MESSAGE`],
//! [`MAX_MODULE`]. A frame longer than [`MAX_REQUEST`] (a reply: [`MAX_REPLY`]) is refused
//! from its length prefix, before its body is read.
//!
//! Requests ([`Request`]): `1` status, `2` agents, `3` deploy (name: str, module: bytes,
//! arg: i32), `4` send (agent: str, message: bytes), `5` migrate (agent: str, to: str).
//! Replies ([`Reply`]): `1` ok (text: bytes), `2` error (text: bytes), `3` progress (sent:
//! u64, total: u64; more replies follow). A request is answered by zero or more progress
//! replies, then one ok or error.

use core::fmt;

/// The format's version byte.
pub const VERSION: u8 = 1;
/// The largest WebAssembly module a `deploy` carries: the node's own limit for a module
/// (`WasmHost`'s `max_wasm_binary`, 16 MiB).
pub const MAX_MODULE: usize = 16 << 20;
/// The largest agent or node name (or id in hex).
pub const MAX_NAME: usize = 64;
/// The largest message `send` carries: the mesh's message limit (`mesh::frame::MAX_MESSAGE_LEN`).
pub const MAX_MESSAGE: usize = 256;
/// The largest request frame (after its 4-byte length): a deploy of the largest module, its
/// name and the framing.
pub const MAX_REQUEST: usize = MAX_MODULE + 1024;
/// The largest reply frame (after its 4-byte length).
pub const MAX_REPLY: usize = 1 << 20;

/// What a command asks a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The node, its peers and its agents.
    Status,
    /// The agents only.
    Agents,
    /// Start an agent here from a module.
    Deploy {
        /// The agent's name (its id is derived from it).
        name: String,
        /// The WebAssembly binary.
        module: Vec<u8>,
        /// The argument of its `start(i32)` export, if it has one.
        arg: i32,
    },
    /// Put a message from the operator into an agent's mailbox.
    Send {
        /// The agent: a name or 32 hex digits of id.
        agent: String,
        /// The message.
        message: Vec<u8>,
    },
    /// Hand an agent to another node.
    Migrate {
        /// The agent: a name or 32 hex digits of id.
        agent: String,
        /// The node: a peer's name.
        to: String,
    },
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done; the text is for the operator.
    Ok(String),
    /// Not done; the text says why and what to do.
    Err(String),
    /// A long transfer goes on: bytes written so far of the total. Another reply follows.
    Progress {
        /// Bytes written so far.
        sent: u64,
        /// The snapshot's length.
        total: u64,
    },
}

/// Why bytes are not a request or a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame ended inside a field.
    Truncated,
    /// A version other than [`VERSION`].
    Version(u8),
    /// An unknown kind byte.
    Kind(u8),
    /// A field longer than its bound.
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its bound.
        max: usize,
    },
    /// A text field that is not UTF-8.
    NotUtf8,
    /// Bytes after the last field.
    Trailing,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "the frame ends inside a field"),
            DecodeError::Version(v) => write!(
                f,
                "format version {v}, this node speaks {VERSION}: use a mielin of the same version"
            ),
            DecodeError::Kind(k) => write!(f, "unknown kind {k}"),
            DecodeError::TooLong { field, len, max } => {
                write!(f, "{field} of {len} bytes is over its limit of {max}")
            }
            DecodeError::NotUtf8 => write!(f, "a text field is not UTF-8"),
            DecodeError::Trailing => write!(f, "bytes after the last field"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a frame's length prefix is refused before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLong {
    /// The length the prefix announces.
    pub len: usize,
    /// The bound.
    pub max: usize,
}

impl fmt::Display for FrameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a frame of {} bytes is over the limit of {} bytes",
            self.len, self.max
        )
    }
}

/// The body length a 4-byte prefix announces, refused above `max`.
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameTooLong> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        Err(FrameTooLong { len, max })
    } else {
        Ok(len)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8) -> Writer {
        // The length prefix is filled in by `finish`.
        Writer(vec![0, 0, 0, 0, VERSION, kind])
    }
    fn str(&mut self, s: &str) {
        // Callers bound their strings below u16::MAX; longer ones are cut at a char boundary.
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.extend_from_slice(&(end as u16).to_le_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn bytes(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(u32::MAX as usize)];
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (x, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(x)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn str(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        let b = self.take(len)?;
        core::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8)
    }
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(len)
    }
    fn header(&mut self) -> Result<u8, DecodeError> {
        let v = self.u8()?;
        if v != VERSION {
            return Err(DecodeError::Version(v));
        }
        self.u8()
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing)
        }
    }
}

impl Request {
    /// The frame, with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Status => Writer::new(1).finish(),
            Request::Agents => Writer::new(2).finish(),
            Request::Deploy { name, module, arg } => {
                let mut w = Writer::new(3);
                w.str(name);
                w.bytes(module);
                w.0.extend_from_slice(&arg.to_le_bytes());
                w.finish()
            }
            Request::Send { agent, message } => {
                let mut w = Writer::new(4);
                w.str(agent);
                w.bytes(message);
                w.finish()
            }
            Request::Migrate { agent, to } => {
                let mut w = Writer::new(5);
                w.str(agent);
                w.str(to);
                w.finish()
            }
        }
    }

    /// Decodes a frame's body (after its length prefix). Allocates at most the body's length.
    pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader(body);
        let req = match r.header()? {
            1 => Request::Status,
            2 => Request::Agents,
            3 => Request::Deploy {
                name: r.str("name", MAX_NAME)?,
                module: r.bytes("module", MAX_MODULE)?.to_vec(),
                arg: i32::from_le_bytes(r.array()?),
            },
            4 => Request::Send {
                agent: r.str("agent", MAX_NAME)?,
                message: r.bytes("message", MAX_MESSAGE)?.to_vec(),
            },
            5 => Request::Migrate {
                agent: r.str("agent", MAX_NAME)?,
                to: r.str("node", MAX_NAME)?,
            },
            k => return Err(DecodeError::Kind(k)),
        };
        r.end()?;
        Ok(req)
    }
}

impl Reply {
    /// The frame, with its length prefix. Text longer than fits in [`MAX_REPLY`] is cut.
    pub fn encode(&self) -> Vec<u8> {
        let text = |kind: u8, s: &str| {
            let mut end = s.len().min(MAX_REPLY - 16);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let mut w = Writer::new(kind);
            w.bytes(&s.as_bytes()[..end]);
            w.finish()
        };
        match self {
            Reply::Ok(s) => text(1, s),
            Reply::Err(s) => text(2, s),
            Reply::Progress { sent, total } => {
                let mut w = Writer::new(3);
                w.0.extend_from_slice(&sent.to_le_bytes());
                w.0.extend_from_slice(&total.to_le_bytes());
                w.finish()
            }
        }
    }

    /// Decodes a frame's body (after its length prefix).
    pub fn decode(body: &[u8]) -> Result<Reply, DecodeError> {
        let mut r = Reader(body);
        let text = |r: &mut Reader<'_>| -> Result<String, DecodeError> {
            let b = r.bytes("text", MAX_REPLY)?;
            core::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| DecodeError::NotUtf8)
        };
        let reply = match r.header()? {
            1 => Reply::Ok(text(&mut r)?),
            2 => Reply::Err(text(&mut r)?),
            3 => Reply::Progress {
                sent: u64::from_le_bytes(r.array()?),
                total: u64::from_le_bytes(r.array()?),
            },
            k => return Err(DecodeError::Kind(k)),
        };
        r.end()?;
        Ok(reply)
    }

    /// Whether more replies follow this one.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Progress { .. })
    }
}
