//! `hookgate dlq`: list, show, replay and purge dead letters in a store.
//!
//! The command parses, calls the library and prints. Every command pages
//! through the store ([`Queue::list_dead`], 100 at a time) and never loads it
//! whole. `list` prints a table (or one JSON object per line with `--json`)
//! and stops quietly when its reader goes away (`| head`). `replay` puts each
//! dead letter back into the store ([`Queue::replay_dead`], its history kept)
//! and delivers it here with [`Worker::deliver_once`], the same path as
//! `hookgate send`: a delivered one leaves the DLQ, a failed one is dead
//! again with its new attempts appended; an endpoint disabled by a 410 is
//! skipped unless `--enable` says to enable it. `replay --enqueue` instead
//! leaves the messages to the store's own workers. `--all` acts on the dead
//! letters that exist when the command starts, once each
//! ([`hookgate_sender::bulk`]); `purge --all` asks first on a terminal
//! (`--yes`, `--dry-run`), and `purge <id>` says so when nothing was purged.
//!
//! Exit codes: 0 success, 1 some replay failed, nothing matched `show` or
//! `purge`, or a purge was not confirmed; 2 usage or store errors.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use hookgate_sender::{
    bulk,
    queue::{DeadLetter, DeliveryKey, DlqFilter, Page, Queue},
    Worker,
};
use serde_json::json;

use super::send::{
    deliver_until_final, describe, interrupt_signal, open_store, retry_policy, ssrf_hint,
    ssrf_policy, Final,
};

/// Page size when walking the store.
const PAGE: usize = 100;

/// Arguments of `hookgate dlq`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hookgate dlq list --store postgres://postgres@127.0.0.1/test --since 1h
  hookgate dlq replay --all --enqueue --store redis://127.0.0.1:6379 --namespace shop
  hookgate dlq purge --all --dry-run --store postgres://postgres@127.0.0.1/test")]
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
        /// Every dead letter (of `--endpoint`, when given) that exists when
        /// the command starts, once each. Asks first on a terminal.
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Show what would be purged, purge nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The store: `postgres://..` or `redis://..`.
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
    /// Only this endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    endpoint: Option<String>,
    /// Only dead letters filed within this long (`30m`, `2h`, `7days`).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
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
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = super::parse_duration)]
    base_delay: Duration,
    /// Cap on one wait.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    max_delay: Duration,
    /// Messages delivered at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
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
    /// Enable a disabled endpoint (e.g. after a 410) before replaying to it.
    #[arg(long)]
    enable: bool,
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
        Action::Purge {
            id,
            all,
            yes,
            dry_run,
            store,
        } => purge(&store, id.filter(|_| !all), yes, dry_run).await,
    }
}

async fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn Queue>> {
    open_store(&args.store, args.namespace.as_deref()).await
}

/// For `list` and `show`: a namespace that does not exist is an error naming
/// it, and looking creates nothing.
async fn open_read_only(args: &StoreArgs) -> anyhow::Result<Arc<dyn Queue>> {
    if args.store == "memory" || args.store.starts_with("memory:") {
        return open(args).await;
    }
    super::queue::open_read_only(&args.store, args.namespace.as_deref(), None).await
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
    use std::io::Write as _;
    let queue = open_read_only(args).await?;
    let mut shown = 0usize;
    let max = limit.unwrap_or(usize::MAX);
    let mut out = std::io::stdout().lock();
    // A reader that stops early (`| head`) closes the pipe: stop quietly.
    let closed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    if !args.json {
        if let Err(e) = writeln!(out, "{TABLE_HEADER}") {
            return if closed(&e) {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(e.into())
            };
        }
    }
    let mut page = Page {
        after: None,
        limit: PAGE,
    };
    'pages: while shown < max {
        let items = queue
            .list_dead(&filter(args), &page)
            .await
            .context("cannot list dead letters")?;
        let Some(last) = items.last() else {
            break;
        };
        page.after = Some((last.dead_at_ms, last.key.clone()));
        let full = items.len() == PAGE;
        for d in items {
            if shown >= max {
                break 'pages;
            }
            let line = if args.json {
                to_json(&d, false).to_string()
            } else {
                table_row(&d)
            };
            if let Err(e) = writeln!(out, "{line}") {
                return if closed(&e) {
                    Ok(ExitCode::SUCCESS)
                } else {
                    Err(e.into())
                };
            }
            shown += 1;
        }
        if !full {
            break;
        }
    }
    if let Err(e) = out.flush() {
        if !closed(&e) {
            return Err(e.into());
        }
    }
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
    let queue = open_read_only(args).await?;
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

