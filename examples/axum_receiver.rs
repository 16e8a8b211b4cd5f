//! A webhook receiver on axum: verified, deduplicated, printed.
//!
//! ```text
//! cargo run --example axum_receiver
//! ```
//!
//! Settings come from the environment:
//! - `HOOKGATE_LISTEN`: address to listen on (default `127.0.0.1:3000`; loopback only by default);
//! - `HOOKGATE_SECRET`: the Standard Webhooks secret (`whsec_...`, required:
//!   no built-in secret to forget in production);
//! - `HOOKGATE_STORE`: `memory` (default), `redis://..`, `rediss://..` or
//!   `postgres://..`; anything else is an error, never a silent memory store;
//! - `HOOKGATE_QUIET=1`: do not print each event (for load runs);
//! - `HOOKGATE_BARE=1`: serve the same handler without the layer (the load
//!   run's baseline; never do this in production);
//! - `HOOKGATE_RETENTION_SECS`: how long done events are kept (default 72 h);
//!   `HOOKGATE_SWEEP_SECS`: the Postgres sweep interval (default 60); both
//!   for the soak benchmark (`scripts/soak.sh`), which shortens them so that
//!   a short run shows the store staying bounded;
//! - `HOOKGATE_PG_POOL`: Postgres pool size (default
//!   `PostgresStore::DEFAULT_POOL_SIZE`); `HOOKGATE_PG_SYNC_COMMIT=off`: run the
//!   store's sessions with `synchronous_commit = off`;
//!   `HOOKGATE_PG_DURABLE_CLAIMS=1`: flush claims too (see `PostgresStore`'s
//!   "Durability").
//!
//! Send it an event with `hookgate sign` + curl, or with the load script
//! `scripts/load-receiver.sh`.

use std::{sync::Arc, time::Duration};

use axum::{routing::post, Router};
use bytes::Bytes;
use hookgate::{
    tower::{extract::Webhook, store::DedupStore, MemoryStore, VerifyWebhookLayer},
    Scheme, Verifier,
};

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v == "true")
}

fn env_secs(name: &str) -> anyhow::Result<Option<Duration>> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| anyhow::anyhow!("{name} must be a whole number of seconds"))
        })
        .transpose()
}

async fn open_store(url: &str) -> anyhow::Result<Arc<dyn DedupStore>> {
    Ok(if url == "memory" {
        Arc::new(MemoryStore::default())
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Arc::new(hookgate::tower::store::RedisStore::connect(url).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut store = hookgate::tower::store::PostgresStore::connect(url).await?;
        if let Ok(size) = std::env::var("HOOKGATE_PG_POOL") {
            store = store.with_pool_size(size.parse()?);
        }
        if env_flag("HOOKGATE_PG_DURABLE_CLAIMS") {
            store = store.with_durable_claims();
        }
        if std::env::var("HOOKGATE_PG_SYNC_COMMIT").is_ok_and(|v| v == "off") {
            store = store.with_synchronous_commit_off();
        }
        store.spawn_sweeper(env_secs("HOOKGATE_SWEEP_SECS")?.unwrap_or(Duration::from_secs(60)));
        Arc::new(store)
    } else {
        anyhow::bail!("HOOKGATE_STORE must be memory, redis://.., rediss://.. or postgres://..")
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let listen = std::env::var("HOOKGATE_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let secret = std::env::var("HOOKGATE_SECRET").map_err(|_| {
        anyhow::anyhow!("set HOOKGATE_SECRET to the Standard Webhooks secret (whsec_...)")
    })?;
    let store_url = std::env::var("HOOKGATE_STORE").unwrap_or_else(|_| "memory".into());
    let quiet = env_flag("HOOKGATE_QUIET");

    let app = if env_flag("HOOKGATE_BARE") {
        eprintln!("axum_receiver: BARE mode, no verification (baseline for load runs)");
        Router::new().route(
            "/webhooks",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
    } else {
        let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [secret])?;
        let mut layer = VerifyWebhookLayer::new(verifier).with_store(open_store(&store_url).await?);
        if let Some(retention) = env_secs("HOOKGATE_RETENTION_SECS")? {
            layer = layer.with_retention(retention);
        }
        Router::new()
            .route(
                "/webhooks",
                post(move |webhook: Webhook| async move {
                    if !quiet {
                        println!(
                            "received {} event {:?} at {:?}: {}",
                            webhook.verified.scheme,
                            webhook.verified.id,
                            webhook.verified.timestamp,
                            String::from_utf8_lossy(&webhook.body)
                        );
                    }
                    "ok"
                }),
            )
            .route_layer(layer)
    };

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!(
        "axum_receiver: listening on http://{}/webhooks (store {})",
        listener.local_addr()?,
        if store_url.contains('@') {
            "(url hidden)"
        } else {
            store_url.as_str()
        }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
