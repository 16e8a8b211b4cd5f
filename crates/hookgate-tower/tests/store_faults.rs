//! Store faults seen through the layer, over real HTTP on loopback and the
//! real Redis and Postgres:
//!
//! - a store connection that goes silent without closing (a loopback proxy
//!   freezes it: socket open, no bytes) answers 503 while the path is
//!   frozen, and service returns within 5 s of the proxy passing traffic
//!   again (the store replaces the silent connection);
//! - a misconfigured store (a Redis key holding a foreign value, a Postgres
//!   table dropped under the running store) answers 500, never fail-open.
#![cfg(all(feature = "axum", any(feature = "redis", feature = "postgres")))]

mod layer_support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hookgate_core::Scheme;
use hookgate_tower::VerifyWebhookLayer;
use layer_support::{freeze_proxy::FreezeProxy, *};
use tokio::time::Instant;

const BODY: &[u8] = br#"{"type":"invoice.paid","amount":4200}"#;
/// The stores' own bound on each call in these tests.
const STORE_TIMEOUT: Duration = Duration::from_millis(500);
/// How soon after the network returns service must be back.
const RECOVERY: Duration = Duration::from_secs(5);

async fn resolve(host: &str, port: u16) -> SocketAddr {
    tokio::net::lookup_host((host, port))
        .await
        .expect("resolve the store's host")
        .next()
        .expect("an address")
}

/// Run `body` (bounded by 60 s), then `cleanup`, also when `body` panics.
async fn with_cleanup(
    body: impl std::future::Future<Output = ()>,
    cleanup: impl std::future::Future<Output = ()>,
) {
    use futures_util::FutureExt as _;
    let outcome = std::panic::AssertUnwindSafe(tokio::time::timeout(Duration::from_secs(60), body))
        .catch_unwind()
        .await;
    cleanup.await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("test did not finish within 60 s"),
        Err(p) => std::panic::resume_unwind(p),
    }
}

async fn deliver(srv: &Server, id: &str) -> reqwest::Response {
    post(
        &client(),
        &srv.url(),
        &sign(Scheme::StandardWebhooks, id, BODY),
        BODY,
    )
    .await
}

/// Through `proxy`: one event handled, then frozen → 503 with
/// `Retry-After`, then thawed → 200 within [`RECOVERY`].
async fn freeze_then_recover(name: &str, proxy: &FreezeProxy, srv: &Server) {
    let res = deliver(srv, &random_id("before")).await;
    assert_eq!(res.status(), 200, "[{name}] before the freeze");

    proxy.freeze();
    for i in 0..2 {
        let started = Instant::now();
        let res = deliver(srv, &random_id("frozen")).await;
        assert_eq!(res.status(), 503, "[{name}] frozen, delivery {i}");
        assert!(res.headers().get("retry-after").is_some(), "[{name}]");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "[{name}] a frozen store answers within its timeouts"
        );
    }
    let calls = srv.calls();

    proxy.thaw();
    let thawed = Instant::now();
    let id = random_id("after");
    let mut last = 0;
    while thawed.elapsed() < RECOVERY {
        last = deliver(srv, &id).await.status().as_u16();
        if last == 200 {
            break;
        }
        assert_eq!(last, 503, "[{name}] only 503 while recovering");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last, 200,
        "[{name}] service returned within {RECOVERY:?} of the network"
    );
    assert_eq!(srv.calls(), calls + 1, "[{name}] the event ran once");
    // And stays back: a duplicate is replayed from the store.
    let dup = deliver(srv, &id).await;
    assert_eq!(dup.headers()["idempotent-replayed"], "true", "[{name}]");
}

#[cfg(feature = "redis")]
mod redis_faults {
    use super::*;
    use hookgate_tower::store::{RedisStore, StoreErrorKind};

