//! Property tests: snapshot round trips for arbitrary agents, and the lifecycle under arbitrary
//! move sequences.
#![cfg(feature = "alloc")]

use mielin_cells::migration::{
    DecodeOptions, EncodeOptions, MemoryDigests, MigrationSnapshot, Route, StateEncoding,
    CHUNK_SIZE,
};
use mielin_cells::{
    Agent, AgentId, AgentState, Arch, CellError, Dna, GlobalValue, NodeId, Policy,
    MAX_ARCHITECTURES, MAX_GLOBALS,
};
use proptest::prelude::*;

fn global() -> impl Strategy<Value = GlobalValue> {
    prop_oneof![
        any::<i32>().prop_map(GlobalValue::I32),
        any::<i64>().prop_map(GlobalValue::I64),
        any::<u32>().prop_map(GlobalValue::F32),
        any::<u64>().prop_map(GlobalValue::F64),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        any::<u8>(),
        any::<u32>(),
        prop::collection::vec(0u8..7, 0..=MAX_ARCHITECTURES),
    )
        .prop_map(|(battery, latency, tags)| {
            let archs: Vec<Arch> = tags.into_iter().filter_map(Arch::from_tag).collect();
            Policy::new(battery, latency, &archs).unwrap()
        })
}

/// Under Miri (about a thousand times slower) inputs are 1/32 of their size: the point there is
/// undefined behaviour, not coverage.
const SCALE: usize = if cfg!(miri) { 1 } else { 32 };

prop_compose! {
    fn agent()(
        id in any::<[u8; 16]>(),
        body in prop::collection::vec(any::<u8>(), 0..SCALE * 64),
        memory in prop::collection::vec(any::<u8>(), 0..SCALE * 128),
        globals in prop::collection::vec(global(), 0..=MAX_GLOBALS),
        policy in policy(),
        state in prop::sample::select(vec![AgentState::Running, AgentState::Suspended, AgentState::Migrating]),
    ) -> Agent<Vec<u8>> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend_from_slice(&body);
        let mut agent = Agent::with_id(AgentId::from_bytes(id), Dna::new(wasm).unwrap());
        agent.set_state(AgentState::Running).unwrap();
        if state != AgentState::Running {
            agent.set_state(state).unwrap();
        }
        agent.set_wasm_state(memory);
        agent.set_globals(&globals).unwrap();
        agent.set_policy(policy);
        agent
    }
}

