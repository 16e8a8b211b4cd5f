//! Custom HMAC schemes: an arbitrary definition (template, prefix,
//! separator, header names) goes through the builder, which may refuse it
//! but never panics; then arbitrary header values go through one of a few
//! fixed definitions (hex / base64, sha1 / sha256 / sha512, prefix,
//! separator, timestamp, signed and unsigned id): errors allowed, panics
//! not, and random input never verifies.
#![no_main]

use arbitrary::Arbitrary;
use hookgate_core::scheme::{Algorithm, Encoding};
use hookgate_core::Scheme;
use hookgate_fuzz::{fuzz_headers, HeaderInput};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    template: &'a str,
    prefix: &'a str,
    separator: char,
    header: &'a str,
    timestamp_header: Option<&'a str>,
    id_header: Option<&'a str>,
    which: u8,
    headers: HeaderInput<'a>,
}

fn fixed(which: u8) -> Scheme {
    let built = match which % 4 {
        0 => Scheme::custom("x-zm-signature")
            .name("fuzz-zoom")
            .signed("v0:{timestamp}:{body}")
            .prefix("v0=")
            .timestamp_header("x-zm-request-timestamp"),
        1 => Scheme::custom("linear-signature")
            .name("fuzz-linear")
            .id_header("linear-delivery"),
        2 => Scheme::custom("x-sig")
            .name("fuzz-multi")
            .signed("{id}|{timestamp}|{body}")
            .algorithm(Algorithm::Sha512)
            .encoding(Encoding::Base64)
            .separator(',')
            .timestamp_header("x-ts")
            .id_header("x-id"),
        _ => Scheme::custom("x-hub-signature")
            .name("fuzz-sha1")
            .algorithm(Algorithm::Sha1)
            .prefix("sha1=")
            .separator(' '),
    };
    built.build().expect("fixed definitions are valid")
}

fuzz_target!(|input: Input<'_>| {
    // Arbitrary definitions: refused or accepted, never a panic. Given a
    // fixed name, so the process-wide set of definitions stays small.
    let mut b = Scheme::custom(input.header)
        .name("fuzz-arbitrary")
        .signed(input.template)
        .prefix(input.prefix)
        .separator(input.separator);
    if let Some(h) = input.timestamp_header {
        b = b.timestamp_header(h);
    }
    if let Some(h) = input.id_header {
        b = b.id_header(h);
    }
    let _ = b.build();
    fuzz_headers(fixed(input.which), &input.headers);
});
