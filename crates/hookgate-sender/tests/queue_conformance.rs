//! One conformance suite for the [`Queue`] contract, written once and run
//! against every backend: memory, Postgres and Redis (the real servers; see
//! `support` for the URLs and the skip rules). Each check gets a fresh,
//! empty queue (new schema / key prefix), removed afterwards.

mod support;

use std::{collections::BTreeSet, future::Future, time::Duration};

use hookgate_core::Scheme;
use hookgate_sender::{
    now_ms,
    queue::{
        Attempt, DeadLetter, DeliveryKey, DlqFilter, LeaseToken, Page, Queue, QueueErrorKind,
        QueueStats,
    },
    Endpoint, MemoryQueue, Message,
};

const LONG: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(300);
/// Sleep long enough for a `SHORT` lease (or a delay of `SHORT`) to pass.
const PAST_SHORT: Duration = Duration::from_millis(900);

fn message(id: &str) -> Message {
    Message {
        id: id.to_owned(),
        event_type: "order.paid".to_owned(),
        payload: bytes::Bytes::from(format!("{{\"id\":\"{id}\",\"bin\":\"\u{0}\u{ff}\"}}")),
        created_at_ms: 1_700_000_000_123,
    }
}

fn key(endpoint: &str, id: &str) -> DeliveryKey {
    DeliveryKey {
        endpoint: endpoint.to_owned(),
        message_id: id.to_owned(),
    }
}

fn attempt(status: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        at_ms: now_ms(),
        url: "http://127.0.0.1:9/hook".to_owned(),
        status,
        latency_ms: 12,
        error: error.map(str::to_owned),
    }
}

async fn stats<Q: Queue>(q: &Q) -> QueueStats {
    q.stats().await.expect("stats")
}

// ---------------------------------------------------------------- checks

/// enqueue → lease returns it with a token; a leased item is not leased again
/// while the lease runs.
async fn enqueue_then_lease<Q: Queue>(q: Q) {
    let m = message("m1");
    q.enqueue("ep", &m).await.unwrap();
    assert_eq!(
        stats(&q).await,
        QueueStats {
            pending: 1,
            leased: 0,
            dead: 0
        }
    );
    let before = now_ms();
    let leased = q.lease(10, LONG).await.unwrap();
    assert_eq!(leased.len(), 1);
    let l = &leased[0];
    assert_eq!(l.job.key, key("ep", "m1"));
    assert_eq!(l.job.message, m);
    assert_eq!(l.job.attempts, 0);
    assert!(l.job.next_attempt_ms <= before + 1000, "was due now");
    assert!(!l.token.0.is_empty());
    assert!(q.lease(10, LONG).await.unwrap().is_empty(), "leased twice");
    assert_eq!(
        stats(&q).await,
        QueueStats {
            pending: 1,
            leased: 1,
            dead: 0
        }
    );
}

/// Enqueueing the same key twice is a no-op (the first message stays).
async fn enqueue_twice_is_noop<Q: Queue>(q: Q) {
    let m = message("dup");
    q.enqueue("ep", &m).await.unwrap();
    let mut other = message("dup");
    other.payload = bytes::Bytes::from_static(b"different");
    q.enqueue("ep", &other).await.unwrap();
    assert_eq!(stats(&q).await.pending, 1);
    let leased = q.lease(10, LONG).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job.message, m);
    // While leased, enqueueing again changes nothing either.
    q.enqueue("ep", &m).await.unwrap();
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    // The same message id to another endpoint is another delivery.
    q.enqueue("ep2", &m).await.unwrap();
    let leased = q.lease(10, LONG).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job.key, key("ep2", "dup"));
}

