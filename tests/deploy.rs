//! `deploy/` is checked, not just shipped:
//! - `promtool check rules` accepts the Prometheus rules, and `promtool test
//!   rules` runs their unit tests (series in, alerts out);
//! - every PromQL query on the Grafana dashboard parses;
//! - every metric name the rules and the dashboard use is one the code emits,
//!   read from a Prometheus scrape of a real run (a receiver and a sender over
//!   loopback), and every metric that run emits is on the dashboard.
//!
//! `tests/deploy/setup.sh` finds promtool, or installs Debian's `prometheus`
//! package when run as root. Without it the promtool tests print why and
//! skip, except under `CI=true`, where they fail.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use axum::{
    http::StatusCode,
    routing::{get, post},
    Router,
};
use hookgate::core::{unix_now, Scheme, Signer, Verifier};
use hookgate::sender::{
    breaker::BreakerConfig,
    limiter::RateLimit,
    maintenance::{NoLock, Pruner, Runner},
    retry::RetryPolicy,
    ssrf::SsrfPolicy,
    tier::Tier,
    Endpoint, MemoryQueue, Message, Queue, Sender, Worker,
};
use hookgate::tower::{
    store::{
        BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, StoreError, StoreErrorKind,
    },
    VerifyWebhookLayer,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool() -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg(root().join("tests/deploy/setup.sh"))
        .output()
        .expect("run tests/deploy/setup.sh");
    if out.status.success() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        return Some(PathBuf::from(path));
    }
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "promtool is required under CI=true: {why}"
    );
    eprintln!("skipping: {why}");
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let rules = root().join("deploy/prometheus/hookgate.rules.yml");
    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(Command::new(&promtool)
        .current_dir(root().join("deploy/prometheus/tests"))
        .args(["test", "rules", "hookgate.rules.test.yml"]));
    assert!(out.contains("SUCCESS"), "{out}");
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("deploy/grafana/hookgate.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every `expr` of every panel target.
fn dashboard_queries() -> Vec<String> {
    let dash = dashboard();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[test]
fn every_dashboard_query_parses() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let Some(promtool) = promtool() else { return };
    // promtool has no "check expression"; a rule group holding every query
    // (Grafana's variables replaced by values) makes it parse them all.
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$scheme", ".*")
            .replace("$endpoint", ".*");
        file.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&q).unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("hookgate-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.rules.yml");
    std::fs::write(&path, file).unwrap();
    let out = run(Command::new(&promtool).arg("check").arg("rules").arg(&path));
    assert!(
        out.contains(&format!("{} rules found", queries.len())),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The `hookgate_*` metric names a text mentions (recording rules, which are
/// spelled `hookgate:...`, are not metrics the code emits).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("hookgate_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded_by_word = start > 0 && (bytes[start - 1].is_ascii_alphanumeric());
        if !preceded_by_word {
            names.insert(base_name(&text[start..end]).to_owned());
        }
        i = end;
    }
    names
}

/// A histogram's series name without the `_bucket`/`_sum`/`_count` suffix.
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// A dedup store that is always unreachable: drives the layer's 503 path so
/// the store-error counter is emitted.
#[derive(Debug)]
struct Unreachable;

impl DedupStore for Unreachable {
    fn claim<'a>(
        &'a self,
        _: &'a str,
        _: &'a Digest,
        _: Duration,
    ) -> BoxFuture<'a, hookgate::tower::store::Result<Claim>> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "test: unreachable",
            ))
        })
    }
    fn complete<'a>(
        &'a self,
        _: &'a str,
        _: &'a ClaimToken,
        _: DoneRecord,
        _: Duration,
    ) -> BoxFuture<'a, hookgate::tower::store::Result<bool>> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "test: unreachable",
            ))
        })
    }
    fn release<'a>(
        &'a self,
        _: &'a str,
        _: &'a ClaimToken,
    ) -> BoxFuture<'a, hookgate::tower::store::Result<bool>> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "test: unreachable",
            ))
        })
    }
    fn renew<'a>(
        &'a self,
        _: &'a str,
        _: &'a ClaimToken,
        _: Duration,
    ) -> BoxFuture<'a, hookgate::tower::store::Result<bool>> {
        Box::pin(async {
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "test: unreachable",
            ))
        })
    }
}

