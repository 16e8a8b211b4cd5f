//! The `DedupStore` conformance suite, written once and run against every
//! store: `MemoryStore`, `RedisStore` (feature `redis`) and `PostgresStore`
//! (feature `postgres`), the latter two against the real servers.
//!
//! Servers come from `HOOKGATE_REDIS_URL` (default `redis://127.0.0.1:6379`)
//! and `HOOKGATE_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). An unreachable server skips
//! its tests with a message, except under `CI=true`, where they fail. Each
//! test writes under a random Redis key prefix or into fresh random Postgres
//! tables, and removes them afterwards (also when the test fails).
//!
//! Leases here are short (300 ms) and the sleeps that outwait them are
//! bounded; nothing asserts on timing beyond "the lease has passed".

use futures_util::FutureExt;
use hookgate_tower::store::{Claim, ClaimToken, DedupStore, Digest, DoneRecord};
use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc, time::Duration};

/// A short lease, outwaited by [`PAST_LEASE`].
const SHORT: Duration = Duration::from_millis(300);
/// Long enough past [`SHORT`] that every backend has expired it.
const PAST_LEASE: Duration = Duration::from_millis(800);
/// A lease no test outlives.
const LONG: Duration = Duration::from_secs(60);
/// Retention no test outlives.
const KEEP: Duration = Duration::from_secs(3600);
/// Bound on one case, sleeps included.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent claimers of one key.
const CONCURRENCY: usize = 64;

type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A store under test and a second store on the same backend in another
/// namespace (prefix or table).
struct Fixture {
    store: Arc<dyn DedupStore>,
    other: Arc<dyn DedupStore>,
}

fn digest(n: u8) -> Digest {
    [n; 32]
}

fn key(name: &str) -> String {
    format!("test:standard:{name}_{:016x}", rand::random::<u64>())
}

/// Run `case` on a fresh fixture from `setup` (or skip), then clean up,
/// whether the case passed or not.
async fn run<Fut>(
    setup: impl Future<Output = Option<(Fixture, Cleanup)>>,
    case: fn(Arc<Fixture>) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some((fixture, cleanup)) = setup.await else {
        return;
    };
    let fixture = Arc::new(fixture);
    let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, case(fixture)))
        .catch_unwind()
        .await;
    cleanup.await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("case did not finish within {CASE_TIMEOUT:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn acquire(store: &dyn DedupStore, key: &str, d: &Digest, lease: Duration) -> ClaimToken {
    match store.claim(key, d, lease).await.expect("claim") {
        Claim::Acquired(t) => t,
        other => panic!("expected Acquired for {key}, got {other:?}"),
    }
}

async fn claim(store: &dyn DedupStore, key: &str) -> Claim {
    store.claim(key, &digest(0xee), LONG).await.expect("claim")
}

fn record(status: u16, d: u8) -> DoneRecord {
    DoneRecord::new(status, digest(d))
}

/// The cases, each a function of a fixture.
mod cases {
    use super::*;

    pub(crate) async fn fresh_claim_acquires(f: Arc<Fixture>) {
        let k = key("fresh");
        let t = acquire(&*f.store, &k, &digest(1), LONG).await;
        assert!(!t.as_str().is_empty());
    }

    pub(crate) async fn second_claim_is_in_flight(f: Arc<Fixture>) {
        let k = key("inflight");
        let _t = acquire(&*f.store, &k, &digest(1), LONG).await;
        match f.store.claim(&k, &digest(2), LONG).await.expect("claim") {
            Claim::InFlight {
                remaining,
                digest: d,
            } => {
                assert!(
                    remaining > Duration::ZERO && remaining <= LONG,
                    "{remaining:?}"
                );
                assert_eq!(d, digest(1), "the first claim's digest is reported");
            }
            other => panic!("expected InFlight, got {other:?}"),
        }
    }

