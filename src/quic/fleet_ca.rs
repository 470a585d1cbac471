//! [`FleetCa`]: a fleet key that issues node certificates and signs the revocation list
//! (rcgen; verified by [`FleetAnchor`](crate::mesh::fleet_certificate::FleetAnchor)).

use super::identity::{Identity, PublicKey};
use crate::mesh::fleet_certificate::{dns_name, valid_name};
use crate::Arch;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams,
    SerialNumber, SignatureAlgorithm,
};
use std::io;
use time::OffsetDateTime;

/// The fleet certificate's validity: from 2020-01-01 to 9999-12-31 (RFC 5280's "no well-defined
/// expiration date"); fixed, so that the certificate is a function of the key alone (Ed25519
/// signatures are deterministic) and every copy of it is the same bytes.
const CA_NOT_BEFORE: i64 = 1_577_836_800;
const CA_NOT_AFTER: i64 = 253_402_300_799;

/// The fleet certificate's serial number, "MIELIN FLEET": 12 bytes, above every serial a node
/// certificate can have (a `u64`), so that no revocation list of the fleet names the fleet
/// certificate itself (it has the same issuer as the node certificates).
const CA_SERIAL: &[u8] = b"MIELIN FLEET";

/// A node's Ed25519 public key, for rcgen to write into its certificate.
struct NodeKey([u8; 32]);

impl PublicKeyData for NodeKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// A fleet key: the root of a fleet's membership (docs/fleet.md).
pub struct FleetCa {
    identity: Identity,
    name: String,
}

impl core::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FleetCa")
            .field("name", &self.name)
            .field("key", &self.identity.public_key())
            .finish_non_exhaustive()
    }
}

fn when(unix: u64) -> io::Result<OffsetDateTime> {
    i64::try_from(unix)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "time out of range"))
}

fn key_pair(identity: &Identity) -> io::Result<KeyPair> {
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(identity.pkcs8());
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(io::Error::other)
}

impl FleetCa {
    /// The fleet `name` (its certificate's common name) with the key `identity`.
    pub fn new(identity: Identity, name: &str) -> FleetCa {
        FleetCa {
            identity,
            name: name.into(),
        }
    }

    /// The fleet key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    fn ca_params(&self) -> io::Result<CertificateParams> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{} fleet", self.name));
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = alloc::vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.serial_number = Some(SerialNumber::from_slice(CA_SERIAL));
        p.not_before = when(CA_NOT_BEFORE as u64)?;
        p.not_after = when(CA_NOT_AFTER as u64)?;
        p.key_identifier_method = KeyIdMethod::Sha256;
        Ok(p)
    }

    fn ca(&self) -> io::Result<(rcgen::Certificate, KeyPair)> {
        let kp = key_pair(&self.identity)?;
        let cert = self
            .ca_params()?
            .self_signed(&kp)
            .map_err(io::Error::other)?;
        Ok((cert, kp))
    }

    /// The fleet certificate (DER): the trust anchor every member holds. The same bytes for
    /// the same key and name.
    pub fn certificate(&self) -> io::Result<Vec<u8>> {
        Ok(self.ca()?.0.der().to_vec())
    }

    /// A certificate for `node`'s key, named `name` (`[a-z0-9-]`, one DNS label) and `arch`,
    /// with serial number `serial` (what [`revocation_list`](Self::revocation_list) names; not
    /// 0, which RFC 5280 does not allow; one serial per certificate, since revoking it revokes
    /// every certificate that has it), valid from `not_before` to `not_after` (seconds since
    /// the Unix epoch).
    pub fn issue(
        &self,
        node: PublicKey,
        name: &str,
        arch: Arch,
        serial: u64,
        not_before: u64,
        not_after: u64,
    ) -> io::Result<Vec<u8>> {
        if !valid_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a node name in a certificate is 1 to 63 of a-z, 0-9 and inner hyphens",
            ));
        }
        if serial == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a certificate's serial number is positive",
            ));
        }
        if not_after <= not_before {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the certificate would expire before it is valid",
            ));
        }
        let (ca, ca_key) = self.ca()?;
        let mut p =
            CertificateParams::new(alloc::vec![dns_name(name, arch)]).map_err(io::Error::other)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = alloc::vec![KeyUsagePurpose::DigitalSignature];
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = when(not_before)?;
        p.not_after = when(not_after)?;
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        let cert = p
            .signed_by(&NodeKey(node.0), &ca, &ca_key)
            .map_err(io::Error::other)?;
        Ok(cert.der().to_vec())
    }

    /// The fleet's revocation list number `number` (raise it with every new list): the
    /// certificates with serial numbers `revoked` are no longer members. Issued at
    /// `this_update`, used by members until `next_update` (seconds since the Unix epoch, after
    /// `this_update`), after which they refuse it and a new one must be issued.
    pub fn revocation_list(
        &self,
        number: u64,
        this_update: u64,
        next_update: u64,
        revoked: &[u64],
    ) -> io::Result<Vec<u8>> {
        let (ca, ca_key) = self.ca()?;
        let at = when(this_update)?;
        let params = CertificateRevocationListParams {
            this_update: at,
            next_update: when(next_update)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&ca, &ca_key).map_err(io::Error::other)?;
        Ok(crl.der().to_vec())
    }
}
