//! Redis queue tests beyond the conformance suite: concurrent lessors (the
//! lease script), prefix isolation, validation and an unreachable server.
//! Real Redis; see `support`.
#![cfg(feature = "redis")]

mod support;

use std::time::Duration;

use hookgate_sender::{
    queue::{QueueErrorKind, RedisQueue},
    Message, Queue,
};

#[tokio::test]
async fn two_lessors_never_lease_the_same_message() {
    let Some(q) = support::redis::fresh().await else {
        return;
    };
    let q2 = q.clone();
    support::with_cleanup(
        async {
            let (a, b) = support::two_lessors_never_share(q2, 1000).await;
            eprintln!("lessor a took {a}, lessor b took {b}");
        },
        support::redis::delete_keys(&q),
    )
    .await;
}

#[tokio::test]
async fn prefixes_isolate_queues_and_cleanup_removes_every_key() {
    let Some(a) = support::redis::fresh().await else {
        return;
    };
    let Some(b) = support::redis::fresh().await else {
        return;
    };
    let body = async {
        a.enqueue("ep", &Message::new("t", "x").with_id("one"))
            .await
            .unwrap();
        assert_eq!(a.stats().await.unwrap().pending(), 1);
        assert_eq!(b.stats().await.unwrap().pending(), 0);
        assert!(b
            .lease(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty());
        a.delete_all().await.unwrap();
        assert_eq!(a.stats().await.unwrap().pending(), 0);
    };
    support::with_cleanup(body, async {
        support::redis::delete_keys(&a).await;
        support::redis::delete_keys(&b).await;
    })
    .await;
}

#[tokio::test]
async fn endpoint_ids_with_nul_are_refused() {
    let Some(q) = support::redis::fresh().await else {
        return;
    };
    let body = async {
        let err = q
            .enqueue("bad\0id", &Message::new("t", "x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), QueueErrorKind::Config);
    };
    support::with_cleanup(body, support::redis::delete_keys(&q)).await;
}

#[tokio::test]
async fn invalid_prefixes_and_urls_are_typed_errors() {
    let err = RedisQueue::connect("nope://x").await.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::Config, "{err}");
    if let Some(q) = support::redis::fresh().await {
        for bad in ["", "has space", "tab\t", &"x".repeat(200)] {
            let err = q.clone().with_prefix(bad).unwrap_err();
            assert_eq!(err.kind(), QueueErrorKind::Config, "{bad:?}");
        }
    }
}

#[tokio::test]
async fn unreachable_server_is_unavailable_within_a_bounded_time() {
    let url = format!("redis://127.0.0.1:{}", support::closed_port());
    let result = tokio::time::timeout(Duration::from_secs(30), RedisQueue::connect(&url))
        .await
        .expect("connect gave up within 30 s");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), QueueErrorKind::Unavailable, "{err}");
}
