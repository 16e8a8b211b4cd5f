//! The default `hookgate demo`: N events through real faults, with numbers.
//!
//! Everything runs in this process on 127.0.0.1:
//!
//! - a **receiver**: an axum handler behind the verifying, deduplicating
//!   layer (memory store, or the Redis / Postgres store of `--store`). The
//!   handler's *effect* (think "mark the order paid") is counted per event;
//!   the run checks at the end that it happened exactly once for every event.
//! - a **fault injector** in front of the receiver, on the raw connection,
//!   which gives each event at most one fault chosen from the seed: the
//!   handler fails with 500 once or twice; the response is lost after the
//!   handler ran (the connection is dropped, so the sender must retry an event
//!   that was already processed); 429 with `Retry-After: 1`; a slow answer;
//!   the event is sent twice (to a second endpoint with the same URL); an
//!   outage (503 until the end, so the event exhausts its attempts into the
//!   dead-letter queue and is replayed from there); the event goes to an
//!   endpoint whose primary URL is down (its circuit breaker opens and the
//!   deliveries fail over to the backup URL).
//! - a **sender**: queue (memory, or `--store`) and worker, SSRF guard on with
//!   loopback allow-listed, retries with full jitter.
//! - an **attacker** task sending forged signatures, stale captures (for
//!   schemes that sign a timestamp) and replays of delivered events.
//!
//! The seed fixes which event gets which fault and the retry jitter, so a run
//! repeats with `--seed`; latencies vary with the machine.

use std::{
    io::IsTerminal as _,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{body::Body, extract::Extension, http::StatusCode, routing::post, Router};
use bytes::Bytes;
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_sender::{
    breaker::BreakerConfig,
    queue::{DlqFilter, Page},
    retry::RetryPolicy,
    ssrf::SsrfPolicy,
    worker::{AttemptReport, Next},
    Endpoint, MemoryQueue, Message, Queue, Sender, Worker,
};
use hookgate_tower::{
    store::{BoxFuture, Claim, ClaimToken, Digest, DoneRecord},
    DedupStore, VerifyWebhookLayer,
};
use http_body_util::BodyExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use tower::ServiceExt as _;

/// What `run` needs.
#[derive(Debug)]
pub(super) struct Options {
    pub(super) scheme: Scheme,
    pub(super) events: u32,
    pub(super) seed: u64,
    pub(super) store: String,
    /// `false`: a store that forgets every claim (test-only switch).
    pub(super) dedup: bool,
}

/// The secret both sides share.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The attacker's guess.
const WRONG_SECRET: &str = "whsec_bm90IHRoZSBzZWNyZXQgYXQgYWxsIQ==";
/// Marks the attacker's requests so the fault injector leaves them alone.
const ATTACKER: &str = "x-demo-attacker";
/// How long a slow answer takes.
const SLOW: Duration = Duration::from_millis(300);
/// How long the whole run may take before it gives up waiting.
const PATIENCE: Duration = Duration::from_secs(180);

/// The one fault an event meets, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The handler fails with 500 on its first `n` runs.
    HandlerFails(u32),
    /// The handler runs, then the connection drops before the response.
    LostResponse,
    /// The first arrival is answered 429 with `Retry-After: 1`.
    Throttled,
    /// Every arrival is answered after [`SLOW`].
    Slow,
    /// The sender delivers the event twice (two endpoints, one URL).
    SentTwice,
    /// 503 until the outage ends: dead-lettered, then replayed.
    Outage,
    /// Sent to an endpoint whose primary URL is down: its circuit breaker
    /// opens and deliveries fail over to the backup URL.
    PrimaryDown,
}

/// The fault plan: one fault (or none) per event, from the seed.
fn plan(events: u32, rng: &mut StdRng) -> Vec<Fault> {
    (0..events)
        .map(|_| match rng.gen_range(0..100u32) {
            0..=11 => Fault::HandlerFails(rng.gen_range(1..=2)),
            12..=19 => Fault::LostResponse,
            20..=25 => Fault::Throttled,
            26..=31 => Fault::Slow,
            32..=37 => Fault::SentTwice,
            38..=39 => Fault::Outage,
            40..=47 => Fault::PrimaryDown,
            _ => Fault::None,
        })
        .collect()
}

fn count(plan: &[Fault], f: impl Fn(&Fault) -> bool) -> usize {
    plan.iter().filter(|x| f(x)).count()
}

