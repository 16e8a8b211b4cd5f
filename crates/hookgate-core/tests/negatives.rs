//! Header cases and negatives, per scheme: what peers' libraries test, with
//! the error variant asserted each time.

use std::time::Duration;

use hookgate_core::{
    ConfigError, Malformed, Scheme, Secret, Signer, Verifier, VerifyError, DEFAULT_MAX_SIGNATURES,
};

const NOW: i64 = 1_700_000_000;
const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_test_secret";
const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

type Pairs = Vec<(String, String)>;

fn sign(scheme: Scheme, secret: &str, id: &str, ts: i64, body: &[u8]) -> Pairs {
    Signer::new(scheme, scheme.secret(secret).unwrap())
        .sign(id, ts, body)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn verifier(scheme: Scheme, secret: &str) -> Verifier {
    Verifier::from_secret_strings(scheme, [secret]).unwrap()
}

fn get(headers: &Pairs, name: &str) -> String {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap()
}

fn set(headers: &Pairs, name: &str, value: &str) -> Pairs {
    headers
        .iter()
        .map(|(k, v)| {
            if k.eq_ignore_ascii_case(name) {
                (k.clone(), value.to_owned())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

fn without(headers: &Pairs, name: &str) -> Pairs {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

fn malformed(name: &'static str, reason: Malformed) -> VerifyError {
    VerifyError::MalformedHeader { name, reason }
}

fn stripe_hex(ts: i64, body: &[u8]) -> String {
    let h = sign(Scheme::Stripe, STRIPE_SECRET, "", ts, body);
    get(&h, "Stripe-Signature")
        .split_once(",v1=")
        .unwrap()
        .1
        .to_owned()
}

fn stripe_verify(header: &str) -> Result<hookgate_core::Verified, VerifyError> {
    verifier(Scheme::Stripe, STRIPE_SECRET).verify_at(
        &[("Stripe-Signature", header)][..],
        BODY,
        NOW,
    )
}

// ---------------------------------------------------------------- Stripe

#[test]
fn stripe_several_v1_one_valid_and_v0_ignored() {
    let good = stripe_hex(NOW, BODY);
    let bad = "0".repeat(64);
    // The Stripe SDKs' test fixtures: extra v1 signatures and a v0 signature.
    for header in [
        format!("t={NOW},v1={bad},v1={good}"),
        format!("t={NOW},v1={good},v1={bad}"),
        format!("t={NOW},v0={bad},v1={good}"),
        format!("v1={good},t={NOW}"),
        format!("t={NOW},v1={good},v0=not-even-hex,x=y"),
    ] {
        let ok = stripe_verify(&header).unwrap_or_else(|e| panic!("{header}: {e}"));
        assert_eq!(ok.id.as_deref(), Some("evt_1"));
        assert_eq!(ok.timestamp, Some(NOW));
    }
}

#[test]
fn stripe_spaces_around_items_are_tolerated() {
    let good = stripe_hex(NOW, BODY);
    assert!(stripe_verify(&format!("t={NOW}, v1={good}")).is_ok());
    assert!(stripe_verify(&format!("  t={NOW} ,\tv1={good}  ")).is_ok());
}

#[test]
fn stripe_only_v0_is_no_supported_signature() {
    let good = stripe_hex(NOW, BODY);
    assert_eq!(
        stripe_verify(&format!("t={NOW},v0={good}")),
        Err(malformed(
            "Stripe-Signature",
            Malformed::NoSupportedSignature
        ))
    );
}

#[test]
fn stripe_missing_or_bad_t() {
    let good = stripe_hex(NOW, BODY);
    assert_eq!(
        stripe_verify(&format!("v1={good}")),
        Err(malformed("Stripe-Signature", Malformed::BadTimestamp))
    );
    for t in [
        "",
        "abc",
        "-1",
        "+1700000000",
        "1700000000.5",
        "1e9",
        "0x10",
        " 1 2",
    ] {
        assert_eq!(
            stripe_verify(&format!("t={t},v1={good}")),
            Err(malformed("Stripe-Signature", Malformed::BadTimestamp)),
            "t={t}"
        );
    }
    // Two timestamps are ambiguous.
    assert_eq!(
        stripe_verify(&format!("t={NOW},t={NOW},v1={good}")),
        Err(malformed("Stripe-Signature", Malformed::BadSyntax))
    );
}

#[test]
fn stripe_wrong_secret_body_or_timestamp() {
    let good = stripe_hex(NOW, BODY);
    // Signature over another timestamp, presented with NOW.
    let other_ts = stripe_hex(NOW - 1, BODY);
    assert_eq!(
        stripe_verify(&format!("t={NOW},v1={other_ts}")),
        Err(VerifyError::NoMatchingSignature)
    );
    let v = Verifier::from_secret_strings(Scheme::Stripe, ["whsec_other"]).unwrap();
    assert_eq!(
        v.verify_at(
            &[("Stripe-Signature", format!("t={NOW},v1={good}"))][..],
            BODY,
            NOW
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn stripe_secret_is_used_as_utf8_bytes_not_base64() {
    // `whsec_dGVzdA==` decodes to b"test" under Standard Webhooks rules but is
    // used verbatim by Stripe.
    let stripe = Secret::for_scheme(Scheme::Stripe, "whsec_dGVzdA==").unwrap();
    assert_eq!(stripe.expose_bytes(), b"whsec_dGVzdA==");
    let standard = Secret::for_scheme(Scheme::StandardWebhooks, "whsec_dGVzdA==").unwrap();
    assert_eq!(standard.expose_bytes(), b"test");
    let bare = Secret::for_scheme(Scheme::StandardWebhooks, "dGVzdA==").unwrap();
    assert_eq!(bare.expose_bytes(), b"test");
    for scheme in [Scheme::GitHub, Scheme::Slack, Scheme::Shopify] {
        assert_eq!(
            Secret::for_scheme(scheme, "whsec_dGVzdA==")
                .unwrap()
                .expose_bytes(),
            b"whsec_dGVzdA=="
        );
    }
}

#[test]
fn secret_parsing_errors() {
    assert_eq!(
        Secret::for_scheme(Scheme::StandardWebhooks, "whsec_").unwrap_err(),
        ConfigError::EmptySecret
    );
    assert_eq!(
        Secret::for_scheme(Scheme::StandardWebhooks, "whsec_not base64!").unwrap_err(),
        ConfigError::InvalidSecretEncoding
    );
    for scheme in Scheme::ALL {
        assert_eq!(
            Secret::for_scheme(scheme, "").unwrap_err(),
            ConfigError::EmptySecret
        );
    }
    // The error never contains the secret.
    let err = Secret::for_scheme(Scheme::StandardWebhooks, "whsec_sup3r$ecret").unwrap_err();
    assert!(!err.to_string().contains("sup3r"));
    assert_eq!(
        Verifier::new(Scheme::Stripe, []).unwrap_err(),
        ConfigError::NoSecrets
    );
    assert!(matches!(
        "mailgun".parse::<Scheme>(),
        Err(ConfigError::UnknownScheme(_))
    ));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let s = Secret::for_scheme(Scheme::Stripe, "whsec_topsecret").unwrap();
    assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    let v = Verifier::from_secret_strings(Scheme::Stripe, ["whsec_topsecret"]).unwrap();
    assert!(!format!("{v:?}").contains("topsecret"));
    let signer = Signer::new(Scheme::Stripe, s);
    assert!(!format!("{signer:?}").contains("topsecret"));
}

// ------------------------------------------------------ Standard Webhooks

fn std_headers() -> Pairs {
    sign(Scheme::StandardWebhooks, STD_SECRET, "msg_1", NOW, BODY)
}

fn std_verify(headers: &Pairs) -> Result<hookgate_core::Verified, VerifyError> {
    verifier(Scheme::StandardWebhooks, STD_SECRET).verify_at(&headers[..], BODY, NOW)
}

#[test]
fn standard_empty_and_truncated_signatures() {
    let h = std_headers();
    let good = get(&h, "webhook-signature");
    let cases: Vec<(String, VerifyError)> = vec![
        ("".into(), malformed("webhook-signature", Malformed::Empty)),
        (
            "   ".into(),
            malformed("webhook-signature", Malformed::Empty),
        ),
        (
            "v1,".into(),
            malformed("webhook-signature", Malformed::Empty),
        ),
        (
            "v1".into(),
            malformed("webhook-signature", Malformed::BadSyntax),
        ),
        (
            good[..good.len() - 4].to_owned(),
            malformed("webhook-signature", Malformed::WrongLength { len: 30 }),
        ),
        (
            good[..good.len() - 1].to_owned(),
            malformed(
                "webhook-signature",
                Malformed::BadEncoding { encoding: "base64" },
            ),
        ),
        (
            "v1,AAAA".into(),
            malformed("webhook-signature", Malformed::WrongLength { len: 3 }),
        ),
        (
            "v1,%%%%not*base64%%%%".into(),
            malformed(
                "webhook-signature",
                Malformed::BadEncoding { encoding: "base64" },
            ),
        ),
        (
            format!("v1,{}", "A".repeat(500)),
            malformed("webhook-signature", Malformed::WrongLength { len: 375 }),
        ),
    ];
    for (value, err) in cases {
        assert_eq!(
            std_verify(&set(&h, "webhook-signature", &value)),
            Err(err),
            "{value:?}"
        );
    }
}

#[test]
fn standard_malformed_entry_beside_a_valid_signature_is_skipped() {
    let h = std_headers();
    let good = get(&h, "webhook-signature");
    let b64 = good.strip_prefix("v1,").unwrap();
    let bad_entries = [
        "v1".to_owned(),
        "v1,".to_owned(),
        "v1,AAAA".to_owned(),
        "v1,%%%%not*base64%%%%".to_owned(),
        format!("v1,{}", &b64[..b64.len() - 1]),
        format!("v1,{}", "A".repeat(500)),
        "garbage".to_owned(),
    ];
    for bad in &bad_entries {
        for value in [format!("{bad} {good}"), format!("{good} {bad}")] {
            assert!(
                std_verify(&set(&h, "webhook-signature", &value)).is_ok(),
                "{value:?}"
            );
        }
        // Beside a well-formed but wrong signature it still fails on the MAC.
        let wrong = format!("v1,{}", "A".repeat(43) + "=");
        assert_eq!(
            std_verify(&set(&h, "webhook-signature", &format!("{bad} {wrong}"))),
            Err(VerifyError::NoMatchingSignature),
            "{bad:?}"
        );
    }
    // Only malformed entries: the first one's error.
    assert_eq!(
        std_verify(&set(&h, "webhook-signature", "v1,AAAA v1")),
        Err(malformed(
            "webhook-signature",
            Malformed::WrongLength { len: 3 }
        ))
    );
    assert_eq!(
        std_verify(&set(&h, "webhook-signature", "v2,x v1")),
        Err(malformed("webhook-signature", Malformed::BadSyntax))
    );
    // Malformed entries still count toward the bound.
    let many = format!("{} {good}", vec!["v1"; DEFAULT_MAX_SIGNATURES].join(" "));
    assert!(matches!(
        std_verify(&set(&h, "webhook-signature", &many)),
        Err(VerifyError::MalformedHeader {
            reason: Malformed::TooManySignatures { .. },
            ..
        })
    ));
}

#[test]
fn standard_wrong_version_only() {
    let h = std_headers();
    let good = get(&h, "webhook-signature");
    let b64 = good.strip_prefix("v1,").unwrap();
    for value in [format!("v2,{b64}"), format!("V1,{b64}")] {
        assert_eq!(
            std_verify(&set(&h, "webhook-signature", &value)),
            Err(malformed(
                "webhook-signature",
                Malformed::NoSupportedSignature
            )),
            "{value}"
        );
    }
    // `v1a` is the asymmetric (ed25519) version: an HMAC-sized value there
    // is a malformed ed25519 signature, not an unknown version.
    assert_eq!(
        std_verify(&set(&h, "webhook-signature", &format!("v1a,{b64}"))),
        Err(malformed(
            "webhook-signature",
            Malformed::WrongLength { len: 32 }
        ))
    );
    // Accepted when a v1 is among them.
    assert!(std_verify(&set(&h, "webhook-signature", &format!("v2,{b64} {good}"))).is_ok());
}

#[test]
fn standard_several_signatures_one_valid() {
    let h = std_headers();
    let good = get(&h, "webhook-signature");
    let other = get(
        &sign(
            Scheme::StandardWebhooks,
            "whsec_dGVzdA==",
            "msg_1",
            NOW,
            BODY,
        ),
        "webhook-signature",
    );
    for value in [
        format!("{other} {good}"),
        format!("{good} {other}"),
        format!("{other}  {other}\t{good}"),
    ] {
        assert!(
            std_verify(&set(&h, "webhook-signature", &value)).is_ok(),
            "{value}"
        );
    }
    assert_eq!(
        std_verify(&set(&h, "webhook-signature", &format!("{other} {other}"))),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn standard_missing_headers() {
    let h = std_headers();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(
            std_verify(&without(&h, name)),
            Err(VerifyError::MissingHeader { name }),
            "{name}"
        );
    }
    let none: Pairs = Vec::new();
    assert!(matches!(
        std_verify(&none),
        Err(VerifyError::MissingHeader { .. })
    ));
}

#[test]
fn standard_header_names_are_case_insensitive() {
    let h: Pairs = std_headers()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect();
    assert!(std_verify(&h).is_ok());
}

#[test]
fn standard_id_and_timestamp_are_signed() {
    let h = std_headers();
    assert_eq!(
        std_verify(&set(&h, "webhook-id", "msg_2")),
        Err(VerifyError::NoMatchingSignature)
    );
    let other_ts = (NOW + 1).to_string();
    assert_eq!(
        std_verify(&set(&h, "webhook-timestamp", &other_ts)),
        Err(VerifyError::NoMatchingSignature)
    );
    // Leading zeros are a different signed string.
    let padded = format!("0{NOW}");
    assert_eq!(
        std_verify(&set(&h, "webhook-timestamp", &padded)),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn standard_malformed_id_and_timestamp() {
    let h = std_headers();
    for ts in ["abc", "-5", "1700000000.0", "1e9", "１７"] {
        let err = std_verify(&set(&h, "webhook-timestamp", ts)).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::MalformedHeader {
                    name: "webhook-timestamp",
                    ..
                }
            ),
            "{ts}: {err:?}"
        );
    }
    assert_eq!(
        std_verify(&set(&h, "webhook-timestamp", "99999999999999999999")),
        Err(malformed("webhook-timestamp", Malformed::BadTimestamp))
    );
    assert_eq!(
        std_verify(&set(&h, "webhook-id", &"x".repeat(300))),
        Err(malformed("webhook-id", Malformed::TooLong { max: 256 }))
    );
    assert_eq!(
        std_verify(&set(&h, "webhook-id", "msg 1")),
        Err(malformed("webhook-id", Malformed::NotText))
    );
}

#[test]
fn non_text_header_bytes_are_malformed() {
    let h = std_headers();
    let raw: Vec<(String, Vec<u8>)> = h
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone().into_bytes();
            if k == "webhook-signature" {
                v.push(0xff);
            }
            (k.clone(), v)
        })
        .collect();
    assert_eq!(
        verifier(Scheme::StandardWebhooks, STD_SECRET).verify_at(&raw[..], BODY, NOW),
        Err(malformed("webhook-signature", Malformed::NotText))
    );
}

#[test]
fn thousands_of_signatures_are_rejected_before_any_mac() {
    let h = std_headers();
    let good = get(&h, "webhook-signature");
    let mut many = vec![format!("v1,{}", "A".repeat(43) + "="); 5000];
    many.push(good.clone());
    let value = many.join(" ");
    assert_eq!(
        std_verify(&set(&h, "webhook-signature", &value)),
        Err(malformed(
            "webhook-signature",
            Malformed::TooManySignatures {
                max: DEFAULT_MAX_SIGNATURES
            }
        ))
    );
    // Also when the entries are of an ignored version.
    let ignored = format!("{} {good}", vec!["v2,x"; 5000].join(" "));
    assert!(matches!(
        std_verify(&set(&h, "webhook-signature", &ignored)),
        Err(VerifyError::MalformedHeader {
            reason: Malformed::TooManySignatures { .. },
            ..
        })
    ));
    // Stripe: thousands of v1 entries, or of unknown keys.
    let stripe_good = stripe_hex(NOW, BODY);
    let v1s = format!(
        "t={NOW},{},v1={stripe_good}",
        vec![format!("v1={}", "0".repeat(64)); 3000].join(",")
    );
    assert_eq!(
        stripe_verify(&v1s),
        Err(malformed(
            "Stripe-Signature",
            Malformed::TooManySignatures {
                max: DEFAULT_MAX_SIGNATURES
            }
        ))
    );
    let junk = format!("t={NOW},{},v1={stripe_good}", vec!["x=y"; 3000].join(","));
    assert!(matches!(
        stripe_verify(&junk),
        Err(VerifyError::MalformedHeader {
            reason: Malformed::TooManySignatures { .. },
            ..
        })
    ));
    // Exactly at the limit is fine; the limit is configurable.
    let mut at_limit = vec![
        get(
            &sign(
                Scheme::StandardWebhooks,
                "whsec_dGVzdA==",
                "msg_1",
                NOW,
                BODY
            ),
            "webhook-signature"
        );
        DEFAULT_MAX_SIGNATURES - 1
    ];
    at_limit.push(good.clone());
    let at_limit = set(&h, "webhook-signature", &at_limit.join(" "));
    assert!(std_verify(&at_limit).is_ok());
    let strict = verifier(Scheme::StandardWebhooks, STD_SECRET).with_max_signatures(2);
    assert!(matches!(
        strict.verify_at(&at_limit[..], BODY, NOW),
        Err(VerifyError::MalformedHeader {
            reason: Malformed::TooManySignatures { max: 2 },
            ..
        })
    ));
}

// -------------------------------------------------- tolerance boundaries

#[test]
fn tolerance_boundaries_in_both_directions() {
    for scheme in [Scheme::StandardWebhooks, Scheme::Stripe, Scheme::Slack] {
        let secret = if scheme == Scheme::StandardWebhooks {
            STD_SECRET
        } else {
            STRIPE_SECRET
        };
        for tolerance in [0u64, 1, 300, 86_400] {
            let v = verifier(scheme, secret).with_tolerance(Duration::from_secs(tolerance));
            let tol = tolerance as i64;
            let h = sign(scheme, secret, "msg_1", NOW, BODY);
            // Exactly ±tolerance: accepted.
            for now in [NOW - tol, NOW + tol, NOW] {
                assert!(
                    v.verify_at(&h[..], BODY, now).is_ok(),
                    "{scheme} tol {tol} now {now}"
                );
            }
            // Signed tolerance+1 s ago: too old.
            assert_eq!(
                v.verify_at(&h[..], BODY, NOW + tol + 1),
                Err(VerifyError::TimestampTooOld {
                    timestamp: NOW,
                    now: NOW + tol + 1,
                    tolerance
                }),
                "{scheme}"
            );
            // Signed tolerance+1 s ahead: in the future.
            assert_eq!(
                v.verify_at(&h[..], BODY, NOW - tol - 1),
                Err(VerifyError::TimestampInFuture {
                    timestamp: NOW,
                    now: NOW - tol - 1,
                    tolerance
                }),
                "{scheme}"
            );
        }
    }
}

#[test]
fn timestamp_is_checked_before_the_mac() {
    // A stale request with a wrong signature reports the timestamp, so the
    // MAC was never the deciding step.
    let h = std_headers();
    let forged = set(
        &h,
        "webhook-signature",
        &format!("v1,{}", "A".repeat(43) + "="),
    );
    assert!(matches!(
        verifier(Scheme::StandardWebhooks, STD_SECRET).verify_at(&forged[..], BODY, NOW + 10_000),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    assert_eq!(
        VerifyError::TimestampTooOld {
            timestamp: 0,
            now: 0,
            tolerance: 0
        }
        .kind(),
        "timestamp_out_of_tolerance"
    );
    assert_eq!(VerifyError::NoMatchingSignature.kind(), "invalid_signature");
    assert_eq!(
        VerifyError::MissingHeader { name: "x" }.kind(),
        "malformed_webhook"
    );
}

#[test]
fn extreme_clocks_do_not_overflow() {
    let h = std_headers();
    let v = verifier(Scheme::StandardWebhooks, STD_SECRET)
        .with_tolerance(Duration::from_secs(u64::MAX));
    assert!(v.verify_at(&h[..], BODY, 0).is_ok());
    assert!(v.verify_at(&h[..], BODY, i64::MAX).is_ok());
    // Further than i64::MAX seconds apart: still a typed answer, no overflow.
    assert!(matches!(
        v.verify_at(&h[..], BODY, i64::MIN),
        Err(VerifyError::TimestampInFuture { .. })
    ));
    let v = verifier(Scheme::StandardWebhooks, STD_SECRET);
    assert!(matches!(
        v.verify_at(&h[..], BODY, i64::MIN),
        Err(VerifyError::TimestampInFuture { .. })
    ));
    assert!(matches!(
        v.verify_at(&h[..], BODY, i64::MAX),
        Err(VerifyError::TimestampTooOld { .. })
    ));
}

// ------------------------------------------------- GitHub, Slack, Shopify

#[test]
fn github_negatives() {
    let secret = "gh-secret";
    let h = sign(Scheme::GitHub, secret, "d-1", 0, BODY);
    let v = verifier(Scheme::GitHub, secret);
    let sig = get(&h, "X-Hub-Signature-256");
    let hex = sig.strip_prefix("sha256=").unwrap();
    let name = "X-Hub-Signature-256";
    let cases: Vec<(String, VerifyError)> = vec![
        ("".into(), malformed(name, Malformed::Empty)),
        ("sha256=".into(), malformed(name, Malformed::Empty)),
        (hex.to_owned(), malformed(name, Malformed::BadSyntax)),
        (
            format!("sha1={hex}"),
            malformed(name, Malformed::NoSupportedSignature),
        ),
        (
            format!("sha256={}", &hex[..62]),
            malformed(name, Malformed::WrongLength { len: 31 }),
        ),
        (
            format!("sha256={}zz", &hex[..62]),
            malformed(name, Malformed::BadEncoding { encoding: "hex" }),
        ),
        (
            format!("sha256={}", "g".repeat(64)),
            malformed(name, Malformed::BadEncoding { encoding: "hex" }),
        ),
        (
            format!("sha256={}", "0".repeat(64)),
            VerifyError::NoMatchingSignature,
        ),
    ];
    for (value, err) in cases {
        assert_eq!(
            v.verify_at(&set(&h, name, &value)[..], BODY, 0),
            Err(err),
            "{value:?}"
        );
    }
    assert_eq!(
        v.verify_at(&without(&h, name)[..], BODY, 0),
        Err(VerifyError::MissingHeader { name })
    );
    // The delivery id is optional and unsigned.
    let no_id = without(&h, "X-GitHub-Delivery");
    assert_eq!(v.verify_at(&no_id[..], BODY, 0).unwrap().id, None);
    assert!(v
        .verify_at(&set(&h, "X-GitHub-Delivery", "d-2")[..], BODY, 0)
        .is_ok());
    assert!(!v.id_is_signed());
    // Uppercase hex decodes to the same MAC.
    let upper = format!("sha256={}", hex.to_ascii_uppercase());
    assert!(v.verify_at(&set(&h, name, &upper)[..], BODY, 0).is_ok());
}

#[test]
fn slack_negatives() {
    let secret = "slack-secret";
    let h = sign(Scheme::Slack, secret, "", NOW, BODY);
    let v = verifier(Scheme::Slack, secret);
    let sig = get(&h, "X-Slack-Signature");
    let hex = sig.strip_prefix("v0=").unwrap();
    let name = "X-Slack-Signature";
    for (value, err) in [
        ("v0=".to_owned(), malformed(name, Malformed::Empty)),
        (
            format!("v1={hex}"),
            malformed(name, Malformed::NoSupportedSignature),
        ),
        (hex.to_owned(), malformed(name, Malformed::BadSyntax)),
        (
            format!("v0={}", "0".repeat(64)),
            VerifyError::NoMatchingSignature,
        ),
    ] {
        assert_eq!(
            v.verify_at(&set(&h, name, &value)[..], BODY, NOW),
            Err(err),
            "{value}"
        );
    }
    for missing in ["X-Slack-Signature", "X-Slack-Request-Timestamp"] {
        assert_eq!(
            v.verify_at(&without(&h, missing)[..], BODY, NOW),
            Err(VerifyError::MissingHeader { name: missing })
        );
    }
    assert_eq!(
        v.verify_at(
            &set(&h, "X-Slack-Request-Timestamp", &(NOW + 1).to_string())[..],
            BODY,
            NOW
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn shopify_negatives() {
    let secret = "shpss_secret";
    let h = sign(Scheme::Shopify, secret, "wh-1", 0, BODY);
    let v = verifier(Scheme::Shopify, secret);
    let name = "X-Shopify-Hmac-Sha256";
    for (value, err) in [
        ("".to_owned(), malformed(name, Malformed::Empty)),
        (
            "!!!!".to_owned(),
            malformed(name, Malformed::BadEncoding { encoding: "base64" }),
        ),
        (
            "AAAA".to_owned(),
            malformed(name, Malformed::WrongLength { len: 3 }),
        ),
        ("A".repeat(43) + "=", VerifyError::NoMatchingSignature),
    ] {
        assert_eq!(
            v.verify_at(&set(&h, name, &value)[..], BODY, 0),
            Err(err),
            "{value}"
        );
    }
    assert_eq!(
        v.verify_at(&without(&h, name)[..], BODY, 0),
        Err(VerifyError::MissingHeader { name })
    );
    assert_eq!(
        v.verify_at(&h[..], b"{}", 0),
        Err(VerifyError::NoMatchingSignature)
    );
}

// ---------------------------------------------------------------- bodies

#[test]
fn non_utf8_bodies_sign_and_verify_for_every_scheme() {
    let bodies: [&[u8]; 4] = [
        b"",
        b"\xff\xfe\x00\x80",
        b"\xc3\x28 invalid utf-8",
        &[0u8; 1024],
    ];
    for scheme in Scheme::ALL {
        let secret = if scheme == Scheme::StandardWebhooks {
            STD_SECRET
        } else {
            "k"
        };
        let v = verifier(scheme, secret);
        for body in bodies {
            let h = sign(scheme, secret, "msg_1", NOW, body);
            let ok = v
                .verify_at(&h[..], body, NOW)
                .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            if scheme == Scheme::Stripe {
                assert_eq!(ok.id, None, "no JSON id in a binary body");
            }
            let mut changed = body.to_vec();
            changed.push(0xff);
            assert_eq!(
                v.verify_at(&h[..], &changed, NOW),
                Err(VerifyError::NoMatchingSignature),
                "{scheme}"
            );
        }
    }
}

#[test]
fn rotation_any_secret_matches_and_key_index_reports_which() {
    for scheme in Scheme::ALL {
        let (a, b, c) = if scheme == Scheme::StandardWebhooks {
            ("whsec_YQ==", "whsec_Yg==", "whsec_Yw==")
        } else {
            ("a", "b", "c")
        };
        let v = Verifier::from_secret_strings(scheme, [a, b]).unwrap();
        assert_eq!(
            v.verify_at(&sign(scheme, a, "m", NOW, BODY)[..], BODY, NOW)
                .unwrap()
                .key_index,
            0
        );
        assert_eq!(
            v.verify_at(&sign(scheme, b, "m", NOW, BODY)[..], BODY, NOW)
                .unwrap()
                .key_index,
            1
        );
        assert_eq!(
            v.verify_at(&sign(scheme, c, "m", NOW, BODY)[..], BODY, NOW),
            Err(VerifyError::NoMatchingSignature),
            "{scheme}"
        );
    }
}

#[cfg(feature = "http")]
#[test]
fn http_header_map_works() {
    let h = std_headers();
    let mut map = http::HeaderMap::new();
    for (k, v) in &h {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let ok = verifier(Scheme::StandardWebhooks, STD_SECRET)
        .verify_at(&map, BODY, NOW)
        .unwrap();
    assert_eq!(ok.id.as_deref(), Some("msg_1"));
}

// ------------------------------------------------------------- id sources

#[test]
fn id_sources() {
    use hookgate_core::IdSource;
    let secret = "slack-secret";
    let body = br#"{"event_id":"Ev123","type":"event_callback"}"#;
    let mut h = sign(Scheme::Slack, secret, "", NOW, body);
    h.push(("X-Request-Id".into(), "req-9".into()));
    let plain = verifier(Scheme::Slack, secret);
    assert_eq!(plain.verify_at(&h[..], body, NOW).unwrap().id, None);

    let json =
        verifier(Scheme::Slack, secret).with_id_source(IdSource::JsonField("event_id".into()));
    assert!(json.id_is_signed());
    let parsed = json.parse_headers(&h[..]).unwrap();
    assert_eq!(parsed.header_id(), None);
    let checked = json.check_timestamp(parsed, NOW).unwrap();
    assert_eq!(
        json.verify_parsed(&checked, body).unwrap().id.as_deref(),
        Some("Ev123")
    );
    assert_eq!(
        json.verify_at(&h[..], body, NOW).unwrap().id.as_deref(),
        Some("Ev123")
    );

    let header =
        verifier(Scheme::Slack, secret).with_id_source(IdSource::Header("x-request-id".into()));
    assert!(!header.id_is_signed());
    let parsed = header.parse_headers(&h[..]).unwrap();
    assert_eq!(parsed.header_id(), Some("req-9"));
    let checked = header.check_timestamp(parsed, NOW).unwrap();
    assert_eq!(
        header.verify_parsed(&checked, body).unwrap().id.as_deref(),
        Some("req-9")
    );
    assert_eq!(
        header.verify_at(&h[..], body, NOW).unwrap().id.as_deref(),
        Some("req-9")
    );
    let bad = set(&h, "X-Request-Id", "has space");
    assert!(matches!(
        header.verify_at(&bad[..], body, NOW),
        Err(VerifyError::MalformedHeader {
            reason: Malformed::NotText,
            ..
        })
    ));

    // Standard Webhooks: the scheme's id, through both paths.
    let sh = std_headers();
    let v = verifier(Scheme::StandardWebhooks, STD_SECRET);
    let parsed = v.parse_headers(&sh[..]).unwrap();
    assert_eq!(parsed.header_id(), Some("msg_1"));
    assert_eq!(parsed.timestamp(), Some(NOW));
    assert_eq!(parsed.signature_count(), 1);
    let checked = v.check_timestamp(parsed, NOW).unwrap();
    assert_eq!(checked.parsed().header_id(), Some("msg_1"));
    assert_eq!(
        v.verify_parsed(&checked, BODY).unwrap().id.as_deref(),
        Some("msg_1")
    );
}

#[test]
fn the_step_by_step_path_cannot_skip_the_timestamp() {
    // `verify_parsed` only takes headers that passed `check_timestamp`; a
    // stale request never gets that far.
    let sh = std_headers();
    let v = verifier(Scheme::StandardWebhooks, STD_SECRET);
    let stale = v.parse_headers(&sh[..]).unwrap();
    assert!(matches!(
        v.check_timestamp(stale, NOW + 301),
        Err(VerifyError::TimestampTooOld { .. })
    ));
    let future = v.parse_headers(&sh[..]).unwrap();
    assert!(matches!(
        v.check_timestamp(future, NOW - 301),
        Err(VerifyError::TimestampInFuture { .. })
    ));
    // Schemes without a timestamp pass step 2 and are checked by MAC only.
    let gh = sign(Scheme::GitHub, "gh-secret", "d-1", NOW, BODY);
    let g = verifier(Scheme::GitHub, "gh-secret");
    let checked = g
        .check_timestamp(g.parse_headers(&gh[..]).unwrap(), 0)
        .unwrap();
    assert!(g.verify_parsed(&checked, BODY).is_ok());
    assert_eq!(
        g.verify_parsed(&checked, b"other").unwrap_err(),
        VerifyError::NoMatchingSignature
    );
}
