//! The mesh frame codec: golden vectors byte for byte, a hand-written layout check, round trips
//! and hostile bytes (property tests).
//!
//! Regenerate the vectors only for a deliberate format change (with a new version):
//! `MIELIN_WRITE_VECTORS=1 cargo test --test mesh_frame`.

use mielin_cells::mesh::frame::{self, Body, DeliveryStatus, Frame, FrameKind, RefuseReason, Repr};
use mielin_cells::mesh::{MeshError, Phase, Record, RECORD_LEN};
use mielin_cells::{AgentId, NodeId};
use proptest::prelude::*;
use std::path::PathBuf;

const AGENT: [u8; 16] = [0x11; 16];
const NODE: [u8; 16] = [0x22; 16];
/// The longest message a Deliver frame carries.
static LONGEST: [u8; frame::MAX_MESSAGE_LEN] = [0x5a; frame::MAX_MESSAGE_LEN];

fn check(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let golden = std::fs::read(&path).unwrap();
    assert_eq!(bytes, &golden[..], "{name} differs from the golden vector");
}

fn emit(r: &Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; r.buffer_len()];
    assert_eq!(r.emit(&mut buf).unwrap(), buf.len());
    buf
}

/// One frame of every kind, with every field set to something recognisable.
fn samples() -> Vec<(&'static str, Repr<'static>)> {
    let r = |epoch, body| Repr {
        agent: AGENT,
        epoch,
        body,
    };
    vec![
        (
            "offer",
            r(
                7,
                Body::Offer {
                    dna_hash: [0xdd; 32],
                    snapshot_len: 0x0102_0304,
                    dna_len: 41,
                },
            ),
        ),
        ("have-dna", r(7, Body::HaveDna)),
        ("need-dna", r(7, Body::NeedDna)),
        ("refuse", r(7, Body::Refuse(RefuseReason::Busy))),
        (
            "transfer",
            r(
                7,
                Body::Transfer {
                    with_dna: true,
                    payload: b"opaque snapshot bytes",
                },
            ),
        ),
        ("prepared", r(7, Body::Prepared)),
        // The largest epoch: the mesh and the snapshot formats share one range.
        ("commit", r(mielin_cells::MAX_EPOCH, Body::Commit)),
        ("abort", r(7, Body::Abort)),
        ("done", r(7, Body::Done)),
        ("moved", r(7, Body::Moved { node: NODE })),
        (
            "deliver",
            r(
                7,
                Body::Deliver {
                    sender: [0x33; 16],
                    stream: [0x44; 16],
                    seq: 5,
                    payload: b"hello",
                },
            ),
        ),
        (
            "delivered",
            r(
                7,
                Body::Delivered {
                    sender: [0x33; 16],
                    seq: 5,
                    status: DeliveryStatus::Full,
                },
            ),
        ),
        (
            "epoch-query",
            r(
                7,
                Body::EpochQuery {
                    generation: 3,
                    boot: 0x0102_0304_0506_0708,
                },
            ),
        ),
        // The longest message (version 3: 4 KiB).
        (
            "deliver-longest",
            r(
                7,
                Body::Deliver {
                    sender: [0x33; 16],
                    stream: [0x44; 16],
                    seq: u64::MAX,
                    payload: &LONGEST,
                },
            ),
        ),
        (
            "epoch-answer",
            r(
                9,
                Body::EpochAnswer {
                    generation: 3,
                    boot: 0x0102_0304_0506_0708,
                    seen_generation: 2,
                    state: frame::SeenState::Decided,
                },
            ),
        ),
    ]
}

#[test]
fn golden_vectors() {
    for (name, repr) in samples() {
        let bytes = emit(&repr);
        check(&format!("mesh-{name}.bin"), &bytes);
        assert_eq!(Repr::decode(&bytes).unwrap(), repr, "{name}");
    }
}

/// The layout in `src/mesh/frame.rs`, written out by hand for one frame.
#[test]
fn commit_layout_by_hand() {
    let mut expected = vec![b'M', b'Z', 3, 7];
    expected.extend_from_slice(&[0x11; 16]);
    expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]); // 2^48 - 1
    let (_, commit) = samples().into_iter().find(|(n, _)| *n == "commit").unwrap();
    assert_eq!(emit(&commit), expected);
    assert_eq!(expected.len(), frame::HEADER_LEN);
}

