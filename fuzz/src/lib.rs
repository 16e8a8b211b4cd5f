//! Shared driver for the header-parser fuzz targets.
//!
//! Each `parse_<scheme>_header` target feeds arbitrary bytes as the values of
//! that scheme's headers (and of the Svix aliases, id headers and odd names)
//! through `Verifier::parse_headers`, `check_timestamp` and `verify_at`. Any
//! of them may return an error; none may panic, and a forged input must never
//! verify against the fixed secret.

use arbitrary::Arbitrary;
use hookgate_core::{Scheme, Verifier, VerifyError};

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

/// The header names a scheme reads (including aliases and id headers).
pub fn header_names(scheme: Scheme) -> &'static [&'static str] {
    match scheme {
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
        _ => &["X-Shopify-Hmac-Sha256", "X-Shopify-Webhook-Id"],
    }
}

/// Parse and verify arbitrary header values for `scheme`; never panics, never verifies.
pub fn fuzz_headers(scheme: Scheme, input: &HeaderInput<'_>) {
    let names = header_names(scheme);
    let mut headers: Vec<(&str, &[u8])> = names
        .iter()
        .copied()
        .zip(input.values.iter().copied())
        .collect();
    headers.extend(input.extra.iter().copied());
    let verifier = Verifier::new(
        scheme,
        [hookgate_core::Secret::from_bytes(SECRET.to_vec()).expect("non-empty")],
    )
    .expect("one secret")
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
