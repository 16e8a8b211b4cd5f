//! Stores pointed at a loopback port where nothing listens report
//! `StoreErrorKind::Unavailable` (the layer's 503), promptly rather than
//! hanging. Needs no server; each call is bounded by an outer timeout so a
//! hang fails the test instead of stalling it.
#![cfg(any(feature = "redis", feature = "postgres"))]

use hookgate_tower::store::{DedupStore, StoreError, StoreErrorKind};
use std::{future::Future, time::Duration};

/// Outer bound on each call; the stores' own timeouts are shorter.
const BOUND: Duration = Duration::from_secs(15);

/// A loopback port nothing listens on: bind port 0, note it, close it.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("addr").port()
}

async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    fut: impl Future<Output = Result<T, StoreError>>,
) {
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {BOUND:?}"));
    let err = result.expect_err(what);
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{what}: {err}");
    eprintln!("{what}: {err} after {:?}", started.elapsed());
}

async fn all_ops_unavailable(store: &dyn DedupStore) {
    let token = hookgate_tower::store::ClaimToken::generate();
    let record = hookgate_tower::store::DoneRecord::new(200, [0; 32]);
    expect_unavailable("claim", store.claim("k", &[0; 32], Duration::from_secs(30))).await;
    expect_unavailable(
        "complete",
        store.complete("k", &token, record, Duration::from_secs(60)),
    )
    .await;
    expect_unavailable("release", store.release("k", &token)).await;
    expect_unavailable("renew", store.renew("k", &token, Duration::from_secs(30))).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_unreachable_is_unavailable() {
    use hookgate_tower::store::RedisStore;
    let url = format!("redis://127.0.0.1:{}", dead_port());
    expect_unavailable("connect", RedisStore::connect(&url)).await;
    let store = RedisStore::lazy(&url)
        .expect("valid url")
        .with_timeout(Duration::from_millis(500));
    all_ops_unavailable(&store).await;
    // Still unavailable on later calls (it retries connecting, not caching
    // a broken state).
    all_ops_unavailable(&store).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_unreachable_is_unavailable() {
    use hookgate_tower::store::PostgresStore;
    let url = format!("postgres://postgres@127.0.0.1:{}/test", dead_port());
    expect_unavailable("connect", PostgresStore::connect(&url)).await;
    let store = PostgresStore::new(&url)
        .expect("valid url")
        .with_timeout(Duration::from_millis(500));
    expect_unavailable("migrate", store.migrate()).await;
    expect_unavailable("sweep", store.sweep()).await;
    all_ops_unavailable(&store).await;
    all_ops_unavailable(&store).await;
}
