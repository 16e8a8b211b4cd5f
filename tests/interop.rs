//! Interop: hookgate's signatures verify in the providers' own published
//! libraries, and theirs verify in hookgate, for all five schemes.
//!
//! | scheme | library |
//! |---|---|
//! | standard | PyPI `standardwebhooks` (`Webhook.sign` / `Webhook.verify`) |
//! | stripe | PyPI `stripe` (`WebhookSignature.generate_signature_header` / `Webhook.construct_event`) |
//! | slack | PyPI `slack_sdk` (`SignatureVerifier.generate_signature` / `is_valid_request`) |
//! | github | npm `@octokit/webhooks-methods` (`sign` / `verify`) |
//! | shopify | npm `@shopify/shopify-api` (test helper `getHmac` / `webhooks.validate`) |
//!
//! `tests/interop/setup.sh` installs pinned versions under `target/interop/`.
//! Without python3/node these tests print a skip message, except under
//! `CI=true` where they fail. The libraries check timestamps against the real
//! clock, so every case is signed "now".

#[path = "interop/harness.rs"]
mod harness;

use harness::{answer_headers, headers_json, provider, Interop, Runtime};
use hookgate::core::{unix_now, Scheme, Secret, Signer, Verifier, VerifyError};
use rand::{distributions::Alphanumeric, Rng as _};
use serde_json::{json, Value};

