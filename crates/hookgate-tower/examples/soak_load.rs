//! Load generator for `scripts/soak.sh`: signed, distinct Standard Webhooks
//! events against a receiver on loopback, at a fixed rate or as fast as the
//! receiver answers, with one report line per window.
//!
//! ```text
//! cargo run --release -p hookgate-tower --example soak_load -- \
//!     --url http://127.0.0.1:3000/webhooks --secret whsec_... --rate 4000 --duration 60s
//! ```
//!
//! Unlike wrk, it signs every request itself (fresh id, current timestamp),
//! so a run of any length stays within the receiver's timestamp tolerance,
//! and at a fixed rate it is open-loop: request `k` is due at `start +
//! k / rate`, and its latency counts from that due time, not from when a
//! connection became free (no coordinated omission: a stalled receiver shows
//! up as latency, not as fewer requests).
//!
//! Options (all `--name value`):
//! - `--url` (required), `--secret` (required, `whsec_...`);
//! - `--rate` requests per second, `0` = as fast as possible (default 0);
//! - `--connections` (64), `--duration` (60s), `--window` (10s),
//!   `--body-bytes` (1024), `--tag` (id prefix, default random);
//! - `--pid` the receiver's pid: its RSS (`VmRSS`) is read at each window end;
//! - `--probe` a shell command run at each window end; its first output line
//!   is appended to the window's line (store size, dead tuples, ...).
//!
//! Output: a header, then per window (tab-separated) `window end_s requests
//! req_per_s ok non2xx errors p50_ms p99_ms p999_ms max_ms rss_kib load1
//! io_full_pct probe...` (`load1`: the machine's load average; `io_full_pct`:
//! `/proc/pressure/io` "full avg10", the share of time every runnable task
//! waited on I/O — the fsync weather a Postgres commit runs in),
//! then a `total` line. Latencies are exact (every request's latency is kept
//! for its window and sorted).

use hookgate_core::{Scheme, Secret, Signer};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Opts {
    url: String,
    secret: String,
    rate: f64,
    connections: usize,
    duration: Duration,
    window: Duration,
    body_bytes: usize,
    tag: String,
    pid: Option<u32>,
    probe: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, BoxError> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration {s:?}").into()),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn opts() -> Result<Opts, BoxError> {
    let mut o = Opts {
        url: String::new(),
        secret: String::new(),
        rate: 0.0,
        connections: 64,
        duration: Duration::from_secs(60),
        window: Duration::from_secs(10),
        body_bytes: 1024,
        tag: format!("{:08x}", rand::random::<u32>()),
        pid: None,
        probe: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(name) = args.next() {
        let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        match name.as_str() {
            "--url" => o.url = value,
            "--secret" => o.secret = value,
            "--rate" => o.rate = value.parse()?,
            "--connections" => o.connections = value.parse::<usize>()?.max(1),
            "--duration" => o.duration = parse_duration(&value)?,
            "--window" => o.window = parse_duration(&value)?,
            "--body-bytes" => o.body_bytes = value.parse()?,
            "--tag" => o.tag = value,
            "--pid" => o.pid = Some(value.parse()?),
            "--probe" => o.probe = Some(value),
            _ => return Err(format!("unknown option {name}").into()),
        }
    }
    if o.url.is_empty() || o.secret.is_empty() {
        return Err("--url and --secret are required".into());
    }
    if o.window.is_zero() {
        return Err("--window must be positive".into());
    }
    Ok(o)
}

/// Per-window counters; latencies in microseconds.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u32>,
    ok: u64,
    non2xx: u64,
    errors: u64,
}

