//! Forged certificates against the QUIC driver's pinning (issue 20).
//!
//! Each forged certificate's real key — the one in its `subjectPublicKeyInfo`, the one that
//! signs the TLS handshake — is the attacker's; the victim's `SubjectPublicKeyInfo` (the 12-byte
//! Ed25519 prefix and the victim's 32-byte key) sits elsewhere in the certificate: in a subject
//! attribute, in a custom extension, in the serial number. A parser that searched the bytes for
//! the first Ed25519 key pattern pinned the attacker as the victim. Each forgery is tried in both
//! directions: a fake server that a real driver dials as the victim, and a fake client that
//! dials a real driver pinning the victim. Each must be refused with the right reason, and no
//! frame may get through.
//!
//! `MIELIN_WRITE_VECTORS=1 cargo test --features quic --test quic_certificates` rewrites
//! `tests/certificates/forged-*.der` and `rcgen-ed25519.der` (the fuzz seeds).
#![cfg(feature = "quic")]

#[path = "common_quic/pair.rs"]
mod pair;

use ed25519_dalek::Signer;
use mielin_cells::mesh::certificate::ED25519_SPKI_PREFIX;
use mielin_cells::mesh::MemJournal;
use mielin_cells::quic::{
    wire, CertificateError, Directory, Event, Identity, Peer, PublicKey, RefusalReason, WasmHost,
    ALPN,
};
use mielin_cells::{Arch, NodeStatus};
use pair::{Side, D};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The node the attacker impersonates.
const VICTIM: [u8; 32] = [0x56; 32];
/// The attacker's Ed25519 seed (the subject and serial forgeries).
const ATTACKER: [u8; 32] = [0xa7; 32];
/// RFC 8410 PKCS#8 v1 prefix of an Ed25519 private key (the seed follows).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn victim() -> PublicKey {
    Identity::from_seed(VICTIM).public_key()
}

/// The victim's DER SubjectPublicKeyInfo: what a byte scan took for a certificate's key.
fn victim_spki() -> Vec<u8> {
    let mut v = ED25519_SPKI_PREFIX.to_vec();
    v.extend_from_slice(&victim().0);
    v
}

