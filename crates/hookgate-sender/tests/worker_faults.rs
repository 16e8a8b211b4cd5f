//! The worker under faults: slow stores, lost leases, crashing workers, a
//! skewed worker clock and a store that blocks leasing. Each holds the
//! guarantee "at most `max_attempts` requests per message (plus one per
//! crash), every message delivered or dead-lettered, every attempt recorded".

mod sender_support;
mod support;

use std::{
    sync::{
        atomic::{AtomicI64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hookgate_core::Scheme;
use hookgate_sender::{
    queue::{
        Attempt, BoxFuture, DeadLetter, DeadReason, DeliveryKey, DeliveryState, DlqFilter,
        Enqueued, LeaseToken, Leased, Page, Queue, QueueStats, Result, Transition,
    },
    retry::RetryPolicy,
    worker::Next,
    Endpoint, MemoryQueue, Message, Sender,
};
use sender_support::{test_worker, until_final, Receiver, Reply};

/// A queue whose `get_endpoint` takes `delay` (a slow or overloaded store).
struct SlowEndpoints {
    inner: Arc<dyn Queue>,
    delay: Duration,
    loads: AtomicUsize,
}

impl Queue for SlowEndpoints {
    fn put_endpoint<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<()>> {
        self.inner.put_endpoint(endpoint)
    }
    fn get_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Endpoint>>> {
        Box::pin(async move {
            self.loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.inner.get_endpoint(id).await
        })
    }
    fn set_endpoint_disabled<'a>(
        &'a self,
        id: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.set_endpoint_disabled(id, disabled)
    }
    fn list_endpoints(&self) -> BoxFuture<'_, Result<Vec<Endpoint>>> {
        self.inner.list_endpoints()
    }
    fn remove_endpoint<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner.remove_endpoint(id)
    }
    fn enqueue<'a>(
        &'a self,
        endpoint: &'a str,
        message: &'a Message,
    ) -> BoxFuture<'a, Result<Enqueued>> {
        self.inner.enqueue(endpoint, message)
    }
    fn lease(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        self.inner.lease(max, lease)
    }
    fn lease_one<'a>(
        &'a self,
        key: &'a DeliveryKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Leased>>> {
        self.inner.lease_one(key, lease)
    }
    fn settle<'a>(
        &'a self,
        key: &'a DeliveryKey,
        token: &'a LeaseToken,
        attempt: Option<Attempt>,
        transition: Transition,
    ) -> BoxFuture<'a, Result<bool>> {
        self.inner.settle(key, token, attempt, transition)
    }
    fn release_held<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<u64>> {
        self.inner.release_held(endpoint)
    }
    fn state<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeliveryState>>> {
        self.inner.state(key)
    }
    fn add_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> BoxFuture<'a, Result<bool>> {
        self.inner.add_dead_letter(dead)
    }
    fn list_dead<'a>(
        &'a self,
        filter: &'a DlqFilter,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        self.inner.list_dead(filter, page)
    }
    fn get_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<Option<DeadLetter>>> {
        self.inner.get_dead(key)
    }
    fn replay_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        self.inner.replay_dead(key)
    }
    fn purge_dead<'a>(&'a self, key: &'a DeliveryKey) -> BoxFuture<'a, Result<bool>> {
        self.inner.purge_dead(key)
    }
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        self.inner.stats()
    }
    fn prune(&self, dead_retention: Option<Duration>, max: usize) -> BoxFuture<'_, Result<u64>> {
        self.inner.prune(dead_retention, max)
    }
    fn rescue(&self, max: usize, lease: Duration) -> BoxFuture<'_, Result<Vec<Leased>>> {
        self.inner.rescue(max, lease)
    }
}

fn endpoint(url: String) -> Endpoint {
    Endpoint::new("ep", url, Scheme::GitHub, "secret")
        .unwrap()
        .with_timeout(Duration::from_secs(1))
        .unwrap()
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_base_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(50))
        .with_max_attempts(max_attempts)
}

