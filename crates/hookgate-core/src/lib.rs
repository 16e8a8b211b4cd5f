//! Webhook signature schemes: sign and verify, with no I/O and no async.
//!
//! `hookgate-core` knows the five common HMAC-SHA256 webhook formats
//! ([`Scheme`]): Standard Webhooks (Svix), Stripe, GitHub, Slack and
//! Shopify-style; asymmetric ed25519 signatures, as Standard Webhooks `v1a`
//! (`whsk_` / `whpk_` keys, beside `v1` in one header) and Discord-style
//! ([`Scheme::Discord`]); and any other HMAC provider described as data
//! ([`Scheme::custom`], see [`custom`]). For each it can [sign](Signer) a payload and
//! [verify](Verifier) a received one: constant-time MAC comparison, several
//! active secrets (rotation), several signatures per header (bounded; in a
//! Standard Webhooks header a malformed entry beside a valid signature is
//! skipped, as the reference libraries do), and a timestamp tolerance in both
//! directions checked before any MAC is computed. Step by step,
//! [`Verifier::verify_parsed`] only takes headers that passed
//! [`Verifier::check_timestamp`], so the timestamp cannot be skipped.
//!
//! ```
//! use hookgate_core::{Scheme, Signer, Verifier, VerifyError};
//!
//! let scheme = Scheme::Stripe;
//! let body = br#"{"id":"evt_123","type":"payment_intent.succeeded"}"#;
//! let signer = Signer::new(scheme, scheme.secret("whsec_test")?);
//! let headers = signer.sign("", 1_700_000_000, body);
//!
//! let verifier = Verifier::from_secret_strings(scheme, ["whsec_old", "whsec_test"])?;
//! let verified = verifier.verify_at(&headers, body, 1_700_000_000)?;
//! assert_eq!(verified.id.as_deref(), Some("evt_123"));
//! assert_eq!(verified.key_index, 1);
//!
//! // One changed byte and it fails.
//! let err = verifier.verify_at(&headers, b"{}", 1_700_000_000).unwrap_err();
//! assert_eq!(err, VerifyError::NoMatchingSignature);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Asymmetric keys verify with the public key alone:
//!
//! ```
//! use hookgate_core::{Scheme, Secret, Signer, Verifier};
//!
//! let signing = Secret::ed25519_signing_key([7; 32]); // the sender's whsk_
//! let public = signing.public_key_string().unwrap();  // whpk_..., handed to receivers
//! let headers = Signer::new(Scheme::StandardWebhooks, signing).sign("msg_1", 1_700_000_000, b"{}");
//! assert!(headers[2].1.starts_with("v1a,"));
//! let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [public])?;
//! assert!(verifier.verify_at(&headers, b"{}", 1_700_000_000).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Bodies are raw bytes and need not be UTF-8. Headers are read through the
//! [`Headers`] trait, implemented for `http::HeaderMap` and for `(name, value)`
//! pairs.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod custom;
mod error;
mod headers;
pub mod scheme;
mod secret;
mod sign;
mod verify;

pub use error::{ConfigError, Malformed, VerifyError};
pub use headers::Headers;
pub use scheme::Scheme;
pub use secret::{KeyKind, Secret};
pub use sign::Signer;
pub use verify::{
    unix_now, CheckedHeaders, IdSource, ParsedHeaders, Verified, Verifier, DEFAULT_MAX_SIGNATURES,
    DEFAULT_TOLERANCE,
};

/// Verify a body against one secret string in one call, with default settings.
///
/// ```
/// # use hookgate_core::{Scheme, Signer};
/// let secret = "shpss_secret";
/// let headers = Signer::new(Scheme::Shopify, Scheme::Shopify.secret(secret)?).sign("wh-1", 0, b"{}");
/// let v = hookgate_core::verify(Scheme::Shopify, secret, &headers, b"{}")?;
/// assert_eq!(v.id.as_deref(), Some("wh-1"));
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
///
/// # Errors
/// [`VerifyError`] when verification fails; a [`ConfigError`] (boxed) when the
/// secret is invalid.
pub fn verify(
    scheme: Scheme,
    secret: &str,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Verified, Box<dyn std::error::Error + Send + Sync>> {
    let verifier = Verifier::new(scheme, [scheme.secret(secret)?])?;
    Ok(verifier.verify(headers, body)?)
}
