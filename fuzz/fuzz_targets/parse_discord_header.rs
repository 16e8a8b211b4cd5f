//! Arbitrary bytes as Discord `X-Signature-Ed25519` / `X-Signature-Timestamp`
//! values: the parser may return an error, never panic, and random input
//! never verifies against the fixed public key.
#![no_main]

use hookgate_core::Scheme;
use hookgate_fuzz::{fuzz_headers, HeaderInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: HeaderInput<'_>| {
    fuzz_headers(Scheme::Discord, &input);
});
