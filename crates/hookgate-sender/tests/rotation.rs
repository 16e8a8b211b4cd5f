//! Sender secret rotation (issue 10, item 7): an endpoint carries a new
//! secret and previous ones with an expiry. Standard Webhooks and Stripe
//! sign with every unexpired secret, so receivers holding only the old or
//! only the new secret both verify during the grace period, and after it
//! only the new one does. Single-signature schemes (GitHub) keep the old
//! secret until the expiry and switch then.

mod sender_support;

use hookgate_core::{Scheme, Verifier};
use hookgate_sender::{
    delivery::DeliveryClient,
    now_ms,
    outcome::{Class, Classifier},
    Endpoint, Message,
};
use sender_support::{loopback, Receiver, Reply};

fn secrets(scheme: Scheme) -> (&'static str, &'static str) {
    match scheme {
        Scheme::StandardWebhooks => (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_c2VjcmV0LWF0LXJlc3QtUzNDUkVULXZhbHVl",
        ),
        Scheme::Stripe => ("whsec_old_stripe_secret", "whsec_new_stripe_secret"),
        _ => ("old-github-secret", "new-github-secret"),
    }
}

/// Deliver once and report which of (old-only, new-only) receivers verify.
async fn who_verifies(scheme: Scheme, expires_in_ms: i64) -> (bool, bool) {
    let receiver = Receiver::start([Reply::status(200)]).await;
    let (old, new) = secrets(scheme);
    let endpoint = Endpoint::new("rot", receiver.url(), scheme, old)
        .unwrap()
        .allowing_http(true)
        .rotate_secret(new, now_ms() + expires_in_ms)
        .unwrap();
    assert_eq!(endpoint.secrets, [new]);
    let msg = Message::new("t", r#"{"id":"evt_1","n":1}"#);
    let r = DeliveryClient::new(loopback(), Classifier::default())
        .attempt(&endpoint, &msg)
        .await;
    assert_eq!(r.class, Class::Delivered, "{:?}", r.attempt.error);
    let got = receiver.received().pop().unwrap();
    let verifies = |secret: &str| {
        Verifier::from_secret_strings(scheme, [secret])
            .unwrap()
            .verify(&got.headers, &got.body)
            .is_ok()
    };
    (verifies(old), verifies(new))
}

const HOUR: i64 = 3_600_000;

#[tokio::test]
async fn multi_signature_schemes_sign_with_old_and_new_during_grace() {
    for scheme in [Scheme::StandardWebhooks, Scheme::Stripe] {
        assert_eq!(who_verifies(scheme, HOUR).await, (true, true), "{scheme}");
        // Expired: only the new secret signs.
        assert_eq!(who_verifies(scheme, -1).await, (false, true), "{scheme}");
    }
}

#[tokio::test]
async fn single_signature_schemes_switch_at_the_expiry() {
    assert_eq!(who_verifies(Scheme::GitHub, HOUR).await, (true, false));
    assert_eq!(who_verifies(Scheme::GitHub, -1).await, (false, true));
}

#[test]
fn rotating_again_keeps_the_earlier_expiry_and_debug_hides_secrets() {
    let ep = Endpoint::new("e", "https://example.com/", Scheme::Stripe, "whsec_a")
        .unwrap()
        .rotate_secret("whsec_b", 1_000)
        .unwrap()
        .rotate_secret("whsec_c", 5_000)
        .unwrap();
    assert_eq!(ep.secrets, ["whsec_c"]);
    let prev: Vec<_> = ep
        .previous_secrets
        .iter()
        .map(|p| (p.secret.as_str(), p.expires_at_ms))
        .collect();
    assert_eq!(prev, [("whsec_b", 5_000), ("whsec_a", 1_000)]);
    assert_eq!(ep.signing_secrets(999), ["whsec_c", "whsec_b", "whsec_a"]);
    assert_eq!(ep.signing_secrets(1_000), ["whsec_c", "whsec_b"]);
    assert_eq!(ep.signing_secrets(5_000), ["whsec_c"]);
    let dbg = format!("{ep:?}");
    assert!(!dbg.contains("whsec_"), "{dbg}");
}
