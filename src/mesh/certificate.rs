//! A peer's Ed25519 key from the certificates it presented in a TLS handshake (feature `quic`).
//!
//! The QUIC driver (`crate::quic`) pins its peers by Ed25519 public key: a node presents a
//! self-signed certificate for its key, and the handshake proves it holds that key. The key it
//! is pinned by must be *the* key the handshake signature is verified with, or a node could
//! present its own key for the signature and someone else's for the pin. rustls verifies that
//! signature with `rustls-webpki` (`verify_tls13_signature` parses the end-entity certificate
//! with `webpki::EndEntityCert` and takes its `subjectPublicKeyInfo`); [`ed25519_key`] parses
//! the same bytes with the same parser and reads the same field. Nothing here searches the
//! certificate's bytes for a pattern.
//!
//! It builds without the QUIC stack (only `rustls-webpki`, no crypto provider), so the fuzz
//! target `fuzz/fuzz_targets/certificate.rs` needs no network crates.
//!
//! The checks, in order (the first that fails is the error):
//!
//! 1. exactly one certificate: none is [`CertificateError::Missing`], a second one (an
//!    intermediate: pinned nodes present only their own certificate) is
//!    [`CertificateError::MoreThanOne`];
//! 2. the certificate parses as webpki parses it for the handshake: bytes after its outer
//!    `SEQUENCE` are [`CertificateError::TrailingBytes`]; anything else webpki refuses
//!    (truncation, bad DER, not version 3, an unknown critical extension, mismatched signature
//!    algorithms...) is [`CertificateError::Malformed`];
//! 3. its `subjectPublicKeyInfo` is an Ed25519 key (RFC 8410: algorithm OID 1.3.101.112 with
//!    parameters absent, a 32-byte key in a `BIT STRING` with 0 unused bits), else
//!    [`CertificateError::NotEd25519`].

use rustls_pki_types::CertificateDer;
use webpki::{DerTypeId, EndEntityCert};

/// The DER of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410) up to its key: `SEQUENCE` (42 bytes)
/// { `SEQUENCE` (5) { `OID` (3) 1.3.101.112 }, `BIT STRING` (33) with 0 unused bits }; the
/// 32-byte key follows. DER allows exactly one encoding of such a key, so comparing the whole
/// field with this prefix and a 32-byte tail checks every part of its structure.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The length of an Ed25519 `SubjectPublicKeyInfo`: the prefix and the 32-byte key.
pub const ED25519_SPKI_LEN: usize = ED25519_SPKI_PREFIX.len() + 32;

/// Why the certificates a peer presented do not name exactly one Ed25519 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// No certificate at all.
    #[error("no certificate")]
    Missing,
    /// More than one certificate: a pinned node presents its own self-signed certificate only.
    #[error("more than one certificate")]
    MoreThanOne,
    /// Bytes after the certificate's outer DER `SEQUENCE`.
    #[error("trailing bytes after the certificate")]
    TrailingBytes,
    /// Not an X.509 v3 certificate that rustls' parser (`rustls-webpki`) accepts.
    #[error("malformed certificate")]
    Malformed,
    /// A certificate whose `subjectPublicKeyInfo` is not an Ed25519 key (RSA, ECDSA, an
    /// Ed25519 OID with parameters, a key of the wrong length...).
    #[error("not an Ed25519 key")]
    NotEd25519,
}

