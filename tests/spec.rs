//! Keeps the numbers and rules of `docs/wire-format.md` (version 1) honest: each test computes
//! a figure or a rule from the code and compares it with what the document states, and decodes
//! the published vectors with only what `tests/vectors/README.md` publishes (module, delta base,
//! signing key).

mod common;

use mielin_cells::migration::{
    key_id, verify_v1, DecodeOptions, DnaMap, Ed25519Signer, EncodeOptions, EpochTable,
    MigrationSnapshot, StateEncoding, TrustList, CHUNK_SIZE, FLAG_SIGNED, HEADER_LEN, TRAILER_LEN,
};
use mielin_cells::{sha256, Agent, AgentId, CellError, DecodeError, Dna, Policy, SignatureError};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// The rows of the first Markdown table after the line containing `marker`, as cells.
fn table_after(doc: &str, marker: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the document"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

/// The value after `label` on its line of the vectors' README, as bytes (hex, spaces ignored).
fn published_hex(readme: &str, label: &str) -> Vec<u8> {
    let line = readme
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} in tests/vectors/README.md"));
    let digits: String = line[line.find(label).unwrap() + label.len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_hexdigit())
        .take_while(|c| c.is_ascii_hexdigit() || *c == ' ')
        .filter(|c| *c != ' ')
        .collect();
    (0..digits.len() / 2)
        .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// The smallest snapshot there is: the 8-byte empty module, no memory, no globals, a policy
/// whose every field encodes in one byte, timestamp 0, no source node.
fn smallest_agent() -> Agent<Vec<u8>> {
    let dna = Dna::new(EMPTY_MODULE.to_vec()).unwrap();
    let mut agent = Agent::with_id(AgentId::from_bytes([0; 16]), dna);
    agent.set_policy(Policy::new(0, 0, &[]).unwrap());
    agent
}

fn encode(agent: &Agent<Vec<u8>>, flags: u16, signer: &Ed25519Signer) -> Vec<u8> {
    let snapshot = MigrationSnapshot::capture_at(agent, None, 0);
    let state = match flags & 0x6 {
        0 => StateEncoding::Raw,
        2 => StateEncoding::Chunked,
        _ => StateEncoding::Delta { base: &[] },
    };
    let bytes = snapshot
        .serialize_with(&EncodeOptions {
            dna_by_reference: flags & 1 != 0,
            state,
            signer: (flags & FLAG_SIGNED != 0).then_some((signer as _, 1)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), flags);
    bytes
}

#[test]
fn smallest_valid_snapshot_per_flag_combination() {
    let doc = read("docs/wire-format.md");
    let rows = table_after(&doc, "Smallest valid snapshots");
    assert_eq!(rows.len(), 12, "one row per valid flag combination");
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let agent = smallest_agent();
    let mut store = DnaMap::new();
    store.insert(agent.dna());
    let opts = DecodeOptions {
        dna_store: Some(&store),
        base_state: Some(&[]),
        ..Default::default()
    };
    for row in rows {
        let flags = u16::from_str_radix(row[0].trim_start_matches("0x"), 16).unwrap();
        let stated: usize = row[row.len() - 1].parse().unwrap();
        let bytes = encode(&agent, flags, &signer);
        assert_eq!(
            bytes.len(),
            stated,
            "flags {flags:#06x}: the document says {stated}"
        );
        // It decodes, and every field is at its shortest encoding, so nothing valid is shorter:
        // each byte less than the stated size is refused, whatever the bytes.
        let decoded = MigrationSnapshot::deserialize_with(&bytes, &opts).unwrap();
        assert_eq!(decoded.restore().unwrap().dna().binary(), EMPTY_MODULE);
    }
    // The default policy's latency limit (u32::MAX) takes 5 bytes instead of 1.
    let mut default_policy = smallest_agent();
    default_policy.set_policy(Policy::default());
    assert_eq!(encode(&default_policy, 0, &signer).len(), 108);
    assert!(doc.contains("With the default policy, 108 bytes"));
}

#[test]
fn minimum_lengths_and_their_errors() {
    let doc = read("docs/wire-format.md");
    assert_eq!(HEADER_LEN + TRAILER_LEN, 40);
    assert!(doc.contains("**Length**: at least 40 bytes (`DecodeError::TooShort`)"));
    // 39 bytes: TooShort, whatever they hold.
    assert!(matches!(
        MigrationSnapshot::view(&[0u8; 39]),
        Err(CellError::DeserializationFailed(DecodeError::TooShort {
            needed: 40,
            found: 39
        }))
    ));
    // A signed snapshot of 40 to 119 bytes with a correct header and trailer: the 80-byte
    // signature block does not fit, UnexpectedEnd.
    assert!(doc.contains("signed snapshot of 40 to 119 bytes"));
    for len in 40..120 {
        let mut bytes = vec![0u8; len];
        bytes[..4].copy_from_slice(b"MCSN");
        bytes[4] = 1;
        bytes[6] = FLAG_SIGNED as u8;
        common::reseal(&mut bytes);
        assert_eq!(
            MigrationSnapshot::view(&bytes).unwrap_err(),
            CellError::DeserializationFailed(DecodeError::UnexpectedEnd),
            "{len} bytes"
        );
    }
}

/// A hand-built version-1 snapshot (the layout of the document, not the library's encoder):
/// flags, the empty module carried or by reference, `state` as field 4's bytes.
fn hand_built(flags: u16, state: &[u8]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut b = b"MCSN\x01\x00".to_vec();
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&[0x22; 16]); // agent_id
    b.extend_from_slice(&sha256(EMPTY_MODULE)); // dna_hash
    if flags & 1 == 0 {
        varint(&mut b, EMPTY_MODULE.len() as u64);
        b.extend_from_slice(EMPTY_MODULE);
    } else {
        b.push(0);
    }
    varint(&mut b, state.len() as u64); // field 4's length prefix covers chunked/delta data
    b.extend_from_slice(state);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // globals, battery, latency, archs, time, source
    let digest = sha256(&b);
    b.extend_from_slice(&digest);
    b
}

fn decode_state(bytes: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>, CellError> {
    let opts = DecodeOptions {
        base_state: base,
        ..Default::default()
    };
    MigrationSnapshot::deserialize_with(bytes, &opts)
        .map(|s| s.restore().unwrap().wasm_state().to_vec())
}

fn bad_chunk() -> Result<Vec<u8>, CellError> {
    Err(CellError::DeserializationFailed(DecodeError::BadChunk))
}

#[test]
fn chunked_memory_rules() {
    // Inside field 4: varint length, then chunks. 5000 bytes: a raw 4096-byte chunk of 1s,
    // then a zero chunk of 904 bytes.
    let mut state = vec![0x88, 0x27, 0x01];
    state.extend_from_slice(&[1; CHUNK_SIZE]);
    state.push(0x00);
    let mut memory = vec![1u8; CHUNK_SIZE];
    memory.resize(5000, 0);
    assert_eq!(decode_state(&hand_built(0x2, &state), None), Ok(memory));

    // An over-long varint inside chunked memory is BadVarint (not NonCanonical).
    assert_eq!(
        decode_state(&hand_built(0x2, &[0x80, 0x00]), None),
        Err(CellError::DeserializationFailed(DecodeError::BadVarint))
    );
    // An unknown chunk tag, a raw chunk of zeros, bytes after the last chunk: BadChunk.
    assert_eq!(
        decode_state(&hand_built(0x2, &[0x01, 0x03, 0x07]), None),
        bad_chunk()
    );
    assert_eq!(
        decode_state(&hand_built(0x2, &[0x01, 0x01, 0x00]), None),
        bad_chunk()
    );
    assert_eq!(
        decode_state(&hand_built(0x2, &[0x01, 0x00, 0x00]), None),
        bad_chunk()
    );
}

#[test]
fn lz4_blocks_have_no_size_prefix_and_end_of_block_rules_are_not_enforced() {
    // 16 bytes of 'a': one sequence (1 literal, offset 1, match of 15), then a last sequence
    // with no literals. LZ4's end-of-block rules (last 5 bytes literals, last match starting at
    // least 12 bytes before the end) are broken; lz4_flex decodes it, and so must a decoder.
    let block = [0x1b, b'a', 0x01, 0x00, 0x00];
    let mut state = vec![16, 0x02, block.len() as u8];
    state.extend_from_slice(&block);
    let bytes = hand_built(0x2, &state);
    assert_eq!(decode_state(&bytes, None), Ok(vec![b'a'; 16]));
    // With lz4_flex's 4-byte size prefix in front of the block, it is not an LZ4 block.
    let mut prefixed = vec![16, 0x02, block.len() as u8 + 4, 16, 0, 0, 0];
    prefixed.extend_from_slice(&block);
    assert_eq!(decode_state(&hand_built(0x2, &prefixed), None), bad_chunk());
    // A block that decompresses to fewer bytes than the chunk: BadChunk.
    let short = [0x1a, b'a', 0x01, 0x00, 0x00]; // 15 bytes
    let mut state = vec![16, 0x02, short.len() as u8];
    state.extend_from_slice(&short);
    assert_eq!(decode_state(&hand_built(0x2, &state), None), bad_chunk());
}

fn delta(base: &[u8], len: u64, entries: &[(u64, &[u8])]) -> Vec<u8> {
    let mut d = sha256(base).to_vec();
    assert!(len < 0x4000);
    d.extend_from_slice(&[(len as u8 & 0x7f) | if len >= 0x80 { 0x80 } else { 0 }]);
    if len >= 0x80 {
        d.push((len >> 7) as u8);
    }
    d.push(entries.len() as u8);
    for (i, chunk) in entries {
        d.push(*i as u8);
        d.extend_from_slice(chunk);
    }
    d
}

#[test]
fn delta_rules() {
    let base = vec![5u8; 100]; // one chunk, shorter than 4 KiB
    let grown = |extra: &[u8]| {
        let mut m = base.clone();
        m.resize(CHUNK_SIZE, 0);
        m.extend_from_slice(extra);
        m
    };
    let dec = |d: &[u8]| decode_state(&hand_built(0x4, d), Some(&base));

    // Growing by an all-zero chunk: chunk 1 lies past the base, so it is listed, as `00`.
    let d = delta(&base, 2 * CHUNK_SIZE as u64, &[(1, &[0x00])]);
    assert_eq!(dec(&d), Ok(grown(&[0; CHUNK_SIZE])));
    // ... and leaving it out is refused (every chunk past the base is listed): UnexpectedEnd
    // when `count` cannot cover the chunks past the base, BadChunk when an index skips one.
    assert_eq!(
        dec(&delta(&base, 2 * CHUNK_SIZE as u64, &[])),
        Err(CellError::DeserializationFailed(DecodeError::UnexpectedEnd))
    );
    let three = 3 * CHUNK_SIZE as u64;
    assert_eq!(
        dec(&delta(&base, three, &[(2, &[0x00]), (2, &[0x00])])),
        bad_chunk()
    );
    assert_eq!(
        dec(&delta(&base, three, &[(1, &[0x00]), (2, &[0x00])])).map(|m| m.len()),
        Ok(3 * CHUNK_SIZE)
    );
    // Chunk 0 grows within its chunk: the base read with zeros past its end is unchanged.
    let d = delta(&base, 200, &[]);
    let mut m = base.clone();
    m.resize(200, 0);
    assert_eq!(dec(&d), Ok(m));
    // A shorter memory: the base truncated.
    assert_eq!(dec(&delta(&base, 10, &[])), Ok(vec![5; 10]));
    // A listed chunk equal to the base's (read with zeros past its end): BadChunk.
    let mut same = vec![0x01];
    same.extend_from_slice(&base);
    same.resize(1 + 200, 0);
    assert_eq!(dec(&delta(&base, 200, &[(0, &same)])), bad_chunk());
    // Index out of range (past the new length), and unsorted or repeated indices: BadChunk.
    assert_eq!(dec(&delta(&base, 100, &[(1, &[0x00])])), bad_chunk());
    let two = 3 * CHUNK_SIZE as u64;
    assert_eq!(
        dec(&delta(&base, two, &[(2, &[0x00]), (1, &[0x00])])),
        bad_chunk()
    );
    assert_eq!(
        dec(&delta(&base, two, &[(1, &[0x00]), (1, &[0x00])])),
        bad_chunk()
    );
    // An unknown chunk tag: BadChunk.
    assert_eq!(dec(&delta(&base, 100, &[(0, &[0x09])])), bad_chunk());
    // Another base: WrongDeltaBase; none: DeltaWithoutBase.
    let other = vec![6u8; 100];
    assert!(matches!(
        decode_state(&hand_built(0x4, &delta(&base, 100, &[])), Some(&other)),
        Err(CellError::DeserializationFailed(
            DecodeError::WrongDeltaBase { .. }
        ))
    ));
    assert_eq!(
        decode_state(&hand_built(0x4, &delta(&base, 100, &[])), None),
        Err(CellError::DeserializationFailed(
            DecodeError::DeltaWithoutBase
        ))
    );
}

#[test]
fn vectors_decode_from_published_files_alone() {
    let readme = read("tests/vectors/README.md");
    let seed = published_hex(&readme, "secret key (seed):");
    let public = published_hex(&readme, "public key:");
    let id = published_hex(&readme, "key id:");
    let signer = Ed25519Signer::from_secret(&seed.clone().try_into().unwrap());
    assert_eq!(signer.verifying_key().to_bytes().to_vec(), public);
    assert_eq!(key_id(&signer.verifying_key()).to_vec(), id);
    assert_eq!(id, sha256(&public)[..8]);

    let dir = root().join("tests/vectors");
    let module = std::fs::read(dir.join("add.wasm")).unwrap();
    let base = std::fs::read(dir.join("v1-delta-base.memory")).unwrap();
    assert_eq!(
        published_hex(&readme, "v1-delta-base.memory SHA-256:"),
        sha256(&base)
    );
    assert_eq!(published_hex(&readme, "add.wasm SHA-256:"), sha256(&module));
    let dna = Dna::new(module).unwrap();
    let mut store = DnaMap::new();
    store.insert(&dna);
    let opts = DecodeOptions {
        dna_store: Some(&store),
        base_state: Some(&base),
        ..Default::default()
    };
    let full =
        MigrationSnapshot::deserialize(&std::fs::read(dir.join("v1-flags-0000.bin")).unwrap())
            .unwrap();
    for flags in [
        0x0u16, 0x1, 0x2, 0x3, 0x4, 0x5, 0x8, 0x9, 0xa, 0xb, 0xc, 0xd,
    ] {
        let bytes = std::fs::read(dir.join(format!("v1-flags-{flags:04x}.bin"))).unwrap();
        let decoded = MigrationSnapshot::deserialize_with(&bytes, &opts).unwrap();
        assert_eq!(decoded, full, "{flags:#06x}");
        if flags & FLAG_SIGNED != 0 {
            // Plain Ed25519 (RFC 8032, no prehash, no context) over the 32-byte SHA-256 of
            // everything before the signature; sequence number 1.
            let n = bytes.len() - TRAILER_LEN - 64;
            let digest = sha256(&bytes[..n]);
            let sig = ed25519_signature(&bytes[n..n + 64]);
            signer.verifying_key().verify_strict(&digest, &sig).unwrap();
            assert_eq!(&bytes[n - 16..n - 8], &id[..]);
            assert_eq!(&bytes[n - 8..n], &1u64.to_le_bytes());
            assert_eq!(verify_v1(&bytes, &signer.verifying_key()).unwrap(), 1);
            // Trust lists take version 2 only: a version-1 signature binds no target or epoch.
            let node = mielin_cells::NodeId::from_bytes([0xa5; 16]);
            let mut trust = TrustList::<1, _>::new(node, EpochTable::<1>::new());
            trust
                .trust(
                    mielin_cells::NodeId::from_bytes([0x5a; 16]),
                    signer.verifying_key(),
                )
                .unwrap();
            assert_eq!(
                trust.deserialize(&bytes, &opts, 0).unwrap_err(),
                CellError::SignatureRejected(SignatureError::Unbound)
            );
        }
    }
    // v1-full's module is the 41-byte `add` module published as add.wasm.
    let v1_full =
        MigrationSnapshot::deserialize(&std::fs::read(dir.join("v1-full.bin")).unwrap()).unwrap();
    assert_eq!(v1_full.restore().unwrap().dna().binary(), common::ADD_WASM);
    assert_eq!(common::ADD_WASM.len(), 41);
}

fn ed25519_signature(bytes: &[u8]) -> ed25519_dalek::Signature {
    ed25519_dalek::Signature::from_bytes(&bytes.try_into().unwrap())
}

#[test]
fn default_policy_and_battery_range_are_stated() {
    let doc = read("docs/wire-format.md");
    let p = Policy::default();
    assert_eq!((p.min_battery_percent, p.max_latency_ms), (0, u32::MAX));
    assert!(p.preferred_architectures.is_empty());
    assert!(doc
        .contains("The *default policy* is `min_battery_percent` 0,\n`max_latency_ms` 4294967295"));
    // Any byte decodes as a battery minimum; above 100 no node can meet it.
    let mut agent = smallest_agent();
    agent.set_policy(Policy::new(255, 0, &[]).unwrap());
    let bytes = encode(&agent, 0, &Ed25519Signer::from_secret(&[7; 32]));
    let decoded = MigrationSnapshot::deserialize(&bytes).unwrap();
    assert_eq!(decoded.restore().unwrap().policy().min_battery_percent, 255);
}

/// Where the checks that the document's steps 9 to 13 name fall, relative to each other.
#[test]
fn check_order_of_reference_policy_dna_and_memory() {
    let replace_tail = |mut b: Vec<u8>, tail: &[u8]| {
        // The six one-byte fields before the trailer: globals, battery, latency, archs, time,
        // source. Swap in `tail` (which may be longer) and reseal.
        b.truncate(b.len() - TRAILER_LEN - 6);
        b.extend_from_slice(tail);
        b.extend_from_slice(&[0; TRAILER_LEN]);
        common::reseal(&mut b);
        b
    };
    let unknown_arch = [0, 0, 0, 1, 0xee, 0, 0]; // one architecture tag, 0xee
                                                 // By reference, yet carrying a binary (step 9) and an unknown architecture (step 10):
                                                 // BinaryWithReference comes first.
    let mut b = hand_built(0x0, &[]); // carries the binary
    b[6] = 0x1; // FLAG_DNA_BY_REFERENCE (the trailer is recomputed below)
    let b = replace_tail(b, &unknown_arch);
    assert_eq!(
        MigrationSnapshot::deserialize(&b).unwrap_err(),
        CellError::DeserializationFailed(DecodeError::BinaryWithReference)
    );
    // An unknown architecture (step 10) before a DNA the receiver lacks (step 12).
    let b = replace_tail(hand_built(0x1, &[]), &unknown_arch);
    assert!(matches!(
        MigrationSnapshot::deserialize(&b).unwrap_err(),
        CellError::DeserializationFailed(DecodeError::UnknownArchitecture { .. })
    ));
    // A DNA the receiver lacks (step 12) before bad chunked memory (step 13).
    let b = hand_built(0x3, &[0x01, 0x07]);
    assert!(matches!(
        MigrationSnapshot::deserialize(&b).unwrap_err(),
        CellError::DnaNotFound { .. }
    ));
    // Delta memory without a base: DeltaWithoutBase, after the DNA check passed.
    assert_eq!(
        decode_state(&hand_built(0x4, &[0; 34]), None),
        Err(CellError::DeserializationFailed(
            DecodeError::DeltaWithoutBase
        ))
    );
}

/// A length of 2^32 or more: `UnexpectedEnd` on a 64-bit decoder (`BadVarint` on 32-bit).
#[test]
fn huge_length_prefix() {
    let mut b = b"MCSN\x01\x00\x00\x00".to_vec();
    b.extend_from_slice(&[0x22; 16]);
    b.extend_from_slice(&sha256(EMPTY_MODULE));
    b.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10]); // wasm_binary length 2^32
    b.extend_from_slice(&[0; 64]);
    b.extend_from_slice(&[0; TRAILER_LEN]);
    common::reseal(&mut b);
    let expected = if cfg!(target_pointer_width = "64") {
        DecodeError::UnexpectedEnd
    } else {
        DecodeError::BadVarint
    };
    assert_eq!(
        MigrationSnapshot::view(&b).unwrap_err(),
        CellError::DeserializationFailed(expected)
    );
}

