//! The layer on a plain hyper 1 server (no axum): `tower::service_fn`
//! handler, hyper's HTTP/1 connection server, real loopback HTTP.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::{VerifiedWebhook, VerifyWebhookLayer};
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::TokioIo;
use tower::{ServiceBuilder, ServiceExt as _};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn layer_works_on_a_plain_hyper_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let service = ServiceBuilder::new()
        .layer(VerifyWebhookLayer::new(verifier))
        .service_fn(move |req: Request<Full<Bytes>>| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let id = req
                    .extensions()
                    .get::<VerifiedWebhook>()
                    .and_then(|w| w.id.clone());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let text = format!("{}:{}", id.unwrap_or_default(), body.len());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    service.clone().oneshot(req)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let signer = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    );
    let client = reqwest::Client::new();
    let body = br#"{"hello":"hyper"}"#;
    let send = |headers: Vec<(&'static str, String)>, body: &'static [u8]| {
        let mut req = client.post(format!("http://{addr}/")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let res = send(signer.sign("msg_h1", unix_now(), body), body)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), format!("msg_h1:{}", body.len()));
    let dup = send(signer.sign("msg_h1", unix_now(), body), body)
        .await
        .unwrap();
    assert_eq!(dup.status(), 200);
    assert_eq!(dup.headers()["idempotent-replayed"], "true");
    let forged = send(signer.sign("msg_h1", unix_now(), b"{}"), body)
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(forged.headers()["content-type"], "application/problem+json");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.abort();
}
