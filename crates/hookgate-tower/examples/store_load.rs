//! Bounded load run against one dedup store: events/s for new events (claim +
//! complete) and for duplicates (claim answering `Done`), with one task and
//! with many, plus the store round trips each costs.
//!
//! ```text
//! cargo run --release -p hookgate-tower --all-features --example store_load -- memory
//! cargo run --release -p hookgate-tower --all-features --example store_load -- redis [URL]
//! cargo run --release -p hookgate-tower --all-features --example store_load -- postgres [URL]
//! cargo run --release -p hookgate-tower --all-features --example store_load -- postgres-async-commit [URL]
//! ```
//!
//! Environment: `EVENTS` (events per concurrent phase, default 20000),
//! `SEQ_EVENTS` (per single-task phase, default 2000), `CONCURRENCY`
//! (default 64), `POOL` (Postgres pool size, default 16).
//!
//! Round trips:
//! - Redis: the `INFO commandstats` delta of each phase is printed. Commands
//!   run inside a Lua script (SET, GET, PTTL, DEL) are counted there too; the
//!   client's own commands are the `evalsha` calls. Run it against a Redis of
//!   its own for exact figures.
//! - Postgres: the run creates a database of its own
//!   (`hookgate_bench_<random>`, dropped at the end), so that database's
//!   `xact_commit + xact_rollback` delta counts exactly this run's
//!   statements (each store call is one autocommit statement). The pool is
//!   closed after each phase so the server has flushed its counters.
//!
//! Redis keys are written under a random prefix and deleted at the end.

use hookgate_tower::store::{Claim, DedupStore, DoneRecord, MemoryStore};
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Builds a store handle for one phase.
type MakeStore = Box<dyn Fn() -> Arc<dyn DedupStore>>;
/// Removes what the run wrote.
type Cleanup =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>>>>>;

const LEASE: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(600);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    New,
    Duplicate,
}