    /// The upstream Redis address and the URL's database part.
    fn upstream() -> (String, u16, String) {
        let url = redis_url();
        let rest = url
            .strip_prefix("redis://")
            .expect("a redis:// URL")
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        let (hostport, db) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
        (host.to_owned(), port.parse().expect("port"), db.to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_redis_connection_is_replaced() {
        let (host, port, db) = upstream();
        let proxy = FreezeProxy::start(resolve(&host, port).await).await;
        let prefix = format!("{}:", test_prefix());
        let url = format!("redis://{}/{db}", proxy.addr);
        let store = match RedisStore::connect(&url).await {
            Ok(s) => s.with_prefix(prefix.clone()).with_timeout(STORE_TIMEOUT),
            Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                let _: Option<()> = skip_or_fail("Redis", &e);
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
            .with_store(store)
            .with_prefix("faults");
        let srv = serve(layer, vec![Action::Status(200)]).await;
        with_cleanup(
            freeze_then_recover("redis", &proxy, &srv),
            delete_redis_prefix(&prefix),
        )
        .await;
    }

    /// A key holding a value the store did not write: 500 (logged at
    /// error), even with fail-open, and the handler does not run.
    #[tokio::test]
    async fn a_foreign_redis_value_is_500_even_with_fail_open() {
        let store = match RedisStore::connect(&redis_url()).await {
            Ok(s) => s,
            Err(e) => {
                let _: Option<()> = skip_or_fail("Redis", &e);
                return;
            }
        };
        let prefix = format!("{}:", test_prefix());
        let id = random_id("foreign");
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SET")
            .arg(format!("{prefix}faults:standard:{id}"))
            .arg("somebody else's data")
            .query_async(&mut conn)
            .await
            .unwrap();
        let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
            .with_store(store.with_prefix(prefix.clone()))
            .with_prefix("faults")
            .with_fail_open(true);
        let srv = serve(layer, vec![Action::Status(200)]).await;
        let body = async {
            let res = deliver(&srv, &id).await;
            assert_eq!(res.status(), 500);
            assert_eq!(
                problem_type(res).await,
                "https://hookgate.dev/problems/store_misconfigured"
            );
            assert_eq!(srv.calls(), 0, "never fail-open on a misconfigured store");
        };
        with_cleanup(body, delete_redis_prefix(&prefix)).await;
    }

    async fn delete_redis_prefix(prefix: &str) {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres_faults {
    use super::*;
    use hookgate_tower::store::{PostgresStore, StoreErrorKind};

    async fn drop_table(table: &str) {
        let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .await
            .unwrap();
        drop(client);
        let _ = conn.await;
    }

    /// `url` with its host and port replaced by `addr`.
    fn via(url: &str, addr: SocketAddr) -> String {
        let config: tokio_postgres::Config = url.parse().expect("postgres URL");
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or("postgres");
        match config.get_password() {
            Some(pw) => format!(
                "postgres://{user}:{}@{addr}/{db}",
                String::from_utf8_lossy(pw)
            ),
            None => format!("postgres://{user}@{addr}/{db}"),
        }
    }

    fn upstream() -> (String, u16) {
        let config: tokio_postgres::Config = postgres_url().parse().expect("postgres URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        (host, config.get_ports().first().copied().unwrap_or(5432))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_postgres_connection_is_replaced() {
        let (host, port) = upstream();
        let proxy = FreezeProxy::start(resolve(&host, port).await).await;
        let table = format!("hookgate_faults_{}", test_prefix());
        let store = PostgresStore::new(&via(&postgres_url(), proxy.addr))
            .and_then(|s| s.with_table(&table))
            .expect("store")
            .with_pool_size(2)
            .with_timeout(STORE_TIMEOUT);
        match store.migrate().await {
            Ok(()) => {}
            Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                let _: Option<()> = skip_or_fail("PostgreSQL", &e);
                return;
            }
            Err(e) => panic!("{e}"),
        }
        let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
            .with_store(store)
            .with_prefix("faults");
        let srv = serve(layer, vec![Action::Status(200)]).await;
        with_cleanup(
            freeze_then_recover("postgres", &proxy, &srv),
            drop_table(&table),
        )
        .await;
    }

    /// The dedup table dropped under a running store: 500, even with
    /// fail-open, and the handler does not run.
    #[tokio::test]
    async fn a_dropped_postgres_table_is_500_even_with_fail_open() {
        let table = format!("hookgate_faults_{}", test_prefix());
        let store = PostgresStore::new(&postgres_url())
            .and_then(|s| s.with_table(&table))
            .expect("store");
        if let Err(e) = store.migrate().await {
            let _: Option<()> = skip_or_fail("PostgreSQL", &e);
            return;
        }
        let layer = VerifyWebhookLayer::new(verifier(Scheme::StandardWebhooks))
            .with_shared_store(Arc::new(store))
            .with_fail_open(true);
        let srv = serve(layer, vec![Action::Status(200)]).await;
        let body = async {
            assert_eq!(deliver(&srv, &random_id("ok")).await.status(), 200);
            drop_table(&table).await;
            let res = deliver(&srv, &random_id("gone")).await;
            assert_eq!(res.status(), 500);
            assert_eq!(
                problem_type(res).await,
                "https://hookgate.dev/problems/store_misconfigured"
            );
            assert_eq!(srv.calls(), 1, "never fail-open on a misconfigured store");
        };
        with_cleanup(body, drop_table(&table)).await;
    }
}