    pub(crate) async fn complete_then_done(f: Arc<Fixture>) {
        let k = key("done");
        let t = acquire(&*f.store, &k, &digest(1), LONG).await;
        assert!(f
            .store
            .complete(&k, &t, record(201, 3), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(201, 3)));
        // Asking again changes nothing.
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(201, 3)));
        // A stored 4xx is kept as is.
        let k4 = key("done404");
        let t4 = acquire(&*f.store, &k4, &digest(4), LONG).await;
        assert!(f
            .store
            .complete(&k4, &t4, record(404, 4), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k4).await, Claim::Done(record(404, 4)));
    }

    pub(crate) async fn wrong_token_changes_nothing(f: Arc<Fixture>) {
        let k = key("wrong");
        let t = acquire(&*f.store, &k, &digest(1), LONG).await;
        let wrong = ClaimToken::generate();
        let empty = ClaimToken::from_string(String::new());
        for bad in [&wrong, &empty] {
            assert!(!f
                .store
                .complete(&k, bad, record(200, 1), KEEP)
                .await
                .unwrap());
            assert!(!f.store.release(&k, bad).await.unwrap());
        }
        assert!(matches!(
            claim(&*f.store, &k).await,
            Claim::InFlight { digest: d, .. } if d == digest(1)
        ));
        // The owner still can.
        assert!(f
            .store
            .complete(&k, &t, record(200, 1), KEEP)
            .await
            .unwrap());
        // A token no longer owns a done record: a second complete or a
        // release fails and leaves the record as it was.
        assert!(!f
            .store
            .complete(&k, &t, record(500, 9), KEEP)
            .await
            .unwrap());
        assert!(!f.store.release(&k, &t).await.unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(200, 1)));
        // Tokens on keys never claimed: nothing to release or renew; a
        // complete records the outcome (the key is free, see the contract).
        let none = key("never");
        assert!(!f.store.release(&none, &t).await.unwrap());
        assert!(!f.store.renew(&none, &t, LONG).await.unwrap());
        assert!(matches!(claim(&*f.store, &none).await, Claim::Acquired(_)));
        let free = key("free");
        assert!(f
            .store
            .complete(&free, &t, record(200, 7), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &free).await, Claim::Done(record(200, 7)));
    }

    pub(crate) async fn release_frees_the_key(f: Arc<Fixture>) {
        let k = key("release");
        let t1 = acquire(&*f.store, &k, &digest(1), LONG).await;
        assert!(f.store.release(&k, &t1).await.unwrap());
        let t2 = acquire(&*f.store, &k, &digest(2), LONG).await;
        assert_ne!(t1, t2, "every claim gets a fresh token");
        // The released token no longer owns anything.
        assert!(!f.store.release(&k, &t1).await.unwrap());
        assert!(!f
            .store
            .complete(&k, &t1, record(200, 1), KEEP)
            .await
            .unwrap());
        assert!(matches!(
            claim(&*f.store, &k).await,
            Claim::InFlight { digest: d, .. } if d == digest(2)
        ));
    }

    pub(crate) async fn expired_lease_fences_the_old_token(f: Arc<Fixture>) {
        let k = key("fence");
        let old = acquire(&*f.store, &k, &digest(1), SHORT).await;
        tokio::time::sleep(PAST_LEASE).await;
        let new = acquire(&*f.store, &k, &digest(2), LONG).await;
        assert_ne!(old, new);
        assert!(!f
            .store
            .complete(&k, &old, record(200, 1), KEEP)
            .await
            .unwrap());
        assert!(!f.store.release(&k, &old).await.unwrap());
        assert!(!f.store.renew(&k, &old, LONG).await.unwrap());
        assert!(matches!(
            claim(&*f.store, &k).await,
            Claim::InFlight { digest: d, .. } if d == digest(2)
        ));
        assert!(f
            .store
            .complete(&k, &new, record(202, 2), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(202, 2)));
    }

    pub(crate) async fn expired_lease_still_completes(f: Arc<Fixture>) {
        let k = key("late");
        let t = acquire(&*f.store, &k, &digest(1), SHORT).await;
        tokio::time::sleep(PAST_LEASE).await;
        // Nobody re-claimed: the token still owns the key (or the backend
        // forgot the claim and the key is free), so the outcome is kept.
        assert!(f
            .store
            .complete(&k, &t, record(200, 1), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(200, 1)));
        // Once done, the token owns nothing any more.
        assert!(!f.store.release(&k, &t).await.unwrap());
        assert!(!f.store.renew(&k, &t, LONG).await.unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(200, 1)));

        // Release of an expired claim: done, or nothing left to release.
        let k2 = key("late_release");
        let t2 = acquire(&*f.store, &k2, &digest(1), SHORT).await;
        tokio::time::sleep(PAST_LEASE).await;
        let _ = f.store.release(&k2, &t2).await.unwrap();
        assert!(matches!(claim(&*f.store, &k2).await, Claim::Acquired(_)));
    }

    pub(crate) async fn renew_extends_the_lease(f: Arc<Fixture>) {
        let k = key("renew");
        let t = acquire(&*f.store, &k, &digest(1), SHORT).await;
        // Renew well past the short lease, three times, before it ends.
        for _ in 0..3 {
            tokio::time::sleep(SHORT / 3).await;
            assert!(f.store.renew(&k, &t, SHORT).await.unwrap());
        }
        assert!(f.store.renew(&k, &t, LONG).await.unwrap());
        tokio::time::sleep(PAST_LEASE).await;
        match claim(&*f.store, &k).await {
            Claim::InFlight {
                remaining,
                digest: d,
            } => {
                assert!(
                    remaining > SHORT,
                    "the lease follows the renewal: {remaining:?}"
                );
                assert_eq!(d, digest(1), "renewing keeps the claim's digest");
            }
            other => panic!("expected InFlight after renewals, got {other:?}"),
        }
        // Another token cannot renew it; the owner still completes it.
        assert!(!f
            .store
            .renew(&k, &ClaimToken::generate(), LONG)
            .await
            .unwrap());
        assert!(f
            .store
            .complete(&k, &t, record(200, 1), KEEP)
            .await
            .unwrap());
        assert!(!f.store.renew(&k, &t, LONG).await.unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(200, 1)));
    }

    pub(crate) async fn done_record_keeps_the_response(f: Arc<Fixture>) {
        let k = key("body");
        let t = acquire(&*f.store, &k, &digest(1), LONG).await;
        // Binary, including the separators a backend might use.
        let body: Vec<u8> = (0..DoneRecord::MAX_BODY + 100)
            .map(|i| u8::try_from(i % 256).unwrap())
            .collect();
        let full = record(200, 1).with_body(
            Some("application/json; charset=utf-8".into()),
            bytes::Bytes::from(body.clone()),
        );
        assert_eq!(full.body.len(), DoneRecord::MAX_BODY, "cut to the bound");
        assert!(f.store.complete(&k, &t, full.clone(), KEEP).await.unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(full));
        // Content type without a body, and a body without content type.
        let k2 = key("ct");
        let t2 = acquire(&*f.store, &k2, &digest(2), LONG).await;
        let ct_only = record(204, 2).with_body(Some("text/plain".into()), bytes::Bytes::new());
        assert!(f
            .store
            .complete(&k2, &t2, ct_only.clone(), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k2).await, Claim::Done(ct_only));
        let k3 = key("bodyonly");
        let t3 = acquire(&*f.store, &k3, &digest(3), LONG).await;
        let body_only = record(200, 3).with_body(None, bytes::Bytes::from_static(b"\n\nok\n"));
        assert!(f
            .store
            .complete(&k3, &t3, body_only.clone(), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k3).await, Claim::Done(body_only));
    }

    pub(crate) async fn retention_expiry_frees_the_key(f: Arc<Fixture>) {
        let k = key("retention");
        let t = acquire(&*f.store, &k, &digest(1), LONG).await;
        assert!(f
            .store
            .complete(&k, &t, record(200, 1), SHORT)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(200, 1)));
        tokio::time::sleep(PAST_LEASE).await;
        let t2 = acquire(&*f.store, &k, &digest(5), LONG).await;
        assert!(f
            .store
            .complete(&k, &t2, record(204, 5), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(204, 5)));
    }

    /// `CONCURRENCY` claims of one key at once: exactly one wins, the rest
    /// see the winner's claim. Repeated over fresh keys, over a key whose
    /// claim expired and over a key whose done record expired.
    pub(crate) async fn concurrent_claims_have_one_winner(f: Arc<Fixture>) {
        for round in 0..3 {
            let k = key(&format!("race{round}"));
            race(&f, &k).await;
        }
        let k = key("race_expired_claim");
        let _t = acquire(&*f.store, &k, &digest(1), SHORT).await;
        tokio::time::sleep(PAST_LEASE).await;
        race(&f, &k).await;

        let k = key("race_expired_done");
        let t = acquire(&*f.store, &k, &digest(1), LONG).await;
        assert!(f
            .store
            .complete(&k, &t, record(200, 1), SHORT)
            .await
            .unwrap());
        tokio::time::sleep(PAST_LEASE).await;
        race(&f, &k).await;
    }

    async fn race(f: &Arc<Fixture>, k: &str) {
        let start = Arc::new(tokio::sync::Barrier::new(CONCURRENCY));
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|i| {
                let store = Arc::clone(&f.store);
                let start = Arc::clone(&start);
                let k = k.to_owned();
                tokio::spawn(async move {
                    start.wait().await;
                    // Each claimer offers its own digest, to see whose wins.
                    let d = [u8::try_from(i).unwrap(); 32];
                    (d, store.claim(&k, &d, LONG).await.expect("claim"))
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut seen = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                (d, Claim::Acquired(t)) => winners.push((d, t)),
                (_, Claim::InFlight { digest: d, .. }) => seen.push(d),
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one of {CONCURRENCY} claims wins");
        let (winner_digest, token) = &winners[0];
        assert!(
            seen.iter().all(|d| d == winner_digest),
            "losers see the winner's claim"
        );
        assert!(f
            .store
            .complete(k, token, record(200, 7), KEEP)
            .await
            .unwrap());
    }

    pub(crate) async fn keys_are_independent(f: Arc<Fixture>) {
        let (a, b) = (key("a"), key("b"));
        let ta = acquire(&*f.store, &a, &digest(1), LONG).await;
        let tb = acquire(&*f.store, &b, &digest(2), LONG).await;
        // A token is bound to its key.
        assert!(!f
            .store
            .complete(&b, &ta, record(200, 1), KEEP)
            .await
            .unwrap());
        assert!(!f.store.release(&a, &tb).await.unwrap());
        assert!(f
            .store
            .complete(&a, &ta, record(200, 1), KEEP)
            .await
            .unwrap());
        assert!(matches!(claim(&*f.store, &b).await, Claim::InFlight { .. }));
        assert!(f.store.release(&b, &tb).await.unwrap());
        assert_eq!(claim(&*f.store, &a).await, Claim::Done(record(200, 1)));
        // Long keys work and stay distinct (Postgres stores them hashed).
        let long_a = format!("{}:{}", key("long"), "x".repeat(4096));
        let long_b = format!("{long_a}y");
        let tl = acquire(&*f.store, &long_a, &digest(1), LONG).await;
        let _ = acquire(&*f.store, &long_b, &digest(2), LONG).await;
        assert!(f
            .store
            .complete(&long_a, &tl, record(200, 1), KEEP)
            .await
            .unwrap());
        assert_eq!(claim(&*f.store, &long_a).await, Claim::Done(record(200, 1)));
        assert!(matches!(
            claim(&*f.store, &long_b).await,
            Claim::InFlight { .. }
        ));
        // Namespaced keys (`prefix:scheme:id`) that share an id are distinct.
        let id = format!("msg_{:016x}", rand::random::<u64>());
        for prefix in ["tenant-a", "tenant-b"] {
            let k = format!("{prefix}:standard:{id}");
            let _ = acquire(&*f.store, &k, &digest(1), LONG).await;
        }
    }

    pub(crate) async fn namespaces_isolate(f: Arc<Fixture>) {
        let k = key("ns");
        let t = acquire(&*f.store, &k, &digest(1), LONG).await;
        let t_other = acquire(&*f.other, &k, &digest(2), LONG).await;
        assert!(f
            .store
            .complete(&k, &t, record(200, 1), KEEP)
            .await
            .unwrap());
        assert!(!f
            .other
            .complete(&k, &t, record(200, 1), KEEP)
            .await
            .unwrap());
        assert!(matches!(
            claim(&*f.other, &k).await,
            Claim::InFlight { digest: d, .. } if d == digest(2)
        ));
        assert!(f.other.release(&k, &t_other).await.unwrap());
        assert_eq!(claim(&*f.store, &k).await, Claim::Done(record(200, 1)));
    }
}

/// One `#[tokio::test]` per case for the store that `$setup` builds.
macro_rules! conformance {
    ($setup:path) => {
        conformance!(@cases $setup;
            fresh_claim_acquires,
            second_claim_is_in_flight,
            complete_then_done,
            wrong_token_changes_nothing,
            release_frees_the_key,
            expired_lease_fences_the_old_token,
            expired_lease_still_completes,
            renew_extends_the_lease,
            done_record_keeps_the_response,
            retention_expiry_frees_the_key,
            concurrent_claims_have_one_winner,
            keys_are_independent,
            namespaces_isolate,
        );
    };
    (@list) => {
        conformance!(@list
            fresh_claim_acquires,
            second_claim_is_in_flight,
            complete_then_done,
            wrong_token_changes_nothing,
            release_frees_the_key,
            expired_lease_fences_the_old_token,
            expired_lease_still_completes,
            renew_extends_the_lease,
            done_record_keeps_the_response,
            retention_expiry_frees_the_key,
            concurrent_claims_have_one_winner,
            keys_are_independent,
            namespaces_isolate,
        )
    };
    (@list $($case:ident),* $(,)?) => {
        [$(
            (stringify!($case), (|f| Box::pin($crate::cases::$case(f)) as Cleanup) as fn(Arc<Fixture>) -> Cleanup)
        ),*]
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::run($setup(), $crate::cases::$case).await;
            }
        )*
    };
}

