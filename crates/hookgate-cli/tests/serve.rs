//! `hookgate serve` end to end: the real binary on 127.0.0.1:0, signed
//! deliveries over HTTP, one JSON line per accepted event, duplicates
//! printed once, graceful stop on SIGTERM.
//!
//! The Standard Webhooks case signs with the PyPI `standardwebhooks` library
//! (installed under `target/interop/venv` by `tests/interop/setup.sh`, or by
//! this test when that script is absent); without python3 it is skipped,
//! except under `CI=true`.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use hookgate_core::{unix_now, Scheme, Signer};

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A running `hookgate serve`.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Serve {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookgate binary starts");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let mut addr = None;
        while addr.is_none() {
            let line = stderr
                .recv_timeout(Duration::from_secs(60))
                .expect("serve prints its address on stderr");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            }
        }
        Self {
            child,
            addr: addr.unwrap(),
            stdout,
            stderr,
        }
    }

    /// SIGTERM, wait for a clean exit, and return every stdout line.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
        // The process is gone: read both pipes to their end.
        let err = drain(&self.stderr);
        assert!(err.iter().any(|l| l.contains("stopped")), "{err:?}");
        drain(&self.stdout)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every remaining line, until the reader thread reaches end of file.
fn drain(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => out.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return out,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("pipe not closed 30 s after exit"),
        }
    }
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// POST over a plain HTTP/1.1 connection; returns the status and the raw
/// response head.
fn post(addr: SocketAddr, path: &str, headers: &[(String, String)], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (status, head)
}

fn owned(headers: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python_can_import(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The venv python with `standardwebhooks`, installing it if needed.
fn standardwebhooks_python() -> Result<PathBuf, String> {
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let venv = target.join("interop/venv");
    let python = venv.join("bin/python");
    if python_can_import(&python) {
        return Ok(python);
    }
    let setup = root.join("tests/interop/setup.sh");
    if setup.exists() {
        // The shared installer (it may fail on a missing node; the venv is
        // what matters here).
        let _ = Command::new("bash").arg(&setup).arg(&target).status();
    } else {
        std::fs::create_dir_all(target.join("interop")).map_err(|e| e.to_string())?;
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "standardwebhooks==1.1.0"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            return Err("could not create the venv with standardwebhooks".into());
        }
    }
    if python_can_import(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import standardwebhooks",
            python.display()
        ))
    }
}

