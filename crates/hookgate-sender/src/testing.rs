//! The [`Queue`] conformance suite, for third-party backends (feature
//! `testing`). Every check is a generic `async fn(queue)` that panics on a
//! violation; [`queue_conformance_tests!`](crate::queue_conformance_tests)
//! turns them into one `#[tokio::test]` per check and one per (state,
//! transition) pair. The memory, Postgres and Redis queues run exactly this
//! suite.
//!
//! ```ignore
//! // tests/conformance.rs of a crate with its own queue (dev-dependency:
//! // hookgate-sender with the `testing` feature, tokio with `macros`):
//! async fn fresh<F, Fut>(check: F)
//! where
//!     F: FnOnce(MyQueue) -> Fut,
//!     Fut: std::future::Future<Output = ()>,
//! {
//!     let queue = MyQueue::connect_fresh().await; // an empty namespace
//!     check(queue.clone()).await;
//!     queue.drop_namespace().await;
//! }
//! hookgate_sender::queue_conformance_tests!(my_queue, crate::fresh);
//! ```
//!
//! Checks that wait out a lease sleep about a second ([`PAST_SHORT`]).
#![allow(clippy::missing_panics_doc)]

use std::{collections::BTreeSet, time::Duration};

use hookgate_core::Scheme;

use crate::{
    now_ms,
    queue::{
        Attempt, DeadLetter, DeadReason, DeferReason, DeliveryKey, DeliveryState, DlqFilter,
        Enqueued, LeaseToken, Page, Queue, QueueErrorKind, QueueStats, Transition,
    },
    Endpoint, Message,
};

/// A lease that outlasts any check.
pub const LONG: Duration = Duration::from_secs(30);
/// A lease (or delay) that a check waits out.
pub const SHORT: Duration = Duration::from_millis(300);
/// Sleep long enough for a `SHORT` lease (or a delay of `SHORT`) to pass.
pub const PAST_SHORT: Duration = Duration::from_millis(900);

/// A message with id `id` and a payload that is not UTF-8.
pub fn message(id: &str) -> Message {
    Message {
        id: id.to_owned(),
        event_type: "order.paid".to_owned(),
        payload: bytes::Bytes::from(format!("{{\"id\":\"{id}\",\"bin\":\"\u{0}\u{ff}\"}}")),
        created_at_ms: 1_700_000_000_123,
    }
}

/// The key of `id` at `endpoint`.
pub fn key(endpoint: &str, id: &str) -> DeliveryKey {
    DeliveryKey {
        endpoint: endpoint.to_owned(),
        message_id: id.to_owned(),
    }
}

/// An attempt made now.
pub fn attempt(status: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        at_ms: now_ms(),
        url: "http://127.0.0.1:9/hook".to_owned(),
        status,
        latency_ms: 12,
        error: error.map(str::to_owned),
    }
}

/// The queue's stats (panics on error).
pub async fn stats<Q: Queue>(q: &Q) -> QueueStats {
    q.stats().await.expect("stats")
}

/// `Dead(Exhausted)`.
pub fn exhausted() -> Transition {
    Transition::Dead(DeadReason::Exhausted {
        last: "HTTP 503".into(),
    })
}

/// `Retry { delay: d }`.
pub fn retry(d: Duration) -> Transition {
    Transition::Retry { delay: d }
}

/// The state of `k` (panics on error).
pub async fn state<Q: Queue>(q: &Q, k: &DeliveryKey) -> Option<DeliveryState> {
    q.state(k).await.expect("state")
}

/// enqueue → lease returns it with a token and one counted attempt; a leased
/// item is not leased again while the lease runs.
pub async fn enqueue_then_lease<Q: Queue>(q: Q) {
    let m = message("m1");
    assert_eq!(q.enqueue("ep", &m).await.unwrap(), Enqueued::New);
    assert_eq!(
        state(&q, &key("ep", "m1")).await,
        Some(DeliveryState::Scheduled)
    );
    assert_eq!(
        stats(&q).await,
        QueueStats {
            scheduled: 1,
            ..QueueStats::default()
        }
    );
    let before = now_ms();
    let leased = q.lease(10, LONG).await.unwrap();
    assert_eq!(leased.len(), 1);
    let l = &leased[0];
    assert_eq!(l.job.key, key("ep", "m1"));
    assert_eq!(l.job.message, m);
    assert_eq!(l.job.attempts, 1, "counted at lease");
    assert!(l.job.next_attempt_ms <= before + 1000, "was due now");
    assert!(!l.token.0.is_empty());
    assert!(q.lease(10, LONG).await.unwrap().is_empty(), "leased twice");
    assert_eq!(state(&q, &l.job.key).await, Some(DeliveryState::Leased));
    assert_eq!(
        stats(&q).await,
        QueueStats {
            leased: 1,
            ..QueueStats::default()
        }
    );
}

