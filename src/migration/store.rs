//! [`DnaStore`]: binaries a node already holds, so that a snapshot can name its DNA by hash
//! instead of carrying it (wire flag `DNA_BY_REFERENCE`).

use crate::{Capacity, CellError, Dna};

/// Binaries a node holds, looked up by their SHA-256.
///
/// The decoder re-hashes whatever `get` returns before using it, so a store that returns the
/// wrong bytes causes an integrity error, never a different agent.
pub trait DnaStore {
    /// The binary whose SHA-256 is `hash`, if this node holds it.
    fn get(&self, hash: &[u8; 32]) -> Option<&[u8]>;
}

/// A fixed-capacity store of borrowed binaries (for example modules in flash); no allocation.
#[derive(Debug, Clone, Default)]
pub struct DnaSlots<'a, const N: usize> {
    entries: heapless::Vec<([u8; 32], &'a [u8]), N>,
}

impl<'a, const N: usize> DnaSlots<'a, N> {
    /// An empty store.
    pub const fn new() -> Self {
        DnaSlots {
            entries: heapless::Vec::new(),
        }
    }

    /// Holds `dna` (once; adding the same DNA again changes nothing). Full is
    /// [`CellError::CapacityExceeded`].
    pub fn insert(&mut self, dna: &Dna<&'a [u8]>) -> Result<(), CellError> {
        if self.get(dna.hash()).is_some() {
            return Ok(());
        }
        self.entries
            .push((*dna.hash(), dna.clone().into_binary()))
            .map_err(|_| CellError::CapacityExceeded {
                what: Capacity::DnaStore,
                capacity: N,
                requested: N + 1,
            })
    }
}

impl<const N: usize> DnaStore for DnaSlots<'_, N> {
    fn get(&self, hash: &[u8; 32]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(h, _)| h == hash)
            .map(|(_, binary)| *binary)
    }
}

/// An in-memory store that owns its binaries.
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
#[derive(Debug, Clone, Default)]
pub struct DnaMap {
    map: alloc::collections::BTreeMap<[u8; 32], alloc::vec::Vec<u8>>,
}

#[cfg(feature = "alloc")]
impl DnaMap {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds `dna`.
    pub fn insert<B: AsRef<[u8]>>(&mut self, dna: &Dna<B>) {
        self.map
            .entry(*dna.hash())
            .or_insert_with(|| dna.binary().to_vec());
    }

    /// How many binaries it holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(feature = "alloc")]
impl DnaStore for DnaMap {
    fn get(&self, hash: &[u8; 32]) -> Option<&[u8]> {
        self.map.get(hash).map(|b| b.as_slice())
    }
}
