//! Shared harness for the layer tests: real axum servers on 127.0.0.1:0,
//! a reqwest client, signing helpers, the stores to run against, and a store
//! wrapper that counts round trips.
#![allow(dead_code, unreachable_pub)]

pub mod freeze_proxy;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{http::StatusCode, response::IntoResponse, routing, Router};
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::{
    extract::Webhook,
    store::{BoxFuture, Claim, ClaimToken, DedupStore, Digest, DoneRecord, Result},
    MemoryStore, VerifyWebhookLayer,
};

/// Secret strings per scheme, as the providers hand them out.
pub fn secret_for(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        Scheme::Stripe => "whsec_stripe_test_secret",
        _ => "a shared secret",
    }
}

pub fn verifier(scheme: Scheme) -> Verifier {
    Verifier::from_secret_strings(scheme, [secret_for(scheme)]).expect("valid secret")
}

pub fn signer(scheme: Scheme) -> Signer {
    Signer::new(
        scheme,
        scheme.secret(secret_for(scheme)).expect("valid secret"),
    )
}

/// Headers signing `body` as event `id`, now.
pub fn sign(scheme: Scheme, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    signer(scheme).sign(id, unix_now(), body)
}

pub fn random_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// A key prefix no other test run shares.
pub fn test_prefix() -> String {
    format!("hgtest{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// What the test handler does on its n-th call (0-based).
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Status(u16),
    SleepThen(Duration, u16),
    /// Wait for a permit on the server's `gate`, then answer.
    Gated(u16),
    Panic,
}

/// What the handler saw: (event id, body) per call.
pub type Seen = Arc<std::sync::Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A running server; the handler counts its calls and records what it saw.
pub struct Server {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    pub seen: Seen,
    /// Starts with no permits; `Action::Gated` handlers wait for one.
    pub gate: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve `POST /hook` behind `layer`; the handler follows `script` (the
/// last action repeats). `POST /unlayered` uses the extractor without the layer.
pub async fn serve<S: DedupStore>(layer: VerifyWebhookLayer<S>, script: Vec<Action>) -> Server {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (c, s, g) = (Arc::clone(&calls), Arc::clone(&seen), Arc::clone(&gate));
    let script = Arc::new(script);
    let handler = move |webhook: Webhook| {
        let (calls, seen, script) = (Arc::clone(&c), Arc::clone(&s), Arc::clone(&script));
        let gate = Arc::clone(&g);
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            seen.lock()
                .unwrap()
                .push((webhook.verified.id.clone(), webhook.body.to_vec()));
            let action = script
                .get(n)
                .or(script.last())
                .copied()
                .unwrap_or(Action::Status(200));
            let status = match action {
                Action::Status(s) => s,
                Action::SleepThen(d, s) => {
                    tokio::time::sleep(d).await;
                    s
                }
                Action::Gated(s) => {
                    gate.acquire().await.unwrap().forget();
                    s
                }
                Action::Panic => panic!("handler panics on purpose"),
            };
            (
                StatusCode::from_u16(status).unwrap(),
                format!("handled {n}"),
            )
                .into_response()
        }
    };
    let app = Router::new()
        .route("/hook", routing::post(handler))
        .route_layer(layer)
        .route(
            "/unlayered",
            routing::post(|w: Webhook| async move { w.body }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        addr,
        calls,
        seen,
        gate,
        task,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> reqwest::Response {
    let mut req = client.post(url).body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    req.send().await.expect("request sent")
}

/// The problem `type` of a rejection response.
pub async fn problem_type(res: reqwest::Response) -> String {
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "rejections are problem documents"
    );
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    v["type"].as_str().unwrap().to_owned()
}

/// Counts store round trips and forwards them to `inner`.
#[derive(Debug, Default)]
pub struct Counting<S> {
    pub inner: S,
    pub claims: AtomicUsize,
    pub completes: AtomicUsize,
    pub releases: AtomicUsize,
    pub renewals: AtomicUsize,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            claims: AtomicUsize::new(0),
            completes: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
            renewals: AtomicUsize::new(0),
        }
    }

    pub fn total(&self) -> usize {
        self.claims.load(Ordering::SeqCst)
            + self.completes.load(Ordering::SeqCst)
            + self.releases.load(Ordering::SeqCst)
    }
}

impl<S: DedupStore> DedupStore for Counting<S> {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(key, digest, lease)
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        record: DoneRecord,
        retention: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        self.completes.fetch_add(1, Ordering::SeqCst);
        self.inner.complete(key, token, record, retention)
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        self.inner.release(key, token)
    }

    fn renew<'a>(
        &'a self,
        key: &'a str,
        token: &'a ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(key, token, lease)
    }
}

/// A shared store to run a test against, or `None` (with a "skipping"
/// message) when its server is unreachable and `CI` is not `true`.
pub type SharedStore = Arc<dyn DedupStore>;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn skip_or_fail<T>(what: &str, err: &dyn std::fmt::Display) -> Option<T> {
    assert!(!ci(), "{what} unreachable under CI=true: {err}");
    eprintln!("skipping {what}: unreachable ({err})");
    None
}

pub async fn memory_store() -> Option<Fixture> {
    // One process: the "replica" shares the same map.
    let store: SharedStore = Arc::new(MemoryStore::default());
    Some(Fixture {
        replica: Arc::clone(&store),
        store,
        cleanup: Cleanup::None,
    })
}

