//! Shared helpers for the sender's integration tests: a scripted HTTP
//! receiver on 127.0.0.1 (port 0), and a worker whose attempt reports can be
//! awaited.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use hookgate_sender::{
    queue::DeliveryKey,
    retry::RetryPolicy,
    ssrf::SsrfPolicy,
    worker::{AttemptReport, Next},
    Queue, Worker, WorkerBuilder,
};
use tokio::sync::mpsc;

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at_ms: i64,
}

#[derive(Debug, Default)]
struct ReceiverState {
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
    notify: tokio::sync::Notify,
}

/// An HTTP server on 127.0.0.1 answering from a script (then 200).
#[derive(Debug, Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start(script: impl IntoIterator<Item = Reply>) -> Self {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.into_iter().collect()),
            ..ReceiverState::default()
        });
        let app = Router::new().fallback(answer).with_state(state.clone());
        let addr = serve(app).await;
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Wait until at least `n` requests arrived (bounded).
    pub async fn wait_for(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let notified = self.state.notify.notified();
                if self.count() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("receiver did not get the expected requests in time");
    }
}

async fn answer(State(state): State<Arc<ReceiverState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    state.received.lock().unwrap().push(Received {
        headers: parts.headers,
        body,
        at_ms: hookgate_sender::now_ms(),
    });
    state.notify.notify_waiters();
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::status(200));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = StatusCode::from_u16(reply.status).unwrap().into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// Serve `app` on 127.0.0.1, port 0.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Loopback only, through the allow-list, over plain HTTP (the test
/// receivers have no TLS; plain HTTP is refused unless allowed).
pub fn loopback() -> SsrfPolicy {
    SsrfPolicy::default()
        .allow("127.0.0.0/8".parse().unwrap())
        .allow_plain_http()
}

/// A compressed retry schedule: windows 20, 40, 80, 160, 200 ms.
pub fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_base_delay(Duration::from_millis(20))
        .with_multiplier(2)
        .with_max_delay(Duration::from_millis(200))
        .with_max_attempts(max_attempts)
}

/// A worker builder for tests (loopback allowed, fast polling) and a channel of its reports.
pub fn test_worker(
    queue: Arc<dyn Queue>,
    policy: RetryPolicy,
) -> (WorkerBuilder, mpsc::UnboundedReceiver<AttemptReport>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = Worker::builder(queue)
        .with_ssrf_policy(loopback())
        .with_retry_policy(policy)
        .with_poll_interval(Duration::from_millis(10))
        .with_lease(Duration::from_secs(10))
        .with_max_request_timeout(Duration::from_secs(5))
        .with_on_attempt(move |r| {
            let _ = tx.send(r.clone());
        });
    (builder, rx)
}

/// Collect reports for `key` until it is delivered or dead-lettered (bounded).
pub async fn until_final(
    rx: &mut mpsc::UnboundedReceiver<AttemptReport>,
    key: &DeliveryKey,
) -> Vec<AttemptReport> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = rx.recv().await {
            if &r.key != key {
                continue;
            }
            let done = !matches!(r.next, Next::RetryAt { .. });
            out.push(r);
            if done {
                return;
            }
        }
    })
    .await
    .expect("no final outcome in time");
    out
}
