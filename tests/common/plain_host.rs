//! A host for mesh tests: keeps the agent as a number (its state), trusts every snapshot, and
//! fails a test that runs an agent without a copy. Included with `#[path]` by the mesh tests.

use mielin_cells::mesh::{AgentHost, AgentInfo, HostRefusal, MeshError};
use mielin_cells::AgentId;
use std::collections::BTreeMap;

/// Keeps the agent as a number (its state); trusts every snapshot.
#[derive(Default, Clone)]
pub struct PlainHost {
    pub owned: Option<u64>,
    pub prepared: BTreeMap<u64, u64>,
    pub running: Option<u64>,
}

impl AgentHost for PlainHost {
    fn describe(&mut self, _: AgentId) -> Option<AgentInfo> {
        self.owned.map(|_| AgentInfo {
            dna_hash: [7; 32],
            snapshot_len: 8,
            dna_len: 0,
        })
    }
    fn has_dna(&mut self, _: &[u8; 32]) -> bool {
        true
    }
    fn stop(&mut self, _: AgentId) {
        self.running = None;
    }
    fn capture(&mut self, _: AgentId, _: bool, out: &mut [u8]) -> Result<usize, MeshError> {
        let v = self.owned.ok_or(MeshError::HostRefused {
            reason: HostRefusal::UnknownAgent,
        })?;
        out[..8].copy_from_slice(&v.to_le_bytes());
        Ok(8)
    }
    fn prepare(&mut self, _: AgentId, e: u64, _: bool, s: &[u8]) -> Result<(), MeshError> {
        let b: [u8; 8] = s.try_into().map_err(|_| MeshError::Truncated)?;
        self.prepared.insert(e, u64::from_le_bytes(b));
        Ok(())
    }
    fn run(&mut self, _: AgentId, epoch: u64) {
        if let Some(v) = self.prepared.remove(&epoch) {
            self.owned = Some(v);
        }
        assert!(self.owned.is_some(), "run without a copy");
        self.running = Some(epoch);
    }
    fn discard(&mut self, _: AgentId, epoch: u64) {
        self.prepared.remove(&epoch);
    }
    fn release(&mut self, _: AgentId) {
        self.owned = None;
        self.running = None;
    }
}
