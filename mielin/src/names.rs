//! Names for node and agent ids. An agent's id is derived from its name (the first 16 bytes of
//! its SHA-256), so every node and command agrees on it; the names an agent was deployed or
//! addressed by are kept in `DATA/names` for the logs and `mielin agents`.

use crate::files::{read_bounded, write_atomic};
use mielin_cells::quic::{from_hex, to_hex};
use mielin_cells::{AgentId, NodeId};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// At most this many agent names are kept (and the file read is bounded accordingly).
const MAX_NAMES: usize = 4096;

/// The id of the agent called `name`.
pub fn agent_id(name: &str) -> AgentId {
    let d = mielin_cells::sha256(name.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    AgentId::from_bytes(id)
}

/// The sender id of messages from `mielin send`: the id of a name no agent can have (names
/// are `[A-Za-z0-9._-]`). Replies agents send to it are logged and listed by `mielin agents`.
pub fn operator_id() -> AgentId {
    agent_id("mielin/operator")
}

/// Names for ids.
#[derive(Default)]
pub struct Names {
    pub nodes: BTreeMap<NodeId, String>,
    agents: BTreeMap<AgentId, String>,
    file: Option<PathBuf>,
}

impl Names {
    /// Names kept in `file` (an absent or unreadable file: none; a bad line is skipped).
    pub fn load(file: PathBuf) -> Names {
        let mut n = Names::default();
        if let Ok(b) = read_bounded(&file, (MAX_NAMES * 100) as u64) {
            for line in String::from_utf8_lossy(&b).lines().take(MAX_NAMES) {
                if let Some((id, name)) = line.split_once(' ') {
                    if let Some(id) = from_hex(id).and_then(|v| <[u8; 16]>::try_from(v).ok()) {
                        if mielin::spec::check_name(name).is_ok()
                            && agent_id(name) == AgentId::from_bytes(id)
                        {
                            n.agents.insert(AgentId::from_bytes(id), name.to_string());
                        }
                    }
                }
            }
        }
        n.file = Some(file);
        n
    }

    pub fn node(&self, n: NodeId) -> String {
        self.nodes
            .get(&n)
            .cloned()
            .unwrap_or_else(|| to_hex(&n.as_bytes()[..4]))
    }

    pub fn agent(&self, a: AgentId) -> String {
        self.agents
            .get(&a)
            .cloned()
            .unwrap_or_else(|| to_hex(&a.as_bytes()[..4]))
    }

    pub fn node_named(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().find(|(_, v)| *v == name).map(|(k, _)| *k)
    }

    /// The id of `name` (or of 32 hex digits), remembering the name.
    pub fn agent_named(&mut self, name: &str) -> Result<AgentId, String> {
        if name.len() == 32 {
            if let Some(b) = from_hex(name).and_then(|v| <[u8; 16]>::try_from(v).ok()) {
                return Ok(AgentId::from_bytes(b));
            }
        }
        mielin::spec::check_name(name).map_err(|e| format!("agent {e}"))?;
        let id = agent_id(name);
        if !self.agents.contains_key(&id) && self.agents.len() < MAX_NAMES {
            self.agents.insert(id, name.to_string());
            self.save();
        }
        Ok(id)
    }

    fn save(&self) {
        let Some(f) = &self.file else { return };
        let text: String = self
            .agents
            .iter()
            .map(|(id, n)| format!("{} {n}\n", to_hex(id.as_bytes())))
            .collect();
        if let Err(e) = write_atomic(f, text.as_bytes()) {
            tracing::warn!("saving agent names to {}: {e}", f.display());
        }
    }
}
