//! What every snapshot fuzz target asserts about one input.

use mielin_cells::migration::{
    DecodeLimits, DecodeOptions, EncodeOptions, MigrationSnapshot, StateEncoding,
};
use mielin_cells::{CellError, DecodeError};

const NEEDS_ALLOC: CellError = CellError::DeserializationFailed(DecodeError::StateNeedsAlloc);

/// Decoding `data` must never panic; if it decodes, the zero-copy and owned decoders agree, the
/// result re-encodes to exactly `data` (without flags; a signed one re-encodes unsigned to the
/// same snapshot), and it restores to an agent with the same id and DNA.
/// Chunked memory (which only the owned decoder reads) must re-encode to a snapshot that
/// decodes the same.
pub fn snapshot(data: &[u8]) {
    let view = MigrationSnapshot::view(data);
    let owned = MigrationSnapshot::deserialize(data);
    match (view, owned) {
        (Ok(view), Ok(owned)) => {
            assert!(view == owned, "view and deserialize disagree");
            let plain = owned.serialize().unwrap();
            if data[6..8] == [0, 0] {
                assert_eq!(view.size_bytes(), data.len());
                assert_eq!(plain, data, "does not re-encode to the same bytes");
            } else {
                // Signed: re-encoding without the key gives the unsigned snapshot.
                assert!(MigrationSnapshot::view(&plain).unwrap() == view);
            }
            // A call section never restores as an agent between calls.
            let agent = match owned.call() {
                Some(_) => {
                    assert_eq!(
                        owned.restore().err(),
                        Some(CellError::DeserializationFailed(DecodeError::CallNotTaken))
                    );
                    owned.clone().into_agent_with_call().unwrap().0
                }
                None => owned.restore().unwrap(),
            };
            assert_eq!(agent.id(), view.agent_id());
            assert_eq!(agent.dna().hash(), view.dna_hash());
            agent.dna().verify().unwrap();
            // Limits only ever turn an accepted snapshot into a TooLarge error.
            let tight = DecodeLimits {
                max_wasm_binary: view.wasm_binary().len().saturating_sub(1),
                max_wasm_state: usize::MAX,
            };
            let opts = DecodeOptions {
                limits: tight,
                ..Default::default()
            };
            assert!(MigrationSnapshot::view_with(data, &opts).is_err());
        }
        (Err(e), Ok(owned)) => {
            assert_eq!(
                e, NEEDS_ALLOC,
                "only chunked memory is for the owned decoder alone"
            );
            // Version 2's and 3's chunked memory also decodes into a buffer, to the same
            // snapshot.
            if data[4] >= 2 {
                let mut buf = vec![0u8; owned.wasm_state().len()];
                let into = MigrationSnapshot::decode_into(data, &Default::default(), &mut buf);
                assert!(
                    into.unwrap() == owned,
                    "decode_into and deserialize disagree"
                );
            }
            // Version 3 re-encodes as version 3 (its inbox has nowhere else to go).
            let again = owned
                .serialize_with(&EncodeOptions {
                    state: StateEncoding::Chunked,
                    version: (data[4] == 3).then_some(3),
                    ..Default::default()
                })
                .unwrap();
            assert!(MigrationSnapshot::deserialize(&again).unwrap() == owned);
        }
        (Err(a), Err(b)) => {
            if a != NEEDS_ALLOC {
                assert_eq!(a, b, "view and deserialize fail differently");
            }
        }
        (Ok(_), Err(e)) => panic!("the view accepts what deserialize refuses: {e:?}"),
    }
}
