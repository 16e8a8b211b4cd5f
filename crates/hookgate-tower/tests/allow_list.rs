//! Source-IP allow-list over real HTTP on loopback: clients connect from
//! 127.0.0.1 or 127.0.0.2 (both loopback on Linux), the server reads the
//! peer from axum's `ConnectInfo`, and `X-Forwarded-For` is believed only
//! from a trusted proxy.
#![cfg(feature = "axum")]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{routing::post, Router};
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::{extract::Webhook, source::Cidr, MemoryStore, VerifyWebhookLayer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BODY: &[u8] = br#"{"type":"ping"}"#;
const PROBLEM: &str = "https://hookgate.dev/problems/source_not_allowed";

struct Server {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    store: Arc<MemoryStore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// `POST /hook` behind a layer allowing `allowed`, trusting `trusted`;
/// `connect_info` false serves without `ConnectInfo` (a misconfiguration).
async fn serve(allowed: &[&str], trusted: &[&str], connect_info: bool) -> Server {
    let store = Arc::new(MemoryStore::default());
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let layer = VerifyWebhookLayer::new(verifier)
        .with_shared_store(Arc::clone(&store))
        .with_allowed_sources(cidrs(allowed))
        .with_trusted_proxies(cidrs(trusted));
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = Router::new()
        .route(
            "/hook",
            post(move |_webhook: Webhook| {
                c.fetch_add(1, Ordering::SeqCst);
                async { "handled" }
            }),
        )
        .route_layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        if connect_info {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        } else {
            axum::serve(listener, app).await.unwrap();
        }
    });
    Server {
        addr,
        calls,
        store,
        task,
    }
}

/// A signed delivery of a fresh event from local address `from`.
async fn deliver(server: &Server, from: &str, xff: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let id = format!("msg_{:016x}", rand::random::<u64>());
    let signer = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    );
    let mut req = client.post(format!("http://{}/hook", server.addr));
    for (k, v) in signer.sign(&id, unix_now(), BODY) {
        req = req.header(k, v);
    }
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.body(BODY).send().await.unwrap()
}

async fn assert_refused(res: reqwest::Response, why: &str) {
    assert_eq!(res.status(), 403, "{why}");
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{why}"
    );
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(v["type"], PROBLEM, "{why}");
}

#[tokio::test]
async fn allowed_peer_is_handled_other_peer_gets_403_without_a_store_write() {
    let server = serve(&["127.0.0.1/32"], &[], true).await;
    let ok = deliver(&server, "127.0.0.1", None).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.store.len(), 1, "the handled event is recorded");

    assert_refused(
        deliver(&server, "127.0.0.2", None).await,
        "127.0.0.2 is outside",
    )
    .await;
    assert_eq!(server.calls.load(Ordering::SeqCst), 1, "handler not run");
    assert_eq!(server.store.len(), 1, "nothing written for the refused one");
}

#[tokio::test]
async fn spoofed_forwarded_for_is_ignored_unless_the_proxy_is_trusted() {
    // Only 203.0.113.0/24 may send; nothing is trusted.
    let server = serve(&["203.0.113.0/24"], &[], true).await;
    assert_refused(
        deliver(&server, "127.0.0.1", Some("203.0.113.7")).await,
        "X-Forwarded-For from an untrusted peer is ignored",
    )
    .await;
    assert_eq!(server.calls.load(Ordering::SeqCst), 0);
    assert!(server.store.is_empty());

    // The proxy at 127.0.0.1 is trusted: its X-Forwarded-For decides.
    let server = serve(&["203.0.113.0/24"], &["127.0.0.1"], true).await;
    let ok = deliver(&server, "127.0.0.1", Some("203.0.113.7")).await;
    assert_eq!(
        ok.status(),
        200,
        "the trusted proxy forwards an allowed client"
    );
    assert_refused(
        deliver(&server, "127.0.0.1", Some("203.0.113.7, 198.51.100.9")).await,
        "a client-written entry left of the real client is not believed",
    )
    .await;
    assert_refused(
        deliver(&server, "127.0.0.2", Some("203.0.113.7")).await,
        "127.0.0.2 is not a trusted proxy",
    )
    .await;
    assert_refused(
        deliver(&server, "127.0.0.1", None).await,
        "without X-Forwarded-For the client is the proxy itself",
    )
    .await;
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.store.len(), 1);
}

#[tokio::test]
async fn without_a_peer_address_the_allow_list_refuses() {
    let server = serve(&["127.0.0.0/8"], &[], false).await;
    assert_refused(
        deliver(&server, "127.0.0.1", None).await,
        "no ConnectInfo: refuse rather than let everyone in",
    )
    .await;
    assert_eq!(server.calls.load(Ordering::SeqCst), 0);
    assert!(server.store.is_empty());
}
