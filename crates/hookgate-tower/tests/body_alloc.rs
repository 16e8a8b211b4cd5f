//! Heap per request is bounded by the body limit whatever the framing: a
//! 1 MiB body delivered as one million 1-byte frames, before its signature
//! is even checked, costs less than twice the limit.
//!
//! Its own test binary, because it installs a counting global allocator
//! (`dhat` in testing mode; no `unsafe` here) and measures one request at a
//! time on a current-thread runtime, with nothing else running.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt as _;
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

/// One measurement at a time: dhat runs one profiler per process, and a
/// test allocating on another thread would blur the other's numbers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_1_mib_body_in_1_byte_frames_costs_less_than_twice_the_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    }
}

#[test]
fn a_declared_length_alone_does_not_reserve_the_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Headers announcing 1 MiB, then ten bytes, then nothing: an
    // unauthenticated client must send bytes to make the receiver hold them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let svc = ServiceBuilder::new()
        .layer(VerifyWebhookLayer::new(verifier).with_body_limit(LIMIT))
        .service_fn(|_req: Request<Full<Bytes>>| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    let headers = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    )
    .sign("msg_slow", unix_now(), &vec![b'x'; LIMIT]);
    let held = runtime.block_on(async {
        let stream = futures_util::stream::iter(
            (0..10).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"x")))),
        )
        .chain(futures_util::stream::pending());
        let mut req = Request::post("/").body(StreamBody::new(stream)).unwrap();
        for (k, v) in &headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        req.headers_mut()
            .insert(http::header::CONTENT_LENGTH, LIMIT.into());
        let profiler = dhat::Profiler::builder().testing().build();
        let mut fut = Box::pin(svc.oneshot(req));
        // Every frame that is ready is read; then the body is pending.
        assert!(futures_util::poll!(fut.as_mut()).is_pending());
        let held = dhat::HeapStats::get().curr_bytes;
        drop(fut);
        drop(profiler);
        held
    });
    eprintln!("held while waiting for a declared 1 MiB body after 10 bytes: {held} bytes");
    assert!(held < 64 * 1024, "{held} bytes held for 10 bytes received");
}
