//! End to end, for all five schemes: the sender signs and delivers, the
//! hookgate-tower layer in front of an axum route verifies and deduplicates;
//! a replay of an event the receiver already handled does not run the
//! handler again.

mod sender_support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{routing::post, Extension, Router};
use hookgate_core::{Scheme, Verifier};
use hookgate_sender::{
    queue::{DeadLetter, DeadReason, DeliveryKey},
    worker::Next,
    Endpoint, MemoryQueue, Message, Queue, Sender,
};
use hookgate_tower::{MemoryStore, VerifiedWebhook, VerifyWebhookLayer};
use sender_support::{fast_policy, serve, test_worker, until_final};

fn secret(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        Scheme::Stripe => "whsec_test_secret",
        Scheme::Slack => "8f742231b10e8888abcd99yyyzzz85a5",
        _ => "It's a Secret to Everybody",
    }
}

/// A verifying, deduplicating receiver; returns its URL and the handled events.
async fn tower_receiver(scheme: Scheme) -> (String, Arc<Mutex<Vec<VerifiedWebhook>>>) {
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    let verifier = Verifier::from_secret_strings(scheme, [secret(scheme)]).unwrap();
    let app = Router::new()
        .route(
            "/hook",
            post(move |Extension(w): Extension<VerifiedWebhook>| {
                let h = h.clone();
                async move {
                    h.lock().unwrap().push(w);
                    "handled"
                }
            }),
        )
        .route_layer(VerifyWebhookLayer::new(verifier).with_store(MemoryStore::new()));
    let addr = serve(app).await;
    (format!("http://{addr}/hook"), handled)
}

#[tokio::test]
async fn all_schemes_verify_and_a_replay_is_deduplicated() {
    for scheme in Scheme::ALL {
        let (url, handled) = tower_receiver(scheme).await;
        let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
        let sender = Sender::new(queue.clone());
        sender
            .add_endpoint(Endpoint::new("ep", url.clone(), scheme, secret(scheme)).unwrap())
            .await
            .unwrap();
        let (builder, mut reports) = test_worker(queue.clone(), fast_policy(3));
        let worker = builder.build().unwrap().spawn();

        let msg = Message::new("order.paid", String::new());
        // Stripe carries the event id in the JSON body.
        let msg = Message {
            payload: format!(r#"{{"id":"{}","type":"order.paid"}}"#, msg.id).into(),
            ..msg
        };
        let key = sender.enqueue("ep", msg.clone()).await.unwrap();
        let r = until_final(&mut reports, &key).await;
        assert_eq!(r.len(), 1, "{scheme}: {r:?}");
        assert_eq!(r[0].next, Next::Delivered, "{scheme}");
        assert_eq!(r[0].attempt.as_ref().unwrap().status, Some(200));
        {
            let handled = handled.lock().unwrap();
            assert_eq!(handled.len(), 1, "{scheme}");
            assert_eq!(handled[0].scheme, scheme);
            if scheme != Scheme::Slack {
                assert_eq!(handled[0].id.as_deref(), Some(msg.id.as_str()), "{scheme}");
            }
        }

        // Another sender never saw the answer (say the connection broke
        // after the handler ran) and the message ended in its DLQ; an
        // operator replays it. The receiver answers from its dedup record.
        // (Here: a second endpoint record for the same receiver, since a
        // key of this queue has one history and is delivered already.)
        let copy = Endpoint::new("ep-copy", url.clone(), scheme, secret(scheme)).unwrap();
        sender.add_endpoint(copy).await.unwrap();
        let key = DeliveryKey {
            endpoint: "ep-copy".into(),
            message_id: msg.id.clone(),
        };
        assert!(queue
            .add_dead_letter(&DeadLetter {
                key: key.clone(),
                message: msg.clone(),
                attempts: Vec::new(),
                reason: DeadReason::Exhausted {
                    last: "timeout".into()
                },
                dead_at_ms: hookgate_sender::now_ms(),
            })
            .await
            .unwrap());
        assert!(queue.replay_dead(&key).await.unwrap());
        let r = until_final(&mut reports, &key).await;
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(r.len(), 1, "{scheme}");
        assert_eq!(r[0].next, Next::Delivered, "{scheme}");
        assert_eq!(
            handled.lock().unwrap().len(),
            1,
            "{scheme}: handler ran twice"
        );
    }
}

#[tokio::test]
async fn rotated_secrets_verify_with_either_key() {
    let scheme = Scheme::StandardWebhooks;
    let (url, handled) = tower_receiver(scheme).await;
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    // The newest secret is unknown to the receiver; the old one still signs.
    let ep = Endpoint::new("ep", url, scheme, secret(scheme))
        .unwrap()
        .with_secret("whsec_dGhpcyBpcyBhIG5ldyBzZWNyZXQ=")
        .unwrap();
    sender.add_endpoint(ep).await.unwrap();
    let (builder, mut reports) = test_worker(queue.clone(), fast_policy(3));
    let worker = builder.build().unwrap().spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let r = until_final(&mut reports, &key).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r[0].next, Next::Delivered);
    assert_eq!(handled.lock().unwrap()[0].key_index, 0);
}
