//! Arbitrary headers (names and values) and body, for every scheme, with one
//! or two fixed secrets: verification may fail in any typed way but never
//! panics and never succeeds.
#![no_main]

use arbitrary::Arbitrary;
use hookgate_core::{Scheme, Verifier};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    scheme: u8,
    headers: Vec<(&'a str, &'a [u8])>,
    body: &'a [u8],
    now: i64,
    tolerance: u64,
    two_secrets: bool,
}

fuzz_target!(|input: Input<'_>| {
    let scheme = Scheme::ALL[usize::from(input.scheme) % Scheme::ALL.len()];
    let mut secrets = vec!["whsec_aG9va2dhdGUtZnV6ei1zZWNyZXQ="];
    if input.two_secrets {
        secrets.push("whsec_c2Vjb25kLWZ1enotc2VjcmV0");
    }
    let verifier = Verifier::from_secret_strings(scheme, secrets)
        .expect("fixed secrets are valid")
        .with_tolerance(std::time::Duration::from_secs(input.tolerance));
    if let Ok(v) = verifier.verify_at(&input.headers[..], input.body, input.now) {
        panic!("random input verified: {v:?}");
    }
});
