//! `hookgate serve --admin-listen`: `/metrics` after known traffic shows
//! exactly that traffic; `/health` answers; `/ready` follows the store — 503
//! with the reason while a private `redis-server` (started by the test on a
//! free port) is stopped, 200 again once it is back.
//!
//! Needs `redis-server`; without it the test prints why and skips, except
//! under `CI=true`.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hookgate_core::{unix_now, Scheme, Signer};

mod cli_support;

use cli_support::{free_port, PrivateRedis};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Serve {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(store: &str) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--scheme", "standard", "--secret", SECRET, "--store", store])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut addr, mut admin) = (None, None);
    let mut line = String::new();
    while addr.is_none() || admin.is_none() {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        let parse = |marker: &str| -> Option<SocketAddr> {
            Some(
                line.split(marker)
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .unwrap(),
            )
        };
        addr = addr.or_else(|| parse("listening on http://"));
        admin = admin.or_else(|| parse("admin on http://"));
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    Serve {
        child,
        addr: addr.unwrap(),
        admin: admin.unwrap(),
    }
}

async fn post(addr: SocketAddr, id: &str, body: &str, forge: bool) -> u16 {
    let signer = Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    );
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/hooks"))
        .body(body.to_owned());
    for (name, value) in signer.sign(id, unix_now(), body.as_bytes()) {
        let value = if forge && name == "webhook-signature" {
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()
        } else {
            value
        };
        req = req.header(name, value);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the one series of `name` whose labels include all of `labels`.
fn value(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    let found: Vec<f64> = scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|lab| l.contains(lab)))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in:\n{scrape}");
    found[0]
}

#[tokio::test]
async fn metrics_count_the_traffic_and_ready_follows_the_store() {
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        return;
    };
    let serve = serve(&format!("redis://127.0.0.1:{}", redis.port));

    assert_eq!(get(serve.admin, "/health").await, (200, "ok\n".into()));
    assert_eq!(get(serve.admin, "/ready").await, (200, "ready\n".into()));

    // Three events, one duplicate, one forgery.
    for n in 0..3 {
        assert_eq!(
            post(
                serve.addr,
                &format!("msg_{n}"),
                &format!("{{\"n\":{n}}}"),
                false
            )
            .await,
            200
        );
    }
    assert_eq!(post(serve.addr, "msg_0", "{\"n\":0}", false).await, 200);
    assert_eq!(post(serve.addr, "msg_x", "{}", true).await, 401);

    let (status, scrape) = get(serve.admin, "/metrics").await;
    assert_eq!(status, 200);
    let verifications = "hookgate_receiver_verifications_total";
    assert_eq!(
        value(
            &scrape,
            verifications,
            &["result=\"ok\"", "scheme=\"standard\""]
        ),
        4.0
    );
    assert_eq!(
        value(&scrape, verifications, &["result=\"invalid_signature\""]),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "hookgate_receiver_duplicates_total",
            &["kind=\"replayed\""]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "hookgate_receiver_handled_total",
            &["outcome=\"completed\""]
        ),
        3.0
    );
    assert_eq!(
        value(
            &scrape,
            "hookgate_receiver_handler_duration_seconds_count",
            &["scheme=\"standard\""]
        ),
        3.0
    );

    // The store goes away: not ready, with the reason; back: ready again.
    redis.stop();
    let (status, body) = get(serve.admin, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: Redis"), "{body}");
    let mut redis = PrivateRedis::start(port).expect("restart on the same port");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(serve.admin, "/ready").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not ready 10 s after Redis came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.stop();
}