/// Run `keys` through `store` with `concurrency` tasks; returns the elapsed time.
async fn phase(
    store: Arc<dyn DedupStore>,
    keys: Arc<Vec<String>>,
    concurrency: usize,
    op: Op,
) -> Result<Duration, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (store, keys, next) = (Arc::clone(&store), Arc::clone(&keys), Arc::clone(&next));
            tokio::spawn(async move {
                let digest = [7u8; 32];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = keys.get(i) else {
                        return Ok::<(), BoxError>(());
                    };
                    match (op, store.claim(key, &digest, LEASE).await?) {
                        (Op::New, Claim::Acquired(token)) => {
                            let record = DoneRecord::new(200, digest);
                            if !store.complete(key, &token, record, RETENTION).await? {
                                return Err(format!("complete failed for {key}").into());
                            }
                        }
                        (Op::Duplicate, Claim::Done(_)) => {}
                        (_, other) => return Err(format!("{key}: unexpected {other:?}").into()),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// Where round trips are counted, per backend.
enum Counter {
    None,
    Redis(redis::Client),
    Postgres {
        admin: tokio_postgres::Client,
        db: String,
    },
}

impl Counter {
    async fn read(&self) -> Result<BTreeMap<String, u64>, BoxError> {
        let mut out = BTreeMap::new();
        match self {
            Counter::None => {}
            Counter::Redis(client) => {
                let mut conn = client.get_multiplexed_async_connection().await?;
                let info: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async(&mut conn)
                    .await?;
                for line in info.lines() {
                    // cmdstat_evalsha:calls=12,usec=...
                    let Some((name, rest)) = line.split_once(':') else {
                        continue;
                    };
                    let Some(cmd) = name.strip_prefix("cmdstat_") else {
                        continue;
                    };
                    let calls = rest
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("calls="))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    out.insert(cmd.to_owned(), calls);
                }
            }
            Counter::Postgres { admin, db } => {
                // Give exiting backends a moment to flush their counters.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                admin
                    .batch_execute("SELECT pg_stat_clear_snapshot()")
                    .await?;
                let row = admin
                    .query_one(
                        "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = $1",
                        &[db],
                    )
                    .await?;
                out.insert(
                    "transactions".to_owned(),
                    u64::try_from(row.get::<_, i64>(0))?,
                );
            }
        }
        Ok(out)
    }
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0 && k != "info").then(|| (k.clone(), d))
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "memory".to_owned());
    let url = args.next();
    let events = env_usize("EVENTS", 20_000);
    let seq_events = env_usize("SEQ_EVENTS", 2_000);
    let concurrency = env_usize("CONCURRENCY", 64);
    let pool = env_usize("POOL", 16);
    let run = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);

    // `make` builds a fresh store handle per phase (Postgres closes its pool
    // between phases so the server flushes its statistics).
    let (make, counter, cleanup): (MakeStore, Counter, Cleanup) = match kind.as_str() {
        "memory" => {
            let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::with_capacity(1_000_000));
            (
                Box::new(move || Arc::clone(&store)),
                Counter::None,
                Box::new(|| Box::pin(async { Ok(()) })),
            )
        }
        "redis" => {
            let url = url.unwrap_or_else(|| {
                std::env::var("HOOKGATE_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
            });
            let prefix = format!("hookgate-bench:{run}:");
            let store = hookgate_tower::store::RedisStore::connect(&url)
                .await?
                .with_prefix(prefix.clone());
            let client = redis::Client::open(url.as_str())?;
            let cleanup_client = client.clone();
            (
                Box::new(move || Arc::new(store.clone())),
                Counter::Redis(client),
                Box::new(move || {
                    Box::pin(async move {
                        let mut conn = cleanup_client.get_multiplexed_async_connection().await?;
                        let mut cursor: u64 = 0;
                        loop {
                            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(format!("{prefix}*"))
                                .arg("COUNT")
                                .arg(1000)
                                .query_async(&mut conn)
                                .await?;
                            if !keys.is_empty() {
                                let () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
                            }
                            if next == 0 {
                                return Ok(());
                            }
                            cursor = next;
                        }
                    })
                }),
            )
        }
        "postgres" | "postgres-async-commit" => {
            let url = url.unwrap_or_else(|| {
                std::env::var("HOOKGATE_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
            });
            let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let db = format!("hookgate_bench_{run}");
            admin
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await?;
            for setting in [
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "shared_buffers",
            ] {
                let row = admin.query_one(&format!("SHOW {setting}"), &[]).await?;
                println!("server {setting} = {}", row.get::<_, String>(0));
            }
            let (base, _) = url.rsplit_once('/').ok_or("URL without a database")?;
            let bench_url = format!("{base}/{db}");
            let async_commit = kind == "postgres-async-commit";
            let build = move || {
                let store = hookgate_tower::store::PostgresStore::new(&bench_url)
                    .expect("valid URL")
                    .with_pool_size(pool);
                if async_commit {
                    store.with_synchronous_commit_off()
                } else {
                    store
                }
            };
            build().migrate().await?;
            let drop_db = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
            let (admin2, conn2) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn2);
            (
                Box::new(move || Arc::new(build())),
                Counter::Postgres { admin, db },
                Box::new(move || {
                    Box::pin(async move {
                        admin2.batch_execute(&drop_db).await?;
                        Ok(())
                    })
                }),
            )
        }
        other => {
            return Err(format!(
                "unknown store {other:?}: memory|redis|postgres|postgres-async-commit"
            )
            .into())
        }
    };

    println!(
        "store {kind}, concurrency {concurrency}, events {events} (single task: {seq_events})"
    );
    let mut result = Ok(());
    for (label, n, tasks) in [
        ("1 task", seq_events, 1),
        (&*format!("{concurrency} tasks"), events, concurrency),
    ] {
        let keys: Arc<Vec<String>> = Arc::new(
            (0..n)
                .map(|i| format!("hookgate:standard:msg_{run}_{tasks}_{i:08}"))
                .collect(),
        );
        for op in [Op::New, Op::Duplicate] {
            let before = counter.read().await?;
            let store = make();
            let outcome = phase(Arc::clone(&store), Arc::clone(&keys), tasks, op).await;
            drop(store);
            let elapsed = match outcome {
                Ok(e) => e,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let after = counter.read().await?;
            let name = if op == Op::New {
                "new events (claim+complete)"
            } else {
                "duplicates (claim -> Done)"
            };
            #[allow(clippy::cast_precision_loss)]
            let rate = n as f64 / elapsed.as_secs_f64();
            let d = delta(&before, &after);
            let per_event: Vec<String> = d
                .iter()
                .map(|(k, v)| {
                    #[allow(clippy::cast_precision_loss)]
                    let per = *v as f64 / n as f64;
                    format!("{k}={v} ({per:.2}/event)")
                })
                .collect();
            println!(
                "{label:>9} | {name:<28} | {n:>6} events in {:>7.3} s | {rate:>9.0} events/s | {}",
                elapsed.as_secs_f64(),
                if per_event.is_empty() {
                    "-".to_owned()
                } else {
                    per_event.join(", ")
                }
            );
        }
        if result.is_err() {
            break;
        }
    }
    drop(make);
    cleanup().await?;
    result
}
