//! Ed25519 sign then verify always succeeds (Standard Webhooks `v1a` with a
//! `whpk_` public key, Discord with the hex public key), with arbitrary
//! seeds, ids, timestamps and bodies; and any changed body byte fails.
#![no_main]

use arbitrary::Arbitrary;
use hookgate_core::{Scheme, Secret, Signer, Verifier};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    discord: bool,
    seed: [u8; 32],
    id: &'a str,
    timestamp: i64,
    body: &'a [u8],
    flip: u16,
}

fuzz_target!(|input: Input<'_>| {
    let scheme = if input.discord {
        Scheme::Discord
    } else {
        Scheme::StandardWebhooks
    };
    let signing = Secret::ed25519_signing_key(input.seed);
    let public = match scheme {
        Scheme::Discord => hex::encode(signing.public_key_bytes().expect("ed25519")),
        _ => signing.public_key_string().expect("ed25519"),
    };
    let id: String = input
        .id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect();
    if id.is_empty() {
        return;
    }
    let timestamp = input.timestamp.rem_euclid(1_000_000_000_000_000_000);
    let headers = Signer::with_secrets(scheme, [signing])
        .expect("a signing key signs")
        .sign(&id, timestamp, input.body);
    let verifier = Verifier::from_secret_strings(scheme, [public]).expect("valid public key");
    let verified = verifier
        .verify_at(&headers[..], input.body, timestamp)
        .unwrap_or_else(|e| panic!("{scheme}: signed message did not verify: {e}"));
    assert_eq!(verified.timestamp, Some(timestamp));
    if !input.body.is_empty() {
        let mut body = input.body.to_vec();
        let i = usize::from(input.flip) % body.len();
        body[i] ^= 0x01;
        assert!(verifier.verify_at(&headers[..], &body, timestamp).is_err());
    }
});