/// Version 2's and version 3's smallest sizes, as `docs/wire-format.md` states them: each one
/// built, decoded, and stated in the text.
#[test]
fn smallest_sizes_of_versions_2_and_3() {
    use mielin_cells::migration::{Container, DecodeLimits, Route};
    let doc = read("docs/wire-format.md");
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let agent = smallest_agent();
    let mut store = DnaMap::new();
    store.insert(agent.dna());
    let opts = DecodeOptions {
        dna_store: Some(&store),
        ..Default::default()
    };
    let route = Route {
        target: mielin_cells::NodeId::from_bytes([0x22; 16]),
        epoch: 1,
    };
    let snapshot = MigrationSnapshot::capture_at(&agent, None, 0).with_route(route);
    let size = |version: u16, by_ref: bool, signed: bool| {
        let bytes = snapshot
            .serialize_with(&EncodeOptions {
                version: Some(version),
                dna_by_reference: by_ref,
                signer: signed.then_some((&signer as _, 1)),
                ..Default::default()
            })
            .unwrap();
        MigrationSnapshot::deserialize_with(&bytes, &opts).unwrap();
        bytes.len()
    };
    assert_eq!(size(2, true, false), 196);
    assert_eq!(size(2, false, false), 204);
    assert_eq!(size(2, false, true), 276);
    assert!(doc.contains(
        "The\nsmallest that decodes is 196 bytes: DNA by reference, no memory, and the shortest tail, 4 bytes"
    ));
    assert!(doc.contains("204 with the 8-byte empty module, 276 of\nthose signed"));
    assert_eq!(
        std::fs::read(root().join("tests/vectors/v2-minimal.bin"))
            .unwrap()
            .len(),
        208
    );
    // Nothing shorter than 196 decodes as version 2: 192 is the frame's minimum, and a tail
    // is at least 4 bytes (battery, latency, two counts).
    assert_eq!(size(3, true, false), 208);
    assert_eq!(size(3, false, false), 228);
    assert_eq!(size(3, false, true), 228 + 72);
    assert_eq!(
        std::fs::read(root().join("tests/vectors/v3-minimal.bin"))
            .unwrap()
            .len(),
        232
    );
    assert!(doc.contains("with an empty memory section it is 208 (DNA by reference), and with\nthe 8-byte empty module 228; `v3-minimal.bin` is 232"));
    // By manifest, by reference: the header, one table entry, a 4-byte tail, the trailer.
    let by_ref = snapshot
        .serialize_with(&EncodeOptions {
            version: Some(3),
            dna_by_reference: true,
            ..Default::default()
        })
        .unwrap();
    let mut p = common::v3ref::split(&by_ref);
    p.sections
        .retain(|s| s.0 == mielin_cells::migration::SECTION_TAIL);
    p.header[6] |= 0x02;
    let manifest = common::v3ref::join(&p);
    assert_eq!(manifest.len(), 196);
    let c = Container::new_checked(&manifest[..], &DecodeLimits::DEFAULT).unwrap();
    c.check_trailer().unwrap();
    assert!(doc.contains("The smallest container\nthat decodes is 196 bytes"));
    assert!(matches!(
        Container::new_checked(&manifest[..179], &DecodeLimits::DEFAULT),
        Err(DecodeError::TooShort { needed: 180, .. })
    ));
    assert!(doc.contains("at least 148 + 32 = 180\n   bytes (`TooShort`)"));
}

