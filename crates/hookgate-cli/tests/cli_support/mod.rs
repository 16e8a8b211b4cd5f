//! Shared by the CLI tests that run long-lived processes against real
//! stores: which stores are reachable, free ports, a private `redis-server`.
#![allow(dead_code, unreachable_pub)]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The machine's Postgres and Redis (`HOOKGATE_POSTGRES_URL`,
/// `HOOKGATE_REDIS_URL`), those that answer; one that does not is skipped
/// with a note, except under `CI=true`, where it fails the test.
pub fn stores() -> Vec<String> {
    let pg = std::env::var("HOOKGATE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis =
        std::env::var("HOOKGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut out = Vec::new();
    for url in [pg, redis] {
        let hostport = url.split("://").nth(1).unwrap().split('/').next().unwrap();
        let hostport = hostport.rsplit('@').next().unwrap();
        if std::net::TcpStream::connect(hostport).is_ok() {
            out.push(url);
        } else {
            assert!(!ci(), "{url} unreachable under CI=true");
            eprintln!("skipping {url}: unreachable");
        }
    }
    out
}

/// A private `redis-server` on `port`, killed on drop (or by `stop`).
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
}

impl PrivateRedis {
    /// `None` (with a note) when `redis-server` is missing, except under `CI=true`.
    pub fn start(port: u16) -> Option<Self> {
        let child = match Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                assert!(!ci(), "redis-server is required under CI=true: {e}");
                eprintln!("skipping: redis-server not found: {e}");
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            child: Some(child),
            port,
        })
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Remove what a test wrote in `ns`.
pub async fn cleanup(store: &str, ns: &str) {
    if store.starts_with("postgres") {
        let (client, conn) = tokio_postgres::connect(store, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {ns} CASCADE"))
            .await
            .unwrap();
    } else {
        let client = redis::Client::open(store).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{ns}:q:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in keys {
            let _: () = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
}