/// Whether an unreachable server fails the test (`CI=true`) or skips it.
#[allow(dead_code)]
fn unreachable_server(what: &str, err: &dyn std::error::Error) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is unreachable under CI=true: {err}");
    }
    eprintln!("skipping: {what} is unreachable ({err}); set CI=true to fail instead");
}

mod memory {
    use super::*;
    use hookgate_tower::store::MemoryStore;

    async fn setup() -> Option<(Fixture, Cleanup)> {
        let fixture = Fixture {
            store: Arc::new(MemoryStore::new()),
            other: Arc::new(MemoryStore::new()),
        };
        Some((fixture, Box::pin(async {})))
    }

    conformance!(setup);
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use hookgate_tower::store::{RedisStore, StoreErrorKind};
    use redis::AsyncCommands;

    fn url() -> String {
        std::env::var("HOOKGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    async fn setup() -> Option<(Fixture, Cleanup)> {
        let url = url();
        let store = match RedisStore::connect(&url).await {
            Ok(s) => s,
            Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                unreachable_server(&format!("Redis at {url}"), &e);
                return None;
            }
            Err(e) => panic!("cannot set up RedisStore: {e}"),
        };
        let run = format!("hookgate-test:{:016x}", rand::random::<u64>());
        let a = store.clone().with_prefix(format!("{run}:a:"));
        let b = store.with_prefix(format!("{run}:b:"));
        let fixture = Fixture {
            store: Arc::new(a),
            other: Arc::new(b),
        };
        Some((fixture, Box::pin(delete_prefix(url, format!("{run}:*")))))
    }

