//! `hookgate demo --walkthrough`: the story step by step, one event at a time.
//!
//! Everything runs in this process on 127.0.0.1: a receiver (axum behind the
//! verifying, deduplicating layer with the memory store) and a sender (memory
//! queue and worker, SSRF guard on with loopback allow-listed). The demo then
//! shows, and checks, each promise:
//!
//! 1. signed delivery, and a retry after the handler fails with 500;
//! 2. a duplicate delivery (same id) answered from the store, handler not run;
//! 3. a forged signature and a stale timestamp rejected with 401;
//! 4. an outage that exhausts the retries into the dead-letter queue, then a
//!    replay from the DLQ once the receiver is back.
//!
//! It exits 1 if any promise does not hold.

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{extract::Extension, http::StatusCode, routing::post, Router};
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_sender::{
    queue::{DlqFilter, Page},
    retry::RetryPolicy,
    ssrf::SsrfPolicy,
    worker::{AttemptReport, Next},
    Endpoint, MemoryQueue, Message, Queue, Sender, Worker,
};
use hookgate_tower::{MemoryStore, VerifiedWebhook, VerifyWebhookLayer};

/// The secret both sides share (a Standard Webhooks style secret; for the
/// other schemes its text is the key).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct ReceiverState {
    /// How many times the handler ran, per event id.
    runs: Mutex<HashMap<String, u32>>,
    /// Events whose first run fails with 500.
    fail_once: Mutex<Vec<String>>,
    /// While set, `/outage` answers 503.
    outage: AtomicBool,
}

