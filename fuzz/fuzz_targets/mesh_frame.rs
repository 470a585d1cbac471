//! Mesh frames on arbitrary bytes: decoding never panics, and a frame that decodes re-encodes to
//! exactly the input (one encoding per frame). Then the bytes are fed to a node, which must not
//! panic whatever the frame says.
#![no_main]

use mielin_cells::mesh::frame::Repr;
use mielin_cells::mesh::{AgentHost, AgentInfo, Config, HostRefusal, MemJournal, MeshError, Node};
use mielin_cells::{AgentId, NodeId};

struct NullHost;
impl AgentHost for NullHost {
    fn describe(&mut self, _: AgentId) -> Option<AgentInfo> {
        Some(AgentInfo {
            dna_hash: [0; 32],
            snapshot_len: 0,
            dna_len: 0,
        })
    }
    fn has_dna(&mut self, h: &[u8; 32]) -> bool {
        h[0] & 1 == 0
    }
    fn stop(&mut self, _: AgentId) {}
    fn capture(&mut self, _: AgentId, _: bool, out: &mut [u8]) -> Result<usize, MeshError> {
        let n = out.len().min(3);
        out[..n].fill(7);
        Ok(n)
    }
    fn prepare(&mut self, _: AgentId, _: u64, _: bool, s: &[u8]) -> Result<(), MeshError> {
        if s.first() == Some(&0) {
            Err(MeshError::HostRefused {
                reason: HostRefusal::Snapshot,
            })
        } else {
            Ok(())
        }
    }
    fn run(&mut self, _: AgentId, _: u64) {}
    fn discard(&mut self, _: AgentId, _: u64) {}
    fn release(&mut self, _: AgentId) {}
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Repr::decode(data) {
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(&mut buf), Ok(data.len()));
        assert_eq!(buf, data);
    }
    // Feed the input as a sequence of frames from two peers to a node that owns one agent.
    let mut host = NullHost;
    let mut node: Node<MemJournal<8>, 8> = Node::new(
        NodeId::from_bytes([1; 16]),
        MemJournal::new(),
        Config::default(),
    );
    let _ = node.start(&mut host, AgentId::from_bytes([0x11; 16]));
    let mut now = 0;
    let mut out = [0u8; 256];
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        let from = NodeId::from_bytes([2 + (i % 2) as u8; 16]);
        let _ = node.handle_frame(&mut host, now, from, chunk);
        now += 50;
        node.handle_timeout(&mut host, now);
        while let Ok(Some(_)) = node.poll_transmit(&mut host, &mut out) {}
    }
});
