//! `hookgate endpoint`: register and inspect the endpoints a worker delivers
//! to, in a Postgres or Redis queue.
//!
//! `add` of an existing id with a different configuration is refused unless
//! `--update`; neither changes `disabled` (only `enable` and `disable` do).
//! `show` and `list` mask secrets, header values and URL credentials, and
//! create nothing (a namespace that does not exist is an error). `remove`
//! deletes the record; queued messages stay and are dead-lettered
//! (replayable) when a worker next takes them.
//!
//! With `HOOKGATE_ENCRYPTION_KEY` (or `_FILE`) set, secrets, header values,
//! full URLs and client keys are stored encrypted; `rekey` re-encrypts
//! everything under the newest key. `http://` URLs need `--allow-http`.
//! Every change is appended to the endpoint's audit trail with the OS user
//! as actor; `history` shows it.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use hookgate_sender::{
    breaker::BreakerConfig, lifecycle::AutoDisable, redact, state::EndpointHealth, Endpoint,
    SendError, Sender,
};

/// Arguments of `hookgate endpoint`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
    /// The queue: `postgres://..` or `redis://..` / `rediss://..`.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "HOOKGATE_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// Namespace in the store: the Postgres schema, or the Redis key prefix `<NS>:q:`.
    #[arg(long, global = true, value_name = "NS", env = "HOOKGATE_NAMESPACE")]
    namespace: Option<String>,
    /// CA certificates (PEM) a `rediss://` store must chain to.
    #[arg(long, global = true, value_name = "FILE", env = "HOOKGATE_STORE_CA")]
    store_ca: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Register an endpoint (refused if the id holds another configuration, unless --update).
    #[command(after_help = "Examples:
  hookgate endpoint add shop --url https://shop.example.com/hooks --scheme standard --secret whsec_... --store postgres://postgres@127.0.0.1/test
  hookgate endpoint add shop --url https://a.example.com/h --url https://b.example.com/h --scheme stripe --secret whsec_new --secret whsec_old --update")]
    Add(Box<AddArgs>),
    /// List the endpoints (secrets and header values masked).
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint. Its queued messages stay and are dead-lettered
    /// (replayable) when a worker next takes them.
    Remove {
        /// Endpoint id.
        id: String,
    },
    /// Show an endpoint (secrets and header values masked).
    Show {
        /// Endpoint id.
        id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Enable an endpoint: its messages are delivered again.
    Enable {
        /// Endpoint id.
        id: String,
    },
    /// Disable an endpoint: its messages wait, nothing is sent.
    Disable {
        /// Endpoint id.
        id: String,
        /// Why (kept in the audit trail).
        #[arg(long, value_name = "TEXT", default_value = "disabled by an operator")]
        reason: String,
    },
    /// The endpoint's audit trail: who changed what, and when (never
    /// secret or header values). Kept after the endpoint is removed.
    History {
        /// Endpoint id.
        id: String,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// The last N entries.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Re-encrypt every endpoint under the newest key of
    /// HOOKGATE_ENCRYPTION_KEY (sealing those stored unencrypted), so that
    /// older keys can be dropped from the list afterwards.
    #[command(after_help = "Key rotation:
  HOOKGATE_ENCRYPTION_KEY=new:BASE64,old:BASE64 hookgate endpoint rekey --store ...
  # then drop old: from the list everywhere")]
    Rekey,
    /// Move the messages held for a disabled endpoint to the dead-letter
    /// queue (replayable with `hookgate dlq replay`).
    PurgeHeld {
        /// Endpoint id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// Endpoint id: a plain name (it appears in keys, metric labels and logs).
    id: String,
    /// URL; repeat for failover order.
    #[arg(long = "url", value_name = "URL", required = true)]
    urls: Vec<String>,
    #[command(flatten)]
    key: super::SchemeArgs,
    /// Extra header `Name: value` sent with every attempt; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Total timeout per attempt.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    timeout: Option<Duration>,
    /// Replace a stored endpoint of this id with this configuration.
    #[arg(long)]
    update: bool,
    /// SLO tier preset (retry schedule, max age, breaker, rate); the flags below override it.
    #[arg(long, value_name = "TIER", value_parser = parse_tier)]
    tier: Option<hookgate_sender::tier::Tier>,
    /// GET this URL on an interval while a breaker is open; success half-opens it early.
    #[arg(long, value_name = "URL")]
    health_url: Option<String>,
    /// Adaptive rate limit shared by every worker: `50/s`, `600/m`, `3600/h`.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    rate_limit: Option<hookgate_sender::limiter::RateLimit>,
    /// Most attempts to this endpoint running at once in one worker.
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
    /// Consecutive failures that open a URL's circuit breaker (default 5).
    #[arg(long, value_name = "N")]
    breaker_failures: Option<u32>,
    /// First cool-down of an open breaker before its half-open probe (default 30s; doubles while probes fail).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    breaker_cooldown: Option<Duration>,
    /// Disable the endpoint after failing continuously this long (default 5 days; `0s` never).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    disable_after: Option<Duration>,
    /// Allow plain `http://` URLs for this endpoint (refused by default:
    /// payload, signature and headers would cross the network in clear).
    #[arg(long)]
    allow_http: bool,
    /// Rotation: the first --secret becomes the current one and every other
    /// --secret keeps signing for this long (Standard Webhooks and Stripe
    /// send a signature by each; single-signature schemes keep the old one
    /// until it expires, then switch). Give the receiver the new secret first.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    secret_expires: Option<Duration>,
    /// Client certificate chain (PEM) presented to the receiver (mTLS);
    /// stored encrypted with the secrets. Needs --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
}

fn parse_tier(s: &str) -> Result<hookgate_sender::tier::Tier, String> {
    s.parse()
        .map_err(|e: hookgate_sender::tier::UnknownTier| e.to_string())
}

fn parse_rate(s: &str) -> Result<hookgate_sender::limiter::RateLimit, String> {
    hookgate_sender::limiter::RateLimit::parse(s)
        .ok_or_else(|| "expected a positive rate such as 50/s, 600/m or 3600/h".to_owned())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(store) = args.store.clone() else {
        anyhow::bail!("--store (or HOOKGATE_STORE) is required");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (ns, ca) = (args.namespace.as_deref(), args.store_ca.as_deref());
        // Looking (`show`) creates nothing; a namespace that does not exist is an error.
        let queue = if matches!(
            args.command,
            Command::Show { .. } | Command::List { .. } | Command::History { .. }
        ) {
            super::queue::open_read_only(&store, ns, ca).await?
        } else {
            super::queue::open(&store, ns, ca).await?.0
        };
        match args.command {
            Command::Add(add) => {
                let endpoint = build(&add)?;
                if super::queue::keyring()?.is_none() {
                    eprintln!(
                        "hookgate endpoint: warning: no encryption key (HOOKGATE_ENCRYPTION_KEY \
                         or HOOKGATE_ENCRYPTION_KEY_FILE): the endpoint's secrets and header \
                         values are stored UNENCRYPTED"
                    );
                }
                let id = endpoint.id.clone();
                let sender = Sender::new(queue).with_actor(actor());
                let result = if add.update {
                    sender.update_endpoint(endpoint).await
                } else {
                    sender.add_endpoint(endpoint).await
                };
                match result {
                    Ok(()) => {
                        println!("{id}");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(SendError::EndpointConflict(id)) => {
                        eprintln!(
                            "hookgate endpoint: {id} is stored with another configuration; \
                             nothing changed (use --update to replace it)"
                        );
                        Ok(ExitCode::from(1))
                    }
                    Err(e) => Err(anyhow::Error::new(e).context("cannot register the endpoint")),
                }
            }
            Command::List { json } => {
                let all = queue.list_endpoints().await?;
                if !json {
                    println!("{:<24} {:<9} {:<8} URL", "ID", "SCHEME", "ENABLED");
                }
                for e in &all {
                    if json {
                        println!("{}", endpoint_json(e));
                    } else {
                        let url = e.urls.first().map(|u| redact::url(u)).unwrap_or_default();
                        let more = if e.urls.len() > 1 {
                            format!(" (+{} failover)", e.urls.len() - 1)
                        } else {
                            String::new()
                        };
                        println!(
                            "{:<24} {:<9} {:<8} {url}{more}",
                            e.id,
                            e.scheme.name(),
                            if e.disabled { "no" } else { "yes" }
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Remove { id } => {
                if Sender::new(queue)
                    .with_actor(actor())
                    .remove_endpoint(&id)
                    .await?
                {
                    println!("{id} removed");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("hookgate endpoint: no endpoint {id}");
                    Ok(ExitCode::from(1))
                }
            }
            Command::Show { id, json } => match queue.get_endpoint(&id).await? {
                Some(endpoint) => {
                    let health = EndpointHealth::load(&*queue, &endpoint).await?;
                    if json {
                        let mut v = endpoint_json(&endpoint);
                        if let (Some(obj), serde_json::Value::Object(more)) =
                            (v.as_object_mut(), resilience_json(&endpoint, &health))
                        {
                            obj.extend(more);
                        }
                        println!("{v}");
                    } else {
                        print_endpoint(&endpoint, false);
                        print_resilience(&endpoint, &health);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("hookgate endpoint: no endpoint {id}");
                    Ok(ExitCode::from(1))
                }
            },
            Command::Enable { id } | Command::Disable { id, .. } | Command::PurgeHeld { id }
                if queue.get_endpoint(&id).await?.is_none() =>
            {
                eprintln!("hookgate endpoint: no endpoint {id}");
                Ok(ExitCode::from(1))
            }
            Command::Enable { id } => {
                // Also releases the messages held while it was disabled.
                let released = Sender::new(queue)
                    .with_actor(actor())
                    .enable_endpoint(&id)
                    .await?;
                println!("{id} enabled ({released} held messages released)");
                Ok(ExitCode::SUCCESS)
            }
            Command::Disable { id, reason } => {
                Sender::new(queue)
                    .with_actor(actor())
                    .set_endpoint_disabled(&id, true, &reason)
                    .await?;
                println!("{id} disabled");
                Ok(ExitCode::SUCCESS)
            }
            Command::History { id, json, limit } => {
                let entries = queue.endpoint_history(&id, limit).await?;
                if entries.is_empty() {
                    eprintln!("hookgate endpoint: no audit entries for {id}");
                    return Ok(ExitCode::from(1));
                }
                for e in &entries {
                    let at = humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH
                            + Duration::from_millis(u64::try_from(e.at_ms).unwrap_or(0)),
                    );
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "endpoint": e.endpoint,
                                "at": at.to_string(),
                                "at_ms": e.at_ms,
                                "actor": e.actor,
                                "change": e.change,
                            })
                        );
                    } else {
                        println!("{at}  {:<16} {}", e.actor, e.change);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Rekey => {
                let Some(keys) = super::queue::keyring()? else {
                    anyhow::bail!(
                        "rekey needs the keys: set HOOKGATE_ENCRYPTION_KEY (newest first) or \
                         HOOKGATE_ENCRYPTION_KEY_FILE"
                    );
                };
                let report = hookgate_sender::seal::rekey(&*queue)
                    .await
                    .context("cannot re-encrypt the endpoints (nothing was written)")?;
                let change = hookgate_sender::audit::Change::Rekeyed {
                    key_id: keys.primary_id().to_owned(),
                };
                for id in &report.endpoints {
                    hookgate_sender::audit::record(
                        &*queue,
                        id,
                        &actor(),
                        std::slice::from_ref(&change),
                    )
                    .await
                    .context("re-encrypted, but the audit entry was not stored")?;
                }
                println!(
                    "{} endpoint(s) re-encrypted under key {}",
                    report.rewritten,
                    keys.primary_id()
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::PurgeHeld { id } => {
                let n = Sender::new(queue)
                    .with_actor(actor())
                    .purge_held(&id)
                    .await?;
                println!("{id}: {n} held messages moved to the dead-letter queue");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn build(add: &AddArgs) -> anyhow::Result<Endpoint> {
    // Secrets are given newest first; `with_secret` puts each in front.
    let (oldest, newer) = add
        .key
        .secrets
        .split_last()
        .context("at least one --secret is required")?;
    let mut endpoint = Endpoint::new(
        add.id.clone(),
        add.urls[0].clone(),
        add.key.stored_scheme()?,
        oldest.clone(),
    )
    .context("invalid endpoint")?;
    match add.secret_expires {
        // Rotation: the older secrets sign until the expiry, the first is current.
        Some(grace) => {
            for secret in newer.iter().skip(1).rev() {
                endpoint = endpoint
                    .with_secret(secret.clone())
                    .context("invalid --secret")?;
            }
            let Some(newest) = newer.first() else {
                anyhow::bail!(
                    "--secret-expires needs two --secret: the new one first, then the old"
                );
            };
            let expires_at_ms = hookgate_sender::now_ms()
                .saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
            endpoint = endpoint
                .rotate_secret(newest.clone(), expires_at_ms)
                .context("invalid --secret")?;
        }
        None => {
            for secret in newer.iter().rev() {
                endpoint = endpoint
                    .with_secret(secret.clone())
                    .context("invalid --secret")?;
            }
        }
    }
    for url in &add.urls[1..] {
        endpoint = endpoint.with_url(url.clone()).context("invalid --url")?;
    }
    for header in &add.headers {
        let (name, value) = header.split_once(':').with_context(|| {
            format!(
                "invalid --header {:?} (expected `Name: value`)",
                header.split(':').next().unwrap_or("")
            )
        })?;
        endpoint = endpoint
            .with_header(name.trim(), value.trim())
            .context("invalid --header")?;
    }
    endpoint = endpoint.allowing_http(add.allow_http);
    if let Err(e) = endpoint.check_https() {
        return Err(anyhow::Error::new(e));
    }
    if let (Some(cert), Some(key)) = (&add.client_cert, &add.client_key) {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let identity = hookgate_sender::ClientIdentity::from_pem(read(cert)?, read(key)?)
            .context("invalid --client-cert / --client-key")?;
        endpoint = endpoint.with_client_identity(identity);
    }
    if let Some(timeout) = add.timeout {
        endpoint = endpoint
            .with_timeout(timeout)
            .context("invalid --timeout")?;
    }
    with_resilience(endpoint, add)
}

/// The tier preset first, then each resilience flag over it.
fn with_resilience(mut endpoint: Endpoint, add: &AddArgs) -> anyhow::Result<Endpoint> {
    if let Some(tier) = add.tier {
        endpoint = endpoint.with_tier(tier);
    }
    if let Some(url) = &add.health_url {
        endpoint = endpoint
            .with_health_url(url.clone())
            .context("invalid --health-url")?;
    }
    if let Some(rate) = add.rate_limit {
        endpoint = endpoint.with_rate_limit(rate);
    }
    if let Some(n) = add.max_in_flight {
        endpoint = endpoint
            .with_max_in_flight(n)
            .context("invalid --max-in-flight")?;
    }
    let mut breaker: BreakerConfig = endpoint.breaker;
    if let Some(n) = add.breaker_failures {
        breaker = breaker.with_failures(n);
    }
    if let Some(cooldown) = add.breaker_cooldown {
        anyhow::ensure!(
            !cooldown.is_zero(),
            "--breaker-cooldown must be greater than zero"
        );
        let max = Duration::from_millis(breaker.max_cooldown_ms).max(cooldown);
        breaker = breaker.with_cooldown(cooldown, max);
    }
    endpoint = endpoint.with_breaker(breaker);
    if let Some(after) = add.disable_after {
        let rule = endpoint.auto_disable.unwrap_or_default();
        endpoint = endpoint.with_auto_disable(
            (!after.is_zero()).then(|| AutoDisable::new(after, rule.min_failures)),
        );
    }
    Ok(endpoint)
}

/// The resilience settings and the shared state (breakers, limiter, failure streak) as JSON.
fn resilience_json(e: &Endpoint, h: &EndpointHealth) -> serde_json::Value {
    serde_json::json!({
        "tier": e.tier.map(|t| t.as_str()),
        "health_url": e.health_url.as_deref().map(redact::url),
        "rate_limit_per_sec": e.rate_limit.map(|r| r.max_per_sec),
        "max_in_flight": e.max_in_flight,
        "breaker": {
            "failures": e.breaker.failures,
            "failure_percent": e.breaker.failure_percent,
            "min_volume": e.breaker.min_volume,
            "window_ms": e.breaker.window_ms,
            "cooldown_ms": e.breaker.cooldown_ms,
            "max_cooldown_ms": e.breaker.max_cooldown_ms,
        },
        "disable_after_ms": e.auto_disable.map(|r| r.after_ms),
        "breakers": h.breakers.iter().map(|b| serde_json::json!({
            "url": b.url,
            "state": b.state.phase.as_str(),
            "consecutive_failures": b.state.consecutive,
            "open_until_ms": b.state.open_until_ms,
            "cooldown_ms": b.state.cooldown_ms,
            "changed_at_ms": b.state.changed_at_ms,
        })).collect::<Vec<_>>(),
        "limiter": h.limiter.as_ref().map(|(l, _)| serde_json::json!({
            "rate_per_sec": l.rate,
            "paused_until_ms": l.paused_until_ms,
        })),
        "failing_since_ms": h.streak.0.since_ms,
        "failures_in_a_row": h.streak.0.failures,
    })
}

fn print_resilience(e: &Endpoint, h: &EndpointHealth) {
    if let Some(tier) = e.tier {
        println!("tier:     {tier}");
    }
    if let Some(url) = &e.health_url {
        println!("health:   {}", redact::url(url));
    }
    if let Some(rate) = e.rate_limit {
        let now = h.limiter.as_ref().map_or(rate.max_per_sec, |(l, _)| l.rate);
        println!("rate:     {now:.1}/s now (max {:.1}/s)", rate.max_per_sec);
    }
    if let Some(n) = e.max_in_flight {
        println!("in flight: at most {n} per worker");
    }
    for (i, b) in h.breakers.iter().enumerate() {
        println!(
            "breaker {}: {} ({} failures in a row)",
            i + 1,
            b.state.phase.as_str(),
            b.state.consecutive
        );
    }
    if let Some(since) = h.streak.0.since_ms {
        println!(
            "failing:  since {} ({} attempts)",
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(since).unwrap_or(0))
            ),
            h.streak.0.failures
        );
    }
}

/// An endpoint as JSON, secrets and header values masked.
fn endpoint_json(e: &Endpoint) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "urls": e.urls.iter().map(|u| redact::url(u)).collect::<Vec<_>>(),
        "scheme": e.scheme.name(),
        "secrets": e.secrets.iter().map(|_| "***").collect::<Vec<_>>(),
        "headers": e.headers.iter().map(|(n, _)| format!("{n}: ***")).collect::<Vec<_>>(),
        "timeout_ms": u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX),
        "connect_timeout_ms": u64::try_from(e.connect_timeout.as_millis()).unwrap_or(u64::MAX),
        "disabled": e.disabled,
        "allow_http": e.allow_http,
        "client_certificate": e.client_identity.is_some(),
        "previous_secrets": e.previous_secrets.iter().map(|p| serde_json::json!({
            "secret": "***",
            "expires_at_ms": p.expires_at_ms,
        })).collect::<Vec<_>>(),
    })
}

fn print_endpoint(e: &Endpoint, json: bool) {
    let urls: Vec<String> = e.urls.iter().map(|u| redact::url(u)).collect();
    let headers: Vec<String> = e.headers.iter().map(|(n, _)| format!("{n}: ***")).collect();
    if json {
        println!("{}", endpoint_json(e));
    } else {
        println!("id:       {}", e.id);
        for (i, url) in urls.iter().enumerate() {
            println!("url {}:    {url}", i + 1);
        }
        println!("scheme:   {}", e.scheme.name());
        println!("secrets:  {} (masked)", e.secrets.len());
        for p in &e.previous_secrets {
            println!(
                "previous: *** (signs until {})",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(p.expires_at_ms).unwrap_or(0))
                )
            );
        }
        if e.client_identity.is_some() {
            println!("mtls:     client certificate (masked)");
        }
        if e.allow_http {
            println!("http:     plain http:// allowed");
        }
        for h in &headers {
            println!("header:   {h}");
        }
        println!("timeout:  {}", humantime::format_duration(e.timeout));
        println!("disabled: {}", e.disabled);
    }
}

/// Who the audit trail names for changes made by this command: the OS user
/// (`USER`, `LOGNAME` or `USERNAME`), as `hookgate-cli:<user>`.
pub(crate) fn actor() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("hookgate-cli:{user}")
}