/// The parser this replaced, kept here to show that every forgery below fooled it: the 32
/// bytes after the first Ed25519 SubjectPublicKeyInfo prefix anywhere in the DER.
fn old_scan(der: &[u8]) -> Option<PublicKey> {
    let at = der
        .windows(ED25519_SPKI_PREFIX.len())
        .position(|w| w == ED25519_SPKI_PREFIX)?;
    let start = at + ED25519_SPKI_PREFIX.len();
    Some(PublicKey(der.get(start..start + 32)?.try_into().ok()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A subject attribute's value (re-signed after the bytes are put in).
    Subject,
    /// A non-critical custom extension. Extensions come after the real key, so the attacker's
    /// key is ECDSA P-256: a scan then finds no Ed25519 prefix before the victim's.
    Extension,
    /// The serial number (an INTEGER of 44 bytes; webpki accepts any length).
    Serial,
}

const PLACES: [Place; 3] = [Place::Subject, Place::Extension, Place::Serial];

/// A certificate with the attacker's real key and the victim's key placed at `place`.
struct Forged {
    der: Vec<u8>,
    /// The attacker's private key (PKCS#8), which signs the handshake.
    pkcs8: Vec<u8>,
    /// The real key, when it is Ed25519.
    real: Option<PublicKey>,
}

impl Forged {
    /// The reason a driver that dialled the victim gives.
    fn dialled_reason(&self) -> RefusalReason {
        match self.real {
            Some(_) => RefusalReason::NotTheNodeDialled,
            None => RefusalReason::Certificate(CertificateError::NotEd25519),
        }
    }
    /// The reason a driver that was dialled gives.
    fn dialling_reason(&self) -> RefusalReason {
        match self.real {
            Some(_) => RefusalReason::NotPinned,
            None => RefusalReason::Certificate(CertificateError::NotEd25519),
        }
    }
}

/// The TBSCertificate's range in a certificate whose outer and TBS lengths take two bytes.
fn tbs_range(der: &[u8]) -> std::ops::Range<usize> {
    assert_eq!(&der[..2], &[0x30, 0x82]);
    assert_eq!(&der[4..6], &[0x30, 0x82]);
    let len = usize::from(der[6]) << 8 | usize::from(der[7]);
    4..8 + len
}

fn forge(place: Place) -> Forged {
    let spki = victim_spki();
    let ed25519 = || {
        let mut pkcs8 = PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&ATTACKER);
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.clone()),
            &rcgen::PKCS_ED25519,
        )
        .unwrap();
        (kp, pkcs8)
    };
    let mut params = rcgen::CertificateParams::new(vec!["victim.mielin".into()]).unwrap();
    let placeholder = "X".repeat(spki.len());
    let (kp, pkcs8) = match place {
        Place::Subject => {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, placeholder.as_str());
            ed25519()
        }
        Place::Extension => {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 99999, 20],
                    spki.clone(),
                ));
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let pkcs8 = kp.serialize_der();
            (kp, pkcs8)
        }
        Place::Serial => {
            params.serial_number = Some(rcgen::SerialNumber::from_slice(&spki));
            ed25519()
        }
    };
    let mut der = params.self_signed(&kp).unwrap().der().to_vec();
    if place == Place::Subject {
        // rcgen writes only strings into names: the victim's bytes replace the placeholder
        // (same length, so no length changes) and the TBS is signed again by the attacker, so
        // the certificate stays an honestly self-signed one.
        let at = der
            .windows(placeholder.len())
            .position(|w| w == placeholder.as_bytes())
            .unwrap();
        der[at..at + spki.len()].copy_from_slice(&spki);
        let tbs = tbs_range(&der);
        let sig = ed25519_dalek::SigningKey::from_bytes(&ATTACKER).sign(&der[tbs]);
        let n = der.len();
        der[n - 64..].copy_from_slice(&sig.to_bytes());
    }
    let real = (place != Place::Extension).then(|| Identity::from_seed(ATTACKER).public_key());
    Forged { der, pkcs8, real }
}

/// The parser reads the real key of every forgery (or refuses a non-Ed25519 one), never the
/// victim's, while the old scan read the victim's: the forgeries are real attacks.
#[test]
fn the_parser_reads_the_real_key_of_every_forgery() {
    for place in PLACES {
        let f = forge(place);
        assert_eq!(old_scan(&f.der), Some(victim()), "{place:?} fools a scan");
        let parsed = PublicKey::from_certificate(&f.der);
        match f.real {
            Some(k) => assert_eq!(parsed, Ok(k), "{place:?}"),
            None => assert_eq!(parsed, Err(CertificateError::NotEd25519), "{place:?}"),
        }
        if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
            let name = format!("forged-{}.der", format!("{place:?}").to_lowercase());
            std::fs::write(vectors().join(name), &f.der).unwrap();
        }
    }
}

/// A certificate made the way a node makes its own (`Identity::certificate`: rcgen, the name
/// `<node id>.mielin`), for the published test key `[7; 32]`.
fn honest() -> Vec<u8> {
    let id = Identity::from_seed([7; 32]);
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(id.secret());
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8),
        &rcgen::PKCS_ED25519,
    )
    .unwrap();
    let name = format!(
        "{}.mielin",
        mielin_cells::quic::to_hex(id.node_id().as_bytes())
    );
    let params = rcgen::CertificateParams::new(vec![name]).unwrap();
    params.self_signed(&kp).unwrap().der().to_vec()
}

#[test]
fn an_honest_certificate_gives_its_key() {
    let der = honest();
    let key = Identity::from_seed([7; 32]).public_key();
    assert_eq!(PublicKey::from_certificate(&der), Ok(key));
    if std::env::var_os("MIELIN_WRITE_VECTORS").is_some() {
        std::fs::write(vectors().join("rcgen-ed25519.der"), &der).unwrap();
    }
    let committed = std::fs::read(vectors().join("rcgen-ed25519.der")).unwrap();
    assert_eq!(PublicKey::from_certificate(&committed), Ok(key));
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/certificates")
}