/// `webhook-signature` made by the standardwebhooks library.
fn python_sign(python: &Path, id: &str, timestamp: i64, body: &str) -> String {
    let script = "import sys, datetime\n\
        from standardwebhooks import Webhook\n\
        secret, msg_id, ts, body = sys.argv[1:5]\n\
        t = datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc)\n\
        print(Webhook(secret).sign(msg_id, t, body))\n";
    let out = Command::new(python)
        .args([
            "-c",
            script,
            STANDARD_SECRET,
            id,
            &timestamp.to_string(),
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn standardwebhooks_signatures_are_accepted_and_duplicates_printed_once() {
    let python = match standardwebhooks_python() {
        Ok(p) => p,
        Err(why) if ci() => panic!("standardwebhooks unavailable under CI=true: {why}"),
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let serve = Serve::start(&["--secret", STANDARD_SECRET]);
    let id = format!("msg_{:x}", std::process::id());
    let body = r#"{"type":"user.created","data":{"name":"Ada"}}"#;
    for attempt in 0..2 {
        // Each attempt signed afresh by the library, as a sender retrying does.
        let ts = unix_now();
        let headers = vec![
            ("webhook-id".to_owned(), id.clone()),
            ("webhook-timestamp".to_owned(), ts.to_string()),
            (
                "webhook-signature".to_owned(),
                python_sign(&python, &id, ts, body),
            ),
        ];
        let (status, head) = post(serve.addr, "/any/path", &headers, body.as_bytes());
        assert_eq!(status, 200, "attempt {attempt}: {head}");
        assert_eq!(
            head.contains("idempotent-replayed: true"),
            attempt == 1,
            "{head}"
        );
    }
    // A forged one is refused and not printed.
    let forged = vec![
        ("webhook-id".to_owned(), id.clone()),
        ("webhook-timestamp".to_owned(), unix_now().to_string()),
        (
            "webhook-signature".to_owned(),
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        ),
    ];
    assert_eq!(post(serve.addr, "/", &forged, body.as_bytes()).0, 401);
    let lines = serve.stop();
    assert_eq!(lines.len(), 1, "exactly one JSON line: {lines:?}");
    let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["scheme"], "standard");
    assert!(event["timestamp"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(event["body"]["data"]["name"], "Ada", "body printed as JSON");
}

#[test]
fn every_scheme_signed_by_hookgate_core_is_printed_once() {
    for scheme in Scheme::ALL {
        let secret = match scheme {
            Scheme::StandardWebhooks => STANDARD_SECRET,
            Scheme::Stripe => "whsec_stripe_cli_test",
            _ => "cli test secret",
        };
        let serve = Serve::start(&[
            "--scheme",
            scheme.name(),
            "--secret",
            "whsec_b2xkIG9sZCBvbGQ=",
            "--secret",
            secret,
        ]);
        let signer = Signer::new(scheme, scheme.secret(secret).unwrap());
        let id = format!("evt_{}_{:x}", scheme.name(), std::process::id());
        let body = format!(r#"{{"id":"{id}","n":1}}"#);
        for attempt in 0..2 {
            let headers = owned(signer.sign(&id, unix_now(), body.as_bytes()));
            let (status, head) = post(serve.addr, "/hooks", &headers, body.as_bytes());
            assert_eq!(status, 200, "{scheme} attempt {attempt}: {head}");
        }
        // Missing headers → 400, not printed.
        assert_eq!(
            post(serve.addr, "/hooks", &[], body.as_bytes()).0,
            400,
            "{scheme}"
        );
        let lines = serve.stop();
        assert_eq!(lines.len(), 1, "{scheme}: {lines:?}");
        let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(event["scheme"], scheme.name());
        assert_eq!(event["body"]["id"], id.as_str());
        if scheme == Scheme::Slack {
            assert!(event["id"].is_null(), "slack has no id");
        } else {
            assert_eq!(event["id"], id.as_str(), "{scheme}");
        }
        assert_eq!(
            event["timestamp"].is_null(),
            !scheme.has_timestamp(),
            "{scheme}"
        );
    }
}

#[test]
fn non_json_bodies_are_printed_as_strings_and_bad_flags_exit_2() {
    let serve = Serve::start(&[
        "--scheme",
        "github",
        "--secret",
        "s3cret",
        "--max-body",
        "64",
    ]);
    let signer = Signer::new(Scheme::GitHub, Scheme::GitHub.secret("s3cret").unwrap());
    let body = b"payload=not json";
    let (status, _) = post(serve.addr, "/", &owned(signer.sign("d-1", 0, body)), body);
    assert_eq!(status, 200);
    let big = [b'x'; 65];
    assert_eq!(
        post(serve.addr, "/", &owned(signer.sign("d-2", 0, &big)), &big).0,
        413
    );
    let lines = serve.stop();
    assert_eq!(lines.len(), 1);
    let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(event["body"], "payload=not json");

    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            STANDARD_SECRET,
            "--store",
            "mysql://nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported --store"), "{err}");
}

#[test]
fn max_body_is_the_only_limit_a_3_mib_body_is_accepted_under_20_mb() {
    let serve = Serve::start(&[
        "--scheme",
        "github",
        "--secret",
        "s3cret",
        "--max-body",
        "20000000",
    ]);
    let signer = Signer::new(Scheme::GitHub, Scheme::GitHub.secret("s3cret").unwrap());
    let body = vec![b'x'; 3 * 1024 * 1024];
    let (status, head) = post(
        serve.addr,
        "/",
        &owned(signer.sign("d-big", 0, &body)),
        &body,
    );
    assert_eq!(
        status, 200,
        "no 2 MiB framework default under --max-body: {head}"
    );
    let lines = serve.stop();
    assert_eq!(lines.len(), 1);
    let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(event["body"].as_str().map(str::len), Some(3 * 1024 * 1024));
}

#[test]
fn allow_from_refuses_other_sources_and_trusted_proxy_decides_on_forwarded_for() {
    let signer = Signer::new(Scheme::GitHub, Scheme::GitHub.secret("s3cret").unwrap());
    let body = br#"{"zen":"allow"}"#;
    let signed = |id: &str, xff: Option<&str>| {
        let mut headers = owned(signer.sign(id, 0, body));
        if let Some(xff) = xff {
            headers.push(("x-forwarded-for".to_owned(), xff.to_owned()));
        }
        headers
    };
    let base = ["--scheme", "github", "--secret", "s3cret"];

    // Only 203.0.113.0/24; the test connects from 127.0.0.1.
    let serve = Serve::start(&[&base[..], &["--allow-from", "203.0.113.0/24"]].concat());
    let (status, head) = post(serve.addr, "/", &signed("d-a1", None), body);
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    let (status, _) = post(serve.addr, "/", &signed("d-a2", Some("203.0.113.5")), body);
    assert_eq!(
        status, 403,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    assert!(serve.stop().is_empty(), "nothing printed");

    // Loopback is a trusted proxy: its X-Forwarded-For is believed.
    let serve = Serve::start(
        &[
            &base[..],
            &[
                "--allow-from",
                "203.0.113.0/24",
                "--allow-from",
                "2001:db8::/32",
                "--trusted-proxy",
                "127.0.0.1",
            ],
        ]
        .concat(),
    );
    let (status, head) = post(serve.addr, "/", &signed("d-b1", Some("203.0.113.5")), body);
    assert_eq!(status, 200, "{head}");
    let (status, _) = post(
        serve.addr,
        "/",
        &signed("d-b2", Some("203.0.113.5, 198.51.100.7")),
        body,
    );
    assert_eq!(status, 403, "the rightmost untrusted hop decides");
    assert_eq!(serve.stop().len(), 1);

    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("serve")
        .args(base)
        .args(["--allow-from", "not-a-range"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-a-range"), "{err}");
}

/// Store URLs to run the replica test against; unreachable ones are
/// skipped (failing under `CI=true`).
fn shared_store_urls() -> Vec<(&'static str, String)> {
    let redis =
        std::env::var("HOOKGATE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let postgres = std::env::var("HOOKGATE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut urls = Vec::new();
    for (name, url) in [("redis", redis), ("postgres", postgres)] {
        let host_port = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.rsplit('@').next())
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let reachable = host_port
            .parse::<SocketAddr>()
            .ok()
            .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
        if reachable {
            urls.push((name, url));
        } else if ci() {
            panic!("{name} at {host_port} unreachable under CI=true");
        } else {
            eprintln!("skipping {name}: {host_port} unreachable");
        }
    }
    urls
}

#[path = "../../hookgate-tower/tests/cluster_support/mod.rs"]
mod cluster_support;

#[test]
fn two_serve_processes_on_one_store_print_each_event_once() {
    // Redis Cluster too: a private three-master cluster, `redis+cluster://`.
    let cluster = cluster_support::PrivateCluster::start();
    let mut stores = shared_store_urls();
    if let Some(c) = &cluster {
        stores.push(("redis-cluster", c.url()));
    }
    for (name, url) in stores {
        eprintln!("replicas on {name}");
        // A fresh prefix per run; a short retention lets the store expire
        // what this test wrote.
        let prefix = format!("hgcli{:x}{:x}", std::process::id(), unix_now());
        let args = [
            "--secret",
            STANDARD_SECRET,
            "--store",
            &url,
            "--prefix",
            &prefix,
            "--retention",
            "60",
        ];
        let a = Serve::start(&args);
        let b = Serve::start(&args);
        let signer = Signer::new(
            Scheme::StandardWebhooks,
            Scheme::StandardWebhooks.secret(STANDARD_SECRET).unwrap(),
        );
        let body = br#"{"type":"replicated"}"#;
        for i in 0..3 {
            let id = format!("msg_{name}_{i}");
            let (s1, h1) = post(
                a.addr,
                "/",
                &owned(signer.sign(&id, unix_now(), body)),
                body,
            );
            let (s2, h2) = post(
                b.addr,
                "/",
                &owned(signer.sign(&id, unix_now(), body)),
                body,
            );
            assert_eq!((s1, s2), (200, 200), "[{name}] {h1} {h2}");
            assert!(
                h2.contains("idempotent-replayed: true"),
                "[{name}] the second replica saw a duplicate: {h2}"
            );
        }
        let (la, lb) = (a.stop(), b.stop());
        assert_eq!(la.len(), 3, "[{name}] {la:?}");
        assert!(lb.is_empty(), "[{name}] {lb:?}");
        if url.starts_with("postgres") {
            // The namespace is the dedup table's schema on Postgres: drop it.
            let out = std::process::Command::new("psql")
                .arg(&url)
                .args(["-qc", &format!("DROP SCHEMA IF EXISTS {prefix} CASCADE")])
                .output();
            if let Ok(out) = out {
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `serve` with the schemes beyond the five HMAC ones: Standard Webhooks
/// with a `whpk_` public key (v1a), Discord with its hex public key, and a
/// custom scheme from flags. Each accepted event is printed once; a
/// duplicate is answered from the store; a forged one is refused.
#[test]
fn asymmetric_and_custom_schemes_are_served() {
    let sk = hookgate_core::Secret::ed25519_signing_key([42; 32]);
    let whsk = sk.to_standard_string();
    let whpk = sk.public_key_string().unwrap();
    let hex_pk: String = sk
        .public_key_bytes()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let zoom = Scheme::custom("x-zm-signature")
        .name("zoom")
        .signed("v0:{timestamp}:{body}")
        .prefix("v0=")
        .timestamp_header("x-zm-request-timestamp")
        .build()
        .unwrap();
    let cases: Vec<(Scheme, Vec<&str>, String)> = vec![
        (
            Scheme::StandardWebhooks,
            vec!["--scheme", "standard", "--secret", &whpk],
            whsk.clone(),
        ),
        (
            Scheme::Discord,
            vec!["--scheme", "discord", "--secret", &hex_pk],
            whsk.clone(),
        ),
        (
            zoom,
            vec![
                "--scheme",
                "custom",
                "--scheme-name",
                "zoom",
                "--sig-header",
                "x-zm-signature",
                "--signed",
                "v0:{timestamp}:{body}",
                "--sig-prefix",
                "v0=",
                "--timestamp-header",
                "x-zm-request-timestamp",
                "--secret",
                "zoom token",
            ],
            "zoom token".to_owned(),
        ),
    ];
    for (scheme, args, signing) in cases {
        let serve = Serve::start(&args);
        let signer = Signer::new(scheme, scheme.secret(&signing).unwrap());
        let id = format!("evt_{}_{:x}", scheme.name(), std::process::id());
        let body = format!(r#"{{"id":"{id}","n":1}}"#);
        let headers = owned(signer.sign(&id, unix_now(), body.as_bytes()));
        let (status, head) = post(serve.addr, "/hooks", &headers, body.as_bytes());
        assert_eq!(status, 200, "{scheme}: {head}");
        let (status, head) = post(serve.addr, "/hooks", &headers, body.as_bytes());
        assert_eq!(status, 200, "{scheme} duplicate: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("idempotent-replayed: true"),
            "{scheme}: {head}"
        );
        let forged = body.replace("\"n\":1", "\"n\":2");
        assert_eq!(
            post(serve.addr, "/hooks", &headers, forged.as_bytes()).0,
            401,
            "{scheme}"
        );
        let lines = serve.stop();
        assert_eq!(lines.len(), 1, "{scheme}: {lines:?}");
        let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(event["scheme"], scheme.name());
        assert_eq!(event["body"]["id"], id.as_str());
    }
}
