//! A sender over three stores (two Postgres schemas and a Redis prefix, all
//! real): every endpoint is stored only on its home shard, one worker per
//! shard delivers, and every message reaches the receiver exactly once.
#![cfg(all(feature = "postgres", feature = "redis"))]

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, routing::post, Router};
use hookgate_core::Scheme;
use hookgate_sender::{
    shard::{shard_of, ShardedSender},
    ssrf::SsrfPolicy,
    Endpoint, Message, Queue, Worker,
};

const ENDPOINTS: usize = 24;
const PER_ENDPOINT: usize = 10;

type Counts = Arc<Mutex<HashMap<String, u32>>>;

async fn receive(State(counts): State<Counts>, headers: HeaderMap) -> &'static str {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned();
    *counts.lock().unwrap().entry(id).or_default() += 1;
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_live_on_their_home_shard_and_deliver_once() {
    let (Some(pg_a), Some(pg_b), Some(redis)) = (
        support::pg::fresh().await,
        support::pg::fresh().await,
        support::redis::fresh().await,
    ) else {
        return;
    };
    let cleanup = {
        let (a, b, r) = (pg_a.clone(), pg_b.clone(), redis.clone());
        async move {
            support::pg::drop_schema(&a).await;
            support::pg::drop_schema(&b).await;
            support::redis::delete_keys(&r).await;
        }
    };
    let queues: Vec<Arc<dyn Queue>> = vec![Arc::new(pg_a), Arc::new(pg_b), Arc::new(redis)];
    let body = async move {
        let counts: Counts = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(counts.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let sender = ShardedSender::new(queues.clone()).unwrap();
        let ids: Vec<String> = (0..ENDPOINTS).map(|i| format!("tenant-{i}")).collect();
        for id in &ids {
            sender
                .add_endpoint(
                    Endpoint::new(
                        id,
                        url.clone(),
                        Scheme::StandardWebhooks,
                        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    )
                    .unwrap(),
                )
                .await
                .unwrap();
        }
        // Each endpoint is stored on its home shard and nowhere else.
        for (shard, queue) in queues.iter().enumerate() {
            let mut stored: Vec<String> = queue
                .list_endpoints()
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect();
            stored.sort();
            let mut home: Vec<String> = ids
                .iter()
                .filter(|id| shard_of(id, 3) as usize == shard)
                .cloned()
                .collect();
            home.sort();
            assert!(!home.is_empty(), "shard {shard} is home to no endpoint");
            assert_eq!(stored, home, "shard {shard}");
        }
        let workers: Vec<_> = queues
            .iter()
            .map(|q| {
                Worker::builder(q.clone())
                    .with_concurrency(8)
                    .with_poll_interval(Duration::from_millis(20))
                    .with_ssrf_policy(SsrfPolicy::new().allow_private().allow_plain_http())
                    .build()
                    .unwrap()
                    .spawn()
            })
            .collect();
        for id in &ids {
            for n in 0..PER_ENDPOINT {
                sender
                    .enqueue(
                        id,
                        Message::new("t", format!("{{\"n\":{n}}}")).with_id(format!("{id}-m{n}")),
                    )
                    .await
                    .unwrap();
            }
        }
        // Each shard's queue holds exactly its endpoints' deliveries.
        for _ in 0..600 {
            let mut pending = 0;
            for q in &queues {
                pending += q.stats().await.unwrap().pending();
            }
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for w in workers {
            w.shutdown(Duration::from_secs(5)).await;
        }
        for (shard, q) in queues.iter().enumerate() {
            let stats = q.stats().await.unwrap();
            let home = ids
                .iter()
                .filter(|id| shard_of(id, 3) as usize == shard)
                .count();
            assert_eq!(
                stats.delivered,
                (home * PER_ENDPOINT) as u64,
                "shard {shard}: {stats:?}"
            );
        }
        let counts = counts.lock().unwrap();
        assert_eq!(counts.len(), ENDPOINTS * PER_ENDPOINT, "distinct messages");
        assert!(
            counts.values().all(|n| *n == 1),
            "a message arrived twice: {counts:?}"
        );
    };
    support::with_cleanup(body, cleanup).await;
}
