//! Mutual TLS with pinned keys: custom rustls verifiers that accept exactly the Ed25519 keys of
//! the [`Directory`](super::Directory), and the quinn configurations built on them.

use super::identity::{Directory, Identity, PublicKey};
use super::{Event, EventSink, RefusalReason};
use crate::mesh::certificate::CertificateError as CertError;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::io;
use std::net::SocketAddr;
use std::sync::RwLock;

/// The ALPN protocol name of the mesh over QUIC.
pub const ALPN: &[u8] = b"mielin-mesh/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates a peer presented, end-entity first, as
/// [`PublicKey::from_certificates`] reads them.
fn chain<'a>(
    end_entity: &'a CertificateDer<'a>,
    intermediates: &'a [CertificateDer<'a>],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    core::iter::once(end_entity.as_ref()).chain(intermediates.iter().map(|c| c.as_ref()))
}

/// Reports a refused peer and gives rustls the error that ends its handshake.
fn refuse(
    events: &EventSink,
    addr: SocketAddr,
    key: Option<PublicKey>,
    inbound: bool,
    reason: RefusalReason,
) -> rustls::Error {
    events.emit(Event::Refused {
        addr,
        claimed: key.map(|k| k.node_id()),
        key,
        inbound,
        reason,
    });
    rustls::Error::InvalidCertificate(match reason {
        RefusalReason::Certificate(CertError::Malformed | CertError::TrailingBytes) => {
            CertificateError::BadEncoding
        }
        _ => CertificateError::ApplicationVerificationFailure,
    })
}

/// Checks the handshake signatures (proof that the peer holds the key it presented), the same
/// way for both sides.
#[derive(Debug)]
struct Signatures(Arc<CryptoProvider>);

impl Signatures {
    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Client side: the server must present exactly the key pinned for the node we dialled.
#[derive(Debug)]
struct PinnedServer {
    expected: PublicKey,
    addr: SocketAddr,
    events: EventSink,
    sigs: Signatures,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (key, reason) = match PublicKey::from_certificates(chain(end_entity, intermediates)) {
            Ok(k) if k == self.expected => return Ok(ServerCertVerified::assertion()),
            Ok(k) => (Some(k), RefusalReason::NotTheNodeDialled),
            Err(e) => (None, e.into()),
        };
        Err(refuse(&self.events, self.addr, key, false, reason))
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sigs.tls12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sigs.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.sigs.schemes()
    }
}

/// Server side: the client must present a certificate whose key is pinned in the directory.
#[derive(Debug)]
struct PinnedClients {
    directory: Arc<RwLock<Directory>>,
    addr: SocketAddr,
    events: EventSink,
    sigs: Signatures,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (key, reason) = match PublicKey::from_certificates(chain(end_entity, intermediates)) {
            Ok(k) => {
                let pinned = self
                    .directory
                    .read()
                    .map(|d| d.node_of(&k).is_some())
                    .unwrap_or(false);
                if pinned {
                    return Ok(ClientCertVerified::assertion());
                }
                (Some(k), RefusalReason::NotPinned)
            }
            Err(e) => (None, e.into()),
        };
        Err(refuse(&self.events, self.addr, key, true, reason))
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sigs.tls12(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sigs.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.sigs.schemes()
    }
}

/// Transport settings shared by both sides.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval (below the idle timeout).
    pub keep_alive: Duration,
    /// Unidirectional streams a peer may have open at once.
    pub max_streams: u32,
    /// Bytes a peer may have in flight on one stream (QUIC flow control).
    pub stream_window: u32,
    /// Bytes a peer may have in flight on the whole connection.
    pub connection_window: u32,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            max_streams: 16,
            stream_window: 16 << 20,
            connection_window: 32 << 20,
        }
    }
}

fn transport(t: &Transport) -> io::Result<Arc<quinn::TransportConfig>> {
    let mut c = quinn::TransportConfig::default();
    c.max_idle_timeout(Some(t.idle_timeout.try_into().map_err(io::Error::other)?))
        .keep_alive_interval(Some(t.keep_alive))
        .max_concurrent_uni_streams(t.max_streams.into())
        .max_concurrent_bidi_streams(0u32.into())
        .stream_receive_window(t.stream_window.into())
        .receive_window(t.connection_window.into())
        .send_window(u64::from(t.connection_window));
    Ok(Arc::new(c))
}

/// Our certificate chain and key for rustls.
pub(crate) struct Credentials {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Credentials {
    pub(crate) fn new(id: &Identity) -> io::Result<Credentials> {
        Ok(Credentials {
            cert: CertificateDer::from(id.certificate()?),
            key: id.pkcs8(),
        })
    }
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// The server configuration for one incoming connection from `addr` (so that a refusal names
/// the address).
pub(crate) fn server_config(
    creds: &Credentials,
    directory: Arc<RwLock<Directory>>,
    addr: SocketAddr,
    events: EventSink,
    t: &Transport,
) -> io::Result<quinn::ServerConfig> {
    let p = provider();
    let verifier = PinnedClients {
        directory,
        addr,
        events,
        sigs: Signatures(p.clone()),
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![creds.cert.clone()], creds.key())
        .map_err(io::Error::other)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let q = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(io::Error::other)?;
    let mut c = quinn::ServerConfig::with_crypto(Arc::new(q));
    c.transport_config(transport(t)?);
    Ok(c)
}

/// The client configuration for dialling the peer pinned to `expected` at `addr`.
pub(crate) fn client_config(
    creds: &Credentials,
    expected: PublicKey,
    addr: SocketAddr,
    events: EventSink,
    t: &Transport,
) -> io::Result<quinn::ClientConfig> {
    let p = provider();
    let verifier = PinnedServer {
        expected,
        addr,
        events,
        sigs: Signatures(p.clone()),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![creds.cert.clone()], creds.key())
        .map_err(io::Error::other)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let q = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(io::Error::other)?;
    let mut c = quinn::ClientConfig::new(Arc::new(q));
    c.transport_config(transport(t)?);
    Ok(c)
}

/// The key a connection's peer presented (after the handshake), read from its certificates
/// exactly as the verifier read it.
pub(crate) fn peer_key(conn: &quinn::Connection) -> Result<PublicKey, CertError> {
    let any = conn.peer_identity().ok_or(CertError::Missing)?;
    let certs = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| CertError::Missing)?;
    PublicKey::from_certificates(certs.iter().map(|c| c.as_ref()))
}
