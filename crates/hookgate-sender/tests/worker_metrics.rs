//! The worker's metrics, under the documented names and labels, recorded by
//! a global test recorder (this file is its own process, so the recorder
//! sees only this test).

mod sender_support;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use hookgate_core::Scheme;
use hookgate_sender::{Endpoint, MemoryQueue, Message, Queue, Sender};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use sender_support::{fast_policy, test_worker, until_final, Receiver, Reply};

#[derive(Debug, Default)]
struct Slot {
    count: AtomicU64,
    gauge: Mutex<f64>,
    samples: Mutex<Vec<f64>>,
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.count.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.count.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        *self.gauge.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.gauge.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.gauge.lock().unwrap() = value;
    }
}

impl HistogramFn for Slot {
    fn record(&self, value: f64) {
        self.samples.lock().unwrap().push(value);
    }
}

#[derive(Debug, Default, Clone)]
struct TestRecorder {
    slots: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
}

impl TestRecorder {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.slots.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.lock().unwrap().get(name).cloned()
    }

    fn count(&self, name: &str) -> u64 {
        self.get(name).map_or(0, |s| s.count.load(Ordering::SeqCst))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.slot(key))
    }
}

#[tokio::test]
async fn documented_metrics_are_recorded() {
    let recorder = TestRecorder::default();
    metrics::set_global_recorder(recorder.clone()).unwrap();

    // ep: 503 then 200; bad: 400.
    let ok = Receiver::start([Reply::status(503)]).await;
    let bad = Receiver::start([Reply::status(400)]).await;
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    for (id, r) in [("ep", &ok), ("bad", &bad)] {
        sender
            .add_endpoint(Endpoint::new(id, r.url(), Scheme::GitHub, "s").unwrap())
            .await
            .unwrap();
    }
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder
        .with_stats_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .spawn();
    let k1 = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    until_final(&mut reports, &k1).await;
    let k2 = sender
        .enqueue("bad", Message::new("t", "{}"))
        .await
        .unwrap();
    until_final(&mut reports, &k2).await;
    // Let the stats loop run at least once after the dead letter.
    tokio::time::sleep(Duration::from_millis(100)).await;
    worker.shutdown(Duration::from_secs(5)).await;

    let c = |n: &str| recorder.count(n);
    assert_eq!(
        c("hookgate_sender_attempts_total{endpoint=ep,outcome=retry}"),
        1
    );
    assert_eq!(
        c("hookgate_sender_attempts_total{endpoint=ep,outcome=delivered}"),
        1
    );
    assert_eq!(
        c("hookgate_sender_attempts_total{endpoint=bad,outcome=permanent}"),
        1
    );
    assert_eq!(c("hookgate_sender_delivered_total{endpoint=ep}"), 1);
    assert_eq!(c("hookgate_sender_retries_scheduled_total{endpoint=ep}"), 1);
    assert_eq!(c("hookgate_sender_dead_lettered_total{endpoint=bad}"), 1);
    assert_eq!(c("hookgate_sender_dead_lettered_total{endpoint=ep}"), 0);
    let durations = recorder
        .get("hookgate_sender_attempt_duration_seconds{endpoint=ep}")
        .unwrap();
    let samples = durations.samples.lock().unwrap().clone();
    assert_eq!(samples.len(), 2);
    assert!(samples.iter().all(|s| (0.0..30.0).contains(s)));
    let gauge = |n: &str| *recorder.get(n).unwrap().gauge.lock().unwrap();
    assert_eq!(gauge("hookgate_sender_dlq_size{}"), 1.0);
    assert_eq!(gauge("hookgate_sender_queue_pending{}"), 0.0);
    assert_eq!(gauge("hookgate_sender_in_flight{}"), 0.0);

    // A lease lost mid-attempt (issue 8, item 10): the outcome is not
    // recorded, so it is counted as lost, not as delivered; the attempt is
    // still in the delivery's history.
    let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let o = offset.clone();
    let clocked = Arc::new(
        MemoryQueue::new().with_clock(move || hookgate_sender::now_ms() + o.load(Ordering::SeqCst)),
    );
    let queue: Arc<dyn Queue> = clocked.clone();
    let slow = Receiver::start([Reply::status(200).delay(Duration::from_millis(500))]).await;
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(Endpoint::new("slow", slow.url(), Scheme::GitHub, "s").unwrap())
        .await
        .unwrap();
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder.build().unwrap().spawn();
    let k3 = sender
        .enqueue("slow", Message::new("t", "{}"))
        .await
        .unwrap();
    slow.wait_for(1).await;
    offset.store(60_000, Ordering::SeqCst); // the lease runs out...
    let newer = queue
        .lease_one(&k3, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("...and another owner takes it");
    let r = until_final(&mut reports, &k3).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert!(!r[0].recorded);
    assert_eq!(c("hookgate_sender_lease_lost_total{endpoint=slow}"), 1);
    assert_eq!(c("hookgate_sender_delivered_total{endpoint=slow}"), 0);
    assert!(queue
        .settle(
            &k3,
            &newer.token,
            None,
            hookgate_sender::queue::Transition::Dead(
                hookgate_sender::queue::DeadReason::Interrupted
            )
        )
        .await
        .unwrap());
    let dead = queue.get_dead(&k3).await.unwrap().unwrap();
    assert_eq!(dead.attempts.len(), 1, "the lost attempt is recorded");
    assert_eq!(dead.attempts[0].status, Some(200));
}
