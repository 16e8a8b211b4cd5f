//! End to end through the durable queues: two `Worker`s sharing one Postgres
//! queue, and two sharing one Redis queue, deliver all of 1,000 messages,
//! each exactly once, to a receiver on 127.0.0.1 that counts per message id;
//! and a worker aborted mid-delivery loses nothing on either queue.
#![cfg(any(feature = "postgres", feature = "redis"))]

mod support;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, routing::post, Router};
use hookgate_core::Scheme;
use hookgate_sender::{ssrf::SsrfPolicy, worker::Next, Endpoint, Message, Queue, Sender, Worker};

const MESSAGES: usize = 1000;

/// Requests received, per `webhook-id`.
#[derive(Debug, Default)]
struct Counts {
    per_id: Mutex<HashMap<String, u32>>,
    /// Never answer the first request (the sender is killed meanwhile).
    hang_first: bool,
    first: tokio::sync::Notify,
}

impl Counts {
    fn get(&self, id: &str) -> Option<u32> {
        self.per_id.lock().unwrap().get(id).copied()
    }
}

async fn receive(State(counts): State<Arc<Counts>>, headers: HeaderMap) -> &'static str {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned();
    let n = {
        let mut per_id = counts.per_id.lock().unwrap();
        let n = per_id.entry(id).or_default();
        *n += 1;
        *n
    };
    if counts.hang_first && n == 1 {
        counts.first.notify_one();
        std::future::pending::<()>().await;
    }
    "ok"
}

/// A counting receiver on 127.0.0.1:0; returns its URL.
async fn start_receiver(counts: Arc<Counts>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(counts);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

async fn two_workers_deliver_each_once(queue: Arc<dyn Queue>) {
    let counts = Arc::new(Counts::default());
    let url = start_receiver(counts.clone()).await;
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new(
                "ep",
                url,
                Scheme::StandardWebhooks,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .unwrap()
            .with_timeout(Duration::from_secs(5))
            .unwrap(),
        )
        .await
        .unwrap();
    let per_worker = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let worker = |n: &Arc<AtomicUsize>| {
        let n = n.clone();
        Worker::builder(queue.clone())
            .with_concurrency(16)
            .with_lease(Duration::from_secs(30))
            .with_max_request_timeout(Duration::from_secs(5))
            .with_poll_interval(Duration::from_millis(20))
            .with_ssrf_policy(SsrfPolicy::new().allow_private().allow_plain_http())
            .with_on_attempt(move |r| {
                if r.recorded && matches!(r.next, Next::Delivered) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build()
            .unwrap()
            .spawn()
    };
    let (a, b) = (worker(&per_worker[0]), worker(&per_worker[1]));
    for i in 0..MESSAGES {
        sender
            .enqueue(
                "ep",
                Message::new("test.event", format!("{{\"n\":{i}}}")).with_id(format!("m{i:04}")),
            )
            .await
            .unwrap();
    }
    // Bounded wait for the queue to drain.
    for _ in 0..600 {
        if queue.stats().await.unwrap().pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ra, rb) = (
        a.shutdown(Duration::from_secs(10)).await,
        b.shutdown(Duration::from_secs(10)).await,
    );
    let delivered = [
        per_worker[0].load(Ordering::Relaxed),
        per_worker[1].load(Ordering::Relaxed),
    ];
    eprintln!("delivered per worker: {delivered:?}; shutdown reports: {ra:?} {rb:?}");
    assert_eq!(delivered[0] + delivered[1], MESSAGES, "recorded deliveries");
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.pending(), 0, "not drained: {stats:?}");
    assert_eq!(stats.dead, 0);
    assert_eq!(
        counts.per_id.lock().unwrap().len(),
        MESSAGES,
        "distinct ids received"
    );
    for i in 0..MESSAGES {
        let id = format!("m{i:04}");
        assert_eq!(
            counts.get(&id),
            Some(1),
            "{id} received {:?} times",
            counts.get(&id)
        );
    }
}

async fn put_endpoint(queue: &Arc<dyn Queue>, url: String, timeout: Duration) {
    let ep = Endpoint::new(
        "ep",
        url,
        Scheme::StandardWebhooks,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap()
    .with_timeout(timeout)
    .unwrap();
    queue.put_endpoint(&ep).await.unwrap();
}

/// Each attempt's outcome and whether the queue recorded it.
type Reports = Arc<Mutex<Vec<(Next, bool)>>>;

/// A worker aborted mid-delivery (task aborted, connection dropped) loses
/// nothing: once its lease expires another worker delivers the message.
async fn aborted_worker_loses_nothing(queue: Arc<dyn Queue>) {
    let counts = Arc::new(Counts {
        hang_first: true,
        ..Counts::default()
    });
    let url = start_receiver(counts.clone()).await;
    put_endpoint(&queue, url, Duration::from_secs(2)).await;
    let reports = Arc::new(Mutex::new(Vec::new()));
    let worker = |reports: Option<Reports>| {
        Worker::builder(queue.clone())
            .with_concurrency(4)
            .with_lease(Duration::from_secs(3))
            .with_max_request_timeout(Duration::from_secs(2))
            .with_poll_interval(Duration::from_millis(20))
            .with_ssrf_policy(SsrfPolicy::new().allow_private().allow_plain_http())
            .with_on_attempt(move |r| {
                if let Some(reports) = &reports {
                    reports.lock().unwrap().push((r.next.clone(), r.recorded));
                }
            })
            .build()
            .unwrap()
            .spawn()
    };
    let first = worker(None);
    queue
        .enqueue("ep", &Message::new("t", "{}").with_id("crash"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), counts.first.notified())
        .await
        .expect("first attempt reached the receiver");
    first.abort();
    assert_eq!(queue.stats().await.unwrap().pending(), 1, "still queued");

    let second = worker(Some(reports.clone()));
    for _ in 0..300 {
        if queue.stats().await.unwrap().pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.shutdown(Duration::from_secs(5)).await;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending(), stats.dead), (0, 0), "{stats:?}");
    assert_eq!(
        counts.get("crash"),
        Some(2),
        "the hung attempt, then one delivery"
    );
    let reports = reports.lock().unwrap();
    let delivered = reports
        .iter()
        .filter(|(next, recorded)| *recorded && matches!(next, Next::Delivered))
        .count();
    assert_eq!(delivered, 1, "{reports:?}");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_postgres_queue_deliver_each_message_once() {
    let Some(q) = support::pg::fresh_with_pool(8).await else {
        return;
    };
    support::with_cleanup(
        two_workers_deliver_each_once(Arc::new(q.clone())),
        support::pg::drop_schema(&q),
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_redis_queue_deliver_each_message_once() {
    let Some(q) = support::redis::fresh().await else {
        return;
    };
    support::with_cleanup(
        two_workers_deliver_each_once(Arc::new(q.clone())),
        support::redis::delete_keys(&q),
    )
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_worker_on_postgres_loses_nothing() {
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    support::with_cleanup(
        aborted_worker_loses_nothing(Arc::new(q.clone())),
        support::pg::drop_schema(&q),
    )
    .await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_worker_on_redis_loses_nothing() {
    let Some(q) = support::redis::fresh().await else {
        return;
    };
    support::with_cleanup(
        aborted_worker_loses_nothing(Arc::new(q.clone())),
        support::redis::delete_keys(&q),
    )
    .await;
}
