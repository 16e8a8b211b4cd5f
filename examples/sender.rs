//! A sender in about ten lines: a memory queue, one endpoint, one message,
//! a worker that delivers it (signed, retried with backoff, dead-lettered if
//! it never succeeds).
//!
//! ```sh
//! cargo run --example sender
//! ```
//!
//! For the demo a receiver runs in the same process on 127.0.0.1, which the
//! SSRF guard refuses by default: the worker's allow-list opens loopback.

use std::{sync::Arc, time::Duration};

use hookgate::sender::{worker::Next, Endpoint, MemoryQueue, Message, Queue, Sender, Worker};
use hookgate::Scheme;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = demo_receiver().await?;

    // --- the sender ---
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new()); // or PostgresQueue / RedisQueue
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(Endpoint::new(
            "orders",
            url,
            Scheme::StandardWebhooks,
            SECRET,
        )?)
        .await?;
    sender
        .enqueue("orders", Message::new("order.paid", r#"{"order":42}"#))
        .await?;

    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(queue)
        .with_ssrf_policy(
            hookgate::sender::ssrf::SsrfPolicy::new()
                .allow("127.0.0.0/8".parse()?)
                .allow_plain_http(),
        )
        .with_on_attempt(move |r| {
            println!("attempt {} of {}: {:?}", r.number, r.key.message_id, r.next);
            let _ = done_tx.send(r.next.clone());
        })
        .build()?
        .spawn();
    // --- end ---

    while let Some(next) = done.recv().await {
        if !matches!(next, Next::RetryAt { .. }) {
            break;
        }
    }
    worker.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A verifying receiver on 127.0.0.1 (port 0) that prints what it accepts.
async fn demo_receiver() -> Result<String, Box<dyn std::error::Error>> {
    use axum::{routing::post, Router};
    use hookgate::tower::VerifyWebhookLayer;

    let verifier = hookgate::Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET])?;
    let app = Router::new()
        .route(
            "/webhooks",
            post(|body: String| async move {
                println!("receiver got {body}");
                "ok"
            }),
        )
        .route_layer(VerifyWebhookLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}
