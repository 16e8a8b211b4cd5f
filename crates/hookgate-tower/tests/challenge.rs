//! 401s carry a `WWW-Authenticate` challenge naming the signature scheme
//! (RFC 9110 requires one on every 401), through a plain tower stack.

use std::convert::Infallible;

use bytes::Bytes;
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::VerifyWebhookLayer;
use http::{Request, Response};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt as _};

#[tokio::test]
async fn invalid_signature_and_stale_timestamp_answer_401_with_a_challenge() {
    let secret = "whsec_stripe_test";
    let verifier = Verifier::from_secret_strings(Scheme::Stripe, [secret]).unwrap();
    let svc = ServiceBuilder::new()
        .layer(VerifyWebhookLayer::new(verifier))
        .service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    let signer = Signer::new(Scheme::Stripe, Scheme::Stripe.secret(secret).unwrap());
    let body: &[u8] = br#"{"id":"evt_1"}"#;
    let request = |ts: i64, body: &'static [u8], signed: &[u8]| {
        let mut req = Request::post("/");
        for (k, v) in signer.sign("", ts, signed) {
            req = req.header(k, v);
        }
        req.body(Full::new(Bytes::from_static(body))).unwrap()
    };
    for (why, req) in [
        ("forged", request(unix_now(), body, b"{}")),
        ("stale", request(unix_now() - 3600, body, body)),
    ] {
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 401, "{why}");
        assert_eq!(
            res.headers()["www-authenticate"],
            r#"Signature realm="webhooks", scheme="stripe""#,
            "{why}"
        );
    }
    // Other rejections carry none.
    let res = svc
        .clone()
        .oneshot(Request::post("/").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("www-authenticate").is_none());
}
