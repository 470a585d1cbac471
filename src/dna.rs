//! [`Dna`]: an agent's WebAssembly binary and its SHA-256, computed once.

use crate::{sha256, CellError, DigestPrefix, Digested};
use core::fmt;
use core::hash::{Hash, Hasher};

/// The four bytes every WebAssembly module starts with: `\0asm`.
pub const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// The WebAssembly binary-format version this crate accepts (the core module format, 1).
pub const WASM_VERSION: u32 = 1;

/// An agent's DNA: a WebAssembly module and the SHA-256 of its bytes.
///
/// `B` is the storage: `Vec<u8>` for an owned module, `&[u8]` for one borrowed from flash or from
/// a received snapshot, or anything else that is `AsRef<[u8]>`. The hash is computed once, in
/// [`Dna::new`], and the binary cannot be changed afterwards, so [`Dna::hash`] is always the
/// hash of [`Dna::binary`] unless the memory holding it is corrupted (which [`Dna::verify`]
/// detects).
///
/// Two `Dna`s are equal when their hashes are equal, whatever their storage.
///
/// ```
/// use mielin_cells::{sha256, Dna};
///
/// static MODULE: [u8; 8] = *b"\0asm\x01\0\0\0"; // e.g. in flash
/// let borrowed = Dna::new(&MODULE[..]).unwrap();
/// let owned = Dna::new(MODULE.to_vec()).unwrap();
/// assert_eq!(borrowed, owned); // same hash, different storage
/// assert_eq!(borrowed.hash(), &sha256(&MODULE));
/// assert!(borrowed.verify().is_ok());
/// ```
#[derive(Clone)]
pub struct Dna<B> {
    binary: B,
    hash: [u8; 32],
}

impl<B: AsRef<[u8]>> Dna<B> {
    /// Checks that `binary` starts with a WebAssembly header (magic `\0asm`, version 1) and hashes
    /// it.
    ///
    /// Only the 8-byte header is checked: validating the whole module is the runtime's job.
    ///
    /// ```
    /// use mielin_cells::{CellError, Dna};
    /// let dna = Dna::new(&b"\0asm\x01\0\0\0"[..])?;
    /// assert_eq!(dna.size(), 8);
    /// assert_eq!(Dna::new(&b""[..]).unwrap_err(), CellError::WasmTooShort { found: 0 });
    /// # Ok::<(), CellError>(())
    /// ```
    pub fn new(binary: B) -> Result<Self, CellError> {
        check_wasm_header(binary.as_ref())?;
        let hash = sha256(binary.as_ref());
        Ok(Dna { binary, hash })
    }

    /// The WebAssembly binary.
    pub fn binary(&self) -> &[u8] {
        self.binary.as_ref()
    }

    /// The SHA-256 of the binary, computed at construction.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The binary's length in bytes.
    pub fn size(&self) -> usize {
        self.binary.as_ref().len()
    }

    /// Recomputes the hash and compares it with the stored one.
    pub fn verify(&self) -> Result<(), CellError> {
        check_hash(self.binary.as_ref(), &self.hash)
    }

    /// A `Dna` borrowing this one's binary, with the same hash (no copy, no rehash).
    pub fn as_borrowed(&self) -> Dna<&[u8]> {
        Dna {
            binary: self.binary.as_ref(),
            hash: self.hash,
        }
    }

    /// An owned copy of the binary with the same hash (no rehash).
    #[cfg(feature = "alloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn to_owned_dna(&self) -> Dna<alloc::vec::Vec<u8>> {
        Dna {
            binary: self.binary.as_ref().to_vec(),
            hash: self.hash,
        }
    }

    /// Gives back the binary.
    pub fn into_binary(self) -> B {
        self.binary
    }

    /// The same DNA in other storage; `convert` must keep the bytes (the hash is not recomputed).
    #[cfg(feature = "wasmi")]
    pub(crate) fn convert<C>(self, convert: impl FnOnce(B) -> C) -> Dna<C> {
        Dna {
            binary: convert(self.binary),
            hash: self.hash,
        }
    }

    /// Builds a `Dna` whose binary is known to hash to `expected`: checks the header, hashes once
    /// and fails with [`CellError::IntegrityMismatch`] if the hashes differ.
    pub fn with_expected_hash(binary: B, expected: &[u8; 32]) -> Result<Self, CellError> {
        let dna = Dna::new(binary)?;
        if &dna.hash != expected {
            return Err(mismatch(expected, &dna.hash));
        }
        Ok(dna)
    }
}

/// Rejects bytes that are not a core WebAssembly module header.
fn check_wasm_header(bytes: &[u8]) -> Result<(), CellError> {
    let header: &[u8; 8] = bytes
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or(CellError::WasmTooShort { found: bytes.len() })?;
    let [m0, m1, m2, m3, v0, v1, v2, v3] = *header;
    if [m0, m1, m2, m3] != WASM_MAGIC {
        return Err(CellError::NotWasm {
            found: [m0, m1, m2, m3],
        });
    }
    let version = u32::from_le_bytes([v0, v1, v2, v3]);
    if version != WASM_VERSION {
        return Err(CellError::UnsupportedWasmVersion { found: version });
    }
    Ok(())
}

