//! Arbitrary bytes as Standard Webhooks header values, verified against an
//! ed25519 public key and an HMAC secret, so `v1a` and `v1` entries both
//! reach a key: errors allowed, panics not, and random input never verifies.
#![no_main]

use hookgate_core::Scheme;
use hookgate_fuzz::{fuzz_headers_with, keys, HeaderInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: HeaderInput<'_>| {
    fuzz_headers_with(
        Scheme::StandardWebhooks,
        keys(Scheme::StandardWebhooks, true),
        &input,
    );
});