/// The Ed25519 key of `chain`, the certificates a peer presented (end-entity first): exactly
/// one certificate, parsed by `rustls-webpki` as in the handshake, whose
/// `subjectPublicKeyInfo` is an Ed25519 key. The checks and their order are in the
/// [module documentation](self).
///
/// Never panics. Reads at most two items of `chain`. Allocates once, after the certificate
/// parsed: a copy of its `subjectPublicKeyInfo` (webpki hands it out re-wrapped in its
/// `SEQUENCE` header, which it required to be the canonical one), so at most as many bytes as
/// the certificate, and webpki refuses a certificate longer than 64 KiB.
pub fn ed25519_key<'a>(
    chain: impl IntoIterator<Item = &'a [u8]>,
) -> Result<[u8; 32], CertificateError> {
    let mut chain = chain.into_iter();
    let der = chain.next().ok_or(CertificateError::Missing)?;
    if chain.next().is_some() {
        return Err(CertificateError::MoreThanOne);
    }
    let der = CertificateDer::from(der);
    let cert = EndEntityCert::try_from(&der).map_err(|e| match e {
        // webpki reads the certificate with `read_all`, which reports bytes left after the
        // outer SEQUENCE with exactly this error (inner structures have their own type ids).
        webpki::Error::TrailingData(DerTypeId::Certificate) => CertificateError::TrailingBytes,
        _ => CertificateError::Malformed,
    })?;
    // The field webpki verifies the handshake signature with (`EndEntityCert::verify_signature`
    // reads the same `spki`), so the key returned is the key that signed.
    let spki = cert.subject_public_key_info();
    let spki: &[u8] = spki.as_ref();
    match spki.split_at_checked(ED25519_SPKI_PREFIX.len()) {
        Some((prefix, key)) if prefix == ED25519_SPKI_PREFIX => {
            key.try_into().map_err(|_| CertificateError::NotEd25519)
        }
        _ => Err(CertificateError::NotEd25519),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by openssl 3.0 (`tests/certificates/README.md`): another encoder than rcgen, with
    // the extensions openssl adds (a critical basicConstraints among them).
    const ED25519: &[u8] = include_bytes!("../../tests/certificates/openssl-ed25519.der");
    const ECDSA: &[u8] = include_bytes!("../../tests/certificates/openssl-ecdsa-p256.der");
    const RSA: &[u8] = include_bytes!("../../tests/certificates/openssl-rsa-2048.der");
    // `openssl x509 -pubkey` of ED25519, as raw bytes.
    const ED25519_KEY: [u8; 32] = [
        0xb8, 0xd1, 0x8c, 0x5d, 0x16, 0xc7, 0x70, 0x96, 0xdf, 0x13, 0x48, 0xeb, 0x1c, 0x11, 0xa6,
        0x7f, 0x29, 0x3d, 0xe8, 0x26, 0xf1, 0x02, 0x88, 0x78, 0xcb, 0xcd, 0xe4, 0x4d, 0x78, 0xdd,
        0xb8, 0x53,
    ];

    fn one(der: &[u8]) -> Result<[u8; 32], CertificateError> {
        ed25519_key([der])
    }

    /// Where ED25519's subjectPublicKeyInfo is (found from the key openssl printed: the test
    /// knows the answer, the parser does not search).
    fn spki_at() -> usize {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&ED25519_KEY);
        let at = ED25519.windows(spki.len()).position(|w| w == spki);
        let at = at.expect("the vector holds its key");
        assert!(!ED25519[at + 1..].windows(spki.len()).any(|w| w == spki));
        at
    }

    #[test]
    fn an_honest_certificate_gives_its_key() {
        assert_eq!(one(ED25519), Ok(ED25519_KEY));
    }

    #[test]
    fn no_certificate_is_missing() {
        assert_eq!(ed25519_key([]), Err(CertificateError::Missing));
    }

    #[test]
    fn a_second_certificate_is_refused_before_any_is_parsed() {
        assert_eq!(
            ed25519_key([ED25519, ED25519]),
            Err(CertificateError::MoreThanOne)
        );
        assert_eq!(
            ed25519_key([ED25519, RSA]),
            Err(CertificateError::MoreThanOne)
        );
        let junk: &[u8] = b"not a certificate";
        assert_eq!(
            ed25519_key([junk, junk]),
            Err(CertificateError::MoreThanOne)
        );
        assert_eq!(one(junk), Err(CertificateError::Malformed));
    }

    #[test]
    fn every_truncation_is_refused() {
        for n in 0..ED25519.len() {
            assert_eq!(
                one(&ED25519[..n]),
                Err(CertificateError::Malformed),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn appended_bytes_are_refused() {
        let tails: [&[u8]; 4] = [&[0], &[0x30, 0x00], &ED25519_SPKI_PREFIX, ED25519];
        for tail in tails {
            let mut v = ED25519.to_vec();
            v.extend_from_slice(tail);
            assert_eq!(one(&v), Err(CertificateError::TrailingBytes), "{tail:02x?}");
        }
    }

    #[test]
    fn rsa_and_ecdsa_are_not_ed25519() {
        assert_eq!(one(RSA), Err(CertificateError::NotEd25519));
        assert_eq!(one(ECDSA), Err(CertificateError::NotEd25519));
    }

    /// Every part of the subjectPublicKeyInfo's structure is checked: one byte changed in place
    /// (lengths kept, so webpki still parses the certificate) is refused wherever it is.
    #[test]
    fn a_changed_key_structure_is_not_ed25519() {
        let at = spki_at();
        for i in 0..ED25519_SPKI_PREFIX.len() {
            let mut v = ED25519.to_vec();
            v[at + i] ^= 0x01;
            // The outer tag and length are webpki's (Malformed), the rest ours (NotEd25519).
            let r = one(&v);
            assert!(r.is_err(), "prefix byte {i}: {r:?}");
        }
        // The changes webpki itself does not look at (it parses the field only to verify a
        // signature) are ours to refuse: the OID 1.3.101.113 (Ed448), 1 unused bit.
        for (i, to) in [(8, 0x71), (11, 0x01)] {
            let mut v = ED25519.to_vec();
            v[at + i] = to;
            assert_eq!(one(&v), Err(CertificateError::NotEd25519), "byte {i}");
        }
        // A flipped key byte is another key, not this one: the field, not a pattern, is read.
        let mut v = ED25519.to_vec();
        v[at + 12] ^= 0x01;
        let mut other = ED25519_KEY;
        other[0] ^= 0x01;
        assert_eq!(one(&v), Ok(other));
    }
}