/// Enqueueing an existing key is a no-op that reports its state.
pub async fn enqueue_twice_is_noop<Q: Queue>(q: Q) {
    let m = message("dup");
    assert_eq!(q.enqueue("ep", &m).await.unwrap(), Enqueued::New);
    let mut other = message("dup");
    other.payload = bytes::Bytes::from_static(b"different");
    assert_eq!(
        q.enqueue("ep", &other).await.unwrap(),
        Enqueued::Exists(DeliveryState::Scheduled)
    );
    assert_eq!(stats(&q).await.pending(), 1);
    let leased = q.lease(10, LONG).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job.message, m);
    // While leased, enqueueing again changes nothing either.
    assert_eq!(
        q.enqueue("ep", &m).await.unwrap(),
        Enqueued::Exists(DeliveryState::Leased)
    );
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    // The same message id to another endpoint is another delivery.
    assert_eq!(q.enqueue("ep2", &m).await.unwrap(), Enqueued::New);
    let leased = q.lease(10, LONG).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job.key, key("ep2", "dup"));
}

/// `lease(max)` takes at most `max`, each delivery once, with distinct tokens.
pub async fn lease_respects_max<Q: Queue>(q: Q) {
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

/// After expiry another lease gets it (a second attempt counted), and the
/// old token can no longer change its state (fencing) — but the old
/// holder's attempt is still recorded in the history.
pub async fn expired_lease_is_fenced<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let first = q.lease(10, SHORT).await.unwrap().remove(0);
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    tokio::time::sleep(PAST_SHORT).await;
    let second = q.lease(10, LONG).await.unwrap();
    assert_eq!(second.len(), 1, "expired lease was not taken again");
    let second = &second[0];
    assert_eq!(second.job.key, first.job.key);
    assert_eq!(second.job.attempts, 2, "the lost lease's attempt counts");
    assert_ne!(second.token, first.token);
    let k = &first.job.key;
    let old = &first.token;
    let lost = attempt(Some(500), Some("lost lease"));
    assert!(!q
        .settle(k, old, Some(lost.clone()), retry(Duration::ZERO))
        .await
        .unwrap());
    for t in [
        Transition::Delivered,
        Transition::Interrupted,
        Transition::Hold,
        exhausted(),
    ] {
        assert!(!q.settle(k, old, None, t).await.unwrap());
    }
    assert!(!q
        .settle(k, &LeaseToken("forged".into()), None, Transition::Delivered)
        .await
        .unwrap());
    // The new holder is unaffected.
    assert_eq!(state(&q, k).await, Some(DeliveryState::Leased));
    let mine = attempt(Some(503), None);
    assert!(q
        .settle(k, &second.token, Some(mine.clone()), exhausted())
        .await
        .unwrap());
    let dead = q.get_dead(k).await.unwrap().expect("dead");
    assert_eq!(dead.attempts, vec![lost, mine], "both attempts recorded");
}

/// Retry hides it until due (store clock) and records the attempt; Dead
/// keeps the message and the full history, with a typed reason.
pub async fn retry_then_dead_letter<Q: Queue>(q: Q) {
    let m = message("m1");
    q.enqueue("ep", &m).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    let a1 = attempt(Some(503), None);
    assert!(q
        .settle(&l.job.key, &l.token, Some(a1.clone()), retry(SHORT))
        .await
        .unwrap());
    // The old token does not own anything now.
    assert!(!q
        .settle(&l.job.key, &l.token, None, Transition::Interrupted)
        .await
        .unwrap());
    assert!(q.lease(10, LONG).await.unwrap().is_empty(), "not due yet");
    assert_eq!(
        stats(&q).await,
        QueueStats {
            scheduled: 1,
            ..QueueStats::default()
        }
    );
    tokio::time::sleep(PAST_SHORT).await;
    let l2 = q.lease(10, LONG).await.unwrap().remove(0);
    assert_eq!(l2.job.attempts, 2);
    assert_eq!(l2.job.message, m);
    let a2 = attempt(None, Some("connection refused"));
    assert!(q
        .settle(&l2.job.key, &l2.token, Some(a2.clone()), exhausted())
        .await
        .unwrap());
    assert!(!q
        .settle(&l2.job.key, &l2.token, None, Transition::Delivered)
        .await
        .unwrap());
    assert_eq!(
        stats(&q).await,
        QueueStats {
            dead: 1,
            ..QueueStats::default()
        }
    );
    let dead = q.get_dead(&l2.job.key).await.unwrap().expect("dead letter");
    assert_eq!(dead.key, key("ep", "m1"));
    assert_eq!(dead.message, m);
    assert_eq!(dead.attempts, vec![a1, a2]);
    assert_eq!(
        dead.reason,
        DeadReason::Exhausted {
            last: "HTTP 503".into()
        }
    );
    assert!((now_ms() - dead.dead_at_ms).abs() < 60_000);
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
}

