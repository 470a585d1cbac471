//! An agent's event record (`mesh::cells::Event`, what the QUIC node's `.log` files hold after
//! an agent's saved copy): any bytes decode to an error or to an event that re-encodes to
//! exactly those bytes (one encoding), within `MAX_EVENT_LEN`.
#![no_main]

use mielin_cells::mesh::cells::{Event, MAX_EVENT_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(e) = Event::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    e.encode(&mut out);
    assert_eq!(out, data, "does not re-encode to the same bytes");
    assert!(out.len() <= MAX_EVENT_LEN);
    assert_eq!(Event::decode(&out).ok(), Some(e));
});
