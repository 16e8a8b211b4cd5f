//! `hookgate sign` and `hookgate verify`, run as the built binary: round
//! trips for all five schemes, tampering, staleness, rotation, usage errors
//! (exit 2) and garbage input (exit 1, never a panic).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");
const TS: i64 = 1_700_000_000;
const SCHEMES: [&str; 5] = ["standard", "stripe", "github", "slack", "shopify"];

fn secret(scheme: &str) -> &'static str {
    match scheme {
        "standard" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "stripe" => "whsec_test_secret",
        _ => "It's a Secret to Everybody",
    }
}

/// A file under the system temp dir, removed when dropped.
struct TempFile(PathBuf);

impl std::ops::Deref for TempFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh temp file holding `bytes`.
fn temp_file(bytes: &[u8]) -> TempFile {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "hookgate-cli-sign-verify-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, bytes).unwrap();
    TempFile(path)
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("HOOKGATE_SECRET")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hookgate");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "hookgate panicked on {args:?}: {stderr}"
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `hookgate sign` → the `Name: value` lines.
fn sign(scheme: &str, extra: &[&str], body: &Path) -> Vec<String> {
    let mut args = vec!["sign", "--scheme", scheme, "--secret", secret(scheme)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--body-file", body.to_str().unwrap()]);
    let out = run(&args, None);
    assert_eq!(out.status.code(), Some(0), "sign: {}", stderr(&out));
    stdout(&out).lines().map(str::to_owned).collect()
}

fn verify(
    scheme: &str,
    secrets: &[&str],
    headers: &[String],
    body: &Path,
    extra: &[&str],
) -> Output {
    let mut args = vec!["verify", "--scheme", scheme];
    for s in secrets {
        args.extend_from_slice(&["--secret", s]);
    }
    for h in headers {
        args.extend_from_slice(&["--header", h]);
    }
    args.extend_from_slice(&["--body-file", body.to_str().unwrap()]);
    args.extend_from_slice(extra);
    run(&args, None)
}

const BODY: &[u8] = br#"{"id":"evt_cli_1","object":"event","type":"invoice.paid"}"#;

#[test]
fn sign_then_verify_round_trips_for_every_scheme() {
    let body = temp_file(BODY);
    for scheme in SCHEMES {
        let ts = TS.to_string();
        let headers = sign(scheme, &["--id", "msg_cli_1", "--timestamp", &ts], &body);
        assert!(headers.iter().all(|h| h.contains(": ")), "{headers:?}");
        assert!(headers.contains(&"Content-Type: application/json".to_owned()));
        let out = verify(scheme, &[secret(scheme)], &headers, &body, &["--now", &ts]);
        assert_eq!(out.status.code(), Some(0), "{scheme}: {}", stderr(&out));
        let expected = match scheme {
            "stripe" => "evt_cli_1",
            "slack" => "no event id",
            _ => "msg_cli_1",
        };
        assert_eq!(stdout(&out).trim(), expected, "{scheme}");
        assert!(stderr(&out).contains(&format!("valid {scheme} webhook")));
    }
}

#[test]
fn sign_output_matches_the_standard_webhooks_vector() {
    let body = temp_file(br#"{"test": 2432232314}"#);
    let headers = sign(
        "standard",
        &[
            "--id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "--timestamp",
            "1614265330",
            "--no-content-type",
        ],
        &body,
    );
    assert_eq!(
        headers,
        [
            "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp: 1614265330",
            "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ]
    );
}

#[test]
fn sign_generates_id_and_uses_now_by_default() {
    let body = temp_file(BODY);
    let headers = sign("standard", &[], &body);
    let id = headers[0]
        .strip_prefix("webhook-id: msg_")
        .expect("generated msg_ id");
    assert_eq!(
        id.len(),
        26,
        "hookgate_sender::new_message_id: msg_ + 26 base-32 characters"
    );
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    let again = sign("standard", &[], &body);
    assert_ne!(headers[0], again[0], "ids are fresh");
    // Signed "now": verifies against the real clock without --now.
    let out = verify("standard", &[secret("standard")], &headers, &body, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        headers[0].strip_prefix("webhook-id: ").unwrap()
    );
}

#[test]
fn non_json_body_gets_no_content_type_and_binary_bodies_work() {
    let body = temp_file(b"\xff\x00binary\x80");
    for scheme in SCHEMES {
        let headers = sign(scheme, &["--timestamp", "1700000000"], &body);
        assert!(!headers.iter().any(|h| h.starts_with("Content-Type")));
        let out = verify(
            scheme,
            &[secret(scheme)],
            &headers,
            &body,
            &["--now", "1700000000"],
        );
        assert_eq!(out.status.code(), Some(0), "{scheme}: {}", stderr(&out));
    }
}

#[test]
fn stdin_body_and_headers_file_pipeline() {
    let body_file = temp_file(BODY);
    let out = run(
        &[
            "sign",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--id",
            "d-1",
            "--body-file",
            "-",
        ],
        Some(BODY),
    );
    assert_eq!(out.status.code(), Some(0));
    // `hookgate sign ... | hookgate verify --headers-file -`
    let out = run(
        &[
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--headers-file",
            "-",
            "--body-file",
            body_file.to_str().unwrap(),
        ],
        Some(&out.stdout),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "d-1");
    assert!(stderr(&out).contains("not covered by the signature"));
    // Both from stdin: a usage error.
    let out = run(
        &[
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--headers-file",
            "-",
            "--body-file",
            "-",
        ],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tampered_body_id_or_signature_exits_1_with_reason() {
    let body = temp_file(BODY);
    let other = temp_file(br#"{"id":"evt_cli_1","object":"event","type":"invoice.paid "}"#);
    let ts = TS.to_string();
    for scheme in SCHEMES {
        let headers = sign(scheme, &["--id", "msg_cli_1", "--timestamp", &ts], &body);
        let out = verify(scheme, &[secret(scheme)], &headers, &other, &["--now", &ts]);
        assert_eq!(out.status.code(), Some(1), "{scheme}");
        assert!(
            stderr(&out).contains("rejected (invalid_signature): no signature matches"),
            "{scheme}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
        // Wrong secret.
        let wrong = if scheme == "standard" {
            "whsec_dGVzdA=="
        } else {
            "wrong"
        };
        let out = verify(scheme, &[wrong], &headers, &body, &["--now", &ts]);
        assert_eq!(out.status.code(), Some(1), "{scheme}");
    }
    // Standard Webhooks signs the id.
    let headers = sign(
        "standard",
        &["--id", "msg_cli_1", "--timestamp", &ts],
        &body,
    );
    let forged: Vec<String> = headers
        .iter()
        .map(|h| h.replace("msg_cli_1", "msg_cli_2"))
        .collect();
    let out = verify(
        "standard",
        &[secret("standard")],
        &forged,
        &body,
        &["--now", &ts],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid_signature"));
}

#[test]
fn stale_and_future_timestamps_and_tolerance() {
    let body = temp_file(BODY);
    for scheme in ["standard", "stripe", "slack"] {
        let headers = sign(scheme, &["--timestamp", "1700000000"], &body);
        let at = |now: i64, extra: &[&str]| {
            let now = now.to_string();
            let mut args = vec!["--now", now.as_str()];
            args.extend_from_slice(extra);
            verify(scheme, &[secret(scheme)], &headers, &body, &args)
        };
        assert_eq!(at(TS + 300, &[]).status.code(), Some(0), "{scheme}");
        assert_eq!(at(TS - 300, &[]).status.code(), Some(0), "{scheme}");
        let old = at(TS + 301, &[]);
        assert_eq!(old.status.code(), Some(1));
        assert!(
            stderr(&old)
                .contains("rejected (timestamp_out_of_tolerance): timestamp 1700000000 is too old"),
            "{}",
            stderr(&old)
        );
        let future = at(TS - 301, &[]);
        assert_eq!(future.status.code(), Some(1));
        assert!(
            stderr(&future).contains("in the future"),
            "{}",
            stderr(&future)
        );
        assert_eq!(at(TS + 301, &["--tolerance", "301"]).status.code(), Some(0));
        assert_eq!(at(TS + 2, &["--tolerance", "1"]).status.code(), Some(1));
    }
}

#[test]
fn rotation_accepts_any_secret() {
    let body = temp_file(BODY);
    for scheme in SCHEMES {
        let headers = sign(scheme, &["--timestamp", "1700000000"], &body);
        let wrong = if scheme == "standard" {
            "whsec_dGVzdA=="
        } else {
            "wrong"
        };
        let out = verify(
            scheme,
            &[wrong, secret(scheme)],
            &headers,
            &body,
            &["--now", "1700000000"],
        );
        assert_eq!(out.status.code(), Some(0), "{scheme}: {}", stderr(&out));
        assert!(stderr(&out).contains("secret #2"));
    }
    // Signing with two secrets: each alone verifies (standard and stripe carry both).
    for (scheme, a, b) in [
        ("standard", "whsec_YQ==", "whsec_Yg=="),
        ("stripe", "whsec_a", "whsec_b"),
    ] {
        let out = run(
            &[
                "sign",
                "--scheme",
                scheme,
                "--secret",
                a,
                "--secret",
                b,
                "--timestamp",
                "1700000000",
                "--body-file",
                body.to_str().unwrap(),
            ],
            None,
        );
        let headers: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        for s in [a, b] {
            let out = verify(scheme, &[s], &headers, &body, &["--now", "1700000000"]);
            assert_eq!(out.status.code(), Some(0), "{scheme} {s}: {}", stderr(&out));
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let body = temp_file(BODY);
    let b = body.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "sign",
            "--secret",
            "k",
            "--body-file",
            b,
            "--scheme",
            "mailgun",
        ],
        vec!["sign", "--scheme", "github", "--body-file", b],
        vec!["sign", "--scheme", "github", "--secret", "k"],
        vec![
            "sign",
            "--scheme",
            "github",
            "--secret",
            "",
            "--body-file",
            b,
        ],
        vec![
            "sign",
            "--scheme",
            "standard",
            "--secret",
            "whsec_***",
            "--body-file",
            b,
        ],
        vec![
            "sign",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--body-file",
            "/nonexistent/hookgate/body",
        ],
        vec![
            "sign",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--id",
            "has space",
            "--body-file",
            b,
        ],
        vec![
            "sign",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--timestamp",
            "-5",
            "--body-file",
            b,
        ],
        vec![
            "sign",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--timestamp",
            "soon",
            "--body-file",
            b,
        ],
        vec!["verify", "--scheme", "github", "--body-file", b],
        vec![
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--header",
            "no colon here",
            "--body-file",
            b,
        ],
        vec![
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--header",
            ": empty name",
            "--body-file",
            b,
        ],
        vec![
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--body-file",
            "/nonexistent/hookgate/body",
        ],
        vec![
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--headers-file",
            "/nonexistent/h",
            "--body-file",
            b,
        ],
        vec![
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--body-file",
            b,
            "--now",
            "yesterday",
        ],
        vec![
            "verify",
            "--scheme",
            "github",
            "--secret",
            "k",
            "--body-file",
            b,
            "--tolerance",
            "-1",
        ],
        vec![
            "verify",
            "--scheme",
            "standard",
            "--secret",
            "whsec_%%",
            "--body-file",
            b,
        ],
        vec!["verify", "--secret", "k", "--body-file", b, "--bogus-flag"],
    ];
    for args in cases {
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?} says why");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
}

#[test]
fn secret_errors_do_not_echo_the_secret() {
    let body = temp_file(BODY);
    let out = run(
        &[
            "verify",
            "--scheme",
            "standard",
            "--secret",
            "whsec_sup3r-secret!",
            "--body-file",
            body.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("sup3r"));
}

#[test]
fn garbage_headers_exit_1_never_panic() {
    let body = temp_file(BODY);
    let long = "v1,".to_owned() + &"A".repeat(100_000);
    let many = vec!["v1,AAAA"; 5000].join(" ");
    let many_stripe = format!("t=1700000000,{}", vec!["v1=00"; 5000].join(","));
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("standard", vec![]),
        (
            "standard",
            vec![
                "webhook-id: x".into(),
                "webhook-timestamp: 1700000000".into(),
                "webhook-signature: v1,".into(),
            ],
        ),
        (
            "standard",
            vec![
                "webhook-id: x".into(),
                "webhook-timestamp: 1700000000".into(),
                "webhook-signature:".into(),
            ],
        ),
        (
            "standard",
            vec![
                "webhook-id: x".into(),
                "webhook-timestamp: 1.7e9".into(),
                "webhook-signature: v1,AAAA".into(),
            ],
        ),
        (
            "standard",
            vec![
                "webhook-id: x".into(),
                "webhook-timestamp: 1700000000".into(),
                format!("webhook-signature: {long}"),
            ],
        ),
        (
            "standard",
            vec![
                "webhook-id: x".into(),
                "webhook-timestamp: 1700000000".into(),
                format!("webhook-signature: {many}"),
            ],
        ),
        (
            "standard",
            vec![
                "webhook-id: \u{1F980}".into(),
                "webhook-timestamp: 1700000000".into(),
                "webhook-signature: v1,AAAA".into(),
            ],
        ),
        (
            "standard",
            vec![
                "webhook-id: x".into(),
                "webhook-timestamp: 99999999999999999999999".into(),
                "webhook-signature: v1,AAAA".into(),
            ],
        ),
        ("stripe", vec!["Stripe-Signature: ,,,,===,,,".into()]),
        ("stripe", vec!["Stripe-Signature: t=,v1=".into()]),
        ("stripe", vec![format!("Stripe-Signature: {many_stripe}")]),
        (
            "stripe",
            vec!["Stripe-Signature: t=1700000000,v1=zz".into()],
        ),
        (
            "github",
            vec!["X-Hub-Signature-256: sha256=\u{00e9}\u{00e9}".into()],
        ),
        ("github", vec!["X-Hub-Signature-256: md5=abc".into()]),
        (
            "slack",
            vec![
                "X-Slack-Signature: v0=".into(),
                "X-Slack-Request-Timestamp: -1".into(),
            ],
        ),
        ("shopify", vec!["X-Shopify-Hmac-Sha256: ====".into()]),
        ("shopify", vec!["X-Shopify-Hmac-Sha256: \t".into()]),
    ];
    for (scheme, headers) in cases {
        let out = verify(
            scheme,
            &[secret(scheme)],
            &headers,
            &body,
            &["--now", "1700000000"],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{scheme} {:?}: {}",
            headers
                .iter()
                .map(|h| h.chars().take(60).collect::<String>())
                .collect::<Vec<_>>(),
            stderr(&out)
        );
        assert!(stderr(&out).contains("rejected ("), "{}", stderr(&out));
    }
}
