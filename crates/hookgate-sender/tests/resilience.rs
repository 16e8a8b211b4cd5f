//! Sender resilience against real HTTP on loopback, with two workers
//! sharing one store (memory, Redis, Postgres): failover to a backup URL
//! once the primary's circuit breaker opens, traffic back to the primary
//! after a half-open probe succeeds, every message handled exactly once by
//! a hookgate receiver; the per-endpoint in-flight cap keeps a black-holed
//! endpoint from taking a healthy one's slots; the shared rate limit; the
//! endpoint lifecycle (continuous failure disables, re-enable delivers the
//! held messages).

mod sender_support;
mod support;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::Request, middleware::Next as MwNext, response::IntoResponse, routing::post, Extension,
    Router,
};
use hookgate_core::{Scheme, Verifier};
use hookgate_sender::{
    breaker::{BreakerConfig, Phase},
    lifecycle::AutoDisable,
    limiter::RateLimit,
    queue::DeliveryState,
    state::EndpointHealth,
    worker::{AttemptReport, Next},
    Endpoint, Message, Queue, Sender, WorkerHandle,
};
use hookgate_tower::{MemoryStore, VerifiedWebhook, VerifyWebhookLayer};
use sender_support::{fast_policy, serve, test_worker};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Which server handled which message id.
type Handled = Arc<Mutex<Vec<(&'static str, String)>>>;

/// A verifying, deduplicating hookgate receiver app; `down` makes it answer
/// 503 before verification (a failing primary).
fn receiver_app(
    tag: &'static str,
    store: Arc<MemoryStore>,
    handled: Handled,
    down: Arc<AtomicBool>,
) -> Router {
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    Router::new()
        .route(
            "/hook",
            post(move |Extension(w): Extension<VerifiedWebhook>| {
                let handled = handled.clone();
                async move {
                    handled
                        .lock()
                        .unwrap()
                        .push((tag, w.id.clone().unwrap_or_default()));
                    "handled"
                }
            }),
        )
        .route_layer(VerifyWebhookLayer::new(verifier).with_store(store))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: MwNext| {
                let down = down.clone();
                async move {
                    if down.load(Ordering::SeqCst) {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        next.run(req).await
                    }
                }
            },
        ))
}

async fn two_workers(
    queue: Arc<dyn Queue>,
) -> (
    WorkerHandle,
    WorkerHandle,
    mpsc::UnboundedReceiver<AttemptReport>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawn = |tx: mpsc::UnboundedSender<AttemptReport>| {
        let (builder, _) = test_worker(queue.clone(), fast_policy(20));
        builder
            .with_concurrency(4)
            .with_state_ttl(Duration::ZERO)
            .with_busy_delay(Duration::from_millis(50))
            .with_on_attempt(move |r| {
                let _ = tx.send(r.clone());
            })
            .build()
            .unwrap()
            .spawn()
    };
    (spawn(tx.clone()), spawn(tx), rx)
}

/// Wait until every key in `ids` is delivered (bounded), ignoring other reports.
async fn until_delivered(rx: &mut mpsc::UnboundedReceiver<AttemptReport>, ids: &[String]) {
    let mut left: HashSet<&String> = ids.iter().collect();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !left.is_empty() {
            let r = rx.recv().await.expect("workers running");
            if r.recorded {
                if let Next::DeadLettered { reason } = &r.next {
                    panic!("{} dead-lettered: {reason}", r.key.message_id);
                }
                if r.next == Next::Delivered {
                    left.remove(&r.key.message_id);
                }
            }
        }
    })
    .await
    .expect("not all delivered in time");
}

async fn enqueue_n(sender: &Sender, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let m = Message::new("t", format!("{{\"n\":{i}}}")).with_id(format!("{prefix}{i:03}"));
        ids.push(m.id.clone());
        sender.enqueue("ep", m).await.unwrap();
    }
    ids
}

