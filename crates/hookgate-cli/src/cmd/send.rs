//! `hookgate send`: deliver one signed message with retries, in-process.
//!
//! The message goes through the library's own path — an in-memory queue, a
//! [`Worker`] with the retry policy and the SSRF
//! guard — so what you see is what a deployed sender does, on a compressed
//! schedule. Each attempt is printed on stdout (number, status or error,
//! latency, what follows). Exit 0 when delivered, 1 when dead-lettered
//! (written to the `--store` DLQ when one is given, for `hookgate dlq`), 2
//! for usage errors.

use std::{io::Read as _, net::IpAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use hookgate_sender::{
    queue::{DeadLetter, DeadReason, DeliveryKey, MemoryQueue, Queue},
    retry::RetryPolicy,
    ssrf::SsrfPolicy,
    worker::{AttemptReport, Next},
    Endpoint, Message, Worker,
};
use tokio::sync::mpsc;

/// Arguments of `hookgate send`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Receiver URL (`http://` or `https://`).
    #[arg(value_name = "URL")]
    url: String,
    #[command(flatten)]
    key: super::SchemeArgs,
    /// Body: literal JSON, `@FILE`, or `-` for stdin. Sent byte for byte.
    #[arg(long, value_name = "JSON|@FILE|-")]
    data: String,
    /// Message id (default: a fresh `msg_...`). The same id on every attempt.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Event type recorded with the message.
    #[arg(long, value_name = "TYPE", default_value = "hookgate.test")]
    event_type: String,
    /// Extra header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Attempts in all, the first included.
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_attempts: u32,
    /// Upper bound of the first retry's wait (full jitter; doubles per retry).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    base_delay: Duration,
    /// Cap on one wait.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    max_delay: Duration,
    /// Total timeout per attempt.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Connect timeout per attempt.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Endpoint id the message is recorded under (default: the URL).
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,
    /// Write the dead letter here when delivery fails: `postgres://..` or `redis://..`.
    #[arg(long, value_name = "URL", env = "HOOKGATE_STORE")]
    store: Option<String>,
    /// Namespace in the store: the Postgres schema, or the Redis key prefix `<NS>:q:`.
    #[arg(long, value_name = "NS", env = "HOOKGATE_NAMESPACE")]
    namespace: Option<String>,
    /// Allow loopback and private addresses (the SSRF guard refuses them by default).
    #[arg(long)]
    allow_private: bool,
    /// Allow this network (CIDR, e.g. `10.1.0.0/16`) whatever its range; repeatable.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
}

/// SSRF policy from `--allow-private` / `--allow`.
pub(crate) fn ssrf_policy(allow_private: bool, allow: &[String]) -> anyhow::Result<SsrfPolicy> {
    let mut policy = SsrfPolicy::default();
    if allow_private {
        policy = policy.allow_private();
    }
    for cidr in allow {
        let net = match cidr.parse() {
            Ok(net) => net,
            // A bare address is a /32 or /128.
            Err(_) => cidr
                .parse::<IpAddr>()
                .map(Into::into)
                .with_context(|| format!("invalid --allow {cidr:?} (expected a CIDR)"))?,
        };
        policy = policy.allow(net);
    }
    Ok(policy)
}

/// Retry policy from the shared flags (multiplier 2, no maximum age).
pub(crate) fn retry_policy(
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
) -> anyhow::Result<RetryPolicy> {
    let policy = RetryPolicy::default()
        .with_max_attempts(max_attempts)
        .with_base_delay(base_delay)
        .with_multiplier(2)
        .with_max_delay(max_delay)
        .with_max_age(None);
    policy.validate().context("invalid retry settings")?;
    Ok(policy)
}

/// A store URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Open a store given with `--store`, refusing the per-process memory store.
pub(crate) async fn open_store(
    url: &str,
    namespace: Option<&str>,
) -> anyhow::Result<Arc<dyn Queue>> {
    if url == "memory" || url.starts_with("memory:") {
        anyhow::bail!(
            "--store memory lives only inside one process; use postgres://.. or redis://.."
        );
    }
    hookgate_sender::queue::open_namespaced(url, namespace)
        .await
        .with_context(|| format!("cannot open store {}", redact(url)))
}

fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
    if data == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the body from stdin")?;
        Ok(buf)
    } else if let Some(path) = data.strip_prefix('@') {
        std::fs::read(path).with_context(|| format!("cannot read --data file {path}"))
    } else {
        Ok(data.as_bytes().to_vec())
    }
}