/// Delivered is kept: enqueueing the key again is a no-op, nothing is due.
pub async fn delivered_is_kept<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert!(q
        .settle(
            &l.job.key,
            &l.token,
            Some(attempt(Some(204), None)),
            Transition::Delivered
        )
        .await
        .unwrap());
    assert!(!q
        .settle(&l.job.key, &l.token, None, Transition::Delivered)
        .await
        .unwrap());
    assert_eq!(state(&q, &l.job.key).await, Some(DeliveryState::Delivered));
    assert_eq!(
        stats(&q).await,
        QueueStats {
            delivered: 1,
            ..QueueStats::default()
        }
    );
    assert_eq!(
        q.enqueue("ep", &message("m1")).await.unwrap(),
        Enqueued::Exists(DeliveryState::Delivered)
    );
    assert!(q.get_dead(&l.job.key).await.unwrap().is_none());
    assert!(!q.replay_dead(&l.job.key).await.unwrap());
    assert!(!q.purge_dead(&l.job.key).await.unwrap());
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
}

/// Interrupted hands the lease back: due at once, the attempt refunded.
pub async fn interrupted_refunds<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert!(q
        .settle(&l.job.key, &l.token, None, Transition::Interrupted)
        .await
        .unwrap());
    assert_eq!(stats(&q).await.leased, 0);
    let again = q.lease(10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.attempts, 1, "interrupted is refunded");
    assert_ne!(again[0].token, l.token);
}

/// Defer waits its delay without spending an attempt.
pub async fn defer_refunds<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    let defer = Transition::Defer {
        delay: SHORT,
        reason: DeferReason::RateLimited,
    };
    assert!(q.settle(&l.job.key, &l.token, None, defer).await.unwrap());
    assert!(q.lease(10, LONG).await.unwrap().is_empty(), "not due yet");
    tokio::time::sleep(PAST_SHORT).await;
    let again = q.lease(10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.attempts, 1, "defer is refunded");
}

/// Hold parks the delivery until its endpoint is released.
pub async fn hold_until_released<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    q.enqueue("ep-2", &message("m1")).await.unwrap();
    for l in q.lease(10, LONG).await.unwrap() {
        assert!(q
            .settle(&l.job.key, &l.token, None, Transition::Hold)
            .await
            .unwrap());
    }
    assert_eq!(state(&q, &key("ep", "m1")).await, Some(DeliveryState::Held));
    assert_eq!(
        stats(&q).await,
        QueueStats {
            held: 2,
            ..QueueStats::default()
        }
    );
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    assert_eq!(q.release_held("e").await.unwrap(), 0);
    assert_eq!(q.release_held("ep").await.unwrap(), 1);
    let l = q.lease(10, LONG).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].job.key, key("ep", "m1"));
    assert_eq!(l[0].job.attempts, 1, "hold is refunded");
    assert_eq!(stats(&q).await.held, 1);
}

/// Held deliveries of one endpoint can be dead-lettered at once (a
/// disabled endpoint purged): `endpoint_disabled`, listed, replayable;
/// another endpoint's held deliveries stay held.
pub async fn held_can_be_dead_lettered<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    q.enqueue("ep", &message("m2")).await.unwrap();
    q.enqueue("ep-2", &message("m1")).await.unwrap();
    for l in q.lease(10, LONG).await.unwrap() {
        assert!(q
            .settle(&l.job.key, &l.token, None, Transition::Hold)
            .await
            .unwrap());
    }
    assert_eq!(q.dead_letter_held("e").await.unwrap(), 0);
    assert_eq!(q.dead_letter_held("ep").await.unwrap(), 2);
    assert_eq!(q.dead_letter_held("ep").await.unwrap(), 0);
    assert_eq!(state(&q, &key("ep", "m1")).await, Some(DeliveryState::Dead));
    assert_eq!(
        state(&q, &key("ep-2", "m1")).await,
        Some(DeliveryState::Held)
    );
    let dead = q
        .get_dead(&key("ep", "m2"))
        .await
        .unwrap()
        .expect("dead letter");
    assert_eq!(dead.reason, DeadReason::EndpointDisabled);
    let filter = DlqFilter {
        endpoint: Some("ep".into()),
        ..DlqFilter::default()
    };
    let page = Page {
        after: None,
        limit: 10,
    };
    assert_eq!(q.list_dead(&filter, &page).await.unwrap().len(), 2);
    assert!(q.replay_dead(&key("ep", "m1")).await.unwrap());
    assert_eq!(
        stats(&q).await,
        QueueStats {
            scheduled: 1,
            held: 1,
            dead: 1,
            ..QueueStats::default()
        }
    );
}