/// The primary answers 503 (or is not listening): after its breaker opens
/// the backup takes the traffic; once it recovers, a half-open probe closes
/// the breaker and traffic returns. Every message is handled exactly once.
async fn failover_and_back(queue: Arc<dyn Queue>, primary_listening: bool) {
    let store = Arc::new(MemoryStore::new());
    let handled: Handled = Arc::default();
    let down = Arc::new(AtomicBool::new(true));
    let backup = serve(receiver_app(
        "backup",
        store.clone(),
        handled.clone(),
        Arc::new(AtomicBool::new(false)),
    ))
    .await;
    // The primary: 503 while `down`, or a closed port until it is started.
    let primary_port = if primary_listening {
        serve(receiver_app(
            "primary",
            store.clone(),
            handled.clone(),
            down.clone(),
        ))
        .await
        .port()
    } else {
        support::closed_port()
    };
    let endpoint = Endpoint::new(
        "ep",
        format!("http://127.0.0.1:{primary_port}/hook"),
        Scheme::StandardWebhooks,
        SECRET,
    )
    .unwrap()
    .with_url(format!("http://{backup}/hook"))
    .unwrap()
    .with_breaker(
        BreakerConfig::default()
            .with_failures(3)
            .with_cooldown(Duration::from_millis(300), Duration::from_millis(600)),
    );
    let sender = Sender::new(queue.clone());
    sender.add_endpoint(endpoint.clone()).await.unwrap();
    let (w1, w2, mut rx) = two_workers(queue.clone()).await;

    let first = enqueue_n(&sender, "a", 20).await;
    until_delivered(&mut rx, &first).await;
    let health = EndpointHealth::load(&*queue, &endpoint).await.unwrap();
    assert_ne!(health.breakers[0].state.phase, Phase::Closed, "{health:?}");
    assert_eq!(health.breakers[1].state.phase, Phase::Closed);
    // The pause is in the endpoint's audit trail, by the worker.
    let history = queue.endpoint_history("ep", 100).await.unwrap();
    assert!(
        history.iter().any(|e| e.actor == "worker"
            && matches!(&e.change, hookgate_sender::audit::Change::Paused { reason } if reason.contains("URL 1"))),
        "{history:?}"
    );
    {
        let h = handled.lock().unwrap();
        assert!(h.iter().all(|(tag, _)| *tag == "backup"), "{h:?}");
    }

    // The primary recovers.
    if primary_listening {
        down.store(false, Ordering::SeqCst);
    } else {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", primary_port))
            .await
            .expect("rebind the primary's port");
        let app = receiver_app("primary", store.clone(), handled.clone(), down.clone());
        down.store(false, Ordering::SeqCst);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    // One message at a time until one reaches the primary (its breaker's
    // cool-down is at most 600 ms), then the next ones all do.
    let mut second = Vec::new();
    for i in 0..100 {
        let ids = enqueue_n(&sender, &format!("b{i:03}-"), 1).await;
        until_delivered(&mut rx, &ids).await;
        second.extend(ids);
        if handled
            .lock()
            .unwrap()
            .iter()
            .any(|(tag, _)| *tag == "primary")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = EndpointHealth::load(&*queue, &endpoint).await.unwrap();
    assert_eq!(health.breakers[0].state.phase, Phase::Closed, "{health:?}");
    let third = enqueue_n(&sender, "c", 10).await;
    until_delivered(&mut rx, &third).await;
    w1.shutdown(Duration::from_secs(5)).await;
    w2.shutdown(Duration::from_secs(5)).await;

    let h = handled.lock().unwrap().clone();
    let by_id: HashMap<&str, usize> = h.iter().fold(HashMap::new(), |mut m, (_, id)| {
        *m.entry(id.as_str()).or_default() += 1;
        m
    });
    let all: Vec<&String> = first.iter().chain(&second).chain(&third).collect();
    assert_eq!(by_id.len(), all.len(), "every message handled");
    assert!(by_id.values().all(|&n| n == 1), "handled twice: {by_id:?}");
    assert!(
        h.iter()
            .filter(|(_, id)| id.starts_with('c'))
            .all(|(tag, _)| *tag == "primary"),
        "traffic returned to the primary: {h:?}"
    );
}

async fn with_queues<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Queue>) -> Fut,
    Fut: Future<Output = ()>,
{
    check(Arc::new(hookgate_sender::MemoryQueue::new())).await;
    #[cfg(feature = "redis")]
    if let Some(q) = support::redis::fresh().await {
        support::with_cleanup(check(Arc::new(q.clone())), support::redis::delete_keys(&q)).await;
    }
    #[cfg(feature = "postgres")]
    if let Some(q) = support::pg::fresh_with_pool(8).await {
        support::with_cleanup(check(Arc::new(q.clone())), support::pg::drop_schema(&q)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_503_fails_over_and_traffic_returns() {
    with_queues(|q| failover_and_back(q, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_not_listening_fails_over_and_traffic_returns() {
    with_queues(|q| failover_and_back(q, false)).await;
}

/// A black-holed endpoint (accepts, never answers) beside a healthy one:
/// with a per-endpoint cap of 2 of the worker's 4 slots, the healthy
/// endpoint's messages are all delivered while the black hole's requests
/// hang, and the black hole never has more than 2 requests open at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_endpoint_holds_at_most_its_cap() {
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (o, m) = (open.clone(), most.clone());
    /// Counts a request as open until its handler is dropped.
    struct Open(Arc<AtomicUsize>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let hole = serve(Router::new().fallback(move || {
        let (o, m) = (o.clone(), m.clone());
        async move {
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            let _open = Open(o);
            m.fetch_max(now, Ordering::SeqCst);
            // Never answers within the sender's timeout.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never"
        }
    }))
    .await;
    let healthy = sender_support::Receiver::start([]).await;
    let queue: Arc<dyn Queue> = Arc::new(hookgate_sender::MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new("hole", format!("http://{hole}/"), Scheme::GitHub, "s")
                .unwrap()
                .with_timeout(Duration::from_secs(3))
                .unwrap(),
        )
        .await
        .unwrap();
    sender
        .add_endpoint(Endpoint::new("ok", healthy.url(), Scheme::GitHub, "s").unwrap())
        .await
        .unwrap();
    for i in 0..20 {
        sender
            .enqueue("hole", Message::new("t", "{}").with_id(format!("h{i}")))
            .await
            .unwrap();
    }
    for i in 0..40 {
        sender
            .enqueue("ok", Message::new("t", "{}").with_id(format!("k{i}")))
            .await
            .unwrap();
    }
    let (builder, mut rx) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder
        .with_concurrency(4)
        .with_max_in_flight_per_endpoint(2)
        .with_busy_delay(Duration::from_millis(200))
        .build()
        .unwrap()
        .spawn();
    let mut delivered = 0;
    let mut busy = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while delivered < 40 {
            let r = rx.recv().await.unwrap();
            match (&r.key.endpoint[..], &r.next) {
                ("ok", Next::Delivered) => delivered += 1,
                ("hole", Next::Deferred { .. }) => busy += 1,
                // A timed-out attempt (after 3 s) is retried.
                ("hole", Next::RetryAt { .. }) => {}
                (_, n) => panic!("{}: {n:?}", r.key.endpoint),
            }
        }
    })
    .await
    .expect("the healthy endpoint starved");
    worker.shutdown(Duration::ZERO).await;
    assert_eq!(healthy.count(), 40);
    assert!(
        most.load(Ordering::SeqCst) <= 2,
        "{}",
        most.load(Ordering::SeqCst)
    );
    assert!(busy > 0, "the cap deferred the black hole's other messages");
}

/// Continuous failure for the configured period (with the minimum number
/// of failed attempts) disables the endpoint; its messages are then held
/// (not dead-lettered) and delivered once it is enabled again.
#[tokio::test]
async fn continuous_failure_disables_and_enable_delivers_the_held() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let addr = serve(Router::new().fallback(move || {
        let (f, c) = (f.clone(), c.clone());
        async move {
            if f.load(Ordering::SeqCst) {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                c.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }
    }))
    .await;
    let queue: Arc<dyn Queue> = Arc::new(hookgate_sender::MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new("ep", format!("http://{addr}/"), Scheme::GitHub, "s")
                .unwrap()
                .with_breaker(
                    BreakerConfig::default()
                        .with_failures(0)
                        .with_failure_ratio(0, 1, Duration::from_secs(1)),
                )
                .with_auto_disable(Some(AutoDisable::new(Duration::from_millis(1), 4))),
        )
        .await
        .unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    for id in &ids {
        sender
            .enqueue("ep", Message::new("t", "{}").with_id(id.clone()))
            .await
            .unwrap();
    }
    let (builder, mut rx) = test_worker(queue.clone(), fast_policy(50));
    let worker = builder.build().unwrap().spawn();
    // Wait until every message is held.
    let mut held = HashSet::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while held.len() < ids.len() {
            let r = rx.recv().await.unwrap();
            assert!(!matches!(r.next, Next::DeadLettered { .. }), "{r:?}");
            if r.next == Next::Held {
                held.insert(r.key.message_id.clone());
            }
        }
    })
    .await
    .expect("not held in time");
    assert!(queue.get_endpoint("ep").await.unwrap().unwrap().disabled);
    for id in &ids {
        let key = hookgate_sender::queue::DeliveryKey {
            endpoint: "ep".into(),
            message_id: id.clone(),
        };
        assert_eq!(queue.state(&key).await.unwrap(), Some(DeliveryState::Held));
    }
    failing.store(false, Ordering::SeqCst);
    assert_eq!(sender.enable_endpoint("ep").await.unwrap(), 3);
    let mut delivered = HashSet::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while delivered.len() < ids.len() {
            let r = rx.recv().await.unwrap();
            if r.next == Next::Delivered {
                delivered.insert(r.key.message_id.clone());
            }
        }
    })
    .await
    .expect("held messages not delivered after enable");
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

/// Two workers, an endpoint limited to 20/s, a receiver that never
/// throttles: the receiver counts at most 20/s (+10 %) over every 2 s
/// window, and every message arrives once (waiting for the limiter spends
/// no attempt: the retry budget is 20 and far more deferrals happen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_rate_limit() {
    with_queues(|queue| async move {
        let receiver = sender_support::Receiver::start([]).await;
        let sender = Sender::new(queue.clone());
        sender
            .add_endpoint(
                Endpoint::new("ep", receiver.url(), Scheme::GitHub, "s")
                    .unwrap()
                    .with_rate_limit(RateLimit::per_second(20.0).unwrap()),
            )
            .await
            .unwrap();
        let ids = enqueue_n(&sender, "r", 100).await;
        let (w1, w2, mut rx) = two_workers(queue.clone()).await;
        until_delivered(&mut rx, &ids).await;
        w1.shutdown(Duration::from_secs(5)).await;
        w2.shutdown(Duration::from_secs(5)).await;
        let mut times: Vec<i64> = receiver.received().iter().map(|r| r.at_ms).collect();
        times.sort_unstable();
        assert_eq!(times.len(), 100, "each message sent once");
        // Any window of 2 s holds at most 40 + 10 %.
        for (i, &t) in times.iter().enumerate() {
            let n = times[i..].iter().take_while(|&&u| u < t + 2000).count();
            assert!(n <= 44, "{n} requests within 2 s from {t}");
        }
    })
    .await;
}

/// A receiver that answers `429` (with `Retry-After: 1`) once it accepted
/// 15 requests in the trailing second, behind an endpoint limited to 50/s,
/// two workers, a retry budget of 3: throttling spends no attempt (nothing
/// is dead-lettered), every message is accepted exactly once, and the
/// accepted rate stays at or under the receiver's 15/s. The measured rate
/// is printed (BENCHMARKS.md quotes it); it is not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_receiver_converges_without_spending_attempts() {
    let accepted: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let throttled = Arc::new(AtomicUsize::new(0));
    let (a, t) = (accepted.clone(), throttled.clone());
    let addr = serve(
        Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let (a, t) = (a.clone(), t.clone());
            async move {
                let now = hookgate_sender::now_ms();
                let mut a = a.lock().unwrap();
                let recent = a
                    .iter()
                    .rev()
                    .take_while(|(at, _)| *at > now - 1000)
                    .count();
                if recent >= 15 {
                    t.fetch_add(1, Ordering::SeqCst);
                    return (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                    )
                        .into_response();
                }
                let id = headers
                    .get("x-github-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                a.push((now, id));
                axum::http::StatusCode::OK.into_response()
            }
        }),
    )
    .await;
    let queue: Arc<dyn Queue> = Arc::new(hookgate_sender::MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new("ep", format!("http://{addr}/"), Scheme::GitHub, "s")
                .unwrap()
                .with_rate_limit(RateLimit::per_second(50.0).unwrap()),
        )
        .await
        .unwrap();
    let ids = enqueue_n(&sender, "t", 90).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spawn = |tx: mpsc::UnboundedSender<AttemptReport>| {
        let (builder, _) = test_worker(queue.clone(), fast_policy(3));
        builder
            .with_concurrency(4)
            .with_state_ttl(Duration::ZERO)
            .with_busy_delay(Duration::from_millis(50))
            .with_on_attempt(move |r| {
                let _ = tx.send(r.clone());
            })
            .build()
            .unwrap()
            .spawn()
    };
    let (w1, w2) = (spawn(tx.clone()), spawn(tx));
    until_delivered(&mut rx, &ids).await;
    w1.shutdown(Duration::from_secs(5)).await;
    w2.shutdown(Duration::from_secs(5)).await;
    let ep = queue.get_endpoint("ep").await.unwrap().unwrap();
    let health = EndpointHealth::load(&*queue, &ep).await.unwrap();
    eprintln!("limiter at the end: {:?}", health.limiter);
    let accepted = accepted.lock().unwrap().clone();
    let unique: HashSet<&String> = accepted.iter().map(|(_, id)| id).collect();
    assert_eq!(accepted.len(), 90, "each message accepted once");
    assert_eq!(unique.len(), 90);
    assert_eq!(queue.stats().await.unwrap().dead, 0);
    let span_ms = accepted.last().unwrap().0 - accepted.first().unwrap().0;
    let rate = 89.0 * 1000.0 / span_ms.max(1) as f64;
    let tail_ms = accepted.last().unwrap().0 - accepted[60].0;
    let tail = 29.0 * 1000.0 / tail_ms.max(1) as f64;
    eprintln!(
        "throttling receiver: {rate:.1} accepted/s over {span_ms} ms, last 30: {tail:.1}/s, {} answers 429",
        throttled.load(Ordering::SeqCst)
    );
    assert!(
        throttled.load(Ordering::SeqCst) > 0,
        "the receiver never throttled"
    );
}

