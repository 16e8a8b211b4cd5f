//! The claim's life around the handler, over real HTTP on loopback and on
//! every store: the lease follows a slow handler (renewals), recording the
//! outcome survives the caller going away, and the status policy decides
//! what is final.
#![cfg(feature = "axum")]

mod layer_support;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use hookgate_core::Scheme;
use hookgate_tower::{
    store::{BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result},
    MemoryStore, VerifyWebhookLayer,
};
use http::{Request, Response};
use http_body_util::Full;
use layer_support::*;
use tower::{ServiceBuilder, ServiceExt as _};

const BODY: &[u8] = br#"{"type":"invoice.paid","amount":4200}"#;

/// Lease 1 s, handler 3 s: a duplicate at 1.3 s finds the claim still held
/// (409: the layer renewed it), and one at 4 s, after the handler answered,
/// is replayed. The handler ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_lease_keeps_its_claim_and_runs_once() {
    for_each_store(|name, store, replica| async move {
        let prefix = test_prefix();
        let layer = |s: SharedStore| {
            VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
                .with_store(s)
                .with_prefix(prefix.clone())
                .with_lease(Duration::from_secs(1))
        };
        let first_srv = serve(
            layer(Arc::clone(&store)),
            vec![Action::SleepThen(Duration::from_secs(3), 200)],
        )
        .await;
        // The duplicates go to another replica (same backend, other client).
        let other_srv = serve(
            layer(Arc::clone(&replica)),
            vec![Action::SleepThen(Duration::from_secs(3), 200)],
        )
        .await;
        let (client, id) = (client(), random_id("slow"));
        let started = tokio::time::Instant::now();
        let first = {
            let (client, url, headers) = (
                client.clone(),
                first_srv.url(),
                sign(Scheme::StandardWebhooks, &id, BODY),
            );
            tokio::spawn(async move { post(&client, &url, &headers, BODY).await.status() })
        };
        tokio::time::sleep_until(started + Duration::from_millis(1300)).await;
        let dup = post(
            &client,
            &other_srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(
            dup.status(),
            409,
            "[{name}] the slow handler's claim is still held at 1.3 s"
        );
        assert!(dup.headers().get("retry-after").is_some());
        assert_eq!(first.await.unwrap(), 200, "[{name}] the first delivery");
        tokio::time::sleep_until(started + Duration::from_secs(4)).await;
        let late = post(
            &client,
            &other_srv.url(),
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(late.status(), 200, "[{name}]");
        assert_eq!(
            late.headers()
                .get("idempotent-replayed")
                .map(|v| v.as_bytes()),
            Some(&b"true"[..]),
            "[{name}] the delivery at 4 s is replayed"
        );
        assert_eq!(
            first_srv.calls() + other_srv.calls(),
            1,
            "[{name}] the handler ran exactly once"
        );
    })
    .await;
}

/// Handler answers the senders retry (409, 425, and the rest of the
/// default policy's non-final statuses) release the claim: the next
/// delivery runs the handler again.
#[tokio::test]
async fn handler_409_and_425_are_not_final() {
    for status in [409, 425] {
        let srv = serve(
            VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks)),
            vec![Action::Status(status), Action::Status(200)],
        )
        .await;
        let (client, id) = (client(), random_id("msg"));
        let headers = || sign(Scheme::StandardWebhooks, &id, BODY);
        let first = post(&client, &srv.url(), &headers(), BODY).await;
        assert_eq!(first.status(), status);
        let second = post(&client, &srv.url(), &headers(), BODY).await;
        assert_eq!(second.status(), 200, "{status} was not stored as final");
        assert!(second.headers().get("idempotent-replayed").is_none());
        assert_eq!(srv.calls(), 2, "{status}: the retry ran the handler");
    }
}

/// Delays every `complete` by `delay` before forwarding it, as a slow
/// network to the store would.
struct SlowComplete<S> {
    inner: S,
    delay: Duration,
    completes: AtomicUsize,
}

impl<S: DedupStore> DedupStore for SlowComplete<S> {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        self.inner.claim(key, digest, lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            let done = self.inner.complete(key, token, record, retention).await;
            self.completes.fetch_add(1, Ordering::SeqCst);
            done
        })
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        self.inner.release(key, token)
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        self.inner.renew(key, token, lease)
    }
}

fn signed_request(id: &str) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method("POST").uri("/hook");
    for (k, v) in sign(Scheme::StandardWebhooks, id, BODY) {
        req = req.header(k, v);
    }
    req.body(Full::new(Bytes::from_static(BODY))).unwrap()
}