/// Dead-lettering without an attempt (e.g. an unknown endpoint).
pub async fn dead_letter_without_attempt<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    let reason = DeadReason::Refused {
        detail: "refused: 10.0.0.1 is private".into(),
    };
    assert!(q
        .settle(&l.job.key, &l.token, None, Transition::Dead(reason.clone()))
        .await
        .unwrap());
    let dead = q.get_dead(&l.job.key).await.unwrap().unwrap();
    assert!(dead.attempts.is_empty());
    assert_eq!(dead.reason, reason);
    // Reasons without detail survive the round trip too.
    q.enqueue("ep", &message("m2")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    let gone = Transition::Dead(DeadReason::Gone);
    assert!(q.settle(&l.job.key, &l.token, None, gone).await.unwrap());
    assert_eq!(
        q.get_dead(&l.job.key).await.unwrap().unwrap().reason,
        DeadReason::Gone
    );
}

/// One history per key: enqueueing a dead-lettered key changes nothing; the
/// dead letter stays as it was until replayed.
pub async fn enqueue_dead_key_is_noop<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    let a = attempt(Some(500), None);
    q.settle(&l.job.key, &l.token, Some(a.clone()), exhausted())
        .await
        .unwrap();
    assert_eq!(
        q.enqueue("ep", &message("m1")).await.unwrap(),
        Enqueued::Exists(DeliveryState::Dead)
    );
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    let dead = q.get_dead(&l.job.key).await.unwrap().unwrap();
    assert_eq!(dead.attempts, vec![a]);
    // add_dead_letter never overwrites a live delivery.
    q.enqueue("ep", &message("live")).await.unwrap();
    assert!(!q
        .add_dead_letter(&dead_letter("ep", "live", 1))
        .await
        .unwrap());
    assert_eq!(
        state(&q, &key("ep", "live")).await,
        Some(DeliveryState::Scheduled)
    );
}

/// lease_one takes one named delivery, due or not, unless someone holds it
/// or it is finished.
pub async fn lease_one_takes_a_named_delivery<Q: Queue>(q: Q) {
    let k = key("ep", "m1");
    assert!(
        q.lease_one(&k, LONG).await.unwrap().is_none(),
        "unknown key"
    );
    q.enqueue("ep", &message("m1")).await.unwrap();
    q.enqueue("ep", &message("m2")).await.unwrap();
    let l = q.lease_one(&k, LONG).await.unwrap().expect("scheduled");
    assert_eq!(l.job.key, k);
    assert_eq!(l.job.attempts, 1);
    assert!(
        q.lease_one(&k, LONG).await.unwrap().is_none(),
        "held by a live lease"
    );
    // Not due for an hour: lease_one takes it anyway; lease() does not.
    assert!(q
        .settle(&k, &l.token, None, retry(Duration::from_secs(3600)))
        .await
        .unwrap());
    let l = q
        .lease_one(&k, SHORT)
        .await
        .unwrap()
        .expect("not due, still taken");
    assert_eq!(l.job.attempts, 2);
    let others = q.lease(10, LONG).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].job.key, key("ep", "m2"));
    tokio::time::sleep(PAST_SHORT).await;
    let again = q.lease_one(&k, LONG).await.unwrap().expect("lease expired");
    assert_ne!(again.token, l.token);
    assert!(!q
        .settle(&k, &l.token, None, Transition::Delivered)
        .await
        .unwrap());
    assert!(q
        .settle(&k, &again.token, None, Transition::Delivered)
        .await
        .unwrap());
    assert!(q.lease_one(&k, LONG).await.unwrap().is_none(), "delivered");
}

/// The rescuer takes expired leases without counting another attempt; the
/// old token is fenced out, live leases are left alone.
pub async fn rescue_takes_expired_leases<Q: Queue>(q: Q) {
    q.enqueue("ep", &message("m1")).await.unwrap();
    q.enqueue("ep", &message("m2")).await.unwrap();
    let short = q.lease(1, SHORT).await.unwrap().remove(0);
    let live = q.lease(1, LONG).await.unwrap().remove(0);
    assert!(
        q.rescue(10, LONG).await.unwrap().is_empty(),
        "nothing expired yet"
    );
    tokio::time::sleep(PAST_SHORT).await;
    let rescued = q.rescue(10, LONG).await.unwrap();
    assert_eq!(rescued.len(), 1);
    let r = &rescued[0];
    assert_eq!(r.job.key, short.job.key);
    assert_eq!(r.job.attempts, 1, "no attempt counted by the rescuer");
    assert_ne!(r.token, short.token);
    assert!(q.rescue(10, LONG).await.unwrap().is_empty(), "rescued once");
    assert!(!q
        .settle(&short.job.key, &short.token, None, Transition::Delivered)
        .await
        .unwrap());
    assert!(q
        .settle(&r.job.key, &r.token, None, retry(LONG))
        .await
        .unwrap());
    assert_eq!(state(&q, &live.job.key).await, Some(DeliveryState::Leased));
}