/// The committed forgeries (the fuzz seeds) stay attacks on a scan and are refused.
#[test]
fn the_committed_forgeries_are_refused() {
    for place in PLACES {
        let name = format!("forged-{}.der", format!("{place:?}").to_lowercase());
        let der = std::fs::read(vectors().join(&name)).unwrap();
        assert_eq!(old_scan(&der), Some(victim()), "{name}");
        assert_ne!(PublicKey::from_certificate(&der), Ok(victim()), "{name}");
    }
}

/// A driver on loopback with fast protocol timers (a refused hand-off aborts in a second).
fn node(name: &str, seed: u8) -> (Side, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mielin-cert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let id = Identity::from_seed([seed; 32]);
    let mut host = WasmHost::open(&id, &Directory::new(), &dir, u64::MAX).unwrap();
    let mut cfg = pair::cfg();
    cfg.mesh.rto_ms = 100;
    cfg.mesh.max_attempts = 3;
    let driver = D::new(&id, Directory::new(), MemJournal::new(), cfg, &mut host).unwrap();
    (Side { driver, host }, dir)
}

/// Runs `side` until `done` holds for the events so far, or for `max`; returns the events.
async fn run(side: &mut Side, max: Duration, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + max;
    let mut all = Vec::new();
    loop {
        tokio::select! {
            w = side.driver.wait() => {
                all.extend(side.driver.handle(&mut side.host, w));
                if side.host.tick("tick", &[]) > 0 {
                    let now = side.driver.now_ms();
                    side.driver.node_mut().wake_messages(now);
                }
                if done(&all) {
                    return all;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return all,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn key_of(f: &Forged) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(f.pkcs8.clone()))
}

/// What a fake peer saw of the real driver.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    handshakes: usize,
    streams: usize,
    bytes: usize,
}

/// A server presenting `f`, counting finished handshakes and what arrives on them.
fn fake_server(f: &Forged) -> (quinn::Endpoint, Arc<Mutex<Seen>>) {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(f.der.clone())], key_of(f))
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let q = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let cfg = quinn::ServerConfig::with_crypto(Arc::new(q));
    let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (e, s) = (ep.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(incoming) = e.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                s.lock().unwrap().handshakes += 1;
                while let Ok(mut r) = conn.accept_uni().await {
                    s.lock().unwrap().streams += 1;
                    if let Ok(b) = r.read_to_end(1 << 24).await {
                        s.lock().unwrap().bytes += b.len();
                    }
                }
            });
        }
    });
    (ep, seen)
}

/// A client verifier that accepts any server (the fake client does not care who answers), but
/// still checks handshake signatures the normal way.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client presenting `f` to `to`; once connected it opens a stream and writes a status
/// record, as the victim would. Returns its endpoint (its address is what the driver reports).
fn fake_client(f: &Forged, to: SocketAddr) -> quinn::Endpoint {
    let status = NodeStatus {
        battery_percent: 100,
        latency_ms: 1,
        arch: Arch::X86_64,
    };
    client_writing(f, to, status_record(&wire::encode_status(&status, 0)))
}

/// A status record with `payload`.
fn status_record(payload: &[u8]) -> Vec<u8> {
    let mut rec = wire::header(wire::KIND_STATUS, payload.len()).to_vec();
    rec.extend_from_slice(payload);
    rec
}

