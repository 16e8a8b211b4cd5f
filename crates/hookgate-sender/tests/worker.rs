//! The worker's lifecycle: crash safety (an aborted worker loses nothing),
//! graceful shutdown, bounded concurrency and settings validation.

mod sender_support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{routing::post, Router};
use hookgate_core::Scheme;
use hookgate_sender::{
    worker::{Next, WorkerBuildError},
    Endpoint, MemoryQueue, Message, Queue, Sender, Worker,
};
use sender_support::{fast_policy, serve, test_worker, until_final, Receiver, Reply};

async fn setup(url: String) -> (Arc<dyn Queue>, Sender) {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new("ep", url, Scheme::GitHub, "secret")
                .unwrap()
                .with_timeout(Duration::from_secs(1))
                .unwrap(),
        )
        .await
        .unwrap();
    (queue, sender)
}

#[tokio::test]
async fn aborted_worker_loses_nothing() {
    // The first request hangs (the worker is killed meanwhile); later ones succeed.
    let receiver = Receiver::start([Reply::status(200).delay(Duration::from_secs(30))]).await;
    let (queue, sender) = setup(receiver.url()).await;

    let (b1, _r1) = test_worker(queue.clone(), fast_policy(5));
    let w1 = b1
        .with_lease(Duration::from_secs(2))
        .with_max_request_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .spawn();
    let leased_at = hookgate_sender::now_ms();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    receiver.wait_for(1).await;
    // Kill it mid-delivery: the task is aborted and its connection dropped,
    // nothing is recorded or released.
    w1.abort();
    assert_eq!(queue.stats().await.unwrap().pending(), 1);

    let (b2, mut r2) = test_worker(queue.clone(), fast_policy(5));
    let w2 = b2
        .with_lease(Duration::from_secs(2))
        .with_max_request_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .spawn();
    let reports = until_final(&mut r2, &key).await;
    w2.shutdown(Duration::from_secs(5)).await;

    // The second worker got it only once the first lease had expired, as a
    // second attempt: the crashed one was counted when it was leased.
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].next, Next::Delivered);
    assert_eq!(reports[0].number, 2);
    let at = reports[0].attempt.as_ref().unwrap().at_ms;
    assert!(
        at >= leased_at + 2000,
        "leased again {} ms after",
        at - leased_at
    );
    assert_eq!(receiver.count(), 2);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending(), stats.dead), (0, 0));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_attempts_within_grace() {
    let receiver = Receiver::start([Reply::status(200).delay(Duration::from_millis(300))]).await;
    let (queue, sender) = setup(receiver.url()).await;
    let (b, _r) = test_worker(queue.clone(), fast_policy(5));
    let w = b.build().unwrap().spawn();
    sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    receiver.wait_for(1).await;
    let report = w.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.finished, 1);
    assert_eq!(report.aborted, 0);
    assert_eq!(report.released, 0);
    assert_eq!(queue.stats().await.unwrap().pending(), 0);
}

#[tokio::test]
async fn shutdown_releases_what_does_not_finish() {
    let receiver = Receiver::start([Reply::status(200).delay(Duration::from_secs(30))]).await;
    let (queue, sender) = setup(receiver.url()).await;
    let (b, _r) = test_worker(queue.clone(), fast_policy(5));
    let w = b.build().unwrap().spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    receiver.wait_for(1).await;
    let report = w.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.aborted, 1);
    assert_eq!(report.released, 1);
    // Due again at once (no waiting for the 10 s lease).
    let leased = queue.lease(10, Duration::from_secs(10)).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job.key, key);
    // The aborted attempt was refunded: this lease counts the first.
    assert_eq!(leased[0].job.attempts, 1);
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (a, p, s) = (active.clone(), peak.clone(), served.clone());
    let app = Router::new().route(
        "/hook",
        post(move || {
            let (a, p, s) = (a.clone(), p.clone(), s.clone());
            async move {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                a.fetch_sub(1, Ordering::SeqCst);
                s.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let addr = serve(app).await;
    let (queue, sender) = setup(format!("http://{addr}/hook")).await;
    for _ in 0..40 {
        sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    }
    let (b, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let w = b.with_concurrency(4).build().unwrap().spawn();
    for _ in 0..40 {
        let r = tokio::time::timeout(Duration::from_secs(20), reports.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.next, Next::Delivered);
    }
    w.shutdown(Duration::from_secs(5)).await;
    assert_eq!(served.load(Ordering::SeqCst), 40);
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=4).contains(&peak), "peak concurrency {peak}");
}

#[tokio::test]
async fn settings_are_validated() {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let err = Worker::builder(queue.clone())
        .with_lease(Duration::from_secs(30))
        .with_max_request_timeout(Duration::from_secs(30))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, WorkerBuildError::LeaseTooShort { .. }),
        "{err}"
    );
    assert!(Worker::builder(queue.clone())
        .with_lease(Duration::from_secs(31))
        .with_max_request_timeout(Duration::from_secs(30))
        .build()
        .is_ok());
    assert!(matches!(
        Worker::builder(queue.clone()).with_concurrency(0).build(),
        Err(WorkerBuildError::Zero("concurrency"))
    ));
    assert!(matches!(
        Worker::builder(queue)
            .with_retry_policy(fast_policy(0))
            .build(),
        Err(WorkerBuildError::Retry(_))
    ));
}

#[tokio::test]
async fn run_until_stops_on_the_signal() {
    let receiver = Receiver::start([]).await;
    let (queue, sender) = setup(receiver.url()).await;
    let (b, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(b.build().unwrap().run_until(
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(5),
    ));
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let r = until_final(&mut reports, &key).await;
    assert_eq!(r[0].next, Next::Delivered);
    stop_tx.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stopped")
        .unwrap();
    assert_eq!(report.aborted, 0);
    // Stopped: a new message stays queued.
    sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queue.stats().await.unwrap().pending(), 1);
    assert_eq!(receiver.count(), 1);
}

/// Endpoints are managed records (issue 8, item 4): registering another
/// configuration under a stored id is refused and changes nothing; the same
/// configuration again keeps `disabled`; only an explicit update replaces
/// the configuration, and it keeps `disabled` too.
#[tokio::test]
async fn endpoints_are_not_silently_overwritten() {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    let ep = Endpoint::new("ep", "https://a.example/hook", Scheme::GitHub, "s1").unwrap();
    sender.add_endpoint(ep.clone()).await.unwrap();
    queue.set_endpoint_disabled("ep", true).await.unwrap();
    // Same configuration (a restart): fine, still disabled.
    sender.add_endpoint(ep.clone()).await.unwrap();
    assert!(queue.get_endpoint("ep").await.unwrap().unwrap().disabled);
    // Another URL and secret under the same id: refused, unchanged.
    let other = Endpoint::new("ep", "https://test.example/hook", Scheme::GitHub, "t").unwrap();
    let err = sender.add_endpoint(other.clone()).await.unwrap_err();
    assert!(
        matches!(err, hookgate_sender::SendError::EndpointConflict(ref id) if id == "ep"),
        "{err}"
    );
    let stored = queue.get_endpoint("ep").await.unwrap().unwrap();
    assert_eq!(stored.urls, ["https://a.example/hook"]);
    assert_eq!(stored.secrets, ["s1"]);
    // An explicit update replaces it, `disabled` kept.
    sender.update_endpoint(other).await.unwrap();
    let stored = queue.get_endpoint("ep").await.unwrap().unwrap();
    assert_eq!(stored.urls, ["https://test.example/hook"]);
    assert!(stored.disabled);
}
