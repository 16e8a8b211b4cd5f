//! Body handling over real HTTP on loopback: the limit the user sets is the
//! only limit (no axum default underneath the `Webhook` extractor), and a
//! body the layer could not read is never stored as an answer.
#![cfg(feature = "axum")]

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{routing::post, Router};
use hookgate_core::{unix_now, Scheme, Signer, Verifier};
use hookgate_tower::{extract::Webhook, VerifyWebhookLayer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MIB: usize = 1024 * 1024;

fn signer() -> Signer {
    Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    )
}

/// `POST /hook` behind the layer with `limit`; the handler takes the
/// `Webhook` extractor, counts its calls and answers the body's length.
async fn serve(limit: usize) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let verifier = Verifier::from_secret_strings(Scheme::StandardWebhooks, [SECRET]).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let app = Router::new()
        .route(
            "/hook",
            post(move |webhook: Webhook| {
                let c = Arc::clone(&c);
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    webhook.body.len().to_string()
                }
            }),
        )
        .route_layer(VerifyWebhookLayer::new(verifier).with_body_limit(limit));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, calls, task)
}

async fn send(addr: SocketAddr, id: &str, body: Vec<u8>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/hook"))
        .timeout(Duration::from_secs(30));
    for (k, v) in signer().sign(id, unix_now(), &body) {
        req = req.header(k, v);
    }
    req.body(body).send().await.unwrap()
}

#[tokio::test]
async fn a_3_mib_body_under_an_8_mib_limit_reaches_the_webhook_extractor() {
    let (addr, calls, task) = serve(8 * MIB).await;
    let body = vec![b'a'; 3 * MIB];
    let res = send(addr, "msg_big", body.clone()).await;
    assert_eq!(
        res.status(),
        200,
        "no 2 MiB default under the user's 8 MiB limit"
    );
    assert_eq!(res.text().await.unwrap(), (3 * MIB).to_string());
    // The retry is a replay of that 200, not of an error.
    let again = send(addr, "msg_big", body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Over the user's limit is still refused.
    let over = send(addr, "msg_over", vec![b'a'; 8 * MIB + 1]).await;
    assert_eq!(over.status(), 413);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    task.abort();
}

#[tokio::test]
async fn a_body_cut_short_is_not_stored_and_the_retry_is_handled() {
    let (addr, calls, task) = serve(MIB).await;
    let body = vec![b'{'; 64 * 1024];
    let headers = signer().sign("msg_cut", unix_now(), &body);
    // Announce the whole body, send half, then close the sending side.
    let cut = tokio::task::spawn_blocking({
        let body = body.clone();
        move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut head = format!(
                "POST /hook HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body[..body.len() / 2]).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            String::from_utf8_lossy(&response).into_owned()
        }
    })
    .await
    .unwrap();
    assert!(
        cut.is_empty() || cut.starts_with("HTTP/1.1 400"),
        "a cut body is refused (or the connection closed): {cut:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never ran");
    // The sender retries with the whole body: handled, not a replay.
    let res = send(addr, "msg_cut", body).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    task.abort();
}