/// `lease(max)` takes at most `max`, each delivery once, with distinct tokens.
async fn lease_respects_max<Q: Queue>(q: Q) {
    for i in 0..5 {
        q.enqueue("ep", &message(&format!("m{i}"))).await.unwrap();
    }
    assert!(q.lease(0, LONG).await.unwrap().is_empty());
    let a = q.lease(2, LONG).await.unwrap();
    let b = q.lease(10, LONG).await.unwrap();
    assert_eq!((a.len(), b.len()), (2, 3));
    let keys: BTreeSet<_> = a.iter().chain(&b).map(|l| l.job.key.clone()).collect();
    let tokens: BTreeSet<_> = a.iter().chain(&b).map(|l| l.token.0.clone()).collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(tokens.len(), 5);
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
}

/// After expiry another lease gets it, and the old token can no longer
/// retry, deliver, dead-letter or release (fencing).
async fn expired_lease_is_fenced<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let first = q.lease(10, SHORT).await.unwrap().remove(0);
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    tokio::time::sleep(PAST_SHORT).await;
    let second = q.lease(10, LONG).await.unwrap();
    assert_eq!(second.len(), 1, "expired lease was not taken again");
    let second = &second[0];
    assert_eq!(second.job.key, first.job.key);
    assert_ne!(second.token, first.token);
    let k = &first.job.key;
    let old = &first.token;
    assert!(!q
        .retry_later(k, old, attempt(Some(500), None), now_ms())
        .await
        .unwrap());
    assert!(!q.delivered(k, old, attempt(Some(200), None)).await.unwrap());
    assert!(!q.dead_letter(k, old, None, "exhausted").await.unwrap());
    assert!(!q.release(k, old).await.unwrap());
    assert!(!q
        .delivered(k, &LeaseToken("forged".into()), attempt(Some(200), None))
        .await
        .unwrap());
    // The new holder is unaffected.
    assert_eq!(stats(&q).await.pending, 1);
    assert!(q
        .delivered(k, &second.token, attempt(Some(200), None))
        .await
        .unwrap());
    assert_eq!(stats(&q).await, QueueStats::default());
}

/// retry_later hides it until due and records the attempt; dead_letter keeps
/// the message and the full history.
async fn retry_later_then_dead_letter<Q: Queue>(q: Q) {
    let m = message("m1");
    q.enqueue("ep", &m).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    let a1 = attempt(Some(503), None);
    let due = now_ms() + i64::try_from(SHORT.as_millis()).unwrap();
    assert!(q
        .retry_later(&l.job.key, &l.token, a1.clone(), due)
        .await
        .unwrap());
    // The lease is freed but the old token does not own anything now.
    assert!(!q.release(&l.job.key, &l.token).await.unwrap());
    assert!(q.lease(10, LONG).await.unwrap().is_empty(), "not due yet");
    assert_eq!(
        stats(&q).await,
        QueueStats {
            pending: 1,
            leased: 0,
            dead: 0
        }
    );
    tokio::time::sleep(PAST_SHORT).await;
    let l2 = q.lease(10, LONG).await.unwrap().remove(0);
    assert_eq!(l2.job.attempts, 1);
    assert_eq!(l2.job.next_attempt_ms, due);
    assert_eq!(l2.job.message, m);
    let a2 = attempt(None, Some("connection refused"));
    assert!(q
        .dead_letter(&l2.job.key, &l2.token, Some(a2.clone()), "exhausted")
        .await
        .unwrap());
    assert!(!q
        .delivered(&l2.job.key, &l2.token, attempt(Some(200), None))
        .await
        .unwrap());
    assert_eq!(
        stats(&q).await,
        QueueStats {
            pending: 0,
            leased: 0,
            dead: 1
        }
    );
    let dead = q.get_dead(&l2.job.key).await.unwrap().expect("dead letter");
    assert_eq!(dead.key, key("ep", "m1"));
    assert_eq!(dead.message, m);
    assert_eq!(dead.attempts, vec![a1, a2]);
    assert_eq!(dead.reason, "exhausted");
    assert!((now_ms() - dead.dead_at_ms).abs() < 60_000);
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
}

