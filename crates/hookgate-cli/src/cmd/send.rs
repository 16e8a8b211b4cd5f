//! `hookgate send`: deliver one signed message with retries, in-process.
//!
//! The message goes through the library's own path: it is enqueued in the
//! `--store` (or an in-memory queue), and each attempt is one
//! [`Worker::deliver_once`] — lease, attempt, the pure decision, one fenced
//! settle — so what you see is what a deployed sender does, on a compressed
//! schedule, and the store holds the message's one history. Each attempt is
//! printed on stdout (number, status or error, latency, what follows).
//!
//! - An endpoint id already stored with another configuration is refused
//!   (the stored endpoint is left alone); a disabled one is refused too.
//! - Ctrl-C / SIGTERM dead-letters the message with the reason
//!   `interrupted` and says so.
//! - A wait longer than `--max-delay` (a receiver's `Retry-After`) ends the
//!   one-shot send as a dead letter instead of a silent wait.
//!
//! Exit 0 when delivered, 1 when dead-lettered or interrupted (the dead
//! letter is in `--store` when one is given, for `hookgate dlq`), 2 for
//! usage errors.

use std::{io::Read as _, net::IpAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use hookgate_sender::{
    queue::{DeadReason, DeliveryKey, Enqueued, MemoryQueue, Queue, Transition},
    retry::RetryPolicy,
    ssrf::SsrfPolicy,
    worker::{AttemptReport, Next},
    Endpoint, Message, SendError, Sender, Worker,
};

/// Arguments of `hookgate send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hookgate send https://example.com/hooks --scheme standard --secret whsec_... --data '{\"order\":1}'
  hookgate send http://127.0.0.1:8080/hooks --allow-private --scheme stripe --secret whsec_... --data @event.json --store postgres://postgres@127.0.0.1/test")]
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
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = super::parse_duration)]
    base_delay: Duration,
    /// Cap on one wait.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    max_delay: Duration,
    /// Total timeout per attempt.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    timeout: Duration,
    /// Connect timeout per attempt.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = super::parse_duration)]
    connect_timeout: Duration,
    /// Endpoint id the message is recorded under (default: the URL's
    /// `scheme://host[:port]/path`, without credentials or query).
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,
    /// Write the dead letter here when delivery fails: `postgres://..` or `redis://..`.
    #[arg(
        long,
        value_name = "URL",
        env = "HOOKGATE_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// Namespace in the store: the Postgres schema, or the Redis key prefix `<NS>:q:`.
    #[arg(long, value_name = "NS", env = "HOOKGATE_NAMESPACE")]
    namespace: Option<String>,
    /// Allow loopback and private addresses (the SSRF guard refuses them by default).
    #[arg(long)]
    allow_private: bool,
    /// Allow a plain `http://` URL (refused by default: payload, signature
    /// and headers would cross the network in clear).
    #[arg(long)]
    allow_http: bool,
    /// Allow this network (CIDR, e.g. `10.1.0.0/16`) whatever its range; repeatable.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
    /// Backup URL, tried in order after URL fails; repeatable. One failed
    /// attempt opens a URL's circuit breaker for the rest of this send, so
    /// the next retry goes to the next URL.
    #[arg(long = "failover", value_name = "URL")]
    failover: Vec<String>,
}

/// SSRF policy from `--allow-private` / `--allow-http` / `--allow`.
pub(crate) fn ssrf_policy(
    allow_private: bool,
    allow_http: bool,
    allow: &[String],
) -> anyhow::Result<SsrfPolicy> {
    let mut policy = SsrfPolicy::default();
    if allow_private {
        policy = policy.allow_private();
    }
    if allow_http {
        policy = policy.allow_plain_http();
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

/// Open a store given with `--store` (the per-process memory store refused).
pub(crate) async fn open_store(
    url: &str,
    namespace: Option<&str>,
) -> anyhow::Result<Arc<dyn Queue>> {
    Ok(super::queue::open(url, namespace, None).await?.0)
}

pub(crate) fn read_data(data: &str) -> anyhow::Result<Vec<u8>> {
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
        Next::Deferred { delay } => format!(
            "deferred for {}",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
            ))
        ),
        Next::Interrupted => "handed back".to_owned(),
        Next::Held => "held".to_owned(),
        _ => "unknown".to_owned(),
    };
    format!("attempt {}: {what}; {next}", r.number)
}