proptest! {
    // Miri runs every test about a thousand times slower: a few cases still check for UB.
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 256 }))]

    #[test]
    fn serialize_deserialize_restore_is_identity(
        agent in agent(),
        source in proptest::option::of(any::<[u8; 16]>()),
        t in any::<u64>(),
    ) {
        let snap = MigrationSnapshot::capture_at(&agent, source.map(NodeId::from_bytes), t);
        let bytes = snap.serialize().unwrap();
        prop_assert_eq!(bytes.len(), snap.size_bytes());

        let owned = MigrationSnapshot::deserialize(&bytes).unwrap();
        prop_assert_eq!(&owned, &snap);
        let view = MigrationSnapshot::view(&bytes).unwrap();
        prop_assert_eq!(&view, &snap);
        // Re-encoding what was decoded gives the same bytes.
        prop_assert_eq!(&view.serialize().unwrap(), &bytes);

        let mut restored = owned.restore().unwrap();
        prop_assert_eq!(restored.id(), agent.id());
        prop_assert_eq!(restored.dna().hash(), agent.dna().hash());
        prop_assert_eq!(restored.dna().binary(), agent.dna().binary());
        prop_assert_eq!(restored.wasm_state(), agent.wasm_state());
        prop_assert_eq!(restored.globals(), agent.globals());
        prop_assert_eq!(restored.policy(), agent.policy());
        prop_assert_eq!(restored.state(), AgentState::Migrating);
        restored.set_state(AgentState::Running).unwrap();
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        agent in agent(),
        t in any::<u64>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let bytes = MigrationSnapshot::capture_at(&agent, None, t).serialize().unwrap();
        let bit = bit.index(bytes.len() * 8);
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(MigrationSnapshot::view(&flipped).is_err());
    }

    #[test]
    fn version_two_round_trips_and_rejects_every_bit_flip(
        agent in agent(),
        source in proptest::option::of(any::<[u8; 15]>()),
        target in any::<[u8; 15]>(),
        epoch in any::<u64>(),
        t in any::<u64>(),
        bit in any::<prop::sample::Index>(),
    ) {
        // Ids with a nonzero last byte: all zeros means "none" on the wire.
        let node = |b: [u8; 15]| {
            let mut id = [1u8; 16];
            id[..15].copy_from_slice(&b);
            NodeId::from_bytes(id)
        };
        let snap = MigrationSnapshot::capture_at(&agent, source.map(node), t)
            .with_route(Route { target: node(target), epoch });
        let bytes = snap.serialize().unwrap();
        prop_assert_eq!(bytes[4], 2);
        prop_assert_eq!(bytes.len(), snap.size_bytes());
        let owned = MigrationSnapshot::deserialize(&bytes).unwrap();
        prop_assert_eq!(&owned, &snap);
        let view = MigrationSnapshot::view(&bytes).unwrap();
        prop_assert_eq!(&view, &snap);
        prop_assert_eq!(&view.serialize().unwrap(), &bytes);

        let bit = bit.index(bytes.len() * 8);
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(MigrationSnapshot::view(&flipped).is_err());
        prop_assert!(MigrationSnapshot::deserialize(&flipped).is_err());
    }

    #[test]
    fn version_two_deltas_apply_with_or_without_base_digests(
        base in prop::collection::vec(any::<u8>(), 0..3 * CHUNK_SIZE / (32 / SCALE)),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        new_len in any::<prop::sample::Index>(),
        chunked in any::<bool>(),
    ) {
        // The new memory: the base with a few bytes changed, cut or extended with zeros.
        let mut memory = base.clone();
        memory.resize(new_len.index(base.len() + 2 * CHUNK_SIZE / (32 / SCALE) + 1), 0);
        for (at, v) in &edits {
            if !memory.is_empty() {
                let i = at.index(memory.len());
                memory[i] = *v;
            }
        }
        let mut agent = Agent::with_id(
            AgentId::from_bytes([3; 16]),
            Dna::new(b"\0asm\x01\0\0\0".to_vec()).unwrap(),
        );
        agent.set_wasm_state(memory.clone());
        let snap = MigrationSnapshot::capture_at(&agent, None, 0)
            .with_route(Route { target: NodeId::from_bytes([9; 16]), epoch: 2 });
        let digests = MemoryDigests::of(&base);
        let encode = |known| snap.serialize_with(&EncodeOptions {
            state: if chunked { StateEncoding::Chunked } else { StateEncoding::Delta { base: &base } },
            base_digests: known,
            ..Default::default()
        }).unwrap();
        let bytes = encode(None);
        // Knowing the base's digests changes the work, never the bytes.
        prop_assert_eq!(&encode(Some(&digests)), &bytes);
        for known in [None, Some(&digests)] {
            let opts = DecodeOptions {
                base_state: Some(&base),
                base_digests: known,
                ..Default::default()
            };
            let (decoded, d) = MigrationSnapshot::deserialize_with_digests(&bytes, &opts).unwrap();
            prop_assert_eq!(&decoded, &snap);
            prop_assert_eq!(&d, &MemoryDigests::of(&memory));
        }
        // In place, onto the memory the receiver holds: the same snapshot, the base consumed.
        if !chunked {
            let mut held = base.clone();
            let (decoded, d) = MigrationSnapshot::deserialize_onto(
                &bytes, &DecodeOptions::default(), &mut held, &digests,
            ).unwrap();
            prop_assert_eq!(&decoded, &snap);
            prop_assert_eq!(&d, &MemoryDigests::of(&memory));
            prop_assert!(held.is_empty());
            // A held memory that is not the base: refused, and left as it was.
            let mut other = base.clone();
            other.push(1);
            let other_digests = MemoryDigests::of(&other);
            let before = other.clone();
            prop_assert!(MigrationSnapshot::deserialize_onto(
                &bytes, &DecodeOptions::default(), &mut other, &other_digests,
            ).is_err());
            prop_assert_eq!(&other, &before);
        }
        // Without an allocator: into a caller's buffer, with room to spare.
        let mut buf = vec![0xee; memory.len() + 5];
        let opts = DecodeOptions { base_state: Some(&base), ..Default::default() };
        let view = MigrationSnapshot::decode_into(&bytes, &opts, &mut buf).unwrap();
        prop_assert_eq!(&view, &snap);
        let mut short = vec![0u8; memory.len().saturating_sub(1)];
        if !memory.is_empty() {
            prop_assert_eq!(
                MigrationSnapshot::decode_into(&bytes, &opts, &mut short).unwrap_err(),
                CellError::BufferTooSmall { needed: memory.len(), available: memory.len() - 1 }
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = MigrationSnapshot::view(&bytes);
        let _ = Dna::new(&bytes[..]);
    }

    #[test]
    fn random_move_sequences_stay_legal(moves in prop::collection::vec(0usize..5, 0..64)) {
        let mut agent = Agent::with_id(
            AgentId::from_bytes([1; 16]),
            Dna::new(&b"\0asm\x01\0\0\0"[..]).unwrap(),
        );
        for m in moves {
            let before = agent.state();
            let next = AgentState::ALL[m];
            match agent.set_state(next) {
                Ok(()) => {
                    prop_assert!(before.can_transition_to(next));
                    prop_assert_eq!(agent.state(), next);
                }
                Err(e) => {
                    prop_assert!(!before.can_transition_to(next));
                    prop_assert_eq!(e, CellError::InvalidState { from: before, to: next });
                    prop_assert_eq!(agent.state(), before);
                }
            }
        }
    }
}
