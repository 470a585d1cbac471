//! Fleet membership by certificate (features `_certificate` and `signatures`; issue 24).
//!
//! A **fleet key** (Ed25519) is the root of a fleet: its self-signed X.509 certificate is the
//! fleet's trust anchor. It issues each node a certificate for the node's own Ed25519 key,
//! naming the node and its architecture, valid until a stated time, and it signs the fleet's
//! **revocation list** (an X.509 CRL). A node is a member when its certificate chains to the
//! fleet's anchor, is within its validity, and its serial number is not on a current
//! revocation list: [`FleetAnchor::verify`]. Issuing is `quic::FleetCa` (rcgen); the operator's
//! commands are `mielin fleet-key`, `mielin issue` and `mielin revoke` (docs/fleet.md).
//!
//! Everything is checked by `rustls-webpki`, the parser rustls verifies TLS handshakes with
//! (`EndEntityCert::verify_for_usage`: the chain, the signatures, the validity, the basic
//! constraints, the CRL's signature and its `nextUpdate`), and the fields this module returns
//! are read from what webpki parsed: the key from the certificate's `subjectPublicKeyInfo`
//! (as [`super::certificate::ed25519_key`] reads it), the name and the architecture from its one
//! DNS subject alternative name, `NAME.ARCH.mielin`. Ed25519 signatures are verified with
//! `ed25519-dalek` (`verify_strict`), so no TLS crypto provider is needed and the fuzz target
//! `fleet_certificate` builds without one.
//!
//! What it does not decide: how a node gets the current revocation list (distributing it is
//! not built yet: docs/fleet.md), and which of two current lists is the newer. A list is used
//! until its own `nextUpdate`, which the fleet key sets: a list past it is refused, so a node
//! that cannot get a fresh one stops admitting members rather than trusting revoked ones; but
//! an older list that is still current is accepted as well as the newest (its number is not
//! compared), so a node handed an old list admits what a newer one revoked until the old one's
//! `nextUpdate`: keep the lists' lifetime short (`mielin revoke --days`).

use super::certificate::{CertificateError, ED25519_SPKI_PREFIX};
use crate::Arch;
use alloc::string::{String, ToString};
use rustls_pki_types::TrustAnchor;
use rustls_pki_types::{
    alg_id, AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
    UnixTime,
};
use webpki::{
    anchor_from_trusted_cert, BorrowedCertRevocationList, CertRevocationList, EndEntityCert,
    ExpirationPolicy, KeyUsage, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};

/// The DNS name suffix of a node certificate's name: `NAME.ARCH.mielin`.
pub const NAME_SUFFIX: &str = "mielin";

/// The longest node name in a certificate (one DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// Why a node certificate does not make its node a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// The fleet's anchor is not a certificate webpki takes as a trust anchor.
    #[error("the fleet certificate is not a usable trust anchor")]
    BadAnchor,
    /// The certificate does not parse, or its key is not Ed25519.
    #[error("node certificate: {0}")]
    Certificate(CertificateError),
    /// The revocation list does not parse.
    #[error("malformed revocation list")]
    BadRevocationList,
    /// Not signed by the fleet key (another issuer, a forged or changed signature, a CA
    /// certificate presented as a node's).
    #[error("not issued by this fleet's key")]
    NotIssued,
    /// Outside its validity (expired, or not valid yet).
    #[error("expired or not yet valid")]
    Expired,
    /// On the revocation list.
    #[error("revoked")]
    Revoked,
    /// The revocation list is not the fleet key's, or is past its `nextUpdate`.
    #[error("the revocation list is not this fleet's, or is out of date")]
    RevocationListNotCurrent,
    /// No single DNS name `NAME.ARCH.mielin` with a known architecture.
    #[error("no node name NAME.ARCH.mielin")]
    NoName,
}

/// A member, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its Ed25519 public key: the key its QUIC handshakes and fleet records are signed with.
    pub key: [u8; 32],
    /// Its name (`[a-z0-9-]`, at most [`MAX_NAME_LEN`]).
    pub name: String,
    /// Its architecture.
    pub arch: Arch,
}

/// The label of `arch` in a node certificate's name.
pub const fn arch_label(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86-64",
        Arch::Aarch64 => "aarch64",
        Arch::Arm => "arm",
        Arch::Riscv32 => "riscv32",
        Arch::Riscv64 => "riscv64",
        Arch::X86 => "x86",
        Arch::Xtensa => "xtensa",
    }
}

fn arch_of(label: &str) -> Option<Arch> {
    [
        Arch::X86_64,
        Arch::Aarch64,
        Arch::Arm,
        Arch::Riscv32,
        Arch::Riscv64,
        Arch::X86,
        Arch::Xtensa,
    ]
    .into_iter()
    .find(|a| arch_label(*a) == label)
}

/// Whether `name` can be a node's name in a certificate: one DNS label of lowercase letters,
/// digits and inner hyphens.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The DNS name a node certificate carries: `NAME.ARCH.mielin`.
pub fn dns_name(name: &str, arch: Arch) -> String {
    alloc::format!("{name}.{}.{NAME_SUFFIX}", arch_label(arch))
}