/// Hint for a delivery the SSRF guard refused.
pub(crate) fn ssrf_hint(reason: &DeadReason) -> Option<&'static str> {
    match reason {
        DeadReason::Refused { detail } | DeadReason::Permanent { detail }
            if detail.contains("plain http://") =>
        {
            Some("plain http:// is refused by default; use https://, or pass --allow-http (or add the endpoint with --allow-http)")
        }
        DeadReason::Refused { .. } => Some(
            "the SSRF guard refuses loopback and private addresses; pass --allow-private (or --allow CIDR) to send there",
        ),
        _ => None,
    }
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
    let ssrf = ssrf_policy(args.allow_private, args.allow_http, &args.allow)?;
    let body = read_data(&args.data)?;
    // Never the URL itself: its userinfo and query must stay in the endpoint record.
    let endpoint_id = match &args.endpoint {
        Some(id) => id.clone(),
        None => Endpoint::id_from_url(&args.url).context("invalid endpoint")?,
    };
    let mut secrets = args.key.secrets.iter().rev();
    let first = secrets.next().context("--secret is required")?;
    let mut endpoint = Endpoint::new(
        endpoint_id.clone(),
        &args.url,
        args.key.stored_scheme()?,
        first,
    )
    .context("invalid endpoint")?
    .with_timeout(args.timeout)
    .context("invalid --timeout")?
    .with_connect_timeout(args.connect_timeout)
    .context("invalid --connect-timeout")?;
    // HTTPS by default: refused here, before anything is stored or sent.
    endpoint = endpoint.allowing_http(args.allow_http);
    if let Err(e) = endpoint.check_https() {
        return Err(anyhow::Error::new(e));
    }
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
    if !args.failover.is_empty() {
        for url in &args.failover {
            endpoint = endpoint.with_url(url).context("invalid --failover")?;
        }
        let hour = Duration::from_secs(3600);
        endpoint = endpoint.with_breaker(
            hookgate_sender::breaker::BreakerConfig::default()
                .with_failures(1)
                .with_cooldown(hour, hour),
        );
    }
    let queue: Arc<dyn Queue> = match &args.store {
        Some(url) => open_store(url, args.namespace.as_deref()).await?,
        None => Arc::new(MemoryQueue::new()),
    };
    let stored = match &args.store {
        Some(url) => format!(" in {}", hookgate_sender::redact::dsn(url)),
        None => String::new(),
    };
    let sender = Sender::new(queue.clone());
    match sender.add_endpoint(endpoint).await {
        Ok(_) => {}
        Err(SendError::EndpointConflict(id)) => anyhow::bail!(
            "endpoint {id:?} exists{stored} with another configuration; it was left unchanged \
             (pick another --endpoint)"
        ),
        Err(e) => return Err(e).context("cannot register the endpoint"),
    }
    if let Some(ep) = queue.get_endpoint(&endpoint_id).await? {
        if ep.disabled {
            anyhow::bail!("endpoint {endpoint_id:?} is disabled{stored}; nothing was sent");
        }
    }

    let mut message = Message::new(args.event_type.clone(), body);
    if let Some(id) = &args.id {
        message = message.try_with_id(id.clone()).context("invalid --id")?;
    }
    let key = DeliveryKey {
        endpoint: endpoint_id.clone(),
        message_id: message.id.clone(),
    };
    if let Enqueued::Exists(state) = queue.enqueue(&endpoint_id, &message).await? {
        anyhow::bail!(
            "message {} already exists{stored} for endpoint {endpoint_id:?} ({state}); \
             use another --id, or `hookgate dlq replay` for a dead letter",
            message.id
        );
    }
    println!(
        "sending {} ({}) to {} with scheme {}",
        message.id,
        message.event_type,
        hookgate_sender::redact::url(&args.url),
        args.key.stored_scheme()?
    );

    let worker = Worker::builder(queue.clone())
        .with_concurrency(1)
        .with_retry_policy(policy)
        .with_ssrf_policy(ssrf)
        .with_max_request_timeout(args.timeout)
        .with_lease(one_shot_lease(args.timeout))
        .build()
        .context("invalid settings")?;
    let outcome = deliver_until_final(
        &queue,
        &worker,
        &key,
        args.max_delay,
        interrupt_signal(),
        |r| println!("{}", describe(r)),
    )
    .await?;
    match outcome {
        Final::Delivered => Ok(ExitCode::SUCCESS),
        Final::Dead(reason) => {
            eprintln!("hookgate send: not delivered: {reason}");
            if let Some(hint) = ssrf_hint(&reason) {
                eprintln!("hint: {hint}");
            }
            if args.store.is_some() {
                eprintln!(
                    "hookgate send: dead letter {} ({endpoint_id}){stored}",
                    message.id
                );
            }
            Ok(ExitCode::from(1))
        }
        Final::Interrupted => {
            eprintln!(
                "hookgate send: interrupted; message {} dead-lettered as \"interrupted\"{stored}",
                message.id
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The lease a one-shot delivery takes: the request timeout, two store
/// calls and a margin.
pub(crate) fn one_shot_lease(timeout: Duration) -> Duration {
    timeout.saturating_add(Duration::from_secs(15))
}

/// How a one-shot delivery ended.
#[derive(Debug)]
pub(crate) enum Final {
    /// Delivered.
    Delivered,
    /// Dead-lettered.
    Dead(DeadReason),
    /// Stopped by a signal; dead-lettered as interrupted.
    Interrupted,
}

/// Deliver `key` (already in `queue`, scheduled) with `worker` until it is
/// delivered or dead-lettered: lease it, attempt through
/// [`Worker::deliver_once`], wait out each retry's delay. A wait longer
/// than `max_wait` ends as a dead letter (a one-shot does not wait an hour
/// for a `Retry-After`); `stop` completing dead-letters it as interrupted.
pub(crate) async fn deliver_until_final(
    queue: &Arc<dyn Queue>,
    worker: &Worker,
    key: &DeliveryKey,
    max_wait: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut print: impl FnMut(&AttemptReport),
) -> anyhow::Result<Final> {
    tokio::pin!(stop);
    loop {
        let Some(leased) = queue.lease_one(key, worker.lease()).await? else {
            anyhow::bail!(
                "message {} ({}) is held by another process or already finished",
                key.message_id,
                key.endpoint
            );
        };
        let token = leased.token.clone();
        let report = tokio::select! {
            r = worker.deliver_once(leased) => r,
            () = &mut stop => {
                queue
                    .settle(key, &token, None, Transition::Dead(DeadReason::Interrupted))
                    .await?;
                return Ok(Final::Interrupted);
            }
        };
        print(&report);
        let delay = match report.next {
            Next::Delivered => return Ok(Final::Delivered),
            Next::DeadLettered { reason } => return Ok(Final::Dead(reason)),
            Next::RetryAt { delay, .. } | Next::Deferred { delay } => delay,
            Next::Interrupted | Next::Held => Duration::ZERO,
            _ => anyhow::bail!("unexpected outcome {:?}", report.next),
        };
        if !report.recorded {
            anyhow::bail!("the store did not record the outcome; the message is left queued");
        }
        if delay > max_wait {
            let reason = DeadReason::Other {
                detail: format!(
                    "the receiver asked to wait {} (Retry-After), more than --max-delay {}",
                    humantime::format_duration(Duration::from_secs(delay.as_secs())),
                    humantime::format_duration(max_wait)
                ),
            };
            dead_letter_now(queue, key, reason.clone()).await?;
            return Ok(Final::Dead(reason));
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut stop => {
                dead_letter_now(queue, key, DeadReason::Interrupted).await?;
                return Ok(Final::Interrupted);
            }
        }
    }
}

/// Take the waiting delivery `key` and dead-letter it with `reason`.
async fn dead_letter_now(
    queue: &Arc<dyn Queue>,
    key: &DeliveryKey,
    reason: DeadReason,
) -> anyhow::Result<()> {
    let leased = queue
        .lease_one(key, Duration::from_secs(60))
        .await?
        .context("the message is held by another process")?;
    queue
        .settle(key, &leased.token, None, Transition::Dead(reason))
        .await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn interrupt_signal() {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_store_passwords() {
        let redact = hookgate_sender::redact::dsn;
        assert_eq!(
            redact("postgres://u:pw@host:5432/db"),
            "postgres://u:***@host:5432/db"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn parses_allow_list() {
        let p = ssrf_policy(false, false, &["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        assert!(p.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(p.check("192.168.0.1".parse().unwrap()).is_err());
        assert!(ssrf_policy(false, false, &["nope".into()]).is_err());
    }
}
