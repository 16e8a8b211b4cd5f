//! `hookgate serve --forward` in front of a Python upstream (the standard
//! library's HTTP server, so any language's app stands behind it): a valid
//! event is forwarded once with the `Hookgate-*` headers, duplicates are
//! answered without reaching the upstream, forged and stale requests never
//! reach it, an upstream 500 releases the claim and the retry is forwarded,
//! an upstream that is down gives 502 and the retry is forwarded once it is
//! back; two replicas on one Redis or Postgres store forward each event once.
//!
//! Needs python3; without it the test prints why and skips, except under
//! `CI=true`.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hookgate_core::{unix_now, Scheme, Signer};

mod cli_support;

use cli_support::{ci, free_port, stores};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const UPSTREAM: &str = r#"
import http.server, json, sys, pathlib
port, log, status_file = int(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with log.open("a") as f:
            f.write(json.dumps({"path": self.path, "method": self.command,
                "event_id": self.headers.get("Hookgate-Event-Id"),
                "scheme": self.headers.get("Hookgate-Scheme"),
                "verified": self.headers.get("Hookgate-Verified"),
                "body": body.decode()}) + "\n")
        status = int(status_file.read_text().strip() or "200") if status_file.exists() else 200
        out = json.dumps({"seen": True}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Python upstream: logs each request as a JSON line, answers the
/// status written in its status file (200 when absent).
struct Upstream {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Upstream {
    fn start() -> Option<Self> {
        if Command::new("python3").arg("--version").output().is_err() {
            assert!(!ci(), "python3 is required under CI=true");
            eprintln!("skipping: python3 not found");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("hookgate-forward-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("upstream.py"), UPSTREAM).unwrap();
        let mut up = Self {
            child: None,
            port: free_port(),
            dir,
        };
        up.restart();
        Some(up)
    }

    fn restart(&mut self) {
        let child = Command::new("python3")
            .arg(self.dir.join("upstream.py"))
            .arg(self.port.to_string())
            .arg(self.dir.join("log.jsonl"))
            .arg(self.dir.join("status"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn answer(&self, status: u16) {
        std::fs::write(self.dir.join("status"), status.to_string()).unwrap();
    }

    fn seen(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn seen_ids(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|r| r["event_id"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `hookgate serve --forward`.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start(upstream: &Upstream, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--scheme",
                "standard",
                "--secret",
                SECRET,
            ])
            .args([
                "--forward",
                &format!("http://127.0.0.1:{}/base", upstream.port),
            ])
            .args(["--upstream-timeout", "5s"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookgate starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited before listening"
            );
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines() {});
        Self { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signer() -> Signer {
    Signer::new(
        Scheme::StandardWebhooks,
        Scheme::StandardWebhooks.secret(SECRET).unwrap(),
    )
}

async fn post(
    addr: SocketAddr,
    path: &str,
    id: &str,
    body: &str,
    timestamp: i64,
    forge: bool,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .body(body.to_owned());
    for (name, value) in signer().sign(id, timestamp, body.as_bytes()) {
        let value = if forge && name == "webhook-signature" {
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()
        } else {
            value
        };
        req = req.header(name, value);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn forwards_verified_events_once_and_releases_on_upstream_failure() {
    let Some(mut upstream) = Upstream::start() else {
        return;
    };
    let serve = Serve::start(&upstream, &[]);
    let now = unix_now();

    // A valid event: forwarded once, path and query appended, body unchanged.
    let r = post(
        serve.addr,
        "/hooks?shop=1",
        "msg_a",
        r#"{"n":1}"#,
        now,
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"seen": true}"#);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["path"], "/base/hooks?shop=1");
    assert_eq!(seen[0]["event_id"], "msg_a");
    assert_eq!(seen[0]["scheme"], "standard");
    assert_eq!(seen[0]["verified"], "true");
    assert_eq!(seen[0]["body"], r#"{"n":1}"#);

    // The duplicate is answered from the store, with the upstream's answer.
    let r = post(
        serve.addr,
        "/hooks?shop=1",
        "msg_a",
        r#"{"n":1}"#,
        now,
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.text().await.unwrap(), r#"{"seen": true}"#);
    // Forged and stale requests are rejected before the upstream.
    assert_eq!(
        post(serve.addr, "/hooks", "msg_f", "{}", now, true)
            .await
            .status(),
        401
    );
    assert_eq!(
        post(serve.addr, "/hooks", "msg_s", "{}", now - 3600, false)
            .await
            .status(),
        401
    );
    assert_eq!(upstream.seen_ids(), ["msg_a"]);

    // Upstream 500: released, so the sender's retry is forwarded again.
    upstream.answer(500);
    assert_eq!(
        post(serve.addr, "/hooks", "msg_b", r#"{"n":2}"#, now, false)
            .await
            .status(),
        500
    );
    upstream.answer(200);
    assert_eq!(
        post(serve.addr, "/hooks", "msg_b", r#"{"n":2}"#, now, false)
            .await
            .status(),
        200
    );
    assert_eq!(upstream.seen_ids(), ["msg_a", "msg_b", "msg_b"]);

    // Upstream down: 502, released; once it is back the retry is forwarded.
    upstream.stop();
    assert_eq!(
        post(serve.addr, "/hooks", "msg_c", r#"{"n":3}"#, now, false)
            .await
            .status(),
        502
    );
    upstream.restart();
    assert_eq!(
        post(serve.addr, "/hooks", "msg_c", r#"{"n":3}"#, now, false)
            .await
            .status(),
        200
    );
    assert_eq!(upstream.seen_ids(), ["msg_a", "msg_b", "msg_b", "msg_c"]);
}

#[tokio::test]
async fn two_replicas_on_one_store_forward_each_event_once() {
    for store in stores() {
        let Some(upstream) = Upstream::start() else {
            return;
        };
        let namespace = format!("fwd{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        // Redis keys expire a minute after the run; the Postgres schema is dropped below.
        let args = [
            "--store",
            store.as_str(),
            "--namespace",
            namespace.as_str(),
            "--retention",
            "1m",
        ];
        let a = Serve::start(&upstream, &args);
        let b = Serve::start(&upstream, &args);
        let now = unix_now();
        let mut sends = Vec::new();
        for n in 0..20 {
            for addr in [a.addr, b.addr] {
                let id = format!("msg_{n}");
                sends.push(tokio::spawn(async move {
                    post(addr, "/hooks", &id, &format!(r#"{{"n":{n}}}"#), now, false)
                        .await
                        .status()
                        .as_u16()
                }));
            }
        }
        for s in sends {
            // 200 for the first copy and for a replay; 409 while the other replica still runs it.
            let status = s.await.unwrap();
            assert!(matches!(status, 200 | 409), "{store}: {status}");
        }
        let mut ids = upstream.seen_ids();
        ids.sort();
        let mut want: Vec<String> = (0..20).map(|n| format!("msg_{n}")).collect();
        want.sort();
        assert_eq!(ids, want, "{store}: each event forwarded exactly once");
        if store.starts_with("postgres") {
            let (client, conn) = tokio_postgres::connect(&store, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            // --namespace is the dedup table's schema on Postgres, as for the queue.
            let row = client
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("{namespace}.hookgate_dedup")],
                )
                .await
                .unwrap();
            assert!(row.get::<_, bool>(0), "no {namespace}.hookgate_dedup");
            client
                .batch_execute(&format!("DROP SCHEMA {namespace} CASCADE"))
                .await
                .unwrap();
        }
    }
}