    async fn delete_prefix(url: String, pattern: String) {
        let client = redis::Client::open(url).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("cleanup connection");
        let keys: Vec<String> = {
            let mut iter = conn.scan_match::<_, String>(&pattern).await.expect("scan");
            let mut keys = Vec::new();
            while let Some(k) = iter.next_item().await {
                keys.push(k);
            }
            keys
        };
        if !keys.is_empty() {
            let _: i64 = conn.del(keys).await.expect("cleanup del");
        }
    }

    /// A key holding something the store did not write is a configuration
    /// error (the layer's 500), not a guess at a status.
    #[tokio::test]
    async fn foreign_values_are_config_errors() {
        let Some((_, cleanup)) = setup().await else {
            return;
        };
        let url = url();
        let run = format!("hookgate-test:{:016x}:", rand::random::<u64>());
        let body = async {
            let store = RedisStore::connect(&url)
                .await
                .expect("connect")
                .with_prefix(run.clone());
            let client = redis::Client::open(url.as_str()).expect("url");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("conn");
            for (name, value) in [
                ("empty", ""),
                ("garbage", "garbage"),
                ("bad_status", "d0123456789012345678901234567890123x"),
            ] {
                let () = conn.set(format!("{run}{name}"), value).await.expect("set");
                let err = store.claim(name, &digest(1), LONG).await.expect_err(name);
                assert_eq!(err.kind(), StoreErrorKind::Config, "{name}: {err}");
                // Nor can a token complete or release it.
                let t = ClaimToken::generate();
                assert!(!store
                    .complete(name, &t, record(200, 1), KEEP)
                    .await
                    .unwrap());
                assert!(!store.release(name, &t).await.unwrap());
            }
        };
        let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, body))
            .catch_unwind()
            .await;
        cleanup.await;
        delete_prefix(url, format!("{run}*")).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    conformance!(setup);
}