/// The receiver's side: what arrived, what ran, what took effect.
struct Receiver {
    plan: Vec<Fault>,
    /// Arrivals from the sender, per event.
    arrivals: Vec<AtomicU32>,
    /// Handler runs, per event.
    runs: Vec<AtomicU32>,
    /// Handler effects (runs that succeeded), per event.
    effects: Vec<AtomicU32>,
    /// Effects of events the sender never sent (the attacker's).
    stray_effects: AtomicU32,
    outage: AtomicBool,
    lost_responses: AtomicU32,
    throttled: AtomicU32,
    slow: AtomicU32,
    outage_refusals: AtomicU32,
    /// Answers to the sender from the dedup store (`Idempotent-Replayed`).
    replayed_to_sender: AtomicU32,
    /// `409`: the same event in flight on another connection.
    in_flight_conflicts: AtomicU32,
}

impl Receiver {
    fn new(plan: Vec<Fault>) -> Self {
        let n = plan.len();
        let zeros = || (0..n).map(|_| AtomicU32::new(0)).collect::<Vec<_>>();
        Self {
            arrivals: zeros(),
            runs: zeros(),
            effects: zeros(),
            plan,
            stray_effects: AtomicU32::new(0),
            outage: AtomicBool::new(true),
            lost_responses: AtomicU32::new(0),
            throttled: AtomicU32::new(0),
            slow: AtomicU32::new(0),
            outage_refusals: AtomicU32::new(0),
            replayed_to_sender: AtomicU32::new(0),
            in_flight_conflicts: AtomicU32::new(0),
        }
    }
}

fn message_id(seq: usize) -> String {
    format!("evt_{seq:06}")
}

fn seq_of_message_id(id: &str) -> Option<usize> {
    id.strip_prefix("evt_")?.parse().ok()
}

/// The event's body; Stripe carries the id inside it.
fn body_for(seq: usize) -> String {
    const TYPES: [&str; 4] = [
        "order.created",
        "order.paid",
        "order.shipped",
        "order.refunded",
    ];
    serde_json::json!({
        "id": message_id(seq),
        "type": TYPES[seq % TYPES.len()],
        "seq": seq,
        "data": { "order": 1000 + seq, "amount": 4200 + (seq % 97) * 10 }
    })
    .to_string()
}

fn seq_of_body(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    usize::try_from(v.get("seq")?.as_u64()?).ok()
}

/// The connection is dropped without an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injected: response lost")
    }
}

impl std::error::Error for DropConnection {}

/// The fault injector: in front of the receiver's app, on the raw connection.
async fn front(
    rx: Arc<Receiver>,
    app: Router,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, DropConnection> {
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map_err(|_| DropConnection)?.to_bytes();
    let attacker = parts.headers.contains_key(ATTACKER);
    let seq = seq_of_body(&bytes).filter(|s| *s < rx.plan.len() && !attacker);
    let (fault, arrival) = match seq {
        Some(s) => (rx.plan[s], rx.arrivals[s].fetch_add(1, Relaxed) + 1),
        None => (Fault::None, 0),
    };
    match fault {
        Fault::Throttled if arrival == 1 => {
            rx.throttled.fetch_add(1, Relaxed);
            return Ok(http::Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", "1")
                .body(Body::empty())
                .expect("static response"));
        }
        Fault::Outage if rx.outage.load(Relaxed) => {
            rx.outage_refusals.fetch_add(1, Relaxed);
            return Ok(http::Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Body::empty())
                .expect("static response"));
        }
        Fault::Slow => {
            rx.slow.fetch_add(1, Relaxed);
            tokio::time::sleep(SLOW).await;
        }
        _ => {}
    }
    let resp = app
        .oneshot(http::Request::from_parts(parts, Body::from(bytes)))
        .await
        .unwrap_or_else(|never| match never {});
    if seq.is_some() {
        if resp
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
        {
            rx.replayed_to_sender.fetch_add(1, Relaxed);
        }
        if resp.status() == StatusCode::CONFLICT {
            rx.in_flight_conflicts.fetch_add(1, Relaxed);
        }
    }
    if fault == Fault::LostResponse && arrival == 1 && resp.status().is_success() {
        rx.lost_responses.fetch_add(1, Relaxed);
        return Err(DropConnection);
    }
    Ok(resp)
}