/// The pruner removes dead letters past their retention (with their
/// history), never live or recent ones, at most `max` per call.
pub async fn prune_removes_old_dead_letters<Q: Queue>(q: Q) {
    for i in 0..5 {
        q.add_dead_letter(&dead_letter(
            "ep",
            &format!("old{i}"),
            1_700_000_000_000 + i,
        ))
        .await
        .unwrap();
    }
    q.add_dead_letter(&dead_letter("ep", "recent", now_ms()))
        .await
        .unwrap();
    q.enqueue("ep", &message("live")).await.unwrap();
    let hour = Some(Duration::from_secs(3600));
    assert_eq!(
        q.prune(None, 100).await.unwrap(),
        0,
        "dead kept without a retention"
    );
    assert_eq!(q.prune(hour, 3).await.unwrap(), 3, "bounded batch");
    assert_eq!(q.prune(hour, 100).await.unwrap(), 2);
    assert_eq!(q.prune(hour, 100).await.unwrap(), 0);
    assert!(q.get_dead(&key("ep", "old0")).await.unwrap().is_none());
    assert!(q.get_dead(&key("ep", "recent")).await.unwrap().is_some());
    assert_eq!(
        state(&q, &key("ep", "live")).await,
        Some(DeliveryState::Scheduled)
    );
    assert_eq!(all_pages(&q, &DlqFilter::default(), 10).await.len(), 1);
    // A pruned key is new again, its history gone.
    assert_eq!(
        q.enqueue("ep", &message("old0")).await.unwrap(),
        Enqueued::New
    );
    let l = q
        .lease_one(&key("ep", "old0"), LONG)
        .await
        .unwrap()
        .unwrap();
    q.settle(&l.job.key, &l.token, None, exhausted())
        .await
        .unwrap();
    assert!(q
        .get_dead(&l.job.key)
        .await
        .unwrap()
        .unwrap()
        .attempts
        .is_empty());
}

/// A dead letter with two attempts, filed at `at`.
pub fn dead_letter(endpoint: &str, id: &str, at: i64) -> DeadLetter {
    DeadLetter {
        key: key(endpoint, id),
        message: message(id),
        attempts: vec![
            attempt(Some(500), None),
            attempt(None, Some("timed out after 30s")),
        ],
        reason: DeadReason::Exhausted {
            last: "timed out after 30s".into(),
        },
        dead_at_ms: at,
    }
}

