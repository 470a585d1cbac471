//! SHA-256, computed with the `sha2` crate, and a short printable digest prefix for errors.

use core::fmt;
use sha2::{Digest, Sha256};

/// The SHA-256 digest of `bytes`, as computed for DNA and for the snapshot trailer.
///
/// This is `sha2::Sha256` with no changes; it picks the CPU's SHA extensions at run time where
/// `sha2` supports them.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The first 8 bytes of a SHA-256 digest, printed as 16 hex digits.
///
/// Errors carry prefixes rather than whole digests so that [`CellError`](crate::CellError) stays
/// small enough to return by value on a microcontroller; 64 bits are plenty to tell two digests
/// apart in a log line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DigestPrefix(pub [u8; 8]);

impl DigestPrefix {
    /// The prefix of a full digest.
    pub fn of(digest: &[u8; 32]) -> Self {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&digest[..8]);
        DigestPrefix(prefix)
    }
}

impl fmt::Display for DigestPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DigestPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestPrefix({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> heapless::String<64> {
        let mut s = heapless::String::new();
        for b in bytes {
            core::fmt::write(&mut s, format_args!("{b:02x}")).unwrap();
        }
        s
    }

    // Known answers from FIPS 180-2 (appendix B.1) and NIST's SHA-256 examples.
    #[test]
    fn known_answers() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    // FIPS 180-2 appendix B.3: one million repetitions of 'a' (just under 1 MiB).
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a million bytes through SHA-256 takes minutes under Miri"
    )]
    fn known_answer_million_a() {
        let a = [b'a'; 1000];
        let mut h = Sha256::new();
        for _ in 0..1000 {
            h.update(a);
        }
        let d: [u8; 32] = h.finalize().into();
        assert_eq!(
            hex(&d),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn prefix_prints_first_eight_bytes() {
        let d = sha256(b"abc");
        let mut s = heapless::String::<32>::new();
        core::fmt::write(&mut s, format_args!("{}", DigestPrefix::of(&d))).unwrap();
        assert_eq!(s, "ba7816bf8f01cfea");
    }
}
