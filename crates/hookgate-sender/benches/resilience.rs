//! Resilience figures for BENCHMARKS.md: noisy neighbours and the shared
//! rate limit, against receivers on 127.0.0.1 in this process.
//!
//! ```text
//! cargo bench -p hookgate-sender --all-features --bench resilience -- [noisy|rate|all] [--queue memory|redis] [--seconds N]
//! ```
//!
//! - `noisy`: a healthy endpoint gets a steady 100 messages/s for N seconds
//!   (default 10) from one worker (concurrency 16). Three runs: the healthy
//!   endpoint alone (baseline); beside a black-holed endpoint (accepts,
//!   never answers; 2 s timeout) that also gets 50 messages/s, with the
//!   worker's per-endpoint in-flight cap at 4; and the same without a cap.
//!   Reported: the healthy endpoint's enqueue-to-arrival p50/p95/p99.
//! - `rate`: two workers, 300 messages queued for an endpoint limited to
//!   20/s, a receiver that never throttles: arrivals per 5 s window; then a
//!   receiver that answers 429 above 15/s behind a 50/s limit: the accepted
//!   rate per 5 s window.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{http::HeaderMap, response::IntoResponse, Router};
use hookgate_core::Scheme;
use hookgate_sender::{
    limiter::RateLimit, retry::RetryPolicy, ssrf::SsrfPolicy, Endpoint, MemoryQueue, Message,
    Queue, Sender, Worker,
};

type Arrivals = Arc<Mutex<Vec<(i64, String)>>>;

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Records (arrival ms, message id); answers 200, or 429 above `limit`/s when given.
async fn receiver(limit: Option<usize>) -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let a = arrivals.clone();
    let addr = serve(Router::new().fallback(move |headers: HeaderMap| {
        let a = a.clone();
        async move {
            let now = hookgate_sender::now_ms();
            let mut a = a.lock().unwrap();
            if let Some(limit) = limit {
                let recent = a.iter().rev().take_while(|(t, _)| *t > now - 1000).count();
                if recent >= limit {
                    return axum::http::StatusCode::TOO_MANY_REQUESTS.into_response();
                }
            }
            let id = headers
                .get("x-github-delivery")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            a.push((now, id));
            axum::http::StatusCode::OK.into_response()
        }
    }))
    .await;
    (format!("http://{addr}/"), arrivals)
}

async fn black_hole() -> String {
    let addr = serve(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "never"
    }))
    .await;
    format!("http://{addr}/")
}