/// The same suite on a Redis Cluster of three masters, private to the test
/// (`redis-server --cluster-enabled` on free loopback ports, joined with
/// `redis-cli --cluster create`), through `redis+cluster://` with two seeds.
/// One cluster for all cases (forming one takes seconds).
#[cfg(feature = "redis")]
mod cluster_support;

#[cfg(feature = "redis")]
mod redis_cluster {
    use super::*;
    use crate::cluster_support::PrivateCluster;
    use hookgate_tower::store::RedisStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_on_a_three_master_cluster() {
        let Some(cluster) = PrivateCluster::start() else {
            return;
        };
        let store = RedisStore::connect(&cluster.url())
            .await
            .expect("connect to the cluster");
        for (name, case) in conformance!(@list) {
            let run = format!("hookgate-test:{:016x}", rand::random::<u64>());
            let fixture = Fixture {
                store: Arc::new(store.clone().with_prefix(format!("{run}:a:"))),
                other: Arc::new(store.clone().with_prefix(format!("{run}:b:"))),
            };
            eprintln!("cluster: {name}");
            tokio::time::timeout(CASE_TIMEOUT, case(Arc::new(fixture)))
                .await
                .unwrap_or_else(|_| panic!("{name} did not finish within {CASE_TIMEOUT:?}"));
        }
        // The keys landed on every master: the calls went to the slot's owner.
        for port in &cluster.ports {
            let keys: u64 = cluster.cli(*port, &["dbsize"]).parse().expect("dbsize");
            assert!(keys > 0, "master {port} holds no key");
        }
        // A master that lost its scripts (restart, failover) gets them again.
        for port in &cluster.ports {
            assert_eq!(cluster.cli(*port, &["script", "flush"]), "OK");
        }
        let k = key("after_flush");
        let t = acquire(&store, &k, &digest(1), LONG).await;
        assert!(store.complete(&k, &t, record(200, 1), KEEP).await.unwrap());
        assert_eq!(claim(&store, &k).await, Claim::Done(record(200, 1)));
    }

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert!(RedisStore::lazy("redis+cluster://").is_err());
        assert!(RedisStore::lazy("redis+cluster://127.0.0.1:1,127.0.0.1:2").is_ok());
        assert!(RedisStore::lazy("rediss+cluster://127.0.0.1:1#insecure").is_err());
    }
}

