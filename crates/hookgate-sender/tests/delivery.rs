//! Delivery through the worker against real HTTP receivers on 127.0.0.1:
//! retries, `Retry-After`, permanent failures, 410 Gone, the dead-letter
//! queue and replay.

mod sender_support;

use std::{sync::Arc, time::Duration};

use hookgate_core::{Scheme, Verifier};
use hookgate_sender::{
    outcome::Class,
    queue::{DeadReason, DeliveryKey, DlqFilter, Page},
    worker::Next,
    Endpoint, MemoryQueue, Message, Queue, Sender,
};
use sender_support::{fast_policy, test_worker, until_final, Receiver, Reply};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn setup(receiver: &Receiver) -> (Arc<dyn Queue>, Sender) {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new("ep", receiver.url(), Scheme::StandardWebhooks, SECRET)
                .unwrap()
                .with_header("X-Tenant", "acme")
                .unwrap(),
        )
        .await
        .unwrap();
    (queue, sender)
}

#[tokio::test]
async fn flaky_receiver_gets_the_message_after_retries() {
    let receiver = Receiver::start([Reply::status(500), Reply::status(503)]).await;
    let (queue, sender) = setup(&receiver).await;
    let policy = fast_policy(5);
    let (builder, mut reports) = test_worker(queue.clone(), policy.clone());
    let worker = builder.build().unwrap().spawn();

    let msg = Message::new("order.paid", r#"{"order":42}"#);
    let key = sender.enqueue("ep", msg.clone()).await.unwrap();
    let reports = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;

    // Three attempts: 500, 503, 200.
    let statuses: Vec<_> = reports
        .iter()
        .map(|r| r.attempt.as_ref().unwrap().status)
        .collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(200)]);
    assert_eq!(reports.last().unwrap().next, Next::Delivered);
    assert!(reports.iter().all(|r| r.recorded));
    assert_eq!(
        reports.iter().map(|r| r.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    // Same id, valid signature, extra header and JSON content type every time.
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(r.headers["webhook-id"], msg.id.as_str());
        assert_eq!(r.headers["x-tenant"], "acme");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body, msg.payload);
        let v = verifier.verify(&r.headers, &r.body).unwrap();
        assert_eq!(v.id.as_deref(), Some(msg.id.as_str()));
    }

    // Each retry waited at least its scheduled delay, and the delays were
    // drawn from growing windows.
    for (i, r) in reports.iter().take(2).enumerate() {
        let Next::RetryAt { at_ms, delay } = r.next else {
            panic!("expected a retry, got {:?}", r.next);
        };
        let retry = u32::try_from(i).unwrap() + 1;
        assert!(delay <= policy.window(retry), "{delay:?} > window {retry}");
        let next_attempt = reports[i + 1].attempt.as_ref().unwrap();
        assert!(next_attempt.at_ms >= at_ms, "attempt before its due time");
    }
    assert!(policy.window(2) > policy.window(1));
    assert_eq!(queue.stats().await.unwrap().pending(), 0);
    assert_eq!(queue.stats().await.unwrap().dead, 0);
}

#[tokio::test]
async fn retry_after_seconds_is_waited() {
    let receiver = Receiver::start([Reply::status(429).header("Retry-After", "2")]).await;
    let (queue, sender) = setup(&receiver).await;
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder.build().unwrap().spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let reports = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;

    assert_eq!(reports.len(), 2);
    let Next::RetryAt { delay, .. } = reports[0].next else {
        panic!("expected a retry");
    };
    assert!(delay >= Duration::from_secs(2), "{delay:?}");
    let first = reports[0].attempt.as_ref().unwrap();
    let second = reports[1].attempt.as_ref().unwrap();
    assert_eq!(first.status, Some(429));
    assert_eq!(second.status, Some(200));
    assert!(
        second.at_ms - first.at_ms >= 2000,
        "second attempt {} ms after the first",
        second.at_ms - first.at_ms
    );
    // Signed afresh: a later timestamp, the same id.
    let received = receiver.received();
    let ts = |i: usize| -> i64 {
        received[i].headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(ts(1) >= ts(0) + 2, "{} then {}", ts(0), ts(1));
    assert_eq!(
        received[0].headers["webhook-id"],
        received[1].headers["webhook-id"]
    );
    assert_ne!(
        received[0].headers["webhook-signature"],
        received[1].headers["webhook-signature"]
    );
}

#[tokio::test]
async fn retry_after_http_date_is_waited() {
    // A date at least two whole seconds ahead.
    let due_s = hookgate_sender::now_ms() / 1000 + 3;
    let date = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(due_s).unwrap()),
    );
    let receiver = Receiver::start([Reply::status(503).header("Retry-After", &date)]).await;
    let (queue, sender) = setup(&receiver).await;
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder.build().unwrap().spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let reports = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;

    assert_eq!(reports.len(), 2);
    let Next::RetryAt { at_ms, delay } = reports[0].next else {
        panic!("expected a retry");
    };
    assert!(delay >= Duration::from_secs(1), "{delay:?}");
    // Millisecond truncation of the delay may put the due time 1 ms early.
    assert!(at_ms >= due_s * 1000 - 1, "{at_ms} < {}", due_s * 1000);
    let second = reports[1].attempt.as_ref().unwrap();
    assert!(second.at_ms >= due_s * 1000 - 1);
    assert_eq!(second.status, Some(200));
}

