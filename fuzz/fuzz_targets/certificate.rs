//! The peer-key parser of the QUIC driver (`mesh::certificate`) on arbitrary bytes: it never
//! panics; what it accepts is a certificate whose subjectPublicKeyInfo (found by the small DER
//! walk below, independent of webpki) is exactly the Ed25519 encoding of the key it returned,
//! with nothing after the certificate; the same bytes with one more byte, or presented twice,
//! are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mielin_cells::mesh::certificate::{
    ed25519_key, CertificateError, ED25519_SPKI_LEN, ED25519_SPKI_PREFIX,
};

/// The DER element at the start of `b`: (tag, element with its header, what follows).
/// Definite lengths of up to 4 bytes; `None` when `b` is too short for it.
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, after_tag) = b.split_first()?;
    let (&l, mut rest) = after_tag.split_first()?;
    let len = if l < 0x80 {
        usize::from(l)
    } else {
        let n = usize::from(l & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &x| a << 8 | usize::from(x));
        rest = &rest[n..];
        len
    };
    let header = b.len() - rest.len();
    if rest.len() < len {
        return None;
    }
    Some((tag, &b[..header + len], &rest[len..]))
}

/// The contents of a constructed element.
fn contents(e: &[u8]) -> &[u8] {
    let l = e[1];
    let header = if l < 0x80 {
        2
    } else {
        2 + usize::from(l & 0x7f)
    };
    &e[header..]
}

/// A certificate's subjectPublicKeyInfo (with its header) and the bytes after the certificate:
/// Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version, serial, signature, issuer,
/// validity, subject, subjectPublicKeyInfo, ... }, ... }.
fn spki(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, cert, after) = element(der)? else {
        return None;
    };
    let (0x30, tbs, _) = element(contents(cert))? else {
        return None;
    };
    // webpki accepts version 3 only, which is always written out.
    let (0xa0, _, mut fields) = element(contents(tbs))? else {
        return None;
    };
    for _ in 0..5 {
        fields = element(fields)?.2;
    }
    let (0x30, spki, _) = element(fields)? else {
        return None;
    };
    Some((spki, after))
}

fuzz_target!(|der: &[u8]| {
    let verdict = ed25519_key([der]);
    // The count is checked first, whatever the bytes.
    assert_eq!(ed25519_key([der, der]), Err(CertificateError::MoreThanOne));
    let Ok(key) = verdict else { return };
    let (spki, after) = spki(der).expect("an accepted certificate has a subjectPublicKeyInfo");
    assert!(
        after.is_empty(),
        "accepted with {} bytes after it",
        after.len()
    );
    assert_eq!(spki.len(), ED25519_SPKI_LEN);
    assert_eq!(spki[..ED25519_SPKI_PREFIX.len()], ED25519_SPKI_PREFIX);
    assert_eq!(spki[ED25519_SPKI_PREFIX.len()..], key);
    let mut longer = der.to_vec();
    longer.push(0);
    assert_eq!(
        ed25519_key([&longer[..]]),
        Err(CertificateError::TrailingBytes)
    );
});