/// A health URL ends an open breaker's (long) cool-down early: the primary
/// is back in use long before its 60 s cool-down would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probe_half_opens_the_breaker_early() {
    let store = Arc::new(MemoryStore::new());
    let handled: Handled = Arc::default();
    let down = Arc::new(AtomicBool::new(true));
    let primary = serve(receiver_app(
        "primary",
        store.clone(),
        handled.clone(),
        down.clone(),
    ))
    .await;
    let backup = serve(receiver_app(
        "backup",
        store.clone(),
        handled.clone(),
        Arc::new(AtomicBool::new(false)),
    ))
    .await;
    let endpoint = Endpoint::new(
        "ep",
        format!("http://{primary}/hook"),
        Scheme::StandardWebhooks,
        SECRET,
    )
    .unwrap()
    .with_url(format!("http://{backup}/hook"))
    .unwrap()
    .with_health_url(format!("http://{primary}/health"))
    .unwrap()
    .with_breaker(
        BreakerConfig::default()
            .with_failures(2)
            .with_cooldown(Duration::from_secs(60), Duration::from_secs(60)),
    );
    let queue: Arc<dyn Queue> = Arc::new(hookgate_sender::MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender.add_endpoint(endpoint.clone()).await.unwrap();
    let (builder, mut rx) = test_worker(queue.clone(), fast_policy(10));
    let worker = builder
        .with_concurrency(2)
        .with_state_ttl(Duration::ZERO)
        .with_health_probe_interval(Some(Duration::from_millis(100)))
        .build()
        .unwrap()
        .spawn();
    let first = enqueue_n(&sender, "a", 5).await;
    until_delivered(&mut rx, &first).await;
    let health = EndpointHealth::load(&*queue, &endpoint).await.unwrap();
    assert_eq!(health.breakers[0].state.phase, Phase::Open);
    down.store(false, Ordering::SeqCst);
    // Well inside the 60 s cool-down, deliveries reach the primary again.
    let mut n = 0;
    while !handled
        .lock()
        .unwrap()
        .iter()
        .any(|(tag, _)| *tag == "primary")
    {
        n += 1;
        assert!(n < 100, "the primary was never used again");
        let ids = enqueue_n(&sender, &format!("b{n:03}-"), 1).await;
        until_delivered(&mut rx, &ids).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await;
    let health = EndpointHealth::load(&*queue, &endpoint).await.unwrap();
    assert_eq!(health.breakers[0].state.phase, Phase::Closed);
}
