//! Sign then verify always succeeds, for every scheme, with arbitrary keys,
//! ids, timestamps and bodies; and the reported id and timestamp are the
//! signed ones.
#![no_main]

use arbitrary::Arbitrary;
use hookgate_core::{Scheme, Secret, Signer, Verifier};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    scheme: u8,
    key: &'a [u8],
    id: &'a str,
    timestamp: i64,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let scheme = Scheme::ALL[usize::from(input.scheme) % Scheme::ALL.len()];
    let Ok(key) = Secret::from_bytes(input.key.to_vec()) else {
        return; // empty key: refused when building, as it should be
    };
    // Ids travel in headers: visible ASCII, bounded, as a sender would produce.
    let id: String = input
        .id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect();
    if id.is_empty() {
        return;
    }
    // Timestamps are plain non-negative decimal seconds (at most 18 digits).
    let timestamp = input.timestamp.rem_euclid(1_000_000_000_000_000_000);
    let signer = Signer::new(scheme, key.clone());
    let headers = signer.sign(&id, timestamp, input.body);
    let verifier = Verifier::new(scheme, [key]).expect("one secret");
    let verified = verifier
        .verify_at(&headers[..], input.body, timestamp)
        .unwrap_or_else(|e| panic!("{scheme}: signed message did not verify: {e}"));
    assert_eq!(verified.scheme, scheme);
    if scheme.has_timestamp() {
        assert_eq!(verified.timestamp, Some(timestamp));
    }
    if matches!(
        scheme,
        Scheme::StandardWebhooks | Scheme::GitHub | Scheme::Shopify
    ) {
        assert_eq!(verified.id.as_deref(), Some(id.as_str()));
    }
});
