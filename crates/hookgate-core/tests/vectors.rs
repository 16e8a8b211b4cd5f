//! Known-answer vectors from the providers' specifications.

use hookgate_core::{Scheme, Signer, Verifier};

#[test]
fn standard_webhooks_spec_vector() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    let headers = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    let v = Verifier::from_secret_strings(Scheme::StandardWebhooks, [secret]).unwrap();
    let ok = v.verify_at(&headers[..], body, 1_614_265_330).unwrap();
    assert_eq!(ok.id.as_deref(), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
    let signed = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(secret).unwrap(),
    )
    .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
    assert_eq!(
        signed[2],
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string()
        )
    );
}
