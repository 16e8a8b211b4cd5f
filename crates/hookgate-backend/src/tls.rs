//! rustls client configurations for the stores: which server certificates
//! to trust and how strictly to check them.
//!
//! The modes follow libpq's `sslmode`, so a Postgres URL means what its
//! operators expect, and Redis uses the strictest one:
//!
//! | mode | encrypts | checks the chain | checks the host name |
//! |---|---|---|---|
//! | [`Verify::None`] (`require`, `prefer`) | yes | no | no |
//! | [`Verify::Chain`] (`verify-ca`, or `require` with a root certificate) | yes | yes | no |
//! | [`Verify::Full`] (`verify-full`, `rediss://`) | yes | yes | yes |
//!
//! The trusted roots are the system's (through `rustls-native-certs`) unless
//! a PEM file is given, in which case only its certificates are trusted.

use std::{fmt, path::Path, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::BackendError;

/// How strictly a server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypt, but accept any certificate (libpq `require`/`prefer` without
    /// a root certificate). Protects against passive eavesdropping only.
    None,
    /// The certificate must chain to a trusted root; its name is not checked
    /// (libpq `verify-ca`).
    Chain,
    /// The certificate must chain to a trusted root and name the host
    /// connected to (libpq `verify-full`; `rediss://`).
    Full,
}

/// A rustls client configuration: `verify` against the roots in
/// `root_cert` (a PEM file) or, without one, the system's roots.
///
/// # Errors
/// [`BackendError::Tls`] if the PEM file cannot be read or holds no
/// certificate, or if the system has no usable root certificate.
pub fn client_config(
    verify: Verify,
    root_cert: Option<&Path>,
) -> Result<ClientConfig, BackendError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::tls("no TLS protocol version available", e))?;
    let config = match verify {
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny { provider }))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let roots = Arc::new(roots(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| BackendError::tls("cannot build the certificate verifier", e))?;
            if verify == Verify::Full {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { inner: webpki }))
                    .with_no_client_auth()
            }
        }
    };
    Ok(config)
}

/// The certificates in `root_cert`, or the system's roots.
fn roots(root_cert: Option<&Path>) -> Result<RootCertStore, BackendError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    BackendError::tls(
                        format!("cannot read the root certificate file {}", path.display()),
                        e,
                    )
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    BackendError::tls(
                        format!("cannot parse the root certificate file {}", path.display()),
                        e,
                    )
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(BackendError::Tls {
                    message: format!("no usable certificate in {}", path.display()),
                    source: None,
                });
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs()
                .map_err(|e| BackendError::tls("cannot load the system's root certificates", e))?;
            let (added, _) = store.add_parsable_certificates(native);
            if added == 0 {
                return Err(BackendError::Tls {
                    message: "the system has no usable root certificate; give one with sslrootcert"
                        .into(),
                    source: None,
                });
            }
        }
    }
    Ok(store)
}

/// Accepts any certificate but still checks the handshake signatures, so
/// the session is encrypted with whoever holds the certificate's key.
struct AcceptAny {
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for AcceptAny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcceptAny")
    }
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The web PKI verifier with the host-name check left out (`verify-ca`).
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub(crate) const UNKNOWN_ISSUER: &str =
    "the server's certificate is not signed by a trusted root (wrong or missing CA: set sslrootcert / the CA file)";
pub(crate) const WRONG_NAME: &str = "the server's certificate does not name the host connected to";
pub(crate) const EXPIRED: &str = "the server's certificate has expired";

/// The first rustls error in `error`'s source chain, described for people:
/// which check failed, never any key material.
pub(crate) fn describe_tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        // `io::Error::source` skips the error it wraps; look inside it.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = describe_tls_failure(inner) {
                return Some(found);
            }
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    UNKNOWN_ISSUER.to_owned()
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => WRONG_NAME.to_owned(),
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => EXPIRED.to_owned(),
                other => format!("TLS handshake failed: {other}"),
            });
        }
        current = e.source();
    }
    None
}
