//! Verification cost per scheme and body size, against raw SHA-256 over the
//! same bytes (the floor: HMAC-SHA256 hashes the body once).
//!
//! Run: `cargo bench -p hookgate-core --bench verify -- --warm-up-time 1 --measurement-time 3`
//! Figures and goals are in BENCHMARKS.md.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hookgate_core::{Scheme, Signer, Verifier};
use sha2::{Digest as _, Sha256};

const TS: i64 = 1_700_000_000;
const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (64 * 1024, "64KiB"), (1024 * 1024, "1MiB")];

fn body(len: usize) -> Vec<u8> {
    // JSON-ish bytes with an id up front (Stripe reads it).
    let mut b = br#"{"id":"evt_1NkXbench","object":"event","data":""#.to_vec();
    b.resize(len.saturating_sub(2), b'x');
    b.extend_from_slice(b"\"}");
    b.truncate(len);
    b
}

fn secret(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        _ => "whsec_bench_secret_0123456789",
    }
}

fn signed(scheme: Scheme, body: &[u8]) -> (Verifier, Vec<(&'static str, String)>) {
    let s = secret(scheme);
    let headers = Signer::new(scheme, scheme.secret(s).unwrap()).sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        TS,
        body,
    );
    let verifier = Verifier::from_secret_strings(scheme, [s]).unwrap();
    (verifier, headers)
}

fn standard_vs_sha256(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_standard_vs_sha256");
    for (len, label) in SIZES {
        let body = body(len);
        let (verifier, headers) = signed(Scheme::StandardWebhooks, &body);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(
            BenchmarkId::new("standard_verify", label),
            &body,
            |b, body| {
                b.iter(|| {
                    verifier
                        .verify_at(black_box(&headers[..]), black_box(body), TS)
                        .unwrap()
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("sha256_raw", label), &body, |b, body| {
            b.iter(|| Sha256::digest(black_box(body)));
        });
    }
    group.finish();
}

fn other_schemes_1k(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_1KiB");
    let body = body(1024);
    group.throughput(Throughput::Bytes(1024));
    for scheme in [
        Scheme::Stripe,
        Scheme::GitHub,
        Scheme::Slack,
        Scheme::Shopify,
    ] {
        let (verifier, headers) = signed(scheme, &body);
        group.bench_function(scheme.name(), |b| {
            b.iter(|| {
                verifier
                    .verify_at(black_box(&headers[..]), black_box(&body[..]), TS)
                    .unwrap()
            });
        });
    }
    group.finish();
}

/// ed25519 (Standard Webhooks `v1a` with a `whpk_` key, Discord) and a
/// custom HMAC scheme (Zoom's format), 1 KiB bodies, beside `v1` HMAC.
fn asymmetric_and_custom_1k(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_1KiB_asymmetric_custom");
    let body = body(1024);
    group.throughput(Throughput::Bytes(1024));
    let signing = hookgate_core::Secret::ed25519_signing_key([7; 32]);
    let public = signing.public_key_string().unwrap();
    let public_hex = hex::encode(signing.public_key_bytes().unwrap());
    let zoom = Scheme::custom("x-zm-signature")
        .name("zoom")
        .signed("v0:{timestamp}:{body}")
        .prefix("v0=")
        .timestamp_header("x-zm-request-timestamp")
        .build()
        .unwrap();
    let cases = [
        ("standard_v1", signed(Scheme::StandardWebhooks, &body)),
        (
            "standard_v1a_ed25519",
            (
                Verifier::from_secret_strings(Scheme::StandardWebhooks, [&public]).unwrap(),
                Signer::new(Scheme::StandardWebhooks, signing.clone()).sign("msg_1", TS, &body),
            ),
        ),
        (
            "discord_ed25519",
            (
                Verifier::from_secret_strings(Scheme::Discord, [&public_hex]).unwrap(),
                Signer::new(Scheme::Discord, signing.clone()).sign("", TS, &body),
            ),
        ),
        (
            "custom_zoom_hmac",
            (
                Verifier::from_secret_strings(zoom, ["zoom token"]).unwrap(),
                Signer::new(zoom, zoom.secret("zoom token").unwrap()).sign("", TS, &body),
            ),
        ),
    ];
    for (name, (verifier, headers)) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                verifier
                    .verify_at(black_box(&headers[..]), black_box(&body[..]), TS)
                    .unwrap()
            });
        });
    }
    group.finish();
}

/// The fixed cost without the body: header lookup, syntax, base64 decoding.
fn standard_parse_only(c: &mut Criterion) {
    let (verifier, headers) = signed(Scheme::StandardWebhooks, b"{}");
    c.bench_function("standard_parse_headers", |b| {
        b.iter(|| verifier.parse_headers(black_box(&headers[..])).unwrap());
    });
}

criterion_group!(
    benches,
    standard_vs_sha256,
    other_schemes_1k,
    asymmetric_and_custom_1k,
    standard_parse_only
);
criterion_main!(benches);
