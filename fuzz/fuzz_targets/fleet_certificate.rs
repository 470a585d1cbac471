//! Fleet membership (`mesh::fleet_certificate`) on arbitrary bytes, beside the golden vectors
//! of `tests/certificates/fleet-*.der`. The first byte picks what the rest replaces: 0 the node
//! certificate, 1 the revocation list, 2 the fleet certificate (the anchor). It never panics,
//! and nothing but the issued bytes admits a member: an accepted certificate or list is the
//! vector itself (no other encoding of a signed structure passes), and an accepted anchor has
//! the fleet's key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mielin_cells::mesh::fleet_certificate::FleetAnchor;

const CA: &[u8] = include_bytes!("../../tests/certificates/fleet-ca.der");
const NODE: &[u8] = include_bytes!("../../tests/certificates/fleet-node.der");
const CRL: &[u8] = include_bytes!("../../tests/certificates/fleet-crl.der");
/// Inside the node certificate's validity and the list's (tests/fleet_certificates.rs).
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let golden = FleetAnchor::from_der(CA).expect("the golden anchor");
    match mode % 3 {
        0 => {
            if let Ok(m) = golden.verify(bytes, CRL, NOW) {
                assert_eq!(bytes, NODE, "another certificate admitted: {m:?}");
            }
        }
        1 => {
            if golden.verify(NODE, bytes, NOW).is_ok() {
                assert_eq!(bytes, CRL, "another revocation list accepted");
            }
        }
        _ => {
            if let Ok(anchor) = FleetAnchor::from_der(bytes) {
                if anchor.verify(NODE, CRL, NOW).is_ok() {
                    assert_eq!(anchor.key(), golden.key(), "another key's anchor admitted");
                }
            }
        }
    }
});
