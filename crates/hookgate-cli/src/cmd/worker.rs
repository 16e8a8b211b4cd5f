//! `hookgate worker`: the long-running dispatcher over a Postgres or Redis
//! queue. Several processes on one store share the work (leases), and one
//! of them at a time (a leader lock in the store) runs the maintenance
//! tasks: the rescuer (expired leases through the retry policy) and the
//! pruner (delivered keys past retention).
//!
//! One line per attempt on stderr: endpoint, message id, attempt, status or
//! error, latency, and what follows. SIGTERM or SIGINT stop leasing, let
//! attempts in flight finish within `--shutdown-grace`, and hand back what
//! is left (leases released, no attempt spent). Exit 0 after a clean stop;
//! 2 on misconfiguration (bad flags, unreachable store at start).

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use hookgate_sender::{
    maintenance::{Healer, Pruner, Rescuer, Runner},
    queue::Queue,
    Worker,
};

/// Arguments of `hookgate worker`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hookgate worker --store postgres://postgres@127.0.0.1/test --concurrency 32
  HOOKGATE_STORE=rediss://cache:6380 hookgate worker --namespace shop --store-ca ca.pem --admin-listen 127.0.0.1:9091")]
pub(crate) struct Args {
    /// The queue: `postgres://..` (`?sslmode=verify-full&sslrootcert=..` for
    /// TLS) or `redis://..` / `rediss://..`.
    #[arg(
        long,
        value_name = "URL",
        env = "HOOKGATE_STORE",
        hide_env_values = true
    )]
    store: String,
    /// Namespace in the store: the Postgres schema, or the Redis key prefix `<NS>:q:`.
    #[arg(long, value_name = "NS", env = "HOOKGATE_NAMESPACE")]
    namespace: Option<String>,
    /// CA certificates (PEM) a `rediss://` store must chain to (default: the system's).
    #[arg(long, value_name = "FILE", env = "HOOKGATE_STORE_CA")]
    store_ca: Option<std::path::PathBuf>,
    /// Deliveries attempted at once by this process.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,
    /// Attempts in all, the first included.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_attempts: u32,
    /// Upper bound of the first retry's wait (full jitter; doubles per retry).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = super::parse_duration)]
    base_delay: Duration,
    /// Cap on one wait.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = super::parse_duration)]
    max_delay: Duration,
    /// How long attempts in flight may finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    shutdown_grace: Duration,
    /// Allow loopback and private addresses (the SSRF guard refuses them by default).
    #[arg(long)]
    allow_private: bool,
    /// Deliver to plain `http://` URLs of every endpoint (refused by
    /// default unless the endpoint was added with `--allow-http`).
    #[arg(long)]
    allow_http: bool,
    /// Allow this network (CIDR) whatever its range; repeatable.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
    /// Serve `/metrics`, `/health` and `/ready` (queue reachable) here. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = super::parse_listen)]
    admin_listen: Option<SocketAddr>,
    /// Do not run the maintenance tasks (rescuer, pruner) in this process.
    #[arg(long)]
    no_maintenance: bool,
    /// How long the pruner keeps endpoint audit trail entries (`hookgate
    /// endpoint history`).
    #[arg(long, value_name = "DURATION", default_value = "365days", value_parser = super::parse_duration)]
    audit_retention: Duration,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(super::colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // tokio-postgres logs statement parameters (endpoint secrets) at debug.
                tracing_subscriber::EnvFilter::new("warn,tokio_postgres=off")
            }),
        )
        .try_init()
        .ok();
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(work(args))
}

async fn work(args: Args) -> anyhow::Result<ExitCode> {
    let (queue, lock) = super::queue::open(
        &args.store,
        args.namespace.as_deref(),
        args.store_ca.as_deref(),
    )
    .await?;
    let policy = super::send::retry_policy(args.max_attempts, args.base_delay, args.max_delay)?;
    if let Some(admin) = args.admin_listen {
        let probe = queue.clone();
        let ready: crate::admin::ReadyCheck = Arc::new(move || {
            let probe = probe.clone();
            Box::pin(async move {
                probe
                    .stats()
                    .await
                    .map(drop)
                    .map_err(|e| hookgate_sender::redact::text(&format!("{e:#}")))
            })
        });
        let bound = crate::admin::spawn(admin, ready).await?;
        eprintln!("hookgate worker: admin on http://{bound} (/metrics, /health, /ready)");
    }
    let worker = Worker::builder(queue.clone())
        .with_concurrency(args.concurrency)
        .with_retry_policy(policy.clone())
        .with_ssrf_policy(super::send::ssrf_policy(
            args.allow_private,
            args.allow_http,
            &args.allow,
        )?)
        .with_on_attempt(|r| {
            eprintln!(
                "{} {} {}",
                r.key.endpoint,
                r.key.message_id,
                super::send::describe(r)
            );
        })
        .build()
        .context("invalid worker settings")?
        .spawn();
    let maintenance = (!args.no_maintenance).then(|| {
        Runner::new(lock)
            .with_task(Arc::new(Rescuer::new(queue.clone(), policy)))
            .with_task(Arc::new(Healer::new(queue.clone())))
            .with_task(Arc::new(
                Pruner::new(queue.clone()).with_audit_retention(args.audit_retention),
            ))
            .with_interval(Duration::from_secs(30))
            .spawn()
    });
    eprintln!(
        "hookgate worker: running ({} at once, store {}{})",
        args.concurrency,
        hookgate_sender::redact::dsn(&args.store),
        args.namespace
            .as_deref()
            .map(|ns| format!(", namespace {ns}"))
            .unwrap_or_default()
    );
    super::send::interrupt_signal().await;
    eprintln!(
        "hookgate worker: stopping (grace {})",
        humantime::format_duration(args.shutdown_grace)
    );
    if let Some(runner) = maintenance {
        runner.stop().await;
    }
    let report = worker.shutdown(args.shutdown_grace).await;
    eprintln!("hookgate worker: stopped ({report:?})");
    Ok(ExitCode::SUCCESS)
}