async fn purge(
    args: &StoreArgs,
    id: Option<String>,
    yes: bool,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let queue = open(args).await?;
    if let Some(id) = id {
        let Some(d) = find(&*queue, args, &id).await? else {
            eprintln!("hookgate dlq: no dead letter {id}: nothing purged");
            return Ok(ExitCode::from(1));
        };
        if dry_run {
            report_line(args.json, &d.key, "would purge", None);
            return Ok(ExitCode::SUCCESS);
        }
        if !queue.purge_dead(&d.key).await? {
            eprintln!("hookgate dlq: no dead letter {id} (gone meanwhile): nothing purged");
            return Ok(ExitCode::from(1));
        }
        report_line(args.json, &d.key, "purged", None);
        return Ok(ExitCode::SUCCESS);
    }
    let filter = filter(args);
    if dry_run {
        let mut n = 0usize;
        let mut snapshot = bulk::Snapshot::new(&*queue, &filter);
        while let Some(page) = snapshot.next_page().await? {
            for d in page {
                n += 1;
                report_line(args.json, &d.key, "would purge", None);
            }
        }
        if !args.json {
            eprintln!("{n} dead letter(s) would be purged (dry run)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && !confirm("Purge every matching dead letter? This cannot be undone.")? {
        eprintln!("hookgate dlq: not confirmed; nothing purged (pass --yes to skip the question)");
        return Ok(ExitCode::from(1));
    }
    let json = args.json;
    let purged = bulk::purge_all(&*queue, &filter, |key| {
        report_line(json, key, "purged", None);
    })
    .await?;
    if !args.json {
        eprintln!("{purged} dead letter(s) purged");
    }
    Ok(ExitCode::SUCCESS)
}

/// Ask `question` on a terminal. Without a terminal on stdin the answer is
/// no: a script must say `--yes`.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() {
        eprintln!("hookgate dlq: stdin is not a terminal and --yes was not given");
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
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
    let ssrf = ssrf_policy(delivery.allow_private, delivery.allow_http, &delivery.allow)?;
    if delivery.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let worker = Worker::builder(store.clone())
        .with_concurrency(delivery.concurrency)
        .with_retry_policy(policy)
        .with_ssrf_policy(ssrf)
        .with_endpoint_cache_ttl(Duration::ZERO)
        .build()
        .context("invalid settings")?;
    let replayer = Arc::new(Replayer {
        store: store.clone(),
        worker,
        json: args.json,
        enable: delivery.enable,
        max_wait: delivery.max_delay,
    });
    let (mut delivered, mut failed) = (0usize, 0usize);
    match id {
        Some(id) => match find(&*store, args, &id).await? {
            Some(d) => {
                if replayer.one(&d).await? {
                    delivered += 1;
                } else {
                    failed += 1;
                }
            }
            None => {
                eprintln!("hookgate dlq: no dead letter {id}");
                failed += 1;
            }
        },
        None => {
            // Only what was dead when we started, once each: a message
            // that fails again is re-filed and must not come round again.
            let mut snapshot = bulk::Snapshot::new(&*store, &filter(args));
            while let Some(page) = snapshot.next_page().await? {
                let mut tasks = tokio::task::JoinSet::new();
                let mut results = Vec::new();
                for d in page {
                    if tasks.len() >= delivery.concurrency {
                        if let Some(r) = tasks.join_next().await {
                            results.push(r?);
                        }
                    }
                    let r = replayer.clone();
                    tasks.spawn(async move { r.one(&d).await });
                }
                while let Some(r) = tasks.join_next().await {
                    results.push(r?);
                }
                for r in results {
                    if r? {
                        delivered += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
        }
    }
    if !args.json {
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
    let Some(id) = id else {
        let json = args.json;
        let n = bulk::replay_all(store, &filter(args), |key| {
            report_line(json, key, "requeued", None);
        })
        .await?;
        if !args.json {
            eprintln!("{n} dead letter(s) back in the queue");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(d) = find(store, args, &id).await? else {
        eprintln!("hookgate dlq: no dead letter {id}");
        return Ok(ExitCode::from(1));
    };
    if store.replay_dead(&d.key).await? {
        report_line(args.json, &d.key, "requeued", None);
    }
    Ok(ExitCode::SUCCESS)
}

/// Delivers dead letters again, here, through the store: replayed (one
/// history, attempts appended), then attempted with [`Worker::deliver_once`].
struct Replayer {
    store: Arc<dyn Queue>,
    worker: Worker,
    json: bool,
    enable: bool,
    max_wait: Duration,
}

impl Replayer {
    /// Replay and deliver `d`; `Ok(true)` when delivered.
    async fn one(&self, d: &DeadLetter) -> anyhow::Result<bool> {
        let key = &d.key;
        match self.store.get_endpoint(&key.endpoint).await? {
            None => {
                report_line(
                    self.json,
                    key,
                    "failed",
                    Some("endpoint not found in the store"),
                );
                return Ok(false);
            }
            Some(ep) if ep.disabled => {
                if !self.enable {
                    report_line(
                        self.json,
                        key,
                        "failed",
                        Some("endpoint disabled; pass --enable to enable it and replay"),
                    );
                    return Ok(false);
                }
                self.store
                    .set_endpoint_disabled(&key.endpoint, false)
                    .await?;
                hookgate_sender::audit::record(
                    &*self.store,
                    &key.endpoint,
                    &super::endpoint::actor(),
                    &[hookgate_sender::audit::Change::Enabled],
                )
                .await?;
                if !self.json {
                    println!("endpoint {} enabled (--enable)", key.endpoint);
                }
            }
            Some(_) => {}
        }
        if !self.store.replay_dead(key).await? {
            report_line(self.json, key, "failed", Some("no longer in the DLQ"));
            return Ok(false);
        }
        let json = self.json;
        let outcome = deliver_until_final(
            &self.store,
            &self.worker,
            key,
            self.max_wait,
            interrupt_signal(),
            |r| {
                if !json {
                    println!("{} ({}): {}", r.key.message_id, r.key.endpoint, describe(r));
                }
            },
        )
        .await?;
        Ok(match outcome {
            Final::Delivered => {
                report_line(self.json, key, "delivered", None);
                true
            }
            Final::Dead(reason) => {
                let detail = match ssrf_hint(&reason) {
                    Some(h) => format!("{reason} ({h})"),
                    None => reason.to_string(),
                };
                report_line(self.json, key, "failed", Some(&detail));
                false
            }
            Final::Interrupted => {
                report_line(self.json, key, "failed", Some("interrupted"));
                false
            }
        })
    }
}
