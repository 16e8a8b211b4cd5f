//! mTLS to receivers (issue 17, item 4): a local rustls receiver that
//! requires a client certificate from its own CA. An endpoint carrying a
//! certificate and key from that CA is delivered to (signed as usual); the
//! same endpoint without them, or with a certificate from another CA, is
//! refused by the receiver's TLS handshake and nothing reaches it.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use hookgate_core::{Scheme, Verifier};
use hookgate_sender::{
    delivery::DeliveryClient,
    outcome::{Class, Classifier},
    ssrf::SsrfPolicy,
    ClientIdentity, Endpoint, Message,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate signed by `ca`: (certificate PEM, key PEM, DER chain, key).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (
    String,
    String,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).unwrap();
    let der = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.pem(), key.serialize_pem(), der, key_der)
}

/// A received request: lower-cased headers and the body.
type Request = (Vec<(String, String)>, Vec<u8>);

/// A TLS receiver on 127.0.0.1 that requires a client certificate from
/// `client_ca`, answers every request 204 and keeps what it received.
struct MtlsReceiver {
    addr: SocketAddr,
    received: Arc<std::sync::Mutex<Vec<Request>>>,
    handshakes_failed: Arc<AtomicUsize>,
}

impl MtlsReceiver {
    async fn start(
        server_chain: CertificateDer<'static>,
        server_key: PrivateKeyDer<'static>,
        client_ca: CertificateDer<'static>,
    ) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_chain], server_key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handshakes_failed = Arc::new(AtomicUsize::new(0));
        let (rx, failed) = (received.clone(), handshakes_failed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, rx, failed) = (acceptor.clone(), rx.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    // One HTTP/1.1 request: headers, then Content-Length bytes.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    rx.lock()
                        .unwrap()
                        .push((headers, buf[head_end..head_end + len].to_vec()));
                    let _ = tls
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            received,
            handshakes_failed,
        }
    }
}

#[tokio::test]
async fn delivery_presents_the_client_certificate_and_fails_clearly_without_it() {
    let server_ca = new_ca("receiver CA");
    let client_ca = new_ca("client CA");
    let other_ca = new_ca("some other CA");
    let (_, _, server_der, server_key) = leaf(
        &server_ca,
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cert_pem, key_pem, _, _) =
        leaf(&client_ca, &["sender"], ExtendedKeyUsagePurpose::ClientAuth);
    let (other_cert, other_key, _, _) =
        leaf(&other_ca, &["sender"], ExtendedKeyUsagePurpose::ClientAuth);
    let receiver = MtlsReceiver::start(server_der, server_key, client_ca.der().clone()).await;

    let client = DeliveryClient::new(
        SsrfPolicy::default().allow("127.0.0.0/8".parse().unwrap()),
        Classifier::default(),
    )
    .with_root_certificates(server_ca.pem().as_bytes())
    .unwrap();
    let url = format!("https://127.0.0.1:{}/hook", receiver.addr.port());
    let plain = Endpoint::new("mtls", &url, Scheme::StandardWebhooks, SECRET).unwrap();
    let msg = Message::new("t", r#"{"n":1}"#);

    // With the certificate: delivered, and signed as usual.
    let identity = ClientIdentity::from_pem(cert_pem, key_pem).unwrap();
    let with = plain.clone().with_client_identity(identity);
    let r = client.attempt(&with, &msg).await;
    assert_eq!(r.class, Class::Delivered, "{:?}", r.attempt.error);
    assert_eq!(r.attempt.status, Some(204));
    {
        let received = receiver.received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let (headers, body) = &received[0];
        let mut map = http::HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET])
            .unwrap()
            .verify(&map, body)
            .expect("signed as usual");
    }

    // Without a certificate, or with one from another CA: the handshake is
    // refused, the attempt fails with a TLS error, nothing is received.
    let other = plain
        .clone()
        .with_client_identity(ClientIdentity::from_pem(other_cert, other_key).unwrap());
    for (what, endpoint) in [("no certificate", &plain), ("another CA", &other)] {
        let r = client.attempt(endpoint, &msg).await;
        assert_ne!(r.class, Class::Delivered, "{what}");
        assert_eq!(r.attempt.status, None, "{what}");
        let err = r.attempt.error.unwrap().to_ascii_lowercase();
        eprintln!("{what}: {err}");
        // "received fatal alert: CertificateRequired" / "UnknownCA".
        assert!(err.contains("fatal alert"), "{what}: {err}");
    }
    assert_eq!(receiver.received.lock().unwrap().len(), 1);
    assert!(receiver.handshakes_failed.load(Ordering::SeqCst) >= 2);
}

#[test]
fn invalid_identities_are_typed_errors() {
    let err = ClientIdentity::from_pem("not pem", "not pem").unwrap_err();
    assert!(matches!(
        err,
        hookgate_sender::EndpointError::InvalidClientIdentity
    ));
    let ca = new_ca("x");
    let (cert, _, _, _) = leaf(&ca, &["a"], ExtendedKeyUsagePurpose::ClientAuth);
    assert!(ClientIdentity::from_pem(cert, "").is_err());
    // Debug never shows the key.
    let (cert, key, _, _) = leaf(&ca, &["a"], ExtendedKeyUsagePurpose::ClientAuth);
    let id = ClientIdentity::from_pem(cert, key.clone()).unwrap();
    assert!(!format!("{id:?}").contains("PRIVATE"));
}
