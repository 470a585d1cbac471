//! The inbox section (`mesh::Inbox::decode`, `docs/wire-format.md`, "Inbox section"): any bytes
//! decode to an error or to an inbox that re-encodes to exactly those bytes (one encoding), and
//! whatever decodes keeps working: messages offered, sent, taken and acknowledged without a
//! panic, within the limits.
#![no_main]

use mielin_cells::mesh::{Inbox, InboxLimits};
use mielin_cells::{AgentId, NodeId};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut inbox) = Inbox::decode(data) else {
        return;
    };
    assert_eq!(
        inbox.to_bytes(),
        data,
        "does not re-encode to the same bytes"
    );
    let limits = InboxLimits::default();
    let a = AgentId::from_bytes([1; 16]);
    let before = inbox.waiting();
    let d = inbox.offer(NodeId::from_bytes([2; 16]), a, [3; 16], 1, b"x", &limits);
    assert!(inbox.waiting() <= before + 1, "{d:?}");
    let _ = inbox.send(a, b"y", &limits);
    let mut out = Vec::new();
    inbox.outgoing(&mut |m| out.push((m.to, m.seq)));
    for (to, seq) in out {
        inbox.acked(to, seq);
    }
    while inbox.pop().is_some() {}
    assert_eq!(Inbox::decode(&inbox.to_bytes()), Ok(inbox));
});
