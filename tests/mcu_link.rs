//! The serial link of the Cortex-M3 round trip (`examples/firmware-wasmi/src/cells.rs`, compiled
//! here as it is into the firmware and into `examples/mcu_roundtrip.rs`): link frames survive
//! the round trip through COBS and the CRC, a damaged or truncated frame is dropped and the next
//! one is read, and every command decodes to itself.
#![cfg(feature = "wasmi")]

extern crate alloc;

#[path = "../examples/firmware-wasmi/src/cells.rs"]
mod cells;

use cells::{crc32, encode_link, Cmd, Deframer, LinkError, KIND_CMD, KIND_MESH};
use mielin_cells::AgentId;

fn feed(d: &mut Deframer, bytes: &[u8]) -> Vec<Result<(u8, Vec<u8>), LinkError>> {
    bytes.iter().filter_map(|&b| d.push(b)).collect()
}

#[test]
fn crc32_is_ieee() {
    // The standard check value of CRC-32/ISO-HDLC.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn frames_round_trip_including_zeros_and_long_bodies() {
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0; 600],
        (0..=255).collect(),
        (0..70_000u32).map(|i| (i % 7) as u8).collect(),
    ];
    let mut wire = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        encode_link(if i % 2 == 0 { KIND_MESH } else { KIND_CMD }, b, &mut wire);
    }
    let mut d = Deframer::new(1 << 20);
    let got = feed(&mut d, &wire);
    assert_eq!(got.len(), bodies.len());
    for (i, (g, b)) in got.into_iter().zip(&bodies).enumerate() {
        let (kind, body) = g.unwrap();
        assert_eq!(kind, if i % 2 == 0 { KIND_MESH } else { KIND_CMD });
        assert_eq!(&body, b);
    }
}

#[test]
fn a_damaged_frame_is_dropped_and_the_next_is_read() {
    let body: Vec<u8> = (1..=200).collect();
    for at in 1..40 {
        let mut bad = Vec::new();
        encode_link(KIND_MESH, &body, &mut bad);
        // Flip one byte (never into a delimiter), or lose a run of bytes.
        let mut lost = bad.clone();
        lost.drain(at..at + 10);
        bad[at] ^= if bad[at] == 0x20 { 0x01 } else { 0x20 };
        for damaged in [bad, lost] {
            let mut wire = damaged;
            encode_link(KIND_CMD, b"next", &mut wire);
            let got = feed(&mut Deframer::new(1 << 20), &wire);
            let (ok, err): (Vec<_>, Vec<_>) = got.into_iter().partition(Result::is_ok);
            assert!(!err.is_empty(), "damage at {at} went unnoticed");
            assert_eq!(ok, vec![Ok((KIND_CMD, b"next".to_vec()))], "damage at {at}");
        }
    }
}

#[test]
fn a_half_frame_before_a_reset_does_not_swallow_the_next() {
    let mut half = Vec::new();
    encode_link(KIND_MESH, &[7; 300], &mut half);
    half.truncate(half.len() / 2);
    encode_link(KIND_MESH, b"after the reset", &mut half);
    let got = feed(&mut Deframer::new(1 << 20), &half);
    assert_eq!(
        got.last(),
        Some(&Ok((KIND_MESH, b"after the reset".to_vec())))
    );
    assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 1);
}

#[test]
fn an_oversized_frame_is_skipped_whole() {
    let mut wire = Vec::new();
    encode_link(KIND_MESH, &[1; 5000], &mut wire);
    encode_link(KIND_MESH, b"small", &mut wire);
    let got = feed(&mut Deframer::new(1000), &wire);
    assert_eq!(
        got,
        vec![Err(LinkError::TooLong), Ok((KIND_MESH, b"small".to_vec()))]
    );
}

#[test]
fn commands_decode_to_themselves() {
    let a = AgentId::from_bytes([3; 16]);
    let b = AgentId::from_bytes([4; 16]);
    let cmds = [
        Cmd::Ready {
            heap: 16 << 20,
            max_memory: 4 << 20,
        },
        Cmd::Work {
            agent: a,
            from: 100,
            count: 50,
        },
        Cmd::Worked {
            agent: a,
            value: -5,
            insns: u64::MAX,
        },
        Cmd::Mode {
            claim_dna: true,
            delta: false,
        },
        Cmd::Mode {
            claim_dna: false,
            delta: true,
        },
        Cmd::CostQuery,
        Cmd::Cost {
            insns: 1_161_800,
            link_errors: 2,
            heap_peak: 3_569_422,
            heap_used: 344,
        },
        Cmd::StatusQuery,
        Cmd::Status {
            running: vec![(a, 2)],
            prepared: vec![(b, 7), (a, 1)],
        },
        Cmd::Log(b"snapshot refused".to_vec()),
    ];
    for c in cmds {
        let bytes = c.encode();
        assert_eq!(Cmd::decode(&bytes), Some(c.clone()), "{c:?}");
        if !matches!(c, Cmd::Log(_)) {
            // A truncated or extended command is refused (a log line is any bytes).
            assert_eq!(Cmd::decode(&bytes[..bytes.len() - 1]), None, "{c:?}");
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Cmd::decode(&longer), None, "{c:?}");
        }
    }
    assert_eq!(Cmd::decode(&[]), None);
    assert_eq!(Cmd::decode(&[200]), None);
}
