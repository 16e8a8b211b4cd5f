//! The maintenance runner: the rescuer runs expired leases through the
//! retry policy (bounding a crash loop), the pruner deletes finished keys in
//! bounded batches, and only the holder of the leader lock runs them.

mod support;

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use hookgate_sender::{
    maintenance::{Healer, NoLock, Pruner, Rescuer, Runner, Task},
    queue::{DeadReason, DeliveryKey, DeliveryState, Transition},
    retry::RetryPolicy,
    Endpoint, MemoryQueue, Message, Queue,
};

#[cfg(any(feature = "redis", feature = "postgres"))]
use hookgate_sender::maintenance::LeaderLock as _;

fn key(id: &str) -> DeliveryKey {
    DeliveryKey {
        endpoint: "ep".into(),
        message_id: id.into(),
    }
}

/// A crashing worker's delivery: the rescuer schedules a retry (no extra
/// attempt counted), and dead-letters it once the leases spent the budget.
/// On the memory queue's clock: no sleeping.
#[tokio::test]
async fn rescuer_bounds_a_crash_loop() {
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = now.clone();
    let queue: Arc<dyn Queue> =
        Arc::new(MemoryQueue::new().with_clock(move || clock.load(Ordering::SeqCst)));
    let policy = RetryPolicy::default()
        .with_max_attempts(2)
        .with_max_age(None)
        .with_base_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(1));
    let rescuer = Rescuer::new(queue.clone(), policy);
    let m = Message::new("t", "{}").with_id("m1");
    queue.enqueue("ep", &m).await.unwrap();

    // First worker leases and dies.
    let first = queue.lease(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(first[0].job.attempts, 1);
    assert_eq!(
        rescuer.run_once().await.unwrap().acted,
        0,
        "lease still live"
    );
    now.fetch_add(10_000, Ordering::SeqCst);
    let r = rescuer.run_once().await.unwrap();
    assert_eq!(r.acted, 1);
    assert_eq!(
        queue.state(&key("m1")).await.unwrap(),
        Some(DeliveryState::Scheduled)
    );
    // The dead worker's token is fenced out.
    assert!(!queue
        .settle(&key("m1"), &first[0].token, None, Transition::Delivered)
        .await
        .unwrap());

    // Second worker leases (attempt 2 of 2) and dies too: dead-lettered.
    now.fetch_add(2_000, Ordering::SeqCst);
    let second = queue.lease(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(second[0].job.attempts, 2);
    now.fetch_add(10_000, Ordering::SeqCst);
    assert_eq!(rescuer.run_once().await.unwrap().acted, 1);
    let dead = queue.get_dead(&key("m1")).await.unwrap().expect("dead");
    assert!(
        matches!(dead.reason, DeadReason::Exhausted { .. }),
        "{:?}",
        dead.reason
    );
    assert!(queue
        .lease(1, Duration::from_secs(10))
        .await
        .unwrap()
        .is_empty());
}

/// The runner runs its tasks in bounded batches and reports them.
#[tokio::test]
async fn runner_reports_bounded_batches() {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    for i in 0..5 {
        let dead = hookgate_sender::queue::DeadLetter {
            key: key(&format!("old{i}")),
            message: Message::new("t", "{}").with_id(format!("old{i}")),
            attempts: Vec::new(),
            reason: DeadReason::Gone,
            dead_at_ms: 1_000 + i,
        };
        queue.add_dead_letter(&dead).await.unwrap();
    }
    let runner = Runner::new(Arc::new(NoLock)).with_task(Arc::new(
        Pruner::new(queue.clone())
            .with_dead_retention(Duration::from_secs(3600))
            .with_batch(2),
    ));
    let mut total = 0;
    for _ in 0..3 {
        let reports = runner.run_once().await;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].task, "pruner");
        total += reports[0].result.as_ref().unwrap().acted;
    }
    assert_eq!(total, 5);
    assert_eq!(queue.stats().await.unwrap().dead, 0);
}

