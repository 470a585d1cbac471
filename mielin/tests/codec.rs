//! The control socket's frames (`mielin::control`) and the operator's text forms
//! (`mielin::spec`): round trips, and every malformed input refused with a reason.

use mielin::control::*;
use mielin::spec::*;

fn body(frame: &[u8]) -> &[u8] {
    let len = frame_len(frame[..4].try_into().unwrap(), usize::MAX).unwrap();
    assert_eq!(len, frame.len() - 4, "the prefix is the body's length");
    &frame[4..]
}

fn requests() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Agents,
        Request::Deploy {
            name: "pong".into(),
            module: b"\0asm\x01\0\0\0".to_vec(),
            arg: -7,
        },
        Request::Send {
            agent: "pong".into(),
            message: 41i32.to_le_bytes().to_vec(),
        },
        Request::Migrate {
            agent: "pong".into(),
            to: "b".into(),
        },
    ]
}

#[test]
fn requests_and_replies_round_trip() {
    for r in requests() {
        assert_eq!(Request::decode(body(&r.encode())), Ok(r));
    }
    for r in [
        Reply::Ok("fine".into()),
        Reply::Err("no ünicode trouble".into()),
        Reply::Progress {
            sent: 1 << 40,
            total: u64::MAX,
        },
    ] {
        assert_eq!(Reply::decode(body(&r.encode())), Ok(r));
    }
}

/// Every strict prefix of every request is refused (never a panic, never a shorter
/// request), and so is every request with a byte added.
#[test]
fn truncated_or_extended_frames_are_refused() {
    for r in requests() {
        let f = r.encode();
        let b = body(&f);
        for n in 0..b.len() {
            assert!(Request::decode(&b[..n]).is_err(), "{r:?} cut at {n}");
        }
        let mut longer = b.to_vec();
        longer.push(0);
        assert_eq!(Request::decode(&longer), Err(DecodeError::Trailing));
    }
}

#[test]
fn fields_over_their_bounds_are_refused_before_they_are_copied() {
    let long = Request::Send {
        agent: "a".repeat(MAX_NAME + 1),
        message: vec![],
    }
    .encode();
    assert!(matches!(
        Request::decode(body(&long)),
        Err(DecodeError::TooLong { field: "agent", len, max: MAX_NAME }) if len == MAX_NAME + 1
    ));
    let big = Request::Send {
        agent: "a".into(),
        message: vec![0; MAX_MESSAGE + 1],
    }
    .encode();
    assert!(matches!(
        Request::decode(body(&big)),
        Err(DecodeError::TooLong {
            field: "message",
            ..
        })
    ));
    // A module length announcing 4 GiB in a 20-byte body: refused by its bound, not by an
    // allocation attempt.
    let mut lying = vec![VERSION, 3, 1, 0, b'x'];
    lying.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Request::decode(&lying),
        Err(DecodeError::TooLong {
            field: "module",
            ..
        })
    ));
    assert_eq!(
        frame_len((MAX_REQUEST as u32 + 1).to_le_bytes(), MAX_REQUEST),
        Err(FrameTooLong {
            len: MAX_REQUEST + 1,
            max: MAX_REQUEST
        })
    );
    assert_eq!(
        frame_len((MAX_REQUEST as u32).to_le_bytes(), MAX_REQUEST),
        Ok(MAX_REQUEST)
    );
}

/// The fuzz corpus's seeds (fuzz/seed.sh) are these frames.
#[test]
fn the_fuzz_seeds_decode() {
    assert_eq!(Request::decode(&[1, 1]), Ok(Request::Status));
    assert_eq!(Request::decode(&[1, 2]), Ok(Request::Agents));
    assert_eq!(
        Request::decode(b"\x01\x04\x04\x00pong\x04\x00\x00\x00)\x00\x00\x00"),
        Ok(Request::Send {
            agent: "pong".into(),
            message: 41i32.to_le_bytes().to_vec()
        })
    );
    assert_eq!(
        Request::decode(b"\x01\x05\x04\x00pong\x01\x00b"),
        Ok(Request::Migrate {
            agent: "pong".into(),
            to: "b".into()
        })
    );
    let mut p = vec![1, 3];
    p.extend_from_slice(&1u64.to_le_bytes());
    p.extend_from_slice(&2u64.to_le_bytes());
    assert_eq!(Reply::decode(&p), Ok(Reply::Progress { sent: 1, total: 2 }));
}

#[test]
fn other_versions_kinds_and_text_are_refused() {
    assert_eq!(Request::decode(&[2, 1]), Err(DecodeError::Version(2)));
    assert_eq!(Request::decode(&[VERSION, 9]), Err(DecodeError::Kind(9)));
    assert_eq!(Request::decode(&[]), Err(DecodeError::Truncated));
    let mut bad = vec![VERSION, 5, 2, 0, 0xff, 0xfe];
    bad.extend_from_slice(&[1, 0, b'b']);
    assert_eq!(Request::decode(&bad), Err(DecodeError::NotUtf8));
    assert_eq!(Reply::decode(&[VERSION, 4]), Err(DecodeError::Kind(4)));
}

const KEY: &str = "3f1c0a9e6d2b4c8f7a1e5d3b9c0f2e4a6b8d0c1e3f5a7b9d2c4e6f8a0b1c3d5e";

/// Both documented forms (the README and docs/cli.md show `NAME=KEY@ADDR` on the command
/// line and `peer NAME KEY@ADDR` on the console) give the same peer.
#[test]
fn both_peer_forms_parse_the_same() {
    let a = parse_peer(&format!("b={KEY}@127.0.0.1:4002")).unwrap();
    let b = parse_peer(&format!("b {KEY}@127.0.0.1:4002")).unwrap();
    let c = parse_peer(&format!("  b   {}@127.0.0.1:4002 ", KEY.to_uppercase())).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.name, "b");
    assert_eq!(a.key, KEY);
    assert_eq!(a.addr, "127.0.0.1:4002".parse().unwrap());
}

#[test]
fn bad_peers_say_what_is_expected() {
    for (s, says) in [
        ("b", "expected NAME=KEY@ADDR"),
        (&format!("b={KEY}"), "no `@`"),
        ("b=abc@127.0.0.1:1", "64 hex digits"),
        (&format!("b={KEY}@localhost"), "expected IP:PORT"),
        (&format!("b/c={KEY}@127.0.0.1:1"), "use 1 to 64 characters"),
        (&format!("={KEY}@127.0.0.1:1"), "use 1 to 64 characters"),
    ] {
        let e = parse_peer(s).unwrap_err();
        assert!(e.contains(says), "{s}: {e}");
    }
}

#[test]
fn messages() {
    assert_eq!(message_bytes("41"), 41i32.to_le_bytes());
    assert_eq!(message_bytes("-1"), (-1i32).to_le_bytes());
    assert_eq!(message_bytes("hello"), b"hello");
    assert_eq!(show_message(&42i32.to_le_bytes()), "42");
    assert_eq!(show_message(b"hello"), "\"hello\"");
    assert_eq!(show_message(&[0, 1]), "0001");
}
