//! Benchmarks of the Postgres and Redis queues, against the real servers
//! (`HOOKGATE_POSTGRES_URL`, `HOOKGATE_REDIS_URL`, defaults on 127.0.0.1).
//!
//! ```text
//! cargo run --release -p hookgate-sender --features postgres,redis --example queue_bench -- [SCENARIO] [BACKEND]
//! ```
//!
//! SCENARIO is one of `enqueue`, `throughput`, `latency`, `rss`, `dlq` or
//! `all` (default); BACKEND is `postgres`, `redis` or `both` (default).
//!
//! - `enqueue`: latency of 2,000 sequential enqueues (p50/p95/p99).
//! - `throughput`: 10,000 queued messages, one worker (concurrency 64)
//!   delivering to an axum receiver on 127.0.0.1 in the same process;
//!   deliveries per second until the last delivery is recorded.
//! - `latency`: messages enqueued at a steady 200/s for 15 s while one worker
//!   (poll interval 10 ms) runs; time from just before `enqueue` to arrival
//!   at the receiver (p50/p95/p99).
//! - `rss`: N messages of 1 KiB queued (10,000 then 100,000), then the peak
//!   RSS of this process while one worker (concurrency 32) drains them (the
//!   peak is reset after enqueueing, via `/proc/self/clear_refs`).
//! - `dlq`: 20,000 dead letters; listing them page by page (500 per page) and
//!   replaying them all page by page, with the process's peak RSS.
//!
//! Everything is written under a fresh schema / key prefix, removed at the end.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{extract::State, http::HeaderMap, routing::post, Router};
use hookgate_core::Scheme;
use hookgate_sender::{
    now_ms,
    queue::{Attempt, DeadLetter, DeliveryKey, DlqFilter, Page, PostgresQueue, Queue, RedisQueue},
    ssrf::SsrfPolicy,
    worker::Next,
    Endpoint, Message, Worker, WorkerHandle,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A backend under test, with its clean-up.
enum Backend {
    Postgres(PostgresQueue),
    Redis(Box<RedisQueue>),
}

impl Backend {
    async fn open(name: &str) -> Result<Self, BoxError> {
        let tag = format!("{:012x}", rand::random::<u64>() >> 16);
        Ok(match name {
            "postgres" => {
                let url = std::env::var("HOOKGATE_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                let q = PostgresQueue::connect_with_pool_size(&url, 16)
                    .await?
                    .with_schema(&format!("hg_bench_{tag}"))?;
                q.migrate().await?;
                Self::Postgres(q)
            }
            "redis" => {
                let url = std::env::var("HOOKGATE_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                Self::Redis(Box::new(
                    RedisQueue::connect(&url)
                        .await?
                        .with_prefix(&format!("hg-bench:{tag}:"))?,
                ))
            }
            other => return Err(format!("unknown backend {other:?}").into()),
        })
    }

    fn queue(&self) -> Arc<dyn Queue> {
        match self {
            Self::Postgres(q) => Arc::new(q.clone()),
            Self::Redis(q) => Arc::new((**q).clone()),
        }
    }

    async fn clean(&self) -> Result<(), BoxError> {
        match self {
            Self::Postgres(q) => q.drop_tables().await?,
            Self::Redis(q) => q.delete_all().await?,
        }
        Ok(())
    }
}

/// An axum receiver on 127.0.0.1:0 recording each `webhook-id`'s arrival.
#[derive(Default)]
struct Receiver {
    count: AtomicUsize,
    arrivals: Mutex<Vec<(String, Instant)>>,
    record: bool,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap) -> &'static str {
    r.count.fetch_add(1, Ordering::Relaxed);
    if r.record {
        if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
            r.arrivals
                .lock()
                .unwrap()
                .push((id.to_owned(), Instant::now()));
        }
    }
    "ok"
}

