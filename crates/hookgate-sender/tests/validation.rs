//! Settings and messages are checked when built or enqueued, with typed
//! errors, not discovered at delivery time (issue 8, item 10).

use std::{sync::Arc, time::Duration};

use hookgate_core::Scheme;
use hookgate_sender::{
    retry::{RetryPolicy, RetryPolicyError},
    worker::WorkerBuildError,
    Endpoint, MemoryQueue, Message, MessageError, Queue, SendError, Sender, Worker,
    MAX_MESSAGE_ID_LEN,
};

#[test]
fn worker_builder_rejects_a_zero_base_delay() {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let zero = RetryPolicy::default().with_base_delay(Duration::ZERO);
    let built = Worker::builder(queue).with_retry_policy(zero).build();
    assert!(
        matches!(
            built,
            Err(WorkerBuildError::Retry(RetryPolicyError::ZeroBaseDelay))
        ),
        "a zero base delay retries in a tight loop: {built:?}"
    );
}

#[tokio::test]
async fn enqueue_rejects_ids_that_cannot_be_a_header_value() {
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new());
    let sender = Sender::new(queue.clone());
    sender
        .add_endpoint(Endpoint::new("ep", "https://example.com/hook", Scheme::GitHub, "s").unwrap())
        .await
        .unwrap();
    for bad in [
        "",
        "has space",
        "line\nbreak",
        "tab\there",
        "caf\u{e9}",
        "nul\0",
    ] {
        let r = sender
            .enqueue("ep", Message::new("t", "{}").with_id(bad))
            .await;
        assert!(
            matches!(
                r,
                Err(SendError::Message(
                    MessageError::EmptyId | MessageError::InvalidIdChar { .. }
                ))
            ),
            "{bad:?}: {r:?}"
        );
        assert!(Message::new("t", "{}").try_with_id(bad).is_err(), "{bad:?}");
    }
    let r = sender
        .enqueue("ep", Message::new("t", "{}").with_id("x".repeat(10_000)))
        .await;
    assert!(
        matches!(
            r,
            Err(SendError::Message(MessageError::IdTooLong { len: 10_000 }))
        ),
        "{r:?}"
    );
    // Nothing was stored: no dead letter at delivery time later.
    assert_eq!(queue.stats().await.unwrap().pending(), 0);
    // The longest allowed id is stored.
    let longest = "x".repeat(MAX_MESSAGE_ID_LEN);
    let key = sender
        .enqueue("ep", Message::new("t", "{}").try_with_id(&longest).unwrap())
        .await
        .unwrap();
    assert_eq!(key.message_id, longest);
    assert_eq!(queue.stats().await.unwrap().pending(), 1);
}