/// Collect every page of `filter`; checks each page is full but the last.
pub async fn all_pages<Q: Queue>(
    q: &Q,
    filter: &DlqFilter,
    limit: usize,
) -> Vec<(i64, DeliveryKey)> {
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
pub async fn list_dead_pages<Q: Queue>(q: Q) {
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

/// replay: same id, back in the queue, due now, attempts reset, history
/// kept; then purge removes it and its history.
pub async fn replay_and_purge<Q: Queue>(q: Q) {
    let m = message("m1");
    q.enqueue("ep", &m).await.unwrap();
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    let a1 = attempt(Some(500), None);
    assert!(q
        .settle(
            &l.job.key,
            &l.token,
            Some(a1.clone()),
            retry(Duration::ZERO)
        )
        .await
        .unwrap());
    let l = q.lease(10, LONG).await.unwrap().remove(0);
    assert_eq!(l.job.attempts, 2);
    let a2 = attempt(Some(500), None);
    assert!(q
        .settle(&l.job.key, &l.token, Some(a2.clone()), exhausted())
        .await
        .unwrap());
    let k = l.job.key.clone();

    assert!(q.replay_dead(&k).await.unwrap());
    assert!(!q.replay_dead(&k).await.unwrap(), "replayed twice");
    assert!(q.get_dead(&k).await.unwrap().is_none());
    assert_eq!(
        stats(&q).await,
        QueueStats {
            scheduled: 1,
            ..QueueStats::default()
        }
    );
    let before = now_ms();
    let r = q.lease(10, LONG).await.unwrap();
    assert_eq!(r.len(), 1, "replayed delivery is due now");
    assert_eq!(r[0].job.key, k);
    assert_eq!(r[0].job.message, m, "same id and payload");
    assert_eq!(r[0].job.attempts, 1, "attempts reset");
    assert!(r[0].job.next_attempt_ms <= before + 1000);

    // Dead again: one history, both runs.
    let a3 = attempt(Some(400), None);
    let permanent = Transition::Dead(DeadReason::Permanent {
        detail: "HTTP 400".into(),
    });
    assert!(q
        .settle(&k, &r[0].token, Some(a3.clone()), permanent)
        .await
        .unwrap());
    let dead = q.get_dead(&k).await.unwrap().unwrap();
    assert_eq!(dead.attempts, vec![a1, a2, a3]);
    assert_eq!(stats(&q).await.dead, 1);
    assert!(q.purge_dead(&k).await.unwrap());
    assert!(!q.purge_dead(&k).await.unwrap());
    assert!(!q.replay_dead(&k).await.unwrap());
    assert_eq!(stats(&q).await, QueueStats::default());
    assert!(q.lease(10, LONG).await.unwrap().is_empty());
    assert!(q.get_dead(&key("ep", "never")).await.unwrap().is_none());
    assert_eq!(state(&q, &k).await, None);
    // A purged key is new again, with an empty history.
    assert_eq!(q.enqueue("ep", &m).await.unwrap(), Enqueued::New);
    let r = q.lease(10, LONG).await.unwrap().remove(0);
    q.settle(&k, &r.token, None, exhausted()).await.unwrap();
    assert!(q.get_dead(&k).await.unwrap().unwrap().attempts.is_empty());
}

/// The audit trail: a sequence of changes made through a [`Sender`](crate::Sender)
/// gives the expected entries, oldest first, with the actor and no secret
/// or header value; it outlives the endpoint's removal, is limited on
/// reading, and is pruned by age.
pub async fn audit_trail<Q: Queue>(q: Q) {
    use crate::audit::Change;
    let q: std::sync::Arc<dyn Queue> = std::sync::Arc::new(q);
    let sender = crate::Sender::new(q.clone()).with_actor("alice");
    let ep = Endpoint::new(
        "orders",
        "https://u:pw_S3CRET@example.com/h",
        Scheme::StandardWebhooks,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    sender.add_endpoint(ep.clone()).await.unwrap();
    sender.add_endpoint(ep.clone()).await.unwrap(); // same config: no entry
    let changed = ep
        .clone()
        .with_header("Authorization", "Bearer hdr_S3CRET")
        .unwrap()
        .rotate_secret("whsec_c2VjcmV0LWF0LXJlc3QtUzNDUkVULXZhbHVl", i64::MAX)
        .unwrap();
    sender.update_endpoint(changed).await.unwrap();
    let bob = crate::Sender::new(q.clone()).with_actor("bob");
    bob.set_endpoint_disabled("orders", true, "maintenance window")
        .await
        .unwrap();
    bob.set_endpoint_disabled("orders", false, "")
        .await
        .unwrap();
    assert!(bob.remove_endpoint("orders").await.unwrap());
    assert!(!bob.remove_endpoint("orders").await.unwrap());

    let history = q.endpoint_history("orders", 100).await.unwrap();
    let got: Vec<(&str, String)> = history
        .iter()
        .map(|e| (e.actor.as_str(), e.change.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "alice",
                "created (standard, https://***@example.com/h)".to_owned()
            ),
            (
                "alice",
                "secrets rotated (1 current, 1 previous)".to_owned()
            ),
            ("alice", "headers changed: Authorization".to_owned()),
            ("bob", "disabled: maintenance window".to_owned()),
            ("bob", "enabled".to_owned()),
            ("bob", "removed".to_owned()),
        ]
    );
    assert!(history.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(history
        .iter()
        .all(|e| e.endpoint == "orders" && e.at_ms > 0));
    let dump = format!("{history:?}");
    for secret in ["pw_S3CRET", "hdr_S3CRET", "MfKQ9r8G", "c2VjcmV0"] {
        assert!(!dump.contains(secret), "{secret} in {dump}");
    }
    // The last N, oldest first; other endpoints have their own trail.
    let last = q.endpoint_history("orders", 2).await.unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last[1].change, Change::Removed);
    assert!(q.endpoint_history("other", 10).await.unwrap().is_empty());
    q.append_audit("other", "carol", &Change::Enabled)
        .await
        .unwrap();
    // Pruning: nothing is a day old; everything is older than zero.
    assert_eq!(
        q.prune_audit(Duration::from_secs(86_400), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(q.prune_audit(Duration::ZERO, 4).await.unwrap(), 4);
    assert_eq!(
        q.endpoint_history("orders", 100).await.unwrap().len()
            + q.endpoint_history("other", 100).await.unwrap().len(),
        3
    );
    assert_eq!(q.prune_audit(Duration::ZERO, 100).await.unwrap(), 3);
    assert!(q.endpoint_history("orders", 100).await.unwrap().is_empty());
}

/// Endpoints: put/get (all fields), disable/enable, replace, unknown ids.
pub async fn endpoints<Q: Queue>(q: Q) {
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
    // Only set_endpoint_disabled changes `disabled`: a re-registration
    // (say at start-up) does not undo a 410.
    q.set_endpoint_disabled("orders", true).await.unwrap();
    q.put_endpoint(&replaced).await.unwrap();
    assert!(q.get_endpoint("orders").await.unwrap().unwrap().disabled);
    let mut fresh =
        Endpoint::new("new", "https://example.com/", Scheme::Stripe, "whsec_x").unwrap();
    fresh.disabled = true;
    q.put_endpoint(&fresh).await.unwrap();
    assert!(
        q.get_endpoint("new").await.unwrap().unwrap().disabled,
        "a new one as given"
    );
    q.set_endpoint_disabled("orders", false).await.unwrap();

    let err = q.set_endpoint_disabled("nobody", true).await.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::NotFound);
    assert!(q.get_endpoint("nobody").await.unwrap().is_none());

    // Listed by id, with their state; removed one by one.
    let listed = q.list_endpoints().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["new", "orders"]);
    assert!(listed[0].disabled && !listed[1].disabled);
    assert_eq!(listed[1].urls, ["https://example.com/new"]);
    assert!(q.remove_endpoint("new").await.unwrap());
    assert!(!q.remove_endpoint("new").await.unwrap(), "already gone");
    assert!(q.get_endpoint("new").await.unwrap().is_none());
    let ids: Vec<String> = q
        .list_endpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["orders"]);
}

/// Where a delivery is before a `settle`, and whose token tries it.
#[derive(Debug, Clone, Copy)]
pub enum Setup {
    /// Scheduled; the token of the lease that scheduled it.
    Scheduled,
    /// Leased; its own live token.
    Leased,
    /// Leased, the lease expired, nobody leased it since; its own token.
    LeasedExpired,
    /// Leased again after expiry; the first (stale) token.
    LeasedStale,
    /// Held; the token that held it.
    Held,
    /// Delivered; the token that delivered it.
    Delivered,
    /// Dead; the token that dead-lettered it.
    Dead,
}

impl Setup {
    /// Only the token that still holds the lease settles.
    /// Whether a settle with the setup's token applies.
    #[must_use]
    pub fn applies(self) -> bool {
        matches!(self, Self::Leased | Self::LeasedExpired)
    }

    /// The state the setup puts the delivery in.
    #[must_use]
    pub fn state(self) -> DeliveryState {
        match self {
            Self::Scheduled => DeliveryState::Scheduled,
            Self::Leased | Self::LeasedExpired | Self::LeasedStale => DeliveryState::Leased,
            Self::Held => DeliveryState::Held,
            Self::Delivered => DeliveryState::Delivered,
            Self::Dead => DeliveryState::Dead,
        }
    }
}

/// Put `m1` into the state `setup` names; return the token to try.
pub async fn arrange<Q: Queue>(q: &Q, setup: Setup) -> LeaseToken {
    q.enqueue("ep", &message("m1")).await.unwrap();
    let k = key("ep", "m1");
    let short = matches!(setup, Setup::LeasedExpired | Setup::LeasedStale);
    let l = q
        .lease(1, if short { SHORT } else { LONG })
        .await
        .unwrap()
        .remove(0);
    let then = match setup {
        Setup::Leased | Setup::LeasedExpired | Setup::LeasedStale => None,
        Setup::Scheduled => Some(retry(LONG)),
        Setup::Held => Some(Transition::Hold),
        Setup::Delivered => Some(Transition::Delivered),
        Setup::Dead => Some(exhausted()),
    };
    if let Some(t) = then {
        assert!(q.settle(&k, &l.token, None, t).await.unwrap());
    }
    if short {
        tokio::time::sleep(PAST_SHORT).await;
    }
    if matches!(setup, Setup::LeasedStale) {
        assert_eq!(q.lease(1, LONG).await.unwrap().len(), 1);
    }
    assert_eq!(state(q, &k).await, Some(setup.state()), "{setup:?}");
    l.token
}

/// One (state, transition) pair: applied exactly when the token holds the
/// lease, and then the delivery is in the transition's target state;
/// otherwise nothing changes. The attempt is recorded either way.
pub async fn pair<Q: Queue>(q: Q, setup: Setup, transition: Transition) {
    let token = arrange(&q, setup).await;
    let k = key("ep", "m1");
    let target = transition.target();
    let applied = q
        .settle(
            &k,
            &token,
            Some(attempt(Some(502), None)),
            transition.clone(),
        )
        .await
        .unwrap();
    assert_eq!(applied, setup.applies(), "{setup:?} x {transition:?}");
    let want = if applied { target } else { setup.state() };
    assert_eq!(
        state(&q, &k).await,
        Some(want),
        "{setup:?} x {transition:?}"
    );
    if want == DeliveryState::Dead {
        let dead = q.get_dead(&k).await.unwrap().unwrap();
        assert_eq!(dead.attempts.len(), 1, "attempt recorded");
    }
}

/// `Delivered`.
pub fn t_delivered() -> Transition {
    Transition::Delivered
}
/// `Retry` by [`LONG`].
pub fn t_retry() -> Transition {
    retry(LONG)
}
/// `Defer` by [`LONG`].
pub fn t_defer() -> Transition {
    Transition::Defer {
        delay: LONG,
        reason: DeferReason::CircuitOpen,
    }
}
/// `Interrupted`.
pub fn t_interrupted() -> Transition {
    Transition::Interrupted
}
/// `Hold`.
pub fn t_hold() -> Transition {
    Transition::Hold
}
/// `Dead(Permanent)`.
pub fn t_dead() -> Transition {
    Transition::Dead(DeadReason::Permanent {
        detail: "HTTP 400".into(),
    })
}

/// Shared endpoint state: empty at first; a compare-and-set stores only
/// against the version it read (0 for a new record) and bumps it; records
/// are per endpoint and per name; removing the endpoint removes its state.
pub async fn endpoint_state_compare_and_set<Q: Queue>(q: Q) {
    assert!(q.endpoint_state("ep").await.expect("state").is_empty());
    assert!(q
        .swap_endpoint_state("ep", "breaker:0", 0, "a")
        .await
        .expect("swap"));
    // A second writer that also read "absent" loses.
    assert!(!q
        .swap_endpoint_state("ep", "breaker:0", 0, "b")
        .await
        .expect("swap"));
    assert!(!q
        .swap_endpoint_state("ep", "breaker:0", 2, "b")
        .await
        .expect("swap"));
    assert!(q
        .swap_endpoint_state("ep", "breaker:0", 1, "c")
        .await
        .expect("swap"));
    assert!(q
        .swap_endpoint_state("ep", "limiter", 0, "{\"x\":1}")
        .await
        .expect("swap"));
    assert!(q
        .swap_endpoint_state("other", "limiter", 0, "o")
        .await
        .expect("swap"));
    let records = q.endpoint_state("ep").await.expect("state");
    let got: Vec<(&str, u64, &str)> = records
        .iter()
        .map(|r| (r.name.as_str(), r.version, r.value.as_str()))
        .collect();
    assert_eq!(got, [("breaker:0", 2, "c"), ("limiter", 1, "{\"x\":1}")]);
    let ep = Endpoint::new("ep", "http://127.0.0.1:9/hook", Scheme::GitHub, "s").expect("endpoint");
    q.put_endpoint(&ep).await.expect("put");
    assert!(q.remove_endpoint("ep").await.expect("remove"));
    assert!(q.endpoint_state("ep").await.expect("state").is_empty());
    assert_eq!(q.endpoint_state("other").await.expect("state").len(), 1);
}

/// One `#[tokio::test]` per conformance check and per (state, transition)
/// pair, in a module `$name`, each calling `$fresh(check)`: `$fresh` is the
/// absolute path (`crate::fresh`) of an async fn taking
/// `FnOnce(YourQueue) -> impl Future<Output = ()>`, which makes an empty
/// queue, runs the check on it and cleans up.
#[macro_export]
macro_rules! queue_conformance_tests {
    ($name:ident, $fresh:path) => {
        mod $name {
            #[allow(unused_imports)]
            use $crate::testing::{self as t, Setup};
            $crate::queue_conformance_tests!(@checks $fresh;
                enqueue_then_lease, enqueue_twice_is_noop, lease_respects_max,
                expired_lease_is_fenced, retry_then_dead_letter, delivered_is_kept,
                interrupted_refunds, defer_refunds, hold_until_released,
                dead_letter_without_attempt, enqueue_dead_key_is_noop,
                lease_one_takes_a_named_delivery, rescue_takes_expired_leases,
                prune_removes_old_dead_letters, list_dead_pages, replay_and_purge, endpoints,
                endpoint_state_compare_and_set,
                audit_trail,
                held_can_be_dead_lettered);
            $crate::queue_conformance_tests!(@pairs $fresh;
                scheduled: Scheduled, leased: Leased, leased_expired: LeasedExpired,
                leased_stale: LeasedStale, held: Held, delivered: Delivered, dead: Dead);
        }
    };
    (@checks $fresh:path; $($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            $fresh(t::$check).await;
        }
    )*};
    (@pairs $fresh:path; $($state:ident: $setup:ident),* $(,)?) => {$(
        mod $state {
            use super::{t, Setup};
            #[tokio::test]
            async fn x_delivered() {
                $fresh(|q| t::pair(q, Setup::$setup, t::t_delivered())).await;
            }
            #[tokio::test]
            async fn x_retry() {
                $fresh(|q| t::pair(q, Setup::$setup, t::t_retry())).await;
            }
            #[tokio::test]
            async fn x_defer() {
                $fresh(|q| t::pair(q, Setup::$setup, t::t_defer())).await;
            }
            #[tokio::test]
            async fn x_interrupted() {
                $fresh(|q| t::pair(q, Setup::$setup, t::t_interrupted())).await;
            }
            #[tokio::test]
            async fn x_hold() {
                $fresh(|q| t::pair(q, Setup::$setup, t::t_hold())).await;
            }
            #[tokio::test]
            async fn x_dead() {
                $fresh(|q| t::pair(q, Setup::$setup, t::t_dead())).await;
            }
        }
    )*};
}