async fn start_receiver(record: bool) -> Result<(Arc<Receiver>, String), BoxError> {
    let r = Arc::new(Receiver {
        record,
        ..Receiver::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((r, url))
}

async fn put_endpoint(queue: &dyn Queue, url: &str) -> Result<(), BoxError> {
    let ep = Endpoint::new(
        "bench",
        url,
        Scheme::StandardWebhooks,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )?
    .with_timeout(Duration::from_secs(5))?;
    queue.put_endpoint(&ep).await?;
    Ok(())
}

/// A worker counting recorded deliveries in `delivered`.
fn worker(
    queue: Arc<dyn Queue>,
    concurrency: usize,
    poll: Duration,
    delivered: Arc<AtomicUsize>,
) -> Result<WorkerHandle, BoxError> {
    Ok(Worker::builder(queue)
        .with_concurrency(concurrency)
        .with_lease(Duration::from_secs(30))
        .with_max_request_timeout(Duration::from_secs(5))
        .with_poll_interval(poll)
        .with_ssrf_policy(SsrfPolicy::new().allow_private().allow_plain_http())
        .with_on_attempt(move |r| {
            if r.recorded && matches!(r.next, Next::Delivered) {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()?
        .spawn())
}

/// Enqueue `n` messages of `size` bytes with `tasks` concurrent enqueuers.
async fn fill(queue: &Arc<dyn Queue>, n: usize, size: usize, tasks: usize) -> Result<(), BoxError> {
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (queue, next, payload) = (queue.clone(), next.clone(), payload.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), BoxError>(());
                }
                let m = Message::new("bench.event", payload.clone()).with_id(format!("m{i:07}"));
                queue.enqueue("bench", &m).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

async fn wait_for(counter: &AtomicUsize, n: usize, limit: Duration) -> Result<(), BoxError> {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < n {
        if start.elapsed() > limit {
            return Err(format!(
                "only {} of {n} after {limit:?}",
                counter.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| {
        // Nearest-rank percentile.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    format!(
        "n={} p50={:.2} ms p95={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        p(0.50),
        p(0.95),
        p(0.99),
        p(1.0)
    )
}

/// `VmHWM` and `VmRSS` of this process, KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Reset the peak RSS (`VmHWM`) to the current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn bench_enqueue(b: &Backend) -> Result<(), BoxError> {
    let queue = b.queue();
    let payload = bytes::Bytes::from(vec![b'x'; 256]);
    let mut times = Vec::new();
    for i in 0..2000 {
        let m = Message::new("bench.event", payload.clone()).with_id(format!("e{i:06}"));
        let t = Instant::now();
        queue.enqueue("bench", &m).await?;
        times.push(t.elapsed());
    }
    println!("  enqueue (sequential, 256 B): {}", percentiles(times));
    Ok(())
}

async fn bench_throughput(b: &Backend) -> Result<(), BoxError> {
    const N: usize = 10_000;
    let queue = b.queue();
    let (_receiver, url) = start_receiver(false).await?;
    put_endpoint(&*queue, &url).await?;
    fill(&queue, N, 256, 16).await?;
    let delivered = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let w = worker(
        queue.clone(),
        64,
        Duration::from_millis(10),
        delivered.clone(),
    )?;
    wait_for(&delivered, N, Duration::from_secs(300)).await?;
    let took = start.elapsed();
    w.shutdown(Duration::from_secs(10)).await;
    let stats = queue.stats().await?;
    #[allow(clippy::cast_precision_loss)]
    let rate = N as f64 / took.as_secs_f64();
    println!(
        "  throughput: {N} deliveries in {:.2} s = {rate:.0} deliveries/s (1 worker, concurrency 64); left pending={}",
        took.as_secs_f64(),
        stats.pending()
    );
    Ok(())
}

async fn bench_latency(b: &Backend) -> Result<(), BoxError> {
    const RATE: u64 = 200;
    const SECONDS: u64 = 15;
    let queue = b.queue();
    let (receiver, url) = start_receiver(true).await?;
    put_endpoint(&*queue, &url).await?;
    let delivered = Arc::new(AtomicUsize::new(0));
    let w = worker(
        queue.clone(),
        32,
        Duration::from_millis(10),
        delivered.clone(),
    )?;
    let mut sent = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = usize::try_from(RATE * SECONDS)?;
    for i in 0..total {
        tick.tick().await;
        let m = Message::new("bench.event", "{}").with_id(format!("l{i:06}"));
        sent.insert(m.id.clone(), Instant::now());
        queue.enqueue("bench", &m).await?;
    }
    wait_for(&delivered, total, Duration::from_secs(60)).await?;
    w.shutdown(Duration::from_secs(10)).await;
    let arrivals = receiver.arrivals.lock().unwrap().clone();
    let times: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(id, at)| sent.get(id).map(|s| at.saturating_duration_since(*s)))
        .collect();
    println!(
        "  enqueue->delivery at {RATE} msg/s for {SECONDS} s (poll 10 ms): {}",
        percentiles(times)
    );
    Ok(())
}

async fn bench_rss(b: &Backend) -> Result<(), BoxError> {
    for n in [10_000usize, 100_000] {
        let queue = b.queue();
        b.clean().await?;
        if let Backend::Postgres(q) = b {
            q.migrate().await?;
        }
        let (_receiver, url) = start_receiver(false).await?;
        put_endpoint(&*queue, &url).await?;
        let t = Instant::now();
        fill(&queue, n, 1024, 32).await?;
        let filled = t.elapsed();
        let (_, before) = rss_kib();
        reset_peak_rss();
        let delivered = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let w = worker(
            queue.clone(),
            32,
            Duration::from_millis(10),
            delivered.clone(),
        )?;
        wait_for(&delivered, n, Duration::from_secs(900)).await?;
        let took = start.elapsed();
        w.shutdown(Duration::from_secs(10)).await;
        let (peak, _) = rss_kib();
        #[allow(clippy::cast_precision_loss)]
        let rate = n as f64 / took.as_secs_f64();
        println!(
            "  rss: {n} queued x 1 KiB (enqueued in {:.1} s); draining with 1 worker (concurrency 32) took {:.1} s ({rate:.0}/s); RSS before {} MiB, peak while draining {} MiB",
            filled.as_secs_f64(),
            took.as_secs_f64(),
            before / 1024,
            peak / 1024
        );
    }
    Ok(())
}

async fn bench_dlq(b: &Backend) -> Result<(), BoxError> {
    const N: usize = 20_000;
    const PAGE: usize = 500;
    let queue = b.queue();
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    let base = now_ms() - 1_000_000;
    for _ in 0..16 {
        let (queue, next) = (queue.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= N {
                    return Ok::<(), BoxError>(());
                }
                let id = format!("d{i:07}");
                let dead = DeadLetter {
                    key: DeliveryKey {
                        endpoint: "bench".into(),
                        message_id: id.clone(),
                    },
                    message: Message::new("bench.event", vec![b'x'; 1024]).with_id(id),
                    attempts: (0..3)
                        .map(|a| Attempt {
                            at_ms: base,
                            url: "http://127.0.0.1:9/hook".into(),
                            status: Some(500 + a),
                            latency_ms: 10,
                            error: None,
                        })
                        .collect(),
                    reason: hookgate_sender::queue::DeadReason::Exhausted {
                        last: "HTTP 500".into(),
                    },
                    dead_at_ms: base + i64::try_from(i / 4)?,
                };
                queue.add_dead_letter(&dead).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let (_, before) = rss_kib();
    reset_peak_rss();
    // List every page.
    let start = Instant::now();
    let (mut pages, mut seen, mut after) = (0, 0, None);
    let mut page_times = Vec::new();
    loop {
        let t = Instant::now();
        let page = queue
            .list_dead(
                &DlqFilter::default(),
                &Page {
                    after: after.clone(),
                    limit: PAGE,
                },
            )
            .await?;
        page_times.push(t.elapsed());
        if page.is_empty() {
            break;
        }
        pages += 1;
        seen += page.len();
        let last = page.last().map(|d| (d.dead_at_ms, d.key.clone()));
        after = last;
    }
    let listed = start.elapsed();
    // Replay everything, a page at a time (as `dlq replay --all`).
    let start = Instant::now();
    let mut replayed = 0;
    loop {
        let page = queue
            .list_dead(
                &DlqFilter::default(),
                &Page {
                    after: None,
                    limit: PAGE,
                },
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for d in &page {
            if queue.replay_dead(&d.key).await? {
                replayed += 1;
            }
        }
    }
    let replay_took = start.elapsed();
    let (peak, _) = rss_kib();
    let stats = queue.stats().await?;
    println!(
        "  dlq: {N} dead letters (1 KiB, 3 attempts each): listed {seen} in {pages} pages of {PAGE} in {:.2} s (page {}); replayed {replayed} page by page in {:.2} s; pending now {}; RSS before {} MiB, peak {} MiB",
        listed.as_secs_f64(),
        percentiles(page_times),
        replay_took.as_secs_f64(),
        stats.pending(),
        before / 1024,
        peak / 1024
    );
    Ok(())
}

async fn run(scenario: &str, backend: &str) -> Result<(), BoxError> {
    let b = Backend::open(backend).await?;
    println!("{backend}:");
    let result = async {
        match scenario {
            "enqueue" => bench_enqueue(&b).await,
            "throughput" => bench_throughput(&b).await,
            "latency" => bench_latency(&b).await,
            "rss" => bench_rss(&b).await,
            "dlq" => bench_dlq(&b).await,
            other => Err(format!("unknown scenario {other:?}").into()),
        }
    }
    .await;
    b.clean().await?;
    result
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().map_or("all", String::as_str);
    let backend = args.get(1).map_or("both", String::as_str);
    let scenarios: Vec<&str> = if scenario == "all" {
        vec!["enqueue", "throughput", "latency", "dlq", "rss"]
    } else {
        vec![scenario]
    };
    let backends: Vec<&str> = if backend == "both" {
        vec!["postgres", "redis"]
    } else {
        vec![backend]
    };
    for s in &scenarios {
        println!("== {s}");
        for b in &backends {
            run(s, b).await?;
        }
    }
    Ok(())
}