/// An outer timeout drops the request while `complete` is in flight: the
/// outcome is still recorded (not cancelled, not released by the drop
/// guard), so the next delivery is replayed instead of running the handler
/// a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_during_complete_still_records_the_outcome() {
    let store = Arc::new(SlowComplete {
        inner: MemoryStore::default(),
        delay: Duration::from_millis(500),
        completes: AtomicUsize::new(0),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(
            VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
                .with_shared_store(Arc::clone(&store)),
        )
        .service_fn(move |_req: Request<Full<Bytes>>| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
    let id = random_id("dropped");
    let outer = tokio::time::timeout(
        Duration::from_millis(100),
        svc.clone().oneshot(signed_request(&id)),
    )
    .await;
    assert!(outer.is_err(), "the outer timeout dropped the request");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler had answered");
    // Retry like a sender would, bounded: 409 while `complete` is still in
    // flight, then the replayed answer.
    let mut replayed = false;
    for _ in 0..50 {
        let res = svc.clone().oneshot(signed_request(&id)).await.unwrap();
        if res.status() == 409 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(res.status(), 200);
        replayed = res.headers().get("idempotent-replayed").is_some();
        break;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler did not run a second time"
    );
    assert!(replayed, "the retry was answered from the done record");
    assert_eq!(store.completes.load(Ordering::SeqCst), 1);
}

/// A replayed answer carries the handler's body (when it is at most 4 KiB)
/// and its content type, on every store; a larger body is replayed empty,
/// with the status and content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_carries_the_original_body_and_content_type() {
    use axum::{routing::post as post_route, Json, Router};
    for_each_store(|name, store, _replica| async move {
        let calls = Arc::new(AtomicUsize::new(0));
        let (c1, c2) = (Arc::clone(&calls), Arc::clone(&calls));
        let app = Router::new()
            .route(
                "/slack",
                post_route(move || {
                    let c = Arc::clone(&c1);
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        Json(serde_json::json!({"response_type": "in_channel", "text": "Done ✓"}))
                    }
                }),
            )
            .route(
                "/big",
                post_route(move || {
                    let c = Arc::clone(&c2);
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        (
                            [(http::header::CONTENT_TYPE, "application/octet-stream")],
                            vec![7u8; 5000],
                        )
                    }
                }),
            )
            .route_layer(
                VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
                    .with_store(store)
                    .with_prefix(test_prefix()),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = client();

        let id = random_id("slack");
        let url = format!("http://{addr}/slack");
        let first = post(
            &client,
            &url,
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(first.status(), 200, "[{name}]");
        let first_type = first.headers()["content-type"].clone();
        let first_body = first.bytes().await.unwrap();
        let dup = post(
            &client,
            &url,
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(dup.status(), 200, "[{name}]");
        assert_eq!(dup.headers()["idempotent-replayed"], "true", "[{name}]");
        assert_eq!(dup.headers()["content-type"], first_type, "[{name}]");
        assert_eq!(first_type, "application/json");
        assert_eq!(dup.bytes().await.unwrap(), first_body, "[{name}] same body");

        let id = random_id("big");
        let url = format!("http://{addr}/big");
        let first = post(
            &client,
            &url,
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(
            first.bytes().await.unwrap().len(),
            5000,
            "[{name}] passed through"
        );
        let dup = post(
            &client,
            &url,
            &sign(Scheme::StandardWebhooks, &id, BODY),
            BODY,
        )
        .await;
        assert_eq!(dup.status(), 200, "[{name}]");
        assert_eq!(dup.headers()["idempotent-replayed"], "true");
        assert_eq!(dup.headers()["content-type"], "application/octet-stream");
        assert!(
            dup.bytes().await.unwrap().is_empty(),
            "[{name}] a body over 4 KiB is not kept"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "[{name}] each handler ran once"
        );
        task.abort();
    })
    .await;
}

/// A custom policy (here a closure) replaces the default: with "only 200
/// is final", a 404 is released and a 200 is stored.
#[tokio::test]
async fn a_custom_status_policy_decides_what_is_final() {
    let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .with_status_policy(|status: http::StatusCode| status == http::StatusCode::OK);
    let srv = serve(
        layer,
        vec![
            Action::Status(404),
            Action::Status(200),
            Action::Status(500),
        ],
    )
    .await;
    let (client, id) = (client(), random_id("policy"));
    let headers = || sign(Scheme::StandardWebhooks, &id, BODY);
    assert_eq!(
        post(&client, &srv.url(), &headers(), BODY).await.status(),
        404
    );
    assert_eq!(
        post(&client, &srv.url(), &headers(), BODY).await.status(),
        200
    );
    let third = post(&client, &srv.url(), &headers(), BODY).await;
    assert_eq!(third.status(), 200);
    assert_eq!(third.headers()["idempotent-replayed"], "true");
    assert_eq!(srv.calls(), 2, "404 released, 200 stored");
}

/// A response body of known small size whose bytes arrive late.
struct SlowBody {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    sent: bool,
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.sent {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(std::future::Future::poll(self.sleep.as_mut(), cx));
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"ok")))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(2)
    }
}

/// The handler answered 200, and the request is dropped while the layer
/// still reads the (small) response body to keep it: the drop guard records
/// the answer (without its body) instead of releasing the claim, so the
/// next delivery is replayed, not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_after_a_final_answer_is_not_released() {
    let store = Arc::new(MemoryStore::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let svc = ServiceBuilder::new()
        .layer(
            VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
                .with_shared_store(Arc::clone(&store)),
        )
        .service_fn(move |_req: Request<Full<Bytes>>| {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Response::new(SlowBody {
                    sleep: Box::pin(tokio::time::sleep(Duration::from_secs(2))),
                    sent: false,
                }))
            }
        });
    let id = random_id("dropped_body");
    let outer = tokio::time::timeout(
        Duration::from_millis(200),
        svc.clone().oneshot(signed_request(&id)),
    )
    .await;
    assert!(outer.is_err(), "the outer timeout dropped the request");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut replayed = None;
    for _ in 0..50 {
        let res = svc.clone().oneshot(signed_request(&id)).await.unwrap();
        if res.status() == 409 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        replayed = Some((
            res.status(),
            res.headers().get("idempotent-replayed").cloned(),
        ));
        break;
    }
    let (status, header) = replayed.expect("an answer other than 409");
    assert_eq!(status, 200);
    assert!(header.is_some(), "replayed from the done record");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
}
