//! What every snapshot fuzz target asserts about one input.

use mielin_cells::migration::{DecodeLimits, MigrationSnapshot};

/// Decoding `data` must never panic; if it decodes, the zero-copy and owned decoders agree, the
/// result re-encodes to exactly `data`, and it restores to an agent with the same id and DNA.
pub fn snapshot(data: &[u8]) {
    let view = MigrationSnapshot::view(data);
    let owned = MigrationSnapshot::deserialize(data);
    match (view, owned) {
        (Ok(view), Ok(owned)) => {
            assert!(view == owned, "view and deserialize disagree");
            assert_eq!(view.size_bytes(), data.len());
            assert_eq!(
                owned.serialize().unwrap(),
                data,
                "does not re-encode to the same bytes"
            );
            let agent = owned.restore().unwrap();
            assert_eq!(agent.id(), view.agent_id());
            assert_eq!(agent.dna().hash(), view.dna_hash());
            agent.dna().verify().unwrap();
            // Limits only ever turn an accepted snapshot into a TooLarge error.
            let tight = DecodeLimits {
                max_wasm_binary: view.wasm_binary().len().saturating_sub(1),
                max_wasm_state: usize::MAX,
            };
            assert!(MigrationSnapshot::view_with_limits(data, &tight).is_err());
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "view and deserialize fail differently"),
        _ => panic!("view and deserialize disagree on whether the input is valid"),
    }
}
