//! `RedisStore` survives a Redis restart: calls fail with `Unavailable`
//! while the server is down, and succeed again once it is back (reconnecting
//! and reloading the scripts it lost), without building a new store.
//!
//! Runs a private `redis-server` (no persistence) on a free loopback port,
//! owned and stopped by this test. Skips with a message when `redis-server`
//! is not installed.
#![cfg(feature = "redis")]

use hookgate_tower::store::{Claim, DedupStore, RedisStore, StoreErrorKind};
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Bound on waiting for the server to come up or for the store to recover.
const BOUND: Duration = Duration::from_secs(20);
const LEASE: Duration = Duration::from_secs(60);

/// A `redis-server` child, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port: u16) -> Option<Server> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(child) => Some(Server(child)),
        Err(e) => {
            eprintln!("skipping: cannot run redis-server ({e})");
            None
        }
    }
}

async fn wait_listening(port: u16) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < BOUND,
            "redis-server did not start on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_recovers_after_a_redis_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let Some(server) = start(port) else {
        return;
    };
    wait_listening(port).await;

    let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .expect("connect")
        .with_timeout(Duration::from_millis(500));
    assert!(matches!(
        store.claim("before", &[1; 32], LEASE).await.expect("claim"),
        Claim::Acquired(_)
    ));

    drop(server);
    let err = store
        .claim("down", &[1; 32], LEASE)
        .await
        .expect_err("Redis is down");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");

    let _server = start(port).expect("redis-server ran a moment ago");
    wait_listening(port).await;
    let started = Instant::now();
    let claim = loop {
        match store.claim("after", &[1; 32], LEASE).await {
            Ok(claim) => break claim,
            Err(e) => {
                assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
                assert!(started.elapsed() < BOUND, "store did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(matches!(claim, Claim::Acquired(_)));
    // The fresh server lost everything (no persistence) and the store works
    // fully: complete goes through the reloaded scripts too.
    let Claim::Acquired(token) = store.claim("before", &[1; 32], LEASE).await.expect("claim")
    else {
        panic!("the restarted server has no keys");
    };
    let record = hookgate_tower::store::DoneRecord::new(200, [1; 32]);
    assert!(store
        .complete("before", &token, record, LEASE)
        .await
        .expect("complete"));
}
