//! Bulk replay and purge terminate and act on each dead letter that existed
//! at their start once, while a worker keeps dead-lettering concurrently
//! (issue 8, item 5: on main `dlq replay --enqueue --all` never ended and
//! replayed the same letters again and again). Memory, Postgres and Redis.

mod sender_support;
mod support;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use hookgate_core::Scheme;
use hookgate_sender::{
    bulk,
    queue::{DeadLetter, DeadReason, DeliveryKey, DlqFilter},
    Endpoint, MemoryQueue, Message, Queue, Sender,
};
use sender_support::{fast_policy, test_worker, Receiver, Reply};

const N: usize = 120;

async fn check(queue: Arc<dyn Queue>) {
    // Every delivery is answered 400: a replayed letter dies again at once.
    let receiver = Receiver::start((0..10 * N).map(|_| Reply::status(400))).await;
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(Endpoint::new("ep", receiver.url(), Scheme::GitHub, "s").unwrap())
        .await
        .unwrap();
    let base = hookgate_sender::now_ms() - 60_000;
    for i in 0..N {
        let id = format!("m{i:04}");
        let dead = DeadLetter {
            key: DeliveryKey {
                endpoint: "ep".into(),
                message_id: id.clone(),
            },
            message: Message::new("t", "{}").with_id(id),
            attempts: Vec::new(),
            reason: DeadReason::Exhausted { last: "500".into() },
            dead_at_ms: base + i64::try_from(i).unwrap(),
        };
        assert!(queue.add_dead_letter(&dead).await.unwrap());
    }
    let (b, _reports) = test_worker(queue.clone(), fast_policy(1));
    let worker = b.with_concurrency(8).build().unwrap().spawn();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let replayed = tokio::time::timeout(
        Duration::from_secs(30),
        bulk::replay_all(&*queue, &DlqFilter::default(), move |k| {
            s.lock().unwrap().push(k.clone());
        }),
    )
    .await
    .expect("replay_all did not terminate")
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(replayed, u64::try_from(N).unwrap());
    assert_eq!(seen.len(), N, "each replayed once");
    assert_eq!(unique.len(), N);

    // Wait until the worker has dead-lettered them all again (one request each).
    tokio::time::timeout(Duration::from_secs(30), async {
        while queue.stats().await.unwrap().dead < u64::try_from(N).unwrap() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("not dead again");
    assert_eq!(receiver.count(), N, "one request per replayed letter");

    // Purge while new letters keep dying.
    for i in 0..20 {
        sender
            .enqueue("ep", Message::new("t", "{}").with_id(format!("late{i}")))
            .await
            .unwrap();
    }
    let purged_keys = Arc::new(Mutex::new(Vec::new()));
    let p = purged_keys.clone();
    let purged = tokio::time::timeout(
        Duration::from_secs(30),
        bulk::purge_all(&*queue, &DlqFilter::default(), move |k| {
            p.lock().unwrap().push(k.clone());
        }),
    )
    .await
    .expect("purge_all did not terminate")
    .unwrap();
    let purged_keys = purged_keys.lock().unwrap().clone();
    let unique: HashSet<_> = purged_keys.iter().cloned().collect();
    assert_eq!(unique.len(), purged_keys.len(), "each purged once");
    assert_eq!(purged, u64::try_from(purged_keys.len()).unwrap());
    for i in 0..N {
        let k = DeliveryKey {
            endpoint: "ep".into(),
            message_id: format!("m{i:04}"),
        };
        assert!(unique.contains(&k), "{k:?} not purged");
    }
    worker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn bulk_ops_are_snapshot_bounded_memory() {
    check(Arc::new(MemoryQueue::new())).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn bulk_ops_are_snapshot_bounded_postgres() {
    if let Some(q) = support::pg::fresh().await {
        support::with_cleanup(check(Arc::new(q.clone())), support::pg::drop_schema(&q)).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn bulk_ops_are_snapshot_bounded_redis() {
    if let Some(q) = support::redis::fresh().await {
        support::with_cleanup(check(Arc::new(q.clone())), support::redis::delete_keys(&q)).await;
    }
}