/// Frame sizes, the figures quoted in `docs/protocol.md`.
#[test]
fn frame_sizes() {
    let sizes: Vec<(&str, usize)> = samples()
        .iter()
        .map(|(n, r)| (*n, r.buffer_len()))
        .collect();
    println!("frame sizes: {sizes:?}");
    assert_eq!(frame::HEADER_LEN, 28);
    assert_eq!(frame::TRANSFER_OVERHEAD, 33);
    assert_eq!(frame::MAX_CONTROL_LEN, 68);
    for (n, r) in samples() {
        match r.body {
            Body::Transfer { payload, .. } => {
                assert_eq!(r.buffer_len(), frame::TRANSFER_OVERHEAD + payload.len())
            }
            Body::Deliver { payload, .. } => {
                assert_eq!(r.buffer_len(), frame::DELIVER_OVERHEAD + payload.len())
            }
            _ => assert!(r.buffer_len() <= frame::MAX_CONTROL_LEN, "{n}"),
        }
    }
}

/// An epoch above MAX_EPOCH is refused by the codec, in every kind of frame: no peer can pin
/// an agent's location at `u64::MAX` or offer it at an epoch the snapshot formats refuse.
#[test]
fn epochs_above_max_epoch_are_refused() {
    for (name, repr) in samples() {
        let mut bytes = emit(&repr);
        for epoch in [mielin_cells::MAX_EPOCH + 1, u64::MAX] {
            bytes[20..28].copy_from_slice(&epoch.to_le_bytes());
            assert_eq!(
                Repr::decode(&bytes),
                Err(MeshError::EpochOutOfRange { found: epoch }),
                "{name}"
            );
        }
    }
}

#[test]
fn refusals_name_the_problem() {
    let good = emit(&samples()[0].1);
    assert_eq!(Repr::decode(&good[..27]), Err(MeshError::Truncated));
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(Repr::decode(&b), Err(MeshError::BadMagic));
    // Version 1 (before the Deliver frame's stream), 2 (256-byte messages at most: its nodes
    // would refuse longer ones) and 4 are refused.
    for version in [1, 2, 4] {
        let mut b = good.clone();
        b[2] = version;
        assert_eq!(
            Repr::decode(&b),
            Err(MeshError::UnsupportedVersion { found: version })
        );
    }
    let mut b = good.clone();
    b[3] = 0;
    assert_eq!(Repr::decode(&b), Err(MeshError::UnknownKind { found: 0 }));
    let mut b = good.clone();
    b.push(0);
    assert_eq!(Repr::decode(&b), Err(MeshError::TrailingBytes));
    let t = emit(&samples()[4].1);
    let mut b = t.clone();
    b[frame::HEADER_LEN] = 2;
    assert_eq!(Repr::decode(&b), Err(MeshError::BadFlags));
    // A payload length claiming more than is there.
    let mut b = t.clone();
    b[frame::HEADER_LEN + 1..frame::HEADER_LEN + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(Repr::decode(&b), Err(MeshError::Truncated));
    // Every strict prefix of every frame is refused.
    for (_, r) in samples() {
        let bytes = emit(&r);
        for n in 0..bytes.len() {
            assert!(Repr::decode(&bytes[..n]).is_err());
        }
    }
    // A message longer than the limit: refused when decoding and when encoding.
    let d = emit(&samples()[10].1);
    let mut b = d.clone();
    let over = frame::MAX_MESSAGE_LEN + 1;
    b[frame::DELIVER_OVERHEAD - 2..frame::DELIVER_OVERHEAD]
        .copy_from_slice(&(over as u16).to_le_bytes());
    b.resize(frame::DELIVER_OVERHEAD + over, 0);
    assert_eq!(Repr::decode(&b), Err(MeshError::PayloadTooLarge));
    let long = vec![0u8; over];
    let r = Repr {
        agent: AGENT,
        epoch: 0,
        body: Body::Deliver {
            sender: AGENT,
            stream: [0; 16],
            seq: 1,
            payload: &long,
        },
    };
    assert_eq!(
        r.emit(&mut [0u8; frame::MAX_DELIVER_LEN + 2]),
        Err(MeshError::PayloadTooLarge)
    );
    // An unknown delivery status.
    let mut b = emit(&samples()[11].1);
    b[frame::HEADER_LEN + 24] = 9;
    assert_eq!(Repr::decode(&b), Err(MeshError::BadFlags));
    // A buffer one byte short: an error, not a panic.
    let r = samples()[4].1;
    let mut buf = vec![0u8; r.buffer_len() - 1];
    assert_eq!(
        r.emit(&mut buf),
        Err(MeshError::BufferTooSmall {
            needed: r.buffer_len(),
            available: r.buffer_len() - 1
        })
    );
}

#[test]
fn checked_view_accessors() {
    let bytes = emit(&samples()[0].1);
    let f = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(f.kind(), FrameKind::Offer);
    assert_eq!(f.agent(), AGENT);
    assert_eq!(f.epoch(), 7);
    assert_eq!(Repr::parse(&f), samples()[0].1);
}

#[test]
fn transfer_written_in_place() {
    let mut buf = [0u8; 64];
    let n = frame::emit_transfer_with(&mut buf, &AGENT, 3, false, |out| {
        out[..4].copy_from_slice(b"abcd");
        Ok(4)
    })
    .unwrap();
    let r = Repr::decode(&buf[..n]).unwrap();
    assert_eq!(
        r.body,
        Body::Transfer {
            with_dna: false,
            payload: b"abcd"
        }
    );
    let mut small = [0u8; 10];
    assert!(frame::emit_transfer_with(&mut small, &AGENT, 3, false, |_| Ok(0)).is_err());
}

type BodyParts = (u8, [u8; 32], u32, u32, u8, bool, Vec<u8>, [u8; 16]);

fn body() -> impl Strategy<Value = BodyParts> {
    (
        1u8..=12,
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..if cfg!(miri) { 8 } else { 300 }),
        any::<[u8; 16]>(),
    )
}