/// Issue 8, item 1. On main: `get_endpoint` slowed to 1.5 s, request timeout
/// 1 s, lease 2 s, two workers, `max_attempts = 2` gave 6 requests in 12 s,
/// every outcome `recorded=false`, never dead-lettered. Now the endpoint
/// load has a deadline inside the lease and every lease spends an attempt:
/// at most 2 requests, and the message is dead-lettered with every request
/// it made recorded.
#[tokio::test]
async fn slow_store_cannot_make_a_message_retry_forever() {
    let inner: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let queue: Arc<dyn Queue> = Arc::new(SlowEndpoints {
        inner: inner.clone(),
        delay: Duration::from_millis(1500),
        loads: AtomicUsize::new(0),
    });
    // The receiver never answers in time, so only the budget ends it.
    let receiver =
        Receiver::start((0..20).map(|_| Reply::status(200).delay(Duration::from_secs(5)))).await;
    Sender::new(queue.clone())
        .add_endpoint(endpoint(receiver.url()))
        .await
        .unwrap();
    let key = Sender::new(queue.clone())
        .enqueue("ep", Message::new("t", "{}"))
        .await
        .unwrap();
    let mut workers = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..2 {
        let (b, r) = test_worker(queue.clone(), policy(2));
        workers.push(
            b.with_lease(Duration::from_secs(2))
                .with_max_request_timeout(Duration::from_secs(1))
                .build()
                .unwrap()
                .spawn(),
        );
        reports.push(r);
    }
    // Bounded: on main this never settles.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut state = None;
    while Instant::now() < deadline {
        state = inner.state(&key).await.unwrap();
        if state == Some(DeliveryState::Dead) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in workers {
        w.shutdown(Duration::from_secs(2)).await;
    }
    assert_eq!(state, Some(DeliveryState::Dead), "never dead-lettered");
    let requests = receiver.count();
    assert!(requests <= 2, "{requests} requests for max_attempts = 2");
    let dead = inner.get_dead(&key).await.unwrap().unwrap();
    assert_eq!(dead.attempts.len(), requests, "every request recorded");
    assert!(
        matches!(dead.reason, DeadReason::Exhausted { .. }),
        "{:?}",
        dead.reason
    );
}

/// A worker that crashes mid-request again and again (a poison message that
/// kills the process): each lease spends an attempt, so after
/// `max_attempts` leases the message is dead-lettered without another
/// request. On main attempts were counted only when an outcome was
/// recorded, so every new worker tried again.
#[tokio::test]
async fn crash_loop_is_bounded_by_the_attempt_budget() {
    let receiver =
        Receiver::start((0..10).map(|_| Reply::status(200).delay(Duration::from_secs(30)))).await;
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender.add_endpoint(endpoint(receiver.url())).await.unwrap();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    for crash in 1..=2 {
        let (b, _r) = test_worker(queue.clone(), policy(2));
        let w = b
            .with_lease(Duration::from_millis(1800))
            .with_max_request_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
            .spawn();
        receiver.wait_for(crash).await;
        w.abort(); // the process dies mid-request
        tokio::time::sleep(Duration::from_millis(1900)).await; // its lease runs out
    }
    let (b, mut r) = test_worker(queue.clone(), policy(2));
    let w = b
        .with_lease(Duration::from_millis(1800))
        .with_max_request_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .spawn();
    let reports = until_final(&mut r, &key).await;
    w.shutdown(Duration::from_secs(2)).await;
    assert_eq!(reports.len(), 1);
    assert!(reports[0].attempt.is_none(), "no third request");
    assert!(matches!(
        reports[0].next,
        Next::DeadLettered {
            reason: DeadReason::Exhausted { .. }
        }
    ));
    assert_eq!(receiver.count(), 2);
}

/// Issue 8, item 2: the worker's clock is off by ±10 minutes; retries still
/// happen after their delay as the store counts time (the worker passes a
/// delay, never an instant).
#[tokio::test]
async fn retries_follow_the_store_clock_whatever_the_worker_clock() {
    async fn run(queue: Arc<dyn Queue>, skew_ms: i64) {
        let receiver = Receiver::start([
            Reply::status(503).header("Retry-After", "1"),
            Reply::status(200),
        ])
        .await;
        let sender = Sender::new(queue.clone());
        sender.add_endpoint(endpoint(receiver.url())).await.unwrap();
        let skew = Arc::new(AtomicI64::new(skew_ms));
        let (b, mut r) = test_worker(queue.clone(), policy(3).with_max_age(None));
        let w = b
            .with_clock(move || hookgate_sender::now_ms() + skew.load(Ordering::SeqCst))
            .build()
            .unwrap()
            .spawn();
        let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
        let reports = until_final(&mut r, &key).await;
        w.shutdown(Duration::from_secs(2)).await;
        assert_eq!(reports.len(), 2, "skew {skew_ms}");
        assert_eq!(reports[1].next, Next::Delivered);
        let received = receiver.received();
        let gap = received[1].at_ms - received[0].at_ms;
        assert!(
            (900..5000).contains(&gap),
            "skew {skew_ms}: retried after {gap} ms"
        );
    }
    for skew in [-600_000, 600_000] {
        run(Arc::new(MemoryQueue::new()), skew).await;
        #[cfg(feature = "postgres")]
        if let Some(q) = support::pg::fresh().await {
            support::with_cleanup(run(Arc::new(q.clone()), skew), support::pg::drop_schema(&q))
                .await;
        }
        #[cfg(feature = "redis")]
        if let Some(q) = support::redis::fresh().await {
            support::with_cleanup(
                run(Arc::new(q.clone()), skew),
                support::redis::delete_keys(&q),
            )
            .await;
        }
    }
}

/// Issue 8, item 3: `shutdown(grace)` returns within grace + 1 s while the
/// worker's `lease()` waits on a `LOCK TABLE`d Postgres table. On main the
/// worker was still running after 5 s with a grace of 100 ms.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn shutdown_keeps_its_grace_while_leasing_is_blocked() {
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    let check = async {
        let (client, conn) =
            tokio_postgres::connect(&support::postgres_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        client.batch_execute("BEGIN").await.unwrap();
        client
            .batch_execute(&format!(
                "LOCK TABLE \"{}\".hookgate_deliveries IN ACCESS EXCLUSIVE MODE",
                q.schema()
            ))
            .await
            .unwrap();
        let queue: Arc<dyn Queue> = Arc::new(q.clone());
        let (b, _r) = test_worker(queue, policy(2));
        let w = b
            .with_store_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
            .spawn();
        tokio::time::sleep(Duration::from_millis(300)).await; // lease() is waiting now
        let started = Instant::now();
        let report = tokio::time::timeout(
            Duration::from_secs(5),
            w.shutdown(Duration::from_millis(100)),
        )
        .await
        .expect("shutdown hung");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1100), "shutdown took {took:?}");
        assert_eq!(report.aborted, 0);
        client.batch_execute("ROLLBACK").await.unwrap();
        drop(client);
        let _ = conn.await;
    };
    support::with_cleanup(check, support::pg::drop_schema(&q)).await;
}
