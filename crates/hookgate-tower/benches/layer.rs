//! Per-request cost of the layer in process: tower `oneshot` with a 1 KiB
//! Standard Webhooks body on the memory store, fresh event id each
//! iteration, against the same handler without the layer. Signing happens in
//! the (unmeasured) setup. Also: the duplicate path (the same event again).
//!
//! `cargo bench -p hookgate-tower --bench layer`

use std::{convert::Infallible, hint::black_box, time::Duration};

use bytes::Bytes;
use criterion::{criterion_main, BatchSize, Criterion};
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::VerifyWebhookLayer;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use tower::{ServiceBuilder, ServiceExt as _};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn handler(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as a real handler would.
    let body = req
        .into_body()
        .collect()
        .await
        .unwrap_or_default()
        .to_bytes();
    black_box(&body);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn body_1k() -> Bytes {
    let mut s = String::from(r#"{"type":"invoice.paid","data":{"note":""#);
    while s.len() < 1024 - 3 {
        s.push('x');
    }
    s.push_str(r#""}}"#);
    Bytes::from(s)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = body_1k();
    assert_eq!(body.len(), 1024);
    let signer = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    );
    let make = |id: &str| {
        let mut req = Request::builder().method("POST").uri("/webhooks");
        for (k, v) in signer.sign(id, unix_now(), &body) {
            req = req.header(k, v);
        }
        req.body(Full::new(body.clone())).unwrap()
    };

    let mut group = c.benchmark_group("receiver_1KiB");
    group.measurement_time(Duration::from_secs(5));

    let bare = ServiceBuilder::new().service_fn(handler);
    let mut n = 0u64;
    group.bench_function("bare_handler", |b| {
        b.iter_batched(
            || {
                n += 1;
                make(&format!("msg_{n}"))
            },
            |req| rt.block_on(bare.oneshot(req)).unwrap(),
            BatchSize::SmallInput,
        );
    });

    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let layered = ServiceBuilder::new()
        .layer(VerifyWebhookLayer::new(verifier))
        .service_fn(handler);
    let mut n = 0u64;
    group.bench_function("layer_memory_new_event", |b| {
        b.iter_batched(
            || {
                n += 1;
                make(&format!("msg_new_{n}"))
            },
            |req| {
                let res = rt.block_on(layered.clone().oneshot(req)).unwrap();
                assert_eq!(res.status(), 200);
                res
            },
            BatchSize::SmallInput,
        );
    });

    let first = rt
        .block_on(layered.clone().oneshot(make("msg_dup")))
        .unwrap();
    assert_eq!(first.status(), 200);
    group.bench_function("layer_memory_duplicate", |b| {
        b.iter_batched(
            || make("msg_dup"),
            |req| {
                let res = rt.block_on(layered.clone().oneshot(req)).unwrap();
                assert!(res.headers().contains_key("idempotent-replayed"));
                res
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

mod group {
    //! `criterion_group!` generates an undocumented public function.
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}

criterion_main!(group::benches);