/// delivered removes it for good.
async fn delivered_removes<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert!(q
        .delivered(&l.job.key, &l.token, attempt(Some(204), None))
        .await
        .unwrap());
    assert!(!q
        .delivered(&l.job.key, &l.token, attempt(Some(204), None))
        .await
        .unwrap());
    assert_eq!(stats(&q).await, QueueStats::default());
    assert!(q.get_dead(&l.job.key).await.unwrap().is_none());
    tokio::time::sleep(PAST_SHORT).await;
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
}

/// release gives the lease back: due at once, under a new token.
async fn release_makes_due<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert!(q.release(&l.job.key, &l.token).await.unwrap());
    assert_eq!(stats(&q).await.leased, 0);
    let again = q.lease(10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.attempts, 0, "release is not an attempt");
    assert_ne!(again[0].token, l.token);
    assert!(!q.release(&l.job.key, &l.token).await.unwrap());
}

/// Dead-lettering without an attempt (e.g. a refused destination).
async fn dead_letter_without_attempt<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert!(q
        .dead_letter(&l.job.key, &l.token, None, "permanent: ssrf")
        .await
        .unwrap());
    let dead = q.get_dead(&l.job.key).await.unwrap().unwrap();
    assert!(dead.attempts.is_empty());
    assert_eq!(dead.reason, "permanent: ssrf");
}

fn dead_letter(endpoint: &str, id: &str, at: i64) -> DeadLetter {
    DeadLetter {
        key: key(endpoint, id),
        message: message(id),
        attempts: vec![
            attempt(Some(500), None),
            attempt(None, Some("timed out after 30s")),
        ],
        reason: "exhausted".to_owned(),
        dead_at_ms: at,
    }
}

/// Collect every page of `filter`; checks each page is full but the last.
async fn all_pages<Q: Queue>(q: &Q, filter: &DlqFilter, limit: usize) -> Vec<(i64, DeliveryKey)> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = q
            .list_dead(
                filter,
                &Page {
                    after: after.clone(),
                    limit,
                },
            )
            .await
            .unwrap();
        assert!(page.len() <= limit);
        let n = page.len();
        out.extend(page.iter().map(|d| (d.dead_at_ms, d.key.clone())));
        if n < limit {
            return out;
        }
        after = out.last().cloned();
    }
    panic!("paging did not end");
}

