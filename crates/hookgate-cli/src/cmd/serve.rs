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
use axum::{
    http::StatusCode,
    routing::{on, post, MethodFilter},
    Router,
};
use hookgate_core::Verifier;
use hookgate_tower::{extract::Webhook, source::Cidr, DedupStore, MemoryStore, VerifyWebhookLayer};

/// Arguments of `hookgate serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hookgate serve --listen 8080 --scheme standard --secret whsec_... 
  hookgate serve --scheme github --secret \"$GITHUB_SECRET\" --store redis://127.0.0.1:6379 --namespace shop
  hookgate serve --scheme stripe --secret whsec_... --store postgres://postgres@127.0.0.1/test \\
      --forward http://127.0.0.1:8000/hooks --admin-listen 127.0.0.1:9090")]
pub(crate) struct Args {
    /// Address to listen on: `HOST:PORT`, `localhost:PORT` or a bare `PORT`
    /// (127.0.0.1); `127.0.0.1:0` picks a free port (the address actually
    /// bound is printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = super::parse_listen)]
    listen: SocketAddr,
    #[command(flatten)]
    key: super::SchemeArgs,
    /// Dedup store: `memory`, `redis://host:port/db`, `rediss://..` (TLS),
    /// `redis+cluster://host:port,host:port` (Redis Cluster) or
    /// `postgres://user@host:port/db` (`?sslmode=verify-full&sslrootcert=ca.pem` for TLS).
    #[arg(
        long,
        value_name = "URL",
        default_value = "memory",
        env = "HOOKGATE_STORE",
        hide_env_values = true
    )]
    store: String,
    /// CA certificates (PEM) that a `rediss://` store's certificate must chain
    /// to, instead of the system's roots (Postgres: `sslrootcert=` in the URL).
    #[arg(long, value_name = "FILE", env = "HOOKGATE_STORE_CA")]
    store_ca: Option<std::path::PathBuf>,
    /// Namespace in the store (separates providers, endpoints and tenants
    /// sharing one store): the prefix of the dedup keys (default
    /// `hookgate`) and, on Postgres, the schema of the dedup table (default
    /// `public`), as for the queue commands.
    #[arg(
        long = "namespace",
        alias = "prefix",
        value_name = "NS",
        env = "HOOKGATE_NAMESPACE"
    )]
    namespace: Option<String>,
    /// Timestamp tolerance, either way (`300`, `5m`).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = super::parse_duration)]
    tolerance: Duration,
    /// Largest body accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_body: usize,
    /// Claim lease; renewed while the handler runs, so it only matters when
    /// a process dies mid-request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    lease: Duration,
    /// How long a handled event is remembered (longer than senders retry).
    #[arg(long, value_name = "DURATION", default_value = "72h", value_parser = super::parse_duration)]
    retention: Duration,
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
    /// Forward each verified, first-seen event to this application instead
    /// of printing it (path and query appended; `Hookgate-Event-Id`,
    /// `Hookgate-Scheme`, `Hookgate-Verified` added). Its status decides
    /// like a handler's: 5xx, 408, 409, 425, 429 release the claim so the
    /// sender's retry is forwarded again; unreachable: 502; too slow: 504.
    #[arg(long, value_name = "URL")]
    forward: Option<reqwest::Url>,
    /// With --forward: how long one forwarded request may take.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    upstream_timeout: Duration,
    /// With --forward: most requests to the upstream at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    upstream_max_connections: usize,
    /// With --forward: how long an idle upstream connection is kept.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = super::parse_duration)]
    upstream_keep_alive: Duration,
    /// Serve `/metrics` (Prometheus), `/health` and `/ready` (store
    /// reachable) on this separate address. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = super::parse_listen)]
    admin_listen: Option<SocketAddr>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(super::colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init()
        .ok();
    let verifier = Verifier::from_secret_strings(args.key.scheme()?, &args.key.secrets)
        .context("invalid --secret")?
        .with_tolerance(args.tolerance);
    if args.max_body == 0 {
        anyhow::bail!("--max-body must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, verifier))
}

/// A store and, for Postgres, the maintenance runner that sweeps it (stopped
/// when the server stops).
pub(crate) type Opened = (
    Arc<dyn DedupStore>,
    Option<hookgate_sender::maintenance::RunnerHandle>,
);

pub(crate) async fn open_store(
    url: &str,
    namespace: Option<&str>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Opened> {
    if url == "memory" {
        return Ok((Arc::new(MemoryStore::default()), None));
    }
    #[cfg(feature = "redis")]
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || hookgate_backend::redis::cluster_nodes(url).is_some()
    {
        let store = match ca {
            Some(ca) => hookgate_tower::store::RedisStore::connect_with_ca(url, ca).await,
            None => hookgate_tower::store::RedisStore::connect(url).await,
        }
        .context("cannot connect to the Redis store")?;
        return Ok((Arc::new(store), None));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if ca.is_some() {
            anyhow::bail!(
                "--store-ca is for rediss:// stores; for Postgres put sslrootcert=FILE in the URL"
            );
        }
        let mut store =
            hookgate_tower::store::PostgresStore::new(url).context("invalid Postgres store URL")?;
        if let Some(ns) = namespace {
            store = store
                .with_table(&format!(
                    "{ns}.{}",
                    hookgate_tower::store::PostgresStore::DEFAULT_TABLE
                ))
                .context("invalid --namespace (a schema name: letters, digits, _)")?;
        }
        store
            .migrate()
            .await
            .context("cannot connect to the Postgres store")?;
        // The dedup sweep runs as a maintenance task (bounded batches, every
        // minute with jitter, at once again while batches are full).
        let runner = hookgate_sender::maintenance::Runner::new(Arc::new(
            hookgate_sender::maintenance::NoLock,
        ))
        .with_task(Arc::new(crate::maintenance::DedupSweep(store.clone())))
        .with_interval(Duration::from_secs(60))
        .with_jitter(Duration::from_secs(10));
        return Ok((Arc::new(store), Some(runner.spawn())));
    }
    anyhow::bail!(
        "unsupported --store `{}` (expected memory, redis://.., rediss://.., redis+cluster://.. or postgres://..)",
        hookgate_sender::redact::dsn(url)
    )
}

async fn serve(args: Args, verifier: Verifier) -> anyhow::Result<ExitCode> {
    let (store, maintenance) = open_store(
        &args.store,
        args.namespace.as_deref(),
        args.store_ca.as_deref(),
    )
    .await?;
    if let Some(admin) = args.admin_listen {
        let ready = crate::admin::ready_check_for_store(&args.store, args.store_ca.clone())?;
        let bound = crate::admin::spawn(admin, ready).await?;
        eprintln!("hookgate serve: admin on http://{bound} (/metrics, /health, /ready)");
    }
    let verifier_scheme = verifier.scheme();
    let layer = VerifyWebhookLayer::new(verifier)
        .with_store(store)
        .with_prefix(
            args.namespace
                .clone()
                .unwrap_or_else(|| "hookgate".to_owned()),
        )
        .with_body_limit(args.max_body)
        .with_lease(args.lease.max(Duration::from_secs(1)))
        .with_retention(args.retention.max(Duration::from_secs(1)))
        .with_fail_open(args.fail_open)
        .with_trusted_proxies(args.trusted_proxy.iter().copied());
    let layer = if args.allow_from.is_empty() {
        layer
    } else {
        layer.with_allowed_sources(args.allow_from.iter().copied())
    };
    let app = match &args.forward {
        // POST, PUT and PATCH (the methods that carry a webhook's body) keep
        // their method upstream; others get 405 before any verification.
        Some(base) => {
            let forwarder = super::forward::Forwarder::new(&super::forward::ForwardConfig {
                base: base.clone(),
                timeout: args.upstream_timeout,
                max_connections: args.upstream_max_connections.max(1),
                keep_alive: args.upstream_keep_alive,
            })?;
            let methods = MethodFilter::POST
                .or(MethodFilter::PUT)
                .or(MethodFilter::PATCH);
            let accept = on(methods, super::forward::forward)
                .route_layer(layer)
                .with_state(forwarder);
            Router::new()
                .route("/", accept.clone())
                .route("/{*path}", accept)
        }
        None => {
            let accept = post(print_event).route_layer(layer);
            Router::new()
                .route("/", accept.clone())
                .route("/{*path}", accept)
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    eprintln!(
        "hookgate serve: listening on http://{addr} (scheme {}, store {}{})",
        verifier_scheme,
        hookgate_sender::redact::dsn(&args.store),
        args.forward
            .as_ref()
            .map(|u| format!(
                ", forwarding to {}",
                hookgate_sender::redact::url(u.as_str())
            ))
            .unwrap_or_default()
    );
    // The peer address (ConnectInfo) is what --allow-from checks.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        super::send::interrupt_signal().await;
        eprintln!("hookgate serve: shutting down");
    })
    .await
    .context("server failed")?;
    if let Some(runner) = maintenance {
        runner.stop().await;
    }
    eprintln!("hookgate serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The JSON line printed for an accepted event:
/// `{"id","scheme","timestamp","body"}` with `body` the parsed JSON value,
/// or a string for UTF-8 text that is not JSON; a body that is not UTF-8
/// is printed as `"body_base64"` instead, so no byte is lost.
fn event_line(
    id: Option<&str>,
    scheme: &str,
    timestamp: Option<i64>,
    body: &[u8],
) -> serde_json::Value {
    let mut line = serde_json::json!({ "id": id, "scheme": scheme, "timestamp": timestamp });
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        line["body"] = value;
    } else if let Ok(text) = std::str::from_utf8(body) {
        line["body"] = serde_json::Value::String(text.to_owned());
    } else {
        use base64::Engine as _;
        line["body_base64"] = base64::engine::general_purpose::STANDARD
            .encode(body)
            .into();
    }
    line
}

async fn print_event(webhook: Webhook) -> StatusCode {
    let v = &webhook.verified;
    let line = event_line(v.id.as_deref(), v.scheme.name(), v.timestamp, &webhook.body);
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

#[cfg(test)]
mod tests {
    use super::event_line;

    #[test]
    fn event_lines_keep_every_byte() {
        let line = |body: &[u8]| event_line(Some("evt_1"), "standard", Some(7), body);
        let json = line(b"{\"a\":1}");
        assert_eq!(
            (json["id"].as_str(), json["scheme"].as_str()),
            (Some("evt_1"), Some("standard"))
        );
        assert_eq!(
            (json["timestamp"].as_i64(), json["body"]["a"].as_i64()),
            (Some(7), Some(1))
        );
        assert_eq!(line(b"plain text")["body"], "plain text");
        let binary = line(&[0xff, 0x00, 0x80]);
        assert!(binary.get("body").is_none());
        assert_eq!(binary["body_base64"], "/wCA");
    }

    #[test]
    fn store_label_hides_credentials() {
        assert_eq!(hookgate_sender::redact::dsn("memory"), "memory");
        // The password goes, in every DSN form; the user name is no secret.
        assert_eq!(
            hookgate_sender::redact::dsn("postgres://user:pw@db:5432/x"),
            "postgres://user:***@db:5432/x"
        );
        assert!(!hookgate_sender::redact::dsn("postgres://u:p@ss@db/x").contains("ss@"));
        assert!(
            !hookgate_sender::redact::dsn("host=db user=u password=hunter2").contains("hunter2")
        );
        assert_eq!(
            hookgate_sender::redact::dsn("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
