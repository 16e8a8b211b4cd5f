//! The [`Queue`] conformance suite (`hookgate_sender::testing`, feature
//! `testing`) run against every backend: memory, Postgres and Redis (the
//! real servers; see `support` for the URLs and the skip rules), one test per
//! check and backend and one per (state, transition) pair. Each check gets a
//! fresh, empty queue (new schema / key prefix), removed afterwards. Plus
//! the retention checks, which need backend-specific settings.

mod support;

use std::{future::Future, time::Duration};

use hookgate_sender::{
    queue::{DeliveryState, Enqueued, Queue, Transition},
    testing::{attempt, exhausted, message, retry, LONG, PAST_SHORT, SHORT},
    MemoryQueue,
};

async fn memory<F, Fut>(check: F)
where
    F: FnOnce(MemoryQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    check(MemoryQueue::new()).await;
}

hookgate_sender::queue_conformance_tests!(memory_queue, crate::memory);

#[cfg(feature = "postgres")]
async fn postgres<F, Fut>(check: F)
where
    F: FnOnce(hookgate_sender::queue::PostgresQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    support::with_cleanup(check(q.clone()), support::pg::drop_schema(&q)).await;
}

#[cfg(feature = "postgres")]
hookgate_sender::queue_conformance_tests!(postgres_queue, crate::postgres);

#[cfg(feature = "redis")]
async fn redis<F, Fut>(check: F)
where
    F: FnOnce(hookgate_sender::queue::RedisQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(q) = support::redis::fresh().await else {
        return;
    };
    support::with_cleanup(check(q.clone()), support::redis::delete_keys(&q)).await;
}

#[cfg(feature = "redis")]
hookgate_sender::queue_conformance_tests!(redis_queue, crate::redis);

/// Delivered keys leave after the retention window: the key is new again
/// (memory queue, on its injectable clock — no sleeping).
#[tokio::test]
async fn delivered_retention_on_the_memory_clock() {
    use std::sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    };
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = now.clone();
    let q = MemoryQueue::new()
        .with_clock(move || clock.load(Ordering::SeqCst))
        .with_delivered_retention(Duration::from_secs(3600));
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(1, LONG).await.unwrap().remove(0);
    q.settle(&l.job.key, &l.token, None, retry(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(q.lease(1, LONG).await.unwrap().is_empty());
    now.fetch_add(60_000, Ordering::SeqCst);
    let l = q.lease(1, LONG).await.unwrap().remove(0);
    assert_eq!(l.job.attempts, 2);
    q.settle(&l.job.key, &l.token, None, Transition::Delivered)
        .await
        .unwrap();
    now.fetch_add(3_599_000, Ordering::SeqCst);
    assert_eq!(
        q.enqueue("ep", &message("m1")).await.unwrap(),
        Enqueued::Exists(DeliveryState::Delivered)
    );
    now.fetch_add(1_000, Ordering::SeqCst);
    assert_eq!(
        q.enqueue("ep", &message("m1")).await.unwrap(),
        Enqueued::New
    );
    assert_eq!(q.lease(1, LONG).await.unwrap()[0].job.attempts, 1);
}

/// The durable backends expire delivered keys too.
#[tokio::test]
async fn delivered_retention_in_durable_backends() {
    async fn check<Q: Queue>(q: Q) {
        q.enqueue("ep", &message("m1")).await.unwrap();
        let l = q.lease(1, LONG).await.unwrap().remove(0);
        q.settle(
            &l.job.key,
            &l.token,
            Some(attempt(Some(200), None)),
            Transition::Delivered,
        )
        .await
        .unwrap();
        assert_eq!(
            q.enqueue("ep", &message("m1")).await.unwrap(),
            Enqueued::Exists(DeliveryState::Delivered)
        );
        tokio::time::sleep(PAST_SHORT).await;
        assert_eq!(
            q.enqueue("ep", &message("m1")).await.unwrap(),
            Enqueued::New
        );
        let l = q.lease(1, LONG).await.unwrap().remove(0);
        assert_eq!(l.job.attempts, 1);
        q.settle(&l.job.key, &l.token, None, exhausted())
            .await
            .unwrap();
        let dead = q.get_dead(&l.job.key).await.unwrap().unwrap();
        assert!(
            dead.attempts.is_empty(),
            "a new history: {:?}",
            dead.attempts
        );
    }
    #[cfg(feature = "postgres")]
    if let Some(q) = support::pg::fresh().await {
        let q = q.with_delivered_retention(SHORT);
        support::with_cleanup(check(q.clone()), support::pg::drop_schema(&q)).await;
    }
    #[cfg(feature = "redis")]
    if let Some(q) = support::redis::fresh().await {
        let q = q.with_delivered_retention(SHORT);
        support::with_cleanup(check(q.clone()), support::redis::delete_keys(&q)).await;
    }
    let _ = check::<MemoryQueue>;
}
