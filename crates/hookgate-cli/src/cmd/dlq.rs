//! `hookgate dlq`: list, show, replay and purge dead letters in a store.
//!
//! Every command pages through the store ([`Queue::list_dead`], 100 at a
//! time) and never loads it whole. `list` prints a table (or one JSON object
//! per line with `--json`); `replay` delivers each message again in-process,
//! through the same worker and policy as `hookgate send`, and reports the
//! outcome per message: a delivered one leaves the DLQ, a failed one stays
//! with its new attempts appended. `replay --enqueue` instead puts messages
//! back into the store's queue for its own workers.
//!
//! Exit codes: 0 success, 1 some replay failed or nothing matched `show`,
//! 2 usage or store errors.

use std::{collections::HashMap, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use hookgate_sender::{
    queue::{DeadLetter, DeliveryKey, DlqFilter, MemoryQueue, Page, Queue},
    worker::Next,
    Worker,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::send::{describe, open_store, retry_policy, ssrf_hint, ssrf_policy};

/// Page size when walking the store.
const PAGE: usize = 100;

/// Arguments of `hookgate dlq`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Show at most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one dead letter with its payload and every attempt.
    Show {
        /// Message id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Deliver dead letters again (same message id).
    Replay {
        /// Message id (or `--all`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter (of `--endpoint`, when given).
        #[arg(long)]
        all: bool,
        /// Put them back into the store's queue for its workers instead of delivering here.
        #[arg(long)]
        enqueue: bool,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// Delete dead letters.
    Purge {
        /// Message id (or `--all`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter (of `--endpoint`, when given).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The store: `postgres://..` or `redis://..`.
    #[arg(long, value_name = "URL", env = "HOOKGATE_STORE")]
    store: String,
    /// Namespace in the store: the Postgres schema, or the Redis key prefix `<NS>:q:`.
    #[arg(long, value_name = "NS", env = "HOOKGATE_NAMESPACE")]
    namespace: Option<String>,
    /// Only this endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    endpoint: Option<String>,
    /// Only dead letters filed within this long (`30m`, `2h`, `7days`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// JSON output (one object per line).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct DeliveryArgs {
    /// Attempts per message in this replay.
    #[arg(long, value_name = "N", default_value_t = 1)]
    max_attempts: u32,
    /// Upper bound of the first retry's wait.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    base_delay: Duration,
    /// Cap on one wait.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    max_delay: Duration,
    /// Messages delivered at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Allow loopback and private addresses (the SSRF guard refuses them by default).
    #[arg(long)]
    allow_private: bool,
    /// Allow this network (CIDR) whatever its range; repeatable.
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dlq(args))
}

async fn dlq(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::List { store, limit } => list(&store, limit).await,
        Action::Show { id, store } => show(&store, &id).await,
        Action::Replay {
            id,
            all,
            enqueue,
            store,
            delivery,
        } => replay(&store, id.filter(|_| !all), enqueue, &delivery).await,
        Action::Purge { id, all, store } => purge(&store, id.filter(|_| !all)).await,
    }
}

async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Queue>> {
    open_store(&args.store, args.namespace.as_deref()).await
}

fn filter(args: &StoreArgs) -> DlqFilter {
    DlqFilter {
        endpoint: args.endpoint.clone(),
        since_ms: args.since.map(|d| {
            hookgate_sender::now_ms()
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }),
        ..DlqFilter::default()
    }
}

fn rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or_default());
    humantime::format_rfc3339_seconds(t).to_string()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn payload_json(d: &DeadLetter) -> serde_json::Value {
    match serde_json::from_slice::<serde_json::Value>(&d.message.payload) {
        Ok(v) => v,
        Err(_) => match std::str::from_utf8(&d.message.payload) {
            Ok(s) => json!(s),
            Err(_) => {
                json!({ "hex": d.message.payload.iter().map(|b| format!("{b:02x}")).collect::<String>() })
            }
        },
    }
}

fn to_json(d: &DeadLetter, with_payload: bool) -> serde_json::Value {
    let mut v = json!({
        "endpoint": d.key.endpoint,
        "message_id": d.key.message_id,
        "event_type": d.message.event_type,
        "created_at_ms": d.message.created_at_ms,
        "dead_at_ms": d.dead_at_ms,
        "reason": d.reason.to_string(),
        "reason_code": d.reason.code(),
        "attempts": d.attempts.iter().map(|a| json!({
            "at_ms": a.at_ms,
            "url": a.url,
            "status": a.status,
            "latency_ms": a.latency_ms,
            "error": a.error,
        })).collect::<Vec<_>>(),
    });
    if with_payload {
        v["payload"] = payload_json(d);
    }
    v
}

fn table_row(d: &DeadLetter) -> String {
    let last = d
        .attempts
        .last()
        .map(|a| match a.status {
            Some(s) => s.to_string(),
            None => "error".to_owned(),
        })
        .unwrap_or_else(|| "-".to_owned());
    format!(
        "{:<20}  {:<24}  {:<30}  {:>8}  {:<6}  {}",
        rfc3339(d.dead_at_ms),
        truncate(&d.key.endpoint, 24),
        truncate(&d.key.message_id, 30),
        d.attempts.len(),
        last,
        d.reason
    )
}

const TABLE_HEADER: &str =
    "DEAD AT               ENDPOINT                  MESSAGE                         ATTEMPTS  LAST    REASON";

/// Walk the dead letters matching `filter`, one page at a time.
async fn for_each_page(
    queue: &dyn Queue,
    filter: &DlqFilter,
    mut f: impl FnMut(Vec<DeadLetter>) -> bool,
) -> anyhow::Result<()> {
    let mut page = Page {
        after: None,
        limit: PAGE,
    };
    loop {
        let items = queue
            .list_dead(filter, &page)
            .await
            .context("cannot list dead letters")?;
        let Some(last) = items.last() else {
            return Ok(());
        };
        page.after = Some((last.dead_at_ms, last.key.clone()));
        let full = items.len() == PAGE;
        if !f(items) || !full {
            return Ok(());
        }
    }
}

async fn list(args: &StoreArgs, limit: Option<usize>) -> anyhow::Result<ExitCode> {
    let queue = open(args).await?;
    let mut shown = 0usize;
    let max = limit.unwrap_or(usize::MAX);
    if !args.json {
        println!("{TABLE_HEADER}");
    }
    for_each_page(&*queue, &filter(args), |items| {
        for d in items {
            if shown >= max {
                return false;
            }
            if args.json {
                println!("{}", to_json(&d, false));
            } else {
                println!("{}", table_row(&d));
            }
            shown += 1;
        }
        true
    })
    .await?;
    if !args.json {
        eprintln!("{shown} dead letter(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Find the dead letter with message id `id` (in `--endpoint` when given).
async fn find(queue: &dyn Queue, args: &StoreArgs, id: &str) -> anyhow::Result<Option<DeadLetter>> {
    if let Some(endpoint) = &args.endpoint {
        let key = DeliveryKey {
            endpoint: endpoint.clone(),
            message_id: id.to_owned(),
        };
        return queue.get_dead(&key).await.context("cannot read the DLQ");
    }
    let mut found: Vec<DeadLetter> = Vec::new();
    for_each_page(queue, &DlqFilter::default(), |items| {
        found.extend(items.into_iter().filter(|d| d.key.message_id == id));
        found.len() < 2
    })
    .await?;
    if found.len() > 1 {
        anyhow::bail!(
            "message {id} is dead-lettered for several endpoints ({}, ...); pick one with --endpoint",
            found[0].key.endpoint
        );
    }
    Ok(found.pop())
}

async fn show(args: &StoreArgs, id: &str) -> anyhow::Result<ExitCode> {
    let queue = open(args).await?;
    let Some(d) = find(&*queue, args, id).await? else {
        eprintln!("hookgate dlq: no dead letter {id}");
        return Ok(ExitCode::from(1));
    };
    if args.json {
        println!("{}", to_json(&d, true));
        return Ok(ExitCode::SUCCESS);
    }
    println!("message:    {}", d.key.message_id);
    println!("endpoint:   {}", d.key.endpoint);
    println!("event type: {}", d.message.event_type);
    println!("created:    {}", rfc3339(d.message.created_at_ms));
    println!("dead since: {}", rfc3339(d.dead_at_ms));
    println!("reason:     {}", d.reason);
    println!("attempts:   {}", d.attempts.len());
    for (i, a) in d.attempts.iter().enumerate() {
        let outcome = match (a.status, &a.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => "no response".to_owned(),
        };
        println!(
            "  {:>3}. {}  {}  {} ms  {}",
            i + 1,
            rfc3339(a.at_ms),
            outcome,
            a.latency_ms,
            a.url
        );
    }
    println!("payload:");
    match std::str::from_utf8(&d.message.payload) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("({} bytes, not UTF-8)", d.message.payload.len()),
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(args: &StoreArgs, id: Option<String>) -> anyhow::Result<ExitCode> {
    let queue = open(args).await?;
    if let Some(id) = id {
        let Some(d) = find(&*queue, args, &id).await? else {
            eprintln!("hookgate dlq: no dead letter {id}");
            return Ok(ExitCode::from(1));
        };
        queue.purge_dead(&d.key).await?;
        report_line(args.json, &d.key, "purged", None);
        return Ok(ExitCode::SUCCESS);
    }
    let mut keys = Vec::new();
    let mut purged = 0usize;
    let filter = filter(args);
    // Each page is purged before the next is read; the cursor is exclusive,
    // so deleting what it points at is fine.
    loop {
        keys.clear();
        for_each_page(&*queue, &filter, |items| {
            keys.extend(items.into_iter().map(|d| d.key));
            false
        })
        .await?;
        if keys.is_empty() {
            break;
        }
        let before = purged;
        for key in &keys {
            if queue.purge_dead(key).await? {
                purged += 1;
                report_line(args.json, key, "purged", None);
            }
        }
        if purged == before {
            // Listed but not purgeable (removed meanwhile): do not spin.
            break;
        }
    }
    if !args.json {
        eprintln!("{purged} dead letter(s) purged");
    }
    Ok(ExitCode::SUCCESS)
}

fn report_line(json: bool, key: &DeliveryKey, outcome: &str, detail: Option<&str>) {
    if json {
        println!(
            "{}",
            json!({
                "endpoint": key.endpoint,
                "message_id": key.message_id,
                "outcome": outcome,
                "detail": detail,
            })
        );
    } else {
        match detail {
            Some(d) => println!("{} ({}): {outcome}: {d}", key.message_id, key.endpoint),
            None => println!("{} ({}): {outcome}", key.message_id, key.endpoint),
        }
    }
}

async fn replay(
    args: &StoreArgs,
    id: Option<String>,
    enqueue: bool,
    delivery: &DeliveryArgs,
) -> anyhow::Result<ExitCode> {
    let store = open(args).await?;
    if enqueue {
        return replay_enqueue(&*store, args, id).await;
    }
    let policy = retry_policy(
        delivery.max_attempts,
        delivery.base_delay,
        delivery.max_delay,
    )?;
    let ssrf = ssrf_policy(delivery.allow_private, &delivery.allow)?;
    if delivery.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let local: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let json = args.json;
    let worker = Worker::builder(local.clone())
        .with_concurrency(delivery.concurrency)
        .with_retry_policy(policy)
        .with_ssrf_policy(ssrf)
        .with_poll_interval(Duration::from_millis(20))
        .with_endpoint_cache_ttl(Duration::ZERO)
        .with_on_attempt(move |r| {
            if !json {
                println!("{} ({}): {}", r.key.message_id, r.key.endpoint, describe(r));
            }
            let _ = tx.send(r.clone());
        })
        .build()
        .context("invalid settings")?
        .spawn();

    let mut replayer = Replayer {
        store: store.clone(),
        local,
        rx: &mut rx,
        json,
        endpoints: HashMap::new(),
        delivered: 0,
        failed: 0,
    };
    let result = match id {
        Some(id) => match find(&*store, args, &id).await? {
            Some(d) => replayer.batch(vec![d]).await,
            None => {
                eprintln!("hookgate dlq: no dead letter {id}");
                replayer.failed += 1;
                Ok(())
            }
        },
        None => {
            // Only what was dead before we started: a message that fails
            // again is re-filed with a new time and must not come round again.
            let filter = DlqFilter {
                until_ms: Some(hookgate_sender::now_ms()),
                ..filter(args)
            };
            let mut page = Page {
                after: None,
                limit: PAGE,
            };
            loop {
                let items = store.list_dead(&filter, &page).await?;
                let Some(last) = items.last() else {
                    break Ok(());
                };
                page.after = Some((last.dead_at_ms, last.key.clone()));
                let full = items.len() == PAGE;
                if let Err(e) = replayer.batch(items).await {
                    break Err(e);
                }
                if !full {
                    break Ok(());
                }
            }
        }
    };
    let (delivered, failed) = (replayer.delivered, replayer.failed);
    drop(replayer);
    worker.shutdown(Duration::from_secs(5)).await;
    result?;
    if !json {
        eprintln!("{delivered} delivered, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn replay_enqueue(
    store: &dyn Queue,
    args: &StoreArgs,
    id: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut keys = Vec::new();
    match id {
        Some(id) => match find(store, args, &id).await? {
            Some(d) => keys.push(d.key),
            None => {
                eprintln!("hookgate dlq: no dead letter {id}");
                return Ok(ExitCode::from(1));
            }
        },
        None => {
            let mut n = 0usize;
            loop {
                keys.clear();
                for_each_page(store, &filter(args), |items| {
                    keys.extend(items.into_iter().map(|d| d.key));
                    false
                })
                .await?;
                if keys.is_empty() {
                    break;
                }
                let before = n;
                for key in &keys {
                    if store.replay_dead(key).await? {
                        n += 1;
                        report_line(args.json, key, "requeued", None);
                    }
                }
                if n == before {
                    break;
                }
            }
            if !args.json {
                eprintln!("{n} dead letter(s) back in the queue");
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    for key in &keys {
        if store.replay_dead(key).await? {
            report_line(args.json, key, "requeued", None);
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Replayer<'a> {
    store: Arc<dyn Queue>,
    local: Arc<dyn Queue>,
    rx: &'a mut mpsc::UnboundedReceiver<hookgate_sender::worker::AttemptReport>,
    json: bool,
    /// Endpoint id -> whether it exists in the store (loaded once).
    endpoints: HashMap<String, bool>,
    delivered: usize,
    failed: usize,
}

impl Replayer<'_> {
    /// Deliver one page of dead letters through the local worker and settle each in the store.
    async fn batch(&mut self, items: Vec<DeadLetter>) -> anyhow::Result<()> {
        let mut waiting: HashMap<DeliveryKey, DeadLetter> = HashMap::new();
        for d in items {
            let known = match self.endpoints.get(&d.key.endpoint) {
                Some(k) => *k,
                None => {
                    let ep = self.store.get_endpoint(&d.key.endpoint).await?;
                    let known = match ep {
                        Some(mut ep) => {
                            // An explicit replay goes out even to an endpoint
                            // disabled by a 410; success re-enables it below.
                            ep.disabled = false;
                            self.local.put_endpoint(&ep).await?;
                            true
                        }
                        None => false,
                    };
                    self.endpoints.insert(d.key.endpoint.clone(), known);
                    known
                }
            };
            if !known {
                self.failed += 1;
                report_line(
                    self.json,
                    &d.key,
                    "failed",
                    Some("endpoint not found in the store"),
                );
                continue;
            }
            self.local.enqueue(&d.key.endpoint, &d.message).await?;
            waiting.insert(d.key.clone(), d);
        }
        while !waiting.is_empty() {
            let Some(r) = self.rx.recv().await else {
                anyhow::bail!("the worker stopped unexpectedly");
            };
            let Some(dead) = waiting.get(&r.key) else {
                continue;
            };
            match &r.next {
                Next::RetryAt { .. } => continue,
                Next::Delivered => {
                    self.store.purge_dead(&r.key).await?;
                    if let Ok(Some(ep)) = self.store.get_endpoint(&r.key.endpoint).await {
                        if ep.disabled {
                            self.store
                                .set_endpoint_disabled(&r.key.endpoint, false)
                                .await?;
                        }
                    }
                    self.delivered += 1;
                    report_line(self.json, &r.key, "delivered", None);
                }
                Next::DeadLettered { reason } => {
                    // Keep the old history and add this replay's attempts.
                    let mut again = self
                        .local
                        .get_dead(&r.key)
                        .await?
                        .unwrap_or_else(|| dead.clone());
                    let mut attempts = dead.attempts.clone();
                    attempts.append(&mut again.attempts);
                    again.attempts = attempts;
                    again.message = dead.message.clone();
                    self.store.add_dead_letter(&again).await?;
                    self.local.purge_dead(&r.key).await?;
                    self.failed += 1;
                    let detail = match ssrf_hint(reason) {
                        Some(h) => format!("{reason} ({h})"),
                        None => reason.to_string(),
                    };
                    report_line(self.json, &r.key, "failed", Some(&detail));
                }
                _ => {}
            }
            waiting.remove(&r.key);
        }
        Ok(())
    }
}