/// One line describing an attempt, as `send` and `dlq replay` print it.
pub(crate) fn describe(r: &AttemptReport) -> String {
    let what = match &r.attempt {
        Some(a) => {
            let outcome = match (a.status, &a.error) {
                (Some(s), _) => format!(
                    "HTTP {s} {}",
                    http::StatusCode::from_u16(s)
                        .ok()
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("")
                )
                .trim_end()
                .to_owned(),
                (None, Some(e)) => format!("error: {e}"),
                (None, None) => "no response".to_owned(),
            };
            format!("{outcome} in {} ms", a.latency_ms)
        }
        None => "not attempted".to_owned(),
    };
    let next = match &r.next {
        Next::Delivered => "delivered".to_owned(),
        Next::RetryAt { delay, .. } => format!(
            "retrying in {}",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
            ))
        ),
        Next::DeadLettered { reason } => format!("dead-lettered: {reason}"),
        _ => "unknown".to_owned(),
    };
    format!("attempt {}: {what}; {next}", r.number)
}

/// Hint for a delivery the SSRF guard refused.
pub(crate) fn ssrf_hint(reason: &DeadReason) -> Option<&'static str> {
    matches!(reason, DeadReason::Refused { .. }).then_some(
        "the SSRF guard refuses loopback and private addresses; pass --allow-private (or --allow CIDR) to send there",
    )
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(send(args))
}

async fn send(args: Args) -> anyhow::Result<ExitCode> {
    let policy = retry_policy(args.max_attempts, args.base_delay, args.max_delay)?;
    let ssrf = ssrf_policy(args.allow_private, &args.allow)?;
    let body = read_data(&args.data)?;
    let endpoint_id = args.endpoint.clone().unwrap_or_else(|| args.url.clone());
    let mut secrets = args.key.secrets.iter().rev();
    let first = secrets.next().context("--secret is required")?;
    let mut endpoint = Endpoint::new(endpoint_id.clone(), &args.url, args.key.scheme, first)
        .context("invalid endpoint")?
        .with_timeout(args.timeout)
        .context("invalid --timeout")?
        .with_connect_timeout(args.connect_timeout)
        .context("invalid --connect-timeout")?;
    // `with_secret` puts each in front: the first given ends up first.
    for s in secrets {
        endpoint = endpoint.with_secret(s).context("invalid --secret")?;
    }
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("invalid --header {h:?} (expected `Name: value`)"))?;
        endpoint = endpoint
            .with_header(name.trim(), value.trim())
            .with_context(|| format!("invalid --header {h:?}"))?;
    }
    let store = match &args.store {
        Some(url) => Some(open_store(url, args.namespace.as_deref()).await?),
        None => None,
    };

    let mut message = Message::new(args.event_type.clone(), body);
    if let Some(id) = &args.id {
        message = message.with_id(id.clone());
    }
    let local: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    local.put_endpoint(&endpoint).await?;
    local.enqueue(&endpoint_id, &message).await?;
    let key = DeliveryKey {
        endpoint: endpoint_id.clone(),
        message_id: message.id.clone(),
    };
    println!(
        "sending {} ({}) to {} with scheme {}",
        message.id,
        message.event_type,
        redact(&args.url),
        args.key.scheme
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(local.clone())
        .with_concurrency(1)
        .with_retry_policy(policy)
        .with_ssrf_policy(ssrf)
        .with_max_request_timeout(args.timeout)
        .with_lease(args.timeout.saturating_add(Duration::from_secs(5)))
        .with_poll_interval(Duration::from_millis(20))
        .with_on_attempt(move |r| {
            let _ = tx.send(r.clone());
        })
        .build()
        .context("invalid settings")?
        .spawn();

    let outcome = loop {
        let Some(report) = rx.recv().await else {
            anyhow::bail!("the worker stopped unexpectedly");
        };
        println!("{}", describe(&report));
        match report.next {
            Next::RetryAt { .. } => {}
            other => break other,
        }
    };
    worker.shutdown(Duration::from_secs(5)).await;

    match outcome {
        Next::Delivered => Ok(ExitCode::SUCCESS),
        Next::DeadLettered { reason } => {
            eprintln!("hookgate send: not delivered: {reason}");
            if let Some(hint) = ssrf_hint(&reason) {
                eprintln!("hint: {hint}");
            }
            if let (Some(store), Some(url)) = (store, &args.store) {
                let dead = local.get_dead(&key).await?.unwrap_or_else(|| DeadLetter {
                    key: key.clone(),
                    message: message.clone(),
                    attempts: Vec::new(),
                    reason: reason.clone(),
                    dead_at_ms: hookgate_sender::now_ms(),
                });
                store.put_endpoint(&endpoint).await?;
                store.add_dead_letter(&dead).await?;
                eprintln!(
                    "hookgate send: dead letter {} written to {}",
                    message.id,
                    redact(url)
                );
            }
            Ok(ExitCode::from(1))
        }
        _ => anyhow::bail!("unexpected outcome"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_store_passwords() {
        assert_eq!(
            redact("postgres://u:pw@host:5432/db"),
            "postgres://u:***@host:5432/db"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn parses_allow_list() {
        let p = ssrf_policy(false, &["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        assert!(p.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(p.check("192.168.0.1".parse().unwrap()).is_err());
        assert!(ssrf_policy(false, &["nope".into()]).is_err());
    }
}