#[cfg(feature = "postgres")]
mod postgres_store {
    use super::*;
    use hookgate_tower::store::{PostgresStore, StoreErrorKind};

    fn url() -> String {
        std::env::var("HOOKGATE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    async fn setup() -> Option<(Fixture, Cleanup)> {
        setup_with(false).await
    }

    /// Two stores in fresh tables; `durable`: claims flushed before they
    /// answer ([`PostgresStore::with_durable_claims`]).
    async fn setup_with(durable: bool) -> Option<(Fixture, Cleanup)> {
        let url = url();
        let run = format!("hookgate_test_{:016x}", rand::random::<u64>());
        let (ta, tb) = (format!("{run}_a"), format!("{run}_b"));
        let mut stores = Vec::new();
        for table in [&ta, &tb] {
            let mut store = PostgresStore::new(&url)
                .expect("url")
                .with_table(table)
                .expect("table name")
                .with_pool_size(8)
                .with_timeout(Duration::from_secs(10));
            if durable {
                store = store.with_durable_claims();
            }
            match store.migrate().await {
                Ok(()) => stores.push(store),
                Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                    unreachable_server(&format!("PostgreSQL at {url}"), &e);
                    return None;
                }
                Err(e) => panic!("cannot set up PostgresStore: {e}"),
            }
        }
        let b = stores.pop().expect("two stores");
        let a = stores.pop().expect("two stores");
        let fixture = Fixture {
            store: Arc::new(a),
            other: Arc::new(b),
        };
        Some((fixture, Box::pin(drop_tables(url, vec![ta, tb]))))
    }

    async fn drop_tables(url: String, tables: Vec<String>) {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("cleanup connection");
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", tables.join(", ")))
            .await
            .expect("drop test tables");
        drop(client);
        let _ = conn.await;
    }