fn check_hash(binary: &[u8], expected: &[u8; 32]) -> Result<(), CellError> {
    let found = sha256(binary);
    if &found != expected {
        return Err(mismatch(expected, &found));
    }
    Ok(())
}

fn mismatch(expected: &[u8; 32], found: &[u8; 32]) -> CellError {
    CellError::IntegrityMismatch {
        what: Digested::Dna,
        expected: DigestPrefix::of(expected),
        found: DigestPrefix::of(found),
    }
}

impl<B, C> PartialEq<Dna<C>> for Dna<B> {
    fn eq(&self, other: &Dna<C>) -> bool {
        self.hash == other.hash
    }
}

impl<B> Eq for Dna<B> {}

impl<B> Hash for Dna<B> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

impl<B: AsRef<[u8]>> fmt::Debug for Dna<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dna")
            .field("hash", &DigestPrefix::of(&self.hash))
            .field("size", &self.size())
            .finish()
    }
}

/// Test storage: the bytes change after the reads `Dna::new` makes (the header check and the
/// hash), as corrupted flash or RAM would, so the stored hash no longer matches.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Decaying<B> {
    reads: core::cell::Cell<u32>,
    before: B,
    after: B,
}

#[cfg(test)]
impl<B> Decaying<B> {
    pub(crate) fn new(before: B, after: B) -> Self {
        Decaying {
            reads: core::cell::Cell::new(0),
            before,
            after,
        }
    }
}

#[cfg(test)]
impl<B: AsRef<[u8]>> AsRef<[u8]> for Decaying<B> {
    fn as_ref(&self) -> &[u8] {
        let n = self.reads.get();
        self.reads.set(n + 1);
        if n < 2 {
            self.before.as_ref()
        } else {
            self.after.as_ref()
        }
    }
}

/// Lets `Runtime::resume` take a `Decaying` agent; only reached if the DNA check were skipped.
#[cfg(all(test, feature = "wasmi"))]
impl From<Decaying<alloc::vec::Vec<u8>>> for alloc::vec::Vec<u8> {
    fn from(d: Decaying<alloc::vec::Vec<u8>>) -> Self {
        d.after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn accepts_minimal_module_and_hashes_it() {
        let dna = Dna::new(EMPTY_MODULE).unwrap();
        assert_eq!(dna.hash(), &sha256(EMPTY_MODULE));
        assert_eq!(dna.binary(), EMPTY_MODULE);
        assert!(dna.verify().is_ok());
    }

    #[test]
    fn rejects_non_wasm() {
        assert_eq!(
            Dna::new(&b"\0as"[..]).unwrap_err(),
            CellError::WasmTooShort { found: 3 }
        );
        assert_eq!(
            Dna::new(&b"\x7fELF\x02\x01\x01\0"[..]).unwrap_err(),
            CellError::NotWasm { found: *b"\x7fELF" }
        );
        // A component-model binary: same magic, version word 0x0001000d.
        assert_eq!(
            Dna::new(&b"\0asm\x0d\0\x01\0"[..]).unwrap_err(),
            CellError::UnsupportedWasmVersion { found: 0x0001_000d }
        );
    }

    #[test]
    fn verify_detects_changed_bytes() {
        let before = *b"\0asm\x01\0\0\0\x00";
        let mut after = before;
        after[8] ^= 0x01;
        let dna = Dna::new(Decaying::new(before, after)).unwrap();
        assert_eq!(dna.hash(), &sha256(&before));
        assert_eq!(
            dna.verify().unwrap_err(),
            CellError::IntegrityMismatch {
                what: Digested::Dna,
                expected: DigestPrefix::of(&sha256(&before)),
                found: DigestPrefix::of(&sha256(&after)),
            }
        );
    }

    #[test]
    fn equality_is_by_hash_across_storage() {
        let a = Dna::new(EMPTY_MODULE).unwrap();
        let b = Dna::new([0, b'a', b's', b'm', 1, 0, 0, 0]).unwrap();
        assert_eq!(a, b);
        let c = Dna::new(&b"\0asm\x01\0\0\0\0"[..]).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn expected_hash_is_enforced() {
        let good = sha256(EMPTY_MODULE);
        assert!(Dna::with_expected_hash(EMPTY_MODULE, &good).is_ok());
        let err = Dna::with_expected_hash(EMPTY_MODULE, &[0; 32]).unwrap_err();
        assert_eq!(
            err,
            CellError::IntegrityMismatch {
                what: Digested::Dna,
                expected: DigestPrefix([0; 8]),
                found: DigestPrefix::of(&good),
            }
        );
    }
}