#[cfg(any(feature = "redis", feature = "postgres"))]
async fn only_one_leads(
    a: &dyn hookgate_sender::maintenance::LeaderLock,
    b: &dyn hookgate_sender::maintenance::LeaderLock,
) {
    assert!(a.try_lead().await.unwrap());
    assert!(!b.try_lead().await.unwrap(), "two leaders");
    assert!(a.try_lead().await.unwrap(), "the holder keeps it");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_leader_lock_has_one_holder() {
    let Some(q) = support::redis::fresh().await else {
        return;
    };
    let check = async {
        let a = q.leader_lock(Duration::from_millis(400));
        let b = q.leader_lock(Duration::from_millis(400));
        only_one_leads(&a, &b).await;
        // The holder stops renewing: after the TTL another process leads.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(b.try_lead().await.unwrap());
        assert!(!a.try_lead().await.unwrap());
        // A runner without the lock runs nothing.
        let runner = Runner::new(Arc::new(a)).with_task(Arc::new(Pruner::new(Arc::new(q.clone()))));
        assert!(runner.run_once().await.is_empty());
    };
    support::with_cleanup(check, support::redis::delete_keys(&q)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_leader_lock_has_one_holder() {
    let Some(q) = support::pg::fresh().await else {
        return;
    };
    let check = async {
        let a = q.leader_lock();
        let b = q.leader_lock();
        only_one_leads(&a, &b).await;
        // The holder goes away: its connection closes (not back to the pool
        // with the lock held), so any other session can take the lock.
        drop(a);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (client, conn) =
            tokio_postgres::connect(&support::postgres_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let lock_key = format!("hookgate-leader:{}.hookgate_", q.schema());
        let row = client
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&lock_key])
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "lock not released with its holder");
        assert!(
            !b.try_lead().await.unwrap(),
            "held by the other session now"
        );
        drop(client);
        let _ = conn.await;
        let mut led = false;
        for _ in 0..20 {
            if b.try_lead().await.unwrap() {
                led = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(led, "b never led");
    };
    support::with_cleanup(check, support::pg::drop_schema(&q)).await;
}

/// The race the healer closes: a worker holds a delivery (it read the
/// endpoint as disabled) right after an operator enabled the endpoint and
/// released what was held. The healer releases it; held deliveries of a
/// still-disabled endpoint stay held.
#[tokio::test]
async fn healer_releases_what_was_held_for_an_enabled_endpoint() {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    for id in ["ep", "off"] {
        let ep = Endpoint::new(
            id,
            "https://example.com/hook",
            hookgate_core::Scheme::GitHub,
            "s",
        )
        .unwrap();
        queue.put_endpoint(&ep).await.unwrap();
        queue.set_endpoint_disabled(id, true).await.unwrap();
        queue
            .enqueue(id, &Message::new("t", "{}").with_id("m1"))
            .await
            .unwrap();
    }
    let healer = Healer::new(queue.clone());
    // A worker leases both and holds them (the endpoints are disabled).
    for leased in queue.lease(10, Duration::from_secs(10)).await.unwrap() {
        assert!(queue
            .settle(&leased.job.key, &leased.token, None, Transition::Hold)
            .await
            .unwrap());
    }
    assert_eq!(queue.stats().await.unwrap().held, 2);
    assert_eq!(healer.run_once().await.unwrap().acted, 0, "both disabled");
    // "ep" is enabled without its held delivery being released (the race).
    queue.set_endpoint_disabled("ep", false).await.unwrap();
    assert_eq!(healer.run_once().await.unwrap().acted, 1);
    let ep_key = DeliveryKey {
        endpoint: "ep".into(),
        message_id: "m1".into(),
    };
    let off_key = DeliveryKey {
        endpoint: "off".into(),
        message_id: "m1".into(),
    };
    assert_eq!(
        queue.state(&ep_key).await.unwrap(),
        Some(DeliveryState::Scheduled)
    );
    assert_eq!(
        queue.state(&off_key).await.unwrap(),
        Some(DeliveryState::Held)
    );
}
