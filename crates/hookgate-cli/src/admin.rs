//! The admin listener of `serve` and `worker` (`--admin-listen ADDR`, off by
//! default, never on the webhook port):
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every hookgate metric in Prometheus text format (histograms with buckets) |
//! | `GET /health` | `200 ok`: the process is alive and serving |
//! | `GET /ready` | `200 ready` when the store answers a round trip within 2 s, else `503` with the reason |

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, sync::OnceLock, time::Duration};

use anyhow::Context as _;
use axum::{
    extract::State, http::header, http::StatusCode, response::IntoResponse, routing::get, Router,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Bucket bounds (seconds) for every hookgate histogram: attempt and handler
/// latencies from 5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How long `/ready` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// A boxed future, as returned by a [`ReadyCheck`].
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One store round trip: `Ok` when reachable, else a one-line reason.
pub(crate) type ReadyCheck = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;

/// Install the process-wide Prometheus recorder (once) and return its handle.
pub(crate) fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .context("metric buckets")?
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    ready: ReadyCheck,
}

/// Bind `listen` and serve the admin endpoints in the background. Returns
/// the bound address (useful with port 0).
pub(crate) async fn spawn(listen: SocketAddr, ready: ReadyCheck) -> anyhow::Result<SocketAddr> {
    let metrics = install_recorder()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--admin-listen)"))?;
    let addr = listener.local_addr()?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_probe))
        .with_state(AdminState { metrics, ready });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok(addr)
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn ready_probe(State(state): State<AdminState>) -> (StatusCode, String) {
    match tokio::time::timeout(READY_TIMEOUT, (state.ready)()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the store did not answer within {}s\n",
                READY_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// A readiness check for a `--store` URL: a `SELECT 1` on Postgres, a `PING`
/// on Redis, always ready for `memory`. Connections are opened lazily and
/// reused, so a probe costs one round trip.
pub(crate) fn ready_check_for_store(
    store: &str,
    store_ca: Option<std::path::PathBuf>,
) -> anyhow::Result<ReadyCheck> {
    if store == "memory" || store.is_empty() {
        return Ok(Arc::new(|| Box::pin(async { Ok(()) })));
    }
    #[cfg(feature = "postgres")]
    if store.starts_with("postgres://")
        || store.starts_with("postgresql://")
        || store.contains("host=")
    {
        use hookgate_backend::postgres::{describe, PgUrl, PoolOptions};
        let pool = PgUrl::parse(store)?.pool(&PoolOptions {
            max_size: 1,
            timeout: READY_TIMEOUT,
            ..PoolOptions::default()
        })?;
        return Ok(Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move {
                let client = pool.get().await.map_err(|e| match e {
                    deadpool_postgres::PoolError::Backend(e) => {
                        format!("PostgreSQL: {}", describe(&e))
                    }
                    other => format!("PostgreSQL: {other}"),
                })?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(|e| format!("PostgreSQL: {}", describe(&e)))
            })
        }));
    }
    #[cfg(feature = "redis")]
    if let Some(nodes) = hookgate_backend::redis::cluster_nodes(store) {
        let client =
            hookgate_backend::redis::cluster_client(&nodes, store_ca.as_deref(), READY_TIMEOUT)?;
        let conn = Arc::new(tokio::sync::Mutex::new(
            None::<redis::cluster_async::ClusterConnection>,
        ));
        return Ok(Arc::new(move || {
            let client = client.clone();
            let conn = conn.clone();
            Box::pin(async move {
                let describe = |e: redis::RedisError| {
                    format!("Redis Cluster: {}", hookgate_backend::redis::describe(&e))
                };
                let mut guard = conn.lock().await;
                if guard.is_none() {
                    *guard = Some(client.get_async_connection().await.map_err(describe)?);
                }
                let c = guard.as_mut().expect("set above");
                match redis::cmd("PING").query_async::<String>(c).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        *guard = None;
                        Err(describe(e))
                    }
                }
            })
        }));
    }
    #[cfg(feature = "redis")]
    if store.starts_with("redis://") || store.starts_with("rediss://") {
        let client = hookgate_backend::redis::client(store, store_ca.as_deref())?;
        let conn = Arc::new(tokio::sync::Mutex::new(
            None::<redis::aio::MultiplexedConnection>,
        ));
        return Ok(Arc::new(move || {
            let client = client.clone();
            let conn = conn.clone();
            Box::pin(async move {
                let describe = |e: redis::RedisError| {
                    format!("Redis: {}", hookgate_backend::redis::describe(&e))
                };
                let mut guard = conn.lock().await;
                if guard.is_none() {
                    *guard = Some(
                        client
                            .get_multiplexed_async_connection()
                            .await
                            .map_err(describe)?,
                    );
                }
                let c = guard.as_mut().expect("set above");
                match redis::cmd("PING").query_async::<String>(c).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        // Reconnect on the next probe rather than reuse a broken connection.
                        *guard = None;
                        Err(describe(e))
                    }
                }
            })
        }));
    }
    let _ = store_ca;
    anyhow::bail!("unsupported --store URL for the readiness check (expected memory, postgres://, redis://, rediss:// or redis+cluster://)")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = up.clone();
        let check: ReadyCheck = Arc::new(move || {
            let up = flag.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("store down".to_owned())
                }
            })
        });
        let addr = spawn("127.0.0.1:0".parse().unwrap(), check).await.unwrap();
        metrics::counter!("hookgate_admin_test_total", "k" => "v").increment(3);
        metrics::histogram!("hookgate_admin_test_seconds").record(0.2);

        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("hookgate_admin_test_total{k=\"v\"} 3"),
            "{body}"
        );
        assert!(
            body.contains("hookgate_admin_test_seconds_bucket{le=\"0.25\"} 1"),
            "{body}"
        );
        assert_eq!(get(addr, "/health").await, (200, "ok\n".into()));
        assert_eq!(get(addr, "/ready").await, (200, "ready\n".into()));
        up.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            get(addr, "/ready").await,
            (503, "not ready: store down\n".into())
        );
        assert_eq!(get(addr, "/nope").await.0, 404);
    }

    #[tokio::test]
    async fn readiness_follows_a_real_store() {
        let check = ready_check_for_store("redis://127.0.0.1:1", None).unwrap();
        let reason = check().await.unwrap_err();
        assert!(reason.starts_with("Redis: "), "{reason}");
        let check = ready_check_for_store("postgres://postgres@127.0.0.1:1/test", None).unwrap();
        let reason = check().await.unwrap_err();
        assert!(reason.starts_with("PostgreSQL: "), "{reason}");
        assert!(ready_check_for_store("memory", None).unwrap()()
            .await
            .is_ok());
        assert!(ready_check_for_store("ftp://x", None).is_err());
        // The machine's own servers answer (skipped where they are absent, unless CI=true).
        let redis_url =
            std::env::var("HOOKGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        match ready_check_for_store(&redis_url, None).unwrap()().await {
            Ok(()) => {}
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping the live Redis probe: {e}")
            }
            Err(e) => panic!("{e}"),
        }
    }
}