/// A client presenting `f` to `to`; once connected it opens a stream and writes `bytes`.
fn client_writing(f: &Forged, to: SocketAddr, bytes: Vec<u8>) -> quinn::Endpoint {
    let p = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(p)))
        .with_client_auth_cert(vec![CertificateDer::from(f.der.clone())], key_of(f))
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let q = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = ep
        .connect_with(quinn::ClientConfig::new(Arc::new(q)), to, "mielin")
        .unwrap();
    tokio::spawn(async move {
        let Ok(conn) = connecting.await else { return };
        if let Ok(mut s) = conn.open_uni().await {
            let _ = s.write_all(&bytes).await;
            let _ = s.finish();
            let _ = s.stopped().await;
        }
        // Hold the connection until the test ends.
        conn.closed().await;
    });
    ep
}

/// The refusals among `events`: (address, key, inbound, reason).
fn refusals(events: &[Event]) -> Vec<(SocketAddr, Option<PublicKey>, bool, RefusalReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Refused {
                addr,
                claimed,
                key,
                inbound,
                reason,
            } => {
                assert_eq!(*claimed, key.map(|k| k.node_id()));
                Some((*addr, *key, *inbound, *reason))
            }
            _ => None,
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A real driver hands an agent to the victim, whose address answers with `place`'s forgery:
/// refused as not the node dialled (or not Ed25519), no handshake finishes, no frame reaches
/// the fake server, and the hand-off aborts with the agent still running on the source.
fn a_fake_server_is_refused(place: Place) {
    runtime().block_on(async {
        let f = forge(place);
        let (fake, seen) = fake_server(&f);
        let fake_addr = fake.local_addr().unwrap();
        let (mut a, dir) = node(&format!("dial-{place:?}"), 1);
        let to = a.driver.add_peer(victim(), fake_addr);
        assert_eq!(to, victim().node_id());
        a.host
            .trust_peer(&Peer {
                addr: fake_addr,
                key: victim(),
            })
            .unwrap();
        let agent = pair::spawn(&mut a, 1, 1024);
        a.driver.migrate(&mut a.host, agent, to).unwrap();
        let ended = |evs: &[Event]| evs.iter().any(|e| matches!(e, Event::HandOff(_)));
        let events = run(&mut a, Duration::from_secs(30), ended).await;
        // Anything still in flight gets its chance to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let s = *seen.lock().unwrap();
        assert_eq!(
            (s.streams, s.bytes),
            (0, 0),
            "{place:?}: a frame got through: {s:?}"
        );
        assert_eq!(s.handshakes, 0, "{place:?}: {s:?}");
        let refused = refusals(&events);
        assert!(!refused.is_empty(), "no refusal: {events:?}");
        for (addr, key, inbound, reason) in refused {
            assert_eq!(addr, fake_addr);
            assert!(!inbound);
            assert_eq!(reason, f.dialled_reason(), "{place:?}");
            assert_eq!(key, f.real, "the key reported is the one that signed");
        }
        assert!(
            !events.iter().any(|e| matches!(e, Event::Connected { .. })),
            "{events:?}"
        );
        let report = events.iter().find_map(|e| match e {
            Event::HandOff(r) => Some(r),
            _ => None,
        });
        let report = report.expect("the hand-off ended");
        assert!(!report.committed, "{report:?}");
        assert_eq!(a.host.running(), vec![agent], "the agent still runs here");
        a.driver.shutdown(Duration::from_millis(100)).await;
        fake.close(0u32.into(), b"");
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// The forgery dials a real driver that pins the victim: refused as not pinned (or not
/// Ed25519), no connection is adopted, and the status record it writes never arrives.
fn a_fake_client_is_refused(place: Place) {
    runtime().block_on(async {
        let f = forge(place);
        let (mut b, dir) = node(&format!("accept-{place:?}"), 2);
        // The victim is pinned (at an address nobody answers on: it is not needed here).
        let v = b.driver.add_peer(victim(), "127.0.0.1:9".parse().unwrap());
        let ep = fake_client(&f, b.driver.local_addr().unwrap());
        let from = ep.local_addr().unwrap();
        let refused = |evs: &[Event]| !refusals(evs).is_empty();
        let mut events = run(&mut b, Duration::from_secs(10), refused).await;
        // Whatever the client sends after the handshake has a second to arrive.
        events.extend(run(&mut b, Duration::from_secs(1), |_| false).await);

        for e in &events {
            let through = match e {
                Event::Connected { .. } | Event::Status { .. } => true,
                Event::Malformed { peer } | Event::StreamRefused { peer, .. } => *peer == v,
                _ => false,
            };
            assert!(!through, "{place:?}: {e:?} in {events:?}");
        }
        let refused = refusals(&events);
        assert!(!refused.is_empty(), "no refusal: {events:?}");
        for (addr, key, inbound, reason) in refused {
            assert_eq!(addr, from);
            assert!(inbound);
            assert_eq!(reason, f.dialling_reason(), "{place:?}");
            assert_eq!(key, f.real, "the key reported is the one that signed");
        }
        assert!(b.driver.live_peers().is_empty());
        assert_eq!(b.driver.stats().frames_received, 0);
        ep.close(0u32.into(), b"");
        b.driver.shutdown(Duration::from_millis(100)).await;
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// A pinned peer's stream: a record framed right whose payload does not decode (a status of 5
/// bytes, one with a charge over 100) is skipped and reported (`StreamRefused`), and the
/// record behind it on the same stream still arrives: the driver used to give up the whole
/// stream, and the frames behind a bad status with it.
#[test]
fn an_undecodable_record_is_skipped_and_the_one_behind_it_arrives() {
    runtime().block_on(async {
        let id = Identity::from_seed([7; 32]);
        let mut pkcs8 = PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(id.secret());
        let peer = Forged {
            der: honest(),
            pkcs8,
            real: Some(id.public_key()),
        };
        let (mut b, dir) = node("skip", 2);
        let p = b
            .driver
            .add_peer(id.public_key(), "127.0.0.1:9".parse().unwrap());
        let good = NodeStatus {
            battery_percent: 55,
            latency_ms: 3,
            arch: Arch::Riscv32,
        };
        let mut bytes = status_record(&[50, 1, 0, 0, 0]);
        bytes.extend(status_record(&[101, 1, 0, 0, 0, Arch::X86_64.tag(), 0]));
        bytes.extend(status_record(&wire::encode_status(&good, wire::CAN_REWIND)));
        let ep = client_writing(&peer, b.driver.local_addr().unwrap(), bytes);
        let arrived = |evs: &[Event]| evs.iter().any(|e| matches!(e, Event::Status { .. }));
        let events = run(&mut b, Duration::from_secs(10), arrived).await;
        let seen: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::StreamRefused { .. } | Event::Status { .. }))
            .collect();
        assert!(
            matches!(
                seen[..],
                [
                    Event::StreamRefused { peer: p1, error: wire::WireError::BadStatus },
                    Event::StreamRefused { peer: p2, error: wire::WireError::BadStatus },
                    Event::Status { peer: p3, status },
                ] if *p1 == p && *p2 == p && *p3 == p && *status == good
            ),
            "{events:?}"
        );
        assert_eq!(b.driver.peer_can_rewind(p), Some(true));
        ep.close(0u32.into(), b"");
        b.driver.shutdown(Duration::from_millis(100)).await;
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn a_fake_server_with_the_victims_key_in_its_subject_is_refused() {
    a_fake_server_is_refused(Place::Subject);
}

#[test]
fn a_fake_server_with_the_victims_key_in_an_extension_is_refused() {
    a_fake_server_is_refused(Place::Extension);
}

#[test]
fn a_fake_server_with_the_victims_key_in_its_serial_is_refused() {
    a_fake_server_is_refused(Place::Serial);
}

#[test]
fn a_fake_client_with_the_victims_key_in_its_subject_is_refused() {
    a_fake_client_is_refused(Place::Subject);
}

#[test]
fn a_fake_client_with_the_victims_key_in_an_extension_is_refused() {
    a_fake_client_is_refused(Place::Extension);
}

#[test]
fn a_fake_client_with_the_victims_key_in_its_serial_is_refused() {
    a_fake_client_is_refused(Place::Serial);
}