impl ReceiverState {
    fn runs(&self, id: &str) -> u32 {
        self.runs
            .lock()
            .map(|m| m.get(id).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

fn say(step: &str, text: impl std::fmt::Display) {
    println!("[{step:>8}] {text}");
}

/// Runs the walkthrough; exit 1 when a promise does not hold.
pub(super) async fn run(scheme: Scheme) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: &str| {
        say(if ok { "ok" } else { "FAILED" }, what);
        if !ok {
            failures.push(what.to_owned());
        }
    };

    // ---------------------------------------------------------------- receiver
    let state = Arc::new(ReceiverState::default());
    let verifier = Verifier::from_secret_strings(scheme, [SECRET])?;
    let layer = VerifyWebhookLayer::new(verifier).with_store(MemoryStore::default());
    let app = Router::new()
        .route("/hooks", post(handle))
        .route("/outage", post(handle_outage))
        .layer(layer)
        .layer(Extension(state.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    say(
        "receiver",
        format!("listening on http://{addr}  (scheme {scheme}, memory dedup store)"),
    );

    // ------------------------------------------------------------------ sender
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(Endpoint::new(
            "shop",
            format!("http://{addr}/hooks"),
            scheme,
            SECRET,
        )?)
        .await?;
    sender
        .add_endpoint(Endpoint::new(
            "warehouse",
            format!("http://{addr}/outage"),
            scheme,
            SECRET,
        )?)
        .await?;
    let policy = RetryPolicy::new()
        .with_base_delay(Duration::from_millis(100))
        .with_multiplier(2)
        .with_max_delay(Duration::from_millis(400))
        .with_max_attempts(4);
    let worker = Worker::builder(queue.clone())
        .with_retry_policy(policy)
        .with_poll_interval(Duration::from_millis(20))
        .with_endpoint_cache_ttl(Duration::from_millis(10))
        // The SSRF guard is on: loopback is refused unless allow-listed.
        .with_ssrf_policy(
            SsrfPolicy::new()
                .allow("127.0.0.1/32".parse()?)
                .allow_plain_http(),
        )
        .with_on_attempt(print_attempt)
        .build()?
        .spawn();
    say(
        "sender",
        "memory queue + worker; retries: 4 attempts, full jitter, 100 ms doubling to 400 ms",
    );

    // ------------------------------------------- 1. delivery and retry on 500
    println!("\n-- 1. signed delivery; the handler fails once with 500, the retry succeeds");
    let created = body_for("evt_created", "order.created");
    let paid = body_for("evt_paid", "order.paid");
    state
        .fail_once
        .lock()
        .expect("lock")
        .push("order.paid".into());
    let m1 = Message::new("order.created", created.clone()).with_id("msg_order_created");
    let m2 = Message::new("order.paid", paid.clone()).with_id("msg_order_paid");
    sender.enqueue("shop", m1.clone()).await?;
    sender.enqueue("shop", m2.clone()).await?;
    say(
        "sender",
        "enqueued order.created and order.paid (stored before returning)",
    );
    wait_until(Duration::from_secs(10), || async {
        queue
            .stats()
            .await
            .map(|s| s.pending() == 0)
            .unwrap_or(false)
    })
    .await;
    check(
        handler_runs(&state, &m1) == 1 && handler_runs(&state, &m2) == 2,
        "order.created handled once; order.paid handled twice (500, then 200)",
    );

    // --------------------------------------------- 2. duplicate is suppressed
    println!("\n-- 2. the same event delivered again (a sender's retry after a lost response)");
    let client = reqwest::Client::new();
    let before = handler_runs(&state, &m2);
    let resp = post_signed(&client, addr, scheme, SECRET, &m2, unix_now()).await?;
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    say(
        "receiver",
        format!(
            "answered {} with Idempotent-Replayed: {replayed}",
            resp.status()
        ),
    );
    check(
        resp.status().is_success() && replayed && handler_runs(&state, &m2) == before,
        "duplicate answered from the dedup store; handler not run again",
    );

    // ------------------------------------------------ 3. forgery and staleness
    println!("\n-- 3. a forged signature and a replayed capture from an hour ago");
    let forged = Message::new("order.refunded", body_for("evt_forged", "order.refunded"))
        .with_id("msg_forged");
    let resp = post_signed(
        &client,
        addr,
        scheme,
        "whsec_bm90IHRoZSBzZWNyZXQ=",
        &forged,
        unix_now(),
    )
    .await?;
    let forged_status = resp.status();
    say(
        "receiver",
        format!(
            "forged signature -> {forged_status} ({})",
            problem_type(resp).await
        ),
    );
    let stale_status = if scheme.has_timestamp() {
        let stale =
            Message::new("order.stale", body_for("evt_stale", "order.stale")).with_id("msg_stale");
        let resp = post_signed(&client, addr, scheme, SECRET, &stale, unix_now() - 3600).await?;
        let status = resp.status();
        say(
            "receiver",
            format!(
                "stale timestamp  -> {status} ({})",
                problem_type(resp).await
            ),
        );
        status
    } else {
        say(
            "receiver",
            format!("{scheme} signs no timestamp: replays are caught by the dedup store (step 2)"),
        );
        StatusCode::UNAUTHORIZED
    };
    check(
        forged_status == StatusCode::UNAUTHORIZED
            && stale_status == StatusCode::UNAUTHORIZED
            && handler_runs(&state, &forged) == 0,
        "forgery rejected with 401 before the handler; a stale timestamp too",
    );

    // ------------------------------------------ 4. outage -> DLQ -> replay
    println!(
        "\n-- 4. an outage: every attempt gets 503, the message goes to the dead-letter queue"
    );
    state.outage.store(true, Ordering::SeqCst);
    let shipped = Message::new("order.shipped", body_for("evt_shipped", "order.shipped"))
        .with_id("msg_order_shipped");
    sender.enqueue("warehouse", shipped.clone()).await?;
    wait_until(Duration::from_secs(15), || async {
        queue.stats().await.map(|s| s.dead == 1).unwrap_or(false)
    })
    .await;
    let dead = queue
        .list_dead(
            &DlqFilter::default(),
            &Page {
                after: None,
                limit: 10,
            },
        )
        .await?;
    for d in &dead {
        say(
            "dlq",
            format!(
                "{} -> {}: {} ({} attempts recorded)",
                d.key.message_id,
                d.key.endpoint,
                d.reason,
                d.attempts.len()
            ),
        );
    }
    check(
        dead.len() == 1 && dead[0].attempts.len() == 4,
        "exhausted after 4 attempts, dead letter keeps the payload and every attempt",
    );
    println!("\n-- the receiver is back; replay the dead letter (same message id)");
    state.outage.store(false, Ordering::SeqCst);
    for d in &dead {
        queue.replay_dead(&d.key).await?;
        say("dlq", format!("replayed {}", d.key.message_id));
    }
    wait_until(Duration::from_secs(10), || async {
        queue
            .stats()
            .await
            .map(|s| s.pending() == 0 && s.dead == 0)
            .unwrap_or(false)
    })
    .await;
    check(
        handler_runs(&state, &shipped) == 1,
        "replayed message delivered; the handler ran once",
    );

    let report = worker.shutdown(Duration::from_secs(5)).await;
    server.abort();
    println!(
        "\nworker stopped ({} in flight finished, {} released); demo took {:.1}s",
        report.finished,
        report.released,
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        println!("all promises held.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} promise(s) failed: {}",
            failures.len(),
            failures.join("; ")
        );
        Ok(ExitCode::from(1))
    }
}

/// The receiver's key for a message's handler runs: the body's event type
/// (unique per demo message), so every scheme is counted the same way.
fn handler_runs(state: &ReceiverState, m: &Message) -> u32 {
    state.runs(&m.event_type)
}

/// A JSON body; Stripe carries its id inside the body.
fn body_for(event_id: &str, event_type: &str) -> String {
    serde_json::json!({ "id": event_id, "type": event_type, "data": { "order": 1042 } }).to_string()
}

fn event_type_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

async fn handle(
    Extension(state): Extension<Arc<ReceiverState>>,
    Extension(hook): Extension<VerifiedWebhook>,
    body: bytes::Bytes,
) -> StatusCode {
    let event = event_type_of(&body);
    let run = {
        let mut runs = state.runs.lock().expect("lock");
        let n = runs.entry(event.clone()).or_default();
        *n += 1;
        *n
    };
    let fail = {
        let mut list = state.fail_once.lock().expect("lock");
        let pos = list.iter().position(|e| *e == event);
        pos.map(|i| list.remove(i)).is_some()
    };
    let id = hook.id.as_deref().unwrap_or("-");
    if fail {
        say(
            "handler",
            format!("{event} (id {id}) run {run}: failing with 500"),
        );
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        say("handler", format!("{event} (id {id}) run {run}: processed"));
        StatusCode::OK
    }
}

async fn handle_outage(
    Extension(state): Extension<Arc<ReceiverState>>,
    hook: Extension<VerifiedWebhook>,
    body: bytes::Bytes,
) -> StatusCode {
    if state.outage.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    handle(Extension(state), hook, body).await
}

fn print_attempt(r: &AttemptReport) {
    let outcome = match &r.attempt {
        Some(a) => match (a.status, &a.error) {
            (Some(s), _) => format!("HTTP {s} in {} ms", a.latency_ms),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => "no response".to_owned(),
        },
        None => "not attempted".to_owned(),
    };
    let next = match &r.next {
        Next::Delivered => "delivered".to_owned(),
        Next::RetryAt { delay, .. } => format!("retry in {} ms", delay.as_millis()),
        Next::DeadLettered { reason } => format!("dead-lettered: {reason}"),
        _ => "?".to_owned(),
    };
    say(
        "attempt",
        format!(
            "{} -> {} #{}: {outcome}; {next}",
            r.key.message_id, r.key.endpoint, r.number
        ),
    );
}

async fn post_signed(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    scheme: Scheme,
    secret: &str,
    m: &Message,
    timestamp: i64,
) -> anyhow::Result<reqwest::Response> {
    let signer = Signer::new(scheme, scheme.secret(secret)?);
    let mut req = client
        .post(format!("http://{addr}/hooks"))
        .header("content-type", "application/json")
        .body(m.payload.clone());
    for (name, value) in signer.sign(&m.id, timestamp, &m.payload) {
        req = req.header(name, value);
    }
    Ok(req.send().await?)
}

async fn problem_type(resp: reqwest::Response) -> String {
    let bytes = resp.bytes().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    body.get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("no problem type")
        .to_owned()
}

async fn wait_until<F, Fut>(limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
