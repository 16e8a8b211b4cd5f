//! Heap per request is bounded by the body limit whatever the framing: a
//! 1 MiB body delivered as one million 1-byte frames, before its signature
//! is even checked, costs less than twice the limit.
//!
//! Its own test binary, because it installs a counting global allocator
//! (`dhat` in testing mode; no `unsafe` here) and measures one request on a
//! current-thread runtime, with nothing else running.

use std::convert::Infallible;

use bytes::Bytes;
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::VerifyWebhookLayer;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt as _, Full, StreamBody};
use tower::{ServiceBuilder, ServiceExt as _};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const LIMIT: usize = 1024 * 1024;

#[test]
fn a_1_mib_body_in_1_byte_frames_costs_less_than_twice_the_limit() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let svc = ServiceBuilder::new()
        .layer(VerifyWebhookLayer::new(verifier).with_body_limit(LIMIT))
        .service_fn(|req: Request<Full<Bytes>>| async move {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
        });

    // The bytes as a server's read buffer holds them: one allocation, made
    // before measuring; every frame is a 1-byte slice of it (as hyper's are).
    let source = Bytes::from(vec![b'x'; LIMIT]);
    let signer = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    );

    // Once without a length (chunked), once with `Content-Length` declared.
    for declared in [false, true] {
        let headers = signer.sign(&format!("msg_trickle_{declared}"), unix_now(), &source);
        let stats = runtime.block_on(async {
            let src = source.clone();
            let stream = futures_util::stream::iter(
                (0..LIMIT).map(move |i| Ok::<_, Infallible>(Frame::data(src.slice(i..=i)))),
            );
            let mut req = Request::post("/").body(StreamBody::new(stream)).unwrap();
            for (k, v) in &headers {
                req.headers_mut().insert(*k, v.parse().unwrap());
            }
            if declared {
                req.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, LIMIT.into());
            }
            let profiler = dhat::Profiler::builder().testing().build();
            let res = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], LIMIT.to_string().as_bytes());
            let stats = dhat::HeapStats::get();
            drop(profiler);
            stats
        });
        eprintln!(
            "1 MiB in 1-byte frames (Content-Length declared: {declared}): peak {} bytes, total {} bytes in {} blocks",
            stats.max_bytes, stats.total_bytes, stats.total_blocks
        );
        assert!(
            stats.max_bytes < 2 * LIMIT,
            "peak heap {} is not under twice the limit {}",
            stats.max_bytes,
            2 * LIMIT
        );
        // Nothing is kept per frame: even counting every buffer the
        // collection outgrew, the request allocates a few times the limit,
        // not tens of times.
        assert!(
            stats.total_bytes < 3 * LIMIT as u64,
            "total heap {} for one request",
            stats.total_bytes
        );
        if declared {
            // Sized up front: one buffer of the declared length.
            assert!(
                stats.total_bytes < (LIMIT + 64 * 1024) as u64,
                "total heap {} with a declared length",
                stats.total_bytes
            );
        }
    }
}