pub fn redis_url() -> String {
    std::env::var("HOOKGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn postgres_url() -> String {
    std::env::var("HOOKGATE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A store and what to remove after the test.
pub struct Fixture {
    pub store: SharedStore,
    /// A second, independently connected client of the same backend (what
    /// another receiver replica would hold).
    pub replica: SharedStore,
    cleanup: Cleanup,
}

enum Cleanup {
    None,
    #[cfg(feature = "redis")]
    RedisPrefix(String),
    #[cfg(feature = "postgres")]
    PostgresTable(String),
}

impl Fixture {
    async fn cleanup(self) {
        match self.cleanup {
            Cleanup::None => {}
            #[cfg(feature = "redis")]
            Cleanup::RedisPrefix(prefix) => {
                let client = redis::Client::open(redis_url()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    let _: () = redis::cmd("DEL")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            }
            #[cfg(feature = "postgres")]
            Cleanup::PostgresTable(table) => {
                let (client, conn) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                    .await
                    .unwrap();
            }
        }
    }
}

#[cfg(feature = "redis")]
pub async fn redis_store() -> Option<Fixture> {
    let prefix = format!("{}:", test_prefix());
    let connect = || async {
        hookgate_tower::store::RedisStore::connect(&redis_url())
            .await
            .map(|s| Arc::new(s.with_prefix(prefix.clone())) as SharedStore)
    };
    match (connect().await, connect().await) {
        (Ok(store), Ok(replica)) => Some(Fixture {
            store,
            replica,
            cleanup: Cleanup::RedisPrefix(prefix.clone()),
        }),
        (Err(e), _) | (_, Err(e)) => skip_or_fail("Redis", &e),
    }
}

#[cfg(feature = "postgres")]
pub async fn postgres_store() -> Option<Fixture> {
    let table = format!("hookgate_layer_{}", test_prefix());
    let store = hookgate_tower::store::PostgresStore::new(&postgres_url())
        .and_then(|s| s.with_table(&table));
    let store = match store {
        Ok(s) => s,
        Err(e) => return skip_or_fail("PostgreSQL", &e),
    };
    let replica = hookgate_tower::store::PostgresStore::new(&postgres_url())
        .and_then(|s| s.with_table(&table));
    let replica = match replica {
        Ok(s) => s,
        Err(e) => return skip_or_fail("PostgreSQL", &e),
    };
    match store.migrate().await {
        Ok(()) => Some(Fixture {
            store: Arc::new(store),
            replica: Arc::new(replica),
            cleanup: Cleanup::PostgresTable(table),
        }),
        Err(e) => skip_or_fail("PostgreSQL", &e),
    }
}

/// Run `test(name, store, replica)` once per store; `replica` is a second,
/// independent client of the same backend. Adding a store is one line here.
pub async fn for_each_store<F, Fut>(test: F)
where
    F: Fn(&'static str, SharedStore, SharedStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let stores: Vec<(&'static str, Option<Fixture>)> = vec![
        ("memory", memory_store().await),
        #[cfg(feature = "redis")]
        ("redis", redis_store().await),
        #[cfg(feature = "postgres")]
        ("postgres", postgres_store().await),
    ];
    // Every fixture is cleaned up, also when a test panics (then the panic
    // is resumed after the cleanup).
    let mut panic = None;
    for (name, fixture) in stores {
        if let Some(fixture) = fixture {
            if panic.is_none() {
                eprintln!("store: {name}");
                let run = test(
                    name,
                    Arc::clone(&fixture.store),
                    Arc::clone(&fixture.replica),
                );
                if let Err(p) =
                    futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await
                {
                    panic = Some(p);
                }
            }
            fixture.cleanup().await;
        }
    }
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
}

/// A loopback port where nothing listens.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Real stores pointed at a port where nothing listens.
pub async fn unreachable_stores() -> Vec<(&'static str, SharedStore)> {
    let mut stores: Vec<(&'static str, SharedStore)> = Vec::new();
    #[cfg(feature = "redis")]
    stores.push((
        "redis",
        Arc::new(
            hookgate_tower::store::RedisStore::lazy(&format!("redis://127.0.0.1:{}", dead_port()))
                .unwrap()
                .with_timeout(Duration::from_millis(500)),
        ),
    ));
    #[cfg(feature = "postgres")]
    stores.push((
        "postgres",
        Arc::new(
            hookgate_tower::store::PostgresStore::new(&format!(
                "postgres://postgres@127.0.0.1:{}/test",
                dead_port()
            ))
            .unwrap()
            .with_timeout(Duration::from_millis(500)),
        ),
    ));
    stores
}

/// Forwards claims to `inner` but fails every `complete` and `release`, as
/// a store that went away while the handler ran.
#[derive(Debug, Default)]
pub struct LostAfterClaim<S> {
    pub inner: S,
}

impl<S: DedupStore> DedupStore for LostAfterClaim<S> {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        digest: &'a Digest,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim>> {
        self.inner.claim(key, digest, lease)
    }

    fn complete<'a>(
        &'a self,
        _: &'a str,
        _: &'a ClaimToken,
        _: DoneRecord,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async {
            Err(hookgate_tower::store::StoreError::new(
                hookgate_tower::store::StoreErrorKind::Unavailable,
                "connection lost",
            ))
        })
    }

    fn release<'a>(&'a self, _: &'a str, _: &'a ClaimToken) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async {
            Err(hookgate_tower::store::StoreError::new(
                hookgate_tower::store::StoreErrorKind::Unavailable,
                "connection lost",
            ))
        })
    }

    fn renew<'a>(
        &'a self,
        _: &'a str,
        _: &'a ClaimToken,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async {
            Err(hookgate_tower::store::StoreError::new(
                hookgate_tower::store::StoreErrorKind::Unavailable,
                "connection lost",
            ))
        })
    }
}
