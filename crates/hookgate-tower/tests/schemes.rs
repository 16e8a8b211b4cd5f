//! The layer with the schemes beyond the five HMAC ones, on every store:
//! Standard Webhooks `v1a` (ed25519, verified with the `whpk_` key alone),
//! Discord (ed25519, the JSON body's id), and custom HMAC schemes with a
//! signed id (deduplicated on it) and with an unsigned id header
//! (deduplicated on the body, so a replay under a new id is still caught).
#![cfg(feature = "axum")]

mod layer_support;

use std::sync::Arc;

use hookgate_core::{unix_now, Scheme, Secret, Signer, Verifier};
use hookgate_tower::VerifyWebhookLayer;
use layer_support::*;

fn ed25519() -> (Secret, String, String) {
    let signing = Secret::ed25519_signing_key([9; 32]);
    let whpk = signing.public_key_string().unwrap();
    let hex_pk: String = signing
        .public_key_bytes()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (signing, whpk, hex_pk)
}

fn custom_signed_id() -> Scheme {
    Scheme::custom("x-sig")
        .name("acme")
        .signed("{id}.{timestamp}.{body}")
        .timestamp_header("x-ts")
        .id_header("x-event-id")
        .build()
        .unwrap()
}

fn custom_unsigned_id() -> Scheme {
    Scheme::custom("Linear-Signature")
        .name("linear")
        .id_header("Linear-Delivery")
        .build()
        .unwrap()
}

/// (verifier, signer) for each case.
fn cases() -> Vec<(Verifier, Signer)> {
    let (signing, whpk, hex_pk) = ed25519();
    let acme = custom_signed_id();
    let linear = custom_unsigned_id();
    vec![
        (
            Verifier::from_secret_strings(Scheme::StandardWebhooks, [&whpk]).unwrap(),
            Signer::new(Scheme::StandardWebhooks, signing.clone()),
        ),
        (
            Verifier::from_secret_strings(Scheme::Discord, [&hex_pk]).unwrap(),
            Signer::new(Scheme::Discord, signing),
        ),
        (
            Verifier::from_secret_strings(acme, ["acme secret"]).unwrap(),
            Signer::new(acme, acme.secret("acme secret").unwrap()),
        ),
        (
            Verifier::from_secret_strings(linear, ["linear secret"]).unwrap(),
            Signer::new(linear, linear.secret("linear secret").unwrap()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_and_custom_schemes_verify_and_dedup_on_every_store() {
    for_each_store(|name, store, replica| async move {
        for (verifier, signer) in cases() {
            let scheme = verifier.scheme();
            let prefix = test_prefix();
            let a = serve(
                VerifyWebhookLayer::new(verifier.clone())
                    .with_store(Arc::clone(&store))
                    .with_prefix(&prefix),
                vec![Action::Status(200)],
            )
            .await;
            let b = serve(
                VerifyWebhookLayer::new(verifier.clone())
                    .with_store(Arc::clone(&replica))
                    .with_prefix(&prefix),
                vec![Action::Status(200)],
            )
            .await;
            let client = client();
            let id = random_id("evt");
            let body = format!(r#"{{"id":"{id}","type":"x"}}"#).into_bytes();
            let headers = signer.sign(&id, unix_now(), &body);
            let res = post(&client, &a.url(), &headers, &body).await;
            assert_eq!(res.status(), 200, "{name} {scheme}");
            // The retry reaches the other replica: answered from the store.
            let res = post(&client, &b.url(), &headers, &body).await;
            assert_eq!(res.status(), 200, "{name} {scheme}");
            assert_eq!(
                res.headers()["idempotent-replayed"],
                "true",
                "{name} {scheme}"
            );
            assert_eq!(a.calls() + b.calls(), 1, "{name} {scheme}: handled once");
            let seen = a.seen.lock().unwrap().clone();
            assert_eq!(seen[0].0.as_deref(), Some(id.as_str()), "{name} {scheme}");
            // One changed byte: 401, the handler never runs.
            let mut forged = body.clone();
            forged[5] ^= 0x01;
            let res = post(&client, &a.url(), &headers, &forged).await;
            assert_eq!(res.status(), 401, "{name} {scheme}");
            // Stale: 401 before the body is read.
            let stale = signer.sign(&random_id("evt"), unix_now() - 3600, &body);
            if scheme.has_timestamp() {
                let res = post(&client, &a.url(), &stale, &body).await;
                assert_eq!(res.status(), 401, "{name} {scheme}");
            }
            // Missing headers: 400.
            let res = post(&client, &a.url(), &[], &body).await;
            assert_eq!(res.status(), 400, "{name} {scheme}");
            assert_eq!(a.calls() + b.calls(), 1, "{name} {scheme}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_unsigned_custom_id_cannot_bypass_dedup() {
    let linear = custom_unsigned_id();
    let verifier = Verifier::from_secret_strings(linear, ["linear secret"]).unwrap();
    assert!(!verifier.id_is_signed());
    let signer = Signer::new(linear, linear.secret("linear secret").unwrap());
    let srv = serve(VerifyWebhookLayer::new(verifier), vec![Action::Status(200)]).await;
    let client = client();
    let body = br#"{"action":"create","type":"Issue"}"#;
    let first = signer.sign("delivery-1", unix_now(), body);
    assert_eq!(post(&client, &srv.url(), &first, body).await.status(), 200);
    // A captured request replayed under a fresh delivery id is still a duplicate.
    let replayed = signer.sign("delivery-2", unix_now(), body);
    let res = post(&client, &srv.url(), &replayed, body).await;
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(srv.calls(), 1);
}
