//! Placement: which nodes can run an agent, from the imports its DNA needs.
//!
//! A node announces its [`NodeStatus`] and the host functions it provides ([`Announce`]); an
//! agent's required imports come from its DNA's import section, read by a small bounded reader
//! ([`imports`]; no `wasmparser` needed, so it works without `alloc`). [`select`] runs the
//! [`Policy`] over the nodes that provide every import and names, for each node it refuses, the
//! import it lacks or the rule it breaks.

use super::MeshError;
use crate::{NodeId, NodeStatus, Policy, PolicyViolation};

/// A host function: the import's module and name, e.g. `("mesh", "send")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostFn<'a> {
    /// The import's module.
    pub module: &'a str,
    /// The import's name.
    pub name: &'a str,
}

/// What a node tells the others about itself, for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce<'a> {
    /// The node.
    pub node: NodeId,
    /// Battery, latency, architecture.
    pub status: NodeStatus,
    /// The host functions it links into agents.
    pub host_functions: &'a [HostFn<'a>],
}

/// Why [`select`] refused a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal<'a> {
    /// The agent imports a function the node does not provide (the first one missing).
    MissingImport(HostFn<'a>),
    /// The node breaks a rule of the policy.
    Policy(PolicyViolation),
}

/// Imports a module may declare before [`imports`] refuses it (a bound on work per module).
pub const MAX_IMPORTS: u32 = 4096;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, MeshError> {
        let (&x, rest) = self.b.split_first().ok_or(MeshError::BadModule)?;
        self.b = rest;
        Ok(x)
    }
    fn leb(&mut self, max_bits: u32) -> Result<u64, MeshError> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let x = self.byte()?;
            if shift >= max_bits {
                return Err(MeshError::BadModule);
            }
            v |= u64::from(x & 0x7f) << shift;
            shift += 7;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
    }
    fn u32(&mut self) -> Result<u32, MeshError> {
        u32::try_from(self.leb(35)?).map_err(|_| MeshError::BadModule)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], MeshError> {
        if n > self.b.len() {
            return Err(MeshError::BadModule);
        }
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(x)
    }
    fn name(&mut self) -> Result<&'a str, MeshError> {
        let n = self.u32()? as usize;
        core::str::from_utf8(self.bytes(n)?).map_err(|_| MeshError::BadModule)
    }
    fn limits(&mut self) -> Result<(), MeshError> {
        let flags = self.byte()?;
        if flags & !0x0f != 0 {
            return Err(MeshError::BadModule);
        }
        self.leb(70)?;
        if flags & 1 != 0 {
            self.leb(70)?;
        }
        if flags & 8 != 0 {
            self.u32()?; // custom page size
        }
        Ok(())
    }
    fn valtype(&mut self) -> Result<(), MeshError> {
        match self.byte()? {
            // (ref null ht) / (ref ht): a heap type follows (s33).
            0x63 | 0x64 => self.leb(35).map(|_| ()),
            _ => Ok(()),
        }
    }
}

/// Calls `f` with every function import of the WebAssembly module `wasm`, in order, and
/// returns how many there are. Reads only the header and the import section (other sections are
/// skipped by their sizes); never allocates and never panics. A malformed module, or one with
/// more than [`MAX_IMPORTS`] imports, is [`MeshError::BadModule`].
pub fn imports<'a>(wasm: &'a [u8], mut f: impl FnMut(HostFn<'a>)) -> Result<u32, MeshError> {
    let mut r = Reader { b: wasm };
    if r.bytes(8).ok() != Some(&b"\0asm\x01\0\0\0"[..]) {
        return Err(MeshError::BadModule);
    }
    let mut functions = 0;
    while !r.b.is_empty() {
        let id = r.byte()?;
        let size = r.u32()? as usize;
        let body = r.bytes(size)?;
        if id != 2 {
            continue;
        }
        let mut s = Reader { b: body };
        let count = s.u32()?;
        if count > MAX_IMPORTS {
            return Err(MeshError::BadModule);
        }
        for _ in 0..count {
            let module = s.name()?;
            let name = s.name()?;
            match s.byte()? {
                0x00 => {
                    s.u32()?;
                    functions += 1;
                    f(HostFn { module, name });
                }
                0x01 => {
                    s.valtype()?;
                    s.limits()?;
                }
                0x02 => s.limits()?,
                0x03 => {
                    s.valtype()?;
                    s.byte()?;
                }
                0x04 => {
                    s.byte()?;
                    s.u32()?;
                }
                _ => return Err(MeshError::BadModule),
            }
        }
        if !s.b.is_empty() {
            return Err(MeshError::BadModule);
        }
    }
    Ok(functions)
}

/// Whether `node` can run an agent with DNA `wasm` under `policy`: every function import
/// provided, then the policy's rules. Names the first missing import.
pub fn check<'a>(
    policy: &Policy,
    wasm: &'a [u8],
    node: &Announce<'_>,
) -> Result<Result<(), Refusal<'a>>, MeshError> {
    let mut missing = None;
    imports(wasm, |imp| {
        if missing.is_none()
            && !node
                .host_functions
                .iter()
                .any(|h| h.module == imp.module && h.name == imp.name)
        {
            missing = Some(imp);
        }
    })?;
    if let Some(m) = missing {
        return Ok(Err(Refusal::MissingImport(m)));
    }
    Ok(policy.check(&node.status).map_err(Refusal::Policy))
}

/// The index of the best node for an agent with DNA `wasm`: among the nodes that provide every
/// import it needs and pass the policy, the one [`Policy::select`] ranks first. `refused` hears
/// about every other node and why. `Ok(None)`: no node fits. Allocation-free.
pub fn select<'a>(
    policy: &Policy,
    wasm: &'a [u8],
    nodes: &[Announce<'_>],
    mut refused: impl FnMut(usize, Refusal<'a>),
) -> Result<Option<usize>, MeshError> {
    let mut best: Option<usize> = None;
    for (i, node) in nodes.iter().enumerate() {
        if let Err(why) = check(policy, wasm, node)? {
            refused(i, why);
            continue;
        }
        best = Some(match best {
            None => i,
            // The policy's own ranking, two at a time (ties keep the earlier node).
            Some(b) => match policy.select(&[nodes[b].status, node.status]) {
                Some(1) => i,
                _ => b,
            },
        });
    }
    Ok(best)
}