/// The queue, and for Redis the queue itself (its keys are deleted at the end).
async fn open_queue(kind: &str) -> (Arc<dyn Queue>, Option<hookgate_sender::queue::RedisQueue>) {
    match kind {
        "redis" => {
            let url = std::env::var("HOOKGATE_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let q = hookgate_sender::queue::RedisQueue::connect(&url)
                .await
                .expect("connect to Redis")
                .with_prefix(&format!("hg-bench:{:012x}:", rand::random::<u64>() >> 16))
                .unwrap();
            (Arc::new(q.clone()), Some(q))
        }
        _ => (Arc::new(MemoryQueue::new()), None),
    }
}

async fn cleanup(redis: Option<hookgate_sender::queue::RedisQueue>) {
    if let Some(q) = redis {
        q.delete_all().await.expect("delete bench keys");
    }
}

fn worker(queue: Arc<dyn Queue>, concurrency: usize, cap: Option<usize>) -> Worker {
    let mut b = Worker::builder(queue)
        .with_ssrf_policy(SsrfPolicy::default().allow("127.0.0.0/8".parse().unwrap()))
        .with_retry_policy(
            RetryPolicy::default()
                .with_base_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(1))
                .with_max_attempts(50),
        )
        .with_concurrency(concurrency)
        .with_poll_interval(Duration::from_millis(5))
        .with_lease(Duration::from_secs(10))
        .with_max_request_timeout(Duration::from_secs(5))
        .with_busy_delay(Duration::from_millis(250))
        .with_health_probe_interval(None);
    if let Some(cap) = cap {
        b = b.with_max_in_flight_per_endpoint(cap);
    }
    b.build().unwrap()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn noisy_run(kind: &str, seconds: u64, hole: bool, cap: Option<usize>) -> String {
    let (queue, redis) = open_queue(kind).await;
    let sender = Sender::new(queue.clone());
    let (url, arrivals) = receiver(None).await;
    let run = format!("{:012x}", rand::random::<u64>() >> 16);
    let ok_id = format!("ok-{run}");
    let hole_id = format!("hole-{run}");
    sender
        .add_endpoint(Endpoint::new(&ok_id, url, Scheme::GitHub, "s").unwrap())
        .await
        .unwrap();
    if hole {
        sender
            .add_endpoint(
                Endpoint::new(&hole_id, black_hole().await, Scheme::GitHub, "s")
                    .unwrap()
                    .with_timeout(Duration::from_secs(2))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let handle = worker(queue.clone(), 16, cap).spawn();
    let sent: Arc<Mutex<std::collections::HashMap<String, i64>>> = Arc::default();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        // 1 healthy message per tick (100/s), a black-holed one every other tick (50/s).
        let m = Message::new("t", "{}").with_id(format!("k{n}"));
        sent.lock()
            .unwrap()
            .insert(m.id.clone(), hookgate_sender::now_ms());
        sender.enqueue(&ok_id, m).await.unwrap();
        if hole && n.is_multiple_of(2) {
            sender
                .enqueue(&hole_id, Message::new("t", "{}").with_id(format!("h{n}")))
                .await
                .unwrap();
        }
        n += 1;
    }
    // Let the last healthy ones arrive (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    while arrivals.lock().unwrap().len() < n as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown(Duration::ZERO).await;
    cleanup(redis).await;
    let sent = sent.lock().unwrap();
    let mut lat: Vec<i64> = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(at, id)| sent.get(id).map(|s| at - s))
        .collect();
    lat.sort_unstable();
    let label = match (hole, cap) {
        (false, _) => "healthy only (baseline)".to_owned(),
        (true, Some(c)) => format!("+ black hole, cap {c} of 16"),
        (true, None) => "+ black hole, no cap".to_owned(),
    };
    format!(
        "| {kind} | {label} | {}/{n} | {} ms | {} ms | {} ms |",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        percentile(&lat, 0.99)
    )
}

fn windows(times: &mut [i64], width_ms: i64) -> Vec<usize> {
    times.sort_unstable();
    let Some(&first) = times.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut start = first;
    while start <= *times.last().unwrap() {
        out.push(
            times
                .iter()
                .filter(|&&t| t >= start && t < start + width_ms)
                .count(),
        );
        start += width_ms;
    }
    out
}

async fn rate_run(kind: &str, throttle: bool) -> String {
    let (queue, redis) = open_queue(kind).await;
    let sender = Sender::new(queue.clone());
    let (url, arrivals) = receiver(throttle.then_some(15)).await;
    let id = format!("rl-{:012x}", rand::random::<u64>() >> 16);
    let max = if throttle { 50.0 } else { 20.0 };
    sender
        .add_endpoint(
            Endpoint::new(&id, url, Scheme::GitHub, "s")
                .unwrap()
                .with_rate_limit(RateLimit::per_second(max).unwrap()),
        )
        .await
        .unwrap();
    let n = 300;
    for i in 0..n {
        sender
            .enqueue(&id, Message::new("t", "{}").with_id(format!("m{i}")))
            .await
            .unwrap();
    }
    let w1 = worker(queue.clone(), 8, None).spawn();
    let w2 = worker(queue.clone(), 8, None).spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w1.shutdown(Duration::ZERO).await;
    w2.shutdown(Duration::ZERO).await;
    let mut times: Vec<i64> = arrivals.lock().unwrap().iter().map(|(t, _)| *t).collect();
    let got = times.len();
    let per_window: Vec<String> = windows(&mut times, 5000)
        .iter()
        .map(|c| format!("{:.1}", *c as f64 / 5.0))
        .collect();
    let dead = queue.stats().await.map(|s| s.dead).unwrap_or(0);
    cleanup(redis).await;
    format!(
        "| {kind} | {} | {got}/{n} | {} | {dead} |",
        if throttle {
            "limit 50/s, receiver 429 above 15/s"
        } else {
            "limit 20/s, receiver never throttles"
        },
        per_window.join(", ")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args
        .iter()
        .find(|a| ["noisy", "rate", "all"].contains(&a.as_str()))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let kind = flag("--queue").unwrap_or_else(|| "memory".into());
    let seconds: u64 = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if scenario == "noisy" || scenario == "all" {
            println!("| queue | run | healthy arrived | p50 | p95 | p99 |");
            println!("|---|---|---|---|---|---|");
            println!("{}", noisy_run(&kind, seconds, false, None).await);
            println!("{}", noisy_run(&kind, seconds, true, Some(4)).await);
            println!("{}", noisy_run(&kind, seconds, true, None).await);
        }
        if scenario == "rate" || scenario == "all" {
            println!("| queue | setup | arrived | accepted/s per 5 s window | dead |");
            println!("|---|---|---|---|---|");
            println!("{}", rate_run(&kind, false).await);
            println!("{}", rate_run(&kind, true).await);
        }
    });
}
