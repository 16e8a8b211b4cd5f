//! No secret of an endpoint leaves its record (issue 8, item 7): with a URL
//! carrying `user:password@` and `?token=`, an `Authorization` header and a
//! signing secret, a delivery retried and dead-lettered leaves none of them
//! in the endpoint id, a metric label, a log line or span (everything at
//! `TRACE`), an attempt record, the dead letter or a `Debug` output. The
//! receiver does get them, so they were really used.
//!
//! This file is its own process: the global metrics recorder and tracing
//! subscriber see only this test.

mod sender_support;

use std::{
    io,
    sync::{Arc, Mutex},
};

use hookgate_core::Scheme;
use hookgate_sender::{Endpoint, MemoryQueue, Message, Queue, Sender};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use sender_support::{fast_policy, test_worker, until_final, Receiver, Reply};

const SECRETS: [&str; 5] = [
    "usr_S3CRET",
    "pw_S3CRET",
    "tok_S3CRET",
    "hdr_S3CRET",
    "sig_S3CRET",
];

/// Every metric key (name and labels) ever registered.
#[derive(Debug, Default, Clone)]
struct KeyRecorder(Arc<Mutex<Vec<String>>>);

impl KeyRecorder {
    fn note(&self, key: &Key) {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("{}{{{}}}", key.name(), labels.join(",")));
    }
}

impl Recorder for KeyRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.note(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.note(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.note(key);
        Histogram::noop()
    }
}

/// Log output, shared.
#[derive(Debug, Default, Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} leaked in {what}:\n{text}");
    }
}

#[tokio::test]
async fn endpoint_secrets_stay_in_the_endpoint_record() {
    let recorder = KeyRecorder::default();
    metrics::set_global_recorder(recorder.clone()).unwrap();
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // 503 (retried), then 400 (dead-lettered).
    let receiver = Receiver::start([Reply::status(503), Reply::status(400)]).await;
    let url = format!(
        "http://usr_S3CRET:pw_S3CRET@{}/hook?token=tok_S3CRET",
        receiver.addr
    );
    let id = Endpoint::id_from_url(&url).unwrap();
    assert_eq!(id, format!("http://{}/hook", receiver.addr));
    let endpoint = Endpoint::new(id.clone(), &url, Scheme::GitHub, "sig_S3CRET")
        .unwrap()
        .with_header("Authorization", "Bearer hdr_S3CRET")
        .unwrap();
    assert_clean("Endpoint's Debug", &format!("{endpoint:?} {endpoint:#?}"));

    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender.add_endpoint(endpoint).await.unwrap();
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder.build().unwrap().spawn();
    let key = sender.enqueue(&id, Message::new("t", "{}")).await.unwrap();
    let reports = until_final(&mut reports, &key).await;
    worker.shutdown(std::time::Duration::from_secs(5)).await;

    // The secrets were used: the receiver got the header and the query.
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].headers["authorization"], "Bearer hdr_S3CRET");

    assert_clean("the attempt reports", &format!("{reports:?}"));
    let dead = queue.get_dead(&key).await.unwrap().expect("dead-lettered");
    assert_eq!(dead.attempts.len(), 2);
    assert_clean("the dead letter", &format!("{dead:?}"));
    for a in &dead.attempts {
        assert!(a.url.starts_with("http://***@127.0.0.1:"), "{}", a.url);
        assert!(a.url.ends_with("/hook?token=***"), "{}", a.url);
    }
    assert_clean("the queue's key", &format!("{key:?}"));

    let keys = recorder.0.lock().unwrap().join("\n");
    assert!(keys.contains(&format!("endpoint={id}")), "{keys}");
    assert_clean("metric keys", &keys);

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logs.contains("hookgate_sender"), "no logs captured");
    assert_clean("the logs", &logs);
}