/// The application's handler: runs only for verified, first-seen events.
async fn handle(Extension(rx): Extension<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let Some(seq) = seq_of_body(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    if seq >= rx.plan.len() {
        rx.stray_effects.fetch_add(1, Relaxed);
        return StatusCode::OK;
    }
    let run = rx.runs[seq].fetch_add(1, Relaxed) + 1;
    if let Fault::HandlerFails(n) = rx.plan[seq] {
        if run <= n {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    // The effect: in a real handler, "mark order 1042 paid".
    rx.effects[seq].fetch_add(1, Relaxed);
    StatusCode::OK
}

/// The sender's side, from the worker's attempt reports.
struct Tally {
    start: Instant,
    /// When each event was enqueued, in µs since `start` (+1; 0 = not yet).
    enqueued_us: Vec<AtomicU64>,
    latencies_us: Mutex<Vec<u64>>,
    attempts: AtomicU32,
    retries: AtomicU32,
    deferred: AtomicU32,
    delivered: AtomicU32,
    delivered_twice_sent: AtomicU32,
    dead: AtomicU32,
    /// Attempts to the failover endpoint's primary URL (which is down).
    primary_refused: AtomicU32,
    /// Deliveries through the failover endpoint's backup URL.
    via_backup: AtomicU32,
    /// Finished deliveries (delivered or dead), for the progress bar.
    finished: AtomicU32,
    /// The primary URL that is down.
    primary: String,
}

impl Tally {
    fn new(events: usize, primary: String) -> Self {
        Self {
            primary_refused: AtomicU32::new(0),
            via_backup: AtomicU32::new(0),
            primary,
            start: Instant::now(),
            enqueued_us: (0..events).map(|_| AtomicU64::new(0)).collect(),
            latencies_us: Mutex::new(Vec::with_capacity(events)),
            attempts: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            deferred: AtomicU32::new(0),
            delivered: AtomicU32::new(0),
            delivered_twice_sent: AtomicU32::new(0),
            dead: AtomicU32::new(0),
            finished: AtomicU32::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn on_attempt(&self, r: &AttemptReport) {
        if let Some(a) = &r.attempt {
            self.attempts.fetch_add(1, Relaxed);
            if a.url == self.primary {
                self.primary_refused.fetch_add(1, Relaxed);
            }
        }
        let main = r.key.endpoint != MIRROR;
        match &r.next {
            Next::Delivered => {
                self.finished.fetch_add(1, Relaxed);
                if !main {
                    self.delivered_twice_sent.fetch_add(1, Relaxed);
                    return;
                }
                self.delivered.fetch_add(1, Relaxed);
                if r.key.endpoint == FAILOVER {
                    self.via_backup.fetch_add(1, Relaxed);
                }
                let since = seq_of_message_id(&r.key.message_id)
                    .and_then(|s| self.enqueued_us.get(s))
                    .map_or(0, |t| t.load(Relaxed));
                if since > 0 {
                    let took = self.now_us().saturating_sub(since - 1);
                    self.latencies_us.lock().expect("lock").push(took);
                }
            }
            Next::RetryAt { .. } => {
                self.retries.fetch_add(1, Relaxed);
            }
            Next::Deferred { .. } => {
                self.deferred.fetch_add(1, Relaxed);
            }
            Next::DeadLettered { .. } => {
                self.finished.fetch_add(1, Relaxed);
                self.dead.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

/// The endpoint every event goes to, and the one that sends some twice.
const MAIN: &str = "shop";
const MIRROR: &str = "shop-mirror";
/// The endpoint whose primary URL is down.
const FAILOVER: &str = "billing";

/// What the attacker sent and what came back.
#[derive(Debug, Default)]
struct Attack {
    forged: u32,
    forged_rejected: u32,
    stale: u32,
    stale_rejected: u32,
    replays: u32,
    replays_from_store: u32,
}

/// Forged signatures, stale captures and replays of delivered events, spread
/// over the run.
async fn attack(
    addr: std::net::SocketAddr,
    scheme: Scheme,
    rx: Arc<Receiver>,
    rounds: usize,
    mut rng: StdRng,
) -> anyhow::Result<Attack> {
    let client = reqwest::Client::new();
    let events = rx.plan.len();
    let mut report = Attack::default();
    let post = |secret: &'static str, seq: usize, timestamp: i64| {
        let client = client.clone();
        async move {
            let payload = body_for(seq);
            let signer = Signer::new(scheme, scheme.secret(secret)?);
            let mut req = client
                .post(format!("http://{addr}/hooks"))
                .header("content-type", "application/json")
                .header(ATTACKER, "1");
            for (name, value) in signer.sign(&message_id(seq), timestamp, payload.as_bytes()) {
                req = req.header(name, value);
            }
            anyhow::Ok(req.body(payload).send().await?)
        }
    };
    for round in 0..rounds {
        // A forged signature over an event the sender never sent.
        let resp = post(WRONG_SECRET, events + round, unix_now()).await?;
        report.forged += 1;
        if resp.status() == StatusCode::UNAUTHORIZED {
            report.forged_rejected += 1;
        }
        // A capture from an hour ago: signed with the real secret, stale.
        if scheme.has_timestamp() {
            let resp = post(SECRET, events + rounds + round, unix_now() - 3600).await?;
            report.stale += 1;
            if resp.status() == StatusCode::UNAUTHORIZED {
                report.stale_rejected += 1;
            }
        }
        // A replay of an event the receiver already processed, inside the
        // tolerance window: the dedup store answers, the handler does not run.
        let done: Vec<usize> = (0..events)
            .filter(|s| rx.effects[*s].load(Relaxed) > 0)
            .collect();
        if !done.is_empty() {
            let seq = done[rng.gen_range(0..done.len())];
            let resp = post(SECRET, seq, unix_now()).await?;
            report.replays += 1;
            if resp.status().is_success()
                && resp
                    .headers()
                    .get("idempotent-replayed")
                    .is_some_and(|v| v == "true")
            {
                report.replays_from_store += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
    }
    Ok(report)
}

/// A store that remembers nothing: every claim is new (the test-only
/// `--no-dedup` switch, to show what the exactly-once check catches).
#[derive(Debug)]
struct Forgetful;

impl DedupStore for Forgetful {
    fn claim<'a>(
        &'a self,
        _key: &'a str,
        _digest: &'a Digest,
        _lease: Duration,
    ) -> BoxFuture<'a, hookgate_tower::store::Result<Claim>> {
        Box::pin(async { Ok(Claim::Acquired(ClaimToken::generate())) })
    }
    fn complete<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a ClaimToken,
        _record: DoneRecord,
        _retention: Duration,
    ) -> BoxFuture<'a, hookgate_tower::store::Result<bool>> {
        Box::pin(async { Ok(true) })
    }
    fn release<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a ClaimToken,
    ) -> BoxFuture<'a, hookgate_tower::store::Result<bool>> {
        Box::pin(async { Ok(true) })
    }
    fn renew<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a ClaimToken,
        _lease: Duration,
    ) -> BoxFuture<'a, hookgate_tower::store::Result<bool>> {
        Box::pin(async { Ok(true) })
    }
}

/// The dedup store and queue of `--store`, in a namespace of their own.
struct Stores {
    dedup: Arc<dyn DedupStore>,
    queue: Arc<dyn Queue>,
    label: String,
    namespace: Option<String>,
}

async fn open_stores(store: &str, namespace: &str, dedup: bool) -> anyhow::Result<Stores> {
    // The same openers as `serve` (dedup store: Postgres table in schema
    // `namespace`; Redis keys get the namespace from the layer's prefix)
    // and `worker` (queue).
    let (store_dedup, _sweep) = crate::cmd::serve::open_store(store, Some(namespace), None).await?;
    let dedup: Arc<dyn DedupStore> = if dedup {
        store_dedup
    } else {
        Arc::new(Forgetful)
    };
    if store == "memory" {
        return Ok(Stores {
            dedup,
            queue: Arc::new(MemoryQueue::new()),
            label: "memory (this process)".into(),
            namespace: None,
        });
    }
    let (queue, _lock) = crate::cmd::queue::open(store, Some(namespace), None).await?;
    let label = if store.starts_with("redis") {
        format!("Redis, keys {namespace}:*")
    } else {
        format!("Postgres, schema {namespace}")
    };
    Ok(Stores {
        dedup,
        queue,
        label,
        namespace: Some(namespace.to_owned()),
    })
}

/// Remove what the run wrote to `--store`.
async fn clean_up(store: &str, namespace: &str) -> anyhow::Result<()> {
    #[cfg(feature = "postgres")]
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let pool = hookgate_backend::postgres::PgUrl::parse(store)?
            .pool(&hookgate_backend::postgres::PoolOptions::default())?;
        let client = pool.get().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {namespace} CASCADE"))
            .await?;
        return Ok(());
    }
    #[cfg(feature = "redis")]
    if store.starts_with("redis://") || store.starts_with("rediss://") {
        let client = hookgate_backend::redis::client(store, None)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{namespace}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        return Ok(());
    }
    let _ = (store, namespace);
    Ok(())
}

/// The progress display: a bar on a terminal, a line per 10 % otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    printed_tenths: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:36.cyan/blue} {pos:>5}/{len} {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            total: total.max(1),
            printed_tenths: 0,
        }
    }

    fn update(&mut self, done: u64, message: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(message);
            }
            None => {
                let tenths = done * 10 / self.total;
                if tenths > self.printed_tenths {
                    self.printed_tenths = tenths;
                    println!("[progress] {done}/{} finished  {message}", self.total);
                }
            }
        }
    }

    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs the story; exit 1 when an event's effect did not happen exactly once.