/// A receiver on 127.0.0.1: `/ok` answers 200, `/fail` 500, `/gone` 400,
/// `/down` has an unreachable store; `/410` answers 410 Gone, `/429` 429
/// with `Retry-After: 1`, `GET /health` 200 (without verification).
async fn receiver() -> SocketAddr {
    let verifier = || Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let app = Router::new()
        .route(
            "/ok",
            post(|| async { StatusCode::OK }).route_layer(VerifyWebhookLayer::new(verifier())),
        )
        .route(
            "/fail",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR })
                .route_layer(VerifyWebhookLayer::new(verifier())),
        )
        .route(
            "/gone",
            post(|| async { StatusCode::BAD_REQUEST })
                .route_layer(VerifyWebhookLayer::new(verifier())),
        )
        .route("/410", post(|| async { StatusCode::GONE }))
        .route(
            "/429",
            post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]) }),
        )
        .route("/health", get(|| async { StatusCode::OK }))
        .route(
            "/down",
            post(|| async { StatusCode::OK })
                .route_layer(VerifyWebhookLayer::new(verifier()).with_store(Unreachable)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    id: &str,
    body: &str,
    forge: bool,
) -> u16 {
    let signer = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    );
    let mut req = client.post(url).body(body.to_owned());
    for (name, value) in signer.sign(id, unix_now(), body.as_bytes()) {
        let value = if forge && name == "webhook-signature" {
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()
        } else {
            value
        };
        req = req.header(name, value);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_use_only_metrics_a_real_run_emits() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
        .unwrap()
        .install_recorder()
        .expect("install the Prometheus recorder");
    let addr = receiver().await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    // Receiver: accepted, replayed, conflicting, forged, released, store down.
    assert_eq!(
        post_signed(&client, &format!("{base}/ok"), "msg_a", "{\"n\":1}", false).await,
        200
    );
    assert_eq!(
        post_signed(&client, &format!("{base}/ok"), "msg_a", "{\"n\":1}", false).await,
        200
    );
    assert_eq!(
        post_signed(&client, &format!("{base}/ok"), "msg_a", "{\"n\":2}", false).await,
        422
    );
    assert_eq!(
        post_signed(&client, &format!("{base}/ok"), "msg_b", "{\"n\":3}", true).await,
        401
    );
    assert_eq!(
        post_signed(
            &client,
            &format!("{base}/fail"),
            "msg_c",
            "{\"n\":4}",
            false
        )
        .await,
        500
    );
    assert_eq!(
        post_signed(
            &client,
            &format!("{base}/down"),
            "msg_d",
            "{\"n\":5}",
            false
        )
        .await,
        503
    );

    // Sender: one endpoint delivers (critical tier), one retries then
    // dead-letters (its breaker opens, a health URL is probed), one is
    // permanent, one answers 410 (disabled, later messages held), one
    // throttles (rate-limited).
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    for (id, path) in [
        ("ok", "ok"),
        ("flaky", "fail"),
        ("rejects", "gone"),
        ("retired", "410"),
        ("busy", "429"),
    ] {
        let mut endpoint = Endpoint::new(
            id,
            format!("{base}/{path}"),
            Scheme::StandardWebhooks,
            SECRET,
        )
        .unwrap();
        endpoint = match id {
            "ok" => endpoint.with_tier(Tier::Critical),
            // Its breaker opens at its sixth and last failure: the breaker
            // metrics are emitted and its health URL probed, and no delivery
            // waits on it.
            "flaky" => endpoint
                .with_health_url(format!("{base}/health"))
                .unwrap()
                .with_breaker(BreakerConfig::default().with_failures(6)),
            "busy" => endpoint.with_rate_limit(RateLimit::per_second(20.0).unwrap()),
            _ => endpoint,
        };
        sender.add_endpoint(endpoint).await.unwrap();
        // The 410 endpoint gets one message now; two more once it is
        // disabled (below), which are then held.
        let now = if id == "retired" { 1 } else { 3 };
        for n in 0..now {
            sender
                .enqueue(id, Message::new("test.event", format!("{{\"n\":{n}}}")))
                .await
                .unwrap();
        }
    }
    let worker = Worker::builder(queue.clone())
        .with_ssrf_policy(SsrfPolicy::new().allow_private().allow_plain_http())
        .with_retry_policy(
            RetryPolicy::new()
                .with_base_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(20))
                .with_max_attempts(2),
        )
        .with_poll_interval(Duration::from_millis(10))
        .with_stats_interval(Duration::from_millis(20))
        .with_health_probe_interval(Some(Duration::from_millis(50)))
        .with_endpoint_cache_ttl(Duration::from_millis(10))
        .build()
        .unwrap()
        .spawn();
    let maintenance = Runner::new(Arc::new(NoLock))
        .with_task(Arc::new(Pruner::new(queue.clone())))
        .with_interval(Duration::from_millis(50))
        .spawn();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !queue
        .get_endpoint("retired")
        .await
        .unwrap()
        .unwrap()
        .disabled
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "410 did not disable the endpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 1..3 {
        sender
            .enqueue(
                "retired",
                Message::new("test.event", format!("{{\"n\":{n}}}")),
            )
            .await
            .unwrap();
    }
    let wanted = {
        let mut names = metric_names(
            &std::fs::read_to_string(root().join("deploy/prometheus/hookgate.rules.yml")).unwrap(),
        );
        names.extend(metric_names(&dashboard_queries().join("\n")));
        names
    };
    assert!(wanted.len() >= 12, "{wanted:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let emitted = loop {
        let scrape = handle.render();
        let emitted: BTreeSet<String> = scrape
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with("hookgate_"))
            .map(|l| base_name(l.split(['{', ' ']).next().unwrap()).to_owned())
            .collect();
        if wanted.is_subset(&emitted) || tokio::time::Instant::now() > deadline {
            break emitted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    worker.shutdown(Duration::from_secs(5)).await;
    maintenance.stop().await;

    let missing: Vec<_> = wanted.difference(&emitted).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but never emitted: {missing:?}\nemitted: {emitted:?}"
    );
    let dashboard_names = metric_names(&dashboard_queries().join("\n"));
    let unshown: Vec<_> = emitted.difference(&dashboard_names).collect();
    assert!(
        unshown.is_empty(),
        "emitted but not on the dashboard: {unshown:?}"
    );
}