/// The trust list's order at step 5 and the `FromTheFuture` boundary, as the text states them:
/// an unknown key is `UnknownKey` whatever its signature (it is never verified), and a
/// timestamp exactly `skew` ahead is accepted, one second more refused.
#[test]
fn trust_list_order_and_the_future_boundary() {
    use mielin_cells::migration::{Route, DEFAULT_MAX_SKEW_SECS};
    let doc = read("docs/wire-format.md");
    assert!(doc.contains("`timestamp > now + skew` is `FromTheFuture`"));
    assert!(doc.contains("`timestamp == now + skew` is accepted"));
    assert!(doc.contains("so an unknown key is\n   `UnknownKey`, not `Invalid`"));
    let source = mielin_cells::NodeId::from_bytes([0x5a; 16]);
    let target = mielin_cells::NodeId::from_bytes([0xa5; 16]);
    let known = Ed25519Signer::from_secret(&[7; 32]);
    let unknown = Ed25519Signer::from_secret(&[8; 32]);
    let now = 1_790_000_000;
    let bytes = |signer: &Ed25519Signer, at: u64, epoch: u64| {
        MigrationSnapshot::capture_at(&smallest_agent(), Some(source), at)
            .with_route(Route { target, epoch })
            .serialize_with(&EncodeOptions {
                signer: Some((signer, epoch)),
                ..Default::default()
            })
            .unwrap()
    };
    let mut t = TrustList::<4, _>::new(target, EpochTable::<4>::new());
    t.trust(source, known.verifying_key()).unwrap();
    let mut store = DnaMap::new();
    store.insert(smallest_agent().dna());
    let opts = DecodeOptions {
        dna_store: Some(&store),
        ..Default::default()
    };
    // An unknown key with its signature broken too: UnknownKey.
    let mut b = bytes(&unknown, now, 1);
    let at = b.len() - 32 - 1;
    b[at] ^= 1;
    common::reseal_v2(&mut b);
    assert!(matches!(
        t.deserialize(&b, &opts, now),
        Err(CellError::SignatureRejected(
            SignatureError::UnknownKey { .. }
        ))
    ));
    // The boundary.
    let late = bytes(&known, now + DEFAULT_MAX_SKEW_SECS + 1, 1);
    assert!(matches!(
        t.deserialize(&late, &opts, now),
        Err(CellError::SignatureRejected(
            SignatureError::FromTheFuture { .. }
        ))
    ));
    let edge = bytes(&known, now + DEFAULT_MAX_SKEW_SECS, 1);
    t.deserialize(&edge, &opts, now).unwrap();
}
