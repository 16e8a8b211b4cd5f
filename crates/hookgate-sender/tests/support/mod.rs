//! Shared test set-up: server URLs from the environment, skip-or-fail when a
//! server is unreachable, and fresh namespaces (a random Postgres schema, a
//! random Redis prefix) that are removed afterwards.
#![allow(dead_code, unreachable_pub)]

use std::{future::Future, panic::AssertUnwindSafe};

use futures_util::FutureExt as _;

/// `HOOKGATE_POSTGRES_URL`, or the local default.
pub fn postgres_url() -> String {
    std::env::var("HOOKGATE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `HOOKGATE_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("HOOKGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Under `CI=true` an unreachable server fails the test instead of skipping it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Report that `what` is unreachable: skip (return) or, under CI, panic.
pub fn unreachable_server(what: &str, err: &dyn std::fmt::Display) {
    assert!(!ci(), "{what} unreachable under CI=true: {err}");
    eprintln!("skipping: {what} unreachable ({err}); set the URL env var to run this test");
}

/// A random lower-case hex string.
pub fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Run `body` with a cleanup afterwards, even when `body` panics.
pub async fn with_cleanup<Fut, C>(body: Fut, cleanup: C)
where
    Fut: Future<Output = ()>,
    C: Future<Output = ()>,
{
    let result = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[cfg(feature = "postgres")]
pub mod pg {
    //! Postgres helpers.
    use hookgate_sender::queue::PostgresQueue;

    /// A queue in a fresh random schema, or `None` (skipping) when Postgres
    /// is unreachable.
    pub async fn fresh() -> Option<PostgresQueue> {
        fresh_with_pool(4).await
    }

    /// [`fresh`] with a pool of `size` connections.
    pub async fn fresh_with_pool(size: usize) -> Option<PostgresQueue> {
        let url = super::postgres_url();
        let queue = match PostgresQueue::connect_with_pool_size(&url, size).await {
            Ok(q) => q,
            Err(e) => {
                super::unreachable_server("PostgreSQL", &e);
                return None;
            }
        };
        let schema = format!("hg_test_{}", super::random_hex());
        let queue = queue.with_schema(&schema).expect("valid schema name");
        queue.migrate().await.expect("migrate");
        Some(queue)
    }

    /// Drop the queue's schema and everything in it.
    pub async fn drop_schema(queue: &PostgresQueue) {
        let (client, conn) = tokio_postgres::connect(&super::postgres_url(), tokio_postgres::NoTls)
            .await
            .expect("connect for cleanup");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                queue.schema()
            ))
            .await
            .expect("drop schema");
        drop(client);
        let _ = task.await;
    }
}

#[cfg(feature = "redis")]
pub mod redis {
    //! Redis helpers.
    use hookgate_sender::queue::RedisQueue;

    /// A queue under a fresh random prefix, or `None` (skipping) when Redis is
    /// unreachable.
    pub async fn fresh() -> Option<RedisQueue> {
        let queue = match RedisQueue::connect(&super::redis_url()).await {
            Ok(q) => q,
            Err(e) => {
                super::unreachable_server("Redis", &e);
                return None;
            }
        };
        Some(
            queue
                .with_prefix(&format!("hg-test:{}:", super::random_hex()))
                .expect("valid prefix"),
        )
    }

    /// Delete every key under the queue's prefix.
    pub async fn delete_keys(queue: &RedisQueue) {
        queue.delete_all().await.expect("delete test keys");
    }
}

/// Two lessors over `n` messages: every delivery is leased exactly once (the
/// leases outlast the test, so a second lease of a key would be a double
/// lease), and all are delivered. Returns how many each lessor took.
pub async fn two_lessors_never_share<Q>(queue: Q, n: usize) -> (usize, usize)
where
    Q: hookgate_sender::Queue + Clone,
{
    use std::{
        collections::HashSet,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use hookgate_sender::{
        now_ms,
        queue::{Attempt, DeliveryKey},
        Message,
    };

    for i in 0..n {
        let m = Message::new("test.event", format!("{{\"n\":{i}}}")).with_id(format!("m{i:05}"));
        queue.enqueue("ep", &m).await.expect("enqueue");
    }
    let seen: Arc<Mutex<HashSet<DeliveryKey>>> = Arc::default();
    let lessor = |queue: Q, seen: Arc<Mutex<HashSet<DeliveryKey>>>| async move {
        let mut taken = 0usize;
        let mut idle = 0;
        while idle < 3 {
            let batch = queue
                .lease(37, Duration::from_secs(120))
                .await
                .expect("lease");
            if batch.is_empty() {
                idle += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            idle = 0;
            for l in batch {
                let fresh = seen.lock().unwrap().insert(l.job.key.clone());
                assert!(fresh, "{:?} leased twice", l.job.key);
                let attempt = Attempt {
                    at_ms: now_ms(),
                    url: "http://127.0.0.1:9/".into(),
                    status: Some(200),
                    latency_ms: 0,
                    error: None,
                };
                assert!(queue
                    .settle(
                        &l.job.key,
                        &l.token,
                        Some(attempt),
                        hookgate_sender::queue::Transition::Delivered
                    )
                    .await
                    .expect("delivered"));
                taken += 1;
            }
        }
        taken
    };
    let a = tokio::spawn(lessor(queue.clone(), seen.clone()));
    let b = tokio::spawn(lessor(queue.clone(), seen.clone()));
    let (a, b) = (a.await.expect("lessor a"), b.await.expect("lessor b"));
    assert_eq!(a + b, n, "every message leased exactly once");
    assert_eq!(seen.lock().unwrap().len(), n);
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.pending(), 0);
    (a, b)
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}
