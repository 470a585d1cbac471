//! Small text forms an operator types: a pinned peer and an operator message.

use std::net::SocketAddr;

/// A pinned peer as written on a command line, in a config file or on the node's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Its name, for commands and logs.
    pub name: String,
    /// Its public key: 64 hexadecimal digits (lower case), as `mielin keygen` prints it.
    pub key: String,
    /// Its address.
    pub addr: SocketAddr,
}

const PEER_FORMS: &str = "expected NAME=KEY@ADDR or NAME KEY@ADDR, e.g. \
     b=3f1c…(64 hex digits)…@127.0.0.1:4002; `mielin keygen` prints KEY";

/// Parses `NAME=KEY@ADDR` or `NAME KEY@ADDR` (the console's form; any run of spaces).
pub fn parse_peer(s: &str) -> Result<PeerSpec, String> {
    let s = s.trim();
    let (name, rest) = match s.split_once('=') {
        Some((n, r)) if !n.contains(char::is_whitespace) => (n, r),
        _ => s
            .split_once(char::is_whitespace)
            .map(|(n, r)| (n, r.trim_start()))
            .ok_or_else(|| format!("peer `{s}`: {PEER_FORMS}"))?,
    };
    let (key, addr) = rest
        .split_once('@')
        .ok_or_else(|| format!("peer `{s}`: no `@` before the address; {PEER_FORMS}"))?;
    check_name(name).map_err(|e| format!("peer `{s}`: {e}"))?;
    let key = key.trim().to_ascii_lowercase();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "peer `{s}`: the key must be 64 hex digits (got {} characters); `mielin keygen KEYFILE` prints it",
            key.len()
        ));
    }
    let addr = addr.trim().parse().map_err(|e| {
        format!("peer `{s}`: address `{addr}`: {e} (expected IP:PORT, e.g. 127.0.0.1:4002)")
    })?;
    Ok(PeerSpec {
        name: name.to_string(),
        key,
        addr,
    })
}

/// A name for a node or an agent: 1 to [`crate::control::MAX_NAME`] characters from
/// `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= crate::control::MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{name}`: use 1 to {} characters from A-Z a-z 0-9 . _ -",
            crate::control::MAX_NAME
        ))
    }
}

/// The bytes `mielin send` delivers for `MSG`: a 32-bit little-endian integer when `MSG` is
/// one (what the example agents read), its UTF-8 bytes otherwise.
pub fn message_bytes(msg: &str) -> Vec<u8> {
    match msg.parse::<i32>() {
        Ok(n) => n.to_le_bytes().to_vec(),
        Err(_) => msg.as_bytes().to_vec(),
    }
}

/// How a message is shown: the integer when it is 4 bytes, the text when it is UTF-8, hex
/// otherwise.
pub fn show_message(m: &[u8]) -> String {
    if let Ok(b) = <[u8; 4]>::try_from(m) {
        return i32::from_le_bytes(b).to_string();
    }
    match core::str::from_utf8(m) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => m.iter().map(|b| format!("{b:02x}")).collect(),
    }
}