/// Ed25519 for webpki, verified by ed25519-dalek's `verify_strict` (no small-order keys, no
/// malleable signatures).
#[derive(Debug)]
struct Ed25519;

impl SignatureVerificationAlgorithm for Ed25519 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key: [u8; 32] = public_key.try_into().map_err(|_| InvalidSignature)?;
        let sig: [u8; 64] = signature.try_into().map_err(|_| InvalidSignature)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| InvalidSignature)?;
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| InvalidSignature)
    }
    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }
    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ED25519
    }
}

static ALGS: &[&dyn SignatureVerificationAlgorithm] = &[&Ed25519];

/// A fleet's trust anchor: its fleet key's self-signed certificate (DER).
#[derive(Clone, PartialEq, Eq)]
pub struct FleetAnchor {
    der: alloc::vec::Vec<u8>,
}

impl core::fmt::Debug for FleetAnchor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FleetAnchor")
            .field("key", &self.key())
            .finish()
    }
}

impl FleetAnchor {
    /// The fleet certificate `der`, checked to be a trust anchor whose key is Ed25519 (webpki
    /// reads an anchor's subject and key only: which certificate is the fleet's is the
    /// operator's to say, as with any trust anchor).
    pub fn from_der(der: &[u8]) -> Result<FleetAnchor, MemberError> {
        let a = FleetAnchor { der: der.to_vec() };
        a.anchor()?;
        if a.key().is_none() {
            return Err(MemberError::BadAnchor);
        }
        Ok(a)
    }

    /// The certificate's bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The fleet key (the anchor's Ed25519 key).
    pub fn key(&self) -> Option<[u8; 32]> {
        let der = CertificateDer::from(self.der.as_slice());
        let anchor = anchor_from_trusted_cert(&der).ok()?;
        // The anchor's SPKI without its outer SEQUENCE header: algorithm, then the key.
        let spki: &[u8] = anchor.subject_public_key_info.as_ref();
        let prefix = &ED25519_SPKI_PREFIX[2..];
        match spki.split_at_checked(prefix.len()) {
            Some((p, key)) if p == prefix => key.try_into().ok(),
            _ => None,
        }
    }

    fn anchor(&self) -> Result<TrustAnchor<'_>, MemberError> {
        let der = CertificateDer::from(self.der.as_slice());
        anchor_from_trusted_cert(&der)
            .map(|a| a.to_owned())
            .map_err(|_| MemberError::BadAnchor)
    }

    /// Whether `node_cert` (DER) makes its node a member at `now` (seconds since the Unix
    /// epoch): it chains to this anchor, is within its validity, is not on `crl` (the fleet's
    /// current revocation list, DER, signed by the fleet key and not past its `nextUpdate`),
    /// its key is Ed25519, and its one DNS name is `NAME.ARCH.mielin`. Never panics; allocates
    /// a copy of the anchor, of the certificate's key field and of the member's name. The
    /// error is the first check webpki failed, in its order: a forged certificate outside its
    /// validity says [`MemberError::Expired`], a damaged list entry [`MemberError::NotIssued`].
    pub fn verify(&self, node_cert: &[u8], crl: &[u8], now: u64) -> Result<Member, MemberError> {
        let key = super::certificate::ed25519_key([node_cert]).map_err(MemberError::Certificate)?;
        let anchor = self.anchor()?;
        let crl = BorrowedCertRevocationList::from_der(crl)
            .map_err(|_| MemberError::BadRevocationList)?;
        let crl = CertRevocationList::from(crl);
        let crls = [&crl];
        let revocation = RevocationOptionsBuilder::new(&crls)
            .map_err(|_| MemberError::BadRevocationList)?
            .with_depth(RevocationCheckDepth::EndEntity)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        let der = CertificateDer::from(node_cert);
        let cert = EndEntityCert::try_from(&der)
            .map_err(|_| MemberError::Certificate(CertificateError::Malformed))?;
        let time = UnixTime::since_unix_epoch(core::time::Duration::from_secs(now));
        cert.verify_for_usage(
            ALGS,
            &[anchor],
            &[],
            time,
            KeyUsage::client_auth(),
            Some(revocation),
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                MemberError::Expired
            }
            webpki::Error::CertRevoked => MemberError::Revoked,
            webpki::Error::CrlExpired { .. }
            | webpki::Error::UnknownRevocationStatus
            | webpki::Error::InvalidCrlSignatureForPublicKey
            | webpki::Error::UnsupportedCrlSignatureAlgorithmContext(_)
            | webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
            | webpki::Error::IssuerNotCrlSigner => MemberError::RevocationListNotCurrent,
            _ => MemberError::NotIssued,
        })?;
        let mut names = cert.valid_dns_names();
        let (Some(name), None) = (names.next(), names.next()) else {
            return Err(MemberError::NoName);
        };
        let mut labels = name.split('.');
        let (Some(node), Some(arch), Some(NAME_SUFFIX), None) =
            (labels.next(), labels.next(), labels.next(), labels.next())
        else {
            return Err(MemberError::NoName);
        };
        let arch = arch_of(arch).ok_or(MemberError::NoName)?;
        if !valid_name(node) {
            return Err(MemberError::NoName);
        }
        Ok(Member {
            key,
            name: node.to_string(),
            arch,
        })
    }
}