#[allow(clippy::too_many_arguments)]
fn make<'a>(
    kind: u8,
    h: [u8; 32],
    a: u32,
    b: u32,
    reason: u8,
    with_dna: bool,
    payload: &'a [u8],
    node: [u8; 16],
) -> Body<'a> {
    match kind {
        1 => Body::Offer {
            dna_hash: h,
            snapshot_len: a,
            dna_len: b,
        },
        2 => Body::HaveDna,
        3 => Body::NeedDna,
        4 => Body::Refuse(RefuseReason::from_tag(reason)),
        5 => Body::Transfer { with_dna, payload },
        6 => Body::Prepared,
        7 => Body::Commit,
        8 => Body::Abort,
        9 => Body::Done,
        10 => Body::Moved { node },
        11 => Body::Deliver {
            sender: node,
            stream: h[..16].try_into().unwrap(),
            seq: u64::from(a),
            payload: &payload[..payload.len().min(frame::MAX_MESSAGE_LEN)],
        },
        _ => Body::Delivered {
            sender: node,
            seq: u64::from(b),
            status: DeliveryStatus::from_tag(1 + reason % 5).unwrap(),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 512 }))]

    #[test]
    fn round_trip(agent in any::<[u8; 16]>(), epoch in 0..=mielin_cells::MAX_EPOCH,
                  (k, h, a, b, reason, wd, payload, node) in body()) {
        let repr = Repr { agent, epoch, body: make(k, h, a, b, reason, wd, &payload, node) };
        let bytes = emit(&repr);
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        prop_assert_eq!(Repr::decode(&bytes).unwrap(), repr);
    }

    /// Any bytes: an error or a frame that re-encodes to exactly those bytes (one encoding per
    /// frame), never a panic.
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..if cfg!(miri) { 40 } else { 200 })) {
        if let Ok(r) = Repr::decode(&bytes) {
            prop_assert_eq!(emit(&r), bytes);
        }
    }

    /// Valid frames with one byte changed: an error or a canonical frame.
    #[test]
    fn mutated_frames(i in 0usize..12, pos in any::<usize>(), val in any::<u8>()) {
        let (_, r) = samples()[i];
        let mut bytes = emit(&r);
        let p = pos % bytes.len();
        bytes[p] = val;
        if let Ok(r) = Repr::decode(&bytes) {
            prop_assert_eq!(emit(&r), bytes);
        }
    }

    #[test]
    fn journal_record_round_trip(agent in any::<[u8; 16]>(), epoch in any::<u64>(),
                                 tag in 0u8..4, node in any::<[u8; 16]>(), acked in any::<bool>()) {
        let node = NodeId::from_bytes(node);
        let phase = match tag {
            0 => Phase::Running,
            1 => Phase::Outgoing { target: node },
            2 => Phase::Prepared { source: node },
            _ => Phase::Moved { target: node, acked },
        };
        let rec = Record { epoch, phase };
        let agent = AgentId::from_bytes(agent);
        let bytes: [u8; RECORD_LEN] = rec.encode(agent);
        prop_assert_eq!(Record::decode(&bytes), Some((agent, rec)));
    }
}
