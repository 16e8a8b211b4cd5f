//! Shared driver for the header-parser fuzz targets.
//!
//! Each `parse_<scheme>_header` target feeds arbitrary bytes as the values of
//! that scheme's headers (and of the Svix aliases, id headers and odd names)
//! through `Verifier::parse_headers`, `check_timestamp` and `verify_at`. Any
//! of them may return an error; none may panic, and a forged input must never
//! verify against the fixed secret.

use arbitrary::Arbitrary;
use hookgate_core::{Scheme, Secret, Verifier, VerifyError};

/// The secret every target verifies against.
pub const SECRET: &[u8] = b"hookgate-fuzz-fixed-secret";

/// Arbitrary header values for one scheme, plus a body and a clock.
#[derive(Debug, Arbitrary)]
pub struct HeaderInput<'a> {
    /// Values for the scheme's header names, in order; missing ones are absent.
    pub values: Vec<&'a [u8]>,
    /// Extra headers with arbitrary names.
    pub extra: Vec<(&'a str, &'a [u8])>,
    /// The body.
    pub body: &'a [u8],
    /// The verifier's clock.
    pub now: i64,
    /// Signature cap.
    pub max_signatures: u8,
}

/// The ed25519 seed whose public key the asymmetric targets verify against.
pub const ED25519_SEED: [u8; 32] = [0x5a; 32];

/// The header names a scheme reads (including aliases and id headers).
pub fn header_names(scheme: Scheme) -> Vec<&'static str> {
    let names: &'static [&'static str] = match scheme {
        Scheme::StandardWebhooks => &[
            "webhook-signature",
            "webhook-timestamp",
            "webhook-id",
            "svix-signature",
            "svix-timestamp",
            "svix-id",
        ],
        Scheme::Stripe => &["Stripe-Signature"],
        Scheme::GitHub => &["X-Hub-Signature-256", "X-GitHub-Delivery"],
        Scheme::Slack => &["X-Slack-Signature", "X-Slack-Request-Timestamp"],
        Scheme::Discord => &["X-Signature-Ed25519", "X-Signature-Timestamp"],
        Scheme::Custom(c) => {
            let mut names = vec![c.signature_header()];
            names.extend(c.timestamp_header());
            names.extend(c.id_header());
            return names;
        }
        _ => &["X-Shopify-Hmac-Sha256", "X-Shopify-Webhook-Id"],
    };
    names.to_vec()
}

/// The keys a scheme's target verifies against: the fixed HMAC secret, the
/// fixed ed25519 public key, or both (Standard Webhooks, so `v1` and `v1a`
/// entries both reach a key).
pub fn keys(scheme: Scheme, asymmetric: bool) -> Vec<Secret> {
    // Built once: decompressing the point per input would dominate the run.
    static PUBLIC: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
    let hmac = Secret::from_bytes(SECRET.to_vec()).expect("non-empty");
    let public = || {
        PUBLIC
            .get_or_init(|| {
                let pk = Secret::ed25519_signing_key(ED25519_SEED)
                    .public_key_bytes()
                    .expect("ed25519");
                Secret::ed25519_public_key(pk).expect("valid key")
            })
            .clone()
    };
    match scheme {
        Scheme::Discord => vec![public()],
        Scheme::StandardWebhooks if asymmetric => vec![public(), hmac],
        _ => vec![hmac],
    }
}

/// Parse and verify arbitrary header values for `scheme`; never panics, never verifies.
pub fn fuzz_headers(scheme: Scheme, input: &HeaderInput<'_>) {
    fuzz_headers_with(scheme, keys(scheme, false), input);
}

/// [`fuzz_headers`] against the given keys.
pub fn fuzz_headers_with(scheme: Scheme, keys: Vec<Secret>, input: &HeaderInput<'_>) {
    let names = header_names(scheme);
    let mut headers: Vec<(&str, &[u8])> = names
        .iter()
        .copied()
        .zip(input.values.iter().copied())
        .collect();
    headers.extend(input.extra.iter().copied());
    let verifier = Verifier::new(scheme, keys)
        .expect("keys fit the scheme")
        .with_max_signatures(usize::from(input.max_signatures));
    if let Ok(parsed) = verifier.parse_headers(&headers[..]) {
        let _ = parsed.timestamp();
        let _ = parsed.header_id();
        assert!(parsed.signature_count() >= 1);
        assert!(parsed.signature_count() <= usize::from(input.max_signatures).max(1));
        if let Ok(checked) = verifier.check_timestamp(parsed, input.now) {
            // Random bytes never carry a valid MAC, step by step either.
            assert!(verifier.verify_parsed(&checked, input.body).is_err());
        }
    }
    match verifier.verify_at(&headers[..], input.body, input.now) {
        // A random 256-bit MAC matching is not going to happen; if it does,
        // the verifier is broken.
        Ok(v) => panic!("random input verified: {v:?}"),
        Err(e) => {
            let _ = e.to_string();
            let _ = e.kind();
            if let VerifyError::MalformedHeader { name, .. } | VerifyError::MissingHeader { name } =
                e
            {
                assert!(names.iter().any(|n| n.eq_ignore_ascii_case(name)));
            }
        }
    }
}