#[tokio::test]
async fn permanent_400_goes_straight_to_the_dlq() {
    let receiver = Receiver::start([Reply::status(400)]).await;
    let (queue, sender) = setup(&receiver).await;
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder.build().unwrap().spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let reports = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;

    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].class, Some(Class::Permanent));
    let Next::DeadLettered { reason } = &reports[0].next else {
        panic!("expected a dead letter");
    };
    assert_eq!(
        *reason,
        DeadReason::Permanent {
            detail: "HTTP 400 Bad Request".into()
        }
    );
    assert_eq!(receiver.count(), 1);
    let dead = queue.get_dead(&key).await.unwrap().unwrap();
    assert_eq!(dead.attempts.len(), 1);
    assert_eq!(dead.attempts[0].status, Some(400));
    assert_eq!(dead.reason, *reason);
}

#[tokio::test]
async fn exhausted_then_replayed_delivers_with_same_id() {
    let receiver =
        Receiver::start([Reply::status(500), Reply::status(502), Reply::status(504)]).await;
    let (queue, sender) = setup(&receiver).await;
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(3));
    let worker = builder.build().unwrap().spawn();
    let msg = Message::new("t", r#"{"x":1}"#);
    let key = sender.enqueue("ep", msg.clone()).await.unwrap();
    let first = until_final(&mut reports, &key).await;
    assert_eq!(first.len(), 3);
    let Next::DeadLettered { reason } = &first[2].next else {
        panic!("expected a dead letter");
    };
    assert_eq!(
        *reason,
        DeadReason::Exhausted {
            last: "HTTP 504 Gateway Timeout".into()
        }
    );

    // The whole history is kept, with the payload.
    let dead = queue.get_dead(&key).await.unwrap().unwrap();
    assert_eq!(dead.message.payload, msg.payload);
    let statuses: Vec<_> = dead.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(502), Some(504)]);
    assert!(dead.attempts.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(dead.attempts.iter().all(|a| a.url == receiver.url()));
    let listed = queue
        .list_dead(
            &DlqFilter {
                endpoint: Some("ep".into()),
                ..DlqFilter::default()
            },
            &Page {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    // Replay: back in the queue, delivered, same message id.
    assert!(queue.replay_dead(&key).await.unwrap());
    let second = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].number, 1);
    assert_eq!(second[0].next, Next::Delivered);
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert!(received
        .iter()
        .all(|r| r.headers["webhook-id"] == msg.id.as_str()));
    assert_eq!(queue.stats().await.unwrap().dead, 0);
}

#[tokio::test]
async fn gone_410_disables_the_endpoint() {
    let receiver = Receiver::start([Reply::status(410)]).await;
    let (queue, sender) = setup(&receiver).await;
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(5));
    let worker = builder
        .with_endpoint_cache_ttl(Duration::from_secs(60))
        .build()
        .unwrap()
        .spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let r = until_final(&mut reports, &key).await;
    assert_eq!(r[0].class, Some(Class::Gone));
    let Next::DeadLettered { reason } = &r[0].next else {
        panic!("expected a dead letter");
    };
    assert_eq!(*reason, DeadReason::Gone);
    assert!(queue.get_endpoint("ep").await.unwrap().unwrap().disabled);

    // Later messages are not sent while the endpoint is disabled: they are
    // held, and delivered once it is enabled again.
    let key2 = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let r2 = until_final(&mut reports, &key2).await;
    assert!(r2[0].attempt.is_none());
    assert_eq!(r2[0].next, Next::Held);
    assert_eq!(
        queue.state(&key2).await.unwrap(),
        Some(hookgate_sender::queue::DeliveryState::Held)
    );
    assert_eq!(receiver.count(), 1);
    assert_eq!(sender.enable_endpoint("ep").await.unwrap(), 1);
    let r3 = until_final(&mut reports, &key2).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r3.last().unwrap().next, Next::Delivered);
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn unknown_endpoint_is_refused_at_enqueue() {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    let err = sender
        .enqueue("nope", Message::new("t", "{}"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        hookgate_sender::SendError::UnknownEndpoint(ref e) if e == "nope"
    ));
    assert_eq!(queue.stats().await.unwrap().pending(), 0);
}

#[tokio::test]
async fn connection_refused_is_retried_and_error_has_no_secrets() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new(
                "ep",
                format!("http://user:hunter2@127.0.0.1:{port}/hook"),
                Scheme::StandardWebhooks,
                SECRET,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(2));
    let worker = builder.build().unwrap().spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let r = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].class, Some(Class::Retry));
    let dead = queue.get_dead(&key).await.unwrap().unwrap();
    for a in &dead.attempts {
        let err = a.error.as_deref().unwrap();
        assert!(err.starts_with("connect: "), "{err}");
        assert!(
            !err.contains("hunter2") && !a.url.contains("hunter2"),
            "{a:?}"
        );
        assert!(!err.contains("MfKQ9r8"), "{err}");
    }
    assert!(!dead.reason.to_string().contains("hunter2"));
}

#[tokio::test]
async fn timeout_is_retried() {
    let receiver = Receiver::start([Reply::status(200).delay(Duration::from_secs(3))]).await;
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(
            Endpoint::new("ep", receiver.url(), Scheme::GitHub, "s")
                .unwrap()
                .with_timeout(Duration::from_millis(300))
                .unwrap(),
        )
        .await
        .unwrap();
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(3));
    let worker = builder.build().unwrap().spawn();
    let key: DeliveryKey = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let r = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r.len(), 2);
    let first = r[0].attempt.as_ref().unwrap();
    assert_eq!(first.error.as_deref(), Some("timeout after 300ms"));
    assert_eq!(r[1].next, Next::Delivered);
}