fn interop() -> Option<Interop> {
    harness::setup(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn random_text(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A secret string as each provider issues them.
fn provider_secret(scheme: Scheme) -> String {
    match scheme {
        Scheme::StandardWebhooks => {
            let key: [u8; 24] = rand::random();
            Secret::from_bytes(key.to_vec())
                .unwrap()
                .to_standard_string()
        }
        Scheme::Stripe => format!("whsec_{}", random_text(32)),
        Scheme::Slack => hex_lower(&rand::random::<[u8; 16]>()),
        Scheme::GitHub => random_text(40),
        _ => format!("shpss_{}", hex_lower(&rand::random::<[u8; 16]>())),
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// UTF-8 bodies (the libraries decode bodies as UTF-8): ASCII JSON, non-ASCII
/// text, pretty-printed with newlines, and a larger one.
fn bodies(event_id: &str) -> Vec<String> {
    vec![
        format!(r#"{{"id":"{event_id}","object":"event","type":"invoice.paid"}}"#),
        format!(r#"{{"id":"{event_id}","object":"event","note":"héllo wörld ✓ 🦀 \u00e9"}}"#),
        format!("{{\n  \"id\": \"{event_id}\",\n  \"object\": \"event\",\n  \"data\": {{ \"a\": [1, 2, 3] }}\n}}\n"),
        format!(
            r#"{{"id":"{event_id}","object":"event","blob":"{}"}}"#,
            random_text(20_000)
        ),
    ]
}

fn flip_last_char(body: &str) -> String {
    // Change one byte of the body, keeping it valid UTF-8 JSON-ish text.
    let mut s = body.trim_end().to_owned();
    let last = s.pop().expect("non-empty body");
    s.push(if last == '}' { ']' } else { '}' });
    s
}

fn verify_case(scheme: Scheme, secret: &str, id: &str, body: &str, headers: Value) -> Value {
    let (_, lib) = provider(scheme.name());
    json!({
        "lib": lib, "op": "verify", "secret": secret, "id": id,
        "timestamp": 0, "body": body, "headers": headers,
    })
}

/// hookgate signs; the provider's library must accept, and must reject the
/// same headers over a changed body or under another secret (so a library
/// that accepted everything would fail this test).
fn hookgate_signs_provider_verifies(interop: &Interop, scheme: Scheme) {
    let (runtime, _) = provider(scheme.name());
    let secret = provider_secret(scheme);
    let other_secret = provider_secret(scheme);
    let now = unix_now();
    let mut cases = Vec::new();
    let mut expect = Vec::new();
    for (n, body) in bodies(&format!("evt_{}", random_text(12)))
        .into_iter()
        .enumerate()
    {
        let id = format!("msg_{}", random_text(20));
        let signer = Signer::new(scheme, scheme.secret(&secret).unwrap());
        let headers = signer.sign(&id, now, body.as_bytes());
        let hj = headers_json(&headers);
        cases.push(verify_case(scheme, &secret, &id, &body, hj.clone()));
        expect.push((true, format!("body #{n}")));
        cases.push(verify_case(
            scheme,
            &secret,
            &id,
            &flip_last_char(&body),
            hj.clone(),
        ));
        expect.push((false, format!("tampered body #{n}")));
        cases.push(verify_case(scheme, &other_secret, &id, &body, hj));
        expect.push((false, format!("other secret, body #{n}")));
    }
    // Rotation: signed with two secrets, the library knowing only the second.
    if matches!(scheme, Scheme::StandardWebhooks | Scheme::Stripe) {
        let signer = Signer::with_secrets(
            scheme,
            [
                scheme.secret(&other_secret).unwrap(),
                scheme.secret(&secret).unwrap(),
            ],
        )
        .unwrap();
        let body = bodies("evt_rotation").swap_remove(0);
        let headers = signer.sign("msg_rotation", now, body.as_bytes());
        cases.push(verify_case(
            scheme,
            &secret,
            "msg_rotation",
            &body,
            headers_json(&headers),
        ));
        expect.push((true, "two signatures, second secret".into()));
    }
    let answers = interop.run(runtime, &cases);
    for ((answer, (ok, what)), case) in answers.iter().zip(&expect).zip(&cases) {
        assert_eq!(
            answer["ok"].as_bool(),
            Some(*ok),
            "{scheme}: {what}: library answered {answer} for headers {}",
            case["headers"]
        );
    }
    // Event ids where the library reports one.
    if scheme == Scheme::Stripe {
        assert!(answers[0]["id"].as_str().unwrap().starts_with("evt_"));
    }
    if matches!(
        scheme,
        Scheme::StandardWebhooks | Scheme::GitHub | Scheme::Shopify
    ) {
        assert_eq!(answers[0]["id"], cases[0]["id"]);
    }
}

/// The provider's library signs; hookgate must accept, report the event id,
/// and reject a changed body.
fn provider_signs_hookgate_verifies(interop: &Interop, scheme: Scheme) {
    let (runtime, lib) = provider(scheme.name());
    let secret = provider_secret(scheme);
    let now = unix_now();
    let event_id = format!("evt_{}", random_text(12));
    let bodies = bodies(&event_id);
    let ids: Vec<String> = bodies
        .iter()
        .map(|_| format!("msg_{}", random_text(20)))
        .collect();
    let cases: Vec<Value> = bodies
        .iter()
        .zip(&ids)
        .map(|(body, id)| {
            json!({
                "lib": lib, "op": "sign", "secret": secret, "id": id,
                "timestamp": now, "body": body,
            })
        })
        .collect();
    let answers = interop.run(runtime, &cases);
    let verifier =
        Verifier::from_secret_strings(scheme, [provider_secret(scheme), secret.clone()]).unwrap();
    for ((answer, body), id) in answers.iter().zip(&bodies).zip(&ids) {
        let headers = answer_headers(answer);
        let verified = verifier
            .verify_at(&headers[..], body.as_bytes(), now)
            .unwrap_or_else(|e| panic!("{scheme}: {lib} signed {headers:?}, hookgate said {e}"));
        assert_eq!(verified.key_index, 1);
        let expected_id = match scheme {
            Scheme::Stripe => Some(event_id.as_str()),
            Scheme::Slack => None,
            _ => Some(id.as_str()),
        };
        assert_eq!(verified.id.as_deref(), expected_id, "{scheme}: event id");
        assert_eq!(
            verifier.verify_at(&headers[..], flip_last_char(body).as_bytes(), now),
            Err(VerifyError::NoMatchingSignature),
            "{scheme}: tampered body must fail"
        );
        if scheme.has_timestamp() {
            assert!(matches!(
                verifier.verify_at(&headers[..], body.as_bytes(), now + 301),
                Err(VerifyError::TimestampTooOld { .. })
            ));
        }
    }
}

macro_rules! interop_tests {
    ($($name:ident => $scheme:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[test]
            fn hookgate_signs_library_verifies() {
                let Some(interop) = interop() else { return };
                hookgate_signs_provider_verifies(&interop, $scheme);
            }

            #[test]
            fn library_signs_hookgate_verifies() {
                let Some(interop) = interop() else { return };
                provider_signs_hookgate_verifies(&interop, $scheme);
            }
        }
    )*};
}

interop_tests! {
    standard_webhooks => Scheme::StandardWebhooks,
    stripe => Scheme::Stripe,
    slack => Scheme::Slack,
    github => Scheme::GitHub,
    shopify => Scheme::Shopify,
}

/// The Standard Webhooks library accepts the `svix-*` header spelling only
/// through its own names; hookgate accepts both. Here the library signs and
/// hookgate verifies the Svix spelling.
#[test]
fn standard_webhooks_svix_aliases_from_library() {
    let Some(interop) = interop() else { return };
    let secret = provider_secret(Scheme::StandardWebhooks);
    let now = unix_now();
    let body = r#"{"type":"user.created"}"#;
    let answers = interop.run(
        Runtime::Python,
        &[
            json!({"lib": "standardwebhooks", "op": "sign", "secret": secret,
                  "id": "msg_svix", "timestamp": now, "body": body}),
        ],
    );
    let svix: Vec<(String, String)> = answer_headers(&answers[0])
        .into_iter()
        .map(|(k, v)| (k.replace("webhook-", "svix-"), v))
        .collect();
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [secret]).unwrap();
    let ok = verifier.verify_at(&svix[..], body.as_bytes(), now).unwrap();
    assert_eq!(ok.id.as_deref(), Some("msg_svix"));
}
