//! Sender throughput: deliveries per second from one worker to a local
//! receiver, enqueue latency, and peak RSS.
//!
//! ```sh
//! cargo bench -p hookgate-sender --bench sender_throughput -- [--queue memory|postgres|redis] [--messages N] [--concurrency N] [--payload BYTES]
//! cargo bench -p hookgate-sender --bench sender_throughput -- --queue postgres --rate 200 --seconds 20
//! ```
//!
//! With `--rate`, the worker runs while messages are enqueued at that rate
//! for `--seconds`, and the receiver measures the latency from the start of
//! each `enqueue` call to the request's arrival (p50/p95/p99).
//!
//! The receiver is an axum route on 127.0.0.1 in the same process (it shares
//! the CPU with the worker). Messages are enqueued first (each `enqueue`
//! timed), then one worker delivers them all; the wall time from the
//! worker's start to the last delivery gives deliveries/s. Postgres and Redis
//! run in a fresh namespace that is removed afterwards
//! (`HOOKGATE_POSTGRES_URL`, `HOOKGATE_REDIS_URL`).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{routing::post, Router};
use hookgate_core::Scheme;
use hookgate_sender::{ssrf::SsrfPolicy, Endpoint, MemoryQueue, Message, Queue, Sender, Worker};

#[derive(Debug)]
struct Opts {
    queue: String,
    messages: usize,
    concurrency: usize,
    payload: usize,
    rate: Option<u64>,
    seconds: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        queue: "memory".into(),
        messages: 20_000,
        concurrency: 64,
        payload: 256,
        rate: None,
        seconds: 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--queue" => o.queue = val,
            "--messages" => o.messages = val.parse().expect("--messages N"),
            "--concurrency" => o.concurrency = val.parse().expect("--concurrency N"),
            "--payload" => o.payload = val.parse().expect("--payload BYTES"),
            "--rate" => o.rate = Some(val.parse().expect("--rate PER_SECOND")),
            "--seconds" => o.seconds = val.parse().expect("--seconds N"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn open(kind: &str) -> (Arc<dyn Queue>, Option<Box<dyn FnOnce() -> CleanupFut>>) {
    match kind {
        "memory" => (Arc::new(MemoryQueue::new()), None),
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = std::env::var("HOOKGATE_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let q = hookgate_sender::queue::PostgresQueue::connect(&url)
                .await
                .expect("Postgres reachable")
                .with_schema(&namespace())
                .unwrap();
            q.migrate().await.unwrap();
            let q = Arc::new(q);
            let c = q.clone();
            let cleanup: Box<dyn FnOnce() -> CleanupFut> =
                Box::new(move || Box::pin(async move { c.drop_tables().await.unwrap() }));
            (q, Some(cleanup))
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let url = std::env::var("HOOKGATE_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let q = hookgate_sender::queue::RedisQueue::connect(&url)
                .await
                .expect("Redis reachable")
                .with_prefix(&format!("{}:q:", namespace()))
                .unwrap();
            let q = Arc::new(q);
            let c = q.clone();
            let cleanup: Box<dyn FnOnce() -> CleanupFut> =
                Box::new(move || Box::pin(async move { c.delete_all().await.unwrap() }));
            (q, Some(cleanup))
        }
        other => panic!("unknown or disabled queue {other:?} (enable the feature)"),
    }
}

/// A fresh namespace for the Postgres schema or the Redis key prefix.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn namespace() -> String {
    format!("hg_bench_{:012x}", rand::random::<u64>() >> 16)
}

type CleanupFut = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if o.rate.is_some() {
        rt.block_on(run_rate(o));
    } else {
        rt.block_on(run(o));
    }
}

async fn run(o: Opts) {
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    let app = Router::new().route(
        "/hook",
        post(move || {
            s.fetch_add(1, Ordering::Relaxed);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (queue, cleanup) = open(&o.queue).await;
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new(
                "bench",
                url,
                Scheme::StandardWebhooks,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .unwrap(),
        )
        .await
        .unwrap();

    let payload = format!(
        r#"{{"pad":"{}"}}"#,
        "x".repeat(o.payload.saturating_sub(10))
    );
    let mut latencies = Vec::with_capacity(o.messages);
    let enqueue_start = Instant::now();
    for _ in 0..o.messages {
        let m = Message::new("bench", payload.clone());
        let t = Instant::now();
        sender.enqueue("bench", m).await.unwrap();
        latencies.push(t.elapsed());
    }
    let enqueue_total = enqueue_start.elapsed();
    latencies.sort();

    let delivered = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (d, n, total) = (delivered.clone(), done.clone(), o.messages);
    let start = Instant::now();
    let worker = Worker::builder(queue.clone())
        .with_concurrency(o.concurrency)
        .with_ssrf_policy(
            SsrfPolicy::default()
                .allow("127.0.0.0/8".parse().unwrap())
                .allow_plain_http(),
        )
        .with_poll_interval(Duration::from_millis(5))
        .with_on_attempt(move |_| {
            if d.fetch_add(1, Ordering::Relaxed) + 1 == total {
                n.notify_one();
            }
        })
        .build()
        .unwrap()
        .spawn();
    tokio::time::timeout(Duration::from_secs(600), done.notified())
        .await
        .expect("all delivered within 10 minutes");
    let elapsed = start.elapsed();
    worker.shutdown(Duration::from_secs(5)).await;
    let stats = queue.stats().await.unwrap();
    if let Some(c) = cleanup {
        c().await;
    }

    println!("queue: {}", o.queue);
    println!(
        "messages: {}, payload: {} bytes, worker concurrency: {}",
        o.messages,
        payload.len(),
        o.concurrency
    );
    println!(
        "enqueue: {:.0}/s; latency p50 {:?}, p95 {:?}, p99 {:?}, max {:?}",
        o.messages as f64 / enqueue_total.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "delivered: {} in {:.2?} = {:.0} deliveries/s (receiver counted {})",
        delivered.load(Ordering::Relaxed),
        elapsed,
        o.messages as f64 / elapsed.as_secs_f64(),
        served.load(Ordering::Relaxed)
    );
    println!(
        "queue after: pending {}, dead {}",
        stats.pending(),
        stats.dead
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak RSS (whole process, receiver included): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
}

/// Enqueue at a fixed rate while one worker delivers; report enqueue-to-delivery latency.
async fn run_rate(o: Opts) {
    let rate = o.rate.unwrap_or(200).max(1);
    let origin = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let l = latencies.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let arrived = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
            // Body: {"t":<micros since origin at enqueue>,...}
            let t = std::str::from_utf8(&body)
                .ok()
                .and_then(|s| s.strip_prefix(r#"{"t":"#))
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(t) = t {
                l.lock().unwrap().push(arrived.saturating_sub(t));
            }
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (queue, cleanup) = open(&o.queue).await;
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new(
                "bench",
                url,
                Scheme::StandardWebhooks,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    let worker = Worker::builder(queue.clone())
        .with_concurrency(o.concurrency)
        .with_ssrf_policy(
            SsrfPolicy::default()
                .allow("127.0.0.0/8".parse().unwrap())
                .allow_plain_http(),
        )
        .with_poll_interval(Duration::from_millis(5))
        .with_on_attempt(move |_| {
            d.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap()
        .spawn();

    let total = rate * o.seconds;
    let pad = "x".repeat(o.payload.saturating_sub(40));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        tick.tick().await;
        let t = origin.elapsed().as_micros();
        let m = Message::new("bench", format!(r#"{{"t":{t},"pad":"{pad}"}}"#));
        sender.enqueue("bench", m).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered.load(Ordering::Relaxed) < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await;
    if let Some(c) = cleanup {
        c().await;
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let q = |p: f64| {
        let i = ((lat.len().max(1) - 1) as f64 * p).round() as usize;
        Duration::from_micros(lat.get(i).copied().unwrap_or(0))
    };
    println!("queue: {}", o.queue);
    println!(
        "rate: {rate}/s for {} s ({total} messages), worker concurrency {}",
        o.seconds, o.concurrency
    );
    println!(
        "enqueue-to-delivery over {} deliveries: p50 {:?}, p95 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        q(0.50),
        q(0.95),
        q(0.99),
        q(1.0)
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak RSS (whole process, receiver included): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
}
