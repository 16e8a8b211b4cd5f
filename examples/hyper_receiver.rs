//! A webhook receiver on plain hyper 1 (no framework): the layer wraps a
//! `tower::service_fn`, and each connection is served with hyper's HTTP/1
//! server.
//!
//! ```text
//! cargo run --example hyper_receiver
//! ```
//!
//! `HOOKGATE_LISTEN` (default `127.0.0.1:3001`) and `HOOKGATE_SECRET`
//! (required: the Standard Webhooks secret, `whsec_...`) come from the environment.

use std::convert::Infallible;

use bytes::Bytes;
use hookgate::{
    tower::{VerifiedWebhook, VerifyWebhookLayer},
    Scheme, Verifier,
};
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::TokioIo;
use tower::{ServiceBuilder, ServiceExt as _};

/// The handler: runs once per event, after verification.
async fn handle(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(webhook) = req.extensions().get::<VerifiedWebhook>().cloned() else {
        // Only reachable if the layer was left out: refuse rather than trust.
        let mut res = Response::new(Full::new(Bytes::from_static(b"not verified")));
        *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(res);
    };
    let body = req.into_body();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    println!(
        "received {} event {:?} (key #{}): {}",
        webhook.scheme,
        webhook.id,
        webhook.key_index,
        String::from_utf8_lossy(&bytes)
    );
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let listen = std::env::var("HOOKGATE_LISTEN").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let secret = std::env::var("HOOKGATE_SECRET").map_err(|_| {
        anyhow::anyhow!("set HOOKGATE_SECRET to the Standard Webhooks secret (whsec_...)")
    })?;
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [secret])?;

    let service = ServiceBuilder::new()
        .layer(VerifyWebhookLayer::new(verifier))
        .service_fn(handle);

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!(
        "hyper_receiver: listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let service = service.clone();
        tokio::spawn(async move {
            let per_request = hyper::service::service_fn(move |req: Request<Incoming>| {
                service.clone().oneshot(req)
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), per_request)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