pub(super) async fn run(opts: Options) -> anyhow::Result<ExitCode> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let plan = plan(opts.events, &mut rng);
    let namespace = format!(
        "hookgate_demo_{}_{}",
        std::process::id(),
        opts.seed % 1_000_000
    );
    let stores = open_stores(&opts.store, &namespace, opts.dedup).await?;
    let result = story(&opts, plan, rng, &stores).await;
    if let Some(ns) = &stores.namespace {
        match clean_up(&opts.store, ns).await {
            Ok(()) => println!("removed the demo's namespace {ns} from the store"),
            Err(e) => eprintln!(
                "could not remove the demo's namespace {ns}: {}",
                crate::cmd::one_line(&e)
            ),
        }
    }
    result
}

async fn story(
    opts: &Options,
    plan: Vec<Fault>,
    mut rng: StdRng,
    stores: &Stores,
) -> anyhow::Result<ExitCode> {
    let scheme = opts.scheme;
    let events = plan.len();
    println!(
        "hookgate demo: {events} events, scheme {scheme}, store {}, seed {} (repeat with --seed {})",
        stores.label, opts.seed, opts.seed
    );
    if !opts.dedup {
        println!("!! --no-dedup: the receiver's store forgets every claim (test-only switch)");
    }
    println!(
        "faults: handler 500 x{}, lost response x{}, 429 x{}, slow x{}, sent twice x{}, outage x{}, \
         primary URL down x{}; plus an attacker",
        count(&plan, |f| matches!(f, Fault::HandlerFails(_))),
        count(&plan, |f| *f == Fault::LostResponse),
        count(&plan, |f| *f == Fault::Throttled),
        count(&plan, |f| *f == Fault::Slow),
        count(&plan, |f| *f == Fault::SentTwice),
        count(&plan, |f| *f == Fault::Outage),
        count(&plan, |f| *f == Fault::PrimaryDown),
    );
    let twice: Vec<usize> = (0..events)
        .filter(|s| plan[*s] == Fault::SentTwice)
        .collect();
    let outages = count(&plan, |f| *f == Fault::Outage);

    // ---------------------------------------------------------------- receiver
    let rx = Arc::new(Receiver::new(plan));
    let verifier = Verifier::from_secret_strings(scheme, [SECRET])?;
    let layer = VerifyWebhookLayer::new(verifier)
        .with_store(stores.dedup.clone())
        // The handler takes milliseconds: a short lease (renewed while it
        // runs) keeps the `Retry-After` of a 409 for an event in flight on
        // another connection short too.
        .with_lease(Duration::from_secs(2))
        .with_prefix(stores.namespace.clone().unwrap_or_else(|| "demo".into()));
    let app = Router::new()
        .route("/hooks", post(handle))
        .layer(layer)
        .layer(Extension(rx.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = {
        let rx = rx.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (rx, app) = (rx.clone(), app.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| front(rx.clone(), app.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };

    // ------------------------------------------------------------------ sender
    let queue = stores.queue.clone();
    let sender = Sender::new(queue.clone());
    // The shop's receiver fails single events on purpose (500s, 503s, lost
    // responses) while it is up: a run of those must not open its circuit
    // breaker, which would pause every delivery for the cool-down. The
    // breaker story is the failover endpoint's, whose primary is down.
    let tolerant = BreakerConfig::default()
        .with_failures(0)
        .with_failure_ratio(0, 20, Duration::from_secs(60));
    for id in [MAIN, MIRROR] {
        sender
            .add_endpoint(
                Endpoint::new(id, format!("http://{addr}/hooks"), scheme, SECRET)?
                    .with_breaker(tolerant),
            )
            .await?;
    }
    // A primary URL nothing listens on, and the receiver as the backup.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let primary = format!("http://{dead}/hooks");
    sender
        .add_endpoint(
            Endpoint::new(FAILOVER, primary.clone(), scheme, SECRET)?
                .with_url(format!("http://{addr}/hooks"))?,
        )
        .await?;
    let tally = Arc::new(Tally::new(events, primary));
    let policy = RetryPolicy::new()
        .with_base_delay(Duration::from_millis(100))
        .with_multiplier(2)
        .with_max_delay(Duration::from_millis(800))
        .with_max_attempts(5);
    let worker = Worker::builder(queue.clone())
        .with_concurrency(32)
        .with_retry_policy(policy)
        .with_poll_interval(Duration::from_millis(20))
        // The SSRF guard is on: loopback is refused unless allow-listed, and
        // plain http:// unless allowed (the demo has no certificates).
        .with_ssrf_policy(
            SsrfPolicy::new()
                .allow("127.0.0.1/32".parse()?)
                .allow_plain_http(),
        )
        .with_rng_seed(opts.seed)
        .with_on_attempt({
            let tally = tally.clone();
            move |r| tally.on_attempt(r)
        })
        .build()?
        .spawn();
    let total = (events + twice.len()) as u64;
    let mut progress = Progress::new(total);
    let attacker = tokio::spawn(attack(
        addr,
        scheme,
        rx.clone(),
        (events / 25).clamp(5, 200),
        StdRng::seed_from_u64(rng.gen()),
    ));

    // Enqueue: every event once, some twice (a second endpoint, same URL).
    for seq in 0..events {
        let m = Message::new("order.event", body_for(seq)).with_id(message_id(seq));
        tally.enqueued_us[seq].store(tally.now_us() + 1, Relaxed);
        let endpoint = if rx.plan[seq] == Fault::PrimaryDown {
            FAILOVER
        } else {
            MAIN
        };
        sender.enqueue(endpoint, m.clone()).await?;
        if rx.plan[seq] == Fault::SentTwice {
            sender.enqueue(MIRROR, m).await?;
        }
    }

    // Phase 1: everything delivered or dead-lettered.
    let deadline = Instant::now() + PATIENCE;
    let status = |t: &Tally| {
        format!(
            "attempts {}  retries {}  dead {}",
            t.attempts.load(Relaxed),
            t.retries.load(Relaxed),
            t.dead.load(Relaxed)
        )
    };
    while u64::from(tally.finished.load(Relaxed)) < total && Instant::now() < deadline {
        progress.update(u64::from(tally.finished.load(Relaxed)), status(&tally));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Phase 2: the outage ends; replay the dead letters.
    rx.outage.store(false, Relaxed);
    let mut replayed = 0u32;
    let mut after = None;
    loop {
        let page = queue
            .list_dead(
                &DlqFilter::default(),
                &Page {
                    after: after.clone(),
                    limit: 100,
                },
            )
            .await?;
        for d in &page {
            if queue.replay_dead(&d.key).await? {
                replayed += 1;
            }
        }
        match page.last() {
            Some(last) if page.len() == 100 => after = Some((last.dead_at_ms, last.key.clone())),
            _ => break,
        }
    }
    if replayed > 0 {
        progress.note(&format!(
            "[dlq] the outage is over: replayed {replayed} dead letter(s) (same message ids)"
        ));
    }
    let target = total + u64::from(replayed);
    while u64::from(tally.finished.load(Relaxed)) < target && Instant::now() < deadline {
        progress.update(
            u64::from(tally.finished.load(Relaxed)).min(total),
            status(&tally),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.update(
        u64::from(tally.finished.load(Relaxed)).min(total),
        status(&tally),
    );
    progress.finish();
    let attack = attacker.await.context("attacker task")??;
    let _ = worker.shutdown(Duration::from_secs(5)).await;
    server.abort();

    // -------------------------------------------------------------- summary
    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().expect("lock"));
    lat.sort_unstable();
    let pct = |p: f64| -> String {
        if lat.is_empty() {
            return "-".into();
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        let ms = lat[i] as f64 / 1000.0;
        if ms >= 1000.0 {
            format!("{:.2} s", ms / 1000.0)
        } else {
            format!("{ms:.1} ms")
        }
    };
    let effects: Vec<u32> = rx.effects.iter().map(|e| e.load(Relaxed)).collect();
    let once = effects.iter().filter(|e| **e == 1).count();
    let missing: Vec<usize> = (0..events).filter(|s| effects[*s] == 0).collect();
    let repeated: Vec<usize> = (0..events).filter(|s| effects[*s] > 1).collect();
    let stray = rx.stray_effects.load(Relaxed);
    let delivered = tally.delivered.load(Relaxed);
    let rows: Vec<(&str, String)> = vec![
        (
            "events sent",
            format!("{events} (+{} sent twice)", twice.len()),
        ),
        (
            "delivered",
            format!(
                "{delivered} (+{} second sends)",
                tally.delivered_twice_sent.load(Relaxed)
            ),
        ),
        ("attempts", tally.attempts.load(Relaxed).to_string()),
        ("retries", tally.retries.load(Relaxed).to_string()),
        (
            "handler runs",
            rx.runs
                .iter()
                .map(|r| r.load(Relaxed))
                .sum::<u32>()
                .to_string(),
        ),
        (
            "duplicates suppressed",
            format!(
                "{} answered from the dedup store ({} lost responses retried, {} sent twice), \
                 {} in-flight conflicts (409, retried)",
                rx.replayed_to_sender.load(Relaxed),
                rx.lost_responses.load(Relaxed),
                twice.len(),
                rx.in_flight_conflicts.load(Relaxed)
            ),
        ),
        (
            "forgeries rejected",
            format!("{} / {}", attack.forged_rejected, attack.forged),
        ),
        (
            "stale replays rejected",
            if scheme.has_timestamp() {
                format!("{} / {}", attack.stale_rejected, attack.stale)
            } else {
                format!("n/a ({scheme} signs no timestamp)")
            },
        ),
        (
            "replays answered from store",
            format!("{} / {}", attack.replays_from_store, attack.replays),
        ),
        (
            "throttled (429)",
            format!("{} (Retry-After: 1 s honoured)", rx.throttled.load(Relaxed)),
        ),
        (
            "slow answers",
            format!("{} (+{} ms each)", rx.slow.load(Relaxed), SLOW.as_millis()),
        ),
        (
            "dead-lettered",
            format!(
                "{} ({outages} events in an outage, {} refusals)",
                tally.dead.load(Relaxed),
                rx.outage_refusals.load(Relaxed)
            ),
        ),
        ("replayed from DLQ", replayed.to_string()),
        (
            "failover",
            format!(
                "{} delivered through the backup URL ({} attempts refused by the primary \
                 before its circuit breaker opened)",
                tally.via_backup.load(Relaxed),
                tally.primary_refused.load(Relaxed)
            ),
        ),
        (
            "delivery latency",
            format!(
                "p50 {}, p99 {} (enqueue to delivered)",
                pct(0.50),
                pct(0.99)
            ),
        ),
        (
            "took",
            format!("{:.1} s", tally.start.elapsed().as_secs_f64()),
        ),
    ];
    println!();
    for (name, value) in rows {
        println!("  {name:<28} {value}");
    }
    println!();
    let ids = |v: &[usize]| {
        let mut s = v
            .iter()
            .take(5)
            .map(|x| message_id(*x))
            .collect::<Vec<_>>()
            .join(", ");
        if v.len() > 5 {
            s.push_str(", ..");
        }
        s
    };
    let mut ok = true;
    if missing.is_empty() && repeated.is_empty() {
        println!("exactly once: all {events} events took effect exactly once ({once}/{events})");
    } else {
        ok = false;
        if !repeated.is_empty() {
            println!(
                "FAILED exactly once: {} event(s) took effect more than once: {}",
                repeated.len(),
                ids(&repeated)
            );
        }
        if !missing.is_empty() {
            println!(
                "FAILED exactly once: {} event(s) never took effect: {}",
                missing.len(),
                ids(&missing)
            );
        }
    }
    if stray > 0 {
        ok = false;
        println!("FAILED: {stray} forged or stale request(s) reached the handler");
    }
    if attack.forged_rejected != attack.forged || attack.stale_rejected != attack.stale {
        ok = false;
        println!("FAILED: not every forged or stale request was rejected with 401");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