/// list_dead filters and pages with exact boundaries, no duplicates or
/// omissions; get/purge.
async fn list_dead_pages<Q: Queue>(q: Q) {
    let base = 1_700_000_000_000i64;
    let mut all = Vec::new();
    // Ties on dead_at across endpoints (including one a prefix of another),
    // to exercise the key order.
    for i in 0..23i64 {
        let endpoint = ["ep-a", "ep-b", "ep"][usize::try_from(i % 3).unwrap()];
        let at = base + (i / 4) * 1000;
        let id = format!("m{:02}", 22 - i);
        let d = dead_letter(endpoint, &id, at);
        q.add_dead_letter(&d).await.unwrap();
        all.push((at, d.key));
    }
    all.sort();
    assert_eq!(stats(&q).await.dead, 23);

    // Full listing, several page sizes.
    for limit in [1, 5, 7, 23, 100] {
        assert_eq!(
            all_pages(&q, &DlqFilter::default(), limit).await,
            all,
            "limit {limit}"
        );
    }
    // Exact page boundaries.
    let first = q
        .list_dead(
            &DlqFilter::default(),
            &Page {
                after: None,
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 5);
    let second = q
        .list_dead(
            &DlqFilter::default(),
            &Page {
                after: Some((first[4].dead_at_ms, first[4].key.clone())),
                limit: 5,
            },
        )
        .await
        .unwrap();
    let got: Vec<_> = second
        .iter()
        .map(|d| (d.dead_at_ms, d.key.clone()))
        .collect();
    assert_eq!(got, all[5..10]);
    // Items carry the whole dead letter.
    assert_eq!(first[0].attempts.len(), 2);
    assert_eq!(first[0].message, message(&first[0].key.message_id));

    // Filter by endpoint.
    let only_a = DlqFilter {
        endpoint: Some("ep-a".into()),
        ..DlqFilter::default()
    };
    let want: Vec<_> = all
        .iter()
        .filter(|(_, k)| k.endpoint == "ep-a")
        .cloned()
        .collect();
    assert_eq!(want.len(), 8);
    assert_eq!(all_pages(&q, &only_a, 3).await, want);
    // Filter by time: since inclusive, until exclusive.
    let window = DlqFilter {
        endpoint: None,
        since_ms: Some(base + 1000),
        until_ms: Some(base + 3000),
    };
    let want: Vec<_> = all
        .iter()
        .filter(|(at, _)| *at >= base + 1000 && *at < base + 3000)
        .cloned()
        .collect();
    assert_eq!(want.len(), 8);
    assert_eq!(all_pages(&q, &window, 3).await, want);
    // Both.
    let both = DlqFilter {
        endpoint: Some("ep".into()),
        since_ms: Some(base + 2000),
        until_ms: None,
    };
    let want: Vec<_> = all
        .iter()
        .filter(|(at, k)| k.endpoint == "ep" && *at >= base + 2000)
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(all_pages(&q, &both, 2).await, want);
    let nobody = DlqFilter {
        endpoint: Some("nobody".into()),
        ..DlqFilter::default()
    };
    assert!(all_pages(&q, &nobody, 5).await.is_empty());

    // Purge one; it disappears from the listing and from get.
    let gone = all[7].1.clone();
    assert!(q.purge_dead(&gone).await.unwrap());
    assert!(!q.purge_dead(&gone).await.unwrap());
    assert!(q.get_dead(&gone).await.unwrap().is_none());
    let left = all_pages(&q, &DlqFilter::default(), 4).await;
    assert_eq!(left.len(), 22);
    assert!(!left.iter().any(|(_, k)| *k == gone));
    assert_eq!(stats(&q).await.dead, 22);
}

/// replay: same id, back in the queue, due now, attempts reset; then purge.
async fn replay_and_purge<Q: Queue>(q: Q) {
    let m = message("m1");
    q.enqueue("ep", &m).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert!(q
        .retry_later(&l.job.key, &l.token, attempt(Some(500), None), now_ms())
        .await
        .unwrap());
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert_eq!(l.job.attempts, 1);
    assert!(q
        .dead_letter(
            &l.job.key,
            &l.token,
            Some(attempt(Some(500), None)),
            "exhausted"
        )
        .await
        .unwrap());
    let k = l.job.key.clone();

    assert!(q.replay_dead(&k).await.unwrap());
    assert!(!q.replay_dead(&k).await.unwrap(), "replayed twice");
    assert!(q.get_dead(&k).await.unwrap().is_none());
    assert_eq!(
        stats(&q).await,
        QueueStats {
            pending: 1,
            leased: 0,
            dead: 0
        }
    );
    let before = now_ms();
    let r = q.lease(10, LONG).await.unwrap();
    assert_eq!(r.len(), 1, "replayed delivery is due now");
    assert_eq!(r[0].job.key, k);
    assert_eq!(r[0].job.message, m, "same id and payload");
    assert_eq!(r[0].job.attempts, 0, "attempts reset");
    assert!(r[0].job.next_attempt_ms <= before + 1000);

    // Dead again, then purge.
    assert!(q
        .dead_letter(&k, &r[0].token, None, "permanent: 400")
        .await
        .unwrap());
    assert_eq!(stats(&q).await.dead, 1);
    assert!(q.purge_dead(&k).await.unwrap());
    assert!(!q.purge_dead(&k).await.unwrap());
    assert!(!q.replay_dead(&k).await.unwrap());
    assert_eq!(stats(&q).await, QueueStats::default());
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    assert!(q.get_dead(&key("ep", "never")).await.unwrap().is_none());
}

/// Endpoints: put/get (all fields), disable/enable, replace, unknown ids.
async fn endpoints<Q: Queue>(q: Q) {
    let ep = Endpoint::new(
        "orders",
        "http://127.0.0.1:9/hook",
        Scheme::StandardWebhooks,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap()
    .with_url("http://127.0.0.1:10/backup")
    .unwrap()
    .with_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
    .unwrap()
    .with_header("X-Tenant", "acme")
    .unwrap()
    .with_timeout(Duration::from_millis(2500))
    .unwrap()
    .with_connect_timeout(Duration::from_millis(700))
    .unwrap();
    assert!(q.get_endpoint("orders").await.unwrap().is_none());
    q.put_endpoint(&ep).await.unwrap();
    let got = q.get_endpoint("orders").await.unwrap().expect("stored");
    assert_eq!(got.id, ep.id);
    assert_eq!(got.urls, ep.urls);
    assert_eq!(got.scheme, ep.scheme);
    assert_eq!(got.secrets, ep.secrets);
    assert_eq!(got.timeout, ep.timeout);
    assert_eq!(got.connect_timeout, ep.connect_timeout);
    assert_eq!(got.headers, ep.headers);
    assert!(!got.disabled);

    q.set_endpoint_disabled("orders", true).await.unwrap();
    assert!(q.get_endpoint("orders").await.unwrap().unwrap().disabled);
    q.set_endpoint_disabled("orders", false).await.unwrap();
    assert!(!q.get_endpoint("orders").await.unwrap().unwrap().disabled);

    let replaced = Endpoint::new(
        "orders",
        "https://example.com/new",
        Scheme::Stripe,
        "whsec_x",
    )
    .unwrap();
    q.put_endpoint(&replaced).await.unwrap();
    let got = q.get_endpoint("orders").await.unwrap().unwrap();
    assert_eq!(got.urls, ["https://example.com/new"]);
    assert_eq!(got.scheme, Scheme::Stripe);
    assert_eq!(got.secrets, ["whsec_x"]);

    let err = q.set_endpoint_disabled("nobody", true).await.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::NotFound);
    assert!(q.get_endpoint("nobody").await.unwrap().is_none());
}

// ---------------------------------------------------------------- runners

/// Every check, by name, so a failure says which one.
macro_rules! run_all {
    ($fresh:expr) => {{
        run_all!(@one $fresh, enqueue_then_lease);
        run_all!(@one $fresh, enqueue_twice_is_noop);
        run_all!(@one $fresh, lease_respects_max);
        run_all!(@one $fresh, expired_lease_is_fenced);
        run_all!(@one $fresh, retry_later_then_dead_letter);
        run_all!(@one $fresh, delivered_removes);
        run_all!(@one $fresh, release_makes_due);
        run_all!(@one $fresh, dead_letter_without_attempt);
        run_all!(@one $fresh, list_dead_pages);
        run_all!(@one $fresh, replay_and_purge);
        run_all!(@one $fresh, endpoints);
    }};
    (@one $fresh:expr, $check:ident) => {{
        eprintln!("check: {}", stringify!($check));
        $fresh($check).await;
    }};
}

async fn memory<F, Fut>(check: F)
where
    F: FnOnce(MemoryQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    check(MemoryQueue::new()).await;
}

#[tokio::test]
async fn memory_queue_conforms() {
    run_all!(memory);
}

#[cfg(feature = "postgres")]
async fn postgres<F, Fut>(check: F)
where
    F: FnOnce(hookgate_sender::queue::PostgresQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    support::with_cleanup(check(q.clone()), support::pg::drop_schema(&q)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_queue_conforms() {
    run_all!(postgres);
}

#[cfg(feature = "redis")]
async fn redis<F, Fut>(check: F)
where
    F: FnOnce(hookgate_sender::queue::RedisQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(q) = support::redis::fresh().await else {
        return;
    };
    support::with_cleanup(check(q.clone()), support::redis::delete_keys(&q)).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_queue_conforms() {
    run_all!(redis);
}