    /// A claim stuck behind a row lock answers `Unavailable` within the
    /// store's timeout, and the server abandons the statement too, so once
    /// the lock is gone the key is still free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stuck_claim_is_unavailable_and_leaves_no_claim() {
        let url = url();
        let table = format!("hookgate_test_{:016x}_busy", rand::random::<u64>());
        let store = PostgresStore::new(&url)
            .expect("url")
            .with_table(&table)
            .expect("table name")
            .with_timeout(Duration::from_millis(500));
        match store.migrate().await {
            Ok(()) => {}
            Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                unreachable_server(&format!("PostgreSQL at {url}"), &e);
                return;
            }
            Err(e) => panic!("cannot set up PostgresStore: {e}"),
        }
        let body = async {
            let k = key("locked");
            let _ = acquire(&store, &k, &digest(1), SHORT).await;
            tokio::time::sleep(PAST_LEASE).await;
            // Someone else holds the expired row's lock in an open transaction.
            let (mut admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("admin connection");
            let conn = tokio::spawn(conn);
            let tx = admin.transaction().await.expect("begin");
            tx.execute(
                &format!("SELECT 1 FROM {table} WHERE key = $1 FOR UPDATE"),
                &[&k],
            )
            .await
            .expect("lock row");
            let stuck = store.claim(&k, &digest(2), LONG).await;
            let err = stuck.expect_err("a claim stuck behind a row lock");
            assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
            // Keep the lock past the server-side statement timeout, then let go.
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.rollback().await.expect("rollback");
            drop(admin);
            let _ = conn.await;
            // The abandoned claim did not take the key behind our back.
            let mut acquired = false;
            for _ in 0..20 {
                match store.claim(&k, &digest(4), LONG).await {
                    Ok(Claim::Acquired(_)) => {
                        acquired = true;
                        break;
                    }
                    Ok(other) => panic!("the abandoned claim took effect: {other:?}"),
                    // The pooled connection may still be finishing the
                    // cancelled statement.
                    Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(acquired, "the key became claimable again");
        };
        let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, body))
            .catch_unwind()
            .await;
        drop(store);
        drop_tables(url, vec![table]).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("test timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A table dropped under a running store is a configuration error (the
    /// layer's 500), not "unavailable"; `migrate` brings it back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_table_is_a_config_error() {
        let url = url();
        let table = format!("hookgate_test_{:016x}_gone", rand::random::<u64>());
        let store = PostgresStore::new(&url)
            .expect("url")
            .with_table(&table)
            .expect("table name");
        match store.migrate().await {
            Ok(()) => {}
            Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                unreachable_server(&format!("PostgreSQL at {url}"), &e);
                return;
            }
            Err(e) => panic!("cannot set up PostgresStore: {e}"),
        }
        let body = async {
            let k = key("gone");
            let t = acquire(&store, &k, &digest(1), LONG).await;
            drop_tables(url.clone(), vec![table.clone()]).await;
            let err = store.claim(&k, &digest(1), LONG).await.expect_err("claim");
            assert_eq!(err.kind(), StoreErrorKind::Config, "{err}");
            for err in [
                store
                    .complete(&k, &t, record(200, 1), KEEP)
                    .await
                    .expect_err("complete"),
                store.release(&k, &t).await.expect_err("release"),
                store.renew(&k, &t, LONG).await.expect_err("renew"),
            ] {
                assert_eq!(err.kind(), StoreErrorKind::Config, "{err}");
            }
            store.migrate().await.expect("migrate again");
            assert!(matches!(claim(&store, &k).await, Claim::Acquired(_)));
        };
        let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, body))
            .catch_unwind()
            .await;
        drop_tables(url, vec![table]).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("test timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A table created by an earlier version (no response columns) is
    /// upgraded in place by `migrate`; its done records replay with an
    /// empty body.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrate_upgrades_a_table_from_an_earlier_version() {
        let url = url();
        let table = format!("hookgate_test_{:016x}_old", rand::random::<u64>());
        let (admin, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => {
                unreachable_server(&format!("PostgreSQL at {url}"), &e);
                return;
            }
        };
        let conn = tokio::spawn(conn);
        let body = async {
            admin
                .batch_execute(&format!(
                    "CREATE TABLE {table} (key text PRIMARY KEY, token text, status integer NOT NULL,
                         digest bytea NOT NULL, expires_at timestamptz NOT NULL);
                     INSERT INTO {table} VALUES ('old', NULL, 201, '\\x{}', now() + interval '1 hour');",
                    "11".repeat(32)
                ))
                .await
                .expect("old table");
            let store = PostgresStore::new(&url)
                .expect("url")
                .with_table(&table)
                .expect("table name");
            store.migrate().await.expect("migrate an old table");
            store.migrate().await.expect("migrate is idempotent");
            assert_eq!(claim(&store, "old").await, Claim::Done(record(201, 0x11)));
            let k = key("new");
            let t = acquire(&store, &k, &digest(1), LONG).await;
            let full = record(200, 1).with_body(Some("text/plain".into()), "ok".into());
            assert!(store.complete(&k, &t, full.clone(), KEEP).await.unwrap());
            assert_eq!(claim(&store, &k).await, Claim::Done(full));
        };
        let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, body))
            .catch_unwind()
            .await;
        drop(admin);
        let _ = conn.await;
        drop_tables(url, vec![table]).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("test timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `sweep` removes exactly the rows past their lease or retention, and
    /// `spawn_sweeper` runs it in the background.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sweep_deletes_only_expired_rows() {
        let url = url();
        let table = format!("hookgate_test_{:016x}_sweep", rand::random::<u64>());
        let store = PostgresStore::new(&url)
            .expect("url")
            .with_table(&table)
            .expect("table name");
        match store.migrate().await {
            Ok(()) => {}
            Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                unreachable_server(&format!("PostgreSQL at {url}"), &e);
                return;
            }
            Err(e) => panic!("cannot set up PostgresStore: {e}"),
        }
        let body = async {
            let live = key("live");
            let _ = acquire(&store, &live, &digest(1), LONG).await;
            let kept = key("kept");
            let t = acquire(&store, &kept, &digest(1), LONG).await;
            assert!(store
                .complete(&kept, &t, record(200, 1), KEEP)
                .await
                .unwrap());
            for name in ["c1", "c2"] {
                let _ = acquire(&store, &key(name), &digest(1), SHORT).await;
            }
            let gone = key("gone");
            let t = acquire(&store, &gone, &digest(1), LONG).await;
            assert!(store
                .complete(&gone, &t, record(200, 1), SHORT)
                .await
                .unwrap());
            tokio::time::sleep(PAST_LEASE).await;
            assert_eq!(store.sweep().await.unwrap(), 3);
            assert_eq!(store.sweep().await.unwrap(), 0);
            assert!(matches!(claim(&store, &live).await, Claim::InFlight { .. }));
            assert_eq!(claim(&store, &kept).await, Claim::Done(record(200, 1)));

            // The background sweeper does the same on its own.
            for name in ["s1", "s2"] {
                let _ = acquire(&store, &key(name), &digest(1), SHORT).await;
            }
            tokio::time::sleep(PAST_LEASE).await;
            let sweeper = store.spawn_sweeper(Duration::from_millis(50));
            let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("admin connection");
            let conn = tokio::spawn(conn);
            let count = format!("SELECT count(*) FROM {table}");
            let mut rows = i64::MAX;
            for _ in 0..200 {
                rows = admin.query_one(&count, &[]).await.expect("count").get(0);
                if rows == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sweeper.abort();
            assert_eq!(
                rows, 2,
                "the sweeper left only the live claim and the kept record"
            );
            drop(admin);
            let _ = conn.await;
        };
        let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, body))
            .catch_unwind()
            .await;
        drop_tables(url, vec![table]).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("sweep test timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `migrate` sets `vacuum_truncate = false` on the table. Where nothing
    /// else vacuums the table (the server runs with
    /// `autovacuum = off`, or the table with `autovacuum_enabled = false`),
    /// a sweep that deleted rows runs `VACUUM` on it, so the space of the
    /// deleted rows is reused instead of the table growing forever; where
    /// autovacuum runs, the sweep leaves it to autovacuum.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sweep_vacuums_only_where_autovacuum_is_off() {
        let url = url();
        let run = format!("hookgate_test_{:016x}", rand::random::<u64>());
        let (off, default) = (format!("{run}_avoff"), format!("{run}_avdefault"));
        let mut stores = Vec::new();
        for table in [&off, &default] {
            let store = PostgresStore::new(&url)
                .expect("url")
                .with_table(table)
                .expect("table name");
            match store.migrate().await {
                Ok(()) => stores.push(store),
                Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                    unreachable_server(&format!("PostgreSQL at {url}"), &e);
                    return;
                }
                Err(e) => panic!("cannot set up PostgresStore: {e}"),
            }
        }
        let body = async {
            let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("admin connection");
            let conn = tokio::spawn(conn);
            admin
                .batch_execute(&format!(
                    "ALTER TABLE {off} SET (autovacuum_enabled = false)"
                ))
                .await
                .expect("table option");
            let server_off: bool = admin
                .query_one("SELECT current_setting('autovacuum') = 'off'", &[])
                .await
                .expect("autovacuum setting")
                .get(0);
            let vacuums = |table: String| {
                let admin = &admin;
                async move {
                    let n: i64 = admin
                        .query_one(
                            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = $1::text::regclass",
                            &[&table],
                        )
                        .await
                        .expect("vacuum count")
                        .get(0);
                    n
                }
            };
            for (store, expect_vacuum) in [(&stores[0], true), (&stores[1], server_off)] {
                let table = store.table().to_owned();
                // migrate turned truncation off (it would lock out claims).
                let no_truncate: bool = admin
                    .query_one(
                        "SELECT 'vacuum_truncate=false' = ANY(reloptions) FROM pg_class \
                         WHERE oid = $1::text::regclass",
                        &[&table],
                    )
                    .await
                    .expect("reloptions")
                    .get(0);
                assert!(no_truncate, "{table}: vacuum_truncate is not off");
                // A sweep that deletes nothing (the table is still empty:
                // no timing involved) never vacuums.
                let before = vacuums(table.clone()).await;
                assert_eq!(store.sweep().await.unwrap(), 0);
                assert_eq!(
                    vacuums(table.clone()).await,
                    before,
                    "{table}: nothing deleted"
                );
                for name in ["v1", "v2"] {
                    let k = key(name);
                    let t = acquire(store, &k, &digest(1), LONG).await;
                    assert!(store.complete(&k, &t, record(200, 1), SHORT).await.unwrap());
                }
                tokio::time::sleep(PAST_LEASE).await;
                assert_eq!(store.sweep().await.unwrap(), 2);
                let after = vacuums(table.clone()).await;
                assert_eq!(
                    after > before,
                    expect_vacuum,
                    "{table}: vacuum_count {before} -> {after}, server autovacuum off: {server_off}"
                );
                // `sweep_batch` (what a maintenance runner calls) too.
                let k = key("v3");
                let t = acquire(store, &k, &digest(1), LONG).await;
                assert!(store.complete(&k, &t, record(200, 1), SHORT).await.unwrap());
                tokio::time::sleep(PAST_LEASE).await;
                assert_eq!(store.sweep_batch().await.unwrap(), 1);
                let again = vacuums(table.clone()).await;
                assert_eq!(
                    again > after,
                    expect_vacuum,
                    "{table}: sweep_batch: vacuum_count {after} -> {again}"
                );
            }
            drop(admin);
            let _ = conn.await;
        };
        let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, body))
            .catch_unwind()
            .await;
        drop_tables(url, vec![off, default]).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("vacuum test timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    conformance!(setup);

    /// The same suite with claims flushed before they answer
    /// (`with_durable_claims`, the behaviour before claims committed
    /// asynchronously).
    mod durable_claims {
        use super::*;

        async fn setup_durable() -> Option<(Fixture, Cleanup)> {
            setup_with(true).await
        }

        conformance!(setup_durable);
    }
}
