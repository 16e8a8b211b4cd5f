//! Losing the server mid-operation: the Postgres and Redis queues are reached
//! through a TCP proxy on 127.0.0.1:0 in front of the real server; stopping
//! the proxy (listener closed, every connection dropped) makes operations
//! fail with `Unavailable` within a bounded time, and once it is back the
//! same queue handle works again (pool / ConnectionManager reconnect).

#![cfg(any(feature = "postgres", feature = "redis"))]

mod support;

use std::{net::SocketAddr, time::Duration};

use hookgate_sender::{
    queue::{QueueError, QueueErrorKind},
    Message, Queue,
};
use tokio::{net::TcpListener, task::JoinHandle};

/// Forwards 127.0.0.1:<port> to `upstream` until stopped.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Self {
            port,
            upstream,
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            // Connection tasks live in this set: aborting the accept task
            // drops the set, which aborts them and closes their sockets.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebind the proxy port");
        self.serve(listener);
    }

    /// `url` pointed at the proxy.
    fn url(&self, url: &str) -> String {
        let mut u = reqwest::Url::parse(url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The socket address a URL names (loopback servers only).
async fn upstream_of(url: &str, default_port: u16) -> SocketAddr {
    let u = reqwest::Url::parse(url).unwrap();
    let host = u.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = u.port().unwrap_or(default_port);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap();
    addrs.next().unwrap()
}

/// Run `op` with a bound; it must fail with `Unavailable`.
async fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, QueueError>>,
) {
    let result = tokio::time::timeout(Duration::from_secs(40), op)
        .await
        .unwrap_or_else(|_| panic!("{what} did not give up within 40 s"));
    let err = result.expect_err(what);
    assert_eq!(err.kind(), QueueErrorKind::Unavailable, "{what}: {err}");
}

/// Retry `op` until it succeeds (bounded): the handle reconnects by itself.
async fn eventually_ok<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut last = None;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(15), op()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_) => last = Some("timed out".into()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} never recovered: {last:?}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_queue_reports_a_lost_server_and_recovers() {
    use hookgate_sender::queue::PostgresQueue;

    // A fresh schema on the real server (skips when unreachable).
    let Some(direct) = support::pg::fresh().await else {
        return;
    };
    let url = support::postgres_url();
    let mut proxy = Proxy::start(upstream_of(&url, 5432).await).await;
    let body = async {
        let q = PostgresQueue::connect_with_pool_size(&proxy.url(&url), 2)
            .await
            .unwrap()
            .with_schema(direct.schema())
            .unwrap();
        q.enqueue("ep", &Message::new("t", "1").with_id("before"))
            .await
            .unwrap();

        proxy.stop().await;
        assert_unavailable(
            "enqueue",
            q.enqueue("ep", &Message::new("t", "2").with_id("during")),
        )
        .await;
        assert_unavailable("lease", q.lease(10, Duration::from_secs(30))).await;
        assert_unavailable("stats", q.stats()).await;

        proxy.restart().await;
        let stats = eventually_ok("stats", || q.stats()).await;
        assert_eq!(
            stats.pending(),
            1,
            "only the message stored before the outage"
        );
        let leased = eventually_ok("lease", || q.lease(10, Duration::from_secs(30))).await;
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].job.message.id, "before");
    };
    support::with_cleanup(body, support::pg::drop_schema(&direct)).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_queue_reports_a_lost_server_and_recovers() {
    use hookgate_sender::queue::RedisQueue;

    let Some(direct) = support::redis::fresh().await else {
        return;
    };
    let url = support::redis_url();
    let mut proxy = Proxy::start(upstream_of(&url, 6379).await).await;
    let body = async {
        let q = RedisQueue::connect(&proxy.url(&url))
            .await
            .unwrap()
            .with_prefix(direct.prefix())
            .unwrap();
        q.enqueue("ep", &Message::new("t", "1").with_id("before"))
            .await
            .unwrap();

        proxy.stop().await;
        assert_unavailable(
            "enqueue",
            q.enqueue("ep", &Message::new("t", "2").with_id("during")),
        )
        .await;
        assert_unavailable("lease", q.lease(10, Duration::from_secs(30))).await;

        proxy.restart().await;
        let stats = eventually_ok("stats", || q.stats()).await;
        assert_eq!(
            stats.pending(),
            1,
            "only the message stored before the outage"
        );
        let leased = eventually_ok("lease", || q.lease(10, Duration::from_secs(30))).await;
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].job.message.id, "before");
    };
    support::with_cleanup(body, support::redis::delete_keys(&direct)).await;
}