struct Shared {
    opts: Opts,
    signer: Signer,
    body: Bytes,
    host: String,
    path: String,
    addr: String,
    start: Instant,
    next: AtomicU64,
    stop: AtomicBool,
    window: Mutex<Window>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

async fn connection(shared: Arc<Shared>) -> Result<(), BoxError> {
    'reconnect: while !shared.stop.load(Ordering::Relaxed) {
        let stream = match tokio::net::TcpStream::connect(&shared.addr).await {
            Ok(s) => s,
            Err(_) => {
                shared.window.lock().map_err(|_| "poisoned")?.errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let k = shared.next.fetch_add(1, Ordering::Relaxed);
            // Open loop: request k is due at start + k / rate.
            let due = if shared.opts.rate > 0.0 {
                let due = shared.start + Duration::from_secs_f64(k as f64 / shared.opts.rate);
                if due >= shared.start + shared.opts.duration {
                    return Ok(());
                }
                tokio::time::sleep_until(due.into()).await;
                due
            } else {
                Instant::now()
            };
            let id = format!("msg_{}_{k}", shared.opts.tag);
            let mut req = Request::post(&shared.path).header("host", &shared.host);
            for (name, value) in shared.signer.sign(&id, unix_now(), &shared.body) {
                req = req.header(name, value);
            }
            let req = req
                .header("content-type", "application/json")
                .body(Full::new(shared.body.clone()))?;
            if sender.ready().await.is_err() {
                shared.window.lock().map_err(|_| "poisoned")?.errors += 1;
                continue 'reconnect;
            }
            let outcome = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.into_body().collect().await {
                        Ok(_) => Some(status.is_success()),
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            };
            let latency = due.elapsed();
            let mut w = shared.window.lock().map_err(|_| "poisoned")?;
            match outcome {
                Some(true) => w.ok += 1,
                Some(false) => w.non2xx += 1,
                None => {
                    w.errors += 1;
                    drop(w);
                    continue 'reconnect;
                }
            }
            w.latencies_us
                .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn rss_kib(pid: Option<u32>) -> String {
    let Some(pid) = pid else { return "-".into() };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "-".into())
}

async fn probe(cmd: Option<&str>) -> String {
    let Some(cmd) = cmd.map(str::to_owned) else {
        return String::new();
    };
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh").arg("-c").arg(cmd).output()
    })
    .await;
    match out {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .replace('|', "\t"),
        Ok(Err(e)) => format!("probe failed: {e}"),
        Err(e) => format!("probe failed: {e}"),
    }
}

/// The machine's state: 1-minute load average and the share of the last
/// 10 s in which every runnable task waited on I/O (`/proc/pressure/io`,
/// `full avg10`).
fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".into());
    let io_full = std::fs::read_to_string("/proc/pressure/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("full"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|f| f.strip_prefix("avg10=").map(str::to_owned))
        })
        .unwrap_or_else(|| "-".into());
    format!("{load}\t{io_full}")
}

fn line(label: &str, end_s: f64, secs: f64, w: &mut Window, rss: &str, probe: &str) -> String {
    w.latencies_us.sort_unstable();
    let n = w.ok + w.non2xx;
    format!(
        "{label}\t{end_s:.1}\t{n}\t{:.0}\t{}\t{}\t{}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{rss}\t{}\t{probe}",
        n as f64 / secs,
        w.ok,
        w.non2xx,
        w.errors,
        percentile(&w.latencies_us, 50.0),
        percentile(&w.latencies_us, 99.0),
        percentile(&w.latencies_us, 99.9),
        percentile(&w.latencies_us, 100.0),
        machine(),
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let opts = opts()?;
    let rest = opts
        .url
        .strip_prefix("http://")
        .ok_or("only http:// URLs (loopback)")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let secret = Secret::for_scheme(Scheme::StandardWebhooks, &opts.secret)?;
    let prefix = r#"{"type":"invoice.paid","data":{"note":""#;
    let suffix = r#""}}"#;
    let fill = opts.body_bytes.saturating_sub(prefix.len() + suffix.len());
    let body = Bytes::from(format!("{prefix}{}{suffix}", "x".repeat(fill)));
    let shared = Arc::new(Shared {
        signer: Signer::new(Scheme::StandardWebhooks, secret),
        body,
        host: authority.to_owned(),
        path: path.to_owned(),
        addr: authority.to_owned(),
        start: Instant::now(),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        window: Mutex::new(Window::default()),
        opts: opts.clone(),
    });
    println!(
        "window\tend_s\trequests\treq_per_s\tok\tnon2xx\terrors\tp50_ms\tp99_ms\tp999_ms\tmax_ms\trss_kib\tload1\tio_full_pct\tprobe"
    );
    let tasks: Vec<_> = (0..opts.connections)
        .map(|_| tokio::spawn(connection(shared.clone())))
        .collect();
    let mut total = Window::default();
    let mut ticks = tokio::time::interval_at((shared.start + opts.window).into(), opts.window);
    let mut last = shared.start;
    let mut index = 0;
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let done = now >= shared.start + opts.duration;
        if done {
            shared.stop.store(true, Ordering::Relaxed);
        }
        let mut w = std::mem::take(&mut *shared.window.lock().map_err(|_| "poisoned")?);
        let rss = rss_kib(opts.pid);
        let probe = probe(opts.probe.as_deref()).await;
        index += 1;
        let secs = now.duration_since(last).as_secs_f64();
        println!(
            "{}",
            line(
                &index.to_string(),
                now.duration_since(shared.start).as_secs_f64(),
                secs,
                &mut w,
                &rss,
                &probe
            )
        );
        last = now;
        total.ok += w.ok;
        total.non2xx += w.non2xx;
        total.errors += w.errors;
        total.latencies_us.append(&mut w.latencies_us);
        if done {
            break;
        }
    }
    let elapsed = last.duration_since(shared.start).as_secs_f64();
    for t in tasks {
        t.abort();
    }
    println!(
        "{}",
        line(
            "total",
            elapsed,
            elapsed,
            &mut total,
            &rss_kib(opts.pid),
            ""
        )
    );
    Ok(())
}
