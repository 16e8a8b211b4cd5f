//! `hookgate serve`: a verifying, deduplicating receiver that prints each
//! accepted event as one JSON line on stdout.
//!
//! Every POST, on any path, goes through
//! [`VerifyWebhookLayer`]; the handler
//! prints `{"id":..,"scheme":..,"timestamp":..,"body":..}` (the body as a
//! JSON value, or as a string when it is not JSON) and answers 200.
//! Duplicates never reach it, so each event is printed once — across several
//! `serve` processes too, when they share a Redis or Postgres store.
//! With `--allow-from CIDR` (repeatable) only those client addresses are
//! accepted (403 before the body is read); `--trusted-proxy CIDR` makes the
//! `X-Forwarded-For` of those peers believed (rightmost untrusted hop).
//! `--max-body` is the only body limit (no framework default under it).
//! Rejections are logged on stderr (`RUST_LOG` filters, default `info`).
//! The listening address is printed on stderr at start; SIGINT or SIGTERM
//! stop accepting and let requests in flight finish.

use std::{io::Write as _, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{http::StatusCode, routing::post, Router};
use hookgate_core::Verifier;
use hookgate_tower::{extract::Webhook, source::Cidr, DedupStore, MemoryStore, VerifyWebhookLayer};

/// Arguments of `hookgate serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address
    /// actually bound is printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    key: super::SchemeArgs,
    /// Dedup store: `memory`, `redis://host:port/db` or
    /// `postgres://user@host:port/db`.
    #[arg(long, value_name = "URL", default_value = "memory")]
    store: String,
    /// Key prefix in the store (namespaces providers and tenants).
    #[arg(long, value_name = "PREFIX", default_value = "hookgate")]
    prefix: String,
    /// Timestamp tolerance in seconds, either way.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    tolerance: u64,
    /// Largest body accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_body: usize,
    /// Claim lease in seconds (longer than the slowest handling).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    lease: u64,
    /// How long a handled event is remembered, in seconds (longer than
    /// senders retry).
    #[arg(long, value_name = "SECS", default_value_t = 72 * 3600)]
    retention: u64,
    /// When the store is unreachable, accept events without deduplication
    /// instead of answering 503.
    #[arg(long)]
    fail_open: bool,
    /// Accept requests only from this address or CIDR range (repeatable);
    /// others get 403 before their body is read. Default: any address.
    #[arg(long = "allow-from", value_name = "CIDR")]
    allow_from: Vec<Cidr>,
    /// Believe `X-Forwarded-For` from peers in this range (repeatable): your
    /// load balancer or reverse proxy. Default: none (the header is ignored).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxy: Vec<Cidr>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init()
        .ok();
    let verifier = Verifier::from_secret_strings(args.key.scheme, &args.key.secrets)
        .context("invalid --secret")?
        .with_tolerance(Duration::from_secs(args.tolerance));
    if args.max_body == 0 {
        anyhow::bail!("--max-body must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, verifier))
}

async fn open_store(url: &str) -> anyhow::Result<Arc<dyn DedupStore>> {
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::default()));
    }
    #[cfg(feature = "redis")]
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let store = hookgate_tower::store::RedisStore::connect(url)
            .await
            .context("cannot connect to the Redis store")?;
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = hookgate_tower::store::PostgresStore::connect(url)
            .await
            .context("cannot connect to the Postgres store")?;
        store.spawn_sweeper(Duration::from_secs(60));
        return Ok(Arc::new(store));
    }
    anyhow::bail!("unsupported --store `{url}` (expected memory, redis://.. or postgres://..)")
}

async fn serve(args: Args, verifier: Verifier) -> anyhow::Result<ExitCode> {
    let store = open_store(&args.store).await?;
    let layer = VerifyWebhookLayer::new(verifier)
        .with_store(store)
        .with_prefix(args.prefix)
        .with_body_limit(args.max_body)
        .with_lease(Duration::from_secs(args.lease.max(1)))
        .with_retention(Duration::from_secs(args.retention.max(1)))
        .with_fail_open(args.fail_open)
        .with_trusted_proxies(args.trusted_proxy.iter().copied());
    let layer = if args.allow_from.is_empty() {
        layer
    } else {
        layer.with_allowed_sources(args.allow_from.iter().copied())
    };
    let accept = post(print_event).route_layer(layer);
    let app = Router::new()
        .route("/", accept.clone())
        .route("/{*path}", accept);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    eprintln!(
        "hookgate serve: listening on http://{addr} (scheme {}, store {})",
        args.key.scheme,
        store_label(&args.store)
    );
    // The peer address (ConnectInfo) is what --allow-from checks.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("server failed")?;
    eprintln!("hookgate serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The store URL without credentials, for the start-up line.
fn store_label(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn print_event(webhook: Webhook) -> StatusCode {
    let body = serde_json::from_slice::<serde_json::Value>(&webhook.body).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&webhook.body).into_owned())
    });
    let line = serde_json::json!({
        "id": webhook.verified.id,
        "scheme": webhook.verified.scheme.name(),
        "timestamp": webhook.verified.timestamp,
        "body": body,
    });
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{line}").and_then(|()| out.flush());
    match written {
        Ok(()) => StatusCode::OK,
        Err(e) => {
            // Not printed means not handled: a 500 releases the claim so the
            // sender retries.
            tracing::error!(error = %e, "cannot write the event to stdout");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("hookgate serve: shutting down");
}

#[cfg(test)]
mod tests {
    use super::store_label;

    #[test]
    fn store_label_hides_credentials() {
        assert_eq!(store_label("memory"), "memory");
        assert_eq!(
            store_label("postgres://user:pw@db:5432/x"),
            "postgres://***@db:5432/x"
        );
        assert_eq!(
            store_label("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
