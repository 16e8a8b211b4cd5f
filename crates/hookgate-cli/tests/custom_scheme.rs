//! `--scheme custom` through the binary: the flags and the TOML file
//! describe providers that are not built in, checked against values
//! computed per their published docs (Python's `hmac`, independent of
//! hookgate; the same vectors as hookgate-core's `tests/custom.rs`), and
//! misuse is a usage error (exit 2).

use std::{path::PathBuf, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

/// Linear (https://linear.app/developers/webhooks): `Linear-Signature` =
/// hex(HMAC-SHA256(secret, raw body)).
const LINEAR_SECRET: &str = "lin_wh_secret_for_tests";
const LINEAR_BODY: &str = r#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","title":"Bug"},"webhookTimestamp":1700000000000}"#;
const LINEAR_SIG: &str = "7102fb431036fe08191ed7e25f56b28de41d17e94d9ee86c483072da222d15cb";

/// Zoom (developer docs, "Verify webhook events"): `x-zm-signature` =
/// "v0=" + hex(HMAC-SHA256(token, "v0:{x-zm-request-timestamp}:{body}")).
const ZOOM_SECRET: &str = "zoom_secret_token_for_tests";
const ZOOM_BODY: &str = r#"{"event":"meeting.started","payload":{"account_id":"AAAA","object":{"id":"85912345678"}},"event_ts":1700000000123}"#;
const ZOOM_SIG: &str = "v0=6e03823167d881ebe6f6720f2a78c3a1dc5a77ff4f9ca390c06c921148e918a4";

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(name: &str, bytes: &[u8]) -> TempFile {
    let path = std::env::temp_dir().join(format!(
        "hookgate-custom-scheme-{}-{name}",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    TempFile(path)
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HOOKGATE_SECRET")
        .output()
        .unwrap()
}

const LINEAR_FLAGS: [&str; 6] = [
    "--scheme",
    "custom",
    "--sig-header",
    "Linear-Signature",
    "--scheme-name",
    "linear",
];

#[test]
fn linear_by_flags_verifies_and_one_changed_byte_fails() {
    let body = temp_file("linear-body", LINEAR_BODY.as_bytes());
    let changed = temp_file(
        "linear-changed",
        LINEAR_BODY.replace("Bug", "Bog").as_bytes(),
    );
    let verify = |file: &TempFile, sig: &str| {
        let header = format!("Linear-Signature: {sig}");
        let mut args = vec!["verify"];
        args.extend(LINEAR_FLAGS);
        args.extend(["--id-header", "Linear-Delivery"]);
        args.extend(["--secret", LINEAR_SECRET, "--header", &header]);
        args.extend([
            "--header",
            "Linear-Delivery: 234d1a4e-b617-4388-90fe-adc3633d6b72",
        ]);
        args.extend(["--body-file", file.0.to_str().unwrap()]);
        run(&args)
    };
    let out = verify(&body, LINEAR_SIG);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "234d1a4e-b617-4388-90fe-adc3633d6b72"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("linear"));
    let out = verify(&changed, LINEAR_SIG);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_signature"));
    let mut sig = LINEAR_SIG.to_owned();
    sig.replace_range(0..1, "8");
    assert_eq!(verify(&body, &sig).status.code(), Some(1));

    // `hookgate sign` with the same flags writes the documented value.
    let mut args = vec!["sign"];
    args.extend(LINEAR_FLAGS);
    args.extend(["--secret", LINEAR_SECRET, "--no-content-type"]);
    args.extend(["--body-file", body.0.to_str().unwrap()]);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("linear-signature: {LINEAR_SIG}")
    );
}

#[test]
fn zoom_from_a_toml_file_verifies_with_its_timestamp() {
    let scheme = temp_file(
        "zoom.toml",
        br#"
name = "zoom"
signature_header = "x-zm-signature"
signed = "v0:{timestamp}:{body}"
algorithm = "sha256"
encoding = "hex"
prefix = "v0="
timestamp_header = "x-zm-request-timestamp"
"#,
    );
    let body = temp_file("zoom-body", ZOOM_BODY.as_bytes());
    // The documented value carries a 2023 timestamp: sign it anew "now"
    // with the same definition and check the documented one offline below.
    let sign = run(&[
        "sign",
        "--scheme",
        "custom",
        "--scheme-file",
        scheme.0.to_str().unwrap(),
        "--secret",
        ZOOM_SECRET,
        "--timestamp",
        "1700000000",
        "--no-content-type",
        "--body-file",
        body.0.to_str().unwrap(),
    ]);
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );
    let text = String::from_utf8(sign.stdout).unwrap();
    assert!(
        text.contains(&format!("x-zm-signature: {ZOOM_SIG}")),
        "the documented recipe's value: {text}"
    );
    assert!(text.contains("x-zm-request-timestamp: 1700000000"));
    // Verify a fresh signature (the stored one is years old: stale).
    let now = hookgate_core::unix_now().to_string();
    let fresh = run(&[
        "sign",
        "--scheme",
        "custom",
        "--scheme-file",
        scheme.0.to_str().unwrap(),
        "--secret",
        ZOOM_SECRET,
        "--timestamp",
        &now,
        "--no-content-type",
        "--body-file",
        body.0.to_str().unwrap(),
    ]);
    let headers: Vec<String> = String::from_utf8(fresh.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut args = vec![
        "verify",
        "--scheme",
        "custom",
        "--scheme-file",
        scheme.0.to_str().unwrap(),
        "--secret",
        ZOOM_SECRET,
        "--body-file",
        body.0.to_str().unwrap(),
    ];
    for h in &headers {
        args.extend(["--header", h.as_str()]);
    }
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The documented value at its own time is stale now: 401-class failure.
    let stale = run(&[
        "verify",
        "--scheme",
        "custom",
        "--scheme-file",
        scheme.0.to_str().unwrap(),
        "--secret",
        ZOOM_SECRET,
        "--header",
        &format!("x-zm-signature: {ZOOM_SIG}"),
        "--header",
        "x-zm-request-timestamp: 1700000000",
        "--body-file",
        body.0.to_str().unwrap(),
    ]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("timestamp_out_of_tolerance"));
}

#[test]
fn misuse_is_a_usage_error() {
    let body = temp_file("misuse", b"{}");
    let b = body.0.to_str().unwrap();
    let bad_toml = temp_file(
        "bad.toml",
        b"signature_header = \"x\"\nsecret = \"sup3rsecret\"\n",
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--scheme", "custom"], "--sig-header"),
        (
            vec!["--scheme", "github", "--sig-header", "x"],
            "--scheme custom",
        ),
        (
            vec![
                "--scheme",
                "custom",
                "--sig-header",
                "x",
                "--signed",
                "{timestamp}.{body}",
            ],
            "timestamp",
        ),
        (
            vec![
                "--scheme",
                "custom",
                "--sig-header",
                "x",
                "--algorithm",
                "md5",
            ],
            "algorithm",
        ),
        (
            vec![
                "--scheme",
                "custom",
                "--scheme-file",
                bad_toml.0.to_str().unwrap(),
            ],
            "line 2",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["sign", "--secret", "s", "--body-file", b];
        args.extend(flags.iter().copied());
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(expected), "{flags:?}: {err}");
        assert!(!err.contains("sup3rsecret"), "{err}");
    }
    // Endpoints store their scheme by name: custom is refused there.
    let out = run(&[
        "send",
        "https://example.com/hooks",
        "--scheme",
        "custom",
        "--sig-header",
        "x",
        "--secret",
        "s",
        "--data",
        "{}",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("custom"));
}
